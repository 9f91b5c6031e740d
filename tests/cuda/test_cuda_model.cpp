// The whole model on the CUDA backend (llm.c's test_gpt2 on the GPU):
//  - training golden: the tiny random Llama's loss, logits and every LoRA/DoRA gradient against
//    transformers + PEFT and mlx-lm (tests/fixtures/golden_train, the CPU golden test's fixtures) with
//    F32 weights on the device (exact f32 GEMMs: the CPU's tolerances) and with BF16 weights (the
//    production path: bf16 tolerances);
//  - several optimizer steps (Adam, dropout 0.1, gradient checkpointing on and off, full fine-tuning)
//    on the GPU against the same steps on the CPU backend;
//  - inference: LlamaSession prefill and decode logits on the GPU against the CPU backend.
// Skips without a GPU.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "core/device_mem.h"
#include "core/error.h"
#include "cpu/cpu_ops.h"
#include "cuda/cuda_ops.h"
#include "cuda/device.h"
#include "io/safetensors.h"
#include "model/llama.h"
#include "model/llama_train.h"
#include "model/lora.h"
#include "test_util.h"
#include "cuda_test_util.h"
#include "model_test_util.h"
#include "tolerances.h"
#include "train/optimizer.h"

namespace lora {
namespace {

#define LORA_REQUIRE_GPU_OPS() \
  do {                     \
    LORA_REQUIRE_CUDA();     \
    gpu(); /* opens the device and registers its memory functions */ \
  } while (0)

Ops& gpu() {
  static std::unique_ptr<Ops> ops = cuda_ops_create(0);
  return *ops;
}

const Model& tiny(const char* name = "llama_untied") {
  static std::map<std::string, Model> cache;
  auto it = cache.find(name);
  if (it == cache.end()) it = cache.emplace(name, model_load(test::fixture(std::string("golden/") + name))).first;
  return it->second;
}

const float* f32_of(const SafetensorsFile& f, const std::string& name, int64_t numel) {
  const SafeTensorInfo* t = f.find(name);
  EXPECT_TRUE(t) << name;
  if (!t) return nullptr;
  EXPECT_EQ(t->numel(), numel) << name;
  return static_cast<const float*>(t->data);
}

// |a - b| / max|b| over a tensor.
double rel_err(const std::vector<float>& got, const float* want, size_t n) {
  double wmax = 0, e = 0;
  for (size_t i = 0; i < n; ++i) wmax = std::max(wmax, double(std::abs(want[i])));
  for (size_t i = 0; i < n; ++i) e = std::max(e, std::abs(double(got[i]) - want[i]));
  return e / (wmax + 1e-6);
}

void golden_on_gpu(const char* file, FineTuneType type, DType wtype, double tol_logits, double tol_loss,
                   double tol_grad) {
  auto f = SafetensorsFile::open(test::fixture(std::string("golden_train/") + file));
  const Model& host = tiny();
  const ModelConfig& c = host.cfg;
  LoraConfig lc;
  lc.type = type;
  lc.rank = std::stoi(f->metadata().at("rank"));
  lc.scale = std::stod(f->metadata().at("scale"));
  lc.keys = {LIN_Q, LIN_K, LIN_V, LIN_O, LIN_GATE, LIN_UP, LIN_DOWN};
  lc.num_layers = -1;
  Adapter a = adapter_create(host, lc, 0);
  for (auto& p : a.params) {
    const float* v = f32_of(*f, p.name, p.value.t.numel());
    ASSERT_TRUE(v);
    std::memcpy(p.value.t.data, v, size_t(p.value.t.nbytes()));
  }
  adapter_to_device(a, DEVICE_CUDA);
  const Model dm = model_to_device(host, DEVICE_CUDA, wtype);
  const SafeTensorInfo* in = f->find("inputs");
  const int64_t B = in->shape[0], T = in->shape[1];
  TrainBatchView bv{B, T, static_cast<const int32_t*>(in->data), static_cast<const int32_t*>(f->find("targets")->data),
                    f32_of(*f, "mask", B * T)};
  TrainSessionOptions o;
  o.max_batch = B;
  o.max_len = T;
  TrainSession s(dm, a, gpu(), o);
  std::vector<float> logits(size_t(B * T * c.vocab));
  s.logits(bv, logits.data());
  const float* want_logits = f32_of(*f, "logits", B * T * c.vocab);
  double worst_logit = 0;
  for (size_t i = 0; i < logits.size(); ++i)
    worst_logit = std::max(worst_logit, std::abs(double(logits[i]) - want_logits[i]) / (1 + std::abs(want_logits[i])));
  EXPECT_LE(worst_logit, tol_logits);

  a.zero_grad();
  const LossResult r = s.loss_and_grad(bv, 0);
  const double want_loss = std::stod(f->metadata().at("loss"));
  EXPECT_NEAR(r.mean(), want_loss, tol_loss * want_loss);
  double worst = 0;
  for (const auto& p : a.params) {
    const float* want = f32_of(*f, "grad." + p.name, p.grad.t.numel());
    ASSERT_TRUE(want);
    const double e = rel_err(tensor_read_f32(p.grad.t), want, size_t(p.grad.t.numel()));
    worst = std::max(worst, e);
    EXPECT_LE(e, tol_grad) << p.name;
  }
  std::printf("  measured: %s %s weights: loss %.7f (peft %.7f) logits %.2e grads %.2e\n", file, dtype_name(wtype),
              r.mean(), want_loss, worst_logit, worst);
}

TEST(CudaModel, GoldenLoraF32Weights) {
  LORA_REQUIRE_GPU_OPS();
  golden_on_gpu("lora.safetensors", FT_LORA, DTYPE_F32, tol::kGoldenLogits, tol::kGoldenTrainLoss,
                tol::kGoldenTrainGrad);
}
TEST(CudaModel, GoldenDoraF32Weights) {
  LORA_REQUIRE_GPU_OPS();
  golden_on_gpu("dora.safetensors", FT_DORA, DTYPE_F32, tol::kGoldenLogits, tol::kGoldenTrainLoss,
                tol::kGoldenTrainGrad);
}
TEST(CudaModel, GoldenLoraBf16Weights) {
  LORA_REQUIRE_GPU_OPS();
  golden_on_gpu("lora.safetensors", FT_LORA, DTYPE_BF16, tol::kCudaBf16Logits, tol::kCudaBf16Loss,
                tol::kCudaBf16Grad);
}
TEST(CudaModel, GoldenDoraBf16Weights) {
  LORA_REQUIRE_GPU_OPS();
  golden_on_gpu("dora.safetensors", FT_DORA, DTYPE_BF16, tol::kCudaBf16Logits, tol::kCudaBf16Loss,
                tol::kCudaBf16Grad);
}

using test::make_train_batch;

// Steps of Adam on CPU and GPU from the same initial adapter; losses per step and the final params.
void steps_cpu_vs_gpu(FineTuneType type, double dropout, bool ckpt, int steps) {
  const Model& host = tiny();
  LoraConfig lc;
  lc.type = type;
  lc.rank = 4;
  lc.scale = 2.0;
  lc.dropout = dropout;
  lc.keys = {LIN_Q, LIN_K, LIN_V, LIN_O, LIN_GATE, LIN_UP, LIN_DOWN};
  lc.num_layers = 1;
  Adapter ac = adapter_create(host, lc, 7), ag = adapter_create(host, lc, 7);
  // B starts at zero: give it values so every path carries signal from the first step.
  for (size_t i = 0; i < ac.params.size(); ++i)
    if (ac.params[i].name.ends_with("lora_b"))
      for (int64_t j = 0; j < ac.params[i].value.t.numel(); ++j)
        ac.params[i].value.t.f32()[j] = ag.params[i].value.t.f32()[j] = 0.01f * float((j * 7) % 13 - 6);
  adapter_to_device(ag, DEVICE_CUDA);
  const Model dm = model_to_device(host, DEVICE_CUDA, DTYPE_F32);
  TrainSessionOptions o;
  o.max_batch = 3;
  o.max_len = 19;
  o.grad_checkpoint = ckpt;
  o.dropout_seed = 99;
  TrainSession sc(host, ac, cpu_ops(), o), sg(dm, ag, gpu(), o);
  Optimizer oc(optimizer_defaults(OPT_ADAM), ac), og(optimizer_defaults(OPT_ADAM), ag);
  double worst_loss = 0;
  for (int s = 0; s < steps; ++s) {
    const test::TrainBatch b = make_train_batch(3, 19 - s, host.cfg.vocab, 1234u + uint32_t(s));
    ac.zero_grad();
    ag.zero_grad();
    const double lc_ = sc.loss_and_grad(b.view(), s).mean();
    const double lg_ = sg.loss_and_grad(b.view(), s).mean();
    worst_loss = std::max(worst_loss, std::abs(lc_ - lg_) / std::abs(lc_));
    EXPECT_NEAR(lg_, lc_, tol::kCudaStepsLoss * std::abs(lc_)) << "step " << s;
    oc.update(ac, 1e-2f);
    og.update(ag, 1e-2f, gpu());
  }
  double worst_param = 0;
  for (size_t i = 0; i < ac.params.size(); ++i) {
    const double e = rel_err(tensor_read_f32(ag.params[i].value.t), ac.params[i].value.t.f32(),
                             size_t(ac.params[i].value.t.numel()));
    worst_param = std::max(worst_param, e);
    EXPECT_LE(e, tol::kCudaStepsParams) << ac.params[i].name;
  }
  std::printf("  measured: %s dropout %.1f ckpt %d, %d steps: loss %.2e params %.2e\n", fine_tune_type_name(type),
              dropout, int(ckpt), steps, worst_loss, worst_param);
}

TEST(CudaModel, AdamStepsLoraMatchCpu) {
  LORA_REQUIRE_GPU_OPS();
  steps_cpu_vs_gpu(FT_LORA, 0.0, false, 5);
}
TEST(CudaModel, AdamStepsLoraDropoutCheckpointMatchCpu) {
  LORA_REQUIRE_GPU_OPS();
  steps_cpu_vs_gpu(FT_LORA, 0.1, true, 5);
}
TEST(CudaModel, AdamStepsDoraMatchCpu) {
  LORA_REQUIRE_GPU_OPS();
  steps_cpu_vs_gpu(FT_DORA, 0.0, true, 5);
}
TEST(CudaModel, AdamStepsFullMatchCpu) {
  LORA_REQUIRE_GPU_OPS();
  steps_cpu_vs_gpu(FT_FULL, 0.0, false, 3);
}

// Gradient checkpointing recomputes the same numbers: gradients bit for bit equal on the GPU too.
TEST(CudaModel, CheckpointGradientsBitExact) {
  LORA_REQUIRE_GPU_OPS();
  const Model& host = tiny();
  const Model dm = model_to_device(host, DEVICE_CUDA, DTYPE_BF16);
  LoraConfig lc;
  lc.num_layers = -1;
  lc.dropout = 0.1;
  std::vector<std::vector<float>> grads[2];
  for (int ck = 0; ck < 2; ++ck) {
    Adapter a = adapter_create(host, lc, 3);
    adapter_to_device(a, DEVICE_CUDA);
    TrainSessionOptions o;
    o.max_batch = 2;
    o.max_len = 16;
    o.grad_checkpoint = ck;
    TrainSession s(dm, a, gpu(), o);
    const test::TrainBatch b = make_train_batch(2, 16, host.cfg.vocab, 5);
    a.zero_grad();
    s.loss_and_grad(b.view(), 3);
    for (auto& p : a.params) grads[ck].push_back(tensor_read_f32(p.grad.t));
  }
  ASSERT_EQ(grads[0].size(), grads[1].size());
  for (size_t i = 0; i < grads[0].size(); ++i) EXPECT_EQ(grads[0][i], grads[1][i]) << i;
}

// A recorded step (CUDA graph) replays exactly what the eager step computed: the same batch three times
// (eager, recorded, replayed) gives bit-identical gradients and losses.
TEST(CudaModel, GraphReplayEqualsEagerStep) {
  LORA_REQUIRE_GPU_OPS();
  const Model& host = tiny();
  const Model dm = model_to_device(host, DEVICE_CUDA, DTYPE_BF16);
  LoraConfig lc;
  lc.num_layers = -1;
  Adapter a = adapter_create(host, lc, 3);
  adapter_to_device(a, DEVICE_CUDA);
  TrainSessionOptions o;
  o.max_batch = 2;
  o.max_len = 40;
  o.grad_checkpoint = true;
  TrainSession s(dm, a, gpu(), o);
  const test::TrainBatch b = make_train_batch(2, 21, host.cfg.vocab, 8);
  std::vector<std::vector<float>> first;
  double loss0 = 0;
  for (int rep = 0; rep < 3; ++rep) {
    a.zero_grad();
    const double loss = s.loss_and_grad(b.view(), 0).mean();
    if (rep == 0) {
      loss0 = loss;
      for (auto& p : a.params) first.push_back(tensor_read_f32(p.grad.t));
      continue;
    }
    EXPECT_EQ(loss, loss0) << "rep " << rep;
    for (size_t i = 0; i < a.params.size(); ++i) EXPECT_EQ(tensor_read_f32(a.params[i].grad.t), first[i]) << rep;
  }
}

// Inference: prefill of a prompt then a few decode steps, GPU vs CPU logits.
void infer_cpu_vs_gpu(const char* name, DType wtype, double tol) {
  const Model& host = tiny(name);
  const Model dm = model_to_device(host, DEVICE_CUDA, wtype);
  LlamaSession sc(host, cpu_ops(), 64, 16), sg(dm, gpu(), 64, 16);
  const int64_t V = host.cfg.vocab;
  std::vector<int32_t> prompt;
  for (int i = 0; i < 21; ++i) prompt.push_back(int32_t((i * 37 + 11) % V));  // 21 > max_batch: split prefill
  std::vector<float> lc(size_t(21 * V)), lg(size_t(21 * V));
  sc.forward(prompt.data(), 21, lc.data(), true);
  sg.forward(prompt.data(), 21, lg.data(), true);
  double worst = 0;
  for (size_t i = 0; i < lc.size(); ++i) worst = std::max(worst, std::abs(double(lc[i]) - lg[i]) / (1 + std::abs(lc[i])));
  for (int step = 0; step < 5; ++step) {
    const int32_t t = int32_t((step * 101 + 3) % V);
    sc.forward(&t, 1, lc.data());
    sg.forward(&t, 1, lg.data());
    for (int64_t i = 0; i < V; ++i) worst = std::max(worst, std::abs(double(lc[size_t(i)]) - lg[size_t(i)]) / (1 + std::abs(lc[size_t(i)])));
  }
  EXPECT_LE(worst, tol) << name << " " << dtype_name(wtype);
  std::printf("  measured: %s %s weights: worst scaled logit difference %.2e\n", name, dtype_name(wtype), worst);
}

TEST(CudaModel, InferenceF32MatchesCpu) {
  LORA_REQUIRE_GPU_OPS();
  infer_cpu_vs_gpu("llama_untied", DTYPE_F32, tol::kGoldenLogits);
  infer_cpu_vs_gpu("llama_tied", DTYPE_F32, tol::kGoldenLogits);
  infer_cpu_vs_gpu("qwen2_bias", DTYPE_F32, tol::kGoldenLogits);
}
TEST(CudaModel, InferenceBf16MatchesCpu) {
  LORA_REQUIRE_GPU_OPS();
  infer_cpu_vs_gpu("llama_untied", DTYPE_BF16, tol::kCudaBf16Logits);
}

// Bad input is caught on the host before anything reaches the device.
TEST(CudaModel, BadTokenIdIsAnError) {
  LORA_REQUIRE_GPU_OPS();
  const Model dm = model_to_device(tiny(), DEVICE_CUDA, DTYPE_BF16);
  LlamaSession s(dm, gpu(), 16, 4);
  const int32_t bad = int32_t(tiny().cfg.vocab);
  std::vector<float> l(size_t(tiny().cfg.vocab));
  EXPECT_THROW(s.forward(&bad, 1, l.data()), Error);
  EXPECT_EQ(s.cache().pos, 0);
}

}  // namespace
}  // namespace lora
