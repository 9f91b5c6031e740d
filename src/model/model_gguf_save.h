// Writing a Model as one GGUF file (v3, alignment 32) that llama.cpp loads: `lora convert --to gguf` and
// `lora fuse --export-gguf`.
//
// Names and layout: llama.cpp's (token_embd, output_norm, output, rope_freqs, blk.N.{attn_norm, attn_q,
// attn_k, attn_v, attn_output, attn_{q,k,v}.bias, ffn_norm, ffn_gate, ffn_up, ffn_down}.weight); ggml ne
// is the PyTorch shape reversed; for llama/mistral the rows of q (n_head) and k (n_head_kv) are permuted
// from HF's rotate-half layout to interleaved RoPE pairs, the inverse of what model_load undoes:
//   gguf_row[h*D + 2*i + j] = hf_row[h*D + j*D/2 + i]      (j in {0,1}, i in [0, D/2))
// `output` is omitted when the embeddings are tied. Llama-3 RoPE scaling becomes rope_freqs.weight (the
// per-pair frequency factors, as llama.cpp's converter writes them), linear scaling the rope.scaling keys.
//
// Tensor types (the rule `gguf_tensor_type` implements):
//  - 1-D tensors (norms, biases, rope_freqs): F32.
//  - no quantization: opts.outtype when set (F32/F16/BF16), else the source tensor's own type (an HF bf16
//    weight stays bf16, bit for bit; a quantized source tensor keeps its blocks).
//  - quantize to T (Q8_0, Q4_0, Q4_K): every 2-D weight to T, except `output` (and token_embd when tied,
//    which llama.cpp then uses as the output) which becomes Q6_K, or stays Q8_0 for a Q8_0 file; a row
//    length that is not a whole number of blocks falls back as llama.cpp's quantizer does: Q4_K -> Q5_0,
//    Q6_K -> Q8_0, and rows that are not whole 32-blocks keep the float type (quant_type_for_weight).
//  - a source tensor already in the target type is copied block for block; any other conversion goes
//    through f32 rows (quant_dequantize_row, then quant_quantize_row: llama.cpp's reference quantizers),
//    OpenMP over rows. The file is streamed tensor by tensor (one converted tensor in memory at a time).
// general.file_type is llama.cpp's LLAMA_FTYPE (0 F32, 1 F16, 32 BF16, 7 Q8_0, 2 Q4_0, 14 Q4_K_S: our Q4_K
// mix has no Q5_K/Q6_K bumps on attn_v/ffn_down, the closest llama.cpp mix is Q4_K_S);
// general.quantization_version = 2 when any tensor is quantized.
#pragma once
#include <string>

#include "io/tokenizer_write.h"
#include "model/model.h"

namespace lora {

struct GGUFSaveOptions {
  DType outtype = DTYPE_F32;    // float type of 2-D weights when keep_dtype is false
  bool keep_dtype = true;       // no --outtype: each weight keeps its source type
  DType quantize = DTYPE_F32;   // Q8_0, Q4_0 or Q4_K; F32 = no quantization
  std::string name;             // general.name
  bool overwrite = false;       // replace an existing file (else lora::Error)
};

// The type a 2-D weight is written in (see the header comment). is_output: `output`, or token_embd of a
// model with tied embeddings.
DType gguf_tensor_type(const GGUFSaveOptions& o, DType src, bool is_output, int64_t cols);

// vocab: the tokenizer to embed (tokenizer_vocab_from_hf / _from_gguf); an empty model writes none.
void model_save_gguf(const Model& m, const TokenizerVocab& vocab, const std::string& path, const GGUFSaveOptions& o);

}  // namespace lora
