// Whole-model golden test: tiny random Llama/Qwen2 models (tools/gen_golden.py) run through model_load
// and LlamaSession must reproduce transformers' float32 logits at every position — prefilled at once,
// prefilled in chunks, decoded token by token through the KV cache, and after a cache rewind — from the
// HF folder and from the GGUF file (Q/K rows permuted as llama.cpp's converter does), tied and untied
// embeddings, qkv bias (Qwen2), Llama-3 RoPE scaling. Plus: the reference backend on the same model,
// BF16/F16 weight storage (GEMM panels vs matvec vs reference), and the context-overflow error.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <vector>

#include "core/error.h"
#include "cpu/cpu_ops.h"
#include "cpu/reference.h"
#include "model/llama.h"
#include "model/model.h"
#include "test_util.h"
#include "tolerances.h"

namespace lora {
namespace {

namespace fs = std::filesystem;

struct Golden {
  std::vector<int32_t> tokens;
  int64_t vocab = 0;
  nlohmann::json variants;
};

const Golden& golden() {
  static const Golden g = [] {
    std::ifstream f(test::fixture("golden/golden.json"));
    LORA_CHECK(f.good(), "missing tests/fixtures/golden/golden.json (run tools/gen_golden.py)");
    const auto j = nlohmann::json::parse(f);
    Golden out;
    out.tokens = j["tokens"].get<std::vector<int32_t>>();
    out.vocab = j["vocab"].get<int64_t>();
    out.variants = j["variants"];
    return out;
  }();
  return g;
}

std::vector<float> read_f32(const std::string& path, size_t n) {
  std::ifstream f(path, std::ios::binary);
  LORA_CHECK(f.good(), "cannot open {}", path);
  std::vector<float> v(n);
  f.read(reinterpret_cast<char*>(v.data()), std::streamsize(n * 4));
  LORA_CHECK(size_t(f.gcount()) == n * 4, "{} is shorter than {} floats", path, n);
  return v;
}

// Worst |got - want| / (1 + |want|) over n values; fails (with the first few positions) above tol.
double compare(const float* got, const float* want, size_t n, double tol, const std::string& what) {
  double worst = 0;
  int reported = 0;
  for (size_t i = 0; i < n; ++i) {
    const double err = std::abs(double(got[i]) - want[i]) / (1.0 + std::abs(double(want[i])));
    worst = std::max(worst, std::isnan(err) ? INFINITY : err);
    if (!(err <= tol) && reported++ < 5)
      ADD_FAILURE() << what << ": logit [" << i / golden().vocab << ", " << i % golden().vocab << "] got " << got[i]
                    << " want " << want[i];
  }
  return worst;
}

struct Source {
  std::string label;  // e.g. "llama_tied/hf"
  std::string path;   // folder or .gguf
  std::string logits; // reference logits file
};

// The llama3rope variant pairs llama_untied's weights with another config.json: assemble that folder.
std::string assemble_hf(const nlohmann::json& v) {
  const std::string dir = test::fixture("golden/" + v["hf"].get<std::string>());
  if (!v.contains("hf_config")) return dir;
  const fs::path tmp = fs::path(::testing::TempDir()) / ("golden_" + v["name"].get<std::string>());
  fs::create_directories(tmp);
  fs::copy_file(test::fixture("golden/" + v["hf_config"].get<std::string>()), tmp / "config.json",
                fs::copy_options::overwrite_existing);
  fs::copy_file(fs::path(dir) / "model.safetensors", tmp / "model.safetensors", fs::copy_options::overwrite_existing);
  return tmp.string();
}

std::vector<Source> sources() {
  std::vector<Source> out;
  for (const auto& v : golden().variants) {
    const std::string name = v["name"].get<std::string>();
    const std::string logits = test::fixture("golden/" + v["logits"].get<std::string>());
    out.push_back({name + "/hf", assemble_hf(v), logits});
    if (!v["gguf"].is_null()) out.push_back({name + "/gguf", test::fixture("golden/" + v["gguf"].get<std::string>()), logits});
  }
  return out;
}

TEST(GoldenLlama, FixturesListAllVariants) {
  // Guards against an accidentally emptied golden.json making the parameterized tests vacuous.
  EXPECT_GE(sources().size(), 6u);
}

// Every (variant, file format): prefill all at once, chunked prefill, token-by-token decode, rewind.
TEST(GoldenLlama, MatchesTransformersLogits) {
  const Golden& g = golden();
  const int64_t T = int64_t(g.tokens.size()), V = g.vocab;
  for (const Source& s : sources()) {
    SCOPED_TRACE(s.label);
    const Model m = model_load(s.path);
    ASSERT_EQ(m.cfg.vocab, V);
    const std::vector<float> want = read_f32(s.logits, size_t(T * V));
    std::vector<float> got(size_t(T * V));

    // 1. The whole sequence in one forward.
    {
      LlamaSession sess(m, cpu_ops(), 32, 64);
      sess.forward(g.tokens.data(), T, got.data(), /*all_logits=*/true);
      const double worst = compare(got.data(), want.data(), got.size(), tol::kGoldenLogits, s.label + " prefill");
      RecordProperty(s.label + "_prefill_worst", std::to_string(worst));
      EXPECT_EQ(sess.cache().pos, T);
    }
    // 2. Prefill split internally (max_batch 5) and across calls (6 tokens, then the rest).
    {
      LlamaSession sess(m, cpu_ops(), 32, 5);
      sess.forward(g.tokens.data(), 6, got.data(), true);
      sess.forward(g.tokens.data() + 6, T - 6, got.data() + 6 * V, true);
      compare(got.data(), want.data(), got.size(), tol::kGoldenLogits, s.label + " chunked");
    }
    // 3. Decode one token at a time through the KV cache, last-token logits only.
    {
      LlamaSession sess(m, cpu_ops(), 32, 64);
      for (int64_t t = 0; t < T; ++t) sess.forward(&g.tokens[size_t(t)], 1, got.data() + t * V, false);
      const double worst = compare(got.data(), want.data(), got.size(), tol::kGoldenLogits, s.label + " decode");
      RecordProperty(s.label + "_decode_worst", std::to_string(worst));
    }
    // 4. Prompt without all_logits gives the last row; truncate then re-run the tail reproduces it.
    {
      LlamaSession sess(m, cpu_ops(), 32, 64);
      std::vector<float> last(static_cast<size_t>(V));
      sess.forward(g.tokens.data(), T, last.data(), false);
      compare(last.data(), want.data() + (T - 1) * V, size_t(V), tol::kGoldenLogits, s.label + " last row");
      sess.truncate(4);
      EXPECT_EQ(sess.cache().pos, 4);
      sess.forward(g.tokens.data() + 4, T - 4, got.data() + 4 * V, true);
      compare(got.data() + 4 * V, want.data() + 4 * V, size_t((T - 4) * V), tol::kGoldenLogits,
              s.label + " after truncate");
    }
  }
}

// The plain reference backend (double sums, no BLAS) on the same models: independent of the fast kernels.
TEST(GoldenLlama, ReferenceBackendMatchesTransformers) {
  const Golden& g = golden();
  const int64_t T = int64_t(g.tokens.size()), V = g.vocab;
  for (const Source& s : sources()) {
    SCOPED_TRACE(s.label);
    const Model m = model_load(s.path);
    const std::vector<float> want = read_f32(s.logits, size_t(T * V));
    std::vector<float> got(size_t(T * V));
    LlamaSession sess(m, reference_ops(), 32, 64);
    sess.forward(g.tokens.data(), T, got.data(), true);
    compare(got.data(), want.data(), got.size(), tol::kGoldenLogits, s.label + " reference ops");
  }
}

// A copy of m with every matrix (and the embedding table) stored as dt; norms stay F32.
Model model_with_dtype(const Model& m, DType dt) {
  Model out = m;
  auto conv = [&](Tensor& t) {
    if (!t.defined()) return;
    OwnedTensor o = tensor_alloc(dt, t.shape.data(), t.ndim);
    std::vector<float> f(size_t(t.numel()));
    dtype_convert_to_f32(t.dtype, t.data, f.data(), t.numel());
    dtype_convert_from_f32(dt, f.data(), o.t.data, t.numel());
    out.storage.push_back(o.buf);
    t = o.t;
  };
  const bool tied = m.lm_head.data == m.tok_embd.data;
  conv(out.tok_embd);
  if (tied) out.lm_head = out.tok_embd; else conv(out.lm_head);
  for (auto& l : out.layers)
    for (Tensor* t : {&l.wq, &l.wk, &l.wv, &l.wo, &l.w_gate, &l.w_up, &l.w_down}) conv(*t);
  return out;
}

// BF16/F16 weights: prefill (panel-converted GEMM) and decode (matvec) agree with the reference backend
// on the same rounded weights, and stay near transformers' f32 logits.
TEST(GoldenLlama, HalfPrecisionWeights) {
  const Golden& g = golden();
  const int64_t T = int64_t(g.tokens.size()), V = g.vocab;
  for (const Source& s : sources()) {
    if (s.label.find("/gguf") != std::string::npos) continue;  // same weights as /hf
    const Model m32 = model_load(s.path);
    const std::vector<float> want = read_f32(s.logits, size_t(T * V));
    for (DType dt : {DTYPE_BF16, DTYPE_F16}) {
      SCOPED_TRACE(s.label + " " + dtype_name(dt));
      const Model m = model_with_dtype(m32, dt);
      ASSERT_EQ(m.layers[0].wq.dtype, dt);
      std::vector<float> ref(size_t(T * V)), pre(size_t(T * V)), dec(size_t(T * V));
      LlamaSession(m, reference_ops(), 32, 64).forward(g.tokens.data(), T, ref.data(), true);
      LlamaSession(m, cpu_ops(), 32, 64).forward(g.tokens.data(), T, pre.data(), true);
      LlamaSession sd(m, cpu_ops(), 32, 64);
      for (int64_t t = 0; t < T; ++t) sd.forward(&g.tokens[size_t(t)], 1, dec.data() + t * V, false);
      compare(pre.data(), ref.data(), ref.size(), tol::kGoldenLogits, "prefill vs reference");
      compare(dec.data(), ref.data(), ref.size(), tol::kGoldenLogits, "decode vs reference");
      compare(pre.data(), want.data(), want.size(), dt == DTYPE_BF16 ? tol::kGoldenLogitsBF16 : tol::kGoldenLogitsF16,
              "vs transformers f32");
    }
  }
}

TEST(GoldenLlama, ContextOverflowIsAnInputError) {
  const Model m = model_load(test::fixture("golden/llama_tied"));
  LlamaSession sess(m, cpu_ops(), 8, 4);
  std::vector<float> logits(size_t(m.cfg.vocab));
  const auto& tok = golden().tokens;
  sess.forward(tok.data(), 5, logits.data());
  try {
    sess.forward(tok.data(), 4, logits.data());
    ADD_FAILURE() << "9 tokens accepted into a context of 8";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("prompt of 9 tokens does not fit the context of 8"), std::string::npos)
        << e.what();
    EXPECT_NE(e.hint().find("--max-kv-size"), std::string::npos) << e.hint();
  }
  EXPECT_EQ(sess.cache().pos, 5);  // the failed call left the cache as it was
  sess.forward(tok.data() + 5, 3, logits.data());
  EXPECT_EQ(sess.cache().pos, 8);
}

TEST(GoldenLlama, BadTokenIdLeavesCacheUnchanged) {
  const Model m = model_load(test::fixture("golden/llama_tied"));
  LlamaSession sess(m, cpu_ops(), 16, 4);
  std::vector<float> logits(size_t(m.cfg.vocab));
  const std::vector<int32_t> bad = {1, 2, int32_t(m.cfg.vocab)};
  EXPECT_THROW(sess.forward(bad.data(), 3, logits.data()), Error);
  EXPECT_EQ(sess.cache().pos, 0);
}

}  // namespace
}  // namespace lora
