// The CPU linear layer at the shapes of a TinyLlama LoRA step: GFLOP/s of each path (forward y = x Wᵀ,
// backward dx = dy W, with f32 and bf16 weights, and the LoRA-adapted forward/backward), and a check
// of each against the reference ops (src/cpu/reference.cpp, double accumulation). The unit tests run
// these ops on small shapes, below the size where the GEMMs split over threads; this covers the
// parallel paths (dynamic column/row chunks, bf16 panels) at full size.
//
//   bench_gemm [--rows 96] [--reps 5] [--threads N] [--no-check]
//
// Prints one markdown row per (shape, weight dtype); exits 1 when a check fails.
#include <omp.h>

#include <fmt/format.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <vector>

#include "core/rng.h"
#include "core/timer.h"
#include "cpu/cpu_ops.h"
#include "cpu/reference.h"

using namespace lora;

namespace {

OwnedTensor random(Rng& rng, DType dt, std::initializer_list<int64_t> shape, float lo = -0.5f, float hi = 0.5f) {
  OwnedTensor t = tensor_alloc(dt, shape);
  const int64_t n = t.t.numel();
  for (int64_t i = 0; i < n; ++i) {
    const float v = lo + (hi - lo) * rng.uniform();
    if (dt == DTYPE_F32)
      t.t.f32()[i] = v;
    else
      t.t.ptr<uint16_t>()[i] = f32_to_bf16(v);
  }
  return t;
}

OwnedTensor copy_of(const Tensor& t) {
  OwnedTensor c = tensor_alloc(t.dtype, t.shape.data(), t.ndim);
  std::copy_n(static_cast<const char*>(t.data), t.nbytes(), static_cast<char*>(c.t.data));
  return c;
}

// max |a - b| / max |b|: the error against the result's scale (a GEMM's error grows with its length,
// not with the size of one entry).
double rel_err(const Tensor& a, const Tensor& b) {
  double e = 0, s = 0;
  for (int64_t i = 0; i < a.numel(); ++i) {
    e = std::max(e, double(std::fabs(a.f32()[i] - b.f32()[i])));
    s = std::max(s, double(std::fabs(b.f32()[i])));
  }
  return s > 0 ? e / s : e;
}

template <class F> double median_seconds(int reps, F&& f) {
  std::vector<double> t;
  f();  // warm-up
  for (int i = 0; i < reps; ++i) {
    Timer tm;
    f();
    t.push_back(tm.seconds());
  }
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

constexpr double kTol = 1e-5;  // relative to the result's scale; f32 accumulation over 2048-5632 terms

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"CPU linear-layer paths at TinyLlama shapes: GFLOP/s and a check against the reference ops"};
  int64_t rows = 96;
  int reps = 5, threads = 0;
  bool no_check = false;
  app.add_option("--rows", rows, "Token rows (N)")->capture_default_str();
  app.add_option("--reps", reps, "Timed repetitions (median)")->capture_default_str();
  app.add_option("--threads", threads, "Threads (0 = all cores)")->capture_default_str();
  app.add_flag("--no-check", no_check, "Skip the comparison with the reference ops");
  CLI11_PARSE(app, argc, argv);
  if (threads > 0) omp_set_num_threads(threads);

  struct Shape {
    const char* name;
    int64_t out, in;
  };
  const Shape shapes[] = {{"q_proj", 2048, 2048}, {"v_proj", 256, 2048}, {"up_proj", 5632, 2048},
                          {"down_proj", 2048, 5632}, {"lm_head", 32000, 2048}};
  Ops& fast = cpu_ops();
  Ops& ref = reference_ops();
  Rng rng(11);
  bool ok = true;
  std::printf("threads: %d, rows: %lld; GFLOP/s (median of %d); err = max|fast - ref| / max|ref|\n\n",
              omp_get_max_threads(), (long long)rows, reps);
  std::printf("| linear | W | forward | dx = dy W | LoRA r=8 forward | LoRA r=8 backward (dx, dA, dB) | max err |\n");
  std::printf("|---|---|---:|---:|---:|---:|---:|\n");
  for (const Shape& s : shapes) {
    for (DType dt : {DTYPE_F32, DTYPE_BF16}) {
      const int64_t n = rows, out = s.out, in = s.in, r = 8;
      auto w = random(rng, dt, {out, in});
      auto x = random(rng, DTYPE_F32, {n, in});
      auto dy = random(rng, DTYPE_F32, {n, out});
      auto y = random(rng, DTYPE_F32, {n, out});
      auto dx = random(rng, DTYPE_F32, {n, in});
      auto A = random(rng, DTYPE_F32, {in, r}), B = random(rng, DTYPE_F32, {r, out});
      auto dA = random(rng, DTYPE_F32, {in, r}), dB = random(rng, DTYPE_F32, {r, out});
      auto u = random(rng, DTYPE_F32, {n, r});
      LoraOperand lo;
      lo.a = A.t;
      lo.b = B.t;
      lo.da = dA.t;
      lo.db = dB.t;
      lo.scale = 20.0f;
      LoraSaved sv;
      sv.u = u.t;
      const double fl = 2.0 * double(n * out * in);
      const double fl_lora = 2.0 * double(n * r * (in + out));
      const double t_fwd = median_seconds(reps, [&] { fast.linear_fwd(x.t, w.t, nullptr, y.t); });
      const double t_dx = median_seconds(reps, [&] {
        fast.linear_bwd(x.t, w.t, dy.t, &dx.t, false, nullptr, nullptr, nullptr, nullptr);
      });
      const double t_lf = median_seconds(reps, [&] { fast.linear_lora_fwd(x.t, w.t, nullptr, &lo, &sv, y.t); });
      const double t_lb = median_seconds(reps, [&] {
        fast.linear_bwd(x.t, w.t, dy.t, &dx.t, true, nullptr, nullptr, &lo, &sv);
      });
      double err = 0;
      if (!no_check && s.out <= 8192) {
        // Forward, dx (accumulating), and the LoRA path with its gradients, fast against reference.
        auto y1 = copy_of(y.t), y2 = copy_of(y.t);
        fast.linear_fwd(x.t, w.t, nullptr, y1.t);
        ref.linear_fwd(x.t, w.t, nullptr, y2.t);
        err = std::max(err, rel_err(y1.t, y2.t));
        auto d1 = copy_of(dx.t), d2 = copy_of(dx.t);
        fast.linear_bwd(x.t, w.t, dy.t, &d1.t, true, nullptr, nullptr, nullptr, nullptr);
        ref.linear_bwd(x.t, w.t, dy.t, &d2.t, true, nullptr, nullptr, nullptr, nullptr);
        err = std::max(err, rel_err(d1.t, d2.t));
        auto u1 = copy_of(u.t), u2 = copy_of(u.t);
        LoraSaved s1{u1.t, {}, {}}, s2{u2.t, {}, {}};
        fast.linear_lora_fwd(x.t, w.t, nullptr, &lo, &s1, y1.t);
        ref.linear_lora_fwd(x.t, w.t, nullptr, &lo, &s2, y2.t);
        err = std::max(err, rel_err(y1.t, y2.t));
        auto a1 = copy_of(dA.t), a2 = copy_of(dA.t), b1 = copy_of(dB.t), b2 = copy_of(dB.t);
        LoraOperand l1 = lo, l2 = lo;
        l1.da = a1.t;
        l1.db = b1.t;
        l2.da = a2.t;
        l2.db = b2.t;
        fast.linear_bwd(x.t, w.t, dy.t, &d1.t, false, nullptr, nullptr, &l1, &s1);
        ref.linear_bwd(x.t, w.t, dy.t, &d2.t, false, nullptr, nullptr, &l2, &s2);
        err = std::max({err, rel_err(d1.t, d2.t), rel_err(a1.t, a2.t), rel_err(b1.t, b2.t)});
        if (!(err <= kTol)) ok = false;
      }
      std::printf("| %s (%lld, %lld) | %s | %.1f | %.1f | %.1f | %.1f | %s |\n", s.name, (long long)out,
                  (long long)in, dtype_name(dt), fl / t_fwd / 1e9, fl / t_dx / 1e9, (fl + fl_lora) / t_lf / 1e9,
                  (fl + 2 * fl_lora) / t_lb / 1e9,
                  no_check || s.out > 8192 ? "-" : (fmt::format("{:.1e}{}", err, err <= kTol ? "" : " FAIL")).c_str());
    }
  }
  if (!ok) std::printf("\nFAIL: a fast path differs from the reference by more than %.0e of the result's scale\n", kTol);
  return ok ? 0 : 1;
}
