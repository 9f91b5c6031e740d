// `lora data`: source readers (JSON Lines, JSON array, CSV/TSV, fortune), the record template, the
// split and the atomic writes (see data_convert.h for the contract).
#include "io/data_convert.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <filesystem>
#include <numeric>

#include "core/error.h"
#include "core/log.h"
#include "core/rng.h"
#include "io/csv.h"
#include "io/mapped_file.h"

namespace lora {

using json = nlohmann::json;
namespace fs = std::filesystem;

namespace {

const char* kTemplateHint =
    "the template must be one JSON object with {field} placeholders, e.g. '{\"text\": \"{quote} - {author}\"}'; "
    "write literal braces as {{ and }}";

std::string json_error_text(const std::exception& e) {
  std::string s = e.what();
  if (!s.empty() && s[0] == '[') {
    const size_t close = s.find("] ");
    if (close != std::string::npos) s = s.substr(close + 2);
  }
  return s;
}

// JSON text of v; invalid UTF-8 in strings becomes U+FFFD rather than an exception.
std::string dump(const json& v) { return v.dump(-1, ' ', false, json::error_handler_t::replace); }
std::string dump(const nlohmann::ordered_json& v) {
  return v.dump(-1, ' ', false, nlohmann::ordered_json::error_handler_t::replace);
}

std::string basename_of(const std::string& path) { return fs::path(path).filename().string(); }

std::string trim(std::string_view s) {
  const size_t b = s.find_first_not_of(" \t\r\n\f\v");
  if (b == std::string_view::npos) return {};
  const size_t e = s.find_last_not_of(" \t\r\n\f\v");
  return std::string(s.substr(b, e - b + 1));
}

bool is_blank(std::string_view s) { return s.find_first_not_of(" \t\r\f\v") == std::string_view::npos; }

int64_t utf8_length(std::string_view s) {
  int64_t n = 0;
  for (unsigned char c : s) n += (c & 0xC0) != 0x80;
  return n;
}

// Code points of every string value inside v (keys excluded): the text a model would see.
int64_t text_chars(const nlohmann::ordered_json& v) {
  if (v.is_string()) return utf8_length(v.get_ref<const std::string&>());
  int64_t n = 0;
  if (v.is_array() || v.is_object())
    for (const auto& x : v) n += text_chars(x);
  return n;
}

// "X\bY" prints Y over X on a terminal; keep what is seen last.
std::string resolve_overstrike(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (char c : s) {
    if (c != '\b') {
      out += c;
      continue;
    }
    while (!out.empty() && (static_cast<unsigned char>(out.back()) & 0xC0) == 0x80) out.pop_back();
    if (!out.empty()) out.pop_back();
  }
  return out;
}

std::vector<std::string> split_lines(const std::string& text) {
  std::vector<std::string> lines;
  size_t pos = 0;
  while (pos < text.size()) {
    size_t end = text.find('\n', pos);
    if (end == std::string::npos) end = text.size();
    std::string line = text.substr(pos, end - pos);
    if (!line.empty() && line.back() == '\r') line.pop_back();
    lines.push_back(std::move(line));
    pos = end + 1;
  }
  return lines;
}

// One fortune: lines without the "%" separators, `first_line` 1-based.
void fortune_record(std::vector<std::string> lines, int64_t first_line, const std::string& path,
                    const std::string& category, std::vector<SourceRecord>* out) {
  for (auto& l : lines) l = resolve_overstrike(l);
  while (!lines.empty() && is_blank(lines.front())) {
    lines.erase(lines.begin());
    ++first_line;
  }
  while (!lines.empty() && is_blank(lines.back())) lines.pop_back();
  if (lines.empty()) return;
  auto join = [&](size_t from, size_t to) {
    std::string s;
    for (size_t i = from; i < to; ++i) {
      if (i > from) s += '\n';
      s += lines[i];
    }
    return s;
  };
  SourceRecord r;
  r.where = fmt::format("{}:{}", path, first_line);
  r.fields = json::object();
  r.fields["text"] = trim(join(0, lines.size()));
  r.fields["category"] = category;
  // The attribution: the lowest line (of the last three) that starts with "--" after indentation,
  // followed only by indented continuation lines, and not the first line of the record.
  const size_t last = lines.size() - 1;
  for (size_t k = last; k >= 1 && k + 3 > last; --k) {
    const std::string t = trim(lines[k]);
    if (t.rfind("--", 0) != 0 || (t.size() > 2 && t[2] == '-')) continue;
    bool continued = true;
    for (size_t j = k + 1; j <= last; ++j)
      continued = continued && !lines[j].empty() && (lines[j][0] == ' ' || lines[j][0] == '\t');
    if (!continued) break;
    std::string author = trim(std::string_view(t).substr(2));
    for (size_t j = k + 1; j <= last; ++j) {
      author += ' ';
      author += trim(lines[j]);
    }
    author = trim(author);
    const std::string quote = trim(join(0, k));
    if (!author.empty() && !quote.empty()) {
      r.fields["quote"] = quote;
      r.fields["author"] = author;
    }
    break;
  }
  out->push_back(std::move(r));
}

std::vector<SourceRecord> read_jsonl(const std::string& path, const std::string& text) {
  std::vector<SourceRecord> out;
  const auto lines = split_lines(text);
  for (size_t i = 0; i < lines.size(); ++i) {
    std::string_view line = lines[i];
    if (i == 0 && line.substr(0, 3) == "\xEF\xBB\xBF") line.remove_prefix(3);
    if (is_blank(line)) continue;
    const std::string where = fmt::format("{}:{}", path, i + 1);
    json o;
    try {
      o = json::parse(line);
    } catch (const json::parse_error& e) {
      fail_input(where, "malformed JSON: " + json_error_text(e), "each line must hold one JSON object (JSON Lines)");
    }
    if (!o.is_object()) fail_input(where, "expected a JSON object on this line", "each line must hold one JSON object");
    out.push_back({std::move(o), where});
  }
  return out;
}

std::vector<SourceRecord> read_json_array(const std::string& path, const std::string& text) {
  json a;
  try {
    a = json::parse(text);
  } catch (const json::parse_error& e) {
    const size_t byte = std::min<size_t>(e.byte, text.size());
    const int64_t line = 1 + std::count(text.begin(), text.begin() + std::ptrdiff_t(byte > 0 ? byte - 1 : 0), '\n');
    fail_input(fmt::format("{}:{}", path, line), "malformed JSON: " + json_error_text(e),
               "a .json source must hold one array of objects; use --format jsonl for JSON Lines");
  }
  if (!a.is_array()) fail_input(path, "expected a JSON array of objects", "use --format jsonl for one object per line");
  std::vector<SourceRecord> out;
  for (size_t i = 0; i < a.size(); ++i) {
    const std::string where = fmt::format("{}: [{}]", path, i);
    if (!a[i].is_object()) fail_input(where, "expected a JSON object", "the array must hold one object per record");
    out.push_back({std::move(a[i]), where});
  }
  return out;
}

std::vector<SourceRecord> read_csv(const std::string& path, const std::string& text, char sep) {
  const auto rows = csv_parse(text, sep, path);
  std::vector<SourceRecord> out;
  if (rows.empty()) return out;
  const auto& header = rows[0].fields;
  for (size_t c = 0; c < header.size(); ++c) {
    if (trim(header[c]).empty())
      fail_input(fmt::format("{}:{}", path, rows[0].line), fmt::format("column {} of the header row has no name", c + 1),
                 "the first row must name every column");
    for (size_t d = 0; d < c; ++d)
      if (header[d] == header[c])
        fail_input(fmt::format("{}:{}", path, rows[0].line), fmt::format("column name \"{}\" appears twice", header[c]),
                   "the first row must name every column once");
  }
  for (size_t r = 1; r < rows.size(); ++r) {
    const std::string where = fmt::format("{}:{}", path, rows[r].line);
    if (rows[r].fields.size() != header.size())
      fail_input(where, fmt::format("{} field(s), but the header has {}", rows[r].fields.size(), header.size()),
                 sep == '\t' ? "every row needs one value per column, separated by tabs"
                             : "every row needs one value per column; quote fields that contain commas");
    json o = json::object();
    for (size_t c = 0; c < header.size(); ++c) o[header[c]] = rows[r].fields[c];
    out.push_back({std::move(o), where});
  }
  return out;
}

SourceFormat sniff_format(const std::string& path, const std::string& text) {
  std::string ext = fs::path(path).extension().string();
  std::transform(ext.begin(), ext.end(), ext.begin(), [](unsigned char c) { return char(std::tolower(c)); });
  const size_t b = text.find_first_not_of(" \t\r\n\xEF\xBB\xBF");
  const char first = b == std::string::npos ? '\0' : text[b];
  if (ext == ".jsonl" || ext == ".ndjson") return SOURCE_JSONL;
  if (ext == ".json") return first == '[' ? SOURCE_JSON : SOURCE_JSONL;
  if (ext == ".csv") return SOURCE_CSV;
  if (ext == ".tsv" || ext == ".tab") return SOURCE_TSV;
  if (first == '{') return SOURCE_JSONL;
  if (first == '[') return SOURCE_JSON;
  if (text.rfind("%\n", 0) == 0 || text.find("\n%\n") != std::string::npos || text.find("\n%\r\n") != std::string::npos)
    return SOURCE_FORTUNE;
  fail_input(path, "cannot tell the source format", "pass --format jsonl|json|csv|tsv|fortune");
}

std::vector<SourceRecord> read_file(const std::string& path, SourceFormat format) {
  const std::string text = read_text_file(path);
  if (format == SOURCE_AUTO) format = sniff_format(path, text);
  switch (format) {
    case SOURCE_JSONL: return read_jsonl(path, text);
    case SOURCE_JSON: return read_json_array(path, text);
    case SOURCE_CSV: return read_csv(path, text, ',');
    case SOURCE_TSV: return read_csv(path, text, '\t');
    case SOURCE_FORTUNE: return source_parse_fortune(text, path);
    case SOURCE_AUTO: break;
  }
  LORA_CHECK(false, "unreachable");
  return {};
}

// Uniform shuffle from (seed): the split is a pure function of the seed.
void shuffle_records(std::vector<size_t>& v, uint64_t seed) {
  Rng rng(seed, uint64_t(0xDA7A5E7u) << 32);
  for (size_t i = v.size(); i > 1; --i) std::swap(v[i - 1], v[size_t(rng.below(i))]);
}

}  // namespace

bool source_format_from_name(const std::string& name, SourceFormat* f) {
  static const std::pair<const char*, SourceFormat> table[] = {{"auto", SOURCE_AUTO}, {"jsonl", SOURCE_JSONL},
                                                               {"json", SOURCE_JSON},  {"csv", SOURCE_CSV},
                                                               {"tsv", SOURCE_TSV},    {"fortune", SOURCE_FORTUNE}};
  for (const auto& [n, v] : table)
    if (name == n) {
      *f = v;
      return true;
    }
  return false;
}

const char* source_format_name(SourceFormat f) {
  switch (f) {
    case SOURCE_AUTO: return "auto";
    case SOURCE_JSONL: return "jsonl";
    case SOURCE_JSON: return "json";
    case SOURCE_CSV: return "csv";
    case SOURCE_TSV: return "tsv";
    case SOURCE_FORTUNE: return "fortune";
  }
  return "?";
}

std::vector<SourceRecord> source_parse_fortune(const std::string& text, const std::string& path) {
  std::vector<SourceRecord> out;
  const std::string category = basename_of(path);
  const auto lines = split_lines(text);
  std::vector<std::string> cur;
  int64_t start = 1;
  for (size_t i = 0; i < lines.size(); ++i) {
    if (!lines[i].empty() && lines[i][0] == '%' && is_blank(std::string_view(lines[i]).substr(1))) {
      fortune_record(std::move(cur), start, path, category, &out);
      cur.clear();
      start = int64_t(i) + 2;
      continue;
    }
    cur.push_back(lines[i]);
  }
  fortune_record(std::move(cur), start, path, category, &out);
  return out;
}

std::vector<SourceRecord> source_read(const std::string& path, SourceFormat format) {
  if (!path_exists(path)) fail_input(path, "not found", "--input names a file or a folder of files");
  if (!path_is_dir(path)) return read_file(path, format);
  std::vector<std::string> files;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(path, ec)) {
    const std::string name = e.path().filename().string();
    if (name.empty() || name[0] == '.') continue;
    if (e.is_symlink()) continue;  // fortune's *.u8 aliases and links into the offensive set
    if (!e.is_regular_file()) continue;
    const std::string ext = e.path().extension().string();
    if (ext == ".dat" || ext == ".u8") continue;
    files.push_back(e.path().string());
  }
  if (ec) fail_input(path, "cannot list the folder: " + ec.message());
  std::sort(files.begin(), files.end());
  if (files.empty()) fail_input(path, "the folder holds no source files", "--input names a file or a folder of files");
  std::vector<SourceRecord> out;
  for (const auto& f : files) {
    auto recs = read_file(f, format);
    for (auto& r : recs) out.push_back(std::move(r));
  }
  return out;
}

// ---- template ------------------------------------------------------------------------------------

RecordTemplate::RecordTemplate(const std::string& src, const std::string& name) {
  bool in_string = false;
  std::string lit;
  auto flush = [&] {
    if (!lit.empty()) pieces_.push_back({std::move(lit), {}, {}, false});
    lit.clear();
  };
  const size_t n = src.size();
  for (size_t i = 0; i < n;) {
    const char c = src[i];
    if ((c == '{' || c == '}') && i + 1 < n && src[i + 1] == c) {  // {{ and }}
      lit += c;
      i += 2;
      continue;
    }
    if (c == '{' && i + 1 < n && (std::isalnum(static_cast<unsigned char>(src[i + 1])) || src[i + 1] == '_')) {
      size_t j = i + 1;
      while (j < n && src[j] != '}' && src[j] != '{' && src[j] != '"' && src[j] != '\\' && src[j] != '\n') ++j;
      if (j >= n) fail_input(name, fmt::format("placeholder at character {} is not closed with }}", i + 1), kTemplateHint);
      if (src[j] == '}') {
        Piece p;
        p.path = src.substr(i + 1, j - i - 1);
        p.in_string = in_string;
        // name ( .name | [index] )*
        size_t k = 0;
        const std::string& s = p.path;
        auto bad = [&](const std::string& why) {
          fail_input(name, fmt::format("placeholder {{{}}}: {}", s, why), kTemplateHint);
        };
        bool expect_name = true;
        while (k < s.size()) {
          if (expect_name) {
            size_t e = k;
            while (e < s.size() && s[e] != '.' && s[e] != '[' && s[e] != ']') ++e;
            if (e == k) bad("a field name is empty");
            p.steps.push_back({false, s.substr(k, e - k), 0});
            k = e;
            expect_name = false;
          } else if (s[k] == '.') {
            ++k;
            expect_name = true;
            if (k >= s.size()) bad("a field name is empty");
          } else if (s[k] == '[') {
            const size_t close = s.find(']', k);
            if (close == std::string::npos) bad("[ without ]");
            const std::string num = s.substr(k + 1, close - k - 1);
            size_t used = 0;
            int64_t v = 0;
            try {
              v = std::stoll(num, &used);
            } catch (const std::exception&) {
              used = 0;
            }
            if (num.empty() || used != num.size()) bad("an index must be an integer, as in {tags[0]}");
            p.steps.push_back({true, {}, v});
            k = close + 1;
          } else {
            bad("unexpected ']'");
          }
        }
        flush();
        pieces_.push_back(std::move(p));
        i = j + 1;
        continue;
      }
      // Not a placeholder (e.g. a quote inside): a literal brace.
    }
    if (c == '"') in_string = !in_string;
    if (c == '\\' && in_string && i + 1 < n) {  // an escape inside a JSON string: \" does not end it
      lit += c;
      lit += src[i + 1];
      i += 2;
      continue;
    }
    lit += c;
    ++i;
  }
  flush();
}

std::vector<std::string> RecordTemplate::fields() const {
  std::vector<std::string> out;
  for (const auto& p : pieces_)
    if (!p.path.empty()) out.push_back(p.path);
  return out;
}

bool RecordTemplate::render(const json& fields, std::string* out, std::string* missing) const {
  out->clear();
  for (const auto& p : pieces_) {
    if (p.path.empty()) {
      *out += p.literal;
      continue;
    }
    const json* cur = nullptr;
    if (fields.is_object() && fields.contains(p.path)) {  // a field whose name has dots or brackets
      cur = &fields[p.path];
    } else {
      cur = &fields;
      for (const auto& st : p.steps) {
        if (st.is_index) {
          if (!cur->is_array()) { cur = nullptr; break; }
          const int64_t size = int64_t(cur->size());
          const int64_t i = st.index < 0 ? st.index + size : st.index;
          if (i < 0 || i >= size) { cur = nullptr; break; }
          cur = &(*cur)[size_t(i)];
        } else {
          if (!cur->is_object()) { cur = nullptr; break; }
          auto it = cur->find(st.key);
          if (it == cur->end()) { cur = nullptr; break; }
          cur = &*it;
        }
      }
    }
    if (cur == nullptr || cur->is_null()) {
      if (missing) *missing = p.path;
      return false;
    }
    if (!p.in_string) {
      *out += dump(*cur);
    } else {
      const std::string quoted = cur->is_string() ? dump(*cur) : dump(json(dump(*cur)));
      out->append(quoted, 1, quoted.size() - 2);  // the escaped text without its quotes
    }
  }
  return true;
}

// ---- split ---------------------------------------------------------------------------------------

SplitSpec split_parse(const std::string& s) {
  SplitSpec sp;
  std::vector<std::string> parts;
  size_t pos = 0;
  for (;;) {
    const size_t c = s.find(',', pos);
    parts.push_back(trim(s.substr(pos, c == std::string::npos ? std::string::npos : c - pos)));
    if (c == std::string::npos) break;
    pos = c + 1;
  }
  const char* hint = "give train,valid[,test] as counts (\"40,10,0\") or as ratios (\"0.8,0.1,0.1\")";
  if (parts.size() < 2 || parts.size() > 3) fail_input("--split", fmt::format("expected 2 or 3 numbers in \"{}\"", s), hint);
  for (const auto& p : parts)
    if (p.find_first_of(".eE") != std::string::npos) sp.ratios = true;
  for (size_t i = 0; i < parts.size(); ++i) {
    size_t used = 0;
    double v = -1;
    try {
      v = std::stod(parts[i], &used);
    } catch (const std::exception&) {
      used = 0;
    }
    if (parts[i].empty() || used != parts[i].size() || !(v >= 0) || (!sp.ratios && v != std::floor(v)))
      fail_input("--split", fmt::format("\"{}\" is not a count or a ratio", parts[i]), hint);
    sp.v[i] = v;
  }
  if (sp.ratios && sp.v[0] + sp.v[1] + sp.v[2] > 1.0 + 1e-9)
    fail_input("--split", fmt::format("the ratios in \"{}\" add up to more than 1", s), hint);
  return sp;
}

std::array<int64_t, 3> split_counts(const SplitSpec& s, int64_t n) {
  std::array<int64_t, 3> c{};
  if (!s.ratios) {
    for (int i = 0; i < 3; ++i) c[size_t(i)] = int64_t(s.v[size_t(i)]);
    if (c[0] + c[1] + c[2] > n)
      fail_input("--split", fmt::format("asks for {} records but only {} are available", c[0] + c[1] + c[2], n),
                 "lower the counts, or give ratios such as 0.8,0.1,0.1");
    return c;
  }
  for (int i = 0; i < 3; ++i) c[size_t(i)] = int64_t(std::floor(s.v[size_t(i)] * double(n) + 1e-9));
  if (std::abs(s.v[0] + s.v[1] + s.v[2] - 1.0) < 1e-9) c[0] = n - c[1] - c[2];
  return c;
}

// ---- the conversion ------------------------------------------------------------------------------

ConvertResult data_convert(const ConvertOptions& o) {
  static const char* kNames[3] = {"train", "valid", "test"};
  if (o.inputs.empty()) fail_input("--input", "no source given", "pass --input FILE|FOLDER (repeatable)");
  if (o.output.empty()) fail_input("--output", "no output folder given", "pass --output DIR");
  if (o.template_src.empty())
    fail_input("--template", "no template given", "pass --template '{\"text\": \"...{field}...\"}' or --template-file FILE");
  if (o.max_records < 0) fail_input("--max-records", "must be 0 (all) or more");
  if (o.filter_max_chars < 0) fail_input("--filter-max-chars", "must be 0 (no limit) or more");
  const SplitSpec split = split_parse(o.split);
  const RecordTemplate tmpl(o.template_src, o.template_name);
  if (tmpl.fields().empty())
    log_warn("{} has no {{field}} placeholders: every record will be the same", o.template_name);
  if (!o.force)
    for (const char* nm : kNames) {
      const std::string p = o.output + "/" + nm + ".jsonl";
      if (path_exists(p)) fail_input(p, "already exists", "pass --force to overwrite, or choose another --output");
    }

  ConvertResult res;
  std::vector<std::string> lines;
  std::vector<std::pair<std::string, int64_t>> missing_fields;  // field, count
  for (const auto& in : o.inputs) {
    for (const auto& rec : source_read(in, o.format)) {
      ++res.n_source;
      std::string text, missing;
      if (!tmpl.render(rec.fields, &text, &missing)) {
        if (o.strict)
          fail_input(rec.where, fmt::format("no field \"{}\", which the template uses", missing),
                     "drop --strict to skip such records");
        ++res.n_missing;
        auto it = std::find_if(missing_fields.begin(), missing_fields.end(), [&](auto& m) { return m.first == missing; });
        if (it == missing_fields.end()) missing_fields.push_back({missing, 1});
        else ++it->second;
        continue;
      }
      nlohmann::ordered_json obj;
      try {
        obj = nlohmann::ordered_json::parse(text);
      } catch (const nlohmann::ordered_json::parse_error& e) {
        fail_input(rec.where, "the template does not give valid JSON for this record: " + json_error_text(e),
                   kTemplateHint);
      }
      if (!obj.is_object()) fail_input(rec.where, "the template gives JSON that is not an object", kTemplateHint);
      if (o.filter_max_chars > 0 && text_chars(obj) > o.filter_max_chars) {
        ++res.n_too_long;
        continue;
      }
      lines.push_back(dump(obj));
    }
  }
  if (res.n_missing > 0) {
    std::string detail;
    for (const auto& [f, c] : missing_fields) detail += fmt::format("{}{} without {}", detail.empty() ? "" : ", ", c, f);
    log_warn("skipped {} of {} record(s) that lack a field the template uses ({})", res.n_missing, res.n_source, detail);
  }
  if (res.n_too_long > 0)
    log_warn("skipped {} record(s) longer than --filter-max-chars {}", res.n_too_long, o.filter_max_chars);
  if (lines.empty())
    fail_input(o.inputs[0], fmt::format("no records left out of {} read", res.n_source),
               "check the template's field names against the source, and --filter-max-chars");

  std::vector<size_t> order(lines.size());
  std::iota(order.begin(), order.end(), size_t(0));
  if (o.shuffle) shuffle_records(order, o.seed);
  int64_t n = int64_t(order.size());
  if (o.max_records > 0 && n > o.max_records) n = o.max_records;
  res.counts = split_counts(split, n);
  res.n_unused = int64_t(order.size()) - (res.counts[0] + res.counts[1] + res.counts[2]);
  if (res.counts[0] == 0) log_warn("the split gives no training examples");

  std::error_code ec;
  fs::create_directories(o.output, ec);
  if (ec || !path_is_dir(o.output))
    fail_input(o.output, "cannot create the output folder" + (ec ? ": " + ec.message() : std::string()));
  size_t next = 0;
  for (int s = 0; s < 3; ++s) {
    const std::string p = o.output + "/" + kNames[s] + ".jsonl";
    auto& out = res.lines[size_t(s)];
    for (int64_t i = 0; i < res.counts[size_t(s)]; ++i) out.push_back(lines[order[next++]]);
    if (out.empty()) {
      if (o.force && path_exists(p) && !path_is_dir(p)) fs::remove(p, ec);  // stale from an earlier run
      continue;
    }
    std::string body;
    for (const auto& l : out) body += l + "\n";
    write_file_atomic(p, body.data(), body.size());
  }
  res.summary = fmt::format("wrote {} train / {} valid / {} test examples to {}", res.counts[0], res.counts[1],
                            res.counts[2], o.output);
  return res;
}

}  // namespace lora
