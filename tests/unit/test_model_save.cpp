// model_save_hf (model/model_save.h): a model written as an HF folder loads back bit for bit (unsharded and
// sharded with model.safetensors.index.json), the per-tensor dtype choice converts as dtype_convert does, an
// existing folder is kept unless overwrite, and nothing is left behind next to it.
#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <string>

#include "core/error.h"
#include "io/mapped_file.h"
#include "model/model.h"
#include "model/model_save.h"
#include "test_util.h"

namespace lora {
namespace {

namespace fs = std::filesystem;

std::string fresh(const std::string& name) {
  const std::string d = ::testing::TempDir() + "/lora_model_save_" + name;
  fs::remove_all(d);
  return d;
}

void expect_same(const Tensor& a, const Tensor& b, const std::string& what) {
  ASSERT_EQ(a.dtype, b.dtype) << what;
  ASSERT_EQ(a.numel(), b.numel()) << what;
  EXPECT_EQ(std::memcmp(a.data, b.data, size_t(a.nbytes())), 0) << what;
}

void expect_same_model(const Model& a, const Model& b) {
  expect_same(a.tok_embd, b.tok_embd, "tok_embd");
  expect_same(a.out_norm, b.out_norm, "out_norm");
  expect_same(a.lm_head, b.lm_head, "lm_head");
  ASSERT_EQ(a.layers.size(), b.layers.size());
  for (size_t i = 0; i < a.layers.size(); ++i) {
    expect_same(a.layers[i].wq, b.layers[i].wq, "wq");
    expect_same(a.layers[i].wk, b.layers[i].wk, "wk");
    expect_same(a.layers[i].w_down, b.layers[i].w_down, "w_down");
    expect_same(a.layers[i].attn_norm, b.layers[i].attn_norm, "attn_norm");
  }
}

TEST(ModelSave, RoundTripUnshardedAndSharded) {
  const std::string src = test::fixture("golden/llama_untied");
  const Model m = model_load(src);
  const std::string one = fresh("one");
  model_save_hf(m, src, one, {});
  EXPECT_TRUE(test::file_exists(one + "/model.safetensors"));
  EXPECT_TRUE(test::file_exists(one + "/config.json"));
  expect_same_model(m, model_load(one));

  ModelSaveOptions o;
  o.shard_bytes = 8 << 10;  // 8 KiB: the tiny model spreads over several files
  const std::string many = fresh("many");
  model_save_hf(m, src, many, o);
  EXPECT_TRUE(test::file_exists(many + "/model.safetensors.index.json"));
  EXPECT_FALSE(test::file_exists(many + "/model.safetensors"));
  int shards = 0;
  for (const auto& e : fs::directory_iterator(many))
    if (e.path().filename().string().rfind("model-", 0) == 0) ++shards;
  EXPECT_GT(shards, 2);
  expect_same_model(m, model_load(many));
  // No temporary folders left beside the outputs.
  for (const auto& e : fs::directory_iterator(::testing::TempDir()))
    EXPECT_EQ(e.path().filename().string().find("lora_model_save_many.tmp"), std::string::npos);
}

TEST(ModelSave, DtypeChoiceAndOverwrite) {
  const std::string src = test::fixture("golden/llama_untied");
  const Model m = model_load(src);
  ModelSaveOptions o;
  o.dtype_of = [](const std::string& name, const Tensor& t) {
    return name.find("_proj.weight") != std::string::npos ? DTYPE_BF16 : t.dtype;
  };
  const std::string out = fresh("bf16");
  model_save_hf(m, src, out, o);
  ModelLoadOptions keep;
  keep.compute_dtype = DTYPE_BF16;
  const Model b = model_load(out, keep);
  ASSERT_EQ(b.layers[0].wq.dtype, DTYPE_BF16);
  EXPECT_EQ(b.out_norm.dtype, DTYPE_F32);
  const float* w = m.layers[0].wq.f32();
  const uint16_t* h = b.layers[0].wq.ptr<uint16_t>();
  for (int64_t i = 0; i < m.layers[0].wq.numel(); ++i) ASSERT_EQ(h[i], f32_to_bf16(w[i])) << i;

  // An existing folder: refused without overwrite (and untouched), replaced with it.
  EXPECT_THROW(model_save_hf(m, src, out, {}), Error);
  EXPECT_EQ(model_load(out, keep).layers[0].wq.dtype, DTYPE_BF16);
  ModelSaveOptions ow;
  ow.overwrite = true;
  model_save_hf(m, src, out, ow);
  EXPECT_EQ(model_load(out, keep).layers[0].wq.dtype, DTYPE_F32);
}

}  // namespace
}  // namespace lora
