// Byte-level BPE tokenizers against ids from the HF `tokenizers` library (fixtures made by
// tools/gen_tokenizer_fixtures.py): SmolLM2's GGUF vocabulary (pre "smollm"), and two tiny
// tokenizer.json files (GPT-2-style ByteLevel regex + Digits; Llama-3-style Split regex +
// ignore_merges). Also streaming decode on byte-level tokens and errors on corrupt inputs.
#include <filesystem>
#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "io/gguf.h"
#include "io/tokenizer.h"
#include "test_util.h"

namespace lora {
namespace {

using json = nlohmann::json;
namespace fs = std::filesystem;

json load_json(const std::string& path) {
  std::ifstream in(path);
  EXPECT_TRUE(in.good()) << path;
  return json::parse(in);
}

bool valid_utf8_pieces(const std::string& s) {
  for (size_t i = 0; i < s.size();) {
    const unsigned char c = uint8_t(s[i]);
    const size_t n = c < 0x80 ? 1 : (c >= 0xC2 && c < 0xE0) ? 2 : (c >= 0xE0 && c < 0xF0) ? 3 : (c >= 0xF0 && c < 0xF5) ? 4 : 0;
    if (n == 0 || i + n > s.size()) return false;
    for (size_t k = 1; k < n; ++k)
      if ((uint8_t(s[i + k]) & 0xC0) != 0x80) return false;
    i += n;
  }
  return true;
}

TEST(TokenizerSmolLM2, MatchesHfTokenizersIds) {
  LORA_REQUIRE_SMOLLM2();
  auto tok = tokenizer_load(test::smollm2_gguf());
  const json fx = load_json(test::fixture("tokenizer/smollm2_cases.json"));
  ASSERT_GE(fx["cases"].size(), 40u);
  int bad = 0;
  for (const json& c : fx["cases"]) {
    const std::string text = c["text"].get<std::string>();
    const auto want = c["ids"].get<std::vector<int32_t>>();
    const auto got = tok->encode(text, /*add_special=*/false, /*parse_special=*/true);
    EXPECT_EQ(got, want) << "text: \"" << text << "\"";
    bad += got != want;
    EXPECT_EQ(tok->decode(got, /*skip_special=*/false), text);
  }
  EXPECT_EQ(bad, 0);
}

TEST(TokenizerSmolLM2, SpecialTokensAndMetadata) {
  LORA_REQUIRE_SMOLLM2();
  auto tok = tokenizer_load(test::smollm2_gguf());
  EXPECT_EQ(tok->vocab_size(), 49152);
  EXPECT_EQ(tok->bos_id, 1);
  EXPECT_EQ(tok->eos_id, 2);
  EXPECT_EQ(tok->eos_token, "<|im_end|>");
  EXPECT_FALSE(tok->add_bos);
  EXPECT_NE(tok->chat_template.find("<|im_start|>"), std::string::npos);
  for (int32_t id : {0, 2}) EXPECT_NE(std::find(tok->stop_ids.begin(), tok->stop_ids.end(), id), tok->stop_ids.end());
  EXPECT_EQ(tok->encode("<|im_start|>", false, true), (std::vector<int32_t>{1}));
  const auto literal = tok->encode("<|im_start|>", false, false);
  EXPECT_GT(literal.size(), 1u);
  EXPECT_EQ(tok->decode(literal), "<|im_start|>");
  EXPECT_EQ(tok->decode({1, 2}, true), "");
  EXPECT_EQ(tok->decode({1, 2}, false), "<|im_start|><|im_end|>");
  EXPECT_TRUE(tok->is_special(1));
  // Byte-level: no dummy prefix, spaces survive at the start.
  EXPECT_EQ(tok->decode(tok->encode("  x", false)), "  x");
}

TEST(TokenizerSmolLM2, StreamDecoderEmoji) {
  LORA_REQUIRE_SMOLLM2();
  auto tok = tokenizer_load(test::smollm2_gguf());
  const std::string text = "Llama \xF0\x9F\xA6\x99 and \xE4\xBD\xA0\xE5\xA5\xBD! \xF0\x9F\x91\xA8\xE2\x80\x8D\xF0\x9F\x91\xA9";
  const auto ids = tok->encode(text, false);
  StreamDecoder sd(*tok);
  std::string all;
  int held = 0;
  for (int32_t id : ids) {
    const std::string piece = sd.push(id);
    EXPECT_TRUE(valid_utf8_pieces(piece)) << "partial UTF-8 emitted for id " << id;
    if (piece.empty()) ++held;
    all += piece;
  }
  all += sd.flush();
  EXPECT_EQ(all, text);
  EXPECT_GT(held, 0) << "expected some character to span several tokens";
  // A dangling partial character is not dropped: flush turns it into U+FFFD.
  StreamDecoder cut(*tok);
  const auto emoji = tok->encode("\xF0\x9F\xA6\x99", false);
  ASSERT_GT(emoji.size(), 1u);
  EXPECT_EQ(cut.push(emoji[0]), "");
  EXPECT_FALSE(cut.flush().empty());
}

TEST(TokenizerByteLevelJson, MatchesHfTokenizersIds) {
  const json fx = load_json(test::fixture("tokenizer/bytelevel_cases.json"));
  for (const char* kind : {"gpt2", "llama3"}) {
    SCOPED_TRACE(kind);
    auto tok = tokenizer_load(test::fixture(std::string("tokenizer/bytelevel_") + kind));
    EXPECT_TRUE(tok->add_bos);  // from the TemplateProcessing post-processor
    EXPECT_EQ(tok->bos_token, "<s>");
    ASSERT_GE(fx["tokenizers"][kind].size(), 10u);
    for (const json& c : fx["tokenizers"][kind]) {
      const std::string text = c["text"].get<std::string>();
      EXPECT_EQ(tok->encode(text, false, true), c["ids"].get<std::vector<int32_t>>()) << "text: \"" << text << "\"";
      EXPECT_EQ(tok->encode(text, true, true), c["ids_with_special"].get<std::vector<int32_t>>())
          << "text: \"" << text << "\"";
      EXPECT_EQ(tok->decode(tok->encode(text, false), false), text);
    }
  }
}

// ---- corrupt inputs ----

class TokenizerErrors : public ::testing::Test {
 protected:
  fs::path dir;
  void SetUp() override {
    dir = fs::temp_directory_path() / fmt::format("lora_tok_test_{}_{}", ::getpid(),
                                                  ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir);
    fs::create_directories(dir);
  }
  void TearDown() override { fs::remove_all(dir); }
  std::string write(const std::string& name, const std::string& bytes) {
    const std::string p = (dir / name).string();
    std::ofstream(p, std::ios::binary) << bytes;
    return p;
  }
  // The error's message (what + hint), or "" when no lora::Error was thrown.
  template <class F>
  static std::string error_of(F&& f) {
    try {
      f();
    } catch (const Error& e) {
      EXPECT_FALSE(std::string(e.what()).empty());
      return e.full();
    }
    return "";
  }
  json tiny() { return load_json(test::fixture("tokenizer/bytelevel_gpt2/tokenizer.json")); }
};

TEST_F(TokenizerErrors, SentencePieceModel) {
  std::string m = error_of([&] { tokenizer_load_spm((dir / "tokenizer.model").string()); });
  EXPECT_NE(m.find("tokenizer.model"), std::string::npos) << m;
  const std::string garbage = write("tokenizer.model", std::string("\x0a\xff\xff\xff\xff\x0f garbage \x01\x02", 17));
  m = error_of([&] { tokenizer_load_spm(garbage); });
  EXPECT_NE(m.find(garbage), std::string::npos) << m;
  const std::string empty = write("empty.model", "");
  EXPECT_NE(error_of([&] { tokenizer_load_spm(empty); }), "");
  // A folder with no tokenizer files.
  m = error_of([&] { tokenizer_load((dir / "sub").string()); });
  EXPECT_NE(m, "");
  fs::create_directories(dir / "sub");
  m = error_of([&] { tokenizer_load((dir / "sub").string()); });
  EXPECT_NE(m.find("tokenizer.json"), std::string::npos) << m;
}

TEST_F(TokenizerErrors, TokenizerJson) {
  std::string p = write("tokenizer.json", "{\"model\": {\"type\": \"BPE\", ");
  std::string m = error_of([&] { tokenizer_load_hf_json(p); });
  EXPECT_NE(m.find("tokenizer.json"), std::string::npos) << m;
  EXPECT_NE(m.find("invalid JSON"), std::string::npos) << m;

  json j = tiny();
  j["model"]["merges"][3] = 5;
  p = write("tokenizer.json", j.dump());
  m = error_of([&] { tokenizer_load_hf_json(p); });
  EXPECT_NE(m.find("tokenizer.json: model.merges[3]"), std::string::npos) << m;

  j = tiny();
  j["model"]["merges"][2] = json::array({"no-such-token", "x"});
  p = write("tokenizer.json", j.dump());
  m = error_of([&] { tokenizer_load_hf_json(p); });
  EXPECT_NE(m.find("model.merges[2]"), std::string::npos) << m;

  j = tiny();
  j["model"]["type"] = "Unigram";
  p = write("tokenizer.json", j.dump());
  m = error_of([&] { tokenizer_load_hf_json(p); });
  EXPECT_NE(m.find("Unigram"), std::string::npos) << m;
  EXPECT_NE(m.find("hint"), std::string::npos) << m;

  j = tiny();
  j["pre_tokenizer"] = {{"type", "Whitespace"}};
  p = write("tokenizer.json", j.dump());
  m = error_of([&] { tokenizer_load_hf_json(p); });
  EXPECT_NE(m.find("Whitespace"), std::string::npos) << m;
  EXPECT_NE(m.find("pre_tokenizer"), std::string::npos) << m;

  j = tiny();
  j["pre_tokenizer"] = {{"type", "Split"}, {"pattern", {{"Regex", "(unclosed"}}}, {"behavior", "Isolated"}};
  p = write("tokenizer.json", j.dump());
  m = error_of([&] { tokenizer_load_hf_json(p); });
  EXPECT_NE(m.find("pre_tokenizer.pattern.Regex"), std::string::npos) << m;

  j = tiny();
  j["model"]["vocab"]["hello"] = "seven";
  p = write("tokenizer.json", j.dump());
  m = error_of([&] { tokenizer_load_hf_json(p); });
  EXPECT_NE(m.find("model.vocab[\"hello\"]"), std::string::npos) << m;

  j = tiny();
  j["added_tokens"][0].erase("id");
  p = write("tokenizer.json", j.dump());
  EXPECT_NE(error_of([&] { tokenizer_load_hf_json(p); }).find("added_tokens[0].id"), std::string::npos);

  // A broken side file is named too.
  p = write("tokenizer.json", tiny().dump());
  write("tokenizer_config.json", "{\"add_bos_token\": ");
  m = error_of([&] { tokenizer_load(dir.string()); });
  EXPECT_NE(m.find("tokenizer_config.json"), std::string::npos) << m;
  write("tokenizer_config.json", "{\"add_bos_token\": \"yes\"}");
  m = error_of([&] { tokenizer_load(dir.string()); });
  EXPECT_NE(m.find("tokenizer_config.json: add_bos_token"), std::string::npos) << m;
}

TEST_F(TokenizerErrors, Gguf) {
  auto write_gguf = [&](const std::string& name, const std::string& model, const std::string& pre,
                        bool with_merges) {
    GGUFWriter w;
    w.set_str("general.architecture", "llama");
    if (!model.empty()) w.set_str("tokenizer.ggml.model", model);
    if (!pre.empty()) w.set_str("tokenizer.ggml.pre", pre);
    w.set_str_array("tokenizer.ggml.tokens", {"a", "b", "ab"});
    w.set_i32_array("tokenizer.ggml.token_type", {1, 1, 1});
    if (with_merges) w.set_str_array("tokenizer.ggml.merges", {"a b"});
    const std::string p = (dir / name).string();
    w.write(p);
    return p;
  };
  std::string m = error_of([&] { tokenizer_load(write_gguf("bert.gguf", "bert", "", false)); });
  EXPECT_NE(m.find("bert"), std::string::npos) << m;
  EXPECT_NE(m.find("tokenizer.ggml.model"), std::string::npos) << m;
  m = error_of([&] { tokenizer_load(write_gguf("none.gguf", "", "", false)); });
  EXPECT_NE(m.find("tokenizer.ggml.model"), std::string::npos) << m;
  m = error_of([&] { tokenizer_load(write_gguf("pre.gguf", "gpt2", "klingon", true)); });
  EXPECT_NE(m.find("klingon"), std::string::npos) << m;
  EXPECT_NE(m.find("tokenizer.ggml.pre"), std::string::npos) << m;
  m = error_of([&] { tokenizer_load(write_gguf("nomerges.gguf", "gpt2", "gpt2", false)); });
  EXPECT_NE(m.find("tokenizer.ggml.merges"), std::string::npos) << m;
  // A well-formed tiny one loads and merges.
  auto ok = tokenizer_load(write_gguf("ok.gguf", "gpt2", "gpt2", true));
  EXPECT_EQ(ok->encode("ab", false), (std::vector<int32_t>{2}));
  EXPECT_THROW(ok->decode({3}), Error);
  // A truncated GGUF is an error, not a crash.
  const std::string full = (dir / "ok.gguf").string();
  std::ifstream in(full, std::ios::binary);
  std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  for (size_t cut : {size_t(3), size_t(20), bytes.size() / 2, bytes.size() * 3 / 4}) {
    const std::string p = write(fmt::format("cut{}.gguf", cut), bytes.substr(0, cut));
    EXPECT_NE(error_of([&] { tokenizer_load(p); }), "") << "cut at " << cut;
  }
}

}  // namespace
}  // namespace lora

namespace lora {
namespace {

// tokenizer.ggml.pre picks the split: on a vocabulary with merges across a space and between
// digits, " 12" comes out differently under gpt2, smollm (digits alone) and llama-bpe (1-3 digits).
TEST_F(TokenizerErrors, GgufPreSelectsRegex) {
  auto make = [&](const std::string& pre) {
    GGUFWriter w;
    w.set_str("general.architecture", "llama");
    w.set_str("tokenizer.ggml.model", "gpt2");
    w.set_str("tokenizer.ggml.pre", pre);
    // "\xC4\xA0" is the byte-level symbol for ' ' (U+0120).
    w.set_str_array("tokenizer.ggml.tokens", {"1", "2", "12", "\xC4\xA0", "\xC4\xA0" "1"});
    w.set_i32_array("tokenizer.ggml.token_type", {1, 1, 1, 1, 1});
    w.set_str_array("tokenizer.ggml.merges", {"\xC4\xA0 1", "1 2"});
    const std::string p = (dir / (pre + ".gguf")).string();
    w.write(p);
    return tokenizer_load(p);
  };
  EXPECT_EQ(make("gpt2")->encode(" 12", false), (std::vector<int32_t>{4, 1}));
  EXPECT_EQ(make("smollm")->encode(" 12", false), (std::vector<int32_t>{3, 0, 1}));
  EXPECT_EQ(make("llama-bpe")->encode(" 12", false), (std::vector<int32_t>{3, 2}));
  EXPECT_EQ(make("smollm")->decode({3, 0, 1}), " 12");
}

}  // namespace
}  // namespace lora
