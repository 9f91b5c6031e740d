// model_load: an HF folder (config.json + safetensors) or a GGUF file into the one in-memory Model.
//
// Both formats are first described as SrcTensor (name, dtype, row-major shape, bytes); one function,
// tensor_materialize, then checks the shape against the config and decides the storage:
//  - a view into the memory mapping (no copy) when the dtype is usable as is: F32 always; BF16/F16
//    when opts.compute_dtype is BF16; only if no row permutation is needed and the data is aligned;
//  - otherwise an owned buffer: F32 from F16/BF16 (compute F32) or from quantized GGUF blocks
//    (dequantized, OpenMP over rows), or a row-permuted copy of q/k.
// 1-D tensors (norm weights, biases) are always F32: they are tiny and the ops read them as floats.
//
// GGUF specifics: ggml's ne[] is innermost first, so ne = [in, out] is the (out, in) weight. For the
// llama/mistral architectures llama.cpp's converter permuted the rows of q (with n_head) and k (with
// n_head_kv) from HF's rotate-half layout to interleaved RoPE pairs:
//   gguf_row[h*D + 2*i + j] = hf_row[h*D + j*D/2 + i]      (j in {0,1}, i in [0, D/2))
// and we apply the inverse so every Model is in HF layout. qwen2 GGUFs are not permuted (NEOX RoPE).
#include <algorithm>
#include <cstring>
#include <optional>
#include <vector>

#include "core/error.h"
#include "io/gguf.h"
#include "io/mapped_file.h"
#include "io/safetensors.h"
#include "model/model.h"
#include "core/quant.h"

namespace lora {

namespace {

// A weight as stored in a file, before any conversion.
struct SrcTensor {
  std::string name;             // name in the file
  DType dtype = DTYPE_F32;
  std::vector<int64_t> shape;   // row-major, outermost first
  const void* data = nullptr;
  int64_t nbytes = 0;
};

std::string shape_str(const std::vector<int64_t>& s) {
  std::string out = "(";
  for (size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
  return out + ")";
}

// A tensor to copy, convert or dequantize into an owned buffer, row by row, optionally permuting rows.
struct CopyJob {
  const uint8_t* src;
  uint8_t* dst;
  DType src_dtype, dst_dtype;
  int64_t rows, cols;
  int64_t head_rows;  // D when undoing the Q/K permutation, else 0
};

// The conversions of a whole model, run at the end in one parallel loop over row chunks of all
// tensors: small tensors then cost no parallel region each, and big ones spread over every core.
struct Conversions {
  std::vector<CopyJob> jobs;

  void run() const {
    constexpr int64_t kChunkElems = int64_t(1) << 16;
    struct Chunk { size_t job; int64_t r0, r1; };
    std::vector<Chunk> chunks;
    for (size_t j = 0; j < jobs.size(); ++j) {
      const int64_t step = std::max<int64_t>(1, kChunkElems / std::max<int64_t>(jobs[j].cols, 1));
      for (int64_t r = 0; r < jobs[j].rows; r += step) chunks.push_back({j, r, std::min(jobs[j].rows, r + step)});
    }
#pragma omp parallel for schedule(dynamic, 1)
    for (size_t c = 0; c < chunks.size(); ++c) {
      const CopyJob& jb = jobs[chunks[c].job];
      const int64_t src_row_bytes = dtype_nbytes(jb.src_dtype, jb.cols);
      const int64_t dst_row_bytes = dtype_nbytes(jb.dst_dtype, jb.cols);
      const int64_t half = jb.head_rows / 2;
      for (int64_t r = chunks[c].r0; r < chunks[c].r1; ++r) {
        int64_t sr = r;
        if (jb.head_rows > 0) {  // r = h*D + j*D/2 + i  <-  source row h*D + 2*i + j
          const int64_t h = r / jb.head_rows, w = r % jb.head_rows, j = w / half, i = w % half;
          sr = h * jb.head_rows + 2 * i + j;
        }
        const uint8_t* src = jb.src + sr * src_row_bytes;
        uint8_t* dst = jb.dst + r * dst_row_bytes;
        if (jb.src_dtype == jb.dst_dtype) {
          std::memcpy(dst, src, size_t(src_row_bytes));
        } else if (jb.dst_dtype == DTYPE_F32) {
          quant_dequantize_row(jb.src_dtype, src, reinterpret_cast<float*>(dst), jb.cols);
        } else {  // quantized (or converted) at load: through one f32 row
          thread_local std::vector<float> row;
          row.resize(size_t(jb.cols));
          quant_dequantize_row(jb.src_dtype, src, row.data(), jb.cols);
          quant_quantize_row(jb.dst_dtype, row.data(), dst, jb.cols);
        }
      }
    }
  }
};

class Loader {
 public:
  Loader(Model& m, Conversions& conv, const ModelLoadOptions& opts, std::string file, std::string mismatch_hint)
      : m_(m), conv_(conv), opts_(opts), file_(std::move(file)), mismatch_hint_(std::move(mismatch_hint)) {}

  // Checks `s` against `expect` and returns the Model's tensor. permute_heads > 0 undoes llama.cpp's
  // Q/K row permutation with that many heads. An owned tensor is filled by Conversions::run().
  Tensor materialize(const SrcTensor& s, const std::vector<int64_t>& expect, int64_t permute_heads = 0,
                     bool is_output = false) {
    const std::string where = file_ + ": " + s.name;
    std::vector<int64_t> shape = s.shape;
    // GGUF writers may leave outer dimensions of size 1 (ne = [C, 1]); they carry no meaning.
    while (shape.size() > expect.size() && shape.front() == 1) shape.erase(shape.begin());
    if (shape != expect)
      fail_input(where, fmt::format("shape {} but the config expects {}", shape_str(s.shape), shape_str(expect)),
                 mismatch_hint_);
    const bool plain = s.dtype == DTYPE_F32 || s.dtype == DTYPE_F16 || s.dtype == DTYPE_BF16;
    if (!plain && !dtype_is_quant(s.dtype))
      fail_input(where, fmt::format("unsupported dtype {}", dtype_name(s.dtype)),
                 "weights must be F32, F16, BF16 or a llama.cpp quantized type (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, "
                 "Q4_K, Q5_K, Q6_K)");
    int64_t numel = 1;
    for (int64_t d : shape) numel *= d;
    const int64_t cols = shape.empty() ? 1 : shape.back();
    const int64_t rows = numel / std::max<int64_t>(cols, 1);
    if (cols % dtype_block_elems(s.dtype) != 0)
      fail_input(where, fmt::format("{} rows of {} values are not whole {} blocks of {}", rows, cols,
                                    dtype_name(s.dtype), dtype_block_elems(s.dtype)),
                 "the file is corrupt");
    if (s.nbytes != dtype_nbytes(s.dtype, numel))
      fail_input(where, fmt::format("holds {} bytes, {} {} needs {}", s.nbytes, dtype_name(s.dtype),
                                    shape_str(shape), dtype_nbytes(s.dtype, numel)),
                 "the file is corrupt");
    if (permute_heads > 0 && (rows % (2 * permute_heads) != 0))
      fail_input(where, fmt::format("{} rows cannot be split into {} heads of pairs", rows, permute_heads),
                 mismatch_hint_);

    DType out_dtype = s.dtype;
    const bool is_vector = shape.size() == 1;
    const bool keep_quant = opts_.keep_quantized || opts_.quantize != DTYPE_F32;
    if (is_vector || (dtype_is_quant(s.dtype) && !keep_quant)) out_dtype = DTYPE_F32;
    else if (!dtype_is_quant(s.dtype) && s.dtype != DTYPE_F32 && opts_.compute_dtype != DTYPE_BF16) out_dtype = DTYPE_F32;
    if (!is_vector && opts_.quantize != DTYPE_F32)
      out_dtype = quant_type_for_weight(opts_.quantize, is_output, cols, out_dtype);
    // Quantized blocks have byte alignment (every field is read bytewise).
    const bool aligned = dtype_is_quant(s.dtype) ||
                         reinterpret_cast<uintptr_t>(s.data) % uintptr_t(dtype_block_bytes(s.dtype)) == 0;

    if (out_dtype == s.dtype && permute_heads == 0 && aligned)
      return tensor_view(const_cast<void*>(s.data), s.dtype, shape.data(), int(shape.size()));

    OwnedTensor o = tensor_alloc(out_dtype, shape.data(), int(shape.size()));
    m_.storage.push_back(o.buf);
    conv_.jobs.push_back(CopyJob{static_cast<const uint8_t*>(s.data), static_cast<uint8_t*>(o.t.data), s.dtype,
                                 out_dtype, rows, cols, permute_heads > 0 ? rows / permute_heads : 0});
    return o.t;
  }

  [[noreturn]] void missing(const std::string& name, const std::string& hint) const {
    fail_input(file_ + ": " + name, "missing tensor", hint);
  }

 private:
  Model& m_;
  Conversions& conv_;
  const ModelLoadOptions& opts_;
  std::string file_;
  std::string mismatch_hint_;
};

// ---------------------------------------------------------------------------------------------------
// HF folder

SrcTensor src_from_safetensors(const SafeTensorInfo& t) {
  return SrcTensor{t.name, t.dtype, t.shape, t.data, t.nbytes};
}

Model load_hf(const std::string& dir, const ModelLoadOptions& opts) {
  const std::string sep = dir.back() == '/' ? "" : "/";
  const std::string config_path = dir + sep + "config.json";
  if (!path_exists(config_path))
    fail_input(config_path, "missing", "an HF model folder needs config.json next to its .safetensors files");
  Model m;
  m.source = dir;
  m.cfg = config_from_hf_json(config_path);
  auto set = std::make_shared<SafetensorsSet>(SafetensorsSet::open_dir(dir));
  m.storage.push_back(set);
  const ModelConfig& c = m.cfg;
  Conversions conv;

  // Name tensors by the file they are in: that is where a user would look.
  auto get = [&](const std::string& name, bool required = true) -> const SafeTensorInfo* {
    const SafeTensorInfo* t = set->find(name);
    if (!t && required)
      fail_input(dir + ": " + name, "missing tensor",
                 "the safetensors files do not hold a complete " + c.arch + " model; download them again");
    return t;
  };
  auto load = [&](const std::string& name, const std::vector<int64_t>& expect, bool is_output = false) {
    const SafeTensorInfo* t = get(name);
    Loader ld(m, conv, opts, t->file, "config.json and the weights disagree; use the config.json that came with them");
    return ld.materialize(src_from_safetensors(*t), expect, 0, is_output);
  };

  const int64_t C = c.dim, F = c.ffn_dim, V = c.vocab, QD = c.q_dim(), KD = c.kv_dim();
  m.tok_embd = load("model.embed_tokens.weight", {V, C}, c.tie_embeddings);
  m.layers.resize(size_t(c.n_layers));
  for (int l = 0; l < int(c.n_layers); ++l) {
    LayerWeights& w = m.layers[size_t(l)];
    w.attn_norm = load(model_hf_name(l, "input_layernorm.weight"), {C});
    w.wq = load(model_hf_name(l, "self_attn.q_proj.weight"), {QD, C});
    w.wk = load(model_hf_name(l, "self_attn.k_proj.weight"), {KD, C});
    w.wv = load(model_hf_name(l, "self_attn.v_proj.weight"), {KD, C});
    w.wo = load(model_hf_name(l, "self_attn.o_proj.weight"), {C, QD});
    if (c.qkv_bias) {
      w.bq = load(model_hf_name(l, "self_attn.q_proj.bias"), {QD});
      w.bk = load(model_hf_name(l, "self_attn.k_proj.bias"), {KD});
      w.bv = load(model_hf_name(l, "self_attn.v_proj.bias"), {KD});
    }
    w.ffn_norm = load(model_hf_name(l, "post_attention_layernorm.weight"), {C});
    w.w_gate = load(model_hf_name(l, "mlp.gate_proj.weight"), {F, C});
    w.w_up = load(model_hf_name(l, "mlp.up_proj.weight"), {F, C});
    w.w_down = load(model_hf_name(l, "mlp.down_proj.weight"), {C, F});
  }
  m.out_norm = load("model.norm.weight", {C});
  if (c.tie_embeddings) {
    m.lm_head = m.tok_embd;
  } else {
    if (!set->find("lm_head.weight"))
      fail_input(dir + ": lm_head.weight", "missing tensor",
                 "config.json says tie_word_embeddings is false, so the weights must hold lm_head.weight; if the "
                 "model shares its embeddings, set \"tie_word_embeddings\": true");
    m.lm_head = load("lm_head.weight", {V, C}, true);
  }
  conv.run();
  return m;
}

// ---------------------------------------------------------------------------------------------------
// GGUF file

Model load_gguf(const std::string& path, const ModelLoadOptions& opts) {
  auto g = GGUFFile::open(path);
  Model m;
  m.source = path;
  m.cfg = config_from_gguf(*g);
  m.storage.push_back(g);
  const ModelConfig& c = m.cfg;
  Conversions conv;
  Loader ld(m, conv, opts, path, "the GGUF metadata and its tensors disagree; re-convert the model");
  // llama.cpp's converter permutes q/k rows only for architectures with interleaved (NORM) RoPE.
  const bool permuted = c.arch == "llama" || c.arch == "mistral";

  auto src = [&](const std::string& name) -> std::optional<SrcTensor> {
    const GGUFTensorInfo* t = g->find_tensor(name);
    if (!t) return std::nullopt;
    SrcTensor s{t->name, t->dtype, std::vector<int64_t>(t->ne.rbegin(), t->ne.rend()), t->data, t->nbytes};
    return s;
  };
  auto load = [&](const std::string& name, const std::vector<int64_t>& expect, int64_t permute_heads = 0,
                  bool is_output = false) {
    auto s = src(name);
    if (!s) ld.missing(name, "the file does not hold a complete " + c.arch + " model; re-convert it");
    return ld.materialize(*s, expect, permuted ? permute_heads : 0, is_output);
  };

  const int64_t C = c.dim, F = c.ffn_dim, V = c.vocab, QD = c.q_dim(), KD = c.kv_dim();
  m.tok_embd = load("token_embd.weight", {V, C}, 0, c.tie_embeddings);
  m.layers.resize(size_t(c.n_layers));
  for (int l = 0; l < int(c.n_layers); ++l) {
    LayerWeights& w = m.layers[size_t(l)];
    const std::string b = "blk." + std::to_string(l) + ".";
    w.attn_norm = load(b + "attn_norm.weight", {C});
    w.wq = load(b + "attn_q.weight", {QD, C}, c.n_heads);
    w.wk = load(b + "attn_k.weight", {KD, C}, c.n_kv_heads);
    w.wv = load(b + "attn_v.weight", {KD, C});
    w.wo = load(b + "attn_output.weight", {C, QD});
    if (c.qkv_bias) {
      w.bq = load(b + "attn_q.bias", {QD}, c.n_heads);
      w.bk = load(b + "attn_k.bias", {KD}, c.n_kv_heads);
      w.bv = load(b + "attn_v.bias", {KD});
    }
    w.ffn_norm = load(b + "ffn_norm.weight", {C});
    w.w_gate = load(b + "ffn_gate.weight", {F, C});
    w.w_up = load(b + "ffn_up.weight", {F, C});
    w.w_down = load(b + "ffn_down.weight", {C, F});
  }
  m.out_norm = load("output_norm.weight", {C});
  m.lm_head = c.tie_embeddings ? m.tok_embd : load("output.weight", {V, C}, 0, true);
  conv.run();
  return m;
}

}  // namespace

std::string model_hf_name(int layer, const std::string& leaf) {
  return "model.layers." + std::to_string(layer) + "." + leaf;
}

Model model_load(const std::string& path, const ModelLoadOptions& opts) {
  if (opts.compute_dtype != DTYPE_F32 && opts.compute_dtype != DTYPE_BF16)
    fail_input("compute dtype", fmt::format("{} is not supported", dtype_name(opts.compute_dtype)),
               "use f32 or bf16");
  if (opts.quantize != DTYPE_F32 && (!dtype_is_quant(opts.quantize) || !quant_can_quantize(opts.quantize)))
    fail_input("--quantize", fmt::format("{} is not a quantized type we can produce", dtype_name(opts.quantize)),
               "use q8_0, q4_0, q4_1, q5_0, q5_1, q4_k, q5_k or q6_k");
  if (path.empty()) fail_input("model path", "empty", "pass an HF model folder or a .gguf file");
  if (!path_exists(path)) fail_input(path, "no such file or folder", "pass an HF model folder or a .gguf file");
  if (path_is_dir(path)) return load_hf(path, opts);
  const auto ends_with = [&](const char* suf) {
    const size_t n = std::strlen(suf);
    return path.size() >= n && path.compare(path.size() - n, n, suf) == 0;
  };
  if (ends_with(".gguf") || gguf_has_magic(path)) return load_gguf(path, opts);
  if (ends_with(".safetensors") || ends_with("config.json"))
    fail_input(path, "is a file inside a model folder", "pass the folder itself (it holds config.json and the weights)");
  fail_input(path, "is neither a model folder nor a GGUF file", "pass an HF model folder or a .gguf file");
}

}  // namespace lora
