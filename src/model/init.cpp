// Random model folders (see init.h).
#include "model/init.h"

#include <sys/stat.h>

#include <cmath>
#include <nlohmann/json.hpp>
#include <vector>

#include "core/error.h"
#include "core/log.h"
#include "core/rng.h"
#include "io/mapped_file.h"
#include "io/safetensors.h"
#include "model/config.h"
#include "model/model.h"

namespace lora {

namespace {

// Fills n values of N(0, std) for tensor number `tensor_id`, in the requested dtype. Each chunk of
// 4096 values has its own RNG stream, so the result does not depend on the number of threads.
void fill_normal(void* dst, DType dt, int64_t n, double std, uint64_t seed, uint64_t tensor_id) {
  constexpr int64_t kChunk = 4096;
  const int64_t n_chunks = (n + kChunk - 1) / kChunk;
#pragma omp parallel for schedule(static)
  for (int64_t c = 0; c < n_chunks; ++c) {
    Rng rng(seed, (tensor_id << 40) | uint64_t(c));
    float buf[kChunk];
    const int64_t begin = c * kChunk, len = std::min(kChunk, n - begin);
    for (int64_t i = 0; i < len; i += 2) {
      // Box-Muller: two normals from two uniforms in (0, 1].
      const double u1 = 1.0 - rng.uniform_double(), u2 = rng.uniform_double();
      const double r = std::sqrt(-2.0 * std::log(u1)) * std;
      buf[i] = float(r * std::cos(2 * M_PI * u2));
      if (i + 1 < len) buf[i + 1] = float(r * std::sin(2 * M_PI * u2));
    }
    dtype_convert_from_f32(dt, buf, static_cast<char*>(dst) + dtype_nbytes(dt, begin), len);
  }
}

void fill_const(void* dst, DType dt, int64_t n, float v) {
  std::vector<float> tmp(size_t(n), v);
  dtype_convert_from_f32(dt, tmp.data(), dst, n);
}

const char* torch_dtype_name(DType dt) {
  switch (dt) {
    case DTYPE_F32: return "float32";
    case DTYPE_F16: return "float16";
    case DTYPE_BF16: return "bfloat16";
    default: return "float32";
  }
}

}  // namespace

void model_init_random(const std::string& config_path, const std::string& out_dir, const ModelInitOptions& o) {
  if (o.dtype != DTYPE_F32 && o.dtype != DTYPE_BF16 && o.dtype != DTYPE_F16)
    fail_input("--dtype", fmt::format("{} is not supported for random weights", dtype_name(o.dtype)), "use f32, bf16 or f16");
  const ModelConfig cfg = config_from_hf_json(config_path);
  nlohmann::json j = nlohmann::json::parse(read_text_file(config_path), nullptr, false);
  if (j.is_discarded()) fail_input(config_path, "is not valid JSON");
  double std = o.std > 0 ? o.std : j.value("initializer_range", 0.02);

  if (path_exists(out_dir + "/model.safetensors") && !o.overwrite)
    fail_input(out_dir, "already holds a model.safetensors", "choose another --out folder or pass --force");
  ::mkdir(out_dir.c_str(), 0755);
  if (!path_is_dir(out_dir)) fail_input(out_dir, "cannot create the output folder", "check the path and permissions");

  // Tensors in HF naming, with shapes from the config.
  struct Spec { std::string name; std::vector<int64_t> shape; bool is_norm; bool is_bias; };
  std::vector<Spec> specs;
  const int64_t C = cfg.dim, F = cfg.ffn_dim, V = cfg.vocab, Q = cfg.q_dim(), K = cfg.kv_dim();
  specs.push_back({"model.embed_tokens.weight", {V, C}, false, false});
  for (int l = 0; l < cfg.n_layers; ++l) {
    auto n = [&](const std::string& leaf) { return model_hf_name(l, leaf); };
    specs.push_back({n("input_layernorm.weight"), {C}, true, false});
    specs.push_back({n("self_attn.q_proj.weight"), {Q, C}, false, false});
    specs.push_back({n("self_attn.k_proj.weight"), {K, C}, false, false});
    specs.push_back({n("self_attn.v_proj.weight"), {K, C}, false, false});
    if (cfg.qkv_bias) {
      specs.push_back({n("self_attn.q_proj.bias"), {Q}, false, true});
      specs.push_back({n("self_attn.k_proj.bias"), {K}, false, true});
      specs.push_back({n("self_attn.v_proj.bias"), {K}, false, true});
    }
    specs.push_back({n("self_attn.o_proj.weight"), {C, Q}, false, false});
    specs.push_back({n("post_attention_layernorm.weight"), {C}, true, false});
    specs.push_back({n("mlp.gate_proj.weight"), {F, C}, false, false});
    specs.push_back({n("mlp.up_proj.weight"), {F, C}, false, false});
    specs.push_back({n("mlp.down_proj.weight"), {C, F}, false, false});
  }
  specs.push_back({"model.norm.weight", {C}, true, false});
  if (!cfg.tie_embeddings) specs.push_back({"lm_head.weight", {V, C}, false, false});

  std::vector<Buffer> bufs;
  std::vector<SafeTensorWrite> writes;
  bufs.reserve(specs.size());
  for (size_t i = 0; i < specs.size(); ++i) {
    const auto& s = specs[i];
    int64_t n = 1;
    for (auto d : s.shape) n *= d;
    bufs.emplace_back(size_t(dtype_nbytes(o.dtype, n)));
    if (s.is_norm) fill_const(bufs.back().data(), o.dtype, n, 1.0f);
    else if (s.is_bias) fill_const(bufs.back().data(), o.dtype, n, 0.0f);
    else fill_normal(bufs.back().data(), o.dtype, n, std, o.seed, uint64_t(i));
    writes.push_back({s.name, o.dtype, s.shape, bufs.back().data()});
  }
  safetensors_write(out_dir + "/model.safetensors", writes, {{"format", "pt"}});

  j["torch_dtype"] = torch_dtype_name(o.dtype);
  const std::string cj = j.dump(2) + "\n";
  write_file_atomic(out_dir + "/config.json", cj.data(), cj.size());

  // Tokenizer files beside the config come along, so the folder is a complete model.
  const std::string src_dir = config_path.substr(0, config_path.find_last_of('/') == std::string::npos ? 0 : config_path.find_last_of('/'));
  for (const char* f : {"tokenizer.json", "tokenizer.model", "tokenizer_config.json", "special_tokens_map.json",
                        "generation_config.json"}) {
    const std::string src = (src_dir.empty() ? std::string(".") : src_dir) + "/" + f;
    if (!path_exists(src)) continue;
    const std::string data = read_text_file(src);
    write_file_atomic(out_dir + "/" + f, data.data(), data.size());
  }
  log_info("wrote {} ({} tensors, {:.1f}M parameters, {})", out_dir, specs.size(), double(cfg.n_params()) / 1e6,
           dtype_name(o.dtype));
}

}  // namespace lora
