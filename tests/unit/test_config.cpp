// ModelConfig: real config.json files (TinyLlama, stories260K-hf), GGUF metadata (stories260K,
// SmolLM2), the variants (Llama 3 rope_scaling, transformers-5 rope_parameters, qwen2, mistral,
// defaults), and bad configs giving a lora::Error that names the file and the key.
#include <gtest/gtest.h>

#include <sys/stat.h>

#include <fstream>
#include <string>

#include "core/error.h"
#include "io/gguf.h"
#include "model/config.h"
#include "test_util.h"

using namespace lora;

namespace {

std::string tmp_dir() {
  static const std::string d = [] {
    const std::string p = ::testing::TempDir() + "/lora_cfg_" + std::to_string(::getpid());
    ::mkdir(p.c_str(), 0755);
    return p;
  }();
  return d;
}

// Writes text to <tmp>/<name>/config.json and returns the path.
std::string write_config(const std::string& name, const std::string& text) {
  const std::string d = tmp_dir() + "/" + name;
  ::mkdir(d.c_str(), 0755);
  const std::string p = d + "/config.json";
  std::ofstream(p) << text;
  return p;
}

template <class F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const Error& e) {
    return std::string(e.what()) + "\nhint: " + e.hint();
  }
  return "";
}

#define EXPECT_CONTAINS(hay, needle) \
  EXPECT_NE(std::string(hay).find(needle), std::string::npos) << "message: " << (hay) << "\nwanted: " << (needle)

// A minimal valid llama config; `extra` is spliced in (a leading comma is added).
std::string llama_json(const std::string& extra = "") {
  std::string s = R"({"model_type": "llama", "hidden_size": 64, "intermediate_size": 172,
    "num_hidden_layers": 2, "num_attention_heads": 8, "vocab_size": 100)";
  if (!extra.empty()) s += ", " + extra;
  return s + "}";
}

}  // namespace

TEST(Config, TinyLlama) {
  LORA_REQUIRE_SHARED("models/TinyLlama-1.1B-Chat-v1.0/config.json");
  const ModelConfig c = config_from_hf_json(test::shared_dir() + "/models/TinyLlama-1.1B-Chat-v1.0/config.json");
  EXPECT_EQ(c.arch, "llama");
  EXPECT_EQ(c.dim, 2048);
  EXPECT_EQ(c.ffn_dim, 5632);
  EXPECT_EQ(c.n_layers, 22);
  EXPECT_EQ(c.n_heads, 32);
  EXPECT_EQ(c.n_kv_heads, 4);
  EXPECT_EQ(c.head_dim, 64);
  EXPECT_EQ(c.kv_dim(), 256);
  EXPECT_EQ(c.vocab, 32000);
  EXPECT_EQ(c.max_pos, 2048);
  EXPECT_EQ(c.rope_theta, 10000.0);
  EXPECT_EQ(c.rms_eps, 1e-5);
  EXPECT_FALSE(c.tie_embeddings);
  EXPECT_FALSE(c.qkv_bias);
  EXPECT_EQ(c.rope_scaling.type, "");
  EXPECT_EQ(c.bos_id, 1);
  EXPECT_EQ(c.eos_id, 2);
  EXPECT_EQ(c.torch_dtype, "bfloat16");
  // TinyLlama-1.1B's published parameter count.
  EXPECT_EQ(c.n_params(), 1100048384);
}

TEST(Config, Stories260KHf) {
  LORA_REQUIRE_SHARED("models/stories260K-hf/config.json");
  const ModelConfig c = config_from_hf_json(test::shared_dir() + "/models/stories260K-hf/config.json");
  EXPECT_EQ(c.dim, 64);
  EXPECT_EQ(c.ffn_dim, 172);
  EXPECT_EQ(c.n_layers, 5);
  EXPECT_EQ(c.n_heads, 8);
  EXPECT_EQ(c.n_kv_heads, 4);
  EXPECT_EQ(c.head_dim, 8);
  EXPECT_EQ(c.vocab, 512);
  EXPECT_EQ(c.max_pos, 512);
  EXPECT_TRUE(c.tie_embeddings);
  EXPECT_EQ(c.n_params(), 260032);  // shared/models/README.md
}

TEST(Config, Llama3RopeScalingAndEosList) {
  const std::string p = write_config("llama3", llama_json(R"(
    "num_key_value_heads": 2, "head_dim": 16, "rope_theta": 500000.0,
    "rope_scaling": {"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0,
                     "high_freq_factor": 4.0, "original_max_position_embeddings": 8192},
    "bos_token_id": 128000, "eos_token_id": [128001, 128008, 128009], "tie_word_embeddings": true)"));
  const ModelConfig c = config_from_hf_json(p);
  EXPECT_EQ(c.head_dim, 16);  // explicit, not 64 / 8
  EXPECT_EQ(c.q_dim(), 128);
  EXPECT_EQ(c.n_kv_heads, 2);
  EXPECT_EQ(c.rope_theta, 500000.0);
  EXPECT_EQ(c.rope_scaling.type, "llama3");
  EXPECT_EQ(c.rope_scaling.factor, 32.0);
  EXPECT_EQ(c.rope_scaling.high_freq_factor, 4.0);
  EXPECT_EQ(c.rope_scaling.original_max_position, 8192);
  EXPECT_EQ(c.bos_id, 128000);
  EXPECT_EQ(c.eos_id, 128001);
  EXPECT_EQ(c.eos_ids, (std::vector<int64_t>{128001, 128008, 128009}));
  EXPECT_TRUE(c.tie_embeddings);
  // Old spelling "type", and linear scaling.
  const ModelConfig l = config_from_hf_json(write_config("linear", llama_json(R"("rope_scaling": {"type": "linear", "factor": 2.0})")));
  EXPECT_EQ(l.rope_scaling.type, "linear");
  EXPECT_EQ(l.rope_scaling.factor, 2.0);
}

TEST(Config, Transformers5RopeParameters) {
  const ModelConfig c = config_from_hf_json(write_config("tf5", llama_json(R"(
    "rope_parameters": {"rope_theta": 500000.0, "rope_type": "llama3", "factor": 8.0,
                        "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                        "original_max_position_embeddings": 8192})")));
  EXPECT_EQ(c.rope_theta, 500000.0);
  EXPECT_EQ(c.rope_scaling.type, "llama3");
  EXPECT_EQ(c.rope_scaling.factor, 8.0);
  const ModelConfig d = config_from_hf_json(
      write_config("tf5d", llama_json(R"("rope_parameters": {"rope_theta": 100000.0, "rope_type": "default"})")));
  EXPECT_EQ(d.rope_theta, 100000.0);
  EXPECT_EQ(d.rope_scaling.type, "");
}

TEST(Config, DefaultsQwen2Mistral) {
  const ModelConfig c = config_from_hf_json(write_config("defaults", llama_json()));
  EXPECT_EQ(c.n_kv_heads, 8);  // defaults to num_attention_heads
  EXPECT_EQ(c.head_dim, 8);
  EXPECT_EQ(c.rope_theta, 10000.0);
  EXPECT_FALSE(c.tie_embeddings);
  EXPECT_EQ(c.eos_id, -1);
  // n_params by hand: 100*64 embed + 2 * (4*64*64 attn + 3*64*172 mlp + 2*64 norms) + 64 + 100*64 head.
  EXPECT_EQ(c.n_params(), 6400 + 2 * (16384 + 33024 + 128) + 64 + 6400);

  const ModelConfig q = config_from_hf_json(write_config("qwen2", R"({"model_type": "qwen2", "hidden_size": 896,
    "intermediate_size": 4864, "num_hidden_layers": 24, "num_attention_heads": 14, "num_key_value_heads": 2,
    "vocab_size": 151936, "rope_theta": 1000000.0, "rms_norm_eps": 1e-06, "tie_word_embeddings": true,
    "max_position_embeddings": 32768, "sliding_window": 32768, "use_sliding_window": false,
    "bos_token_id": 151643, "eos_token_id": 151645})"));
  EXPECT_EQ(q.arch, "qwen2");
  EXPECT_TRUE(q.qkv_bias);
  EXPECT_TRUE(q.tie_embeddings);
  EXPECT_EQ(q.head_dim, 64);
  EXPECT_EQ(q.max_pos, 32768);
  EXPECT_EQ(q.rms_eps, 1e-6);
  // Qwen2.5-0.5B's published count: 494,032,768 (q/k/v biases included, tied).
  EXPECT_EQ(q.n_params(), 494032768);

  const ModelConfig m = config_from_hf_json(write_config("mistral", R"({"model_type": "mistral", "hidden_size": 4096,
    "intermediate_size": 14336, "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8,
    "vocab_size": 32000, "max_position_embeddings": 32768, "rope_theta": 1000000.0, "sliding_window": null})"));
  EXPECT_EQ(m.arch, "mistral");
  EXPECT_FALSE(m.qkv_bias);
  EXPECT_EQ(m.max_pos, 32768);
  EXPECT_EQ(m.n_params(), 7241732096);  // Mistral-7B's published count
}

TEST(Config, BadConfigsNameFileAndKey) {
  struct Case {
    std::string name, text;
    std::vector<std::string> needles;
  };
  const std::vector<Case> cases = {
      {"malformed", "{\"model_type\": \"llama\", ", {"invalid JSON"}},
      {"array", "[1]", {"JSON object"}},
      {"no_heads", R"({"model_type": "llama", "hidden_size": 64, "intermediate_size": 172,
        "num_hidden_layers": 2, "vocab_size": 100})",
       {"config.json: num_attention_heads", "missing"}},
      {"unsupported", R"({"model_type": "gpt2", "n_embd": 768})", {"model_type", "\"gpt2\"", "llama", "mistral", "qwen2"}},
      {"no_type", R"({"hidden_size": 64})", {"model_type", "missing"}},
      {"kv_divides", llama_json(R"("num_key_value_heads": 3)"), {"num_key_value_heads", "does not divide"}},
      {"odd_head_dim", llama_json(R"("head_dim": 7)"), {"head_dim", "odd"}},
      {"negative", R"({"model_type": "llama", "hidden_size": -64, "intermediate_size": 172,
        "num_hidden_layers": 2, "num_attention_heads": 8, "vocab_size": 100})",
       {"hidden_size", "positive"}},
      {"string_size", R"({"model_type": "llama", "hidden_size": "64", "intermediate_size": 172,
        "num_hidden_layers": 2, "num_attention_heads": 8, "vocab_size": 100})",
       {"config.json: hidden_size", "expected an integer"}},
      {"yarn", llama_json(R"("rope_scaling": {"rope_type": "yarn", "factor": 4.0})"), {"rope_scaling.rope_type", "yarn"}},
      {"linear_no_factor", llama_json(R"("rope_scaling": {"type": "linear"})"), {"rope_scaling.factor"}},
      {"act", llama_json(R"("hidden_act": "gelu")"), {"hidden_act", "gelu"}},
      {"attn_bias", llama_json(R"("attention_bias": true)"), {"attention_bias"}},
      {"eos_type", llama_json(R"("eos_token_id": "x")"), {"eos_token_id"}},
      {"zero_heads", llama_json(R"("num_attention_heads": 0)"), {"num_attention_heads"}},
  };
  for (const auto& c : cases) {
    const std::string p = write_config("bad_" + c.name, c.text);
    const std::string msg = error_of([&] { config_from_hf_json(p); });
    ASSERT_FALSE(msg.empty()) << c.name << ": no error";
    EXPECT_CONTAINS(msg, p);
    for (const auto& n : c.needles) EXPECT_CONTAINS(msg, n) << " (" << c.name << ")";
  }
  const std::string missing = tmp_dir() + "/nowhere/config.json";
  EXPECT_CONTAINS(error_of([&] { config_from_hf_json(missing); }), missing);
}

TEST(Config, GgufStories260K) {
  LORA_REQUIRE_SHARED("models/stories260K/stories260K.gguf");
  auto f = GGUFFile::open(test::shared_dir() + "/models/stories260K/stories260K.gguf");
  const ModelConfig c = config_from_gguf(*f);
  EXPECT_EQ(c.arch, "llama");
  EXPECT_EQ(c.dim, 64);
  EXPECT_EQ(c.ffn_dim, 172);
  EXPECT_EQ(c.n_layers, 5);
  EXPECT_EQ(c.n_heads, 8);
  EXPECT_EQ(c.n_kv_heads, 4);
  EXPECT_EQ(c.head_dim, 8);
  EXPECT_EQ(c.vocab, 512);
  EXPECT_EQ(c.max_pos, 2048);  // the llama2c converter's default (README)
  EXPECT_EQ(c.rms_eps, double(1e-5f));
  EXPECT_FALSE(c.tie_embeddings);  // output.weight is stored explicitly
  EXPECT_EQ(c.bos_id, 1);
  EXPECT_EQ(c.eos_id, 2);
}

TEST(Config, GgufSmolLM2) {
  LORA_REQUIRE_SMOLLM2();
  auto f = GGUFFile::open(test::smollm2_gguf());
  const ModelConfig c = config_from_gguf(*f);
  EXPECT_EQ(c.arch, "llama");
  EXPECT_EQ(c.dim, 576);
  EXPECT_EQ(c.ffn_dim, 1536);
  EXPECT_EQ(c.n_layers, 30);
  EXPECT_EQ(c.n_heads, 9);
  EXPECT_EQ(c.n_kv_heads, 3);
  EXPECT_EQ(c.head_dim, 64);
  EXPECT_EQ(c.vocab, 49152);
  EXPECT_EQ(c.max_pos, 8192);
  EXPECT_EQ(c.rope_theta, 100000.0);
  EXPECT_TRUE(c.tie_embeddings);
  EXPECT_EQ(c.n_params(), 134515008);  // SmolLM2-135M's count from its safetensors (tied)
}

TEST(Config, GgufBadMetadata) {
  const std::string p = tmp_dir() + "/bad.gguf";
  {
    GGUFWriter w;
    w.set_str("general.architecture", "gpt2");
    w.write(p);
    auto f = GGUFFile::open(p);
    const std::string msg = error_of([&] { config_from_gguf(*f); });
    EXPECT_CONTAINS(msg, p);
    EXPECT_CONTAINS(msg, "general.architecture");
    EXPECT_CONTAINS(msg, "qwen2");
  }
  {
    GGUFWriter w;
    w.set_str("general.architecture", "llama");
    w.set_u32("llama.embedding_length", 64);
    w.set_u32("llama.feed_forward_length", 128);
    w.set_u32("llama.attention.head_count", 4);
    w.write(p);
    auto f = GGUFFile::open(p);
    const std::string msg = error_of([&] { config_from_gguf(*f); });
    EXPECT_CONTAINS(msg, p);
    EXPECT_CONTAINS(msg, "llama.block_count");
  }
  {
    GGUFWriter w;
    w.set_str("general.architecture", "llama");
    w.set_u32("llama.block_count", 2);
    w.set_u32("llama.embedding_length", 64);
    w.set_u32("llama.feed_forward_length", 128);
    w.set_u32("llama.attention.head_count", 4);
    w.set_u32("llama.attention.head_count_kv", 3);
    w.set_u32("llama.vocab_size", 10);
    w.write(p);
    auto f = GGUFFile::open(p);
    const std::string msg = error_of([&] { config_from_gguf(*f); });
    EXPECT_CONTAINS(msg, p);
    EXPECT_CONTAINS(msg, "llama.attention.head_count_kv");
  }
}
