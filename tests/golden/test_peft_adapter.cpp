// PEFT adapters, both ways (train/adapter_peft.h), against the real PEFT (tests/fixtures/peft, made by
// tools/gen_peft_fixtures.py with PEFT's own save_pretrained): an adapter PEFT wrote (LoRA on q/v/down of the
// last layer; DoRA on q/k of every layer, rank 2, alpha 5) is detected by adapter_load, and the model with it
// fused gives PEFT's logits; exporting to PEFT's layout and to mlx-lm's and reading back gives the same factors
// bit for bit (mlx -> peft -> mlx); a config we cannot map is refused naming the field.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "core/error.h"
#include "cpu/cpu_ops.h"
#include "io/safetensors.h"
#include "model/llama.h"
#include "train/adapter_fuse.h"
#include "train/adapter_io.h"
#include "train/adapter_peft.h"
#include "test_util.h"
#include "tolerances.h"

namespace lora {
namespace {

namespace fs = std::filesystem;

const Model& tiny() {
  static Model m = model_load(test::fixture("golden/llama_untied"));
  return m;
}

std::string fresh(const std::string& name) {
  const std::string d = ::testing::TempDir() + "/lora_peft_" + name;
  fs::remove_all(d);
  return d;
}

void expect_peft_logits(const char* name, FineTuneType type, int64_t rank, double scale) {
  const std::string dir = test::fixture(std::string("peft/") + name);
  ASSERT_TRUE(adapter_is_peft(dir));
  const Adapter a = adapter_load(dir, tiny());
  EXPECT_EQ(a.cfg.type, type);
  EXPECT_EQ(a.cfg.rank, rank);
  EXPECT_DOUBLE_EQ(a.cfg.scale, scale);
  const Model fused = adapter_fuse(tiny(), a);
  auto f = SafetensorsFile::open(test::fixture(std::string("peft/") + name + ".expected.safetensors"));
  const SafeTensorInfo* ids = f->find("ids");
  const SafeTensorInfo* want = f->find("logits");
  ASSERT_TRUE(ids && want);
  const int64_t n = ids->numel(), V = tiny().cfg.vocab;
  LlamaSession s(fused, cpu_ops(), 64);
  std::vector<float> got(size_t(n * V));
  s.forward(static_cast<const int32_t*>(ids->data), n, got.data(), true);
  const float* w = static_cast<const float*>(want->data);
  double worst = 0, moved = 0;
  std::vector<float> base(size_t(n * V));
  LlamaSession sb(tiny(), cpu_ops(), 64);
  sb.forward(static_cast<const int32_t*>(ids->data), n, base.data(), true);
  for (int64_t i = 0; i < n * V; ++i) {
    worst = std::max(worst, std::abs(double(got[size_t(i)]) - w[i]) / (1 + std::abs(w[i])));
    moved = std::max(moved, std::abs(double(base[size_t(i)]) - w[i]));
  }
  EXPECT_LE(worst, tol::kFusedVsAdapterLogits) << name;
  EXPECT_GT(moved, 1e-2) << "the fixture's adapter should change the logits";
  std::printf("  measured: PEFT %s adapter, fused logits vs PEFT %.2e (the adapter moves them by %.2f)\n", name, worst, moved);
}

TEST(PeftAdapter, LoraFromPeftGivesPeftLogits) { expect_peft_logits("lora", FT_LORA, 4, 2.0); }
TEST(PeftAdapter, DoraFromPeftGivesPeftLogits) { expect_peft_logits("dora", FT_DORA, 2, 2.5); }

std::vector<std::vector<float>> values(const Adapter& a) {
  std::vector<std::vector<float>> v;
  for (const auto& p : a.params) v.emplace_back(p.value.t.f32(), p.value.t.f32() + p.value.t.numel());
  return v;
}

TEST(PeftAdapter, RoundTripsBitExact) {
  for (const char* name : {"lora", "dora"}) {
    const Adapter a = adapter_load(test::fixture(std::string("peft/") + name), tiny());
    const std::string mlx = fresh(std::string("mlx_") + name), peft = fresh(std::string("peft_") + name),
                      mlx2 = fresh(std::string("mlx2_") + name);
    adapter_save_mlx(a, mlx, false);
    EXPECT_FALSE(adapter_is_peft(mlx));
    const Adapter b = adapter_load(mlx, tiny());
    adapter_save_peft(b, peft, "", false);
    EXPECT_TRUE(adapter_is_peft(peft));
    const Adapter c = adapter_load(peft, tiny());
    adapter_save_mlx(c, mlx2, false);
    const Adapter d = adapter_load(mlx2, tiny());
    EXPECT_EQ(values(a), values(b)) << name;
    EXPECT_EQ(values(a), values(c)) << name;
    EXPECT_EQ(values(a), values(d)) << name;
    EXPECT_EQ(d.cfg.type, a.cfg.type);
    EXPECT_DOUBLE_EQ(d.cfg.scale, a.cfg.scale);
    // An existing adapter is kept unless overwrite.
    EXPECT_THROW(adapter_save_peft(b, peft, "", false), Error);
    EXPECT_NO_THROW(adapter_save_peft(b, peft, "", true));
  }
}

TEST(PeftAdapter, UnsupportedConfigsNameTheField) {
  const std::string src = test::fixture("peft/lora");
  auto with = [&](const std::string& name, const std::string& from, const std::string& to) {
    const std::string d = fresh(name);
    fs::create_directories(d);
    fs::copy_file(src + "/adapter_model.safetensors", d + "/adapter_model.safetensors");
    std::ifstream in(src + "/adapter_config.json");
    std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    const size_t at = text.find(from);
    EXPECT_NE(at, std::string::npos) << from;
    text.replace(at, from.size(), to);
    std::ofstream(d + "/adapter_config.json") << text;
    return d;
  };
  auto error_of = [&](const std::string& d) {
    try {
      adapter_load(d, tiny());
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  EXPECT_NE(error_of(with("layers", "\"layers_to_transform\": [\n    1\n  ]", "\"layers_to_transform\": [0]")).find("layers_to_transform"),
            std::string::npos);
  EXPECT_NE(error_of(with("bias", "\"bias\": \"none\"", "\"bias\": \"all\"")).find("bias"), std::string::npos);
  EXPECT_NE(error_of(with("type", "\"peft_type\": \"LORA\"", "\"peft_type\": \"IA3\"")).find("peft_type"), std::string::npos);
}

}  // namespace
}  // namespace lora
