// Values of the Jinja-subset interpreter (io/jinja*.cpp), with Python's semantics where chat
// templates can observe them: str()/repr() of every type, truthiness, ==/< across int/float/bool,
// Python float repr, json.dumps as transformers' tojson calls it, and UTF-8 strings measured,
// indexed and sliced by code point (len('é') == 1).
// Lists, dicts and namespaces are shared by reference, as in Python; only namespaces are ever
// mutated (`{% set ns.x = ... %}`), because transformers renders in an ImmutableSandboxedEnvironment.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace lora::jinja {

// A runtime error inside the interpreter: `type` is the Python exception name that Jinja would raise
// (TypeError, UndefinedError, TemplateError, ...). The evaluator adds the template position.
class Exception : public std::runtime_error {
 public:
  Exception(std::string type, const std::string& msg) : std::runtime_error(msg), type_(std::move(type)) {}
  const std::string& type() const { return type_; }

 private:
  std::string type_;
};
[[noreturn]] void throw_error(const std::string& type, const std::string& msg);

enum ValueKind {
  VK_UNDEFINED,  // Jinja's Undefined: renders "", is falsy, iterates empty; most other uses raise
  VK_NONE,
  VK_BOOL,
  VK_INT,
  VK_FLOAT,
  VK_STRING,
  VK_LIST,
  VK_TUPLE,
  VK_DICT,
  VK_NAMESPACE,  // jinja2.utils.Namespace: attribute access, assignable with {% set ns.a = ... %}
  VK_OBJECT,     // read-only attribute bag: the `loop` variable
  VK_FUNCTION,   // globals, bound methods, macros
};

struct Value;
struct Dict;
struct Args;
struct Function {
  std::string name;
  std::function<Value(Args&)> call;
};

struct Value {
  ValueKind kind = VK_UNDEFINED;
  bool b = false;
  int64_t i = 0;
  double f = 0;
  std::string s;                             // VK_STRING; VK_UNDEFINED: message raised when it is used
  std::shared_ptr<std::vector<Value>> list;  // VK_LIST, VK_TUPLE
  std::shared_ptr<Dict> dict;                // VK_DICT, VK_NAMESPACE, VK_OBJECT
  std::shared_ptr<Function> fn;              // VK_FUNCTION

  static Value undefined(std::string msg) {
    Value v;
    v.s = std::move(msg);
    return v;
  }
  static Value none() { return make(VK_NONE); }
  static Value boolean(bool x) {
    Value v = make(VK_BOOL);
    v.b = x;
    return v;
  }
  static Value integer(int64_t x) {
    Value v = make(VK_INT);
    v.i = x;
    return v;
  }
  static Value floating(double x) {
    Value v = make(VK_FLOAT);
    v.f = x;
    return v;
  }
  static Value string(std::string x) {
    Value v = make(VK_STRING);
    v.s = std::move(x);
    return v;
  }
  static Value new_list(std::vector<Value> items = {}, bool tuple = false);
  static Value new_dict(ValueKind kind = VK_DICT);
  static Value function(std::string name, std::function<Value(Args&)> call);

  bool is_undefined() const { return kind == VK_UNDEFINED; }
  bool is_none() const { return kind == VK_NONE; }
  bool is_string() const { return kind == VK_STRING; }
  bool is_seq() const { return kind == VK_LIST || kind == VK_TUPLE; }
  bool is_number() const { return kind == VK_INT || kind == VK_FLOAT || kind == VK_BOOL; }
  bool is_mapping() const { return kind == VK_DICT; }

 private:
  static Value make(ValueKind k) {
    Value v;
    v.kind = k;
    return v;
  }
};

// Insertion-ordered dict with Python key equality (1 == 1.0 == True). Chat-template dicts are
// small, so lookup is a linear scan.
struct Dict {
  std::vector<std::pair<Value, Value>> items;
  const Value* find(const Value& key) const;
  const Value* find(const std::string& key) const;
  void set(const Value& key, Value value);
};

// Call arguments: positional then keyword, as written.
struct Args {
  std::vector<Value> pos;
  std::vector<std::pair<std::string, Value>> kw;
  // The argument named `name` at position `index` (keyword wins), or nullptr.
  const Value* get(size_t index, const std::string& name) const;
  // Raises TypeError when more than `max_pos` positional or an unknown keyword is given.
  void check(const std::string& fn, size_t max_pos, const std::vector<std::string>& names) const;
};

// ---- Python semantics --------------------------------------------------------------------------
std::string type_name(const Value& v);     // Python's type name: "str", "NoneType", "dict", ...
std::string to_str(const Value& v);        // str(v); Undefined -> ""
std::string to_repr(const Value& v);       // repr(v)
std::string float_repr(double x);          // repr(float): "1.0", "0.1", "1e+16", "inf"
bool truthy(const Value& v);
bool py_equal(const Value& a, const Value& b);
bool py_less(const Value& a, const Value& b);  // TypeError on unorderable types
[[noreturn]] void raise_undefined(const Value& v);
// Raises UndefinedError when v is undefined (arithmetic, calls, attribute access).
inline void require_defined(const Value& v) {
  if (v.is_undefined()) raise_undefined(v);
}
// Python iteration: list/tuple items, dict keys, string characters; Undefined -> empty.
std::vector<Value> iterate(const Value& v);
// len(): string code points, list, dict; Undefined -> 0.
int64_t py_len(const Value& v);

// json.dumps(v, ensure_ascii, indent, separators, sort_keys). `indent` empty = single line;
// otherwise the per-level indent string (int n means n spaces).
struct JsonOptions {
  std::optional<std::string> indent;
  bool sort_keys = false;
  bool ensure_ascii = false;
  std::optional<std::pair<std::string, std::string>> separators;
};
std::string json_dumps(const Value& v, const JsonOptions& opt);

// ---- UTF-8 helpers (strings are UTF-8 bytes; Python indexes code points) ------------------------
std::vector<uint32_t> utf8_decode(const std::string& s);  // invalid bytes decode as themselves
std::string utf8_encode(const std::vector<uint32_t>& cps, size_t begin = 0, size_t end = SIZE_MAX);
void utf8_append(std::string& out, uint32_t cp);
bool py_isspace(uint32_t cp);
// str.strip/lstrip/rstrip: with no chars, Python whitespace; else any code point of chars.
std::string py_strip(const std::string& s, const std::optional<std::string>& chars, bool left, bool right);
// str.lower()/upper() for ASCII, Latin-1/Extended-A, Greek and Cyrillic (other scripts unchanged).
std::string ascii_lower(std::string s);
std::string ascii_upper(std::string s);
uint32_t cp_lower(uint32_t c);
uint32_t cp_upper(uint32_t c);

}  // namespace lora::jinja
