// Syntax tree of the Jinja-subset interpreter, produced by jinja_parser.cpp and walked by
// jinja_eval.cpp. Node positions are byte offsets into the template's normalised Source, turned
// into line:column only when an error is reported.
#pragma once
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "io/jinja_lexer.h"
#include "io/jinja_value.h"

namespace lora::jinja {

enum ExprKind {
  E_CONST,    // value
  E_NAME,     // name
  E_GETATTR,  // kids[0].name
  E_GETITEM,  // kids[0][kids[1]]
  E_SLICE,    // kids[0][kids[1]:kids[2]:kids[3]] (missing parts are null)
  E_CALL,     // kids[0](kids[1..], kwargs)
  E_FILTER,   // kids[0] | name(kids[1..], kwargs); kids[0] null inside {% filter %} / {% set %} blocks
  E_TEST,     // kids[0] is name(kids[1..], kwargs)
  E_NOT,
  E_NEG,
  E_POS,
  E_BINOP,    // kids[0] name kids[1], name in + - * / // % ** ~
  E_AND,
  E_OR,
  E_COMPARE,  // kids[0] ops[0] kids[1] ops[1] kids[2] ...  (ops: == != < <= > >= in notin)
  E_COND,     // kids[1] if kids[0] else kids[2] (kids[2] may be null)
  E_LIST,
  E_TUPLE,
  E_DICT,     // kids: k0, v0, k1, v1, ...
};

struct Expr;
using ExprPtr = std::shared_ptr<Expr>;
struct Expr {
  ExprKind kind = E_CONST;
  size_t pos = 0;
  Value value;
  std::string name;
  std::vector<ExprPtr> kids;
  std::vector<std::string> ops;
  std::vector<std::pair<std::string, ExprPtr>> kwargs;
  ExprPtr dyn_args, dyn_kwargs;  // *args, **kwargs in calls
};

enum StmtKind {
  S_DATA,       // text
  S_PRINT,      // {{ expr }}
  S_IF,         // expr; body; else_body (an elif is a nested S_IF alone in else_body)
  S_FOR,        // target in expr [if cond]; body; else_body
  S_SET,        // target = expr (target: E_NAME or E_TUPLE of E_NAME)
  S_SET_NS,     // name.attr = expr
  S_SET_BLOCK,  // {% set target | filters %} body {% endset %}
  S_MACRO,      // name(params=defaults) body
  S_BREAK,
  S_CONTINUE,
  S_WITH,       // {% with a = 1, b = 2 %} body
  S_FILTER,     // {% filter f %} body
  S_BLOCK,      // {% block %} / {% generation %}: renders its body in place
};

struct Stmt;
using StmtPtr = std::shared_ptr<Stmt>;
struct Stmt {
  StmtKind kind = S_DATA;
  size_t pos = 0;
  std::string text;         // S_DATA; S_SET_NS / S_MACRO name
  std::string attr;         // S_SET_NS attribute
  ExprPtr expr;             // S_PRINT, S_IF test, S_FOR iterable, S_SET value, S_FILTER/S_SET_BLOCK filters
  ExprPtr target;           // S_FOR, S_SET, S_SET_BLOCK
  ExprPtr cond;             // S_FOR `if` filter
  std::vector<StmtPtr> body, else_body;
  std::vector<std::string> params;  // S_MACRO parameters; S_WITH names
  std::vector<ExprPtr> defaults;    // S_MACRO defaults (null = required); S_WITH values
};

struct Template {
  std::shared_ptr<Source> source;
  std::vector<StmtPtr> body;
};

// Parses a template; lora::Error (name:line:col, with a hint) on any syntax error.
std::shared_ptr<Template> parse_template(const std::string& text, const std::string& name);

// Names of the filters and tests Jinja knows; unknown names are a compile-time error as in Jinja.
bool filter_exists(const std::string& name);
bool test_exists(const std::string& name);

}  // namespace lora::jinja
