// QLoRA end to end on stories260K (../shared): `lora train --quantize T` keeps the base in llama.cpp's blocks
// (Q8_0; Q4_K falls back to Q5_0 on this model's 64-wide rows, as llama.cpp's quantizer does) and must lower the
// validation loss like the unquantized run; the adapter then generates on the quantized and the float base;
// bad --quantize values are clear errors.
#include <gtest/gtest.h>

#include <cstdlib>
#include <string>

#include "cli_util.h"
#include "test_util.h"
#include "tolerances.h"

namespace {

using lora::test::CmdResult;
using lora::test::contains;

CmdResult run_lora(const std::string& args) { return lora::test::run_lora("lora_qlora_cli_", args); }
std::string tmp_dir(const std::string& name) { return lora::test::tmp_dir("lora_qlora_cli_", name); }
std::string model() { return lora::test::shared_dir() + "/models/stories260K-hf"; }

// The last "Val loss X" of a training log (or -1).
double last_val_loss(const std::string& out) {
  const size_t at = out.rfind("Val loss ");
  return at == std::string::npos ? -1.0 : std::atof(out.c_str() + at + 9);
}
double first_val_loss(const std::string& out) {
  const size_t at = out.find("Val loss ");
  return at == std::string::npos ? -1.0 : std::atof(out.c_str() + at + 9);
}

struct TrainRun {
  double first = -1, last = -1;
};
TrainRun train(const std::string& data, const std::string& ad, const std::string& quant) {
  const CmdResult r = run_lora("train --model '" + model() + "' --data '" + data + "' --adapter-path '" + ad +
                               "' --iters 30 --batch-size 4 --learning-rate 1e-3 --num-layers -1 --steps-per-eval 30"
                               " --seed 1 --threads 2" +
                               (quant.empty() ? "" : " --quantize " + quant));
  EXPECT_EQ(r.code, 0) << r.out << r.err;
  return {first_val_loss(r.out), last_val_loss(r.out)};
}

TEST(QloraCli, QuantizedBaseLowersValidationLossLikeF32) {
  LORA_REQUIRE_SHARED("models/stories260K-hf/config.json");
  LORA_REQUIRE_SHARED("data/english_quotes/quotes.jsonl");
  const std::string data = lora::test::write_quotes(tmp_dir("data"), 40, 10);
  const TrainRun f = train(data, tmp_dir("f32"), "");
  ASSERT_GT(f.first, 0);
  ASSERT_LT(f.last, f.first);
  for (const std::string q : {"q8_0", "q4_k"}) {
    SCOPED_TRACE(q);
    const std::string ad = tmp_dir("ad_" + q);
    const TrainRun r = train(data, ad, q);
    std::printf("  measured: val loss f32 %.3f -> %.3f, %s %.3f -> %.3f\n", f.first, f.last, q.c_str(), r.first, r.last);
    // Quantization moves the starting loss a little; training must lower it about as much as in f32.
    EXPECT_NEAR(r.first, f.first, lora::tol::kQloraValLoss * f.first);
    EXPECT_NEAR(r.last, f.last, lora::tol::kQloraValLoss * f.last);
    EXPECT_GT(r.first - r.last, 0.7 * (f.first - f.last));
    EXPECT_TRUE(contains(lora::test::slurp(ad + "/adapter_config.json"), "\"quantize\": \"" + q + "\""));
    // The adapter generates on the quantized base and on the float base.
    for (const std::string& extra : {std::string(" --quantize ") + q, std::string()}) {
      const CmdResult g = run_lora("generate --model '" + model() + "' --adapter-path '" + ad +
                                   "' --prompt 'Once upon' --max-tokens 8 --temp 0" + extra);
      EXPECT_EQ(g.code, 0) << g.err;
    }
  }
}

// A quantized GGUF base trains as it is (its blocks are kept): Q8_0 and Q4_0 files written by lora convert.
TEST(QloraCli, QuantizedGgufTrainsAsItIs) {
  LORA_REQUIRE_SHARED("models/stories260K-hf/config.json");
  LORA_REQUIRE_SHARED("data/english_quotes/quotes.jsonl");
  const std::string data = lora::test::write_quotes(tmp_dir("gguf_data"), 40, 10);
  for (const std::string q : {"q8_0", "q4_0"}) {
    SCOPED_TRACE(q);
    const std::string g = tmp_dir("gguf_" + q) + "/m.gguf";
    ASSERT_EQ(run_lora("convert --model '" + model() + "' --to gguf --quantize " + q + " --out '" + g + "'").code, 0);
    const CmdResult r = run_lora("train --model '" + g + "' --data '" + data + "' --adapter-path '" + tmp_dir("gguf_ad_" + q) +
                                 "' --iters 20 --batch-size 4 --learning-rate 1e-3 --num-layers -1 --steps-per-eval 20"
                                 " --seed 1 --threads 2");
    ASSERT_EQ(r.code, 0) << r.err;
    EXPECT_LT(last_val_loss(r.out), first_val_loss(r.out) - 0.2) << r.out;
  }
}

TEST(QloraCli, BadQuantizeValues) {
  LORA_REQUIRE_SHARED("models/stories260K-hf/config.json");
  LORA_REQUIRE_SHARED("data/english_quotes/quotes.jsonl");
  const std::string data = lora::test::write_quotes(tmp_dir("bad"), 8, 2);
  const std::string base = "train --model '" + model() + "' --data '" + data + "' --iters 1 --adapter-path '" + tmp_dir("bad_ad") + "' ";
  CmdResult r = run_lora(base + "--quantize q3_xs");
  EXPECT_EQ(r.code, 1);
  EXPECT_TRUE(contains(r.err, "quantize") && contains(r.err, "q3_xs")) << r.err;
  r = run_lora(base + "--quantize bf16");
  EXPECT_EQ(r.code, 1);
  EXPECT_TRUE(contains(r.err, "quantize")) << r.err;
  r = run_lora(base + "--quantize q8_0 --fine-tune-type full");
  EXPECT_EQ(r.code, 1);
  EXPECT_TRUE(contains(r.err, "full fine-tuning")) << r.err;
  r = run_lora("generate --model '" + model() + "' --prompt hi --quantize q9");
  EXPECT_EQ(r.code, 1);
  EXPECT_TRUE(contains(r.err, "--quantize q9")) << r.err;
}

}  // namespace
