// Text generation: prompt building (chat template as mlx-lm applies it), prefill, decode loop with
// streaming UTF-8-safe output, and the statistics mlx-lm prints in its footer.
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "io/chat_template.h"
#include "io/tokenizer.h"
#include "infer/sampler.h"
#include "model/llama.h"

namespace lora {

struct PromptOptions {
  bool ignore_chat_template = false;
  std::string chat_template;  // override (source text); empty = the tokenizer's own
  std::string system_prompt;
};

// The token ids for one user prompt: through the chat template (with a generation prompt) when the
// tokenizer has one and it is not ignored, else the plain encoding (with BOS if the tokenizer adds it).
std::vector<int32_t> prompt_tokens(const Tokenizer& tok, const std::string& prompt, const PromptOptions& o);
// The same for a whole conversation (chat). Requires a template (the tokenizer's or the override).
std::vector<int32_t> chat_tokens(const Tokenizer& tok, const std::vector<ChatMessage>& messages,
                                 const PromptOptions& o);

struct GenerateParams {
  int64_t max_tokens = 100;
  SamplerParams sampling;
};

struct GenerateStats {
  int64_t prompt_tokens = 0;
  double prompt_seconds = 0;
  int64_t gen_tokens = 0;
  double gen_seconds = 0;  // from the first generated token's logits to the last token
  bool hit_context_limit = false;
  std::string stop_reason;  // "eos", "length", "context", "callback"
  std::vector<int32_t> tokens;  // generated ids (including a final stop token if one was sampled)
  double prompt_tps() const { return prompt_seconds > 0 ? prompt_tokens / prompt_seconds : 0; }
  double gen_tps() const { return gen_seconds > 0 ? gen_tokens / gen_seconds : 0; }
};

// Feeds `prompt` and samples up to max_tokens. `cached` lists the token ids the session's KV cache
// holds (empty for a fresh session); the longest common prefix with `prompt` is reused, the rest is
// recomputed, and `cached` is updated to what the cache holds afterwards (multi-turn chat). on_text receives decoded text pieces as they
// become complete UTF-8; returning false stops generation.
GenerateStats generate(LlamaSession& session, std::vector<int32_t>& cached, const Tokenizer& tok,
                       const std::vector<int32_t>& prompt,
                       const GenerateParams& params, const std::function<bool(const std::string&)>& on_text);

// mlx-lm's footer lines ("Prompt: N tokens, X tokens-per-sec" ...), peak memory included.
std::string generate_footer(const GenerateStats& s);

}  // namespace lora
