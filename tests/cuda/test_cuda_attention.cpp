// CUDA causal attention with grouped KV heads (src/cuda/attention.cu) against the double-precision
// reference backend's attention_fwd (cpu/reference.h) on the same f32 inputs: head dims 8, 16, 64, 128,
// groups H/KV of 1, 2, 4, 8, T in {1, 3, 33, 128}, pos0 in {0, 5, 100}, with S = pos0 + T and with a
// longer cache whose unused rows hold NaN (a read past the live positions poisons the output), plus
// long decode (S = 8192) and prefill (T = 512). The output buffer starts as NaN so an unwritten element
// fails too. Without a GPU the device tests skip with a message; the precondition checks still run.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
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
  int64_t T, pos0, S, H, KV, D;
};

// Runs one case on the device and against the reference; returns max |err| / tol-bound (<= 1 passes).
double check_case(CudaDevice& dev, const Case& c, uint32_t seed) {
  SCOPED_TRACE(testing::Message() << "T=" << c.T << " pos0=" << c.pos0 << " S=" << c.S << " H=" << c.H
                                  << " KV=" << c.KV << " D=" << c.D);
  const size_t nq = size_t(c.T * c.H * c.D), nkv = size_t(c.S * c.KV * c.D);
  // Scores up to a few units (q, k in [-2, 2]) so the softmax is peaked enough that the max matters.
  std::vector<float> q = uniform(nq, -2, 2, seed), k = uniform(nkv, -2, 2, seed + 1), v = uniform(nkv, -1, 1, seed + 2);
  for (size_t i = size_t((c.pos0 + c.T) * c.KV * c.D); i < nkv; ++i) k[i] = v[i] = NAN;  // unused cache rows
  std::vector<float> want(nq, 0.0f);
  {
    Tensor tq = tensor_view(q.data(), DTYPE_F32, {c.T, c.H, c.D});
    Tensor tk = tensor_view(k.data(), DTYPE_F32, {c.S, c.KV, c.D});
    Tensor tv = tensor_view(v.data(), DTYPE_F32, {c.S, c.KV, c.D});
    Tensor to = tensor_view(want.data(), DTYPE_F32, {c.T, c.H, c.D});
    reference_ops().attention_fwd(tq, tk, tv, c.pos0, to);
  }
  cuda_device_use(dev);
  DevF32 dq(q), dk(k), dv(v), dout(std::vector<float>(nq, NAN));
  cuda_attention_fwd(dq.p, dk.p, dv.p, dout.p, c.T, c.H, c.KV, c.D, c.S, c.pos0, dev.stream);
  cuda_device_sync(dev);
  const std::vector<float> got = dout.download();
  // The output is a convex combination of live V rows, |v| <= 1: an absolute bound.
  const double bound = tol::kCudaAttention;
  double worst = 0;
  int bad = 0;
  for (size_t i = 0; i < nq; ++i) {
    const double err = std::fabs(double(got[i]) - double(want[i]));
    worst = std::max(worst, std::isfinite(err) ? err / bound : INFINITY);
    if (!(err <= bound) && bad++ < 5) {
      const int64_t d = int64_t(i) % c.D, h = int64_t(i) / c.D % c.H, t = int64_t(i) / (c.D * c.H);
      ADD_FAILURE() << "out[" << t << "," << h << "," << d << "] = " << got[i] << ", want " << want[i];
    }
  }
  EXPECT_EQ(bad, 0);
  return worst;
}

class CudaAttention : public ::testing::Test {
 protected:
  void SetUp() override {
    LORA_REQUIRE_CUDA();
    dev_ = cuda_device_open(0);
  }
  // Every group size, T, pos0, with S = pos0 + T and with 7 extra NaN rows, at head dim D.
  void sweep(int64_t D) {
    double worst = 0;
    uint32_t seed = uint32_t(D) * 1000;
    for (int64_t group : {1, 2, 4, 8})
      for (int64_t T : {1, 3, 33, 128})
        for (int64_t pos0 : {0, 5, 100})
          for (int64_t extra : {0, 7}) {
            const int64_t KV = group == 8 ? 1 : 2;
            worst = std::max(worst, check_case(*dev_, Case{T, pos0, pos0 + T + extra, KV * group, KV, D}, seed += 3));
          }
    std::printf("  D=%lld: max |err| / kCudaAttention = %.3g (measured tolerance %.3g)\n", (long long)D, worst,
                worst * tol::kCudaAttention);
  }
  std::unique_ptr<CudaDevice> dev_;
};

TEST(CudaAttentionArgs, BadArgumentsAreInternalErrors) {
  // The launcher checks before touching the device, so this runs without a GPU too.
  float* p = nullptr;
  EXPECT_THROW(cuda_attention_fwd(p, p, p, p, 1, 4, 2, 32, 8, 0, nullptr), InternalError);   // D = 32
  EXPECT_THROW(cuda_attention_fwd(p, p, p, p, 1, 4, 2, 256, 8, 0, nullptr), InternalError);  // D = 256
  EXPECT_THROW(cuda_attention_fwd(p, p, p, p, 1, 6, 4, 64, 8, 0, nullptr), InternalError);   // H % KV != 0
  EXPECT_THROW(cuda_attention_fwd(p, p, p, p, 4, 4, 2, 64, 8, 5, nullptr), InternalError);   // pos0 + T > S
  EXPECT_THROW(cuda_attention_fwd(p, p, p, p, 1, 4, 2, 64, 8, -1, nullptr), InternalError);  // pos0 < 0
  EXPECT_THROW(cuda_attention_fwd(p, p, p, p, 1, 4, 2, 64, 8, 0, nullptr), InternalError);   // null pointers
  EXPECT_NO_THROW(cuda_attention_fwd(p, p, p, p, 0, 4, 2, 64, 8, 0, nullptr));               // T = 0: nothing
}

TEST_F(CudaAttention, HeadDim8) { sweep(8); }
TEST_F(CudaAttention, HeadDim16) { sweep(16); }
TEST_F(CudaAttention, HeadDim64) { sweep(64); }
TEST_F(CudaAttention, HeadDim128) { sweep(128); }

TEST_F(CudaAttention, DecodeLongContext) {
  // One query at the end of an 8192-position cache (every key live), and one in the middle of it with
  // the rest NaN: 32 query heads over 8 kv heads, like TinyLlama / Llama 3.
  double worst = 0;
  for (int64_t D : {64, 128}) {
    worst = std::max(worst, check_case(*dev_, Case{1, 8191, 8192, 32, 8, D}, 11));
    worst = std::max(worst, check_case(*dev_, Case{1, 4999, 8192, 32, 8, D}, 12));
  }
  std::printf("  decode S=8192: max |err| / kCudaAttention = %.3g\n", worst);
}

TEST_F(CudaAttention, PrefillLong) {
  // A 512-token prompt from position 0, and 512 more after 300 cached positions (S with NaN tail).
  double worst = check_case(*dev_, Case{512, 0, 512, 8, 2, 64}, 21);
  worst = std::max(worst, check_case(*dev_, Case{512, 300, 900, 4, 4, 128}, 22));
  std::printf("  prefill T=512: max |err| / kCudaAttention = %.3g\n", worst);
}

TEST_F(CudaAttention, FirstPositionCopiesValue) {
  // One query over one key: softmax of a single score is exactly 1, so out = that kv head's v row.
  const int64_t H = 4, KV = 2, D = 16;
  std::vector<float> q = uniform(size_t(H * D), -2, 2, 31), k = uniform(size_t(KV * D), -2, 2, 32),
                     v = uniform(size_t(KV * D), -1, 1, 33);
  cuda_device_use(*dev_);
  DevF32 dq(q), dk(k), dv(v), dout(size_t(H * D));
  cuda_attention_fwd(dq.p, dk.p, dv.p, dout.p, 1, H, KV, D, 1, 0, dev_->stream);
  cuda_device_sync(*dev_);
  const std::vector<float> got = dout.download();
  for (int64_t h = 0; h < H; ++h)
    for (int64_t d = 0; d < D; ++d) EXPECT_EQ(got[size_t(h * D + d)], v[size_t((h / (H / KV)) * D + d)]);
}

}  // namespace
}  // namespace lora
