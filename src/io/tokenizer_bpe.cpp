// BPE over a vocabulary (see BpeTokenizer in tokenizer_impl.h): text normalisation (SentencePiece
// dummy prefix and U+2581 spaces, or GPT-2 byte-level mapping after the pre-tokenizer regexes),
// then greedy pair merging in a heap ordered by vocabulary score (SentencePiece, GGUF "llama") or by
// merge rank (tokenizer.json, GGUF "gpt2"), leftmost first on ties, as SentencePiece, HF tokenizers
// and llama.cpp all do. Unknown characters fall back to <0xNN> byte tokens, else to <unk>.
#include <queue>

#include "core/error.h"
#include "io/tokenizer_impl.h"

namespace lora::tok {

namespace {
const std::string kMetaspace = "\xE2\x96\x81";  // U+2581 '▁'

struct Sym {
  int32_t id;      // token id, -1 when the text is not (yet) a token
  uint32_t start;  // byte span in the word
  uint32_t len;    // 0 once merged into its left neighbour
  int prev, next;  // linked list over live symbols
};

struct Cand {
  double pri;  // higher merges first
  int left, right;
  uint32_t llen, rlen;  // symbol lengths when queued: a changed length means a stale candidate
  int32_t id;           // the merged token
};
struct CandWorse {
  bool operator()(const Cand& a, const Cand& b) const {
    return a.pri < b.pri || (a.pri == b.pri && a.left > b.left);
  }
};
}  // namespace

int32_t BpeTokenizer::find_token(std::string_view text) const {
  auto it = token_to_id.find(text);
  return it == token_to_id.end() ? -1 : it->second;
}

bool BpeTokenizer::add_merge(std::string_view left, std::string_view right, int32_t rank) {
  const int32_t l = find_token(left), r = find_token(right);
  if (l < 0 || r < 0) return false;
  std::string m(left);
  m += right;
  const int32_t id = find_token(m);
  if (id < 0) return false;
  const uint64_t key = (uint64_t(uint32_t(l)) << 32) | uint32_t(r);
  merges.insert_or_assign(key, std::make_pair(rank, id));  // a repeated pair keeps the later rank, as HF
  return true;
}

// Merges one pre-tokenized word and appends its ids.
void BpeTokenizer::bpe_word(std::string_view word_in, std::vector<int32_t>& out) const {
  if (word_in.empty()) return;
  std::string mapped;
  std::string_view word = word_in;
  if (alphabet == BYTE_LEVEL) {
    mapped = byte_level_encode(word_in);
    word = mapped;
  }
  if (ignore_merges) {
    const int32_t id = find_token(word);
    if (id >= 0) {
      out.push_back(id);
      return;
    }
  }

  // Initial symbols: one per character; with merge ranks an unknown character becomes its byte
  // tokens right away (HF), with scores it stays unknown until the end (SentencePiece, llama.cpp).
  std::vector<Sym> syms;
  syms.reserve(word.size());
  auto push_sym = [&](int32_t id, size_t start, size_t len) {
    const int idx = int(syms.size());
    syms.push_back(Sym{id, uint32_t(start), uint32_t(len), idx - 1, -1});
    if (idx > 0) syms[idx - 1].next = idx;
  };
  for (size_t i = 0; i < word.size();) {
    const size_t n = utf8_char_len(word, i);
    const int32_t id = find_token(word.substr(i, n));
    if (id >= 0 || by_score) {
      push_sym(id, i, n);
    } else if (byte_fallback) {
      bool all = true;
      for (size_t k = 0; k < n; ++k) all = all && byte_ids[uint8_t(word[i + k])] >= 0;
      if (all) {
        for (size_t k = 0; k < n; ++k) push_sym(byte_ids[uint8_t(word[i + k])], i + k, 1);
      } else {
        push_sym(unk_id, i, n);
      }
    } else if (!(fuse_unk && !syms.empty() && syms.back().id == unk_id && unk_id >= 0)) {
      push_sym(unk_id, i, n);
    } else {
      syms.back().len += uint32_t(n);
    }
    i += n;
  }

  std::priority_queue<Cand, std::vector<Cand>, CandWorse> heap;
  auto try_pair = [&](int l, int r) {
    if (l < 0 || r < 0) return;
    const Sym& a = syms[l];
    const Sym& b = syms[r];
    if (by_score) {
      const int32_t id = find_token(word.substr(a.start, size_t(a.len) + b.len));
      if (id < 0) return;
      const double s = size_t(id) < scores.size() ? scores[id] : 0.0;
      heap.push(Cand{s, l, r, a.len, b.len, id});
    } else {
      if (a.id < 0 || b.id < 0) return;
      auto it = merges.find((uint64_t(uint32_t(a.id)) << 32) | uint32_t(b.id));
      if (it == merges.end()) return;
      heap.push(Cand{-double(it->second.first), l, r, a.len, b.len, it->second.second});
    }
  };
  for (int i = 1; i < int(syms.size()); ++i) try_pair(i - 1, i);
  while (!heap.empty()) {
    const Cand c = heap.top();
    heap.pop();
    Sym& a = syms[c.left];
    Sym& b = syms[c.right];
    if (a.len == 0 || b.len == 0 || a.len != c.llen || b.len != c.rlen || a.next != c.right) continue;
    a.len += b.len;
    a.id = c.id;
    b.len = 0;
    a.next = b.next;
    if (b.next >= 0) syms[b.next].prev = c.left;
    try_pair(a.prev, c.left);
    try_pair(c.left, a.next);
  }

  for (int i = syms.empty() ? -1 : 0; i >= 0; i = syms[i].next) {
    const Sym& s = syms[i];
    if (s.id >= 0) {
      out.push_back(s.id);
      continue;
    }
    // Never merged and not a token: bytes, else <unk>.
    for (uint32_t k = 0; k < s.len; ++k) {
      const int32_t b = byte_fallback ? byte_ids[uint8_t(word[s.start + k])] : -1;
      if (b >= 0) {
        out.push_back(b);
      } else {
        if (unk_id >= 0 && !(fuse_unk && !out.empty() && out.back() == unk_id)) out.push_back(unk_id);
        if (!byte_fallback) break;  // one <unk> for the whole character
      }
    }
  }
}

std::vector<int32_t> BpeTokenizer::encode(std::string_view text, bool add_special, bool parse_special) const {
  std::vector<int32_t> out;
  if (add_special && add_bos && bos_id >= 0) out.push_back(bos_id);
  for (const Fragment& f : partition(text, parse_special)) {
    if (f.id >= 0) {
      out.push_back(f.id);
      continue;
    }
    const std::string_view seg = text.substr(f.begin, f.end - f.begin);
    if (seg.empty()) continue;
    if (alphabet == SPM) {
      std::string norm;
      norm.reserve(seg.size() + 16);
      if (prepend == PREPEND_ALWAYS || (prepend == PREPEND_FIRST && f.begin == 0)) norm = kMetaspace;
      for (char c : seg) {
        if (replace_space && c == ' ')
          norm += kMetaspace;
        else
          norm += c;
      }
      if (!split_on_metaspace) {
        bpe_word(norm, out);
        continue;
      }
      // Metaspace split: each word starts at a U+2581.
      size_t start = 0;
      for (size_t p = norm.find(kMetaspace, 1); p != std::string::npos; p = norm.find(kMetaspace, p + 1)) {
        bpe_word(std::string_view(norm).substr(start, p - start), out);
        start = p;
      }
      bpe_word(std::string_view(norm).substr(start), out);
    } else {
      std::string s;
      if (byte_level_prefix_space && seg.front() != ' ') s = " ";
      s += seg;
      for (std::string_view piece : pre_split(s, pre)) bpe_word(piece, out);
    }
  }
  if (add_special && add_eos && eos_id >= 0) out.push_back(eos_id);
  return out;
}

}  // namespace lora::tok
