// rope_fwd: rotate-half RoPE in place on x (N, nh, D), HF layout. For pair i in [0, D/2):
//   x[i]       <- x[i] cos - x[i + D/2] sin
//   x[i + D/2] <- x[i + D/2] cos + x[i] sin        with angle pos * inv_freq[i] (ops.h: RopeTable).
// rope_bwd applies the transposed (= inverse) rotation to the gradient: angle -pos * inv_freq[i].
#include "cpu/kernels.h"

namespace lora::cpu {

namespace {
// Below this many elements the op runs on the calling thread: a pass over a few hundred thousand
// floats takes well under a millisecond, less than a parallel region can cost when the OS has paused
// one of the team's threads on a busy machine (then the others wait for it at the barrier).
constexpr int64_t kParallelElems = int64_t(1) << 20;
}  // namespace

void rope_fwd(Tensor& x, const int32_t* pos, const RopeTable& rope) {
  LORA_CHECK(x.dtype == DTYPE_F32 && x.is_contiguous() && x.ndim == 3, "rope: x must be contiguous f32 (N, nh, D)");
  const int64_t N = x.dim(0), nh = x.dim(1), D = x.dim(2), half = D / 2;
  LORA_CHECK(D == rope.head_dim, "rope: head dim {} but the table is for {}", D, rope.head_dim);
  for (int64_t t = 0; t < N; ++t)
    LORA_CHECK(pos[t] >= 0 && pos[t] < rope.max_pos, "rope: position {} outside the table [0, {})", pos[t],
               rope.max_pos);
  float* X = x.f32();
#pragma omp parallel for schedule(static) if (N * nh * D >= kParallelElems)
  for (int64_t t = 0; t < N; ++t) {
    const float* c = rope.cos.data() + int64_t(pos[t]) * half;
    const float* s = rope.sin.data() + int64_t(pos[t]) * half;
    for (int64_t h = 0; h < nh; ++h) {
      float* v = X + (t * nh + h) * D;
#pragma omp simd
      for (int64_t i = 0; i < half; ++i) {
        const float a = v[i], b = v[i + half];
        v[i] = a * c[i] - b * s[i];
        v[i + half] = b * c[i] + a * s[i];
      }
    }
  }
}

void rope_bwd(Tensor& dx, const int32_t* pos, const RopeTable& rope) {
  LORA_CHECK(dx.dtype == DTYPE_F32 && dx.is_contiguous() && dx.ndim == 3, "rope_bwd: dx must be contiguous f32 (N, nh, D)");
  const int64_t N = dx.dim(0), nh = dx.dim(1), D = dx.dim(2), half = D / 2;
  LORA_CHECK(D == rope.head_dim, "rope_bwd: head dim {} but the table is for {}", D, rope.head_dim);
  for (int64_t t = 0; t < N; ++t)
    LORA_CHECK(pos[t] >= 0 && pos[t] < rope.max_pos, "rope_bwd: position {} outside the table [0, {})", pos[t],
               rope.max_pos);
  float* X = dx.f32();
#pragma omp parallel for schedule(static) if (N * nh * D >= kParallelElems)
  for (int64_t t = 0; t < N; ++t) {
    const float* c = rope.cos.data() + int64_t(pos[t]) * half;
    const float* s = rope.sin.data() + int64_t(pos[t]) * half;
    for (int64_t h = 0; h < nh; ++h) {
      float* v = X + (t * nh + h) * D;
#pragma omp simd
      for (int64_t i = 0; i < half; ++i) {
        const float a = v[i], b = v[i + half];
        v[i] = a * c[i] + b * s[i];
        v[i + half] = b * c[i] - a * s[i];
      }
    }
  }
}

}  // namespace lora::cpu
