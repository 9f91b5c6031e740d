// stories260K (Karpathy's tiny pretrained TinyStories Llama, ../shared/models): greedy generation from
// BOS must give the 60 token ids documented in ../shared/models/README.md (Karpathy's published sample,
// re-derived there with an independent float64 llama2.c re-implementation), through the GGUF file and
// through the HF folder. Greedy = argmax of the logits. Also teacher-forced: one prefill of the whole
// sequence must predict every next id (the GEMM path, where decoding uses matvecs).
#include <gtest/gtest.h>

#include <algorithm>
#include <vector>

#include "cpu/cpu_ops.h"
#include "model/llama.h"
#include "model/model.h"
#include "test_util.h"

namespace lora {
namespace {

const std::vector<int32_t> kExpected = {
    403, 407, 261, 378, 432, 383, 286, 261, 376, 298, 315, 421, 395, 317, 426, 338, 401, 396, 267, 337,
    410, 408, 419, 292, 411, 322, 265, 282, 295, 433, 426, 385, 328, 432, 358, 394, 261, 370, 432, 352,
    266, 268, 388, 426, 338, 391, 266, 267, 337, 335, 312, 432, 398, 312, 286, 267, 414, 270, 333, 415};

int32_t argmax(const float* v, int64_t n) { return int32_t(std::max_element(v, v + n) - v); }

void check_model(const std::string& path) {
  const Model m = model_load(path);
  ASSERT_EQ(m.cfg.vocab, 512);
  const int64_t V = m.cfg.vocab;
  std::vector<float> logits(static_cast<size_t>(V));

  // Decode: one token at a time from BOS.
  LlamaSession sess(m, cpu_ops(), 0, 64);
  std::vector<int32_t> got;
  int32_t tok = 1;  // BOS
  for (size_t i = 0; i < kExpected.size(); ++i) {
    sess.forward(&tok, 1, logits.data());
    tok = argmax(logits.data(), V);
    got.push_back(tok);
  }
  EXPECT_EQ(got, kExpected);

  // Teacher-forced prefill of BOS + the expected ids: row t predicts id t.
  std::vector<int32_t> seq = {1};
  seq.insert(seq.end(), kExpected.begin(), kExpected.end() - 1);
  const int64_t T = int64_t(seq.size());
  std::vector<float> all(static_cast<size_t>(T * V));
  LlamaSession pre(m, cpu_ops(), 0, 64);
  pre.forward(seq.data(), T, all.data(), true);
  std::vector<int32_t> pred;
  for (int64_t t = 0; t < T; ++t) pred.push_back(argmax(all.data() + t * V, V));
  EXPECT_EQ(pred, kExpected);
}

TEST(Stories260K, GreedyFromBosGguf) {
  LORA_REQUIRE_SHARED("models/stories260K/stories260K.gguf");
  check_model(test::shared_dir() + "/models/stories260K/stories260K.gguf");
}

TEST(Stories260K, GreedyFromBosHf) {
  LORA_REQUIRE_SHARED("models/stories260K-hf/model.safetensors");
  check_model(test::shared_dir() + "/models/stories260K-hf");
}

}  // namespace
}  // namespace lora
