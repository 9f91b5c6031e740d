// Text helpers for the tokenizers: UTF-8 validation and streaming, the GPT-2 byte<->unicode map,
// the PCRE2 regex wrapper and the pre-tokenizer split (HF tokenizers' Split semantics).
#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <array>
#include <mutex>

#include "core/error.h"
#include "io/tokenizer_impl.h"

namespace lora::tok {

// ---- UTF-8 ----

// Checks the character at p (avail bytes). Returns its length when complete and valid, else 0;
// *incomplete is set when the bytes present are a valid prefix cut short by the end.
static size_t utf8_check(const uint8_t* p, size_t avail, bool* incomplete) {
  *incomplete = false;
  const uint8_t c = p[0];
  if (c < 0x80) return 1;
  size_t need = 0;
  uint8_t lo = 0x80, hi = 0xBF;  // allowed range of the second byte
  if (c >= 0xC2 && c <= 0xDF) {
    need = 2;
  } else if (c >= 0xE0 && c <= 0xEF) {
    need = 3;
    if (c == 0xE0) lo = 0xA0;
    if (c == 0xED) hi = 0x9F;  // no surrogates
  } else if (c >= 0xF0 && c <= 0xF4) {
    need = 4;
    if (c == 0xF0) lo = 0x90;
    if (c == 0xF4) hi = 0x8F;
  } else {
    return 0;
  }
  for (size_t k = 1; k < need; ++k) {
    if (k >= avail) {
      *incomplete = true;
      return 0;
    }
    const uint8_t b = p[k];
    const uint8_t l = k == 1 ? lo : 0x80, h = k == 1 ? hi : 0xBF;
    if (b < l || b > h) return 0;
  }
  return need;
}

size_t utf8_char_len(std::string_view s, size_t i) {
  if (i >= s.size()) return 0;
  bool inc = false;
  size_t n = utf8_check(reinterpret_cast<const uint8_t*>(s.data()) + i, s.size() - i, &inc);
  return n == 0 ? 1 : n;
}

std::string utf8_encode(uint32_t cp) {
  std::string o;
  if (cp < 0x80) {
    o += char(cp);
  } else if (cp < 0x800) {
    o += char(0xC0 | (cp >> 6));
    o += char(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    o += char(0xE0 | (cp >> 12));
    o += char(0x80 | ((cp >> 6) & 0x3F));
    o += char(0x80 | (cp & 0x3F));
  } else {
    o += char(0xF0 | (cp >> 18));
    o += char(0x80 | ((cp >> 12) & 0x3F));
    o += char(0x80 | ((cp >> 6) & 0x3F));
    o += char(0x80 | (cp & 0x3F));
  }
  return o;
}

// Decodes one valid character (caller checked validity).
static uint32_t utf8_decode_at(const uint8_t* p, size_t n) {
  if (n == 1) return p[0];
  if (n == 2) return (uint32_t(p[0] & 0x1F) << 6) | (p[1] & 0x3F);
  if (n == 3) return (uint32_t(p[0] & 0x0F) << 12) | (uint32_t(p[1] & 0x3F) << 6) | (p[2] & 0x3F);
  return (uint32_t(p[0] & 0x07) << 18) | (uint32_t(p[1] & 0x3F) << 12) | (uint32_t(p[2] & 0x3F) << 6) |
         (p[3] & 0x3F);
}

std::string utf8_take_complete(std::string& pending, bool final) {
  static const std::string kReplacement = "\xEF\xBF\xBD";  // U+FFFD
  std::string out;
  const auto* p = reinterpret_cast<const uint8_t*>(pending.data());
  const size_t n = pending.size();
  size_t i = 0;
  while (i < n) {
    bool incomplete = false;
    const size_t len = utf8_check(p + i, n - i, &incomplete);
    if (len > 0) {
      out.append(pending, i, len);
      i += len;
    } else if (incomplete && !final) {
      break;  // wait for the rest of this character
    } else {
      out += kReplacement;
      i += 1;
    }
  }
  pending.erase(0, i);
  return out;
}

// ---- GPT-2 byte-level map ----
// Printable bytes map to themselves; the other 68 (controls, space, 0x7F-0xA0, 0xAD) map to
// U+0100.. in byte order, so every byte sequence becomes visible, merge-able text.

namespace {
struct ByteMap {
  std::array<std::string, 256> to_unicode;
  std::array<int, 512> from_cp;  // code points < 512 cover the whole map
  ByteMap() {
    from_cp.fill(-1);
    int extra = 0;
    for (int b = 0; b < 256; ++b) {
      const bool printable = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
      const uint32_t cp = printable ? uint32_t(b) : uint32_t(256 + extra++);
      to_unicode[b] = utf8_encode(cp);
      from_cp[cp] = b;
    }
  }
};
const ByteMap& byte_map() {
  static const ByteMap m;
  return m;
}
}  // namespace

const std::string& byte_to_unicode(uint8_t b) { return byte_map().to_unicode[b]; }

int unicode_to_byte(uint32_t cp) { return cp < 512 ? byte_map().from_cp[cp] : -1; }

std::string byte_level_encode(std::string_view bytes) {
  std::string o;
  o.reserve(bytes.size() * 2);
  for (unsigned char c : bytes) o += byte_map().to_unicode[c];
  return o;
}

std::string byte_level_decode(std::string_view s) {
  std::string o;
  const auto* p = reinterpret_cast<const uint8_t*>(s.data());
  size_t i = 0;
  while (i < s.size()) {
    bool inc = false;
    size_t len = utf8_check(p + i, s.size() - i, &inc);
    if (len == 0) {  // not valid UTF-8: keep the byte
      o += s[i];
      ++i;
      continue;
    }
    const int b = unicode_to_byte(utf8_decode_at(p + i, len));
    if (b >= 0)
      o += char(b);
    else
      o.append(s.substr(i, len));
    i += len;
  }
  return o;
}

// ---- Regex ----

const char* const kRegexGpt2 =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";
const char* const kRegexLlama3 =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
const char* const kRegexQwen2 =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";

Regex::Regex(const std::string& pattern, const std::string& where, bool literal) {
  int err = 0;
  PCRE2_SIZE off = 0;
  uint32_t opts = PCRE2_UTF | PCRE2_UCP | PCRE2_MATCH_INVALID_UTF;
  if (literal) opts |= PCRE2_LITERAL;
  pcre2_code* code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(), opts, &err,
                                   &off, nullptr);
  if (!code) {
    PCRE2_UCHAR buf[256];
    pcre2_get_error_message(err, buf, sizeof(buf));
    fail_input(where, fmt::format("regex does not compile at offset {}: {} (pattern {})", size_t(off),
                                  reinterpret_cast<const char*>(buf), pattern),
               "the pre-tokenizer pattern must be a regex PCRE2 understands");
  }
  pcre2_jit_compile(code, PCRE2_JIT_COMPLETE);  // best effort: falls back to the interpreter
  code_ = code;
}

Regex::~Regex() { pcre2_code_free(static_cast<pcre2_code*>(code_)); }

std::vector<std::pair<size_t, size_t>> Regex::find_all(std::string_view s) const {
  std::vector<std::pair<size_t, size_t>> out;
  auto* code = static_cast<pcre2_code*>(code_);
  pcre2_match_data* md = pcre2_match_data_create_from_pattern(code, nullptr);
  LORA_CHECK(md != nullptr, "pcre2_match_data_create_from_pattern");
  const auto* subj = reinterpret_cast<PCRE2_SPTR>(s.data());
  size_t off = 0;
  while (off < s.size()) {
    const int rc = pcre2_match(code, subj, s.size(), off, 0, md, nullptr);
    if (rc < 0) {
      if (rc == PCRE2_ERROR_NOMATCH) break;
      pcre2_match_data_free(md);
      fail_input("tokenizer pre-tokenizer", fmt::format("regex match failed (pcre2 error {})", rc),
                 "the input text may be too long for one piece");
    }
    const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(md);
    const size_t b = ov[0], e = ov[1];
    if (e <= b) {  // empty match: step one character and retry
      off = b + utf8_char_len(s, b);
      continue;
    }
    out.emplace_back(b, e);
    off = e;
  }
  pcre2_match_data_free(md);
  return out;
}

std::vector<std::string_view> pre_split(std::string_view text, const std::vector<PreSplit>& steps) {
  std::vector<std::string_view> pieces{text};
  for (const PreSplit& st : steps) {
    std::vector<std::string_view> next;
    for (std::string_view piece : pieces) {
      const auto m = st.re->find_all(piece);
      // (begin, end, is_match) spans covering the piece
      std::vector<std::tuple<size_t, size_t, bool>> spans;
      size_t pos = 0;
      for (auto [b, e] : m) {
        if (b > pos) spans.emplace_back(pos, b, false);
        spans.emplace_back(b, e, true);
        pos = e;
      }
      if (pos < piece.size()) spans.emplace_back(pos, piece.size(), false);
      auto emit = [&](size_t b, size_t e) {
        if (e > b) next.push_back(piece.substr(b, e - b));
      };
      switch (st.behavior) {
        case PreSplit::ISOLATED:
          for (auto [b, e, is_m] : spans) emit(b, e);
          break;
        case PreSplit::REMOVED:
          for (auto [b, e, is_m] : spans)
            if (!is_m) emit(b, e);
          break;
        case PreSplit::MERGED_WITH_PREVIOUS: {
          size_t start = 0;
          for (auto [b, e, is_m] : spans)
            if (is_m) {
              emit(start, e);
              start = e;
            }
          emit(start, piece.size());
          break;
        }
        case PreSplit::MERGED_WITH_NEXT: {
          size_t start = 0;
          for (auto [b, e, is_m] : spans)
            if (is_m) {
              emit(start, b);
              start = b;
            }
          emit(start, piece.size());
          break;
        }
        case PreSplit::CONTIGUOUS: {
          size_t i = 0;
          while (i < spans.size()) {
            auto [b, e, is_m] = spans[i];
            size_t j = i + 1;
            while (is_m && j < spans.size() && std::get<2>(spans[j])) e = std::get<1>(spans[j++]);
            emit(b, e);
            i = j;
          }
          break;
        }
      }
    }
    pieces = std::move(next);
  }
  return pieces;
}

}  // namespace lora::tok
