// linear_fwd: y (N, out) = x (N, in) · Wᵀ (+ bias). N == 1 (decoding) goes to the bandwidth-bound
// matvec (matvec.cpp); N > 1 (prefill) to a GEMM: cblas_sgemm straight on F32 weights; BF16/F16 weights
// are converted one row panel at a time into an f32 scratch buffer and each panel is one sgemm, so the
// conversion is paid once per weight per call, not once per token. Threading: gemm.h.
#include <omp.h>

#include <algorithm>
#include <vector>

#include "cpu/gemm.h"
#include "cpu/kernels.h"
#include "cpu/matvec.h"

namespace lora::cpu {

namespace {

// Up to 1 MiB of f32 per thread's panel: large enough for an efficient sgemm, small enough for L2/L3.
constexpr int64_t kPanelElems = int64_t(1) << 18;

// Each OpenMP thread takes a contiguous range of W's rows and walks it in panels: convert the panel to
// f32 (in cache), one single-threaded sgemm into y's matching columns. No thread waits on another.
void linear_gemm_half(const float* x, const Tensor& w, int64_t n, int64_t out, int64_t in, float* y) {
  const char* wbytes = static_cast<const char*>(w.data);
  const DType wt = w.dtype;
#pragma omp parallel if (n * out * in >= (int64_t(1) << 18))
  {
    // Per thread, grown once to the largest panel seen and reused by later calls (decoding never
    // comes here, so there is no per-token allocation).
    thread_local std::vector<float> panel;
    const int64_t nt = omp_get_num_threads(), tid = omp_get_thread_num();
    const int64_t per = (out + nt - 1) / nt;
    const int64_t r_begin = std::min(out, tid * per), r_end = std::min(out, r_begin + per);
    const int64_t rows = std::max<int64_t>(1, std::min(per, std::max<int64_t>(16, kPanelElems / std::max<int64_t>(in, 1))));
    if (int64_t(panel.size()) < rows * in) panel.resize(size_t(rows * in));
    for (int64_t r0 = r_begin; r0 < r_end; r0 += rows) {
      const int64_t nr = std::min(rows, r_end - r0);
      for (int64_t r = 0; r < nr; ++r)
        convert_to_f32(wbytes + size_t((r0 + r) * in) * 2, wt, panel.data() + r * in, in);
      gemm_nt_f32_serial(n, nr, in, x, in, panel.data(), in, y + r0, out);  // y[:, r0:r0+nr]
    }
  }
}

}  // namespace

void linear_fwd(const Tensor& x, const Tensor& w, const Tensor* bias, Tensor& y) {
  LORA_CHECK(w.ndim == 2 && w.is_contiguous(), "linear: weight must be a contiguous (out, in), got {}",
             w.shape_str());
  LORA_CHECK(dtype_is_float(w.dtype), "linear: weight dtype {} not supported on CPU", dtype_name(w.dtype));
  const int64_t out = w.dim(0), in = w.dim(1);
  LORA_CHECK(x.dtype == DTYPE_F32 && y.dtype == DTYPE_F32 && x.is_contiguous() && y.is_contiguous(),
             "linear: x and y must be contiguous f32");
  LORA_CHECK(x.dim(-1) == in && y.dim(-1) == out, "linear: x {} · W {}ᵀ -> y {}", x.shape_str(), w.shape_str(),
             y.shape_str());
  const int64_t n = tensor_rows(x);
  LORA_CHECK(tensor_rows(y) == n, "linear: x {} and y {} disagree on rows", x.shape_str(), y.shape_str());
  const float* X = x.f32();
  float* Y = y.f32();
  if (n == 1) {
    matvec(w.data, w.dtype, out, in, X, Y);
  } else if (w.dtype == DTYPE_F32) {
    gemm_nt_f32(n, out, in, X, in, w.f32(), in, Y, out);
  } else {
    linear_gemm_half(X, w, n, out, in, Y);
  }
  if (bias && bias->defined()) {
    LORA_CHECK(bias->numel() == out, "linear: bias {} for {} outputs", bias->shape_str(), out);
    const void* b = bias->data;
    const DType bt = bias->dtype;
    for (int64_t r = 0; r < n; ++r)
      for (int64_t o = 0; o < out; ++o) Y[r * out + o] += load_f32(b, bt, o);
  }
}

}  // namespace lora::cpu
