// Shared by tests that train or quantize a small random model: a 2-block Llama whose width is a whole
// number of K-quant super-blocks (hidden 256) with an FFN width that is not (416: llama.cpp's fallback type
// applies to ffn_down), GQA 4/2, vocabulary 96; and fixed pseudo-random training batches with ragged rows.
#pragma once
#include <gtest/gtest.h>

#include <cstdint>
#include <cstdlib>
#include <fstream>
#include <string>
#include <vector>

#include "model/init.h"
#include "model/llama_train.h"

namespace lora::test {

// Writes <TempDir>/<name>/config.json and the random bf16 model <TempDir>/<name>/model; returns the model folder.
inline std::string write_kquant_llama(const std::string& name, bool tied, uint64_t seed = 5) {
  const std::string dir = ::testing::TempDir() + "/" + name;
  EXPECT_EQ(std::system(("rm -rf '" + dir + "' && mkdir -p '" + dir + "'").c_str()), 0);
  std::ofstream(dir + "/config.json")
      << "{\"architectures\": [\"LlamaForCausalLM\"], \"model_type\": \"llama\", \"hidden_size\": 256,"
         " \"intermediate_size\": 416, \"num_hidden_layers\": 2, \"num_attention_heads\": 4, \"num_key_value_heads\": 2,"
         " \"vocab_size\": 96, \"max_position_embeddings\": 128, \"rms_norm_eps\": 1e-5, \"rope_theta\": 10000.0,"
         " \"tie_word_embeddings\": "
      << (tied ? "true" : "false") << ", \"torch_dtype\": \"bfloat16\"}";
  ModelInitOptions o;
  o.dtype = DTYPE_BF16;
  o.seed = seed;
  model_init_random(dir + "/config.json", dir + "/model", o);
  return dir + "/model";
}

// B rows of T random ids and targets; row r keeps its first T - (3r mod (T/2 + 1)) positions (the rest masked).
struct TrainBatch {
  int64_t B, T;
  std::vector<int32_t> in, tg;
  std::vector<float> mask;
  TrainBatchView view() const { return {B, T, in.data(), tg.data(), mask.data()}; }
};
inline TrainBatch make_train_batch(int64_t B, int64_t T, int64_t V, uint32_t seed) {
  TrainBatch b{B, T, {}, {}, {}};
  uint32_t x = seed;
  auto next = [&] { return x = x * 1664525u + 1013904223u; };
  for (int64_t r = 0; r < B; ++r) {
    const int64_t len = T - (r * 3) % (T / 2 + 1);
    for (int64_t t = 0; t < T; ++t) {
      b.in.push_back(int32_t(next() % uint32_t(V)));
      b.tg.push_back(int32_t(next() % uint32_t(V)));
      b.mask.push_back(t < len ? 1.0f : 0.0f);
    }
  }
  return b;
}

}  // namespace lora::test
