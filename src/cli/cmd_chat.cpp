// `lora chat`: an interactive multi-turn loop. Each turn re-renders the whole conversation through
// the chat template and reuses the KV cache for the common prefix, so only the new turn is computed.
// Commands: /reset clears the conversation, /exit (or end of input) quits.
#include <unistd.h>

#include <cstdio>
#include <iostream>

#include "cli/common.h"
#include "core/error.h"

namespace lora::cli {

namespace {
struct ChatFlags {
  ModelFlags model;
  SamplingFlags sampling;
  std::string system_prompt;
  int64_t max_tokens = 256;
};

int run_chat(const ChatFlags& f) {
  check_sampling_flags(f.sampling);
  auto L = load_for_inference(f.model);
  const bool tty = ::isatty(STDIN_FILENO);
  std::vector<ChatMessage> messages;
  if (!f.system_prompt.empty()) messages.push_back({"system", f.system_prompt});
  const size_t n_fixed = messages.size();
  std::vector<int32_t> cached;
  GenerateParams gp;
  gp.max_tokens = f.max_tokens;
  gp.sampling = sampler_params(f.sampling);
  std::fprintf(stderr, "[chat with %s — /reset to start over, /exit or Ctrl-D to quit]\n", f.model.model.c_str());
  std::string line;
  for (int turn = 0;; ++turn) {
    if (tty) std::fputs(">> ", stdout), std::fflush(stdout);
    if (!std::getline(std::cin, line)) break;
    if (line == "/exit" || line == "/quit") break;
    if (line == "/reset") {
      messages.resize(n_fixed);
      std::fputs("[conversation cleared]\n", stderr);
      continue;
    }
    if (line.empty()) continue;
    messages.push_back({"user", line});
    const auto ids = chat_tokens(*L->tok, messages, L->prompt);
    if (int64_t(ids.size()) >= L->session->n_ctx()) {
      std::fprintf(stderr, "error: the conversation (%zu tokens) no longer fits the context of %lld tokens; /reset to start over\n",
                   ids.size(), static_cast<long long>(L->session->n_ctx()));
      messages.pop_back();
      continue;
    }
    std::string reply;
    gp.sampling.seed = f.sampling.seed + uint64_t(turn);
    const GenerateStats st = generate(*L->session, cached, *L->tok, ids, gp, [&](const std::string& piece) {
      reply += piece;
      std::fwrite(piece.data(), 1, piece.size(), stdout);
      std::fflush(stdout);
      return true;
    });
    std::fputs("\n", stdout);
    std::fflush(stdout);
    if (st.hit_context_limit) std::fputs("[stopped: context full]\n", stderr);
    messages.push_back({"assistant", reply});
  }
  return 0;
}
}  // namespace

void register_chat(CLI::App& app, Action& action) {
  auto f = std::make_shared<ChatFlags>();
  auto* cmd = app.add_subcommand("chat", "Chat with a model interactively (multi-turn, reads standard input)");
  add_model_flags(cmd, f->model);
  add_adapter_flag(cmd, f->model);
  cmd->add_option("--system-prompt", f->system_prompt, "System message for the conversation");
  cmd->add_option("--max-tokens", f->max_tokens, "Maximum tokens per reply");
  add_sampling_flags(cmd, f->sampling);
  cmd->callback([f, &action] { action = [f] { return run_chat(*f); }; });
}

}  // namespace lora::cli
