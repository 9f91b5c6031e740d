// Chat templates: renders a tokenizer_config.json `chat_template` (Jinja) as transformers does
// (trim_blocks, lstrip_blocks, raise_exception, strftime_now), through a small Jinja-subset interpreter.
// Built-in named templates: chatml, zephyr (TinyLlama), llama2, llama3, mistral.
#pragma once
#include <string>
#include <vector>

namespace lora {

struct ChatMessage {
  std::string role;     // system | user | assistant | tool
  std::string content;
};

struct ChatRenderOptions {
  bool add_generation_prompt = true;
  std::string bos_token, eos_token;
};

// lora::Error (naming `template_name` and the line/column) for syntax errors or raise_exception.
std::string chat_render(const std::string& template_src, const std::vector<ChatMessage>& messages,
                        const ChatRenderOptions& opts, const std::string& template_name = "chat_template");
// Source of a built-in template by name, or "" when unknown.
std::string chat_builtin_template(const std::string& name);
// --chat-template NAME|FILE: a built-in name, else the contents of FILE (error when neither).
std::string chat_template_resolve(const std::string& name_or_file);

}  // namespace lora
