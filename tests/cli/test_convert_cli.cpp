// End-to-end tests of `lora convert` for models (../shared's stories260K): HF -> GGUF -> HF gives back the
// same safetensors bytes; GGUF -> HF -> GGUF the same tensors; every --quantize type writes a GGUF that
// generates (q8_0 the same greedy text as the f32 model); an existing output is refused without --force;
// bad input (a missing model, --to mlx without an adapter, --quantize with --to hf, a GGUF of an
// unsupported architecture) exits 1 naming the file or flag; a write that runs out of space (a file size
// limit) exits 1 and leaves nothing behind. Bit-level checks of the exporter are in test_model_gguf_save.
#include <gtest/gtest.h>

#include <filesystem>
#include <string>

#include "cli_util.h"
#include "io/gguf.h"

namespace {

using lora::test::CmdResult;
using lora::test::contains;
using lora::test::slurp;

CmdResult run_lora(const std::string& args) { return lora::test::run_lora("lora_convert_cli_", args); }
std::string tmp_dir(const std::string& name) { return lora::test::tmp_dir("lora_convert_cli_", name); }
std::string hf() { return lora::test::shared_dir() + "/models/stories260K-hf"; }
std::string gguf() { return lora::test::shared_dir() + "/models/stories260K/stories260K.gguf"; }

#define REQUIRE_MODELS()                                     \
  LORA_REQUIRE_SHARED("models/stories260K-hf/config.json"); \
  LORA_REQUIRE_SHARED("models/stories260K/stories260K.gguf")

std::string generated(const std::string& out) {
  const size_t a = out.find("==========\n"), b = out.rfind("\n==========");
  return a == std::string::npos || b == std::string::npos || b <= a ? out : out.substr(a + 11, b - a - 11);
}
std::string gen(const std::string& model) {
  const CmdResult r = run_lora("generate --device cpu --model '" + model +
                               "' --prompt 'Once upon a time' --ignore-chat-template --max-tokens 30 --threads 1");
  EXPECT_EQ(r.code, 0) << r.err;
  return generated(r.out);
}

TEST(ConvertCli, HfToGgufToHf) {
  REQUIRE_MODELS();
  const std::string d = tmp_dir("hf_gguf_hf");
  CmdResult r = run_lora("convert --model '" + hf() + "' --to gguf --out '" + d + "/m.gguf'");
  ASSERT_EQ(r.code, 0) << r.err;
  r = run_lora("convert --model '" + d + "/m.gguf' --to hf --out '" + d + "/back'");
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(slurp(d + "/back/model.safetensors"), slurp(hf() + "/model.safetensors"));
  for (const char* f : {"config.json", "tokenizer.model", "tokenizer_config.json"})
    EXPECT_TRUE(lora::test::file_exists(d + "/back/" + f)) << f;
  const std::string want = gen(hf());
  EXPECT_EQ(gen(d + "/m.gguf"), want);
  EXPECT_EQ(gen(d + "/back"), want);
  // The tokenizer of the exported folder and GGUF give the source ids.
  const std::string text = " --text 'Once upon a time, Lily saw a big red ball.'";
  const CmdResult t0 = run_lora("tokenize --model '" + hf() + "'" + text);
  EXPECT_EQ(run_lora("tokenize --model '" + d + "/m.gguf'" + text).out, t0.out);
  EXPECT_EQ(run_lora("tokenize --model '" + d + "/back'" + text).out, t0.out);
}

TEST(ConvertCli, GgufToHfToGgufAndOuttype) {
  REQUIRE_MODELS();
  const std::string d = tmp_dir("gguf_hf_gguf");
  ASSERT_EQ(run_lora("convert --model '" + gguf() + "' --to hf --out '" + d + "/hf'").code, 0);
  ASSERT_EQ(run_lora("convert --model '" + d + "/hf' --to gguf --out '" + d + "/m.gguf'").code, 0);
  auto a = lora::GGUFFile::open(gguf());
  auto b = lora::GGUFFile::open(d + "/m.gguf");
  ASSERT_EQ(a->tensors().size(), b->tensors().size());
  for (const auto& t : a->tensors()) {
    const auto* u = b->find_tensor(t.name);
    ASSERT_NE(u, nullptr) << t.name;
    EXPECT_EQ(std::string(static_cast<const char*>(u->data), size_t(u->nbytes)),
              std::string(static_cast<const char*>(t.data), size_t(t.nbytes)))
        << t.name;
  }
  // --outtype: bf16 GGUF, bf16 HF folder.
  CmdResult r = run_lora("convert --model '" + hf() + "' --to gguf --outtype bf16 --out '" + d + "/bf16.gguf'");
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(lora::GGUFFile::open(d + "/bf16.gguf")->find_tensor("blk.0.attn_q.weight")->dtype, lora::DTYPE_BF16);
  r = run_lora("convert --model '" + d + "/bf16.gguf' --to hf --out '" + d + "/bf16_hf'");
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_TRUE(contains(slurp(d + "/bf16_hf/config.json"), "\"bfloat16\""));
}

TEST(ConvertCli, QuantizeEachType) {
  REQUIRE_MODELS();
  const std::string d = tmp_dir("quant");
  const std::string want = gen(hf());
  for (const char* q : {"q8_0", "q4_0", "q4_k"}) {
    const std::string out = d + "/" + q + ".gguf";
    const CmdResult r = run_lora("convert --model '" + hf() + "' --to gguf --quantize " + q + " --out '" + out + "'");
    ASSERT_EQ(r.code, 0) << q << ": " << r.err;
    auto f = lora::GGUFFile::open(out);
    EXPECT_EQ(f->get_int("general.quantization_version", 0), 2) << q;
    EXPECT_TRUE(lora::dtype_is_quant(f->find_tensor("blk.0.attn_q.weight")->dtype)) << q;
    const std::string g = gen(out);
    EXPECT_FALSE(g.empty()) << q;
    if (std::string(q) == "q8_0") {
      EXPECT_EQ(g, want);
    }
    // A quantized GGUF converts to an HF folder (dequantized, bf16 by default) that generates.
    const CmdResult h = run_lora("convert --model '" + out + "' --to hf --out '" + d + "/" + q + "_hf'");
    ASSERT_EQ(h.code, 0) << h.err;
    EXPECT_TRUE(contains(slurp(d + "/" + q + "_hf/config.json"), "\"bfloat16\"")) << q;
    EXPECT_FALSE(gen(d + "/" + q + "_hf").empty());
  }
}

TEST(ConvertCli, ExistingOutputAndBadInput) {
  REQUIRE_MODELS();
  const std::string d = tmp_dir("bad");
  lora::test::write(d + "/m.gguf", "keep");
  CmdResult r = run_lora("convert --model '" + hf() + "' --to gguf --out '" + d + "/m.gguf'");
  EXPECT_EQ(r.code, 1);
  EXPECT_TRUE(contains(r.err, "already exists") && contains(r.err, "--force")) << r.err;
  EXPECT_EQ(slurp(d + "/m.gguf"), "keep");
  r = run_lora("convert --model '" + hf() + "' --to gguf --force --out '" + d + "/m.gguf'");
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_NO_THROW(lora::GGUFFile::open(d + "/m.gguf"));

  r = run_lora("convert --model '" + d + "/nope' --to gguf --out '" + d + "/x.gguf'");
  EXPECT_EQ(r.code, 1);
  EXPECT_TRUE(contains(r.err, d + "/nope")) << r.err;
  r = run_lora("convert --model '" + hf() + "' --to mlx --out '" + d + "/x'");
  EXPECT_EQ(r.code, 1);
  EXPECT_TRUE(contains(r.err, "--to mlx")) << r.err;
  r = run_lora("convert --model '" + hf() + "' --to hf --quantize q8_0 --out '" + d + "/x'");
  EXPECT_EQ(r.code, 1);
  EXPECT_TRUE(contains(r.err, "--quantize")) << r.err;
  // A GGUF of an architecture we do not hold.
  lora::GGUFWriter w;
  w.set_str("general.architecture", "gpt2");
  const float x[4] = {};
  w.add_tensor("token_embd.weight", lora::DTYPE_F32, {4}, x);
  w.write(d + "/gpt2.gguf");
  r = run_lora("convert --model '" + d + "/gpt2.gguf' --to hf --out '" + d + "/x'");
  EXPECT_EQ(r.code, 1);
  EXPECT_TRUE(contains(r.err, d + "/gpt2.gguf") && contains(r.err, "gpt2")) << r.err;
  EXPECT_FALSE(lora::test::file_exists(d + "/x"));
}

// A file size limit (ulimit -f, SIGXFSZ ignored so write() fails with EFBIG) stands in for a full disk.
TEST(ConvertCli, WriteFailureLeavesNothing) {
  REQUIRE_MODELS();
  const std::string d = tmp_dir("full");
  const std::string lim = "bash -c \"trap '' XFSZ; ulimit -f 200; exec '" + lora::test::lora_bin() + "' ";
  auto run_limited = [&](const std::string& args) {
    const int st = std::system((lim + args + "\" >/dev/null 2>'" + d + "/err'").c_str());
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  };
  EXPECT_EQ(run_limited("convert --model '" + hf() + "' --to gguf --out '" + d + "/m.gguf'"), 1);
  EXPECT_TRUE(contains(slurp(d + "/err"), "m.gguf")) << slurp(d + "/err");
  EXPECT_EQ(run_limited("convert --model '" + gguf() + "' --to hf --out '" + d + "/hf'"), 1);
  std::size_t left = 0;
  for (const auto& e : std::filesystem::directory_iterator(d))
    if (e.path().filename() != "err") ++left;
  EXPECT_EQ(left, 0u) << "partial output left in " << d;
}

}  // namespace
