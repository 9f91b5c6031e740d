// TokenizerVocab (io/tokenizer_write.h): HF tokenizer files <-> llama.cpp's tokenizer.ggml.* metadata.
// The SentencePiece ModelProto is read and written by hand (protobuf wire format: varints, 32-bit floats,
// length-delimited strings and messages); field numbers from sentencepiece_model.proto:
//   ModelProto{1: repeated SentencePiece, 2: TrainerSpec, 3: NormalizerSpec}
//   SentencePiece{1: piece, 2: score (float), 3: type (enum)}
//   TrainerSpec{3: model_type (BPE = 2), 4: vocab_size, 35: byte_fallback, 40..43: unk/bos/eos/pad id}
//   NormalizerSpec{1: name, 3: add_dummy_prefix, 4: remove_extra_whitespaces, 5: escape_whitespaces}
#include "io/tokenizer_write.h"

#include <cstring>
#include <filesystem>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "io/gguf.h"
#include "io/mapped_file.h"
#include "io/tokenizer_impl.h"

namespace lora {

namespace {

using json = nlohmann::json;
namespace fs = std::filesystem;

enum TokType { TT_NORMAL = 1, TT_UNKNOWN = 2, TT_CONTROL = 3, TT_USER_DEFINED = 4, TT_UNUSED = 5, TT_BYTE = 6 };

// ---- protobuf wire format ----

class PbReader {
 public:
  PbReader(const std::string& file, const uint8_t* p, size_t n) : file_(file), p_(p), n_(n) {}
  bool done() const { return pos_ >= n_; }
  uint64_t varint() {
    uint64_t v = 0;
    for (int shift = 0; shift < 64; shift += 7) {
      if (pos_ >= n_) fail("truncated varint");
      const uint8_t b = p_[pos_++];
      v |= uint64_t(b & 0x7f) << shift;
      if (!(b & 0x80)) return v;
    }
    fail("varint too long");
  }
  // Next field: (number, wire type).
  std::pair<uint32_t, uint32_t> tag() {
    const uint64_t t = varint();
    return {uint32_t(t >> 3), uint32_t(t & 7)};
  }
  std::pair<const uint8_t*, size_t> bytes() {
    const uint64_t len = varint();
    if (len > n_ - pos_) fail("length-delimited field runs past the end");
    const uint8_t* s = p_ + pos_;
    pos_ += size_t(len);
    return {s, size_t(len)};
  }
  uint32_t fixed32() {
    if (n_ - pos_ < 4) fail("truncated fixed32");
    uint32_t v;
    std::memcpy(&v, p_ + pos_, 4);
    pos_ += 4;
    return v;
  }
  void skip(uint32_t wire) {
    switch (wire) {
      case 0: varint(); break;
      case 1: if (n_ - pos_ < 8) fail("truncated fixed64"); pos_ += 8; break;
      case 2: bytes(); break;
      case 5: fixed32(); break;
      default: fail("unknown wire type " + std::to_string(wire));
    }
  }
  [[noreturn]] void fail(const std::string& what) const {
    fail_input(file_, "not a valid SentencePiece model: " + what + " at byte " + std::to_string(pos_),
               "tokenizer.model must be the model's SentencePiece ModelProto (not a Git LFS pointer)");
  }
  const std::string& file() const { return file_; }

 private:
  std::string file_;
  const uint8_t* p_;
  size_t n_, pos_ = 0;
};

void pb_varint(std::string& o, uint64_t v) {
  while (v >= 0x80) {
    o += char(uint8_t(v) | 0x80);
    v >>= 7;
  }
  o += char(uint8_t(v));
}
void pb_tag(std::string& o, uint32_t field, uint32_t wire) { pb_varint(o, (uint64_t(field) << 3) | wire); }
void pb_int(std::string& o, uint32_t field, int64_t v) {  // int32/enum/bool: negative as 64-bit two's complement
  pb_tag(o, field, 0);
  pb_varint(o, uint64_t(v));
}
void pb_bytes(std::string& o, uint32_t field, const std::string& s) {
  pb_tag(o, field, 2);
  pb_varint(o, s.size());
  o += s;
}
void pb_float(std::string& o, uint32_t field, float f) {
  pb_tag(o, field, 5);
  char b[4];
  std::memcpy(b, &f, 4);
  o.append(b, 4);
}

// ---- HF side ----

json read_json_opt(const std::string& path) {
  std::error_code ec;
  if (!fs::is_regular_file(path, ec)) return json();
  try {
    return json::parse(read_text_file(path));
  } catch (const json::exception& e) {
    fail_input(path, fmt::format("invalid JSON: {}", e.what()), "the file must be valid JSON");
  }
}

std::string token_text(const json& v) {
  if (v.is_string()) return v.get<std::string>();
  if (v.is_object() && v.contains("content") && v["content"].is_string()) return v["content"].get<std::string>();
  return {};
}

void read_spm_model(const std::string& path, TokenizerVocab& v) {
  const std::string bytes = read_text_file(path);
  PbReader r(path, reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size());
  v.model = "llama";
  v.pre = "default";
  int64_t unk = 0, bos = 1, eos = 2, pad = -1;  // TrainerSpec defaults
  while (!r.done()) {
    const auto [field, wire] = r.tag();
    if (field == 1 && wire == 2) {
      const auto [p, n] = r.bytes();
      PbReader m(path, p, n);
      std::string piece;
      float score = 0;
      int32_t type = TT_NORMAL;
      while (!m.done()) {
        const auto [f, w] = m.tag();
        if (f == 1 && w == 2) {
          const auto [s, k] = m.bytes();
          piece.assign(reinterpret_cast<const char*>(s), k);
        } else if (f == 2 && w == 5) {
          const uint32_t u = m.fixed32();
          std::memcpy(&score, &u, 4);
        } else if (f == 3 && w == 0) {
          type = int32_t(m.varint());
        } else {
          m.skip(w);
        }
      }
      v.tokens.push_back(piece);
      v.scores.push_back(score);
      v.types.push_back(type);
    } else if ((field == 2 || field == 3) && wire == 2) {
      const auto [p, n] = r.bytes();
      PbReader m(path, p, n);
      while (!m.done()) {
        const auto [f, w] = m.tag();
        if (w != 0) {
          m.skip(w);
          continue;
        }
        const int64_t val = int64_t(int32_t(uint32_t(m.varint())));
        if (field == 2 && f == 40) unk = val;
        else if (field == 2 && f == 41) bos = val;
        else if (field == 2 && f == 42) eos = val;
        else if (field == 2 && f == 43) pad = val;
        else if (field == 3 && f == 3) v.add_space_prefix = val != 0;
      }
    } else {
      r.skip(wire);
    }
  }
  if (v.tokens.empty()) r.fail("no pieces");
  const int64_t n = int64_t(v.tokens.size());
  auto id = [&](int64_t x) { return x >= 0 && x < n ? x : -1; };
  v.unk = id(unk);
  v.bos = id(bos);
  v.eos = id(eos);
  v.pad = id(pad);
}

// The tokenizer.ggml.pre name of a byte-level tokenizer.json pre-tokenizer (llama.cpp's regex sets).
std::string pre_name(const json& pre, const std::string& where) {
  std::vector<std::string> kinds;  // "bytelevel+regex", "bytelevel", "split:<re>", "digits1"
  std::function<void(const json&)> walk = [&](const json& n) {
    if (!n.is_object()) return;
    const std::string type = n.value("type", "");
    if (type == "Sequence" && n.contains("pretokenizers") && n["pretokenizers"].is_array()) {
      for (const json& e : n["pretokenizers"]) walk(e);
    } else if (type == "ByteLevel") {
      kinds.push_back(n.value("use_regex", true) ? "bytelevel+regex" : "bytelevel");
    } else if (type == "Split" && n.contains("pattern") && n["pattern"].is_object() && n["pattern"].contains("Regex")) {
      kinds.push_back("split:" + n["pattern"]["Regex"].get<std::string>());
    } else if (type == "Digits") {
      kinds.push_back(n.value("individual_digits", false) ? "digits1" : "digits");
    } else {
      kinds.push_back("other:" + type);
    }
  };
  walk(pre);
  const std::vector<std::string> gpt2 = {"bytelevel+regex"};
  const std::vector<std::string> llama3 = {std::string("split:") + tok::kRegexLlama3, "bytelevel"};
  const std::vector<std::string> qwen2 = {std::string("split:") + tok::kRegexQwen2, "bytelevel"};
  const std::vector<std::string> smollm = {"digits1", "bytelevel+regex"};
  if (kinds == gpt2) return "gpt2";
  if (kinds == llama3) return "llama-bpe";
  if (kinds == qwen2) return "qwen2";
  if (kinds == smollm) return "smollm";
  fail_input(where, "this byte-level pre-tokenizer has no llama.cpp name (tokenizer.ggml.pre)",
             "supported: GPT-2's ByteLevel regex, Llama 3's, Qwen2's and SmolLM's digit split");
}

void read_bpe_json(const std::string& path, TokenizerVocab& v) {
  const json j = read_json_opt(path);
  auto at = [&](const std::string& k) { return path + ": " + k; };
  if (!j.is_object() || !j.contains("model") || !j["model"].is_object())
    fail_input(at("model"), "missing", "tokenizer.json must hold a tokenizer model");
  const json& m = j["model"];
  if (m.value("type", "BPE") != "BPE") fail_input(at("model.type"), "only BPE tokenizers can be exported", "");
  const json pre = j.value("pre_tokenizer", json());
  bool byte_level = false;
  std::function<void(const json&)> has_bl = [&](const json& n) {
    if (!n.is_object()) return;
    if (n.value("type", "") == "ByteLevel") byte_level = true;
    if (n.contains("pretokenizers") && n["pretokenizers"].is_array())
      for (const json& e : n["pretokenizers"]) has_bl(e);
  };
  has_bl(pre);
  if (!byte_level)
    fail_input(at("pre_tokenizer"), "a SentencePiece-style tokenizer.json without tokenizer.model cannot be exported yet",
               "put the model's tokenizer.model (SentencePiece) in the folder");
  v.model = "gpt2";
  v.pre = pre_name(pre, at("pre_tokenizer"));
  if (!m.contains("vocab") || !m["vocab"].is_object()) fail_input(at("model.vocab"), "missing", "");
  std::map<int64_t, std::pair<std::string, int32_t>> by_id;
  for (auto it = m["vocab"].begin(); it != m["vocab"].end(); ++it)
    if (it.value().is_number_integer()) by_id[it.value().get<int64_t>()] = {it.key(), TT_NORMAL};
  if (j.contains("added_tokens") && j["added_tokens"].is_array())
    for (const json& a : j["added_tokens"])
      if (a.is_object() && a.contains("id") && a["id"].is_number_integer())
        by_id[a["id"].get<int64_t>()] = {a.value("content", ""), a.value("special", false) ? TT_CONTROL : TT_USER_DEFINED};
  const int64_t n = by_id.empty() ? 0 : by_id.rbegin()->first + 1;
  v.tokens.assign(size_t(n), "");
  v.types.assign(size_t(n), TT_UNUSED);
  for (int64_t i = 0; i < n; ++i) v.tokens[size_t(i)] = fmt::format("[PAD{}]", i);
  for (const auto& [id, tt] : by_id) {
    if (id < 0) continue;
    v.tokens[size_t(id)] = tt.first;
    v.types[size_t(id)] = tt.second;
  }
  if (m.contains("merges") && m["merges"].is_array())
    for (const json& e : m["merges"]) {
      if (e.is_string()) v.merges.push_back(e.get<std::string>());
      else if (e.is_array() && e.size() == 2) v.merges.push_back(e[0].get<std::string>() + " " + e[1].get<std::string>());
    }
  const std::string unk = m.contains("unk_token") && m["unk_token"].is_string() ? m["unk_token"].get<std::string>() : "";
  for (size_t i = 0; i < v.tokens.size() && !unk.empty(); ++i)
    if (v.tokens[i] == unk) v.unk = int64_t(i);
  // TemplateProcessing that puts a special token before $A: the tokenizer adds BOS.
  std::function<void(const json&)> post = [&](const json& p) {
    if (!p.is_object()) return;
    if (p.value("type", "") == "Sequence" && p.contains("processors"))
      for (const json& e : p["processors"]) post(e);
    if (p.value("type", "") != "TemplateProcessing" || !p.contains("single") || !p["single"].is_array()) return;
    const json specials = p.value("special_tokens", json::object());
    bool seen_a = false;
    for (const json& e : p["single"]) {
      if (e.contains("Sequence")) {
        seen_a = true;
        continue;
      }
      if (!e.contains("SpecialToken") || !e["SpecialToken"].is_object()) continue;
      (seen_a ? v.add_eos : v.add_bos) = true;
      const std::string name = e["SpecialToken"].value("id", "");
      if (specials.is_object() && specials.contains(name) && specials[name].contains("ids") &&
          specials[name]["ids"].is_array() && specials[name]["ids"].size() == 1 && specials[name]["ids"][0].is_number_integer())
        (seen_a ? v.eos : v.bos) = specials[name]["ids"][0].get<int64_t>();
    }
  };
  post(j.value("post_processor", json()));
}

int64_t find_id(const TokenizerVocab& v, const std::string& text) {
  for (size_t i = 0; i < v.tokens.size(); ++i)
    if (v.tokens[i] == text) return int64_t(i);
  return -1;
}

void write_text(const std::string& path, const std::string& text) { write_file_atomic(path, text.data(), text.size()); }

}  // namespace

TokenizerVocab tokenizer_vocab_from_hf(const std::string& dir, int64_t n_vocab, int64_t cfg_bos, int64_t cfg_eos) {
  TokenizerVocab v;
  const fs::path d(dir);
  std::error_code ec;
  if (fs::is_regular_file(d / "tokenizer.model", ec)) read_spm_model((d / "tokenizer.model").string(), v);
  else if (fs::is_regular_file(d / "tokenizer.json", ec)) read_bpe_json((d / "tokenizer.json").string(), v);
  else
    fail_input(dir, "no tokenizer.model or tokenizer.json in this folder",
               "a GGUF file embeds the tokenizer: copy the model's tokenizer files into the folder");
  if (v.model == "llama" && (v.bos < 0 || v.eos < 0)) {
    if (v.bos < 0) v.bos = cfg_bos;
    if (v.eos < 0) v.eos = cfg_eos;
  }

  // tokenizer_config.json: added tokens, special tokens, BOS/EOS behaviour, chat template.
  const std::string cfg_path = (d / "tokenizer_config.json").string();
  const json cfg = read_json_opt(cfg_path);
  if (cfg.is_object()) {
    if (cfg.contains("added_tokens_decoder") && cfg["added_tokens_decoder"].is_object()) {
      for (auto it = cfg["added_tokens_decoder"].begin(); it != cfg["added_tokens_decoder"].end(); ++it) {
        int64_t id = -1;
        try {
          id = std::stoll(it.key());
        } catch (...) {
          fail_input(cfg_path + ": added_tokens_decoder." + it.key(), "expected a token id", "");
        }
        const std::string text = token_text(it.value());
        if (id < 0 || text.empty()) continue;
        if (id >= int64_t(v.tokens.size())) {  // beyond the base vocabulary: appended (llama.cpp pads between)
          while (int64_t(v.tokens.size()) < id) {
            v.tokens.push_back(fmt::format("[PAD{}]", v.tokens.size()));
            v.types.push_back(TT_UNUSED);
            if (v.model == "llama") v.scores.push_back(-1000.0f);
          }
          v.tokens.push_back(text);
          v.types.push_back(TT_NORMAL);
          if (v.model == "llama") v.scores.push_back(-1000.0f);
        }
        const int32_t ty = v.types[size_t(id)];
        if (ty == TT_UNKNOWN || ty == TT_BYTE) continue;  // keep what SentencePiece says these are
        const bool special = it.value().is_object() && it.value().value("special", false);
        v.types[size_t(id)] = special ? TT_CONTROL : TT_USER_DEFINED;
        v.tokens[size_t(id)] = text;
        if (v.model == "llama" && ty != TT_CONTROL) v.scores[size_t(id)] = -1000.0f;
      }
    }
    auto special = [&](const char* key, int64_t* id) {
      if (!cfg.contains(key)) return;
      const std::string text = token_text(cfg[key]);
      if (text.empty()) return;
      const int64_t found = find_id(v, text);
      if (found >= 0) *id = found;
    };
    special("bos_token", &v.bos);
    special("eos_token", &v.eos);
    special("unk_token", &v.unk);
    special("pad_token", &v.pad);
    for (auto [key, dst] : {std::pair{"add_bos_token", &v.add_bos}, std::pair{"add_eos_token", &v.add_eos}})
      if (cfg.contains(key) && cfg[key].is_boolean()) *dst = cfg[key].get<bool>();
    if (cfg.contains("chat_template")) {
      const json& ct = cfg["chat_template"];
      if (ct.is_string()) v.chat_template = ct.get<std::string>();
      else if (ct.is_array())
        for (const json& e : ct)
          if (e.is_object() && e.value("name", "") == "default" && e.contains("template") && e["template"].is_string())
            v.chat_template = e["template"].get<std::string>();
    }
  }
  if (v.chat_template.empty() && fs::is_regular_file(d / "chat_template.jinja", ec))
    v.chat_template = read_text_file((d / "chat_template.jinja").string());
  if (v.model == "gpt2") {
    if (v.bos < 0) v.bos = cfg_bos;
    if (v.eos < 0) v.eos = cfg_eos;
  }

  const int64_t n = int64_t(v.tokens.size());
  if (n_vocab > 0 && n > n_vocab)
    fail_input(dir, fmt::format("the tokenizer has {} tokens but the model's vocabulary only {}", n, n_vocab),
               "the tokenizer files do not belong to this model");
  for (int64_t i = n; i < n_vocab; ++i) {  // the embedding has rows the tokenizer never produces
    v.tokens.push_back(fmt::format("[PAD{}]", i));
    v.types.push_back(TT_UNUSED);
    if (v.model == "llama") v.scores.push_back(-1000.0f);
  }
  for (int64_t* id : {&v.bos, &v.eos, &v.unk, &v.pad})
    if (*id >= int64_t(v.tokens.size())) *id = -1;
  return v;
}

TokenizerVocab tokenizer_vocab_from_gguf(const GGUFFile& f) {
  TokenizerVocab v;
  v.model = f.get_str("tokenizer.ggml.model");
  if (v.model.empty()) return v;
  v.pre = f.get_str("tokenizer.ggml.pre");
  v.tokens = f.get_str_array("tokenizer.ggml.tokens");
  for (double s : f.get_float_array("tokenizer.ggml.scores")) v.scores.push_back(float(s));
  for (int64_t t : f.get_int_array("tokenizer.ggml.token_type")) v.types.push_back(int32_t(t));
  if (v.types.empty()) v.types.assign(v.tokens.size(), TT_NORMAL);
  if (v.model == "llama" && v.scores.empty()) v.scores.assign(v.tokens.size(), 0.0f);
  if (v.types.size() != v.tokens.size() || (!v.scores.empty() && v.scores.size() != v.tokens.size()))
    fail_input(f.path() + ": tokenizer.ggml.token_type", "its length differs from tokenizer.ggml.tokens",
               "the GGUF's tokenizer is inconsistent");
  v.merges = f.get_str_array("tokenizer.ggml.merges");
  auto id = [&](const char* key) {
    const int64_t x = f.get_int(key, -1);
    return x >= 0 && x < int64_t(v.tokens.size()) ? x : -1;  // uint32 -1 ("none") lands here too
  };
  v.bos = id("tokenizer.ggml.bos_token_id");
  v.eos = id("tokenizer.ggml.eos_token_id");
  v.unk = id("tokenizer.ggml.unknown_token_id");
  v.pad = id("tokenizer.ggml.padding_token_id");
  if (f.has("tokenizer.ggml.add_bos_token")) v.add_bos = f.get_bool("tokenizer.ggml.add_bos_token", true);
  if (f.has("tokenizer.ggml.add_eos_token")) v.add_eos = f.get_bool("tokenizer.ggml.add_eos_token", false);
  v.add_space_prefix = f.get_bool("tokenizer.ggml.add_space_prefix", true);
  v.chat_template = f.get_str("tokenizer.chat_template");
  return v;
}

void tokenizer_vocab_to_gguf(const TokenizerVocab& v, GGUFWriter& w) {
  if (v.model.empty()) return;
  w.set_str("tokenizer.ggml.model", v.model);
  if (!v.pre.empty()) w.set_str("tokenizer.ggml.pre", v.pre);
  w.set_str_array("tokenizer.ggml.tokens", v.tokens);
  if (!v.scores.empty()) w.set_f32_array("tokenizer.ggml.scores", v.scores);
  w.set_i32_array("tokenizer.ggml.token_type", v.types);
  if (!v.merges.empty()) w.set_str_array("tokenizer.ggml.merges", v.merges);
  if (v.bos >= 0) w.set_u32("tokenizer.ggml.bos_token_id", uint32_t(v.bos));
  if (v.eos >= 0) w.set_u32("tokenizer.ggml.eos_token_id", uint32_t(v.eos));
  if (v.unk >= 0) w.set_u32("tokenizer.ggml.unknown_token_id", uint32_t(v.unk));
  if (v.pad >= 0) w.set_u32("tokenizer.ggml.padding_token_id", uint32_t(v.pad));
  if (v.add_bos) w.set_bool("tokenizer.ggml.add_bos_token", *v.add_bos);
  if (v.add_eos) w.set_bool("tokenizer.ggml.add_eos_token", *v.add_eos);
  if (v.model == "llama" && !v.add_space_prefix) w.set_bool("tokenizer.ggml.add_space_prefix", false);
  if (!v.chat_template.empty()) w.set_str("tokenizer.chat_template", v.chat_template);
}

void tokenizer_vocab_write_hf(const TokenizerVocab& v, const std::string& dir) {
  if (v.model.empty()) return;
  const int64_t n = int64_t(v.tokens.size());
  auto text_of = [&](int64_t id) { return id >= 0 && id < n ? json(v.tokens[size_t(id)]) : json(nullptr); };
  json cfg = json::object();
  if (v.model == "llama") {
    // A SentencePiece BPE model with byte fallback, spaces as U+2581, no whitespace folding: what
    // llama.cpp does with a "llama" vocabulary.
    std::string pb;
    bool has_bytes = false;
    for (int64_t i = 0; i < n; ++i) {
      int32_t type = v.types[size_t(i)];
      if (i == v.unk) type = TT_UNKNOWN;  // SentencePiece requires its unk piece to be UNKNOWN
      else if ((i == v.bos || i == v.eos) && (type == TT_NORMAL || type == TT_USER_DEFINED)) type = TT_CONTROL;
      has_bytes = has_bytes || type == TT_BYTE;
      std::string piece;
      pb_bytes(piece, 1, v.tokens[size_t(i)]);
      pb_float(piece, 2, v.scores.empty() ? 0.0f : v.scores[size_t(i)]);
      if (type != TT_NORMAL) pb_int(piece, 3, type);
      pb_bytes(pb, 1, piece);
    }
    std::string trainer;
    pb_int(trainer, 3, 2);  // model_type BPE
    pb_int(trainer, 4, n);
    if (has_bytes) pb_int(trainer, 35, 1);
    pb_int(trainer, 40, v.unk);
    pb_int(trainer, 41, v.bos);
    pb_int(trainer, 42, v.eos);
    pb_int(trainer, 43, v.pad);
    pb_bytes(pb, 2, trainer);
    std::string norm;
    pb_bytes(norm, 1, "identity");
    pb_int(norm, 3, v.add_space_prefix ? 1 : 0);
    pb_int(norm, 4, 0);
    pb_int(norm, 5, 1);
    pb_bytes(pb, 3, norm);
    write_text(dir + "/tokenizer.model", pb);
    cfg["tokenizer_class"] = "LlamaTokenizer";
    cfg["legacy"] = false;
  } else if (v.model == "gpt2") {
    json vocab = json::object(), added = json::array();
    for (int64_t i = 0; i < n; ++i) {
      const int32_t ty = v.types[size_t(i)];
      if (ty == TT_CONTROL || ty == TT_USER_DEFINED || ty == TT_UNKNOWN)
        added.push_back({{"id", i}, {"content", v.tokens[size_t(i)]}, {"single_word", false}, {"lstrip", false},
                         {"rstrip", false}, {"normalized", ty == TT_USER_DEFINED}, {"special", ty != TT_USER_DEFINED}});
      else if (ty != TT_UNUSED)
        vocab[v.tokens[size_t(i)]] = i;
    }
    json merges = json::array();
    for (const std::string& m : v.merges) {
      const size_t sp = m.find(' ', 1);
      if (sp == std::string::npos) fail_input("tokenizer.ggml.merges", fmt::format("\"{}\" is not \"left right\"", m), "");
      merges.push_back(json::array({m.substr(0, sp), m.substr(sp + 1)}));
    }
    auto split = [](const char* re) {
      return json{{"type", "Split"}, {"pattern", {{"Regex", re}}}, {"behavior", "Isolated"}, {"invert", false}};
    };
    auto byte_level = [](bool regex) {
      return json{{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", true}, {"use_regex", regex}};
    };
    json pre;
    const std::string p = v.pre.empty() ? "default" : v.pre;
    bool ignore_merges = false;
    if (p == "default" || p == "gpt2") pre = byte_level(true);
    else if (p == "llama-bpe" || p == "llama3") {
      pre = {{"type", "Sequence"}, {"pretokenizers", {split(tok::kRegexLlama3), byte_level(false)}}};
      ignore_merges = true;
    } else if (p == "qwen2") pre = {{"type", "Sequence"}, {"pretokenizers", {split(tok::kRegexQwen2), byte_level(false)}}};
    else if (p == "smollm")
      pre = {{"type", "Sequence"},
             {"pretokenizers", {{{"type", "Digits"}, {"individual_digits", true}}, byte_level(true)}}};
    else
      fail_input("tokenizer.ggml.pre", fmt::format("\"{}\" cannot be written as a tokenizer.json pre-tokenizer", p),
                 "supported: default/gpt2, llama-bpe, qwen2, smollm");
    json post = byte_level(true);
    post["trim_offsets"] = false;
    if (v.add_bos.value_or(false) && v.bos >= 0) {
      const std::string b = v.tokens[size_t(v.bos)];
      const json tp = {{"type", "TemplateProcessing"},
                       {"single", {{{"SpecialToken", {{"id", b}, {"type_id", 0}}}}, {{"Sequence", {{"id", "A"}, {"type_id", 0}}}}}},
                       {"pair", {{{"SpecialToken", {{"id", b}, {"type_id", 0}}}}, {{"Sequence", {{"id", "A"}, {"type_id", 0}}}},
                                 {{"SpecialToken", {{"id", b}, {"type_id", 1}}}}, {{"Sequence", {{"id", "B"}, {"type_id", 1}}}}}},
                       {"special_tokens", {{b, {{"id", b}, {"ids", {v.bos}}, {"tokens", {b}}}}}}};
      post = {{"type", "Sequence"}, {"processors", {post, tp}}};
    }
    const json tj = {{"version", "1.0"},
                     {"truncation", nullptr},
                     {"padding", nullptr},
                     {"added_tokens", added},
                     {"normalizer", nullptr},
                     {"pre_tokenizer", pre},
                     {"post_processor", post},
                     {"decoder", {{"type", "ByteLevel"}, {"add_prefix_space", true}, {"trim_offsets", true}, {"use_regex", true}}},
                     {"model",
                      {{"type", "BPE"}, {"dropout", nullptr}, {"unk_token", text_of(v.unk)},
                       {"continuing_subword_prefix", nullptr}, {"end_of_word_suffix", nullptr}, {"fuse_unk", false},
                       {"byte_fallback", false}, {"ignore_merges", ignore_merges}, {"vocab", vocab}, {"merges", merges}}}};
    write_text(dir + "/tokenizer.json", tj.dump(2) + "\n");
    cfg["tokenizer_class"] = "PreTrainedTokenizerFast";
  } else {
    fail_input("tokenizer.ggml.model", fmt::format("\"{}\" cannot be written as HF tokenizer files", v.model),
               "supported: llama (SentencePiece), gpt2 (byte-level BPE)");
  }
  if (v.add_bos) cfg["add_bos_token"] = *v.add_bos;
  if (v.add_eos) cfg["add_eos_token"] = *v.add_eos;
  cfg["bos_token"] = text_of(v.bos);
  cfg["eos_token"] = text_of(v.eos);
  cfg["unk_token"] = text_of(v.unk);
  cfg["pad_token"] = text_of(v.pad);
  cfg["clean_up_tokenization_spaces"] = false;
  if (!v.chat_template.empty()) cfg["chat_template"] = v.chat_template;
  write_text(dir + "/tokenizer_config.json", cfg.dump(2) + "\n");
}

}  // namespace lora
