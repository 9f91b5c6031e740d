// End-to-end tests of `lora bench` on the CPU with the tiny golden fixture model (2 blocks, V = 67,
// context 128): the markdown table and the --json rows (one per table row, every field sane: tokens,
// times ordered min <= p10 <= median <= p90 <= max, peak memory, no MFU on the CPU), the token count
// of peft_baseline.py's workload, --mode, appending, and impossible flags (exit 1, one message naming
// the flag, never an internal error).
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "cli_util.h"
#include "test_util.h"

namespace {

using nlohmann::json;

using lora::test::CmdResult;
using lora::test::contains;
using lora::test::slurp;

std::string tmp_path(const std::string& name) {
  return ::testing::TempDir() + "/lora_bench_cli_" + std::to_string(::getpid()) + "_" + name;
}

CmdResult run_lora(const std::string& args) { return lora::test::run_lora("lora_bench_cli_", args); }

std::vector<json> json_lines(const std::string& path) {
  std::vector<json> v;
  std::istringstream in(slurp(path));
  for (std::string l; std::getline(in, l);)
    if (!l.empty()) v.push_back(json::parse(l));  // throws (fails the test) on a malformed line
  return v;
}

std::string model() { return lora::test::fixture("golden/llama_untied"); }

// The common part of every run: small, fast, on the CPU.
// Flags may be given once only (CLI11), so the tests add --mode, --iters, ... themselves.
std::string base_args() { return "bench --model '" + model() + "' --device cpu --threads 1"; }
std::string small_args() { return base_args() + " --iters 2 --warmup 1 --prompt-len 8 --gen-len 4"; }

// r is evaluated once (it may be the run itself).
#define EXPECT_FLAG_ERROR(r, flag)                                                       \
  do {                                                                                   \
    const CmdResult r_ = (r);                                                            \
    EXPECT_EQ(r_.code, 1) << r_.err;                                                     \
    EXPECT_TRUE(contains(r_.err, "error: ")) << r_.err;                                  \
    EXPECT_TRUE(contains(r_.err, flag)) << "expected " << flag << " in: " << r_.err;     \
    EXPECT_FALSE(contains(r_.err, "bug in lora")) << r_.err;                             \
  } while (0)

void expect_sane_times(const json& j) {
  const std::string m = j.dump();
  const double med = j["ms_per_step_median"].get<double>(), lo = j["ms_min"].get<double>(), hi = j["ms_max"].get<double>();
  const double p10 = j["p10"].get<double>(), p90 = j["p90"].get<double>();
  EXPECT_GT(lo, 0) << m;
  EXPECT_LE(lo, p10) << m;
  EXPECT_LE(p10, med) << m;
  EXPECT_LE(med, p90) << m;
  EXPECT_LE(p90, hi) << m;
  EXPECT_GT(j["seconds"].get<double>(), 0) << m;
  EXPECT_GT(j["tokens"].get<int64_t>(), 0) << m;
  EXPECT_GT(j["tokens_per_sec"].get<double>(), 0) << m;
  EXPECT_GT(j["ms_per_step"].get<double>(), 0) << m;
  EXPECT_GT(j["peak_gib"].get<double>(), 0) << m;
  EXPECT_GT(j["model_tflop"].get<double>(), 0) << m;
  EXPECT_GE(j["hardware_tflop"].get<double>(), j["model_tflop"].get<double>()) << m;
  EXPECT_GT(j["gb_per_s"].get<double>(), 0) << m;
  EXPECT_TRUE(j["mfu"].is_null()) << "no MFU on the CPU: " << m;  // no dense peak is known for a CPU
  EXPECT_EQ(j["system"], "lora.cpp");
  EXPECT_TRUE(contains(j["device"].get<std::string>(), "cpu")) << m;
}

TEST(BenchCli, AllModesTableAndJson) {
  const std::string out = tmp_path("all.jsonl");
  std::remove(out.c_str());
  const CmdResult r = run_lora(small_args() + " --mean-len 5,40 --batch-size 1,2 --grad-checkpoint 0,1 --json '" + out + "'");
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_TRUE(contains(r.out, "lora bench | device: cpu")) << r.out;
  EXPECT_TRUE(contains(r.out, "| test | B | mean len | ckpt | tokens | tokens/s |")) << r.out;
  EXPECT_TRUE(contains(r.out, "| pp8 | 1 |")) << r.out;
  EXPECT_TRUE(contains(r.out, "| tg4 | 1 |")) << r.out;
  EXPECT_TRUE(contains(r.out, "| train lora | 2 | 40 | on |")) << r.out;
  size_t table_rows = 0;  // one table row per JSON row
  for (size_t p = r.out.find("\n| "); p != std::string::npos; p = r.out.find("\n| ", p + 1)) ++table_rows;

  const std::vector<json> rows = json_lines(out);
  ASSERT_EQ(rows.size(), 2u + 2 * 2 * 2);  // prefill, decode, then batch x mean len x checkpoint
  EXPECT_EQ(table_rows, 1 + rows.size()) << r.out;  // and the header line
  EXPECT_EQ(rows[0]["mode"], "prefill");
  EXPECT_EQ(rows[0]["tokens"], 8);
  EXPECT_EQ(rows[0]["prompt_len"], 8);
  EXPECT_EQ(rows[1]["mode"], "decode");
  EXPECT_EQ(rows[1]["tokens"], 4);
  EXPECT_EQ(rows[1]["gen_len"], 4);
  for (const json& j : rows) expect_sane_times(j);

  // Training rows in grid order, with the workload's token count: every sequence has 24 <= L <= 128
  // tokens (the context), so a step of B rows trains on B·23 .. B·127 targets.
  size_t i = 2;
  for (int64_t B : {1, 2})
    for (int64_t len : {5, 40})
      for (bool ck : {false, true}) {
        const json& j = rows[i++];
        const std::string m = j.dump();
        EXPECT_EQ(j["mode"], "train") << m;
        EXPECT_EQ(j["batch_size"], B) << m;
        EXPECT_EQ(j["mean_len"], len) << m;
        EXPECT_EQ(j["grad_checkpoint"], ck) << m;
        EXPECT_EQ(j["iters"], 2) << m;
        EXPECT_EQ(j["fine_tune_type"], "lora") << m;
        EXPECT_EQ(j["max_seq_length"], 128) << "the default 512 is capped at the model's context: " << m;
        EXPECT_EQ(j["num_layers"], 2) << "the default 16 is capped at the model's blocks: " << m;
        EXPECT_GT(j["trainable"].get<int64_t>(), 0) << m;
        const int64_t tokens = j["tokens"].get<int64_t>();
        EXPECT_GE(tokens, 2 * B * 23) << m;
        EXPECT_LE(tokens, 2 * B * 127) << m;
        EXPECT_GE(j["padded_tokens"].get<int64_t>(), tokens) << m;
        EXPECT_TRUE(j["loss"].is_number() && std::isfinite(j["loss"].get<double>()) && j["loss"].get<double>() > 0) << m;
        if (len == 5) {  // N(5, 1.5) stays far below the floor of 24: every row has 24 tokens
          EXPECT_EQ(tokens, 2 * B * 23) << m;
        }
      }
  // The data depend on the seed only: checkpointing on and off train on the same tokens.
  for (size_t k = 2; k < rows.size(); k += 2) EXPECT_EQ(rows[k]["tokens"], rows[k + 1]["tokens"]);
  // Recomputation costs hardware FLOPs, not model FLOPs.
  EXPECT_DOUBLE_EQ(rows[2]["model_tflop"].get<double>(), rows[3]["model_tflop"].get<double>());
  EXPECT_GT(rows[3]["hardware_tflop"].get<double>(), rows[3]["model_tflop"].get<double>());
  EXPECT_DOUBLE_EQ(rows[2]["hardware_tflop"].get<double>(), rows[2]["model_tflop"].get<double>());
}

TEST(BenchCli, ModesAppendAndPadding) {
  const std::string out = tmp_path("modes.jsonl");
  std::remove(out.c_str());
  CmdResult r = run_lora(small_args() + " --mode generate --json '" + out + "'");
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_FALSE(contains(r.out, "train lora")) << r.out;
  r = run_lora(small_args() + " --mode train --grad-checkpoint 1 --pad-multiple 32 --fine-tune-type dora --mean-len 30 --json '" + out + "'");
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_FALSE(contains(r.out, "| pp8 ")) << r.out;
  const std::vector<json> rows = json_lines(out);  // appended: the first run's two rows, then one
  ASSERT_EQ(rows.size(), 3u);
  EXPECT_EQ(rows[0]["mode"], "prefill");
  EXPECT_EQ(rows[1]["mode"], "decode");
  EXPECT_EQ(rows[2]["mode"], "train");
  EXPECT_EQ(rows[2]["fine_tune_type"], "dora");
  EXPECT_EQ(rows[2]["grad_checkpoint"], true);
  for (const json& j : rows) expect_sane_times(j);
  // Padded to a multiple of 32 positions per row (capped at the context): 2 steps of one row each.
  const int64_t padded = rows[2]["padded_tokens"].get<int64_t>();
  EXPECT_EQ(padded % 32, 0) << rows[2].dump();
  EXPECT_GE(padded, rows[2]["tokens"].get<int64_t>());
}

TEST(BenchCli, ImpossibleFlags) {
  const std::string a = base_args() + " --mode train --prompt-len 8 --gen-len 4";
  EXPECT_FLAG_ERROR(run_lora(a + " --batch-size 0"), "--batch-size");
  EXPECT_FLAG_ERROR(run_lora(a + " --batch-size 1,x"), "--batch-size");
  EXPECT_FLAG_ERROR(run_lora(a + " --batch-size 1,,2"), "--batch-size");
  EXPECT_FLAG_ERROR(run_lora(a + " --mean-len 0"), "--mean-len");
  EXPECT_FLAG_ERROR(run_lora(a + " --mean-len 89abc"), "--mean-len");
  EXPECT_FLAG_ERROR(run_lora(a + " --grad-checkpoint 2"), "--grad-checkpoint");
  EXPECT_FLAG_ERROR(run_lora(a + " --iters 0"), "--iters");
  EXPECT_FLAG_ERROR(run_lora(a + " --warmup -1"), "--warmup");
  EXPECT_FLAG_ERROR(run_lora(a + " --lora-keys q_proj,nope"), "--lora-keys");
  EXPECT_FLAG_ERROR(run_lora(a + " --fine-tune-type half"), "--fine-tune-type");
  EXPECT_FLAG_ERROR(run_lora(base_args() + " --mode both"), "--mode");
  EXPECT_FLAG_ERROR(run_lora(a + " --max-seq-length 4096"), "--max-seq-length");  // beyond the context of 128
  EXPECT_FLAG_ERROR(run_lora(a + " --num-layers 3"), "--num-layers");            // the model has 2 blocks
  EXPECT_FLAG_ERROR(run_lora(a + " --preset tinyllama"), "--preset");            // together with --model
  EXPECT_FLAG_ERROR(run_lora("bench --preset gpt5 --device cpu"), "--preset");
  EXPECT_FLAG_ERROR(run_lora(base_args() + " --mode generate --prompt-len 120 --gen-len 20"), "--prompt-len");
  EXPECT_FLAG_ERROR(run_lora("bench --model '" + model() + "' --device tpu"), "--device");
}

}  // namespace
