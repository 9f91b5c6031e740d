// End-to-end tests of `lora fuse` on stories260K (../shared): a LoRA and a DoRA adapter trained for a few
// steps at a high learning rate (so they change the output), fused into an HF folder; greedy generation from
// the fused folder equals generation from the base with --adapter-path; the folder holds the base's dtype,
// config and tokenizer files; a GGUF base fuses to the same model as its HF twin; --export-gguf writes a GGUF
// (default <save-path>/ggml-model-f16.gguf) that generates like the fused folder; a quantized GGUF base needs
// --dequantize; bad input (existing output without --force, a missing adapter) exits 1 with one message and
// leaves no output behind. Sharding (model/model_save.h) is in test_model_save.
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

CmdResult run_lora(const std::string& args) { return lora::test::run_lora("lora_fuse_cli_", args); }
std::string tmp_dir(const std::string& name) { return lora::test::tmp_dir("lora_fuse_cli_", name); }

std::string model() { return lora::test::shared_dir() + "/models/stories260K-hf"; }

std::string quotes_data(const std::string& name, int n_train, int n_valid) {
  return lora::test::write_quotes(tmp_dir(name), n_train, n_valid);
}

#define REQUIRE_DATA()                                          \
  LORA_REQUIRE_SHARED("models/stories260K-hf/config.json");   \
  LORA_REQUIRE_SHARED("data/english_quotes/quotes.jsonl")

// The generated text of a `lora generate` run (between its ========== lines).
std::string generated(const std::string& out) {
  const size_t a = out.find("==========\n"), b = out.rfind("\n==========");
  return a == std::string::npos || b == std::string::npos || b <= a ? out : out.substr(a + 11, b - a - 11);
}

void fuse_and_compare(const char* type) {
  const std::string data = quotes_data(std::string("data_") + type, 16, 4);
  const std::string ad = tmp_dir(std::string("adapter_") + type);
  const CmdResult t = run_lora("train --device cpu --model '" + model() + "' --data '" + data + "' --adapter-path '" + ad +
                               "' --iters 12 --learning-rate 1e-2 --num-layers -1 --batch-size 2 --fine-tune-type " + type +
                               " --lora-keys q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj --val-batches 0 --seed 3 --threads 1");
  ASSERT_EQ(t.code, 0) << t.err;
  const std::string out = tmp_dir(std::string("fused_") + type) + "/model";
  const CmdResult f = run_lora("fuse --model '" + model() + "' --adapter-path '" + ad + "' --save-path '" + out + "'");
  ASSERT_EQ(f.code, 0) << f.err;
  EXPECT_TRUE(contains(f.out, "Saved fused model to ")) << f.out;
  for (const char* file : {"model.safetensors", "config.json", "tokenizer.model"})
    EXPECT_TRUE(lora::test::file_exists(out + "/" + file)) << file;
  EXPECT_FALSE(lora::test::file_exists(out + "/model.safetensors.index.json"));  // far below one shard
  const std::string gen = "generate --device cpu --prompt 'Once upon a time' --ignore-chat-template --max-tokens 40 --threads 1";
  const CmdResult with_adapter = run_lora(gen + " --model '" + model() + "' --adapter-path '" + ad + "'");
  const CmdResult from_fused = run_lora(gen + " --model '" + out + "'");
  const CmdResult base = run_lora(gen + " --model '" + model() + "'");
  ASSERT_EQ(with_adapter.code, 0) << with_adapter.err;
  ASSERT_EQ(from_fused.code, 0) << from_fused.err;
  ASSERT_EQ(base.code, 0) << base.err;
  EXPECT_EQ(generated(from_fused.out), generated(with_adapter.out));
  EXPECT_NE(generated(from_fused.out), generated(base.out)) << "the adapter should change the greedy text";
}

TEST(FuseCli, LoraFusedGeneratesLikeAdapter) {
  REQUIRE_DATA();
  fuse_and_compare("lora");
}

TEST(FuseCli, DoraFusedGeneratesLikeAdapter) {
  REQUIRE_DATA();
  fuse_and_compare("dora");
}

TEST(FuseCli, BadInput) {
  REQUIRE_DATA();
  const std::string data = quotes_data("bad_data", 8, 2);
  const std::string ad = tmp_dir("bad_adapter");
  ASSERT_EQ(run_lora("train --device cpu --model '" + model() + "' --data '" + data + "' --adapter-path '" + ad +
                     "' --iters 1 --batch-size 2 --num-layers -1 --val-batches 0 --threads 1").code, 0);
  const std::string dir = tmp_dir("bad_out");
  // An existing output folder is refused without --force and kept as it was.
  write(dir + "/keep.txt", "x");
  CmdResult r = run_lora("fuse --model '" + model() + "' --adapter-path '" + ad + "' --save-path '" + dir + "'");
  EXPECT_EQ(r.code, 1) << r.err;
  EXPECT_TRUE(contains(r.err, "already exists") && contains(r.err, "--force")) << r.err;
  EXPECT_TRUE(lora::test::file_exists(dir + "/keep.txt"));
  r = run_lora("fuse --model '" + model() + "' --adapter-path '" + ad + "' --save-path '" + dir + "' --force");
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_FALSE(lora::test::file_exists(dir + "/keep.txt"));
  EXPECT_TRUE(lora::test::file_exists(dir + "/model.safetensors"));
  // A missing adapter, a GGUF base: one message, exit 1, nothing written.
  const std::string out2 = tmp_dir("bad_out2") + "/m";
  r = run_lora("fuse --model '" + model() + "' --adapter-path '" + ad + "/nope' --save-path '" + out2 + "'");
  EXPECT_EQ(r.code, 1) << r.err;
  EXPECT_TRUE(contains(r.err, "error: ")) << r.err;
  EXPECT_FALSE(lora::test::file_exists(out2));
  r = run_lora("fuse --model '" + model() + "/nope' --adapter-path '" + ad + "' --save-path '" + out2 + "'");
  EXPECT_EQ(r.code, 1) << r.err;
  EXPECT_TRUE(contains(r.err, "/nope")) << r.err;
  EXPECT_FALSE(lora::test::file_exists(out2));
}

TEST(FuseCli, GgufBaseAndExportGguf) {
  REQUIRE_DATA();
  LORA_REQUIRE_SHARED("models/stories260K/stories260K.gguf");
  const std::string data = quotes_data("gguf_data", 16, 4);
  const std::string ad = tmp_dir("gguf_adapter");
  ASSERT_EQ(run_lora("train --device cpu --model '" + model() + "' --data '" + data + "' --adapter-path '" + ad +
                     "' --iters 12 --learning-rate 1e-2 --num-layers -1 --batch-size 2 --val-batches 0 --seed 3 --threads 1")
                .code,
            0);
  const std::string d = tmp_dir("gguf_out");
  const std::string gguf = lora::test::shared_dir() + "/models/stories260K/stories260K.gguf";
  // Fused into the HF base, with the default GGUF export (f16) and an f32 one.
  CmdResult r = run_lora("fuse --model '" + model() + "' --adapter-path '" + ad + "' --save-path '" + d + "/hf' --export-gguf");
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_TRUE(lora::test::file_exists(d + "/hf/ggml-model-f16.gguf")) << r.out;
  r = run_lora("fuse --model '" + model() + "' --adapter-path '" + ad + "' --save-path '" + d +
               "/hf32' --export-gguf --gguf-type f32 --gguf-path '" + d + "/fused32.gguf'");
  ASSERT_EQ(r.code, 0) << r.err;
  // Fused into the GGUF twin of the same weights.
  r = run_lora("fuse --model '" + gguf + "' --adapter-path '" + ad + "' --save-path '" + d + "/from_gguf'");
  ASSERT_EQ(r.code, 0) << r.err;
  for (const char* f : {"config.json", "model.safetensors", "tokenizer.model", "tokenizer_config.json"})
    EXPECT_TRUE(lora::test::file_exists(d + "/from_gguf/" + f)) << f;
  const std::string gen = "generate --device cpu --prompt 'Once upon a time' --ignore-chat-template --max-tokens 40 --threads 1";
  const std::string want = generated(run_lora(gen + " --model '" + model() + "' --adapter-path '" + ad + "'").out);
  EXPECT_EQ(generated(run_lora(gen + " --model '" + d + "/hf'").out), want);
  EXPECT_EQ(generated(run_lora(gen + " --model '" + d + "/fused32.gguf'").out), want);
  EXPECT_EQ(generated(run_lora(gen + " --model '" + d + "/from_gguf'").out), want);
  EXPECT_FALSE(generated(run_lora(gen + " --model '" + d + "/hf/ggml-model-f16.gguf'").out).empty());

  // A quantized GGUF base: refused without --dequantize, fused in float with it.
  ASSERT_EQ(run_lora("convert --model '" + model() + "' --to gguf --quantize q8_0 --out '" + d + "/q8.gguf'").code, 0);
  r = run_lora("fuse --model '" + d + "/q8.gguf' --adapter-path '" + ad + "' --save-path '" + d + "/q'");
  EXPECT_EQ(r.code, 1);
  EXPECT_TRUE(contains(r.err, "--dequantize")) << r.err;
  EXPECT_FALSE(lora::test::file_exists(d + "/q"));
  r = run_lora("fuse --model '" + d + "/q8.gguf' --adapter-path '" + ad + "' --save-path '" + d + "/q' --de-quantize --export-gguf --gguf-type q8_0");
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_TRUE(contains(slurp(d + "/q/config.json"), "\"bfloat16\""));
  EXPECT_TRUE(lora::test::file_exists(d + "/q/ggml-model-q8_0.gguf"));
  EXPECT_FALSE(generated(run_lora(gen + " --model '" + d + "/q'").out).empty());
}

// The acceptance's second model: a tiny random Llama (GQA 4/2, untied, f32 so that the fused folder holds the same
// fp32 W' the adapter path computes), LoRA on every linear: the fused folder, its GGUF export and the adapter give
// the same greedy tokens; and the adapter converted mlx -> peft -> gguf generates the same on it too.
TEST(FuseCli, TinyRandomLlamaFusedAndConvertedAdapterGenerateAlike) {
  REQUIRE_DATA();
  LORA_REQUIRE_SHARED("models/stories260K/tok512.model");
  const std::string d = tmp_dir("tiny_random");
  write(d + "/config.json",
        "{\"architectures\": [\"LlamaForCausalLM\"], \"model_type\": \"llama\", \"hidden_size\": 128,"
        " \"intermediate_size\": 320, \"num_hidden_layers\": 2, \"num_attention_heads\": 4, \"num_key_value_heads\": 2,"
        " \"vocab_size\": 512, \"max_position_embeddings\": 256, \"rms_norm_eps\": 1e-5, \"rope_theta\": 10000.0,"
        " \"tie_word_embeddings\": false, \"bos_token_id\": 1, \"eos_token_id\": 2}");
  ASSERT_EQ(std::system(("cp '" + lora::test::shared_dir() + "/models/stories260K/tok512.model' '" + d + "/tokenizer.model'").c_str()), 0);
  ASSERT_EQ(run_lora("init --config '" + d + "/config.json' --out '" + d + "/m' --dtype f32 --seed 4").code, 0);
  const std::string data = quotes_data("tiny_random_data", 16, 4), ad = d + "/ad";
  const CmdResult t = run_lora("train --device cpu --model '" + d + "/m' --data '" + data + "' --adapter-path '" + ad +
                               "' --iters 15 --learning-rate 2e-2 --num-layers -1 --batch-size 2 --val-batches 0 --seed 3 --threads 1"
                               " --lora-keys q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj");
  ASSERT_EQ(t.code, 0) << t.err;
  ASSERT_EQ(run_lora("fuse --model '" + d + "/m' --adapter-path '" + ad + "' --save-path '" + d + "/fused' --export-gguf --gguf-type f32").code, 0);
  ASSERT_EQ(run_lora("convert --model '" + d + "/m' --adapter-path '" + ad + "' --to peft --out '" + d + "/peft'").code, 0);
  ASSERT_EQ(run_lora("convert --model '" + d + "/m' --adapter-path '" + d + "/peft' --to gguf --out '" + d + "/ad.gguf'").code, 0);
  const std::string gen = "generate --device cpu --prompt 'Once upon a time' --ignore-chat-template --max-tokens 30 --threads 1";
  const std::string want = generated(run_lora(gen + " --model '" + d + "/m' --adapter-path '" + ad + "'").out);
  EXPECT_NE(want, generated(run_lora(gen + " --model '" + d + "/m'").out)) << "the adapter should change the greedy text";
  EXPECT_EQ(generated(run_lora(gen + " --model '" + d + "/fused'").out), want);
  EXPECT_EQ(generated(run_lora(gen + " --model '" + d + "/fused/ggml-model-f32.gguf'").out), want);
  EXPECT_EQ(generated(run_lora(gen + " --model '" + d + "/m' --adapter-path '" + d + "/ad.gguf'").out), want);
}

}  // namespace
