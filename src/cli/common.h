// Pieces shared by the subcommands: the model/tokenizer loading options and the sampling flags, each
// registered on a CLI11 subcommand with its default shown in --help.
#pragma once
#include <CLI/CLI.hpp>

#include <functional>
#include <memory>
#include <string>

#include "cli/backend.h"
#include "infer/generate.h"
#include "io/tokenizer.h"
#include "model/model.h"

namespace lora::cli {

// The action a subcommand runs after parsing; returns the exit code.
using Action = std::function<int()>;

struct ModelFlags {
  std::string model;
  std::string chat_template;  // NAME|FILE
  int64_t max_kv_size = 0;    // 0 = the model's context length
  int threads = 0;            // 0 = all cores
  std::string adapter_path;   // a trained adapter folder to apply (fused into the weights); empty = none
  std::string device = "auto";  // --device
  std::string quantize;         // --quantize: quantize the weights at load ("" = as stored)
};
void add_model_flags(CLI::App* cmd, ModelFlags& f, bool required = true);
// --adapter-path for generate/chat.
void add_adapter_flag(CLI::App* cmd, ModelFlags& f);

struct SamplingFlags {
  float temp = 0.0f;
  float top_p = 1.0f;
  int top_k = 0;
  float min_p = 0.0f;
  float repetition_penalty = 1.0f;
  uint64_t seed = 0;
};
void add_sampling_flags(CLI::App* cmd, SamplingFlags& f);
SamplerParams sampler_params(const SamplingFlags& f);
// Validates ranges (temp >= 0, 0 < top_p <= 1, ...); lora::Error naming the flag.
void check_sampling_flags(const SamplingFlags& f);

// Applies --threads (OpenMP and OpenBLAS).
void apply_threads(int threads);

// Loaded model + tokenizer + session for generate/chat.
struct Loaded {
  Backend backend;
  Model model;  // on the backend's device
  std::unique_ptr<Tokenizer> tok;
  std::unique_ptr<LlamaSession> session;
  PromptOptions prompt;
};
std::unique_ptr<Loaded> load_for_inference(const ModelFlags& f);

void register_generate(CLI::App& app, Action& action);
void register_chat(CLI::App& app, Action& action);
void register_tokenize(CLI::App& app, Action& action);
void register_init(CLI::App& app, Action& action);
void register_data(CLI::App& app, Action& action);
void register_train(CLI::App& app, Action& action);
void register_fuse(CLI::App& app, Action& action);
void register_convert(CLI::App& app, Action& action);
void register_bench(CLI::App& app, Action& action);

}  // namespace lora::cli
