// The CPU backend's ops (cpu_ops()) against the plain reference backend (reference_ops(), loops in
// double) over odd sizes (1, 31, 32, 33, non-multiples of the 8-wide vectors) and every weight dtype;
// plus rope_table_make against transformers' RoPE init functions (fixture from tools/gen_golden.py).
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>
#include <vector>

#include "core/error.h"
#include "core/rng.h"
#include "cpu/cpu_ops.h"
#include "cpu/reference.h"
#include "test_util.h"
#include "tolerances.h"

namespace lora {
namespace {

// Uniform in [lo, hi) stored as `dt` (the f32 values are rounded to dt first, so the reference sees
// exactly the same numbers as the kernel).
OwnedTensor random_tensor(Rng& rng, DType dt, std::initializer_list<int64_t> shape, float lo = -1, float hi = 1) {
  OwnedTensor t = tensor_alloc(dt, shape);
  std::vector<float> v(size_t(t.t.numel()));
  for (auto& x : v) x = lo + (hi - lo) * rng.uniform();
  dtype_convert_from_f32(dt, v.data(), t.t.data, int64_t(v.size()));
  return t;
}

OwnedTensor zeros(std::initializer_list<int64_t> shape) {
  OwnedTensor t = tensor_alloc(DTYPE_F32, shape);
  std::fill(t.t.f32(), t.t.f32() + t.t.numel(), 0.0f);
  return t;
}

OwnedTensor copy_of(const Tensor& src) {
  OwnedTensor t = tensor_alloc(src.dtype, src.shape.data(), src.ndim);
  std::memcpy(t.t.data, src.data, size_t(src.nbytes()));
  return t;
}

// |got - want| <= tol * (1 + |want|) elementwise; returns the largest such scaled error.
double expect_close(const Tensor& got, const Tensor& want, double tol, const std::string& what) {
  EXPECT_EQ(got.numel(), want.numel()) << what;
  double worst = 0;
  int reported = 0;
  for (int64_t i = 0; i < got.numel(); ++i) {
    const double g = got.f32()[i], w = want.f32()[i];
    const double err = std::abs(g - w) / (1.0 + std::abs(w));
    worst = std::max(worst, std::isnan(err) ? INFINITY : err);
    if (!(err <= tol) && reported++ < 5) ADD_FAILURE() << what << ": [" << i << "] got " << g << " want " << w;
  }
  return worst;
}

const DType kWeightTypes[] = {DTYPE_F32, DTYPE_BF16, DTYPE_F16};

TEST(CpuOps, Embedding) {
  Rng rng(1);
  for (DType dt : kWeightTypes)
    for (int64_t C : {1, 31, 32, 33}) {
      auto table = random_tensor(rng, dt, {37, C});
      const std::vector<int32_t> ids = {0, 36, 5, 5, 17};
      const int64_t n = int64_t(ids.size());
      auto a = zeros({n, C}), b = zeros({n, C});
      cpu_ops().embedding_fwd(ids.data(), n, table.t, a.t);
      reference_ops().embedding_fwd(ids.data(), n, table.t, b.t);
      // A row copy with an exact conversion: bit-identical.
      EXPECT_EQ(std::memcmp(a.t.data, b.t.data, size_t(a.t.nbytes())), 0) << dtype_name(dt) << " C=" << C;
    }
}

TEST(CpuOps, EmbeddingRejectsOutOfRangeIds) {
  Rng rng(2);
  auto table = random_tensor(rng, DTYPE_F32, {10, 8});
  auto out = zeros({1, 8});
  for (int32_t bad : {10, -1}) {
    try {
      cpu_ops().embedding_fwd(&bad, 1, table.t, out.t);
      ADD_FAILURE() << "id " << bad << " accepted";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("outside the vocabulary"), std::string::npos) << e.what();
    }
  }
}

TEST(CpuOps, RmsNorm) {
  Rng rng(3);
  for (DType dt : kWeightTypes)
    for (int64_t C : {1, 31, 32, 33, 100})
      for (int64_t n : {1, 3}) {
        auto x = random_tensor(rng, DTYPE_F32, {n, C}, -3, 3);
        auto w = random_tensor(rng, dt, {C}, 0.5, 1.5);
        auto a = zeros({n, C}), b = zeros({n, C});
        cpu_ops().rmsnorm_fwd(x.t, w.t, 1e-5f, a.t);
        reference_ops().rmsnorm_fwd(x.t, w.t, 1e-5f, b.t);
        expect_close(a.t, b.t, tol::kOpElementwise, fmt::format("rmsnorm {} C={} n={}", dtype_name(dt), C, n));
      }
}

// Covers the matvec (n = 1), the F32 sgemm and the BF16/F16 panel GEMM (n > 1), with and without
// bias; (600, 1000) makes the panel path take two panels.
TEST(CpuOps, Linear) {
  Rng rng(4);
  struct Shape { int64_t out, in; };
  const Shape shapes[] = {{1, 1}, {31, 33}, {32, 32}, {33, 31}, {45, 67}, {7, 257}, {600, 1000}};
  for (DType dt : kWeightTypes)
    for (const Shape& s : shapes)
      for (int64_t n : {1, 2, 5})
        for (bool with_bias : {false, true}) {
          auto w = random_tensor(rng, dt, {s.out, s.in});
          auto x = random_tensor(rng, DTYPE_F32, {n, s.in});
          auto bias = random_tensor(rng, dt, {s.out});
          auto a = zeros({n, s.out}), b = zeros({n, s.out});
          const Tensor* bp = with_bias ? &bias.t : nullptr;
          cpu_ops().linear_fwd(x.t, w.t, bp, a.t);
          reference_ops().linear_fwd(x.t, w.t, bp, b.t);
          expect_close(a.t, b.t, tol::kOpLinear,
                       fmt::format("linear {} ({}, {}) n={} bias={}", dtype_name(dt), s.out, s.in, n, with_bias));
        }
}

TEST(CpuOps, Rope) {
  Rng rng(5);
  for (int64_t D : {2, 8, 16, 34, 64}) {
    RopeTable tab = rope_table_make(D, 300, 10000.0, nullptr);
    for (int64_t nh : {1, 3}) {
      const int64_t N = 4;
      auto x = random_tensor(rng, DTYPE_F32, {N, nh, D});
      auto y = copy_of(x.t);
      const std::vector<int32_t> pos = {0, 1, 77, 299};
      cpu_ops().rope_fwd(x.t, pos.data(), tab);
      reference_ops().rope_fwd(y.t, pos.data(), tab);
      expect_close(x.t, y.t, tol::kOpElementwise, fmt::format("rope D={} nh={}", D, nh));
    }
  }
}

// Position 0 is the identity; the rotation keeps each pair's norm.
TEST(CpuOps, RopeIdentityAtZeroAndNormPreserving) {
  Rng rng(6);
  RopeTable tab = rope_table_make(16, 50, 10000.0, nullptr);
  auto x = random_tensor(rng, DTYPE_F32, {2, 2, 16});
  auto y = copy_of(x.t);
  const std::vector<int32_t> pos = {0, 49};
  cpu_ops().rope_fwd(y.t, pos.data(), tab);
  for (int64_t i = 0; i < 32; ++i) EXPECT_EQ(y.t.f32()[i], x.t.f32()[i]);
  for (int64_t h = 0; h < 2; ++h)
    for (int64_t i = 0; i < 8; ++i) {
      const float* a = x.t.f32() + (2 + h) * 16;
      const float* b = y.t.f32() + (2 + h) * 16;
      EXPECT_NEAR(a[i] * a[i] + a[i + 8] * a[i + 8], b[i] * b[i] + b[i + 8] * b[i + 8], tol::kOpElementwise);
    }
}

// Unused cache rows (beyond pos0 + T) hold NaN: reading them would poison the output.
TEST(CpuOps, Attention) {
  Rng rng(7);
  struct Case { int64_t T, pos0, S, H, KV, D; };
  const Case cases[] = {{1, 0, 1, 1, 1, 1},  {5, 0, 8, 4, 2, 8},    {1, 30, 40, 4, 2, 16}, {3, 7, 11, 6, 3, 33},
                        {33, 0, 33, 2, 1, 31}, {4, 29, 64, 8, 1, 32}, {1, 100, 101, 4, 4, 8}};
  for (const Case& c : cases) {
    auto q = random_tensor(rng, DTYPE_F32, {c.T, c.H, c.D}, -2, 2);
    auto k = random_tensor(rng, DTYPE_F32, {c.S, c.KV, c.D}, -2, 2);
    auto v = random_tensor(rng, DTYPE_F32, {c.S, c.KV, c.D});
    for (int64_t i = (c.pos0 + c.T) * c.KV * c.D; i < c.S * c.KV * c.D; ++i)
      k.t.f32()[i] = v.t.f32()[i] = NAN;
    auto a = zeros({c.T, c.H, c.D}), b = zeros({c.T, c.H, c.D});
    cpu_ops().attention_fwd(q.t, k.t, v.t, c.pos0, a.t);
    reference_ops().attention_fwd(q.t, k.t, v.t, c.pos0, b.t);
    expect_close(a.t, b.t, tol::kOpAttention,
                 fmt::format("attention T={} pos0={} S={} H={} KV={} D={}", c.T, c.pos0, c.S, c.H, c.KV, c.D));
  }
}

// Attention of one query over a single key returns that key's value row exactly (softmax of one).
TEST(CpuOps, AttentionFirstPositionCopiesValue) {
  Rng rng(8);
  auto q = random_tensor(rng, DTYPE_F32, {1, 4, 8});
  auto k = random_tensor(rng, DTYPE_F32, {1, 2, 8});
  auto v = random_tensor(rng, DTYPE_F32, {1, 2, 8});
  auto o = zeros({1, 4, 8});
  cpu_ops().attention_fwd(q.t, k.t, v.t, 0, o.t);
  for (int64_t h = 0; h < 4; ++h)
    for (int64_t d = 0; d < 8; ++d) EXPECT_FLOAT_EQ(o.t.f32()[h * 8 + d], v.t.f32()[(h / 2) * 8 + d]);
}

TEST(CpuOps, SwigluAndAdd) {
  Rng rng(9);
  for (int64_t n : {1, 31, 32, 33, 70001}) {
    auto g = random_tensor(rng, DTYPE_F32, {n}, -8, 8);
    auto u = random_tensor(rng, DTYPE_F32, {n}, -2, 2);
    auto a = zeros({n}), b = zeros({n});
    cpu_ops().swiglu_fwd(g.t, u.t, a.t);
    reference_ops().swiglu_fwd(g.t, u.t, b.t);
    expect_close(a.t, b.t, tol::kOpElementwise, fmt::format("swiglu n={}", n));
    auto y1 = copy_of(g.t), y2 = copy_of(g.t);
    cpu_ops().add_fwd(y1.t, u.t);
    reference_ops().add_fwd(y2.t, u.t);
    // One f32 addition either way: bit-identical.
    EXPECT_EQ(std::memcmp(y1.t.data, y2.t.data, size_t(y1.t.nbytes())), 0) << "add n=" << n;
  }
}

// inv_freq from transformers' ROPE_INIT_FUNCTIONS (default, linear, llama3), stored by gen_golden.py.
TEST(RopeTable, MatchesTransformers) {
  const std::string path = test::fixture("golden/rope_inv_freq.json");
  std::ifstream f(path);
  ASSERT_TRUE(f.good()) << path;
  const auto j = nlohmann::json::parse(f);
  ASSERT_FALSE(j["cases"].empty());
  for (const auto& c : j["cases"]) {
    RopeScaling s;
    s.type = c["type"].get<std::string>();
    s.factor = c.value("factor", 1.0);
    s.low_freq_factor = c.value("low_freq_factor", 1.0);
    s.high_freq_factor = c.value("high_freq_factor", 4.0);
    s.original_max_position = c.value("original_max_position_embeddings", int64_t(8192));
    const int64_t D = c["head_dim"].get<int64_t>();
    RopeTable t = rope_table_make(D, 4, c["theta"].get<double>(), &s);
    const auto want = c["inv_freq"].get<std::vector<double>>();
    ASSERT_EQ(t.inv_freq.size(), want.size());
    for (size_t i = 0; i < want.size(); ++i)
      EXPECT_NEAR(t.inv_freq[i], want[i], tol::kRopeInvFreqRel * std::abs(want[i]))
          << s.type << " D=" << D << " i=" << i;
    // Row p of the table is (cos, sin)(p * inv_freq).
    for (size_t i = 0; i < want.size(); ++i)
      EXPECT_NEAR(t.cos[size_t(3 * (D / 2)) + i], std::cos(3.0 * want[i]), tol::kOpElementwise);
  }
}

TEST(RopeTable, RejectsUnknownScaling) {
  RopeScaling s;
  s.type = "yarn";
  EXPECT_THROW(rope_table_make(8, 4, 10000.0, &s), Error);
}


// Large enough (64 · 1100 · 2048 ≈ 2^27 multiply-adds, over the 2^21 threshold) that the F32 sgemm
// and the BF16/F16 panel GEMM split the product over OpenMP threads in dynamically handed-out chunks;
// out = 1100 is odd and gives several chunks per thread with a short last one. Run the suite under
// OMP_NUM_THREADS=1, 2 and 3: every thread count must agree with the reference.
TEST(CpuOps, LinearParallelChunks) {
  Rng rng(41);
  const int64_t n = 64, in = 2048, out = 1100;
  auto x = random_tensor(rng, DTYPE_F32, {n, in});
  for (DType dt : kWeightTypes)
    for (bool with_bias : {false, true}) {
      auto w = random_tensor(rng, dt, {out, in});
      auto bias = random_tensor(rng, dt, {out});
      auto a = zeros({n, out}), b = zeros({n, out});
      const Tensor* bp = with_bias ? &bias.t : nullptr;
      cpu_ops().linear_fwd(x.t, w.t, bp, a.t);
      reference_ops().linear_fwd(x.t, w.t, bp, b.t);
      const double worst = expect_close(a.t, b.t, tol::kOpLinear,
                                        fmt::format("linear {} ({}, {}) n={} bias={}", dtype_name(dt), out, in, n, with_bias));
      std::printf("  linear %-4s (%lld, %lld) n=%lld bias=%d worst %.2e\n", dtype_name(dt), (long long)out,
                  (long long)in, (long long)n, int(with_bias), worst);
    }
}

}  // namespace
}  // namespace lora
