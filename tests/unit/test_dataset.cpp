// Training-data reading (io/dataset.h): format detection, every bad-data error naming the file and
// line, and tokenization checked against mlx-lm's rules as computed by transformers with TinyLlama's
// tokenizer (tests/fixtures/data/tinyllama_expected.json, made by tools/gen_dataset_fixtures.py).
#include <filesystem>
#include <fstream>
#include <sstream>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "io/chat_template.h"
#include "io/dataset.h"
#include "io/tokenizer.h"
#include "test_util.h"

namespace lora {
namespace {

namespace fs = std::filesystem;
const char* kTiny = "models/TinyLlama-1.1B-Chat-v1.0";

// A fresh folder per test, removed afterwards.
class TempDir {
 public:
  TempDir() {
    static int n = 0;
    path_ = (fs::temp_directory_path() / ("lora_test_dataset_" + std::to_string(::getpid()) + "_" + std::to_string(n++))).string();
    fs::remove_all(path_);
    fs::create_directories(path_);
  }
  ~TempDir() { fs::remove_all(path_); }
  std::string write(const std::string& name, const std::string& body) const {
    const std::string p = path_ + "/" + name;
    std::ofstream(p, std::ios::binary) << body;
    return p;
  }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

// The lora::Error message of f(), or "" when it does not throw one.
template <class F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

// --- parsing, no tokenizer ---

TEST(DatasetRead, DetectsTheThreeFormats) {
  EXPECT_EQ(dataset_read_jsonl(test::fixture("data/text.jsonl")).format, DATA_FORMAT_TEXT);
  EXPECT_EQ(dataset_read_jsonl(test::fixture("data/completions.jsonl")).format, DATA_FORMAT_COMPLETIONS);
  const DataFile chat = dataset_read_jsonl(test::fixture("data/chat.jsonl"));
  ASSERT_EQ(chat.format, DATA_FORMAT_CHAT);
  ASSERT_EQ(chat.records.size(), 2u);
  ASSERT_EQ(chat.records[1].messages.size(), 4u);
  EXPECT_EQ(chat.records[1].messages[3].role, "assistant");
  EXPECT_EQ(chat.records[1].messages[3].content, "Why did the chicken cross the road?");
}

TEST(DatasetRead, PrecedenceAsMlxLm) {
  // prompt+completion wins over messages and text; messages over text.
  TempDir d;
  auto f1 = d.write("a.jsonl", R"({"prompt": "p", "completion": "c", "text": "t"})" "\n");
  EXPECT_EQ(dataset_read_jsonl(f1).format, DATA_FORMAT_COMPLETIONS);
  auto f2 = d.write("b.jsonl", R"({"messages": [{"role": "user", "content": "x"}], "text": "t"})" "\n");
  EXPECT_EQ(dataset_read_jsonl(f2).format, DATA_FORMAT_CHAT);
}

TEST(DatasetRead, BlankLinesSkippedAndLinesCounted) {
  const DataFile f = dataset_read_jsonl(test::fixture("data/text.jsonl"));
  ASSERT_EQ(f.records.size(), 4u);
  EXPECT_EQ(f.records[0].line, 1);
  EXPECT_EQ(f.records[1].line, 3);  // line 2 is blank
  EXPECT_EQ(f.records[3].text, "Two\nlines and  spaces");
}

TEST(DatasetRead, CrlfAndByteOrderMark) {
  TempDir d;
  auto p = d.write("t.jsonl", "\xEF\xBB\xBF{\"text\": \"a\"}\r\n{\"text\": \"b\"}\r\n");
  const DataFile f = dataset_read_jsonl(p);
  ASSERT_EQ(f.records.size(), 2u);
  EXPECT_EQ(f.records[1].text, "b");
}

TEST(DatasetRead, MissingFieldNamesFileAndLine) {
  TempDir d;
  std::string body;
  for (int i = 0; i < 6; ++i) body += R"({"text": "ok"})" "\n";
  body += R"({"txt": "oops"})" "\n";
  const auto p = d.write("train.jsonl", body);
  EXPECT_EQ(error_of([&] { dataset_read_jsonl(p); }), p + ":7: missing \"text\"");
}

TEST(DatasetRead, MalformedJson) {
  TempDir d;
  const auto p = d.write("train.jsonl", "{\"text\": \"a\"}\n{\"text\": \"unterminated}\n");
  const std::string e = error_of([&] { dataset_read_jsonl(p); });
  EXPECT_EQ(e.rfind(p + ":2: malformed JSON", 0), 0u) << e;
}

TEST(DatasetRead, WrongTypes) {
  TempDir d;
  auto p = d.write("t.jsonl", "{\"text\": \"a\"}\n{\"text\": 5}\n");
  EXPECT_EQ(error_of([&] { dataset_read_jsonl(p); }), p + ":2: \"text\" must be a string, not a number");
  p = d.write("c.jsonl", "{\"prompt\": \"a\", \"completion\": [\"b\"]}\n");
  EXPECT_EQ(error_of([&] { dataset_read_jsonl(p); }), p + ":1: \"completion\" must be a string, not an array");
  p = d.write("m.jsonl", "{\"messages\": {\"role\": \"user\"}}\n");
  EXPECT_EQ(error_of([&] { dataset_read_jsonl(p); }), p + ":1: \"messages\" must be an array, not an object");
  p = d.write("m2.jsonl", "{\"messages\": [{\"role\": \"user\", \"content\": \"a\"}, {\"role\": 3, \"content\": \"b\"}]}\n");
  EXPECT_EQ(error_of([&] { dataset_read_jsonl(p); }), p + ":1: messages[1]: \"role\" must be a string, not a number");
  p = d.write("m3.jsonl", "{\"messages\": [{\"role\": \"user\"}]}\n");
  EXPECT_EQ(error_of([&] { dataset_read_jsonl(p); }), p + ":1: messages[0]: missing \"content\"");
  p = d.write("m4.jsonl", "{\"messages\": []}\n");
  EXPECT_EQ(error_of([&] { dataset_read_jsonl(p); }), p + ":1: \"messages\" is empty");
  p = d.write("m5.jsonl", "{\"messages\": [{\"role\": \"user\", \"content\": \"a\"}], \"tools\": 3}\n");
  EXPECT_EQ(error_of([&] { dataset_read_jsonl(p); }), p + ":1: \"tools\" must be an array, not a number");
  p = d.write("arr.jsonl", "{\"text\": \"a\"}\n[1, 2]\n");
  EXPECT_EQ(error_of([&] { dataset_read_jsonl(p); }), p + ":2: expected a JSON object, got an array");
}

TEST(DatasetRead, FormatDiffersFromFirstRecord) {
  TempDir d;
  const auto p = d.write("train.jsonl", "{\"text\": \"a\"}\n\n{\"prompt\": \"p\", \"completion\": \"c\"}\n");
  EXPECT_EQ(error_of([&] { dataset_read_jsonl(p); }),
            p + ":3: record is in the completions format but the file's first record (line 1) is text");
}

TEST(DatasetRead, EmptyFileAndUnknownFormat) {
  TempDir d;
  auto p = d.write("empty.jsonl", "\n  \n");
  EXPECT_EQ(error_of([&] { dataset_read_jsonl(p); }), p + ": the file is empty (no records)");
  p = d.write("odd.jsonl", "{\"question\": \"q\", \"answer\": \"a\"}\n");
  try {
    dataset_read_jsonl(p);
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_EQ(std::string(e.what()), p + ":1: unknown data format (keys: \"answer\", \"question\")");
    // The hint lists the three formats.
    EXPECT_NE(e.hint().find("{\"text\": ...}"), std::string::npos);
    EXPECT_NE(e.hint().find("{\"prompt\": ..., \"completion\": ...}"), std::string::npos);
    EXPECT_NE(e.hint().find("{\"messages\": "), std::string::npos);
  }
  EXPECT_EQ(error_of([&] { dataset_read_jsonl(d.path() + "/nope.jsonl"); }), d.path() + "/nope.jsonl: file not found");
}

// --- tokenization with a stand-in renderer (independent of the Jinja interpreter) ---

std::unique_ptr<Tokenizer> tiny() { return tokenizer_load(test::shared_dir() + "/" + kTiny); }

// "[role]content|" per message, "[assistant]" as the generation prompt: every piece tokenizes on
// its own boundaries, so the offset can be checked by hand.
std::string fake_render(const std::vector<ChatMessage>& m, bool gen) {
  std::string s;
  for (const auto& x : m) s += "[" + x.role + "]" + x.content + "|";
  if (gen) s += "[assistant]";
  return s;
}

TEST(DatasetTokenize, MaskOffsetIsThePromptRender) {
  LORA_REQUIRE_SHARED(std::string(kTiny) + "/tokenizer.json");
  auto tok = tiny();
  DatasetOptions o;
  o.mask_prompt = true;
  DataRecord r;
  r.prompt = "Q";
  r.completion = "A";
  const Example e = dataset_tokenize(r, DATA_FORMAT_COMPLETIONS, *tok, o, fake_render, "x:1");
  EXPECT_EQ(e.tokens, tok->encode("[user]Q|[assistant]A|", false, true));
  EXPECT_EQ(e.offset, int64_t(tok->encode("[user]Q|[assistant]", false, true).size()));
  o.mask_prompt = false;
  EXPECT_EQ(dataset_tokenize(r, DATA_FORMAT_COMPLETIONS, *tok, o, fake_render, "x:1").offset, 0);

  DataRecord c;
  c.messages = {{"system", "S"}, {"user", "U"}, {"assistant", "A"}};
  o.mask_prompt = true;
  const Example ec = dataset_tokenize(c, DATA_FORMAT_CHAT, *tok, o, fake_render, "x:1");
  EXPECT_EQ(ec.tokens, tok->encode("[system]S|[user]U|[assistant]A|", false, true));
  EXPECT_EQ(ec.offset, int64_t(tok->encode("[system]S|[user]U|[assistant]", false, true).size()));
}

TEST(DatasetTokenize, MaskPromptOnTextIsAnError) {
  LORA_REQUIRE_SHARED(std::string(kTiny) + "/tokenizer.json");
  auto tok = tiny();
  DatasetOptions o;
  o.mask_prompt = true;
  const std::string e = error_of([&] { dataset_load_file(test::fixture("data/text.jsonl"), *tok, o); });
  EXPECT_EQ(e, test::fixture("data/text.jsonl") + ": --mask-prompt needs chat or completions data");
}

TEST(DatasetTokenize, ChatDataWithoutTemplateIsAnError) {
  LORA_REQUIRE_SHARED(std::string(kTiny) + "/tokenizer.json");
  auto tok = tiny();
  tok->chat_template.clear();
  const std::string e = error_of([&] { dataset_load_file(test::fixture("data/chat.jsonl"), *tok, {}); });
  EXPECT_NE(e.find("chat data needs a chat template, and the tokenizer has none"), std::string::npos) << e;
}

TEST(DatasetTokenize, TemplateErrorNamesTheRecord) {
  LORA_REQUIRE_SHARED(std::string(kTiny) + "/tokenizer.json");
  auto tok = tiny();
  DatasetOptions o;
  o.render = [](const std::vector<ChatMessage>& m, bool) -> std::string {
    if (m.size() > 2) fail_input("chat_template", "conversation roles must alternate");
    return "x";
  };
  const std::string e = error_of([&] { dataset_load_file(test::fixture("data/chat.jsonl"), *tok, o); });
  EXPECT_EQ(e.rfind(test::fixture("data/chat.jsonl") + ":1: chat template:", 0), 0u) << e;
}

// --- against mlx-lm's rules as transformers computes them ---

nlohmann::json expected() {
  std::ifstream in(test::fixture("data/tinyllama_expected.json"));
  return nlohmann::json::parse(in);
}

void expect_matches(const Dataset& ds, const nlohmann::json& want, const char* offset_key) {
  ASSERT_EQ(ds.examples.size(), want.size());
  for (size_t i = 0; i < want.size(); ++i) {
    EXPECT_EQ(ds.examples[i].tokens, want[i]["ids"].get<std::vector<int32_t>>()) << ds.path << " record " << i;
    EXPECT_EQ(ds.examples[i].offset, want[i][offset_key].get<int64_t>()) << ds.path << " record " << i;
  }
}

TEST(DatasetTokenize, TinyLlamaMatchesMlxLm) {
  LORA_REQUIRE_SHARED(std::string(kTiny) + "/tokenizer.json");
  auto tok = tiny();
  const auto want = expected();
  expect_matches(dataset_load_file(test::fixture("data/text.jsonl"), *tok, {}), want["text"], "offset");
  DatasetOptions masked;
  masked.mask_prompt = true;
  expect_matches(dataset_load_file(test::fixture("data/completions.jsonl"), *tok, masked), want["completions"],
                 "mask_offset");
  expect_matches(dataset_load_file(test::fixture("data/chat.jsonl"), *tok, masked), want["chat"], "mask_offset");
  // Without --mask-prompt the ids are the same and the loss covers everything.
  const Dataset plain = dataset_load_file(test::fixture("data/chat.jsonl"), *tok, {});
  ASSERT_EQ(plain.examples.size(), 2u);
  EXPECT_EQ(plain.examples[0].offset, 0);
  EXPECT_EQ(plain.examples[0].tokens, want["chat"][0]["ids"].get<std::vector<int32_t>>());
}

TEST(DatasetTokenize, TextGetsBosAndOneEos) {
  LORA_REQUIRE_SHARED(std::string(kTiny) + "/tokenizer.json");
  auto tok = tiny();
  const Dataset ds = dataset_load_file(test::fixture("data/text.jsonl"), *tok, {});
  for (const auto& e : ds.examples) {
    ASSERT_GE(e.tokens.size(), 2u);
    EXPECT_EQ(e.tokens.front(), tok->bos_id);
    EXPECT_EQ(e.tokens.back(), tok->eos_id);
    EXPECT_NE(e.tokens[e.tokens.size() - 2], tok->eos_id);  // "...</s>" is not given a second EOS
  }
  EXPECT_EQ(tok->decode(ds.examples[0].tokens), "Hello world");
}

// --- the folder ---

TEST(DatasetDir, SplitsAndMissingFiles) {
  LORA_REQUIRE_SHARED(std::string(kTiny) + "/tokenizer.json");
  auto tok = tiny();
  TempDir d;
  EXPECT_EQ(error_of([&] { dataset_load_dir(d.path(), *tok, {}); }), d.path() + "/train.jsonl: file not found");
  d.write("train.jsonl", "{\"text\": \"a\"}\n{\"text\": \"b\"}\n");
  testing::internal::CaptureStderr();
  DataSplits s = dataset_load_dir(d.path(), *tok, {});
  const std::string err = testing::internal::GetCapturedStderr();
  EXPECT_EQ(s.train.examples.size(), 2u);
  EXPECT_FALSE(s.valid.has_value());
  EXPECT_FALSE(s.test.has_value());
  EXPECT_NE(err.find("valid.jsonl not found: training without validation"), std::string::npos) << err;
  EXPECT_EQ(error_of([&] { dataset_load_dir(d.path(), *tok, {}, true, true); }), d.path() + "/test.jsonl: file not found");
  d.write("valid.jsonl", "{\"text\": \"c\"}\n");
  d.write("test.jsonl", "{\"text\": \"d\"}\n{\"text\": \"e\"}\n{\"text\": \"f\"}\n");
  s = dataset_load_dir(d.path(), *tok, {}, true, true);
  ASSERT_TRUE(s.valid && s.test);
  EXPECT_EQ(s.valid->examples.size(), 1u);
  EXPECT_EQ(s.test->examples.size(), 3u);
  // --test alone needs no train.jsonl.
  fs::remove(d.path() + "/train.jsonl");
  s = dataset_load_dir(d.path(), *tok, {}, false, true);
  EXPECT_TRUE(s.train.examples.empty());
  EXPECT_EQ(s.test->examples.size(), 3u);
  EXPECT_EQ(error_of([&] { dataset_load_dir(d.path() + "/x", *tok, {}); }), d.path() + "/x: folder not found");
}

TEST(DatasetDir, SmolLM2ChatTemplate) {
  LORA_REQUIRE_SMOLLM2();
  auto tok = tokenizer_load(test::smollm2_gguf());
  DatasetOptions o;
  o.mask_prompt = true;
  const Dataset ds = dataset_load_file(test::fixture("data/completions.jsonl"), *tok, o);
  ASSERT_EQ(ds.examples.size(), 3u);
  // ChatML: the loss starts right after "<|im_start|>assistant\n", on the completion's first token.
  const Example& e = ds.examples[0];
  ASSERT_GT(e.offset, 0);
  ASSERT_LT(e.offset, int64_t(e.tokens.size()));
  const std::vector<int32_t> head(e.tokens.begin(), e.tokens.begin() + e.offset);
  const std::vector<int32_t> tail(e.tokens.begin() + e.offset, e.tokens.end());
  const std::string head_text = tok->decode(head, false);
  EXPECT_TRUE(head_text.ends_with("<|im_start|>assistant\n")) << head_text;
  EXPECT_EQ(tok->decode(tail, false).rfind("4<|im_end|>", 0), 0u) << tok->decode(tail, false);
}

}  // namespace
}  // namespace lora
