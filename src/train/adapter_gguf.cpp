// GGUF-LoRA import/export (train/adapter_gguf.h). Everything goes through our orientation: a GGUF factor is
// read to f32 rows (ggml ne [in, r] is the row-major (r, in) matrix), B's q/k rows are un-permuted, then both
// are transposed to lora_a (in, r) / lora_b (r, out); export runs the same steps backwards. Transposes and
// permutations move values only, so mlx -> gguf -> mlx is bit-exact for F32 files.
#include "train/adapter_gguf.h"

#include <fmt/format.h>

#include <algorithm>
#include <cstring>
#include <deque>
#include <fstream>
#include <map>
#include <set>
#include <utility>
#include <vector>

#include "core/device_mem.h"
#include "core/error.h"
#include "core/log.h"
#include "core/quant.h"
#include "io/gguf.h"
#include "io/mapped_file.h"

namespace lora {

namespace {

// GGUF's name of each LinearKey's weight in a block: blk.{i}.<name>.weight.
constexpr const char* kGgufKeys[LIN_COUNT] = {"attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down"};

const char* kTargetsHint =
    "GGUF-LoRA factors are named blk.N.{attn_q, attn_k, attn_v, attn_output, ffn_gate, ffn_up, ffn_down}.weight"
    ".lora_a / .lora_b; LoRA on the embeddings or the output layer is not supported";

// "mistral" GGUFs (which llama.cpp itself writes as "llama") compare equal to "llama".
std::string arch_canonical(const std::string& a) { return a == "mistral" ? "llama" : a; }

// Rows of q/k's B that llama.cpp's converter permuted: the number of heads to permute with, or 0.
int64_t permute_heads(const ModelConfig& c, LinearKey k) {
  if (c.arch != "llama" && c.arch != "mistral") return 0;  // qwen2: NEOX RoPE, rows kept as in HF
  return k == LIN_Q ? c.n_heads : k == LIN_K ? c.n_kv_heads : 0;
}

// (rows, cols) with rows = heads·D, between HF's rotate-half row order and llama.cpp's interleaved pairs:
//   gguf_row[h*D + 2*i + j] = hf_row[h*D + j*D/2 + i]   (j in {0, 1}, i in [0, D/2))
std::vector<float> permute_rows(const std::vector<float>& src, int64_t rows, int64_t cols, int64_t heads, bool to_gguf) {
  LORA_CHECK(heads > 0 && rows % (2 * heads) == 0, "{} rows cannot be split into {} heads of pairs", rows, heads);
  std::vector<float> dst(src.size());
  const int64_t D = rows / heads, half = D / 2;
  for (int64_t h = 0; h < heads; ++h)
    for (int64_t i = 0; i < half; ++i)
      for (int64_t j = 0; j < 2; ++j) {
        const int64_t g = h * D + 2 * i + j, f = h * D + j * half + i;
        const int64_t s = to_gguf ? f : g, d = to_gguf ? g : f;
        std::memcpy(&dst[size_t(d * cols)], &src[size_t(s * cols)], size_t(cols) * sizeof(float));
      }
  return dst;
}

// (rows, cols) f32 -> (cols, rows).
std::vector<float> transposed(const std::vector<float>& src, int64_t rows, int64_t cols) {
  std::vector<float> t(src.size());
  for (int64_t i = 0; i < rows; ++i)
    for (int64_t j = 0; j < cols; ++j) t[size_t(j * rows + i)] = src[size_t(i * cols + j)];
  return t;
}

bool ends_with(const std::string& s, const char* suf) {
  const size_t n = std::strlen(suf);
  return s.size() >= n && s.compare(s.size() - n, n, suf) == 0;
}

// "blk.{i}.{key}.weight" -> (i, key); false for anything else.
bool parse_base(const std::string& base, int64_t* layer, LinearKey* key) {
  if (base.rfind("blk.", 0) != 0 || !ends_with(base, ".weight")) return false;
  const size_t dot = base.find('.', 4);
  if (dot == std::string::npos || dot == 4 || dot > 4 + 6) return false;
  const std::string num = base.substr(4, dot - 4);
  if (num.find_first_not_of("0123456789") != std::string::npos) return false;
  *layer = std::stoll(num);
  const std::string name = base.substr(dot + 1, base.size() - dot - 1 - 7);
  for (int k = 0; k < LIN_COUNT; ++k)
    if (name == kGgufKeys[k]) {
      *key = LinearKey(k);
      return true;
    }
  return false;
}

std::string ne_str(const std::vector<int64_t>& ne) {
  std::string s = "[";
  for (size_t i = 0; i < ne.size(); ++i) s += (i ? ", " : "") + std::to_string(ne[i]);
  return s + "]";
}

// The factor's values as f32, row-major (ne[1], ne[0]).
std::vector<float> read_f32(const GGUFTensorInfo& t) {
  const int64_t cols = t.ne[0], rows = t.ne[1];
  std::vector<float> v(size_t(rows * cols));
  const int64_t row_bytes = dtype_nbytes(t.dtype, cols);
  for (int64_t r = 0; r < rows; ++r)
    quant_dequantize_row(t.dtype, static_cast<const uint8_t*>(t.data) + r * row_bytes, &v[size_t(r * cols)], cols);
  return v;
}

struct Pair {
  const GGUFTensorInfo* a = nullptr;  // ne [in, r]
  const GGUFTensorInfo* b = nullptr;  // ne [r, out]
};

struct ParsedLora {
  std::shared_ptr<GGUFFile> f;
  double scale = 1.0;  // alpha / rank; 1 without alpha (llama.cpp's rule)
  int64_t rank = 0;
  std::map<std::pair<int64_t, LinearKey>, Pair> pairs;  // (layer, key)
};

// Opens and checks a GGUF-LoRA file against m: metadata, names, widths, one rank, complete pairs.
ParsedLora parse_gguf_lora(const std::string& path, const Model& m) {
  ParsedLora p;
  if (!gguf_has_magic(path))
    fail_input(path, "is not a GGUF file (the first four bytes are not \"GGUF\")",
               "pass a GGUF-LoRA adapter (`lora convert --adapter-path A --to gguf` writes one), or an mlx-lm or PEFT "
               "adapter folder");
  p.f = GGUFFile::open(path);
  const GGUFFile& f = *p.f;
  const std::string type = f.get_str("general.type", "");
  if (type != "adapter")
    fail_input(path + ": general.type",
               type.empty() ? std::string("is missing: this is a GGUF model, not a LoRA adapter")
                            : fmt::format("is \"{}\": this is not a LoRA adapter", type),
               "an adapter GGUF (llama.cpp's convert_lora_to_gguf.py, `lora convert --to gguf`) has general.type "
               "\"adapter\"; a model goes to --model");
  const std::string arch = f.get_str("general.architecture", "");
  const std::string want = adapter_gguf_arch(m.cfg);
  if (arch_canonical(arch) != want)
    fail_input(path + ": general.architecture",
               fmt::format("is \"{}\" but the model {} is \"{}\"", arch, m.source, want),
               "the adapter was made for another base model; use it with the model it was trained on");
  const std::string at = f.get_str("adapter.type", "");
  if (at != "lora")
    fail_input(path + ": adapter.type", fmt::format("is \"{}\", only \"lora\" adapters can be read", at),
               "control vectors and other adapter types have no LoRA form");
  const double alpha = f.get_float("adapter.lora.alpha", 0.0);

  const int64_t L = m.cfg.n_layers;
  const std::string hint = "the adapter was made for another model (see general.architecture and the base it names)";
  for (const GGUFTensorInfo& t : f.tensors()) {
    const std::string where = path + ": " + t.name;
    const bool is_a = ends_with(t.name, ".lora_a"), is_b = ends_with(t.name, ".lora_b");
    if (!is_a && !is_b) {
      if (ends_with(t.name, "_norm.weight")) {  // mergekit-extract-lora adds norms; llama.cpp skips them too
        log_warn("{}: {} ignored (norm weights of an adapter are not applied, as in llama.cpp)", path, t.name);
        continue;
      }
      fail_input(where, "is neither a .lora_a nor a .lora_b factor", kTargetsHint);
    }
    int64_t layer = 0;
    LinearKey k = LIN_Q;
    if (!parse_base(t.name.substr(0, t.name.size() - 7), &layer, &k))
      fail_input(where, "does not name a linear layer of a block", kTargetsHint);
    if (layer >= L) fail_input(where, fmt::format("is for block {}, the model has {} blocks (0..{})", layer, L, L - 1), hint);
    if (t.ne.size() != 2) fail_input(where, fmt::format("has ggml ne {}, a LoRA factor has 2 dimensions", ne_str(t.ne)), "the file is damaged");
    if (t.dtype == DTYPE_I32 || t.dtype == DTYPE_I64)
      fail_input(where, std::string("has integer type ") + dtype_name(t.dtype), "LoRA factors are F32, F16, BF16 or Q8_0");
    const auto [out, in] = linear_key_shape(m.cfg, k);
    if (is_a && t.ne[0] != in)
      fail_input(where, fmt::format("has ggml ne {}, but the model's {} takes {} inputs (lora_a needs ne [{}, rank])",
                                    ne_str(t.ne), kGgufKeys[k], in, in), hint);
    if (is_b && t.ne[1] != out)
      fail_input(where, fmt::format("has ggml ne {}, but the model's {} has {} outputs (lora_b needs ne [rank, {}])",
                                    ne_str(t.ne), kGgufKeys[k], out, out), hint);
    Pair& pr = p.pairs[{layer, k}];
    (is_a ? pr.a : pr.b) = &t;
  }
  if (p.pairs.empty()) fail_input(path, "holds no LoRA factors", kTargetsHint);
  std::string first_name;
  for (const auto& [lk, pr] : p.pairs) {
    const std::string base = fmt::format("blk.{}.{}.weight", lk.first, kGgufKeys[lk.second]);
    if (!pr.a || !pr.b)
      fail_input(path + ": " + base + (pr.a ? ".lora_b" : ".lora_a"), "is missing (each layer needs both factors)",
                 "the file is incomplete; convert the adapter again");
    if (pr.a->ne[1] != pr.b->ne[0])
      fail_input(path + ": " + base, fmt::format("lora_a has rank {} (ne {}) but lora_b has rank {} (ne {})", pr.a->ne[1],
                                                 ne_str(pr.a->ne), pr.b->ne[0], ne_str(pr.b->ne)),
                 "lora_a is ne [in, rank] and lora_b ne [rank, out]; the file is damaged or not a LoRA adapter");
    if (p.rank == 0) {
      p.rank = pr.a->ne[1];
      first_name = base;
    } else if (pr.a->ne[1] != p.rank) {
      fail_input(path + ": " + base, fmt::format("has rank {}, {} has rank {}", pr.a->ne[1], first_name, p.rank),
                 "adapters with one rank for every layer are supported");
    }
  }
  p.scale = alpha != 0.0 ? alpha / double(p.rank) : 1.0;
  return p;
}

// The pairs as our trainables (lora_a (in, r), lora_b (r, out)), q/k rows back in HF order.
std::vector<AdapterTensor> to_tensors(const ParsedLora& p, const ModelConfig& c) {
  std::vector<AdapterTensor> ts;
  ts.reserve(p.pairs.size() * 2);
  for (const auto& [lk, pr] : p.pairs) {
    const int64_t in = pr.a->ne[0], r = pr.a->ne[1], out = pr.b->ne[1];
    std::vector<float> B = read_f32(*pr.b);  // (out, r)
    if (const int64_t heads = permute_heads(c, lk.second)) B = permute_rows(B, out, r, heads, /*to_gguf=*/false);
    const std::string name = fmt::format("model.layers.{}.{}", lk.first, linear_key_name(lk.second));
    ts.push_back({pr.a->name, name + ".lora_a", {in, r}, transposed(read_f32(*pr.a), r, in)});
    ts.push_back({pr.b->name, name + ".lora_b", {r, out}, transposed(B, out, r)});
  }
  return ts;
}

}  // namespace

std::string adapter_gguf_arch(const ModelConfig& c) { return arch_canonical(c.arch); }

bool adapter_is_gguf(const std::string& path) {
  if (!path_exists(path) || path_is_dir(path) || !gguf_has_magic(path)) return false;
  try {
    return GGUFFile::open(path)->get_str("general.type", "") == "adapter";
  } catch (const Error&) {
    return false;  // damaged: adapter_load_gguf says what is wrong
  }
}

std::vector<AdapterTensor> adapter_read_gguf_tensors(const std::string& path, const Model& m, double* scale) {
  const ParsedLora p = parse_gguf_lora(path, m);
  if (scale) *scale = p.scale;
  return to_tensors(p, m.cfg);
}

Adapter adapter_load_gguf(const std::string& path, const Model& m) {
  const ParsedLora p = parse_gguf_lora(path, m);
  // Our adapters put the same keys on each of the last N blocks.
  std::map<int64_t, std::set<LinearKey>> by_layer;
  for (const auto& [lk, pr] : p.pairs) by_layer[lk.first].insert(lk.second);
  const int64_t L = m.cfg.n_layers, first = by_layer.begin()->first;
  const auto key_list = [](const std::set<LinearKey>& ks) {
    std::string s;
    for (LinearKey k : ks) s += (s.empty() ? "" : ", ") + std::string(kGgufKeys[k]);
    return s;
  };
  for (int64_t l = first; l < L; ++l) {
    auto it = by_layer.find(l);
    if (it == by_layer.end())
      fail_input(path, fmt::format("adapts blocks {}..{} but not block {}", first, by_layer.rbegin()->first, l),
                 fmt::format("adapters on a final run of blocks (here {}..{}) are supported", first, L - 1));
    if (it->second != by_layer.begin()->second)
      fail_input(path + fmt::format(": blk.{}", l),
                 fmt::format("adapts {}, but blk.{} adapts {}", key_list(it->second), first, key_list(by_layer.begin()->second)),
                 "adapters with the same target layers in every adapted block are supported");
  }
  LoraConfig c;
  c.type = FT_LORA;
  c.rank = p.rank;
  c.scale = p.scale;
  c.dropout = 0.0;
  c.keys.assign(by_layer.begin()->second.begin(), by_layer.begin()->second.end());
  c.num_layers = L - first;
  Adapter a;
  try {
    a = adapter_create(m, c, 0);
  } catch (const Error& e) {
    fail_input(path, e.what(), "the adapter was made for a different model");
  }
  adapter_assign_tensors(path, to_tensors(p, m.cfg), a, /*require_all=*/true);
  return a;
}

void adapter_save_gguf(const Adapter& a, const Model& m, const std::string& out_file, bool force) {
  if (a.cfg.type == FT_DORA)
    fail_input(out_file, "a DoRA adapter has no GGUF-LoRA form (llama.cpp applies plain LoRA, without DoRA's magnitudes)",
               "merge it into the model instead: `lora fuse --model M --adapter-path A --save-path OUT --export-gguf`");
  if (a.cfg.type == FT_FULL)
    fail_input(out_file, "a full fine-tuning checkpoint has no GGUF-LoRA form",
               "write the fine-tuned model instead: `lora fuse --model M --adapter-path A --save-path OUT --export-gguf`");
  if (path_is_dir(out_file)) fail_input(out_file, "is a folder", "give the .gguf file to write, e.g. --out adapter.gguf");
  if (!force && path_exists(out_file)) fail_input(out_file, "already exists", "choose another --out, or pass --force to replace it");
  LORA_CHECK(int64_t(a.lora.size()) == m.cfg.n_layers, "adapter has {} layers, model {}", a.lora.size(), m.cfg.n_layers);
  const size_t slash = out_file.rfind('/');
  if (slash != std::string::npos && slash > 0) make_dirs(out_file.substr(0, slash));

  GGUFWriter w;  // the keys in convert_lora_to_gguf.py's order
  w.set_str("general.architecture", adapter_gguf_arch(m.cfg));
  w.set_str("general.type", "adapter");
  w.set_str("adapter.type", "lora");
  w.set_f32("adapter.lora.alpha", float(a.cfg.scale * double(a.cfg.rank)));
  std::deque<std::vector<float>> keep;  // the writer copies at write(); deque keeps each buffer in place
  for (int64_t l = a.first_layer; l < int64_t(a.lora.size()); ++l)
    for (int k = 0; k < LIN_COUNT; ++k) {
      const LoraLinear* ll = a.lora[size_t(l)][size_t(k)];
      if (!ll) continue;
      const int64_t in = ll->a.dim(0), r = ll->a.dim(1), out = ll->b.dim(1);
      const std::string base = fmt::format("blk.{}.{}.weight", l, kGgufKeys[k]);
      keep.push_back(transposed(tensor_read_f32(ll->a), in, r));  // (r, in) = ne [in, r]
      w.add_tensor(base + ".lora_a", DTYPE_F32, {in, r}, keep.back().data());
      std::vector<float> B = transposed(tensor_read_f32(ll->b), r, out);  // (out, r) = ne [r, out]
      if (const int64_t heads = permute_heads(m.cfg, LinearKey(k))) B = permute_rows(B, out, r, heads, /*to_gguf=*/true);
      keep.push_back(std::move(B));
      w.add_tensor(base + ".lora_b", DTYPE_F32, {r, out}, keep.back().data());
    }
  w.write(out_file);
}

}  // namespace lora
