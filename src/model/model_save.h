// Writing a Model as a Hugging Face folder (what `lora fuse` produces): the weights as safetensors under
// HF's tensor names (q/k rows in HF's rotate-half layout, as the Model holds them), one file up to
// shard_bytes and "model-0000i-of-0000n.safetensors" shards plus model.safetensors.index.json above it;
// config.json and the tokenizer/generation files copied from the source folder, or (a model from a GGUF
// file) config.json written from the ModelConfig and tokenizer files from the GGUF's vocabulary. Tensors
// stream into the files one at a time, converted on the fly (quantized ones dequantized). The folder appears
// whole or not at all: everything is written into "<out>.tmp.<pid>" and renamed at the end (an existing
// <out> is replaced only with overwrite, else lora::Error).
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "io/tokenizer_write.h"
#include "model/model.h"

namespace lora {

struct ModelSaveOptions {
  int64_t shard_bytes = int64_t(4) << 30;  // 4 GiB per file at most (as the issue and HF's default sizes)
  bool overwrite = false;
  // The dtype each weight is written in (F32/BF16/F16), given its HF name; default: the tensor's own dtype.
  std::function<DType(const std::string& name, const Tensor& t)> dtype_of;
  // When set, written as config.json instead of copying the source folder's (model_config_to_hf_json).
  std::string config_json;
  // When set, the tokenizer files are written from it (io/tokenizer_write.h) instead of being copied.
  const TokenizerVocab* vocab = nullptr;
  std::string what = "--save-path";  // the flag that named out_dir, for messages
};

// config.json text for a ModelConfig (LlamaForCausalLM / MistralForCausalLM / Qwen2ForCausalLM):
// every key config_from_hf_json reads, rope scaling included; torch_dtype as given ("bfloat16", ...).
std::string model_config_to_hf_json(const ModelConfig& c, const std::string& torch_dtype);
// "float32", "float16" or "bfloat16".
const char* model_torch_dtype_name(DType t);

// Every weight of m under its HF name (embedding, per-layer norms/projections/biases, final norm, lm_head
// unless tied), in that order.
struct NamedTensor {
  std::string name;
  Tensor t;
};
std::vector<NamedTensor> model_hf_tensors(const Model& m);

// src_dir: the HF folder the model came from (config.json etc. are copied from it); may be empty when
// o.config_json and o.vocab say what to write instead.
void model_save_hf(const Model& m, const std::string& src_dir, const std::string& out_dir, const ModelSaveOptions& o);

}  // namespace lora
