// Golden test of training against the real peers (tests/fixtures/golden_train, tools/gen_golden_train.py):
// on the tiny random Llama with a given LoRA/DoRA adapter and one masked batch, our loss, logits and
// every adapter gradient against transformers + PEFT (float32, CPU) and against mlx-lm's own
// LoRALinear/DoRALinear — on the CPU backend and on the reference backend.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "cpu/cpu_ops.h"
#include "cpu/reference.h"
#include "io/safetensors.h"
#include "model/llama_train.h"
#include "model/lora.h"
#include "test_util.h"
#include "tolerances.h"

namespace lora {
namespace {

const Model& tiny() {
  static Model m = model_load(test::fixture("golden/llama_untied"));
  return m;
}

const float* f32_of(const SafetensorsFile& f, const std::string& name, int64_t numel) {
  const SafeTensorInfo* t = f.find(name);
  EXPECT_TRUE(t) << name;
  if (!t) return nullptr;
  EXPECT_EQ(t->dtype, DTYPE_F32) << name;
  EXPECT_EQ(t->numel(), numel) << name;
  return static_cast<const float*>(t->data);
}

void check_golden(const char* file, FineTuneType type, Ops& ops, const char* backend) {
  auto f = SafetensorsFile::open(test::fixture(std::string("golden_train/") + file));
  const ModelConfig& c = tiny().cfg;
  LoraConfig lc;
  lc.type = type;
  lc.rank = std::stoi(f->metadata().at("rank"));
  lc.scale = std::stod(f->metadata().at("scale"));
  lc.keys = {LIN_Q, LIN_K, LIN_V, LIN_O, LIN_GATE, LIN_UP, LIN_DOWN};
  lc.num_layers = -1;
  Adapter a = adapter_create(tiny(), lc, 0);
  for (auto& p : a.params) {
    const float* v = f32_of(*f, p.name, p.value.t.numel());
    ASSERT_TRUE(v);
    std::memcpy(p.value.t.data, v, size_t(p.value.t.nbytes()));
  }
  const SafeTensorInfo* in = f->find("inputs");
  ASSERT_TRUE(in && in->shape.size() == 2);
  const int64_t B = in->shape[0], T = in->shape[1];
  TrainBatchView bv{B, T, static_cast<const int32_t*>(in->data), static_cast<const int32_t*>(f->find("targets")->data),
                    f32_of(*f, "mask", B * T)};
  TrainSessionOptions o;
  o.max_batch = B;
  o.max_len = T;
  TrainSession s(tiny(), a, ops, o);

  std::vector<float> logits(size_t(B * T * c.vocab));
  s.logits(bv, logits.data());
  const float* want_logits = f32_of(*f, "logits", B * T * c.vocab);
  double worst_logit = 0;
  for (size_t i = 0; i < logits.size(); ++i)
    worst_logit = std::max(worst_logit, std::abs(double(logits[i]) - want_logits[i]) / (1 + std::abs(want_logits[i])));
  EXPECT_LE(worst_logit, tol::kGoldenLogits) << backend;

  a.zero_grad();
  const LossResult r = s.loss_and_grad(bv, 0);
  const double want_loss = std::stod(f->metadata().at("loss"));
  const double mlx_loss = std::stod(f->metadata().at("mlx_loss"));
  EXPECT_NEAR(r.mean(), want_loss, tol::kGoldenTrainLoss * want_loss) << backend;
  EXPECT_NEAR(r.mean(), mlx_loss, tol::kGoldenTrainLoss * mlx_loss) << backend;

  double worst[2] = {0, 0};
  for (const auto& p : a.params)
    for (int peer = 0; peer < 2; ++peer) {
      const float* want = f32_of(*f, (peer ? "mlx_grad." : "grad.") + p.name, p.grad.t.numel());
      ASSERT_TRUE(want);
      double wmax = 0;
      for (int64_t i = 0; i < p.grad.t.numel(); ++i) wmax = std::max(wmax, double(std::abs(want[i])));
      for (int64_t i = 0; i < p.grad.t.numel(); ++i) {
        const double err = std::abs(double(p.grad.t.f32()[i]) - want[i]) / (wmax + 1e-6);
        worst[peer] = std::max(worst[peer], err);
        if (!(err <= tol::kGoldenTrainGrad)) {
          ADD_FAILURE() << backend << " " << (peer ? "mlx " : "peft ") << p.name << "[" << i << "] got "
                        << p.grad.t.f32()[i] << " want " << want[i];
          break;
        }
      }
    }
  std::printf("  %s %s: loss %.7f (peft %.7f, mlx %.7f) logits %.2e grads vs peft %.2e vs mlx %.2e\n", file, backend,
              r.mean(), want_loss, mlx_loss, worst_logit, worst[0], worst[1]);
}

TEST(GoldenTrain, LoraCpu) { check_golden("lora.safetensors", FT_LORA, cpu_ops(), "cpu"); }
TEST(GoldenTrain, LoraReference) { check_golden("lora.safetensors", FT_LORA, reference_ops(), "reference"); }
TEST(GoldenTrain, DoraCpu) { check_golden("dora.safetensors", FT_DORA, cpu_ops(), "cpu"); }
TEST(GoldenTrain, DoraReference) { check_golden("dora.safetensors", FT_DORA, reference_ops(), "reference"); }

}  // namespace
}  // namespace lora
