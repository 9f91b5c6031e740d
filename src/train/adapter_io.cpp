// Adapter weights, adapter_config.json reading, and the resume state (see adapter_io.h).
#include "train/adapter_io.h"

#include <dirent.h>
#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <set>

#include "core/device_mem.h"
#include "core/error.h"
#include "core/log.h"
#include "io/gguf.h"
#include "io/mapped_file.h"
#include "io/safetensors.h"
#include "train/adapter_gguf.h"
#include "train/adapter_peft.h"

namespace lora {

using nlohmann::json;

std::string adapter_checkpoint_name(int64_t iter) { return fmt::format("{:07d}_adapters.safetensors", iter); }

std::string path_join(const std::string& dir, const std::string& name) {
  if (dir.empty()) return name;
  return dir.back() == '/' ? dir + name : dir + "/" + name;
}

void make_dirs(const std::string& dir) {
  if (dir.empty()) return;
  std::string cur;
  size_t i = 0;
  while (i <= dir.size()) {
    const size_t j = dir.find('/', i);
    cur = dir.substr(0, j == std::string::npos ? dir.size() : j);
    if (!cur.empty() && ::mkdir(cur.c_str(), 0777) != 0 && errno != EEXIST)
      fail_input(cur, std::string("cannot create the folder: ") + std::strerror(errno), "check the path and its permissions");
    if (j == std::string::npos) break;
    i = j + 1;
  }
  if (!path_is_dir(dir)) fail_input(dir, "is not a folder", "give a folder path for the adapter");
}

void adapter_save_weights(const std::string& path, const Adapter& a) {
  std::vector<SafeTensorWrite> w;
  std::vector<OwnedTensor> host;  // params on a GPU are read back first
  w.reserve(a.params.size());
  host.reserve(a.params.size());
  for (const TrainParam& p : a.params) {
    const Tensor& t = p.value.t;
    LORA_CHECK(t.dtype == DTYPE_F32 && t.is_contiguous(), "trainable {} must be contiguous fp32", p.name);
    const void* data = t.data;
    if (t.device != DEVICE_CPU) {
      host.push_back(tensor_to_host(t));
      data = host.back().t.data;
    }
    w.push_back({p.name, DTYPE_F32, std::vector<int64_t>(t.shape.begin(), t.shape.begin() + t.ndim), data});
  }
  safetensors_write(path, w, {{"format", "mlx"}});
}

namespace {

std::string shape_of(const std::vector<int64_t>& s) {
  std::string r = "(";
  for (size_t i = 0; i < s.size(); ++i) r += (i ? ", " : "") + std::to_string(s[i]);
  return r + (s.size() == 1 ? ",)" : ")");
}

void report_missing(const std::string& path, const Adapter& a, const std::set<std::string>& seen, bool require_all,
                    const std::string& hint) {
  std::vector<std::string> missing;
  for (const TrainParam& p : a.params)
    if (!seen.count(p.name)) missing.push_back(p.name);
  if (missing.empty()) return;
  if (require_all)
    fail_input(path + ": " + missing[0], fmt::format("is missing ({} of {} trainable tensors absent)", missing.size(), a.params.size()), hint);
  log_warn("{}: {} of {} trainable tensors absent (first: {}); they keep their initial values", path, missing.size(),
           a.params.size(), missing[0]);
}

std::string parent_dir(const std::string& file) {
  const size_t s = file.rfind('/');
  return s == std::string::npos ? "." : s == 0 ? "/" : file.substr(0, s);
}

std::string base_name(const std::string& path) {
  const size_t s = path.rfind('/');
  return s == std::string::npos ? path : path.substr(s + 1);
}

bool ends_with(const std::string& s, const char* suf) {
  const size_t n = std::strlen(suf);
  return s.size() >= n && s.compare(s.size() - n, n, suf) == 0;
}

// A file to read as GGUF (the GGUF-LoRA reader then says whether it is an adapter).
bool looks_gguf(const std::string& path) {
  if (path_is_dir(path)) return false;
  if (ends_with(path, ".gguf")) return true;
  return gguf_has_magic(path);
}

// A resumed run keeps its own scale; say so when the file was trained with another one.
void warn_other_scale(const std::string& path, double file_scale, const Adapter& a) {
  if (file_scale > 0 && a.cfg.type != FT_FULL && std::abs(file_scale - a.cfg.scale) > 1e-6 * std::abs(a.cfg.scale))
    log_warn("{}: its alpha / rank gives scale {:g}, this run uses {:g}; the factors are read as they are", path, file_scale, a.cfg.scale);
}

// The .gguf files directly in dir (for the hint when a folder is given instead of a GGUF-LoRA file).
std::vector<std::string> gguf_files_in(const std::string& dir) {
  std::vector<std::string> out;
  DIR* d = ::opendir(dir.c_str());
  if (!d) return out;
  while (dirent* e = ::readdir(d))
    if (ends_with(e->d_name, ".gguf")) out.push_back(e->d_name);
  ::closedir(d);
  std::sort(out.begin(), out.end());
  return out;
}

}  // namespace

void adapter_load_weights(const std::string& path, Adapter& a, bool require_all) {
  // GGUF-LoRA needs the model (architecture, heads): the overload taking it detects every layout.
  LORA_CHECK(!looks_gguf(path), "{}: a GGUF-LoRA file goes to adapter_load_weights(path, a, model, require_all)", path);
  auto f = SafetensorsFile::open(path);
  std::map<std::string, TrainParam*> by_name;
  for (TrainParam& p : a.params) by_name[p.name] = &p;
  std::set<std::string> seen;
  const std::string hint = "the adapter was made for another model, or with other num_layers / lora_parameters "
                           "(see adapter_config.json beside it)";
  for (const auto& [name, info] : f->tensors()) {
    auto it = by_name.find(name);
    if (it == by_name.end()) fail_input(path + ": " + name, "is not a trainable tensor of this model and adapter configuration", hint);
    const Tensor& t = it->second->value.t;
    const std::vector<int64_t> want(t.shape.begin(), t.shape.begin() + t.ndim);
    if (info.shape != want)
      fail_input(path + ": " + name, fmt::format("has shape {}, the model needs {}", shape_of(info.shape), shape_of(want)), hint);
    if (info.dtype != DTYPE_F32 && info.dtype != DTYPE_F16 && info.dtype != DTYPE_BF16)
      fail_input(path + ": " + name, std::string("has dtype ") + dtype_name(info.dtype) + ", expected F32", "adapters are stored as F32 (F16/BF16 also read)");
    if (t.device == DEVICE_CPU) {
      dtype_convert_to_f32(info.dtype, info.data, t.f32(), t.numel());
    } else {
      std::vector<float> h(size_t(t.numel()));
      dtype_convert_to_f32(info.dtype, info.data, h.data(), t.numel());
      device_copy(t.data, t.device, h.data(), DEVICE_CPU, h.size() * sizeof(float));
    }
    seen.insert(name);
  }
  report_missing(path, a, seen, require_all, hint);
}

void adapter_assign_tensors(const std::string& path, const std::vector<AdapterTensor>& ts, Adapter& a, bool require_all) {
  std::map<std::string, TrainParam*> by_name;
  for (TrainParam& p : a.params) by_name[p.name] = &p;
  std::set<std::string> seen;
  const std::string hint = "the adapter was made for another model, or with another rank, target layers or number of "
                           "layers than this one";
  for (const AdapterTensor& src : ts) {
    auto it = by_name.find(src.name);
    if (it == by_name.end())
      fail_input(path + ": " + src.source, fmt::format("(our {}) is not a trainable tensor of this model and adapter configuration", src.name), hint);
    const Tensor& t = it->second->value.t;
    const std::vector<int64_t> want(t.shape.begin(), t.shape.begin() + t.ndim);
    if (src.shape != want)
      fail_input(path + ": " + src.source, fmt::format("gives {} the shape {}, the adapter needs {}", src.name, shape_of(src.shape), shape_of(want)), hint);
    LORA_CHECK(int64_t(src.data.size()) == t.numel(), "{}: {} values for {}", src.source, src.data.size(), src.name);
    device_copy(t.data, t.device, src.data.data(), DEVICE_CPU, src.data.size() * sizeof(float));
    seen.insert(src.name);
  }
  report_missing(path, a, seen, require_all, hint);
}

void adapter_load_weights(const std::string& path, Adapter& a, const Model& m, bool require_all) {
  if (!path_exists(path))
    fail_input(path, "does not exist", "give an adapters.safetensors, a PEFT adapter folder or a GGUF-LoRA file");
  std::string file = path;
  if (path_is_dir(path)) {
    if (adapter_is_peft(path)) file = path_join(path, kPeftWeightsFile);
    else if (path_exists(path_join(path, kAdapterWeightsFile))) file = path_join(path, kAdapterWeightsFile);
    else fail_input(path, "holds neither adapters.safetensors (mlx-lm) nor adapter_model.safetensors with its adapter_config.json (PEFT)",
                    "give the adapter file itself, or a folder written by `lora train` or PEFT's save_pretrained");
  }
  if (looks_gguf(file)) {
    double scale = 0;
    std::vector<AdapterTensor> ts = adapter_read_gguf_tensors(file, m, &scale);
    warn_other_scale(file, scale, a);
    adapter_assign_tensors(file, ts, a, require_all);
    return;
  }
  bool peft = false;
  {
    auto f = SafetensorsFile::open(file);
    for (const auto& [name, info] : f->tensors()) peft = peft || name.rfind("base_model.model.", 0) == 0;
  }
  if (!peft) return adapter_load_weights(file, a, require_all);
  warn_other_scale(file, adapter_peft_scale(parent_dir(file)), a);
  adapter_assign_tensors(file, adapter_read_peft_tensors(file), a, require_all);
}

LoraConfig adapter_read_config(const std::string& dir) {
  const std::string path = path_join(dir, kAdapterConfigFile);
  json j;
  try {
    j = json::parse(read_text_file(path));
  } catch (const json::exception& e) {
    fail_input(path, std::string("is not valid JSON: ") + e.what(), "write it with `lora train` or mlx_lm.lora");
  }
  if (!j.is_object()) fail_input(path, "must be a JSON object", "");
  LoraConfig c;
  auto num = [&](const json& o, const char* key, const std::string& where) -> double {
    if (!o.contains(key)) fail_input(path + ": " + where, "is missing", "an mlx-lm adapter_config.json has it");
    if (!o[key].is_number()) fail_input(path + ": " + where, "must be a number", "");
    return o[key].get<double>();
  };
  std::string ftt = "lora";
  if (j.contains("fine_tune_type")) {
    if (!j["fine_tune_type"].is_string()) fail_input(path + ": fine_tune_type", "must be a string", "lora, dora or full");
    ftt = j["fine_tune_type"].get<std::string>();
  }
  if (!fine_tune_type_from_name(ftt, &c.type)) fail_input(path + ": fine_tune_type", "unknown value '" + ftt + "'", "lora, dora or full");
  c.num_layers = int64_t(num(j, "num_layers", "num_layers"));
  if (c.type == FT_FULL) return c;
  if (!j.contains("lora_parameters") || !j["lora_parameters"].is_object())
    fail_input(path + ": lora_parameters", "is missing or not an object", "it holds rank, scale, dropout and keys");
  const json& lp = j["lora_parameters"];
  c.rank = int64_t(num(lp, "rank", "lora_parameters.rank"));
  c.scale = num(lp, "scale", "lora_parameters.scale");
  if (lp.contains("dropout") && lp["dropout"].is_number()) c.dropout = lp["dropout"].get<double>();
  if (c.rank < 1) fail_input(path + ": lora_parameters.rank", "must be at least 1", "");
  if (lp.contains("keys") && !lp["keys"].is_null()) {
    if (!lp["keys"].is_array()) fail_input(path + ": lora_parameters.keys", "must be a list of strings", "e.g. [\"self_attn.q_proj\", \"self_attn.v_proj\"]");
    c.keys.clear();
    for (const json& k : lp["keys"]) {
      LinearKey lk;
      if (!k.is_string() || !linear_key_from_name(k.get<std::string>(), &lk))
        fail_input(path + ": lora_parameters.keys", "unknown key " + k.dump(), "use the linear layers of a Llama block, e.g. self_attn.q_proj, mlp.down_proj");
      c.keys.push_back(lk);
    }
    return c;
  }
  // No keys: take them from the tensor names ("model.layers.N.<key>.lora_a").
  const std::string wpath = path_join(dir, kAdapterWeightsFile);
  if (!path_exists(wpath)) return c;
  auto f = SafetensorsFile::open(wpath);
  std::vector<LinearKey> keys;
  for (const auto& [name, info] : f->tensors()) {
    const size_t end = name.rfind(".lora_a");
    if (end == std::string::npos || end + 7 != name.size()) continue;
    const size_t p1 = name.find('.', std::string("model.layers.").size());
    if (name.rfind("model.layers.", 0) != 0 || p1 == std::string::npos || p1 >= end) continue;
    LinearKey lk;
    if (linear_key_from_name(name.substr(p1 + 1, end - p1 - 1), &lk) &&
        std::find(keys.begin(), keys.end(), lk) == keys.end())
      keys.push_back(lk);
  }
  if (!keys.empty()) {
    std::sort(keys.begin(), keys.end());
    c.keys = keys;
  }
  return c;
}

const char* adapter_layout_name(const std::string& path) {
  if (adapter_is_peft(path) || (base_name(path) == kPeftWeightsFile && adapter_is_peft(parent_dir(path)))) return "PEFT";
  if (looks_gguf(path)) return "GGUF-LoRA";
  return "mlx-lm";
}

Adapter adapter_load(const std::string& dir_or_file, const Model& m) {
  if (adapter_is_peft(dir_or_file)) return adapter_load_peft(dir_or_file, m);  // PEFT's layout, detected
  std::string dir = dir_or_file, file;
  if (!path_is_dir(dir_or_file)) {
    if (!path_exists(dir_or_file))
      fail_input(dir_or_file, "does not exist",
                 "give the adapter: a folder written by `lora train` or PEFT, or a GGUF-LoRA file (--adapter-path)");
    if (looks_gguf(dir_or_file)) return adapter_load_gguf(dir_or_file, m);
    dir = parent_dir(dir_or_file);
    if (base_name(dir_or_file) == kPeftWeightsFile && adapter_is_peft(dir)) return adapter_load_peft(dir, m);
    file = dir_or_file;
  } else {
    file = path_join(dir, kAdapterWeightsFile);
  }
  if (!path_exists(path_join(dir, kAdapterConfigFile))) {
    const std::vector<std::string> ggufs = path_is_dir(dir_or_file) ? gguf_files_in(dir) : std::vector<std::string>{};
    fail_input(path_join(dir, kAdapterConfigFile), "does not exist",
               ggufs.empty() ? std::string("an adapter folder holds adapter_config.json and adapters.safetensors (mlx-lm) or "
                                           "adapter_model.safetensors (PEFT); a GGUF-LoRA adapter is one .gguf file")
                             : "the folder holds " + ggufs[0] + (ggufs.size() > 1 ? " (and more .gguf files)" : "") +
                                   ": pass a GGUF-LoRA adapter as the .gguf file itself, e.g. --adapter-path " +
                                   path_join(dir, ggufs[0]));
  }
  if (!path_exists(file)) fail_input(file, "does not exist", "train one with `lora train --adapter-path " + dir + "`");
  const LoraConfig cfg = adapter_read_config(dir);
  Adapter a;
  try {
    a = adapter_create(m, cfg, 0);
  } catch (const Error& e) {
    fail_input(path_join(dir, kAdapterConfigFile), e.what(), "the adapter was trained for a different model");
  }
  adapter_load_weights(file, a, /*require_all=*/true);
  return a;
}

// ---- training state ----

void train_state_save(const std::string& dir, const TrainState& s, Optimizer& opt) {
  const std::string stem = path_join(dir, fmt::format("{:07d}_state", s.iteration));
  std::vector<SafeTensorWrite> w;
  std::vector<std::vector<float>> host;  // device state read back first
  const auto state = opt.state_tensors();
  host.reserve(state.size());
  for (const OptimizerStateTensor& t : state) {
    host.push_back(tensor_read_f32(t.t));
    w.push_back({t.name, DTYPE_F32, {t.t.numel()}, host.back().data()});
  }
  safetensors_write(stem + ".safetensors", w, {{"format", "lora.cpp-train-state"}, {"version", std::to_string(kTrainStateVersion)}});
  json j = {{"version", kTrainStateVersion},
            {"iteration", s.iteration},
            {"optimizer_step", s.optimizer_step},
            {"seed", s.seed},
            {"optimizer", s.optimizer},
            {"fine_tune_type", s.fine_tune_type},
            {"batch_size", s.batch_size},
            {"grad_accumulation_steps", s.grad_accumulation_steps},
            {"trained_tokens", s.trained_tokens},
            {"elapsed_s", s.elapsed_s},
            {"report_loss_sum", s.report_loss_sum},
            {"report_steps", s.report_steps},
            {"report_tokens", s.report_tokens}};
  const std::string text = j.dump(4) + "\n";
  write_file_atomic(stem + ".json", text.data(), text.size());
}

std::optional<int64_t> train_state_latest(const std::string& dir) {
  DIR* d = ::opendir(dir.c_str());
  if (!d) return std::nullopt;
  std::optional<int64_t> best;
  while (dirent* e = ::readdir(d)) {
    const std::string n = e->d_name;
    if (n.size() != 7 + std::strlen("_state.json") || n.substr(7) != "_state.json") continue;
    if (n.find_first_not_of("0123456789") != 7) continue;
    const int64_t it = std::stoll(n.substr(0, 7));
    if (!path_exists(path_join(dir, adapter_checkpoint_name(it)))) continue;
    if (!best || it > *best) best = it;
  }
  ::closedir(d);
  return best;
}

TrainState train_state_load(const std::string& dir, int64_t iter, Optimizer& opt) {
  const std::string stem = path_join(dir, fmt::format("{:07d}_state", iter));
  const std::string jpath = stem + ".json";
  json j;
  try {
    j = json::parse(read_text_file(jpath));
  } catch (const json::exception& e) {
    fail_input(jpath, std::string("is not valid JSON: ") + e.what(), "delete this checkpoint to resume from an older one");
  }
  const std::string hint = "the file is damaged or from another program; delete this checkpoint to resume from an older one";
  if (!j.is_object() || !j.contains("version") || !j["version"].is_number_integer())
    fail_input(jpath + ": version", "is missing", hint);
  if (j["version"].get<int>() != kTrainStateVersion)
    fail_input(jpath + ": version", fmt::format("is {}, this lora reads version {}", j["version"].get<int>(), kTrainStateVersion),
               "resume with the lora version that wrote it");
  TrainState s;
  try {
    s.iteration = j.at("iteration").get<int64_t>();
    s.optimizer_step = j.at("optimizer_step").get<int64_t>();
    s.seed = j.at("seed").get<uint64_t>();
    s.optimizer = j.at("optimizer").get<std::string>();
    s.fine_tune_type = j.at("fine_tune_type").get<std::string>();
    s.batch_size = j.at("batch_size").get<int64_t>();
    s.grad_accumulation_steps = j.at("grad_accumulation_steps").get<int64_t>();
    s.trained_tokens = j.at("trained_tokens").get<int64_t>();
    s.elapsed_s = j.at("elapsed_s").get<double>();
    s.report_loss_sum = j.value("report_loss_sum", 0.0);
    s.report_steps = j.value("report_steps", int64_t(0));
    s.report_tokens = j.value("report_tokens", int64_t(0));
  } catch (const json::exception& e) {
    fail_input(jpath, std::string("a field is missing or has the wrong type: ") + e.what(), hint);
  }
  if (s.iteration != iter) fail_input(jpath + ": iteration", fmt::format("is {}, the file name says {}", s.iteration, iter), hint);
  const std::string spath = stem + ".safetensors";
  auto f = SafetensorsFile::open(spath);
  auto tensors = opt.state_tensors();
  if (f->tensors().size() != tensors.size())
    fail_input(spath, fmt::format("holds {} optimizer tensors, the {} optimizer of this adapter needs {}", f->tensors().size(),
                                  optimizer_kind_name(opt.config().kind), tensors.size()),
               "resume with the same --optimizer, --fine-tune-type and lora parameters as the run that wrote it");
  for (const OptimizerStateTensor& t : tensors) {
    const SafeTensorInfo* info = f->find(t.name);
    if (!info) fail_input(spath + ": " + t.name, "is missing", "resume with the same settings as the run that wrote it");
    if (info->dtype != DTYPE_F32 || info->numel() != t.t.numel())
      fail_input(spath + ": " + t.name, fmt::format("has {} {} values, expected {} F32", info->numel(), dtype_name(info->dtype), t.t.numel()), hint);
    device_copy(t.t.data, t.t.device, info->data, DEVICE_CPU, size_t(t.t.numel()) * sizeof(float));
  }
  opt.set_step(s.optimizer_step);
  return s;
}

}  // namespace lora
