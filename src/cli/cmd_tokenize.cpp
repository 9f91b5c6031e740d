// `lora tokenize`: prints the token ids a model receives for a text given as a plain prompt (BOS
// included when the tokenizer adds one, special tokens in the text recognised), space-separated.
// Works on a folder or GGUF that holds only tokenizer files.
#include <cstdio>
#include <iostream>
#include <iterator>

#include "cli/common.h"
#include "core/error.h"

namespace lora::cli {

namespace {
struct TokenizeFlags {
  std::string model;
  std::string text;
  bool has_text = false;
  bool no_special = false;
  bool pieces = false;
};

int run_tokenize(const TokenizeFlags& f) {
  std::string text = f.text;
  if (!f.has_text || text == "-") text.assign(std::istreambuf_iterator<char>(std::cin), std::istreambuf_iterator<char>());
  auto tok = tokenizer_load(f.model);
  const auto ids = tok->encode(text, /*add_special=*/!f.no_special, /*parse_special=*/true);
  std::string out;
  for (size_t i = 0; i < ids.size(); ++i) {
    if (i) out += ' ';
    out += std::to_string(ids[i]);
    if (f.pieces) out += ":" + tok->token_bytes(ids[i]);
  }
  std::puts(out.c_str());
  return 0;
}
}  // namespace

void register_tokenize(CLI::App& app, Action& action) {
  auto f = std::make_shared<TokenizeFlags>();
  auto* cmd = app.add_subcommand("tokenize", "Print the token ids of a text (as a plain prompt)");
  cmd->add_option("--model,-m", f->model, "Model folder, tokenizer folder or .gguf file")->required();
  cmd->add_option("--text", f->text, "Text to tokenize ('-' or absent: read standard input)")
      ->each([f](const std::string&) { f->has_text = true; });
  cmd->add_flag("--no-special", f->no_special, "Do not add BOS/EOS");
  cmd->add_flag("--pieces", f->pieces, "Print id:piece pairs");
  cmd->callback([f, &action] { action = [f] { return run_tokenize(*f); }; });
}

}  // namespace lora::cli
