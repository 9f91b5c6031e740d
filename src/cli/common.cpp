// Shared CLI flags and model loading for the inference subcommands.
#include "cli/common.h"

#include <algorithm>

#include <omp.h>

#include "core/error.h"
#include "core/log.h"
#include "core/timer.h"
#include "cpu/cpu_ops.h"
#include "io/chat_template.h"
#include "train/adapter_fuse.h"
#include "train/adapter_io.h"

namespace lora::cli {

void add_model_flags(CLI::App* cmd, ModelFlags& f, bool required) {
  auto* m = cmd->add_option("--model,-m", f.model, "Model: a Hugging Face folder (config.json + *.safetensors) or a .gguf file");
  if (required) m->required();
  cmd->add_option("--chat-template", f.chat_template,
                  "Override the chat template: a built-in name (chatml, zephyr, llama2, llama3, mistral) or a Jinja file");
  cmd->add_option("--max-kv-size", f.max_kv_size, "KV cache size in tokens (0 = the model's context length, at most 8192 unless set)")
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("--threads,-t", f.threads, "CPU threads (0 = all cores)")->check(CLI::NonNegativeNumber);
  add_device_flag(cmd, f.device);
  cmd->add_option("--quantize", f.quantize,
                  "Quantize the weights at load (q8_0, q4_0, q4_k, ...; llama.cpp's blocks). Quantized GGUFs stay quantized");
}

void add_adapter_flag(CLI::App* cmd, ModelFlags& f) {
  cmd->add_option("--adapter-path", f.adapter_path, "Apply this adapter: an mlx-lm or PEFT folder, or a GGUF-LoRA .gguf file");
}

void add_sampling_flags(CLI::App* cmd, SamplingFlags& f) {
  cmd->add_option("--temp", f.temp, "Sampling temperature (0 = greedy)");
  cmd->add_option("--top-p", f.top_p, "Nucleus sampling: keep the smallest set of tokens with this total probability");
  cmd->add_option("--top-k", f.top_k, "Keep only the k most likely tokens (0 = off)");
  cmd->add_option("--min-p", f.min_p, "Drop tokens less likely than min-p times the most likely one (0 = off)");
  cmd->add_option("--repetition-penalty", f.repetition_penalty, "Penalty for tokens seen in the last 64 (1 = off)");
  cmd->add_option("--seed", f.seed, "Random seed for sampling");
}

void check_sampling_flags(const SamplingFlags& f) {
  if (!(f.temp >= 0)) fail_input("--temp", fmt::format("{} is negative", f.temp), "use 0 for greedy decoding or a positive temperature");
  if (!(f.top_p > 0 && f.top_p <= 1)) fail_input("--top-p", fmt::format("{} is outside (0, 1]", f.top_p), "use 1 to turn it off");
  if (f.top_k < 0) fail_input("--top-k", fmt::format("{} is negative", f.top_k), "use 0 to turn it off");
  if (!(f.min_p >= 0 && f.min_p <= 1)) fail_input("--min-p", fmt::format("{} is outside [0, 1]", f.min_p), "use 0 to turn it off");
  if (!(f.repetition_penalty > 0)) fail_input("--repetition-penalty", "must be positive", "use 1 to turn it off");
}

SamplerParams sampler_params(const SamplingFlags& f) {
  SamplerParams p;
  p.temp = f.temp;
  p.top_p = f.top_p;
  p.top_k = f.top_k;
  p.min_p = f.min_p;
  p.repetition_penalty = f.repetition_penalty;
  p.seed = f.seed;
  return p;
}

void apply_threads(int threads) {
  if (threads > 0) omp_set_num_threads(threads);
}

std::unique_ptr<Loaded> load_for_inference(const ModelFlags& f) {
  apply_threads(f.threads);
  auto L = std::make_unique<Loaded>();
  Timer t;
  L->backend = backend_open(f.device);
  log_debug("device: {}", L->backend.description);
  L->model = model_load(f.model, backend_load_options(L->backend, parse_quantize_flag(f.quantize)));
  if (!f.adapter_path.empty()) {
    // Fusing W' = W + scale·BᵀAᵀ once lets the inference session run unchanged.
    const Adapter a = adapter_load(f.adapter_path, L->model);
    L->model = adapter_fuse(L->model, a);
    log_debug("applied adapter {} ({} tensors)", f.adapter_path, a.params.size());
  }
  L->tok = tokenizer_load(f.model);
  if (L->tok->vocab_size() > L->model.cfg.vocab)
    fail_input(f.model, fmt::format("the tokenizer has {} tokens but the model's vocabulary is {}", L->tok->vocab_size(), L->model.cfg.vocab),
               "the tokenizer files do not belong to these weights");
  if (!f.chat_template.empty()) L->prompt.chat_template = chat_template_resolve(f.chat_template);
  // The cache is allocated up front: cap the default so a 128K-context model does not reserve tens of GB.
  constexpr int64_t kDefaultMaxKv = 8192;
  int64_t n_ctx = std::min(L->model.cfg.max_pos, kDefaultMaxKv);
  if (f.max_kv_size > 0) {
    if (f.max_kv_size > L->model.cfg.max_pos)
      fail_input("--max-kv-size", fmt::format("{} exceeds the model's context length of {}", f.max_kv_size, L->model.cfg.max_pos),
                 "RoPE positions beyond the trained context are not supported; use a smaller value");
    n_ctx = f.max_kv_size;
  }
  L->model = L->backend.place(L->model);
  L->session = std::make_unique<LlamaSession>(L->model, *L->backend.ops, n_ctx);
  log_debug("loaded {} in {:.2f}s", f.model, t.seconds());
  return L;
}

}  // namespace lora::cli
