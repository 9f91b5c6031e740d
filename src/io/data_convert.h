// `lora data`: builds a --data folder (train.jsonl / valid.jsonl / test.jsonl) from a source file
// through a record template.
//
// Sources, each record a JSON object of fields:
//   jsonl    one object per line (blank lines skipped)
//   json     one array of objects
//   csv/tsv  RFC 4180 (io/csv.h); the header row names the fields, every value is a string
//   fortune  the `fortune` text format (Debian's fortunes package): records separated by lines that
//            hold only "%". Fields: "text" (the record, outer whitespace trimmed; backspace overstrikes
//            resolved), "category" (the file's name) and, when the record ends with an attribution line
//            ("\t\t-- Author, Source", possibly continued on indented lines), "quote" (the text before
//            it) and "author" (the attribution without the "--", trimmed).
// A folder source reads every regular file in it, by name order, skipping hidden files, *.dat and
// *.u8 (fortune's index files and UTF-8 aliases), symbolic links (fortune's links into the offensive
// set) and sub-folders.
//
// Template: JSON text with {path} placeholders, path = name ( .name | [index] )*, index may be
// negative (from the end). "{{" and "}}" are literal braces; any other brace not starting a
// placeholder (e.g. `{"text": ...}`'s own) is literal too. Inside a JSON string a value is substituted
// JSON-escaped (strings as their text, other values as their JSON text); outside a string it is the
// JSON value itself. The result must parse as one JSON object; it is written as one compact line.
// A record lacking a placeholder's field (absent, null, index out of range) is skipped and counted
// (or an error with strict).
//
// Order of work: read all records, render, drop the ones missing fields or longer than
// filter_max_chars (counted in the code points of the rendered object's string values), shuffle with
// the seed, keep max_records, split.
#pragma once
#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace lora {

enum SourceFormat { SOURCE_AUTO, SOURCE_JSONL, SOURCE_JSON, SOURCE_CSV, SOURCE_TSV, SOURCE_FORTUNE };
bool source_format_from_name(const std::string& name, SourceFormat* f);
const char* source_format_name(SourceFormat f);

struct SourceRecord {
  nlohmann::json fields;  // an object
  std::string where;      // "<path>:<line>" or "<path>: [i]", for messages
};

// Reads one file or folder (see above). SOURCE_AUTO picks by extension, then by content.
std::vector<SourceRecord> source_read(const std::string& path, SourceFormat format);
// The fortune parser on text already read, for tests. `path` names records; category = basename.
std::vector<SourceRecord> source_parse_fortune(const std::string& text, const std::string& path);

class RecordTemplate {
 public:
  // lora::Error (naming `name`) when a placeholder is not closed.
  explicit RecordTemplate(const std::string& src, const std::string& name = "--template");
  // Renders fields into *out. Returns false, with the placeholder's path in *missing, when a field is
  // absent, null or out of range.
  bool render(const nlohmann::json& fields, std::string* out, std::string* missing) const;
  // Placeholder paths in order of appearance.
  std::vector<std::string> fields() const;

 private:
  struct Step {
    bool is_index = false;
    std::string key;
    int64_t index = 0;
  };
  struct Piece {
    std::string literal;     // when path is empty
    std::string path;        // the placeholder as written
    std::vector<Step> steps;
    bool in_string = false;  // inside a JSON string literal of the template
  };
  std::vector<Piece> pieces_;
};

// --split: three (or two: test = 0) numbers, either counts ("40,10,0") or ratios ("0.8,0.1,0.1").
struct SplitSpec {
  bool ratios = false;
  std::array<double, 3> v{0, 0, 0};
};
SplitSpec split_parse(const std::string& s);
// Counts for n records; lora::Error when counts ask for more than n or ratios sum above 1. Ratios
// round down, and when they sum to 1 the remainder goes to train so that every record is used.
std::array<int64_t, 3> split_counts(const SplitSpec& s, int64_t n);

struct ConvertOptions {
  std::vector<std::string> inputs;  // files or folders
  SourceFormat format = SOURCE_AUTO;
  std::string template_src;
  std::string template_name = "--template";  // for messages
  std::string output;                        // the folder to write
  std::string split = "0.8,0.1,0.1";
  uint64_t seed = 0;
  bool shuffle = true;
  int64_t max_records = 0;       // 0 = all
  int64_t filter_max_chars = 0;  // 0 = no limit
  bool force = false;            // overwrite existing train/valid/test.jsonl
  bool strict = false;           // a record missing a field is an error, not a skip
};

struct ConvertResult {
  int64_t n_source = 0;     // records read
  int64_t n_missing = 0;    // skipped: a field the template uses is missing
  int64_t n_too_long = 0;   // skipped: longer than filter_max_chars
  int64_t n_unused = 0;     // dropped by max_records or left over by split counts
  std::array<int64_t, 3> counts{0, 0, 0};  // train, valid, test
  std::array<std::vector<std::string>, 3> lines;  // the JSONL lines written
  std::string summary;      // "wrote 40 train / 10 valid / 0 test examples to DIR"
};

// Does the whole conversion and writes the files (atomically); splits with 0 records are not written
// (and with force, a stale file of that name is removed).
ConvertResult data_convert(const ConvertOptions& o);

}  // namespace lora
