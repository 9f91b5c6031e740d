// Jinja filters, tests and globals for the Jinja-subset interpreter (see jinja_builtins.h).
// Semantics follow jinja2 3.1's filters.py/tests.py and transformers' environment (tojson with
// ensure_ascii=False, raise_exception, strftime_now, namespace, dict). Filters that return
// generators in Jinja (map, select, items, ...) return lists here: templates only iterate them,
// join them or pass them to |list.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <map>

#include "io/jinja_ast.h"
#include "io/jinja_builtins.h"

namespace lora::jinja {
namespace {

constexpr int64_t kMaxRange = 100000;  // jinja2.sandbox.MAX_RANGE

const Value* arg(Args& a, size_t i, const char* name) { return a.get(i, name); }
bool arg_bool(Args& a, size_t i, const char* name, bool dflt) {
  const Value* v = a.get(i, name);
  return v ? truthy(*v) : dflt;
}
[[noreturn]] void unsupported_filter(const std::string& name) {
  throw_error("TemplateError", "the '" + name + "' filter is not supported by lora's template engine");
}

// make_attrgetter: "a.b.0" walks items/attributes; digits become integer indices.
Value attr_path(const Value& item, const Value& attribute) {
  if (!attribute.is_string()) return get_item(item, attribute);
  Value cur = item;
  size_t start = 0;
  const std::string& path = attribute.s;
  for (;;) {
    size_t dot = path.find('.', start);
    std::string part = path.substr(start, dot == std::string::npos ? std::string::npos : dot - start);
    bool digits = !part.empty() && std::all_of(part.begin(), part.end(), [](char c) { return c >= '0' && c <= '9'; });
    cur = get_item(cur, digits ? Value::integer(std::atoll(part.c_str())) : Value::string(part));
    if (dot == std::string::npos) return cur;
    start = dot + 1;
  }
}

Value lower_if_str(const Value& v, bool case_sensitive) {
  return (!case_sensitive && v.is_string()) ? Value::string(ascii_lower(v.s)) : v;
}

void sort_values(std::vector<Value>& items, bool reverse, const std::function<Value(const Value&)>& key) {
  std::vector<std::pair<Value, Value>> keyed;
  for (auto& v : items) keyed.emplace_back(key(v), v);
  std::stable_sort(keyed.begin(), keyed.end(), [&](auto& x, auto& y) { return reverse ? py_less(y.first, x.first) : py_less(x.first, y.first); });
  for (size_t k = 0; k < items.size(); ++k) items[k] = keyed[k].second;
}

Value call_test_by_name(const Value& name, const Value& v, Args& rest) {
  if (!name.is_string()) throw_error("TypeError", "test name must be a string");
  TestFn t = find_test(name.s);
  if (!t) throw_error("TemplateRuntimeError", "No test named '" + name.s + "' found.");
  return Value::boolean(t(v, rest));
}

// select/reject/selectattr/rejectattr share Jinja's prepare_select_or_reject.
Value select_impl(const Value& seq, Args& a, bool lookup_attr, bool keep_if) {
  size_t off = 0;
  Value attribute;
  if (lookup_attr) {
    if (a.pos.empty()) throw_error("FilterArgumentError", "Missing parameter for attribute name");
    attribute = a.pos[0];
    off = 1;
  }
  Args rest;
  rest.kw = a.kw;
  bool have_test = a.pos.size() > off;
  if (have_test) rest.pos.assign(a.pos.begin() + off + 1, a.pos.end());
  std::vector<Value> out;
  if (!truthy(seq) && !seq.is_undefined()) return Value::new_list();
  for (auto& item : iterate(seq)) {
    Value x = lookup_attr ? attr_path(item, attribute) : item;
    bool r = have_test ? truthy(call_test_by_name(a.pos[off], x, rest)) : truthy(x);
    if (r == keep_if) out.push_back(item);
  }
  return Value::new_list(std::move(out));
}

// ---- filters ------------------------------------------------------------------------------------
Value f_trim(const Value& v, Args& a) {
  a.check("trim", 1, {"chars"});
  const Value* c = arg(a, 0, "chars");
  std::optional<std::string> chars;
  if (c && !c->is_none()) chars = to_str(*c);
  return Value::string(py_strip(to_str(v), chars, true, true));
}
Value f_upper(const Value& v, Args&) { return Value::string(ascii_upper(to_str(v))); }
Value f_lower(const Value& v, Args&) { return Value::string(ascii_lower(to_str(v))); }
Value f_length(const Value& v, Args&) { return Value::integer(py_len(v)); }
Value f_string(const Value& v, Args&) { return Value::string(to_str(v)); }
Value f_safe(const Value& v, Args&) { return Value::string(to_str(v)); }
Value f_first(const Value& v, Args&) {
  auto items = iterate(v);
  if (items.empty()) return Value::undefined("No first item, sequence was empty.");
  return items.front();
}
Value f_last(const Value& v, Args&) {
  auto items = iterate(v);
  if (items.empty()) return Value::undefined("No last item, sequence was empty.");
  return items.back();
}
Value f_join(const Value& v, Args& a) {
  a.check("join", 2, {"d", "attribute"});
  const Value* d = arg(a, 0, "d");
  const Value* attr = arg(a, 1, "attribute");
  std::string sep = d ? to_str(*d) : "", out;
  bool first = true;
  for (auto& item : iterate(v)) {
    if (!first) out += sep;
    first = false;
    out += to_str((attr && !attr->is_none()) ? attr_path(item, *attr) : item);
  }
  return Value::string(out);
}
Value f_default(const Value& v, Args& a) {
  a.check("default", 2, {"default_value", "boolean"});
  const Value* d = arg(a, 0, "default_value");
  bool boolean = arg_bool(a, 1, "boolean", false);
  if (v.is_undefined() || (boolean && !truthy(v))) return d ? *d : Value::string("");
  return v;
}
Value f_tojson(const Value& v, Args& a) {
  a.check("tojson", 5, {"ensure_ascii", "indent", "separators", "sort_keys"});
  JsonOptions opt;
  opt.ensure_ascii = arg_bool(a, 0, "ensure_ascii", false);
  if (const Value* ind = arg(a, 1, "indent"); ind && !ind->is_none()) {
    if (ind->is_string()) opt.indent = ind->s;
    else opt.indent = std::string(size_t(std::max<int64_t>(0, std::min<int64_t>(ind->kind == VK_BOOL ? ind->b : ind->i, 64))), ' ');
  }
  if (const Value* sep = arg(a, 2, "separators"); sep && !sep->is_none()) {
    if (!sep->is_seq() || sep->list->size() != 2) throw_error("ValueError", "separators must be a pair of strings");
    opt.separators = std::make_pair(to_str((*sep->list)[0]), to_str((*sep->list)[1]));
  }
  opt.sort_keys = arg_bool(a, 3, "sort_keys", false);
  return Value::string(json_dumps(v, opt));
}
Value f_int(const Value& v, Args& a) {
  a.check("int", 2, {"default", "base"});
  const Value* d = arg(a, 0, "default");
  Value dflt = d ? *d : Value::integer(0);
  const Value* b = arg(a, 1, "base");
  int base = b ? int(b->i) : 10;
  if (v.kind == VK_INT) return v;
  if (v.kind == VK_BOOL) return Value::integer(v.b);
  if (v.kind == VK_FLOAT) {
    if (!std::isfinite(v.f)) return dflt;
    return Value::integer(int64_t(v.f));
  }
  if (v.is_string()) {
    std::string s = py_strip(v.s, std::nullopt, true, true), clean;
    for (char c : s)
      if (c != '_') clean += c;
    if (!clean.empty()) {
      char* end = nullptr;
      errno = 0;
      long long r = std::strtoll(clean.c_str(), &end, base);
      if (*end == 0 && errno == 0 && !(clean.size() > 1 && clean[0] == '0' && base == 10 && clean.find_first_not_of('0') != std::string::npos))
        return Value::integer(r);
      double f = std::strtod(clean.c_str(), &end);
      if (*end == 0 && std::isfinite(f)) return Value::integer(int64_t(f));
    }
  }
  return dflt;
}
Value f_float(const Value& v, Args& a) {
  const Value* d = arg(a, 0, "default");
  Value dflt = d ? *d : Value::floating(0.0);
  if (v.is_number()) return Value::floating(v.kind == VK_FLOAT ? v.f : v.kind == VK_BOOL ? v.b : double(v.i));
  if (v.is_string()) {
    std::string s = py_strip(v.s, std::nullopt, true, true);
    char* end = nullptr;
    double f = std::strtod(s.c_str(), &end);
    if (!s.empty() && *end == 0) return Value::floating(f);
  }
  return dflt;
}
Value f_list(const Value& v, Args&) { return Value::new_list(iterate(v)); }
Value f_items(const Value& v, Args&) {
  if (v.is_undefined()) return Value::new_list();
  if (!v.is_mapping()) throw_error("TypeError", "Can only get item pairs from a mapping.");
  std::vector<Value> out;
  for (auto& kv : v.dict->items) out.push_back(Value::new_list({kv.first, kv.second}, true));
  return Value::new_list(std::move(out));
}
Value f_capitalize(const Value& v, Args&) { return Value::string(py_capitalize(to_str(v))); }
Value f_title(const Value& v, Args&) { return Value::string(jinja_title(to_str(v))); }
Value f_replace(const Value& v, Args& a) {
  a.check("replace", 3, {"old", "new", "count"});
  const Value *o = arg(a, 0, "old"), *n = arg(a, 1, "new"), *c = arg(a, 2, "count");
  if (!o || !n) throw_error("TypeError", "replace() missing required arguments");
  Args m;
  m.pos = {Value::string(to_str(*o)), Value::string(to_str(*n))};
  if (c && !c->is_none()) m.pos.push_back(*c);
  return call_value(get_attr(Value::string(to_str(v)), "replace"), m);
}
Value f_map(const Value& v, Args& a) {
  std::vector<Value> out;
  if (!truthy(v)) return Value::new_list();
  if (a.pos.empty()) {
    const Value* attr = nullptr;
    const Value* dflt = nullptr;
    for (auto& kv : a.kw) {
      if (kv.first == "attribute") attr = &kv.second;
      else if (kv.first == "default") dflt = &kv.second;
      else throw_error("FilterArgumentError", "Unexpected keyword argument '" + kv.first + "'");
    }
    if (!attr) throw_error("FilterArgumentError", "map requires a filter argument");
    for (auto& item : iterate(v)) {
      Value x = attr_path(item, *attr);
      if (dflt && x.is_undefined()) x = *dflt;
      out.push_back(x);
    }
    return Value::new_list(std::move(out));
  }
  if (!a.pos[0].is_string()) throw_error("TypeError", "map filter name must be a string");
  FilterFn f = find_filter(a.pos[0].s);
  if (!f) throw_error("TemplateRuntimeError", "No filter named '" + a.pos[0].s + "' found.");
  Args rest;
  rest.pos.assign(a.pos.begin() + 1, a.pos.end());
  rest.kw = a.kw;
  for (auto& item : iterate(v)) {
    Args copy = rest;
    out.push_back(f(item, copy));
  }
  return Value::new_list(std::move(out));
}
Value f_select(const Value& v, Args& a) { return select_impl(v, a, false, true); }
Value f_reject(const Value& v, Args& a) { return select_impl(v, a, false, false); }
Value f_selectattr(const Value& v, Args& a) { return select_impl(v, a, true, true); }
Value f_rejectattr(const Value& v, Args& a) { return select_impl(v, a, true, false); }
Value f_dictsort(const Value& v, Args& a) {
  a.check("dictsort", 3, {"case_sensitive", "by", "reverse"});
  if (!v.is_mapping()) throw_error("TypeError", "dictsort requires a mapping");
  bool cs = arg_bool(a, 0, "case_sensitive", false), rev = arg_bool(a, 2, "reverse", false);
  const Value* by = arg(a, 1, "by");
  int pos = 0;
  if (by) {
    std::string b = to_str(*by);
    if (b == "value") pos = 1;
    else if (b != "key") throw_error("FilterArgumentError", "You can only sort by either \"key\" or \"value\"");
  }
  std::vector<Value> items;
  for (auto& kv : v.dict->items) items.push_back(Value::new_list({kv.first, kv.second}, true));
  sort_values(items, rev, [&](const Value& it) { return lower_if_str((*it.list)[pos], cs); });
  return Value::new_list(std::move(items));
}
Value f_sort(const Value& v, Args& a) {
  a.check("sort", 3, {"reverse", "case_sensitive", "attribute"});
  bool rev = arg_bool(a, 0, "reverse", false), cs = arg_bool(a, 1, "case_sensitive", false);
  const Value* attr = arg(a, 2, "attribute");
  auto items = iterate(v);
  sort_values(items, rev, [&](const Value& it) { return lower_if_str(attr && !attr->is_none() ? attr_path(it, *attr) : it, cs); });
  return Value::new_list(std::move(items));
}
Value f_unique(const Value& v, Args& a) {
  bool cs = arg_bool(a, 0, "case_sensitive", false);
  const Value* attr = arg(a, 1, "attribute");
  std::vector<Value> seen, out;
  for (auto& it : iterate(v)) {
    Value k = lower_if_str(attr && !attr->is_none() ? attr_path(it, *attr) : it, cs);
    if (std::none_of(seen.begin(), seen.end(), [&](const Value& s) { return py_equal(s, k); })) {
      seen.push_back(k);
      out.push_back(it);
    }
  }
  return Value::new_list(std::move(out));
}
Value f_reverse(const Value& v, Args&) {
  if (v.is_string()) {
    auto cps = utf8_decode(v.s);
    std::reverse(cps.begin(), cps.end());
    return Value::string(utf8_encode(cps));
  }
  auto items = iterate(v);
  std::reverse(items.begin(), items.end());
  return Value::new_list(std::move(items));
}
Value f_abs(const Value& v, Args&) {
  if (v.kind == VK_INT) return Value::integer(v.i < 0 ? -v.i : v.i);
  if (v.kind == VK_BOOL) return Value::integer(v.b);
  if (v.kind == VK_FLOAT) return Value::floating(std::fabs(v.f));
  require_defined(v);
  throw_error("TypeError", "bad operand type for abs(): '" + type_name(v) + "'");
}
Value f_round(const Value& v, Args& a) {
  a.check("round", 2, {"precision", "method"});
  const Value* p = arg(a, 0, "precision");
  const Value* m = arg(a, 1, "method");
  int prec = p ? int(p->i) : 0;
  std::string method = m ? to_str(*m) : "common";
  if (!v.is_number()) throw_error("TypeError", "round() requires a number");
  double x = v.kind == VK_FLOAT ? v.f : v.kind == VK_BOOL ? v.b : double(v.i);
  if (method == "common") {
    if (v.kind != VK_FLOAT) return Value::integer(v.kind == VK_BOOL ? v.b : v.i);
    char buf[512];
    std::snprintf(buf, sizeof buf, "%.*f", std::clamp(prec, 0, 300), x);  // correctly rounded, ties to even
    return Value::floating(std::strtod(buf, nullptr));
  }
  if (method != "floor" && method != "ceil") throw_error("FilterArgumentError", "method must be common, ceil or floor");
  double s = std::pow(10.0, prec);
  return Value::floating((method == "floor" ? std::floor(x * s) : std::ceil(x * s)) / s);
}
Value f_sum(const Value& v, Args& a) {
  const Value* attr = arg(a, 0, "attribute");
  const Value* start = arg(a, 1, "start");
  Value acc = start ? *start : Value::integer(0);
  for (auto& it : iterate(v)) acc = binary_op("+", acc, attr && !attr->is_none() ? attr_path(it, *attr) : it);
  return acc;
}
Value minmax(const Value& v, Args& a, bool want_max) {
  bool cs = arg_bool(a, 0, "case_sensitive", false);
  const Value* attr = arg(a, 1, "attribute");
  auto items = iterate(v);
  if (items.empty()) return Value::undefined(std::string("No aggregated item, sequence was empty."));
  Value best = items[0];
  auto key = [&](const Value& it) { return lower_if_str(attr && !attr->is_none() ? attr_path(it, *attr) : it, cs); };
  for (size_t k = 1; k < items.size(); ++k)
    if (want_max ? py_less(key(best), key(items[k])) : py_less(key(items[k]), key(best))) best = items[k];
  return best;
}
Value f_max(const Value& v, Args& a) { return minmax(v, a, true); }
Value f_min(const Value& v, Args& a) { return minmax(v, a, false); }
Value f_indent(const Value& v, Args& a) {
  a.check("indent", 3, {"width", "first", "blank"});
  const Value* w = arg(a, 0, "width");
  std::string ind = (w && w->is_string()) ? w->s : std::string(size_t(std::clamp<int64_t>(w ? w->i : 4, 0, 1024)), ' ');
  bool first = arg_bool(a, 1, "first", false), blank = arg_bool(a, 2, "blank", false);
  std::string s = to_str(v) + "\n";
  Args none;
  Value lines_v = call_value(get_attr(Value::string(s), "splitlines"), none);
  std::vector<std::string> lines;
  for (auto& l : *lines_v.list) lines.push_back(l.s);
  std::string rv;
  if (blank) {
    for (size_t k = 0; k < lines.size(); ++k) rv += (k ? "\n" + ind : "") + lines[k];
  } else {
    rv = lines.empty() ? "" : lines[0];
    for (size_t k = 1; k < lines.size(); ++k) rv += "\n" + (lines[k].empty() ? "" : ind + lines[k]);
  }
  if (first) rv = ind + rv;
  return Value::string(rv);
}
Value f_center(const Value& v, Args& a) {
  Args m;
  const Value* w = arg(a, 0, "width");
  m.pos = {w ? *w : Value::integer(80)};
  return call_value(get_attr(Value::string(to_str(v)), "center"), m);
}
Value f_wordcount(const Value& v, Args&) {
  int64_t n = 0;
  bool in_word = false;
  for (uint32_t c : utf8_decode(to_str(v))) {
    bool w = c >= 0x80 ? !py_isspace(c) : (std::isalnum(int(c)) || c == '_');
    if (w && !in_word) ++n;
    in_word = w;
  }
  return Value::integer(n);
}
Value f_format(const Value& v, Args& a) {
  if (!a.kw.empty() && !a.pos.empty()) throw_error("FilterArgumentError", "can't handle positional and keyword arguments at the same time");
  Value tuple = Value::new_list(a.pos, true);
  return binary_op("%", Value::string(to_str(v)), tuple);
}
Value f_escape(const Value& v, Args&) {
  std::string out;
  for (char c : to_str(v)) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&#34;"; break;
      case '\'': out += "&#39;"; break;
      default: out += c;
    }
  }
  return Value::string(out);
}
Value f_attr(const Value& v, Args& a) {
  const Value* n = arg(a, 0, "name");
  if (!n || !n->is_string()) throw_error("TypeError", "attr filter needs an attribute name");
  return get_attr(v, n->s);
}
#define UNSUPPORTED(fname) \
  Value f_unsupported_##fname(const Value&, Args&) { unsupported_filter(#fname); }
UNSUPPORTED(batch)
UNSUPPORTED(filesizeformat)
UNSUPPORTED(groupby)
UNSUPPORTED(pprint)
UNSUPPORTED(random)
UNSUPPORTED(slice)
UNSUPPORTED(striptags)
UNSUPPORTED(truncate)
UNSUPPORTED(urlencode)
UNSUPPORTED(urlize)
UNSUPPORTED(wordwrap)
UNSUPPORTED(xmlattr)
#undef UNSUPPORTED

const std::map<std::string, FilterFn>& filters() {
  static const std::map<std::string, FilterFn> m = {
      {"abs", f_abs},           {"attr", f_attr},
      {"batch", f_unsupported_batch},
      {"capitalize", f_capitalize},
      {"center", f_center},     {"count", f_length},
      {"d", f_default},         {"default", f_default},
      {"dictsort", f_dictsort}, {"e", f_escape},
      {"escape", f_escape},     {"filesizeformat", f_unsupported_filesizeformat},
      {"first", f_first},       {"float", f_float},
      {"forceescape", f_escape},
      {"format", f_format},     {"groupby", f_unsupported_groupby},
      {"indent", f_indent},     {"int", f_int},
      {"items", f_items},       {"join", f_join},
      {"last", f_last},         {"length", f_length},
      {"list", f_list},         {"lower", f_lower},
      {"map", f_map},           {"max", f_max},
      {"min", f_min},           {"pprint", f_unsupported_pprint},
      {"random", f_unsupported_random},
      {"reject", f_reject},     {"rejectattr", f_rejectattr},
      {"replace", f_replace},   {"reverse", f_reverse},
      {"round", f_round},       {"safe", f_safe},
      {"select", f_select},     {"selectattr", f_selectattr},
      {"slice", f_unsupported_slice},
      {"sort", f_sort},         {"string", f_string},
      {"striptags", f_unsupported_striptags},
      {"sum", f_sum},           {"title", f_title},
      {"tojson", f_tojson},     {"trim", f_trim},
      {"truncate", f_unsupported_truncate},
      {"unique", f_unique},     {"upper", f_upper},
      {"urlencode", f_unsupported_urlencode},
      {"urlize", f_unsupported_urlize},
      {"wordcount", f_wordcount},
      {"wordwrap", f_unsupported_wordwrap},
      {"xmlattr", f_unsupported_xmlattr},
  };
  return m;
}

// ---- tests --------------------------------------------------------------------------------------
const Value& test_arg(Args& a) {
  if (a.pos.empty()) throw_error("TypeError", "test requires an argument");
  return a.pos[0];
}
bool t_defined(const Value& v, Args&) { return !v.is_undefined(); }
bool t_undefined(const Value& v, Args&) { return v.is_undefined(); }
bool t_none(const Value& v, Args&) { return v.is_none(); }
bool t_boolean(const Value& v, Args&) { return v.kind == VK_BOOL; }
bool t_false(const Value& v, Args&) { return v.kind == VK_BOOL && !v.b; }
bool t_true(const Value& v, Args&) { return v.kind == VK_BOOL && v.b; }
bool t_integer(const Value& v, Args&) { return v.kind == VK_INT; }
bool t_float(const Value& v, Args&) { return v.kind == VK_FLOAT; }
bool t_number(const Value& v, Args&) { return v.is_number(); }
bool t_string(const Value& v, Args&) { return v.is_string(); }
bool t_mapping(const Value& v, Args&) { return v.is_mapping(); }
bool t_sequence(const Value& v, Args&) { return v.is_string() || v.is_seq() || v.is_mapping() || v.is_undefined(); }
bool t_iterable(const Value& v, Args&) { return v.is_string() || v.is_seq() || v.is_mapping() || v.is_undefined(); }
bool t_callable(const Value& v, Args&) { return v.kind == VK_FUNCTION; }
int64_t int_for_parity(const Value& v) {
  if (v.kind == VK_INT) return v.i;
  if (v.kind == VK_BOOL) return v.b;
  if (v.kind == VK_FLOAT) return int64_t(std::fmod(v.f, 2.0));
  require_defined(v);
  throw_error("TypeError", "not all arguments converted during string formatting");
}
bool t_odd(const Value& v, Args&) { return int_for_parity(v) % 2 != 0; }
bool t_even(const Value& v, Args&) { return int_for_parity(v) % 2 == 0; }
bool t_divisibleby(const Value& v, Args& a) {
  return py_equal(binary_op("%", v, test_arg(a)), Value::integer(0));
}
bool t_eq(const Value& v, Args& a) { return py_equal(v, test_arg(a)); }
bool t_ne(const Value& v, Args& a) { return !py_equal(v, test_arg(a)); }
bool t_lt(const Value& v, Args& a) { return py_less(v, test_arg(a)); }
bool t_le(const Value& v, Args& a) { return !py_less(test_arg(a), v); }
bool t_gt(const Value& v, Args& a) { return py_less(test_arg(a), v); }
bool t_ge(const Value& v, Args& a) { return !py_less(v, test_arg(a)); }
bool t_in(const Value& v, Args& a) {
  const Value& seq = test_arg(a);
  if (seq.is_string()) {
    if (!v.is_string()) throw_error("TypeError", "'in <string>' requires string as left operand, not " + type_name(v));
    return seq.s.find(v.s) != std::string::npos;
  }
  if (seq.is_mapping()) return seq.dict->find(v) != nullptr;
  for (auto& x : iterate(seq))
    if (py_equal(x, v)) return true;
  return false;
}
bool t_lower(const Value& v, Args&) {
  Args none;
  return truthy(call_value(get_attr(Value::string(to_str(v)), "islower"), none));
}
bool t_upper(const Value& v, Args&) {
  Args none;
  return truthy(call_value(get_attr(Value::string(to_str(v)), "isupper"), none));
}
bool t_sameas(const Value& v, Args& a) {
  const Value& o = test_arg(a);
  if (v.kind != o.kind) return false;
  if (v.is_seq()) return v.list == o.list;
  if (v.dict) return v.dict == o.dict;
  return py_equal(v, o);
}
bool t_escaped(const Value&, Args&) { return false; }
bool t_filter(const Value& v, Args&) { return v.is_string() && find_filter(v.s) != nullptr; }
bool t_test(const Value& v, Args&) { return v.is_string() && find_test(v.s) != nullptr; }

const std::map<std::string, TestFn>& tests() {
  static const std::map<std::string, TestFn> m = {
      {"defined", t_defined}, {"undefined", t_undefined}, {"none", t_none},       {"boolean", t_boolean},
      {"false", t_false},     {"true", t_true},           {"integer", t_integer}, {"float", t_float},
      {"number", t_number},   {"string", t_string},       {"mapping", t_mapping}, {"sequence", t_sequence},
      {"iterable", t_iterable}, {"callable", t_callable}, {"odd", t_odd},         {"even", t_even},
      {"divisibleby", t_divisibleby}, {"eq", t_eq},       {"equalto", t_eq},      {"==", t_eq},
      {"ne", t_ne},           {"!=", t_ne},               {"lt", t_lt},           {"lessthan", t_lt},
      {"<", t_lt},            {"le", t_le},               {"<=", t_le},           {"gt", t_gt},
      {"greaterthan", t_gt},  {">", t_gt},                {"ge", t_ge},           {">=", t_ge},
      {"in", t_in},           {"lower", t_lower},         {"upper", t_upper},     {"sameas", t_sameas},
      {"escaped", t_escaped}, {"filter", t_filter},       {"test", t_test},
  };
  return m;
}

std::string strftime_now(const std::string& fmt) {
  std::time_t now = std::time(nullptr);
  std::tm tm{};
  localtime_r(&now, &tm);
  if (fmt.empty()) return "";
  std::vector<char> buf(256 + fmt.size() * 16);
  size_t n = std::strftime(buf.data(), buf.size(), fmt.c_str(), &tm);
  return std::string(buf.data(), n);
}

}  // namespace

FilterFn find_filter(const std::string& name) {
  auto it = filters().find(name);
  return it == filters().end() ? nullptr : it->second;
}
TestFn find_test(const std::string& name) {
  auto it = tests().find(name);
  return it == tests().end() ? nullptr : it->second;
}
bool filter_exists(const std::string& name) { return find_filter(name) != nullptr; }
bool test_exists(const std::string& name) { return find_test(name) != nullptr; }

void add_globals(Dict& g) {
  auto set = [&](const char* name, std::function<Value(Args&)> f) { g.set(Value::string(name), Value::function(name, std::move(f))); };
  set("raise_exception", [](Args& a) -> Value {
    const Value* m = a.get(0, "message");
    throw_error("TemplateError", m ? to_str(*m) : "");
  });
  set("strftime_now", [](Args& a) {
    const Value* f = a.get(0, "format");
    if (!f || !f->is_string()) throw_error("TypeError", "strftime_now() needs a format string");
    return Value::string(strftime_now(f->s));
  });
  set("range", [](Args& a) {
    if (!a.kw.empty()) throw_error("TypeError", "range() takes no keyword arguments");
    if (a.pos.empty() || a.pos.size() > 3) throw_error("TypeError", "range expected 1 to 3 arguments");
    auto as_i = [](const Value& v) {
      if (v.kind == VK_INT) return v.i;
      if (v.kind == VK_BOOL) return int64_t(v.b);
      require_defined(v);
      throw_error("TypeError", "'" + type_name(v) + "' object cannot be interpreted as an integer");
    };
    int64_t start = 0, stop, step = 1;
    if (a.pos.size() == 1) stop = as_i(a.pos[0]);
    else start = as_i(a.pos[0]), stop = as_i(a.pos[1]);
    if (a.pos.size() == 3) step = as_i(a.pos[2]);
    if (step == 0) throw_error("ValueError", "range() arg 3 must not be zero");
    double len = std::ceil((double(stop) - double(start)) / double(step));
    if (len > double(kMaxRange))
      throw_error("OverflowError", "Range too big. The sandbox blocks ranges larger than MAX_RANGE (100000).");
    std::vector<Value> out;
    for (int64_t k = start; step > 0 ? k < stop : k > stop; k += step) out.push_back(Value::integer(k));
    return Value::new_list(std::move(out));
  });
  auto build_dict = [](Args& a, ValueKind kind) {
    Value d = Value::new_dict(kind);
    if (a.pos.size() > 1) throw_error("TypeError", "expected at most 1 positional argument");
    if (!a.pos.empty()) {
      const Value& src = a.pos[0];
      if (src.is_mapping()) {
        d.dict->items = src.dict->items;
      } else {
        for (auto& pair : iterate(src)) {
          if (!pair.is_seq() || pair.list->size() != 2) throw_error("ValueError", "dictionary update sequence element has wrong length");
          d.dict->set((*pair.list)[0], (*pair.list)[1]);
        }
      }
    }
    for (auto& kv : a.kw) d.dict->set(Value::string(kv.first), kv.second);
    if (kind == VK_NAMESPACE)
      for (auto& kv : d.dict->items)
        if (kv.first.is_string() && !kv.first.s.empty() && kv.first.s[0] == '_')
          throw_error("SecurityError", "Chat templates cannot store underscore-prefixed attributes on a namespace, but got '" +
                                           kv.first.s + "'. Please rename the attribute.");
    return d;
  };
  set("namespace", [build_dict](Args& a) { return build_dict(a, VK_NAMESPACE); });
  set("dict", [build_dict](Args& a) { return build_dict(a, VK_DICT); });
}

}  // namespace lora::jinja
