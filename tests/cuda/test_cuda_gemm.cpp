// CUDA device context and cuBLASLt GEMM (src/cuda/device.*, src/cuda/gemm.*) against a double-precision
// CPU reference on odd sizes, every transpose combination, padded leading dimensions, alpha/beta, f32
// and bf16 outputs, and the exact-fp32 variant. Without a GPU (cuda_device_count() == 0) the device
// tests skip with a message; the no-device error path still runs.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <random>
#include <vector>

#include "core/dtype.h"
#include "core/error.h"
#include "cuda/check.h"
#include "cuda/device.h"
#include "cuda/gemm.h"
#include "cuda/kernels.h"
#include "cuda_test_util.h"
#include "tolerances.h"

namespace lora {
namespace {


// Device buffer freed on scope exit.
struct DevBuf {
  void* p = nullptr;
  explicit DevBuf(size_t bytes) { LORA_CUDA_CHECK(cudaMalloc(&p, bytes < 1 ? 1 : bytes)); }
  ~DevBuf() { (void)cudaFree(p); }
  DevBuf(const DevBuf&) = delete;
  DevBuf& operator=(const DevBuf&) = delete;
};

// Uniform [-1, 1) rounded to bf16 so that both sides see exactly the same inputs.
std::vector<uint16_t> random_bf16(int64_t n, uint32_t seed) {
  std::mt19937 gen(seed);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  std::vector<uint16_t> v(static_cast<size_t>(n));
  for (auto& x : v) x = f32_to_bf16(u(gen));
  return v;
}
std::vector<float> random_f32(int64_t n, uint32_t seed) {
  std::mt19937 gen(seed);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  std::vector<float> v(static_cast<size_t>(n));
  for (auto& x : v) x = u(gen);
  return v;
}

struct Case {
  int64_t M, N, K;
  bool ta = false, tb = true;  // default: the linear layer y = x · Wᵀ
  int64_t pad = 0;             // added to every leading dimension
  float alpha = 1.0f, beta = 0.0f;
};

// Runs one case through gemm_bf16 (bf16 = true) or gemm_f32 and checks it against the double reference.
// c_type: output dtype for gemm_bf16. Returns the largest error / bound seen (for the measured value).
double check_case(CudaDevice& dev, const Case& c, bool bf16, DType c_type = DTYPE_F32) {
  const int64_t a_rows = c.ta ? c.K : c.M, a_cols = c.ta ? c.M : c.K;  // A as stored
  const int64_t b_rows = c.tb ? c.N : c.K, b_cols = c.tb ? c.K : c.N;  // B as stored
  const int64_t lda = a_cols + c.pad, ldb = b_cols + c.pad, ldc = c.N + c.pad;
  std::vector<float> a(size_t(a_rows * lda)), b(size_t(b_rows * ldb));  // f32 values of the inputs
  std::vector<uint16_t> a16, b16;
  std::vector<float> a32, b32;
  if (bf16) {
    a16 = random_bf16(a_rows * lda, 1);
    b16 = random_bf16(b_rows * ldb, 2);
    for (size_t i = 0; i < a.size(); ++i) a[i] = bf16_to_f32(a16[i]);
    for (size_t i = 0; i < b.size(); ++i) b[i] = bf16_to_f32(b16[i]);
  } else {
    a = a32 = random_f32(a_rows * lda, 1);
    b = b32 = random_f32(b_rows * ldb, 2);
  }
  std::vector<float> c0 = random_f32(c.M * ldc, 3);  // (M, ldc) initial C
  if (c_type == DTYPE_BF16)
    for (auto& x : c0) x = bf16_to_f32(f32_to_bf16(x));

  // Reference in double: C = alpha · op(A) · op(B) + beta · C0.
  double max_a = 0, max_b = 0, max_c0 = 0;
  for (float x : a) max_a = std::max(max_a, double(std::fabs(x)));
  for (float x : b) max_b = std::max(max_b, double(std::fabs(x)));
  for (float x : c0) max_c0 = std::max(max_c0, double(std::fabs(x)));
  std::vector<double> ref(size_t(c.M * c.N)), mag(size_t(c.M * c.N));  // mag = |alpha·s| + |beta·C0|
  for (int64_t i = 0; i < c.M; ++i)
    for (int64_t j = 0; j < c.N; ++j) {
      double s = 0;
      for (int64_t k = 0; k < c.K; ++k) {
        const double av = c.ta ? a[size_t(k * lda + i)] : a[size_t(i * lda + k)];
        const double bv = c.tb ? b[size_t(j * ldb + k)] : b[size_t(k * ldb + j)];
        s += av * bv;
      }
      ref[size_t(i * c.N + j)] = double(c.alpha) * s + double(c.beta) * c0[size_t(i * ldc + j)];
      mag[size_t(i * c.N + j)] = std::fabs(double(c.alpha) * s) + std::fabs(double(c.beta) * c0[size_t(i * ldc + j)]);
    }

  // Device run.
  const size_t esz = bf16 ? 2 : 4, csz = c_type == DTYPE_BF16 ? 2 : 4;
  DevBuf da(a.size() * esz), db(b.size() * esz), dc(c0.size() * csz);
  cuda_device_use(dev);
  LORA_CUDA_CHECK(cudaMemcpy(da.p, bf16 ? (const void*)a16.data() : (const void*)a32.data(), a.size() * esz,
                             cudaMemcpyHostToDevice));
  LORA_CUDA_CHECK(cudaMemcpy(db.p, bf16 ? (const void*)b16.data() : (const void*)b32.data(), b.size() * esz,
                             cudaMemcpyHostToDevice));
  std::vector<uint16_t> c016(c0.size());
  for (size_t i = 0; i < c0.size(); ++i) c016[i] = f32_to_bf16(c0[i]);
  LORA_CUDA_CHECK(cudaMemcpy(dc.p, c_type == DTYPE_BF16 ? (const void*)c016.data() : (const void*)c0.data(),
                             c0.size() * csz, cudaMemcpyHostToDevice));
  if (bf16)
    gemm_bf16(dev, c.ta, c.tb, c.M, c.N, c.K, c.alpha, da.p, lda, db.p, ldb, c.beta, dc.p, c_type, ldc);
  else
    gemm_f32(dev, c.ta, c.tb, c.M, c.N, c.K, c.alpha, static_cast<const float*>(da.p), lda,
             static_cast<const float*>(db.p), ldb, c.beta, static_cast<float*>(dc.p), ldc);
  cuda_device_sync(dev);
  std::vector<float> got(c0.size());
  if (c_type == DTYPE_BF16) {
    LORA_CUDA_CHECK(cudaMemcpy(c016.data(), dc.p, c0.size() * 2, cudaMemcpyDeviceToHost));
    for (size_t i = 0; i < c0.size(); ++i) got[i] = bf16_to_f32(c016[i]);
  } else {
    LORA_CUDA_CHECK(cudaMemcpy(got.data(), dc.p, c0.size() * 4, cudaMemcpyDeviceToHost));
  }

  const double scale = std::fabs(c.alpha) * std::sqrt(double(c.K)) * max_a * max_b + std::fabs(c.beta) * max_c0;
  double worst = 0;
  int64_t bad = 0;
  for (int64_t i = 0; i < c.M; ++i) {
    for (int64_t j = 0; j < c.N; ++j) {
      const double want = ref[size_t(i * c.N + j)], g = got[size_t(i * ldc + j)];
      double bound = tol::kCudaGemmAccum * scale;
      // bf16 output: cuBLASLt rounds alpha·acc to bf16 before adding beta·C, so the rounding error scales
      // with the terms' magnitudes, not with the (possibly cancelled) result.
      if (c_type == DTYPE_BF16) bound += tol::kCudaGemmBF16Out * mag[size_t(i * c.N + j)];
      const double err = std::fabs(g - want);
      worst = std::max(worst, err / bound);
      if (!(err <= bound) && bad++ < 5)
        ADD_FAILURE() << "C[" << i << "," << j << "] = " << g << ", want " << want << " (|err| " << err
                      << " > bound " << bound << ")";
    }
    // The padding columns of C must be untouched.
    for (int64_t j = c.N; j < ldc; ++j)
      if (got[size_t(i * ldc + j)] != c0[size_t(i * ldc + j)] && bad++ < 5)
        ADD_FAILURE() << "padding C[" << i << "," << j << "] was written";
  }
  EXPECT_EQ(bad, 0) << "M=" << c.M << " N=" << c.N << " K=" << c.K << " ta=" << c.ta << " tb=" << c.tb;
  std::printf("  %s M=%lld N=%lld K=%lld ta=%d tb=%d pad=%lld out=%s: max |err| / (kCudaGemmAccum·scale) = %.3g "
              "(measured tolerance %.3g)\n",
              bf16 ? "bf16" : "f32 ", (long long)c.M, (long long)c.N, (long long)c.K, int(c.ta), int(c.tb),
              (long long)c.pad, dtype_name(c_type), worst, worst * tol::kCudaGemmAccum);
  return worst;
}

class CudaGemm : public ::testing::Test {
 protected:
  void SetUp() override {
    LORA_REQUIRE_CUDA();
    dev_ = cuda_device_open(0);
  }
  std::unique_ptr<CudaDevice> dev_;
};

TEST(CudaDevice, OpenOutOfRangeIsAnInputError) {
  // Runs without a GPU too: with 0 devices, index 0 is out of range.
  const int n = cuda_device_count();
  EXPECT_GE(n, 0);
  EXPECT_THROW(cuda_device_open(n), Error);
  EXPECT_THROW(cuda_device_open(-1), Error);
}

TEST(CudaDevice, DescribeEveryDevice) {
  LORA_REQUIRE_CUDA();
  for (int i = 0; i < cuda_device_count(); ++i) {
    auto dev = cuda_device_open(i);
    const std::string d = cuda_device_describe(*dev);
    std::printf("  %s\n", d.c_str());
    EXPECT_EQ(dev->index, i);
    EXPECT_FALSE(dev->name.empty());
    EXPECT_GT(dev->sm_count, 0);
    EXPECT_GT(dev->total_memory, 0);
    EXPECT_NE(dev->stream, nullptr);
    EXPECT_NE(d.find("cuda:" + std::to_string(i)), std::string::npos) << d;
  }
}

TEST_F(CudaGemm, LinearBF16OddAndModelSizes) {
  // y (M, N) = x (M, K) · W (N, K)ᵀ, f32 out: 1×33×31, 17×64×96, 96×2048×256, 96×5632×2048 (M×N×K).
  for (const Case& c : {Case{1, 33, 31}, Case{17, 64, 96}, Case{96, 2048, 256}, Case{96, 5632, 2048}})
    check_case(*dev_, c, true);
}

TEST_F(CudaGemm, EveryTransposePaddedAlphaBeta) {
  for (bool ta : {false, true})
    for (bool tb : {false, true})
      for (const Case& base : {Case{1, 33, 31}, Case{17, 64, 96}}) {
        Case c = base;
        c.ta = ta;
        c.tb = tb;
        c.pad = 3;
        c.alpha = 0.5f;
        c.beta = 0.25f;
        check_case(*dev_, c, true);
      }
}

TEST_F(CudaGemm, BF16Output) {
  check_case(*dev_, Case{96, 2048, 256}, true, DTYPE_BF16);
  check_case(*dev_, Case{17, 64, 96, false, false, 0, 1.0f, 1.0f}, true, DTYPE_BF16);
}

TEST_F(CudaGemm, ExactF32) {
  for (bool ta : {false, true})
    for (bool tb : {false, true}) check_case(*dev_, Case{17, 64, 96, ta, tb, 1, 0.5f, 0.25f}, false);
  check_case(*dev_, Case{96, 2048, 256}, false);
}

TEST_F(CudaGemm, PlansAreCachedByShape) {
  const int64_t before = gemm_plan_count(*dev_);
  check_case(*dev_, Case{5, 40, 24}, true);
  const int64_t once = gemm_plan_count(*dev_);
  EXPECT_EQ(once, before + 1);
  check_case(*dev_, Case{5, 40, 24}, true);
  EXPECT_EQ(gemm_plan_count(*dev_), once);
  check_case(*dev_, Case{6, 40, 24}, true);
  EXPECT_EQ(gemm_plan_count(*dev_), once + 1);
}

TEST_F(CudaGemm, BadLeadingDimensionIsAnInternalError) {
  DevBuf a(64 * 2), b(64 * 2), c(64 * 4);
  // A (4, 8) with lda 7 < K = 8.
  EXPECT_THROW(gemm_bf16(*dev_, false, true, 4, 4, 8, 1.0f, a.p, 7, b.p, 8, 0.0f, c.p, DTYPE_F32, 4),
               InternalError);
  EXPECT_THROW(gemm_bf16(*dev_, false, true, 4, 4, 8, 1.0f, a.p, 8, b.p, 8, 0.0f, c.p, DTYPE_F16, 4),
               InternalError);
}

}  // namespace
}  // namespace lora

namespace lora {
namespace {

// The one-token linear (cuda_gemv_bf16, decode) vs a double reference on the same bf16 weights, under the
// same accumulation bound as the GEMMs: |err| <= kCudaGemmAccum·√K·max|x|·max|W|. Odd row counts, the
// model's widths, and the unsupported cases refused.
TEST(CudaGemv, Bf16MatchesDoubleReference) {
  LORA_REQUIRE_CUDA();
  std::mt19937 gen(7);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  for (auto [out, in] : {std::pair<int64_t, int64_t>{1, 8}, {257, 2048}, {33, 5632}, {2048, 2048}, {5, 12288}}) {
    std::vector<uint16_t> w(static_cast<size_t>(out * in));
    std::vector<float> x(static_cast<size_t>(in)), y(static_cast<size_t>(out), NAN);
    for (auto& v : w) v = f32_to_bf16(u(gen));
    for (auto& v : x) v = u(gen);
    void *dw = nullptr, *dx = nullptr, *dy = nullptr;
    LORA_CUDA_CHECK(cudaMalloc(&dw, w.size() * 2));
    LORA_CUDA_CHECK(cudaMalloc(&dx, x.size() * 4));
    LORA_CUDA_CHECK(cudaMalloc(&dy, y.size() * 4));
    LORA_CUDA_CHECK(cudaMemcpy(dw, w.data(), w.size() * 2, cudaMemcpyHostToDevice));
    LORA_CUDA_CHECK(cudaMemcpy(dx, x.data(), x.size() * 4, cudaMemcpyHostToDevice));
    LORA_CUDA_CHECK(cudaMemcpy(dy, y.data(), y.size() * 4, cudaMemcpyHostToDevice));
    ASSERT_TRUE(cuda_gemv_bf16_supported(dw, in));
    cuda_gemv_bf16(static_cast<float*>(dx), dw, out, in, static_cast<float*>(dy), nullptr);
    LORA_CUDA_CHECK(cudaMemcpy(y.data(), dy, y.size() * 4, cudaMemcpyDeviceToHost));
    double worst = 0;
    for (int64_t o = 0; o < out; ++o) {
      double want = 0;
      for (int64_t i = 0; i < in; ++i) want += double(bf16_to_f32(w[size_t(o * in + i)])) * x[size_t(i)];
      worst = std::max(worst, std::abs(double(y[size_t(o)]) - want) / std::sqrt(double(in)));
    }
    EXPECT_LE(worst, tol::kCudaGemmAccum) << out << "x" << in;
    std::printf("  measured: gemv %lldx%lld max |err|/sqrt(K) = %.2e\n", (long long)out, (long long)in, worst);
    (void)cudaFree(dw);
    (void)cudaFree(dx);
    (void)cudaFree(dy);
  }
  EXPECT_FALSE(cuda_gemv_bf16_supported(reinterpret_cast<void*>(16), 12));     // in % 8
  EXPECT_FALSE(cuda_gemv_bf16_supported(reinterpret_cast<void*>(8), 16));      // alignment
  EXPECT_FALSE(cuda_gemv_bf16_supported(reinterpret_cast<void*>(16), 16384));  // x too large for shared memory
}

}  // namespace
}  // namespace lora
