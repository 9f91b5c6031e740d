// Golden test of several optimizer steps against the real peers (tests/fixtures/golden_steps,
// tools/gen_golden_steps.py): on the tiny random Llama, from a fixed LoRA/DoRA start (A random, B = 0)
// loaded through adapter_io, 8 MLX-Adam steps over one full batch of 4 examples (two prompt-masked).
// Every step's loss and the final adapter are checked against mlx-lm's own trainer and against
// transformers + PEFT with an MLX-semantics Adam — once driving TrainSession + Optimizer by hand
// (CPU backend with and without grad checkpointing, reference backend) and once through train_run,
// the loop behind `lora train` (batching, validation, schedule, metrics.jsonl).
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "cpu/cpu_ops.h"
#include "cpu/reference.h"
#include "io/safetensors.h"
#include "model/llama_train.h"
#include "model/lora.h"
#include "test_util.h"
#include "tolerances.h"
#include "train/adapter_io.h"
#include "train/metrics.h"
#include "train/optimizer.h"
#include "train/trainer.h"

namespace lora {
namespace {

const Model& tiny() {
  static Model m = model_load(test::fixture("golden/llama_untied"));
  return m;
}

struct Golden {
  std::string name;
  std::shared_ptr<SafetensorsFile> f;
  LoraConfig lc;
  double lr = 0;
  int64_t steps = 0;
  std::vector<double> mlx_losses, peft_losses;
  double mlx_val_first = 0, mlx_val_last = 0;
  std::vector<Example> examples;
  int64_t L = 0;  // tokens per example (= max_seq_length of the peers' run)
};

Golden load_golden(const std::string& name) {
  Golden g;
  g.name = name;
  g.f = SafetensorsFile::open(test::fixture("golden_steps/" + name + ".golden.safetensors"));
  const auto& md = g.f->metadata();
  EXPECT_TRUE(fine_tune_type_from_name(md.at("type"), &g.lc.type));
  g.lc.rank = std::stoll(md.at("rank"));
  g.lc.scale = std::stod(md.at("scale"));
  g.lc.num_layers = std::stoll(md.at("num_layers"));
  g.lc.dropout = 0;
  g.lc.keys.clear();
  for (const auto& k : nlohmann::json::parse(md.at("keys"))) {
    LinearKey lk;
    EXPECT_TRUE(linear_key_from_name(k.get<std::string>(), &lk)) << k;
    g.lc.keys.push_back(lk);
  }
  g.lr = std::stod(md.at("lr"));
  g.steps = std::stoll(md.at("steps"));
  g.mlx_losses = nlohmann::json::parse(md.at("mlx_losses")).get<std::vector<double>>();
  g.peft_losses = nlohmann::json::parse(md.at("peft_losses")).get<std::vector<double>>();
  g.mlx_val_first = std::stod(md.at("mlx_val_first"));
  g.mlx_val_last = std::stod(md.at("mlx_val_last"));
  EXPECT_EQ(int64_t(g.mlx_losses.size()), g.steps);
  EXPECT_EQ(int64_t(g.peft_losses.size()), g.steps);

  const SafeTensorInfo* tok = g.f->find("tokens");
  const SafeTensorInfo* off = g.f->find("offsets");
  EXPECT_TRUE(tok && off && tok->dtype == DTYPE_I32 && off->dtype == DTYPE_I32 && tok->shape.size() == 2);
  if (!tok || !off) return g;
  const int64_t n = tok->shape[0];
  g.L = tok->shape[1];
  EXPECT_EQ(off->numel(), n);
  const auto* t = static_cast<const int32_t*>(tok->data);
  const auto* o = static_cast<const int32_t*>(off->data);
  for (int64_t i = 0; i < n; ++i) {
    Example e;
    e.tokens.assign(t + i * g.L, t + (i + 1) * g.L);
    e.offset = o[i];
    g.examples.push_back(std::move(e));
  }
  return g;
}

// The starting adapter, read through adapter_io as --resume-adapter-file does.
Adapter start_adapter(const Golden& g) {
  Adapter a = adapter_create(tiny(), g.lc, /*seed=*/12345);
  adapter_load_weights(test::fixture("golden_steps/" + g.name + ".init.safetensors"), a, /*require_all=*/true);
  return a;
}

// All examples as one batch of T = L - 1 positions, built by hand (no padding at all).
struct HandBatch {
  std::vector<int32_t> inputs, targets;  // (B, T)
  std::vector<float> mask;               // (B, T)
  TrainBatchView view;
};
HandBatch hand_batch(const Golden& g) {
  HandBatch h;
  const int64_t B = int64_t(g.examples.size()), T = g.L - 1;
  for (const Example& e : g.examples)
    for (int64_t t = 0; t < T; ++t) {
      h.inputs.push_back(e.tokens[size_t(t)]);
      h.targets.push_back(e.tokens[size_t(t + 1)]);
      h.mask.push_back(t + 1 >= e.offset ? 1.f : 0.f);
    }
  h.view = TrainBatchView{B, T, h.inputs.data(), h.targets.data(), h.mask.data()};
  return h;
}

void check_loss(double got, double want, const char* peer, int64_t step, const std::string& what) {
  EXPECT_NEAR(got, want, tol::kGoldenStepsLoss * want) << what << " step " << step + 1 << " vs " << peer;
}

// Final adapter vs both peers: |Δ| <= tol · max |want| per tensor. Returns the worst error per peer.
std::array<double, 2> check_final(const Golden& g, const Adapter& a, const std::string& what) {
  std::array<double, 2> worst{0, 0};
  for (const auto& p : a.params)
    for (int peer = 0; peer < 2; ++peer) {
      const std::string key = (peer ? "peft." : "mlx.") + p.name;
      const SafeTensorInfo* t = g.f->find(key);
      EXPECT_TRUE(t && t->dtype == DTYPE_F32 && t->numel() == p.value.t.numel()) << key;
      if (!t || t->numel() != p.value.t.numel()) continue;
      const auto* want = static_cast<const float*>(t->data);
      double wmax = 0;
      for (int64_t i = 0; i < t->numel(); ++i) wmax = std::max(wmax, double(std::abs(want[i])));
      double err = 0;
      int64_t at = 0;
      for (int64_t i = 0; i < t->numel(); ++i) {
        const double e = std::abs(double(p.value.t.f32()[i]) - want[i]) / (wmax + 1e-12);
        if (!(e <= err)) err = e, at = i;
      }
      worst[size_t(peer)] = std::max(worst[size_t(peer)], err);
      EXPECT_LE(err, tol::kGoldenStepsParams) << what << " " << key << "[" << at << "] got " << p.value.t.f32()[at]
                                             << " want " << want[at];
    }
  return worst;
}

void run_by_hand(const std::string& name, Ops& ops, bool grad_checkpoint, const char* backend) {
  const Golden g = load_golden(name);
  ASSERT_FALSE(g.examples.empty());
  Adapter a = start_adapter(g);
  const HandBatch h = hand_batch(g);
  TrainSessionOptions so;
  so.max_batch = h.view.B;
  so.max_len = h.view.T;
  so.grad_checkpoint = grad_checkpoint;
  TrainSession s(tiny(), a, ops, so);
  Optimizer opt(optimizer_defaults(OPT_ADAM), a);
  const std::string what = name + " " + backend + (grad_checkpoint ? " (grad checkpoint)" : "");
  double worst_loss = 0;
  for (int64_t step = 0; step < g.steps; ++step) {
    a.zero_grad();
    const LossResult r = s.loss_and_grad(h.view, step);
    check_loss(r.mean(), g.mlx_losses[size_t(step)], "mlx-lm", step, what);
    check_loss(r.mean(), g.peft_losses[size_t(step)], "peft", step, what);
    worst_loss = std::max(worst_loss, std::abs(r.mean() - g.mlx_losses[size_t(step)]) / g.mlx_losses[size_t(step)]);
    opt.update(a, float(g.lr));
  }
  EXPECT_LT(g.mlx_losses.back(), 0.6 * g.mlx_losses.front()) << "the fixture's loss should fall clearly";
  const auto w = check_final(g, a, what);
  std::printf("  %s: worst step loss vs mlx-lm %.2e; final adapter vs mlx-lm %.2e, vs peft %.2e\n", what.c_str(),
              worst_loss, w[0], w[1]);
}

TEST(GoldenSteps, LoraCpu) { run_by_hand("lora", cpu_ops(), false, "cpu"); }
TEST(GoldenSteps, LoraCpuGradCheckpoint) { run_by_hand("lora", cpu_ops(), true, "cpu"); }
TEST(GoldenSteps, LoraReference) { run_by_hand("lora", reference_ops(), false, "reference"); }
TEST(GoldenSteps, DoraCpu) { run_by_hand("dora", cpu_ops(), false, "cpu"); }
TEST(GoldenSteps, DoraCpuGradCheckpoint) { run_by_hand("dora", cpu_ops(), true, "cpu"); }

std::string temp_dir() {
  char tmpl[] = "/tmp/lora_golden_steps_XXXXXX";
  const char* d = ::mkdtemp(tmpl);
  EXPECT_TRUE(d);
  return d ? d : "/tmp";
}

// The same run through train_run: BatchIterator pads the 17-token rows to T = 17 inputs (one masked
// padding position), validation on the same examples at iteration 1 and at the last iteration
// (before that iteration's step, as mlx-lm), a constant learning rate, losses read back from metrics.jsonl.
void run_trainer(const std::string& name) {
  const Golden g = load_golden(name);
  ASSERT_FALSE(g.examples.empty());
  Adapter a = start_adapter(g);
  TrainerOptions o;
  o.iters = g.steps;
  o.batch_size = int64_t(g.examples.size());
  o.val_batches = -1;
  o.steps_per_report = 1;
  o.steps_per_eval = 1000000;
  o.save_every = 1000000;
  o.max_seq_length = g.L;
  o.seed = 7;
  o.adapter_path = temp_dir();
  o.optimizer = optimizer_defaults(OPT_ADAM);
  o.schedule.constant = g.lr;
  o.progress = 0;
  std::FILE* out = std::tmpfile();
  ASSERT_TRUE(out);
  o.out = out;
  const TrainSummary sum = train_run(tiny(), a, cpu_ops(), g.examples, &g.examples, o);
  std::fclose(out);

  const std::string what = name + " train_run";
  EXPECT_EQ(sum.last_iter, g.steps);
  EXPECT_NEAR(sum.first_val_loss, g.mlx_val_first, tol::kGoldenStepsLoss * g.mlx_val_first) << what;
  EXPECT_NEAR(sum.last_val_loss, g.mlx_val_last, tol::kGoldenStepsLoss * g.mlx_val_last) << what;
  std::vector<LossPoint> tr, va;
  metrics_read_losses(path_join(o.adapter_path, "metrics.jsonl"), &tr, &va);
  ASSERT_EQ(int64_t(tr.size()), g.steps) << what;
  ASSERT_EQ(va.size(), 2u) << what;
  for (int64_t step = 0; step < g.steps; ++step) {
    EXPECT_EQ(tr[size_t(step)].iter, step + 1);
    check_loss(tr[size_t(step)].loss, g.mlx_losses[size_t(step)], "mlx-lm", step, what);
    check_loss(tr[size_t(step)].loss, g.peft_losses[size_t(step)], "peft", step, what);
  }
  const auto w = check_final(g, a, what);
  // The adapter file written at the end holds the same values.
  Adapter back = adapter_create(tiny(), g.lc, 1);
  adapter_load_weights(path_join(o.adapter_path, kAdapterWeightsFile), back, /*require_all=*/true);
  const auto wb = check_final(g, back, what + " (adapters.safetensors)");
  std::printf("  %s: val %.7f / %.7f (mlx-lm %.7f / %.7f); final adapter vs mlx-lm %.2e, vs peft %.2e (file %.2e)\n",
              what.c_str(), sum.first_val_loss, sum.last_val_loss, g.mlx_val_first, g.mlx_val_last, w[0], w[1], wb[0]);
  std::filesystem::remove_all(o.adapter_path);
}

TEST(GoldenSteps, LoraTrainRun) { run_trainer("lora"); }
TEST(GoldenSteps, DoraTrainRun) { run_trainer("dora"); }

}  // namespace
}  // namespace lora
