// PEFT's adapter layout (formats.md), read and written natively:
//   adapter_model.safetensors: base_model.model.model.layers.{i}.{self_attn|mlp}.{key}.lora_A.weight (r, in) = Aᵀ,
//                              ...lora_B.weight (out, r) = Bᵀ, DoRA ...lora_magnitude_vector (out);
//   adapter_config.json: peft_type "LORA", r, lora_alpha (= scale·r; rsLoRA: scale·√r), lora_dropout,
//                        target_modules, layers_to_transform, use_dora, use_rslora, bias "none", ...
// Our adapters cover the last N blocks with the same keys in each, so an import needs layers_to_transform
// to be such a range (or absent: every block); full fine-tuning has no PEFT form.
#pragma once
#include <string>
#include <vector>

#include "model/lora.h"
#include "model/model.h"
#include "train/adapter_io.h"

namespace lora {

inline constexpr const char* kPeftWeightsFile = "adapter_model.safetensors";

// True when dir holds a PEFT adapter (adapter_model.safetensors and a config with peft_type).
bool adapter_is_peft(const std::string& dir);
// Loads a PEFT LoRA/DoRA adapter for m. lora::Error naming the file and field for anything we cannot map.
Adapter adapter_load_peft(const std::string& dir, const Model& m);
// The factors of a PEFT adapter_model.safetensors under our names and orientation, for
// --resume-adapter-file (adapter_io.h): lora_A (r, in) -> lora_a (in, r), lora_B (out, r) -> lora_b (r, out),
// lora_magnitude_vector -> m. A name that is not such a factor of a block's linear layer is an error.
std::vector<AdapterTensor> adapter_read_peft_tensors(const std::string& path);
// The scale the adapter_config.json in dir gives (lora_alpha / r; rsLoRA: / √r), or 0 when there is none.
double adapter_peft_scale(const std::string& dir);
// Writes a in PEFT's layout into dir (created; an existing adapter there is replaced only with overwrite).
// base_model: recorded as base_model_name_or_path (may be empty).
void adapter_save_peft(const Adapter& a, const std::string& dir, const std::string& base_model, bool overwrite);
// Writes a in mlx-lm's layout (adapters.safetensors + adapter_config.json) into dir.
void adapter_save_mlx(const Adapter& a, const std::string& dir, bool overwrite);

}  // namespace lora
