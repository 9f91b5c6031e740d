// End-to-end tests of the `lora` binary: help text, generation on real models, and bad input (missing
// or corrupt files, malformed JSON, unsupported architecture, shapes that disagree with config.json,
// impossible flags, a prompt longer than the context): exit code 1 and one message naming the file or
// field, never a crash.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include <array>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>

#include "cli_util.h"
#include "test_util.h"

namespace {

using lora::test::CmdResult;
using lora::test::contains;
using lora::test::slurp;
using lora::test::write;

std::string tmp_dir(const std::string& name) { return lora::test::tmp_dir("lora_cli_", name); }

// Runs `lora <args>` with optional stdin text; captures stdout, stderr, exit code.
CmdResult run_lora(const std::string& args, const std::string& stdin_text = "") {
  return lora::test::run_lora("lora_cli_", args, stdin_text);
}

#define EXPECT_USER_ERROR(r, needle)                                                   \
  do {                                                                                 \
    EXPECT_EQ((r).code, 1) << "stderr: " << (r).err;                                    \
    EXPECT_TRUE(contains((r).err, "error")) << (r).err;                                 \
    EXPECT_TRUE(contains((r).err, needle)) << "expected '" << (needle) << "' in: " << (r).err; \
  } while (0)

std::string stories_hf() { return lora::test::shared_dir() + "/models/stories260K-hf"; }
std::string stories_gguf() { return lora::test::shared_dir() + "/models/stories260K/stories260K.gguf"; }

// A copy of stories260K-hf that a test may damage.
std::string copy_stories_hf(const std::string& name) {
  const std::string d = tmp_dir(name);
  const std::string cmd = "cp '" + stories_hf() + "'/* '" + d + "'/";
  EXPECT_EQ(std::system(cmd.c_str()), 0);
  return d;
}

}  // namespace

TEST(Cli, HelpListsCommandsAndDefaults) {
  CmdResult r = run_lora("--help");
  EXPECT_EQ(r.code, 0);
  for (const char* c : {"generate", "chat", "tokenize", "init"}) EXPECT_TRUE(contains(r.out, c)) << c;
  CmdResult g = run_lora("generate --help");
  EXPECT_EQ(g.code, 0);
  for (const char* flag : {"--model", "--prompt", "--system-prompt", "--max-tokens", "--temp", "--top-p", "--top-k",
                           "--min-p", "--seed", "--ignore-chat-template", "--max-kv-size"})
    EXPECT_TRUE(contains(g.out, flag)) << flag;
  EXPECT_TRUE(contains(g.out, "100")) << "the --max-tokens default is shown";
}

TEST(Cli, NoCommandAndUnknownFlagsExitOne) {
  EXPECT_EQ(run_lora("").code, 1);
  EXPECT_EQ(run_lora("generate --model x --no-such-flag").code, 1);
  EXPECT_EQ(run_lora("generate").code, 1);  // --model is required
}

TEST(Cli, MissingModelPath) {
  CmdResult r = run_lora("generate --model /nonexistent/model-dir --prompt hi");
  EXPECT_USER_ERROR(r, "/nonexistent/model-dir");
  EXPECT_TRUE(contains(r.err, "hint")) << r.err;
}

TEST(Cli, ImpossibleSamplingFlags) {
  LORA_REQUIRE_SHARED("models/stories260K/stories260K.gguf");
  EXPECT_USER_ERROR(run_lora("generate --model " + stories_gguf() + " --temp -1"), "--temp");
  EXPECT_USER_ERROR(run_lora("generate --model " + stories_gguf() + " --top-p 1.5"), "--top-p");
  EXPECT_USER_ERROR(run_lora("generate --model " + stories_gguf() + " --min-p 2"), "--min-p");
}

TEST(Cli, GeneratesFromStories260KGguf) {
  LORA_REQUIRE_SHARED("models/stories260K/stories260K.gguf");
  CmdResult r = run_lora("generate --model " + stories_gguf() + " --prompt 'Once upon a time' --max-tokens 30 --temp 0");
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_GT(r.out.size(), 40u) << r.out;
  EXPECT_TRUE(contains(r.err, "Prompt:")) << r.err;
  EXPECT_TRUE(contains(r.err, "Generation:")) << r.err;
  EXPECT_TRUE(contains(r.err, "Peak memory:")) << r.err;
  // The same through the HF folder: identical greedy text.
  CmdResult h = run_lora("generate --model " + stories_hf() + " --prompt 'Once upon a time' --max-tokens 30 --temp 0");
  ASSERT_EQ(h.code, 0) << h.err;
  EXPECT_EQ(h.out, r.out);
  // Sampling with a seed is reproducible.
  const std::string s = "generate --model " + stories_gguf() + " --prompt 'Once' --max-tokens 20 --temp 0.8 --top-k 40 --seed 7";
  EXPECT_EQ(run_lora(s).out, run_lora(s).out);
}

TEST(Cli, PromptFromStdin) {
  LORA_REQUIRE_SHARED("models/stories260K/stories260K.gguf");
  CmdResult a = run_lora("generate --model " + stories_gguf() + " --prompt - --max-tokens 10", "Lily saw a cat");
  CmdResult b = run_lora("generate --model " + stories_gguf() + " --prompt 'Lily saw a cat' --max-tokens 10");
  ASSERT_EQ(a.code, 0) << a.err;
  EXPECT_EQ(a.out, b.out);
}

TEST(Cli, PromptLongerThanContext) {
  LORA_REQUIRE_SHARED("models/stories260K/stories260K.gguf");
  CmdResult r = run_lora("generate --model " + stories_gguf() + " --max-kv-size 8 --prompt 'one two three four five six seven eight nine ten eleven'");
  EXPECT_USER_ERROR(r, "context");
}

TEST(Cli, CorruptGguf) {
  const std::string d = tmp_dir("corrupt_gguf");
  write(d + "/bad.gguf", "GGUF\x03\x00\x00\x00garbage");
  EXPECT_USER_ERROR(run_lora("generate --model " + d + "/bad.gguf"), "bad.gguf");
  write(d + "/notgguf.gguf", "this is not a model");
  EXPECT_USER_ERROR(run_lora("generate --model " + d + "/notgguf.gguf"), "notgguf.gguf");
}

TEST(Cli, TruncatedGguf) {
  LORA_REQUIRE_SHARED("models/stories260K/stories260K.gguf");
  const std::string d = tmp_dir("trunc_gguf");
  const std::string bytes = slurp(stories_gguf());
  write(d + "/t.gguf", bytes.substr(0, bytes.size() / 2));
  EXPECT_USER_ERROR(run_lora("generate --model " + d + "/t.gguf"), "t.gguf");
}

TEST(Cli, TruncatedSafetensors) {
  LORA_REQUIRE_SHARED("models/stories260K-hf/model.safetensors");
  const std::string d = copy_stories_hf("trunc_st");
  const std::string bytes = slurp(d + "/model.safetensors");
  write(d + "/model.safetensors", bytes.substr(0, bytes.size() - 1000));
  EXPECT_USER_ERROR(run_lora("generate --model " + d), "model.safetensors");
}

TEST(Cli, MalformedConfigJson) {
  LORA_REQUIRE_SHARED("models/stories260K-hf/config.json");
  const std::string d = copy_stories_hf("bad_json");
  write(d + "/config.json", "{\"model_type\": \"llama\", \"hidden_size\": 64,");
  EXPECT_USER_ERROR(run_lora("generate --model " + d), "config.json");
}

TEST(Cli, UnsupportedArchitecture) {
  LORA_REQUIRE_SHARED("models/stories260K-hf/config.json");
  const std::string d = copy_stories_hf("bad_arch");
  std::string cfg = slurp(d + "/config.json");
  const size_t p = cfg.find("\"llama\"");
  ASSERT_NE(p, std::string::npos);
  cfg.replace(p, 7, "\"gpt_neox\"");
  write(d + "/config.json", cfg);
  CmdResult r = run_lora("generate --model " + d);
  EXPECT_USER_ERROR(r, "gpt_neox");
}

TEST(Cli, ShapesDisagreeWithConfig) {
  LORA_REQUIRE_SHARED("models/stories260K-hf/config.json");
  const std::string d = copy_stories_hf("bad_shape");
  std::string cfg = slurp(d + "/config.json");
  const size_t p = cfg.find("\"intermediate_size\"");
  ASSERT_NE(p, std::string::npos);
  const size_t v = cfg.find("172", p);
  cfg.replace(v, 3, "176");
  write(d + "/config.json", cfg);
  CmdResult r = run_lora("generate --model " + d);
  EXPECT_USER_ERROR(r, "mlp");
}

TEST(Cli, TokenizeVocabOnlyGguf) {
  LORA_REQUIRE_SHARED("models/llama-spm-vocab/ggml-vocab-llama-spm.gguf");
  CmdResult r = run_lora("tokenize --model " + lora::test::shared_dir() + "/models/llama-spm-vocab/ggml-vocab-llama-spm.gguf --text 'Hello world'");
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(r.out, "1 15043 3186\n");
}

TEST(Cli, TokenizeTokenizerOnlyFolder) {
  LORA_REQUIRE_SHARED("models/TinyLlama-1.1B-Chat-v1.0/tokenizer.json");
  CmdResult r = run_lora("tokenize --model " + lora::test::shared_dir() + "/models/TinyLlama-1.1B-Chat-v1.0", "Hello world");
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(r.out, "1 15043 3186\n");
}

TEST(Cli, SmolLM2AnswersAndChats) {
  LORA_REQUIRE_SMOLLM2();
  const std::string m = lora::test::smollm2_gguf();
  CmdResult r = run_lora("generate --model " + m + " --prompt 'What is the capital of France?' --max-tokens 24");
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_TRUE(contains(r.out, "Paris")) << r.out;
  CmdResult c = run_lora("chat --model " + m + " --max-tokens 16", "What is the capital of France?\nAnd of Italy?\n");
  ASSERT_EQ(c.code, 0) << c.err;
  EXPECT_TRUE(contains(c.out, "Paris")) << c.out;
  EXPECT_TRUE(contains(c.out, "Rome")) << c.out;
}

TEST(Cli, InitWritesALoadableModel) {
  LORA_REQUIRE_SHARED("models/stories260K-hf/config.json");
  const std::string d = tmp_dir("init");
  CmdResult r = run_lora("init --config " + stories_hf() + "/config.json --out " + d + "/m --dtype f32 --seed 3");
  ASSERT_EQ(r.code, 0) << r.err;
  CmdResult g = run_lora("generate --model " + d + "/m --prompt 'Once' --max-tokens 5 --ignore-chat-template");
  EXPECT_EQ(g.code, 0) << g.err;
  // Refuses to overwrite without --force.
  EXPECT_USER_ERROR(run_lora("init --config " + stories_hf() + "/config.json --out " + d + "/m"), "--force");
}
