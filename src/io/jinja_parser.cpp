// Parser of the Jinja-subset interpreter: tokens -> syntax tree (jinja_ast.h). It mirrors
// jinja2/parser.py's grammar and precedence (condexpr < or < and < not < compare < +,- < ~ <
// *,/,//,% < ** < unary < postfix/filters/tests), so expressions group exactly as in Jinja,
// e.g. `a + b | trim` filters b alone and `not x is defined` negates the test.
// Nesting depth is capped so a hostile template cannot overflow the stack.
#include <set>

#include "io/jinja_ast.h"

namespace lora::jinja {
namespace {

constexpr int kMaxDepth = 200;

class Parser {
 public:
  Parser(const Source& src, std::vector<Token> toks) : src_(src), toks_(std::move(toks)) {}

  std::vector<StmtPtr> parse_all() {
    auto body = subparse({});
    if (cur().type != TK_EOF) fail(cur().pos, "unexpected " + describe(cur()));
    return body;
  }

 private:
  const Source& src_;
  std::vector<Token> toks_;
  size_t i_ = 0;
  int depth_ = 0;
  int loop_depth_ = 0;
  std::vector<std::string> blocks_;  // open block tags, for "innermost block" messages

  struct DepthGuard {
    Parser* p;
    explicit DepthGuard(Parser* p_, size_t pos) : p(p_) {
      if (++p->depth_ > kMaxDepth) p->fail(pos, "template nested too deeply", "simplify the template");
    }
    ~DepthGuard() { --p->depth_; }
  };

  const Token& cur() const { return toks_[i_]; }
  const Token& look(size_t k = 1) const { return toks_[std::min(i_ + k, toks_.size() - 1)]; }
  Token next() {
    Token t = toks_[i_];
    if (i_ + 1 < toks_.size()) ++i_;
    return t;
  }
  bool is_name(const char* n) const { return cur().type == TK_NAME && cur().text == n; }
  bool is_op(const char* o) const { return cur().type == TK_OP && cur().text == o; }
  bool skip_name(const char* n) {
    if (!is_name(n)) return false;
    next();
    return true;
  }
  bool skip_op(const char* o) {
    if (!is_op(o)) return false;
    next();
    return true;
  }
  static std::string describe(const Token& t) {
    if (t.type == TK_NAME) return "name '" + t.text + "'";
    return "'" + token_describe(t) + "'";
  }
  [[noreturn]] void fail(size_t pos, const std::string& msg, const std::string& hint = "") const {
    syntax_error(src_, pos, msg, hint);
  }
  void expect_op(const char* o) {
    if (!is_op(o)) fail(cur().pos, std::string("expected token '") + o + "', got " + describe(cur()));
    next();
  }
  Token expect_name() {
    if (cur().type != TK_NAME) fail(cur().pos, "expected token 'name', got " + describe(cur()));
    return next();
  }
  void expect_name(const char* n) {
    if (!is_name(n)) fail(cur().pos, std::string("expected token '") + n + "', got " + describe(cur()));
    next();
  }
  void expect_block_end() {
    if (cur().type != TK_BLOCK_END)
      fail(cur().pos, "expected token 'end of statement block', got " + describe(cur()),
           "a statement ends with %}; check for a missing operator or quote");
    next();
  }

  static ExprPtr node(ExprKind k, size_t pos) {
    auto e = std::make_shared<Expr>();
    e->kind = k;
    e->pos = pos;
    return e;
  }
  static StmtPtr stmt(StmtKind k, size_t pos) {
    auto s = std::make_shared<Stmt>();
    s->kind = k;
    s->pos = pos;
    return s;
  }

  // ---- statements -------------------------------------------------------------------------------
  [[noreturn]] void fail_eof(const std::vector<std::string>& ends) {
    std::string msg = "Unexpected end of template.";
    if (!ends.empty()) {
      msg += " Jinja was looking for the following tags: ";
      for (size_t k = 0; k < ends.size(); ++k) msg += (k ? " or '" : "'") + ends[k] + "'";
      msg += ".";
    }
    if (!blocks_.empty()) msg += " The innermost block that needs to be closed is '" + blocks_.back() + "'.";
    fail(cur().pos, msg, "add the missing {% end... %} tag");
  }

  std::vector<StmtPtr> subparse(const std::vector<std::string>& ends) {
    std::vector<StmtPtr> body;
    for (;;) {
      const Token& t = cur();
      if (t.type == TK_DATA) {
        auto s = stmt(S_DATA, t.pos);
        s->text = t.text;
        body.push_back(s);
        next();
      } else if (t.type == TK_VAR_BEGIN) {
        next();
        auto s = stmt(S_PRINT, t.pos);
        s->expr = parse_tuple(false, true, {}, false);
        if (cur().type != TK_VAR_END)
          fail(cur().pos, "expected token 'end of print statement', got " + describe(cur()),
               "an expression ends with }}; check for a missing operator or quote");
        next();
        body.push_back(s);
      } else if (t.type == TK_BLOCK_BEGIN) {
        next();
        if (cur().type == TK_NAME)
          for (auto& e : ends)
            if (cur().text == e) return body;
        body.push_back(parse_statement());
        expect_block_end();
      } else if (t.type == TK_EOF) {
        if (!ends.empty()) fail_eof(ends);
        return body;
      } else {
        fail(t.pos, "unexpected " + describe(t));
      }
    }
  }

  // {% tag ... %} body {% end %}: after the tag's own tokens.
  std::vector<StmtPtr> parse_statements(const std::vector<std::string>& ends, bool drop_needle) {
    skip_op(":");
    expect_block_end();
    auto body = subparse(ends);
    if (cur().type == TK_EOF) fail_eof(ends);
    if (drop_needle) next();
    return body;
  }

  StmtPtr parse_statement() {
    const Token t = cur();
    DepthGuard g(this, t.pos);
    if (t.type != TK_NAME) fail(t.pos, "tag name expected", "a block starts with a keyword: {% if ... %}, {% for ... %}");
    const std::string& n = t.text;
    static const std::set<std::string> unsupported = {"extends", "include", "import", "from", "call", "autoescape"};
    if (n == "for") return with_block("for", [&] { return parse_for(); });
    if (n == "if") return with_block("if", [&] { return parse_if(); });
    if (n == "set") return with_block("set", [&] { return parse_set(); });
    if (n == "macro") return with_block("macro", [&] { return parse_macro(); });
    if (n == "with") return with_block("with", [&] { return parse_with(); });
    if (n == "filter") return with_block("filter", [&] { return parse_filter_block(); });
    if (n == "block") return with_block("block", [&] { return parse_block(); });
    if (n == "generation") return with_block("generation", [&] { return parse_generation(); });
    if (n == "print") {
      next();
      auto s = stmt(S_PRINT, t.pos);
      s->expr = parse_tuple(false, true, {}, false);
      return s;
    }
    if (n == "break" || n == "continue") {
      next();
      if (loop_depth_ == 0) fail(t.pos, "'" + n + "' outside of a loop");
      return stmt(n == "break" ? S_BREAK : S_CONTINUE, t.pos);
    }
    if (unsupported.count(n))
      fail(t.pos, "the '" + n + "' tag is not supported by lora's template engine",
           "chat templates must be self-contained; inline the included text");
    std::string msg = "Encountered unknown tag '" + n + "'.";
    if (!blocks_.empty())
      msg += " The innermost block that needs to be closed is '" + blocks_.back() + "'.";
    fail(t.pos, msg, "check the tag's spelling and that every block is closed in order");
  }

  template <class F>
  StmtPtr with_block(const std::string& name, F&& f) {
    blocks_.push_back(name);
    StmtPtr s = f();
    blocks_.pop_back();
    return s;
  }

  StmtPtr parse_for() {
    auto s = stmt(S_FOR, next().pos);
    s->target = parse_assign_target({"in"});
    expect_name("in");
    s->expr = parse_tuple(false, false, {"recursive"}, false);
    if (skip_name("if")) s->cond = parse_expression(true);
    if (is_name("recursive")) fail(cur().pos, "recursive loops are not supported");
    ++loop_depth_;
    s->body = parse_statements({"endfor", "else"}, false);
    --loop_depth_;
    if (next().text == "else") s->else_body = parse_statements({"endfor"}, true);
    return s;
  }

  StmtPtr parse_if() {
    auto top = stmt(S_IF, next().pos);
    Stmt* node = top.get();
    for (;;) {
      node->expr = parse_tuple(false, false, {}, false);
      node->body = parse_statements({"elif", "else", "endif"}, false);
      Token t = next();
      if (t.text == "elif") {
        auto el = stmt(S_IF, t.pos);
        node->else_body.push_back(el);
        node = el.get();
        continue;
      }
      if (t.text == "else") node->else_body = parse_statements({"endif"}, true);
      break;
    }
    return top;
  }

  StmtPtr parse_set() {
    size_t pos = next().pos;
    if (cur().type == TK_NAME && look().type == TK_OP && look().text == ".") {
      auto s = stmt(S_SET_NS, pos);
      s->text = next().text;
      next();
      s->attr = expect_name().text;
      expect_op("=");
      s->expr = parse_tuple(false, true, {}, false);
      return s;
    }
    ExprPtr target = parse_assign_target({});
    if (skip_op("=")) {
      auto s = stmt(S_SET, pos);
      s->target = target;
      s->expr = parse_tuple(false, true, {}, false);
      return s;
    }
    auto s = stmt(S_SET_BLOCK, pos);
    s->target = target;
    if (is_op("|")) s->expr = parse_filter(nullptr, false);
    s->body = parse_statements({"endset"}, true);
    return s;
  }

  StmtPtr parse_macro() {
    auto s = stmt(S_MACRO, next().pos);
    s->text = expect_name().text;
    expect_op("(");
    bool have_default = false;
    while (!is_op(")")) {
      if (!s->params.empty()) expect_op(",");
      s->params.push_back(expect_name().text);
      if (skip_op("=")) {
        s->defaults.push_back(parse_expression(true));
        have_default = true;
      } else {
        if (have_default) fail(cur().pos, "non-default argument follows default argument");
        s->defaults.push_back(nullptr);
      }
    }
    expect_op(")");
    int saved = loop_depth_;
    loop_depth_ = 0;
    s->body = parse_statements({"endmacro"}, true);
    loop_depth_ = saved;
    return s;
  }

  StmtPtr parse_with() {
    auto s = stmt(S_WITH, next().pos);
    while (cur().type != TK_BLOCK_END) {
      if (!s->params.empty()) expect_op(",");
      s->params.push_back(expect_name().text);
      expect_op("=");
      s->defaults.push_back(parse_expression(true));
    }
    s->body = parse_statements({"endwith"}, true);
    return s;
  }

  StmtPtr parse_filter_block() {
    auto s = stmt(S_FILTER, next().pos);
    s->expr = parse_filter(nullptr, true);
    s->body = parse_statements({"endfilter"}, true);
    return s;
  }

  StmtPtr parse_block() {
    auto s = stmt(S_BLOCK, next().pos);
    s->text = expect_name().text;
    while (is_name("scoped") || is_name("required")) next();
    s->body = parse_statements({"endblock"}, true);
    if (cur().type == TK_NAME) next();  // {% endblock name %}
    return s;
  }

  StmtPtr parse_generation() {
    auto s = stmt(S_BLOCK, next().pos);
    s->body = parse_statements({"endgeneration"}, true);
    return s;
  }

  ExprPtr parse_assign_target(const std::vector<std::string>& extra_end) {
    ExprPtr t = parse_tuple(true, true, extra_end, false);
    auto check = [&](const ExprPtr& e) {
      if (e->kind != E_NAME) fail(e->pos, "can't assign to this expression", "assign to a plain name, e.g. {% set x = ... %}");
      if (e->name == "true" || e->name == "false" || e->name == "none") fail(e->pos, "can't assign to a constant");
    };
    if (t->kind == E_TUPLE) {
      for (auto& k : t->kids) check(k);
    } else {
      check(t);
    }
    return t;
  }

  // ---- expressions ------------------------------------------------------------------------------
  bool is_tuple_end(const std::vector<std::string>& extra_end) const {
    const Token& t = cur();
    if (t.type == TK_VAR_END || t.type == TK_BLOCK_END || (t.type == TK_OP && t.text == ")")) return true;
    if (t.type == TK_NAME)
      for (auto& e : extra_end)
        if (t.text == e) return true;
    return false;
  }

  ExprPtr parse_tuple(bool simplified, bool with_condexpr, const std::vector<std::string>& extra_end,
                      bool explicit_parens) {
    size_t pos = cur().pos;
    std::vector<ExprPtr> args;
    bool is_tuple = false;
    for (;;) {
      if (!args.empty()) expect_op(",");
      if (is_tuple_end(extra_end)) break;
      args.push_back(simplified ? parse_primary() : parse_expression(with_condexpr));
      if (is_op(",")) is_tuple = true;
      else break;
    }
    if (!is_tuple) {
      if (!args.empty()) return args[0];
      if (!explicit_parens) fail(cur().pos, "Expected an expression, got " + describe(cur()));
    }
    auto e = node(E_TUPLE, pos);
    e->kids = std::move(args);
    return e;
  }

  ExprPtr parse_expression(bool with_condexpr) { return with_condexpr ? parse_condexpr() : parse_or(); }

  ExprPtr parse_condexpr() {
    DepthGuard g(this, cur().pos);
    ExprPtr e1 = parse_or();
    while (is_name("if")) {
      size_t pos = next().pos;
      ExprPtr e2 = parse_or();
      ExprPtr e3 = skip_name("else") ? parse_condexpr() : nullptr;
      auto c = node(E_COND, pos);
      c->kids = {e2, e1, e3};
      e1 = c;
    }
    return e1;
  }

  ExprPtr parse_or() {
    ExprPtr l = parse_and();
    while (is_name("or")) {
      auto e = node(E_OR, next().pos);
      e->kids = {l, parse_and()};
      l = e;
    }
    return l;
  }
  ExprPtr parse_and() {
    ExprPtr l = parse_not();
    while (is_name("and")) {
      auto e = node(E_AND, next().pos);
      e->kids = {l, parse_not()};
      l = e;
    }
    return l;
  }
  ExprPtr parse_not() {
    if (is_name("not")) {
      DepthGuard g(this, cur().pos);
      auto e = node(E_NOT, next().pos);
      e->kids = {parse_not()};
      return e;
    }
    return parse_compare();
  }
  ExprPtr parse_compare() {
    size_t pos = cur().pos;
    ExprPtr first = parse_math1();
    auto e = node(E_COMPARE, pos);
    e->kids.push_back(first);
    for (;;) {
      const Token& t = cur();
      if (t.type == TK_OP && (t.text == "==" || t.text == "!=" || t.text == "<" || t.text == "<=" || t.text == ">" ||
                              t.text == ">=")) {
        e->ops.push_back(next().text);
      } else if (is_name("in")) {
        next();
        e->ops.push_back("in");
      } else if (is_name("not") && look().type == TK_NAME && look().text == "in") {
        next();
        next();
        e->ops.push_back("notin");
      } else {
        break;
      }
      e->kids.push_back(parse_math1());
    }
    return e->ops.empty() ? first : e;
  }
  ExprPtr binop(const std::string& op, ExprPtr l, ExprPtr r, size_t pos) {
    auto e = node(E_BINOP, pos);
    e->name = op;
    e->kids = {std::move(l), std::move(r)};
    return e;
  }
  ExprPtr parse_math1() {
    ExprPtr l = parse_concat();
    while (is_op("+") || is_op("-")) {
      Token t = next();
      l = binop(t.text, l, parse_concat(), t.pos);
    }
    return l;
  }
  ExprPtr parse_concat() {
    ExprPtr l = parse_math2();
    while (is_op("~")) {
      Token t = next();
      l = binop("~", l, parse_math2(), t.pos);
    }
    return l;
  }
  ExprPtr parse_math2() {
    ExprPtr l = parse_pow();
    while (is_op("*") || is_op("/") || is_op("//") || is_op("%")) {
      Token t = next();
      l = binop(t.text, l, parse_pow(), t.pos);
    }
    return l;
  }
  ExprPtr parse_pow() {
    ExprPtr l = parse_unary(true);
    while (is_op("**")) {
      Token t = next();
      l = binop("**", l, parse_unary(true), t.pos);
    }
    return l;
  }
  ExprPtr parse_unary(bool with_filter) {
    DepthGuard g(this, cur().pos);
    ExprPtr n;
    if (is_op("-") || is_op("+")) {
      Token t = next();
      n = node(t.text == "-" ? E_NEG : E_POS, t.pos);
      n->kids = {parse_unary(false)};
    } else {
      n = parse_primary();
    }
    n = parse_postfix(n);
    if (with_filter) n = parse_filter_expr(n);
    return n;
  }

  ExprPtr parse_primary() {
    DepthGuard g(this, cur().pos);
    const Token t = cur();
    if (t.type == TK_NAME) {
      next();
      if (t.text == "true" || t.text == "True" || t.text == "false" || t.text == "False") {
        auto e = node(E_CONST, t.pos);
        e->value = Value::boolean(t.text == "true" || t.text == "True");
        return e;
      }
      if (t.text == "none" || t.text == "None") {
        auto e = node(E_CONST, t.pos);
        e->value = Value::none();
        return e;
      }
      auto e = node(E_NAME, t.pos);
      e->name = t.text;
      return e;
    }
    if (t.type == TK_STRING) {
      std::string buf;
      while (cur().type == TK_STRING) buf += next().text;
      auto e = node(E_CONST, t.pos);
      e->value = Value::string(std::move(buf));
      return e;
    }
    if (t.type == TK_INT || t.type == TK_FLOAT) {
      next();
      auto e = node(E_CONST, t.pos);
      e->value = t.type == TK_INT ? Value::integer(t.ival) : Value::floating(t.fval);
      return e;
    }
    if (is_op("(")) {
      next();
      ExprPtr e = parse_tuple(false, true, {}, true);
      expect_op(")");
      return e;
    }
    if (is_op("[")) {
      next();
      auto e = node(E_LIST, t.pos);
      while (!is_op("]")) {
        if (!e->kids.empty()) expect_op(",");
        if (is_op("]")) break;
        e->kids.push_back(parse_expression(true));
      }
      expect_op("]");
      return e;
    }
    if (is_op("{")) {
      next();
      auto e = node(E_DICT, t.pos);
      while (!is_op("}")) {
        if (!e->kids.empty()) expect_op(",");
        if (is_op("}")) break;
        e->kids.push_back(parse_expression(true));
        expect_op(":");
        e->kids.push_back(parse_expression(true));
      }
      expect_op("}");
      return e;
    }
    fail(t.pos, "unexpected " + describe(t));
  }

  ExprPtr parse_postfix(ExprPtr n) {
    for (;;) {
      if (is_op(".") || is_op("[")) n = parse_subscript(n);
      else if (is_op("(")) n = parse_call(n);
      else return n;
    }
  }

  ExprPtr parse_filter_expr(ExprPtr n) {
    for (;;) {
      if (is_op("|")) n = parse_filter(n, false);
      else if (is_name("is")) n = parse_test(n);
      else if (is_op("(")) n = parse_call(n);
      else return n;
    }
  }

  ExprPtr parse_subscript(ExprPtr obj) {
    DepthGuard g(this, cur().pos);
    Token t = next();
    if (t.text == ".") {
      Token a = next();
      if (a.type == TK_NAME) {
        auto e = node(E_GETATTR, t.pos);
        e->name = a.text;
        e->kids = {obj};
        return e;
      }
      if (a.type != TK_INT) fail(a.pos, "expected name or number");
      auto k = node(E_CONST, a.pos);
      k->value = Value::integer(a.ival);
      auto e = node(E_GETITEM, t.pos);
      e->kids = {obj, k};
      return e;
    }
    std::vector<ExprPtr> args;
    while (!is_op("]")) {
      if (!args.empty()) expect_op(",");
      args.push_back(parse_subscribed());
    }
    expect_op("]");
    if (args.size() == 1 && args[0]->kind == E_SLICE) {
      args[0]->kids[0] = obj;
      return args[0];
    }
    auto e = node(E_GETITEM, t.pos);
    if (args.size() == 1) {
      e->kids = {obj, args[0]};
    } else {
      for (auto& a : args)
        if (a->kind == E_SLICE) fail(a->pos, "multi-dimensional slices are not supported");
      auto tup = node(E_TUPLE, t.pos);
      tup->kids = args;
      e->kids = {obj, tup};
    }
    return e;
  }

  // One subscript: an expression or a slice start:stop:step (kids[0] is filled by the caller).
  ExprPtr parse_subscribed() {
    size_t pos = cur().pos;
    ExprPtr start;
    if (is_op(":")) {
      next();
    } else {
      start = parse_expression(true);
      if (!is_op(":")) return start;
      next();
    }
    auto e = node(E_SLICE, pos);
    ExprPtr stop, step;
    if (!is_op(":") && !is_op("]") && !is_op(",")) stop = parse_expression(true);
    if (is_op(":")) {
      next();
      if (!is_op("]") && !is_op(",")) step = parse_expression(true);
    }
    e->kids = {nullptr, start, stop, step};
    return e;
  }

  void parse_call_args(Expr& e) {
    size_t pos = cur().pos;
    expect_op("(");
    bool require_comma = false;
    auto ensure = [&](bool ok) {
      if (!ok) fail(pos, "invalid syntax for function call expression");
    };
    while (!is_op(")")) {
      if (require_comma) {
        expect_op(",");
        if (is_op(")")) break;
      }
      if (is_op("*")) {
        ensure(!e.dyn_args && !e.dyn_kwargs);
        next();
        e.dyn_args = parse_expression(true);
      } else if (is_op("**")) {
        ensure(!e.dyn_kwargs);
        next();
        e.dyn_kwargs = parse_expression(true);
      } else if (cur().type == TK_NAME && look().type == TK_OP && look().text == "=") {
        ensure(!e.dyn_kwargs);
        std::string key = next().text;
        next();
        e.kwargs.emplace_back(key, parse_expression(true));
      } else {
        ensure(!e.dyn_args && !e.dyn_kwargs && e.kwargs.empty());
        e.kids.push_back(parse_expression(true));
      }
      require_comma = true;
    }
    expect_op(")");
  }

  ExprPtr parse_call(ExprPtr fn) {
    DepthGuard g(this, cur().pos);
    auto e = node(E_CALL, cur().pos);
    e->kids.push_back(fn);
    parse_call_args(*e);
    return e;
  }

  ExprPtr parse_filter(ExprPtr n, bool start_inline) {
    while (is_op("|") || start_inline) {
      if (!start_inline) next();
      Token t = expect_name();
      std::string name = t.text;
      while (is_op(".")) {
        next();
        name += "." + expect_name().text;
      }
      if (!filter_exists(name))
        fail(t.pos, "No filter named '" + name + "'.", "see the supported filters in docs (trim, tojson, join, ...)");
      auto e = node(E_FILTER, t.pos);
      e->name = name;
      e->kids.push_back(n);
      if (is_op("(")) parse_call_args(*e);
      n = e;
      start_inline = false;
    }
    return n;
  }

  ExprPtr parse_test(ExprPtr n) {
    Token is_tok = next();
    bool negated = skip_name("not");
    Token t = expect_name();
    std::string name = t.text;
    while (is_op(".")) {
      next();
      name += "." + expect_name().text;
    }
    if (!test_exists(name)) fail(t.pos, "No test named '" + name + "'.", "tests are e.g. defined, none, string, mapping");
    auto e = node(E_TEST, is_tok.pos);
    e->name = name;
    e->kids.push_back(n);
    const Token& c = cur();
    bool arg_start = c.type == TK_NAME || c.type == TK_STRING || c.type == TK_INT || c.type == TK_FLOAT ||
                     (c.type == TK_OP && (c.text == "[" || c.text == "{"));
    if (is_op("(")) {
      parse_call_args(*e);
    } else if (arg_start && !is_name("else") && !is_name("or") && !is_name("and")) {
      if (is_name("is")) fail(c.pos, "You cannot chain multiple tests with is");
      e->kids.push_back(parse_postfix(parse_primary()));
    }
    if (!negated) return e;
    auto neg = node(E_NOT, is_tok.pos);
    neg->kids = {e};
    return neg;
  }
};

}  // namespace

std::shared_ptr<Template> parse_template(const std::string& text, const std::string& name) {
  auto t = std::make_shared<Template>();
  t->source = std::make_shared<Source>(name, text);
  Parser p(*t->source, tokenize(*t->source));
  t->body = p.parse_all();
  return t;
}

}  // namespace lora::jinja
