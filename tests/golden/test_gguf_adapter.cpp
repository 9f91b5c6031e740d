// GGUF-LoRA adapters (train/adapter_gguf.h) on stories260K (../shared): adapters written by gguf-py the way
// llama.cpp's convert_lora_to_gguf.py writes them (tests/fixtures/gguf_lora, tools/gen_gguf_lora_fixtures.py:
// F32; Q8_0 + F16; F16 without alpha) import with llama.cpp's own logits, on the GGUF base and on the HF base;
// a random adapter (B non-zero, all seven targets) goes mlx -> peft -> gguf -> mlx bit for bit, and the Q/K rows
// of B in the file are llama.cpp's interleaved order; --resume-adapter-file's loader reads the same starting
// weights from mlx-lm, PEFT and GGUF-LoRA files; bad input (another architecture, a model instead of an adapter,
// widths and ranks that do not fit, unknown names, DoRA or full fine-tuning export, an existing output) is a
// lora::Error naming the file and the tensor or key.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <string>
#include <vector>

#include "core/error.h"
#include "core/rng.h"
#include "cpu/cpu_ops.h"
#include "io/gguf.h"
#include "io/safetensors.h"
#include "model/llama.h"
#include "train/adapter_fuse.h"
#include "train/adapter_gguf.h"
#include "train/adapter_io.h"
#include "train/adapter_peft.h"
#include "test_util.h"
#include "tolerances.h"

namespace lora {
namespace {

namespace fs = std::filesystem;

#define REQUIRE_STORIES()                                        \
  LORA_REQUIRE_SHARED("models/stories260K/stories260K.gguf");   \
  LORA_REQUIRE_SHARED("models/stories260K-hf/config.json")

const Model& base_gguf() {
  static Model m = model_load(test::shared_dir() + "/models/stories260K/stories260K.gguf");
  return m;
}
const Model& base_hf() {
  static Model m = model_load(test::shared_dir() + "/models/stories260K-hf");
  return m;
}

std::string fresh(const std::string& name) {
  const std::string d = ::testing::TempDir() + "/lora_gguf_adapter_" + name;
  fs::remove_all(d);
  return d;
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.full();  // message and hint
  }
  return "no error";
}

// A .gguf path under TempDir, removed first.
std::string fresh_gguf(const std::string& name) {
  const std::string p = ::testing::TempDir() + "/lora_gguf_adapter_" + name + ".gguf";
  fs::remove(p);
  return p;
}

bool has(const std::string& s, const std::string& needle) { return s.find(needle) != std::string::npos; }

std::vector<std::vector<float>> values(const Adapter& a) {
  std::vector<std::vector<float>> v;
  for (const auto& p : a.params) v.emplace_back(p.value.t.f32(), p.value.t.f32() + p.value.t.numel());
  return v;
}

// A LoRA adapter on every linear of every block with random A and B (B non-zero, so it changes the output).
Adapter random_adapter(const Model& m, int64_t rank, double scale, uint64_t seed) {
  LoraConfig c;
  c.rank = rank;
  c.scale = scale;
  c.keys = {LIN_Q, LIN_K, LIN_V, LIN_O, LIN_GATE, LIN_UP, LIN_DOWN};
  c.num_layers = -1;
  Adapter a = adapter_create(m, c, seed);
  Rng rng(seed, 99);
  for (TrainParam& p : a.params)
    if (p.name.size() > 7 && p.name.compare(p.name.size() - 7, 7, ".lora_b") == 0)
      for (int64_t i = 0; i < p.value.t.numel(); ++i) p.value.t.f32()[i] = 0.5f * (2.0f * rng.uniform() - 1.0f);
  return a;
}

// Logits of m with a fused, for the fixture's ids; the worst |Δ| / (1 + |want|) against its llama.cpp logits.
double vs_llama_cpp(const Model& m, const Adapter& a, const std::string& expected, double* moved) {
  auto f = SafetensorsFile::open(expected);
  const SafeTensorInfo* ids = f->find("ids");
  const SafeTensorInfo* want = f->find("logits");
  EXPECT_TRUE(ids && want);
  if (!ids || !want) return 1e9;
  const int64_t n = ids->numel(), V = m.cfg.vocab;
  const Model fused = adapter_fuse(m, a);
  std::vector<float> got(size_t(n * V)), base(size_t(n * V));
  LlamaSession s(fused, cpu_ops(), 64);
  s.forward(static_cast<const int32_t*>(ids->data), n, got.data(), true);
  LlamaSession sb(m, cpu_ops(), 64);
  sb.forward(static_cast<const int32_t*>(ids->data), n, base.data(), true);
  const float* w = static_cast<const float*>(want->data);
  double worst = 0;
  *moved = 0;
  for (int64_t i = 0; i < n * V; ++i) {
    worst = std::max(worst, std::abs(double(got[size_t(i)]) - w[i]) / (1 + std::abs(w[i])));
    *moved = std::max(*moved, std::abs(double(base[size_t(i)]) - w[i]));
  }
  return worst;
}

struct Fixture {
  const char* name;
  int64_t rank;
  double scale;
  size_t n_keys;
  int64_t num_layers;
};

TEST(GgufAdapter, LlamaCppAdaptersGiveLlamaCppLogits) {
  REQUIRE_STORIES();
  const Fixture fixtures[] = {{"lora_f32", 4, 2.0, 7, 3}, {"lora_q8_0", 2, 1.5, 4, 5}, {"lora_noalpha", 3, 1.0, 2, 1}};
  for (const Fixture& fx : fixtures) {
    const std::string path = test::fixture(std::string("gguf_lora/") + fx.name + ".gguf");
    ASSERT_TRUE(adapter_is_gguf(path)) << path;
    EXPECT_STREQ(adapter_layout_name(path), "GGUF-LoRA");
    for (const Model* m : {&base_gguf(), &base_hf()}) {
      const Adapter a = adapter_load(path, *m);
      EXPECT_EQ(a.cfg.type, FT_LORA);
      EXPECT_EQ(a.cfg.rank, fx.rank) << fx.name;
      EXPECT_DOUBLE_EQ(a.cfg.scale, fx.scale) << fx.name;
      EXPECT_EQ(a.cfg.keys.size(), fx.n_keys) << fx.name;
      EXPECT_EQ(a.cfg.num_layers, fx.num_layers) << fx.name;
      double moved = 0;
      const double worst = vs_llama_cpp(*m, a, test::fixture(std::string("gguf_lora/") + fx.name + ".expected.safetensors"), &moved);
      EXPECT_LE(worst, tol::kGgufLoraVsLlamaCpp) << fx.name << " on " << m->source;
      EXPECT_GT(moved, 1.0) << "the fixture's adapter should change llama.cpp's logits";
      std::printf("  measured: %s on %s: logits vs llama.cpp %.2e (the adapter moves them by %.1f)\n", fx.name,
                  m == &base_gguf() ? "the GGUF base" : "the HF base", worst, moved);
    }
  }
}

TEST(GgufAdapter, RoundTripMlxPeftGgufMlxIsBitExact) {
  REQUIRE_STORIES();
  const Model& m = base_hf();
  const Adapter a = random_adapter(m, 4, 2.5, 7);
  const std::string mlx = fresh("rt_mlx"), peft = fresh("rt_peft"), gguf_dir = fresh("rt_gguf"), mlx2 = fresh("rt_mlx2");
  const std::string gguf = gguf_dir + "/adapter.gguf";
  adapter_save_mlx(a, mlx, false);
  const Adapter b = adapter_load(mlx, m);
  adapter_save_peft(b, peft, "", false);
  const Adapter c = adapter_load(peft, m);
  adapter_save_gguf(c, m, gguf, false);  // the parent folder is created
  ASSERT_TRUE(adapter_is_gguf(gguf));
  EXPECT_FALSE(adapter_is_gguf(mlx));
  EXPECT_FALSE(adapter_is_gguf(test::shared_dir() + "/models/stories260K/stories260K.gguf"));  // a model
  const Adapter d = adapter_load(gguf, m);
  const Adapter d_on_gguf_base = adapter_load(gguf, base_gguf());
  adapter_save_mlx(d, mlx2, false);
  const Adapter e = adapter_load(mlx2, m);
  EXPECT_EQ(values(a), values(c));
  EXPECT_EQ(values(a), values(d));
  EXPECT_EQ(values(a), values(d_on_gguf_base));
  EXPECT_EQ(values(a), values(e));
  EXPECT_DOUBLE_EQ(d.cfg.scale, 2.5);
  EXPECT_EQ(d.cfg.rank, 4);
  EXPECT_EQ(d.first_layer, 0);

  // The file itself, as llama.cpp reads it: metadata, ggml shapes, and q/k's B rows in interleaved order.
  auto g = GGUFFile::open(gguf);
  EXPECT_EQ(g->get_str("general.type"), "adapter");
  EXPECT_EQ(g->get_str("general.architecture"), "llama");
  EXPECT_EQ(g->get_str("adapter.type"), "lora");
  EXPECT_EQ(g->find("adapter.lora.alpha")->type, GGUF_TYPE_FLOAT32);
  EXPECT_DOUBLE_EQ(g->get_float("adapter.lora.alpha", 0), 10.0);
  EXPECT_EQ(g->tensors().size(), size_t(5 * 7 * 2));
  const ModelConfig& mc = m.cfg;
  const int64_t D = mc.head_dim, r = 4;
  for (LinearKey k : {LIN_Q, LIN_K, LIN_V}) {
    const LoraLinear* ll = a.lora[3][k];
    const int64_t out = ll->b.dim(1), heads = k == LIN_Q ? mc.n_heads : k == LIN_K ? mc.n_kv_heads : 0;
    const char* gk = k == LIN_Q ? "attn_q" : k == LIN_K ? "attn_k" : "attn_v";
    const GGUFTensorInfo* ta = g->find_tensor(std::string("blk.3.") + gk + ".weight.lora_a");
    const GGUFTensorInfo* tb = g->find_tensor(std::string("blk.3.") + gk + ".weight.lora_b");
    ASSERT_TRUE(ta && tb);
    EXPECT_EQ(ta->ne, (std::vector<int64_t>{mc.dim, r}));
    EXPECT_EQ(tb->ne, (std::vector<int64_t>{r, out}));
    EXPECT_EQ(tb->dtype, DTYPE_F32);
    const float* fa = static_cast<const float*>(ta->data);  // (r, in) = our aᵀ
    const float* fb = static_cast<const float*>(tb->data);  // (out, r) = our bᵀ, rows permuted for q and k
    int bad = 0;
    for (int64_t i = 0; i < mc.dim; ++i)
      for (int64_t j = 0; j < r; ++j) bad += fa[j * mc.dim + i] != ll->a.f32()[i * r + j];
    for (int64_t row = 0; row < out; ++row) {
      int64_t hf_row = row;  // gguf_row[h*D + 2*i + j] = hf_row[h*D + j*D/2 + i]
      if (heads) {
        const int64_t h = row / D, w = row % D, i = w / 2, j = w % 2;
        hf_row = h * D + j * (D / 2) + i;
      }
      for (int64_t j = 0; j < r; ++j) bad += fb[row * r + j] != ll->b.f32()[j * out + hf_row];
    }
    EXPECT_EQ(bad, 0) << gk;
  }
}

// Writes a GGUF-LoRA for stories260K by hand (our writer) with the given tweaks.
struct Bad {
  std::string arch = "llama", type = "adapter";
  bool alpha = true;
  std::vector<std::pair<std::string, std::vector<int64_t>>> tensors;  // name, ne
};
std::string write_bad(const std::string& name, const Bad& b) {
  const std::string path = fresh_gguf(name);
  GGUFWriter w;
  w.set_str("general.architecture", b.arch);
  w.set_str("general.type", b.type);
  w.set_str("adapter.type", "lora");
  if (b.alpha) w.set_f32("adapter.lora.alpha", 8.0f);
  static std::vector<float> zeros(64 * 172, 0.01f);
  for (const auto& [n, ne] : b.tensors) w.add_tensor(n, DTYPE_F32, ne, zeros.data());
  w.write(path);
  return path;
}

TEST(GgufAdapter, BadInputNamesTheFileAndTensor) {
  REQUIRE_STORIES();
  const Model& m = base_gguf();
  const std::vector<std::pair<std::string, std::vector<int64_t>>> good = {{"blk.4.attn_q.weight.lora_a", {64, 4}},
                                                                          {"blk.4.attn_q.weight.lora_b", {4, 64}}};
  EXPECT_EQ(error_of([&] { adapter_load(write_bad("good", Bad{"llama", "adapter", true, good}), m); }), "no error");

  std::string p = write_bad("arch", Bad{"qwen2", "adapter", true, good});
  std::string e = error_of([&] { adapter_load(p, m); });
  EXPECT_TRUE(has(e, p) && has(e, "general.architecture") && has(e, "qwen2") && has(e, "\"llama\"")) << e;
  e = error_of([&] { adapter_load(test::shared_dir() + "/models/stories260K/stories260K.gguf", m); });
  EXPECT_TRUE(has(e, "general.type") && has(e, "not a LoRA adapter")) << e;

  auto check = [&](const char* name, std::vector<std::pair<std::string, std::vector<int64_t>>> ts, const char* what,
                   const char* tensor) {
    const std::string path = write_bad(name, Bad{"llama", "adapter", true, ts});
    const std::string err = error_of([&] { adapter_load(path, m); });
    EXPECT_TRUE(has(err, path) && has(err, tensor) && has(err, what)) << name << ": " << err;
    // --resume-adapter-file's loader gives the same errors.
    Adapter a = random_adapter(m, 4, 2.0, 1);
    const std::string err2 = error_of([&] { adapter_load_weights(path, a, m, false); });
    EXPECT_TRUE(has(err2, path) && has(err2, tensor)) << name << ": " << err2;
  };
  check("width_a", {{"blk.4.attn_q.weight.lora_a", {65, 4}}, {"blk.4.attn_q.weight.lora_b", {4, 64}}}, "takes 64 inputs",
        "blk.4.attn_q.weight.lora_a");
  check("width_b", {{"blk.4.attn_k.weight.lora_a", {64, 4}}, {"blk.4.attn_k.weight.lora_b", {4, 64}}}, "has 32 outputs",
        "blk.4.attn_k.weight.lora_b");
  check("rank", {{"blk.4.attn_q.weight.lora_a", {64, 4}}, {"blk.4.attn_q.weight.lora_b", {8, 64}}}, "rank 4",
        "blk.4.attn_q.weight");
  check("ranks", {{"blk.4.attn_q.weight.lora_a", {64, 4}}, {"blk.4.attn_q.weight.lora_b", {4, 64}},
                  {"blk.4.attn_v.weight.lora_a", {64, 2}}, {"blk.4.attn_v.weight.lora_b", {2, 32}}},
        "has rank 2", "blk.4.attn_v.weight");
  check("key", {{"blk.4.attn_qq.weight.lora_a", {64, 4}}, {"blk.4.attn_qq.weight.lora_b", {4, 64}}}, "does not name",
        "blk.4.attn_qq.weight.lora_a");
  check("embd", {{"token_embd.weight.lora_a", {64, 4}}, {"token_embd.weight.lora_b", {4, 512}}}, "does not name",
        "token_embd.weight.lora_a");
  check("layer", {{"blk.7.attn_q.weight.lora_a", {64, 4}}, {"blk.7.attn_q.weight.lora_b", {4, 64}}}, "has 5 blocks",
        "blk.7.attn_q.weight.lora_a");
  check("suffix", {{"blk.4.attn_q.weight.lora_c", {64, 4}}}, "neither", "blk.4.attn_q.weight.lora_c");
  check("half", {{"blk.4.attn_q.weight.lora_a", {64, 4}}}, "is missing", "blk.4.attn_q.weight.lora_b");
  // Blocks that are not a final run, and different targets per block, have no form in our adapters.
  e = error_of([&] {
    adapter_load(write_bad("run", Bad{"llama", "adapter", true, {{"blk.0.attn_q.weight.lora_a", {64, 4}}, {"blk.0.attn_q.weight.lora_b", {4, 64}}}}), m);
  });
  EXPECT_TRUE(has(e, "but not block 1")) << e;
  e = error_of([&] {
    adapter_load(write_bad("keys", Bad{"llama", "adapter", true,
                                       {{"blk.3.attn_q.weight.lora_a", {64, 4}}, {"blk.3.attn_q.weight.lora_b", {4, 64}},
                                        {"blk.4.attn_v.weight.lora_a", {64, 4}}, {"blk.4.attn_v.weight.lora_b", {4, 32}}}}),
                 m);
  });
  EXPECT_TRUE(has(e, "blk.4") && has(e, "attn_v") && has(e, "attn_q")) << e;

  // Export: DoRA and full fine-tuning refused (hint: lora fuse); an existing file only with force.
  LoraConfig dc;
  dc.type = FT_DORA;
  dc.keys = {LIN_Q};
  dc.num_layers = 1;
  const std::string out = fresh_gguf("export");
  e = error_of([&] { adapter_save_gguf(adapter_create(m, dc, 0), m, out, false); });
  EXPECT_TRUE(has(e, out) && has(e, "DoRA") && has(e, "lora fuse")) << e;
  dc.type = FT_FULL;
  e = error_of([&] { adapter_save_gguf(adapter_create(m, dc, 0), m, out, false); });
  EXPECT_TRUE(has(e, "full fine-tuning") && has(e, "lora fuse")) << e;
  EXPECT_FALSE(fs::exists(out));
  const Adapter a = random_adapter(m, 2, 1.0, 3);
  adapter_save_gguf(a, m, out, false);
  e = error_of([&] { adapter_save_gguf(a, m, out, false); });
  EXPECT_TRUE(has(e, out) && has(e, "already exists") && has(e, "--force")) << e;
  EXPECT_EQ(error_of([&] { adapter_save_gguf(a, m, out, true); }), "no error");

  // A folder holding a GGUF-LoRA: the hint names the file to pass.
  const std::string dir = fresh("folder");
  fs::create_directories(dir);
  fs::copy_file(out, dir + "/my_adapter.gguf");
  e = error_of([&] { adapter_load(dir, m); });
  EXPECT_TRUE(has(e, "my_adapter.gguf")) << e;
}

TEST(GgufAdapter, ResumeAdapterFileReadsEveryLayout) {
  REQUIRE_STORIES();
  const Model& m = base_hf();
  const Adapter src = random_adapter(m, 4, 2.0, 11);
  const std::string mlx = fresh("res_mlx"), peft = fresh("res_peft"), gguf = fresh_gguf("res");
  adapter_save_mlx(src, mlx, false);
  adapter_save_peft(src, peft, "", false);
  adapter_save_gguf(src, m, gguf, false);
  // The adapter being trained: same configuration, another seed (so every value must come from the file).
  const std::vector<std::string> inputs = {mlx, mlx + "/adapters.safetensors", peft, peft + "/adapter_model.safetensors", gguf};
  for (const std::string& in : inputs) {
    Adapter t = random_adapter(m, 4, 2.0, 12);
    ASSERT_NE(values(t), values(src));
    adapter_load_weights(in, t, m, /*require_all=*/false);
    EXPECT_EQ(values(t), values(src)) << in;
  }
  // The same through the GGUF base (q/k rows un-permuted by the model's heads either way).
  Adapter t = random_adapter(base_gguf(), 4, 2.0, 12);
  adapter_load_weights(gguf, t, base_gguf(), false);
  EXPECT_EQ(values(t), values(src));
  // A run with another rank, or fewer layers than the file has: an error naming the file and a tensor.
  for (const std::string& in : {peft, gguf}) {
    Adapter r8 = random_adapter(m, 8, 2.0, 1);
    std::string e = error_of([&] { adapter_load_weights(in, r8, m, false); });
    EXPECT_TRUE(has(e, in) && has(e, "shape") && has(e, "lora_a")) << e;
    LoraConfig c = src.cfg;
    c.num_layers = 2;
    Adapter few = adapter_create(m, c, 0);
    e = error_of([&] { adapter_load_weights(in, few, m, false); });
    EXPECT_TRUE(has(e, in) && has(e, "layers.0") && has(e, "not a trainable tensor")) << e;
  }
  // A run with more targets than the file has keeps the others' initial values (require_all = false), as for
  // mlx-lm files; the file's own targets are read.
  LoraConfig qv = src.cfg;
  qv.keys = {LIN_Q, LIN_V};
  Adapter part = adapter_create(m, qv, 5);
  for (TrainParam& p : part.params)
    for (int64_t i = 0; i < p.value.t.numel(); ++i) p.value.t.f32()[i] = 0.25f + float(i % 7);
  const std::string gguf_qv = fresh_gguf("res_qv");
  adapter_save_gguf(part, m, gguf_qv, false);
  Adapter more = random_adapter(m, 4, 2.0, 12);
  const std::vector<std::vector<float>> before = values(more);
  EXPECT_EQ(error_of([&] { adapter_load_weights(gguf_qv, more, m, false); }), "no error");
  for (size_t i = 0; i < more.params.size(); ++i) {
    const std::string& n = more.params[i].name;
    const bool in_file = has(n, "q_proj") || has(n, "v_proj");
    if (!in_file) {
      EXPECT_EQ(values(more)[i], before[i]) << n;
    }
  }
  EXPECT_EQ(values(more)[0], values(part)[0]) << more.params[0].name;  // layer 0's q_proj.lora_a
}

}  // namespace
}  // namespace lora
