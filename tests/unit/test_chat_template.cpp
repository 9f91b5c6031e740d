// Tests of io/chat_template: every template under tests/fixtures/chat/ rendered over the fixture
// conversations must match transformers' apply_chat_template byte for byte (expected strings made
// by tools/gen_chat_fixtures.py), the built-ins must hold the same text as the fixture .jinja files,
// and chat_template_resolve must find built-ins, files and tokenizer_config.json templates.
#include <gtest/gtest.h>

#include <ctime>
#include <dirent.h>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "core/error.h"
#include "io/chat_template.h"
#include "test_util.h"

namespace lora {
namespace {

std::string read_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::ostringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

std::vector<std::string> fixture_templates() {
  std::vector<std::string> names;
  std::string dir = test::fixture("chat");
  if (DIR* d = opendir(dir.c_str())) {
    while (dirent* e = readdir(d)) {
      std::string n = e->d_name;
      if (n.size() > 6 && n.compare(n.size() - 6, 6, ".jinja") == 0) names.push_back(n.substr(0, n.size() - 6));
    }
    closedir(d);
  }
  std::sort(names.begin(), names.end());
  return names;
}

// The generator writes today's date as <<TODAY:fmt>>; substitute ours (strftime_now uses local time).
std::string with_today(std::string s) {
  const std::string ph = "<<TODAY:%d %b %Y>>";
  size_t p = s.find(ph);
  if (p == std::string::npos) return s;
  std::time_t now = std::time(nullptr);
  std::tm tm{};
  localtime_r(&now, &tm);
  char buf[64];
  size_t n = std::strftime(buf, sizeof buf, "%d %b %Y", &tm);
  while ((p = s.find(ph)) != std::string::npos) s.replace(p, ph.size(), std::string(buf, n));
  return s;
}

class ChatFixture : public ::testing::TestWithParam<std::string> {};

TEST_P(ChatFixture, MatchesTransformersByteForByte) {
  const std::string name = GetParam();
  const std::string tpl = read_file(test::fixture("chat/" + name + ".jinja"));
  const std::string json_path = test::fixture("chat/" + name + ".json");
  ASSERT_TRUE(test::file_exists(json_path)) << "run tools/gen_chat_fixtures.py";
  auto doc = nlohmann::json::parse(read_file(json_path));
  ChatRenderOptions opts;
  opts.bos_token = doc["bos_token"].get<std::string>();
  opts.eos_token = doc["eos_token"].get<std::string>();
  int n = 0;
  for (auto& c : doc["cases"]) {
    std::vector<ChatMessage> msgs;
    for (auto& m : c["messages"]) msgs.push_back({m["role"].get<std::string>(), m["content"].get<std::string>()});
    opts.add_generation_prompt = c["add_generation_prompt"].get<bool>();
    SCOPED_TRACE(name + " / " + c["name"].get<std::string>() + (opts.add_generation_prompt ? " / gen" : " / no-gen"));
    if (c.contains("expected")) {
      try {
        EXPECT_EQ(chat_render(tpl, msgs, opts, name + ".jinja"), with_today(c["expected"].get<std::string>()));
      } catch (const Error& e) {
        ADD_FAILURE() << "threw: " << e.full();
      }
    } else {
      const std::string want = c["error"].get<std::string>();
      try {
        chat_render(tpl, msgs, opts, name + ".jinja");
        ADD_FAILURE() << "rendered, but transformers raised: " << want;
      } catch (const Error& e) {
        std::string got = e.what();
        EXPECT_NE(got.find(want), std::string::npos) << got;
        EXPECT_NE(got.find(name + ".jinja:"), std::string::npos) << got;  // names the template and position
      }
    }
    ++n;
  }
  EXPECT_GE(n, 10);
}

INSTANTIATE_TEST_SUITE_P(Templates, ChatFixture, ::testing::ValuesIn(fixture_templates()),
                         [](const auto& info) {
                           std::string s = info.param;
                           for (auto& ch : s)
                             if (!isalnum(static_cast<unsigned char>(ch))) ch = '_';
                           return s;
                         });

TEST(ChatTemplate, FixturesCoverTheFamilies) {
  auto names = fixture_templates();
  for (const char* want : {"chatml", "zephyr", "llama2", "llama3", "llama3.1", "llama3.2", "mistral-v0.1", "mistral-v0.2",
                           "mistral-v0.3", "qwen2", "qwen2.5", "smollm2"})
    EXPECT_NE(std::find(names.begin(), names.end(), want), names.end()) << want;
}

TEST(ChatTemplate, BuiltinsHoldTheFixtureText) {
  for (auto& name : fixture_templates())
    EXPECT_EQ(chat_builtin_template(name), read_file(test::fixture("chat/" + name + ".jinja"))) << name;
  EXPECT_EQ(chat_builtin_template("mistral"), chat_builtin_template("mistral-v0.3"));
  EXPECT_EQ(chat_builtin_template("no-such-template"), "");
}

TEST(ChatTemplate, TinyLlamaTemplateIsTheZephyrBuiltin) {
  LORA_REQUIRE_SHARED("models/TinyLlama-1.1B-Chat-v1.0/tokenizer_config.json");
  auto cfg = nlohmann::json::parse(read_file(test::shared_dir() + "/models/TinyLlama-1.1B-Chat-v1.0/tokenizer_config.json"));
  EXPECT_EQ(cfg["chat_template"].get<std::string>(), chat_builtin_template("zephyr"));
  // resolve() reads a tokenizer_config.json's chat_template too.
  EXPECT_EQ(chat_template_resolve(test::shared_dir() + "/models/TinyLlama-1.1B-Chat-v1.0/tokenizer_config.json"),
            chat_builtin_template("zephyr"));
}

TEST(ChatTemplate, ResolveNameFileOrError) {
  EXPECT_EQ(chat_template_resolve("llama2"), chat_builtin_template("llama2"));
  const std::string file = test::fixture("chat/qwen2.jinja");
  EXPECT_EQ(chat_template_resolve(file), read_file(file));
  try {
    chat_template_resolve("/no/such/template.jinja");
    FAIL() << "no error";
  } catch (const Error& e) {
    std::string all = e.full();
    for (const char* n : {"chatml", "zephyr", "llama2", "llama3", "mistral"}) EXPECT_NE(all.find(n), std::string::npos) << all;
  }
}

TEST(ChatTemplate, DefaultsAndErrors) {
  ChatRenderOptions opts;  // add_generation_prompt defaults to true
  std::vector<ChatMessage> msgs = {{"user", "hi"}};
  EXPECT_EQ(chat_render(chat_builtin_template("chatml"), msgs, opts), "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n");
  // tools is None (as transformers passes it), so `tools is not none` is false and `tools is defined` true.
  EXPECT_EQ(chat_render("{{ tools is defined }}/{{ tools is none }}", msgs, opts), "True/True");
  try {
    chat_render("{% for m in messages %}{{ m.content }", msgs, opts, "broken.jinja");
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("broken.jinja:1:"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace lora
