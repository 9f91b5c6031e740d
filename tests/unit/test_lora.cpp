// Whole-model training checks on the tiny random Llama of tests/fixtures/golden (2 layers, GQA 4/2):
// LoRA, DoRA and full fine-tuning gradients against central finite differences of the loss on the
// reference backend; the CPU backend's gradients against the reference backend's; grad_checkpoint
// equal to no checkpointing (bit for bit); LoRA with B = 0 reproducing LlamaSession's logits bit for
// bit; dropout masks reproducible by step; trainable counts and mlx-lm's summary line; bad configs.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <vector>

#include "core/error.h"
#include "core/rng.h"
#include "cpu/cpu_ops.h"
#include "cpu/reference.h"
#include "model/config.h"
#include "model/llama.h"
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

struct Batch {
  int64_t B, T;
  std::vector<int32_t> in, tg;
  std::vector<float> mask;
  TrainBatchView view() const { return {B, T, in.data(), tg.data(), mask.data()}; }
};

// Random ids; row 1 is padded at its end (mask 0) and its first two targets are a masked-out prompt.
Batch make_batch(int64_t B, int64_t T, int64_t V, uint64_t seed = 3) {
  Batch b{B, T, {}, {}, {}};
  Rng rng(seed);
  b.in.resize(size_t(B * T));
  b.tg.resize(size_t(B * T));
  b.mask.assign(size_t(B * T), 1.0f);
  for (auto& x : b.in) x = int32_t(rng.below(uint64_t(V)));
  for (auto& x : b.tg) x = int32_t(rng.below(uint64_t(V)));
  if (B > 1) {
    for (int64_t t = T - 3; t < T; ++t) {
      b.in[size_t(T + t)] = 0;
      b.tg[size_t(T + t)] = 0;
      b.mask[size_t(T + t)] = 0;
    }
    b.mask[size_t(T)] = b.mask[size_t(T + 1)] = 0;
  }
  return b;
}

// Makes every lora_b nonzero (so dA is nonzero) and perturbs m, reproducibly.
void randomize(Adapter& a, float b_range = 0.2f) {
  Rng rng(11);
  for (auto& p : a.params) {
    const bool is_b = p.name.size() > 7 && p.name.substr(p.name.size() - 7) == ".lora_b";
    const bool is_m = p.name.size() > 2 && p.name.substr(p.name.size() - 2) == ".m";
    for (int64_t i = 0; i < p.value.t.numel(); ++i) {
      if (is_b) p.value.t.f32()[i] = b_range * (2 * rng.uniform() - 1);
      if (is_m) p.value.t.f32()[i] *= 0.8f + 0.4f * rng.uniform();
    }
  }
}

std::vector<std::vector<float>> grads_of(const Adapter& a) {
  std::vector<std::vector<float>> g;
  for (const auto& p : a.params) g.emplace_back(p.grad.t.f32(), p.grad.t.f32() + p.grad.t.numel());
  return g;
}

std::vector<std::vector<float>> run_grads(Adapter& a, Ops& ops, const Batch& b, bool ckpt, int64_t step = 0,
                                          double* loss = nullptr) {
  TrainSessionOptions o;
  o.max_batch = b.B;
  o.max_len = b.T;
  o.grad_checkpoint = ckpt;
  o.dropout_seed = 42;
  TrainSession s(tiny(), a, ops, o);
  a.zero_grad();
  LossResult r = s.loss_and_grad(b.view(), step);
  if (loss) *loss = r.mean();
  return grads_of(a);
}

// Central differences of the mean loss on the reference backend for a few elements of each parameter
// whose name passes `want`, against the analytic gradient g. Returns the worst scaled error.
double fd_model(Adapter& a, const Batch& b, const std::vector<std::vector<float>>& g, const char* what,
                bool (*want)(const std::string&), int per_param = 4, double h = 1e-2) {
  TrainSessionOptions o;
  o.max_batch = b.B;
  o.max_len = b.T;
  TrainSession s(tiny(), a, reference_ops(), o);
  Rng pick(5);
  double worst = 0;
  for (size_t pi = 0; pi < a.params.size(); ++pi) {
    TrainParam& p = a.params[pi];
    if (!want(p.name)) continue;
    double gmax = 0;
    for (float v : g[pi]) gmax = std::max(gmax, double(std::abs(v)));
    for (int s_ = 0; s_ < per_param; ++s_) {
      const int64_t i = int64_t(pick.below(uint64_t(p.value.t.numel())));
      float* v = p.value.t.f32() + i;
      const float keep = *v;
      *v = keep + float(h);
      const double lp = s.loss(b.view()).mean();
      *v = keep - float(h);
      const double lm = s.loss(b.view()).mean();
      *v = keep;
      const double fd = (lp - lm) / (2 * h);
      const double err = std::abs(fd - g[pi][size_t(i)]) / (gmax + 1e-4);
      worst = std::max(worst, err);
      EXPECT_LE(err, tol::kGradModelFD) << what << " " << p.name << "[" << i << "] fd " << fd << " analytic "
                                        << g[pi][size_t(i)] << " (max |g| " << gmax << ")";
    }
  }
  std::printf("  model fd %-10s worst %.2e\n", what, worst);
  return worst;
}

double compare_grads(const std::vector<std::vector<float>>& got, const std::vector<std::vector<float>>& want,
                     const Adapter& a, double tol, const char* what) {
  double worst = 0;
  for (size_t pi = 0; pi < want.size(); ++pi) {
    double wmax = 0;
    for (float v : want[pi]) wmax = std::max(wmax, double(std::abs(v)));
    for (size_t i = 0; i < want[pi].size(); ++i) {
      const double err = std::abs(double(got[pi][i]) - want[pi][i]) / (wmax + 1e-6);
      worst = std::max(worst, std::isnan(err) ? INFINITY : err);
      if (!(err <= tol)) {
        ADD_FAILURE() << what << " " << a.params[pi].name << "[" << i << "] got " << got[pi][i] << " want " << want[pi][i];
        break;
      }
    }
  }
  std::printf("  model %-14s worst %.2e\n", what, worst);
  return worst;
}

bool any_name(const std::string&) { return true; }
bool m_only(const std::string& n) { return n.size() > 2 && n.substr(n.size() - 2) == ".m"; }

LoraConfig cfg_of(FineTuneType t, double dropout = 0.0) {
  LoraConfig c;
  c.type = t;
  c.rank = 3;
  c.scale = 2.0;
  c.dropout = dropout;
  c.keys = {LIN_Q, LIN_K, LIN_V, LIN_O, LIN_GATE, LIN_UP, LIN_DOWN};
  c.num_layers = -1;
  return c;
}

TEST(Lora, GradientsMatchFiniteDifferences) {
  const Batch b = make_batch(2, 7, tiny().cfg.vocab);
  Adapter a = adapter_create(tiny(), cfg_of(FT_LORA), 1);
  randomize(a);
  auto gref = run_grads(a, reference_ops(), b, false);
  fd_model(a, b, gref, "lora", any_name);
  auto gcpu = run_grads(a, cpu_ops(), b, false);
  compare_grads(gcpu, gref, a, tol::kGradModelFastVsRef, "lora cpu/ref");
  // Gradient checkpointing recomputes exactly the same numbers.
  auto gck = run_grads(a, cpu_ops(), b, true);
  for (size_t i = 0; i < gcpu.size(); ++i) EXPECT_EQ(gck[i], gcpu[i]) << a.params[i].name;
}

TEST(Lora, LastLayerOnlyAndGradAccumulation) {
  const Batch b = make_batch(2, 6, tiny().cfg.vocab);
  LoraConfig c = cfg_of(FT_LORA);
  c.num_layers = 1;
  c.keys = {LIN_Q, LIN_V};
  Adapter a = adapter_create(tiny(), c, 2);
  randomize(a);
  EXPECT_EQ(a.first_layer, 1);
  auto gref = run_grads(a, reference_ops(), b, false);
  fd_model(a, b, gref, "lora L1", any_name);
  // Gradients accumulate across calls: two calls give twice one call.
  TrainSessionOptions o;
  o.max_batch = 2;
  o.max_len = 8;  // planned larger than the batch
  TrainSession s(tiny(), a, cpu_ops(), o);
  a.zero_grad();
  s.loss_and_grad(b.view(), 0);
  auto g1 = grads_of(a);
  s.loss_and_grad(b.view(), 0);
  auto g2 = grads_of(a);
  for (size_t i = 0; i < g1.size(); ++i)
    for (size_t j = 0; j < g1[i].size(); ++j)
      EXPECT_NEAR(g2[i][j], 2 * g1[i][j], 1e-6 * (1 + std::abs(g1[i][j])));
  // grad_denominator scales the gradient, not the loss.
  a.zero_grad();
  LossResult r = s.loss_and_grad(b.view(), 0, 2.0 * double(s.loss(b.view()).n_targets));
  auto gh = grads_of(a);
  EXPECT_GT(r.n_targets, 0);
  for (size_t i = 0; i < g1.size(); ++i)
    for (size_t j = 0; j < g1[i].size(); ++j) EXPECT_NEAR(gh[i][j], 0.5 * g1[i][j], 1e-6 * (1 + std::abs(g1[i][j])));
}

TEST(Lora, DoraGradients) {
  const Batch b = make_batch(2, 7, tiny().cfg.vocab);
  Adapter a = adapter_create(tiny(), cfg_of(FT_DORA), 3);
  randomize(a);
  auto gref = run_grads(a, reference_ops(), b, false);
  // Finite differences see the norm's dependence on A and B, which DoRA's backward stops (mlx-lm's
  // stop_gradient), so only m is checked this way; A and B are checked per op (test_cpu_grad) and here
  // against the reference backend.
  fd_model(a, b, gref, "dora m", m_only, 6);
  auto gcpu = run_grads(a, cpu_ops(), b, false);
  compare_grads(gcpu, gref, a, tol::kGradModelFastVsRef, "dora cpu/ref");
  auto gck = run_grads(a, cpu_ops(), b, true);
  for (size_t i = 0; i < gcpu.size(); ++i) EXPECT_EQ(gck[i], gcpu[i]) << a.params[i].name;
}

TEST(Lora, FullFineTuneGradients) {
  const Batch b = make_batch(2, 6, tiny().cfg.vocab);
  LoraConfig c = cfg_of(FT_FULL);
  c.num_layers = 1;
  Adapter a = adapter_create(tiny(), c, 4);
  ASSERT_EQ(a.params.size(), 9u);  // 2 norms + 7 linears of the last block
  EXPECT_EQ(a.params[0].name, "model.layers.1.input_layernorm.weight");
  auto gref = run_grads(a, reference_ops(), b, false);
  fd_model(a, b, gref, "full", any_name, 4);
  auto gcpu = run_grads(a, cpu_ops(), b, false);
  compare_grads(gcpu, gref, a, tol::kGradModelFastVsRef, "full cpu/ref");
  auto gck = run_grads(a, cpu_ops(), b, true);
  for (size_t i = 0; i < gcpu.size(); ++i) EXPECT_EQ(gck[i], gcpu[i]) << a.params[i].name;
}

TEST(Lora, DropoutReproducibleByStep) {
  const Batch b = make_batch(2, 7, tiny().cfg.vocab);
  Adapter a = adapter_create(tiny(), cfg_of(FT_LORA, 0.3), 5);
  randomize(a);
  auto gref = run_grads(a, reference_ops(), b, false, 7);
  auto gcpu = run_grads(a, cpu_ops(), b, false, 7);
  compare_grads(gcpu, gref, a, tol::kGradModelFastVsRef, "dropout cpu/ref");
  auto gck = run_grads(a, cpu_ops(), b, true, 7);
  for (size_t i = 0; i < gcpu.size(); ++i) EXPECT_EQ(gck[i], gcpu[i]) << a.params[i].name;
  auto again = run_grads(a, cpu_ops(), b, false, 7);
  EXPECT_EQ(again, gcpu);  // same step: same masks
  auto other = run_grads(a, cpu_ops(), b, false, 8);
  EXPECT_NE(other, gcpu);  // another step: other masks
}

// One row: the same GEMM shapes as LlamaSession's prefill, so LoRA with B = 0 must give the same bits.
// Several rows: OpenBLAS may block a 27-row product differently from a 9-row one, so rows agree to
// f32 rounding (kOpLinear), not bits.
TEST(Lora, ZeroBReproducesBaseLogits) {
  const Model& m = tiny();
  const int64_t V = m.cfg.vocab;
  for (int64_t B : {1, 3}) {
    const Batch b = make_batch(B, 9, V);
    for (FineTuneType t : {FT_LORA, FT_DORA}) {
      Adapter a = adapter_create(m, cfg_of(t, 0.5), 6);  // B = 0 from adapter_create; dropout off in forward
      TrainSessionOptions o;
      o.max_batch = b.B;
      o.max_len = b.T;
      TrainSession s(m, a, cpu_ops(), o);
      std::vector<float> got(size_t(b.B * b.T * V));
      s.logits(b.view(), got.data());
      for (int64_t r = 0; r < b.B; ++r) {
        LlamaSession base(m, cpu_ops(), b.T);
        std::vector<float> want(size_t(b.T * V));
        base.forward(b.in.data() + r * b.T, b.T, want.data(), true);
        if (t == FT_LORA && B == 1)
          EXPECT_EQ(0, std::memcmp(want.data(), got.data() + r * b.T * V, want.size() * 4)) << "row " << r;
        else  // DoRA rescales by m / ||W|| = 1 up to rounding
          for (size_t i = 0; i < want.size(); ++i)
            ASSERT_NEAR(got[size_t(r * b.T * V) + i], want[i], tol::kOpLinear * (1 + std::abs(want[i])));
      }
    }
  }
}

TEST(Lora, TrainableCounts) {
  const ModelConfig& c = tiny().cfg;
  LoraConfig lc = cfg_of(FT_LORA);
  Adapter a = adapter_create(tiny(), lc, 0);
  int64_t want = 0;
  for (LinearKey k : lc.keys) {
    const auto [out, in] = linear_key_shape(c, k);
    want += c.n_layers * lc.rank * (in + out);
  }
  EXPECT_EQ(a.n_trainable(), want);
  EXPECT_EQ(a.params[0].name, "model.layers.0.self_attn.q_proj.lora_a");
  EXPECT_EQ(a.params[0].value.t.dim(0), c.dim);
  EXPECT_EQ(a.params[1].name, "model.layers.0.self_attn.q_proj.lora_b");
  Adapter d = adapter_create(tiny(), cfg_of(FT_DORA), 0);
  int64_t want_m = 0;
  for (LinearKey k : lc.keys) want_m += c.n_layers * linear_key_shape(c, k)[0];
  EXPECT_EQ(d.n_trainable(), want + want_m);
  // A in ±1/sqrt(in), B zero, m the row norms of W.
  const float bound = 1.0f / std::sqrt(float(c.dim));
  for (int64_t i = 0; i < a.params[0].value.t.numel(); ++i) EXPECT_LE(std::abs(a.params[0].value.t.f32()[i]), bound);
  for (int64_t i = 0; i < a.params[1].value.t.numel(); ++i) EXPECT_EQ(a.params[1].value.t.f32()[i], 0.0f);
  const Tensor& wq = tiny().layers[0].wq;
  double ss = 0;
  for (int64_t i = 0; i < c.dim; ++i) ss += double(wq.f32()[i]) * wq.f32()[i];
  EXPECT_NEAR(d.params[2].value.t.f32()[0], std::sqrt(ss), 1e-6);
  EXPECT_EQ(d.params[2].name, "model.layers.0.self_attn.q_proj.m");
  LoraConfig fc = cfg_of(FT_FULL);
  Adapter f = adapter_create(tiny(), fc, 0);
  EXPECT_EQ(f.n_trainable(), c.n_params() - c.vocab * c.dim * 2 - c.dim);  // all blocks, no embeddings/head/final norm
}

TEST(Lora, TinyLlamaSummaryLine) {
  LORA_REQUIRE_SHARED("models/TinyLlama-1.1B-Chat-v1.0/config.json");
  Model m;
  m.cfg = config_from_hf_json(test::shared_dir() + "/models/TinyLlama-1.1B-Chat-v1.0/config.json");
  Adapter a = adapter_create(m, LoraConfig{}, 0);  // mlx-lm defaults: rank 8, q/v, last 16 layers
  EXPECT_EQ(adapter_trainable_summary(m, a), "Trainable parameters: 0.074% (0.819M/1100.048M)");
}

TEST(Lora, BadConfigs) {
  LoraConfig c = cfg_of(FT_LORA);
  c.num_layers = 3;  // the model has 2
  EXPECT_THROW(adapter_create(tiny(), c, 0), Error);
  c.num_layers = 0;
  EXPECT_THROW(adapter_create(tiny(), c, 0), Error);
  c.num_layers = -1;
  c.rank = 0;
  EXPECT_THROW(adapter_create(tiny(), c, 0), Error);
  c.rank = 2;
  c.keys.clear();
  EXPECT_THROW(adapter_create(tiny(), c, 0), Error);
  LinearKey k;
  EXPECT_TRUE(linear_key_from_name("q_proj", &k));
  EXPECT_EQ(k, LIN_Q);
  EXPECT_TRUE(linear_key_from_name("mlp.down_proj", &k));
  EXPECT_EQ(k, LIN_DOWN);
  EXPECT_FALSE(linear_key_from_name("lm_head", &k));
  FineTuneType t;
  EXPECT_TRUE(fine_tune_type_from_name("dora", &t));
  EXPECT_EQ(t, FT_DORA);
  EXPECT_FALSE(fine_tune_type_from_name("qlora", &t));
}

}  // namespace
}  // namespace lora
