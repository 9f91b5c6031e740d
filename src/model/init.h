// Random initialisation of a model from a config: writes an HF folder (config.json + model.safetensors)
// with weights drawn as transformers' LlamaPreTrainedModel does (normal, std = initializer_range,
// default 0.02; RMSNorm weights 1; biases 0). Used by tests, benchmarks, and anyone pretraining a tiny
// model from scratch. Deterministic for a seed (counter-based RNG, independent of thread count).
#pragma once
#include <cstdint>
#include <string>

#include "core/dtype.h"

namespace lora {

struct ModelInitOptions {
  DType dtype = DTYPE_BF16;  // F32, BF16 or F16
  uint64_t seed = 0;
  double std = 0.0;          // 0 = the config's initializer_range, else 0.02
  bool overwrite = false;    // refuse to write into a folder that already holds a model unless set
};

// config_path: an HF config.json. Tokenizer files beside it (tokenizer.json, tokenizer.model,
// tokenizer_config.json, special_tokens_map.json, generation_config.json) are copied along.
void model_init_random(const std::string& config_path, const std::string& out_dir, const ModelInitOptions& o);

}  // namespace lora
