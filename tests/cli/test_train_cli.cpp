// End-to-end tests of `lora train` on stories260K (../shared): the acceptance run on english_quotes
// (validation loss falls over 50 iterations at lr 1e-3, the adapter reloads, greedy generation with
// --adapter-path differs from without), flag/YAML precedence in adapter_config.json, --epochs, resume
// through the CLI, and impossible flag combinations (exit 1, one message naming the flag).
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>

#include "cli_util.h"

namespace {

using nlohmann::json;
using lora::test::CmdResult;
using lora::test::contains;
using lora::test::slurp;
using lora::test::write;

CmdResult run_lora(const std::string& args) { return lora::test::run_lora("lora_train_cli_", args); }
std::string tmp_dir(const std::string& name) { return lora::test::tmp_dir("lora_train_cli_", name); }

std::string model() { return lora::test::shared_dir() + "/models/stories260K-hf"; }

// `n_train` / `n_valid` short {"text"} records from english_quotes ("quote - author", at most 90 chars).
std::string quotes_data(const std::string& name, int n_train, int n_valid, bool with_valid = true) {
  return lora::test::write_quotes(tmp_dir(name), n_train, n_valid, with_valid);
}

std::vector<json> metrics(const std::string& dir) {
  std::vector<json> v;
  std::istringstream in(slurp(dir + "/metrics.jsonl"));
  for (std::string l; std::getline(in, l);)
    if (!l.empty()) v.push_back(json::parse(l));
  return v;
}

#define REQUIRE_DATA()                                          \
  LORA_REQUIRE_SHARED("models/stories260K-hf/config.json");   \
  LORA_REQUIRE_SHARED("data/english_quotes/quotes.jsonl")

#define EXPECT_FLAG_ERROR(r, flag)                                               \
  do {                                                                           \
    EXPECT_EQ((r).code, 1) << (r).err;                                           \
    EXPECT_TRUE(contains((r).err, "error: ")) << (r).err;                        \
    EXPECT_TRUE(contains((r).err, flag)) << "expected " << flag << " in: " << (r).err; \
    EXPECT_FALSE(contains((r).err, "bug in lora")) << (r).err;                   \
  } while (0)

TEST(TrainCli, AcceptanceQuotesStories260K) {
  REQUIRE_DATA();
  const std::string data = quotes_data("accept_data", 40, 10);
  const std::string ad = tmp_dir("accept_adapter");
  const CmdResult r = run_lora("train --model '" + model() + "' --data '" + data + "' --adapter-path '" + ad +
                               "' --iters 50 --learning-rate 1e-3 --num-layers -1 --batch-size 4 --steps-per-report 10"
                               " --steps-per-eval 25 --seed 42 --threads 1");
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_TRUE(contains(r.out, "Trainable parameters: ")) << r.out;
  EXPECT_TRUE(contains(r.out, "Starting training..., iters: 50")) << r.out;
  EXPECT_TRUE(contains(r.out, "Iter 1: Val loss ")) << r.out;
  EXPECT_TRUE(contains(r.out, "Iter 50: Train loss ")) << r.out;
  EXPECT_TRUE(contains(r.out, "Saved final weights to ")) << r.out;
  // Validation loss falls from iteration 1 to 50.
  double first = -1, last = -1;
  for (const json& j : metrics(ad))
    if (j["type"] == "val") (first < 0 ? first : last) = j["val_loss"].get<double>();
  ASSERT_GT(first, 0);
  EXPECT_LT(last, first - 0.05) << "val loss " << first << " -> " << last;
  EXPECT_TRUE(lora::test::file_exists(ad + "/loss.svg"));

  // The adapter reloads; greedy generation with it differs from the base model's.
  const std::string gen = "generate --model '" + model() + "' --prompt 'Once upon a time' --max-tokens 24 --temp 0 -q --ignore-chat-template";
  const CmdResult base = run_lora(gen);
  const CmdResult tuned = run_lora(gen + " --adapter-path '" + ad + "'");
  ASSERT_EQ(base.code, 0) << base.err;
  ASSERT_EQ(tuned.code, 0) << tuned.err;
  EXPECT_FALSE(base.out.empty());
  EXPECT_NE(base.out, tuned.out);
  // --resume-adapter-file starts from those weights: its first validation loss is near where training ended
  // (one update after the last evaluation), far below a fresh adapter's.
  const CmdResult rf = run_lora("train --threads 1 --model '" + model() + "' --data '" + data + "' --adapter-path '" + tmp_dir("accept_rf") +
                                "' --iters 1 --num-layers -1 --seed 42 --resume-adapter-file '" + ad + "/adapters.safetensors'");
  ASSERT_EQ(rf.code, 0) << rf.err;
  EXPECT_TRUE(contains(rf.out, "Loading fine-tuned weights from " + ad + "/adapters.safetensors")) << rf.out;
  const size_t at = rf.out.find("Iter 1: Val loss ");
  ASSERT_NE(at, std::string::npos) << rf.out;
  const double resumed_val = std::stod(rf.out.substr(at + 17, 5));
  EXPECT_LT(resumed_val, first - 0.05) << rf.out;
  EXPECT_NEAR(resumed_val, last, (first - last) / 4) << rf.out;
  // --test after training on the same adapter folder's data.
  write(data + "/test.jsonl", slurp(data + "/valid.jsonl"));
  const CmdResult t = run_lora("train --threads 1 --model '" + model() + "' --data '" + data + "' --adapter-path '" + tmp_dir("accept_test") +
                               "' --iters 2 --num-layers -1 --test --val-batches 1");
  ASSERT_EQ(t.code, 0) << t.err;
  EXPECT_TRUE(contains(t.out, "Test loss ")) << t.out;
  EXPECT_TRUE(contains(t.out, ", Test ppl ")) << t.out;
}

TEST(TrainCli, YamlThenFlagsPrecedence) {
  REQUIRE_DATA();
  const std::string data = quotes_data("yaml_data", 8, 4);
  const std::string dir = tmp_dir("yaml");
  write(dir + "/config.yaml",
        "model: " + model() + "\n" + "data: " + data + "\n" +
            "batch_size: 2\n"
            "learning_rate: 1e-4\n"
            "iters: 3\n"
            "num_layers: 2\n"
            "optimizer: adamw\n"
            "optimizer_config:\n  adamw:\n    weight_decay: 0.05\n"
            "lora_parameters:\n  rank: 4\n  keys: [q_proj, \"self_attn.o_proj\"]\n"
            "lr_schedule:\n  name: cosine_decay\n  arguments: [1e-4, 3]\n  warmup: 1\n");
  const CmdResult r = run_lora("train -c '" + dir + "/config.yaml' --learning-rate 2e-4 --batch-size 4 --adapter-path '" + dir +
                               "/ad' --steps-per-report 1");
  ASSERT_EQ(r.code, 0) << r.err;
  const json c = json::parse(slurp(dir + "/ad/adapter_config.json"));
  EXPECT_EQ(c["learning_rate"], 2e-4);                 // flag over YAML
  EXPECT_EQ(c["batch_size"], 4);                       // a flag equal to the default still overrides
  EXPECT_EQ(c["iters"], 3);                            // YAML over default
  EXPECT_EQ(c["num_layers"], 2);
  EXPECT_EQ(c["optimizer"], "adamw");
  EXPECT_EQ(c["optimizer_config"]["adamw"]["weight_decay"], 0.05);
  EXPECT_EQ(c["lora_parameters"]["rank"], 4);
  EXPECT_EQ(c["lora_parameters"]["scale"], 20.0);      // default kept for the sub-key YAML omitted
  EXPECT_EQ(c["lora_parameters"]["keys"], json({"self_attn.q_proj", "self_attn.o_proj"}));
  EXPECT_EQ(c["lr_schedule"]["name"], "cosine_decay");
  EXPECT_EQ(c["config"], dir + "/config.yaml");
  EXPECT_EQ(c["train"], true);
  EXPECT_TRUE(contains(r.out, "Learning Rate 0.000e+00")) << r.out;  // warmup starts at warmup_init 0
}

TEST(TrainCli, AlphaEpochsAndScheduleFlags) {
  REQUIRE_DATA();
  const std::string data = quotes_data("epochs_data", 8, 4);
  const std::string ad = tmp_dir("epochs");
  const CmdResult r = run_lora("train --model '" + model() + "' --data '" + data + "' --adapter-path '" + ad +
                               "' --epochs 2 --batch-size 4 --num-layers 1 --lora-rank 16 --lora-alpha 32 --lora-keys q_proj,k_proj,mlp.down_proj"
                               " --lr-schedule cosine --warmup 1 --steps-per-report 1");
  ASSERT_EQ(r.code, 0) << r.err;
  const json c = json::parse(slurp(ad + "/adapter_config.json"));
  EXPECT_EQ(c["iters"], 4);  // 2 epochs of 8/4 batches
  EXPECT_EQ(c["epochs"], 2);
  EXPECT_EQ(c["lora_parameters"]["scale"], 2.0);
  EXPECT_EQ(c["lora_parameters"]["keys"], json({"self_attn.q_proj", "self_attn.k_proj", "mlp.down_proj"}));
  EXPECT_EQ(c["lr_schedule"]["name"], "cosine_decay");
  EXPECT_EQ(c["lr_schedule"]["warmup"], 1);
  EXPECT_TRUE(contains(r.out, "Starting training..., iters: 4")) << r.out;
}

TEST(TrainCli, ResumeContinuesTheRun) {
  REQUIRE_DATA();
  const std::string data = quotes_data("resume_data", 8, 4);
  const std::string ad = tmp_dir("resume"), straight = tmp_dir("resume_straight");
  const std::string common = "train --threads 1 --model '" + model() + "' --data '" + data + "' --num-layers 2 --batch-size 2 --steps-per-report 1 --lora-dropout 0.1 --learning-rate 1e-3";
  ASSERT_EQ(run_lora(common + " --adapter-path '" + straight + "' --iters 6").code, 0);
  ASSERT_EQ(run_lora(common + " --adapter-path '" + ad + "' --iters 3").code, 0);
  const CmdResult r = run_lora(common + " --adapter-path '" + ad + "' --iters 6 --resume");
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_TRUE(contains(r.out, "Resuming from iteration 3")) << r.out;
  std::vector<double> a, b;
  for (const json& j : metrics(straight))
    if (j["type"] == "train") a.push_back(j["train_loss"]);
  for (const json& j : metrics(ad))
    if (j["type"] == "train") b.push_back(j["train_loss"]);
  EXPECT_EQ(a.size(), 6u);
  EXPECT_EQ(a, b);
}

TEST(TrainCli, ImpossibleFlags) {
  REQUIRE_DATA();
  const std::string data = quotes_data("err_data", 8, 4);
  const std::string base = "train --threads 1 --model '" + model() + "' --data '" + data + "' --num-layers -1 --adapter-path '" + tmp_dir("err") + "' ";
  EXPECT_FLAG_ERROR(run_lora(base + "--lora-rank 0"), "--lora-rank");
  EXPECT_FLAG_ERROR(run_lora(base + "--iters 5 --epochs 2"), "--epochs");
  EXPECT_FLAG_ERROR(run_lora(base + "--batch-size 100"), "--batch-size");
  EXPECT_FLAG_ERROR(run_lora(base + "--mask-prompt"), "mask");
  EXPECT_FLAG_ERROR(run_lora(base + "--optimizer muon"), "--optimizer");
  EXPECT_FLAG_ERROR(run_lora(base + "--resume"), "--resume");
  EXPECT_FLAG_ERROR(run_lora(base + "--lora-dropout 1.5"), "--lora-dropout");
  EXPECT_FLAG_ERROR(run_lora(base + "--lora-keys q_proj,attn_x"), "--lora-keys");
  EXPECT_FLAG_ERROR(run_lora(base + "--lora-alpha 16 --lora-scale 2"), "--lora-alpha");
  EXPECT_FLAG_ERROR(run_lora(base + "--steps-per-report 0"), "--steps-per-report");
  EXPECT_FLAG_ERROR(run_lora("train --model '" + model() + "' --data '" + data + "' --num-layers 9"), "--num-layers");
  const std::string yaml = tmp_dir("err_yaml") + "/c.yaml";
  write(yaml, "batch_size: four\n");
  EXPECT_FLAG_ERROR(run_lora(base + "-c '" + yaml + "'"), "batch_size");
  write(yaml, "lr_schedule:\n  name: cosine_decay\n  arguments: [1e-5]\n");
  EXPECT_FLAG_ERROR(run_lora(base + "-c '" + yaml + "'"), "lr_schedule");
  write(yaml, "a: [1, 2\n");
  EXPECT_FLAG_ERROR(run_lora(base + "-c '" + yaml + "'"), yaml);
}

TEST(TrainCli, MissingValidIsAWarning) {
  REQUIRE_DATA();
  const std::string data = quotes_data("novalid", 8, 0, /*with_valid=*/false);
  const std::string ad = tmp_dir("novalid_ad");
  const CmdResult r = run_lora("train --model '" + model() + "' --data '" + data + "' --num-layers -1 --iters 2 --adapter-path '" + ad + "'");
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_TRUE(contains(r.err, "valid.jsonl")) << r.err;
  EXPECT_FALSE(contains(r.out, "Val loss")) << r.out;
  EXPECT_TRUE(lora::test::file_exists(ad + "/adapters.safetensors"));
}

TEST(TrainCli, AdapterPathErrors) {
  LORA_REQUIRE_SHARED("models/stories260K-hf/config.json");
  const CmdResult r = run_lora("generate --model '" + model() + "' --adapter-path '" + tmp_dir("noadapter") + "' --prompt hi");
  EXPECT_FLAG_ERROR(r, "adapter_config.json");
}

}  // namespace
