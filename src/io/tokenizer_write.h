// TokenizerVocab: a tokenizer as llama.cpp's GGUF metadata holds it (tokenizer.ggml.*), and the moves
// between that and the files of an HF folder:
//  - from an HF folder: tokenizer.model (SentencePiece ModelProto, read by hand: pieces, scores, types)
//    gives model "llama"; else a byte-level BPE tokenizer.json gives model "gpt2" with its merges and the
//    tokenizer.ggml.pre name of its pre-tokenizer (gpt2, llama-bpe, qwen2, smollm). tokenizer_config.json
//    adds bos/eos/unk/pad, add_bos_token/add_eos_token, the chat template (or chat_template.jinja) and its
//    added_tokens_decoder (special -> control, else user-defined, as llama.cpp's converter does). The list
//    is padded to the model's vocab size with "[PAD{i}]" unused tokens, as llama.cpp's converter does.
//  - to an HF folder: "llama" -> tokenizer.model (a BPE ModelProto with byte fallback, written by hand),
//    "gpt2" -> tokenizer.json; both with tokenizer_config.json (bos/eos/unk/pad, add_bos/eos, template).
// Token types: 1 normal, 2 unknown, 3 control, 4 user-defined, 5 unused, 6 byte (SentencePiece's numbers,
// which GGUF reuses). Errors name the file and the field.
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace lora {

class GGUFFile;
class GGUFWriter;

struct TokenizerVocab {
  std::string model;                // "llama" | "gpt2"; empty = no tokenizer
  std::string pre;                  // tokenizer.ggml.pre ("default" for llama)
  std::vector<std::string> tokens;  // (V) as the vocabulary spells them (U+2581 / byte-level characters)
  std::vector<float> scores;        // (V) llama: SentencePiece scores
  std::vector<int32_t> types;       // (V)
  std::vector<std::string> merges;  // gpt2: "left right", highest priority first
  int64_t bos = -1, eos = -1, unk = -1, pad = -1;
  std::optional<bool> add_bos, add_eos;
  bool add_space_prefix = true;     // llama: SentencePiece's dummy prefix
  std::string chat_template;
};

// n_vocab: the model's vocabulary size (embedding rows); cfg_bos/cfg_eos: config.json's ids (fallbacks).
TokenizerVocab tokenizer_vocab_from_hf(const std::string& dir, int64_t n_vocab, int64_t cfg_bos = -1,
                                       int64_t cfg_eos = -1);
// The tokenizer.ggml.* keys of a GGUF file (model empty when it has none).
TokenizerVocab tokenizer_vocab_from_gguf(const GGUFFile& f);
// Sets the tokenizer.ggml.* keys (and tokenizer.chat_template).
void tokenizer_vocab_to_gguf(const TokenizerVocab& v, GGUFWriter& w);
// Writes tokenizer.model or tokenizer.json, and tokenizer_config.json, into dir (atomically each).
void tokenizer_vocab_write_hf(const TokenizerVocab& v, const std::string& dir);

}  // namespace lora
