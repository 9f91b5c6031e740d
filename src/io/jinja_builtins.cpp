// Built-ins of the Jinja-subset interpreter (see jinja_builtins.h): lookup rules, Python operators,
// str/dict/list methods, Jinja's filters and tests, and transformers' globals. Behaviour follows
// jinja2 3.1 (filters.py, tests.py, sandbox.py) and CPython where the templates can observe it.
// Case mapping covers ASCII, Latin-1/Extended-A, Greek and Cyrillic (jinja_value.cpp); other scripts
// pass unchanged.
#include "io/jinja_builtins.h"

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <map>

namespace lora::jinja {
namespace {

constexpr size_t kMaxBuild = size_t(64) << 20;  // refuse to build strings/lists beyond 64 MiB

std::string object_type_repr(const Value& v) {
  if (v.is_none()) return "None";
  return type_name(v) + " object";
}
Value missing_attr(const Value& obj, const Value& name) {
  return Value::undefined("'" + object_type_repr(obj) + "' has no attribute " + to_repr(name));
}
Value unsafe_attr(const Value& obj, const std::string& name) {
  return Value::undefined("access to attribute '" + name + "' of '" + type_name(obj) +
                          "' object is unsafe (templates cannot modify their inputs)");
}

int64_t as_int(const Value& v, const std::string& what) {
  if (v.kind == VK_INT) return v.i;
  if (v.kind == VK_BOOL) return v.b;
  require_defined(v);
  throw_error("TypeError", what + " must be an integer, not " + type_name(v));
}
std::optional<std::string> opt_str(const Value* v) {
  if (!v || v->is_none()) return std::nullopt;
  require_defined(*v);
  if (!v->is_string()) throw_error("TypeError", "argument must be str or None, not " + type_name(*v));
  return v->s;
}
double as_float(const Value& v) { return v.kind == VK_FLOAT ? v.f : v.kind == VK_BOOL ? double(v.b) : double(v.i); }

Value bound(const std::string& name, std::function<Value(Args&)> f) { return Value::function(name, std::move(f)); }

// ---- string helpers -----------------------------------------------------------------------------
bool is_alpha(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }
bool is_cased(uint32_t c) { return cp_lower(c) != c || cp_upper(c) != c; }
}  // namespace

std::string py_capitalize(const std::string& s) {
  auto cps = utf8_decode(s);
  std::string out;
  for (size_t k = 0; k < cps.size(); ++k) utf8_append(out, k == 0 ? cp_upper(cps[k]) : cp_lower(cps[k]));
  return out;
}
// str.title(): a letter after a cased letter is lowered, otherwise raised.
std::string py_title(const std::string& s) {
  std::string out;
  bool prev_cased = false;
  for (uint32_t c : utf8_decode(s)) {
    bool cased = is_cased(c);
    utf8_append(out, cased ? (prev_cased ? cp_lower(c) : cp_upper(c)) : c);
    prev_cased = cased;
  }
  return out;
}
// Jinja's title filter: capitalise each word, words split at runs of [-\s({[<].
std::string jinja_title(const std::string& s) {
  auto is_sep = [](uint32_t c) { return c == '-' || c == '(' || c == '{' || c == '[' || c == '<' || py_isspace(c); };
  std::string out;
  bool word_start = true;
  for (uint32_t c : utf8_decode(s)) {
    if (is_sep(c)) {
      utf8_append(out, c);
      word_start = true;
    } else {
      utf8_append(out, word_start ? cp_upper(c) : cp_lower(c));
      word_start = false;
    }
  }
  return out;
}

namespace {
std::string py_replace(const std::string& s, const std::string& old, const std::string& rep, int64_t count) {
  std::string out;
  if (old.empty()) {
    // Python inserts `rep` before every character and at the end.
    auto cps = utf8_decode(s);
    int64_t done = 0;
    for (size_t k = 0; k <= cps.size(); ++k) {
      if (count < 0 || done < count) out += rep, ++done;
      if (k < cps.size()) utf8_append(out, cps[k]);
    }
    return out;
  }
  size_t pos = 0;
  int64_t done = 0;
  while (count < 0 || done < count) {
    size_t f = s.find(old, pos);
    if (f == std::string::npos) break;
    out.append(s, pos, f - pos);
    out += rep;
    pos = f + old.size();
    ++done;
    if (out.size() > kMaxBuild) throw_error("MemoryError", "string too large");
  }
  out.append(s, pos, std::string::npos);
  return out;
}
Value py_split(const std::string& s, const std::optional<std::string>& sep, int64_t maxsplit) {
  std::vector<Value> parts;
  if (!sep) {
    auto cps = utf8_decode(s);
    size_t i = 0, n = cps.size();
    while (true) {
      while (i < n && py_isspace(cps[i])) ++i;
      if (i >= n) break;
      if (maxsplit >= 0 && int64_t(parts.size()) >= maxsplit) {
        size_t e = n;
        while (e > i && py_isspace(cps[e - 1])) --e;
        parts.push_back(Value::string(utf8_encode(cps, i, e)));
        break;
      }
      size_t j = i;
      while (j < n && !py_isspace(cps[j])) ++j;
      parts.push_back(Value::string(utf8_encode(cps, i, j)));
      i = j;
    }
    return Value::new_list(std::move(parts));
  }
  if (sep->empty()) throw_error("ValueError", "empty separator");
  size_t pos = 0;
  while (maxsplit < 0 || int64_t(parts.size()) < maxsplit) {
    size_t f = s.find(*sep, pos);
    if (f == std::string::npos) break;
    parts.push_back(Value::string(s.substr(pos, f - pos)));
    pos = f + sep->size();
  }
  parts.push_back(Value::string(s.substr(pos)));
  return Value::new_list(std::move(parts));
}
std::vector<std::string> py_splitlines(const std::string& s) {
  std::vector<std::string> lines;
  auto cps = utf8_decode(s);
  size_t start = 0;
  for (size_t k = 0; k < cps.size(); ++k) {
    uint32_t c = cps[k];
    bool br = c == '\n' || c == '\r' || c == 0x0b || c == 0x0c || c == 0x1c || c == 0x1d || c == 0x1e || c == 0x85 ||
              c == 0x2028 || c == 0x2029;
    if (!br) continue;
    lines.push_back(utf8_encode(cps, start, k));
    if (c == '\r' && k + 1 < cps.size() && cps[k + 1] == '\n') ++k;
    start = k + 1;
  }
  if (start < cps.size()) lines.push_back(utf8_encode(cps, start, cps.size()));
  return lines;
}

// printf-style formatting (`'%s' % x`, the format filter): %s %r %d %i %f %e %g %x %o %c %%.
std::string percent_format(const std::string& fmt, const std::vector<Value>& args) {
  std::string out;
  size_t ai = 0;
  for (size_t i = 0; i < fmt.size(); ++i) {
    if (fmt[i] != '%') {
      out += fmt[i];
      continue;
    }
    size_t j = i + 1;
    std::string spec = "%";
    while (j < fmt.size() && std::string("-+ #0").find(fmt[j]) != std::string::npos) spec += fmt[j++];
    while (j < fmt.size() && std::isdigit(static_cast<unsigned char>(fmt[j]))) spec += fmt[j++];
    if (j < fmt.size() && fmt[j] == '.') {
      spec += fmt[j++];
      while (j < fmt.size() && std::isdigit(static_cast<unsigned char>(fmt[j]))) spec += fmt[j++];
    }
    if (j >= fmt.size()) throw_error("ValueError", "incomplete format");
    char conv = fmt[j];
    i = j;
    if (conv == '%') {
      out += '%';
      continue;
    }
    if (ai >= args.size()) throw_error("TypeError", "not enough arguments for format string");
    const Value& a = args[ai++];
    char buf[512];
    if (conv == 's' || conv == 'r') {
      std::string v = conv == 's' ? to_str(a) : to_repr(a);
      std::snprintf(buf, sizeof buf, (spec + "s").c_str(), "");
      std::string pad = buf;  // width applies to the whole string
      int width = 0;
      for (char c : spec)
        if (std::isdigit(static_cast<unsigned char>(c))) width = width * 10 + (c - '0');
      int len = int(py_len(Value::string(v)));
      if (width > len) {
        std::string fill(width - len, ' ');
        v = spec.find('-') != std::string::npos ? v + fill : fill + v;
      }
      out += v;
    } else if (conv == 'd' || conv == 'i' || conv == 'x' || conv == 'X' || conv == 'o') {
      if (!a.is_number()) throw_error("TypeError", std::string("%") + conv + " format: a real number is required, not " + type_name(a));
      long long v = a.kind == VK_FLOAT ? (long long)a.f : (long long)as_int(a, "value");
      std::snprintf(buf, sizeof buf, (spec + "ll" + (conv == 'i' ? 'd' : conv)).c_str(), v);
      out += buf;
    } else if (std::string("feEgG").find(conv) != std::string::npos) {
      if (!a.is_number()) throw_error("TypeError", "must be real number, not " + type_name(a));
      std::snprintf(buf, sizeof buf, (spec + conv).c_str(), as_float(a));
      out += buf;
    } else if (conv == 'c') {
      if (a.is_string()) out += a.s;
      else utf8_append(out, uint32_t(as_int(a, "%c")));
    } else {
      throw_error("ValueError", std::string("unsupported format character '") + conv + "'");
    }
  }
  if (ai < args.size()) throw_error("TypeError", "not all arguments converted during string formatting");
  return out;
}

// str.format: {} {0} {name} with !r/!s; format specs are not supported.
std::string brace_format(const std::string& fmt, Args& a) {
  std::string out;
  size_t auto_idx = 0;
  for (size_t i = 0; i < fmt.size(); ++i) {
    char c = fmt[i];
    if (c == '}') {
      if (i + 1 < fmt.size() && fmt[i + 1] == '}') ++i;
      else throw_error("ValueError", "Single '}' encountered in format string");
      out += '}';
      continue;
    }
    if (c != '{') {
      out += c;
      continue;
    }
    if (i + 1 < fmt.size() && fmt[i + 1] == '{') {
      out += '{';
      ++i;
      continue;
    }
    size_t e = fmt.find('}', i);
    if (e == std::string::npos) throw_error("ValueError", "Single '{' encountered in format string");
    std::string field = fmt.substr(i + 1, e - i - 1);
    i = e;
    char conv = 's';
    size_t bang = field.find('!');
    if (bang != std::string::npos) {
      conv = bang + 1 < field.size() ? field[bang + 1] : 's';
      field = field.substr(0, bang);
    }
    if (field.find(':') != std::string::npos) throw_error("ValueError", "format specs in str.format are not supported");
    const Value* v = nullptr;
    if (field.empty()) {
      if (auto_idx >= a.pos.size()) throw_error("IndexError", "Replacement index out of range");
      v = &a.pos[auto_idx++];
    } else if (std::all_of(field.begin(), field.end(), [](char d) { return std::isdigit(static_cast<unsigned char>(d)); })) {
      size_t k = std::stoul(field);
      if (k >= a.pos.size()) throw_error("IndexError", "Replacement index " + field + " out of range");
      v = &a.pos[k];
    } else {
      for (auto& kv : a.kw)
        if (kv.first == field) v = &kv.second;
      if (!v) throw_error("KeyError", "'" + field + "'");
    }
    out += conv == 'r' ? to_repr(*v) : to_str(*v);
  }
  return out;
}

// ---- methods ------------------------------------------------------------------------------------
Value string_method(const Value& obj, const std::string& name) {
  const std::string s = obj.s;
  auto strip_m = [&](bool l, bool r) {
    return bound(name, [s, l, r, name](Args& a) {
      a.check(name, 1, {});
      return Value::string(py_strip(s, opt_str(a.get(0, "")), l, r));
    });
  };
  if (name == "strip") return strip_m(true, true);
  if (name == "lstrip") return strip_m(true, false);
  if (name == "rstrip") return strip_m(false, true);
  if (name == "upper" || name == "lower" || name == "title" || name == "capitalize" || name == "casefold" || name == "swapcase")
    return bound(name, [s, name](Args& a) {
      a.check(name, 0, {});
      if (name == "upper") return Value::string(ascii_upper(s));
      if (name == "title") return Value::string(py_title(s));
      if (name == "capitalize") return Value::string(py_capitalize(s));
      if (name == "swapcase") {
        std::string o;
        for (uint32_t c : utf8_decode(s)) utf8_append(o, cp_lower(c) != c ? cp_lower(c) : cp_upper(c));
        return Value::string(o);
      }
      return Value::string(ascii_lower(s));
    });
  if (name == "split" || name == "rsplit")
    return bound(name, [s, name](Args& a) {
      a.check(name, 2, {"sep", "maxsplit"});
      const Value* m = a.get(1, "maxsplit");
      int64_t maxsplit = m ? as_int(*m, "maxsplit") : -1;
      if (name == "rsplit" && maxsplit >= 0) throw_error("NotImplementedError", "rsplit with maxsplit is not supported");
      return py_split(s, opt_str(a.get(0, "sep")), maxsplit);
    });
  if (name == "splitlines")
    return bound(name, [s](Args& a) {
      std::vector<Value> out;
      for (auto& l : py_splitlines(s)) out.push_back(Value::string(l));
      return Value::new_list(std::move(out));
    });
  if (name == "startswith" || name == "endswith")
    return bound(name, [s, name](Args& a) {
      a.check(name, 1, {});
      const Value* p = a.get(0, "");
      if (!p) throw_error("TypeError", name + "() takes at least 1 argument (0 given)");
      std::vector<Value> opts = p->kind == VK_TUPLE ? *p->list : std::vector<Value>{*p};
      for (auto& o : opts) {
        if (!o.is_string()) throw_error("TypeError", name + " first arg must be str or a tuple of str, not " + type_name(o));
        if (name == "startswith" ? s.compare(0, o.s.size(), o.s) == 0
                                 : (s.size() >= o.s.size() && s.compare(s.size() - o.s.size(), o.s.size(), o.s) == 0))
          return Value::boolean(true);
      }
      return Value::boolean(false);
    });
  if (name == "replace")
    return bound(name, [s](Args& a) {
      a.check("replace", 3, {});
      const Value *o = a.get(0, ""), *n = a.get(1, ""), *c = a.get(2, "");
      if (!o || !n || !o->is_string() || !n->is_string()) throw_error("TypeError", "replace() arguments must be str");
      return Value::string(py_replace(s, o->s, n->s, c ? as_int(*c, "count") : -1));
    });
  if (name == "find" || name == "rfind" || name == "index" || name == "rindex" || name == "count")
    return bound(name, [s, name](Args& a) {
      a.check(name, 1, {});
      const Value* sub = a.get(0, "");
      if (!sub || !sub->is_string()) throw_error("TypeError", "must be str");
      if (name == "count") {
        if (sub->s.empty()) return Value::integer(py_len(Value::string(s)) + 1);
        int64_t n = 0;
        for (size_t p = s.find(sub->s); p != std::string::npos; p = s.find(sub->s, p + sub->s.size())) ++n;
        return Value::integer(n);
      }
      size_t p = (name == "find" || name == "index") ? s.find(sub->s) : s.rfind(sub->s);
      if (p == std::string::npos) {
        if (name == "index" || name == "rindex") throw_error("ValueError", "substring not found");
        return Value::integer(-1);
      }
      return Value::integer(py_len(Value::string(s.substr(0, p))));
    });
  if (name == "join")
    return bound(name, [s](Args& a) {
      a.check("join", 1, {});
      const Value* it = a.get(0, "");
      if (!it) throw_error("TypeError", "join() takes exactly one argument (0 given)");
      std::string out;
      bool first = true;
      for (auto& v : iterate(*it)) {
        if (!v.is_string()) throw_error("TypeError", "sequence item: expected str instance, " + type_name(v) + " found");
        if (!first) out += s;
        first = false;
        out += v.s;
      }
      return Value::string(out);
    });
  if (name == "format") return bound(name, [s](Args& a) { return Value::string(brace_format(s, a)); });
  if (name == "removeprefix" || name == "removesuffix")
    return bound(name, [s, name](Args& a) {
      auto p = opt_str(a.get(0, ""));
      std::string x = p.value_or("");
      if (name == "removeprefix" && s.compare(0, x.size(), x) == 0) return Value::string(s.substr(x.size()));
      if (name == "removesuffix" && !x.empty() && s.size() >= x.size() && s.compare(s.size() - x.size(), x.size(), x) == 0)
        return Value::string(s.substr(0, s.size() - x.size()));
      return Value::string(s);
    });
  if (name == "isdigit" || name == "isalpha" || name == "isalnum" || name == "isspace" || name == "islower" ||
      name == "isupper")
    return bound(name, [s, name](Args&) {
      if (name == "islower" || name == "isupper") {
        bool cased = false;
        for (uint32_t c : utf8_decode(s)) {
          bool wrong = name == "islower" ? cp_lower(c) != c : cp_upper(c) != c;
          if (wrong) return Value::boolean(false);
          cased = cased || is_cased(c);
        }
        return Value::boolean(cased);
      }
      if (s.empty()) return Value::boolean(false);
      for (uint32_t c : utf8_decode(s)) {
        bool ok = name == "isdigit"   ? (c >= '0' && c <= '9')
                  : name == "isalpha" ? is_alpha(char(c)) && c < 0x80
                  : name == "isalnum" ? (c < 0x80 && (is_alpha(char(c)) || (c >= '0' && c <= '9')))
                                      : py_isspace(c);
        if (!ok) return Value::boolean(false);
      }
      return Value::boolean(true);
    });
  if (name == "center" || name == "ljust" || name == "rjust" || name == "zfill")
    return bound(name, [s, name](Args& a) {
      const Value* w = a.get(0, "width");
      if (!w) throw_error("TypeError", name + "() takes at least 1 argument");
      int64_t width = as_int(*w, "width"), len = py_len(Value::string(s));
      if (width > int64_t(kMaxBuild)) throw_error("MemoryError", "string too large");
      std::string fill = name == "zfill" ? "0" : (a.get(1, "fillchar") ? a.get(1, "fillchar")->s : " ");
      if (width <= len) return Value::string(s);
      int64_t total = width - len;
      auto rep = [&](int64_t n) {
        std::string r;
        for (int64_t k = 0; k < n; ++k) r += fill;
        return r;
      };
      if (name == "ljust") return Value::string(s + rep(total));
      if (name == "rjust" || name == "zfill") return Value::string(rep(total) + s);
      int64_t left = total / 2 + (total & width & 1);  // CPython's centring rule
      return Value::string(rep(left) + s + rep(total - left));
    });
  return missing_attr(obj, Value::string(name));
}

Value dict_method(const Value& obj, const std::string& name) {
  auto d = obj.dict;
  if (name == "items" || name == "keys" || name == "values")
    return bound(name, [d, name](Args& a) {
      a.check(name, 0, {});
      std::vector<Value> out;
      for (auto& kv : d->items) {
        if (name == "items") out.push_back(Value::new_list({kv.first, kv.second}, true));
        else out.push_back(name == "keys" ? kv.first : kv.second);
      }
      return Value::new_list(std::move(out));
    });
  if (name == "get")
    return bound(name, [d](Args& a) {
      a.check("get", 2, {});
      const Value* k = a.get(0, "");
      if (!k) throw_error("TypeError", "get expected at least 1 argument, got 0");
      if (const Value* v = d->find(*k)) return *v;
      const Value* dflt = a.get(1, "");
      return dflt ? *dflt : Value::none();
    });
  if (name == "copy")
    return bound(name, [d](Args&) {
      Value v = Value::new_dict();
      v.dict->items = d->items;
      return v;
    });
  return Value();  // not a method
}

bool is_dict_mutator(const std::string& n) {
  return n == "clear" || n == "pop" || n == "popitem" || n == "setdefault" || n == "update" || n == "fromkeys";
}
bool is_list_mutator(const std::string& n) {
  return n == "append" || n == "extend" || n == "insert" || n == "pop" || n == "remove" || n == "reverse" || n == "sort" ||
         n == "clear";
}

Value list_method(const Value& obj, const std::string& name) {
  auto l = obj.list;
  if (name == "count")
    return bound(name, [l](Args& a) {
      const Value* x = a.get(0, "");
      int64_t n = 0;
      for (auto& v : *l) n += x && py_equal(v, *x);
      return Value::integer(n);
    });
  if (name == "index")
    return bound(name, [l](Args& a) {
      const Value* x = a.get(0, "");
      for (size_t k = 0; k < l->size(); ++k)
        if (x && py_equal((*l)[k], *x)) return Value::integer(int64_t(k));
      throw_error("ValueError", (x ? to_repr(*x) : "None") + " is not in list");
    });
  if (name == "copy" && obj.kind == VK_LIST) return bound(name, [l](Args&) { return Value::new_list(*l); });
  return Value();
}

}  // namespace

// ---- lookup -------------------------------------------------------------------------------------
Value get_attr(const Value& obj, const std::string& name) {
  require_defined(obj);
  switch (obj.kind) {
    case VK_NAMESPACE:
    case VK_OBJECT:
      if (const Value* v = obj.dict->find(name)) return *v;
      return missing_attr(obj, Value::string(name));
    case VK_DICT: {
      if (is_dict_mutator(name)) return unsafe_attr(obj, name);
      Value m = dict_method(obj, name);
      if (!m.is_undefined()) return m;
      if (const Value* v = obj.dict->find(name)) return *v;
      return missing_attr(obj, Value::string(name));
    }
    case VK_STRING: return string_method(obj, name);
    case VK_LIST:
    case VK_TUPLE: {
      if (obj.kind == VK_LIST && is_list_mutator(name)) return unsafe_attr(obj, name);
      Value m = list_method(obj, name);
      if (!m.is_undefined()) return m;
      return missing_attr(obj, Value::string(name));
    }
    default: return missing_attr(obj, Value::string(name));
  }
}

Value get_item(const Value& obj, const Value& key) {
  require_defined(obj);
  if (obj.kind == VK_DICT) {
    if (const Value* v = obj.dict->find(key)) return *v;
  } else if ((obj.is_seq() || obj.is_string()) && (key.kind == VK_INT || key.kind == VK_BOOL)) {
    int64_t k = key.kind == VK_BOOL ? key.b : key.i;
    if (obj.is_string()) {
      auto cps = utf8_decode(obj.s);
      int64_t n = int64_t(cps.size());
      if (k < 0) k += n;
      if (k >= 0 && k < n) return Value::string(utf8_encode(cps, size_t(k), size_t(k) + 1));
    } else {
      int64_t n = int64_t(obj.list->size());
      if (k < 0) k += n;
      if (k >= 0 && k < n) return (*obj.list)[size_t(k)];
    }
    return missing_attr(obj, key);
  }
  if (key.is_string()) {
    Value v = get_attr(obj, key.s);
    return v;
  }
  return missing_attr(obj, key);
}

Value get_slice(const Value& obj, const Value* start, const Value* stop, const Value* step) {
  require_defined(obj);
  auto idx = [](const Value* v, bool& ok) -> std::optional<int64_t> {
    if (!v || v->is_none()) return std::nullopt;
    if (v->kind == VK_INT) return v->i;
    if (v->kind == VK_BOOL) return int64_t(v->b);
    ok = false;
    return std::nullopt;
  };
  bool ok = true;
  auto b = idx(start, ok), e = idx(stop, ok), st = idx(step, ok);
  if (!ok || !(obj.is_seq() || obj.is_string())) return Value::undefined("slice of '" + type_name(obj) + "' is undefined");
  int64_t s = st.value_or(1);
  if (s == 0) throw_error("ValueError", "slice step cannot be zero");
  std::vector<uint32_t> cps;
  int64_t n;
  if (obj.is_string()) {
    cps = utf8_decode(obj.s);
    n = int64_t(cps.size());
  } else {
    n = int64_t(obj.list->size());
  }
  // CPython's PySlice_AdjustIndices.
  auto adjust = [&](std::optional<int64_t> v, int64_t dflt_pos, int64_t dflt_neg) {
    if (!v) return s > 0 ? dflt_pos : dflt_neg;
    int64_t x = *v;
    if (x < 0) {
      x += n;
      if (x < 0) x = s < 0 ? -1 : 0;
    } else if (x >= n) {
      x = s < 0 ? n - 1 : n;
    }
    return x;
  };
  int64_t lo = adjust(b, 0, n - 1), hi = adjust(e, n, -1);
  std::vector<int64_t> picks;
  if (s > 0)
    for (int64_t k = lo; k < hi; k += s) picks.push_back(k);
  else
    for (int64_t k = lo; k > hi; k += s) picks.push_back(k);
  if (obj.is_string()) {
    std::string out;
    for (int64_t k : picks) utf8_append(out, cps[size_t(k)]);
    return Value::string(out);
  }
  std::vector<Value> out;
  for (int64_t k : picks) out.push_back((*obj.list)[size_t(k)]);
  return Value::new_list(std::move(out), obj.kind == VK_TUPLE);
}

Value call_value(const Value& fn, Args& args) {
  require_defined(fn);
  if (fn.kind != VK_FUNCTION) throw_error("TypeError", "'" + type_name(fn) + "' object is not callable");
  return fn.fn->call(args);
}

// ---- operators ----------------------------------------------------------------------------------
Value binary_op(const std::string& op, const Value& a, const Value& b) {
  if (op == "~") return Value::string(to_str(a) + to_str(b));
  require_defined(a);
  require_defined(b);
  auto unsupported = [&]() -> Value {
    throw_error("TypeError", "unsupported operand type(s) for " + op + ": '" + type_name(a) + "' and '" + type_name(b) + "'");
  };
  const bool ints = (a.kind == VK_INT || a.kind == VK_BOOL) && (b.kind == VK_INT || b.kind == VK_BOOL);
  const bool nums = a.is_number() && b.is_number();
  int64_t x = ints ? (a.kind == VK_BOOL ? a.b : a.i) : 0, y = ints ? (b.kind == VK_BOOL ? b.b : b.i) : 0;
  auto overflow = []() -> Value { throw_error("OverflowError", "integer result exceeds 64 bits"); };
  if (op == "+") {
    if (ints) {
      int64_t r;
      if (__builtin_add_overflow(x, y, &r)) return overflow();
      return Value::integer(r);
    }
    if (nums) return Value::floating(as_float(a) + as_float(b));
    if (a.is_string() && b.is_string()) {
      if (a.s.size() + b.s.size() > kMaxBuild) throw_error("MemoryError", "string too large");
      return Value::string(a.s + b.s);
    }
    if (a.is_seq() && a.kind == b.kind) {
      std::vector<Value> r = *a.list;
      r.insert(r.end(), b.list->begin(), b.list->end());
      return Value::new_list(std::move(r), a.kind == VK_TUPLE);
    }
    if (a.is_string()) throw_error("TypeError", "can only concatenate str (not \"" + type_name(b) + "\") to str");
    if (a.is_seq())
      throw_error("TypeError", "can only concatenate " + type_name(a) + " (not \"" + type_name(b) + "\") to " + type_name(a));
    return unsupported();
  }
  if (op == "-") {
    if (ints) {
      int64_t r;
      if (__builtin_sub_overflow(x, y, &r)) return overflow();
      return Value::integer(r);
    }
    if (nums) return Value::floating(as_float(a) - as_float(b));
    return unsupported();
  }
  if (op == "*") {
    if (ints) {
      int64_t r;
      if (__builtin_mul_overflow(x, y, &r)) return overflow();
      return Value::integer(r);
    }
    if (nums) return Value::floating(as_float(a) * as_float(b));
    const Value* seq = (a.is_string() || a.is_seq()) ? &a : (b.is_string() || b.is_seq()) ? &b : nullptr;
    const Value* cnt = seq == &a ? &b : &a;
    if (seq && (cnt->kind == VK_INT || cnt->kind == VK_BOOL)) {
      int64_t n = std::max<int64_t>(0, cnt->kind == VK_BOOL ? cnt->b : cnt->i);
      size_t unit = seq->is_string() ? seq->s.size() : seq->list->size() * sizeof(Value);
      if (unit && uint64_t(n) > kMaxBuild / unit) throw_error("MemoryError", "repeated sequence too large");
      if (seq->is_string()) {
        std::string r;
        for (int64_t k = 0; k < n; ++k) r += seq->s;
        return Value::string(r);
      }
      std::vector<Value> r;
      for (int64_t k = 0; k < n; ++k) r.insert(r.end(), seq->list->begin(), seq->list->end());
      return Value::new_list(std::move(r), seq->kind == VK_TUPLE);
    }
    if (seq) throw_error("TypeError", "can't multiply sequence by non-int of type '" + type_name(*cnt) + "'");
    return unsupported();
  }
  if (op == "/" || op == "//" || op == "%") {
    if (a.is_string() && op == "%") {
      std::vector<Value> args = b.kind == VK_TUPLE ? *b.list : std::vector<Value>{b};
      return Value::string(percent_format(a.s, args));
    }
    if (!nums) return unsupported();
    if (ints ? y == 0 : as_float(b) == 0.0)
      throw_error("ZeroDivisionError", op == "/" ? "division by zero" : op == "//" ? "integer division or modulo by zero" : "integer modulo by zero");
    if (op == "/") return Value::floating(as_float(a) / as_float(b));
    if (ints) {
      if (x == INT64_MIN && y == -1) return overflow();
      int64_t q = x / y, r = x % y;
      if (r != 0 && ((r < 0) != (y < 0))) --q, r += y;
      return Value::integer(op == "//" ? q : r);
    }
    double fx = as_float(a), fy = as_float(b);
    double m = std::fmod(fx, fy);
    if (m != 0 && ((m < 0) != (fy < 0))) m += fy;
    if (op == "%") return Value::floating(m);
    return Value::floating(std::floor(fx / fy));
  }
  if (op == "**") {
    if (ints && y >= 0) {
      int64_t r = 1, base = x;
      for (int64_t e = y; e > 0; e >>= 1) {
        if (e & 1)
          if (__builtin_mul_overflow(r, base, &r)) return overflow();
        if (e > 1 && __builtin_mul_overflow(base, base, &base)) return overflow();
      }
      return Value::integer(r);
    }
    if (nums) return Value::floating(std::pow(as_float(a), as_float(b)));
    return unsupported();
  }
  return unsupported();
}

}  // namespace lora::jinja
