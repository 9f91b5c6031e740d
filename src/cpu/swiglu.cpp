// The element-wise ops: swiglu_fwd (out = silu(gate) * up, silu(g) = g / (1 + e^-g)) and add_fwd
// (the residual y += x). out may alias gate or up.
// swiglu_bwd: with s = sigmoid(g): dgate = dout · up · s · (1 + g · (1 - s)), dup = dout · g · s.
// e^-g comes from exp_simd below rather than std::exp: glibc's expf does not vectorize without
// -ffast-math, and the sigmoid was most of these ops' time (a TinyLlama step calls them on (96, 5632)
// 54 times).
#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>

#include "cpu/kernels.h"

namespace lora::cpu {

namespace {
// Below this many elements the op runs on the calling thread: a pass over a few hundred thousand
// floats takes well under a millisecond, less than a parallel region can cost when the OS has paused
// one of the team's threads on a busy machine (then the others wait for it at the barrier).
constexpr int64_t kParallelElems = int64_t(1) << 20;

// e^x in f32 that the compiler vectorizes (plain arithmetic and bit casts, no calls): x = n·ln2 + r
// with |r| <= ln2/2 (ln2 split in two for an exact product), e^r by its Taylor polynomial to r^7
// (truncation < 1e-8 relative), times 2^n built in the exponent bits. Within 2 ulp of std::exp over
// [-87.3, 88.3] (measured: 1.2 ulp); outside, x is clamped to that range, so the result stays finite
// and silu(g) there is off by less than 1e-35 absolute.
inline float exp_simd(float x) {
  x = std::min(88.3f, std::max(-87.3f, x));
  constexpr float kShift = 12582912.0f;  // 1.5 · 2^23: adding it rounds to an integer in the low bits
  const float t = x * 1.44269504f + kShift;
  const float n = t - kShift;
  const int32_t ni = std::bit_cast<int32_t>(t) - std::bit_cast<int32_t>(kShift);
  const float r = (x - n * 0.693145752f) - n * 1.42860677e-6f;
  float p = 1.0f / 5040.0f;
  p = p * r + 1.0f / 720.0f;
  p = p * r + 1.0f / 120.0f;
  p = p * r + 1.0f / 24.0f;
  p = p * r + 1.0f / 6.0f;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  return p * std::bit_cast<float>((ni + 127) << 23);
}
}  // namespace

void swiglu_fwd(const Tensor& gate, const Tensor& up, Tensor& out) {
  LORA_CHECK(gate.dtype == DTYPE_F32 && up.dtype == DTYPE_F32 && out.dtype == DTYPE_F32 && gate.is_contiguous() &&
                 up.is_contiguous() && out.is_contiguous(),
             "swiglu: tensors must be contiguous f32");
  const int64_t n = gate.numel();
  LORA_CHECK(up.numel() == n && out.numel() == n, "swiglu: gate {} up {} out {}", gate.shape_str(), up.shape_str(),
             out.shape_str());
  const float* g = gate.f32();
  const float* u = up.f32();
  float* o = out.f32();
#pragma omp parallel for simd schedule(static) if (n >= kParallelElems)
  for (int64_t i = 0; i < n; ++i) o[i] = g[i] / (1.0f + exp_simd(-g[i])) * u[i];
}

void swiglu_bwd(const Tensor& gate, const Tensor& up, const Tensor& dout, Tensor& dgate, Tensor& dup) {
  for (const Tensor* t : {&gate, &up, &dout, static_cast<const Tensor*>(&dgate), static_cast<const Tensor*>(&dup)})
    LORA_CHECK(t->dtype == DTYPE_F32 && t->is_contiguous(), "swiglu_bwd: tensors must be contiguous f32");
  const int64_t n = gate.numel();
  LORA_CHECK(up.numel() == n && dout.numel() == n && dgate.numel() == n && dup.numel() == n,
             "swiglu_bwd: gate {} up {} dout {}", gate.shape_str(), up.shape_str(), dout.shape_str());
  const float* g = gate.f32();
  const float* u = up.f32();
  const float* d = dout.f32();
  float* dg = dgate.f32();
  float* du = dup.f32();
#pragma omp parallel for simd schedule(static) if (n >= kParallelElems)
  for (int64_t i = 0; i < n; ++i) {
    const float gi = g[i], ui = u[i], di = d[i];
    const float s = 1.0f / (1.0f + exp_simd(-gi));
    dg[i] = di * ui * s * (1.0f + gi * (1.0f - s));
    du[i] = di * gi * s;
  }
}

void add_fwd(Tensor& y, const Tensor& x) {
  LORA_CHECK(y.dtype == DTYPE_F32 && x.dtype == DTYPE_F32 && y.is_contiguous() && x.is_contiguous() &&
                 y.numel() == x.numel(),
             "add: y {} += x {} needs equal contiguous f32", y.shape_str(), x.shape_str());
  const int64_t n = y.numel();
  float* Y = y.f32();
  const float* X = x.f32();
#pragma omp parallel for simd schedule(static) if (n >= kParallelElems)
  for (int64_t i = 0; i < n; ++i) Y[i] += X[i];
}

}  // namespace lora::cpu
