// The CUDA training kernels (src/cuda/train_kernels.h) against host oracles on the same inputs:
//   - cuda_xent_fwd_bwd vs a double-precision softmax cross-entropy (V from 1 to 151936, masked rows,
//     out-of-range targets, rows shifted by ±100 so only a max-subtracted sum survives, the float4 and
//     the scalar paths, grad on and off);
//   - cuda_optimizer_update (adam/adamw with and without bias correction, sgd plain / momentum /
//     nesterov / dampening / weight decay, 3 steps over 5 tensors of odd sizes) bit for bit vs the
//     update rules evaluated op by op on the host, and vs lora::Optimizer (the CPU backend) within
//     kCudaOptimizerVsCpu (the CPU loop is compiled with FMA contraction, see docs/numerics.md);
//   - cuda_convert_f32_to_bf16 bit for bit vs core/dtype.h (NaNs, infinities, ties, subnormals);
//   - cuda_lora_dropout bit for bit vs ops.h's lora_dropout_keep and the CPU's x · keep_scale;
//   - cuda_dora_denom vs a double loop; cuda_dora_scale_fwd, the g of cuda_dora_bwd, cuda_bias_add and
//     cuda_scale_add bit for bit vs the CPU's formulas; the column sums (dm, cuda_col_sum_acc) vs the
//     CPU's double sums, and repeated runs bit for bit.
// Every output the kernel overwrites starts as NaN. Without a GPU the device tests skip with a message;
// the argument checks still run.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "core/error.h"
#include "core/rng.h"
#include "core/tensor.h"
#include "cuda/check.h"
#include "cuda/device.h"
#include "cuda/train_kernels.h"
#include "model/lora.h"
#include "ops/ops.h"
#include "cuda_test_util.h"
#include "tolerances.h"
#include "train/optimizer.h"

namespace lora {
namespace {


// Device array of T freed on scope exit. upload() and download() wait for the whole device, so a
// kernel queued on the context's (non-blocking) stream never races the legacy-stream copies.
template <class T>
struct Dev {
  T* p = nullptr;
  size_t n = 0;
  explicit Dev(size_t count) : n(count) {
    LORA_CUDA_CHECK(cudaMalloc(reinterpret_cast<void**>(&p), std::max<size_t>(n, 1) * sizeof(T)));
  }
  explicit Dev(const std::vector<T>& h) : Dev(h.size()) { upload(h); }
  ~Dev() { (void)cudaFree(p); }
  Dev(const Dev&) = delete;
  Dev& operator=(const Dev&) = delete;
  void upload(const std::vector<T>& h) {
    EXPECT_EQ(h.size(), n);
    LORA_CUDA_CHECK(cudaDeviceSynchronize());
    if (n) LORA_CUDA_CHECK(cudaMemcpy(p, h.data(), n * sizeof(T), cudaMemcpyHostToDevice));
    LORA_CUDA_CHECK(cudaDeviceSynchronize());
  }
  std::vector<T> download() const {
    LORA_CUDA_CHECK(cudaDeviceSynchronize());
    std::vector<T> h(n);
    if (n) LORA_CUDA_CHECK(cudaMemcpy(h.data(), p, n * sizeof(T), cudaMemcpyDeviceToHost));
    return h;
  }
};

std::vector<float> uniform(Rng& rng, size_t n, float lo, float hi) {
  std::vector<float> v(n);
  for (auto& x : v) x = lo + (hi - lo) * rng.uniform();
  return v;
}

// A product rounded to f32 on its own. GCC contracts a * b + c into an FMA by default for C++ (and
// -march=native has FMA), so the host oracles of "each operation rounded" formulas pass every product
// through a volatile: what is loaded back cannot be fused with the add that follows.
float mul_rn(float a, float b) {
  volatile float r = a * b;
  return r;
}

// Bitwise equality of two f32 arrays (NaN payloads and the sign of zero included).
int count_bit_diffs(const std::vector<float>& got, const std::vector<float>& want, const std::string& what,
                    bool report = true) {
  EXPECT_EQ(got.size(), want.size()) << what;
  int bad = 0;
  for (size_t i = 0; i < std::min(got.size(), want.size()); ++i)
    if (f32_to_bits(got[i]) != f32_to_bits(want[i]) && bad++ < 5 && report)
      ADD_FAILURE() << what << ": [" << i << "] got " << got[i] << " want " << want[i];
  return bad;
}

std::string shape(int64_t a, int64_t b) { return "(" + std::to_string(a) + ", " + std::to_string(b) + ")"; }

class CudaTrain : public ::testing::Test {
 protected:
  void SetUp() override {
    LORA_REQUIRE_CUDA();
    dev_ = cuda_device_open(0);
    cuda_device_use(*dev_);
  }
  void TearDown() override {
    if (!measured_.empty()) std::printf("  measured: %s\n", measured_.c_str());
  }
  void note(const char* what, double v) {
    char buf[128];
    std::snprintf(buf, sizeof buf, "%s%s %.3g", measured_.empty() ? "" : ", ", what, v);
    measured_ += buf;
  }
  cudaStream_t stream() const { return dev_->stream; }
  std::unique_ptr<CudaDevice> dev_;
  std::string measured_;
};

// ---------------------------------------------------------------------------------------------------
// Argument checks (no GPU needed: the launchers throw before touching the device).

TEST(CudaTrainArgs, BadArgumentsAreInternalErrors) {
  float* p = nullptr;
  const int32_t* ip = nullptr;
  const CudaOptScalars s{};
  EXPECT_THROW(cuda_xent_fwd_bwd(p, -1, 10, ip, p, 1.0f, true, p, nullptr), InternalError);
  EXPECT_THROW(cuda_xent_fwd_bwd(p, 2, -1, ip, p, 1.0f, true, p, nullptr), InternalError);
  EXPECT_THROW(cuda_xent_fwd_bwd(p, 2, 10, ip, p, 1.0f, true, p, nullptr), InternalError);  // null pointers
  EXPECT_NO_THROW(cuda_xent_fwd_bwd(p, 0, 10, ip, p, 1.0f, true, p, nullptr));             // no rows
  EXPECT_THROW(cuda_optimizer_update(nullptr, -1, 5, CUDA_OPT_ADAM, s, nullptr), InternalError);
  EXPECT_THROW(cuda_optimizer_update(nullptr, 1, -5, CUDA_OPT_ADAM, s, nullptr), InternalError);
  EXPECT_THROW(cuda_optimizer_update(nullptr, 1, 5, 3, s, nullptr), InternalError);  // unknown kind
  EXPECT_THROW(cuda_optimizer_update(nullptr, 1, 5, CUDA_OPT_SGD, s, nullptr), InternalError);  // null table
  EXPECT_NO_THROW(cuda_optimizer_update(nullptr, 0, 5, CUDA_OPT_ADAMW, s, nullptr));
  EXPECT_THROW(cuda_convert_f32_to_bf16(p, p, -1, nullptr), InternalError);
  EXPECT_NO_THROW(cuda_convert_f32_to_bf16(p, p, 0, nullptr));
  EXPECT_THROW(cuda_lora_dropout(p, p, -1, 0.1f, 1, 2, nullptr), InternalError);
  EXPECT_THROW(cuda_lora_dropout(p, p, 8, 1.0f, 1, 2, nullptr), InternalError);   // p = 1
  EXPECT_THROW(cuda_lora_dropout(p, p, 8, -0.1f, 1, 2, nullptr), InternalError);  // p < 0
  EXPECT_THROW(cuda_lora_dropout(p, p, 8, 0.1f, 1, 2, nullptr), InternalError);   // null pointers
  EXPECT_NO_THROW(cuda_lora_dropout(p, p, 0, 0.1f, 1, 2, nullptr));
  EXPECT_THROW(cuda_dora_denom(p, DTYPE_F32, p, p, 1.0f, 4, 4, 0, p, nullptr), InternalError);     // r = 0
  EXPECT_THROW(cuda_dora_denom(p, DTYPE_F32, p, p, 1.0f, 4, 4, 2049, p, nullptr), InternalError);  // r too large
  EXPECT_THROW(cuda_dora_denom(p, DTYPE_Q8_0, p, p, 1.0f, 4, 4, 2, p, nullptr), InternalError);    // dtype
  EXPECT_THROW(cuda_dora_denom(p, DTYPE_F32, p, p, 1.0f, -4, 4, 2, p, nullptr), InternalError);
  EXPECT_THROW(cuda_dora_denom(p, DTYPE_F32, p, p, 1.0f, 4, 4, 2, p, nullptr), InternalError);  // null pointers
  const float dummy = 0.0f;  // a non-null bias, never read: the dtype check comes first
  EXPECT_THROW(cuda_dora_scale_fwd(p, p, p, &dummy, DTYPE_I32, 2, 2, p, nullptr), InternalError);  // bias dtype
  EXPECT_THROW(cuda_dora_scale_fwd(p, p, p, nullptr, DTYPE_F32, -2, 2, p, nullptr), InternalError);
  EXPECT_NO_THROW(cuda_dora_scale_fwd(p, p, p, nullptr, DTYPE_F32, 0, 2, p, nullptr));
  EXPECT_THROW(cuda_dora_bwd(p, p, p, p, 2, -2, p, p, nullptr), InternalError);
  EXPECT_THROW(cuda_dora_bwd(p, p, p, p, 2, 2, p, p, nullptr), InternalError);  // null pointers
  EXPECT_NO_THROW(cuda_dora_bwd(p, p, p, p, 0, 2, p, p, nullptr));
  EXPECT_THROW(cuda_bias_add(p, p, DTYPE_Q4_0, 2, 2, nullptr), InternalError);
  EXPECT_THROW(cuda_bias_add(p, p, DTYPE_F32, -1, 2, nullptr), InternalError);
  EXPECT_THROW(cuda_col_sum_acc(p, 2, -1, p, nullptr), InternalError);
  EXPECT_NO_THROW(cuda_col_sum_acc(p, 0, 3, p, nullptr));
  EXPECT_THROW(cuda_scale_add(p, p, 1.0f, -1, nullptr), InternalError);
  EXPECT_NO_THROW(cuda_scale_add(p, p, 1.0f, 0, nullptr));
}

// ---------------------------------------------------------------------------------------------------
// Cross-entropy

struct XentWant {
  std::vector<double> loss;  // (R)
  std::vector<double> grad;  // (R, V)
  std::vector<float> c;      // (R) mask · dscale in f32 (0 for dropped rows)
};

// Double-precision oracle; rows with mask 0 or a target outside [0, V) are dropped (loss 0, grad 0).
XentWant xent_oracle(const std::vector<float>& logits, int64_t R, int64_t V, const std::vector<int32_t>& tgt,
                     const std::vector<float>& mask, float dscale) {
  XentWant w{std::vector<double>(size_t(R), 0.0), std::vector<double>(size_t(R * V), 0.0),
             std::vector<float>(size_t(R), 0.0f)};
  for (int64_t r = 0; r < R; ++r) {
    const float* x = logits.data() + r * V;
    const int64_t t = tgt[size_t(r)];
    if (mask[size_t(r)] == 0.0f || t < 0 || t >= V) continue;
    double mx = -INFINITY;
    for (int64_t j = 0; j < V; ++j) mx = std::max(mx, double(x[j]));
    double s = 0.0;
    for (int64_t j = 0; j < V; ++j) s += std::exp(double(x[j]) - mx);
    const double lse = mx + std::log(s);
    w.loss[size_t(r)] = double(mask[size_t(r)]) * (lse - double(x[t]));
    const float c = mask[size_t(r)] * dscale;
    w.c[size_t(r)] = c;
    for (int64_t j = 0; j < V; ++j) w.grad[size_t(r * V + j)] = std::exp(double(x[j]) - lse) * c - (j == t ? c : 0.0);
  }
  return w;
}

// Rows: plain (targets 0, V-1, middle), mask 0, mask 0.5, target -1 and V (treated as masked), and rows
// shifted by +100 / -100 (exp(108) overflows f32: only a max-subtracted sum gets these right).
struct XentCase {
  std::vector<float> logits;
  std::vector<int32_t> tgt;
  std::vector<float> mask;
  int64_t R = 0;
};

XentCase xent_case(Rng& rng, int64_t V) {
  XentCase c;
  const int32_t last = int32_t(V - 1), mid = int32_t(V / 2);
  c.tgt = {0, last, mid, mid, mid, -1, int32_t(V), last, 0, mid};
  c.mask = {1, 1, 1, 0, 0.5f, 1, 1, 1, 1, 2};
  c.R = int64_t(c.tgt.size());
  c.logits = uniform(rng, size_t(c.R * V), -8, 8);
  for (int64_t j = 0; j < V; ++j) {
    c.logits[size_t(7 * V + j)] += 100.0f;
    c.logits[size_t(8 * V + j)] -= 100.0f;
  }
  return c;
}

class CudaXent : public CudaTrain {
 protected:
  // Runs one case through the kernel at `offset` floats into the device buffer (offset 1 forces the
  // scalar path); returns max |loss err| / bound and max |grad err| / bound.
  void run_case(const XentCase& c, int64_t V, int64_t offset, double* worst_loss, double* worst_grad) {
    SCOPED_TRACE("V = " + std::to_string(V) + " offset " + std::to_string(offset));
    const float dscale = 1.0f / 37.0f;
    const XentWant want = xent_oracle(c.logits, c.R, V, c.tgt, c.mask, dscale);
    std::vector<float> host(size_t(offset + c.R * V), NAN);
    std::copy(c.logits.begin(), c.logits.end(), host.begin() + offset);
    Dev<float> d_logits(host), d_mask(c.mask), d_loss(std::vector<float>(size_t(c.R), NAN));
    Dev<int32_t> d_tgt(c.tgt);
    // grad off: the logits stay as they are; the losses equal the grad-on run's bit for bit.
    cuda_xent_fwd_bwd(d_logits.p + offset, c.R, V, d_tgt.p, d_mask.p, dscale, false, d_loss.p, stream());
    const std::vector<float> loss_nograd = d_loss.download();
    EXPECT_EQ(count_bit_diffs(d_logits.download(), host, "logits without grad"), 0);
    d_loss.upload(std::vector<float>(size_t(c.R), NAN));
    cuda_xent_fwd_bwd(d_logits.p + offset, c.R, V, d_tgt.p, d_mask.p, dscale, true, d_loss.p, stream());
    const std::vector<float> loss = d_loss.download();
    const std::vector<float> all = d_logits.download();
    EXPECT_EQ(count_bit_diffs(loss_nograd, loss, "row_loss grad off vs on"), 0);
    for (int64_t j = 0; j < offset; ++j) EXPECT_TRUE(std::isnan(all[size_t(j)])) << "wrote before the logits";
    int bad = 0;
    for (int64_t r = 0; r < c.R; ++r) {
      const double lw = want.loss[size_t(r)];
      const double le = std::fabs(double(loss[size_t(r)]) - lw);
      const double lb = tol::kCudaXentLoss * (1.0 + std::fabs(lw));
      *worst_loss = std::max(*worst_loss, std::isfinite(le) ? le / lb : INFINITY);
      if (!(le <= lb)) ADD_FAILURE() << "row_loss[" << r << "] = " << loss[size_t(r)] << ", want " << lw;
      const double gb = tol::kCudaXentGrad * std::fabs(double(want.c[size_t(r)]));
      for (int64_t j = 0; j < V; ++j) {
        const double g = all[size_t(offset + r * V + j)], gw = want.grad[size_t(r * V + j)];
        if (want.c[size_t(r)] == 0.0f) {  // dropped row: exact zeros
          if (!(g == 0.0) && bad++ < 5) ADD_FAILURE() << "dropped row " << r << " [" << j << "] = " << g;
          continue;
        }
        const double ge = std::fabs(g - gw);
        *worst_grad = std::max(*worst_grad, std::isfinite(ge) ? ge / gb : INFINITY);
        if (!(ge <= gb) && bad++ < 5) ADD_FAILURE() << "dlogits[" << r << ", " << j << "] = " << g << ", want " << gw;
      }
    }
    EXPECT_EQ(bad, 0);
  }
};

TEST_F(CudaXent, MatchesDoubleOracleEveryVocabSize) {
  Rng rng(101);
  double wl = 0, wg = 0;
  for (int64_t V : {1, 2, 31, 33, 1000, 32000, 49152, 151936}) {
    const XentCase c = xent_case(rng, V);
    run_case(c, V, 0, &wl, &wg);
    if (V == 1000 || V == 32000) run_case(c, V, 1, &wl, &wg);  // misaligned: the scalar path on a V % 4 == 0 row
  }
  note("loss err / bound", wl);
  note("grad err / bound", wg);
  note("loss err (tolerance units)", wl * tol::kCudaXentLoss);
  note("grad err (tolerance units)", wg * tol::kCudaXentGrad);
}

TEST_F(CudaXent, NullMaskMeansOnesAndManyRows) {
  // 300 rows, no mask: every row counts with mask 1 (the oracle with a mask of ones).
  Rng rng(102);
  const int64_t R = 300, V = 4099;
  std::vector<float> logits = uniform(rng, size_t(R * V), -5, 5);
  std::vector<int32_t> tgt(static_cast<size_t>(R));
  for (int64_t r = 0; r < R; ++r) tgt[size_t(r)] = int32_t(rng.below(uint64_t(V)));
  const XentWant want = xent_oracle(logits, R, V, tgt, std::vector<float>(size_t(R), 1.0f), 1.0f);
  Dev<float> d_logits(logits), d_loss(std::vector<float>(size_t(R), NAN));
  Dev<int32_t> d_tgt(tgt);
  cuda_xent_fwd_bwd(d_logits.p, R, V, d_tgt.p, nullptr, 1.0f, true, d_loss.p, stream());
  const std::vector<float> loss = d_loss.download(), grad = d_logits.download();
  double worst = 0;
  for (int64_t r = 0; r < R; ++r) {
    const double e = std::fabs(double(loss[size_t(r)]) - want.loss[size_t(r)]) / (1.0 + std::fabs(want.loss[size_t(r)]));
    worst = std::max(worst, std::isfinite(e) ? e : INFINITY);
  }
  EXPECT_LE(worst, tol::kCudaXentLoss);
  double gworst = 0;
  for (size_t i = 0; i < grad.size(); ++i) {
    const double e = std::fabs(double(grad[i]) - want.grad[i]);
    gworst = std::max(gworst, std::isfinite(e) ? e : INFINITY);
  }
  EXPECT_LE(gworst, tol::kCudaXentGrad);
  note("loss", worst);
  note("grad", gworst);
}

// ---------------------------------------------------------------------------------------------------
// Optimizer

// The scalars exactly as train/optimizer.cpp computes them for update number `step` (1-based), except
// that 1 - lr·wd rounds the product first (MLX's order; the CPU build may fuse it).
CudaOptScalars opt_scalars(const OptimizerConfig& cfg, int64_t step, float lr) {
  CudaOptScalars s{};
  s.lr = lr;
  s.b1 = float(cfg.beta1);
  s.b2 = float(cfg.beta2);
  s.eps = float(cfg.eps);
  s.omb1 = float(1.0 - cfg.beta1);
  s.omb2 = float(1.0 - cfg.beta2);
  s.wd = float(cfg.weight_decay);
  s.c1 = float(lr / (1.0f - std::pow(s.b1, float(step))));
  s.c2 = 1.0f / std::sqrt(1.0f - std::pow(s.b2, float(step)));
  s.decay = 1.0f - mul_rn(lr, s.wd);
  s.mom = float(cfg.momentum);
  s.damp = float(1.0 - cfg.dampening);
  s.bias_correction = cfg.bias_correction;
  s.nesterov = cfg.nesterov;
  s.sgd_dampening = cfg.dampening > 0;
  s.sgd_momentum = s.mom > 0;
  return s;
}

// ops.h's OptimizerStep rules, every operation rounded on its own (MLX's order).
void opt_oracle(int kind, const CudaOptScalars& s, std::vector<float>& w, const std::vector<float>& g,
                std::vector<float>& m, std::vector<float>& v) {
  for (size_t j = 0; j < w.size(); ++j) {
    if (kind == CUDA_OPT_SGD) {
      float gj = g[j];
      if (s.wd != 0.0f) gj = gj + mul_rn(s.wd, w[j]);
      if (!s.sgd_momentum) {
        w[j] = w[j] - mul_rn(s.lr, gj);
        continue;
      }
      float vj = mul_rn(s.mom, v[j]);
      vj = vj + (s.sgd_dampening ? mul_rn(s.damp, gj) : gj);
      v[j] = vj;
      const float upd = s.nesterov ? gj + mul_rn(s.mom, vj) : vj;
      w[j] = w[j] - mul_rn(s.lr, upd);
      continue;
    }
    float wj = w[j];
    if (kind == CUDA_OPT_ADAMW) wj = mul_rn(wj, s.decay);
    const float gj = g[j];
    const float mj = mul_rn(s.b1, m[j]) + mul_rn(s.omb1, gj);
    const float vj = mul_rn(s.b2, v[j]) + mul_rn(s.omb2, mul_rn(gj, gj));
    m[j] = mj;
    v[j] = vj;
    if (s.bias_correction)
      w[j] = wj - mul_rn(s.c1, mj) / (mul_rn(std::sqrt(vj), s.c2) + s.eps);
    else
      w[j] = wj - mul_rn(s.lr, mj) / (std::sqrt(vj) + s.eps);
  }
}

TrainParam make_param(const std::string& name, const std::vector<float>& v) {
  TrainParam p;
  p.name = name;
  p.value = tensor_alloc(DTYPE_F32, {int64_t(v.size())});
  p.grad = tensor_alloc(DTYPE_F32, {int64_t(v.size())});
  std::copy(v.begin(), v.end(), p.value.t.f32());
  return p;
}

std::vector<float> host_vec(const Tensor& t) { return std::vector<float>(t.f32(), t.f32() + t.numel()); }

struct OptCase {
  const char* name;
  OptimizerConfig cfg;
};

std::vector<OptCase> opt_cases() {
  std::vector<OptCase> cs;
  auto add = [&](const char* name, OptimizerKind k, auto&& edit) {
    OptimizerConfig c = optimizer_defaults(k);
    edit(c);
    cs.push_back({name, c});
  };
  add("adam", OPT_ADAM, [](OptimizerConfig&) {});
  add("adam bias_correction", OPT_ADAM, [](OptimizerConfig& c) { c.bias_correction = true; });
  add("adamw", OPT_ADAMW, [](OptimizerConfig&) {});
  add("adamw bias_correction wd 0.1 betas .8/.99", OPT_ADAMW, [](OptimizerConfig& c) {
    c.bias_correction = true, c.weight_decay = 0.1, c.beta1 = 0.8, c.beta2 = 0.99;
  });
  add("sgd", OPT_SGD, [](OptimizerConfig&) {});
  add("sgd wd 0.01", OPT_SGD, [](OptimizerConfig& c) { c.weight_decay = 0.01; });
  add("sgd momentum 0.9", OPT_SGD, [](OptimizerConfig& c) { c.momentum = 0.9; });
  add("sgd momentum 0.9 nesterov", OPT_SGD, [](OptimizerConfig& c) { c.momentum = 0.9, c.nesterov = true; });
  add("sgd momentum 0.9 dampening 0.1", OPT_SGD, [](OptimizerConfig& c) { c.momentum = 0.9, c.dampening = 0.1; });
  add("sgd momentum 0.5 nesterov dampening 0.2 wd 0.05", OPT_SGD, [](OptimizerConfig& c) {
    c.momentum = 0.5, c.nesterov = true, c.dampening = 0.2, c.weight_decay = 0.05;
  });
  return cs;
}

int opt_kind(OptimizerKind k) { return k == OPT_SGD ? CUDA_OPT_SGD : (k == OPT_ADAMW ? CUDA_OPT_ADAMW : CUDA_OPT_ADAM); }

TEST_F(CudaTrain, OptimizerMatchesHostRulesBitForBitAndCpuOptimizer) {
  // Five tensors of odd sizes; the last spans many chunks of a block.
  const std::vector<int64_t> sizes = {1, 31, 33, 1000, 70001};
  const int64_t max_n = 70001;
  const int n_steps = 3;
  double worst_cpu = 0;
  int64_t n_vals = 0, n_same_as_cpu = 0;
  for (const OptCase& oc : opt_cases()) {
    SCOPED_TRACE(oc.name);
    const OptimizerConfig& cfg = oc.cfg;
    const int kind = opt_kind(cfg.kind);
    const bool uses_m = kind != CUDA_OPT_SGD, uses_v = kind != CUDA_OPT_SGD || cfg.momentum > 0;
    Rng rng(7);
    Adapter a;
    std::vector<std::vector<float>> w(sizes.size()), m(sizes.size()), v(sizes.size());
    std::vector<std::unique_ptr<Dev<float>>> dw, dg, dm, dv;
    std::vector<CudaOptTensor> table;
    for (size_t i = 0; i < sizes.size(); ++i) {
      const size_t n = size_t(sizes[i]);
      w[i] = uniform(rng, n, -1, 1);
      m[i].assign(n, 0.0f);
      v[i].assign(n, 0.0f);
      a.params.push_back(make_param("p" + std::to_string(i), w[i]));
      dw.push_back(std::make_unique<Dev<float>>(w[i]));
      dg.push_back(std::make_unique<Dev<float>>(n));
      dm.push_back(std::make_unique<Dev<float>>(m[i]));
      dv.push_back(std::make_unique<Dev<float>>(v[i]));
      // Unused state is passed as null: the kernel must not touch it.
      table.push_back({dw[i]->p, dg[i]->p, uses_m ? dm[i]->p : nullptr, uses_v ? dv[i]->p : nullptr, sizes[i]});
    }
    Dev<CudaOptTensor> d_table(table);
    Optimizer cpu(cfg, a);
    for (int step = 1; step <= n_steps; ++step) {
      const float lr = 1e-2f * (1.0f - 0.2f * float(step - 1));
      for (size_t i = 0; i < sizes.size(); ++i) {
        std::vector<float> g = uniform(rng, size_t(sizes[i]), -1, 1);
        // Tiny and zero gradients too (Adam divides by sqrt(v) + eps there).
        for (size_t j = 0; j < g.size(); j += 7) g[j] *= 1e-6f;
        for (size_t j = 3; j < g.size(); j += 11) g[j] = 0.0f;
        std::copy(g.begin(), g.end(), a.params[i].grad.t.f32());
        dg[i]->upload(g);
      }
      const CudaOptScalars s = opt_scalars(cfg, step, lr);
      cuda_optimizer_update(d_table.p, int64_t(table.size()), max_n, kind, s, stream());
      for (size_t i = 0; i < sizes.size(); ++i) opt_oracle(kind, s, w[i], host_vec(a.params[i].grad.t), m[i], v[i]);
      cpu.update(a, lr);
      for (size_t i = 0; i < sizes.size(); ++i) {
        const std::string what = "step " + std::to_string(step) + " tensor " + std::to_string(i);
        EXPECT_EQ(count_bit_diffs(dw[i]->download(), w[i], what + " w"), 0);
        if (uses_m) {
          EXPECT_EQ(count_bit_diffs(dm[i]->download(), m[i], what + " m"), 0);
        }
        if (uses_v) {
          EXPECT_EQ(count_bit_diffs(dv[i]->download(), v[i], what + " v"), 0);
        }
      }
    }
    // The CPU optimizer after the last step: within kCudaOptimizerVsCpu (weights and state).
    std::vector<std::vector<float>> cpu_m(sizes.size()), cpu_v(sizes.size());
    for (const OptimizerStateTensor& st : cpu.state_tensors()) {
      const size_t i = size_t(std::stoi(st.name.substr(st.name.find(".p") + 2)));
      (st.name[0] == 'm' ? cpu_m : cpu_v)[i] = host_vec(st.t);
    }
    for (size_t i = 0; i < sizes.size(); ++i) {
      const std::vector<float> gw = dw[i]->download(), gm = dm[i]->download(), gv = dv[i]->download();
      const std::vector<float> cw = host_vec(a.params[i].value.t);
      auto cmp = [&](const std::vector<float>& got, const std::vector<float>& want, const char* what) {
        ASSERT_EQ(got.size(), want.size()) << what;
        int bad = 0;
        for (size_t j = 0; j < got.size(); ++j) {
          const double e = std::fabs(double(got[j]) - double(want[j])) / (1.0 + std::fabs(double(want[j])));
          worst_cpu = std::max(worst_cpu, std::isfinite(e) ? e : INFINITY);
          n_vals += 1;
          n_same_as_cpu += f32_to_bits(got[j]) == f32_to_bits(want[j]);
          if (!(e <= tol::kCudaOptimizerVsCpu) && bad++ < 5)
            ADD_FAILURE() << "tensor " << i << " " << what << "[" << j << "] = " << got[j] << ", CPU " << want[j];
        }
      };
      cmp(gw, cw, "w");
      if (uses_m) cmp(gm, cpu_m[i], "m");
      if (uses_v) cmp(gv, cpu_v[i], "v");
    }
  }
  note("vs CPU optimizer, max |d|/(1+|x|)", worst_cpu);
  note("fraction bit-equal to the CPU optimizer", double(n_same_as_cpu) / double(std::max<int64_t>(n_vals, 1)));
}

TEST_F(CudaTrain, OptimizerSmallMaxNStillUpdatesEverything) {
  // max_n only sizes the grid: a table whose tensors exceed it is still updated in full.
  Rng rng(8);
  const int64_t n = 20000;
  std::vector<float> w = uniform(rng, size_t(n), -1, 1), g = uniform(rng, size_t(n), -1, 1), m(size_t(n), 0.0f),
                     v(size_t(n), 0.0f);
  Dev<float> dw(w), dg(g), dm(m), dv(v);
  Dev<CudaOptTensor> table(std::vector<CudaOptTensor>{{dw.p, dg.p, dm.p, dv.p, n}});
  const CudaOptScalars s = opt_scalars(optimizer_defaults(OPT_ADAM), 1, 1e-3f);
  cuda_optimizer_update(table.p, 1, 1, CUDA_OPT_ADAM, s, stream());
  opt_oracle(CUDA_OPT_ADAM, s, w, g, m, v);
  EXPECT_EQ(count_bit_diffs(dw.download(), w, "w"), 0);
  EXPECT_EQ(count_bit_diffs(dm.download(), m, "m"), 0);
  EXPECT_EQ(count_bit_diffs(dv.download(), v, "v"), 0);
}

// ---------------------------------------------------------------------------------------------------
// f32 -> bf16

TEST_F(CudaTrain, ConvertF32ToBF16IsCoreDtypeBitForBit) {
  std::vector<uint32_t> bits = {0x00000000u, 0x80000000u, 0x7f800000u, 0xff800000u,  // ±0, ±inf
                                0x7fc00000u, 0xffc00000u, 0x7f800001u, 0xff800001u,  // quiet / signalling NaNs
                                0x7fffffffu, 0xffffffffu, 0x7fbfffffu, 0x7f80ffffu,  // NaN payloads
                                0x00000001u, 0x807fffffu, 0x00008000u, 0x00018000u,  // subnormals, ties
                                0x3f808000u, 0x3f818000u, 0x3f807fffu, 0x3f808001u,  // ties to even around 1
                                0x7f7fffffu, 0xff7fffffu, 0x7f7f8000u, 0x7f7f7fffu};  // max float rounds to inf
  Rng rng(9);
  for (int i = 0; i < (1 << 20) + 37; ++i) bits.push_back(rng.next_u32());
  for (uint32_t e = 0; e < 256; ++e)  // every exponent with tie / just-above / just-below low halves
    for (uint32_t lo : {0x8000u, 0x8001u, 0x7fffu, 0x18000u})
      for (uint32_t sgn : {0u, 0x80000000u}) bits.push_back(sgn | (e << 23) | lo);
  std::vector<float> src(bits.size());
  for (size_t i = 0; i < bits.size(); ++i) src[i] = f32_from_bits(bits[i]);
  Dev<float> d_src(src);
  Dev<uint16_t> d_dst(std::vector<uint16_t>(bits.size(), 0xdeadu & 0xffffu));
  cuda_convert_f32_to_bf16(d_src.p, d_dst.p, int64_t(bits.size()), stream());
  const std::vector<uint16_t> got = d_dst.download();
  int bad = 0;
  for (size_t i = 0; i < bits.size(); ++i) {
    const uint16_t want = f32_to_bf16(src[i]);
    if (got[i] != want && bad++ < 8)
      ADD_FAILURE() << std::hex << "bits 0x" << bits[i] << ": got 0x" << got[i] << " want 0x" << want;
  }
  EXPECT_EQ(bad, 0);
}

// ---------------------------------------------------------------------------------------------------
// Dropout

TEST_F(CudaTrain, DropoutMaskIsTheCpuMaskBitForBit) {
  Rng rng(10);
  struct Key {
    uint64_t key, stream;
  };
  const Key keys[] = {{0, 0}, {7, 3}, {0x0123456789abcdefull, 0xfedcba9876543210ull}};
  for (float p : {0.0f, 0.1f, 0.5f, 0.9f})
    for (const Key& k : keys)
      for (int64_t n : {int64_t(1), int64_t(31), int64_t(33), int64_t(1000), int64_t((1 << 20) + 3)}) {
        SCOPED_TRACE("p " + std::to_string(p) + " n " + std::to_string(n) + " key " + std::to_string(k.key));
        const std::vector<float> x = uniform(rng, size_t(n), -2, 2);
        LoraOperand lo;
        lo.dropout = p;
        lo.dropout_key = k.key;
        lo.dropout_stream = k.stream;
        const float keep_scale = 1.0f / (1.0f - p);  // src/cpu/linear.cpp's dropout_apply
        std::vector<float> want(static_cast<size_t>(n));
        int64_t kept = 0;
        for (int64_t i = 0; i < n; ++i) {
          const bool keep = lora_dropout_keep(lo, i);
          kept += keep;
          want[size_t(i)] = keep ? x[size_t(i)] * keep_scale : 0.0f;
        }
        Dev<float> d_x(x), d_out(std::vector<float>(size_t(n), NAN));
        cuda_lora_dropout(d_x.p, d_out.p, n, p, k.key, k.stream, stream());
        EXPECT_EQ(count_bit_diffs(d_out.download(), want, "dropout"), 0);
        cuda_lora_dropout(d_x.p, d_x.p, n, p, k.key, k.stream, stream());  // in place
        EXPECT_EQ(count_bit_diffs(d_x.download(), want, "dropout in place"), 0);
        if (n > 100000) {  // the mask is not degenerate: the kept count is within 6 binomial sigmas of n (1 - p)
          const double sigma = std::sqrt(double(n) * double(p) * (1.0 - double(p)));
          EXPECT_LE(std::fabs(double(kept) - double(n) * (1.0 - double(p))), 6.0 * sigma + 1.0);
        }
      }
}

// ---------------------------------------------------------------------------------------------------
// DoRA

// Host copy of a weight stored as dt (values rounded to dt first, so both sides see the same numbers).
struct HostWeight {
  std::vector<uint8_t> bytes;
  std::vector<float> f;  // the same values as f32
};

HostWeight host_weight(Rng& rng, DType dt, size_t n, float lo, float hi) {
  HostWeight h;
  const std::vector<float> v = uniform(rng, n, lo, hi);
  h.bytes.resize(size_t(dtype_nbytes(dt, int64_t(n))));
  dtype_convert_from_f32(dt, v.data(), h.bytes.data(), int64_t(n));
  h.f.resize(n);
  dtype_convert_to_f32(dt, h.bytes.data(), h.f.data(), int64_t(n));
  return h;
}

TEST_F(CudaTrain, DoraDenomMatchesDoubleLoop) {
  struct Shape {
    int64_t out, in, r;
  };
  const Shape shapes[] = {{1, 1, 1}, {31, 33, 4}, {33, 1000, 8}, {1000, 31, 16}, {5, 4097, 64}, {6, 33, 2048}};
  Rng rng(11);
  double worst = 0;
  for (DType dt : {DTYPE_F32, DTYPE_BF16, DTYPE_F16})
    for (const Shape& sh : shapes)
      for (float scale : {20.0f, 0.5f}) {
        SCOPED_TRACE(std::string(dtype_name(dt)) + " out " + std::to_string(sh.out) + " in " + std::to_string(sh.in) +
                     " r " + std::to_string(sh.r) + " scale " + std::to_string(scale));
        const HostWeight w = host_weight(rng, dt, size_t(sh.out * sh.in), -1, 1);
        const std::vector<float> A = uniform(rng, size_t(sh.in * sh.r), -0.5f, 0.5f);  // (in, r)
        const std::vector<float> B = uniform(rng, size_t(sh.r * sh.out), -0.1f, 0.1f);  // (r, out)
        std::vector<double> want(static_cast<size_t>(sh.out)), mag(static_cast<size_t>(sh.out));
        for (int64_t o = 0; o < sh.out; ++o) {
          double ss = 0, sm = 0;
          for (int64_t j = 0; j < sh.in; ++j) {
            double d = 0, dabs = 0;
            for (int64_t k = 0; k < sh.r; ++k) {
              d += double(A[size_t(j * sh.r + k)]) * double(B[size_t(k * sh.out + o)]);
              dabs += std::fabs(double(A[size_t(j * sh.r + k)]) * double(B[size_t(k * sh.out + o)]));
            }
            const double v = double(w.f[size_t(o * sh.in + j)]) + double(scale) * d;
            const double vabs = std::fabs(double(w.f[size_t(o * sh.in + j)])) + std::fabs(double(scale)) * dabs;
            ss += v * v;
            sm += vabs * vabs;
          }
          want[size_t(o)] = std::sqrt(ss);
          mag[size_t(o)] = std::sqrt(sm);
        }
        Dev<uint8_t> d_w(w.bytes);
        Dev<float> d_a(A), d_b(B), d_den(std::vector<float>(size_t(sh.out), NAN));
        cuda_dora_denom(d_w.p, dt, d_a.p, d_b.p, scale, sh.out, sh.in, sh.r, d_den.p, stream());
        const std::vector<float> got = d_den.download();
        int bad = 0;
        for (int64_t o = 0; o < sh.out; ++o) {
          const double e = std::fabs(double(got[size_t(o)]) - want[size_t(o)]) / mag[size_t(o)];
          worst = std::max(worst, std::isfinite(e) ? e : INFINITY);
          if (!(e <= tol::kCudaDoraDenom) && bad++ < 5)
            ADD_FAILURE() << "denom[" << o << "] = " << got[size_t(o)] << ", want " << want[size_t(o)];
        }
      }
  note("denom err / magnitude", worst);
}

const int64_t kRowsN[] = {1, 31, 33};
const int64_t kOuts[] = {1, 31, 33, 1000};

TEST_F(CudaTrain, DoraScaleFwdIsTheCpuFormulaBitForBit) {
  Rng rng(12);
  for (int64_t N : kRowsN)
    for (int64_t out : kOuts)
      for (int bt = -1; bt < 3; ++bt) {  // no bias, F32, BF16, F16
        const DType bias_type = bt == 1 ? DTYPE_BF16 : (bt == 2 ? DTYPE_F16 : DTYPE_F32);
        SCOPED_TRACE(shape(N, out) + (bt < 0 ? " no bias" : std::string(" bias ") + dtype_name(bias_type)));
        const std::vector<float> ypre = uniform(rng, size_t(N * out), -3, 3);
        const std::vector<float> m = uniform(rng, size_t(out), 0.5f, 2.0f), den = uniform(rng, size_t(out), 0.5f, 4.0f);
        const HostWeight bias = host_weight(rng, bias_type, size_t(out), -1, 1);
        std::vector<float> want(static_cast<size_t>(N * out));
        for (int64_t i = 0; i < N; ++i)
          for (int64_t o = 0; o < out; ++o) {
            float y = mul_rn(ypre[size_t(i * out + o)], m[size_t(o)] / den[size_t(o)]);
            if (bt >= 0) y = y + bias.f[size_t(o)];
            want[size_t(i * out + o)] = y;
          }
        Dev<float> d_ypre(ypre), d_m(m), d_den(den), d_y(std::vector<float>(size_t(N * out), NAN));
        Dev<uint8_t> d_bias(bias.bytes);
        const void* bp = bt >= 0 ? static_cast<const void*>(d_bias.p) : nullptr;
        cuda_dora_scale_fwd(d_ypre.p, d_m.p, d_den.p, bp, bias_type, N, out, d_y.p, stream());
        EXPECT_EQ(count_bit_diffs(d_y.download(), want, "y"), 0);
        cuda_dora_scale_fwd(d_ypre.p, d_m.p, d_den.p, bp, bias_type, N, out, d_ypre.p, stream());  // y = ypre
        EXPECT_EQ(count_bit_diffs(d_ypre.download(), want, "y in place"), 0);
      }
}

// The CPU's column sum: acc0 + float(Σ_i double(a)·double(b) (/ double(den))), rows in order; bound
// tol · (|acc0| + Σ |terms| (/ den)) (see kCudaColSum).
void col_sum_oracle(const std::vector<float>& a, const std::vector<float>* b, const std::vector<float>* den, int64_t N,
                    int64_t out, const std::vector<float>& acc0, std::vector<float>* want, std::vector<double>* bound) {
  want->resize(size_t(out));
  bound->resize(size_t(out));
  for (int64_t o = 0; o < out; ++o) {
    double s = 0, sa = 0;
    for (int64_t i = 0; i < N; ++i) {
      const double t = double(a[size_t(i * out + o)]) * (b ? double((*b)[size_t(i * out + o)]) : 1.0);
      s += t;
      sa += std::fabs(t);
    }
    if (den) s /= double((*den)[size_t(o)]), sa /= double((*den)[size_t(o)]);
    (*want)[size_t(o)] = acc0[size_t(o)] + float(s);
    (*bound)[size_t(o)] = tol::kCudaColSum * (std::fabs(double(acc0[size_t(o)])) + sa);
  }
}

double expect_col_sum(const std::vector<float>& got, const std::vector<float>& want, const std::vector<double>& bound,
                      const std::string& what, int64_t* n_exact) {
  double worst = 0;
  int bad = 0;
  for (size_t o = 0; o < want.size(); ++o) {
    const double e = std::fabs(double(got[o]) - double(want[o]));
    worst = std::max(worst, std::isfinite(e) ? e / bound[o] : INFINITY);
    *n_exact += got[o] == want[o];
    if (!(e <= bound[o]) && bad++ < 5) ADD_FAILURE() << what << "[" << o << "] = " << got[o] << ", want " << want[o];
  }
  return worst;
}

TEST_F(CudaTrain, DoraBwdGradBitForBitAndDmColumnSum) {
  Rng rng(13);
  double worst = 0;
  int64_t n_exact = 0, n_total = 0;
  const int64_t rows[] = {1, 31, 33, 1000, 5000};
  for (int64_t N : rows)
    for (int64_t out : kOuts) {
      if (N * out > 2000000) continue;
      SCOPED_TRACE(shape(N, out));
      const std::vector<float> dy = uniform(rng, size_t(N * out), -1, 1), ypre = uniform(rng, size_t(N * out), -3, 3);
      const std::vector<float> m = uniform(rng, size_t(out), 0.5f, 2.0f), den = uniform(rng, size_t(out), 0.5f, 4.0f);
      const std::vector<float> dm0 = uniform(rng, size_t(out), -1, 1);
      std::vector<float> g_want(static_cast<size_t>(N * out));
      for (int64_t i = 0; i < N; ++i)
        for (int64_t o = 0; o < out; ++o)
          g_want[size_t(i * out + o)] = mul_rn(dy[size_t(i * out + o)], m[size_t(o)] / den[size_t(o)]);
      std::vector<float> dm_want;
      std::vector<double> bound;
      col_sum_oracle(dy, &ypre, &den, N, out, dm0, &dm_want, &bound);
      Dev<float> d_dy(dy), d_ypre(ypre), d_m(m), d_den(den), d_dm(dm0), d_g(std::vector<float>(size_t(N * out), NAN));
      cuda_dora_bwd(d_dy.p, d_ypre.p, d_m.p, d_den.p, N, out, d_g.p, d_dm.p, stream());
      EXPECT_EQ(count_bit_diffs(d_g.download(), g_want, "g"), 0);
      const std::vector<float> dm1 = d_dm.download();
      worst = std::max(worst, expect_col_sum(dm1, dm_want, bound, "dm", &n_exact));
      n_total += out;
      // Again from the same dm0, now with g over dy (in place): the same bits (deterministic).
      d_dm.upload(dm0);
      cuda_dora_bwd(d_dy.p, d_ypre.p, d_m.p, d_den.p, N, out, d_dy.p, d_dm.p, stream());
      EXPECT_EQ(count_bit_diffs(d_dm.download(), dm1, "dm rerun"), 0);
      EXPECT_EQ(count_bit_diffs(d_dy.download(), g_want, "g in place"), 0);
      // dm null: g only; g null: dm only.
      d_dy.upload(dy);
      d_g.upload(std::vector<float>(size_t(N * out), NAN));
      cuda_dora_bwd(d_dy.p, nullptr, d_m.p, d_den.p, N, out, d_g.p, nullptr, stream());
      EXPECT_EQ(count_bit_diffs(d_g.download(), g_want, "g without dm"), 0);
      d_dm.upload(dm0);
      cuda_dora_bwd(d_dy.p, d_ypre.p, d_m.p, d_den.p, N, out, nullptr, d_dm.p, stream());
      EXPECT_EQ(count_bit_diffs(d_dm.download(), dm1, "dm without g"), 0);
    }
  note("dm err / bound", worst);
  note("dm fraction bit-equal to the CPU order", double(n_exact) / double(std::max<int64_t>(n_total, 1)));
}

TEST_F(CudaTrain, ColSumAccIsDeterministicAndMatchesCpuDoubleSum) {
  Rng rng(14);
  double worst = 0;
  int64_t n_exact = 0, n_total = 0;
  struct Shape {
    int64_t N, out;
  };
  const Shape shapes[] = {{1, 1}, {31, 33}, {33, 31}, {1000, 1000}, {70001, 3}, {257, 4099}};
  for (const Shape& sh : shapes) {
    SCOPED_TRACE(shape(sh.N, sh.out));
    const std::vector<float> dy = uniform(rng, size_t(sh.N * sh.out), -1, 1);
    const std::vector<float> acc0 = uniform(rng, size_t(sh.out), -2, 2);
    std::vector<float> want;
    std::vector<double> bound;
    col_sum_oracle(dy, nullptr, nullptr, sh.N, sh.out, acc0, &want, &bound);
    Dev<float> d_dy(dy), d_acc(acc0);
    cuda_col_sum_acc(d_dy.p, sh.N, sh.out, d_acc.p, stream());
    const std::vector<float> got = d_acc.download();
    worst = std::max(worst, expect_col_sum(got, want, bound, "acc", &n_exact));
    n_total += sh.out;
    d_acc.upload(acc0);
    cuda_col_sum_acc(d_dy.p, sh.N, sh.out, d_acc.p, stream());
    EXPECT_EQ(count_bit_diffs(d_acc.download(), got, "acc rerun"), 0);
  }
  note("col sum err / bound", worst);
  note("fraction bit-equal to the CPU order", double(n_exact) / double(std::max<int64_t>(n_total, 1)));
}

TEST_F(CudaTrain, BiasAddIsExact) {
  Rng rng(15);
  for (DType bt : {DTYPE_F32, DTYPE_BF16, DTYPE_F16})
    for (int64_t N : kRowsN)
      for (int64_t out : kOuts) {
        SCOPED_TRACE(std::string(dtype_name(bt)) + " " + shape(N, out));
        const std::vector<float> y = uniform(rng, size_t(N * out), -3, 3);
        const HostWeight bias = host_weight(rng, bt, size_t(out), -1, 1);
        std::vector<float> want(y);
        for (int64_t i = 0; i < N; ++i)
          for (int64_t o = 0; o < out; ++o) want[size_t(i * out + o)] += bias.f[size_t(o)];
        Dev<float> d_y(y);
        Dev<uint8_t> d_b(bias.bytes);
        cuda_bias_add(d_y.p, d_b.p, bt, N, out, stream());
        EXPECT_EQ(count_bit_diffs(d_y.download(), want, "y + bias"), 0);
      }
}

TEST_F(CudaTrain, ScaleAddRoundsProductThenSum) {
  Rng rng(16);
  for (float alpha : {1.0f, -0.5f, 0.3f, 20.0f})
    for (int64_t n : {int64_t(1), int64_t(31), int64_t(33), int64_t(1000), int64_t((1 << 20) + 5)}) {
      SCOPED_TRACE("alpha " + std::to_string(alpha) + " n " + std::to_string(n));
      const std::vector<float> y = uniform(rng, size_t(n), -1, 1), x = uniform(rng, size_t(n), -1, 1);
      std::vector<float> want(static_cast<size_t>(n));
      for (int64_t i = 0; i < n; ++i) want[size_t(i)] = y[size_t(i)] + mul_rn(alpha, x[size_t(i)]);
      Dev<float> d_y(y), d_x(x);
      cuda_scale_add(d_y.p, d_x.p, alpha, n, stream());
      EXPECT_EQ(count_bit_diffs(d_y.download(), want, "y + alpha x"), 0);
    }
}

}  // namespace
}  // namespace lora
