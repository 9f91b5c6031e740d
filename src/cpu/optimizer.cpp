// optimizer_update on the host: the update rules of ops.h's OptimizerStep, element by element in MLX's
// fp32 order of operations (train/optimizer.h says which MLX version). Serial: the adapter's tensors
// are small (TinyLlama's reference adapter: 0.8M values) and the loop is memory-bound.
#include <cmath>

#include "cpu/kernels.h"

// MLX rounds every multiply and add separately; no fused multiply-add (the CUDA update does the same).
#pragma GCC optimize("fp-contract=off")

namespace lora::cpu {

void optimizer_update(const OptimizerSlot* slots, int64_t n_slots, const OptimizerStep& s) {
  for (int64_t i = 0; i < n_slots; ++i) {
    const OptimizerSlot& p = slots[i];
    float* w = p.w.f32();
    const float* g = p.g.f32();
    const int64_t n = p.w.numel();
    LORA_CHECK(p.g.numel() == n, "optimizer: grad of {} values for {} weights", p.g.numel(), n);
    if (s.rule == OptimizerStep::RULE_SGD) {
      float* v = p.v.defined() ? p.v.f32() : nullptr;
      const bool use_m = s.mom > 0;
      LORA_CHECK(!use_m || v, "optimizer: sgd with momentum needs its state");
      for (int64_t j = 0; j < n; ++j) {
        float gj = g[j];
        if (s.wd != 0) gj = gj + s.wd * w[j];
        if (!use_m) {
          w[j] = w[j] - s.lr * gj;
          continue;
        }
        float vj = s.mom * v[j];
        vj += s.dampening ? s.damp * gj : gj;
        v[j] = vj;
        const float upd = s.nesterov ? gj + s.mom * vj : vj;
        w[j] = w[j] - s.lr * upd;
      }
      continue;
    }
    LORA_CHECK(p.m.defined() && p.v.defined(), "optimizer: adam needs m and v");
    float* m = p.m.f32();
    float* v = p.v.f32();
    for (int64_t j = 0; j < n; ++j) {
      float wj = w[j];
      if (s.rule == OptimizerStep::RULE_ADAMW) wj = wj * s.decay;
      const float gj = g[j];
      const float mj = s.b1 * m[j] + s.omb1 * gj;
      const float vj = s.b2 * v[j] + s.omb2 * (gj * gj);
      m[j] = mj;
      v[j] = vj;
      if (s.bias_correction)
        w[j] = wj - (s.c1 * mj) / (std::sqrt(vj) * s.c2 + s.eps);
      else
        w[j] = wj - (s.lr * mj) / (std::sqrt(vj) + s.eps);
    }
  }
}

}  // namespace lora::cpu
