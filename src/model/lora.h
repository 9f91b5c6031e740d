// Trainable parameters on top of a frozen Model: LoRA (A, B), DoRA (A, B, magnitude m) on chosen linear
// layers of the last num_layers blocks, or full fine-tuning of those blocks. All trainables, their
// gradients and (in train/) the optimizer state are fp32.
//
// Layout and names follow mlx-lm (formats.md): lora_a (in, r), lora_b (r, out), m (out), named
// "model.layers.{i}.{key}.lora_a" etc. The LoRA output is y = W x + scale · ((dropout(x) · A) · B);
// A is initialised uniform in ±1/sqrt(in), B zeros, m the row norms of W. Full fine-tuning keeps fp32
// copies of the unfrozen blocks' weights, named as in HF ("model.layers.{i}.mlp.up_proj.weight").
// Gradients accumulate with += (zero_grad() clears them), so gradient accumulation is free.
#pragma once
#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/tensor.h"
#include "model/model.h"

namespace lora {

enum class FineTuneType { FT_LORA, FT_DORA, FT_FULL };
using enum FineTuneType;
const char* fine_tune_type_name(FineTuneType t);  // "lora" | "dora" | "full"
bool fine_tune_type_from_name(const std::string& s, FineTuneType* out);

// The linear layers of a block, in HF key form ("self_attn.q_proj", ..., "mlp.down_proj").
enum LinearKey { LIN_Q, LIN_K, LIN_V, LIN_O, LIN_GATE, LIN_UP, LIN_DOWN, LIN_COUNT };
const char* linear_key_name(LinearKey k);
// Parses a key as mlx-lm/PEFT users write it: "self_attn.q_proj" or "q_proj"; false when unknown.
bool linear_key_from_name(const std::string& s, LinearKey* out);
// The frozen weight of key k in a layer (and its bias, undefined when absent).
const Tensor& layer_linear(const LayerWeights& l, LinearKey k);
Tensor& layer_linear(LayerWeights& l, LinearKey k);
// The bias of key k (q/k/v on qwen2), undefined when absent.
const Tensor& layer_linear_bias(const LayerWeights& l, LinearKey k);
Tensor& layer_linear_bias(LayerWeights& l, LinearKey k);
// (out, in) of key k from the config alone (so a config-only Model can be sized).
std::array<int64_t, 2> linear_key_shape(const ModelConfig& c, LinearKey k);

struct LoraConfig {
  FineTuneType type = FT_LORA;
  int64_t rank = 8;
  double scale = 20.0;     // y += scale · B(A x); alpha = scale · rank
  double dropout = 0.0;
  std::vector<LinearKey> keys{LIN_Q, LIN_V};
  int64_t num_layers = 16;  // the last N blocks; -1 = all
};

// One adapted linear layer. Views into Adapter::params (value and grad).
struct LoraLinear {
  Tensor a, b, m;     // (in, r), (r, out), (out) DoRA only
  Tensor da, db, dm;  // same shapes
};

struct TrainParam {
  std::string name;  // mlx-lm name, e.g. "model.layers.21.self_attn.q_proj.lora_a"
  OwnedTensor value;  // fp32
  OwnedTensor grad;   // fp32, same shape
};

struct Adapter {
  LoraConfig cfg;
  int64_t first_layer = 0;  // blocks [first_layer, n_layers) are adapted / unfrozen
  std::vector<TrainParam> params;
  // lora[layer][key]: the adapted linear, or nullptr (always nullptr for full fine-tuning).
  std::vector<std::array<LoraLinear*, LIN_COUNT>> lora;
  std::vector<std::unique_ptr<LoraLinear>> storage;
  // Full fine-tuning: fp32 copies of the unfrozen blocks' weights (indexed by layer; layers below
  // first_layer are empty) with their gradients.
  std::vector<LayerWeights> full, full_grad;

  // On a GPU (adapter_to_device) every grad lives in one block, so zero_grad() is one memset.
  std::shared_ptr<void> grad_block;
  size_t grad_block_bytes = 0;

  int64_t n_trainable() const;  // number of fp32 trainable values
  void zero_grad();
};

// Creates the trainables for `m` (fresh initialisation from the seed, mlx-lm's scheme). lora::Error
// for a key the model lacks, rank < 1, num_layers out of range.
Adapter adapter_create(const Model& m, const LoraConfig& cfg, uint64_t seed);

// Moves every trainable (values and grads) to `dev` (core/device_mem.h), re-pointing the LoRA views
// and full fine-tuning's weight copies. Saving and loading (train/adapter_io) read them back as needed.
void adapter_to_device(Adapter& a, Device dev);

// The model as the forward pass sees it with full fine-tuning: the unfrozen blocks' weights replaced
// by the adapter's fp32 copies (a shallow copy of the rest). For LoRA/DoRA it returns m unchanged.
Model adapter_effective_model(const Model& m, const Adapter& a);

// mlx-lm's line: "Trainable parameters: 0.074% (0.819M/1100.048M)" (total = the base model's count).
std::string adapter_trainable_summary(const Model& m, const Adapter& a);

}  // namespace lora
