// Adapter folders as mlx-lm writes and reads them (formats.md, "Adapter files"):
//   adapters.safetensors            the trainables, fp32, metadata {"format": "mlx"}, mlx-lm names
//   adapter_config.json             every resolved training argument (keys sorted, indent 4)
//   {iter:07d}_adapters.safetensors checkpoints
// plus our training state beside each checkpoint, for `lora train --resume`:
//   {iter:07d}_state.safetensors    optimizer state tensors "m.<param>", "v.<param>" (fp32)
//   {iter:07d}_state.json           {"version": 1, "iteration", "optimizer_step", "seed", ...}
// Every write is atomic (temp file + rename). Loading validates every tensor name and shape against
// the model; errors name the file and the tensor and say what to do. adapter_load and the 4-argument
// adapter_load_weights also read PEFT's layout (adapter_peft.h) and GGUF-LoRA (adapter_gguf.h).
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "model/lora.h"
#include "model/model.h"
#include "train/optimizer.h"

namespace lora {

inline constexpr const char* kAdapterWeightsFile = "adapters.safetensors";
inline constexpr const char* kAdapterConfigFile = "adapter_config.json";
inline constexpr int kTrainStateVersion = 1;

std::string adapter_checkpoint_name(int64_t iter);  // "0000100_adapters.safetensors"
std::string path_join(const std::string& dir, const std::string& name);
// mkdir -p; lora::Error naming the path when it cannot be created.
void make_dirs(const std::string& dir);

// Writes the adapter's trainables (fp32, {"format": "mlx"}).
void adapter_save_weights(const std::string& path, const Adapter& a);
// Copies tensors of an mlx-lm safetensors file into a's params. Every tensor of the file must name a
// trainable of `a` with the same shape (F32, F16 or BF16). require_all: every trainable must be in the file
// (inference); otherwise missing ones keep their values, with one warning (--resume-adapter-file).
void adapter_load_weights(const std::string& path, Adapter& a, bool require_all);
// The same for any adapter layout, detected (--resume-adapter-file): an mlx-lm folder or its
// adapters.safetensors, a PEFT folder or its adapter_model.safetensors, a GGUF-LoRA file. `a` (the adapter
// being trained) defines the expected names and shapes; m gives the architecture and heads (GGUF's
// Q/K permutation). A file whose alpha/rank gives another scale than a's is read with a warning.
void adapter_load_weights(const std::string& path, Adapter& a, const Model& m, bool require_all);

// A trainable read from an adapter file of another layout, already in ours: mlx-lm name, our orientation
// (lora_a (in, r), lora_b (r, out), m (out)), f32.
struct AdapterTensor {
  std::string source;          // its name in the file, for messages
  std::string name;            // the trainable's name, e.g. "model.layers.3.self_attn.q_proj.lora_a"
  std::vector<int64_t> shape;  // ours
  std::vector<float> data;
};
// Copies ts into a's params with the checks of adapter_load_weights; errors name `path` and the tensor.
void adapter_assign_tensors(const std::string& path, const std::vector<AdapterTensor>& ts, Adapter& a, bool require_all);

// The adapter settings of an adapter_config.json (fine_tune_type, num_layers, lora_parameters). When
// lora_parameters lacks "keys", they are taken from the tensor names of adapters.safetensors beside it
// (mlx-lm would fall back to its own version's default).
LoraConfig adapter_read_config(const std::string& dir);
// An adapter loaded for model m, its layout detected: an mlx-lm folder (or its adapters.safetensors), a PEFT
// folder (or its adapter_model.safetensors), or a GGUF-LoRA file (a .gguf whose general.type is "adapter").
// A folder is never searched for a .gguf: pass the file itself (the error says which one when it is there).
Adapter adapter_load(const std::string& path, const Model& m);
// "mlx-lm", "PEFT" or "GGUF-LoRA": the layout adapter_load would read at path (for messages).
const char* adapter_layout_name(const std::string& path);

// Training state for resume.
struct TrainState {
  int64_t iteration = 0;       // iterations completed
  int64_t optimizer_step = 0;  // optimizer updates applied
  uint64_t seed = 0;
  std::string optimizer;       // "adam" | ...
  std::string fine_tune_type;
  int64_t batch_size = 0, grad_accumulation_steps = 1;
  int64_t trained_tokens = 0;
  double elapsed_s = 0;
  // Report accumulators since the last "Train loss" line (so a resumed report averages the same steps).
  double report_loss_sum = 0;
  int64_t report_steps = 0, report_tokens = 0;
};
// Writes {iter}_state.safetensors and {iter}_state.json into dir.
void train_state_save(const std::string& dir, const TrainState& s, Optimizer& opt);
// The newest iteration in dir that has both {iter}_adapters.safetensors and {iter}_state.json.
std::optional<int64_t> train_state_latest(const std::string& dir);
// Reads the state of `iter` and fills the optimizer's state tensors (names and sizes must match).
TrainState train_state_load(const std::string& dir, int64_t iter, Optimizer& opt);

}  // namespace lora
