// PEFT adapter import/export (train/adapter_peft.h).
#include "train/adapter_peft.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <vector>

#include "core/device_mem.h"
#include "core/error.h"
#include "io/mapped_file.h"
#include "io/safetensors.h"
#include "train/adapter_io.h"

namespace lora {

namespace {

using nlohmann::json;

const char* module_of(LinearKey k) { return k <= LIN_O ? "self_attn" : "mlp"; }
const char* short_key(LinearKey k) {
  static const char* names[] = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"};
  return names[k];
}
std::string peft_prefix(int64_t layer, LinearKey k) {
  return fmt::format("base_model.model.model.layers.{}.{}.{}", layer, module_of(k), short_key(k));
}

// (rows, cols) f32 -> (cols, rows).
std::vector<float> transposed(const float* src, int64_t rows, int64_t cols) {
  std::vector<float> t(static_cast<size_t>(rows * cols));
  for (int64_t i = 0; i < rows; ++i)
    for (int64_t j = 0; j < cols; ++j) t[size_t(j * rows + i)] = src[i * cols + j];
  return t;
}

void check_target(const std::string& dir, bool overwrite, const char* weights) {
  if (!overwrite && path_exists(path_join(dir, weights)))
    fail_input(path_join(dir, weights), "already exists", "choose another --out, or pass --force to replace it");
  make_dirs(dir);
}

}  // namespace

bool adapter_is_peft(const std::string& dir) {
  if (!path_is_dir(dir) || !path_exists(path_join(dir, kPeftWeightsFile))) return false;
  const std::string cfg = path_join(dir, kAdapterConfigFile);
  if (!path_exists(cfg)) return false;
  const json j = json::parse(read_text_file(cfg), nullptr, false);
  return j.is_object() && j.contains("peft_type");
}

Adapter adapter_load_peft(const std::string& dir, const Model& m) {
  const std::string cpath = path_join(dir, kAdapterConfigFile), wpath = path_join(dir, kPeftWeightsFile);
  const json j = json::parse(read_text_file(cpath), nullptr, false);
  if (!j.is_object()) fail_input(cpath, "is not valid JSON", "write it with PEFT's save_pretrained or `lora convert`");
  const std::string hint = "PEFT LoRA adapters with one rank and the same target modules in a run of final layers are supported";
  auto field = [&](const char* k) -> const json& {
    if (!j.contains(k)) fail_input(cpath + ": " + k, "is missing", hint);
    return j[k];
  };
  if (field("peft_type") != "LORA")
    fail_input(cpath + ": peft_type", "is " + field("peft_type").dump() + ", only LORA adapters can be read", hint);
  if (j.contains("rank_pattern") && j["rank_pattern"].is_object() && !j["rank_pattern"].empty())
    fail_input(cpath + ": rank_pattern", "is not empty (per-module ranks)", hint);
  if (j.contains("alpha_pattern") && j["alpha_pattern"].is_object() && !j["alpha_pattern"].empty())
    fail_input(cpath + ": alpha_pattern", "is not empty (per-module alphas)", hint);
  if (j.value("bias", std::string("none")) != "none")
    fail_input(cpath + ": bias", "is " + j["bias"].dump() + "; trained biases are not supported", hint);
  LoraConfig c;
  c.type = j.value("use_dora", false) ? FT_DORA : FT_LORA;
  if (!field("r").is_number_integer() || field("r").get<int64_t>() < 1) fail_input(cpath + ": r", "must be a positive integer", hint);
  c.rank = field("r").get<int64_t>();
  if (!field("lora_alpha").is_number()) fail_input(cpath + ": lora_alpha", "must be a number", hint);
  const double alpha = field("lora_alpha").get<double>();
  c.scale = j.value("use_rslora", false) ? alpha / std::sqrt(double(c.rank)) : alpha / double(c.rank);
  c.dropout = j.value("lora_dropout", 0.0);
  c.keys.clear();
  const json& tm = field("target_modules");
  std::vector<std::string> mods;
  if (tm.is_string()) fail_input(cpath + ": target_modules", "is a regular expression; give a list of module names", hint);
  for (const json& t : tm) mods.push_back(t.get<std::string>());
  for (const std::string& s : mods) {
    LinearKey k;
    if (!linear_key_from_name(s, &k))
      fail_input(cpath + ": target_modules", "names '" + s + "', not a Llama linear layer", hint);
    c.keys.push_back(k);
  }
  std::sort(c.keys.begin(), c.keys.end());
  const int64_t L = m.cfg.n_layers;
  c.num_layers = -1;
  if (j.contains("layers_to_transform") && !j["layers_to_transform"].is_null()) {
    std::vector<int64_t> layers;
    if (j["layers_to_transform"].is_number_integer()) layers.push_back(j["layers_to_transform"].get<int64_t>());
    else for (const json& x : j["layers_to_transform"]) layers.push_back(x.get<int64_t>());
    std::sort(layers.begin(), layers.end());
    const int64_t first = layers.empty() ? 0 : layers.front();
    bool run = !layers.empty() && layers.back() == L - 1;
    for (size_t i = 0; run && i < layers.size(); ++i) run = layers[i] == first + int64_t(i);
    if (!run)
      fail_input(cpath + ": layers_to_transform",
                 fmt::format("must be the final blocks {}..{} of this {}-layer model", first, L - 1, L), hint);
    c.num_layers = L - first;
  }
  Adapter a;
  try {
    a = adapter_create(m, c, 0);
  } catch (const Error& e) {
    fail_input(cpath, e.what(), "the adapter was trained for a different model");
  }
  auto f = SafetensorsFile::open(wpath);
  std::set<std::string> used;
  for (int64_t l = a.first_layer; l < L; ++l)
    for (LinearKey k : c.keys) {
      LoraLinear* ll = a.lora[size_t(l)][size_t(k)];
      const std::string p = peft_prefix(l, k);
      const int64_t in = ll->a.dim(0), r = ll->a.dim(1), out = ll->b.dim(1);
      auto get = [&](const std::string& name, int64_t rows, int64_t cols) {
        const SafeTensorInfo* t = f->find(name);
        if (!t) fail_input(wpath + ": " + name, "is missing", "the adapter does not match its adapter_config.json");
        if (t->numel() != rows * cols || (t->shape.size() == 2 && (t->shape[0] != rows || t->shape[1] != cols)))
          fail_input(wpath + ": " + name, fmt::format("has {} values, the model needs ({}, {})", t->numel(), rows, cols),
                     "the adapter was trained for a different model");
        if (t->dtype != DTYPE_F32 && t->dtype != DTYPE_F16 && t->dtype != DTYPE_BF16)
          fail_input(wpath + ": " + name, std::string("has dtype ") + dtype_name(t->dtype), "F32, F16 or BF16 factors are read");
        std::vector<float> v(static_cast<size_t>(rows * cols));
        dtype_convert_to_f32(t->dtype, t->data, v.data(), rows * cols);
        used.insert(name);
        return v;
      };
      const std::vector<float> A = get(p + ".lora_A.weight", r, in);   // (r, in)
      const std::vector<float> B = get(p + ".lora_B.weight", out, r);  // (out, r)
      const std::vector<float> at = transposed(A.data(), r, in), bt = transposed(B.data(), out, r);
      device_copy(ll->a.data, ll->a.device, at.data(), DEVICE_CPU, at.size() * 4);
      device_copy(ll->b.data, ll->b.device, bt.data(), DEVICE_CPU, bt.size() * 4);
      if (c.type == FT_DORA) {
        const std::vector<float> mag = get(p + ".lora_magnitude_vector", out, 1);
        device_copy(ll->m.data, ll->m.device, mag.data(), DEVICE_CPU, mag.size() * 4);
      }
    }
  for (const auto& [name, info] : f->tensors())
    if (!used.count(name))
      fail_input(wpath + ": " + name, "is not part of the adapter its config describes",
                 "adapters with modules_to_save or extra tensors are not supported");
  return a;
}

std::vector<AdapterTensor> adapter_read_peft_tensors(const std::string& path) {
  auto f = SafetensorsFile::open(path);
  const std::string prefix = "base_model.model.";
  const std::string hint = "PEFT LoRA/DoRA factors are named base_model.model.model.layers.N.{self_attn|mlp}.<key>"
                           ".lora_A.weight / .lora_B.weight / .lora_magnitude_vector";
  std::vector<AdapterTensor> ts;
  for (const auto& [name, info] : f->tensors()) {
    const std::string where = path + ": " + name;
    struct Suffix { const char* peft; const char* ours; };
    static const Suffix kSuffixes[] = {{".lora_A.weight", ".lora_a"}, {".lora_B.weight", ".lora_b"}, {".lora_magnitude_vector", ".m"}};
    const Suffix* sfx = nullptr;
    for (const Suffix& s : kSuffixes) {
      const size_t n = std::strlen(s.peft);
      if (name.size() > n && name.compare(name.size() - n, n, s.peft) == 0) sfx = &s;
    }
    if (name.rfind(prefix, 0) != 0 || !sfx) fail_input(where, "is not a PEFT LoRA factor", hint);
    const std::string stem = name.substr(prefix.size(), name.size() - prefix.size() - std::strlen(sfx->peft));
    if (info.dtype != DTYPE_F32 && info.dtype != DTYPE_F16 && info.dtype != DTYPE_BF16)
      fail_input(where, std::string("has dtype ") + dtype_name(info.dtype), "F32, F16 or BF16 factors are read");
    std::vector<float> v(size_t(info.numel()));
    dtype_convert_to_f32(info.dtype, info.data, v.data(), info.numel());
    AdapterTensor t{name, stem + sfx->ours, {}, {}};
    if (std::strcmp(sfx->ours, ".m") == 0) {
      t.shape = {info.numel()};
      t.data = std::move(v);
    } else {
      if (info.shape.size() != 2) fail_input(where, fmt::format("has {} dimensions, a LoRA factor has 2", info.shape.size()), hint);
      t.shape = {info.shape[1], info.shape[0]};
      t.data = transposed(v.data(), info.shape[0], info.shape[1]);
    }
    ts.push_back(std::move(t));
  }
  return ts;
}

double adapter_peft_scale(const std::string& dir) {
  const std::string cpath = path_join(dir, kAdapterConfigFile);
  if (!path_exists(cpath)) return 0.0;
  const json j = json::parse(read_text_file(cpath), nullptr, false);
  if (!j.is_object() || !j.contains("r") || !j["r"].is_number() || !j.contains("lora_alpha") || !j["lora_alpha"].is_number())
    return 0.0;
  const double r = j["r"].get<double>(), alpha = j["lora_alpha"].get<double>();
  if (r <= 0) return 0.0;
  return j.value("use_rslora", false) ? alpha / std::sqrt(r) : alpha / r;
}

void adapter_save_peft(const Adapter& a, const std::string& dir, const std::string& base_model, bool overwrite) {
  if (a.cfg.type == FT_FULL)
    fail_input("--to peft", "a full fine-tuning checkpoint has no PEFT adapter form", "use `lora fuse` to write the model");
  check_target(dir, overwrite, kPeftWeightsFile);
  std::vector<std::vector<float>> keep;
  std::vector<SafeTensorWrite> w;
  std::vector<int64_t> layers;
  std::set<LinearKey> keys;
  for (int64_t l = a.first_layer; l < int64_t(a.lora.size()); ++l) {
    layers.push_back(l);
    for (int k = 0; k < LIN_COUNT; ++k) {
      const LoraLinear* ll = a.lora[size_t(l)][size_t(k)];
      if (!ll) continue;
      keys.insert(LinearKey(k));
      const std::string p = peft_prefix(l, LinearKey(k));
      const int64_t in = ll->a.dim(0), r = ll->a.dim(1), out = ll->b.dim(1);
      keep.push_back(transposed(tensor_read_f32(ll->a).data(), in, r));  // (r, in)
      w.push_back({p + ".lora_A.weight", DTYPE_F32, {r, in}, keep.back().data()});
      keep.push_back(transposed(tensor_read_f32(ll->b).data(), r, out));  // (out, r)
      w.push_back({p + ".lora_B.weight", DTYPE_F32, {out, r}, keep.back().data()});
      if (ll->m.defined()) {
        keep.push_back(tensor_read_f32(ll->m));
        w.push_back({p + ".lora_magnitude_vector", DTYPE_F32, {out}, keep.back().data()});
      }
    }
  }
  safetensors_write(path_join(dir, kPeftWeightsFile), w, {{"format", "pt"}});
  json targets = json::array();
  for (LinearKey k : keys) targets.push_back(short_key(k));
  const json cfg = {{"peft_type", "LORA"},
                    {"task_type", "CAUSAL_LM"},
                    {"r", a.cfg.rank},
                    {"lora_alpha", a.cfg.scale * double(a.cfg.rank)},
                    {"lora_dropout", a.cfg.dropout},
                    {"target_modules", targets},
                    {"layers_to_transform", layers},
                    {"use_dora", a.cfg.type == FT_DORA},
                    {"use_rslora", false},
                    {"bias", "none"},
                    {"fan_in_fan_out", false},
                    {"init_lora_weights", true},
                    {"modules_to_save", nullptr},
                    {"base_model_name_or_path", base_model.empty() ? json(nullptr) : json(base_model)},
                    {"inference_mode", true}};
  const std::string text = cfg.dump(2) + "\n";
  write_file_atomic(path_join(dir, kAdapterConfigFile), text.data(), text.size());
}

void adapter_save_mlx(const Adapter& a, const std::string& dir, bool overwrite) {
  check_target(dir, overwrite, kAdapterWeightsFile);
  adapter_save_weights(path_join(dir, kAdapterWeightsFile), a);
  json keys = json::array();
  std::set<LinearKey> ks;
  for (const auto& row : a.lora)
    for (int k = 0; k < LIN_COUNT; ++k)
      if (row[size_t(k)]) ks.insert(LinearKey(k));
  for (LinearKey k : ks) keys.push_back(std::string(module_of(k)) + "." + short_key(k));
  const json cfg = {{"fine_tune_type", fine_tune_type_name(a.cfg.type)},
                    {"num_layers", a.cfg.num_layers},
                    {"lora_parameters", {{"rank", a.cfg.rank}, {"scale", a.cfg.scale}, {"dropout", a.cfg.dropout}, {"keys", keys}}}};
  const std::string text = cfg.dump(4) + "\n";
  write_file_atomic(path_join(dir, kAdapterConfigFile), text.data(), text.size());
}

}  // namespace lora
