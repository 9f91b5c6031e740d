// A small Jinja2-subset interpreter for chat templates (used by io/chat_template.cpp).
// It reproduces jinja2 3.1 as transformers configures it (ImmutableSandboxedEnvironment with
// trim_blocks, lstrip_blocks, loopcontrols; raise_exception, strftime_now, namespace, dict; tojson
// with ensure_ascii=False). Pieces: jinja_lexer (tokens, whitespace control), jinja_parser (syntax
// tree), jinja_eval (statements and expressions), jinja_builtins/jinja_filters (lookup rules,
// operators, methods, filters, tests), jinja_value (Python value semantics).
// Errors are lora::Error naming the template, line and column: syntax errors at parse time,
// runtime errors (raise_exception, type errors, undefined access) at render time.
#pragma once
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

#include "io/jinja_ast.h"
#include "io/jinja_value.h"

namespace lora::jinja {

using Vars = std::vector<std::pair<std::string, Value>>;

// Renders a parsed template with `vars` as its context (on top of the globals).
std::string render(const Template& tpl, const Vars& vars);

// Convenience: parse + render.
std::string render_string(const std::string& source, const Vars& vars, const std::string& name = "template");

// JSON -> Value (objects keep their key order when given an ordered_json).
Value value_from_json(const nlohmann::ordered_json& j);

}  // namespace lora::jinja
