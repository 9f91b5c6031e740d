// CUDA training attention (src/cuda/attention.cu, attention_bwd.cu) and the split-K decode path of the
// inference forward, against the double-precision reference backend (cpu/reference.h) on the same f32
// inputs:
//   - cuda_attention_train_fwd: out and lse vs reference attention_train_fwd for B in {1, 2, 3}, T in
//     {1, 2, 17, 33, 89, 130}, groups H/KV in {1, 2, 4, 8} (KV = 2), D in {8, 16, 64, 128}, plus H = 9 over
//     KV = 3; each row's out must equal cuda_attention_fwd's on that row bit for bit;
//   - cuda_attention_bwd: dq, dk, dv vs reference attention_bwd over the same sweep plus B = 8 with one kv
//     head, T = 16 and 64 (tile multiples), T = 90 and 160 with TinyLlama's heads (out and lse are the reference
//     forward's, rounded to f32), and a second call must give bit-identical results. Those sizes run the
//     backward's small tiles; a second sweep (groups 1, 2, 3, 8, T up to 520) is large enough for its large
//     tiles (the choice is mirrored in bwd_large_tiles below);
//   - the backward captured in a CUDA graph (stream-ordered scratch inside the capture) equals the direct
//     call bit for bit, and per-call timings at TinyLlama's training shapes (B = 1, T in 64 .. 160, and
//     B = 8, T = 256), launched on the stream and replayed from a graph;
//   - a TinyLlama-sized case (B = 8, T = 256, H = 32, KV = 4, D = 64) chaining the CUDA forward into the
//     CUDA backward, vs the reference, with timings printed; and T = 2048 vs the fast CPU backend;
//   - split-K decode (cuda_attention_fwd and cuda_attention_fwd_ws) vs reference attention_fwd at contexts
//     long enough to split, including early queries whose last splits are empty and NaN cache tails, with
//     the single-pass fallback (per query or tiled) of each case, and chunks after a long context.
// Every output buffer starts as NaN, so an element left unwritten fails. Without a GPU the device tests
// skip with a message; the precondition checks still run.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "core/error.h"
#include "core/tensor.h"
#include "cpu/cpu_ops.h"
#include "cpu/reference.h"
#include "cuda/attention.h"
#include "cuda/check.h"
#include "cuda/device.h"
#include "cuda_test_util.h"
#include "tolerances.h"

namespace lora {
namespace {


// Device array of f32 freed on scope exit, filled from / read back to host vectors.
struct DevF32 {
  float* p = nullptr;
  size_t n = 0;
  explicit DevF32(size_t count) : n(count) {
    LORA_CUDA_CHECK(cudaMalloc(reinterpret_cast<void**>(&p), std::max<size_t>(n, 1) * sizeof(float)));
  }
  explicit DevF32(const std::vector<float>& h) : DevF32(h.size()) { upload(h); }
  ~DevF32() { (void)cudaFree(p); }
  DevF32(const DevF32&) = delete;
  DevF32& operator=(const DevF32&) = delete;
  void upload(const std::vector<float>& h) {
    LORA_CUDA_CHECK(cudaMemcpy(p, h.data(), n * sizeof(float), cudaMemcpyHostToDevice));
  }
  void fill_nan() { upload(std::vector<float>(n, NAN)); }
  std::vector<float> download() const {
    std::vector<float> h(n);
    LORA_CUDA_CHECK(cudaMemcpy(h.data(), p, n * sizeof(float), cudaMemcpyDeviceToHost));
    return h;
  }
};

std::vector<float> uniform(size_t n, float lo, float hi, uint32_t seed) {
  std::mt19937 gen(seed);
  std::uniform_real_distribution<float> u(lo, hi);
  std::vector<float> v(n);
  for (auto& x : v) x = u(gen);
  return v;
}

struct Case {
  int64_t B, T, H, KV, D;
};

std::string case_str(const Case& c) {
  return "B=" + std::to_string(c.B) + " T=" + std::to_string(c.T) + " H=" + std::to_string(c.H) +
         " KV=" + std::to_string(c.KV) + " D=" + std::to_string(c.D);
}

// Element i of a (rows..., nh, D) tensor as "[row, head, d]" for failure messages.
std::string where(size_t i, int64_t nh, int64_t D) {
  const int64_t d = int64_t(i) % D, h = int64_t(i) / D % nh, row = int64_t(i) / (D * nh);
  return "[" + std::to_string(row) + "," + std::to_string(h) + "," + std::to_string(d) + "]";
}

// |got - want| <= bound_i for every i, where bound_i = tol · (abs_scale + rel · |want_i|); returns the
// worst |got - want| / bound (<= 1 passes; NaN or inf counts as infinite). At most 5 failures reported.
double expect_close(const std::vector<float>& got, const std::vector<float>& want, double tol, double abs_scale,
                    double rel, const char* what, int64_t nh, int64_t D) {
  EXPECT_EQ(got.size(), want.size()) << what;
  double worst = 0;
  int bad = 0;
  for (size_t i = 0; i < std::min(got.size(), want.size()); ++i) {
    const double bound = tol * (abs_scale + rel * std::fabs(double(want[i])));
    const double err = std::fabs(double(got[i]) - double(want[i]));
    worst = std::max(worst, std::isfinite(err) ? err / bound : INFINITY);
    if (!(err <= bound) && bad++ < 5)
      ADD_FAILURE() << what << where(i, nh, D) << " = " << got[i] << ", want " << want[i];
  }
  EXPECT_EQ(bad, 0) << what;
  return worst;
}

double max_abs(const std::vector<float>& v) {
  double m = 0;
  for (float x : v) m = std::max(m, std::fabs(double(x)));
  return m;
}

// Host inputs of one training case: q, k in [-2, 2] (scores of a few units, so the softmax is peaked
// enough that the max matters), v and dout in [-1, 1].
struct Inputs {
  std::vector<float> q, k, v, dout;
  Inputs(const Case& c, uint32_t seed)
      : q(uniform(size_t(c.B * c.T * c.H * c.D), -2, 2, seed)),
        k(uniform(size_t(c.B * c.T * c.KV * c.D), -2, 2, seed + 1)),
        v(uniform(size_t(c.B * c.T * c.KV * c.D), -1, 1, seed + 2)),
        dout(uniform(size_t(c.B * c.T * c.H * c.D), -1, 1, seed + 3)) {}
};

void ops_train_fwd(Ops& ops, const Case& c, Inputs& in, std::vector<float>& out, std::vector<float>& lse) {
  out.assign(in.q.size(), 0.0f);
  lse.assign(size_t(c.B * c.T * c.H), 0.0f);
  Tensor tq = tensor_view(in.q.data(), DTYPE_F32, {c.B, c.T, c.H, c.D});
  Tensor tk = tensor_view(in.k.data(), DTYPE_F32, {c.B, c.T, c.KV, c.D});
  Tensor tv = tensor_view(in.v.data(), DTYPE_F32, {c.B, c.T, c.KV, c.D});
  Tensor to = tensor_view(out.data(), DTYPE_F32, {c.B, c.T, c.H, c.D});
  Tensor tl = tensor_view(lse.data(), DTYPE_F32, {c.B, c.T, c.H});
  ops.attention_train_fwd(tq, tk, tv, to, tl);
}

struct Grads {
  std::vector<float> dq, dk, dv;
};

Grads ops_bwd(Ops& ops, const Case& c, Inputs& in, std::vector<float>& out, std::vector<float>& lse) {
  Grads g{std::vector<float>(in.q.size()), std::vector<float>(in.k.size()), std::vector<float>(in.k.size())};
  Tensor tq = tensor_view(in.q.data(), DTYPE_F32, {c.B, c.T, c.H, c.D});
  Tensor tk = tensor_view(in.k.data(), DTYPE_F32, {c.B, c.T, c.KV, c.D});
  Tensor tv = tensor_view(in.v.data(), DTYPE_F32, {c.B, c.T, c.KV, c.D});
  Tensor to = tensor_view(out.data(), DTYPE_F32, {c.B, c.T, c.H, c.D});
  Tensor tl = tensor_view(lse.data(), DTYPE_F32, {c.B, c.T, c.H});
  Tensor tg = tensor_view(in.dout.data(), DTYPE_F32, {c.B, c.T, c.H, c.D});
  Tensor tdq = tensor_view(g.dq.data(), DTYPE_F32, {c.B, c.T, c.H, c.D});
  Tensor tdk = tensor_view(g.dk.data(), DTYPE_F32, {c.B, c.T, c.KV, c.D});
  Tensor tdv = tensor_view(g.dv.data(), DTYPE_F32, {c.B, c.T, c.KV, c.D});
  ops.attention_bwd(tq, tk, tv, to, tl, tg, tdq, tdk, tdv);
  return g;
}

// Device buffers of one training case; outputs start as NaN.
struct DevCase {
  DevF32 q, k, v, dout, out, lse, dq, dk, dv;
  DevCase(const Case& c, const Inputs& in)
      : q(in.q), k(in.k), v(in.v), dout(in.dout), out(in.q.size()), lse(size_t(c.B * c.T * c.H)),
        dq(in.q.size()), dk(in.k.size()), dv(in.k.size()) {
    for (DevF32* d : {&out, &lse, &dq, &dk, &dv}) d->fill_nan();
  }
  void bwd(const Case& c, cudaStream_t s) {
    cuda_attention_bwd(q.p, k.p, v.p, out.p, lse.p, dout.p, dq.p, dk.p, dv.p, c.B, c.T, c.H, c.KV, c.D, s);
  }
};

struct Worst {
  double out = 0, lse = 0, dq = 0, dk = 0, dv = 0;
  void max_with(const Worst& o) {
    out = std::max(out, o.out);
    lse = std::max(lse, o.lse);
    dq = std::max(dq, o.dq);
    dk = std::max(dk, o.dk);
    dv = std::max(dv, o.dv);
  }
};

// The forward vs the reference, and each row vs cuda_attention_fwd (bit for bit: same kernel; no split
// at these sizes since T < 512).
Worst check_fwd(CudaDevice& dev, const Case& c, uint32_t seed) {
  SCOPED_TRACE(case_str(c));
  Inputs in(c, seed);
  std::vector<float> want_out, want_lse;
  ops_train_fwd(reference_ops(), c, in, want_out, want_lse);
  cuda_device_use(dev);
  DevCase d(c, in);
  cuda_attention_train_fwd(d.q.p, d.k.p, d.v.p, d.out.p, d.lse.p, c.B, c.T, c.H, c.KV, c.D, dev.stream);
  cuda_device_sync(dev);
  Worst w;
  const std::vector<float> out = d.out.download(), lse = d.lse.download();
  // out is a convex combination of |v| <= 1: absolute; lse (a few units): relative to 1 + |lse|.
  w.out = expect_close(out, want_out, tol::kCudaAttnTrainFwd, 1.0, 0.0, "out", c.H, c.D);
  w.lse = expect_close(lse, want_lse, tol::kCudaAttnTrainFwd, 1.0, 1.0, "lse", c.H, 1);
  DevF32 row_out(size_t(c.T * c.H * c.D));
  for (int64_t b = 0; b < c.B; ++b) {
    row_out.fill_nan();
    cuda_attention_fwd(d.q.p + b * c.T * c.H * c.D, d.k.p + b * c.T * c.KV * c.D, d.v.p + b * c.T * c.KV * c.D,
                       row_out.p, c.T, c.H, c.KV, c.D, c.T, 0, dev.stream);
    cuda_device_sync(dev);
    const std::vector<float> r = row_out.download();
    EXPECT_EQ(0, std::memcmp(r.data(), out.data() + b * c.T * c.H * c.D, r.size() * sizeof(float)))
        << "row " << b << " of the training forward differs from cuda_attention_fwd";
  }
  return w;
}

// The backward vs the reference (out, lse from the reference forward), then bit-identical on a rerun.
Worst check_bwd(CudaDevice& dev, const Case& c, uint32_t seed) {
  SCOPED_TRACE(case_str(c));
  Inputs in(c, seed);
  std::vector<float> out, lse;
  ops_train_fwd(reference_ops(), c, in, out, lse);
  const Grads want = ops_bwd(reference_ops(), c, in, out, lse);
  cuda_device_use(dev);
  DevCase d(c, in);
  d.out.upload(out);
  d.lse.upload(lse);
  d.bwd(c, dev.stream);
  cuda_device_sync(dev);
  const Grads got{d.dq.download(), d.dk.download(), d.dv.download()};
  // Gradients relative to the tensor's largest |want| (the form of kGradFastVsRef). At T = 1 the exact dq
  // and dk are 0 (the softmax of one key is constant) and ours are the rounding noise of dP - delta, two f32
  // sums of the same products, so there they are measured against the case's gradient scale max|dv|.
  const double dv_scale = max_abs(want.dv), zero_qk = c.T == 1 ? dv_scale : 0.0;
  Worst w;
  w.dq = expect_close(got.dq, want.dq, tol::kCudaAttnBwd, max_abs(want.dq) + zero_qk, 0.0, "dq", c.H, c.D);
  w.dk = expect_close(got.dk, want.dk, tol::kCudaAttnBwd, max_abs(want.dk) + zero_qk, 0.0, "dk", c.KV, c.D);
  w.dv = expect_close(got.dv, want.dv, tol::kCudaAttnBwd, dv_scale, 0.0, "dv", c.KV, c.D);
  // Determinism: overwrite with other garbage, rerun, compare bits.
  for (DevF32* x : {&d.dq, &d.dk, &d.dv}) x->upload(std::vector<float>(x->n, 12345.0f));
  d.bwd(c, dev.stream);
  cuda_device_sync(dev);
  EXPECT_EQ(0, std::memcmp(d.dq.download().data(), got.dq.data(), got.dq.size() * sizeof(float))) << "dq rerun";
  EXPECT_EQ(0, std::memcmp(d.dk.download().data(), got.dk.data(), got.dk.size() * sizeof(float))) << "dk rerun";
  EXPECT_EQ(0, std::memcmp(d.dv.download().data(), got.dv.data(), got.dv.size() * sizeof(float))) << "dv rerun";
  return w;
}

// The sweep of the brief: B, T, group (with KV = 2), plus SmolLM2's 9 heads over 3 kv heads.
std::vector<Case> sweep_cases(int64_t D) {
  std::vector<Case> cs;
  for (int64_t B : {1, 2, 3})
    for (int64_t T : {1, 2, 17, 33, 89, 130})
      for (int64_t group : {1, 2, 4, 8}) cs.push_back(Case{B, T, 2 * group, 2, D});
  cs.push_back(Case{2, 75, 9, 3, D});
  return cs;
}

// attention_bwd.cu's tile choice (kLargeTileBlocks): large tiles once B·H·ceil(T/32) >= 512.
bool bwd_large_tiles(const Case& c) { return c.B * c.H * ((c.T + 31) / 32) >= 512; }

// Backward-only additions on the small tiles: B = 8 with one kv head (group 8), T a multiple of the small
// key tile (16) and of the query tile (64), and TinyLlama's 32 / 4 heads at T = 90 (the reference workload)
// and T = 160 (the top of its range).
std::vector<Case> bwd_extra_cases(int64_t D) {
  return {Case{8, 45, 8, 1, D}, Case{2, 16, 6, 2, D}, Case{1, 64, 4, 4, D}, Case{1, 90, 32, 4, D},
          Case{1, 160, 32, 4, D}};
}

// Large enough for the large tiles: groups 8, 1 (dk, dv written directly), 3 and 2; T one past a multiple of
// both tiles, T with a short last tile, T = 520 over 17 key tiles.
std::vector<Case> bwd_large_cases(int64_t D) {
  return {Case{2, 257, 32, 4, D}, Case{3, 161, 32, 32, D}, Case{4, 100, 48, 16, D}, Case{1, 520, 32, 16, D}};
}

class CudaAttentionTrain : public ::testing::Test {
 protected:
  void SetUp() override {
    LORA_REQUIRE_CUDA();
    dev_ = cuda_device_open(0);
  }
  void sweep_fwd(int64_t D) {
    Worst w;
    uint32_t seed = uint32_t(D) * 7919;
    for (const Case& c : sweep_cases(D)) w.max_with(check_fwd(*dev_, c, seed += 5));
    std::printf("  D=%lld fwd: max |err| / kCudaAttnTrainFwd: out %.3g, lse %.3g\n", (long long)D, w.out, w.lse);
  }
  void sweep_bwd(int64_t D) {
    Worst w;
    uint32_t seed = uint32_t(D) * 104729;
    std::vector<Case> cs = sweep_cases(D);
    for (const Case& c : bwd_extra_cases(D)) cs.push_back(c);
    for (const Case& c : cs) {
      EXPECT_FALSE(bwd_large_tiles(c)) << case_str(c) << ": meant for the small tiles; update the cases";
      w.max_with(check_bwd(*dev_, c, seed += 5));
    }
    std::printf("  D=%lld bwd: max |err| / (kCudaAttnBwd · max|want|): dq %.3g, dk %.3g, dv %.3g\n", (long long)D,
                w.dq, w.dk, w.dv);
  }
  void sweep_bwd_large(int64_t D) {
    Worst w;
    uint32_t seed = uint32_t(D) * 7727;
    for (const Case& c : bwd_large_cases(D)) {
      EXPECT_TRUE(bwd_large_tiles(c)) << case_str(c) << ": meant for the large tiles; update the cases";
      w.max_with(check_bwd(*dev_, c, seed += 5));
    }
    std::printf("  D=%lld bwd, large tiles: max |err| / (kCudaAttnBwd · max|want|): dq %.3g, dk %.3g, dv %.3g\n",
                (long long)D, w.dq, w.dk, w.dv);
  }
  std::unique_ptr<CudaDevice> dev_;
};

TEST(CudaAttentionTrainArgs, BadArgumentsAreInternalErrors) {
  // The launchers check before touching the device, so this runs without a GPU too.
  float* p = nullptr;
  EXPECT_THROW(cuda_attention_train_fwd(p, p, p, p, p, 1, 4, 4, 2, 32, nullptr), InternalError);  // D = 32
  EXPECT_THROW(cuda_attention_train_fwd(p, p, p, p, p, 1, 4, 6, 4, 64, nullptr), InternalError);  // H % KV
  EXPECT_THROW(cuda_attention_train_fwd(p, p, p, p, p, -1, 4, 4, 2, 64, nullptr), InternalError);  // B < 0
  EXPECT_THROW(cuda_attention_train_fwd(p, p, p, p, p, 1, 4, 4, 2, 64, nullptr), InternalError);   // null
  EXPECT_NO_THROW(cuda_attention_train_fwd(p, p, p, p, p, 0, 4, 4, 2, 64, nullptr));               // B = 0
  EXPECT_NO_THROW(cuda_attention_train_fwd(p, p, p, p, p, 3, 0, 4, 2, 64, nullptr));               // T = 0
  EXPECT_THROW(cuda_attention_bwd(p, p, p, p, p, p, p, p, p, 1, 4, 4, 2, 256, nullptr), InternalError);  // D
  EXPECT_THROW(cuda_attention_bwd(p, p, p, p, p, p, p, p, p, 1, 4, 4, 3, 64, nullptr), InternalError);   // H % KV
  EXPECT_THROW(cuda_attention_bwd(p, p, p, p, p, p, p, p, p, 1, -2, 4, 2, 64, nullptr), InternalError);  // T < 0
  EXPECT_THROW(cuda_attention_bwd(p, p, p, p, p, p, p, p, p, 1, 4, 4, 2, 64, nullptr), InternalError);   // null
  EXPECT_NO_THROW(cuda_attention_bwd(p, p, p, p, p, p, p, p, p, 0, 4, 4, 2, 64, nullptr));               // B = 0
  EXPECT_NO_THROW(cuda_attention_bwd(p, p, p, p, p, p, p, p, p, 2, 0, 4, 2, 64, nullptr));               // T = 0
  EXPECT_THROW(cuda_attention_fwd_ws(p, p, p, p, 1, 4, 2, 64, 8, 9, p, 0, nullptr), InternalError);      // pos0+T > S
  // The split plan: none for prefill-sized T·H or short contexts, some for a long decode.
  EXPECT_EQ(cuda_attention_fwd_workspace_floats(512, 32, 64, 0), 0u);
  EXPECT_EQ(cuda_attention_fwd_workspace_floats(1, 32, 64, 100), 0u);
  EXPECT_GT(cuda_attention_fwd_workspace_floats(1, 32, 64, 8191), 0u);
}

TEST_F(CudaAttentionTrain, ForwardHeadDim8) { sweep_fwd(8); }
TEST_F(CudaAttentionTrain, ForwardHeadDim16) { sweep_fwd(16); }
TEST_F(CudaAttentionTrain, ForwardHeadDim64) { sweep_fwd(64); }
TEST_F(CudaAttentionTrain, ForwardHeadDim128) { sweep_fwd(128); }
TEST_F(CudaAttentionTrain, BackwardHeadDim8) { sweep_bwd(8); }
TEST_F(CudaAttentionTrain, BackwardHeadDim16) { sweep_bwd(16); }
TEST_F(CudaAttentionTrain, BackwardHeadDim64) { sweep_bwd(64); }
TEST_F(CudaAttentionTrain, BackwardHeadDim128) { sweep_bwd(128); }
TEST_F(CudaAttentionTrain, BackwardLargeTilesHeadDim8) { sweep_bwd_large(8); }
TEST_F(CudaAttentionTrain, BackwardLargeTilesHeadDim16) { sweep_bwd_large(16); }
TEST_F(CudaAttentionTrain, BackwardLargeTilesHeadDim64) { sweep_bwd_large(64); }
TEST_F(CudaAttentionTrain, BackwardLargeTilesHeadDim128) { sweep_bwd_large(128); }

TEST_F(CudaAttentionTrain, BackwardSingleKeyIsExact) {
  // T = 1: P = 1 exactly, so dv = Σ_group dout, dq = dk = 0 (dS = 1·(dP - delta) with delta = dP).
  const Case c{2, 1, 4, 2, 16};
  Inputs in(c, 77);
  cuda_device_use(*dev_);
  DevCase d(c, in);
  cuda_attention_train_fwd(d.q.p, d.k.p, d.v.p, d.out.p, d.lse.p, c.B, c.T, c.H, c.KV, c.D, dev_->stream);
  d.bwd(c, dev_->stream);
  cuda_device_sync(*dev_);
  const std::vector<float> dq = d.dq.download(), dk = d.dk.download(), dv = d.dv.download(), out = d.out.download();
  for (int64_t b = 0; b < c.B; ++b)
    for (int64_t g = 0; g < c.KV; ++g)
      for (int64_t e = 0; e < c.D; ++e) {
        const size_t kvi = size_t((b * c.KV + g) * c.D + e);
        const float want =
            in.dout[size_t((b * c.H + 2 * g) * c.D + e)] + in.dout[size_t((b * c.H + 2 * g + 1) * c.D + e)];
        EXPECT_EQ(dv[kvi], want) << "dv b=" << b << " g=" << g << " d=" << e;
        EXPECT_EQ(out[size_t((b * c.H + 2 * g) * c.D + e)], in.v[kvi]);
        // dS = dP - delta = Σ dout·v - Σ dout·out: both f32 sums of the same products in different orders.
        EXPECT_LE(std::fabs(dk[kvi]), 1e-5f) << "dk b=" << b << " g=" << g << " d=" << e;
      }
  for (float x : dq) EXPECT_LE(std::fabs(x), 1e-5f);
}

TEST_F(CudaAttentionTrain, TinyLlamaShapeChained) {
  // The training shape of TinyLlama: CUDA forward, then the CUDA backward from its out and lse, against the
  // reference forward + backward (a few seconds of double loops on the host). Prints device timings.
  const Case c{8, 256, 32, 4, 64};
  Inputs in(c, 2024);
  std::vector<float> want_out, want_lse;
  ops_train_fwd(reference_ops(), c, in, want_out, want_lse);
  const Grads want = ops_bwd(reference_ops(), c, in, want_out, want_lse);
  cuda_device_use(*dev_);
  DevCase d(c, in);
  cudaEvent_t e0, e1, e2;
  LORA_CUDA_CHECK(cudaEventCreate(&e0));
  LORA_CUDA_CHECK(cudaEventCreate(&e1));
  LORA_CUDA_CHECK(cudaEventCreate(&e2));
  float fwd_ms = 0, bwd_ms = 0;
  for (int rep = 0; rep < 4; ++rep) {  // the first round warms up (module load, mempool); the last is timed
    LORA_CUDA_CHECK(cudaEventRecord(e0, dev_->stream));
    cuda_attention_train_fwd(d.q.p, d.k.p, d.v.p, d.out.p, d.lse.p, c.B, c.T, c.H, c.KV, c.D, dev_->stream);
    LORA_CUDA_CHECK(cudaEventRecord(e1, dev_->stream));
    d.bwd(c, dev_->stream);
    LORA_CUDA_CHECK(cudaEventRecord(e2, dev_->stream));
    cuda_device_sync(*dev_);
    LORA_CUDA_CHECK(cudaEventElapsedTime(&fwd_ms, e0, e1));
    LORA_CUDA_CHECK(cudaEventElapsedTime(&bwd_ms, e1, e2));
  }
  (void)cudaEventDestroy(e0);
  (void)cudaEventDestroy(e1);
  (void)cudaEventDestroy(e2);
  std::printf("  %s on %s: train fwd %.3f ms, bwd %.3f ms\n", case_str(c).c_str(), dev_->name.c_str(), fwd_ms, bwd_ms);
  const double wo = expect_close(d.out.download(), want_out, tol::kCudaAttnTrainFwd, 1.0, 0.0, "out", c.H, c.D);
  const double wl = expect_close(d.lse.download(), want_lse, tol::kCudaAttnTrainFwd, 1.0, 1.0, "lse", c.H, 1);
  const Grads got{d.dq.download(), d.dk.download(), d.dv.download()};
  const double wq = expect_close(got.dq, want.dq, tol::kCudaAttnBwd, max_abs(want.dq), 0.0, "dq", c.H, c.D);
  const double wk = expect_close(got.dk, want.dk, tol::kCudaAttnBwd, max_abs(want.dk), 0.0, "dk", c.KV, c.D);
  const double wv = expect_close(got.dv, want.dv, tol::kCudaAttnBwd, max_abs(want.dv), 0.0, "dv", c.KV, c.D);
  std::printf("  max |err| / tol: out %.3g, lse %.3g, dq %.3g, dk %.3g, dv %.3g\n", wo, wl, wq, wk, wv);
}

TEST_F(CudaAttentionTrain, LongSequenceVsFastCpu) {
  // T = 2048 (the longest training rows): the double reference would take minutes, so the fast CPU backend
  // (f32, its own summation orders) is the oracle, with twice the tolerance (both sides round).
  const Case c{2, 2048, 8, 2, 128};
  Inputs in(c, 4242);
  std::vector<float> want_out, want_lse;
  ops_train_fwd(cpu_ops(), c, in, want_out, want_lse);
  const Grads want = ops_bwd(cpu_ops(), c, in, want_out, want_lse);
  cuda_device_use(*dev_);
  DevCase d(c, in);
  cuda_attention_train_fwd(d.q.p, d.k.p, d.v.p, d.out.p, d.lse.p, c.B, c.T, c.H, c.KV, c.D, dev_->stream);
  d.bwd(c, dev_->stream);
  cuda_device_sync(*dev_);
  expect_close(d.out.download(), want_out, 2 * tol::kCudaAttnTrainFwd, 1.0, 0.0, "out", c.H, c.D);
  expect_close(d.lse.download(), want_lse, 2 * tol::kCudaAttnTrainFwd, 1.0, 1.0, "lse", c.H, 1);
  const Grads got{d.dq.download(), d.dk.download(), d.dv.download()};
  const double wq = expect_close(got.dq, want.dq, 2 * tol::kCudaAttnBwd, max_abs(want.dq), 0.0, "dq", c.H, c.D);
  const double wk = expect_close(got.dk, want.dk, 2 * tol::kCudaAttnBwd, max_abs(want.dk), 0.0, "dk", c.KV, c.D);
  const double wv = expect_close(got.dv, want.dv, 2 * tol::kCudaAttnBwd, max_abs(want.dv), 0.0, "dv", c.KV, c.D);
  std::printf("  T=2048 vs cpu_ops: max |err| / (2·tol): dq %.3g, dk %.3g, dv %.3g\n", wq, wk, wv);
}

// ---- the backward in a CUDA graph, and its speed at the training shapes ----

// NaN (all bits set) in every element, ordered on the stream.
void poison(DevF32& x, cudaStream_t stream) {
  LORA_CUDA_CHECK(cudaMemsetAsync(x.p, 0xff, x.n * sizeof(float), stream));
}

// What `record` queues on `stream`, captured (relaxed mode, like the training step's capture in
// cuda_ops.cpp) into an executable graph; released on scope exit.
struct CapturedGraph {
  cudaGraph_t graph = nullptr;
  cudaGraphExec_t exec = nullptr;
  template <class F>
  CapturedGraph(cudaStream_t stream, F&& record) {
    LORA_CUDA_CHECK(cudaStreamBeginCapture(stream, cudaStreamCaptureModeRelaxed));
    try {
      record();
    } catch (...) {
      cudaGraph_t g = nullptr;
      (void)cudaStreamEndCapture(stream, &g);
      if (g) (void)cudaGraphDestroy(g);
      throw;
    }
    LORA_CUDA_CHECK(cudaStreamEndCapture(stream, &graph));
    const cudaError_t err = cudaGraphInstantiate(&exec, graph, 0);
    if (err != cudaSuccess) (void)cudaGraphDestroy(graph);
    LORA_CUDA_CHECK(err);
  }
  ~CapturedGraph() {
    if (exec) (void)cudaGraphExecDestroy(exec);
    if (graph) (void)cudaGraphDestroy(graph);
  }
  CapturedGraph(const CapturedGraph&) = delete;
  CapturedGraph& operator=(const CapturedGraph&) = delete;
  void launch(cudaStream_t stream) { LORA_CUDA_CHECK(cudaGraphLaunch(exec, stream)); }
};

TEST_F(CudaAttentionTrain, BackwardInGraphIsBitIdentical) {
  // The training step records the backward in a graph, so its stream-ordered scratch (the per-head dK/dV
  // partials) is allocated and freed inside the capture. Small tiles with a group sum, large tiles with a
  // group sum, and large tiles writing dk, dv directly (group 1).
  for (const Case& c : {Case{1, 90, 32, 4, 64}, Case{2, 257, 32, 4, 64}, Case{3, 161, 32, 32, 16}}) {
    SCOPED_TRACE(case_str(c));
    Inputs in(c, 31);
    cuda_device_use(*dev_);
    DevCase d(c, in);
    cuda_attention_train_fwd(d.q.p, d.k.p, d.v.p, d.out.p, d.lse.p, c.B, c.T, c.H, c.KV, c.D, dev_->stream);
    d.bwd(c, dev_->stream);
    cuda_device_sync(*dev_);
    const Grads direct{d.dq.download(), d.dk.download(), d.dv.download()};
    for (const std::vector<float>* x : {&direct.dq, &direct.dk, &direct.dv})
      for (float e : *x) ASSERT_TRUE(std::isfinite(e)) << "the direct call left a non-finite gradient";
    CapturedGraph g(dev_->stream, [&] { d.bwd(c, dev_->stream); });
    for (int replay = 0; replay < 2; ++replay) {
      for (DevF32* x : {&d.dq, &d.dk, &d.dv}) poison(*x, dev_->stream);
      g.launch(dev_->stream);
      cuda_device_sync(*dev_);
      EXPECT_EQ(0, std::memcmp(d.dq.download().data(), direct.dq.data(), direct.dq.size() * sizeof(float)))
          << "dq, replay " << replay;
      EXPECT_EQ(0, std::memcmp(d.dk.download().data(), direct.dk.data(), direct.dk.size() * sizeof(float)))
          << "dk, replay " << replay;
      EXPECT_EQ(0, std::memcmp(d.dv.download().data(), direct.dv.data(), direct.dv.size() * sizeof(float)))
          << "dv, replay " << replay;
    }
  }
}

TEST_F(CudaAttentionTrain, BackwardTiming) {
  // Informative: the backward at TinyLlama's training shapes (16 calls per step), per call, launched on the
  // stream and replayed from a graph of kCalls calls (as the training step runs it), each after a warm-up.
  constexpr int kCalls = 20;
  const Case cases[] = {{1, 64, 32, 4, 64}, {1, 90, 32, 4, 64}, {1, 128, 32, 4, 64}, {1, 160, 32, 4, 64},
                        {8, 256, 32, 4, 64}};
  for (const Case& c : cases) {
    Inputs in(c, 99);
    cuda_device_use(*dev_);
    DevCase d(c, in);
    cuda_attention_train_fwd(d.q.p, d.k.p, d.v.p, d.out.p, d.lse.p, c.B, c.T, c.H, c.KV, c.D, dev_->stream);
    cudaEvent_t e0, e1;
    LORA_CUDA_CHECK(cudaEventCreate(&e0));
    LORA_CUDA_CHECK(cudaEventCreate(&e1));
    float stream_ms = 0, graph_ms = 0;
    for (int round = 0; round < 2; ++round) {  // round 0 warms up (module load, memory pool)
      LORA_CUDA_CHECK(cudaEventRecord(e0, dev_->stream));
      for (int i = 0; i < kCalls; ++i) d.bwd(c, dev_->stream);
      LORA_CUDA_CHECK(cudaEventRecord(e1, dev_->stream));
      cuda_device_sync(*dev_);
      LORA_CUDA_CHECK(cudaEventElapsedTime(&stream_ms, e0, e1));
    }
    {
      CapturedGraph g(dev_->stream, [&] {
        for (int i = 0; i < kCalls; ++i) d.bwd(c, dev_->stream);
      });
      for (int round = 0; round < 2; ++round) {  // round 0 warms up (graph upload, its memory)
        LORA_CUDA_CHECK(cudaEventRecord(e0, dev_->stream));
        g.launch(dev_->stream);
        LORA_CUDA_CHECK(cudaEventRecord(e1, dev_->stream));
        cuda_device_sync(*dev_);
        LORA_CUDA_CHECK(cudaEventElapsedTime(&graph_ms, e0, e1));
      }
    }
    (void)cudaEventDestroy(e0);
    (void)cudaEventDestroy(e1);
    std::printf("  bwd %s on %s: %.1f us per call on the stream, %.1f us in a graph\n", case_str(c).c_str(),
                dev_->name.c_str(), 1000.0 * stream_ms / kCalls, 1000.0 * graph_ms / kCalls);
  }
}

// ---- split-K inference forward ----

struct DecodeCase {
  int64_t T, pos0, S, H, KV, D;
};

// cuda_attention_fwd (internal workspace), cuda_attention_fwd_ws with an exact NaN-filled workspace and
// with one float too few (the single-pass fallback) vs the reference; the two split runs must agree bit
// for bit. Cache rows past pos0 + T hold NaN. Returns max |err| / kCudaAttention.
double check_decode(CudaDevice& dev, const DecodeCase& c, uint32_t seed) {
  SCOPED_TRACE(testing::Message() << "T=" << c.T << " pos0=" << c.pos0 << " S=" << c.S << " H=" << c.H
                                  << " KV=" << c.KV << " D=" << c.D);
  const size_t nq = size_t(c.T * c.H * c.D), nkv = size_t(c.S * c.KV * c.D);
  std::vector<float> q = uniform(nq, -2, 2, seed), k = uniform(nkv, -2, 2, seed + 1), v = uniform(nkv, -1, 1, seed + 2);
  for (size_t i = size_t((c.pos0 + c.T) * c.KV * c.D); i < nkv; ++i) k[i] = v[i] = NAN;
  std::vector<float> want(nq, 0.0f);
  {
    Tensor tq = tensor_view(q.data(), DTYPE_F32, {c.T, c.H, c.D});
    Tensor tk = tensor_view(k.data(), DTYPE_F32, {c.S, c.KV, c.D});
    Tensor tv = tensor_view(v.data(), DTYPE_F32, {c.S, c.KV, c.D});
    Tensor to = tensor_view(want.data(), DTYPE_F32, {c.T, c.H, c.D});
    reference_ops().attention_fwd(tq, tk, tv, c.pos0, to);
  }
  const size_t ws_n = cuda_attention_fwd_workspace_floats(c.T, c.H, c.D, c.pos0);
  cuda_device_use(dev);
  DevF32 dq(q), dk(k), dv(v), out(nq), out_ws(nq), out_small(nq), ws(std::max<size_t>(ws_n, 1));
  out.fill_nan();
  out_ws.fill_nan();
  out_small.fill_nan();
  ws.fill_nan();
  cuda_attention_fwd(dq.p, dk.p, dv.p, out.p, c.T, c.H, c.KV, c.D, c.S, c.pos0, dev.stream);
  cuda_attention_fwd_ws(dq.p, dk.p, dv.p, out_ws.p, c.T, c.H, c.KV, c.D, c.S, c.pos0, ws.p, ws_n, dev.stream);
  cuda_attention_fwd_ws(dq.p, dk.p, dv.p, out_small.p, c.T, c.H, c.KV, c.D, c.S, c.pos0, ws.p,
                        ws_n > 0 ? ws_n - 1 : 0, dev.stream);
  cuda_device_sync(dev);
  const std::vector<float> got = out.download(), got_ws = out_ws.download(), got_small = out_small.download();
  double worst = expect_close(got, want, tol::kCudaAttention, 1.0, 0.0, "split out", c.H, c.D);
  worst = std::max(worst, expect_close(got_small, want, tol::kCudaAttention, 1.0, 0.0, "single-pass out", c.H, c.D));
  EXPECT_EQ(0, std::memcmp(got.data(), got_ws.data(), nq * sizeof(float)))
      << "internal and caller workspaces give different results";
  return worst;
}

class CudaAttentionSplit : public CudaAttentionTrain {};

TEST_F(CudaAttentionSplit, DecodeMatchesReference) {
  struct Named {
    DecodeCase c;
    bool splits;  // what the plan should do (the cases are meant to cover both)
  };
  const Named cases[] = {
      {{1, 511, 512, 32, 4, 64}, true},      // just long enough to split in two
      {{1, 1000, 1500, 9, 3, 64}, true},     // SmolLM2 heads, NaN tail
      {{1, 4095, 4100, 32, 4, 64}, true},    // TinyLlama decode
      {{1, 8191, 8192, 32, 8, 128}, true},   // Llama-3 heads, full 8k cache
      {{1, 300, 301, 8, 8, 64}, false},      // too short to split: the single pass
      {{3, 700, 710, 4, 2, 16}, true},       // a few queries
      {{5, 4000, 4005, 2, 1, 128}, true},    // a few queries, one kv head
      {{1, 2000, 2001, 1, 1, 8}, true},      // one head: the most splits
      {{400, 200, 600, 1, 1, 8}, true},      // early queries see only the first split: empty partials
      {{300, 250, 560, 1, 1, 64}, true},     // same with 10 NaN rows after the live ones
      {{40, 3000, 3050, 4, 2, 64}, true},    // a short chunk after a long context, few heads
      {{256, 1000, 1300, 64, 8, 16}, false}, // a chunk after a context longer than itself, tiled (4 x 64 blocks)
  };
  double worst = 0;
  uint32_t seed = 900;
  for (const Named& n : cases) {
    const DecodeCase& c = n.c;
    EXPECT_EQ(cuda_attention_fwd_workspace_floats(c.T, c.H, c.D, c.pos0) > 0, n.splits)
        << "T=" << c.T << " pos0=" << c.pos0 << " H=" << c.H << ": split plan changed; update the cases";
    worst = std::max(worst, check_decode(*dev_, c, seed += 3));
  }
  std::printf("  split-K decode: max |err| / kCudaAttention = %.3g\n", worst);
}

TEST_F(CudaAttentionSplit, DecodeTiming) {
  // Informative: one decode step at TinyLlama's shape, split-K vs the single pass (a too-small workspace).
  const int64_t H = 32, KV = 4, D = 64;
  for (int64_t S : {512, 2048, 8192}) {
    const int64_t pos0 = S - 1;
    const size_t ws_n = cuda_attention_fwd_workspace_floats(1, H, D, pos0);
    cuda_device_use(*dev_);
    DevF32 q(uniform(size_t(H * D), -2, 2, 5)), k(uniform(size_t(S * KV * D), -2, 2, 6)),
        v(uniform(size_t(S * KV * D), -1, 1, 7)), out(size_t(H * D)), ws(std::max<size_t>(ws_n, 1));
    cudaEvent_t e0, e1, e2;
    LORA_CUDA_CHECK(cudaEventCreate(&e0));
    LORA_CUDA_CHECK(cudaEventCreate(&e1));
    LORA_CUDA_CHECK(cudaEventCreate(&e2));
    constexpr int kReps = 50;
    float split_ms = 0, single_ms = 0;
    for (int round = 0; round < 2; ++round) {  // round 0 warms up
      LORA_CUDA_CHECK(cudaEventRecord(e0, dev_->stream));
      for (int r = 0; r < kReps; ++r)
        cuda_attention_fwd_ws(q.p, k.p, v.p, out.p, 1, H, KV, D, S, pos0, ws.p, ws_n, dev_->stream);
      LORA_CUDA_CHECK(cudaEventRecord(e1, dev_->stream));
      for (int r = 0; r < kReps; ++r)
        cuda_attention_fwd_ws(q.p, k.p, v.p, out.p, 1, H, KV, D, S, pos0, nullptr, 0, dev_->stream);
      LORA_CUDA_CHECK(cudaEventRecord(e2, dev_->stream));
      cuda_device_sync(*dev_);
      LORA_CUDA_CHECK(cudaEventElapsedTime(&split_ms, e0, e1));
      LORA_CUDA_CHECK(cudaEventElapsedTime(&single_ms, e1, e2));
    }
    (void)cudaEventDestroy(e0);
    (void)cudaEventDestroy(e1);
    (void)cudaEventDestroy(e2);
    std::printf("  decode H=32 KV=4 D=64 S=%lld: split-K %.1f us, single pass %.1f us per call\n", (long long)S,
                1000.0 * split_ms / kReps, 1000.0 * single_ms / kReps);
  }
}

}  // namespace
}  // namespace lora
