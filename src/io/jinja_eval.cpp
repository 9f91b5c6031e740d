// Evaluator of the Jinja-subset interpreter: walks the syntax tree (jinja_ast.h) and writes the
// output. Scoping follows Jinja: the template's top level is one scope (`if` does not open a
// scope); every loop iteration, macro call, {% with %}, {% filter %} and block body gets a fresh
// child scope, so a `set` inside a loop is invisible after it (hence namespace()).
// Limits keep hostile templates from exhausting the machine: macro recursion depth and output size.
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "io/jinja.h"
#include "io/jinja_builtins.h"

namespace lora::jinja {
namespace {

constexpr int kMaxCallDepth = 64;
constexpr size_t kMaxOutput = size_t(256) << 20;

struct Scope {
  Scope* parent = nullptr;
  std::vector<std::pair<std::string, Value>> vars;
  Value* find(const std::string& n) {
    for (auto& kv : vars)
      if (kv.first == n) return &kv.second;
    return nullptr;
  }
  void set(const std::string& n, Value v) {
    if (Value* p = find(n)) *p = std::move(v);
    else vars.emplace_back(n, std::move(v));
  }
};

enum Flow { FLOW_NORMAL, FLOW_BREAK, FLOW_CONTINUE };

bool contains(const Value& container, const Value& item) {
  switch (container.kind) {
    case VK_UNDEFINED: return false;
    case VK_STRING:
      if (!item.is_string())
        throw_error("TypeError", "'in <string>' requires string as left operand, not " + type_name(item));
      return container.s.find(item.s) != std::string::npos;
    case VK_LIST:
    case VK_TUPLE:
      for (auto& x : *container.list)
        if (py_equal(x, item)) return true;
      return false;
    case VK_DICT: return container.dict->find(item) != nullptr;
    default: throw_error("TypeError", "argument of type '" + type_name(container) + "' is not iterable");
  }
}

class Interp {
 public:
  explicit Interp(const Template& t) : tpl_(t), src_(*t.source) {}

  std::string run(const Vars& vars) {
    globals_ = Value::new_dict();
    add_globals(*globals_.dict);
    for (auto& kv : vars) globals_.dict->set(Value::string(kv.first), kv.second);
    Scope root;
    root_ = &root;
    std::string out;
    try {
      exec(tpl_.body, root, out);
    } catch (const Exception& e) {
      auto [line, col] = src_.line_col(pos_);
      std::string where = src_.name + ":" + std::to_string(line) + ":" + std::to_string(col);
      if (e.type() == "TemplateError")
        fail_input(where, e.what(), "the chat template rejected this input (raise_exception)");
      fail_input(where, e.type() + ": " + e.what(), "the template failed while rendering; check the values it reads");
    }
    return out;
  }

 private:
  const Template& tpl_;
  const Source& src_;
  Value globals_;
  Scope* root_ = nullptr;
  size_t pos_ = 0;
  int call_depth_ = 0;

  Value lookup(const std::string& name, Scope& sc) {
    for (Scope* s = &sc; s; s = s->parent)
      if (Value* v = s->find(name)) return *v;
    if (const Value* v = globals_.dict->find(name)) return *v;
    return Value::undefined("'" + name + "' is undefined");
  }

  void append(std::string& out, const std::string& s) {
    out += s;
    if (out.size() > kMaxOutput) throw_error("MemoryError", "template output exceeds 256 MiB");
  }

  // ---- statements -------------------------------------------------------------------------------
  Flow exec(const std::vector<StmtPtr>& body, Scope& sc, std::string& out) {
    for (auto& st : body) {
      Flow f = exec_one(*st, sc, out);
      if (f != FLOW_NORMAL) return f;
    }
    return FLOW_NORMAL;
  }

  void bind(const Expr& target, const Value& v, Scope& sc) {
    if (target.kind == E_NAME) {
      sc.set(target.name, v);
      return;
    }
    // Tuple unpacking: Python iterates the value and needs the exact count.
    pos_ = target.pos;
    std::vector<Value> items = iterate(v);
    size_t want = target.kids.size();
    if (items.size() < want)
      throw_error("ValueError", "not enough values to unpack (expected " + std::to_string(want) + ", got " +
                                    std::to_string(items.size()) + ")");
    if (items.size() > want) throw_error("ValueError", "too many values to unpack (expected " + std::to_string(want) + ")");
    for (size_t k = 0; k < want; ++k) bind(*target.kids[k], items[k], sc);
  }

  Flow exec_one(const Stmt& st, Scope& sc, std::string& out) {
    switch (st.kind) {
      case S_DATA: append(out, st.text); return FLOW_NORMAL;
      case S_PRINT: {
        Value v = eval(*st.expr, sc);
        append(out, to_str(v));
        return FLOW_NORMAL;
      }
      case S_IF:
        if (truthy(eval(*st.expr, sc))) return exec(st.body, sc, out);
        return exec(st.else_body, sc, out);
      case S_FOR: return exec_for(st, sc, out);
      case S_SET: {
        Value v = eval(*st.expr, sc);
        bind(*st.target, v, sc);
        return FLOW_NORMAL;
      }
      case S_SET_NS: {
        Value v = eval(*st.expr, sc);
        pos_ = st.pos;
        Value ns = lookup(st.text, sc);
        if (ns.kind != VK_NAMESPACE) throw_error("TemplateRuntimeError", "cannot assign attribute on non-namespace object");
        if (!st.attr.empty() && st.attr[0] == '_')
          throw_error("SecurityError", "Chat templates cannot store underscore-prefixed attributes on a namespace, but got '" +
                                           st.attr + "'. Please rename the attribute.");
        ns.dict->set(Value::string(st.attr), v);
        return FLOW_NORMAL;
      }
      case S_SET_BLOCK: {
        Scope inner{&sc, {}};
        std::string body;
        exec(st.body, inner, body);
        Value v = Value::string(body);
        if (st.expr) v = eval_filter_chain(*st.expr, sc, v);
        bind(*st.target, v, sc);
        return FLOW_NORMAL;
      }
      case S_MACRO: sc.set(st.text, make_macro(st)); return FLOW_NORMAL;
      case S_BREAK: return FLOW_BREAK;
      case S_CONTINUE: return FLOW_CONTINUE;
      case S_WITH: {
        Scope inner{&sc, {}};
        for (size_t k = 0; k < st.params.size(); ++k) inner.set(st.params[k], eval(*st.defaults[k], sc));
        return exec(st.body, inner, out);
      }
      case S_FILTER: {
        Scope inner{&sc, {}};
        std::string body;
        Flow f = exec(st.body, inner, body);
        append(out, to_str(eval_filter_chain(*st.expr, sc, Value::string(body))));
        return f;
      }
      case S_BLOCK: {
        Scope inner{&sc, {}};
        return exec(st.body, inner, out);
      }
    }
    return FLOW_NORMAL;
  }

  Flow exec_for(const Stmt& st, Scope& sc, std::string& out) {
    Value seq = eval(*st.expr, sc);
    pos_ = st.expr->pos;
    std::vector<Value> items = iterate(seq);
    if (st.cond) {
      std::vector<Value> kept;
      for (auto& it : items) {
        Scope probe{&sc, {}};
        bind(*st.target, it, probe);
        if (truthy(eval(*st.cond, probe))) kept.push_back(it);
      }
      items.swap(kept);
    }
    if (items.empty()) return exec(st.else_body, sc, out);
    const int64_t n = int64_t(items.size());
    auto cycle_state = std::make_shared<int64_t>(0);
    for (int64_t k = 0; k < n; ++k) {
      Scope iter{&sc, {}};
      Value loop = Value::new_dict(VK_OBJECT);
      Dict& d = *loop.dict;
      d.set(Value::string("index"), Value::integer(k + 1));
      d.set(Value::string("index0"), Value::integer(k));
      d.set(Value::string("revindex"), Value::integer(n - k));
      d.set(Value::string("revindex0"), Value::integer(n - k - 1));
      d.set(Value::string("first"), Value::boolean(k == 0));
      d.set(Value::string("last"), Value::boolean(k == n - 1));
      d.set(Value::string("length"), Value::integer(n));
      d.set(Value::string("depth"), Value::integer(1));
      d.set(Value::string("depth0"), Value::integer(0));
      d.set(Value::string("previtem"), k > 0 ? items[k - 1] : Value::undefined("there is no previous item"));
      d.set(Value::string("nextitem"), k + 1 < n ? items[k + 1] : Value::undefined("there is no next item"));
      int64_t index0 = k;
      d.set(Value::string("cycle"), Value::function("cycle", [index0](Args& a) {
              if (a.pos.empty()) throw_error("TypeError", "no items for cycling given");
              return a.pos[size_t(index0) % a.pos.size()];
            }));
      iter.set("loop", loop);
      bind(*st.target, items[k], iter);
      Flow f = exec(st.body, iter, out);
      if (f == FLOW_BREAK) break;
    }
    return FLOW_NORMAL;
  }

  Value make_macro(const Stmt& st) {
    const Stmt* m = &st;
    return Value::function(st.text, [this, m](Args& a) -> Value {
      if (call_depth_ >= kMaxCallDepth) throw_error("RecursionError", "maximum macro recursion depth exceeded");
      if (a.pos.size() > m->params.size())
        throw_error("TypeError", "macro '" + m->text + "' takes not more than " + std::to_string(m->params.size()) +
                                     " argument(s)");
      Scope sc{root_, {}};
      for (auto& kv : a.kw)
        if (std::find(m->params.begin(), m->params.end(), kv.first) == m->params.end())
          throw_error("TypeError", "macro '" + m->text + "' takes no keyword argument '" + kv.first + "'");
      for (size_t k = 0; k < m->params.size(); ++k) {
        const Value* v = a.get(k, m->params[k]);
        if (v) sc.set(m->params[k], *v);
        else if (m->defaults[k]) sc.set(m->params[k], eval(*m->defaults[k], sc));
        else sc.set(m->params[k], Value::undefined("parameter '" + m->params[k] + "' was not provided"));
      }
      ++call_depth_;
      std::string body;
      size_t saved = pos_;
      try {
        exec(m->body, sc, body);
      } catch (...) {
        --call_depth_;
        throw;
      }
      --call_depth_;
      pos_ = saved;
      return Value::string(body);
    });
  }

  // ---- expressions ------------------------------------------------------------------------------
  Args eval_args(const Expr& e, size_t first, Scope& sc) {
    Args a;
    for (size_t k = first; k < e.kids.size(); ++k) a.pos.push_back(eval(*e.kids[k], sc));
    for (auto& kv : e.kwargs) a.kw.emplace_back(kv.first, eval(*kv.second, sc));
    if (e.dyn_args)
      for (auto& v : iterate(eval(*e.dyn_args, sc))) a.pos.push_back(v);
    if (e.dyn_kwargs) {
      Value d = eval(*e.dyn_kwargs, sc);
      if (!d.is_mapping()) throw_error("TypeError", "argument after ** must be a mapping, not " + type_name(d));
      for (auto& kv : d.dict->items) a.kw.emplace_back(to_str(kv.first), kv.second);
    }
    return a;
  }

  // A filter chain whose innermost input is null ({% filter %}, {% set x | f %}) applied to `input`.
  Value eval_filter_chain(const Expr& e, Scope& sc, const Value& input) {
    Value in = e.kids[0] ? eval_filter_chain(*e.kids[0], sc, input) : input;
    Args a = eval_args(e, 1, sc);
    pos_ = e.pos;
    return find_filter(e.name)(in, a);
  }

  Value eval(const Expr& e, Scope& sc) {
    switch (e.kind) {
      case E_CONST: return e.value;
      case E_NAME: return lookup(e.name, sc);
      case E_GETATTR: {
        Value obj = eval(*e.kids[0], sc);
        pos_ = e.pos;
        return get_attr(obj, e.name);
      }
      case E_GETITEM: {
        Value obj = eval(*e.kids[0], sc);
        Value key = eval(*e.kids[1], sc);
        pos_ = e.pos;
        return get_item(obj, key);
      }
      case E_SLICE: {
        Value obj = eval(*e.kids[0], sc);
        Value parts[3];
        for (int k = 0; k < 3; ++k)
          if (e.kids[k + 1]) parts[k] = eval(*e.kids[k + 1], sc);
        pos_ = e.pos;
        return get_slice(obj, e.kids[1] ? &parts[0] : nullptr, e.kids[2] ? &parts[1] : nullptr,
                         e.kids[3] ? &parts[2] : nullptr);
      }
      case E_CALL: {
        Value fn = eval(*e.kids[0], sc);
        Args a = eval_args(e, 1, sc);
        pos_ = e.pos;
        return call_value(fn, a);
      }
      case E_FILTER: {
        Value in = eval(*e.kids[0], sc);
        Args a = eval_args(e, 1, sc);
        pos_ = e.pos;
        return find_filter(e.name)(in, a);
      }
      case E_TEST: {
        Value v = eval(*e.kids[0], sc);
        Args a = eval_args(e, 1, sc);
        pos_ = e.pos;
        return Value::boolean(find_test(e.name)(v, a));
      }
      case E_NOT: return Value::boolean(!truthy(eval(*e.kids[0], sc)));
      case E_NEG:
      case E_POS: {
        Value v = eval(*e.kids[0], sc);
        pos_ = e.pos;
        require_defined(v);
        bool neg = e.kind == E_NEG;
        if (v.kind == VK_INT || v.kind == VK_BOOL) {
          int64_t x = v.kind == VK_BOOL ? v.b : v.i;
          if (neg && x == INT64_MIN) throw_error("OverflowError", "integer result exceeds 64 bits");
          return Value::integer(neg ? -x : x);
        }
        if (v.kind == VK_FLOAT) return Value::floating(neg ? -v.f : v.f);
        throw_error("TypeError", std::string("bad operand type for unary ") + (neg ? "-" : "+") + ": '" + type_name(v) + "'");
      }
      case E_BINOP: {
        Value a = eval(*e.kids[0], sc);
        Value b = eval(*e.kids[1], sc);
        pos_ = e.pos;
        return binary_op(e.name, a, b);
      }
      case E_AND: {
        Value l = eval(*e.kids[0], sc);
        return truthy(l) ? eval(*e.kids[1], sc) : l;
      }
      case E_OR: {
        Value l = eval(*e.kids[0], sc);
        return truthy(l) ? l : eval(*e.kids[1], sc);
      }
      case E_COMPARE: {
        Value left = eval(*e.kids[0], sc);
        for (size_t k = 0; k < e.ops.size(); ++k) {
          Value right = eval(*e.kids[k + 1], sc);
          pos_ = e.pos;
          const std::string& op = e.ops[k];
          bool r;
          if (op == "==") r = py_equal(left, right);
          else if (op == "!=") r = !py_equal(left, right);
          else if (op == "<") r = py_less(left, right);
          else if (op == ">") r = py_less(right, left);
          else if (op == "<=") r = py_less(left, right) || py_equal(left, right);
          else if (op == ">=") r = py_less(right, left) || py_equal(left, right);
          else if (op == "in") r = contains(right, left);
          else r = !contains(right, left);
          if (!r) return Value::boolean(false);
          left = std::move(right);
        }
        return Value::boolean(true);
      }
      case E_COND: {
        if (truthy(eval(*e.kids[0], sc))) return eval(*e.kids[1], sc);
        if (e.kids[2]) return eval(*e.kids[2], sc);
        return Value::undefined("the inline if-expression on line " + std::to_string(src_.line_col(e.pos).first) +
                                " evaluated to false and no else section was defined.");
      }
      case E_LIST:
      case E_TUPLE: {
        std::vector<Value> items;
        for (auto& k : e.kids) items.push_back(eval(*k, sc));
        return Value::new_list(std::move(items), e.kind == E_TUPLE);
      }
      case E_DICT: {
        Value d = Value::new_dict();
        for (size_t k = 0; k + 1 < e.kids.size(); k += 2) {
          Value key = eval(*e.kids[k], sc);
          pos_ = e.kids[k]->pos;
          if (key.kind == VK_LIST || key.kind == VK_DICT || key.kind == VK_NAMESPACE || key.kind == VK_UNDEFINED)
            throw_error("TypeError", "unhashable type: '" + type_name(key) + "'");
          d.dict->set(key, eval(*e.kids[k + 1], sc));
        }
        return d;
      }
    }
    return Value();
  }
};

}  // namespace

std::string render(const Template& tpl, const Vars& vars) {
  Interp in(tpl);
  return in.run(vars);
}

std::string render_string(const std::string& source, const Vars& vars, const std::string& name) {
  auto tpl = parse_template(source, name);
  return render(*tpl, vars);
}

Value value_from_json(const nlohmann::ordered_json& j) {
  switch (j.type()) {
    case nlohmann::ordered_json::value_t::null: return Value::none();
    case nlohmann::ordered_json::value_t::boolean: return Value::boolean(j.get<bool>());
    case nlohmann::ordered_json::value_t::number_integer: return Value::integer(j.get<int64_t>());
    case nlohmann::ordered_json::value_t::number_unsigned: {
      uint64_t u = j.get<uint64_t>();
      return u > uint64_t(INT64_MAX) ? Value::floating(double(u)) : Value::integer(int64_t(u));
    }
    case nlohmann::ordered_json::value_t::number_float: return Value::floating(j.get<double>());
    case nlohmann::ordered_json::value_t::string: return Value::string(j.get<std::string>());
    case nlohmann::ordered_json::value_t::array: {
      std::vector<Value> items;
      for (auto& x : j) items.push_back(value_from_json(x));
      return Value::new_list(std::move(items));
    }
    case nlohmann::ordered_json::value_t::object: {
      Value d = Value::new_dict();
      for (auto& [k, v] : j.items()) d.dict->set(Value::string(k), value_from_json(v));
      return d;
    }
    default: return Value::none();
  }
}

}  // namespace lora::jinja
