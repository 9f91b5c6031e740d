// model_save_gguf (model/model_gguf_save.h), the HF side of GGUF models (model_save_hf with a config and a
// vocabulary, io/tokenizer_write.h) and the streaming writers (io/safetensors.h, io/gguf.h):
//  - HF -> GGUF -> model_load: every tensor equals the HF load bit for bit (stories260K-hf f32, a random
//    bf16 Llama with GQA, tied and untied), and the file holds the source dtype (bf16 stays bf16).
//  - the Q/K rows in the file follow llama.cpp's permutation, checked against the formula directly.
//  - GGUF (stories260K.gguf) -> HF -> GGUF: every tensor's bytes and the tokenizer keys equal the original.
//  - logits of the exported GGUF equal those of the HF folder; the exported tokenizer gives the source ids.
//  - --quantize: each quantized tensor equals quant_quantize_row of the (permuted) source rows, the types
//    follow llama.cpp's rule for output/fallbacks, and the model's logits stay close (tolerances.h).
//  - writers: disk full (/dev/full), a failing producer: an error, and no file or temp file left behind.
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "core/error.h"
#include "core/quant.h"
#include "cpu/cpu_ops.h"
#include "io/gguf.h"
#include "io/safetensors.h"
#include "io/tokenizer.h"
#include "io/tokenizer_write.h"
#include "model/init.h"
#include "model/llama.h"
#include "model/model.h"
#include "model/model_gguf_save.h"
#include "model/model_save.h"
#include "test_util.h"
#include "tolerances.h"

namespace lora {
namespace {

namespace fs = std::filesystem;

std::string fresh(const std::string& name) {
  const std::string d = ::testing::TempDir() + "/lora_gguf_save_" + name;
  fs::remove_all(d);
  return d;
}
std::string stories_hf() { return test::shared_dir() + "/models/stories260K-hf"; }
std::string stories_gguf() { return test::shared_dir() + "/models/stories260K/stories260K.gguf"; }

// A random Llama (GQA 4/2 heads of 64, widths multiple of 256 so every k-quant applies) with stories'
// tokenizer; returns its folder.
std::string tiny_llama(const std::string& name, bool tied, DType dtype) {
  const std::string dir = fresh(name), cfg_dir = dir + "_cfg";
  fs::remove_all(cfg_dir);
  fs::create_directories(cfg_dir);
  std::ofstream(cfg_dir + "/config.json")
      << R"({"model_type":"llama","hidden_size":256,"intermediate_size":512,"num_hidden_layers":2,)"
      << R"("num_attention_heads":4,"num_key_value_heads":2,"vocab_size":512,"max_position_embeddings":128,)"
      << R"("rms_norm_eps":1e-5,"rope_theta":10000.0,"bos_token_id":1,"eos_token_id":2,"tie_word_embeddings":)"
      << (tied ? "true" : "false") << "}";
  fs::copy_file(stories_hf() + "/tokenizer.model", cfg_dir + "/tokenizer.model");
  ModelInitOptions o;
  o.dtype = dtype;
  o.seed = 7;
  o.std = 0.05;
  model_init_random(cfg_dir + "/config.json", dir, o);
  return dir;
}

Model load_keep(const std::string& path) {
  ModelLoadOptions o;
  o.compute_dtype = DTYPE_BF16;  // stored float types as they are
  return model_load(path, o);
}

void expect_same(const Tensor& a, const Tensor& b, const std::string& what) {
  ASSERT_EQ(a.defined(), b.defined()) << what;
  if (!a.defined()) return;
  ASSERT_EQ(a.dtype, b.dtype) << what;
  ASSERT_EQ(a.shape_str(), b.shape_str()) << what;
  EXPECT_EQ(std::memcmp(a.data, b.data, size_t(a.nbytes())), 0) << what;
}

void expect_same_model(const Model& a, const Model& b) {
  const auto na = model_hf_tensors(a), nb = model_hf_tensors(b);
  ASSERT_EQ(na.size(), nb.size());
  for (size_t i = 0; i < na.size(); ++i) {
    ASSERT_EQ(na[i].name, nb[i].name);
    expect_same(na[i].t, nb[i].t, na[i].name);
  }
}

TokenizerVocab vocab_of(const std::string& hf_dir, const Model& m) {
  return tokenizer_vocab_from_hf(hf_dir, m.cfg.vocab, m.cfg.bos_id, m.cfg.eos_id);
}

std::vector<float> logits_of(const Model& m, const std::vector<int32_t>& ids) {
  LlamaSession s(m, cpu_ops(), 64, 64);
  std::vector<float> out(ids.size() * size_t(m.cfg.vocab));
  s.forward(ids.data(), int64_t(ids.size()), out.data(), true);
  return out;
}

const std::vector<int32_t> kIds = {1, 403, 407, 261, 378, 432, 383, 286, 261, 376, 298, 315};

TEST(ModelGgufSave, StoriesHfToGgufBitExact) {
  LORA_REQUIRE_SHARED("models/stories260K-hf/model.safetensors");
  const Model hf = load_keep(stories_hf());
  const std::string out = fresh("stories.gguf");
  model_save_gguf(hf, vocab_of(stories_hf(), hf), out, {});
  const Model g = load_keep(out);
  EXPECT_TRUE(g.cfg.tie_embeddings);
  expect_same_model(hf, g);
  auto f = GGUFFile::open(out);
  EXPECT_EQ(f->find_tensor("output.weight"), nullptr);  // tied: no output tensor
  EXPECT_EQ(f->get_int("general.file_type", -1), 0);
  EXPECT_EQ(f->get_str("tokenizer.ggml.model"), "llama");
  EXPECT_EQ(f->get_int("llama.vocab_size", 0), 512);
  EXPECT_EQ(f->get_int("llama.attention.head_count_kv", 0), 4);
  // The same logits from the GGUF export as from the HF folder (identical weights in memory).
  EXPECT_EQ(logits_of(model_load(out), kIds), logits_of(model_load(stories_hf()), kIds));
  // The tokenizer embedded in the export gives the source tokenizer's ids.
  auto src_tok = tokenizer_load(stories_hf());
  auto gguf_tok = tokenizer_load(out);
  for (const char* text : {"Once upon a time, there was a little girl named Lily.", "She said: \"Hi!\" 123 ok",
                           "Tom and Sue went to the park. They saw a dog", "héllo wörld — ☃"})
    EXPECT_EQ(gguf_tok->encode(text), src_tok->encode(text)) << text;
}

TEST(ModelGgufSave, TinyLlamaBf16GqaTiedAndUntied) {
  LORA_REQUIRE_SHARED("models/stories260K-hf/tokenizer.model");
  for (bool tied : {false, true}) {
    SCOPED_TRACE(tied ? "tied" : "untied");
    const std::string dir = tiny_llama(tied ? "tied" : "untied", tied, DTYPE_BF16);
    const Model hf = load_keep(dir);
    ASSERT_EQ(hf.layers[0].wq.dtype, DTYPE_BF16);
    const std::string out = fresh(std::string(tied ? "tied" : "untied") + ".gguf");
    model_save_gguf(hf, vocab_of(dir, hf), out, {});
    auto f = GGUFFile::open(out);
    EXPECT_EQ(f->get_int("general.file_type", -1), 32);  // MOSTLY_BF16
    EXPECT_EQ(f->find_tensor("blk.0.attn_q.weight")->dtype, DTYPE_BF16);
    EXPECT_EQ(f->find_tensor("output.weight") == nullptr, tied);
    expect_same_model(hf, load_keep(out));

    // Q/K rows in the file: gguf_row[h*D + 2i + j] = hf_row[h*D + j*D/2 + i], with H heads for q and KV for k.
    const int64_t D = 64, C = 256;
    for (auto [name, t, heads] : {std::tuple{"blk.1.attn_q.weight", hf.layers[1].wq, int64_t(4)},
                                  std::tuple{"blk.1.attn_k.weight", hf.layers[1].wk, int64_t(2)}}) {
      const GGUFTensorInfo* ti = f->find_tensor(name);
      ASSERT_EQ(ti->ne, (std::vector<int64_t>{C, heads * D})) << name;
      const uint16_t* file = static_cast<const uint16_t*>(ti->data);
      const uint16_t* src = t.ptr<uint16_t>();
      for (int64_t h = 0; h < heads; ++h)
        for (int64_t i = 0; i < D / 2; ++i)
          for (int64_t j = 0; j < 2; ++j)
            ASSERT_EQ(std::memcmp(file + (h * D + 2 * i + j) * C, src + (h * D + j * D / 2 + i) * C, size_t(C) * 2), 0)
                << name << " h" << h << " i" << i << " j" << j;
    }
    // v is not permuted.
    EXPECT_EQ(std::memcmp(f->find_tensor("blk.0.attn_v.weight")->data, hf.layers[0].wv.data,
                          size_t(hf.layers[0].wv.nbytes())), 0);
    // An --outtype f32 export loads as the widened bf16 values.
    GGUFSaveOptions o32;
    o32.keep_dtype = false;
    o32.outtype = DTYPE_F32;
    const std::string out32 = fresh(std::string(tied ? "tied" : "untied") + "32.gguf");
    model_save_gguf(hf, vocab_of(dir, hf), out32, o32);
    const Model g32 = model_load(out32);
    ASSERT_EQ(g32.layers[0].w_down.dtype, DTYPE_F32);
    for (int64_t k = 0; k < g32.layers[0].w_down.numel(); ++k)
      ASSERT_EQ(g32.layers[0].w_down.f32()[k], bf16_to_f32(hf.layers[0].w_down.ptr<uint16_t>()[k])) << k;
  }
}

TEST(ModelGgufSave, StoriesGgufToHfToGguf) {
  LORA_REQUIRE_SHARED("models/stories260K/stories260K.gguf");
  auto src = GGUFFile::open(stories_gguf());
  const Model g = load_keep(stories_gguf());
  const TokenizerVocab v = tokenizer_vocab_from_gguf(*src);
  ASSERT_EQ(v.model, "llama");
  const std::string hf_dir = fresh("stories_hf");
  ModelSaveOptions so;
  so.config_json = model_config_to_hf_json(g.cfg, "float32");
  so.vocab = &v;
  model_save_hf(g, "", hf_dir, so);
  for (const char* file : {"config.json", "model.safetensors", "tokenizer.model", "tokenizer_config.json"})
    EXPECT_TRUE(test::file_exists(hf_dir + "/" + file)) << file;
  const Model hf = load_keep(hf_dir);
  expect_same_model(g, hf);
  // Our tokenizer.model (written by hand) reads back through libsentencepiece with the GGUF's ids.
  auto gguf_tok = tokenizer_from_gguf(*src);
  auto spm_tok = tokenizer_load(hf_dir);
  for (const char* text : {"Once upon a time, there was a little girl named Lily.", "Tom's dog ran 42 miles!"})
    EXPECT_EQ(spm_tok->encode(text), gguf_tok->encode(text)) << text;

  const std::string back = fresh("stories_back.gguf");
  model_save_gguf(hf, vocab_of(hf_dir, hf), back, {});
  auto b = GGUFFile::open(back);
  for (const GGUFTensorInfo& t : src->tensors()) {
    const GGUFTensorInfo* u = b->find_tensor(t.name);
    ASSERT_NE(u, nullptr) << t.name;
    EXPECT_EQ(u->ne, t.ne) << t.name;
    EXPECT_EQ(u->dtype, t.dtype) << t.name;
    EXPECT_EQ(std::memcmp(u->data, t.data, size_t(t.nbytes)), 0) << t.name;
  }
  EXPECT_EQ(b->tensors().size(), src->tensors().size());
  for (const char* key : {"tokenizer.ggml.model", "tokenizer.ggml.tokens", "tokenizer.ggml.scores",
                          "tokenizer.ggml.token_type", "tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id",
                          "tokenizer.ggml.unknown_token_id", "general.architecture", "llama.embedding_length",
                          "llama.feed_forward_length", "llama.block_count", "llama.attention.head_count",
                          "llama.attention.head_count_kv", "llama.rope.dimension_count",
                          "llama.attention.layer_norm_rms_epsilon", "llama.context_length"}) {
    const GGUFValue* x = src->find(key);
    const GGUFValue* y = b->find(key);
    ASSERT_NE(x, nullptr) << key;
    ASSERT_NE(y, nullptr) << key;
    EXPECT_EQ(x->scalar, y->scalar) << key;
    ASSERT_EQ(x->array.size(), y->array.size()) << key;
    for (size_t i = 0; i < x->array.size(); ++i) ASSERT_EQ(x->array[i].scalar, y->array[i].scalar) << key << "[" << i << "]";
  }
}

// The file's tensor must equal quant_quantize_row(type) of the source rows (permuted for q/k).
void expect_quantized(const GGUFFile& f, const std::string& name, const Tensor& src, DType type, int64_t heads) {
  const GGUFTensorInfo* t = f.find_tensor(name);
  ASSERT_NE(t, nullptr) << name;
  ASSERT_EQ(t->dtype, type) << name << " is " << dtype_name(t->dtype);
  const int64_t cols = src.shape[1], rows = src.shape[0], D = heads ? rows / heads : 0;
  const int64_t sb = dtype_nbytes(src.dtype, cols), db = dtype_nbytes(type, cols);
  std::vector<float> row(static_cast<size_t>(cols));
  std::vector<uint8_t> q(static_cast<size_t>(db));
  for (int64_t r = 0; r < rows; ++r) {
    int64_t s = r;
    if (heads) s = (r / D) * D + (r % D % 2) * (D / 2) + (r % D) / 2;
    quant_dequantize_row(src.dtype, static_cast<const uint8_t*>(src.data) + s * sb, row.data(), cols);
    quant_quantize_row(type, row.data(), q.data(), cols);
    ASSERT_EQ(std::memcmp(q.data(), static_cast<const uint8_t*>(t->data) + r * db, size_t(db)), 0) << name << " row " << r;
  }
}

// ||got - want||_2 / ||want||_2 over all logits: quantization noise is spread over every logit, so a
// norm says more than the worst element of a random model's flat distribution.
double rel_l2(const std::vector<float>& got, const std::vector<float>& want) {
  double num = 0, den = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    num += (double(got[i]) - want[i]) * (double(got[i]) - want[i]);
    den += double(want[i]) * want[i];
  }
  return std::sqrt(num / den);
}

TEST(ModelGgufSave, QuantizedExport) {
  LORA_REQUIRE_SHARED("models/stories260K-hf/tokenizer.model");
  for (bool tied : {false, true}) {
    const std::string dir = tiny_llama(tied ? "qtied" : "quntied", tied, DTYPE_F32);
    const Model hf = load_keep(dir);
    const std::vector<float> want = logits_of(hf, kIds);
    struct Case { DType q; DType out; double tol; };
    for (const Case& c : {Case{DTYPE_Q8_0, DTYPE_Q8_0, tol::kGgufExportQ8_0Logits}, Case{DTYPE_Q4_0, DTYPE_Q6_K, tol::kGgufExportQ4Logits},
                          Case{DTYPE_Q4_K, DTYPE_Q6_K, tol::kGgufExportQ4Logits}}) {
      SCOPED_TRACE(std::string(dtype_name(c.q)) + (tied ? " tied" : " untied"));
      GGUFSaveOptions o;
      o.quantize = c.q;
      const std::string out = fresh(std::string(dtype_name(c.q)) + (tied ? "t" : "u") + ".gguf");
      model_save_gguf(hf, vocab_of(dir, hf), out, o);
      auto f = GGUFFile::open(out);
      EXPECT_EQ(f->get_int("general.quantization_version", 0), 2);
      EXPECT_EQ(f->get_int("general.file_type", -1), c.q == DTYPE_Q8_0 ? 7 : c.q == DTYPE_Q4_0 ? 2 : 14);
      expect_quantized(*f, "token_embd.weight", hf.tok_embd, tied ? c.out : c.q, 0);
      if (!tied) expect_quantized(*f, "output.weight", hf.lm_head, c.out, 0);
      for (int l = 0; l < 2; ++l) {
        const LayerWeights& w = hf.layers[size_t(l)];
        const std::string b = "blk." + std::to_string(l) + ".";
        expect_quantized(*f, b + "attn_q.weight", w.wq, c.q, 4);
        expect_quantized(*f, b + "attn_k.weight", w.wk, c.q, 2);
        expect_quantized(*f, b + "attn_v.weight", w.wv, c.q, 0);
        expect_quantized(*f, b + "attn_output.weight", w.wo, c.q, 0);
        expect_quantized(*f, b + "ffn_gate.weight", w.w_gate, c.q, 0);
        expect_quantized(*f, b + "ffn_up.weight", w.w_up, c.q, 0);
        expect_quantized(*f, b + "ffn_down.weight", w.w_down, c.q, 0);
        EXPECT_EQ(f->find_tensor(b + "attn_norm.weight")->dtype, DTYPE_F32);
      }
      const double err = rel_l2(logits_of(model_load(out), kIds), want);
      std::printf("[measured] %s %s: ||dlogits|| / ||logits|| = %.3g\n", dtype_name(c.q), tied ? "tied" : "untied", err);
      EXPECT_LE(err, c.tol);
      // Re-exporting the quantized model to the same type copies the blocks (a GGUF kept quantized).
      ModelLoadOptions kq;
      kq.keep_quantized = true;
      const Model qm = model_load(out, kq);
      if (dtype_is_quant(qm.layers[0].wq.dtype)) {
        const std::string again = fresh(std::string(dtype_name(c.q)) + (tied ? "t" : "u") + "2.gguf");
        model_save_gguf(qm, tokenizer_vocab_from_gguf(*f), again, o);
        auto f2 = GGUFFile::open(again);
        for (const GGUFTensorInfo& t : f->tensors())
          EXPECT_EQ(std::memcmp(f2->find_tensor(t.name)->data, t.data, size_t(t.nbytes)), 0) << t.name;
      }
    }
  }
}

// stories260K (a trained model; width 64, FFN 172): Q4_K falls back to Q5_0, ffn_down stays F32, output Q8_0.
TEST(ModelGgufSave, StoriesQuantized) {
  LORA_REQUIRE_SHARED("models/stories260K-hf/model.safetensors");
  const Model hf = load_keep(stories_hf());
  const std::vector<float> want = logits_of(hf, kIds);
  for (auto [q, tol] : {std::pair{DTYPE_Q8_0, tol::kGgufExportQ8_0Logits}, std::pair{DTYPE_Q4_0, tol::kGgufExportQ4Logits},
                        std::pair{DTYPE_Q4_K, tol::kGgufExportQ4Logits}}) {
    GGUFSaveOptions o;
    o.quantize = q;
    const std::string out = fresh(std::string("stories_") + dtype_name(q) + ".gguf");
    model_save_gguf(hf, vocab_of(stories_hf(), hf), out, o);
    auto f = GGUFFile::open(out);
    const DType body = q == DTYPE_Q4_K ? DTYPE_Q5_0 : q;
    expect_quantized(*f, "blk.0.attn_q.weight", hf.layers[0].wq, body, 8);
    expect_quantized(*f, "blk.0.ffn_up.weight", hf.layers[0].w_up, body, 0);
    expect_quantized(*f, "token_embd.weight", hf.tok_embd, DTYPE_Q8_0, 0);  // tied: the output's Q6_K/Q8_0 -> Q8_0 at width 64
    EXPECT_EQ(f->find_tensor("blk.0.ffn_down.weight")->dtype, DTYPE_F32);  // 172 columns: no 32-blocks
    const double err = rel_l2(logits_of(model_load(out), kIds), want);
    std::printf("[measured] stories260K %s: ||dlogits|| / ||logits|| = %.3g\n", dtype_name(q), err);
    EXPECT_LE(err, tol);
  }
}

// Byte-level BPE tokenizer.json (the fixtures' SmolLM-style digit split and Llama-3 regex): -> GGUF "gpt2"
// keys (with the right tokenizer.ggml.pre) -> same ids; -> tokenizer.json again -> same ids.
TEST(ModelGgufSave, ByteLevelTokenizerBothWays) {
  for (auto [dir, pre] : {std::pair{"tokenizer/bytelevel_gpt2", "smollm"}, std::pair{"tokenizer/bytelevel_llama3", "llama-bpe"}}) {
    SCOPED_TRACE(dir);
    const std::string src = test::fixture(dir);
    auto want = tokenizer_load(src);
    const TokenizerVocab v = tokenizer_vocab_from_hf(src, want->vocab_size());
    EXPECT_EQ(v.model, "gpt2");
    EXPECT_EQ(v.pre, pre);
    EXPECT_FALSE(v.merges.empty());
    const std::string g = fresh(std::string(pre) + "_vocab.gguf");
    GGUFWriter w;
    w.set_str("general.architecture", "llama");
    tokenizer_vocab_to_gguf(v, w);
    w.write(g);
    auto from_gguf = tokenizer_load(g);
    const std::string hf_dir = fresh(std::string(pre) + "_tok");
    fs::create_directories(hf_dir);
    tokenizer_vocab_write_hf(tokenizer_vocab_from_gguf(*GGUFFile::open(g)), hf_dir);
    auto from_hf = tokenizer_load(hf_dir);
    for (const char* text : {"Hello world 12345!", "<|im_start|>user\nIt's 3:45 pm<|im_end|>", "  spaces\tand\nlines  ",
                             "naïve café"}) {
      EXPECT_EQ(from_gguf->encode(text), want->encode(text)) << text;
      EXPECT_EQ(from_hf->encode(text), want->encode(text)) << text;
    }
  }
}

TEST(ModelGgufSave, TypeRule) {
  GGUFSaveOptions o;
  EXPECT_EQ(gguf_tensor_type(o, DTYPE_BF16, false, 64), DTYPE_BF16);  // keep
  o.keep_dtype = false;
  o.outtype = DTYPE_F16;
  EXPECT_EQ(gguf_tensor_type(o, DTYPE_BF16, true, 64), DTYPE_F16);
  o.quantize = DTYPE_Q4_K;
  EXPECT_EQ(gguf_tensor_type(o, DTYPE_F32, false, 256), DTYPE_Q4_K);
  EXPECT_EQ(gguf_tensor_type(o, DTYPE_F32, true, 256), DTYPE_Q6_K);
  EXPECT_EQ(gguf_tensor_type(o, DTYPE_F32, false, 64), DTYPE_Q5_0);  // stories' width: Q4_K -> Q5_0
  EXPECT_EQ(gguf_tensor_type(o, DTYPE_F32, true, 64), DTYPE_Q8_0);   // output: Q6_K -> Q8_0
  EXPECT_EQ(gguf_tensor_type(o, DTYPE_F32, false, 172), DTYPE_F16);  // not whole 32-blocks: the float type
  o.quantize = DTYPE_Q8_0;
  EXPECT_EQ(gguf_tensor_type(o, DTYPE_F32, true, 256), DTYPE_Q8_0);
  o.quantize = DTYPE_Q4_0;
  EXPECT_EQ(gguf_tensor_type(o, DTYPE_F32, true, 256), DTYPE_Q6_K);
}

TEST(ModelGgufSave, ExistingOutputRefused) {
  LORA_REQUIRE_SHARED("models/stories260K-hf/model.safetensors");
  const Model hf = load_keep(stories_hf());
  const std::string out = fresh("exists.gguf");
  std::ofstream(out) << "keep";
  EXPECT_THROW(model_save_gguf(hf, vocab_of(stories_hf(), hf), out, {}), Error);
  std::ifstream in(out);
  std::string s;
  in >> s;
  EXPECT_EQ(s, "keep");
  GGUFSaveOptions o;
  o.overwrite = true;
  model_save_gguf(hf, vocab_of(stories_hf(), hf), out, o);
  EXPECT_NO_THROW(GGUFFile::open(out));
}

// Pre-creates the writer's temp file name as a link to /dev/full: every write fails with ENOSPC.
std::string disk_full_target(const std::string& name) {
  const std::string path = fresh(name);
  const std::string tmp = path + ".tmp." + std::to_string(::getpid());
  fs::remove(tmp);
  fs::create_symlink("/dev/full", tmp);
  return path;
}

void expect_nothing_left(const std::string& path) {
  EXPECT_FALSE(fs::exists(path)) << path;
  EXPECT_FALSE(fs::exists(fs::symlink_status(path + ".tmp." + std::to_string(::getpid())))) << "temp file left";
}

TEST(ModelGgufSave, WritersLeaveNothingOnFailure) {
  if (!test::file_exists("/dev/full")) GTEST_SKIP() << "skipped: no /dev/full";
  std::vector<float> data(1 << 20, 1.0f);  // 4 MiB: more than the writer's buffer, so writes happen mid-stream
  const std::vector<int64_t> shape = {int64_t(data.size())};
  // safetensors: disk full.
  std::string p = disk_full_target("full.safetensors");
  try {
    safetensors_write(p, {{"x", DTYPE_F32, shape, data.data()}});
    ADD_FAILURE() << "no error on a full disk";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("No space left"), std::string::npos) << e.what();
  }
  expect_nothing_left(p);
  // safetensors: a producer that fails after the header went out.
  p = fresh("throw.safetensors");
  std::vector<SafeTensorSource> src = {{"a", DTYPE_F32, {4}, data.data(), {}},
                                       {"b", DTYPE_F32, {4}, nullptr, [](void*) { fail_input("b", "boom"); }}};
  EXPECT_THROW(safetensors_write_stream(p, src), Error);
  expect_nothing_left(p);
  // GGUF: disk full, and a failing producer.
  p = disk_full_target("full.gguf");
  GGUFWriter w;
  w.set_str("general.architecture", "llama");
  w.add_tensor("x", DTYPE_F32, shape, data.data());
  EXPECT_THROW(w.write(p), Error);
  expect_nothing_left(p);
  p = fresh("throw.gguf");
  GGUFWriter w2;
  w2.add_tensor_fill("y", DTYPE_F32, {4}, [](void*) { fail_input("y", "boom"); });
  EXPECT_THROW(w2.write(p), Error);
  expect_nothing_left(p);
  // And the streamed writers still produce what the readers expect.
  p = fresh("ok.gguf");
  GGUFWriter w3;
  w3.add_tensor("x", DTYPE_F32, {5}, data.data());
  w3.add_tensor_fill("y", DTYPE_F32, {3}, [](void* d) { for (int i = 0; i < 3; ++i) static_cast<float*>(d)[i] = float(i); });
  w3.write(p);
  auto g = GGUFFile::open(p);
  EXPECT_EQ(static_cast<const float*>(g->find_tensor("y")->data)[2], 2.0f);
  EXPECT_EQ(static_cast<const float*>(g->find_tensor("x")->data)[4], 1.0f);
}

}  // namespace
}  // namespace lora
