// Gradient checks of every backward op (ops.h, training section), on odd sizes:
//  1. the reference backward (cpu/reference.cpp) against central finite differences of the reference
//     forward, the loss being L = Σ r ⊙ y for a fixed random r (so dy = r), summed in double;
//  2. the fast CPU backward against the reference backward on the same inputs.
// DoRA's finite differences hold the row norm constant, as mlx-lm's stop_gradient does.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <functional>
#include <vector>

#include "core/error.h"
#include "core/rng.h"
#include "cpu/cpu_ops.h"
#include "cpu/reference.h"
#include "tolerances.h"

namespace lora {
namespace {

Ops& ref() { return reference_ops(); }
Ops& fast() { return cpu_ops(); }

OwnedTensor rnd(Rng& rng, std::initializer_list<int64_t> shape, float lo = -1, float hi = 1, DType dt = DTYPE_F32) {
  OwnedTensor t = tensor_alloc(dt, shape);
  std::vector<float> v(size_t(t.t.numel()));
  for (auto& x : v) x = lo + (hi - lo) * rng.uniform();
  dtype_convert_from_f32(dt, v.data(), t.t.data, int64_t(v.size()));
  return t;
}
OwnedTensor zeros(std::initializer_list<int64_t> shape) {
  OwnedTensor t = tensor_alloc(DTYPE_F32, shape);
  std::memset(t.t.data, 0, size_t(t.t.nbytes()));
  return t;
}
OwnedTensor copy_of(const Tensor& s) {
  OwnedTensor t = tensor_alloc(s.dtype, s.shape.data(), s.ndim);
  std::memcpy(t.t.data, s.data, size_t(s.nbytes()));
  return t;
}
double dot(const Tensor& r, const Tensor& y) {
  double s = 0;
  for (int64_t i = 0; i < y.numel(); ++i) s += double(r.f32()[i]) * y.f32()[i];
  return s;
}

// Central differences of loss() over (up to 24 sampled) elements of p against the analytic gradient g.
// Error: |fd - g| / (max |g| + 1e-3). Returns the worst.
double fd_check(const Tensor& p, const Tensor& g, const std::function<double()>& loss, double h, const char* what) {
  double gmax = 0;
  for (int64_t i = 0; i < g.numel(); ++i) gmax = std::max(gmax, std::abs(double(g.f32()[i])));
  Rng pick(99);
  double worst = 0;
  const int64_t n = p.numel();
  const int64_t samples = std::min<int64_t>(n, 24);
  for (int64_t s = 0; s < samples; ++s) {
    const int64_t i = n <= 24 ? s : int64_t(pick.below(uint64_t(n)));
    float* v = p.f32() + i;
    const float keep = *v;
    *v = keep + float(h);
    const double lp = loss();
    *v = keep - float(h);
    const double lm = loss();
    *v = keep;
    const double fd = (lp - lm) / (double(keep + float(h)) - double(keep - float(h)));
    const double err = std::abs(fd - g.f32()[i]) / (gmax + 1e-3);
    worst = std::max(worst, err);
    EXPECT_LE(err, tol::kGradCheckFD) << what << "[" << i << "]: fd " << fd << " analytic " << g.f32()[i];
  }
  std::printf("  fd   %-26s worst %.2e\n", what, worst);
  return worst;
}

// |got - want| <= tol · (max |want| + 1e-6): the fast backward against the reference backward.
double expect_near_all(const Tensor& got, const Tensor& want, double tol, const char* what) {
  double wmax = 0, worst = 0;
  for (int64_t i = 0; i < want.numel(); ++i) wmax = std::max(wmax, std::abs(double(want.f32()[i])));
  int bad = 0;
  for (int64_t i = 0; i < want.numel(); ++i) {
    const double err = std::abs(double(got.f32()[i]) - want.f32()[i]) / (wmax + 1e-6);
    worst = std::max(worst, std::isnan(err) ? INFINITY : err);
    if (!(err <= tol) && bad++ < 5) ADD_FAILURE() << what << "[" << i << "] got " << got.f32()[i] << " want " << want.f32()[i];
  }
  std::printf("  fast %-26s worst %.2e\n", what, worst);
  return worst;
}

TEST(CpuGrad, RmsNorm) {
  Rng rng(1);
  // C = 1 is left out: the output is then sign(x)·w, whose tiny dx drowns in the h² truncation.
  for (int64_t C : {3, 31, 33}) {
    const int64_t N = 5;
    auto x = rnd(rng, {N, C}), w = rnd(rng, {C}, 0.5f, 1.5f), r = rnd(rng, {N, C});
    auto y = zeros({N, C});
    auto loss = [&] { ref().rmsnorm_fwd(x.t, w.t, 1e-5f, y.t); return dot(r.t, y.t); };
    auto dx = zeros({N, C}), dw = zeros({C});
    ref().rmsnorm_bwd(x.t, w.t, 1e-5f, r.t, dx.t, &dw.t);
    fd_check(x.t, dx.t, loss, 1e-2, "rmsnorm dx");
    fd_check(w.t, dw.t, loss, 1e-2, "rmsnorm dw");
    // Fast, accumulating onto a nonzero dx.
    auto dx0 = rnd(rng, {N, C});
    auto dxf = copy_of(dx0.t), dxr = copy_of(dx0.t), dwf = zeros({C}), dwr = zeros({C});
    fast().rmsnorm_bwd(x.t, w.t, 1e-5f, r.t, dxf.t, &dwf.t);
    ref().rmsnorm_bwd(x.t, w.t, 1e-5f, r.t, dxr.t, &dwr.t);
    expect_near_all(dxf.t, dxr.t, tol::kGradFastVsRef, "rmsnorm fast dx");
    expect_near_all(dwf.t, dwr.t, tol::kGradFastVsRef, "rmsnorm fast dw");
    // bf16 norm weights.
    auto wb = rnd(rng, {C}, 0.5f, 1.5f, DTYPE_BF16);
    auto dxb = zeros({N, C}), dxbr = zeros({N, C});
    fast().rmsnorm_bwd(x.t, wb.t, 1e-5f, r.t, dxb.t, nullptr);
    ref().rmsnorm_bwd(x.t, wb.t, 1e-5f, r.t, dxbr.t, nullptr);
    expect_near_all(dxb.t, dxbr.t, tol::kGradFastVsRef, "rmsnorm fast dx bf16 w");
  }
}

TEST(CpuGrad, Rope) {
  Rng rng(2);
  const int64_t N = 7, nh = 3, D = 10;
  RopeTable rt = rope_table_make(D, 64, 10000.0, nullptr);
  std::vector<int32_t> pos{0, 3, 5, 9, 17, 40, 63};
  auto x = rnd(rng, {N, nh, D}), r = rnd(rng, {N, nh, D});
  auto loss = [&] {
    auto y = copy_of(x.t);
    ref().rope_fwd(y.t, pos.data(), rt);
    return dot(r.t, y.t);
  };
  auto dx = copy_of(r.t);
  ref().rope_bwd(dx.t, pos.data(), rt);
  fd_check(x.t, dx.t, loss, 1e-2, "rope dx");
  auto dxf = copy_of(r.t);
  fast().rope_bwd(dxf.t, pos.data(), rt);
  expect_near_all(dxf.t, dx.t, tol::kGradFastVsRef, "rope fast");
}

TEST(CpuGrad, SwiGLU) {
  Rng rng(3);
  const int64_t N = 3, F = 37;
  auto g = rnd(rng, {N, F}, -4, 4), u = rnd(rng, {N, F}), r = rnd(rng, {N, F});
  auto y = zeros({N, F});
  auto loss = [&] { ref().swiglu_fwd(g.t, u.t, y.t); return dot(r.t, y.t); };
  auto dg = zeros({N, F}), du = zeros({N, F});
  ref().swiglu_bwd(g.t, u.t, r.t, dg.t, du.t);
  fd_check(g.t, dg.t, loss, 1e-2, "swiglu dgate");
  fd_check(u.t, du.t, loss, 1e-2, "swiglu dup");
  auto dgf = zeros({N, F}), duf = zeros({N, F});
  fast().swiglu_bwd(g.t, u.t, r.t, dgf.t, duf.t);
  expect_near_all(dgf.t, dg.t, tol::kGradFastVsRef, "swiglu fast dgate");
  expect_near_all(duf.t, du.t, tol::kGradFastVsRef, "swiglu fast dup");
  // In place (dgate aliasing dout), as the model uses it.
  auto inplace = copy_of(r.t);
  fast().swiglu_bwd(g.t, u.t, inplace.t, inplace.t, duf.t);
  expect_near_all(inplace.t, dg.t, tol::kGradFastVsRef, "swiglu fast in place");
}

TEST(CpuGrad, Attention) {
  Rng rng(4);
  struct Case { int64_t B, T, H, KV, D; };
  for (Case cs : {Case{1, 1, 1, 1, 4}, Case{2, 5, 4, 2, 6}, Case{1, 70, 3, 1, 5}, Case{2, 9, 4, 4, 8}}) {
    auto q = rnd(rng, {cs.B, cs.T, cs.H, cs.D}), k = rnd(rng, {cs.B, cs.T, cs.KV, cs.D});
    auto v = rnd(rng, {cs.B, cs.T, cs.KV, cs.D}), r = rnd(rng, {cs.B, cs.T, cs.H, cs.D});
    auto out = zeros({cs.B, cs.T, cs.H, cs.D}), lse = zeros({cs.B, cs.T, cs.H});
    auto loss = [&] { ref().attention_train_fwd(q.t, k.t, v.t, out.t, lse.t); return dot(r.t, out.t); };
    loss();
    auto dq = zeros({cs.B, cs.T, cs.H, cs.D}), dk = zeros({cs.B, cs.T, cs.KV, cs.D}), dv = zeros({cs.B, cs.T, cs.KV, cs.D});
    ref().attention_bwd(q.t, k.t, v.t, out.t, lse.t, r.t, dq.t, dk.t, dv.t);
    fd_check(q.t, dq.t, loss, 1e-2, "attention dq");
    fd_check(k.t, dk.t, loss, 1e-2, "attention dk");
    fd_check(v.t, dv.t, loss, 1e-2, "attention dv");
    // Fast forward: same outputs and lse; fast backward from the fast forward's saved lse.
    auto outf = zeros({cs.B, cs.T, cs.H, cs.D}), lsef = zeros({cs.B, cs.T, cs.H});
    fast().attention_train_fwd(q.t, k.t, v.t, outf.t, lsef.t);
    loss();
    expect_near_all(outf.t, out.t, tol::kOpAttention, "attention fast out");
    expect_near_all(lsef.t, lse.t, tol::kOpAttention, "attention fast lse");
    auto dqf = zeros({cs.B, cs.T, cs.H, cs.D}), dkf = zeros({cs.B, cs.T, cs.KV, cs.D}), dvf = zeros({cs.B, cs.T, cs.KV, cs.D});
    fast().attention_bwd(q.t, k.t, v.t, outf.t, lsef.t, r.t, dqf.t, dkf.t, dvf.t);
    expect_near_all(dqf.t, dq.t, tol::kGradFastVsRef, "attention fast dq");
    expect_near_all(dkf.t, dk.t, tol::kGradFastVsRef, "attention fast dk");
    expect_near_all(dvf.t, dv.t, tol::kGradFastVsRef, "attention fast dv");
    // Each row of the training forward equals inference attention_fwd bit for bit.
    for (int64_t b = 0; b < cs.B; ++b) {
      Tensor qb = q.t.slice_rows(b, b + 1).reshape({cs.T, cs.H, cs.D});
      Tensor kb = k.t.slice_rows(b, b + 1).reshape({cs.T, cs.KV, cs.D});
      Tensor vb = v.t.slice_rows(b, b + 1).reshape({cs.T, cs.KV, cs.D});
      auto ob = zeros({cs.T, cs.H, cs.D});
      fast().attention_fwd(qb, kb, vb, 0, ob.t);
      EXPECT_EQ(0, std::memcmp(ob.t.data, outf.t.f32() + b * cs.T * cs.H * cs.D, size_t(ob.t.nbytes())));
    }
  }
}

TEST(CpuGrad, LinearPlainAndFull) {
  Rng rng(5);
  for (int64_t N : {1, 33}) {
    const int64_t in = 37, out = 29;
    auto x = rnd(rng, {N, in}), w = rnd(rng, {out, in}), bias = rnd(rng, {out}), r = rnd(rng, {N, out});
    auto y = zeros({N, out});
    auto loss = [&] { ref().linear_fwd(x.t, w.t, &bias.t, y.t); return dot(r.t, y.t); };
    auto dx = zeros({N, in}), dw = zeros({out, in}), db = zeros({out});
    ref().linear_bwd(x.t, w.t, r.t, &dx.t, false, &dw.t, &db.t, nullptr, nullptr);
    fd_check(x.t, dx.t, loss, 1e-2, "linear dx");
    fd_check(w.t, dw.t, loss, 1e-2, "linear dw");
    fd_check(bias.t, db.t, loss, 1e-2, "linear dbias");
    auto dxf = zeros({N, in}), dwf = zeros({out, in}), dbf = zeros({out});
    fast().linear_bwd(x.t, w.t, r.t, &dxf.t, false, &dwf.t, &dbf.t, nullptr, nullptr);
    expect_near_all(dxf.t, dx.t, tol::kGradFastVsRef, "linear fast dx");
    expect_near_all(dwf.t, dw.t, tol::kGradFastVsRef, "linear fast dw");
    expect_near_all(dbf.t, db.t, tol::kGradFastVsRef, "linear fast dbias");
    // Frozen half weights: dx only, accumulated.
    for (DType dt : {DTYPE_BF16, DTYPE_F16}) {
      auto wh = rnd(rng, {out, in}, -1, 1, dt);
      auto base = rnd(rng, {N, in});
      auto a1 = copy_of(base.t), a2 = copy_of(base.t);
      fast().linear_bwd(x.t, wh.t, r.t, &a1.t, true, nullptr, nullptr, nullptr, nullptr);
      ref().linear_bwd(x.t, wh.t, r.t, &a2.t, true, nullptr, nullptr, nullptr, nullptr);
      expect_near_all(a1.t, a2.t, tol::kGradFastVsRef, "linear fast dx half");
    }
  }
}

struct LoraCase {
  int64_t N, in, out, r;
  float dropout;
  bool dora;
  DType wt;
};

TEST(CpuGrad, LinearLoraDora) {
  Rng rng(6);
  for (LoraCase cs : {LoraCase{5, 37, 29, 3, 0.0f, false, DTYPE_F32}, LoraCase{33, 31, 33, 8, 0.25f, false, DTYPE_F32},
                      LoraCase{7, 33, 17, 2, 0.0f, true, DTYPE_F32}, LoraCase{9, 32, 31, 4, 0.3f, true, DTYPE_F32},
                      LoraCase{17, 40, 24, 8, 0.1f, false, DTYPE_BF16}, LoraCase{6, 24, 40, 3, 0.0f, true, DTYPE_F16}}) {
    SCOPED_TRACE(testing::Message() << "N " << cs.N << " in " << cs.in << " out " << cs.out << " r " << cs.r
                                    << " dropout " << cs.dropout << " dora " << cs.dora << " " << dtype_name(cs.wt));
    auto x = rnd(rng, {cs.N, cs.in}), w = rnd(rng, {cs.out, cs.in}, -0.3f, 0.3f, cs.wt), bias = rnd(rng, {cs.out});
    auto r = rnd(rng, {cs.N, cs.out});
    auto A = rnd(rng, {cs.in, cs.r}, -0.3f, 0.3f), Bm = rnd(rng, {cs.r, cs.out}, -0.3f, 0.3f), M = rnd(rng, {cs.out}, 0.5f, 2.0f);
    auto dA = zeros({cs.in, cs.r}), dB = zeros({cs.r, cs.out}), dM = zeros({cs.out});
    LoraOperand lo;
    lo.a = A.t;
    lo.b = Bm.t;
    if (cs.dora) {
      lo.m = M.t;
      lo.dm = dM.t;
    }
    lo.da = dA.t;
    lo.db = dB.t;
    lo.scale = 1.7f;
    lo.dropout = cs.dropout;
    lo.dropout_key = 1234;
    lo.dropout_stream = 77;
    auto u = zeros({cs.N, cs.r}), ypre = zeros({cs.N, cs.out}), den = zeros({cs.out});
    LoraSaved sv{u.t, cs.dora ? ypre.t : Tensor{}, cs.dora ? den.t : Tensor{}};
    auto y = zeros({cs.N, cs.out});
    ref().linear_lora_fwd(x.t, w.t, &bias.t, &lo, &sv, y.t);
    auto den0 = copy_of(den.t);
    // The loss with DoRA's norm held at its value (mlx-lm's stop_gradient): y = m/den0 ⊙ (LoRA output).
    LoraOperand plain = lo;
    plain.m = Tensor{};
    auto loss = [&] {
      ref().linear_lora_fwd(x.t, w.t, nullptr, &plain, nullptr, y.t);
      double s = 0;
      for (int64_t t = 0; t < cs.N; ++t)
        for (int64_t o = 0; o < cs.out; ++o) {
          double yv = y.t.f32()[t * cs.out + o];
          if (cs.dora) yv *= double(M.t.f32()[o]) / den0.t.f32()[o];
          s += double(r.t.f32()[t * cs.out + o]) * (yv + bias.t.f32()[o]);
        }
      return s;
    };
    auto dx = zeros({cs.N, cs.in});
    ref().linear_bwd(x.t, w.t, r.t, &dx.t, false, nullptr, nullptr, &lo, &sv);
    fd_check(x.t, dx.t, loss, 1e-2, "lora dx");
    fd_check(A.t, dA.t, loss, 1e-2, "lora dA");
    fd_check(Bm.t, dB.t, loss, 1e-2, "lora dB");
    if (cs.dora) fd_check(M.t, dM.t, loss, 1e-2, "dora dm");

    // Fast forward and backward against the reference.
    auto yf = zeros({cs.N, cs.out}), yr = zeros({cs.N, cs.out});
    auto uf = zeros({cs.N, cs.r}), ypref = zeros({cs.N, cs.out}), denf = zeros({cs.out});
    LoraSaved svf{uf.t, cs.dora ? ypref.t : Tensor{}, cs.dora ? denf.t : Tensor{}};
    fast().linear_lora_fwd(x.t, w.t, &bias.t, &lo, &svf, yf.t);
    ref().linear_lora_fwd(x.t, w.t, &bias.t, &lo, &sv, yr.t);
    expect_near_all(yf.t, yr.t, tol::kOpLinear, "lora fast y");
    expect_near_all(uf.t, u.t, tol::kOpLinear, "lora fast u");
    auto dAf = zeros({cs.in, cs.r}), dBf = zeros({cs.r, cs.out}), dMf = zeros({cs.out});
    auto dAr = zeros({cs.in, cs.r}), dBr = zeros({cs.r, cs.out}), dMr = zeros({cs.out});
    LoraOperand lf = lo, lr = lo;
    lf.da = dAf.t; lf.db = dBf.t; lr.da = dAr.t; lr.db = dBr.t;
    if (cs.dora) { lf.dm = dMf.t; lr.dm = dMr.t; }
    auto base = rnd(rng, {cs.N, cs.in});
    auto dxf = copy_of(base.t), dxr = copy_of(base.t);
    fast().linear_bwd(x.t, w.t, r.t, &dxf.t, true, nullptr, nullptr, &lf, &svf);
    ref().linear_bwd(x.t, w.t, r.t, &dxr.t, true, nullptr, nullptr, &lr, &sv);
    expect_near_all(dxf.t, dxr.t, tol::kGradFastVsRef, "lora fast dx");
    expect_near_all(dAf.t, dAr.t, tol::kGradFastVsRef, "lora fast dA");
    expect_near_all(dBf.t, dBr.t, tol::kGradFastVsRef, "lora fast dB");
    if (cs.dora) expect_near_all(dMf.t, dMr.t, tol::kGradFastVsRef, "dora fast dm");
  }
}

TEST(CpuGrad, LoraZeroBReproducesLinear) {
  Rng rng(7);
  const int64_t N = 19, in = 45, out = 33;
  for (DType dt : {DTYPE_F32, DTYPE_BF16}) {
    auto x = rnd(rng, {N, in}), w = rnd(rng, {out, in}, -1, 1, dt), bias = rnd(rng, {out});
    auto A = rnd(rng, {in, 8}), Bz = zeros({8, out});
    LoraOperand lo;
    lo.a = A.t;
    lo.b = Bz.t;
    lo.dropout = 0.5f;
    auto y0 = zeros({N, out}), y1 = zeros({N, out});
    fast().linear_fwd(x.t, w.t, &bias.t, y0.t);
    fast().linear_lora_fwd(x.t, w.t, &bias.t, &lo, nullptr, y1.t);
    EXPECT_EQ(0, std::memcmp(y0.t.data, y1.t.data, size_t(y0.t.nbytes())));
  }
}

TEST(CpuGrad, DropoutMaskRate) {
  LoraOperand lo;
  lo.dropout = 0.25f;
  lo.dropout_key = 5;
  lo.dropout_stream = 9;
  int64_t kept = 0;
  const int64_t n = 100000;
  for (int64_t i = 0; i < n; ++i) kept += lora_dropout_keep(lo, i);
  // Binomial(1e5, 0.75): sd ≈ 137; 6 sd.
  EXPECT_NEAR(double(kept), 0.75 * n, 6 * std::sqrt(n * 0.75 * 0.25));
  LoraOperand other = lo;
  other.dropout_stream = 10;
  int64_t same = 0;
  for (int64_t i = 0; i < 1000; ++i) same += lora_dropout_keep(lo, i) == lora_dropout_keep(other, i);
  EXPECT_LT(same, 900);  // a different stream gives a different mask
}

TEST(CpuGrad, Xent) {
  Rng rng(8);
  for (int64_t V : {1, 67, 1000}) {
    const int64_t N = 6;
    auto logits = rnd(rng, {N, V}, -5, 5);
    std::vector<int32_t> tg(static_cast<size_t>(N));
    for (auto& t : tg) t = int32_t(rng.below(uint64_t(V)));
    std::vector<float> mask{1, 0, 1, 1, 0, 1};
    const float dscale = 0.25f;
    auto loss = [&] {
      auto l = copy_of(logits.t);
      return double(dscale) * ref().xent_fwd_bwd(l.t, tg.data(), mask.data(), 1.0f, false);
    };
    auto g = copy_of(logits.t);
    const double lr = ref().xent_fwd_bwd(g.t, tg.data(), mask.data(), dscale, true);
    fd_check(logits.t, g.t, loss, 1e-2, "xent dlogits");
    auto gf = copy_of(logits.t);
    const double lf = fast().xent_fwd_bwd(gf.t, tg.data(), mask.data(), dscale, true);
    EXPECT_NEAR(lf, lr, tol::kGradFastVsRef * (1 + std::abs(lr)));
    expect_near_all(gf.t, g.t, tol::kGradFastVsRef, "xent fast dlogits");
    auto lnog = copy_of(logits.t);
    EXPECT_NEAR(fast().xent_fwd_bwd(lnog.t, tg.data(), mask.data(), dscale, false), lr,
                tol::kGradFastVsRef * (1 + std::abs(lr)));
    EXPECT_EQ(0, std::memcmp(lnog.t.data, logits.t.data, size_t(logits.t.nbytes())));  // untouched without grad
  }
  auto l = zeros({1, 5});
  int32_t bad = 5;
  float one = 1;
  EXPECT_THROW(fast().xent_fwd_bwd(l.t, &bad, &one, 1.0f, true), Error);
}


// The parallel backward paths (over the 2^21 multiply-add threshold): with BF16/F16 weights dx = dy·W
// walks W in converted panels, in blocks of up to 512 of dx's columns handed out to threads; in = 2049
// leaves the last block partial whatever the thread count. Both modes (accumulate onto a nonzero dx,
// and set over garbage) against the reference; F32 weights add the threaded sgemm's column chunks
// (dx, dw). Run under OMP_NUM_THREADS=1, 2 and 3.
TEST(CpuGrad, LinearDxParallelBlocks) {
  Rng rng(51);
  const int64_t N = 64, out = 256, in = 2049;
  auto x = rnd(rng, {N, in}), r = rnd(rng, {N, out});
  for (DType dt : {DTYPE_BF16, DTYPE_F16, DTYPE_F32}) {
    SCOPED_TRACE(dtype_name(dt));
    auto w = rnd(rng, {out, in}, -1, 1, dt);
    for (bool accumulate : {true, false}) {
      auto base = rnd(rng, {N, in}, -5, 5);  // set mode must ignore it
      auto dxf = copy_of(base.t), dxr = copy_of(base.t);
      fast().linear_bwd(x.t, w.t, r.t, &dxf.t, accumulate, nullptr, nullptr, nullptr, nullptr);
      ref().linear_bwd(x.t, w.t, r.t, &dxr.t, accumulate, nullptr, nullptr, nullptr, nullptr);
      expect_near_all(dxf.t, dxr.t, tol::kGradFastVsRef, accumulate ? "linear par dx +=" : "linear par dx =");
    }
  }
  // F32 full fine-tuning: dw (out, in) += dyᵀ x is threaded by columns here; with out = 2049 and in = 100
  // it is threaded by rows (n < 64 · threads for 2 and 3 threads).
  for (int64_t o : {out, int64_t(2049)}) {
    const int64_t i = o == out ? in : 100;
    auto xx = rnd(rng, {N, i}), rr = rnd(rng, {N, o}), w = rnd(rng, {o, i});
    auto dw0 = rnd(rng, {o, i});
    auto dwf = copy_of(dw0.t), dwr = copy_of(dw0.t), dbf = zeros({o}), dbr = zeros({o});
    auto dxf = zeros({N, i}), dxr = zeros({N, i});
    fast().linear_bwd(xx.t, w.t, rr.t, &dxf.t, false, &dwf.t, &dbf.t, nullptr, nullptr);
    ref().linear_bwd(xx.t, w.t, rr.t, &dxr.t, false, &dwr.t, &dbr.t, nullptr, nullptr);
    expect_near_all(dxf.t, dxr.t, tol::kGradFastVsRef, o == out ? "linear par f32 dx" : "linear par f32 dx (rows)");
    expect_near_all(dwf.t, dwr.t, tol::kGradFastVsRef, o == out ? "linear par f32 dw" : "linear par f32 dw (rows)");
    expect_near_all(dbf.t, dbr.t, tol::kGradFastVsRef, "linear par f32 dbias");
  }
}

// LoRA and DoRA at the parallel size, over BF16/F16 frozen weights: forward (base product threaded by
// panels, DoRA's row norms threaded by rows) and backward (dx's threaded half-weight blocks plus the
// adapter's rank-r path, with dropout on one case), against the reference.
TEST(CpuGrad, LinearLoraParallel) {
  Rng rng(52);
  for (LoraCase cs : {LoraCase{64, 2049, 256, 8, 0.0f, false, DTYPE_BF16}, LoraCase{64, 2049, 256, 8, 0.1f, false, DTYPE_F16},
                      LoraCase{64, 2049, 256, 4, 0.0f, true, DTYPE_BF16}}) {
    SCOPED_TRACE(testing::Message() << "N " << cs.N << " in " << cs.in << " out " << cs.out << " r " << cs.r
                                    << " dropout " << cs.dropout << " dora " << cs.dora << " " << dtype_name(cs.wt));
    auto x = rnd(rng, {cs.N, cs.in}), w = rnd(rng, {cs.out, cs.in}, -0.3f, 0.3f, cs.wt), bias = rnd(rng, {cs.out});
    auto r = rnd(rng, {cs.N, cs.out});
    auto A = rnd(rng, {cs.in, cs.r}, -0.3f, 0.3f), Bm = rnd(rng, {cs.r, cs.out}, -0.3f, 0.3f), M = rnd(rng, {cs.out}, 0.5f, 2.0f);
    LoraOperand lo;
    lo.a = A.t;
    lo.b = Bm.t;
    if (cs.dora) lo.m = M.t;
    lo.scale = 1.7f;
    lo.dropout = cs.dropout;
    lo.dropout_key = 4321;
    lo.dropout_stream = 9;
    auto ur = zeros({cs.N, cs.r}), yprer = zeros({cs.N, cs.out}), denr = zeros({cs.out});
    auto uf = zeros({cs.N, cs.r}), ypref = zeros({cs.N, cs.out}), denf = zeros({cs.out});
    LoraSaved svr{ur.t, cs.dora ? yprer.t : Tensor{}, cs.dora ? denr.t : Tensor{}};
    LoraSaved svf{uf.t, cs.dora ? ypref.t : Tensor{}, cs.dora ? denf.t : Tensor{}};
    auto yf = zeros({cs.N, cs.out}), yr = zeros({cs.N, cs.out});
    fast().linear_lora_fwd(x.t, w.t, &bias.t, &lo, &svf, yf.t);
    ref().linear_lora_fwd(x.t, w.t, &bias.t, &lo, &svr, yr.t);
    expect_near_all(yf.t, yr.t, tol::kOpLinear, "lora par y");
    expect_near_all(uf.t, ur.t, tol::kOpLinear, "lora par u");
    if (cs.dora) expect_near_all(denf.t, denr.t, tol::kOpLinear, "dora par denom");
    auto dAf = zeros({cs.in, cs.r}), dBf = zeros({cs.r, cs.out}), dMf = zeros({cs.out});
    auto dAr = zeros({cs.in, cs.r}), dBr = zeros({cs.r, cs.out}), dMr = zeros({cs.out});
    LoraOperand lf = lo, lr = lo;
    lf.da = dAf.t; lf.db = dBf.t; lr.da = dAr.t; lr.db = dBr.t;
    if (cs.dora) { lf.dm = dMf.t; lr.dm = dMr.t; }
    auto base = rnd(rng, {cs.N, cs.in});
    auto dxf = copy_of(base.t), dxr = copy_of(base.t);
    // Both sides from the reference's saved tensors, so the backward is compared on identical inputs.
    fast().linear_bwd(x.t, w.t, r.t, &dxf.t, true, nullptr, nullptr, &lf, &svr);
    ref().linear_bwd(x.t, w.t, r.t, &dxr.t, true, nullptr, nullptr, &lr, &svr);
    expect_near_all(dxf.t, dxr.t, tol::kGradFastVsRef, "lora par dx");
    expect_near_all(dAf.t, dAr.t, tol::kGradFastVsRef, "lora par dA");
    expect_near_all(dBf.t, dBr.t, tol::kGradFastVsRef, "lora par dB");
    if (cs.dora) expect_near_all(dMf.t, dMr.t, tol::kGradFastVsRef, "dora par dm");
  }
}

}  // namespace
}  // namespace lora
