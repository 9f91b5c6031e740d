// Private to the tokenizer files (src/io/tokenizer*.cpp): the shared base class (piece table, decode,
// added-token partition), the BPE engine configuration, UTF-8 and GPT-2 byte<->unicode helpers, and
// the PCRE2 regex wrapper used by the pre-tokenizers. Not a public interface: include io/tokenizer.h.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "io/tokenizer.h"

namespace lora::tok {

// ---- UTF-8 ----
// Length of the valid UTF-8 character starting at s[i], or 1 when the bytes there are not one
// (so a walk over arbitrary bytes always advances and never reads past the end).
size_t utf8_char_len(std::string_view s, size_t i);
std::string utf8_encode(uint32_t cp);
// Splits `pending` into the longest prefix of complete characters (invalid bytes become U+FFFD) and
// the trailing bytes that may still become a character when more arrive (kept in `pending`).
std::string utf8_take_complete(std::string& pending, bool final);

// ---- GPT-2 byte-level map: every byte <-> one printable code point ----
const std::string& byte_to_unicode(uint8_t b);         // UTF-8 of the code point for byte b
int unicode_to_byte(uint32_t cp);                       // -1 when cp is not in the map
std::string byte_level_encode(std::string_view bytes);  // bytes -> mapped UTF-8 string
std::string byte_level_decode(std::string_view mapped); // inverse; unmapped characters kept as-is

// ---- Regex (PCRE2, UTF + UCP, invalid UTF-8 in the subject never matches) ----
class Regex {
 public:
  // `where` names the file/field for the error when the pattern does not compile.
  Regex(const std::string& pattern, const std::string& where, bool literal = false);
  ~Regex();
  Regex(const Regex&) = delete;
  Regex& operator=(const Regex&) = delete;
  // Non-empty matches, left to right: (begin, end) byte offsets.
  std::vector<std::pair<size_t, size_t>> find_all(std::string_view s) const;

 private:
  void* code_ = nullptr;  // pcre2_code_8*
};

// One pre-tokenizer step: splits every current piece further.
struct PreSplit {
  enum Behavior { ISOLATED, REMOVED, MERGED_WITH_PREVIOUS, MERGED_WITH_NEXT, CONTIGUOUS };
  std::shared_ptr<Regex> re;
  Behavior behavior = ISOLATED;
};
std::vector<std::string_view> pre_split(std::string_view text, const std::vector<PreSplit>& steps);

// The regex sets llama.cpp uses for tokenizer.ggml.pre (also the patterns HF writes in tokenizer.json).
extern const char* const kRegexGpt2;
extern const char* const kRegexLlama3;
extern const char* const kRegexQwen2;

// A token matched literally in the text before BPE (HF added_tokens; GGUF control/user-defined).
struct AddedToken {
  std::string text;
  int32_t id = -1;
  bool special = false;  // only matched when parse_special
  bool lstrip = false, rstrip = false;
};

struct SvHash {
  using is_transparent = void;
  size_t operator()(std::string_view s) const noexcept { return std::hash<std::string_view>{}(s); }
};
using TokenMap = std::unordered_map<std::string, int32_t, SvHash, std::equal_to<>>;

// Shared base: a table of decoded bytes per id, added tokens, decode with the SentencePiece
// leading-space rule. Subclasses fill the tables and implement encode().
class TokenizerBase : public Tokenizer {
 public:
  std::string token_bytes(int32_t id) const override;
  std::string decode(const std::vector<int32_t>& ids, bool skip_special = true) const override;
  int32_t vocab_size() const override { return static_cast<int32_t>(piece_bytes_.size()); }
  // id of a token given its vocabulary text, -1 when absent.
  virtual int32_t find_token(std::string_view text) const = 0;

  // Text fragments and matched added tokens, in order.
  struct Fragment {
    int32_t id = -1;       // >= 0: an added token; else the text span [begin, end)
    size_t begin = 0, end = 0;
  };
  std::vector<Fragment> partition(std::string_view text, bool parse_special) const;

  std::vector<std::string> piece_bytes_;  // (V) what each id decodes to
  bool strip_leading_space_ = false;      // SentencePiece dummy prefix: drop one ' ' at the start
  std::vector<AddedToken> added_;         // sorted longest first by finalize_added()
  std::vector<int> added_by_byte_[256];   // indices into added_ by first byte, longest first
  void finalize_added();
  void check_id(int32_t id) const;
};

// BPE over a vocabulary. Two symbol alphabets and two merge orders:
//  - SPM style (Llama 2): text with ' ' -> U+2581 and a dummy prefix; symbols are UTF-8 characters,
//    unknown ones fall back to <0xNN> byte tokens. Merge order by vocabulary score (GGUF "llama",
//    as SentencePiece/llama.cpp) or by merge rank (tokenizer.json).
//  - Byte-level (GPT-2): pre-tokenizer regex splits, each piece's bytes map to printable code points;
//    merge order by rank.
class BpeTokenizer final : public TokenizerBase {
 public:
  enum Alphabet { SPM, BYTE_LEVEL };
  enum Prepend { PREPEND_NEVER, PREPEND_ALWAYS, PREPEND_FIRST };

  std::vector<int32_t> encode(std::string_view text, bool add_special = true,
                              bool parse_special = true) const override;
  int32_t find_token(std::string_view text) const override;

  // --- configuration, filled by the loaders ---
  Alphabet alphabet = SPM;
  bool by_score = false;            // merge order: scores (true) or merge ranks (false)
  std::vector<std::string> vocab;   // (V) token text as in the vocabulary
  std::vector<float> scores;        // (V) when by_score
  TokenMap token_to_id;
  std::unordered_map<uint64_t, std::pair<int32_t, int32_t>> merges;  // (left,right) -> (rank, merged id)
  int32_t byte_ids[256];            // SPM byte fallback <0xNN>, -1 when absent
  bool byte_fallback = false;
  int32_t unk_id = -1;
  bool fuse_unk = false;
  bool ignore_merges = false;       // a piece that is itself a token is not merged (Llama 3)
  // SPM text normalisation.
  Prepend prepend = PREPEND_NEVER;
  bool replace_space = false;       // ' ' -> U+2581
  bool split_on_metaspace = false;  // Metaspace split=true: words start at each U+2581
  // Byte-level pre-tokenizer.
  bool byte_level_prefix_space = false;
  std::vector<PreSplit> pre;

  BpeTokenizer() {
    for (int32_t& b : byte_ids) b = -1;
  }
  // Adds the merge (left, right) with priority `rank` (lower merges first); false when a part or
  // the result is not a token.
  bool add_merge(std::string_view left, std::string_view right, int32_t rank);

 private:
  void bpe_word(std::string_view word, std::vector<int32_t>& out) const;
};

// Fills bos/eos/add_bos/stop_ids/chat_template of `t` from the HF config files beside a
// tokenizer (tokenizer_config.json, special_tokens_map.json, generation_config.json, chat_template.jinja).
void apply_hf_configs(TokenizerBase& t, const std::string& dir, bool* add_bos_set);
// Adds eos and the end-of-turn tokens present in the vocabulary to stop_ids (deduplicated).
void add_default_stop_ids(TokenizerBase& t);

std::unique_ptr<TokenizerBase> load_spm_base(const std::string& model_path);

}  // namespace lora::tok
