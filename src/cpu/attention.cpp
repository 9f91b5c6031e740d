// attention_fwd: causal attention with grouped KV heads (ops.h). Query t (at position pos0 + t) of head h
// reads kv head h / (H / KV) at positions 0 .. pos0 + t. Scores scaled by 1/sqrt(D); softmax in f32 with
// the max subtracted. OpenMP over (query, head) pairs; each computes its scores, then the weighted sum
// of V rows. Straightforward on purpose: at batch 1 the matvecs dominate, not this.
#include <algorithm>
#include <cmath>
#include <vector>

#include "cpu/kernels.h"

namespace lora::cpu {

void attention_fwd(const Tensor& q, const Tensor& k, const Tensor& v, int64_t pos0, Tensor& out) {
  LORA_CHECK(q.ndim == 3 && k.ndim == 3 && v.ndim == 3 && out.ndim == 3, "attention: q, k, v, out must be 3-D");
  for (const Tensor* t : {&q, &k, &v, static_cast<const Tensor*>(&out)})
    LORA_CHECK(t->dtype == DTYPE_F32 && t->is_contiguous(), "attention: tensors must be contiguous f32");
  const int64_t T = q.dim(0), H = q.dim(1), D = q.dim(2);
  const int64_t S = k.dim(0), KV = k.dim(1);
  LORA_CHECK(k.dim(2) == D && v.dim(0) == S && v.dim(1) == KV && v.dim(2) == D, "attention: q {} k {} v {}",
             q.shape_str(), k.shape_str(), v.shape_str());
  LORA_CHECK(out.dim(0) == T && out.dim(1) == H && out.dim(2) == D, "attention: out {} for q {}", out.shape_str(),
             q.shape_str());
  LORA_CHECK(KV > 0 && H % KV == 0, "attention: {} heads over {} kv heads", H, KV);
  LORA_CHECK(pos0 >= 0 && pos0 + T <= S, "attention: positions {}..{} beyond the {} cached", pos0, pos0 + T, S);
  const int64_t group = H / KV;
  const float scale = 1.0f / std::sqrt(float(D));
  const float* Q = q.f32();
  const float* K = k.f32();
  const float* Vv = v.f32();
  float* O = out.f32();
  const int64_t work = T * H * (pos0 + T) * D;
#pragma omp parallel for collapse(2) schedule(dynamic, 1) if (work >= (int64_t(1) << 15))
  for (int64_t t = 0; t < T; ++t) {
    for (int64_t h = 0; h < H; ++h) {
      // Per thread, sized to the cache length S (not the current position) so that a decode loop
      // grows it once, not every few tokens.
      thread_local std::vector<float> scores;
      const int64_t n_keys = pos0 + t + 1;
      if (int64_t(scores.size()) < S) scores.resize(size_t(S));
      const float* qv = Q + (t * H + h) * D;
      const int64_t kvh = h / group;
      float mx = -INFINITY;
      for (int64_t j = 0; j < n_keys; ++j) {
        const float* kr = K + (j * KV + kvh) * D;
        float s = 0.0f;
#pragma omp simd reduction(+ : s)
        for (int64_t d = 0; d < D; ++d) s += qv[d] * kr[d];
        s *= scale;
        scores[size_t(j)] = s;
        mx = std::max(mx, s);
      }
      float sum = 0.0f;
      for (int64_t j = 0; j < n_keys; ++j) {
        const float e = std::exp(scores[size_t(j)] - mx);
        scores[size_t(j)] = e;
        sum += e;
      }
      const float inv = 1.0f / sum;
      float* o = O + (t * H + h) * D;
      std::fill(o, o + D, 0.0f);
      for (int64_t j = 0; j < n_keys; ++j) {
        const float p = scores[size_t(j)] * inv;
        const float* vr = Vv + (j * KV + kvh) * D;
#pragma omp simd
        for (int64_t d = 0; d < D; ++d) o[d] += p * vr[d];
      }
    }
  }
}

}  // namespace lora::cpu
