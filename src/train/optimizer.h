// Optimizers over the adapter's fp32 trainables, with MLX's semantics (mlx.optimizers as of mlx 0.2x,
// the versions mlx-lm 0.28.1 uses), so a run reproduces what mlx-lm users see:
//   adam   m = b1·m + (1-b1)·g;  v = b2·v + (1-b2)·g²;  w -= lr·m / (sqrt(v) + eps)
//          (no bias correction unless bias_correction is set; betas 0.9/0.999, eps 1e-8)
//   adamw  w *= 1 - lr·wd first (decoupled, default wd 0.01), then the adam update
//   sgd    g += wd·w; without momentum w -= lr·g; with momentum v = mu·v + (1-dampening)·g,
//          update = nesterov ? g + mu·v : v; w -= lr·update  (defaults: momentum 0, wd 0)
// All arithmetic is fp32 in MLX's operation order. The state (m, v per tensor and the step count) is
// fp32, lives on the device of the adapter's params, and can be exported as named tensors for a
// checkpoint. The element-wise update itself is the backend's Ops::optimizer_update (one launch for
// every tensor on CUDA); this class computes its scalars.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "model/lora.h"
#include "ops/ops.h"

namespace lora {

enum OptimizerKind { OPT_ADAM, OPT_ADAMW, OPT_SGD };
const char* optimizer_kind_name(OptimizerKind k);  // "adam" | "adamw" | "sgd"
bool optimizer_kind_from_name(const std::string& s, OptimizerKind* out);

struct OptimizerConfig {
  OptimizerKind kind = OPT_ADAM;
  double beta1 = 0.9, beta2 = 0.999, eps = 1e-8;
  bool bias_correction = false;
  double weight_decay = 0.0;  // adamw: 0.01 unless set (optimizer_defaults)
  double momentum = 0.0, dampening = 0.0;
  bool nesterov = false;
};
// MLX's defaults for a kind (adamw's weight decay 0.01, the others 0).
OptimizerConfig optimizer_defaults(OptimizerKind k);

// A flat fp32 tensor of state (on the params' device), named for the checkpoint.
struct OptimizerStateTensor {
  std::string name;  // "m.<param name>", "v.<param name>"
  Tensor t;
};

class Optimizer {
 public:
  // One state slot per adapter param (same order as a.params).
  Optimizer(const OptimizerConfig& cfg, const Adapter& a);

  // One update of every param of `a` from its grad with learning rate `lr` (MLX casts the learning
  // rate to the gradient's dtype, so it arrives here as a float), through ops (the params' backend).
  void update(Adapter& a, float lr, Ops& ops);
  // The same on the host (params on the CPU; the CPU backend's update).
  void update(Adapter& a, float lr);

  int64_t step() const { return step_; }  // number of updates applied
  void set_step(int64_t s) { step_ = s; }
  const OptimizerConfig& config() const { return cfg_; }

  // The state as named tensors (empty vectors for slots the kind does not use).
  std::vector<OptimizerStateTensor> state_tensors();

 private:
  OptimizerConfig cfg_;
  int64_t step_ = 0;
  std::vector<std::string> names_;
  std::vector<OwnedTensor> m_, v_;  // undefined tensors where the kind keeps no state
  std::vector<OptimizerSlot> slots_;  // rebuilt per update (no allocation after the first)
};

}  // namespace lora
