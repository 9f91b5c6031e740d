// model_save_gguf (model/model_gguf_save.h): the Model's tensors under llama.cpp's names, converted or
// quantized row by row while the GGUF writer streams them, plus the hyper-parameters and tokenizer keys.
#include "model/model_gguf_save.h"

#include <cmath>
#include <cstring>
#include <map>
#include <numbers>
#include <vector>

#include "core/error.h"
#include "core/quant.h"
#include "io/gguf.h"
#include "io/mapped_file.h"

namespace lora {

namespace {

// LLAMA_FTYPE of a file whose weights are mostly `t` (llama.h).
uint32_t ftype_of(DType t) {
  switch (t) {
    case DTYPE_F32: return 0;
    case DTYPE_F16: return 1;
    case DTYPE_Q4_0: return 2;
    case DTYPE_Q4_1: return 3;
    case DTYPE_Q8_0: return 7;
    case DTYPE_Q5_0: return 8;
    case DTYPE_Q5_1: return 9;
    case DTYPE_Q4_K: return 14;  // Q4_K_S (see the header)
    case DTYPE_Q5_K: return 16;  // Q5_K_S
    case DTYPE_Q6_K: return 18;
    case DTYPE_BF16: return 32;
    default: return 0;
  }
}

struct Item {
  std::string name;
  Tensor t;
  int64_t permute_heads = 0;  // > 0: apply llama.cpp's Q/K row permutation with that many heads
  bool is_output = false;
};

// Source row of output row r under the permutation (r = h*D + 2*i + j <- h*D + j*D/2 + i).
int64_t src_row(int64_t r, int64_t head_rows) {
  if (head_rows <= 0) return r;
  const int64_t h = r / head_rows, w = r % head_rows, half = head_rows / 2, i = w / 2, j = w % 2;
  return h * head_rows + j * half + i;
}

// Writes rows of `t` (rows, cols) as `out` into dst, permuting rows when head_rows > 0.
void convert_rows(const Tensor& t, int64_t rows, int64_t cols, int64_t head_rows, DType out, void* dst) {
  const int64_t sb = dtype_nbytes(t.dtype, cols), db = dtype_nbytes(out, cols);
  const uint8_t* src = static_cast<const uint8_t*>(t.data);
  uint8_t* d = static_cast<uint8_t*>(dst);
#pragma omp parallel
  {
    std::vector<float> row(static_cast<size_t>(cols));
#pragma omp for schedule(static)
    for (int64_t r = 0; r < rows; ++r) {
      const uint8_t* s = src + src_row(r, head_rows) * sb;
      if (t.dtype == out) {
        std::memcpy(d + r * db, s, size_t(db));
      } else {
        quant_dequantize_row(t.dtype, s, row.data(), cols);
        quant_quantize_row(out, row.data(), d + r * db, cols);
      }
    }
  }
}

}  // namespace

DType gguf_tensor_type(const GGUFSaveOptions& o, DType src, bool is_output, int64_t cols) {
  const DType fl = !o.keep_dtype ? o.outtype : dtype_is_quant(src) ? DTYPE_F16 : src;
  if (o.quantize == DTYPE_F32) return o.keep_dtype ? src : o.outtype;
  return quant_type_for_weight(o.quantize, is_output, cols, fl);
}

void model_save_gguf(const Model& m, const TokenizerVocab& vocab, const std::string& path, const GGUFSaveOptions& o) {
  if (path.empty()) fail_input("--out", "is empty", "give the .gguf file to write");
  if (path_is_dir(path)) fail_input(path, "is a folder", "give the path of the .gguf file to write");
  if (path_exists(path) && !o.overwrite)
    fail_input(path, "already exists", "choose another output path, or pass --force to replace it");
  LORA_CHECK(o.quantize == DTYPE_F32 || quant_can_quantize(o.quantize), "model_save_gguf: cannot quantize to {}",
             dtype_name(o.quantize));
  const ModelConfig& c = m.cfg;
  const std::string a = c.arch;
  const bool permute = a == "llama" || a == "mistral";

  std::vector<Item> items;
  items.push_back({"token_embd.weight", m.tok_embd, 0, c.tie_embeddings});
  for (size_t i = 0; i < m.layers.size(); ++i) {
    const LayerWeights& l = m.layers[i];
    const std::string b = "blk." + std::to_string(i) + ".";
    items.push_back({b + "attn_norm.weight", l.attn_norm});
    items.push_back({b + "attn_q.weight", l.wq, permute ? c.n_heads : 0});
    items.push_back({b + "attn_k.weight", l.wk, permute ? c.n_kv_heads : 0});
    items.push_back({b + "attn_v.weight", l.wv});
    items.push_back({b + "attn_output.weight", l.wo});
    if (l.bq.defined()) items.push_back({b + "attn_q.bias", l.bq, permute ? c.n_heads : 0});
    if (l.bk.defined()) items.push_back({b + "attn_k.bias", l.bk, permute ? c.n_kv_heads : 0});
    if (l.bv.defined()) items.push_back({b + "attn_v.bias", l.bv});
    items.push_back({b + "ffn_norm.weight", l.ffn_norm});
    items.push_back({b + "ffn_gate.weight", l.w_gate});
    items.push_back({b + "ffn_up.weight", l.w_up});
    items.push_back({b + "ffn_down.weight", l.w_down});
  }
  items.push_back({"output_norm.weight", m.out_norm});
  if (!c.tie_embeddings) items.push_back({"output.weight", m.lm_head, 0, true});

  GGUFWriter w;
  w.set_str("general.architecture", a);
  w.set_str("general.name", o.name.empty() ? a : o.name);
  std::map<DType, int> weight_types;  // for general.file_type
  bool any_quant = false;
  std::vector<float> rope_factors;
  if (c.rope_scaling.type == "llama3") {
    rope_factors = llama3_rope_factors(c);
    w.add_tensor("rope_freqs.weight", DTYPE_F32, {int64_t(rope_factors.size())}, rope_factors.data());
  }
  for (const Item& it : items) {
    const Tensor& t = it.t;
    LORA_CHECK(t.defined() && t.device == DEVICE_CPU && t.is_contiguous(), "model_save_gguf: {} must be a host tensor",
               it.name);
    const bool vec = t.ndim == 1;
    const int64_t cols = vec ? 1 : t.shape[size_t(t.ndim - 1)];
    const int64_t rows = t.numel() / cols;
    const DType out = vec ? DTYPE_F32 : gguf_tensor_type(o, t.dtype, it.is_output, cols);
    LORA_CHECK(dtype_is_quant(out) || out == DTYPE_F32 || out == DTYPE_F16 || out == DTYPE_BF16,
               "model_save_gguf: {} cannot be written as {}", it.name, dtype_name(out));
    if (!vec) ++weight_types[out];
    any_quant = any_quant || dtype_is_quant(out);
    std::vector<int64_t> ne(t.shape.rbegin() + (kMaxDims - t.ndim), t.shape.rend());
    const int64_t heads = it.permute_heads;
    if (heads > 0)
      LORA_CHECK(rows % (2 * heads) == 0, "model_save_gguf: {} rows cannot be split into {} heads", it.name, heads);
    const int64_t head_rows = heads > 0 ? rows / heads : 0;
    if (vec) {
      w.add_tensor_fill(it.name, out, ne, [t, rows, head_rows](void* dst) { convert_rows(t, rows, 1, head_rows, DTYPE_F32, dst); });
    } else if (out == t.dtype && head_rows == 0) {
      w.add_tensor(it.name, out, ne, t.data);  // the bytes as they are
    } else {
      w.add_tensor_fill(it.name, out, ne,
                        [t, rows, cols, head_rows, out](void* dst) { convert_rows(t, rows, cols, head_rows, out, dst); });
    }
  }
  DType main_type = DTYPE_F32;
  int most = -1;
  for (const auto& [dt, n] : weight_types)
    if (n > most) {
      most = n;
      main_type = dt;
    }
  w.set_u32("general.file_type", o.quantize != DTYPE_F32 ? ftype_of(o.quantize) : ftype_of(main_type));
  if (any_quant) w.set_u32("general.quantization_version", 2);

  const std::string p = a + ".";
  w.set_u32(p + "context_length", uint32_t(c.max_pos));
  w.set_u32(p + "embedding_length", uint32_t(c.dim));
  w.set_u32(p + "block_count", uint32_t(c.n_layers));
  w.set_u32(p + "feed_forward_length", uint32_t(c.ffn_dim));
  w.set_u32(p + "attention.head_count", uint32_t(c.n_heads));
  w.set_u32(p + "attention.head_count_kv", uint32_t(c.n_kv_heads));
  w.set_f32(p + "rope.freq_base", float(c.rope_theta));
  w.set_f32(p + "attention.layer_norm_rms_epsilon", float(c.rms_eps));
  w.set_u32(p + "rope.dimension_count", uint32_t(c.head_dim));
  if (c.head_dim != c.dim / c.n_heads) {  // an explicit head_dim (llama.cpp's converter writes both lengths)
    w.set_u32(p + "attention.key_length", uint32_t(c.head_dim));
    w.set_u32(p + "attention.value_length", uint32_t(c.head_dim));
  }
  w.set_u32(p + "vocab_size", uint32_t(c.vocab));
  if (c.rope_scaling.type == "linear") {
    w.set_str(p + "rope.scaling.type", "linear");
    w.set_f32(p + "rope.scaling.factor", float(c.rope_scaling.factor));
  } else if (c.rope_scaling.type == "llama3") {
    w.set_u32(p + "rope.scaling.original_context_length", uint32_t(c.rope_scaling.original_max_position));
  }
  if (!vocab.model.empty() && int64_t(vocab.tokens.size()) != c.vocab)
    fail_input(path, fmt::format("the tokenizer has {} tokens but the model's vocabulary {}", vocab.tokens.size(), c.vocab),
               "the tokenizer does not belong to this model");
  tokenizer_vocab_to_gguf(vocab, w);
  w.write(path);
}

}  // namespace lora
