// The element-wise ops: swiglu_fwd (out = silu(gate) * up, silu(g) = g / (1 + e^-g)) and add_fwd
// (the residual y += x). out may alias gate or up.
// swiglu_bwd: with s = sigmoid(g): dgate = dout · up · s · (1 + g · (1 - s)), dup = dout · g · s.
#include <cmath>

#include "cpu/kernels.h"

namespace lora::cpu {

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
#pragma omp parallel for simd schedule(static) if (n >= (int64_t(1) << 16))
  for (int64_t i = 0; i < n; ++i) o[i] = g[i] / (1.0f + std::exp(-g[i])) * u[i];
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
#pragma omp parallel for simd schedule(static) if (n >= (int64_t(1) << 16))
  for (int64_t i = 0; i < n; ++i) {
    const float gi = g[i], ui = u[i], di = d[i];
    const float s = 1.0f / (1.0f + std::exp(-gi));
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
#pragma omp parallel for simd schedule(static) if (n >= (int64_t(1) << 16))
  for (int64_t i = 0; i < n; ++i) Y[i] += X[i];
}

}  // namespace lora::cpu
