// CPU training benchmark: one LoRA step = TrainSession::loss_and_grad + an Adam update of the adapter
// (a plain loop here, MLX's Adam without bias correction; the real optimizer lives in src/train/).
// Prints the median and spread of seconds per step, tokens/s (all positions, and counted as mlx-lm
// does: masked targets per second), peak RSS, and the arithmetic floor: FLOPs per step divided by the
// sgemm rate measured in the same run through the same GEMM path, reported as "% of floor".
//
//   bench_train --model DIR [--dtype bf16|f32] [--batch 1] [--seq 96] [--len 89] [--rank 8]
//               [--keys q_proj,v_proj] [--num-layers 16] [--grad-checkpoint] [--reps 5] [--warmup 1]
//               [--threads N] [--profile]
//
// --seq is the padded row length T (our batching pads 89 tokens to 96), --len the real tokens per row
// (targets are the next tokens, so len - 1 masked targets per row). --profile wraps the CPU ops in a
// timing decorator and prints where a step's time goes, per op.
//
// FLOPs per step (N = B·T rows; P_l = Σ in·out of a block's seven linears; nb = trainable blocks;
// A_fwd = causal attention 4·H·D·T(T+1)/2 per row and block; LoRA adds per adapted linear
// 2·N·r·(in+out) forward and 4·N·r·(in+out) backward (gB = g Bᵀ, dB = uᵀ g, dA = xᵀ gB, dx += gB Aᵀ)):
//   forward  = Σ_all blocks (2·N·P_l + A_fwd) + 2·N·V·C (lm_head) + LoRA forward
//   backward = 2·N·V·C (dx of lm_head) + Σ_trainable blocks (2·N·P_l + 2·A_fwd) + LoRA backward
//              (only activation gradients dx = dy·W for the frozen W: no weight gradients, which would
//              double it; the lowest trainable block skips the dx of q/k/v, nothing below it trains;
//              attention backward is four products against the forward's two)
//   recompute (--grad-checkpoint) = Σ_trainable blocks (2·N·P_l + A_fwd) + their LoRA forward
// Element-wise work (norms, RoPE, softmax, SwiGLU, xent) is not counted: the floor is the GEMM time.
#include <omp.h>
#include <sys/resource.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <ctime>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "core/error.h"
#include "core/log.h"
#include "core/rng.h"
#include "core/timer.h"
#include "cpu/cpu_ops.h"
#include "cpu/gemm.h"
#include "model/llama_train.h"
#include "model/lora.h"
#include "model/model.h"

using namespace lora;

namespace {

struct Stat {
  double median, min, max;
};
Stat stats(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return {v[v.size() / 2], v.front(), v.back()};
}

double process_cpu_seconds() {
  timespec ts{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return double(ts.tv_sec) + 1e-9 * double(ts.tv_nsec);
}

// The CPU ops with a stopwatch around each call (--profile). Wall time per op name; the ops are
// parallel inside, so wall time is what the step pays; the CPU seconds of all threads show the work
// apart from waiting for the OS to run a thread (on a loaded machine, wall time is mostly that).
class TimingOps final : public Ops {
 public:
  explicit TimingOps(Ops& inner) : in_(inner) {}
  std::map<std::string, double> secs, cpu;  // wall seconds; CPU seconds of all threads
  std::map<std::string, int64_t> calls;

  Device device() const override { return in_.device(); }
  void embedding_fwd(const int32_t* ids, int64_t n, const Tensor& t, Tensor& out) override {
    timed("embedding_fwd", [&] { in_.embedding_fwd(ids, n, t, out); });
  }
  void rmsnorm_fwd(const Tensor& x, const Tensor& w, float eps, Tensor& y) override {
    timed("rmsnorm_fwd", [&] { in_.rmsnorm_fwd(x, w, eps, y); });
  }
  void linear_fwd(const Tensor& x, const Tensor& w, const Tensor* b, Tensor& y) override {
    timed(w.dim(0) > 16384 ? "lm_head_fwd" : "linear_fwd", [&] { in_.linear_fwd(x, w, b, y); });
  }
  void rope_fwd(Tensor& x, const int32_t* pos, const RopeTable& r) override {
    timed("rope_fwd", [&] { in_.rope_fwd(x, pos, r); });
  }
  void attention_fwd(const Tensor& q, const Tensor& k, const Tensor& v, int64_t p, Tensor& o) override {
    timed("attention_fwd", [&] { in_.attention_fwd(q, k, v, p, o); });
  }
  void swiglu_fwd(const Tensor& g, const Tensor& u, Tensor& o) override {
    timed("swiglu_fwd", [&] { in_.swiglu_fwd(g, u, o); });
  }
  void add_fwd(Tensor& y, const Tensor& x) override { timed("add_fwd", [&] { in_.add_fwd(y, x); }); }
  void rmsnorm_bwd(const Tensor& x, const Tensor& w, float eps, const Tensor& dy, Tensor& dx, Tensor* dw) override {
    timed("rmsnorm_bwd", [&] { in_.rmsnorm_bwd(x, w, eps, dy, dx, dw); });
  }
  void rope_bwd(Tensor& dx, const int32_t* pos, const RopeTable& r) override {
    timed("rope_bwd", [&] { in_.rope_bwd(dx, pos, r); });
  }
  void attention_train_fwd(const Tensor& q, const Tensor& k, const Tensor& v, Tensor& o, Tensor& l) override {
    timed("attention_train_fwd", [&] { in_.attention_train_fwd(q, k, v, o, l); });
  }
  void attention_bwd(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& o, const Tensor& l,
                     const Tensor& dout, Tensor& dq, Tensor& dk, Tensor& dv) override {
    timed("attention_bwd", [&] { in_.attention_bwd(q, k, v, o, l, dout, dq, dk, dv); });
  }
  void swiglu_bwd(const Tensor& g, const Tensor& u, const Tensor& d, Tensor& dg, Tensor& du) override {
    timed("swiglu_bwd", [&] { in_.swiglu_bwd(g, u, d, dg, du); });
  }
  void linear_lora_fwd(const Tensor& x, const Tensor& w, const Tensor* b, const LoraOperand* lo, LoraSaved* s,
                       Tensor& y) override {
    timed(lo ? "linear_lora_fwd (adapted)" : "linear_lora_fwd (frozen)", [&] { in_.linear_lora_fwd(x, w, b, lo, s, y); });
  }
  void linear_bwd(const Tensor& x, const Tensor& w, const Tensor& dy, Tensor* dx, bool acc, Tensor* dw, Tensor* db,
                  const LoraOperand* lo, const LoraSaved* s) override {
    const char* name = w.dim(0) > 16384 ? "lm_head_bwd" : lo ? "linear_bwd (adapted)" : "linear_bwd (frozen)";
    timed(name, [&] { in_.linear_bwd(x, w, dy, dx, acc, dw, db, lo, s); });
  }
  void xent_fwd_bwd(Tensor& lg, const int32_t* t, const float* m, const float* ds, bool g, float* rows) override {
    timed("xent_fwd_bwd", [&] { in_.xent_fwd_bwd(lg, t, m, ds, g, rows); });
  }
  void optimizer_update(const OptimizerSlot* s, int64_t n, const OptimizerStep& st) override {
    timed("optimizer_update", [&] { in_.optimizer_update(s, n, st); });
  }

 private:
  Ops& in_;
  template <class F> void timed(const char* name, F&& f) {
    const double c0 = process_cpu_seconds();
    Timer t;
    f();
    secs[name] += t.seconds();
    cpu[name] += process_cpu_seconds() - c0;
    calls[name] += 1;
  }
};

// GFLOP/s of c (m, n) = a (m, k) · b (n, k)ᵀ through the backend's parallel f32 GEMM, median of reps
// calls. Kept alive between calls so the step loop can recalibrate right before each step: on a shared
// machine the rate moves with the load, and the floor must be taken at the same moment as the step.
struct SgemmProbe {
  int64_t m, n, k;
  std::vector<float> a, b, c;
  SgemmProbe(int64_t mm, int64_t nn, int64_t kk)
      : m(mm), n(nn), k(kk), a(size_t(mm * kk)), b(size_t(nn * kk)), c(size_t(mm * nn)) {
    Rng rng(3);
    for (auto& v : a) v = float(rng.uniform()) - 0.5f;
    for (auto& v : b) v = float(rng.uniform()) - 0.5f;
  }
  double gflops(int reps) {
    std::vector<double> r;
    for (int i = 0; i < reps; ++i) {
      Timer t;
      cpu::gemm_nt_f32(m, n, k, a.data(), k, b.data(), k, c.data(), n);
      r.push_back(2.0 * double(m * n * k) / t.seconds() / 1e9);
    }
    return stats(r).median;
  }
};

double cpu_seconds() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return double(u.ru_utime.tv_sec + u.ru_stime.tv_sec) + 1e-6 * double(u.ru_utime.tv_usec + u.ru_stime.tv_usec);
}

// GFLOP/s of the linear layer with a (out, in) weight of dtype wt: forward y = x Wᵀ (linear_fwd) and
// backward dx = dy W (linear_bwd, no weight gradient), the two products a LoRA step runs on frozen W.
std::pair<double, double> measure_linear(int64_t n, int64_t out, int64_t in, DType wt, int reps) {
  Ops& ops = cpu_ops();
  OwnedTensor w = tensor_alloc(wt, {out, in});
  OwnedTensor x = tensor_alloc(DTYPE_F32, {n, in}), y = tensor_alloc(DTYPE_F32, {n, out});
  Rng rng(4);
  std::vector<float> wf(size_t(out * in));
  for (auto& v : wf) v = float(rng.uniform()) - 0.5f;
  if (wt == DTYPE_F32)
    std::copy(wf.begin(), wf.end(), w.t.f32());
  else
    for (size_t i = 0; i < wf.size(); ++i) w.t.ptr<uint16_t>()[i] = f32_to_bf16(wf[i]);
  for (int64_t i = 0; i < n * in; ++i) x.t.f32()[i] = float(rng.uniform()) - 0.5f;
  for (int64_t i = 0; i < n * out; ++i) y.t.f32()[i] = float(rng.uniform()) - 0.5f;
  std::vector<double> f, b;
  const double fl = 2.0 * double(n * out * in);
  for (int i = 0; i < reps + 1; ++i) {
    Timer t;
    ops.linear_fwd(x.t, w.t, nullptr, y.t);
    const double tf = t.seconds();
    t.reset();
    ops.linear_bwd(x.t, w.t, y.t, &x.t, false, nullptr, nullptr, nullptr, nullptr);
    const double tb = t.seconds();
    if (i > 0) {
      f.push_back(fl / tf / 1e9);
      b.push_back(fl / tb / 1e9);
    }
  }
  return {stats(f).median, stats(b).median};
}

struct Flops {
  double fwd = 0, bwd = 0, recompute = 0;
  double total() const { return fwd + bwd + recompute; }
};

// The formula in the header comment.
Flops count_flops(const ModelConfig& c, const Adapter& ad, int64_t B, int64_t T, bool ckpt) {
  const double N = double(B * T);
  double p_block = 0, p_qkv = 0;
  for (int k = 0; k < LIN_COUNT; ++k) {
    const auto s = linear_key_shape(c, LinearKey(k));
    p_block += double(s[0] * s[1]);
    if (k == LIN_Q || k == LIN_K || k == LIN_V) p_qkv += double(s[0] * s[1]);
  }
  const double attn = 4.0 * double(c.n_heads * c.head_dim) * double(T * (T + 1) / 2) * double(B);
  const double head = 2.0 * N * double(c.vocab * c.dim);
  const double r = double(ad.cfg.rank);
  Flops f;
  f.fwd = double(c.n_layers) * (2.0 * N * p_block + attn) + head;
  f.bwd = head;
  for (int64_t l = ad.first_layer; l < c.n_layers; ++l) {
    const bool bottom = l == ad.first_layer;
    f.bwd += 2.0 * N * (p_block - (bottom ? p_qkv : 0.0)) + 2.0 * attn;
    if (ckpt) f.recompute += 2.0 * N * p_block + attn;
    for (int k = 0; k < LIN_COUNT; ++k) {
      if (!ad.lora[size_t(l)][size_t(k)]) continue;
      const auto s = linear_key_shape(c, LinearKey(k));
      const double io = double(s[0] + s[1]);
      f.fwd += 2.0 * N * r * io;
      if (ckpt) f.recompute += 2.0 * N * r * io;
      const bool dx = !(bottom && (k == LIN_Q || k == LIN_K || k == LIN_V));
      f.bwd += 2.0 * N * r * (double(s[0]) * 2 + double(s[1]) * (dx ? 2 : 1));
    }
  }
  return f;
}

// MLX's Adam (no bias correction): m = b1 m + (1-b1) g; v = b2 v + (1-b2) g²; w -= lr m / (sqrt(v) + eps).
struct Adam {
  std::vector<std::vector<float>> m, v;
  void step(Adapter& a, float lr) {
    const float b1 = 0.9f, b2 = 0.999f, eps = 1e-8f;
    if (m.empty())
      for (auto& p : a.params) {
        m.emplace_back(size_t(p.value.t.numel()), 0.0f);
        v.emplace_back(size_t(p.value.t.numel()), 0.0f);
      }
    for (size_t i = 0; i < a.params.size(); ++i) {
      float* w = a.params[i].value.t.f32();
      const float* g = a.params[i].grad.t.f32();
      float* mi = m[i].data();
      float* vi = v[i].data();
      const int64_t n = a.params[i].value.t.numel();
#pragma omp parallel for simd schedule(static) if (n >= 65536)
      for (int64_t j = 0; j < n; ++j) {
        mi[j] = b1 * mi[j] + (1 - b1) * g[j];
        vi[j] = b2 * vi[j] + (1 - b2) * g[j] * g[j];
        w[j] -= lr * mi[j] / (std::sqrt(vi[j]) + eps);
      }
    }
    a.zero_grad();
  }
};

std::vector<LinearKey> parse_keys(const std::string& s) {
  std::vector<LinearKey> keys;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, ',')) {
    LinearKey k;
    if (!linear_key_from_name(item, &k)) fail_input("--keys", "unknown linear key '" + item + "'", "e.g. q_proj,v_proj");
    keys.push_back(k);
  }
  return keys;
}

double load_average() {
  double l = -1;
  if (FILE* f = std::fopen("/proc/loadavg", "r")) {
    if (std::fscanf(f, "%lf", &l) != 1) l = -1;
    std::fclose(f);
  }
  return l;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"CPU LoRA training benchmark: seconds per step against the GEMM floor"};
  std::string model_path, dtype = "bf16", keys = "q_proj,v_proj";
  int64_t batch = 1, seq = 96, len = 89, rank = 8, num_layers = 16;
  int reps = 5, warmup = 1, threads = 0;
  bool ckpt = false, profile = false;
  app.add_option("--model", model_path, "Model folder or .gguf")->required();
  app.add_option("--dtype", dtype, "Frozen weights kept in bf16 or f32")->capture_default_str();
  app.add_option("--batch", batch, "Rows per batch (B)")->capture_default_str();
  app.add_option("--seq", seq, "Tokens per row after padding (T)")->capture_default_str();
  app.add_option("--len", len, "Real tokens per row (len - 1 masked targets); capped at --seq")->capture_default_str();
  app.add_option("--rank", rank, "LoRA rank")->capture_default_str();
  app.add_option("--keys", keys, "Adapted linears, comma-separated")->capture_default_str();
  app.add_option("--num-layers", num_layers, "Adapt the last N blocks (-1 = all)")->capture_default_str();
  app.add_flag("--grad-checkpoint", ckpt, "Recompute block activations in the backward");
  app.add_option("--reps", reps, "Timed steps")->capture_default_str();
  app.add_option("--warmup", warmup, "Untimed steps first")->capture_default_str();
  app.add_option("--threads", threads, "Threads (0 = all cores)")->capture_default_str();
  app.add_flag("--profile", profile, "Print the time per op (one timed pass after the measurement)");
  CLI11_PARSE(app, argc, argv);
  if (threads > 0) omp_set_num_threads(threads);
  len = std::min(len, seq);

  try {
    ModelLoadOptions lo;
    if (!dtype_from_name(dtype, &lo.compute_dtype)) fail_input("--dtype", "unknown dtype " + dtype, "bf16 or f32");
    Timer tl;
    Model m = model_load(model_path, lo);
    const ModelConfig& c = m.cfg;
    LoraConfig lc;
    lc.rank = rank;
    lc.keys = parse_keys(keys);
    lc.num_layers = num_layers;
    Adapter ad = adapter_create(m, lc, 0);
    // B = 0 at init would make the A gradients exactly zero; give B small values so every product
    // carries real numbers (the work is the same either way).
    Rng rng(7);
    for (auto& p : ad.params)
      if (p.name.ends_with("lora_b"))
        for (int64_t i = 0; i < p.value.t.numel(); ++i) p.value.t.f32()[i] = 0.01f * (float(rng.uniform()) - 0.5f);
    std::printf("model: %s (%.1fM parameters, frozen weights in %s), loaded in %.1f s\n", model_path.c_str(),
                double(c.n_params()) / 1e6, dtype.c_str(), tl.seconds());
    std::printf("%s\n", adapter_trainable_summary(m, ad).c_str());
    std::printf("batch %lld x %lld tokens (%lld real), rank %lld, keys %s, %lld trainable layers, grad checkpoint %s\n",
                (long long)batch, (long long)seq, (long long)len, (long long)rank, keys.c_str(),
                (long long)(c.n_layers - ad.first_layer), ckpt ? "on" : "off");
    std::printf("threads: %d, load average at start: %.2f\n", omp_get_max_threads(), load_average());

    // The GEMM rate this machine gives through our path, at the shape of the step's big products.
    SgemmProbe probe(batch * seq, c.ffn_dim, c.dim);
    probe.gflops(2);  // warm-up
    const auto lin_f32 = measure_linear(batch * seq, c.ffn_dim, c.dim, DTYPE_F32, 3);
    const auto lin_bf16 = measure_linear(batch * seq, c.ffn_dim, c.dim, DTYPE_BF16, 3);
    std::printf("linear (%lld, %lld) f32 weight: forward %.1f, dx %.1f GFLOP/s; bf16 weight: forward %.1f, dx %.1f GFLOP/s\n",
                (long long)c.ffn_dim, (long long)c.dim, lin_f32.first, lin_f32.second, lin_bf16.first,
                lin_bf16.second);

    // Batch: random tokens, each row len real tokens then padding (id 0, masked out).
    const int64_t N = batch * seq;
    std::vector<int32_t> inputs(static_cast<size_t>(N)), targets(static_cast<size_t>(N));
    std::vector<float> mask(static_cast<size_t>(N));
    for (int64_t b = 0; b < batch; ++b)
      for (int64_t t = 0; t < seq; ++t) {
        const size_t i = size_t(b * seq + t);
        inputs[i] = t < len ? int32_t(rng.below(uint64_t(c.vocab))) : 0;
        targets[i] = t + 1 < len ? int32_t(rng.below(uint64_t(c.vocab))) : 0;
        mask[i] = t + 1 < len ? 1.0f : 0.0f;
      }
    TrainBatchView bv{batch, seq, inputs.data(), targets.data(), mask.data()};

    TrainSessionOptions so;
    so.max_batch = batch;
    so.max_len = seq;
    so.grad_checkpoint = ckpt;
    Adam adam;
    TrainSession sess(m, ad, cpu_ops(), so);
    const Flops f = count_flops(c, ad, batch, seq, ckpt);
    // Per timed step: the sgemm rate just before it (median of 3 calls), the step's wall and CPU time.
    std::vector<double> secs, rates, pct, util;
    double loss = 0;
    int64_t n_targets = 0;
    for (int i = 0; i < warmup + reps; ++i) {
      const double rate = i >= warmup ? probe.gflops(3) : 0.0;
      const double c0 = cpu_seconds();
      Timer t;
      const LossResult r = sess.loss_and_grad(bv, i);
      adam.step(ad, 1e-5f);
      const double s = t.seconds();
      if (i >= warmup) {
        secs.push_back(s);
        rates.push_back(rate);
        pct.push_back(100.0 * f.total() / (rate * 1e9) / s);
        util.push_back((cpu_seconds() - c0) / s / omp_get_max_threads());
      }
      loss = r.mean();
      n_targets = r.n_targets;
    }
    const Stat s = stats(secs), sr = stats(rates), sp = stats(pct), su = stats(util);
    std::printf("last loss %.4f over %lld targets; activations and scratch planned: %.1f MB\n", loss,
                (long long)n_targets, double(sess.planned_bytes()) / 1e6);
    std::printf("FLOPs per step: %.1f G = forward %.1f + backward %.1f + recompute %.1f (formula: bench_train.cpp header)\n",
                f.total() / 1e9, f.fwd / 1e9, f.bwd / 1e9, f.recompute / 1e9);
    std::printf("sgemm %lldx%lldx%lld f32 (gemm_nt_f32) measured before each step: median %.1f GFLOP/s (%.1f..%.1f)\n",
                (long long)probe.m, (long long)probe.n, (long long)probe.k, sr.median, sr.min, sr.max);
    std::printf("floor: %.3f s per step at the median sgemm rate; %% of floor = floor at the rate measured just "
                "before a step / that step's time, median over steps (%.0f..%.0f%%)\n",
                f.total() / (sr.median * 1e9), sp.min, sp.max);
    std::printf("CPU time / (wall x threads) during steps: median %.0f%%; load average at end: %.2f\n\n",
                100.0 * su.median, load_average());
    std::printf("| weights | grad ckpt | s/step (median) | spread | tokens/s | mlx-lm tokens/s | GFLOP/s | %% of floor | peak RSS |\n");
    std::printf("|---|---|---:|---:|---:|---:|---:|---:|---:|\n");
    std::printf("| %s | %s | %.3f | %.3f..%.3f | %.1f | %.1f | %.1f | %.0f%% | %.2f GB |\n", dtype.c_str(),
                ckpt ? "on" : "off", s.median, s.min, s.max, double(N) / s.median, double(n_targets) / s.median,
                f.total() / s.median / 1e9, sp.median, double(peak_rss_bytes()) / 1e9);

    if (profile) {
      TimingOps tops(cpu_ops());
      TrainSession ps(m, ad, tops, so);
      const int passes = std::max(1, reps);
      Timer tt;
      for (int i = 0; i < passes; ++i) ps.loss_and_grad(bv, i);
      const double total = tt.seconds() / passes;
      std::vector<std::pair<double, std::string>> rows;
      double opsum = 0;
      for (const auto& [k, v] : tops.secs) {
        rows.emplace_back(v / passes, k);
        opsum += v / passes;
      }
      std::sort(rows.rbegin(), rows.rend());
      std::printf("\nper-op time, mean of %d steps (loss_and_grad only, %.3f s wall); cpu = CPU seconds of all threads\n",
                  passes, total);
      for (const auto& [v, k] : rows)
        std::printf("  %-28s %8.1f ms  %5.1f%%  cpu %8.1f ms  (%lld calls)\n", k.c_str(), v * 1e3, 100.0 * v / total,
                    tops.cpu[k] / passes * 1e3, (long long)(tops.calls[k] / passes));
      std::printf("  %-28s %8.1f ms  %5.1f%%\n", "(outside ops)", (total - opsum) * 1e3, 100.0 * (total - opsum) / total);
    }
  } catch (const lora::Error& e) {
    std::fprintf(stderr, "error: %s\n", e.full().c_str());
    return 1;
  }
  return 0;
}
