// linear_fwd: y (N, out) = x (N, in) · Wᵀ (+ bias). N == 1 (decoding) goes to the bandwidth-bound
// matvec (matvec.cpp); N > 1 (prefill) to a GEMM: cblas_sgemm straight on F32 weights; BF16/F16 and quantized weights
// are converted one row panel at a time into an f32 scratch buffer and each panel is one sgemm, so the
// conversion is paid once per weight per call, not once per token. Threading: gemm.h.
//
// linear_lora_fwd / linear_bwd: the one place LoRA and DoRA are applied (ops.h: LoraOperand). The base
// product is linear_fwd itself (so B = 0 reproduces it bit for bit); the adapter's products are small
// GEMMs (rank r): u = drop(x) A (N, r), y += scale · u B. Backward, with g = dy (DoRA: dy ⊙ m/denom):
//   dx (=|+=) g W  (+ scale · (g Bᵀ) Aᵀ ⊙ dropout mask),   dB += scale · uᵀ g,   dA += drop(x)ᵀ (scale · g Bᵀ),
//   DoRA dm += Σ_rows dy ⊙ ypre / denom,   full fine-tuning dW += dyᵀ x, dbias += Σ_rows dy.
// Scratch for the adapter path (N·r, N·out for DoRA, N·in with dropout) is per thread and grows to
// the largest call once; steady-state steps allocate nothing.
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "cpu/gemm.h"
#include "cpu/kernels.h"
#include "cpu/matvec.h"

namespace lora::cpu {

namespace {

// Up to 1 MiB of f32 per thread's panel: large enough for an efficient sgemm, small enough for L2/L3.
constexpr int64_t kPanelElems = int64_t(1) << 18;
// Below this many multiply-adds a half-weight product runs on the calling thread.
constexpr int64_t kParallelMacs = int64_t(1) << 21;

// A panel length along an extent of `extent` rows or columns: at most `cap`, about four panels per
// thread so that work can be handed out dynamically, a multiple of 16, at least 64 (or the extent).
int64_t panel_len(int64_t extent, int64_t cap, int64_t threads) {
  const int64_t per = (extent + 4 * threads - 1) / (4 * threads);
  const int64_t len = std::min(cap, std::max<int64_t>(64, (per + 15) / 16 * 16));
  return std::max<int64_t>(1, std::min(len, extent));
}

// Panels of W's rows are handed out dynamically to the OpenMP threads (a thread the OS pauses holds
// up the others by one panel, not by a static share): convert the panel to f32 (in cache), one
// single-threaded sgemm into y's matching columns.
void linear_gemm_converted(const float* x, const Tensor& w, int64_t n, int64_t out, int64_t in, float* y) {
  const char* wbytes = static_cast<const char*>(w.data);
  const DType wt = w.dtype;
  const bool par = n * out * in >= kParallelMacs;
  const int64_t rows = panel_len(out, std::max<int64_t>(16, kPanelElems / std::max<int64_t>(in, 1)),
                                 par ? omp_get_max_threads() : 1);
  const int64_t n_panels = (out + rows - 1) / rows;
#pragma omp parallel for schedule(dynamic, 1) if (par)
  for (int64_t p = 0; p < n_panels; ++p) {
    // Per thread, grown once to the largest panel seen and reused by later calls (decoding never
    // comes here, so there is no per-token allocation).
    thread_local std::vector<float> panel;
    if (int64_t(panel.size()) < rows * in) panel.resize(size_t(rows * in));
    const int64_t r0 = p * rows, nr = std::min(rows, out - r0);
    for (int64_t r = 0; r < nr; ++r) convert_to_f32(wbytes + dtype_nbytes(wt, (r0 + r) * in), wt, panel.data() + r * in, in);
    gemm_nt_f32_serial(n, nr, in, x, in, panel.data(), in, y + r0, out);  // y[:, r0:r0+nr]
  }
}

}  // namespace

void linear_fwd(const Tensor& x, const Tensor& w, const Tensor* bias, Tensor& y) {
  LORA_CHECK(w.ndim == 2 && w.is_contiguous(), "linear: weight must be a contiguous (out, in), got {}",
             w.shape_str());
  LORA_CHECK(dtype_is_weight(w.dtype) && w.dim(1) % dtype_block_elems(w.dtype) == 0,
             "linear: weight dtype {} {} not supported on CPU", dtype_name(w.dtype), w.shape_str());
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
    linear_gemm_converted(X, w, n, out, in, Y);
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

namespace lora::cpu {

namespace {

float* scratch(std::vector<float>& v, int64_t n) {
  if (int64_t(v.size()) < n) v.resize(size_t(n));
  return v.data();
}

void check_lora(const LoraOperand& lo, int64_t in, int64_t out) {
  LORA_CHECK(lo.a.defined() && lo.b.defined() && lo.a.dtype == DTYPE_F32 && lo.b.dtype == DTYPE_F32 &&
                 lo.a.is_contiguous() && lo.b.is_contiguous() && lo.a.ndim == 2 && lo.b.ndim == 2 &&
                 lo.a.dim(0) == in && lo.b.dim(1) == out && lo.a.dim(1) == lo.b.dim(0),
             "lora: a {} b {} for a linear of {} -> {}", lo.a.shape_str(), lo.b.shape_str(), in, out);
  LORA_CHECK(!lo.m.defined() || (lo.m.dtype == DTYPE_F32 && lo.m.numel() == out), "dora: m {} for {} outputs",
             lo.m.shape_str(), out);
  LORA_CHECK(lo.dropout >= 0.0f && lo.dropout < 1.0f, "lora: dropout {} outside [0, 1)", lo.dropout);
}

// xd (n, in) = dropout(x) with the operand's mask stream.
void dropout_apply(const LoraOperand& lo, const float* x, int64_t count, float* xd) {
  const float keep_scale = 1.0f / (1.0f - lo.dropout);
#pragma omp parallel for schedule(static) if (count >= (int64_t(1) << 15))
  for (int64_t i = 0; i < count; ++i) xd[i] = lora_dropout_keep(lo, i) ? x[i] * keep_scale : 0.0f;
}

// denom (out) = ||W + scale · Bᵀ Aᵀ||_row, one panel of W's rows at a time (converted to f32, then the
// rank-r update added by one small GEMM).
void dora_denom(const Tensor& w, const LoraOperand& lo, float* denom) {
  const int64_t out = w.dim(0), in = w.dim(1), r = lo.a.dim(1);
  const char* wbytes = static_cast<const char*>(w.data);
#pragma omp parallel if (out * in >= (int64_t(1) << 16))
  {
    thread_local std::vector<float> panel;
    const int64_t nt = omp_get_num_threads(), tid = omp_get_thread_num();
    const int64_t per = (out + nt - 1) / nt;
    const int64_t r_begin = std::min(out, tid * per), r_end = std::min(out, r_begin + per);
    const int64_t rows = std::max<int64_t>(1, std::min<int64_t>(per, std::max<int64_t>(16, kPanelElems / std::max<int64_t>(in, 1))));
    float* P = scratch(panel, rows * in);
    for (int64_t r0 = r_begin; r0 < r_end; r0 += rows) {
      const int64_t nr = std::min(rows, r_end - r0);
      for (int64_t i = 0; i < nr; ++i) convert_to_f32(wbytes + dtype_nbytes(w.dtype, (r0 + i) * in), w.dtype, P + i * in, in);
      // P (nr, in) += scale · B[:, r0:r0+nr]ᵀ Aᵀ
      gemm_f32_serial(true, true, nr, in, r, lo.scale, lo.b.f32() + r0, out, lo.a.f32(), r, 1.0f, P, in);
      for (int64_t i = 0; i < nr; ++i) {
        double ss = 0.0;
        const float* pr = P + i * in;
#pragma omp simd reduction(+ : ss)
        for (int64_t j = 0; j < in; ++j) ss += double(pr[j]) * double(pr[j]);
        denom[r0 + i] = float(std::sqrt(ss));
      }
    }
  }
}

// dx (n, in) = (beta ·dx) + g (n, out) · W (out, in), W in F32/BF16/F16.
void linear_dx(const float* g, const Tensor& w, int64_t n, int64_t out, int64_t in, float beta, float* dx) {
  if (w.dtype == DTYPE_F32) {
    gemm_f32(false, false, n, in, out, 1.0f, g, out, w.f32(), in, beta, dx, in);
    return;
  }
  // Half or quantized weights: blocks of dx's columns are handed out dynamically; a block's thread walks W's rows in
  // panels of that block's columns (converted to f32) and accumulates into its columns of dx, so every
  // W element is converted once and no two threads write the same dx element.
  const char* wbytes = static_cast<const char*>(w.data);
  const DType wt = w.dtype;
  const bool par = n * out * in >= kParallelMacs;
  // Quantized rows are cut only at block boundaries (a block's scale covers its 32 or 256 elements).
  const int64_t blk_elems = dtype_block_elems(wt);
  const int64_t cols = std::min(in, (panel_len(in, 512, par ? omp_get_max_threads() : 1) + blk_elems - 1) / blk_elems * blk_elems);
  const int64_t n_blocks = (in + cols - 1) / cols;
#pragma omp parallel for schedule(dynamic, 1) if (par)
  for (int64_t blk = 0; blk < n_blocks; ++blk) {
    thread_local std::vector<float> panel;
    const int64_t c0 = blk * cols, nc = std::min(cols, in - c0);
    const int64_t rows = std::max<int64_t>(16, kPanelElems / nc);
    float* P = scratch(panel, rows * nc);
    for (int64_t r0 = 0; r0 < out; r0 += rows) {
      const int64_t nr = std::min(rows, out - r0);
      for (int64_t i = 0; i < nr; ++i) convert_to_f32(wbytes + dtype_nbytes(wt, (r0 + i) * in + c0), wt, P + i * nc, nc);
      gemm_f32_serial(false, false, n, nc, nr, 1.0f, g + r0, out, P, nc, r0 == 0 ? beta : 1.0f, dx + c0, in);
    }
  }
}

}  // namespace

void linear_lora_fwd(const Tensor& x, const Tensor& w, const Tensor* bias, const LoraOperand* lo, LoraSaved* saved,
                     Tensor& y) {
  if (!lo) {
    linear_fwd(x, w, bias, y);
    return;
  }
  const int64_t out = w.dim(0), in = w.dim(1), n = tensor_rows(x);
  check_lora(*lo, in, out);
  const int64_t r = lo->a.dim(1);
  thread_local std::vector<float> s_u, s_xd, s_den;
  float* U = saved && saved->u.defined() ? saved->u.f32() : scratch(s_u, n * r);
  LORA_CHECK(!saved || !saved->u.defined() || saved->u.numel() == n * r, "lora: saved u {} for {} rows",
             saved->u.shape_str(), n);
  const float* X = x.f32();
  const float* XD = X;
  if (lo->dropout > 0.0f) {
    float* xd = scratch(s_xd, n * in);
    dropout_apply(*lo, X, n * in, xd);
    XD = xd;
  }
  gemm_f32(false, false, n, r, in, 1.0f, XD, in, lo->a.f32(), r, 0.0f, U, r);  // u (n, r) = drop(x) A
  linear_fwd(x, w, nullptr, y);                                                  // y = x Wᵀ
  float* Y = y.f32();
  gemm_f32(false, false, n, out, r, lo->scale, U, r, lo->b.f32(), out, 1.0f, Y, out);  // y += scale · u B
  if (lo->is_dora()) {
    float* den = saved && saved->denom.defined() ? saved->denom.f32() : scratch(s_den, out);
    dora_denom(w, *lo, den);
    if (saved && saved->ypre.defined()) {
      LORA_CHECK(saved->ypre.numel() == n * out, "dora: saved ypre {}", saved->ypre.shape_str());
      std::memcpy(saved->ypre.f32(), Y, size_t(n * out) * 4);
    }
    const float* M = lo->m.f32();
#pragma omp parallel for schedule(static) if (n * out >= (int64_t(1) << 16))
    for (int64_t i = 0; i < n; ++i)
      for (int64_t o = 0; o < out; ++o) Y[i * out + o] *= M[o] / den[o];
  }
  if (bias && bias->defined()) {
    LORA_CHECK(bias->numel() == out, "linear: bias {} for {} outputs", bias->shape_str(), out);
    for (int64_t i = 0; i < n; ++i)
      for (int64_t o = 0; o < out; ++o) Y[i * out + o] += load_f32(bias->data, bias->dtype, o);
  }
}

void linear_bwd(const Tensor& x, const Tensor& w, const Tensor& dy, Tensor* dx, bool dx_accumulate, Tensor* dw,
                Tensor* dbias, const LoraOperand* lo, const LoraSaved* saved) {
  LORA_CHECK(w.ndim == 2 && w.is_contiguous() && dtype_is_weight(w.dtype), "linear_bwd: weight {} {}",
             dtype_name(w.dtype), w.shape_str());
  const int64_t out = w.dim(0), in = w.dim(1), n = tensor_rows(x);
  LORA_CHECK(x.dtype == DTYPE_F32 && dy.dtype == DTYPE_F32 && x.is_contiguous() && dy.is_contiguous() &&
                 x.dim(-1) == in && dy.numel() == n * out,
             "linear_bwd: x {} W {} dy {}", x.shape_str(), w.shape_str(), dy.shape_str());
  LORA_CHECK(!dx || (dx->dtype == DTYPE_F32 && dx->is_contiguous() && dx->numel() == n * in), "linear_bwd: dx");
  const float* X = x.f32();
  const float* G = dy.f32();
  thread_local std::vector<float> s_g, s_gb, s_xd, s_t;
  if (lo) {
    check_lora(*lo, in, out);
    LORA_CHECK(saved && saved->u.defined() && saved->u.numel() == n * lo->a.dim(1), "lora_bwd: saved u missing");
  }
  if (lo && lo->is_dora()) {
    LORA_CHECK(saved->ypre.defined() && saved->denom.defined() && saved->ypre.numel() == n * out,
               "dora_bwd: saved ypre/denom missing");
    const float* M = lo->m.f32();
    const float* den = saved->denom.f32();
    const float* YP = saved->ypre.f32();
    float* g = scratch(s_g, n * out);
#pragma omp parallel for schedule(static) if (n * out >= (int64_t(1) << 16))
    for (int64_t i = 0; i < n; ++i)
      for (int64_t o = 0; o < out; ++o) g[i * out + o] = G[i * out + o] * (M[o] / den[o]);
    if (lo->dm.defined()) {
      float* DM = lo->dm.f32();
#pragma omp parallel for schedule(static) if (n * out >= (int64_t(1) << 16))
      for (int64_t o = 0; o < out; ++o) {
        double s = 0.0;
        for (int64_t i = 0; i < n; ++i) s += double(G[i * out + o]) * double(YP[i * out + o]);
        DM[o] += float(s / double(den[o]));
      }
    }
    G = g;
  }
  if (dx) linear_dx(G, w, n, out, in, dx_accumulate ? 1.0f : 0.0f, dx->f32());
  if (dw) {
    LORA_CHECK(!dtype_is_quant(w.dtype), "linear_bwd: full fine-tuning of quantized {} weights", dtype_name(w.dtype));
    LORA_CHECK(dw->dtype == DTYPE_F32 && dw->numel() == out * in, "linear_bwd: dw must be f32 (out, in)");
    gemm_f32(true, false, out, in, n, 1.0f, G, out, X, in, 1.0f, dw->f32(), in);
  }
  if (dbias && dbias->defined()) {
    LORA_CHECK(dbias->dtype == DTYPE_F32 && dbias->numel() == out, "linear_bwd: dbias must be f32 (out)");
    float* DB = dbias->f32();
    for (int64_t o = 0; o < out; ++o) {
      double s = 0.0;
      for (int64_t i = 0; i < n; ++i) s += double(G[i * out + o]);
      DB[o] += float(s);
    }
  }
  if (!lo) return;
  const int64_t r = lo->a.dim(1);
  const float scale = lo->scale;
  float* gB = scratch(s_gb, n * r);
  gemm_f32(false, true, n, r, out, scale, G, out, lo->b.f32(), out, 0.0f, gB, r);  // gB (n, r) = scale · g Bᵀ
  if (lo->db.defined())
    gemm_f32(true, false, r, out, n, scale, saved->u.f32(), r, G, out, 1.0f, lo->db.f32(), out);  // dB += scale uᵀ g
  const float* XD = X;
  if (lo->dropout > 0.0f) {
    float* xd = scratch(s_xd, n * in);
    dropout_apply(*lo, X, n * in, xd);
    XD = xd;
  }
  if (lo->da.defined()) gemm_f32(true, false, in, r, n, 1.0f, XD, in, gB, r, 1.0f, lo->da.f32(), r);  // dA += xdᵀ gB
  if (dx) {
    if (lo->dropout == 0.0f) {
      gemm_f32(false, true, n, in, r, 1.0f, gB, r, lo->a.f32(), r, 1.0f, dx->f32(), in);  // dx += gB Aᵀ
    } else {
      float* t = scratch(s_t, n * in);
      gemm_f32(false, true, n, in, r, 1.0f, gB, r, lo->a.f32(), r, 0.0f, t, in);
      const float keep_scale = 1.0f / (1.0f - lo->dropout);
      float* DX = dx->f32();
      const LoraOperand& l = *lo;
#pragma omp parallel for schedule(static) if (n * in >= (int64_t(1) << 15))
      for (int64_t i = 0; i < n * in; ++i)
        if (lora_dropout_keep(l, i)) DX[i] += t[i] * keep_scale;
    }
  }
}

}  // namespace lora::cpu
