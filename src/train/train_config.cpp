// Training arguments: defaults, YAML, flags, validation, adapter_config.json (see train_config.h).
#include "train/train_config.h"

#include <yaml-cpp/yaml.h>

#include <cmath>
#include <cstdlib>
#include <regex>
#include <set>

#include "core/error.h"
#include "core/quant.h"
#include "core/log.h"
#include "io/mapped_file.h"

namespace lora {

using nlohmann::json;

json train_defaults() {
  json j = json::object();
  j["model"] = "mlx_model";
  j["train"] = false;
  j["fine_tune_type"] = "lora";
  j["optimizer"] = "adam";
  j["optimizer_config"] = {{"adam", json::object()}, {"adamw", json::object()}, {"muon", json::object()},
                           {"sgd", json::object()}, {"adafactor", json::object()}};
  j["data"] = "data/";
  j["seed"] = 0;
  j["num_layers"] = 16;
  j["batch_size"] = 4;
  j["iters"] = 1000;
  j["val_batches"] = 25;
  j["learning_rate"] = 1e-5;
  j["steps_per_report"] = 10;
  j["steps_per_eval"] = 200;
  j["resume_adapter_file"] = nullptr;
  j["adapter_path"] = "adapters";
  j["save_every"] = 100;
  j["test"] = false;
  j["test_batches"] = 500;
  j["max_seq_length"] = 2048;
  j["config"] = nullptr;
  j["grad_checkpoint"] = false;
  j["lr_schedule"] = nullptr;
  j["lora_parameters"] = {{"rank", 8}, {"dropout", 0.0}, {"scale", 20.0}};
  j["mask_prompt"] = false;
  j["wandb"] = nullptr;
  j["report_to"] = nullptr;
  j["project_name"] = nullptr;
  // Ours.
  j["epochs"] = nullptr;
  j["grad_accumulation_steps"] = 1;
  j["quantize"] = nullptr;  // QLoRA: quantize the base's weights at load (q8_0, q4_0, q4_k, ...)
  return j;
}

std::string train_flag_name(const std::string& key) {
  std::string f = "--" + key;
  for (char& c : f)
    if (c == '_') c = '-';
  return f;
}

namespace {

// A plain YAML scalar as PyYAML's SafeLoader (with mlx-lm's float resolver) types it.
json yaml_scalar(const YAML::Node& n) {
  const std::string s = n.Scalar();
  if (n.Tag() == "!") return s;  // quoted: always a string
  static const std::set<std::string> nulls{"", "~", "null", "Null", "NULL"};
  static const std::set<std::string> trues{"true", "True", "TRUE", "yes", "Yes", "YES", "on", "On", "ON"};
  static const std::set<std::string> falses{"false", "False", "FALSE", "no", "No", "NO", "off", "Off", "OFF"};
  if (nulls.count(s)) return nullptr;
  if (trues.count(s)) return true;
  if (falses.count(s)) return false;
  static const std::regex int_re("^[-+]?(0|[1-9][0-9_]*)$");
  static const std::regex float_re(
      "^([-+]?([0-9][0-9_]*)\\.[0-9_]*([eE][-+]?[0-9]+)?|[-+]?([0-9][0-9_]*)([eE][-+]?[0-9]+)|\\.[0-9_]+([eE][-+][0-9]+)?)$");
  std::string clean;
  for (char c : s)
    if (c != '_') clean += c;
  if (std::regex_match(s, int_re)) return std::strtoll(clean.c_str(), nullptr, 10);
  if (std::regex_match(s, float_re)) return std::strtod(clean.c_str(), nullptr);
  if (s == ".inf" || s == ".Inf" || s == "+.inf") return HUGE_VAL;
  if (s == "-.inf" || s == "-.Inf") return -HUGE_VAL;
  return s;
}

json yaml_node(const YAML::Node& n) {
  switch (n.Type()) {
    case YAML::NodeType::Null:
    case YAML::NodeType::Undefined: return nullptr;
    case YAML::NodeType::Scalar: return yaml_scalar(n);
    case YAML::NodeType::Sequence: {
      json a = json::array();
      for (const auto& e : n) a.push_back(yaml_node(e));
      return a;
    }
    case YAML::NodeType::Map: {
      json o = json::object();
      for (const auto& kv : n) o[kv.first.as<std::string>()] = yaml_node(kv.second);
      return o;
    }
  }
  return nullptr;
}

}  // namespace

json yaml_file_to_json(const std::string& path) {
  const std::string text = read_text_file(path);
  YAML::Node root;
  try {
    root = YAML::Load(text);
  } catch (const YAML::Exception& e) {
    fail_input(fmt::format("{}:{}", path, e.mark.line + 1), "is not valid YAML: " + e.msg, "check the indentation and the quoting");
  }
  if (root.IsNull()) return json::object();
  if (!root.IsMap()) fail_input(path, "must be a YAML mapping of option names to values", "e.g. `batch_size: 4` on each line");
  return yaml_node(root);
}

void train_args_merge(json& base, const json& over, const std::string& source) {
  static const json known = train_defaults();
  for (const auto& [k, v] : over.items()) {
    if (!known.contains(k)) log_warn("{}: unknown option '{}' (kept in adapter_config.json, otherwise ignored)", source, k);
    if (k == "lora_parameters" && v.is_object() && base[k].is_object()) {
      for (const auto& [sk, sv] : v.items()) base[k][sk] = sv;
    } else if (k == "optimizer_config" && v.is_object() && base[k].is_object()) {
      for (const auto& [sk, sv] : v.items()) base[k][sk] = sv;
    } else {
      base[k] = v;
    }
  }
}

namespace {

std::string where_of(const std::string& key) { return train_flag_name(key) + " (" + key + ")"; }

int64_t get_int(const json& j, const std::string& key) {
  const json& v = j.at(key);
  if (v.is_number_integer()) return v.get<int64_t>();
  if (v.is_number_float() && std::floor(v.get<double>()) == v.get<double>() && std::fabs(v.get<double>()) < 9e15)
    return int64_t(v.get<double>());
  fail_input(where_of(key), "must be an integer, got " + v.dump(), "");
}
double get_num(const json& j, const std::string& key, const std::string& where) {
  const json& v = j.at(key);
  if (!v.is_number()) fail_input(where, "must be a number, got " + v.dump(), "");
  return v.get<double>();
}
bool get_bool(const json& j, const std::string& key) {
  const json& v = j.at(key);
  if (v.is_null()) return false;
  if (!v.is_boolean()) fail_input(where_of(key), "must be true or false, got " + v.dump(), "");
  return v.get<bool>();
}
std::string get_str(const json& j, const std::string& key) {
  const json& v = j.at(key);
  if (!v.is_string()) fail_input(where_of(key), "must be a string, got " + v.dump(), "");
  return v.get<std::string>();
}

void at_least(int64_t v, int64_t lo, const std::string& key, const std::string& hint = {}) {
  if (v < lo) fail_input(where_of(key), fmt::format("must be at least {}, got {}", lo, v), hint);
}

OptimizerConfig parse_optimizer(const json& j) {
  const std::string name = get_str(j, "optimizer");
  OptimizerKind kind;
  if (!optimizer_kind_from_name(name, &kind)) {
    if (name == "muon" || name == "adafactor")
      fail_input("--optimizer", "'" + name + "' is not implemented in lora", "use adam, adamw or sgd");
    fail_input("--optimizer", "unknown optimizer '" + name + "'", "use adam, adamw or sgd");
  }
  OptimizerConfig c = optimizer_defaults(kind);
  const json& all = j.at("optimizer_config");
  if (!all.is_object()) fail_input("optimizer_config", "must be a mapping {optimizer name: {option: value}}", "e.g. optimizer_config: {adamw: {weight_decay: 0.05}}");
  if (!all.contains(name) || all[name].is_null()) return c;
  const json& o = all[name];
  if (!o.is_object()) fail_input("optimizer_config." + name, "must be a mapping of options", "");
  for (const auto& [k, v] : o.items()) {
    const std::string w = "optimizer_config." + name + "." + k;
    const bool adam = kind != OPT_SGD;
    if (k == "learning_rate") {
      continue;  // mlx-lm passes learning_rate separately; a value here would clash there too
    } else if (adam && k == "betas") {
      if (!v.is_array() || v.size() != 2 || !v[0].is_number() || !v[1].is_number())
        fail_input(w, "must be a list of two numbers", "e.g. [0.9, 0.999]");
      c.beta1 = v[0].get<double>(), c.beta2 = v[1].get<double>();
    } else if (adam && k == "eps") {
      c.eps = get_num(o, k, w);
    } else if (adam && k == "bias_correction") {
      if (!v.is_boolean()) fail_input(w, "must be true or false", "");
      c.bias_correction = v.get<bool>();
    } else if ((kind == OPT_ADAMW || kind == OPT_SGD) && k == "weight_decay") {
      c.weight_decay = get_num(o, k, w);
    } else if (kind == OPT_SGD && (k == "momentum" || k == "dampening")) {
      (k == "momentum" ? c.momentum : c.dampening) = get_num(o, k, w);
    } else if (kind == OPT_SGD && k == "nesterov") {
      if (!v.is_boolean()) fail_input(w, "must be true or false", "");
      c.nesterov = v.get<bool>();
    } else {
      fail_input(w, "is not an option of " + name,
                 kind == OPT_SGD ? "sgd takes momentum, weight_decay, dampening, nesterov"
                 : kind == OPT_ADAMW ? "adamw takes betas, eps, weight_decay, bias_correction"
                                     : "adam takes betas, eps, bias_correction");
    }
  }
  if (c.nesterov && (c.momentum <= 0 || c.dampening != 0))
    fail_input("optimizer_config.sgd.nesterov", "needs momentum > 0 and dampening 0", "");
  return c;
}

LrSchedule parse_schedule(const json& j, double lr) {
  LrSchedule s;
  s.constant = lr;
  const json& v = j.at("lr_schedule");
  if (v.is_null()) return s;
  if (!v.is_object()) fail_input("lr_schedule", "must be a mapping {name, arguments, warmup, warmup_init}", "");
  if (!v.contains("name") || !v["name"].is_string()) fail_input("lr_schedule: name", "is missing", "e.g. cosine_decay");
  s.name = v["name"].get<std::string>();
  if (!v.contains("arguments") || !v["arguments"].is_array()) fail_input("lr_schedule: arguments", "is missing", "a list, e.g. [1e-5, 1000]");
  for (const json& a : v["arguments"]) {
    if (!a.is_number()) fail_input("lr_schedule: arguments", "must all be numbers, got " + a.dump(), "");
    s.arguments.push_back(a.get<double>());
  }
  if (v.contains("warmup") && !v["warmup"].is_null()) {
    if (!v["warmup"].is_number_integer()) fail_input("lr_schedule: warmup", "must be an integer", "");
    s.warmup = v["warmup"].get<int64_t>();
  }
  if (v.contains("warmup_init") && !v["warmup_init"].is_null()) s.warmup_init = get_num(v, "warmup_init", "lr_schedule: warmup_init");
  schedule_check(s, "lr_schedule");
  return s;
}

LoraConfig parse_lora(const json& j) {
  LoraConfig c;
  const std::string ftt = get_str(j, "fine_tune_type");
  if (!fine_tune_type_from_name(ftt, &c.type)) fail_input("--fine-tune-type", "unknown type '" + ftt + "'", "use lora, dora or full");
  c.num_layers = get_int(j, "num_layers");
  if (c.num_layers == 0 || c.num_layers < -1) fail_input("--num-layers", fmt::format("must be -1 (all) or at least 1, got {}", c.num_layers), "");
  const json& lp = j.at("lora_parameters");
  if (lp.is_null() && c.type == FT_FULL) return c;
  if (!lp.is_object()) fail_input("lora_parameters", "must be a mapping {rank, dropout, scale, keys}", "");
  if (lp.contains("rank")) {
    const json& r = lp["rank"];
    if (!r.is_number_integer()) fail_input("--lora-rank (lora_parameters.rank)", "must be an integer, got " + r.dump(), "");
    c.rank = r.get<int64_t>();
  }
  if (c.rank < 1) fail_input("--lora-rank (lora_parameters.rank)", fmt::format("must be at least 1, got {}", c.rank), "8 or 16 is typical");
  if (lp.contains("scale")) c.scale = get_num(lp, "scale", "--lora-scale (lora_parameters.scale)");
  if (!std::isfinite(c.scale)) fail_input("--lora-scale (lora_parameters.scale)", "must be finite", "");
  if (lp.contains("dropout")) c.dropout = get_num(lp, "dropout", "--lora-dropout (lora_parameters.dropout)");
  if (!(c.dropout >= 0 && c.dropout < 1))
    fail_input("--lora-dropout (lora_parameters.dropout)", fmt::format("must be in [0, 1), got {}", c.dropout), "0 turns it off");
  if (lp.contains("keys") && !lp["keys"].is_null()) {
    if (!lp["keys"].is_array() || lp["keys"].empty())
      fail_input("--lora-keys (lora_parameters.keys)", "must be a non-empty list of layer names", "e.g. self_attn.q_proj,self_attn.v_proj");
    c.keys.clear();
    for (const json& k : lp["keys"]) {
      LinearKey lk;
      if (!k.is_string() || !linear_key_from_name(k.get<std::string>(), &lk))
        fail_input("--lora-keys (lora_parameters.keys)", "unknown layer " + k.dump(),
                   "use self_attn.{q,k,v,o}_proj or mlp.{gate,up,down}_proj (short forms like q_proj work too)");
      if (std::find(c.keys.begin(), c.keys.end(), lk) == c.keys.end()) c.keys.push_back(lk);
    }
  }
  return c;
}

}  // namespace

TrainArgs train_args_parse(const json& j) {
  TrainArgs a;
  a.model = j.at("model").is_string() ? j.at("model").get<std::string>() : "";
  a.data = get_str(j, "data");
  a.adapter_path = get_str(j, "adapter_path");
  if (!j.at("resume_adapter_file").is_null()) a.resume_adapter_file = get_str(j, "resume_adapter_file");
  a.lora = parse_lora(j);
  a.optimizer = parse_optimizer(j);
  a.learning_rate = get_num(j, "learning_rate", where_of("learning_rate"));
  if (!(a.learning_rate >= 0) || !std::isfinite(a.learning_rate))
    fail_input(where_of("learning_rate"), "must be a non-negative number", "1e-5 to 1e-3 is typical for LoRA");
  a.schedule = parse_schedule(j, a.learning_rate);
  a.iters = get_int(j, "iters");
  at_least(a.iters, 1, "iters");
  if (!j.at("epochs").is_null()) {
    a.epochs = get_int(j, "epochs");
    at_least(a.epochs, 1, "epochs");
  }
  a.batch_size = get_int(j, "batch_size");
  at_least(a.batch_size, 1, "batch_size");
  a.val_batches = get_int(j, "val_batches");
  if (a.val_batches < -1) fail_input(where_of("val_batches"), "must be -1 (all), 0 (none) or positive", "");
  a.test_batches = get_int(j, "test_batches");
  if (a.test_batches < -1 || a.test_batches == 0) fail_input(where_of("test_batches"), "must be -1 (all) or positive", "");
  a.steps_per_report = get_int(j, "steps_per_report");
  at_least(a.steps_per_report, 1, "steps_per_report");
  a.steps_per_eval = get_int(j, "steps_per_eval");
  at_least(a.steps_per_eval, 1, "steps_per_eval");
  a.save_every = get_int(j, "save_every");
  at_least(a.save_every, 1, "save_every");
  a.max_seq_length = get_int(j, "max_seq_length");
  at_least(a.max_seq_length, 2, "max_seq_length", "a row needs at least one input and one target");
  a.grad_accumulation_steps = get_int(j, "grad_accumulation_steps");
  at_least(a.grad_accumulation_steps, 1, "grad_accumulation_steps");
  const int64_t seed = get_int(j, "seed");
  if (seed < 0) fail_input(where_of("seed"), "must be non-negative", "");
  a.seed = uint64_t(seed);
  a.mask_prompt = get_bool(j, "mask_prompt");
  a.grad_checkpoint = get_bool(j, "grad_checkpoint");
  a.test = get_bool(j, "test");
  if (!j.at("quantize").is_null()) {
    const std::string q = get_str(j, "quantize");
    if (!dtype_from_name(q, &a.quantize) || !dtype_is_quant(a.quantize) || !quant_can_quantize(a.quantize))
      fail_input(where_of("quantize"), fmt::format("'{}' is not a quantization type", q),
                 "use q8_0, q4_0, q4_1, q5_0, q5_1, q4_k, q5_k or q6_k (a quantized GGUF needs none: it trains as it is)");
    if (a.lora.type == FT_FULL)
      fail_input(where_of("quantize"), "full fine-tuning trains the weights themselves, so they cannot be quantized",
                 "use --fine-tune-type lora or dora with a quantized base");
  }
  return a;
}

std::string train_args_config_json(json j, const TrainArgs& a) {
  if (a.lora.type == FT_FULL) {
    j["lora_parameters"] = nullptr;  // as mlx-lm: full fine-tuning has no LoRA parameters
  } else {
    json keys = json::array();
    for (LinearKey k : a.lora.keys) keys.push_back(linear_key_name(k));
    j["lora_parameters"] = {{"rank", a.lora.rank}, {"dropout", a.lora.dropout}, {"scale", a.lora.scale}, {"keys", keys}};
  }
  return j.dump(4);  // nlohmann's default object is a sorted map: keys come out sorted, as mlx-lm's
}

}  // namespace lora
