// cuda_attention_decode (src/cuda/attention.cu), the decode attention whose key count n lives in device
// memory so that one launch can be recorded in a CUDA graph and replayed as the context grows:
//   - vs the double-precision reference attention_fwd (cpu/reference.h, T = 1, pos0 = n-1) on the same f32
//     inputs for n in {1, 2, 33, 255, 256, 257, 1000, S_max}, S_max in {64, 1000, 8192}, groups H/KV in
//     {1, 2, 4, 8}, D in {8, 16, 64, 128}; cache rows >= n, the output and the workspace hold NaN beforehand
//     (a read past the live keys, an unwritten element or a stale partial fails); n = 1 must copy the v
//     row exactly; the result must match cuda_attention_fwd(T = 1, pos0 = n-1) and a second call must give
//     the same bits;
//   - TinyLlama (H = 32, KV = 4, D = 64) and Llama-3 (H = 32, KV = 8, D = 128) shapes at S_max 2048, 8192;
//   - the launch captured once in a CUDA graph on a non-default stream and replayed while n grows (new cache
//     rows and a new q written between replays) and then shrinks: every replay vs the reference, and bit for
//     bit vs a direct call;
//   - n outside [1, S_max] in memory: out is NaN; the precondition checks; timings of
//     the TinyLlama shape at n = 600 (printed, not asserted).
// Without a GPU the device tests skip with a message; the precondition checks still run.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <memory>
#include <random>
#include <vector>

#include "core/error.h"
#include "core/tensor.h"
#include "cpu/reference.h"
#include "cuda/attention.h"
#include "cuda/check.h"
#include "cuda/device.h"
#include "cuda_test_util.h"
#include "tolerances.h"

namespace lora {
namespace {


// Device array freed on scope exit, filled from / read back to host vectors.
template <class T>
struct DevBuf {
  T* p = nullptr;
  size_t n = 0;
  explicit DevBuf(size_t count) : n(count) {
    LORA_CUDA_CHECK(cudaMalloc(reinterpret_cast<void**>(&p), std::max<size_t>(n, 1) * sizeof(T)));
  }
  explicit DevBuf(const std::vector<T>& h) : DevBuf(h.size()) { upload(h); }
  ~DevBuf() { (void)cudaFree(p); }
  DevBuf(const DevBuf&) = delete;
  DevBuf& operator=(const DevBuf&) = delete;
  void upload(const std::vector<T>& h) {
    LORA_CUDA_CHECK(cudaMemcpy(p, h.data(), n * sizeof(T), cudaMemcpyHostToDevice));
  }
  std::vector<T> download() const {
    std::vector<T> h(n);
    LORA_CUDA_CHECK(cudaMemcpy(h.data(), p, n * sizeof(T), cudaMemcpyDeviceToHost));
    return h;
  }
};
using DevF32 = DevBuf<float>;

std::vector<float> uniform(size_t n, float lo, float hi, uint32_t seed) {
  std::mt19937 gen(seed);
  std::uniform_real_distribution<float> u(lo, hi);
  std::vector<float> v(n);
  for (auto& x : v) x = u(gen);
  return v;
}

std::vector<float> nans(size_t n) { return std::vector<float>(n, NAN); }

// The reference output (H, D) of query q (H, D) over keys 0 .. n-1 of k, v (S_max, KV, D).
std::vector<float> reference_decode(const std::vector<float>& q, const std::vector<float>& k,
                                    const std::vector<float>& v, int64_t H, int64_t KV, int64_t D, int64_t S_max,
                                    int64_t n) {
  std::vector<float> want(size_t(H * D), 0.0f);
  std::vector<float> qc = q, kc = k, vc = v;  // tensor_view takes mutable pointers
  Tensor tq = tensor_view(qc.data(), DTYPE_F32, {1, H, D});
  Tensor tk = tensor_view(kc.data(), DTYPE_F32, {S_max, KV, D});
  Tensor tv = tensor_view(vc.data(), DTYPE_F32, {S_max, KV, D});
  Tensor to = tensor_view(want.data(), DTYPE_F32, {1, H, D});
  reference_ops().attention_fwd(tq, tk, tv, n - 1, to);
  return want;
}

// Max |got - want| / bound over all elements (inf when one is not finite); reports up to 5 elements over it.
double expect_close(const std::vector<float>& got, const std::vector<float>& want, double bound, int64_t D,
                    const char* what) {
  double worst = 0;
  int bad = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    const double err = std::fabs(double(got[i]) - double(want[i]));
    worst = std::max(worst, std::isfinite(err) ? err / bound : INFINITY);
    if (!(err <= bound) && bad++ < 5)
      ADD_FAILURE() << what << ": out[h=" << int64_t(i) / D << ", d=" << int64_t(i) % D << "] = " << got[i]
                    << ", want " << want[i];
  }
  EXPECT_EQ(bad, 0) << what;
  return worst;
}

bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

// Max errors / bound over the cases of one check_config call.
struct Worst {
  double vs_ref = 0, vs_fwd = 0;
  void merge(const Worst& o) {
    vs_ref = std::max(vs_ref, o.vs_ref);
    vs_fwd = std::max(vs_fwd, o.vs_fwd);
  }
};

// One shape (H, KV, D, S_max), every n of ns that fits: decode vs reference, vs cuda_attention_fwd, and a
// repeat call bit for bit. The cache rows >= n are NaN for each n; out starts NaN on every call; the
// workspace starts NaN once and then keeps the previous n's partials.
Worst check_config(CudaDevice& dev, int64_t H, int64_t KV, int64_t D, int64_t S_max, const std::vector<int64_t>& ns,
                   uint32_t seed) {
  Worst worst;
  const size_t nq = size_t(H * D), nkv = size_t(S_max * KV * D);
  const std::vector<float> q = uniform(nq, -2, 2, seed), k = uniform(nkv, -2, 2, seed + 1),
                           v = uniform(nkv, -1, 1, seed + 2);
  cuda_device_use(dev);
  const size_t ws_floats = cuda_attention_decode_workspace_floats(H, D, S_max);
  EXPECT_GT(ws_floats, 0u);
  DevF32 dq(q), dk(nkv), dv(nkv), dout(nq), dfwd(nq), dws(nans(ws_floats));
  DevBuf<int32_t> dn(1);
  for (int64_t n : ns) {
    if (n > S_max) continue;
    SCOPED_TRACE(testing::Message() << "H=" << H << " KV=" << KV << " D=" << D << " S_max=" << S_max << " n=" << n);
    std::vector<float> kn = k, vn = v;
    std::fill(kn.begin() + int64_t(n * KV * D), kn.end(), NAN);  // rows >= n: never to be read
    std::fill(vn.begin() + int64_t(n * KV * D), vn.end(), NAN);
    dk.upload(kn);
    dv.upload(vn);
    dn.upload({int32_t(n)});
    dout.upload(nans(nq));
    cuda_attention_decode(dq.p, dk.p, dv.p, dout.p, H, KV, D, S_max, dn.p, dws.p, dev.stream);
    cuda_device_sync(dev);
    const std::vector<float> got = dout.download();

    const std::vector<float> want = reference_decode(q, k, v, H, KV, D, S_max, n);
    // The output is a convex combination of live v rows, |v| <= 1: an absolute bound.
    worst.vs_ref = std::max(worst.vs_ref, expect_close(got, want, tol::kCudaAttention, D, "decode vs reference"));
    if (n == 1) {  // softmax of one score is exactly 1: out = the kv head's v row 0, bit for bit
      int bad = 0;
      for (int64_t h = 0; h < H; ++h)
        for (int64_t d = 0; d < D; ++d)
          if (got[size_t(h * D + d)] != v[size_t((h / (H / KV)) * D + d)] && bad++ < 5)
            ADD_FAILURE() << "n=1: out[h=" << h << ", d=" << d << "] = " << got[size_t(h * D + d)] << ", want v "
                          << v[size_t((h / (H / KV)) * D + d)];
      EXPECT_EQ(bad, 0);
    }

    dfwd.upload(nans(nq));
    cuda_attention_fwd(dq.p, dk.p, dv.p, dfwd.p, 1, H, KV, D, S_max, n - 1, dev.stream);
    cuda_device_sync(dev);
    worst.vs_fwd = std::max(worst.vs_fwd, expect_close(got, dfwd.download(), tol::kCudaAttnDecodeVsFwd, D,
                                                       "decode vs cuda_attention_fwd"));

    dout.upload(nans(nq));
    cuda_attention_decode(dq.p, dk.p, dv.p, dout.p, H, KV, D, S_max, dn.p, dws.p, dev.stream);
    cuda_device_sync(dev);
    EXPECT_TRUE(same_bits(got, dout.download())) << "a second call gave different bits";
  }
  return worst;
}

const std::vector<int64_t> kSweepN = {1, 2, 33, 255, 256, 257, 1000, 8192};  // and S_max itself

class CudaAttentionDecode : public ::testing::Test {
 protected:
  void SetUp() override {
    LORA_REQUIRE_CUDA();
    dev_ = cuda_device_open(0);
  }
  // Every group size and S_max at head dim D (KV = 2, or 1 for group 8; up to 8 heads, so many splits per
  // head and one chunk per warp), then 32 heads over a long cache.
  void sweep(int64_t D) {
    Worst worst;
    uint32_t seed = uint32_t(D) * 7919;
    for (int64_t S_max : {64, 1000, 8192}) {
      std::vector<int64_t> ns = kSweepN;
      if (std::find(ns.begin(), ns.end(), S_max) == ns.end()) ns.push_back(S_max);
      for (int64_t group : {1, 2, 4, 8}) {
        const int64_t KV = group == 8 ? 1 : 2;
        worst.merge(check_config(*dev_, KV * group, KV, D, S_max, ns, seed += 3));
      }
    }
    // Few splits per head (H = 32): at n = 8192 each warp walks several 32-key chunks of its split.
    worst.merge(check_config(*dev_, 32, 4, D, 8192, {1, 257, 8192}, seed += 3));
    std::printf("  D=%lld: max |err| / kCudaAttention = %.3g vs reference, / kCudaAttnDecodeVsFwd = %.3g vs fwd\n",
                (long long)D, worst.vs_ref, worst.vs_fwd);
  }
  std::unique_ptr<CudaDevice> dev_;
};

TEST(CudaAttentionDecodeArgs, BadArgumentsAreInternalErrors) {
  // The launcher checks before touching the device, so this runs without a GPU too. Fake, aligned, never
  // dereferenced pointers isolate each check.
  float* f = reinterpret_cast<float*>(uintptr_t(256));
  const int32_t* n = reinterpret_cast<const int32_t*>(uintptr_t(512));
  float* null = nullptr;
  EXPECT_THROW(cuda_attention_decode(f, f, f, f, 4, 2, 32, 8, n, f, nullptr), InternalError);   // D = 32
  EXPECT_THROW(cuda_attention_decode(f, f, f, f, 4, 2, 256, 8, n, f, nullptr), InternalError);  // D = 256
  EXPECT_THROW(cuda_attention_decode(f, f, f, f, 6, 4, 64, 8, n, f, nullptr), InternalError);   // H % KV != 0
  EXPECT_THROW(cuda_attention_decode(f, f, f, f, 0, 1, 64, 8, n, f, nullptr), InternalError);   // H = 0
  EXPECT_THROW(cuda_attention_decode(f, f, f, f, 4, 2, 64, 0, n, f, nullptr), InternalError);   // S_max = 0
  EXPECT_THROW(cuda_attention_decode(f, f, f, f, 65536 * 2, 2, 64, 8, n, f, nullptr), InternalError);  // H > 65535
  EXPECT_THROW(cuda_attention_decode(null, f, f, f, 4, 2, 64, 8, n, f, nullptr), InternalError);       // null q
  EXPECT_THROW(cuda_attention_decode(f, f, f, null, 4, 2, 64, 8, n, f, nullptr), InternalError);       // null out
  EXPECT_THROW(cuda_attention_decode(f, f, f, f, 4, 2, 64, 8, nullptr, f, nullptr), InternalError);    // null n
  EXPECT_THROW(cuda_attention_decode(f, f, f, f, 4, 2, 64, 8, n, null, nullptr), InternalError);       // null ws
  EXPECT_THROW(cuda_attention_decode(f, f, f, f, 4, 2, 64, 8, n + 0, f + 1, nullptr), InternalError);  // ws unaligned
  EXPECT_THROW(cuda_attention_decode(f, f, f, f, 4, 2, 64, 8, reinterpret_cast<const int32_t*>(uintptr_t(514)), f,
                                     nullptr),
               InternalError);  // n not 4-byte aligned
}

TEST(CudaAttentionDecodeArgs, WorkspaceSize) {
  // At least one partial (D + 2 floats) per head, at most 64; grows with S_max, never with anything else.
  for (int64_t H : {1, 4, 32, 64})
    for (int64_t D : {8, 64, 128}) {
      size_t prev = 0;
      for (int64_t S_max : {1, 64, 1000, 2048, 8192, 131072}) {
        const size_t w = cuda_attention_decode_workspace_floats(H, D, S_max);
        EXPECT_GE(w, size_t(H * (D + 2)));
        EXPECT_LE(w, size_t(64 * H * (D + 2)));
        EXPECT_GE(w, prev);
        EXPECT_EQ(w % size_t(H * (D + 2)), 0u);
        prev = w;
      }
    }
  EXPECT_EQ(cuda_attention_decode_workspace_floats(0, 64, 8), 0u);
  EXPECT_EQ(cuda_attention_decode_workspace_floats(4, 64, 0), 0u);
}

TEST_F(CudaAttentionDecode, HeadDim8) { sweep(8); }
TEST_F(CudaAttentionDecode, HeadDim16) { sweep(16); }
TEST_F(CudaAttentionDecode, HeadDim64) { sweep(64); }
TEST_F(CudaAttentionDecode, HeadDim128) { sweep(128); }

TEST_F(CudaAttentionDecode, ModelShapes) {
  // TinyLlama (32 query heads over 4 kv heads, D = 64) and Llama 3 (32 over 8, D = 128) in 2048- and
  // 8192-position caches, at the decode lengths around the split boundaries and at the benchmark's n ~ 600.
  Worst worst;
  const std::vector<int64_t> ns = {1, 127, 128, 129, 600, 2047, 2048, 4097, 8191, 8192};
  for (int64_t S_max : {2048, 8192}) {
    worst.merge(check_config(*dev_, 32, 4, 64, S_max, ns, 101 + uint32_t(S_max)));
    worst.merge(check_config(*dev_, 32, 8, 128, S_max, ns, 202 + uint32_t(S_max)));
  }
  std::printf("  model shapes: max |err| / kCudaAttention = %.3g vs reference, / kCudaAttnDecodeVsFwd = %.3g\n",
              worst.vs_ref, worst.vs_fwd);
}

TEST_F(CudaAttentionDecode, OutOfRangeNGivesNaN) {
  // n <= 0 or n > S_max in memory is a caller bug: out is NaN, loudly, rather than a plausible answer
  // computed from a clamped n or from the partials of the previous call (each bad n follows a good call
  // that leaves finite partials in the workspace; the cache holds finite values).
  const int64_t H = 8, KV = 2, D = 64, S_max = 300;
  cuda_device_use(*dev_);
  DevF32 dq(uniform(size_t(H * D), -2, 2, 5)), dk(uniform(size_t(S_max * KV * D), -2, 2, 6)),
      dv(uniform(size_t(S_max * KV * D), -1, 1, 7));
  DevF32 dout(size_t(H * D)), dws(cuda_attention_decode_workspace_floats(H, D, S_max));
  DevBuf<int32_t> dn(1);
  for (int32_t n : {0, -1, int32_t(S_max + 1)}) {
    dn.upload({int32_t(S_max)});
    cuda_attention_decode(dq.p, dk.p, dv.p, dout.p, H, KV, D, S_max, dn.p, dws.p, dev_->stream);
    cuda_device_sync(*dev_);
    for (float x : dout.download()) ASSERT_TRUE(std::isfinite(x)) << "n=S_max";
    dn.upload({n});
    dout.upload(std::vector<float>(size_t(H * D), 0.0f));
    cuda_attention_decode(dq.p, dk.p, dv.p, dout.p, H, KV, D, S_max, dn.p, dws.p, dev_->stream);
    cuda_device_sync(*dev_);
    for (float x : dout.download()) ASSERT_TRUE(std::isnan(x)) << "n=" << n;
  }
}

// A non-default stream, a captured graph and its executable, released on scope exit.
struct GraphOnStream {
  cudaStream_t stream = nullptr;
  cudaGraph_t graph = nullptr;
  cudaGraphExec_t exec = nullptr;
  GraphOnStream() { LORA_CUDA_CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking)); }
  ~GraphOnStream() {
    if (exec) (void)cudaGraphExecDestroy(exec);
    if (graph) (void)cudaGraphDestroy(graph);
    (void)cudaStreamDestroy(stream);
  }
  GraphOnStream(const GraphOnStream&) = delete;
  GraphOnStream& operator=(const GraphOnStream&) = delete;
  template <class F>
  void capture(F&& record) {
    LORA_CUDA_CHECK(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal));
    try {
      record();
    } catch (...) {
      cudaGraph_t g = nullptr;
      (void)cudaStreamEndCapture(stream, &g);
      if (g) (void)cudaGraphDestroy(g);
      throw;
    }
    LORA_CUDA_CHECK(cudaStreamEndCapture(stream, &graph));
    LORA_CUDA_CHECK(cudaGraphInstantiate(&exec, graph, 0));
  }
};

// Pinned host ints (one per replay, so a queued copy never sees a later value).
struct PinnedI32 {
  int32_t* p = nullptr;
  explicit PinnedI32(size_t n) { LORA_CUDA_CHECK(cudaMallocHost(reinterpret_cast<void**>(&p), n * sizeof(int32_t))); }
  ~PinnedI32() { (void)cudaFreeHost(p); }
  PinnedI32(const PinnedI32&) = delete;
  PinnedI32& operator=(const PinnedI32&) = delete;
};

// Captures one decode launch, then for each n: writes cache rows up to n and a fresh q, sets n, NaN-fills
// out (all queued on the graph's stream), replays, and checks the output against the reference and bit for
// bit against a direct call. The cache starts all NaN, so while n grows every row >= n is NaN.
void check_graph_replay(CudaDevice& dev, int64_t H, int64_t KV, int64_t D, int64_t S_max,
                        const std::vector<int64_t>& ns, uint32_t seed) {
  SCOPED_TRACE(testing::Message() << "graph H=" << H << " KV=" << KV << " D=" << D << " S_max=" << S_max);
  cuda_device_use(dev);
  const size_t nq = size_t(H * D), nkv = size_t(S_max * KV * D), row = size_t(KV * D);
  const std::vector<float> k = uniform(nkv, -2, 2, seed), v = uniform(nkv, -1, 1, seed + 1);
  std::vector<std::vector<float>> qs;  // one q per replay, alive until the queued copies ran
  for (size_t i = 0; i < ns.size(); ++i) qs.push_back(uniform(nq, -2, 2, seed + 10 + uint32_t(i)));
  DevF32 dq(nq), dk(nans(nkv)), dv(nans(nkv)), dout(nq), ddirect(nq);
  DevF32 dws(nans(cuda_attention_decode_workspace_floats(H, D, S_max)));
  DevBuf<int32_t> dn(1);
  PinnedI32 n_host(ns.size());
  GraphOnStream g;
  g.capture([&] { cuda_attention_decode(dq.p, dk.p, dv.p, dout.p, H, KV, D, S_max, dn.p, dws.p, g.stream); });

  int64_t rows_written = 0;
  for (size_t i = 0; i < ns.size(); ++i) {
    const int64_t n = ns[i];
    SCOPED_TRACE(testing::Message() << "replay " << i << ": n=" << n);
    ASSERT_TRUE(n >= 1 && n <= S_max);
    if (n > rows_written) {  // the new tokens' k and v rows, as the model's cache write would
      const size_t off = size_t(rows_written) * row, count = size_t(n - rows_written) * row;
      LORA_CUDA_CHECK(cudaMemcpyAsync(dk.p + off, k.data() + off, count * sizeof(float), cudaMemcpyHostToDevice,
                                      g.stream));
      LORA_CUDA_CHECK(cudaMemcpyAsync(dv.p + off, v.data() + off, count * sizeof(float), cudaMemcpyHostToDevice,
                                      g.stream));
      rows_written = n;
    }
    LORA_CUDA_CHECK(cudaMemcpyAsync(dq.p, qs[i].data(), nq * sizeof(float), cudaMemcpyHostToDevice, g.stream));
    n_host.p[i] = int32_t(n);
    LORA_CUDA_CHECK(cudaMemcpyAsync(dn.p, &n_host.p[i], sizeof(int32_t), cudaMemcpyHostToDevice, g.stream));
    LORA_CUDA_CHECK(cudaMemsetAsync(dout.p, 0xff, nq * sizeof(float), g.stream));  // all-ones bits: NaN
    LORA_CUDA_CHECK(cudaGraphLaunch(g.exec, g.stream));
    LORA_CUDA_CHECK(cudaStreamSynchronize(g.stream));
    const std::vector<float> got = dout.download();
    expect_close(got, reference_decode(qs[i], k, v, H, KV, D, S_max, n), tol::kCudaAttention, D,
                 "graph replay vs reference");

    LORA_CUDA_CHECK(cudaMemsetAsync(ddirect.p, 0xff, nq * sizeof(float), g.stream));
    cuda_attention_decode(dq.p, dk.p, dv.p, ddirect.p, H, KV, D, S_max, dn.p, dws.p, g.stream);
    LORA_CUDA_CHECK(cudaStreamSynchronize(g.stream));
    EXPECT_TRUE(same_bits(got, ddirect.download())) << "graph replay and direct call differ";
  }
}

TEST_F(CudaAttentionDecode, GraphReplayAsContextGrows) {
  // n grows through the split boundaries (one 128-key split, several, all of them), then shrinks: the
  // partials of the longer n are still in the workspace and must not be read.
  const std::vector<int64_t> grow = {1, 2, 3, 31, 32, 33, 127, 128, 129, 255, 256, 257, 600, 1000, 1999, 2048, 5, 300};
  check_graph_replay(*dev_, 32, 4, 64, 2048, grow, 71);
  check_graph_replay(*dev_, 8, 1, 128, 1000, {1, 2, 100, 129, 999, 1000, 1, 64}, 72);
  check_graph_replay(*dev_, 4, 2, 16, 8192, {1, 33, 257, 4096, 8191, 8192, 2}, 73);
}

TEST_F(CudaAttentionDecode, TimingTinyLlamaShape) {
  // GPU time per call at n = 600 (the benchmark's context) from a graph of 100 back-to-back calls, so that
  // launch overhead on the host does not count; cuda_attention_fwd_ws (split-K, grid sized from n) alongside.
  const int64_t H = 32, KV = 4, D = 64, n = 600, kCalls = 100, kReps = 5;
  cuda_device_use(*dev_);
  for (int64_t S_max : {2048, 8192}) {
    const size_t nq = size_t(H * D), nkv = size_t(S_max * KV * D);
    DevF32 dq(uniform(nq, -2, 2, 81)), dk(uniform(nkv, -2, 2, 82)), dv(uniform(nkv, -1, 1, 83)), dout(nq);
    DevF32 dws(cuda_attention_decode_workspace_floats(H, D, S_max));
    const size_t fwd_floats = std::max<size_t>(cuda_attention_fwd_workspace_floats(1, H, D, n - 1), 4);
    DevF32 dws_fwd(fwd_floats);
    DevBuf<int32_t> dn(std::vector<int32_t>{int32_t(n)});
    double us[2] = {0, 0};
    for (int which = 0; which < 2; ++which) {
      GraphOnStream g;
      g.capture([&] {
        for (int64_t c = 0; c < kCalls; ++c) {
          if (which == 0)
            cuda_attention_decode(dq.p, dk.p, dv.p, dout.p, H, KV, D, S_max, dn.p, dws.p, g.stream);
          else
            cuda_attention_fwd_ws(dq.p, dk.p, dv.p, dout.p, 1, H, KV, D, S_max, n - 1, dws_fwd.p, fwd_floats,
                                  g.stream);
        }
      });
      LORA_CUDA_CHECK(cudaGraphLaunch(g.exec, g.stream));  // warm-up
      cudaEvent_t t0 = nullptr, t1 = nullptr;
      LORA_CUDA_CHECK(cudaEventCreate(&t0));
      LORA_CUDA_CHECK(cudaEventCreate(&t1));
      LORA_CUDA_CHECK(cudaEventRecord(t0, g.stream));
      for (int64_t r = 0; r < kReps; ++r) LORA_CUDA_CHECK(cudaGraphLaunch(g.exec, g.stream));
      LORA_CUDA_CHECK(cudaEventRecord(t1, g.stream));
      LORA_CUDA_CHECK(cudaStreamSynchronize(g.stream));
      float ms = 0;
      LORA_CUDA_CHECK(cudaEventElapsedTime(&ms, t0, t1));
      (void)cudaEventDestroy(t0);
      (void)cudaEventDestroy(t1);
      us[which] = 1e3 * double(ms) / double(kCalls * kReps);
    }
    std::printf("  H=32 KV=4 D=64 S_max=%lld n=%lld: cuda_attention_decode %.2f us/call, cuda_attention_fwd_ws %.2f "
                "us/call (%s)\n",
                (long long)S_max, (long long)n, us[0], us[1], dev_->name.c_str());
  }
}

}  // namespace
}  // namespace lora
