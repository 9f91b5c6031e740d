// Parity with the real peer: transformers + PEFT (tools/peft_parity.py, run on the same machine first)
// against our TrainSession on the same bf16 model file, the same LoRA initialisation and the same
// batches: logits of batch 0 before training, then the loss of each of 10 Adam steps (torch's Adam
// bias-corrects: our Adam with bias_correction). Runs on the GPU when there is one, else on the CPU
// backend (the tiny shape, for a local check of the pipeline). Skips unless LORA_PEFT_PARITY_DIR
// names the script's output folder (scripts/gpu-check.sh sets it). Also both directions of PEFT interchange on
// the trained adapters: PEFT's save_pretrained output imports here with PEFT's logits; our trained adapter is
// exported for the script's --check-export step (PeftModel.from_pretrained gives our logits).
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "core/device_mem.h"
#include "cpu/cpu_ops.h"
#include "cuda/cuda_ops.h"
#include "cuda/device.h"
#include "io/safetensors.h"
#include "model/llama_train.h"
#include "model/lora.h"
#include "test_util.h"
#include "tolerances.h"
#include "train/adapter_io.h"
#include "train/adapter_peft.h"
#include "train/optimizer.h"

namespace lora {
namespace {

// The backend (the GPU when there is one, else the CPU) and the script's model on it.
struct ParitySetup {
  std::unique_ptr<Ops> owned;
  Ops* ops = &cpu_ops();
  Device dev = DEVICE_CPU;
  Model host, m;
};
ParitySetup parity_setup(const std::string& dir) {
  ParitySetup su;
  if (cuda_device_count() > 0) {
    su.owned = cuda_ops_create(0);
    su.ops = su.owned.get();
    su.dev = DEVICE_CUDA;
  }
  ModelLoadOptions lo;
  lo.compute_dtype = su.dev == DEVICE_CUDA ? DTYPE_BF16 : DTYPE_F32;
  su.host = model_load(dir + "/model", lo);
  su.m = model_to_device(su.host, su.dev, DTYPE_BF16);
  return su;
}

TEST(PeftParity, LogitsAndTenAdamSteps) {
  const char* dir_env = std::getenv("LORA_PEFT_PARITY_DIR");
  if (!dir_env) GTEST_SKIP() << "skipped: set LORA_PEFT_PARITY_DIR to the output of tools/peft_parity.py";
  const std::string dir = dir_env;
  auto exp = SafetensorsFile::open(dir + "/expected.safetensors");
  const int64_t steps = std::stoll(exp->metadata().at("steps"));
  const float lr = std::stof(exp->metadata().at("lr"));
  const bool bf16 = exp->metadata().at("dtype") == "bfloat16";

  const ParitySetup su = parity_setup(dir);
  Ops* ops = su.ops;
  const Device dev = su.dev;
  const Model& host = su.host;
  const Model& m = su.m;
  Adapter a = adapter_load(dir + "/adapter", host);
  adapter_to_device(a, dev);

  const SafeTensorInfo* in = exp->find("inputs");
  ASSERT_TRUE(in && in->shape.size() == 3 && in->shape[0] == steps);
  const int64_t B = in->shape[1], T = in->shape[2], V = host.cfg.vocab;
  auto i32 = [&](const char* n) { return static_cast<const int32_t*>(exp->find(n)->data); };
  const int32_t* inputs = i32("inputs");
  const int32_t* targets = i32("targets");
  const float* mask = static_cast<const float*>(exp->find("mask")->data);
  const float* want_logits = static_cast<const float*>(exp->find("logits0")->data);
  const float* want_losses = static_cast<const float*>(exp->find("losses")->data);

  TrainSessionOptions o;
  o.max_batch = B;
  o.max_len = T;
  TrainSession s(m, a, *ops, o);
  auto view = [&](int64_t k) {
    return TrainBatchView{B, T, inputs + k * B * T, targets + k * B * T, mask + k * B * T};
  };
  std::vector<float> logits(size_t(B * T * V));
  s.logits(view(0), logits.data());
  double worst_logit = 0;
  for (int64_t i = 0; i < B * T; ++i) {
    if (mask[i] == 0) continue;  // padded positions: PEFT's and ours both valid, but not compared
    for (int64_t j = 0; j < V; ++j) {
      const double w = want_logits[i * V + j], g = logits[size_t(i * V + j)];
      worst_logit = std::max(worst_logit, std::abs(g - w) / (1 + std::abs(w)));
    }
  }
  const double tol_logits = bf16 ? tol::kPeftParityLogitsBf16 : tol::kGoldenLogits;
  EXPECT_LE(worst_logit, tol_logits);

  OptimizerConfig oc = optimizer_defaults(OPT_ADAM);
  oc.bias_correction = true;  // torch.optim.Adam
  Optimizer opt(oc, a);
  double worst_loss = 0;
  std::string line;
  for (int64_t k = 0; k < steps; ++k) {
    a.zero_grad();
    const double loss = s.loss_and_grad(view(k), k).mean();
    opt.update(a, lr, *ops);
    const double err = std::abs(loss - want_losses[k]) / std::abs(double(want_losses[k]));
    worst_loss = std::max(worst_loss, err);
    EXPECT_LE(err, bf16 ? tol::kPeftParityLossBf16 : tol::kGoldenStepsLoss) << "step " << k;
    char buf[64];
    std::snprintf(buf, sizeof buf, " %.5f/%.5f", loss, double(want_losses[k]));
    line += buf;
  }
  std::printf("  measured: %s on %s: logits %.2e, losses (ours/peft)%s, worst loss %.2e; peer: %s\n",
              exp->metadata().at("shape").c_str(), dev == DEVICE_CUDA ? "cuda" : "cpu", worst_logit, line.c_str(),
              worst_loss, exp->metadata().at("versions").c_str());

  // Our trained adapter exported in PEFT's layout, with our logits of batch 0 after training: the script's
  // --check-export step loads it with PeftModel.from_pretrained and compares PEFT's logits with these.
  s.logits(view(0), logits.data());
  adapter_save_peft(a, dir + "/ours_peft", dir + "/model", /*overwrite=*/true);
  safetensors_write(dir + "/ours_logits.safetensors", {{"logits", DTYPE_F32, {B, T, V}, logits.data()}},
                    {{"device", dev == DEVICE_CUDA ? "cuda" : "cpu"}});
}

// The other direction: the adapter PEFT trained (save_pretrained, PEFT's layout) loads here and gives PEFT's
// logits after training.
TEST(PeftParity, PeftTrainedAdapterImports) {
  const char* dir_env = std::getenv("LORA_PEFT_PARITY_DIR");
  if (!dir_env) GTEST_SKIP() << "skipped: set LORA_PEFT_PARITY_DIR to the output of tools/peft_parity.py";
  const std::string dir = dir_env;
  auto exp = SafetensorsFile::open(dir + "/expected.safetensors");
  const bool bf16 = exp->metadata().at("dtype") == "bfloat16";
  ASSERT_TRUE(adapter_is_peft(dir + "/peft_trained")) << "tools/peft_parity.py writes OUT/peft_trained";
  const ParitySetup su = parity_setup(dir);
  Ops* ops = su.ops;
  const Device dev = su.dev;
  const Model& host = su.host;
  const Model& m = su.m;
  Adapter a = adapter_load(dir + "/peft_trained", host);
  adapter_to_device(a, dev);
  const SafeTensorInfo* in = exp->find("inputs");
  const int64_t B = in->shape[1], T = in->shape[2], V = host.cfg.vocab;
  const float* mask = static_cast<const float*>(exp->find("mask")->data);
  const float* want = static_cast<const float*>(exp->find("logits_trained")->data);
  TrainSessionOptions o;
  o.max_batch = B;
  o.max_len = T;
  TrainSession s(m, a, *ops, o);
  std::vector<float> logits(size_t(B * T * V));
  s.logits(TrainBatchView{B, T, static_cast<const int32_t*>(in->data), static_cast<const int32_t*>(exp->find("targets")->data), mask},
           logits.data());
  double worst = 0;
  for (int64_t i = 0; i < B * T; ++i) {
    if (mask[i] == 0) continue;
    for (int64_t j = 0; j < V; ++j)
      worst = std::max(worst, std::abs(double(logits[size_t(i * V + j)]) - want[i * V + j]) / (1 + std::abs(want[i * V + j])));
  }
  EXPECT_LE(worst, bf16 ? tol::kPeftParityLogitsBf16 : tol::kGoldenLogits);
  std::printf("  measured: PEFT-trained adapter (%s) imported on %s: logits %.2e\n", exp->metadata().at("shape").c_str(),
              dev == DEVICE_CUDA ? "cuda" : "cpu", worst);
}

}  // namespace
}  // namespace lora
