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

// Rotates every head of x (N, nh, D) by the angle of its position; sign = -1 rotates back (the
// backward of a rotation is the rotation by the opposite angle).
static void rope_rotate(Tensor& x, const int32_t* pos, const RopeTable& rope, float sign, const char* who) {
  LORA_CHECK(x.dtype == DTYPE_F32 && x.is_contiguous() && x.ndim == 3, "{}: x must be contiguous f32 (N, nh, D)", who);
  const int64_t N = x.dim(0), nh = x.dim(1), D = x.dim(2), half = D / 2;
  LORA_CHECK(D == rope.head_dim, "{}: head dim {} but the table is for {}", who, D, rope.head_dim);
  for (int64_t t = 0; t < N; ++t)
    LORA_CHECK(pos[t] >= 0 && pos[t] < rope.max_pos, "{}: position {} outside the table [0, {})", who, pos[t],
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
        const float a = v[i], b = v[i + half], sn = sign * s[i];
        v[i] = a * c[i] - b * sn;
        v[i + half] = b * c[i] + a * sn;
      }
    }
  }
}

void rope_fwd(Tensor& x, const int32_t* pos, const RopeTable& rope) { rope_rotate(x, pos, rope, 1.0f, "rope"); }

void rope_bwd(Tensor& dx, const int32_t* pos, const RopeTable& rope) { rope_rotate(dx, pos, rope, -1.0f, "rope_bwd"); }

}  // namespace lora::cpu
