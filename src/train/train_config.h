// The arguments of `lora train`, resolved as mlx_lm.lora resolves them (v0.28.1): built-in defaults
// (CONFIG_DEFAULTS), overridden by a YAML config (-c), overridden by the flags given on the command
// line. The layers are JSON objects with mlx-lm's key names, merged in that order; the merged object
// is what adapter_config.json holds (keys sorted, indent 4), and train_args_parse() turns it into
// typed settings, validating each value with a message naming the flag.
#pragma once
#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>

#include "model/lora.h"
#include "train/optimizer.h"
#include "train/schedule.h"

namespace lora {

// mlx-lm's CONFIG_DEFAULTS plus our keys (epochs, grad_accumulation_steps, ...).
nlohmann::json train_defaults();
// A YAML file as JSON (mlx-lm's loader: 1e-5 is a float, yes/no/true/false booleans, ~/null null).
// lora::Error naming the file and line for malformed YAML or a top level that is not a mapping.
nlohmann::json yaml_file_to_json(const std::string& path);
// Merges `over` into `base` key by key (lora_parameters: per sub-key, missing ones keep the default;
// optimizer_config: per optimizer). Unknown top-level keys of a YAML file are kept, with a warning.
void train_args_merge(nlohmann::json& base, const nlohmann::json& over, const std::string& source);

struct TrainArgs {
  std::string model, data, adapter_path;
  std::optional<std::string> resume_adapter_file;
  LoraConfig lora;
  OptimizerConfig optimizer;
  LrSchedule schedule;
  double learning_rate = 1e-5;
  int64_t iters = 1000, epochs = 0, batch_size = 4, val_batches = 25, test_batches = 500;
  int64_t steps_per_report = 10, steps_per_eval = 200, save_every = 100, max_seq_length = 2048;
  int64_t grad_accumulation_steps = 1;
  uint64_t seed = 0;
  bool mask_prompt = false, grad_checkpoint = false, test = false;
  DType quantize = DTYPE_F32;  // QLoRA: the base's 2-D weights quantized at load to this type; F32 = no
};

// Typed, validated settings from the merged object. lora::Error naming the flag (or YAML key) for a
// bad value.
TrainArgs train_args_parse(const nlohmann::json& j);

// adapter_config.json's text: sorted keys, indent 4, lora_parameters.keys written out in full
// ("self_attn.q_proj"), as mlx-lm's save_config writes it.
std::string train_args_config_json(nlohmann::json j, const TrainArgs& a);

// The flag for a key: "batch_size" -> "--batch-size".
std::string train_flag_name(const std::string& key);

}  // namespace lora
