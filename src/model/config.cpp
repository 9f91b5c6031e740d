// ModelConfig from an HF config.json or GGUF metadata, and the sanity checks both share.
// HF keys: hidden_size, intermediate_size, num_hidden_layers, num_attention_heads, num_key_value_heads
// (default: num_attention_heads), head_dim (default: hidden_size / heads), vocab_size,
// max_position_embeddings, rope_theta (top level, or under "rope_parameters" in transformers 5),
// rope_scaling / rope_parameters ({rope_type|type: llama3|linear|default, factor, ...}), rms_norm_eps,
// tie_word_embeddings (default false), bos/eos_token_id (eos may be a list).
// GGUF keys: {arch}.block_count, embedding_length, feed_forward_length, attention.head_count,
// attention.head_count_kv, attention.key_length, rope.freq_base, rope.dimension_count,
// attention.layer_norm_rms_epsilon, context_length, vocab_size (or the token list's length).
#include "model/config.h"

#include <cmath>
#include <cstring>
#include <numbers>
#include <optional>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "io/gguf.h"
#include "io/mapped_file.h"

namespace lora {

namespace {

using json = nlohmann::json;

constexpr const char* kSupportedHF = "llama (TinyLlama, Llama 2/3, SmolLM/SmolLM2), mistral, qwen2";
constexpr const char* kSupportedGGUF = "llama, mistral, qwen2";

// Typed access to config.json keys with errors that name the file and the key.
class JsonConfig {
 public:
  JsonConfig(const std::string& path, const json& j) : path_(path), j_(j) {}

  [[noreturn]] void fail(const std::string& key, const std::string& what, const std::string& hint = {}) const {
    fail_input(path_ + ": " + key, what, hint.empty() ? "check config.json against the model's original files" : hint);
  }
  const json* find(const json& obj, const std::string& key) const {
    auto it = obj.find(key);
    return (it == obj.end() || it->is_null()) ? nullptr : &*it;
  }
  const json* find(const std::string& key) const { return find(j_, key); }

  int64_t get_int(const json& obj, const std::string& key, std::optional<int64_t> def,
                  const std::string& where) const {
    const json* v = find(obj, key);
    if (!v) {
      if (def) return *def;
      fail(where, "missing", "config.json must state it; compare with the model's original config.json");
    }
    if (v->is_number_integer()) return v->get<int64_t>();
    // Some exporters write integral values as floats (2048.0).
    if (v->is_number_float()) {
      const double d = v->get<double>();
      if (std::isfinite(d) && d == std::floor(d) && std::fabs(d) < 9e15) return int64_t(d);
    }
    fail(where, fmt::format("expected an integer, found {}", v->dump()));
  }
  int64_t get_int(const std::string& key, std::optional<int64_t> def = std::nullopt) const {
    return get_int(j_, key, def, key);
  }
  double get_float(const json& obj, const std::string& key, double def, const std::string& where) const {
    const json* v = find(obj, key);
    if (!v) return def;
    if (!v->is_number()) fail(where, fmt::format("expected a number, found {}", v->dump()));
    return v->get<double>();
  }
  double get_float(const std::string& key, double def) const { return get_float(j_, key, def, key); }
  bool get_bool(const std::string& key, bool def) const {
    const json* v = find(key);
    if (!v) return def;
    if (!v->is_boolean()) fail(key, fmt::format("expected true or false, found {}", v->dump()));
    return v->get<bool>();
  }
  std::string get_str(const std::string& key, const std::string& def) const {
    const json* v = find(key);
    if (!v) return def;
    if (!v->is_string()) fail(key, fmt::format("expected a string, found {}", v->dump()));
    return v->get<std::string>();
  }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  const json& j_;
};

// rope_scaling (transformers 4) or rope_parameters (transformers 5, which also carries rope_theta).
void parse_rope(const JsonConfig& jc, const json& obj, const std::string& key, ModelConfig& c) {
  if (!obj.is_object()) jc.fail(key, fmt::format("expected an object, found {}", obj.dump()));
  std::string type;
  if (const json* t = jc.find(obj, "rope_type")) type = t->is_string() ? t->get<std::string>() : "";
  else if (const json* t2 = jc.find(obj, "type")) type = t2->is_string() ? t2->get<std::string>() : "";
  if (const json* th = jc.find(obj, "rope_theta")) {
    if (!th->is_number()) jc.fail(key + ".rope_theta", fmt::format("expected a number, found {}", th->dump()));
    c.rope_theta = th->get<double>();
  }
  if (type.empty() || type == "default") return;
  if (type == "llama3") {
    c.rope_scaling.type = "llama3";
    c.rope_scaling.factor = jc.get_float(obj, "factor", 8.0, key + ".factor");
    c.rope_scaling.low_freq_factor = jc.get_float(obj, "low_freq_factor", 1.0, key + ".low_freq_factor");
    c.rope_scaling.high_freq_factor = jc.get_float(obj, "high_freq_factor", 4.0, key + ".high_freq_factor");
    c.rope_scaling.original_max_position =
        jc.get_int(obj, "original_max_position_embeddings", 8192, key + ".original_max_position_embeddings");
    if (!(c.rope_scaling.high_freq_factor > c.rope_scaling.low_freq_factor))
      jc.fail(key, "high_freq_factor must be larger than low_freq_factor");
  } else if (type == "linear") {
    c.rope_scaling.type = "linear";
    const json* f = jc.find(obj, "factor");
    if (!f) jc.fail(key + ".factor", "missing (linear RoPE scaling needs a factor)");
    c.rope_scaling.factor = jc.get_float(obj, "factor", 1.0, key + ".factor");
  } else {
    jc.fail(key + ".rope_type", fmt::format("\"{}\" RoPE scaling is not supported", type),
            "supported: llama3, linear (or none)");
  }
  if (!(c.rope_scaling.factor > 0)) jc.fail(key + ".factor", "must be positive");
}

// bos/eos ids may be absent, a number, or (eos in Llama 3) a list.
void parse_token_ids(const JsonConfig& jc, const std::string& key, int64_t* first, std::vector<int64_t>* all) {
  const json* v = jc.find(key);
  if (!v) return;
  std::vector<int64_t> ids;
  if (v->is_number_integer()) {
    ids.push_back(v->get<int64_t>());
  } else if (v->is_array()) {
    for (const json& e : *v) {
      if (!e.is_number_integer()) jc.fail(key, fmt::format("expected integers, found {}", v->dump()));
      ids.push_back(e.get<int64_t>());
    }
  } else {
    jc.fail(key, fmt::format("expected an integer or a list of integers, found {}", v->dump()));
  }
  if (!ids.empty()) *first = ids[0];
  if (all) *all = ids;
}

}  // namespace

int64_t ModelConfig::n_params() const {
  const int64_t attn = dim * q_dim() + 2 * dim * kv_dim() + q_dim() * dim + (qkv_bias ? q_dim() + 2 * kv_dim() : 0);
  const int64_t mlp = 3 * dim * ffn_dim;
  const int64_t layer = attn + mlp + 2 * dim;
  return vocab * dim + n_layers * layer + dim + (tie_embeddings ? 0 : vocab * dim);
}

ModelConfig config_from_hf_json(const std::string& path) {
  const std::string text = read_text_file(path);
  json j;
  try {
    j = json::parse(text);
  } catch (const json::exception& e) {
    fail_input(path, std::string("invalid JSON: ") + e.what(), "the file is corrupt; download it again");
  }
  if (!j.is_object()) fail_input(path, "expected a JSON object", "the file is corrupt; download it again");
  JsonConfig jc(path, j);

  ModelConfig c;
  const std::string mt = jc.get_str("model_type", "");
  if (mt.empty()) jc.fail("model_type", "missing", std::string("supported: ") + kSupportedHF);
  if (mt != "llama" && mt != "mistral" && mt != "qwen2")
    jc.fail("model_type", fmt::format("\"{}\" is not supported", mt), std::string("supported: ") + kSupportedHF);
  c.arch = mt;

  c.dim = jc.get_int("hidden_size");
  c.ffn_dim = jc.get_int("intermediate_size");
  c.n_layers = jc.get_int("num_hidden_layers");
  c.n_heads = jc.get_int("num_attention_heads");
  c.n_kv_heads = jc.get_int("num_key_value_heads", c.n_heads);
  if (c.n_heads <= 0) jc.fail("num_attention_heads", fmt::format("must be positive, found {}", c.n_heads));
  c.head_dim = jc.get_int("head_dim", c.dim / c.n_heads);
  c.vocab = jc.get_int("vocab_size");
  c.max_pos = jc.get_int("max_position_embeddings", 2048);
  c.rms_eps = jc.get_float("rms_norm_eps", 1e-6);
  c.rope_theta = jc.get_float("rope_theta", 10000.0);
  if (const json* rp = jc.find("rope_parameters")) parse_rope(jc, *rp, "rope_parameters", c);
  if (const json* rs = jc.find("rope_scaling")) parse_rope(jc, *rs, "rope_scaling", c);
  c.tie_embeddings = jc.get_bool("tie_word_embeddings", false);
  c.qkv_bias = (mt == "qwen2");
  c.torch_dtype = jc.get_str("torch_dtype", jc.get_str("dtype", ""));
  parse_token_ids(jc, "bos_token_id", &c.bos_id, nullptr);
  parse_token_ids(jc, "eos_token_id", &c.eos_id, &c.eos_ids);

  // Variants of the architecture that our Model cannot hold: say so instead of computing garbage.
  const std::string act = jc.get_str("hidden_act", "silu");
  if (act != "silu" && act != "swish")
    jc.fail("hidden_act", fmt::format("\"{}\" is not supported", act), "only SwiGLU (silu) MLPs are supported");
  if (mt != "qwen2" && jc.get_bool("attention_bias", false))
    jc.fail("attention_bias", "true is not supported (it adds biases to q/k/v and o_proj)",
            "only qwen2 style q/k/v biases are supported");
  if (jc.get_bool("mlp_bias", false)) jc.fail("mlp_bias", "true is not supported");
  if (mt == "mistral" || mt == "qwen2") {
    // A sliding window only matters past its length; refuse only if it is actually on and shorter.
    const bool use_sw = mt == "qwen2" ? jc.get_bool("use_sliding_window", false) : true;
    const json* sw = jc.find("sliding_window");
    if (use_sw && sw && sw->is_number_integer() && sw->get<int64_t>() < c.max_pos)
      c.max_pos = sw->get<int64_t>();  // attend to the full (short) context only: exact within the window
  }

  config_validate(c, path);
  return c;
}

namespace {

// Llama-3 GGUFs carry the RoPE frequency factors as a tensor (rope_freqs.weight, D/2 floats) instead
// of the rope_scaling parameters. Recover the parameters llama.cpp's converter used (factor = the
// largest factor, the others at the converter's defaults) and check they reproduce every factor.
void rope_from_freqs_tensor(const GGUFFile& f, const std::string& arch, ModelConfig& c) {
  const GGUFTensorInfo* t = f.find_tensor("rope_freqs.weight");
  if (!t) return;
  const std::string where = f.path() + ": rope_freqs.weight";
  const int64_t half = c.head_dim / 2;
  if (t->dtype != DTYPE_F32 || t->numel() != half)
    fail_input(where, fmt::format("expected {} F32 values, found {} {}", half, t->numel(), dtype_name(t->dtype)),
               "the file is not a standard llama.cpp conversion");
  std::vector<float> ff(static_cast<size_t>(half));
  std::memcpy(ff.data(), t->data, size_t(half) * 4);
  RopeScaling rs;
  rs.type = "llama3";
  rs.factor = ff[size_t(half - 1)];
  rs.low_freq_factor = 1.0;
  rs.high_freq_factor = 4.0;
  rs.original_max_position = f.get_int(arch + ".rope.scaling.original_context_length", 8192);
  bool all_one = true;
  for (float v : ff) all_one = all_one && v == 1.0f;
  if (all_one) return;
  ModelConfig scaled = c;
  scaled.rope_scaling = rs;
  const std::vector<float> want_ff = llama3_rope_factors(scaled);
  for (int64_t i = 0; i < half; ++i) {
    const double want = want_ff[size_t(i)];
    if (std::fabs(want - ff[size_t(i)]) > 1e-3 * std::fabs(want))
      fail_input(where, fmt::format("factor {} is {}, which Llama-3 RoPE scaling (factor {}) does not produce",
                                    i, ff[size_t(i)], rs.factor),
                 "only llama3-style RoPE frequency factors are supported");
  }
  c.rope_scaling = rs;
}

}  // namespace

namespace {

// The key names validation errors use: config.json's, or GGUF's "{arch}." keys.
struct KeyNames {
  std::string dim, ffn, layers, heads, kv_heads, head_dim, vocab, max_pos, eps, theta;
};

KeyNames hf_keys() {
  return {"hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
          "head_dim", "vocab_size", "max_position_embeddings", "rms_norm_eps", "rope_theta"};
}

KeyNames gguf_keys(const std::string& arch) {
  const std::string p = arch + ".";
  return {p + "embedding_length", p + "feed_forward_length", p + "block_count", p + "attention.head_count",
          p + "attention.head_count_kv", p + "attention.key_length", p + "vocab_size", p + "context_length",
          p + "attention.layer_norm_rms_epsilon", p + "rope.freq_base"};
}

void validate_with(const ModelConfig& c, const std::string& src, const KeyNames& k) {
  auto positive = [&](int64_t v, const std::string& what) {
    if (v <= 0) fail_input(src + ": " + what, fmt::format("must be positive, found {}", v), "the model config is invalid");
  };
  positive(c.dim, k.dim);
  positive(c.ffn_dim, k.ffn);
  positive(c.n_layers, k.layers);
  positive(c.n_heads, k.heads);
  positive(c.n_kv_heads, k.kv_heads);
  positive(c.head_dim, k.head_dim);
  positive(c.vocab, k.vocab);
  positive(c.max_pos, k.max_pos);
  if (c.n_heads % c.n_kv_heads != 0)
    fail_input(src + ": " + k.kv_heads, fmt::format("{} does not divide {} {}", c.n_kv_heads, k.heads, c.n_heads),
               "each key/value head must serve a whole number of query heads");
  if (c.head_dim % 2 != 0)
    fail_input(src + ": " + k.head_dim, fmt::format("{} is odd", c.head_dim), "RoPE rotates pairs, so head_dim must be even");
  // Caps that keep every size product far from int64 overflow and reject nonsense early.
  constexpr int64_t kMaxDimSize = int64_t(1) << 20, kMaxVocab = int64_t(1) << 24, kMaxLayers = 4096;
  if (c.dim > kMaxDimSize || c.ffn_dim > kMaxDimSize || c.n_heads > kMaxDimSize || c.head_dim > kMaxDimSize ||
      c.n_heads * c.head_dim > kMaxDimSize)
    fail_input(src + ": " + k.dim, "sizes beyond 2^20 are not plausible", "the model config is invalid");
  if (c.vocab > kMaxVocab) fail_input(src + ": " + k.vocab, fmt::format("{} is not plausible", c.vocab));
  if (c.n_layers > kMaxLayers) fail_input(src + ": " + k.layers, fmt::format("{} is not plausible", c.n_layers));
  if (!(c.rms_eps > 0) || !std::isfinite(c.rms_eps))
    fail_input(src + ": " + k.eps, fmt::format("must be positive, found {}", c.rms_eps));
  if (!(c.rope_theta > 0) || !std::isfinite(c.rope_theta))
    fail_input(src + ": " + k.theta, fmt::format("must be positive, found {}", c.rope_theta));
}

}  // namespace

ModelConfig config_from_gguf(const GGUFFile& f) {
  ModelConfig c;
  const std::string arch = f.get_str("general.architecture", "");
  if (arch.empty())
    fail_input(f.path(), "general.architecture: missing", "this GGUF file lacks required metadata; re-convert it");
  if (arch != "llama" && arch != "mistral" && arch != "qwen2")
    fail_input(f.path(), fmt::format("general.architecture: \"{}\" is not supported", arch),
               std::string("supported: ") + kSupportedGGUF);
  c.arch = arch;
  const std::string p = arch + ".";
  c.n_layers = f.req_int(p + "block_count");
  c.dim = f.req_int(p + "embedding_length");
  c.ffn_dim = f.req_int(p + "feed_forward_length");
  c.n_heads = f.req_int(p + "attention.head_count");
  c.n_kv_heads = f.get_int(p + "attention.head_count_kv", c.n_heads);
  if (c.n_heads <= 0)
    fail_input(f.path(), fmt::format("{}attention.head_count: must be positive, found {}", p, c.n_heads));
  c.head_dim = f.get_int(p + "attention.key_length", c.dim / c.n_heads);
  const int64_t v_len = f.get_int(p + "attention.value_length", c.head_dim);
  if (v_len != c.head_dim)
    fail_input(f.path(), fmt::format("{}attention.value_length: {} differs from key_length {}", p, v_len, c.head_dim),
               "models with different key and value head sizes are not supported");
  const int64_t rot = f.get_int(p + "rope.dimension_count", c.head_dim);
  if (rot != c.head_dim)
    fail_input(f.path(), fmt::format("{}rope.dimension_count: {} differs from the head size {}", p, rot, c.head_dim),
               "partial rotary embeddings are not supported");
  c.rope_theta = f.get_float(p + "rope.freq_base", 10000.0);
  c.rms_eps = f.get_float(p + "attention.layer_norm_rms_epsilon", 1e-5);
  c.max_pos = f.get_int(p + "context_length", 2048);

  const std::string stype = f.get_str(p + "rope.scaling.type", "");
  if (stype == "linear") {
    c.rope_scaling.type = "linear";
    c.rope_scaling.factor = f.get_float(p + "rope.scaling.factor", 1.0);
  } else if (stype.empty() && f.has(p + "rope.scale_linear")) {
    c.rope_scaling.type = "linear";
    c.rope_scaling.factor = f.get_float(p + "rope.scale_linear", 1.0);
  } else if (!stype.empty() && stype != "none") {
    fail_input(f.path(), fmt::format("{}rope.scaling.type: \"{}\" is not supported", p, stype),
               "supported: linear, none (Llama-3 scaling via rope_freqs.weight)");
  }
  if (c.rope_scaling.type == "linear" && c.rope_scaling.factor == 1.0) c.rope_scaling = RopeScaling{};
  if (c.head_dim > 0 && c.head_dim % 2 == 0) rope_from_freqs_tensor(f, arch, c);

  c.vocab = f.get_int(p + "vocab_size", 0);
  if (c.vocab == 0) {
    if (const GGUFValue* toks = f.find("tokenizer.ggml.tokens")) c.vocab = int64_t(toks->array.size());
  }
  if (c.vocab == 0) {
    if (const GGUFTensorInfo* te = f.find_tensor("token_embd.weight"); te && te->ne.size() == 2) c.vocab = te->ne[1];
  }
  if (c.vocab == 0)
    fail_input(f.path(), p + "vocab_size: missing, and no tokenizer.ggml.tokens list",
               "this GGUF file lacks required metadata; re-convert it");
  c.tie_embeddings = f.find_tensor("output.weight") == nullptr;
  c.qkv_bias = f.find_tensor("blk.0.attn_q.bias") != nullptr;
  c.bos_id = f.get_int("tokenizer.ggml.bos_token_id", -1);
  c.eos_id = f.get_int("tokenizer.ggml.eos_token_id", -1);
  if (c.eos_id >= 0) c.eos_ids = {c.eos_id};
  validate_with(c, f.path(), gguf_keys(arch));
  return c;
}

void config_validate(const ModelConfig& c, const std::string& src) { validate_with(c, src, hf_keys()); }

std::vector<float> llama3_rope_factors(const ModelConfig& c) {
  const RopeScaling& rs = c.rope_scaling;
  const int64_t half = c.head_dim / 2;
  const double lo_wl = double(rs.original_max_position) / rs.low_freq_factor;
  const double hi_wl = double(rs.original_max_position) / rs.high_freq_factor;
  std::vector<float> f(static_cast<size_t>(half));
  for (int64_t i = 0; i < half; ++i) {
    const double freq = 1.0 / std::pow(c.rope_theta, double(2 * i) / double(c.head_dim));
    const double wl = 2 * std::numbers::pi / freq;
    double v;
    if (wl < hi_wl) v = 1.0;
    else if (wl > lo_wl) v = rs.factor;
    else {
      const double smooth = (double(rs.original_max_position) / wl - rs.low_freq_factor) /
                            (rs.high_freq_factor - rs.low_freq_factor);
      v = 1.0 / ((1 - smooth) / rs.factor + smooth);
    }
    f[size_t(i)] = float(v);
  }
  return f;
}

}  // namespace lora
