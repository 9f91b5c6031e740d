// Built-ins of the Jinja-subset interpreter: filters, tests, Python methods of str/dict/list,
// attribute/item lookup with Jinja's rules, and the globals transformers installs (raise_exception,
// strftime_now, namespace, dict, range). Internal to io/jinja*.cpp.
#pragma once
#include <string>

#include "io/jinja_value.h"

namespace lora::jinja {

using FilterFn = Value (*)(const Value& input, Args& args);
using TestFn = bool (*)(const Value& v, Args& args);

// nullptr when the name is unknown. Jinja-known names that lora does not implement resolve to a
// function raising "not supported", so templates that merely mention them still parse.
FilterFn find_filter(const std::string& name);
TestFn find_test(const std::string& name);

// Jinja's environment.getattr: Python attribute first (methods, namespace fields, loop fields),
// then item. Missing -> Undefined (only attribute access on Undefined itself raises).
Value get_attr(const Value& obj, const std::string& name);
// Jinja's environment.getitem: item first, then attribute for string keys; missing -> Undefined.
Value get_item(const Value& obj, const Value& key);
// Python slice obj[start:stop:step] on lists, tuples and strings (null parts = None).
Value get_slice(const Value& obj, const Value* start, const Value* stop, const Value* step);

Value call_value(const Value& fn, Args& args);

// The globals every render sees (transformers' environment).
void add_globals(Dict& globals);

// Case helpers shared with the filters: str.capitalize(), str.title(), Jinja's |title.
std::string py_capitalize(const std::string& s);
std::string py_title(const std::string& s);
std::string jinja_title(const std::string& s);

// Python binary operators: + - * / // % ** on numbers, strings and lists.
Value binary_op(const std::string& op, const Value& a, const Value& b);

}  // namespace lora::jinja
