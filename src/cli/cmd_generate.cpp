// `lora generate`: mlx_lm.generate's flags. Streams the text to stdout; the footer (prompt and
// generation tokens/s, peak memory) goes to stderr.
#include <cstdio>
#include <iostream>
#include <iterator>

#include "cli/common.h"
#include "core/error.h"

namespace lora::cli {

namespace {
struct GenerateFlags {
  ModelFlags model;
  SamplingFlags sampling;
  std::string prompt = "hello";
  std::string system_prompt;
  int64_t max_tokens = 100;
  bool ignore_chat_template = false;
  bool verbose = true;
};

int run_generate(const GenerateFlags& f) {
  check_sampling_flags(f.sampling);
  if (f.max_tokens < 0) fail_input("--max-tokens", "is negative", "give the number of tokens to generate");
  std::string prompt = f.prompt;
  if (prompt == "-") {
    prompt.assign(std::istreambuf_iterator<char>(std::cin), std::istreambuf_iterator<char>());
    if (prompt.empty()) fail_input("--prompt -", "standard input was empty", "pipe the prompt in, or pass --prompt TEXT");
  }
  auto L = load_for_inference(f.model);
  L->prompt.ignore_chat_template = f.ignore_chat_template;
  L->prompt.system_prompt = f.system_prompt;
  const auto ids = prompt_tokens(*L->tok, prompt, L->prompt);

  GenerateParams gp;
  gp.max_tokens = f.max_tokens;
  gp.sampling = sampler_params(f.sampling);
  if (f.verbose) std::fputs("==========\n", stdout);
  std::vector<int32_t> cached;
  const GenerateStats st = generate(*L->session, cached, *L->tok, ids, gp, [](const std::string& piece) {
    std::fwrite(piece.data(), 1, piece.size(), stdout);
    std::fflush(stdout);
    return true;
  });
  std::fputs("\n", stdout);
  std::fflush(stdout);
  if (st.hit_context_limit)
    std::fprintf(stderr, "note: stopped at the KV cache limit of %lld tokens (--max-kv-size)\n",
                 static_cast<long long>(L->session->n_ctx()));
  if (f.verbose) std::fputs(generate_footer(st).c_str(), stderr);
  return 0;
}
}  // namespace

void register_generate(CLI::App& app, Action& action) {
  auto f = std::make_shared<GenerateFlags>();
  auto* cmd = app.add_subcommand("generate", "Generate text from a prompt (mlx_lm.generate's flags)");
  add_model_flags(cmd, f->model);
  add_adapter_flag(cmd, f->model);
  cmd->add_option("--prompt,-p", f->prompt, "Prompt text ('-' reads standard input)");
  cmd->add_option("--system-prompt", f->system_prompt, "System message for the chat template");
  cmd->add_option("--max-tokens", f->max_tokens, "Maximum number of tokens to generate");
  add_sampling_flags(cmd, f->sampling);
  cmd->add_flag("--ignore-chat-template", f->ignore_chat_template, "Use the raw prompt, without the model's chat template");
  cmd->add_flag("!--quiet,!-q", f->verbose, "Print only the generated text (no separators, no footer)");
  cmd->callback([f, &action] { action = [f] { return run_generate(*f); }; });
}

}  // namespace lora::cli
