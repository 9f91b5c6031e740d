// Tokenizer: one interface over SentencePiece tokenizer.model (libsentencepiece), HF tokenizer.json
// (BPE with byte fallback as in Llama 2; byte-level BPE with a pre-tokenizer regex as in Llama 3, Qwen2,
// SmolLM) and the vocabulary embedded in GGUF (tokenizer.ggml.model "llama" = SPM, "gpt2" = BPE).
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace lora {

class GGUFFile;

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;

  // Token ids for text. add_bos: prepend BOS when the tokenizer's config asks for it (add_bos_token).
  // parse_special: recognise added/special tokens written in the text (e.g. "<|im_start|>").
  virtual std::vector<int32_t> encode(std::string_view text, bool add_special = true,
                                      bool parse_special = true) const = 0;
  // Raw bytes of one token as it appears in decoded text (may be a partial UTF-8 sequence).
  virtual std::string token_bytes(int32_t id) const = 0;
  // Full decode of a sequence (handles the SentencePiece leading-space rule).
  virtual std::string decode(const std::vector<int32_t>& ids, bool skip_special = true) const = 0;
  virtual int32_t vocab_size() const = 0;

  int32_t bos_id = -1;
  int32_t eos_id = -1;
  std::vector<int32_t> stop_ids;  // eos plus end-of-turn tokens (<|im_end|>, <|eot_id|>, ...)
  bool add_bos = false;           // whether encode(add_special=true) prepends BOS
  bool add_eos = false;
  std::string bos_token, eos_token;  // text forms, for chat templates
  std::string chat_template;         // Jinja source from tokenizer_config.json or GGUF, may be empty
  bool is_special(int32_t id) const;
  std::vector<int32_t> special_ids;  // control/added special tokens (skipped in decode)
};

// Loads from a model folder (tokenizer.json preferred when present, else tokenizer.model; plus
// tokenizer_config.json / special_tokens_map.json / generation_config.json) or a .gguf file.
std::unique_ptr<Tokenizer> tokenizer_load(const std::string& path);
std::unique_ptr<Tokenizer> tokenizer_from_gguf(const GGUFFile& f);
// Explicit sources, for tests that compare them.
std::unique_ptr<Tokenizer> tokenizer_load_spm(const std::string& model_path);
std::unique_ptr<Tokenizer> tokenizer_load_hf_json(const std::string& json_path);

// Streaming decode: feed token ids, get back only complete UTF-8 text (holds back partial sequences),
// applying the SentencePiece "strip the first leading space" rule once.
class StreamDecoder {
 public:
  explicit StreamDecoder(const Tokenizer& tok) : tok_(tok) {}
  std::string push(int32_t id);
  std::string flush();  // whatever is held back (invalid bytes become U+FFFD)

 private:
  const Tokenizer& tok_;
  std::vector<int32_t> ids_;
  std::string emitted_;
};

}  // namespace lora
