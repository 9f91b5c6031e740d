// rmsnorm_fwd with Hugging Face LlamaRMSNorm semantics: in f32, y = x * rsqrt(mean(x²) + eps) * w.
// The mean of squares is accumulated in double (one row of C values: negligible cost).
#include <cmath>

#include "cpu/kernels.h"

namespace lora::cpu {

void rmsnorm_fwd(const Tensor& x, const Tensor& w, float eps, Tensor& y) {
  LORA_CHECK(x.dtype == DTYPE_F32 && y.dtype == DTYPE_F32 && x.is_contiguous() && y.is_contiguous(),
             "rmsnorm: x and y must be contiguous f32");
  const int64_t C = x.dim(-1), n = tensor_rows(x);
  LORA_CHECK(y.numel() == x.numel() && w.numel() == C && dtype_is_float(w.dtype), "rmsnorm: x {} w {} y {}",
             x.shape_str(), w.shape_str(), y.shape_str());
  const float* X = x.f32();
  float* Y = y.f32();
  const void* W = w.data;
  const DType wt = w.dtype;
#pragma omp parallel for schedule(static) if (n * C >= (int64_t(1) << 15))
  for (int64_t r = 0; r < n; ++r) {
    const float* xr = X + r * C;
    float* yr = Y + r * C;
    double ss = 0.0;
#pragma omp simd reduction(+ : ss)
    for (int64_t i = 0; i < C; ++i) ss += double(xr[i]) * double(xr[i]);
    const float inv = float(1.0 / std::sqrt(ss / double(C) + double(eps)));
    if (wt == DTYPE_F32) {
      const float* wf = static_cast<const float*>(W);
#pragma omp simd
      for (int64_t i = 0; i < C; ++i) yr[i] = (xr[i] * inv) * wf[i];
    } else {
      for (int64_t i = 0; i < C; ++i) yr[i] = (xr[i] * inv) * load_f32(W, wt, i);
    }
  }
}

}  // namespace lora::cpu
