// Lexer of the Jinja-subset interpreter: template source -> tokens, reproducing jinja2 3.1's lexer
// with transformers' settings (trim_blocks, lstrip_blocks, keep_trailing_newline=False):
// newlines normalised to \n and one trailing newline dropped; {%- -%} strip all whitespace;
// {%+ +%} opt out of lstrip/trim; `}}`/`%}` only close a tag when brackets are balanced; string
// literals decoded with Python's unicode-escape rules; {% raw %} passed through as data.
#pragma once
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace lora::jinja {

enum TokenType {
  TK_DATA,         // template text outside tags
  TK_VAR_BEGIN,    // {{
  TK_VAR_END,      // }}
  TK_BLOCK_BEGIN,  // {%
  TK_BLOCK_END,    // %}
  TK_NAME,
  TK_STRING,  // text holds the decoded value
  TK_INT,
  TK_FLOAT,
  TK_OP,  // text holds the operator: + - * / // % ** ~ ( ) [ ] { } | . , : ; = == != < <= > >=
  TK_EOF,
};

struct Token {
  TokenType type = TK_EOF;
  std::string text;
  int64_t ival = 0;
  double fval = 0;
  size_t pos = 0;  // byte offset in Source::text, for line/column in errors
};

// A template's normalised text and its name (for error messages).
struct Source {
  std::string name;
  std::string text;
  Source(std::string name_, const std::string& raw);  // normalises newlines as Jinja does
  std::pair<int, int> line_col(size_t pos) const;     // 1-based
};

// Throws lora::Error "<name>:<line>:<col>: syntax error: <msg>" with a hint.
[[noreturn]] void syntax_error(const Source& src, size_t pos, const std::string& msg, const std::string& hint = "");

std::vector<Token> tokenize(const Source& src);

// Human name of a token for messages ("end of print statement", "name 'foo'", ...), as Jinja says.
std::string token_describe(const Token& t);

}  // namespace lora::jinja
