// The Llama forward and hand-written backward for training, over the op API: one readable per-layer
// loop each way. Frozen base weights get no gradients; activation gradients flow only down to the
// lowest block that has trainables (blocks below it run forward only). With grad_checkpoint, each
// block keeps only its input and recomputes its activations during backward, so activation memory
// does not grow with depth. Loss = sum of masked token cross-entropies / number of masked targets
// (as mlx-lm's default_loss, padding excluded). Activations and scratch are planned once for
// (max_batch, max_len) in the constructor; a step allocates nothing.
#pragma once
#include <cstdint>
#include <memory>

#include "model/lora.h"
#include "model/model.h"
#include "ops/ops.h"

namespace lora {

struct TrainBatchView {
  int64_t B = 0, T = 0;
  const int32_t* inputs = nullptr;   // (B, T)
  const int32_t* targets = nullptr;  // (B, T)
  const float* mask = nullptr;       // (B, T)
};

struct LossResult {
  double loss_sum = 0;    // sum over masked targets of -log p(target)
  int64_t n_targets = 0;  // number of masked targets
  double mean() const { return n_targets ? loss_sum / double(n_targets) : 0.0; }
};

struct TrainSessionOptions {
  int64_t max_batch = 1;   // B
  int64_t max_len = 2048;  // T
  bool grad_checkpoint = false;
  uint64_t dropout_seed = 0;  // LoRA dropout mask stream (counter-based: resumable)
  // Record each step shape once and replay it (CUDA graphs) on backends that can: T is padded to a
  // multiple of 32 there. Steps with LoRA dropout always run eagerly.
  bool graphs = true;
};

class TrainSession {
 public:
  TrainSession(const Model& m, Adapter& a, Ops& ops, const TrainSessionOptions& o);
  ~TrainSession();

  // Forward + backward on one batch. Adds d(loss_sum / grad_denominator)/dθ into the adapter's grads
  // (+=). grad_denominator defaults to the batch's n_targets (the per-batch mean loss, as mlx-lm);
  // `step` feeds the dropout RNG so that a resumed run draws the same masks.
  LossResult loss_and_grad(const TrainBatchView& b, int64_t step, double grad_denominator = 0);
  // Forward only (no dropout), for validation and test loss.
  LossResult loss(const TrainBatchView& b);

  // Forward only (no dropout), writing the logits (B, T, V) of every position (tests: LoRA with B = 0
  // reproduces the base model's logits; golden logits against transformers + PEFT).
  void logits(const TrainBatchView& b, float* out);

  // Bytes planned for activations and scratch (for reports and the memory benchmark).
  size_t planned_bytes() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace lora
