// Python semantics of jinja::Value: str/repr, equality and ordering, float repr, json.dumps,
// and the UTF-8 code-point helpers the interpreter needs. See jinja_value.h.
#include "io/jinja_value.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdio>

namespace lora::jinja {

void throw_error(const std::string& type, const std::string& msg) { throw Exception(type, msg); }

Value Value::new_list(std::vector<Value> items, bool tuple) {
  Value v = make(tuple ? VK_TUPLE : VK_LIST);
  v.list = std::make_shared<std::vector<Value>>(std::move(items));
  return v;
}
Value Value::new_dict(ValueKind kind) {
  Value v = make(kind);
  v.dict = std::make_shared<Dict>();
  return v;
}
Value Value::function(std::string name, std::function<Value(Args&)> call) {
  Value v = make(VK_FUNCTION);
  v.fn = std::make_shared<Function>(Function{std::move(name), std::move(call)});
  return v;
}

// ---- Dict / Args --------------------------------------------------------------------------------
static bool key_equal(const Value& a, const Value& b) {
  if (a.kind == VK_STRING && b.kind == VK_STRING) return a.s == b.s;
  return py_equal(a, b);
}
const Value* Dict::find(const Value& key) const {
  for (auto& kv : items)
    if (key_equal(kv.first, key)) return &kv.second;
  return nullptr;
}
const Value* Dict::find(const std::string& key) const {
  for (auto& kv : items)
    if (kv.first.kind == VK_STRING && kv.first.s == key) return &kv.second;
  return nullptr;
}
void Dict::set(const Value& key, Value value) {
  for (auto& kv : items)
    if (key_equal(kv.first, key)) {
      kv.second = std::move(value);
      return;
    }
  items.emplace_back(key, std::move(value));
}

const Value* Args::get(size_t index, const std::string& name) const {
  for (auto& kv : kw)
    if (kv.first == name) return &kv.second;
  if (index < pos.size()) return &pos[index];
  return nullptr;
}
void Args::check(const std::string& fn, size_t max_pos, const std::vector<std::string>& names) const {
  if (pos.size() > max_pos)
    throw_error("TypeError", fn + "() takes at most " + std::to_string(max_pos) + " positional arguments (" +
                                 std::to_string(pos.size()) + " given)");
  for (auto& kv : kw)
    if (std::find(names.begin(), names.end(), kv.first) == names.end())
      throw_error("TypeError", fn + "() got an unexpected keyword argument '" + kv.first + "'");
}

// ---- UTF-8 --------------------------------------------------------------------------------------
std::vector<uint32_t> utf8_decode(const std::string& s) {
  std::vector<uint32_t> out;
  out.reserve(s.size());
  size_t i = 0, n = s.size();
  while (i < n) {
    unsigned char c = s[i];
    int len = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
    if (len == 0 || i + len > n) {
      out.push_back(c);  // invalid byte: keep it as a code point so nothing is lost
      ++i;
      continue;
    }
    uint32_t cp = len == 1 ? c : len == 2 ? (c & 0x1f) : len == 3 ? (c & 0x0f) : (c & 0x07);
    bool ok = true;
    for (int k = 1; k < len; ++k) {
      unsigned char d = s[i + k];
      if ((d & 0xc0) != 0x80) ok = false;
      cp = (cp << 6) | (d & 0x3f);
    }
    if (!ok) {
      out.push_back(c);
      ++i;
      continue;
    }
    out.push_back(cp);
    i += len;
  }
  return out;
}

void utf8_append(std::string& out, uint32_t cp) {
  if (cp < 0x80) {
    out += char(cp);
  } else if (cp < 0x800) {
    out += char(0xc0 | (cp >> 6));
    out += char(0x80 | (cp & 0x3f));
  } else if (cp < 0x10000) {
    out += char(0xe0 | (cp >> 12));
    out += char(0x80 | ((cp >> 6) & 0x3f));
    out += char(0x80 | (cp & 0x3f));
  } else {
    out += char(0xf0 | (cp >> 18));
    out += char(0x80 | ((cp >> 12) & 0x3f));
    out += char(0x80 | ((cp >> 6) & 0x3f));
    out += char(0x80 | (cp & 0x3f));
  }
}

std::string utf8_encode(const std::vector<uint32_t>& cps, size_t begin, size_t end) {
  std::string out;
  end = std::min(end, cps.size());
  for (size_t k = begin; k < end; ++k) utf8_append(out, cps[k]);
  return out;
}

bool py_isspace(uint32_t c) {
  return (c >= 9 && c <= 13) || (c >= 28 && c <= 32) || c == 0x85 || c == 0xa0 || c == 0x1680 ||
         (c >= 0x2000 && c <= 0x200a) || c == 0x2028 || c == 0x2029 || c == 0x202f || c == 0x205f || c == 0x3000;
}

std::string py_strip(const std::string& s, const std::optional<std::string>& chars, bool left, bool right) {
  std::vector<uint32_t> cps = utf8_decode(s);
  std::vector<uint32_t> set;
  if (chars) set = utf8_decode(*chars);
  auto strip_it = [&](uint32_t c) {
    return chars ? std::find(set.begin(), set.end(), c) != set.end() : py_isspace(c);
  };
  size_t b = 0, e = cps.size();
  if (left)
    while (b < e && strip_it(cps[b])) ++b;
  if (right)
    while (e > b && strip_it(cps[e - 1])) --e;
  return utf8_encode(cps, b, e);
}

// Simple (one-to-one) case mapping for ASCII, Latin-1, Latin Extended-A, Greek and Cyrillic:
// what Python's str.lower()/upper() do on those blocks, minus the few one-to-many cases (ß -> SS).
uint32_t cp_lower(uint32_t c) {
  if (c >= 'A' && c <= 'Z') return c + 32;
  if (c < 0x80) return c;
  if (c >= 0xc0 && c <= 0xde && c != 0xd7) return c + 32;
  if (c >= 0x100 && c <= 0x17f) {
    if (c == 0x130) return 'i';
    if ((c >= 0x139 && c <= 0x148) || (c >= 0x179 && c <= 0x17e)) return (c & 1) ? c + 1 : c;
    if (c == 0x178) return 0xff;
    if (c == 0x131 || c == 0x138 || c == 0x149 || c == 0x17f) return c;
    return (c & 1) ? c : c + 1;
  }
  if (c >= 0x391 && c <= 0x3a9 && c != 0x3a2) return c + 32;
  if (c >= 0x410 && c <= 0x42f) return c + 32;
  if (c >= 0x400 && c <= 0x40f) return c + 80;
  return c;
}
uint32_t cp_upper(uint32_t c) {
  if (c >= 'a' && c <= 'z') return c - 32;
  if (c < 0x80) return c;
  if (c >= 0xe0 && c <= 0xfe && c != 0xf7) return c - 32;
  if (c == 0xff) return 0x178;
  if (c == 0xb5) return 0x39c;
  if (c >= 0x100 && c <= 0x17f) {
    if (c == 0x131) return 'I';
    if ((c >= 0x139 && c <= 0x148) || (c >= 0x179 && c <= 0x17e)) return (c & 1) ? c : c - 1;
    if (c == 0x130 || c == 0x138 || c == 0x149 || c == 0x178) return c;
    if (c == 0x17f) return 'S';
    return (c & 1) ? c - 1 : c;
  }
  if (c == 0x3c2) return 0x3a3;
  if (c >= 0x3b1 && c <= 0x3c9) return c - 32;
  if (c >= 0x430 && c <= 0x44f) return c - 32;
  if (c >= 0x450 && c <= 0x45f) return c - 80;
  return c;
}
static std::string map_case(const std::string& s, uint32_t (*f)(uint32_t)) {
  bool ascii = std::all_of(s.begin(), s.end(), [](char c) { return static_cast<unsigned char>(c) < 0x80; });
  if (ascii) {
    std::string out = s;
    for (auto& c : out) c = char(f(static_cast<unsigned char>(c)));
    return out;
  }
  std::string out;
  for (uint32_t c : utf8_decode(s)) utf8_append(out, f(c));
  return out;
}
std::string ascii_lower(std::string s) { return map_case(s, cp_lower); }
std::string ascii_upper(std::string s) { return map_case(s, cp_upper); }

// ---- str / repr ---------------------------------------------------------------------------------
std::string type_name(const Value& v) {
  switch (v.kind) {
    case VK_UNDEFINED: return "Undefined";
    case VK_NONE: return "NoneType";
    case VK_BOOL: return "bool";
    case VK_INT: return "int";
    case VK_FLOAT: return "float";
    case VK_STRING: return "str";
    case VK_LIST: return "list";
    case VK_TUPLE: return "tuple";
    case VK_DICT: return "dict";
    case VK_NAMESPACE: return "Namespace";
    case VK_OBJECT: return "LoopContext";
    case VK_FUNCTION: return "function";
  }
  return "object";
}

std::string float_repr(double x) {
  if (std::isnan(x)) return "nan";
  if (std::isinf(x)) return x > 0 ? "inf" : "-inf";
  // Shortest round-trip digits, then Python's layout: fixed when -4 <= exponent < 16, else 1e+16.
  char buf[64];
  auto r = std::to_chars(buf, buf + sizeof buf, x, std::chars_format::scientific);
  std::string sci(buf, r.ptr);
  size_t epos = sci.find('e');
  std::string mant = sci.substr(0, epos);
  int exp10 = std::stoi(sci.substr(epos + 1));
  bool neg = mant[0] == '-';
  if (neg) mant.erase(0, 1);
  std::string digits;
  for (char c : mant)
    if (c != '.') digits += c;
  std::string out = neg ? "-" : "";
  if (exp10 >= -4 && exp10 < 16) {
    // repr uses 'r' format: fixed notation when -4 <= exp < 16 (Python's float_repr_style 'short').
    if (exp10 >= 0) {
      if ((int)digits.size() <= exp10 + 1) {
        out += digits + std::string(exp10 + 1 - digits.size(), '0') + ".0";
      } else {
        out += digits.substr(0, exp10 + 1) + "." + digits.substr(exp10 + 1);
      }
    } else {
      out += "0." + std::string(-exp10 - 1, '0') + digits;
    }
    return out;
  }
  out += digits.substr(0, 1);
  if (digits.size() > 1) out += "." + digits.substr(1);
  char e[16];
  std::snprintf(e, sizeof e, "e%c%02d", exp10 < 0 ? '-' : '+', std::abs(exp10));
  return out + e;
}

static bool repr_printable(uint32_t c) {
  if (c < 0x20 || (c >= 0x7f && c <= 0xa0) || c == 0xad) return false;
  if (c == 0x1680 || (c >= 0x2000 && c <= 0x200f) || (c >= 0x2028 && c <= 0x202f) || (c >= 0x205f && c <= 0x206f))
    return false;
  if (c == 0x3000 || c == 0xfeff || (c >= 0xd800 && c <= 0xf8ff) || (c >= 0xfff9 && c <= 0xfffb)) return false;
  if ((c >= 0xe0000 && c <= 0xe007f) || c >= 0xf0000) return false;
  return true;
}

static std::string repr_string(const std::string& s) {
  bool has_single = s.find('\'') != std::string::npos, has_double = s.find('"') != std::string::npos;
  char q = (has_single && !has_double) ? '"' : '\'';
  std::string out(1, q);
  for (uint32_t c : utf8_decode(s)) {
    if (c == uint32_t(q) || c == '\\') {
      out += '\\';
      out += char(c);
    } else if (c == '\n') {
      out += "\\n";
    } else if (c == '\r') {
      out += "\\r";
    } else if (c == '\t') {
      out += "\\t";
    } else if (!repr_printable(c)) {
      char buf[16];
      if (c <= 0xff)
        std::snprintf(buf, sizeof buf, "\\x%02x", c);
      else if (c <= 0xffff)
        std::snprintf(buf, sizeof buf, "\\u%04x", c);
      else
        std::snprintf(buf, sizeof buf, "\\U%08x", c);
      out += buf;
    } else {
      utf8_append(out, c);
    }
  }
  out += q;
  return out;
}

std::string to_repr(const Value& v) {
  switch (v.kind) {
    case VK_STRING: return repr_string(v.s);
    case VK_UNDEFINED: return "Undefined";
    case VK_LIST:
    case VK_TUPLE: {
      std::string out = v.kind == VK_LIST ? "[" : "(";
      for (size_t k = 0; k < v.list->size(); ++k) {
        if (k) out += ", ";
        out += to_repr((*v.list)[k]);
      }
      if (v.kind == VK_TUPLE && v.list->size() == 1) out += ",";
      return out + (v.kind == VK_LIST ? "]" : ")");
    }
    case VK_DICT: {
      std::string out = "{";
      bool first = true;
      for (auto& kv : v.dict->items) {
        if (!first) out += ", ";
        first = false;
        out += to_repr(kv.first) + ": " + to_repr(kv.second);
      }
      return out + "}";
    }
    case VK_NAMESPACE: {
      std::string out = "<Namespace {";
      bool first = true;
      for (auto& kv : v.dict->items) {
        if (!first) out += ", ";
        first = false;
        out += to_repr(kv.first) + ": " + to_repr(kv.second);
      }
      return out + "}>";
    }
    default: return to_str(v);
  }
}

std::string to_str(const Value& v) {
  switch (v.kind) {
    case VK_UNDEFINED: return "";
    case VK_NONE: return "None";
    case VK_BOOL: return v.b ? "True" : "False";
    case VK_INT: return std::to_string(v.i);
    case VK_FLOAT: return float_repr(v.f);
    case VK_STRING: return v.s;
    case VK_OBJECT: return "<LoopContext>";
    case VK_FUNCTION: return "<function " + v.fn->name + ">";
    default: return to_repr(v);
  }
}

bool truthy(const Value& v) {
  switch (v.kind) {
    case VK_UNDEFINED:
    case VK_NONE: return false;
    case VK_BOOL: return v.b;
    case VK_INT: return v.i != 0;
    case VK_FLOAT: return v.f != 0;
    case VK_STRING: return !v.s.empty();
    case VK_LIST:
    case VK_TUPLE: return !v.list->empty();
    case VK_DICT: return !v.dict->items.empty();
    default: return true;
  }
}

static double num_of(const Value& v) { return v.kind == VK_FLOAT ? v.f : v.kind == VK_BOOL ? double(v.b) : double(v.i); }

bool py_equal(const Value& a, const Value& b) {
  if (a.is_number() && b.is_number()) {
    if (a.kind != VK_FLOAT && b.kind != VK_FLOAT) return (a.kind == VK_BOOL ? a.b : a.i) == (b.kind == VK_BOOL ? b.b : b.i);
    return num_of(a) == num_of(b);
  }
  if (a.kind != b.kind) return false;
  switch (a.kind) {
    case VK_UNDEFINED:
    case VK_NONE: return true;
    case VK_STRING: return a.s == b.s;
    case VK_LIST:
    case VK_TUPLE: {
      if (a.list == b.list) return true;
      if (a.list->size() != b.list->size()) return false;
      for (size_t k = 0; k < a.list->size(); ++k)
        if (!py_equal((*a.list)[k], (*b.list)[k])) return false;
      return true;
    }
    case VK_DICT: {
      if (a.dict == b.dict) return true;
      if (a.dict->items.size() != b.dict->items.size()) return false;
      for (auto& kv : a.dict->items) {
        const Value* o = b.dict->find(kv.first);
        if (!o || !py_equal(kv.second, *o)) return false;
      }
      return true;
    }
    case VK_NAMESPACE:
    case VK_OBJECT: return a.dict == b.dict;
    case VK_FUNCTION: return a.fn == b.fn;
    default: return false;
  }
}

bool py_less(const Value& a, const Value& b) {
  require_defined(a);
  require_defined(b);
  if (a.is_number() && b.is_number()) {
    if (a.kind != VK_FLOAT && b.kind != VK_FLOAT) return (a.kind == VK_BOOL ? a.b : a.i) < (b.kind == VK_BOOL ? b.b : b.i);
    return num_of(a) < num_of(b);
  }
  if (a.kind == VK_STRING && b.kind == VK_STRING) return a.s < b.s;  // UTF-8 order == code-point order
  if (a.is_seq() && a.kind == b.kind) {
    size_t n = std::min(a.list->size(), b.list->size());
    for (size_t k = 0; k < n; ++k) {
      const Value &x = (*a.list)[k], &y = (*b.list)[k];
      if (!py_equal(x, y)) return py_less(x, y);
    }
    return a.list->size() < b.list->size();
  }
  throw_error("TypeError", "'<' not supported between instances of '" + type_name(a) + "' and '" + type_name(b) + "'");
}

void raise_undefined(const Value& v) { throw_error("UndefinedError", v.s.empty() ? "value is undefined" : v.s); }

std::vector<Value> iterate(const Value& v) {
  switch (v.kind) {
    case VK_UNDEFINED: return {};
    case VK_LIST:
    case VK_TUPLE: return *v.list;
    case VK_DICT: {
      std::vector<Value> out;
      for (auto& kv : v.dict->items) out.push_back(kv.first);
      return out;
    }
    case VK_STRING: {
      std::vector<Value> out;
      for (uint32_t c : utf8_decode(v.s)) {
        std::string ch;
        utf8_append(ch, c);
        out.push_back(Value::string(std::move(ch)));
      }
      return out;
    }
    default: throw_error("TypeError", "'" + type_name(v) + "' object is not iterable");
  }
}

int64_t py_len(const Value& v) {
  switch (v.kind) {
    case VK_UNDEFINED: return 0;
    case VK_STRING: {
      int64_t n = 0;
      for (unsigned char c : v.s) n += (c & 0xc0) != 0x80;
      return n;
    }
    case VK_LIST:
    case VK_TUPLE: return int64_t(v.list->size());
    case VK_DICT: return int64_t(v.dict->items.size());
    default: throw_error("TypeError", "object of type '" + type_name(v) + "' has no len()");
  }
}

// ---- json.dumps ---------------------------------------------------------------------------------
static void json_string(std::string& out, const std::string& s, bool ensure_ascii) {
  out += '"';
  char buf[16];
  for (uint32_t c : utf8_decode(s)) {
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      case '\b': out += "\\b"; break;
      case '\f': out += "\\f"; break;
      default:
        if (c < 0x20 || (ensure_ascii && c > 0x7e)) {
          if (c > 0xffff) {
            uint32_t u = c - 0x10000;
            std::snprintf(buf, sizeof buf, "\\u%04x\\u%04x", 0xd800 + (u >> 10), 0xdc00 + (u & 0x3ff));
          } else {
            std::snprintf(buf, sizeof buf, "\\u%04x", c);
          }
          out += buf;
        } else {
          utf8_append(out, c);
        }
    }
  }
  out += '"';
}

static std::string json_float(double x) {
  if (std::isnan(x)) return "NaN";
  if (std::isinf(x)) return x > 0 ? "Infinity" : "-Infinity";
  return float_repr(x);
}

static void json_value(std::string& out, const Value& v, const JsonOptions& opt, int depth) {
  if (depth > 200) throw_error("ValueError", "Circular reference detected");
  const std::string item_sep = opt.separators ? opt.separators->first : (opt.indent ? "," : ", ");
  const std::string key_sep = opt.separators ? opt.separators->second : ": ";
  auto newline = [&](int d) {
    if (!opt.indent) return;
    out += '\n';
    for (int k = 0; k < d; ++k) out += *opt.indent;
  };
  switch (v.kind) {
    case VK_NONE: out += "null"; return;
    case VK_BOOL: out += v.b ? "true" : "false"; return;
    case VK_INT: out += std::to_string(v.i); return;
    case VK_FLOAT: out += json_float(v.f); return;
    case VK_STRING: json_string(out, v.s, opt.ensure_ascii); return;
    case VK_LIST:
    case VK_TUPLE: {
      if (v.list->empty()) {
        out += "[]";
        return;
      }
      out += '[';
      for (size_t k = 0; k < v.list->size(); ++k) {
        if (k) out += item_sep;
        newline(depth + 1);
        json_value(out, (*v.list)[k], opt, depth + 1);
      }
      newline(depth);
      out += ']';
      return;
    }
    case VK_DICT: {
      if (v.dict->items.empty()) {
        out += "{}";
        return;
      }
      std::vector<std::pair<std::string, const Value*>> items;
      for (auto& kv : v.dict->items) {
        const Value& key = kv.first;
        std::string ks;
        if (key.kind == VK_STRING) ks = key.s;
        else if (key.kind == VK_INT) ks = std::to_string(key.i);
        else if (key.kind == VK_FLOAT) ks = json_float(key.f);
        else if (key.kind == VK_BOOL) ks = key.b ? "true" : "false";
        else if (key.kind == VK_NONE) ks = "null";
        else throw_error("TypeError", "keys must be str, int, float, bool or None, not " + type_name(key));
        items.emplace_back(std::move(ks), &kv.second);
      }
      if (opt.sort_keys)
        std::stable_sort(items.begin(), items.end(), [](auto& a, auto& b) { return a.first < b.first; });
      out += '{';
      for (size_t k = 0; k < items.size(); ++k) {
        if (k) out += item_sep;
        newline(depth + 1);
        json_string(out, items[k].first, opt.ensure_ascii);
        out += key_sep;
        json_value(out, *items[k].second, opt, depth + 1);
      }
      newline(depth);
      out += '}';
      return;
    }
    default: throw_error("TypeError", "Object of type " + type_name(v) + " is not JSON serializable");
  }
}

std::string json_dumps(const Value& v, const JsonOptions& opt) {
  std::string out;
  json_value(out, v, opt, 0);
  return out;
}

}  // namespace lora::jinja
