// model_save_hf (model/model_save.h).
#include "model/model_save.h"

#include <fmt/format.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <vector>

#include "core/error.h"
#include "io/mapped_file.h"
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

}  // namespace

void model_save_hf(const Model& m, const std::string& src_dir, const std::string& out_dir, const ModelSaveOptions& o) {
  if (out_dir.empty()) fail_input("--save-path", "is empty", "give a folder for the fused model");
  std::error_code ec;
  if (fs::exists(out_dir, ec) && !o.overwrite)
    fail_input(out_dir, "already exists", "choose another --save-path, or pass --force to replace it");
  const std::string tmp = fmt::format("{}.tmp.{}", out_dir, ::getpid());
  fs::remove_all(tmp, ec);
  if (!fs::create_directories(tmp, ec) && ec)
    fail_input(tmp, "cannot create the folder: " + ec.message(), "check the path and its permissions");
  try {
    // Group the tensors into shards of at most shard_bytes (a tensor larger than that gets its own).
    struct Item {
      std::string name;
      DType dtype;
      std::vector<int64_t> shape;
      std::vector<uint8_t> data;
    };
    std::vector<std::vector<Named>> shards(1);
    int64_t cur = 0;
    auto target = [&](const Named& n) { return o.dtype_of ? o.dtype_of(n.name, n.t) : n.t.dtype; };
    for (const Named& n : model_hf_tensors(m)) {
      LORA_CHECK(n.t.device == DEVICE_CPU && n.t.is_contiguous(), "model_save_hf: {} must be a host tensor", n.name);
      LORA_CHECK(!dtype_is_quant(n.t.dtype), "model_save_hf: {} is quantized", n.name);
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
      std::vector<Item> items;
      items.reserve(shards[s].size());
      for (const Named& n : shards[s]) {
        Item it{n.name, target(n), std::vector<int64_t>(n.t.shape.begin(), n.t.shape.begin() + n.t.ndim), {}};
        it.data.resize(size_t(dtype_nbytes(it.dtype, n.t.numel())));
        if (it.dtype == n.t.dtype) {
          std::memcpy(it.data.data(), n.t.data, it.data.size());
        } else {
          std::vector<float> f(static_cast<size_t>(n.t.numel()));
          dtype_convert_to_f32(n.t.dtype, n.t.data, f.data(), n.t.numel());
          dtype_convert_from_f32(it.dtype, f.data(), it.data.data(), n.t.numel());
        }
        total += int64_t(it.data.size());
        weight_map[n.name] = file;
        items.push_back(std::move(it));
      }
      std::vector<SafeTensorWrite> w;
      for (const Item& it : items) w.push_back({it.name, it.dtype, it.shape, it.data.data()});
      safetensors_write(tmp + "/" + file, w, {{"format", "pt"}});
    }
    if (ns > 1) {
      const nlohmann::json idx = {{"metadata", {{"total_size", total}}}, {"weight_map", weight_map}};
      const std::string text = idx.dump(2) + "\n";
      write_file_atomic(tmp + "/model.safetensors.index.json", text.data(), text.size());
    }
    for (const char* f : {"config.json", "generation_config.json", "tokenizer.json", "tokenizer.model",
                          "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja",
                          "chat_template.json", "added_tokens.json"}) {
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
