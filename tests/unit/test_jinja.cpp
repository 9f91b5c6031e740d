// Tests of the Jinja-subset interpreter (io/jinja*.cpp): expressions, filters, tests, loops, scoping,
// whitespace control and errors. The bulk is tests/fixtures/chat/jinja_cases.json, rendered by
// transformers' own Jinja environment (tools/gen_chat_fixtures.py) and compared byte for byte; the
// hand-written cases below cover error positions and robustness on malformed input.
#include <gtest/gtest.h>

#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>

#include "core/error.h"
#include "io/jinja.h"
#include "test_util.h"

namespace lora {
namespace {

using jinja::Value;
using jinja::Vars;

std::string read_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::ostringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

std::string render(const std::string& src, const Vars& vars = {}) { return jinja::render_string(src, vars, "t"); }

// Message of the lora::Error thrown by rendering, or "" when it rendered.
std::string render_error(const std::string& src, const Vars& vars = {}) {
  try {
    render(src, vars);
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

TEST(Jinja, FixtureCasesMatchTransformers) {
  const std::string path = test::fixture("chat/jinja_cases.json");
  ASSERT_TRUE(test::file_exists(path)) << path;
  auto doc = nlohmann::ordered_json::parse(read_file(path));
  int checked = 0;
  for (auto& c : doc["cases"]) {
    // Either an inline template or one of the fixture .jinja files (tool-calling conversations).
    const std::string tpl = c.contains("template_file")
                                ? read_file(test::fixture("chat/" + c["template_file"].get<std::string>()))
                                : c["template"].get<std::string>();
    Vars vars;
    for (auto& [k, v] : c["context"].items()) vars.emplace_back(k, jinja::value_from_json(v));
    SCOPED_TRACE("template: " + (c.contains("template_file") ? c["template_file"].get<std::string>() : tpl));
    if (c.contains("expected")) {
      std::string got;
      try {
        got = render(tpl, vars);
      } catch (const Error& e) {
        ADD_FAILURE() << "threw: " << e.what();
        continue;
      }
      EXPECT_EQ(got, c["expected"].get<std::string>());
    } else if (c.contains("syntax_error")) {
      std::string err = render_error(tpl, vars);
      EXPECT_NE(err.find("syntax error"), std::string::npos) << err;
      EXPECT_NE(err.find("t:" + std::to_string(c["line"].get<int>()) + ":"), std::string::npos) << err;
      EXPECT_NE(err.find(c["syntax_error"].get<std::string>()), std::string::npos) << err;
    } else {
      // "TypeName: message" from Python; ours says "t:line:col: TypeName: message".
      std::string want = c["error"].get<std::string>();
      std::string err = render_error(tpl, vars);
      ASSERT_FALSE(err.empty()) << "expected an error: " << want;
      std::string msg = want.substr(want.find(": ") + 2);
      EXPECT_NE(err.find(msg), std::string::npos) << err << " vs " << want;
    }
    ++checked;
  }
  EXPECT_GE(checked, 60);
}

TEST(Jinja, Literals) {
  EXPECT_EQ(render("{{ 'a\\tb' }}|{{ \"q'\" }}|{{ 0b101 }}|{{ 0o17 }}|{{ 1_0 }}|{{ 2.50 }}|{{ True }}|{{ None }}"),
            "a\tb|q'|5|15|10|2.5|True|None");
  EXPECT_EQ(render("{{ {'a': [1, (2,)], 3: none} }}"), "{'a': [1, (2,)], 3: None}");
  EXPECT_EQ(render("{{ 'ab' 'cd' }}"), "abcd");  // adjacent literals concatenate
}

TEST(Jinja, Precedence) {
  EXPECT_EQ(render("{{ 'a' ~ (1 + 2) }}"), "a3");
  EXPECT_NE(render_error("{{ 'a' ~ 1 + 2 }}").find("TypeError"), std::string::npos);  // ~ binds tighter than +
  EXPECT_EQ(render("{{ ' x ' + ' y ' | trim }}"), " x y");            // filter binds to the operand
  EXPECT_EQ(render("{{ not none is defined }}"), "False");           // not (none is defined)
  EXPECT_EQ(render("{{ -2 ** 2 }}|{{ (-2) ** 2 }}"), "4|4");          // Jinja: unary binds tighter
  EXPECT_EQ(render("{{ 1 if false else 2 if false else 3 }}"), "3");
}

TEST(Jinja, UndefinedSemantics) {
  EXPECT_EQ(render("[{{ nope }}]{{ nope is undefined }}{{ nope|length }}{% for x in nope %}x{% endfor %}"), "[]True0");
  EXPECT_NE(render_error("{{ nope.attr }}").find("'nope' is undefined"), std::string::npos);
  EXPECT_NE(render_error("{{ nope + 1 }}").find("UndefinedError"), std::string::npos);
  // Missing keys and indices are undefined, not errors; only using them further fails.
  Vars v = {{"m", jinja::value_from_json(nlohmann::ordered_json::parse(R"({"role": "user"})"))}};
  EXPECT_EQ(render("{{ m.content is defined }}{{ m['x'] }}{{ m.role[9] }}", v), "False");
  EXPECT_NE(render_error("{{ m.content.strip() }}", v).find("has no attribute 'content'"), std::string::npos);
}

TEST(Jinja, WhitespaceControl) {
  // trim_blocks removes the newline after a block tag; lstrip_blocks the indentation before it.
  EXPECT_EQ(render("{% if true %}\n  a\n{% endif %}\nb"), "  a\nb");
  EXPECT_EQ(render("x\n    {% if true %}y{% endif %}"), "x\ny");
  // Print tags are not lstripped; - strips all whitespace including newlines.
  EXPECT_EQ(render("x\n    {{ 'y' }}"), "x\n    y");
  EXPECT_EQ(render("a  \n\n {{- 'b' -}} \n\n c"), "abc");
  // + disables lstrip (before) and trim (after).
  EXPECT_EQ(render("x\n  {%+ if true +%}\ny{% endif %}"), "x\n  \ny");
  // One trailing newline of the template is dropped; \r\n becomes \n.
  EXPECT_EQ(render("a\r\nb\n"), "a\nb");
  EXPECT_EQ(render("a\n\n"), "a\n");
  // Comments are trimmed like blocks.
  EXPECT_EQ(render("a\n  {# c #}\nb"), "a\nb");
}

TEST(Jinja, LoopsAndScopes) {
  EXPECT_EQ(render("{% for a, b in [(1, 2), (3, 4)] %}{{ a + b }}{% if not loop.last %},{% endif %}{% endfor %}"), "3,7");
  EXPECT_EQ(render("{% for x in [1, 2, 3] %}{% set y = x %}{% endfor %}[{{ y }}]"), "[]");
  EXPECT_EQ(render("{% set ns = namespace(found=false) %}{% for x in [1, 2] %}{% if x == 2 %}{% set ns.found = true %}"
                   "{% endif %}{% endfor %}{{ ns.found }}"),
            "True");
  EXPECT_EQ(render("{% for x in [1, 2, 3] %}{% for y in [1, 2] %}{% if y == 2 %}{% break %}{% endif %}{{ x }}{{ y }}"
                   "{% endfor %}{% endfor %}"),
            "112131");
  EXPECT_NE(render_error("{% for a, b in [[1]] %}{% endfor %}").find("not enough values to unpack"), std::string::npos);
}

TEST(Jinja, MacrosAndRecursionLimit) {
  EXPECT_EQ(render("{% macro m(a, b='d') %}<{{ a }}{{ b }}>{% endmacro %}{{ m(1) }}{{ m(2, b=3) }}"), "<1d><23>");
  std::string err = render_error("{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}");
  EXPECT_NE(err.find("recursion"), std::string::npos) << err;
}

TEST(Jinja, SandboxRefusesMutation) {
  EXPECT_NE(render_error("{% set l = [1] %}{{ l.append(2) }}").find("unsafe"), std::string::npos);
  EXPECT_NE(render_error("{{ {'a': 1}.update({}) }}").find("unsafe"), std::string::npos);
  EXPECT_NE(render_error("{{ range(1000000) }}").find("Range too big"), std::string::npos);
}

TEST(Jinja, SyntaxErrorsNameLineAndColumn) {
  try {
    jinja::parse_template("line one\n{% if x %}\n  {{ a + }}\n{% endif %}", "my.jinja");
    FAIL() << "no error";
  } catch (const Error& e) {
    std::string msg = e.what();
    EXPECT_NE(msg.find("my.jinja:3:"), std::string::npos) << msg;
    EXPECT_FALSE(e.hint().empty());
  }
  EXPECT_NE(render_error("{% if x %}a{% endfor %}").find("Encountered unknown tag 'endfor'"), std::string::npos);
  EXPECT_NE(render_error("{{ 'abc }}").find("unterminated string"), std::string::npos);
  EXPECT_NE(render_error("{% include 'x' %}").find("not supported"), std::string::npos);
  EXPECT_NE(render_error("{% break %}").find("outside of a loop"), std::string::npos);
}

TEST(Jinja, RuntimeErrorPositionAndRaise) {
  std::string err = render_error("ok\n\n{{ raise_exception('bad role: ' ~ r) }}", {{"r", Value::string("tool")}});
  EXPECT_NE(err.find("t:3:"), std::string::npos) << err;
  EXPECT_NE(err.find("bad role: tool"), std::string::npos) << err;
}

TEST(Jinja, DeepNestingIsAnErrorNotACrash) {
  std::string deep(5000, '(');
  EXPECT_FALSE(render_error("{{ " + deep + "1" + std::string(5000, ')') + " }}").empty());
  std::string nots;
  for (int k = 0; k < 5000; ++k) nots += "not ";
  EXPECT_FALSE(render_error("{{ " + nots + "x }}").empty());
  std::string ifs;
  for (int k = 0; k < 3000; ++k) ifs += "{% if true %}";
  EXPECT_FALSE(render_error(ifs).empty());
}

// Mutated real templates must either render or raise lora::Error; never crash or hang.
TEST(Jinja, FuzzedTemplatesNeverCrash) {
  const std::string base = read_file(test::fixture("chat/llama3.1.jinja")) + read_file(test::fixture("chat/mistral-v0.3.jinja"));
  ASSERT_FALSE(base.empty());
  auto msgs = jinja::value_from_json(nlohmann::ordered_json::parse(
      R"([{"role": "system", "content": "s"}, {"role": "user", "content": "u"}, {"role": "assistant", "content": "a"}])"));
  Vars vars = {{"messages", msgs}, {"add_generation_prompt", Value::boolean(true)}, {"bos_token", Value::string("<s>")},
               {"eos_token", Value::string("</s>")}, {"tools", Value::none()}};
  std::mt19937 rng(1234);
  const std::string alphabet = "{}%#-+()[]'\",.|:=~ \nifendforsetx0";
  int rendered = 0, errors = 0;
  for (int iter = 0; iter < 400; ++iter) {
    std::string s = base;
    int edits = 1 + int(rng() % 4);
    for (int k = 0; k < edits; ++k) {
      size_t p = rng() % s.size();
      switch (rng() % 3) {
        case 0: s.erase(p, 1 + rng() % 8); break;
        case 1: s.insert(p, 1, alphabet[rng() % alphabet.size()]); break;
        default: s[p] = alphabet[rng() % alphabet.size()];
      }
    }
    try {
      jinja::render_string(s, vars, "fuzz");
      ++rendered;
    } catch (const Error&) {
      ++errors;
    }
  }
  EXPECT_EQ(rendered + errors, 400);
  EXPECT_GT(errors, 0);
}

}  // namespace
}  // namespace lora
