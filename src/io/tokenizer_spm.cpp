// SentencePiece tokenizer.model through libsentencepiece (the only file that includes its headers).
// Encoding is the library's own (BPE or unigram, dummy prefix, byte fallback); control and
// user-defined pieces written in the text are split out first, as HF's LlamaTokenizer does.
// Decoding uses the shared piece table (U+2581 -> ' ', <0xNN> -> byte) so all sources agree.
#include <sentencepiece_processor.h>

#include "core/error.h"
#include "io/mapped_file.h"
#include "io/tokenizer_impl.h"

namespace lora::tok {

namespace {

class SpmTokenizer final : public TokenizerBase {
 public:
  std::vector<int32_t> encode(std::string_view text, bool add_special, bool parse_special) const override {
    std::vector<int32_t> out;
    if (add_special && add_bos && bos_id >= 0) out.push_back(bos_id);
    for (const Fragment& f : partition(text, parse_special)) {
      if (f.id >= 0) {
        out.push_back(f.id);
        continue;
      }
      if (f.end == f.begin) continue;
      std::vector<int> ids;
      const auto st = sp_.Encode(text.substr(f.begin, f.end - f.begin), &ids);
      if (!st.ok()) fail_input(path_, fmt::format("SentencePiece could not encode the text: {}", st.ToString()), "");
      out.insert(out.end(), ids.begin(), ids.end());
    }
    if (add_special && add_eos && eos_id >= 0) out.push_back(eos_id);
    return out;
  }

  int32_t find_token(std::string_view text) const override {
    auto it = piece_to_id_.find(text);
    return it == piece_to_id_.end() ? -1 : it->second;
  }

  void load(const std::string& path) {
    path_ = path;
    const std::string bytes = read_text_file(path);  // names the path when missing/unreadable
    const auto st = sp_.LoadFromSerializedProto(bytes);
    if (!st.ok())
      fail_input(path, fmt::format("not a SentencePiece model: {}", st.ToString()),
                 "tokenizer.model must be the model's SentencePiece ModelProto (not a Git LFS pointer)");
    const int n = sp_.GetPieceSize();
    if (n <= 0) fail_input(path, "the SentencePiece model has no pieces", "the file is damaged or empty");
    piece_bytes_.resize(size_t(n));
    for (int i = 0; i < n; ++i) {
      const std::string piece = sp_.IdToPiece(i);
      piece_to_id_.emplace(piece, i);
      if (sp_.IsByte(i) && piece.size() == 6 && piece.compare(0, 3, "<0x") == 0) {
        piece_bytes_[size_t(i)] = std::string(1, char(std::stoi(piece.substr(3, 2), nullptr, 16)));
      } else {
        std::string s;
        for (size_t k = 0; k < piece.size();) {
          if (piece.compare(k, 3, "\xE2\x96\x81") == 0) {
            s += ' ';
            k += 3;
          } else {
            s += piece[k++];
          }
        }
        piece_bytes_[size_t(i)] = s;
      }
      const bool control = sp_.IsControl(i) || sp_.IsUnknown(i);
      if (control) special_ids.push_back(i);
      // User-defined pieces need nothing here: SentencePiece matches them itself.
      if (control) added_.push_back(AddedToken{piece, i, true, false, false});
    }
    finalize_added();
    bos_id = sp_.bos_id();
    eos_id = sp_.eos_id();
    if (bos_id >= 0) bos_token = sp_.IdToPiece(bos_id);
    if (eos_id >= 0) eos_token = sp_.IdToPiece(eos_id);
    strip_leading_space_ = true;
  }

 private:
  sentencepiece::SentencePieceProcessor sp_;
  TokenMap piece_to_id_;
  std::string path_;
};

}  // namespace

std::unique_ptr<TokenizerBase> load_spm_base(const std::string& model_path) {
  auto t = std::make_unique<SpmTokenizer>();
  t->load(model_path);
  return t;
}

}  // namespace lora::tok
