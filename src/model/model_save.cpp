// model_save_hf and model_config_to_hf_json (model/model_save.h).
#include "model/model_save.h"

#include <fmt/format.h>
#include <unistd.h>

#include <cstdio>
#include <algorithm>
#include <cstring>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <vector>

#include "core/error.h"
#include "io/mapped_file.h"
#include "core/quant.h"
#include "io/safetensors.h"

namespace lora {

namespace {

namespace fs = std::filesystem;

using Named = NamedTensor;

}  // namespace

std::vector<NamedTensor> model_hf_tensors(const Model& m) {
  std::vector<NamedTensor> v;
  v.push_back({"model.embed_tokens.weight", m.tok_embd});
  for (size_t i = 0; i < m.layers.size(); ++i) {
    const LayerWeights& l = m.layers[i];
    const int li = int(i);
    auto add = [&](const Tensor& t, const char* leaf) {
      if (t.defined()) v.push_back({model_hf_name(li, leaf), t});
    };
    add(l.attn_norm, "input_layernorm.weight");
    add(l.wq, "self_attn.q_proj.weight");
    add(l.wk, "self_attn.k_proj.weight");
    add(l.wv, "self_attn.v_proj.weight");
    add(l.wo, "self_attn.o_proj.weight");
    add(l.bq, "self_attn.q_proj.bias");
    add(l.bk, "self_attn.k_proj.bias");
    add(l.bv, "self_attn.v_proj.bias");
    add(l.ffn_norm, "post_attention_layernorm.weight");
    add(l.w_gate, "mlp.gate_proj.weight");
    add(l.w_up, "mlp.up_proj.weight");
    add(l.w_down, "mlp.down_proj.weight");
  }
  v.push_back({"model.norm.weight", m.out_norm});
  if (!m.cfg.tie_embeddings) v.push_back({"lm_head.weight", m.lm_head});
  return v;
}

namespace {

void copy_file(const std::string& from, const std::string& to) {
  const std::string bytes = read_text_file(from);
  write_file_atomic(to, bytes.data(), bytes.size());
}

// f32 written as its shortest decimal (1e-05, not 9.999999747378752e-06): the value a float32 GGUF
// field came from, and the same float32 when read back.
double short_float(double v) { return std::stod(fmt::format("{}", float(v))); }

}  // namespace

const char* model_torch_dtype_name(DType t) {
  switch (t) {
    case DTYPE_F16: return "float16";
    case DTYPE_BF16: return "bfloat16";
    default: return "float32";
  }
}

std::string model_config_to_hf_json(const ModelConfig& c, const std::string& torch_dtype) {
  nlohmann::ordered_json j;
  const char* arch = c.arch == "mistral" ? "MistralForCausalLM" : c.arch == "qwen2" ? "Qwen2ForCausalLM" : "LlamaForCausalLM";
  j["architectures"] = {arch};
  j["model_type"] = c.arch;
  j["hidden_size"] = c.dim;
  j["intermediate_size"] = c.ffn_dim;
  j["num_hidden_layers"] = c.n_layers;
  j["num_attention_heads"] = c.n_heads;
  j["num_key_value_heads"] = c.n_kv_heads;
  j["head_dim"] = c.head_dim;
  j["vocab_size"] = c.vocab;
  j["max_position_embeddings"] = c.max_pos;
  j["rms_norm_eps"] = short_float(c.rms_eps);
  j["rope_theta"] = short_float(c.rope_theta);
  if (c.rope_scaling.type == "linear") {
    j["rope_scaling"] = {{"rope_type", "linear"}, {"factor", short_float(c.rope_scaling.factor)}};
  } else if (c.rope_scaling.type == "llama3") {
    j["rope_scaling"] = {{"rope_type", "llama3"},
                         {"factor", short_float(c.rope_scaling.factor)},
                         {"low_freq_factor", short_float(c.rope_scaling.low_freq_factor)},
                         {"high_freq_factor", short_float(c.rope_scaling.high_freq_factor)},
                         {"original_max_position_embeddings", c.rope_scaling.original_max_position}};
  }
  j["tie_word_embeddings"] = c.tie_embeddings;
  j["hidden_act"] = "silu";
  if (c.arch == "llama") {
    j["attention_bias"] = false;
    j["mlp_bias"] = false;
  }
  if (c.arch == "qwen2") j["use_sliding_window"] = false;
  if (c.bos_id >= 0) j["bos_token_id"] = c.bos_id;
  if (c.eos_ids.size() > 1) j["eos_token_id"] = c.eos_ids;
  else if (c.eos_id >= 0) j["eos_token_id"] = c.eos_id;
  j["torch_dtype"] = torch_dtype;
  return j.dump(2) + "\n";
}

void model_save_hf(const Model& m, const std::string& src_dir, const std::string& out_dir, const ModelSaveOptions& o) {
  if (out_dir.empty()) fail_input(o.what, "is empty", "give a folder for the model");
  std::error_code ec;
  if (fs::exists(out_dir, ec) && !o.overwrite)
    fail_input(out_dir, "already exists", "choose another " + o.what + ", or pass --force to replace it");
  const std::string tmp = fmt::format("{}.tmp.{}", out_dir, ::getpid());
  fs::remove_all(tmp, ec);
  if (!fs::create_directories(tmp, ec) && ec)
    fail_input(tmp, "cannot create the folder: " + ec.message(), "check the path and its permissions");
  try {
    // Group the tensors into shards of at most shard_bytes (a tensor larger than that gets its own).
    std::vector<std::vector<Named>> shards(1);
    int64_t cur = 0;
    // Quantized weights (a GGUF model kept quantized) are written dequantized, as bf16 unless told.
    auto target = [&](const Named& n) {
      const DType t = o.dtype_of ? o.dtype_of(n.name, n.t) : n.t.dtype;
      return dtype_is_quant(t) ? DTYPE_BF16 : t;
    };
    for (const Named& n : model_hf_tensors(m)) {
      LORA_CHECK(n.t.device == DEVICE_CPU && n.t.is_contiguous(), "model_save_hf: {} must be a host tensor", n.name);
      const int64_t bytes = dtype_nbytes(target(n), n.t.numel());
      if (cur > 0 && cur + bytes > o.shard_bytes) {
        shards.emplace_back();
        cur = 0;
      }
      shards.back().push_back(n);
      cur += bytes;
    }
    const size_t ns = shards.size();
    nlohmann::json weight_map = nlohmann::json::object();
    int64_t total = 0;
    for (size_t s = 0; s < ns; ++s) {
      const std::string file =
          ns == 1 ? "model.safetensors" : fmt::format("model-{:05d}-of-{:05d}.safetensors", s + 1, ns);
      // Streamed: each tensor is converted into the writer's scratch buffer when its turn comes.
      std::vector<SafeTensorSource> w;
      for (const Named& n : shards[s]) {
        const DType dt = target(n);
        SafeTensorSource src{n.name, dt, std::vector<int64_t>(n.t.shape.begin(), n.t.shape.begin() + n.t.ndim), nullptr, {}};
        if (dt == n.t.dtype) {
          src.data = n.t.data;
        } else {
          const Tensor t = n.t;
          src.fill = [t, dt](void* dst) {
            const int64_t cols = t.ndim ? t.shape[size_t(t.ndim - 1)] : 1, rows = t.numel() / std::max<int64_t>(cols, 1);
            const int64_t sb = dtype_nbytes(t.dtype, cols), db = dtype_nbytes(dt, cols);
#pragma omp parallel
            {
              std::vector<float> row(static_cast<size_t>(cols));
#pragma omp for schedule(static)
              for (int64_t r = 0; r < rows; ++r) {
                quant_dequantize_row(t.dtype, static_cast<const uint8_t*>(t.data) + r * sb, row.data(), cols);
                dtype_convert_from_f32(dt, row.data(), static_cast<uint8_t*>(dst) + r * db, cols);
              }
            }
          };
        }
        total += dtype_nbytes(dt, n.t.numel());
        weight_map[n.name] = file;
        w.push_back(std::move(src));
      }
      safetensors_write_stream(tmp + "/" + file, w, {{"format", "pt"}});
    }
    if (ns > 1) {
      const nlohmann::json idx = {{"metadata", {{"total_size", total}}}, {"weight_map", weight_map}};
      const std::string text = idx.dump(2) + "\n";
      write_file_atomic(tmp + "/model.safetensors.index.json", text.data(), text.size());
    }
    if (!o.config_json.empty()) write_file_atomic(tmp + "/config.json", o.config_json.data(), o.config_json.size());
    if (o.vocab) tokenizer_vocab_write_hf(*o.vocab, tmp);
    for (const char* f : {"config.json", "generation_config.json", "tokenizer.json", "tokenizer.model",
                          "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja",
                          "chat_template.json", "added_tokens.json"}) {
      if (src_dir.empty() || path_exists(tmp + "/" + f)) continue;  // written above from the config/vocab
      const bool tokenizer_file = std::string(f) != "config.json" && std::string(f) != "generation_config.json";
      if (o.vocab && tokenizer_file) continue;
      const std::string from = src_dir + "/" + f;
      if (path_exists(from)) copy_file(from, tmp + "/" + f);
    }
    if (fs::exists(out_dir, ec)) fs::remove_all(out_dir, ec);
    fs::rename(tmp, out_dir, ec);
    if (ec) fail_input(out_dir, "cannot move the finished folder into place: " + ec.message(), "check the path");
  } catch (...) {
    fs::remove_all(tmp, ec);  // no half-written output left behind
    throw;
  }
}

}  // namespace lora
