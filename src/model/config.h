// ModelConfig: the hyper-parameters of a Llama-family model, from an HF config.json or GGUF metadata.
// Supported model_type/architecture: llama (TinyLlama, Llama 2/3, SmolLM/SmolLM2), mistral, qwen2.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "ops/ops.h"

namespace lora {

class GGUFFile;


struct ModelConfig {
  std::string arch = "llama";  // llama | mistral | qwen2
  int64_t dim = 0;             // hidden_size (C)
  int64_t ffn_dim = 0;         // intermediate_size (F)
  int64_t n_layers = 0;        // L
  int64_t n_heads = 0;         // H
  int64_t n_kv_heads = 0;      // KV heads (GQA when < H)
  int64_t head_dim = 0;        // D (explicit head_dim or dim / n_heads)
  int64_t vocab = 0;           // V
  int64_t max_pos = 2048;      // max_position_embeddings / context_length
  double rope_theta = 10000.0;
  double rms_eps = 1e-5;
  bool tie_embeddings = false;
  bool qkv_bias = false;  // qwen2
  RopeScaling rope_scaling;
  int64_t bos_id = -1, eos_id = -1;  // from config (tokenizer files may override)
  std::vector<int64_t> eos_ids;      // every eos id when config.json lists several (Llama 3); eos_id is the first
  std::string torch_dtype;           // as stored ("bfloat16", ...), informational

  int64_t q_dim() const { return n_heads * head_dim; }
  int64_t kv_dim() const { return n_kv_heads * head_dim; }
  // Total parameter count of the base model.
  int64_t n_params() const;
};

// Parses config.json; lora::Error naming the file and key for missing/invalid fields or an
// unsupported model_type.
ModelConfig config_from_hf_json(const std::string& path);
ModelConfig config_from_gguf(const GGUFFile& f);
// Sanity checks shared by both sources (positive sizes, heads divide, ...). `src` names the file.
void config_validate(const ModelConfig& c, const std::string& src);

// llama.cpp's Llama-3 RoPE frequency factors (D/2 values, the divisors of each pair's inverse frequency), as
// its converter writes rope_freqs.weight, from c.rope_scaling (type "llama3") and c.rope_theta.
std::vector<float> llama3_rope_factors(const ModelConfig& c);

}  // namespace lora
