// HF tokenizer.json (the `tokenizers` library's format) into a BpeTokenizer. Supported: model BPE
// (with byte_fallback, unk, ignore_merges), normalizers Prepend/Replace/Sequence (NFC is taken as
// identity, as llama.cpp does), pre-tokenizers ByteLevel/Split/Digits/Metaspace/Sequence, decoders
// ByteLevel or the SentencePiece-style chain, TemplateProcessing for BOS/EOS, added_tokens.
// Every error names the file and the JSON path ("tokenizer.json: model.merges[3]").
#include <cctype>
#include <filesystem>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "io/mapped_file.h"
#include "io/tokenizer_impl.h"

namespace lora {

namespace {
using json = nlohmann::json;
using tok::BpeTokenizer;
using tok::PreSplit;

const std::string kMetaspace = "\xE2\x96\x81";

struct Ctx {
  std::string file;
  std::string at(const std::string& p) const { return file + ": " + p; }
  [[noreturn]] void fail(const std::string& p, const std::string& what, const std::string& hint = {}) const {
    fail_input(at(p), what, hint);
  }
  const json& req(const json& obj, const char* key, const std::string& p) const {
    if (!obj.is_object() || !obj.contains(key)) fail(p.empty() ? key : p + "." + key, "missing", "");
    return obj[key];
  }
  std::string str(const json& obj, const char* key, const std::string& p, const std::string& def = {}) const {
    if (!obj.contains(key) || obj[key].is_null()) return def;
    if (!obj[key].is_string()) fail(p + "." + key, "expected a string");
    return obj[key].get<std::string>();
  }
  bool boolean(const json& obj, const char* key, const std::string& p, bool def) const {
    if (!obj.contains(key) || obj[key].is_null()) return def;
    if (!obj[key].is_boolean()) fail(p + "." + key, "expected true or false");
    return obj[key].get<bool>();
  }
};

const char* kHintUnsupported =
    "this tokenizer.json uses a feature lora.cpp does not implement; use the model's tokenizer.model "
    "(SentencePiece) or its GGUF file, or report the tokenizer";

void parse_normalizer(const Ctx& c, const json& n, const std::string& p, BpeTokenizer& t) {
  if (n.is_null()) return;
  if (!n.is_object()) c.fail(p, "expected an object or null");
  const std::string type = c.str(n, "type", p);
  if (type == "Sequence") {
    const json& list = c.req(n, "normalizers", p);
    if (!list.is_array()) c.fail(p + ".normalizers", "expected a list");
    for (size_t i = 0; i < list.size(); ++i)
      parse_normalizer(c, list[i], fmt::format("{}.normalizers[{}]", p, i), t);
  } else if (type == "Prepend") {
    if (c.str(n, "prepend", p) != kMetaspace) c.fail(p + ".prepend", "only U+2581 can be prepended", kHintUnsupported);
    t.prepend = BpeTokenizer::PREPEND_ALWAYS;
  } else if (type == "Replace") {
    const json& pat = c.req(n, "pattern", p);
    if (!pat.is_object() || !pat.contains("String") || pat["String"] != " " || c.str(n, "content", p) != kMetaspace)
      c.fail(p, "only Replace(' ' -> U+2581) is supported", kHintUnsupported);
    t.replace_space = true;
  } else if (type == "NFC") {
    // Identity: text from chat and data sets is NFC already; llama.cpp skips it too.
  } else {
    c.fail(p + ".type", fmt::format("unsupported normalizer \"{}\"", type), kHintUnsupported);
  }
}

void parse_pre(const Ctx& c, const json& n, const std::string& p, BpeTokenizer& t, bool* byte_level,
               bool* metaspace) {
  if (n.is_null()) return;
  if (!n.is_object()) c.fail(p, "expected an object or null");
  const std::string type = c.str(n, "type", p);
  if (type == "Sequence") {
    const json& list = c.req(n, "pretokenizers", p);
    if (!list.is_array()) c.fail(p + ".pretokenizers", "expected a list");
    for (size_t i = 0; i < list.size(); ++i)
      parse_pre(c, list[i], fmt::format("{}.pretokenizers[{}]", p, i), t, byte_level, metaspace);
  } else if (type == "ByteLevel") {
    *byte_level = true;
    t.byte_level_prefix_space = c.boolean(n, "add_prefix_space", p, false);
    if (c.boolean(n, "use_regex", p, true))
      t.pre.push_back(PreSplit{std::make_shared<tok::Regex>(tok::kRegexGpt2, c.at(p)), PreSplit::ISOLATED});
  } else if (type == "Split") {
    const json& pat = c.req(n, "pattern", p);
    std::shared_ptr<tok::Regex> re;
    if (pat.is_object() && pat.contains("Regex") && pat["Regex"].is_string())
      re = std::make_shared<tok::Regex>(pat["Regex"].get<std::string>(), c.at(p + ".pattern.Regex"));
    else if (pat.is_object() && pat.contains("String") && pat["String"].is_string())
      re = std::make_shared<tok::Regex>(pat["String"].get<std::string>(), c.at(p + ".pattern.String"), true);
    else
      c.fail(p + ".pattern", "expected {\"Regex\": ...} or {\"String\": ...}");
    if (c.boolean(n, "invert", p, false)) c.fail(p + ".invert", "inverted Split is not supported", kHintUnsupported);
    const std::string b = c.str(n, "behavior", p, "Isolated");
    PreSplit::Behavior beh;
    if (b == "Isolated") beh = PreSplit::ISOLATED;
    else if (b == "Removed") beh = PreSplit::REMOVED;
    else if (b == "MergedWithPrevious") beh = PreSplit::MERGED_WITH_PREVIOUS;
    else if (b == "MergedWithNext") beh = PreSplit::MERGED_WITH_NEXT;
    else if (b == "Contiguous") beh = PreSplit::CONTIGUOUS;
    else c.fail(p + ".behavior", fmt::format("unknown Split behavior \"{}\"", b));
    t.pre.push_back(PreSplit{re, beh});
  } else if (type == "Digits") {
    const bool individual = c.boolean(n, "individual_digits", p, false);
    t.pre.push_back(PreSplit{std::make_shared<tok::Regex>(individual ? "\\p{N}" : "\\p{N}+", c.at(p)),
                             PreSplit::ISOLATED});
  } else if (type == "Metaspace") {
    *metaspace = true;
    if (c.str(n, "replacement", p, kMetaspace) != kMetaspace)
      c.fail(p + ".replacement", "only U+2581 is supported", kHintUnsupported);
    t.replace_space = true;
    std::string scheme = c.str(n, "prepend_scheme", p, "");
    if (scheme.empty()) scheme = c.boolean(n, "add_prefix_space", p, true) ? "always" : "never";
    if (scheme == "always") t.prepend = BpeTokenizer::PREPEND_ALWAYS;
    else if (scheme == "first") t.prepend = BpeTokenizer::PREPEND_FIRST;
    else if (scheme == "never") t.prepend = BpeTokenizer::PREPEND_NEVER;
    else c.fail(p + ".prepend_scheme", fmt::format("unknown prepend_scheme \"{}\"", scheme));
    t.split_on_metaspace = c.boolean(n, "split", p, true);
  } else {
    c.fail(p + ".type", fmt::format("unsupported pre-tokenizer \"{}\"", type), kHintUnsupported);
  }
}

// Decoder: byte-level or SentencePiece-style; whether one leading space is stripped.
void parse_decoder(const Ctx& c, const json& n, const std::string& p, bool* byte_level, bool* strip) {
  if (n.is_null() || !n.is_object()) return;
  const std::string type = c.str(n, "type", p);
  if (type == "Sequence") {
    const json& list = c.req(n, "decoders", p);
    if (!list.is_array()) c.fail(p + ".decoders", "expected a list");
    for (size_t i = 0; i < list.size(); ++i)
      parse_decoder(c, list[i], fmt::format("{}.decoders[{}]", p, i), byte_level, strip);
  } else if (type == "ByteLevel") {
    *byte_level = true;
  } else if (type == "Strip") {
    if (c.str(n, "content", p, " ") == " " && n.value("start", 0) >= 1) *strip = true;
  } else if (type == "Metaspace") {
    std::string scheme = c.str(n, "prepend_scheme", p, "");
    if (scheme.empty()) scheme = c.boolean(n, "add_prefix_space", p, true) ? "always" : "never";
    if (scheme != "never") *strip = true;
  }
  // Replace(U+2581 -> ' '), ByteFallback, Fuse: what the SentencePiece-style piece table does anyway.
}

// TemplateProcessing: special tokens before and after $A give BOS / EOS.
void parse_post(const Ctx& c, const json& n, const std::string& p, Tokenizer& t) {
  if (n.is_null() || !n.is_object()) return;
  const std::string type = c.str(n, "type", p);
  if (type == "Sequence") {
    const json& list = c.req(n, "processors", p);
    if (!list.is_array()) c.fail(p + ".processors", "expected a list");
    for (size_t i = 0; i < list.size(); ++i) parse_post(c, list[i], fmt::format("{}.processors[{}]", p, i), t);
    return;
  }
  if (type != "TemplateProcessing") return;
  const json& single = c.req(n, "single", p);
  const json& specials = n.contains("special_tokens") ? n["special_tokens"] : json::object();
  if (!single.is_array()) c.fail(p + ".single", "expected a list");
  bool seen_a = false;
  for (size_t i = 0; i < single.size(); ++i) {
    const json& e = single[i];
    if (e.is_object() && e.contains("Sequence")) {
      seen_a = true;
      continue;
    }
    if (!e.is_object() || !e.contains("SpecialToken") || !e["SpecialToken"].is_object()) continue;
    const std::string name = c.str(e["SpecialToken"], "id", fmt::format("{}.single[{}].SpecialToken", p, i));
    if (!specials.is_object() || !specials.contains(name) || !specials[name].contains("ids") ||
        !specials[name]["ids"].is_array() || specials[name]["ids"].size() != 1 ||
        !specials[name]["ids"][0].is_number_integer())
      c.fail(fmt::format("{}.special_tokens[\"{}\"]", p, name), "expected one id for this special token");
    const int32_t id = specials[name]["ids"][0].get<int32_t>();
    if (!seen_a) {
      t.add_bos = true;
      t.bos_id = id;
    } else {
      t.add_eos = true;
      t.eos_id = id;
    }
  }
}

}  // namespace

std::unique_ptr<Tokenizer> tokenizer_load_hf_json(const std::string& json_path) {
  const std::string text = read_text_file(json_path);
  Ctx c{json_path};
  json j;
  try {
    j = json::parse(text);
  } catch (const json::exception& e) {
    fail_input(json_path, fmt::format("invalid JSON: {}", e.what()), "tokenizer.json must be valid JSON");
  }
  if (!j.is_object()) c.fail("(root)", "expected a JSON object");
  auto t = std::make_unique<BpeTokenizer>();

  const json& model = c.req(j, "model", "");
  if (!model.is_object()) c.fail("model", "expected an object");
  const std::string type = c.str(model, "type", "model", model.contains("merges") ? "BPE" : "");
  if (type != "BPE")
    c.fail("model.type", fmt::format("unsupported tokenizer model type \"{}\"", type),
           "only BPE tokenizer.json files are read; for Unigram/WordPiece models use tokenizer.model "
           "(SentencePiece) or the GGUF file");
  for (const char* k : {"continuing_subword_prefix", "end_of_word_suffix"})
    if (!c.str(model, k, "model").empty()) c.fail(std::string("model.") + k, "not supported", kHintUnsupported);

  // Vocabulary and added tokens.
  const json& vocab = c.req(model, "vocab", "model");
  if (!vocab.is_object()) c.fail("model.vocab", "expected an object {token: id}");
  constexpr int64_t kMaxVocab = int64_t(1) << 24;
  int64_t n_vocab = 0;
  for (auto it = vocab.begin(); it != vocab.end(); ++it) {
    if (!it.value().is_number_integer() || it.value().get<int64_t>() < 0 || it.value().get<int64_t>() >= kMaxVocab)
      c.fail(fmt::format("model.vocab[\"{}\"]", it.key()), "expected a non-negative integer id");
    n_vocab = std::max(n_vocab, it.value().get<int64_t>() + 1);
  }
  const json& added = j.contains("added_tokens") && !j["added_tokens"].is_null() ? j["added_tokens"] : json::array();
  if (!added.is_array()) c.fail("added_tokens", "expected a list");
  for (size_t i = 0; i < added.size(); ++i) {
    const std::string p = fmt::format("added_tokens[{}]", i);
    const json& a = added[i];
    if (!a.is_object() || !a.contains("id") || !a["id"].is_number_integer() || a["id"].get<int64_t>() < 0 ||
        a["id"].get<int64_t>() >= kMaxVocab)
      c.fail(p + ".id", "expected a non-negative integer id");
    if (c.str(a, "content", p).empty()) c.fail(p + ".content", "expected a non-empty string");
    n_vocab = std::max(n_vocab, a["id"].get<int64_t>() + 1);
  }
  t->vocab.resize(size_t(n_vocab));
  for (auto it = vocab.begin(); it != vocab.end(); ++it) {
    const int32_t id = it.value().get<int32_t>();
    t->vocab[size_t(id)] = it.key();
    t->token_to_id.emplace(it.key(), id);
  }
  std::vector<bool> is_added(size_t(n_vocab), false);
  for (size_t i = 0; i < added.size(); ++i) {
    const json& a = added[i];
    const std::string p = fmt::format("added_tokens[{}]", i);
    tok::AddedToken at;
    at.id = a["id"].get<int32_t>();
    at.text = a["content"].get<std::string>();
    at.special = c.boolean(a, "special", p, false);
    at.lstrip = c.boolean(a, "lstrip", p, false);
    at.rstrip = c.boolean(a, "rstrip", p, false);
    t->vocab[size_t(at.id)] = at.text;
    t->token_to_id.insert_or_assign(at.text, at.id);
    is_added[size_t(at.id)] = true;
    if (at.special) t->special_ids.push_back(at.id);
    t->added_.push_back(at);
  }
  t->finalize_added();

  t->byte_fallback = c.boolean(model, "byte_fallback", "model", false);
  t->fuse_unk = c.boolean(model, "fuse_unk", "model", false);
  t->ignore_merges = c.boolean(model, "ignore_merges", "model", false);
  const std::string unk = c.str(model, "unk_token", "model");
  if (!unk.empty()) {
    t->unk_id = t->find_token(unk);
    if (t->unk_id < 0) c.fail("model.unk_token", fmt::format("\"{}\" is not in model.vocab", unk));
  }
  for (int b = 0; b < 256; ++b) t->byte_ids[b] = t->find_token(fmt::format("<0x{:02X}>", b));

  // Merges: "a b" strings (older files) or ["a", "b"] pairs.
  const json& merges = c.req(model, "merges", "model");
  if (!merges.is_array()) c.fail("model.merges", "expected a list");
  for (size_t i = 0; i < merges.size(); ++i) {
    const json& m = merges[i];
    const std::string p = fmt::format("model.merges[{}]", i);
    std::string left, right;
    if (m.is_string()) {
      const std::string s = m.get<std::string>();
      const size_t sp = s.find(' ', 1);
      if (sp == std::string::npos || sp + 1 >= s.size() || s.find(' ', sp + 1) != std::string::npos)
        c.fail(p, fmt::format("expected \"left right\", got \"{}\"", s));
      left = s.substr(0, sp);
      right = s.substr(sp + 1);
    } else if (m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string()) {
      left = m[0].get<std::string>();
      right = m[1].get<std::string>();
    } else {
      c.fail(p, "expected a string \"left right\" or a pair [\"left\", \"right\"]");
    }
    if (!t->add_merge(left, right, int32_t(i)))
      c.fail(p, fmt::format("merge (\"{}\", \"{}\") uses a token missing from model.vocab", left, right),
             "the merges do not belong to this vocabulary");
  }

  // Text pipeline.
  bool byte_level = false, metaspace = false;
  parse_normalizer(c, j.value("normalizer", json()), "normalizer", *t);
  parse_pre(c, j.value("pre_tokenizer", json()), "pre_tokenizer", *t, &byte_level, &metaspace);
  t->alphabet = byte_level ? BpeTokenizer::BYTE_LEVEL : BpeTokenizer::SPM;
  if (byte_level && (metaspace || t->replace_space || t->prepend != BpeTokenizer::PREPEND_NEVER))
    c.fail("pre_tokenizer", "ByteLevel mixed with SentencePiece-style spaces is not supported", kHintUnsupported);
  if (!byte_level && !t->pre.empty())
    c.fail("pre_tokenizer", "regex/digit splits without ByteLevel are not supported", kHintUnsupported);
  if (!byte_level && !t->replace_space && !t->byte_fallback)
    c.fail("pre_tokenizer", "neither ByteLevel nor SentencePiece-style (U+2581) spaces",
           kHintUnsupported);

  bool dec_byte_level = false, strip = false;
  parse_decoder(c, j.value("decoder", json()), "decoder", &dec_byte_level, &strip);
  if (j.value("decoder", json()).is_null()) dec_byte_level = byte_level;
  t->strip_leading_space_ = strip && !dec_byte_level;
  t->piece_bytes_.resize(t->vocab.size());
  for (size_t id = 0; id < t->vocab.size(); ++id) {
    const std::string& v = t->vocab[id];
    if (is_added[id]) {
      t->piece_bytes_[id] = v;
    } else if (dec_byte_level) {
      t->piece_bytes_[id] = tok::byte_level_decode(v);
    } else if (t->byte_fallback && v.size() == 6 && v.compare(0, 3, "<0x") == 0 && v[5] == '>' &&
               std::isxdigit(uint8_t(v[3])) && std::isxdigit(uint8_t(v[4]))) {
      t->piece_bytes_[id] = std::string(1, char(std::stoi(v.substr(3, 2), nullptr, 16)));
    } else {
      std::string s;
      for (size_t k = 0; k < v.size();) {
        if (v.compare(k, 3, kMetaspace) == 0) {
          s += ' ';
          k += 3;
        } else {
          s += v[k++];
        }
      }
      t->piece_bytes_[id] = s;
    }
  }

  // BOS/EOS from the post-processor, then the side files (which win).
  parse_post(c, j.value("post_processor", json()), "post_processor", *t);
  tok::apply_hf_configs(*t, std::filesystem::path(json_path).parent_path().string(), nullptr);
  if (t->bos_id >= 0 && t->bos_token.empty()) t->bos_token = t->piece_bytes_[size_t(t->bos_id)];
  if (t->eos_id >= 0 && t->eos_token.empty()) t->eos_token = t->piece_bytes_[size_t(t->eos_id)];
  tok::add_default_stop_ids(*t);
  return t;
}

}  // namespace lora
