// Generation loop (see generate.h).
#include "infer/generate.h"

#include <fmt/format.h>

#include <algorithm>

#include "core/error.h"
#include "core/log.h"
#include "core/timer.h"

namespace lora {

namespace {
std::string effective_template(const Tokenizer& tok, const PromptOptions& o) {
  return o.chat_template.empty() ? tok.chat_template : o.chat_template;
}

std::vector<int32_t> render_and_encode(const Tokenizer& tok, const std::string& tmpl,
                                       const std::vector<ChatMessage>& messages) {
  ChatRenderOptions ro;
  ro.add_generation_prompt = true;
  ro.bos_token = tok.bos_token;
  ro.eos_token = tok.eos_token;
  const std::string text = chat_render(tmpl, messages, ro);
  // As transformers' apply_chat_template: the template writes BOS itself, so no special tokens are added.
  return tok.encode(text, /*add_special=*/false, /*parse_special=*/true);
}
}  // namespace

std::vector<int32_t> prompt_tokens(const Tokenizer& tok, const std::string& prompt, const PromptOptions& o) {
  const std::string tmpl = effective_template(tok, o);
  if (o.ignore_chat_template || tmpl.empty()) {
    std::string text = prompt;
    if (!o.system_prompt.empty()) text = o.system_prompt + "\n" + prompt;
    return tok.encode(text, /*add_special=*/true, /*parse_special=*/true);
  }
  std::vector<ChatMessage> messages;
  if (!o.system_prompt.empty()) messages.push_back({"system", o.system_prompt});
  messages.push_back({"user", prompt});
  return render_and_encode(tok, tmpl, messages);
}

std::vector<int32_t> chat_tokens(const Tokenizer& tok, const std::vector<ChatMessage>& messages,
                                 const PromptOptions& o) {
  const std::string tmpl = effective_template(tok, o);
  if (tmpl.empty())
    fail_input("chat", "the model has no chat template", "pass --chat-template NAME|FILE (built-ins: chatml, zephyr, llama2, llama3, mistral)");
  return render_and_encode(tok, tmpl, messages);
}

GenerateStats generate(LlamaSession& session, std::vector<int32_t>& cached, const Tokenizer& tok,
                       const std::vector<int32_t>& prompt,
                       const GenerateParams& params, const std::function<bool(const std::string&)>& on_text) {
  GenerateStats st;
  if (prompt.empty()) fail_input("prompt", "is empty after tokenization", "give a non-empty prompt");
  const int64_t V = session.model().cfg.vocab;
  if (int64_t(prompt.size()) > session.n_ctx())
    fail_input("prompt", fmt::format("{} tokens do not fit the context of {} tokens", prompt.size(), session.n_ctx()),
               "shorten the prompt or raise --max-kv-size (up to the model's context length)");

  // Reuse the cached prefix (chat turns): keep the longest common prefix, but recompute at least the
  // last prompt token so we have its logits.
  if (int64_t(cached.size()) != session.cache().pos) cached.clear(), session.truncate(0);
  size_t keep = 0;
  while (keep < cached.size() && keep + 1 < prompt.size() && cached[keep] == prompt[keep]) ++keep;
  session.truncate(int64_t(keep));
  cached.assign(prompt.begin(), prompt.end());

  std::vector<float> logits(static_cast<size_t>(V));
  Timer t;
  session.forward(prompt.data() + keep, int64_t(prompt.size() - keep), logits.data());
  st.prompt_tokens = int64_t(prompt.size());
  st.prompt_seconds = t.seconds();

  Sampler sampler(params.sampling);
  std::vector<int32_t> history = prompt;
  StreamDecoder dec(tok);
  t.reset();
  st.stop_reason = "length";
  for (int64_t i = 0; i < params.max_tokens; ++i) {
    const int32_t id = sampler.sample(logits.data(), V, history);
    st.tokens.push_back(id);
    history.push_back(id);
    ++st.gen_tokens;
    if (std::find(tok.stop_ids.begin(), tok.stop_ids.end(), id) != tok.stop_ids.end() || id == tok.eos_id) {
      st.stop_reason = "eos";
      break;
    }
    const std::string piece = dec.push(id);
    if (!piece.empty() && !on_text(piece)) {
      st.stop_reason = "callback";
      break;
    }
    if (i + 1 == params.max_tokens) break;
    if (session.cache().pos >= session.n_ctx()) {
      st.stop_reason = "context";
      st.hit_context_limit = true;
      break;
    }
    session.forward(&id, 1, logits.data());
    cached.push_back(id);
  }
  const std::string rest = dec.flush();
  if (!rest.empty()) on_text(rest);
  st.gen_seconds = t.seconds();
  return st;
}

std::string generate_footer(const GenerateStats& s) {
  std::string out = "==========\n";
  out += fmt::format("Prompt: {} tokens, {:.3f} tokens-per-sec\n", s.prompt_tokens, s.prompt_tps());
  out += fmt::format("Generation: {} tokens, {:.3f} tokens-per-sec\n", s.gen_tokens, s.gen_tps());
  out += fmt::format("Peak memory: {:.3f} GB\n", double(peak_rss_bytes()) / 1e9);
  return out;
}

}  // namespace lora
