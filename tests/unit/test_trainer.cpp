// The training loop on the 2-layer golden model with in-memory examples: resume is bit-exact (10
// iterations + --resume to 20 give the losses and weights of 20 straight, dropout and AdamW included),
// mlx-lm's report lines, metrics.jsonl's content, loss.svg, gradient accumulation's token count.
#include <gtest/gtest.h>

#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>
#include <regex>
#include <sstream>

#include "core/error.h"
#include "core/rng.h"
#include "cpu/cpu_ops.h"
#include "io/batching.h"
#include "model/model.h"
#include "test_util.h"
#include "train/adapter_io.h"
#include "train/trainer.h"

namespace lora {
namespace {

using nlohmann::json;

std::string tmp_dir(const std::string& name) {
  const std::string d = ::testing::TempDir() + "/lora_trainer_" + name;
  EXPECT_EQ(std::system(("rm -rf '" + d + "' && mkdir -p '" + d + "'").c_str()), 0);
  return d;
}

std::string slurp(const std::string& p) {
  std::ifstream f(p, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

std::vector<Example> examples(int n, uint64_t seed, int64_t vocab) {
  Rng r(seed);
  std::vector<Example> ex;
  for (int i = 0; i < n; ++i) {
    Example e;
    const int len = 4 + int(r.below(28));
    e.tokens.push_back(1);
    for (int j = 1; j < len; ++j) e.tokens.push_back(int32_t(3 + r.below(uint64_t(vocab - 3))));
    e.offset = i % 3 == 0 ? 2 : 0;
    ex.push_back(e);
  }
  return ex;
}

LoraConfig cfg() {
  LoraConfig c;
  c.rank = 4;
  c.scale = 4.0;
  c.dropout = 0.1;  // the dropout stream must resume too
  c.num_layers = 2;
  c.keys = {LIN_Q, LIN_V, LIN_DOWN};
  return c;
}

TrainerOptions opts(const std::string& dir, int64_t iters, std::FILE* out) {
  TrainerOptions o;
  o.iters = iters;
  o.batch_size = 2;
  o.val_batches = -1;
  o.steps_per_report = 1;
  o.steps_per_eval = 5;
  o.save_every = 100;
  o.max_seq_length = 64;
  o.seed = 9;
  o.adapter_path = dir;
  o.optimizer = optimizer_defaults(OPT_ADAMW);
  o.schedule.constant = 5e-3;
  o.progress = 0;
  o.out = out;
  return o;
}

std::vector<json> read_metrics(const std::string& dir) {
  std::vector<json> v;
  std::istringstream in(slurp(path_join(dir, "metrics.jsonl")));
  std::string line;
  while (std::getline(in, line))
    if (!line.empty()) v.push_back(json::parse(line));
  return v;
}

std::map<int64_t, double> train_losses(const std::vector<json>& m) {
  std::map<int64_t, double> r;
  for (const json& j : m)
    if (j["type"] == "train") r[j["iter"].get<int64_t>()] = j["train_loss"].get<double>();
  return r;
}

struct TrainerTest : ::testing::Test {
  Model m = model_load(test::fixture("golden/llama_untied"));
  std::vector<Example> train = examples(12, 1, 67), valid = examples(6, 2, 67);
};

TEST_F(TrainerTest, ResumeIsBitExact) {
  const std::string straight = tmp_dir("straight"), resumed = tmp_dir("resumed");
  std::FILE* null = std::fopen("/dev/null", "w");
  {
    Adapter a = adapter_create(m, cfg(), 9);
    train_run(m, a, cpu_ops(), train, &valid, opts(straight, 20, null));
  }
  {
    Adapter a = adapter_create(m, cfg(), 9);
    train_run(m, a, cpu_ops(), train, &valid, opts(resumed, 10, null));
  }
  EXPECT_TRUE(test::file_exists(path_join(resumed, "0000010_state.json")));
  {
    Adapter a = adapter_create(m, cfg(), 9);  // weights come from the checkpoint
    TrainerOptions o = opts(resumed, 20, null);
    o.resume = true;
    const TrainSummary s = train_run(m, a, cpu_ops(), train, &valid, o);
    EXPECT_EQ(s.first_iter, 11);
  }
  std::fclose(null);
  const auto a = train_losses(read_metrics(straight)), b = train_losses(read_metrics(resumed));
  ASSERT_EQ(a.size(), 20u);
  ASSERT_EQ(b.size(), 20u);
  for (int64_t it = 1; it <= 20; ++it) EXPECT_EQ(a.at(it), b.at(it)) << "iteration " << it;  // bit for bit
  EXPECT_NE(a.at(1), a.at(20));
  EXPECT_EQ(slurp(path_join(straight, kAdapterWeightsFile)), slurp(path_join(resumed, kAdapterWeightsFile)));
  // Trained tokens carry over too.
  EXPECT_EQ(read_metrics(straight).back()["trained_tokens"], read_metrics(resumed).back()["trained_tokens"]);
}

TEST_F(TrainerTest, ResumeErrors) {
  std::FILE* null = std::fopen("/dev/null", "w");
  const std::string dir = tmp_dir("resume_err");
  Adapter a = adapter_create(m, cfg(), 9);
  TrainerOptions o = opts(dir, 4, null);
  o.resume = true;
  EXPECT_THROW(train_run(m, a, cpu_ops(), train, &valid, o), Error);  // nothing to resume from
  o.resume = false;
  train_run(m, a, cpu_ops(), train, &valid, o);
  o.resume = true;
  EXPECT_THROW(train_run(m, a, cpu_ops(), train, &valid, o), Error);  // already at --iters
  o.iters = 6;
  o.optimizer = optimizer_defaults(OPT_SGD);
  EXPECT_THROW(train_run(m, a, cpu_ops(), train, &valid, o), Error);  // other optimizer
  std::fclose(null);
}

TEST_F(TrainerTest, ReportLinesMetricsAndPlot) {
  const std::string dir = tmp_dir("report");
  std::FILE* out = std::tmpfile();
  Adapter a = adapter_create(m, cfg(), 9);
  TrainerOptions o = opts(dir, 12, out);
  o.steps_per_report = 4;
  o.save_every = 5;
  train_run(m, a, cpu_ops(), train, &valid, o);
  std::rewind(out);
  std::string text;
  char buf[4096];
  while (size_t n = std::fread(buf, 1, sizeof buf, out)) text.append(buf, n);
  std::fclose(out);

  std::vector<std::string> lines;
  std::istringstream in(text);
  for (std::string l; std::getline(in, l);) lines.push_back(l);
  const std::regex val(R"(Iter (\d+): Val loss \d+\.\d{3}, Val took \d+\.\d{3}s)");
  const std::regex tr(
      R"(Iter (\d+): Train loss \d+\.\d{3}, Learning Rate 5\.000e-03, It/sec \d+\.\d{3}, Tokens/sec \d+\.\d{3}, Trained Tokens \d+, Peak mem \d+\.\d{3} GB)");
  std::vector<int> val_iters, train_iters;
  std::smatch mt;
  for (const std::string& l : lines) {
    if (std::regex_match(l, mt, val)) val_iters.push_back(std::stoi(mt[1]));
    if (std::regex_match(l, mt, tr)) train_iters.push_back(std::stoi(mt[1]));
  }
  EXPECT_EQ(lines.front(), "Starting training..., iters: 12");
  EXPECT_EQ(val_iters, (std::vector<int>{1, 5, 10, 12}));
  EXPECT_EQ(train_iters, (std::vector<int>{4, 8, 12}));
  EXPECT_NE(text.find("Iter 5: Saved adapter weights to " + path_join(dir, "adapters.safetensors") + " and " +
                      path_join(dir, "0000005_adapters.safetensors") + "."),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("Saved final weights to " + path_join(dir, "adapters.safetensors") + "."), std::string::npos);
  EXPECT_TRUE(test::file_exists(path_join(dir, "0000010_adapters.safetensors")));
  EXPECT_TRUE(test::file_exists(path_join(dir, "0000012_state.json")));  // the last iteration, for resume

  const auto mj = read_metrics(dir);
  ASSERT_EQ(mj.size(), 7u);  // 4 evaluations + 3 reports, in order
  int64_t prev_iter = 0, prev_tokens = 0;
  for (const json& j : mj) {
    for (const char* k : {"iter", "train_loss", "val_loss", "learning_rate", "tokens_per_sec", "trained_tokens", "peak_mem_gb", "elapsed_s"})
      EXPECT_TRUE(j.contains(k)) << k << " in " << j.dump();
    EXPECT_GE(j["iter"].get<int64_t>(), prev_iter);
    prev_iter = j["iter"].get<int64_t>();
    EXPECT_GE(j["trained_tokens"].get<int64_t>(), prev_tokens);
    prev_tokens = j["trained_tokens"].get<int64_t>();
    EXPECT_GT(j["peak_mem_gb"].get<double>(), 0.0);
    if (j["type"] == "train") {
      EXPECT_TRUE(j["train_loss"].is_number());
      EXPECT_TRUE(j["val_loss"].is_null());
      EXPECT_FLOAT_EQ(float(j["learning_rate"].get<double>()), 5e-3f);
    } else {
      EXPECT_TRUE(j["val_loss"].is_number());
      EXPECT_TRUE(j["train_loss"].is_null());
    }
  }
  // Trained tokens = the masked targets of the 12 batches visited (mlx-lm's ntoks).
  BatchIterator it(train, BatchOptions{2, 64, 9});
  int64_t want = 0;
  for (int64_t k = 0; k < 12; ++k) want += it.batch_at(k).n_targets;
  EXPECT_EQ(mj.back()["trained_tokens"].get<int64_t>(), want);
  // The validation loss is the loss over all 3 sorted batches (val_batches -1).
  EXPECT_TRUE(mj.front()["val_loss"].get<double>() > 0);

  const std::string svg = slurp(path_join(dir, "loss.svg"));
  EXPECT_EQ(svg.rfind("<svg", 0), 0u);
  for (const char* s : {"<polyline", "Train loss", "Validation loss", "Iteration", "Loss", "</svg>"})
    EXPECT_NE(svg.find(s), std::string::npos) << s;
}

TEST_F(TrainerTest, GradientAccumulationConsumesKBatchesPerStep) {
  const std::string dir = tmp_dir("accum");
  std::FILE* null = std::fopen("/dev/null", "w");
  Adapter a = adapter_create(m, cfg(), 9);
  TrainerOptions o = opts(dir, 3, null);
  o.grad_accumulation_steps = 2;
  o.steps_per_report = 3;
  train_run(m, a, cpu_ops(), train, nullptr, o);
  std::fclose(null);
  BatchIterator it(train, BatchOptions{2, 64, 9});
  int64_t want = 0;
  for (int64_t k = 0; k < 6; ++k) want += it.batch_at(k).n_targets;
  const auto mj = read_metrics(dir);
  ASSERT_EQ(mj.size(), 1u);  // no validation set: only the report
  EXPECT_EQ(mj[0]["trained_tokens"].get<int64_t>(), want);
}

TEST_F(TrainerTest, LossFallsOnRepeatedData) {
  const std::string dir = tmp_dir("falls");
  std::FILE* null = std::fopen("/dev/null", "w");
  Adapter a = adapter_create(m, cfg(), 9);
  TrainerOptions o = opts(dir, 30, null);
  o.schedule.constant = 2e-2;
  o.steps_per_eval = 30;
  const TrainSummary s = train_run(m, a, cpu_ops(), train, &train, o);  // validate on the training data
  std::fclose(null);
  EXPECT_LT(s.last_val_loss, s.first_val_loss - 0.1);
}

TEST_F(TrainerTest, EvaluateNeedsABatch) {
  Adapter a = adapter_create(m, cfg(), 9);
  EXPECT_THROW(evaluate_loss(m, a, cpu_ops(), examples(1, 3, 67), 2, -1, 64, "test.jsonl"), Error);
  const double l = evaluate_loss(m, a, cpu_ops(), valid, 2, 1, 64, "valid.jsonl");
  EXPECT_GT(l, 0.0);
}

}  // namespace
}  // namespace lora
