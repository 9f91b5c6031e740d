// End-to-end tests of `lora convert --adapter-path` between mlx-lm, PEFT and GGUF-LoRA on stories260K (../shared):
// a random LoRA adapter (B non-zero, every linear of every block) converted mlx -> peft -> gguf -> mlx keeps its
// factors bit for bit; greedy generation (`lora generate --temp 0`) with the GGUF-LoRA file equals generation with
// the mlx-lm folder, on the GGUF base and on the HF base; `lora train --resume-adapter-file` starts from the same
// weights (the same first validation loss) given the mlx-lm, PEFT or GGUF-LoRA form; bad input (DoRA to gguf, an
// existing output without --force, an adapter of another architecture, unknown tensor names) exits 1 with one
// message naming the file or tensor.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "cli_util.h"
#include "core/rng.h"
#include "io/gguf.h"
#include "train/adapter_io.h"
#include "train/adapter_peft.h"

namespace {

using lora::test::CmdResult;
using lora::test::contains;

CmdResult run_lora(const std::string& args) { return lora::test::run_lora("lora_adconv_cli_", args); }
std::string tmp_dir(const std::string& name) { return lora::test::tmp_dir("lora_adconv_cli_", name); }

std::string hf() { return lora::test::shared_dir() + "/models/stories260K-hf"; }
std::string gguf_base() { return lora::test::shared_dir() + "/models/stories260K/stories260K.gguf"; }

#define REQUIRE_STORIES()                                        \
  LORA_REQUIRE_SHARED("models/stories260K/stories260K.gguf");   \
  LORA_REQUIRE_SHARED("models/stories260K-hf/config.json")

const char* kAllKeys = "q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj";

// An mlx-lm adapter folder with random factors (B non-zero) on every linear of every block.
std::string random_mlx_adapter(const std::string& name, lora::FineTuneType type = lora::FT_LORA) {
  const lora::Model m = lora::model_load(hf());
  lora::LoraConfig c;
  c.type = type;
  c.rank = 4;
  c.scale = 2.5;
  c.keys = {lora::LIN_Q, lora::LIN_K, lora::LIN_V, lora::LIN_O, lora::LIN_GATE, lora::LIN_UP, lora::LIN_DOWN};
  c.num_layers = -1;
  lora::Adapter a = lora::adapter_create(m, c, 5);
  lora::Rng rng(5, 1);
  for (lora::TrainParam& p : a.params)
    if (contains(p.name, ".lora_b"))
      for (int64_t i = 0; i < p.value.t.numel(); ++i) p.value.t.f32()[i] = 0.5f * (2.0f * rng.uniform() - 1.0f);
  const std::string dir = tmp_dir(name);
  lora::adapter_save_mlx(a, dir, /*overwrite=*/true);
  return dir;
}

std::vector<std::vector<float>> factors(const std::string& adapter) {
  const lora::Model m = lora::model_load(hf());
  const lora::Adapter a = lora::adapter_load(adapter, m);
  std::vector<std::vector<float>> v;
  for (const auto& p : a.params) v.emplace_back(p.value.t.f32(), p.value.t.f32() + p.value.t.numel());
  return v;
}

// The generated text of a `lora generate` run (between its ========== lines).
std::string generated(const std::string& out) {
  const size_t a = out.find("==========\n"), b = out.rfind("\n==========");
  return a == std::string::npos || b == std::string::npos || b <= a ? out : out.substr(a + 11, b - a - 11);
}

std::string generate(const std::string& model, const std::string& adapter) {
  const CmdResult r = run_lora("generate --device cpu --temp 0 --prompt 'Once upon a time' --ignore-chat-template --max-tokens 40 "
                               "--threads 1 --model '" + model + "'" + (adapter.empty() ? "" : " --adapter-path '" + adapter + "'"));
  EXPECT_EQ(r.code, 0) << r.err;
  return generated(r.out);
}

TEST(AdapterConvertCli, MlxPeftGgufMlxIsBitExactAndGeneratesAlike) {
  REQUIRE_STORIES();
  const std::string mlx = random_mlx_adapter("mlx");
  const std::string out = tmp_dir("chain");
  const std::string peft = out + "/peft", gguf = out + "/adapter.gguf", mlx2 = out + "/mlx2";
  CmdResult r = run_lora("convert --model '" + hf() + "' --adapter-path '" + mlx + "' --to peft --out '" + peft + "'");
  ASSERT_EQ(r.code, 0) << r.err;
  r = run_lora("convert --model '" + gguf_base() + "' --adapter-path '" + peft + "' --to gguf --out '" + gguf + "'");
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_TRUE(contains(r.out, "from PEFT") && contains(r.out, "GGUF-LoRA")) << r.out;
  r = run_lora("convert --model '" + hf() + "' --adapter-path '" + gguf + "' --to mlx --out '" + mlx2 + "'");
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_TRUE(contains(r.out, "from GGUF-LoRA")) << r.out;
  EXPECT_EQ(factors(mlx2), factors(mlx));
  EXPECT_EQ(factors(gguf), factors(mlx));

  for (const std::string& model : {gguf_base(), hf()}) {
    const std::string with_mlx = generate(model, mlx), with_gguf = generate(model, gguf), base = generate(model, "");
    EXPECT_EQ(with_gguf, with_mlx) << model;
    EXPECT_NE(with_mlx, base) << "the adapter should change the greedy text on " << model;
    EXPECT_FALSE(with_mlx.empty());
  }
}

TEST(AdapterConvertCli, BadInput) {
  REQUIRE_STORIES();
  const std::string out = tmp_dir("bad");
  // DoRA has no GGUF-LoRA form.
  const std::string dora = random_mlx_adapter("dora", lora::FT_DORA);
  CmdResult r = run_lora("convert --model '" + hf() + "' --adapter-path '" + dora + "' --to gguf --out '" + out + "/d.gguf'");
  EXPECT_EQ(r.code, 1) << r.err;
  EXPECT_TRUE(contains(r.err, "DoRA") && contains(r.err, "lora fuse")) << r.err;
  EXPECT_FALSE(lora::test::file_exists(out + "/d.gguf"));
  // An existing output is kept without --force, replaced with it.
  const std::string mlx = random_mlx_adapter("bad_mlx");
  lora::test::write(out + "/a.gguf", "keep");
  r = run_lora("convert --model '" + hf() + "' --adapter-path '" + mlx + "' --to gguf --out '" + out + "/a.gguf'");
  EXPECT_EQ(r.code, 1) << r.err;
  EXPECT_TRUE(contains(r.err, out + "/a.gguf") && contains(r.err, "already exists") && contains(r.err, "--force")) << r.err;
  EXPECT_EQ(lora::test::slurp(out + "/a.gguf"), "keep");
  r = run_lora("convert --model '" + hf() + "' --adapter-path '" + mlx + "' --to gguf --out '" + out + "/a.gguf' --force");
  EXPECT_EQ(r.code, 0) << r.err;
  // A GGUF-LoRA for another architecture, and one with a tensor name we cannot map.
  auto write_gguf = [&](const std::string& path, const std::string& arch, const std::string& tensor) {
    lora::GGUFWriter w;
    w.set_str("general.architecture", arch);
    w.set_str("general.type", "adapter");
    w.set_str("adapter.type", "lora");
    w.set_f32("adapter.lora.alpha", 8.0f);
    static std::vector<float> z(64 * 4, 0.0f);
    w.add_tensor(tensor + ".lora_a", lora::DTYPE_F32, {64, 4}, z.data());
    w.add_tensor(tensor + ".lora_b", lora::DTYPE_F32, {4, 64}, z.data());
    w.write(path);
  };
  write_gguf(out + "/qwen.gguf", "qwen2", "blk.4.attn_q.weight");
  r = run_lora("generate --device cpu --model '" + gguf_base() + "' --adapter-path '" + out + "/qwen.gguf' --prompt x --max-tokens 2");
  EXPECT_EQ(r.code, 1) << r.err;
  EXPECT_TRUE(contains(r.err, out + "/qwen.gguf") && contains(r.err, "qwen2") && contains(r.err, "llama")) << r.err;
  write_gguf(out + "/name.gguf", "llama", "blk.4.attn_qkv.weight");
  r = run_lora("convert --model '" + hf() + "' --adapter-path '" + out + "/name.gguf' --to mlx --out '" + out + "/m'");
  EXPECT_EQ(r.code, 1) << r.err;
  EXPECT_TRUE(contains(r.err, "blk.4.attn_qkv.weight.lora_a")) << r.err;
  EXPECT_FALSE(lora::test::file_exists(out + "/m"));
}

// The first validation loss of a 1-iteration run (computed before any update) from --resume-adapter-file.
std::string first_val_loss(const std::string& name, const std::string& data, const std::string& resume) {
  const std::string ad = tmp_dir("train_" + name);
  const CmdResult r = run_lora("train --device cpu --model '" + hf() + "' --data '" + data + "' --adapter-path '" + ad +
                               "' --iters 1 --batch-size 2 --val-batches 1 --num-layers -1 --lora-rank 4 --lora-scale 2.5 --lora-keys " +
                               kAllKeys + " --seed 9 --threads 1" + (resume.empty() ? "" : " --resume-adapter-file '" + resume + "'"));
  EXPECT_EQ(r.code, 0) << r.err;
  const size_t at = r.out.find("Val loss ");
  EXPECT_NE(at, std::string::npos) << r.out;
  return at == std::string::npos ? "" : r.out.substr(at, r.out.find(',', at) - at);
}

TEST(AdapterConvertCli, ResumeAdapterFileFromEveryLayout) {
  REQUIRE_STORIES();
  LORA_REQUIRE_SHARED("data/english_quotes/quotes.jsonl");
  const std::string data = lora::test::write_quotes(tmp_dir("data"), 8, 4);
  const std::string mlx = random_mlx_adapter("resume_mlx");
  const std::string out = tmp_dir("resume");
  ASSERT_EQ(run_lora("convert --model '" + hf() + "' --adapter-path '" + mlx + "' --to peft --out '" + out + "/peft'").code, 0);
  ASSERT_EQ(run_lora("convert --model '" + hf() + "' --adapter-path '" + mlx + "' --to gguf --out '" + out + "/a.gguf'").code, 0);
  const std::string from_mlx = first_val_loss("mlx", data, mlx + "/adapters.safetensors");
  EXPECT_EQ(first_val_loss("peft", data, out + "/peft"), from_mlx);
  EXPECT_EQ(first_val_loss("peft_file", data, out + "/peft/adapter_model.safetensors"), from_mlx);
  EXPECT_EQ(first_val_loss("gguf", data, out + "/a.gguf"), from_mlx);
  EXPECT_NE(first_val_loss("none", data, ""), from_mlx) << "the resumed weights should change the loss";
}

}  // namespace
