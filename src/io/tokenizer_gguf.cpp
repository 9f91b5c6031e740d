// The vocabulary embedded in GGUF (tokenizer.ggml.*) into a BpeTokenizer, following llama.cpp:
//  - model "llama": SentencePiece-style BPE by vocabulary scores, byte fallback to <0xNN> tokens,
//    dummy prefix when add_space_prefix (default true), one also after each special token.
//  - model "gpt2": byte-level BPE by merge rank; tokenizer.ggml.pre selects the pre-tokenizer regexes.
// token_type marks control (3) and unknown (2) tokens as special, user-defined (4) as added text.
#include <algorithm>
#include <cctype>
#include <cstdint>

#include "core/error.h"
#include "io/gguf.h"
#include "io/tokenizer_impl.h"

namespace lora {

namespace {
using tok::BpeTokenizer;
using tok::PreSplit;

enum TokenType { TT_NORMAL = 1, TT_UNKNOWN = 2, TT_CONTROL = 3, TT_USER_DEFINED = 4, TT_UNUSED = 5, TT_BYTE = 6 };

const char* kHintPre =
    "supported tokenizer.ggml.pre values: default, gpt2, llama-bpe, llama3, qwen2, smollm (and their llama.cpp "
    "aliases); or pass the model folder's tokenizer.json";

// llama.cpp's regex sets per tokenizer.ggml.pre; each step splits every piece, keeping the gaps.
void set_pre(BpeTokenizer& t, const std::string& pre, const std::string& where) {
  auto add = [&](const char* re) {
    t.pre.push_back(PreSplit{std::make_shared<tok::Regex>(re, where), PreSplit::ISOLATED});
  };
  if (pre == "default" || pre == "gpt2" || pre == "mpt" || pre == "olmo" || pre == "jais") {
    add(tok::kRegexGpt2);
  } else if (pre == "llama-bpe" || pre == "llama3" || pre == "dbrx" || pre == "smaug-bpe") {
    add(tok::kRegexLlama3);
    t.ignore_merges = true;
  } else if (pre == "qwen2" || pre == "stablelm2" || pre == "deepseek-r1-qwen" || pre == "hunyuan") {
    add(tok::kRegexQwen2);
  } else if (pre == "smollm" || pre == "starcoder" || pre == "refact" || pre == "command-r" ||
             pre == "codeshell" || pre == "exaone") {
    add("\\p{N}");  // every digit on its own
    add(tok::kRegexGpt2);
  } else {
    fail_input(where, fmt::format("unsupported pre-tokenizer \"{}\"", pre), kHintPre);
  }
}

std::string sp_piece_text(const std::string& v) {
  std::string s;
  for (size_t k = 0; k < v.size();) {
    if (v.compare(k, 3, "\xE2\x96\x81") == 0) {
      s += ' ';
      k += 3;
    } else {
      s += v[k++];
    }
  }
  return s;
}

int byte_token_value(const std::string& v) {
  if (v.size() != 6 || v.compare(0, 3, "<0x") != 0 || v[5] != '>' || !std::isxdigit(uint8_t(v[3])) ||
      !std::isxdigit(uint8_t(v[4])))
    return -1;
  return std::stoi(v.substr(3, 2), nullptr, 16);
}
}  // namespace

std::unique_ptr<Tokenizer> tokenizer_from_gguf(const GGUFFile& f) {
  const std::string& path = f.path();
  auto at = [&](const std::string& key) { return path + ": " + key; };
  const std::string model = f.get_str("tokenizer.ggml.model");
  if (model.empty())
    fail_input(at("tokenizer.ggml.model"), "missing: this GGUF has no embedded tokenizer",
               "pass the model folder with tokenizer.json or tokenizer.model instead");
  if (model != "llama" && model != "gpt2")
    fail_input(at("tokenizer.ggml.model"), fmt::format("unsupported tokenizer model \"{}\"", model),
               "supported: \"llama\" (SentencePiece-style) and \"gpt2\" (byte-level BPE)");

  auto t = std::make_unique<BpeTokenizer>();
  t->vocab = f.get_str_array("tokenizer.ggml.tokens");
  const size_t n = t->vocab.size();
  if (n == 0) fail_input(at("tokenizer.ggml.tokens"), "missing or empty", "the GGUF's tokenizer is incomplete");
  if (n >= (size_t(1) << 31)) fail_input(at("tokenizer.ggml.tokens"), "too many tokens", "");
  const std::vector<int64_t> types = f.get_int_array("tokenizer.ggml.token_type");
  if (!types.empty() && types.size() != n)
    fail_input(at("tokenizer.ggml.token_type"), fmt::format("has {} entries for {} tokens", types.size(), n),
               "the GGUF's tokenizer is inconsistent");
  auto type_of = [&](size_t id) { return types.empty() ? int64_t(TT_NORMAL) : types[id]; };
  for (size_t id = 0; id < n; ++id) t->token_to_id.insert_or_assign(t->vocab[id], int32_t(id));

  const bool spm = model == "llama";
  if (spm) {
    const std::vector<double> sc = f.get_float_array("tokenizer.ggml.scores");
    if (!sc.empty() && sc.size() != n)
      fail_input(at("tokenizer.ggml.scores"), fmt::format("has {} entries for {} tokens", sc.size(), n),
                 "the GGUF's tokenizer is inconsistent");
    t->scores.assign(n, 0.0f);
    for (size_t i = 0; i < sc.size(); ++i) t->scores[i] = float(sc[i]);
    t->alphabet = BpeTokenizer::SPM;
    t->by_score = true;
    t->byte_fallback = true;
    t->replace_space = true;
    const bool prefix = f.get_bool("tokenizer.ggml.add_space_prefix", true);
    t->prepend = prefix ? BpeTokenizer::PREPEND_ALWAYS : BpeTokenizer::PREPEND_NEVER;
    t->strip_leading_space_ = prefix;
    for (size_t id = 0; id < n; ++id) {
      const int b = byte_token_value(t->vocab[id]);
      if (b >= 0 && (types.empty() || type_of(id) == TT_BYTE) && t->byte_ids[b] < 0) t->byte_ids[b] = int32_t(id);
    }
  } else {
    t->alphabet = BpeTokenizer::BYTE_LEVEL;
    const std::vector<std::string> merges = f.get_str_array("tokenizer.ggml.merges");
    if (merges.empty())
      fail_input(at("tokenizer.ggml.merges"), "missing or empty", "a gpt2 (BPE) tokenizer needs its merges");
    for (size_t i = 0; i < merges.size(); ++i) {
      const std::string& m = merges[i];
      const size_t sp = m.find(' ', 1);
      if (sp == std::string::npos || sp + 1 >= m.size())
        fail_input(fmt::format("{}: tokenizer.ggml.merges[{}]", path, i), fmt::format("expected \"left right\", got \"{}\"", m),
                   "the GGUF's tokenizer is damaged");
      if (!t->add_merge(std::string_view(m).substr(0, sp), std::string_view(m).substr(sp + 1), int32_t(i)))
        fail_input(fmt::format("{}: tokenizer.ggml.merges[{}]", path, i),
                   fmt::format("merge \"{}\" uses a token missing from tokenizer.ggml.tokens", m),
                   "the GGUF's tokenizer is damaged");
    }
    set_pre(*t, f.get_str("tokenizer.ggml.pre", "default"), at("tokenizer.ggml.pre"));
  }

  // Decoded bytes, special and added tokens.
  t->piece_bytes_.resize(n);
  for (size_t id = 0; id < n; ++id) {
    const std::string& v = t->vocab[id];
    const int64_t ty = type_of(id);
    if (ty == TT_CONTROL || ty == TT_UNKNOWN || ty == TT_USER_DEFINED) {
      t->piece_bytes_[id] = v;
      const bool special = ty != TT_USER_DEFINED;
      if (special) t->special_ids.push_back(int32_t(id));
      if (!v.empty()) t->added_.push_back(tok::AddedToken{v, int32_t(id), special, false, false});
    } else if (spm) {
      const int b = ty == TT_BYTE ? byte_token_value(v) : -1;
      t->piece_bytes_[id] = b >= 0 ? std::string(1, char(b)) : sp_piece_text(v);
    } else {
      t->piece_bytes_[id] = tok::byte_level_decode(v);
    }
  }
  t->finalize_added();

  auto id_key = [&](const char* key) -> int32_t {
    const int64_t v = f.get_int(key, -1);
    if (v == -1 || v == int64_t(UINT32_MAX)) return -1;  // converters write uint32 -1 for "none"
    if (v < 0 || v >= int64_t(n))
      fail_input(at(key), fmt::format("{} is outside the vocabulary [0, {})", v, n), "the GGUF's tokenizer is damaged");
    return int32_t(v);
  };
  t->bos_id = id_key("tokenizer.ggml.bos_token_id");
  t->eos_id = id_key("tokenizer.ggml.eos_token_id");
  t->unk_id = id_key("tokenizer.ggml.unknown_token_id");
  if (t->unk_id < 0 && spm) t->unk_id = t->find_token("<unk>");
  (void)id_key("tokenizer.ggml.padding_token_id");
  t->add_bos = f.get_bool("tokenizer.ggml.add_bos_token", spm);
  t->add_eos = f.get_bool("tokenizer.ggml.add_eos_token", false);
  if (t->bos_id >= 0) t->bos_token = t->vocab[size_t(t->bos_id)];
  if (t->eos_id >= 0) t->eos_token = t->vocab[size_t(t->eos_id)];
  t->chat_template = f.get_str("tokenizer.chat_template");
  t->stop_ids.clear();
  if (t->eos_id >= 0) t->stop_ids.push_back(t->eos_id);
  for (const char* key : {"tokenizer.ggml.eot_token_id", "tokenizer.ggml.eom_token_id"}) {
    const int32_t id = id_key(key);
    if (id >= 0 && std::find(t->stop_ids.begin(), t->stop_ids.end(), id) == t->stop_ids.end())
      t->stop_ids.push_back(id);
  }
  tok::add_default_stop_ids(*t);
  return t;
}

}  // namespace lora
