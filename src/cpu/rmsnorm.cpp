// rmsnorm_fwd with Hugging Face LlamaRMSNorm semantics: in f32, y = x * rsqrt(mean(x²) + eps) * w.
// The mean of squares is accumulated in double (one row of C values: negligible cost).
// rmsnorm_bwd: with r = rsqrt(mean(x²) + eps) and g = dy ⊙ w,
//   dx += r · g - x · r³ · (g · x) / C,      dw += Σ_rows dy ⊙ x · r.
#include <cmath>
#include <vector>

#include "cpu/kernels.h"

namespace lora::cpu {

namespace {
// Below this many elements the op runs on the calling thread: a pass over a few hundred thousand
// floats takes well under a millisecond, less than a parallel region can cost when the OS has paused
// one of the team's threads on a busy machine (then the others wait for it at the barrier).
constexpr int64_t kParallelElems = int64_t(1) << 20;
}  // namespace

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
#pragma omp parallel for schedule(static) if (n * C >= kParallelElems)
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

void rmsnorm_bwd(const Tensor& x, const Tensor& w, float eps, const Tensor& dy, Tensor& dx, Tensor* dw) {
  for (const Tensor* t : {&x, &dy, static_cast<const Tensor*>(&dx)})
    LORA_CHECK(t->dtype == DTYPE_F32 && t->is_contiguous(), "rmsnorm_bwd: x, dy, dx must be contiguous f32");
  const int64_t C = x.dim(-1), n = tensor_rows(x);
  LORA_CHECK(dy.numel() == x.numel() && dx.numel() == x.numel() && w.numel() == C && dtype_is_float(w.dtype),
             "rmsnorm_bwd: x {} w {} dy {} dx {}", x.shape_str(), w.shape_str(), dy.shape_str(), dx.shape_str());
  LORA_CHECK(!dw || (dw->dtype == DTYPE_F32 && dw->numel() == C), "rmsnorm_bwd: dw must be f32 (C)");
  const float* X = x.f32();
  const float* G = dy.f32();
  float* DX = dx.f32();
  // Per thread: w as f32 (C). Grown once.
  thread_local std::vector<float> wf;
  thread_local std::vector<float> rinv;
  if (int64_t(wf.size()) < C) wf.resize(size_t(C));
  if (int64_t(rinv.size()) < n) rinv.resize(size_t(n));
  dtype_convert_to_f32(w.dtype, w.data, wf.data(), C);
  const float* W = wf.data();
  float* R = rinv.data();
#pragma omp parallel for schedule(static) if (n * C >= kParallelElems)
  for (int64_t r = 0; r < n; ++r) {
    const float* xr = X + r * C;
    const float* gr = G + r * C;
    float* dxr = DX + r * C;
    double ss = 0.0, gx = 0.0;
#pragma omp simd reduction(+ : ss, gx)
    for (int64_t i = 0; i < C; ++i) {
      ss += double(xr[i]) * double(xr[i]);
      gx += double(gr[i]) * double(W[i]) * double(xr[i]);
    }
    const double inv = 1.0 / std::sqrt(ss / double(C) + double(eps));
    R[r] = float(inv);
    const float a = float(inv);
    const float b = float(inv * inv * inv * gx / double(C));
#pragma omp simd
    for (int64_t i = 0; i < C; ++i) dxr[i] += a * gr[i] * W[i] - b * xr[i];
  }
  if (dw) {
    float* DW = dw->f32();
#pragma omp parallel for schedule(static) if (n * C >= kParallelElems)
    for (int64_t i = 0; i < C; ++i) {
      double s = 0.0;
      for (int64_t r = 0; r < n; ++r) s += double(G[r * C + i]) * double(X[r * C + i]) * double(R[r]);
      DW[i] += float(s);
    }
  }
}

}  // namespace lora::cpu
