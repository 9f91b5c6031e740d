// model_load: stories260K as GGUF and as an HF folder give identical tensors once llama.cpp's Q/K row
// permutation is undone (the real proof of the inverse permutation: the two files were made by
// different converters); SmolLM2's quantized GGUF against gguf-py's dequantization
// (tests/fixtures/load, made by tools/gen_load_fixtures.py); memory-mapped views without copies (F32,
// and BF16 with compute_dtype BF16); synthetic qwen2/GGUF models; and bad inputs giving a lora::Error
// that names the file and the tensor or field.
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <climits>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "core/error.h"
#include "io/gguf.h"
#include "io/mapped_file.h"
#include "io/safetensors.h"
#include "model/model.h"
#include "test_util.h"

using namespace lora;

namespace {

std::string make_tmp_dir(const std::string& name) {
  const std::string d = ::testing::TempDir() + "/lora_ml_" + name + "_" + std::to_string(::getpid());
  const std::string cmd = "rm -rf '" + d + "'";
  EXPECT_EQ(std::system(cmd.c_str()), 0);
  EXPECT_EQ(::mkdir(d.c_str(), 0755), 0);
  return d;
}

void write_text(const std::string& path, const std::string& text) {
  std::ofstream f(path, std::ios::binary);
  f.write(text.data(), std::streamsize(text.size()));
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

// Address ranges where `path` is memory-mapped in this process (from /proc/self/maps).
std::vector<std::pair<uintptr_t, uintptr_t>> mapped_ranges(const std::string& path) {
  char real[PATH_MAX];
  if (!::realpath(path.c_str(), real)) return {};
  std::vector<std::pair<uintptr_t, uintptr_t>> out;
  std::ifstream maps("/proc/self/maps");
  std::string line;
  while (std::getline(maps, line)) {
    const size_t slash = line.find('/');
    if (slash == std::string::npos || line.substr(slash) != real) continue;
    uintptr_t a = 0, b = 0;
    std::sscanf(line.c_str(), "%lx-%lx", &a, &b);
    out.emplace_back(a, b);
  }
  return out;
}

bool is_mapped_from(const Tensor& t, const std::vector<std::pair<uintptr_t, uintptr_t>>& ranges) {
  const auto p = reinterpret_cast<uintptr_t>(t.data);
  for (const auto& [a, b] : ranges)
    if (p >= a && p + uintptr_t(t.nbytes()) <= b) return true;
  return false;
}

bool same_bytes(const Tensor& a, const Tensor& b) {
  return a.dtype == b.dtype && a.shape_str() == b.shape_str() && std::memcmp(a.data, b.data, size_t(a.nbytes())) == 0;
}

std::vector<std::pair<std::string, Tensor>> named_tensors(const Model& m) {
  std::vector<std::pair<std::string, Tensor>> out = {{"tok_embd", m.tok_embd}, {"out_norm", m.out_norm}, {"lm_head", m.lm_head}};
  for (size_t l = 0; l < m.layers.size(); ++l) {
    const LayerWeights& w = m.layers[l];
    const std::string p = "layer " + std::to_string(l) + " ";
    for (auto& [n, t] : std::vector<std::pair<std::string, Tensor>>{
             {"attn_norm", w.attn_norm}, {"wq", w.wq}, {"wk", w.wk}, {"wv", w.wv}, {"wo", w.wo}, {"bq", w.bq},
             {"bk", w.bk}, {"bv", w.bv}, {"ffn_norm", w.ffn_norm}, {"w_gate", w.w_gate}, {"w_up", w.w_up},
             {"w_down", w.w_down}})
      out.emplace_back(p + n, t);
  }
  return out;
}

// ---------------------------------------------------------------------------------------------------
// A tiny synthetic model (C 16, F 24, L 2, H 4, KV 2, D 4, V 32) with deterministic values, written as
// an HF folder and/or a GGUF file.

struct Tiny {
  int64_t C = 16, F = 24, L = 2, H = 4, KV = 2, D = 4, V = 32;
  std::map<std::string, std::vector<float>> w;        // HF name -> values (HF layout)
  std::map<std::string, std::vector<int64_t>> shape;  // HF name -> shape

  void add(const std::string& name, std::vector<int64_t> s, uint32_t seed) {
    int64_t n = 1;
    for (int64_t d : s) n *= d;
    std::vector<float> v(static_cast<size_t>(n));
    uint32_t x = seed * 2654435761u + 12345u;
    for (auto& f : v) {
      x = x * 1664525u + 1013904223u;
      f = float(int32_t(x >> 8) % 2001 - 1000) / 1024.0f;  // exact in f32 (bf16/f16 round it)
    }
    w[name] = std::move(v);
    shape[name] = std::move(s);
  }
  explicit Tiny(bool bias, bool lm_head) {
    uint32_t seed = 1;
    add("model.embed_tokens.weight", {V, C}, seed++);
    for (int l = 0; l < L; ++l) {
      add(model_hf_name(l, "input_layernorm.weight"), {C}, seed++);
      add(model_hf_name(l, "self_attn.q_proj.weight"), {H * D, C}, seed++);
      add(model_hf_name(l, "self_attn.k_proj.weight"), {KV * D, C}, seed++);
      add(model_hf_name(l, "self_attn.v_proj.weight"), {KV * D, C}, seed++);
      add(model_hf_name(l, "self_attn.o_proj.weight"), {C, H * D}, seed++);
      if (bias) {
        add(model_hf_name(l, "self_attn.q_proj.bias"), {H * D}, seed++);
        add(model_hf_name(l, "self_attn.k_proj.bias"), {KV * D}, seed++);
        add(model_hf_name(l, "self_attn.v_proj.bias"), {KV * D}, seed++);
      }
      add(model_hf_name(l, "post_attention_layernorm.weight"), {C}, seed++);
      add(model_hf_name(l, "mlp.gate_proj.weight"), {F, C}, seed++);
      add(model_hf_name(l, "mlp.up_proj.weight"), {F, C}, seed++);
      add(model_hf_name(l, "mlp.down_proj.weight"), {C, F}, seed++);
    }
    add("model.norm.weight", {C}, seed++);
    if (lm_head) add("lm_head.weight", {V, C}, seed++);
  }

  std::string config_json(const std::string& type, bool tie) const {
    return fmt::format(R"({{"model_type": "{}", "hidden_size": {}, "intermediate_size": {}, "num_hidden_layers": {},
      "num_attention_heads": {}, "num_key_value_heads": {}, "vocab_size": {}, "tie_word_embeddings": {}}})",
                       type, C, F, L, H, KV, V, tie ? "true" : "false");
  }

  // Writes model.safetensors; `dtype` F32 or BF16 for the tensors; overrides replace entries.
  void write_hf(const std::string& dir, const std::string& config, DType dtype = DTYPE_F32,
                std::vector<SafeTensorWrite> overrides = {}) const {
    write_text(dir + "/config.json", config);
    static std::vector<std::vector<uint16_t>> keep;  // bf16 copies must outlive the write
    keep.clear();
    std::vector<SafeTensorWrite> ts;
    for (const auto& [name, v] : w) {
      bool replaced = false;
      for (const auto& o : overrides) replaced = replaced || o.name == name;
      if (replaced) continue;
      if (dtype == DTYPE_BF16) {
        keep.emplace_back(v.size());
        for (size_t i = 0; i < v.size(); ++i) keep.back()[i] = f32_to_bf16(v[i]);
        ts.push_back({name, DTYPE_BF16, shape.at(name), keep.back().data()});
      } else {
        ts.push_back({name, DTYPE_F32, shape.at(name), v.data()});
      }
    }
    for (auto& o : overrides)
      if (!o.shape.empty() || o.data) ts.push_back(o);
    safetensors_write(dir + "/model.safetensors", ts, {{"format", "pt"}});
  }
};

// llama.cpp's converter permutation (formats.md): w.reshape(n_head, 2, rows/n_head/2, cols)
// .swapaxes(1, 2).reshape(rows, cols). Written here from that formula: the GGUF row at
// (h, i, j) [i < rows/n_head/2, j < 2] is the HF row at (h, j, i).
std::vector<float> converter_permute(const std::vector<float>& w, int64_t rows, int64_t cols, int64_t n_head) {
  std::vector<float> out(w.size());
  const int64_t half = rows / n_head / 2;
  for (int64_t h = 0; h < n_head; ++h)
    for (int64_t i = 0; i < half; ++i)
      for (int64_t j = 0; j < 2; ++j) {
        const int64_t dst = (h * half + i) * 2 + j, src = (h * 2 + j) * half + i;
        std::memcpy(&out[size_t(dst * cols)], &w[size_t(src * cols)], size_t(cols) * sizeof(float));
      }
  return out;
}

}  // namespace

TEST(ModelLoad, Stories260KGgufEqualsHfFolder) {
  LORA_REQUIRE_SHARED("models/stories260K/stories260K.gguf");
  LORA_REQUIRE_SHARED("models/stories260K-hf/model.safetensors");
  const std::string gguf_path = test::shared_dir() + "/models/stories260K/stories260K.gguf";
  const Model g = model_load(gguf_path);
  const Model h = model_load(test::shared_dir() + "/models/stories260K-hf");
  EXPECT_EQ(g.cfg.dim, h.cfg.dim);
  EXPECT_EQ(g.cfg.n_heads, h.cfg.n_heads);
  EXPECT_EQ(g.cfg.n_kv_heads, h.cfg.n_kv_heads);
  EXPECT_EQ(g.cfg.head_dim, h.cfg.head_dim);
  EXPECT_EQ(g.cfg.vocab, h.cfg.vocab);
  EXPECT_TRUE(h.cfg.tie_embeddings);
  EXPECT_FALSE(g.cfg.tie_embeddings);
  ASSERT_EQ(g.layers.size(), 5u);
  ASSERT_EQ(h.layers.size(), 5u);
  const auto gt = named_tensors(g), ht = named_tensors(h);
  ASSERT_EQ(gt.size(), ht.size());
  for (size_t i = 0; i < gt.size(); ++i) {
    EXPECT_EQ(gt[i].second.defined(), ht[i].second.defined()) << gt[i].first;
    if (!gt[i].second.defined()) continue;
    EXPECT_EQ(gt[i].second.dtype, DTYPE_F32) << gt[i].first;
    EXPECT_TRUE(same_bytes(gt[i].second, ht[i].second)) << gt[i].first << " differs between GGUF and HF";
  }
  // The permutation really moved rows: the raw GGUF q/k rows differ from the HF rows.
  auto f = GGUFFile::open(gguf_path);
  for (const char* n : {"blk.0.attn_q.weight", "blk.0.attn_k.weight"}) {
    const GGUFTensorInfo* t = f->find_tensor(n);
    ASSERT_NE(t, nullptr);
    const Tensor& loaded = std::string(n).find("attn_q") != std::string::npos ? g.layers[0].wq : g.layers[0].wk;
    EXPECT_NE(std::memcmp(t->data, loaded.data, size_t(loaded.nbytes())), 0) << n;
  }
  // Tied HF: lm_head is the embedding itself, not a copy.
  EXPECT_EQ(h.lm_head.data, h.tok_embd.data);
}

TEST(ModelLoad, F32IsMemoryMappedWithoutCopy) {
  LORA_REQUIRE_SHARED("models/stories260K/stories260K.gguf");
  LORA_REQUIRE_SHARED("models/stories260K-hf/model.safetensors");
  const Model h = model_load(test::shared_dir() + "/models/stories260K-hf");
  const auto hr = mapped_ranges(test::shared_dir() + "/models/stories260K-hf/model.safetensors");
  ASSERT_FALSE(hr.empty());
  for (const auto& [n, t] : named_tensors(h))
    if (t.defined()) {
      EXPECT_TRUE(is_mapped_from(t, hr)) << n << " was copied";
    }
  const std::string gp = test::shared_dir() + "/models/stories260K/stories260K.gguf";
  const Model g = model_load(gp);
  const auto gr = mapped_ranges(gp);
  EXPECT_TRUE(is_mapped_from(g.layers[0].wv, gr));
  EXPECT_TRUE(is_mapped_from(g.lm_head, gr));
  EXPECT_FALSE(is_mapped_from(g.layers[0].wq, gr));  // permuted, so owned
}

TEST(ModelLoad, SmolLM2Q4_1) {
  LORA_REQUIRE_SMOLLM2();
  const Model m = model_load(test::smollm2_gguf());
  const ModelConfig& c = m.cfg;
  EXPECT_EQ(c.n_layers, 30);
  EXPECT_EQ(c.n_heads, 9);
  EXPECT_EQ(c.n_kv_heads, 3);
  EXPECT_EQ(c.head_dim, 64);
  EXPECT_TRUE(c.tie_embeddings);
  ASSERT_EQ(m.layers.size(), 30u);
  EXPECT_EQ(m.tok_embd.shape_str(), "(49152, 576)");
  EXPECT_EQ(m.lm_head.data, m.tok_embd.data);
  EXPECT_EQ(m.layers[0].wq.shape_str(), "(576, 576)");
  EXPECT_EQ(m.layers[0].wk.shape_str(), "(192, 576)");
  EXPECT_EQ(m.layers[0].wv.shape_str(), "(192, 576)");
  EXPECT_EQ(m.layers[0].wo.shape_str(), "(576, 576)");
  EXPECT_EQ(m.layers[29].w_gate.shape_str(), "(1536, 576)");
  EXPECT_EQ(m.layers[29].w_down.shape_str(), "(576, 1536)");
  EXPECT_EQ(m.out_norm.shape_str(), "(576)");
  EXPECT_FALSE(m.layers[0].bq.defined());
  for (const auto& [n, t] : named_tensors(m))
    if (t.defined()) {
      EXPECT_EQ(t.dtype, DTYPE_F32) << n;
    }

  // gguf-py's dequantization with the converter's permutation undone in numpy.
  const std::string fx = test::fixture("load/smollm2_weights.json");
  ASSERT_TRUE(test::file_exists(fx)) << fx;
  const auto j = nlohmann::json::parse(read_text_file(fx));
  auto by_name = [&](const std::string& name) -> Tensor {
    if (name == "token_embd.weight") return m.tok_embd;
    if (name == "output_norm.weight") return m.out_norm;
    const int l = std::stoi(name.substr(4));
    const LayerWeights& w = m.layers[size_t(l)];
    if (name.find("attn_q") != std::string::npos) return w.wq;
    if (name.find("attn_k") != std::string::npos) return w.wk;
    if (name.find("attn_v") != std::string::npos) return w.wv;
    if (name.find("ffn_down") != std::string::npos) return w.w_down;
    ADD_FAILURE() << name;
    return {};
  };
  int checked = 0;
  for (const auto& t : j["tensors"]) {
    const Tensor w = by_name(t["name"]);
    const auto shape = t["shape"].get<std::vector<int64_t>>();
    ASSERT_EQ(w.ndim, int(shape.size()));
    for (const auto& s : t["samples"]) {
      const int64_t r = s[0], col = s[1];
      const float want = f32_from_bits(s[2].get<uint32_t>());
      const float got = w.ndim == 1 ? w.f32()[col] : w.f32()[r * w.shape[1] + col];
      EXPECT_EQ(f32_to_bits(got), f32_to_bits(want)) << t["name"] << " [" << r << ", " << col << "]: " << got
                                                      << " vs " << want;
      ++checked;
    }
  }
  EXPECT_GT(checked, 100);
}

TEST(ModelLoad, Bf16KeptAndMappedWhenComputeIsBf16) {
  const std::string d = make_tmp_dir("bf16");
  Tiny tiny(false, true);
  tiny.write_hf(d, tiny.config_json("llama", false), DTYPE_BF16);
  ModelLoadOptions bf;
  bf.compute_dtype = DTYPE_BF16;
  {
    const Model m = model_load(d, bf);
    const auto ranges = mapped_ranges(d + "/model.safetensors");
    ASSERT_FALSE(ranges.empty());
    for (const auto& [n, t] : named_tensors(m)) {
      if (!t.defined()) continue;
      if (t.ndim == 2) {
        EXPECT_EQ(t.dtype, DTYPE_BF16) << n;
        EXPECT_TRUE(is_mapped_from(t, ranges)) << n << " was copied";
      } else {
        EXPECT_EQ(t.dtype, DTYPE_F32) << n;  // norms are always f32
      }
    }
    EXPECT_NE(m.lm_head.data, m.tok_embd.data);
  }
  // compute F32: converted, values equal the bf16 values.
  const Model m = model_load(d);
  const auto& src = tiny.w.at(model_hf_name(1, "mlp.down_proj.weight"));
  const Tensor& t = m.layers[1].w_down;
  ASSERT_EQ(t.dtype, DTYPE_F32);
  ASSERT_EQ(t.numel(), int64_t(src.size()));
  for (size_t i = 0; i < src.size(); ++i) ASSERT_EQ(t.f32()[i], bf16_to_f32(f32_to_bf16(src[i]))) << i;
  EXPECT_EQ(m.layers[0].attn_norm.f32()[3], bf16_to_f32(f32_to_bf16(tiny.w.at(model_hf_name(0, "input_layernorm.weight"))[3])));
}

TEST(ModelLoad, Qwen2BiasesAndTiedHf) {
  const std::string d = make_tmp_dir("qwen2");
  Tiny tiny(true, false);
  tiny.write_hf(d, tiny.config_json("qwen2", true));
  const Model m = model_load(d);
  EXPECT_TRUE(m.cfg.qkv_bias);
  ASSERT_TRUE(m.layers[1].bk.defined());
  EXPECT_EQ(m.layers[1].bk.shape_str(), "(8)");
  EXPECT_EQ(std::memcmp(m.layers[1].bq.data, tiny.w.at(model_hf_name(1, "self_attn.q_proj.bias")).data(), 16 * 4), 0);
  EXPECT_EQ(m.lm_head.data, m.tok_embd.data);
  // Missing bias: an error naming it.
  const std::string d2 = make_tmp_dir("qwen2_nobias");
  Tiny nob(false, false);
  nob.write_hf(d2, nob.config_json("qwen2", true));
  const std::string msg = error_of([&] { model_load(d2); });
  EXPECT_CONTAINS(msg, d2);
  EXPECT_CONTAINS(msg, "model.layers.0.self_attn.q_proj.bias");
}

// A GGUF written the way llama.cpp's converter writes one (q/k rows permuted, ne reversed, an F16
// tensor) loads to the same Model as the HF folder.
TEST(ModelLoad, SyntheticGgufMatchesHf) {
  for (const std::string arch : {"llama", "qwen2"}) {
    SCOPED_TRACE(arch);
    const bool qwen = arch == "qwen2";
    const std::string d = make_tmp_dir("gg_" + arch);
    Tiny tiny(qwen, true);
    tiny.write_hf(d, tiny.config_json(arch, false));
    const Model h = model_load(d);

    GGUFWriter w;
    w.set_str("general.architecture", arch);
    w.set_u32(arch + ".block_count", uint32_t(tiny.L));
    w.set_u32(arch + ".embedding_length", uint32_t(tiny.C));
    w.set_u32(arch + ".feed_forward_length", uint32_t(tiny.F));
    w.set_u32(arch + ".attention.head_count", uint32_t(tiny.H));
    w.set_u32(arch + ".attention.head_count_kv", uint32_t(tiny.KV));
    w.set_u32(arch + ".vocab_size", uint32_t(tiny.V));
    w.set_f32(arch + ".attention.layer_norm_rms_epsilon", 1e-6f);
    std::vector<std::vector<float>> keep;
    std::vector<std::vector<uint16_t>> keep16;
    auto put = [&](const std::string& gname, const std::string& hname, int64_t permute_heads, bool f16 = false) {
      const auto& s = tiny.shape.at(hname);
      std::vector<float> v = tiny.w.at(hname);
      if (permute_heads && !qwen) v = converter_permute(v, s[0], s.size() == 2 ? s[1] : 1, permute_heads);
      const std::vector<int64_t> ne(s.rbegin(), s.rend());
      if (f16) {
        keep16.emplace_back(v.size());
        for (size_t i = 0; i < v.size(); ++i) keep16.back()[i] = f32_to_f16(v[i]);
        w.add_tensor(gname, DTYPE_F16, ne, keep16.back().data());
      } else {
        keep.push_back(std::move(v));
        w.add_tensor(gname, DTYPE_F32, ne, keep.back().data());
      }
    };
    keep.reserve(64);
    keep16.reserve(8);
    put("token_embd.weight", "model.embed_tokens.weight", 0);
    put("output_norm.weight", "model.norm.weight", 0);
    put("output.weight", "lm_head.weight", 0);
    for (int l = 0; l < tiny.L; ++l) {
      const std::string b = "blk." + std::to_string(l) + ".";
      put(b + "attn_norm.weight", model_hf_name(l, "input_layernorm.weight"), 0);
      put(b + "attn_q.weight", model_hf_name(l, "self_attn.q_proj.weight"), tiny.H);
      put(b + "attn_k.weight", model_hf_name(l, "self_attn.k_proj.weight"), tiny.KV);
      put(b + "attn_v.weight", model_hf_name(l, "self_attn.v_proj.weight"), 0);
      put(b + "attn_output.weight", model_hf_name(l, "self_attn.o_proj.weight"), 0);
      if (qwen) {
        put(b + "attn_q.bias", model_hf_name(l, "self_attn.q_proj.bias"), tiny.H);
        put(b + "attn_k.bias", model_hf_name(l, "self_attn.k_proj.bias"), tiny.KV);
        put(b + "attn_v.bias", model_hf_name(l, "self_attn.v_proj.bias"), 0);
      }
      put(b + "ffn_norm.weight", model_hf_name(l, "post_attention_layernorm.weight"), 0);
      put(b + "ffn_gate.weight", model_hf_name(l, "mlp.gate_proj.weight"), 0);
      put(b + "ffn_up.weight", model_hf_name(l, "mlp.up_proj.weight"), 0, /*f16=*/true);
      put(b + "ffn_down.weight", model_hf_name(l, "mlp.down_proj.weight"), 0);
    }
    const std::string gp = d + "/tiny.gguf";
    w.write(gp);
    const Model g = model_load(gp);
    EXPECT_EQ(g.cfg.qkv_bias, qwen);
    const auto gt = named_tensors(g), ht = named_tensors(h);
    for (size_t i = 0; i < gt.size(); ++i) {
      if (gt[i].first.find("w_up") != std::string::npos) {
        // Went through f16: compare with the f16-rounded HF values.
        ASSERT_EQ(gt[i].second.numel(), ht[i].second.numel());
        for (int64_t k = 0; k < ht[i].second.numel(); ++k)
          ASSERT_EQ(gt[i].second.f32()[k], f16_to_f32(f32_to_f16(ht[i].second.f32()[k]))) << gt[i].first;
        continue;
      }
      EXPECT_EQ(gt[i].second.defined(), ht[i].second.defined()) << gt[i].first;
      if (gt[i].second.defined()) {
        EXPECT_TRUE(same_bytes(gt[i].second, ht[i].second)) << gt[i].first;
      }
    }
  }
}

TEST(ModelLoad, BadInputsAreErrorsNamingFileAndField) {
  Tiny tiny(false, true);
  // Missing path.
  const std::string nowhere = ::testing::TempDir() + "/lora_no_such_model";
  EXPECT_CONTAINS(error_of([&] { model_load(nowhere); }), nowhere);
  // A folder without config.json.
  {
    const std::string d = make_tmp_dir("noconfig");
    EXPECT_CONTAINS(error_of([&] { model_load(d); }), d + "/config.json");
  }
  // config.json malformed.
  {
    const std::string d = make_tmp_dir("badjson");
    tiny.write_hf(d, "{\"model_type\": \"llama\",,}");
    const std::string msg = error_of([&] { model_load(d); });
    EXPECT_CONTAINS(msg, d + "/config.json");
    EXPECT_CONTAINS(msg, "invalid JSON");
  }
  // Unsupported model_type.
  {
    const std::string d = make_tmp_dir("gpt2");
    tiny.write_hf(d, tiny.config_json("gpt_neox", false));
    const std::string msg = error_of([&] { model_load(d); });
    EXPECT_CONTAINS(msg, "config.json: model_type");
    EXPECT_CONTAINS(msg, "gpt_neox");
    EXPECT_CONTAINS(msg, "qwen2");
  }
  // A tensor whose shape disagrees with config.json.
  {
    const std::string d = make_tmp_dir("shape");
    std::vector<float> wrong(size_t(12 * 16));
    tiny.write_hf(d, tiny.config_json("llama", false), DTYPE_F32,
                  {{model_hf_name(1, "self_attn.k_proj.weight"), DTYPE_F32, {12, 16}, wrong.data()}});
    const std::string msg = error_of([&] { model_load(d); });
    EXPECT_CONTAINS(msg, d + "/model.safetensors");
    EXPECT_CONTAINS(msg, "model.layers.1.self_attn.k_proj.weight");
    EXPECT_CONTAINS(msg, "(12, 16)");
    EXPECT_CONTAINS(msg, "(8, 16)");
    EXPECT_CONTAINS(msg, "config.json and the weights disagree");
  }
  // A missing tensor.
  {
    const std::string d = make_tmp_dir("missing");
    tiny.write_hf(d, tiny.config_json("llama", false), DTYPE_F32,
                  {{model_hf_name(0, "mlp.up_proj.weight"), DTYPE_F32, {}, nullptr}});
    const std::string msg = error_of([&] { model_load(d); });
    EXPECT_CONTAINS(msg, "model.layers.0.mlp.up_proj.weight");
    EXPECT_CONTAINS(msg, "missing");
  }
  // lm_head absent while tie_word_embeddings is false.
  {
    const std::string d = make_tmp_dir("nohead");
    Tiny t2(false, false);
    t2.write_hf(d, t2.config_json("llama", false));
    const std::string msg = error_of([&] { model_load(d); });
    EXPECT_CONTAINS(msg, "lm_head.weight");
    EXPECT_CONTAINS(msg, "tie_word_embeddings");
  }
  // Unsupported dtype (an integer tensor where a weight belongs).
  {
    const std::string d = make_tmp_dir("dtype");
    std::vector<int32_t> ints(size_t(16 * 16));
    tiny.write_hf(d, tiny.config_json("llama", false), DTYPE_F32,
                  {{model_hf_name(0, "self_attn.q_proj.weight"), DTYPE_I32, {16, 16}, ints.data()}});
    const std::string msg = error_of([&] { model_load(d); });
    EXPECT_CONTAINS(msg, "model.layers.0.self_attn.q_proj.weight");
    EXPECT_CONTAINS(msg, "i32");
  }
  // Truncated safetensors.
  {
    const std::string d = make_tmp_dir("trunc_st");
    tiny.write_hf(d, tiny.config_json("llama", false));
    const std::string bytes = read_text_file(d + "/model.safetensors");
    write_text(d + "/model.safetensors", bytes.substr(0, bytes.size() - 100));
    const std::string msg = error_of([&] { model_load(d); });
    EXPECT_CONTAINS(msg, d + "/model.safetensors");
    EXPECT_CONTAINS(msg, "data_offsets");
  }
  // A file that is neither.
  {
    const std::string d = make_tmp_dir("neither");
    write_text(d + "/model.bin", "not a model");
    EXPECT_CONTAINS(error_of([&] { model_load(d + "/model.bin"); }), d + "/model.bin");
  }
}

TEST(ModelLoad, TruncatedGgufIsAnError) {
  LORA_REQUIRE_SHARED("models/stories260K/stories260K.gguf");
  const std::string bytes = read_text_file(test::shared_dir() + "/models/stories260K/stories260K.gguf");
  const std::string d = make_tmp_dir("trunc_gguf");
  const std::string p = d + "/stories.gguf";
  for (size_t cut : {size_t(3), size_t(30), size_t(5000), size_t(14176 + 64), bytes.size() - 1}) {
    write_text(p, bytes.substr(0, cut));
    const std::string msg = error_of([&] { model_load(p); });
    ASSERT_FALSE(msg.empty()) << "cut at " << cut;
    EXPECT_CONTAINS(msg, p);
  }
}
