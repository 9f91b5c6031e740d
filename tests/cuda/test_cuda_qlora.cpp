// QLoRA on the CUDA backend: weights kept in llama.cpp's blocks and dequantized to bf16 chunk by chunk
// right before each GEMM (CudaOps::dequant_chunk). The reference is the production BF16 path on the same
// values: a model whose weights are bf16(dequantize(blocks)) (what cuda_dequantize_bf16 produces), so
// the two runs feed identical bf16 operands to the same GEMMs and must agree to rounding noise:
//  - linear forward/backward (N = 1 GEMV and N > 1 GEMM) of a weight split into several chunks;
//  - whole-model training steps (LoRA and DoRA, checkpointing, recorded graphs) and inference;
//  - and QLoRA on the GPU against QLoRA on the CPU backend (the first step's loss, bf16 tolerance).
// Skips without a GPU.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "core/device_mem.h"
#include "core/quant.h"
#include "core/rng.h"
#include "cpu/cpu_ops.h"
#include "cuda/cuda_ops.h"
#include "cuda_test_util.h"
#include "model_test_util.h"
#include "model/llama.h"
#include "model/llama_train.h"
#include "model/lora.h"
#include "test_util.h"
#include "tolerances.h"
#include "train/optimizer.h"

namespace lora {
namespace {

Ops& gpu() {
  static std::unique_ptr<Ops> ops = cuda_ops_create(0);
  return *ops;
}
#define LORA_REQUIRE_GPU_OPS() \
  do {                         \
    LORA_REQUIRE_CUDA();       \
    gpu();                     \
  } while (0)

double max_rel(const std::vector<float>& got, const std::vector<float>& want) {
  double m = 0, scale = 0;
  for (float w : want) scale = std::max(scale, double(std::fabs(w)));
  for (size_t i = 0; i < got.size(); ++i) m = std::max(m, double(std::fabs(got[i] - want[i])));
  return m / std::max(scale, 1e-30);
}

std::vector<float> rnd(Rng& rng, int64_t n, float s) {
  std::vector<float> v(static_cast<size_t>(n));
  for (auto& x : v) x = s * (2.0f * rng.uniform() - 1.0f);
  return v;
}

Tensor upload(const void* p, DType t, std::initializer_list<int64_t> shape, std::vector<std::shared_ptr<void>>& keep) {
  Tensor h = tensor_view(const_cast<void*>(p), t, shape);
  std::shared_ptr<void> mem = device_alloc(DEVICE_CUDA, size_t(h.nbytes()));
  device_copy(mem.get(), DEVICE_CUDA, p, DEVICE_CPU, size_t(h.nbytes()));
  keep.push_back(mem);
  return tensor_view(mem.get(), t, shape, DEVICE_CUDA);
}

// A (out, in) weight larger than one dequantization chunk (12 Mi elements), in Q4_K and Q8_0: the quantized
// linear (chunks of rows) against one BF16 GEMM on the dequantized weight.
TEST(CudaQlora, ChunkedLinearMatchesBf16Weights) {
  LORA_REQUIRE_GPU_OPS();
  Rng rng(5);
  const int64_t out = 6400, in = 2048;  // 13.1 Mi elements: two chunks
  const std::vector<float> src = rnd(rng, out * in, 0.05f);
  for (DType t : {DTYPE_Q4_K, DTYPE_Q8_0, DTYPE_Q6_K}) {
    SCOPED_TRACE(dtype_name(t));
    std::vector<uint8_t> q(size_t(dtype_nbytes(t, out * in)));
    for (int64_t r = 0; r < out; ++r) quant_quantize_row(t, src.data() + r * in, q.data() + dtype_nbytes(t, r * in), in);
    std::vector<float> deq(size_t(out * in));
    quant_dequantize(t, q.data(), deq.data(), out * in);
    std::vector<uint16_t> wb(deq.size());
    for (size_t i = 0; i < deq.size(); ++i) wb[i] = f32_to_bf16(deq[i]);
    std::vector<std::shared_ptr<void>> keep;
    const Tensor wq = upload(q.data(), t, {out, in}, keep), wbf = upload(wb.data(), DTYPE_BF16, {out, in}, keep);
    for (int64_t n : {int64_t(1), int64_t(7)}) {
      SCOPED_TRACE(n);
      const std::vector<float> x = rnd(rng, n * in, 1.0f), dy = rnd(rng, n * out, 1.0f);
      const Tensor X = upload(x.data(), DTYPE_F32, {n, in}, keep), DY = upload(dy.data(), DTYPE_F32, {n, out}, keep);
      std::vector<float> zeros_out(size_t(n * out), NAN), zeros_in(size_t(n * in), 0.25f);
      Tensor Y1 = upload(zeros_out.data(), DTYPE_F32, {n, out}, keep), Y2 = upload(zeros_out.data(), DTYPE_F32, {n, out}, keep);
      gpu().linear_fwd(X, wq, nullptr, Y1);
      gpu().linear_fwd(X, wbf, nullptr, Y2);
      const double ef = max_rel(tensor_read_f32(Y1), tensor_read_f32(Y2));
      EXPECT_LE(ef, tol::kCudaQuantVsBf16) << "forward";
      Tensor D1 = upload(zeros_in.data(), DTYPE_F32, {n, in}, keep), D2 = upload(zeros_in.data(), DTYPE_F32, {n, in}, keep);
      gpu().linear_bwd(X, wq, DY, &D1, true, nullptr, nullptr, nullptr, nullptr);
      gpu().linear_bwd(X, wbf, DY, &D2, true, nullptr, nullptr, nullptr, nullptr);
      const double eb = max_rel(tensor_read_f32(D1), tensor_read_f32(D2));
      EXPECT_LE(eb, tol::kCudaQuantVsBf16) << "dx";
      std::printf("  measured: %s N=%lld forward %.2e dx %.2e\n", dtype_name(t), (long long)n, ef, eb);
    }
  }
}

// The host model with every quantized tensor dequantized to f32 (the same values the GPU computes with).
Model dequantized(const Model& q) {
  Model m = q;
  auto deq = [&](Tensor& t) {
    if (!t.defined() || !dtype_is_quant(t.dtype)) return;
    OwnedTensor o = tensor_alloc(DTYPE_F32, t.shape.data(), t.ndim);
    quant_dequantize(t.dtype, t.data, o.t.f32(), t.numel());
    m.storage.push_back(o.buf);
    t = o.t;
  };
  const bool tied = q.lm_head.data == q.tok_embd.data;
  deq(m.tok_embd);
  for (auto& l : m.layers)
    for (Tensor* t : {&l.wq, &l.wk, &l.wv, &l.wo, &l.w_gate, &l.w_up, &l.w_down}) deq(*t);
  if (tied) m.lm_head = m.tok_embd;
  else deq(m.lm_head);
  return m;
}

// The reference device model: linears bf16(dequantized) (model_to_device's rounding equals the dequant
// kernel's), the embedding table in f32 (the quantized gather yields exact f32 rows).
Model reference_on_gpu(const Model& deq) {
  Model r = model_to_device(deq, DEVICE_CUDA, DTYPE_BF16);
  const Model f = model_to_device(deq, DEVICE_CUDA, DTYPE_F32);
  r.tok_embd = f.tok_embd;
  r.storage.insert(r.storage.end(), f.storage.begin(), f.storage.end());
  return r;
}

// Adam steps with the quantized model on the GPU, the bf16 reference on the GPU and the quantized model on
// the CPU, from the same adapter.
void qlora_steps(DType qt, FineTuneType type, bool tied) {
  ModelLoadOptions lo;
  lo.quantize = qt;
  const Model host = model_load(test::write_kquant_llama(tied ? "cuda_qlora_tied" : "cuda_qlora_untied", tied, 9), lo);
  ASSERT_TRUE(dtype_is_quant(host.layers[0].wq.dtype));
  const Model deq = dequantized(host);
  const Model gq = model_to_device(host, DEVICE_CUDA, DTYPE_BF16);
  ASSERT_EQ(gq.layers[0].wq.dtype, host.layers[0].wq.dtype);  // kept in blocks on the device
  const Model gr = reference_on_gpu(deq);
  LoraConfig lc;
  lc.type = type;
  lc.rank = 4;
  lc.scale = 2.0;
  lc.keys = {LIN_Q, LIN_K, LIN_V, LIN_O, LIN_GATE, LIN_UP, LIN_DOWN};
  lc.num_layers = -1;
  Adapter ac = adapter_create(host, lc, 3), aq = adapter_create(host, lc, 3), ar = adapter_create(deq, lc, 3);
  for (size_t i = 0; i < ac.params.size(); ++i)
    if (ac.params[i].name.ends_with("lora_b"))
      for (int64_t j = 0; j < ac.params[i].value.t.numel(); ++j)
        ac.params[i].value.t.f32()[j] = aq.params[i].value.t.f32()[j] = ar.params[i].value.t.f32()[j] =
            0.01f * float((j * 7) % 13 - 6);
  adapter_to_device(aq, DEVICE_CUDA);
  adapter_to_device(ar, DEVICE_CUDA);
  TrainSessionOptions o;
  o.max_batch = 2;
  o.max_len = 40;
  o.grad_checkpoint = true;
  TrainSession sc(host, ac, cpu_ops(), o), sq(gq, aq, gpu(), o), sr(gr, ar, gpu(), o);
  Optimizer oc(optimizer_defaults(OPT_ADAM), ac), oq(optimizer_defaults(OPT_ADAM), aq), orf(optimizer_defaults(OPT_ADAM), ar);
  double worst_ref = 0, worst_cpu = 0, first_cpu = 0;
  for (int s = 0; s < 4; ++s) {
    const test::TrainBatch b = test::make_train_batch(2, 21, host.cfg.vocab, 77u + uint32_t(s % 2));  // shapes repeat: graphs replay
    ac.zero_grad();
    aq.zero_grad();
    ar.zero_grad();
    const double lcpu = sc.loss_and_grad(b.view(), s).mean();
    const double lq = sq.loss_and_grad(b.view(), s).mean();
    const double lr = sr.loss_and_grad(b.view(), s).mean();
    worst_ref = std::max(worst_ref, std::abs(lq - lr) / std::abs(lr));
    worst_cpu = std::max(worst_cpu, std::abs(lq - lcpu) / std::abs(lcpu));
    EXPECT_NEAR(lq, lr, tol::kCudaQuantVsBf16 * std::abs(lr)) << "step " << s;
    // Against the CPU (f32 throughout) only before any update: Adam turns the bf16 rounding of tiny gradient
    // entries into full-size steps, so later losses drift apart (reported, not held).
    if (s == 0) {
      first_cpu = std::abs(lq - lcpu) / std::abs(lcpu);
      EXPECT_NEAR(lq, lcpu, tol::kCudaBf16Loss * std::abs(lcpu));
    }
    for (size_t i = 0; i < aq.params.size(); ++i) {
      const double e = max_rel(tensor_read_f32(aq.params[i].grad.t), tensor_read_f32(ar.params[i].grad.t));
      EXPECT_LE(e, tol::kCudaQuantVsBf16) << aq.params[i].name << " step " << s;
    }
    oc.update(ac, 1e-2f);
    oq.update(aq, 1e-2f, gpu());
    orf.update(ar, 1e-2f, gpu());
  }
  std::printf("  measured: %s %s %s: loss vs bf16 reference %.2e; vs CPU QLoRA %.2e at step 0, %.2e worst of 4 steps\n",
              dtype_name(qt), fine_tune_type_name(type), tied ? "tied" : "untied", worst_ref, first_cpu, worst_cpu);

  // Inference: prefill + recorded decode, quantized vs reference on the GPU.
  LlamaSession iq(gq, gpu(), 64, 16), ir(gr, gpu(), 64, 16);
  const int64_t V = host.cfg.vocab;
  std::vector<int32_t> prompt;
  for (int i = 0; i < 19; ++i) prompt.push_back(int32_t((i * 37 + 11) % V));
  std::vector<float> a(size_t(19 * V)), r(size_t(19 * V));
  iq.forward(prompt.data(), 19, a.data(), true);
  ir.forward(prompt.data(), 19, r.data(), true);
  double worst = max_rel(a, r);
  for (int step = 0; step < 4; ++step) {
    const int32_t t = int32_t((step * 29 + 5) % V);
    std::vector<float> la(static_cast<size_t>(V)), lr(static_cast<size_t>(V));
    iq.forward(&t, 1, la.data());
    ir.forward(&t, 1, lr.data());
    worst = std::max(worst, max_rel(la, lr));
  }
  EXPECT_LE(worst, tol::kCudaQuantVsBf16) << "inference";
  std::printf("  measured: inference logits vs bf16 reference %.2e\n", worst);
}

TEST(CudaQlora, Q4KLoraStepsMatchBf16ReferenceAndCpu) {
  LORA_REQUIRE_GPU_OPS();
  qlora_steps(DTYPE_Q4_K, FT_LORA, false);
}
TEST(CudaQlora, Q8DoraTiedStepsMatchBf16ReferenceAndCpu) {
  LORA_REQUIRE_GPU_OPS();
  qlora_steps(DTYPE_Q8_0, FT_DORA, true);
}

}  // namespace
}  // namespace lora
