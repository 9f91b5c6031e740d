// Token sampling: repetition penalty, then greedy (temp 0) or temperature with top-k, top-p and min-p
// filters, drawn from a seeded counter-based RNG so a seed reproduces a run.
// Order (as llama.cpp's default chain): penalty -> top-k -> top-p -> min-p -> temperature -> draw.
#pragma once
#include <cstdint>
#include <vector>

#include "core/rng.h"

namespace lora {

struct SamplerParams {
  float temp = 0.0f;          // 0 = greedy
  int top_k = 0;              // 0 = off
  float top_p = 1.0f;         // 1 = off
  float min_p = 0.0f;         // 0 = off
  float repetition_penalty = 1.0f;  // 1 = off (HF/llama.cpp semantics)
  int repetition_context = 64;      // how many recent tokens the penalty looks at
  uint64_t seed = 0;
};

class Sampler {
 public:
  explicit Sampler(const SamplerParams& p);
  // logits (V) may be modified. history: tokens so far (prompt + generated), for the penalty.
  int32_t sample(float* logits, int64_t vocab, const std::vector<int32_t>& history);
  const SamplerParams& params() const { return p_; }

 private:
  SamplerParams p_;
  Rng rng_;
  std::vector<std::pair<float, int32_t>> cand_;  // scratch, reused
};

// Index of the largest value (first on ties), as greedy decoding uses.
int32_t argmax(const float* x, int64_t n);

}  // namespace lora
