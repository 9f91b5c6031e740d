// QLoRA on the CPU: the linear layer, its backward and the embedding with frozen weights kept in
// llama.cpp's quantized blocks (core/quant.h), against the same ops on the dequantized f32 weights;
// and model_load's --quantize / keep_quantized (types chosen as llama.cpp does, bytes equal to the
// reference quantizer's).
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

#include "core/error.h"
#include "core/quant.h"
#include "core/rng.h"
#include "cpu/cpu_ops.h"
#include "model/model.h"
#include "model_test_util.h"
#include "test_util.h"
#include "tolerances.h"

namespace lora {
namespace {

Ops& ops() { return cpu_ops(); }

std::vector<float> randn(Rng& rng, int64_t n, float scale) {
  std::vector<float> v(static_cast<size_t>(n));
  for (auto& x : v) x = scale * (2.0f * rng.uniform() - 1.0f) * (1.0f + 3.0f * rng.uniform() * rng.uniform());
  return v;
}

// A quantized (out, in) weight and its exact dequantization.
struct QWeight {
  std::vector<uint8_t> blocks;
  std::vector<float> deq;
  Tensor q, f;
  QWeight(DType t, int64_t out, int64_t in, Rng& rng) {
    const std::vector<float> src = randn(rng, out * in, 0.05f);
    blocks.resize(size_t(dtype_nbytes(t, out * in)));
    for (int64_t r = 0; r < out; ++r)
      quant_quantize_row(t, src.data() + r * in, blocks.data() + dtype_nbytes(t, r * in), in);
    deq.resize(size_t(out * in));
    quant_dequantize(t, blocks.data(), deq.data(), out * in);
    q = tensor_view(blocks.data(), t, {out, in});
    f = tensor_view(deq.data(), DTYPE_F32, {out, in});
  }
};

double max_rel(const std::vector<float>& got, const std::vector<float>& want) {
  double m = 0, scale = 0;
  for (float w : want) scale = std::max(scale, double(std::fabs(w)));
  for (size_t i = 0; i < got.size(); ++i) m = std::max(m, double(std::fabs(got[i] - want[i])));
  return m / std::max(scale, 1e-30);
}

const DType kTypes[] = {DTYPE_Q8_0, DTYPE_Q4_0, DTYPE_Q4_1, DTYPE_Q5_0, DTYPE_Q5_1, DTYPE_Q4_K, DTYPE_Q5_K, DTYPE_Q6_K};

TEST(QloraOps, LinearForwardAndBackwardMatchDequantizedWeights) {
  Rng rng(7);
  for (DType t : kTypes) {
    SCOPED_TRACE(dtype_name(t));
    const int64_t in = dtype_block_elems(t) == 256 ? 512 : 96, out = 70;
    QWeight w(t, out, in, rng);
    for (int64_t n : {int64_t(1), int64_t(5), int64_t(33)}) {
      SCOPED_TRACE(n);
      std::vector<float> x = randn(rng, n * in, 1.0f), dy = randn(rng, n * out, 1.0f);
      std::vector<float> yq(size_t(n * out)), yf(size_t(n * out)), dxq(size_t(n * in), 0.5f), dxf(size_t(n * in), 0.5f);
      Tensor X = tensor_view(x.data(), DTYPE_F32, {n, in}), DY = tensor_view(dy.data(), DTYPE_F32, {n, out});
      Tensor YQ = tensor_view(yq.data(), DTYPE_F32, {n, out}), YF = tensor_view(yf.data(), DTYPE_F32, {n, out});
      ops().linear_fwd(X, w.q, nullptr, YQ);
      ops().linear_fwd(X, w.f, nullptr, YF);
      EXPECT_LE(max_rel(yq, yf), tol::kQuantLinearVsF32);
      Tensor DXQ = tensor_view(dxq.data(), DTYPE_F32, {n, in}), DXF = tensor_view(dxf.data(), DTYPE_F32, {n, in});
      ops().linear_bwd(X, w.q, DY, &DXQ, /*dx_accumulate=*/true, nullptr, nullptr, nullptr, nullptr);
      ops().linear_bwd(X, w.f, DY, &DXF, /*dx_accumulate=*/true, nullptr, nullptr, nullptr, nullptr);
      EXPECT_LE(max_rel(dxq, dxf), tol::kQuantLinearVsF32);
    }
  }
}

TEST(QloraOps, DoraOnQuantizedWeightsMatchesDequantized) {
  Rng rng(11);
  const int64_t in = 256, out = 48, r = 4, n = 6;
  QWeight w(DTYPE_Q4_K, out, in, rng);
  std::vector<float> a = randn(rng, in * r, 0.1f), b = randn(rng, r * out, 0.1f), m(static_cast<size_t>(out));
  for (auto& v : m) v = 0.5f + rng.uniform();
  std::vector<float> x = randn(rng, n * in, 1.0f);
  LoraOperand lo;
  lo.a = tensor_view(a.data(), DTYPE_F32, {in, r});
  lo.b = tensor_view(b.data(), DTYPE_F32, {r, out});
  lo.m = tensor_view(m.data(), DTYPE_F32, {out});
  lo.scale = 2.0f;
  std::vector<float> yq(size_t(n * out)), yf(size_t(n * out));
  Tensor X = tensor_view(x.data(), DTYPE_F32, {n, in});
  Tensor YQ = tensor_view(yq.data(), DTYPE_F32, {n, out}), YF = tensor_view(yf.data(), DTYPE_F32, {n, out});
  ops().linear_lora_fwd(X, w.q, nullptr, &lo, nullptr, YQ);
  ops().linear_lora_fwd(X, w.f, nullptr, &lo, nullptr, YF);
  EXPECT_LE(max_rel(yq, yf), tol::kQuantLinearVsF32);
}

TEST(QloraOps, EmbeddingRowsAreDequantizedExactly) {
  Rng rng(3);
  for (DType t : kTypes) {
    SCOPED_TRACE(dtype_name(t));
    const int64_t V = 37, C = dtype_block_elems(t) == 256 ? 256 : 64;
    QWeight table(t, V, C, rng);
    const std::vector<int32_t> ids = {0, 36, 5, 5, 17};
    std::vector<float> got(ids.size() * size_t(C), NAN);
    Tensor out = tensor_view(got.data(), DTYPE_F32, {int64_t(ids.size()), C});
    ops().embedding_fwd(ids.data(), int64_t(ids.size()), table.q, out);
    for (size_t i = 0; i < ids.size(); ++i)
      ASSERT_EQ(0, std::memcmp(got.data() + i * size_t(C), table.deq.data() + size_t(ids[i]) * size_t(C), size_t(C) * 4))
          << "row " << i;
  }
}

TEST(QloraLoad, QuantizeAtLoadFollowsLlamaCppTypesAndReferenceBytes) {
  for (bool tied : {false, true}) {
    SCOPED_TRACE(tied ? "tied" : "untied");
    const std::string dir = test::write_kquant_llama(tied ? "qlora_tied" : "qlora_untied", tied);
    ModelLoadOptions lo;
    lo.compute_dtype = DTYPE_BF16;
    const Model src = model_load(dir, lo);
    lo.quantize = DTYPE_Q4_K;
    const Model q = model_load(dir, lo);
    auto check = [&](const Tensor& s, const Tensor& t, DType want, const char* what) {
      SCOPED_TRACE(what);
      ASSERT_EQ(t.dtype, want) << dtype_name(t.dtype);
      const int64_t rows = s.dim(0), cols = s.dim(1);
      std::vector<float> row(static_cast<size_t>(cols));
      std::vector<uint8_t> blk(size_t(dtype_nbytes(want, cols)));
      for (int64_t r = 0; r < rows; ++r) {
        quant_dequantize_row(s.dtype, static_cast<const char*>(s.data) + dtype_nbytes(s.dtype, r * cols), row.data(), cols);
        quant_quantize_row(want, row.data(), blk.data(), cols);
        ASSERT_EQ(0, std::memcmp(blk.data(), static_cast<const char*>(t.data) + dtype_nbytes(want, r * cols), blk.size()))
            << "row " << r;
      }
    };
    for (size_t l = 0; l < src.layers.size(); ++l) {
      check(src.layers[l].wq, q.layers[l].wq, DTYPE_Q4_K, "wq");
      check(src.layers[l].wk, q.layers[l].wk, DTYPE_Q4_K, "wk");
      check(src.layers[l].w_up, q.layers[l].w_up, DTYPE_Q4_K, "w_up");
      check(src.layers[l].w_down, q.layers[l].w_down, DTYPE_Q5_0, "w_down (416 columns: Q4_K -> Q5_0 as llama.cpp)");
      EXPECT_EQ(q.layers[l].attn_norm.dtype, DTYPE_F32);
    }
    // llama.cpp gives the output projection (or, tied, the shared embedding) Q6_K.
    check(src.lm_head, q.lm_head, DTYPE_Q6_K, "lm_head");
    check(src.tok_embd, q.tok_embd, tied ? DTYPE_Q6_K : DTYPE_Q4_K, "tok_embd");
    if (tied) {
      EXPECT_EQ(q.lm_head.data, q.tok_embd.data);
    }
  }
}

TEST(QloraLoad, TypeRuleAndBadType) {
  EXPECT_EQ(quant_type_for_weight(DTYPE_Q8_0, true, 256, DTYPE_BF16), DTYPE_Q8_0);
  EXPECT_EQ(quant_type_for_weight(DTYPE_Q4_0, true, 256, DTYPE_BF16), DTYPE_Q6_K);
  EXPECT_EQ(quant_type_for_weight(DTYPE_Q4_0, true, 96, DTYPE_BF16), DTYPE_Q8_0);  // Q6_K -> Q8_0 on 96 columns
  EXPECT_EQ(quant_type_for_weight(DTYPE_Q4_K, false, 64, DTYPE_BF16), DTYPE_Q5_0);
  EXPECT_EQ(quant_type_for_weight(DTYPE_Q5_K, false, 64, DTYPE_BF16), DTYPE_Q5_1);
  EXPECT_EQ(quant_type_for_weight(DTYPE_Q4_0, false, 172, DTYPE_F32), DTYPE_F32);
  ModelLoadOptions lo;
  lo.quantize = DTYPE_BF16;
  EXPECT_THROW(model_load(test::write_kquant_llama("qlora_bad", false), lo), Error);
}

}  // namespace
}  // namespace lora
