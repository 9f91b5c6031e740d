// Tokenizer front door: tokenizer_load (model folder, tokenizer file or .gguf), the shared decode and
// added-token partition, the HF side files (tokenizer_config.json, special_tokens_map.json,
// generation_config.json) that set BOS/EOS/stop ids and the chat template, and StreamDecoder.
#include <algorithm>
#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "io/gguf.h"
#include "io/mapped_file.h"
#include "io/tokenizer_impl.h"

namespace lora {

bool Tokenizer::is_special(int32_t id) const {
  return std::find(special_ids.begin(), special_ids.end(), id) != special_ids.end();
}

namespace tok {

void TokenizerBase::check_id(int32_t id) const {
  if (id < 0 || id >= vocab_size())
    fail_input("token id", fmt::format("{} is outside the vocabulary [0, {})", id, vocab_size()),
               "token ids must come from this model's tokenizer");
}

std::string TokenizerBase::token_bytes(int32_t id) const {
  check_id(id);
  return piece_bytes_[size_t(id)];
}

std::string TokenizerBase::decode(const std::vector<int32_t>& ids, bool skip_special) const {
  std::string out;
  bool at_start = true;
  for (int32_t id : ids) {
    check_id(id);
    if (skip_special && is_special(id)) continue;
    std::string_view p = piece_bytes_[size_t(id)];
    // The dummy prefix of SentencePiece: one space before the first word was added by encode.
    if (at_start && strip_leading_space_ && !p.empty() && p.front() == ' ') p.remove_prefix(1);
    out += p;
    at_start = false;
  }
  return out;
}

void TokenizerBase::finalize_added() {
  std::stable_sort(added_.begin(), added_.end(),
                   [](const AddedToken& a, const AddedToken& b) { return a.text.size() > b.text.size(); });
  for (auto& v : added_by_byte_) v.clear();
  for (size_t i = 0; i < added_.size(); ++i)
    if (!added_[i].text.empty()) added_by_byte_[uint8_t(added_[i].text[0])].push_back(int(i));
}

static bool is_space_byte(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f'; }

std::vector<TokenizerBase::Fragment> TokenizerBase::partition(std::string_view text, bool parse_special) const {
  std::vector<Fragment> frags;
  size_t seg = 0, pos = 0;
  const size_t n = text.size();
  while (pos < n) {
    const AddedToken* hit = nullptr;
    for (int i : added_by_byte_[uint8_t(text[pos])]) {
      const AddedToken& a = added_[size_t(i)];
      if (a.special && !parse_special) continue;
      if (text.compare(pos, a.text.size(), a.text) == 0) {
        hit = &a;  // longest first, so the first hit is the longest
        break;
      }
    }
    if (!hit) {
      ++pos;
      continue;
    }
    size_t b = pos, e = pos + hit->text.size();
    if (hit->lstrip)
      while (b > seg && is_space_byte(text[b - 1])) --b;
    if (hit->rstrip)
      while (e < n && is_space_byte(text[e])) ++e;
    if (b > seg) frags.push_back(Fragment{-1, seg, b});
    frags.push_back(Fragment{hit->id, b, e});
    seg = pos = e;
  }
  if (seg < n || frags.empty()) frags.push_back(Fragment{-1, seg, n});
  return frags;
}

// ---- HF side files ----

namespace {
using json = nlohmann::json;

// Parses a JSON file, or returns null when it does not exist. Syntax errors name the file.
json read_json_opt(const std::string& path) {
  std::error_code ec;
  if (!std::filesystem::is_regular_file(path, ec)) return json();
  const std::string text = read_text_file(path);
  try {
    return json::parse(text);
  } catch (const json::exception& e) {
    fail_input(path, fmt::format("invalid JSON: {}", e.what()), "the file must be valid JSON");
  }
}

// bos_token / eos_token: a string or an AddedToken object {"content": ...}.
std::string token_text(const json& v, const std::string& where) {
  if (v.is_string()) return v.get<std::string>();
  if (v.is_object() && v.contains("content") && v["content"].is_string()) return v["content"].get<std::string>();
  if (v.is_null()) return {};
  fail_input(where, "expected a string or an object with \"content\"", "");
}

void add_unique(std::vector<int32_t>& v, int32_t id) {
  if (id >= 0 && std::find(v.begin(), v.end(), id) == v.end()) v.push_back(id);
}
}  // namespace

void add_default_stop_ids(TokenizerBase& t) {
  add_unique(t.stop_ids, t.eos_id);
  // End-of-turn tokens as llama.cpp recognises them, when present in this vocabulary.
  for (const char* s : {"<|im_end|>", "<|eot_id|>", "<|eom_id|>", "<|end_of_text|>", "</s>", "<|endoftext|>",
                        "<end_of_turn>", "<|end|>"}) {
    add_unique(t.stop_ids, t.find_token(s));
  }
}

void apply_hf_configs(TokenizerBase& t, const std::string& dir, bool* add_bos_set) {
  namespace fs = std::filesystem;
  const std::string cfg_path = (fs::path(dir) / "tokenizer_config.json").string();
  const std::string map_path = (fs::path(dir) / "special_tokens_map.json").string();
  const std::string gen_path = (fs::path(dir) / "generation_config.json").string();
  const json cfg = read_json_opt(cfg_path);
  const json smap = read_json_opt(map_path);
  const json gen = read_json_opt(gen_path);
  if (!cfg.is_null() && !cfg.is_object()) fail_input(cfg_path, "expected a JSON object", "");
  if (!smap.is_null() && !smap.is_object()) fail_input(map_path, "expected a JSON object", "");
  if (!gen.is_null() && !gen.is_object()) fail_input(gen_path, "expected a JSON object", "");

  auto set_token = [&](const char* key, int32_t* id, std::string* text) {
    std::string s;
    if (cfg.is_object() && cfg.contains(key)) s = token_text(cfg[key], cfg_path + ": " + key);
    if (s.empty() && smap.is_object() && smap.contains(key)) s = token_text(smap[key], map_path + ": " + key);
    if (s.empty()) return;
    const int32_t found = t.find_token(s);
    if (found < 0)
      fail_input(cfg_path + ": " + key, fmt::format("token \"{}\" is not in the vocabulary", s),
                 "the tokenizer files do not belong together");
    *id = found;
    *text = s;
  };
  set_token("bos_token", &t.bos_id, &t.bos_token);
  set_token("eos_token", &t.eos_id, &t.eos_token);

  if (cfg.is_object()) {
    for (auto [key, dst] : {std::pair{"add_bos_token", &t.add_bos}, std::pair{"add_eos_token", &t.add_eos}}) {
      if (!cfg.contains(key) || cfg[key].is_null()) continue;
      if (!cfg[key].is_boolean()) fail_input(cfg_path + ": " + key, "expected true or false", "");
      *dst = cfg[key].get<bool>();
      if (std::string(key) == "add_bos_token" && add_bos_set) *add_bos_set = true;
    }
    if (cfg.contains("chat_template")) {
      const json& ct = cfg["chat_template"];
      if (ct.is_string()) {
        t.chat_template = ct.get<std::string>();
      } else if (ct.is_array()) {  // [{"name": "default", "template": ...}, ...]
        for (const json& e : ct)
          if (e.is_object() && e.value("name", "") == "default" && e.contains("template") && e["template"].is_string())
            t.chat_template = e["template"].get<std::string>();
      } else if (!ct.is_null()) {
        fail_input(cfg_path + ": chat_template", "expected a string or a list of named templates", "");
      }
    }
  }
  // Newer transformers save the template beside the config.
  const std::string jinja = (fs::path(dir) / "chat_template.jinja").string();
  std::error_code ec;
  if (t.chat_template.empty() && fs::is_regular_file(jinja, ec)) t.chat_template = read_text_file(jinja);

  if (gen.is_object() && gen.contains("eos_token_id")) {
    const json& e = gen["eos_token_id"];
    std::vector<int64_t> ids;
    if (e.is_number_integer()) {
      ids.push_back(e.get<int64_t>());
    } else if (e.is_array()) {
      for (size_t i = 0; i < e.size(); ++i) {
        if (!e[i].is_number_integer())
          fail_input(fmt::format("{}: eos_token_id[{}]", gen_path, i), "expected an integer", "");
        ids.push_back(e[i].get<int64_t>());
      }
    } else if (!e.is_null()) {
      fail_input(gen_path + ": eos_token_id", "expected an integer or a list of integers", "");
    }
    for (int64_t id : ids) {
      if (id < 0 || id >= t.vocab_size())
        fail_input(gen_path + ": eos_token_id", fmt::format("{} is outside the vocabulary [0, {})", id, t.vocab_size()),
                   "the generation config does not belong to this tokenizer");
      if (t.eos_id < 0) t.eos_id = int32_t(id);
      add_unique(t.stop_ids, int32_t(id));
    }
  }
  if (t.eos_id >= 0 && t.eos_token.empty()) t.eos_token = t.piece_bytes_[size_t(t.eos_id)];
  if (t.bos_id >= 0 && t.bos_token.empty()) t.bos_token = t.piece_bytes_[size_t(t.bos_id)];
}

}  // namespace tok

// ---- loading ----

std::unique_ptr<Tokenizer> tokenizer_load(const std::string& path) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (!fs::exists(path, ec))
    fail_input(path, "no such file or folder", "pass a model folder (tokenizer.json or tokenizer.model) or a .gguf file");
  if (fs::is_directory(path, ec)) {
    const fs::path d(path);
    if (fs::is_regular_file(d / "tokenizer.json", ec)) return tokenizer_load_hf_json((d / "tokenizer.json").string());
    if (fs::is_regular_file(d / "tokenizer.model", ec)) return tokenizer_load_spm((d / "tokenizer.model").string());
    fail_input(path, "no tokenizer.json or tokenizer.model in this folder",
               "copy the tokenizer files of the model here, or pass the model's .gguf file");
  }
  const std::string name = fs::path(path).filename().string();
  auto ends_with = [&](const char* suf) {
    const std::string s(suf);
    return name.size() >= s.size() && name.compare(name.size() - s.size(), s.size(), s) == 0;
  };
  if (ends_with(".json")) return tokenizer_load_hf_json(path);
  if (ends_with(".model")) return tokenizer_load_spm(path);
  if (ends_with(".gguf")) {
    auto f = GGUFFile::open(path);
    return tokenizer_from_gguf(*f);
  }
  // Unknown extension: sniff the GGUF magic.
  std::ifstream in(path, std::ios::binary);
  char magic[4] = {};
  if (in.read(magic, 4) && std::string(magic, 4) == "GGUF") {
    auto f = GGUFFile::open(path);
    return tokenizer_from_gguf(*f);
  }
  fail_input(path, "not a tokenizer file", "expected a folder, tokenizer.json, tokenizer.model or a .gguf file");
}

std::unique_ptr<Tokenizer> tokenizer_load_spm(const std::string& model_path) {
  auto t = tok::load_spm_base(model_path);
  bool add_bos_set = false;
  t->add_bos = true;  // LlamaTokenizer's default
  tok::apply_hf_configs(*t, std::filesystem::path(model_path).parent_path().string(), &add_bos_set);
  tok::add_default_stop_ids(*t);
  return t;
}

// ---- streaming ----

std::string StreamDecoder::push(int32_t id) {
  if (tok_.is_special(id)) {
    (void)tok_.token_bytes(id);  // still reject ids outside the vocabulary
    return {};
  }
  // The first text token goes through decode() for the leading-space rule; the rest are raw bytes.
  // ids_ only records whether that first token has been seen.
  if (ids_.empty()) {
    emitted_ += tok_.decode({id}, true);
    ids_.push_back(id);
  } else {
    emitted_ += tok_.token_bytes(id);
  }
  return tok::utf8_take_complete(emitted_, false);  // emitted_ holds the bytes not yet returned
}

std::string StreamDecoder::flush() { return tok::utf8_take_complete(emitted_, true); }

}  // namespace lora
