// Trainable parameters on top of a frozen Model (model/lora.h): creation with mlx-lm's initialisation
// and names, the parameter count and mlx-lm's "Trainable parameters" line, and the effective model for
// full fine-tuning. The math that uses them lives in the op API's linear_lora_fwd / linear_bwd.
#include "model/lora.h"

#include <cmath>
#include <map>
#include <cstring>
#include <fmt/format.h>
#include <vector>

#include "core/device_mem.h"
#include "core/error.h"
#include "core/quant.h"
#include "core/rng.h"

namespace lora {

namespace {

constexpr const char* kKeyNames[LIN_COUNT] = {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj",
                                              "self_attn.o_proj", "mlp.gate_proj",    "mlp.up_proj",
                                              "mlp.down_proj"};

OwnedTensor zeros_f32(std::initializer_list<int64_t> shape) {
  OwnedTensor t = tensor_alloc(DTYPE_F32, shape);
  std::memset(t.t.data, 0, size_t(t.t.nbytes()));
  return t;
}

// Appends a parameter (value, zero grad) and returns its index.
size_t add_param(Adapter& a, std::string name, OwnedTensor value) {
  TrainParam p;
  p.name = std::move(name);
  p.grad = tensor_alloc(DTYPE_F32, value.t.shape.data(), value.t.ndim);
  std::memset(p.grad.t.data, 0, size_t(p.grad.t.nbytes()));
  p.value = std::move(value);
  a.params.push_back(std::move(p));
  return a.params.size() - 1;
}

// An fp32 copy of a frozen tensor (any plain float dtype).
OwnedTensor f32_copy(const Tensor& t, const std::string& what) {
  if (!t.defined() || dtype_is_quant(t.dtype))
    fail_input(what, "full fine-tuning needs the weights in F32/BF16/F16",
               "load the model from safetensors or an unquantized GGUF");
  OwnedTensor c = tensor_alloc(DTYPE_F32, t.shape.data(), t.ndim);
  dtype_convert_to_f32(t.dtype, t.data, c.t.f32(), t.numel());
  return c;
}

}  // namespace

const char* fine_tune_type_name(FineTuneType t) {
  switch (t) {
    case FT_LORA: return "lora";
    case FT_DORA: return "dora";
    case FT_FULL: return "full";
  }
  return "?";
}

bool fine_tune_type_from_name(const std::string& s, FineTuneType* out) {
  for (FineTuneType t : {FT_LORA, FT_DORA, FT_FULL})
    if (s == fine_tune_type_name(t)) {
      *out = t;
      return true;
    }
  return false;
}

const char* linear_key_name(LinearKey k) { return k >= 0 && k < LIN_COUNT ? kKeyNames[k] : "?"; }

bool linear_key_from_name(const std::string& s, LinearKey* out) {
  for (int k = 0; k < LIN_COUNT; ++k) {
    const std::string full = kKeyNames[k];
    const std::string leaf = full.substr(full.find('.') + 1);
    if (s == full || s == leaf) {
      *out = LinearKey(k);
      return true;
    }
  }
  return false;
}

Tensor& layer_linear(LayerWeights& l, LinearKey k) {
  switch (k) {
    case LIN_Q: return l.wq;
    case LIN_K: return l.wk;
    case LIN_V: return l.wv;
    case LIN_O: return l.wo;
    case LIN_GATE: return l.w_gate;
    case LIN_UP: return l.w_up;
    case LIN_DOWN: return l.w_down;
    default: LORA_CHECK(false, "bad linear key {}", int(k));
  }
  return l.wq;
}
const Tensor& layer_linear(const LayerWeights& l, LinearKey k) { return layer_linear(const_cast<LayerWeights&>(l), k); }

Tensor& layer_linear_bias(LayerWeights& l, LinearKey k) {
  static thread_local Tensor none;
  none = Tensor{};
  switch (k) {
    case LIN_Q: return l.bq;
    case LIN_K: return l.bk;
    case LIN_V: return l.bv;
    default: return none;
  }
}
const Tensor& layer_linear_bias(const LayerWeights& l, LinearKey k) {
  return layer_linear_bias(const_cast<LayerWeights&>(l), k);
}

std::array<int64_t, 2> linear_key_shape(const ModelConfig& c, LinearKey k) {
  switch (k) {
    case LIN_Q: return {c.q_dim(), c.dim};
    case LIN_K: return {c.kv_dim(), c.dim};
    case LIN_V: return {c.kv_dim(), c.dim};
    case LIN_O: return {c.dim, c.q_dim()};
    case LIN_GATE: return {c.ffn_dim, c.dim};
    case LIN_UP: return {c.ffn_dim, c.dim};
    case LIN_DOWN: return {c.dim, c.ffn_dim};
    default: LORA_CHECK(false, "bad linear key {}", int(k));
  }
  return {0, 0};
}

int64_t Adapter::n_trainable() const {
  int64_t n = 0;
  for (const auto& p : params) n += p.value.t.numel();
  return n;
}

void Adapter::zero_grad() {
  if (grad_block) {
    device_zero(grad_block.get(), params[0].grad.t.device, grad_block_bytes);
    return;
  }
  for (auto& p : params) tensor_zero(p.grad.t);
}

void adapter_to_device(Adapter& a, Device dev) {
  if (a.params.empty() || a.params[0].value.t.device == dev) return;
  // Old data pointer -> new tensor, for every value and grad, so the views can be re-pointed.
  std::map<const void*, Tensor> moved;
  // Two blocks, values and grads, each param 256-byte aligned inside.
  auto padded = [](const OwnedTensor& o) { return (size_t(o.t.nbytes()) + 255) / 256 * 256; };
  size_t total = 0;
  for (const TrainParam& p : a.params) total += padded(p.value);
  std::shared_ptr<void> values = device_alloc(dev, total), grads = device_alloc(dev, total);
  size_t off_v = 0, off_g = 0;
  auto move = [&](OwnedTensor& o, std::shared_ptr<void>& block, size_t& off) {
    OwnedTensor n;
    n.buf = std::shared_ptr<void>(block, static_cast<char*>(block.get()) + off);
    off += padded(o);
    n.t = o.t;
    n.t.data = n.buf.get();
    n.t.device = dev;
    tensor_copy(n.t, o.t);
    moved[o.t.data] = n.t;
    o = std::move(n);
  };
  for (TrainParam& p : a.params) {
    move(p.value, values, off_v);
    move(p.grad, grads, off_g);
  }
  a.grad_block = grads;
  a.grad_block_bytes = total;
  auto repoint = [&](Tensor& t) {
    if (!t.defined()) return;
    auto it = moved.find(t.data);
    LORA_CHECK(it != moved.end(), "adapter view {} does not point into a param", t.shape_str());
    t = it->second;
  };
  for (auto& ll : a.storage)
    for (Tensor* t : {&ll->a, &ll->b, &ll->m, &ll->da, &ll->db, &ll->dm}) repoint(*t);
  for (auto* set : {&a.full, &a.full_grad})
    for (LayerWeights& w : *set)
      for (Tensor* t : {&w.attn_norm, &w.wq, &w.wk, &w.wv, &w.wo, &w.bq, &w.bk, &w.bv, &w.ffn_norm, &w.w_gate,
                        &w.w_up, &w.w_down})
        repoint(*t);
}

Adapter adapter_create(const Model& m, const LoraConfig& cfg, uint64_t seed) {
  const ModelConfig& c = m.cfg;
  const int64_t L = c.n_layers;
  if (cfg.num_layers < -1 || cfg.num_layers == 0 || cfg.num_layers > L)
    fail_input("num_layers",
               fmt::format("{} is out of range: the model has {} layers", cfg.num_layers, L),
               fmt::format("use 1..{} (the last N blocks), or -1 for all", L));
  if (cfg.type != FT_FULL) {
    if (cfg.rank < 1) fail_input("lora_parameters: rank", fmt::format("{} must be at least 1", cfg.rank), "use e.g. 8");
    if (cfg.keys.empty()) fail_input("lora_parameters: keys", "is empty", "name at least one layer, e.g. self_attn.q_proj");
    if (!(cfg.dropout >= 0.0 && cfg.dropout < 1.0))
      fail_input("lora_parameters: dropout", fmt::format("{} is outside [0, 1)", cfg.dropout), "use e.g. 0.0 or 0.05");
  }
  Adapter a;
  a.cfg = cfg;
  a.first_layer = cfg.num_layers < 0 ? 0 : L - cfg.num_layers;
  a.lora.assign(size_t(L), {});
  for (auto& row : a.lora) row.fill(nullptr);
  a.full.assign(size_t(L), LayerWeights{});
  a.full_grad.assign(size_t(L), LayerWeights{});

  if (cfg.type == FT_FULL) {
    // Reserve so that the views taken below stay valid (params never reallocates afterwards).
    a.params.reserve(size_t((L - a.first_layer) * 12));
    for (int64_t i = a.first_layer; i < L; ++i) {
      if (size_t(i) >= m.layers.size()) fail_input(m.source, "full fine-tuning needs the model's weights", "load the model");
      const LayerWeights& src = m.layers[size_t(i)];
      LayerWeights& dst = a.full[size_t(i)];
      LayerWeights& grad = a.full_grad[size_t(i)];
      auto add = [&](const Tensor& t, Tensor LayerWeights::*field, const std::string& leaf) {
        if (!t.defined()) return;
        const std::string name = model_hf_name(int(i), leaf);
        const size_t idx = add_param(a, name, f32_copy(t, name));
        dst.*field = a.params[idx].value.t;
        grad.*field = a.params[idx].grad.t;
      };
      add(src.attn_norm, &LayerWeights::attn_norm, "input_layernorm.weight");
      add(src.wq, &LayerWeights::wq, "self_attn.q_proj.weight");
      add(src.wk, &LayerWeights::wk, "self_attn.k_proj.weight");
      add(src.wv, &LayerWeights::wv, "self_attn.v_proj.weight");
      add(src.wo, &LayerWeights::wo, "self_attn.o_proj.weight");
      add(src.bq, &LayerWeights::bq, "self_attn.q_proj.bias");
      add(src.bk, &LayerWeights::bk, "self_attn.k_proj.bias");
      add(src.bv, &LayerWeights::bv, "self_attn.v_proj.bias");
      add(src.ffn_norm, &LayerWeights::ffn_norm, "post_attention_layernorm.weight");
      add(src.w_gate, &LayerWeights::w_gate, "mlp.gate_proj.weight");
      add(src.w_up, &LayerWeights::w_up, "mlp.up_proj.weight");
      add(src.w_down, &LayerWeights::w_down, "mlp.down_proj.weight");
    }
    return a;
  }

  // The keys, deduplicated, in LinearKey order.
  bool want[LIN_COUNT] = {};
  for (LinearKey k : cfg.keys) {
    if (k < 0 || k >= LIN_COUNT) fail_input("lora_parameters: keys", "unknown layer key", "use e.g. self_attn.q_proj");
    want[k] = true;
  }
  const int64_t r = cfg.rank;
  a.params.reserve(size_t((L - a.first_layer) * LIN_COUNT * 3));
  for (int64_t i = a.first_layer; i < L; ++i) {
    for (int k = 0; k < LIN_COUNT; ++k) {
      if (!want[k]) continue;
      const auto [out, in] = linear_key_shape(c, LinearKey(k));
      const std::string base = fmt::format("model.layers.{}.{}", i, kKeyNames[k]);
      // A: uniform in ±1/sqrt(in), one counter stream per (layer, key) so that the values do not depend
      // on which other keys are adapted.
      OwnedTensor A = tensor_alloc(DTYPE_F32, {in, r});
      Rng rng(seed, uint64_t(i) * LIN_COUNT + uint64_t(k) + 1);
      const float bound = float(1.0 / std::sqrt(double(in)));
      for (int64_t j = 0; j < in * r; ++j) A.t.f32()[j] = -bound + 2.0f * bound * rng.uniform();
      auto ll = std::make_unique<LoraLinear>();
      size_t ia = add_param(a, base + ".lora_a", std::move(A));
      size_t ib = add_param(a, base + ".lora_b", zeros_f32({r, out}));
      ll->a = a.params[ia].value.t;
      ll->da = a.params[ia].grad.t;
      ll->b = a.params[ib].value.t;
      ll->db = a.params[ib].grad.t;
      if (cfg.type == FT_DORA) {
        if (size_t(i) >= m.layers.size() || !layer_linear(m.layers[size_t(i)], LinearKey(k)).defined())
          fail_input(m.source, "DoRA needs the model's weights", "load the model");
        const Tensor& w = layer_linear(m.layers[size_t(i)], LinearKey(k));
        OwnedTensor M = tensor_alloc(DTYPE_F32, {out});
        std::vector<float> row(static_cast<size_t>(in));
        const int64_t row_bytes = dtype_nbytes(w.dtype, in);
        for (int64_t o = 0; o < out; ++o) {
          quant_dequantize_row(w.dtype, static_cast<const char*>(w.data) + o * row_bytes, row.data(), in);
          double ss = 0;
          for (float v : row) ss += double(v) * v;
          M.t.f32()[o] = float(std::sqrt(ss));
        }
        size_t im = add_param(a, base + ".m", std::move(M));
        ll->m = a.params[im].value.t;
        ll->dm = a.params[im].grad.t;
      }
      a.lora[size_t(i)][size_t(k)] = ll.get();
      a.storage.push_back(std::move(ll));
    }
  }
  return a;
}

Model adapter_effective_model(const Model& m, const Adapter& a) {
  Model e = m;
  if (a.cfg.type != FT_FULL) return e;
  for (int64_t i = a.first_layer; i < int64_t(e.layers.size()); ++i) e.layers[size_t(i)] = a.full[size_t(i)];
  return e;
}

std::string adapter_trainable_summary(const Model& m, const Adapter& a) {
  const double total = double(m.cfg.n_params()) / 1e6;
  const double trainable = double(a.n_trainable()) / 1e6;
  return fmt::format("Trainable parameters: {:.3f}% ({:.3f}M/{:.3f}M)", trainable * 100.0 / total, trainable, total);
}

}  // namespace lora
