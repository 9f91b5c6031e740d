// `lora data` (io/data_convert.h): the record template, the split, the CSV/TSV/JSON/JSONL/fortune
// readers with their errors, the whole conversion (the reference run's 40 train / 10 valid quotes
// from ../shared/data/english_quotes), and the fortune parser on Debian's real fortunes when installed.
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "io/csv.h"
#include "io/data_convert.h"
#include "test_util.h"

namespace lora {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

class TempDir {
 public:
  TempDir() {
    static int n = 0;
    path_ = (fs::temp_directory_path() / ("lora_test_convert_" + std::to_string(::getpid()) + "_" + std::to_string(n++))).string();
    fs::remove_all(path_);
    fs::create_directories(path_);
  }
  ~TempDir() { fs::remove_all(path_); }
  std::string write(const std::string& name, const std::string& body) const {
    const std::string p = path_ + "/" + name;
    std::ofstream(p, std::ios::binary) << body;
    return p;
  }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

template <class F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

std::vector<std::string> read_lines(const std::string& path) {
  std::ifstream in(path);
  std::vector<std::string> out;
  for (std::string l; std::getline(in, l);) out.push_back(l);
  return out;
}

std::string render(const std::string& tmpl, const json& fields) {
  std::string out, missing;
  EXPECT_TRUE(RecordTemplate(tmpl).render(fields, &out, &missing)) << "missing " << missing;
  return out;
}

// --- the template ---

TEST(RecordTemplate, PlaceholdersEscapesAndPaths) {
  const json f = {{"quote", "Say \"hi\"\n\\ok\t“x”"}, {"tags", {"a", "b", "c"}}, {"meta", {{"year", 1905}, {"lang", "en"}}},
                  {"n", 3}, {"flag", true}, {"First Name", "Ada"}};
  // Values are JSON-escaped inside strings; the object's own braces are literal.
  EXPECT_EQ(render(R"({"text": "{quote}"})", f), R"({"text": "Say \"hi\"\n\\ok\t“x”"})");
  EXPECT_EQ(render(R"({"t": "{tags[0]}/{tags[2]}/{tags[-1]}"})", f), R"({"t": "a/c/c"})");
  EXPECT_EQ(render(R"({"t": "{meta.lang} {meta.year}"})", f), R"({"t": "en 1905"})");
  // Outside a string the value is JSON itself; inside, a non-string is its JSON text, escaped.
  EXPECT_EQ(render(R"({"n": {n}, "f": {flag}, "tags": {tags}, "q": {quote}})", f),
            R"({"n": 3, "f": true, "tags": ["a","b","c"], "q": "Say \"hi\"\n\\ok\t“x”"})");
  EXPECT_EQ(render(R"({"t": "{tags}"})", f), R"({"t": "[\"a\",\"b\",\"c\"]"})");
  // {{ and }} are literal braces; a field name may hold spaces (CSV headers).
  EXPECT_EQ(render(R"({{"t": "{{x}} {First Name}"}})", f), R"({"t": "{x} Ada"})");
  // An escaped quote in the template does not end the string: the value after it is still escaped.
  EXPECT_EQ(render(R"({"t": "\"{quote}\""})", f), R"({"t": "\"Say \"hi\"\n\\ok\t“x”\""})");
  EXPECT_EQ(RecordTemplate(R"({"a": "{x} {y.z} {w[1]}"})").fields(), (std::vector<std::string>{"x", "y.z", "w[1]"}));
}

TEST(RecordTemplate, MissingFields) {
  const json f = {{"tags", json::array()}, {"a", nullptr}, {"m", {{"k", 1}}}, {"s", "str"}};
  RecordTemplate t1(R"({"t": "{tags[0]}"})"), t2(R"({"t": "{a}"})"), t3(R"({"t": "{m.q}"})"), t4(R"({"t": "{nope}"})"),
      t5(R"({"t": "{s[0]}"})"), t6(R"({"t": "{s.k}"})");
  std::string out, missing;
  EXPECT_FALSE(t1.render(f, &out, &missing));
  EXPECT_EQ(missing, "tags[0]");
  EXPECT_FALSE(t2.render(f, &out, &missing));  // null counts as missing
  EXPECT_EQ(missing, "a");
  EXPECT_FALSE(t3.render(f, &out, &missing));
  EXPECT_EQ(missing, "m.q");
  EXPECT_FALSE(t4.render(f, &out, &missing));
  EXPECT_FALSE(t5.render(f, &out, &missing));  // a string is not indexable
  EXPECT_FALSE(t6.render(f, &out, &missing));
  // An empty string is present.
  std::string o2;
  EXPECT_TRUE(RecordTemplate(R"({"t": "<{e}>"})").render(json{{"e", ""}}, &o2, &missing));
  EXPECT_EQ(o2, R"({"t": "<>"})");
}

TEST(RecordTemplate, SyntaxErrors) {
  EXPECT_EQ(error_of([] { RecordTemplate(R"({"t": "{quote)"); }),
            "--template: placeholder at character 8 is not closed with }");
  EXPECT_EQ(error_of([] { RecordTemplate(R"({"t": "{tags[x]}"})"); }),
            "--template: placeholder {tags[x]}: an index must be an integer, as in {tags[0]}");
  EXPECT_EQ(error_of([] { RecordTemplate(R"({"t": "{a..b}"})"); }), "--template: placeholder {a..b}: a field name is empty");
}

// --- the split ---

TEST(Split, CountsAndRatios) {
  auto c = split_counts(split_parse("40,10,0"), 100);
  EXPECT_EQ(c, (std::array<int64_t, 3>{40, 10, 0}));
  c = split_counts(split_parse("40, 10"), 50);
  EXPECT_EQ(c, (std::array<int64_t, 3>{40, 10, 0}));
  c = split_counts(split_parse("0.8,0.1,0.1"), 55);  // 44 + 5 + 5, the remainder to train
  EXPECT_EQ(c, (std::array<int64_t, 3>{45, 5, 5}));
  c = split_counts(split_parse("0.5,0.25"), 10);  // sums below 1: the rest unused
  EXPECT_EQ(c, (std::array<int64_t, 3>{5, 2, 0}));
  EXPECT_EQ(error_of([] { split_counts(split_parse("40,10,5"), 50); }), "--split: asks for 55 records but only 50 are available");
  EXPECT_EQ(error_of([] { split_parse("0.8,0.3"); }), "--split: the ratios in \"0.8,0.3\" add up to more than 1");
  EXPECT_EQ(error_of([] { split_parse("40"); }), "--split: expected 2 or 3 numbers in \"40\"");
  EXPECT_EQ(error_of([] { split_parse("40,x,1"); }), "--split: \"x\" is not a count or a ratio");
  EXPECT_EQ(error_of([] { split_parse("40,-1,1"); }), "--split: \"-1\" is not a count or a ratio");
}

// --- readers ---

TEST(Csv, QuotingNewlinesAndErrors) {
  auto rows = csv_parse("a,b\r\n\"x,1\",\"say \"\"hi\"\"\"\r\n\"multi\nline\",\n\nlast,row", ',', "f.csv");
  ASSERT_EQ(rows.size(), 4u);
  EXPECT_EQ(rows[1].fields, (std::vector<std::string>{"x,1", "say \"hi\""}));
  EXPECT_EQ(rows[2].fields, (std::vector<std::string>{"multi\nline", ""}));
  EXPECT_EQ(rows[2].line, 3);
  EXPECT_EQ(rows[3].line, 6);  // after the blank line 5
  EXPECT_EQ(rows[3].fields, (std::vector<std::string>{"last", "row"}));
  EXPECT_EQ(error_of([] { csv_parse("a\n\"open\nstill open", ',', "f.csv"); }), "f.csv:2: unterminated quoted field");
  EXPECT_EQ(error_of([] { csv_parse("a\n\"q\"x\n", ',', "f.csv"); }), "f.csv:2: unexpected text after a closing quote");
}

TEST(Sources, CsvTsvJsonFixtures) {
  auto r = source_read(test::fixture("data/quotes.csv"), SOURCE_AUTO);
  ASSERT_EQ(r.size(), 4u);
  EXPECT_EQ(r[0].fields["tags"], "be-yourself,honesty");
  EXPECT_EQ(r[1].fields["quote"], "He said \"hi\", then left");
  EXPECT_EQ(r[2].fields["quote"], "Line one\nline two");
  EXPECT_EQ(r[2].where, test::fixture("data/quotes.csv") + ":4");
  EXPECT_EQ(r[3].fields["author"], "");
  r = source_read(test::fixture("data/quotes.tsv"), SOURCE_AUTO);
  ASSERT_EQ(r.size(), 2u);
  EXPECT_EQ(r[0].fields["quote"], "So it \"goes\"");  // a quote inside an unquoted field is literal
  r = source_read(test::fixture("data/quotes.json"), SOURCE_AUTO);
  ASSERT_EQ(r.size(), 2u);
  EXPECT_EQ(r[0].fields["meta"]["year"], 1900);
  EXPECT_EQ(r[1].where, test::fixture("data/quotes.json") + ": [1]");
}

TEST(Sources, Errors) {
  TempDir d;
  auto p = d.write("bad.csv", "a,b\n1,2\n3\n");
  EXPECT_EQ(error_of([&] { source_read(p, SOURCE_AUTO); }), p + ":3: 1 field(s), but the header has 2");
  p = d.write("dup.csv", "a,a\n1,2\n");
  EXPECT_EQ(error_of([&] { source_read(p, SOURCE_AUTO); }), p + ":1: column name \"a\" appears twice");
  p = d.write("bad.jsonl", "{\"a\": 1}\n\n{\"a\": }\n");
  EXPECT_EQ(error_of([&] { source_read(p, SOURCE_AUTO); }).rfind(p + ":3: malformed JSON", 0), 0u);
  p = d.write("bad.json", "[\n {\"a\": 1},\n {\"a\" 2}\n]\n");
  EXPECT_EQ(error_of([&] { source_read(p, SOURCE_AUTO); }).rfind(p + ":3: malformed JSON", 0), 0u);
  p = d.write("notarr.json", "[1]");
  EXPECT_EQ(error_of([&] { source_read(p, SOURCE_JSON); }), p + ": [0]: expected a JSON object");
  p = d.write("mystery", "just some words\n");
  EXPECT_EQ(error_of([&] { source_read(p, SOURCE_AUTO); }), p + ": cannot tell the source format");
  EXPECT_EQ(error_of([&] { source_read(d.path() + "/none", SOURCE_AUTO); }), d.path() + "/none: not found");
}

// --- fortune ---

TEST(Fortune, FixtureRecords) {
  const std::string path = test::fixture("data/fortunes/sample");
  const auto r = source_read(path, SOURCE_AUTO);  // detected by its "%" lines
  ASSERT_EQ(r.size(), 10u);
  for (const auto& x : r) EXPECT_EQ(x.fields["category"], "sample");
  EXPECT_EQ(r[0].fields["quote"], "A banker is a fellow who lends you his umbrella when the sun is shining\n"
                                  "and wants it back the minute it begins to rain.");
  EXPECT_EQ(r[0].fields["author"], "Mark Twain");
  EXPECT_EQ(r[0].fields["text"], "A banker is a fellow who lends you his umbrella when the sun is shining\n"
                                 "and wants it back the minute it begins to rain.\n\t\t-- Mark Twain");
  EXPECT_EQ(r[0].where, path + ":1");
  EXPECT_EQ(r[1].fields["author"], "Mark Twain, \"The Disappearance of Literature\"");
  EXPECT_EQ(r[2].fields["text"], "Advancement in position.");
  EXPECT_FALSE(r[2].fields.contains("author"));
  EXPECT_FALSE(r[2].fields.contains("quote"));
  EXPECT_EQ(r[3].fields["author"], "Author, Source");  // no indentation
  EXPECT_EQ(r[3].fields["quote"], "Never put off till tomorrow what you can do the day after tomorrow.");
  EXPECT_EQ(r[3].where, path + ":11");
  EXPECT_EQ(r[4].fields["author"], "Addison Mizner and Oliver Herford, \"The Entirely New Cynic's Calendar\", 1905");
  EXPECT_EQ(r[4].fields["quote"], "The reasonable man adapts himself to the world.");
  EXPECT_EQ(r[5].fields["text"], "This is the LAST time I take travel suggestions from Ray Bradbury!");  // overstrike
  // The empty record between the % lines at 19 and 21 is skipped.
  EXPECT_EQ(r[6].where, path + ":22");
  EXPECT_FALSE(r[6].fields.contains("author"));  // "-- by Charles Dickens" is not the last line
  EXPECT_EQ(r[7].fields["text"], "-- only an attribution");
  EXPECT_FALSE(r[7].fields.contains("author"));
  EXPECT_FALSE(r[8].fields.contains("author"));  // "---"
  EXPECT_FALSE(r[9].fields.contains("author"));  // an em dash
  EXPECT_EQ(r[9].fields["text"].get<std::string>().rfind("Indented first line,\n", 0), 0u);
}

TEST(Fortune, FolderSkipsIndexesLinksAndSubfolders) {
  TempDir d;
  fs::copy_file(test::fixture("data/fortunes/tiny"), d.path() + "/tiny");
  d.write("tiny.dat", std::string("\x00\x00\x00\x02 binary", 12));
  fs::create_symlink("tiny", d.path() + "/tiny.u8");
  fs::create_directories(d.path() + "/off");
  d.write("off/rude", "Rude.\n%\n");
  fs::create_symlink("off/rude", d.path() + "/rude");
  d.write(".hidden", "x\n%\n");
  const auto r = source_read(d.path(), SOURCE_AUTO);
  ASSERT_EQ(r.size(), 2u);
  EXPECT_EQ(r[0].fields["author"], "Someone");
  EXPECT_EQ(r[0].fields["quote"], "Two of a kind.");
  EXPECT_EQ(r[1].fields["text"], "One more.");
  EXPECT_EQ(r[1].fields["category"], "tiny");
}

TEST(Fortune, DebianFortunesWhenInstalled) {
  const std::string dir = "/usr/share/games/fortunes";
  if (!test::file_exists(dir + "/literature")) GTEST_SKIP() << "skipped: the fortunes package is not installed";
  const auto r = source_read(dir, SOURCE_FORTUNE);
  ASSERT_GT(r.size(), 1000u);
  int64_t attributed = 0;
  std::set<std::string> categories;
  for (const auto& x : r) {
    const std::string text = x.fields["text"];
    ASSERT_FALSE(text.empty()) << x.where;
    EXPECT_EQ(text.find("\n%\n"), std::string::npos) << x.where;
    EXPECT_EQ(text.find('\b'), std::string::npos) << x.where;
    categories.insert(x.fields["category"].get<std::string>());
    if (x.fields.contains("author")) {
      ++attributed;
      EXPECT_FALSE(x.fields["author"].get<std::string>().empty());
      EXPECT_NE(x.fields["author"].get<std::string>().rfind("--", 0), 0u) << x.where;
    }
  }
  EXPECT_GT(attributed, 1000);
  EXPECT_EQ(categories.count("literature"), 1u);
  for (const auto& c : categories) EXPECT_TRUE(c.find('.') == std::string::npos) << c;  // no .dat / .u8
  // A known record from the literature file.
  bool found = false;
  for (const auto& x : r)
    if (x.fields["text"].get<std::string>().rfind("A horse!  A horse!  My kingdom for a horse!", 0) == 0) {
      found = true;
      EXPECT_EQ(x.fields["quote"], "A horse!  A horse!  My kingdom for a horse!");
      EXPECT_EQ(x.fields["author"], "Wm. Shakespeare, \"Richard III\"");
      EXPECT_EQ(x.fields["category"], "literature");
    }
  EXPECT_TRUE(found);
  // The whole folder through a template, with the length filter.
  TempDir d;
  ConvertOptions o;
  o.inputs = {dir};
  o.format = SOURCE_FORTUNE;
  o.template_src = R"({"text": "{quote}\n-- {author}"})";
  o.output = d.path();
  o.split = "0.9,0.1";
  o.filter_max_chars = 200;
  testing::internal::CaptureStderr();
  const ConvertResult res = data_convert(o);
  testing::internal::GetCapturedStderr();
  EXPECT_GT(res.n_missing, 0);
  EXPECT_GT(res.n_too_long, 0);
  EXPECT_EQ(res.counts[0] + res.counts[1], res.n_source - res.n_missing - res.n_too_long);
  for (const auto& l : read_lines(d.path() + "/train.jsonl"))
    EXPECT_LE(int64_t(json::parse(l)["text"].get<std::string>().size()), 200 * 4);
}

// --- the conversion ---

const char* kQuotes = "data/english_quotes/quotes.jsonl";
// The reference run's record template (docs/formats: 40 train / 10 valid english_quotes).
const char* kRefTemplate =
    R"({"text": "<|im_start|>user\nWrite an inspirational quote about {tags[0]}<|im_end|>\n<|im_start|>assistant\n\"{quote}\" - {author}<|im_end|>"})";

std::string ref_text(const json& src) {
  return "<|im_start|>user\nWrite an inspirational quote about " + src["tags"][0].get<std::string>() +
         "<|im_end|>\n<|im_start|>assistant\n\"" + src["quote"].get<std::string>() + "\" - " +
         src["author"].get<std::string>() + "<|im_end|>";
}

TEST(Convert, ReferenceRunQuotes) {
  LORA_REQUIRE_SHARED(kQuotes);
  const std::string src = test::shared_dir() + "/" + kQuotes;
  // What every output line may be: the template applied to a source record that has a tag.
  std::set<std::string> allowed;
  int64_t untagged = 0, n_src = 0;
  for (const auto& l : read_lines(src)) {
    const json j = json::parse(l);
    ++n_src;
    if (j["tags"].empty()) ++untagged;
    else allowed.insert(ref_text(j));
  }
  TempDir d;
  ConvertOptions o;
  o.inputs = {src};
  o.template_src = kRefTemplate;
  o.output = d.path() + "/data";
  o.split = "40,10,0";
  o.seed = 42;
  testing::internal::CaptureStderr();
  const ConvertResult r = data_convert(o);
  const std::string err = testing::internal::GetCapturedStderr();
  EXPECT_EQ(r.summary, "wrote 40 train / 10 valid / 0 test examples to " + o.output);
  EXPECT_EQ(r.n_source, n_src);
  EXPECT_EQ(r.n_missing, untagged);
  EXPECT_EQ(untagged, 9);  // the data set card: 9 rows have an empty tag list
  EXPECT_NE(err.find(fmt::format("skipped 9 of {} record(s) that lack a field the template uses (9 without tags[0])", n_src)),
            std::string::npos)
      << err;
  const auto train = read_lines(o.output + "/train.jsonl");
  const auto valid = read_lines(o.output + "/valid.jsonl");
  ASSERT_EQ(train.size(), 40u);
  ASSERT_EQ(valid.size(), 10u);
  EXPECT_FALSE(test::file_exists(o.output + "/test.jsonl"));
  std::set<std::string> seen;
  for (const auto* lines : {&train, &valid})
    for (const auto& l : *lines) {
      const json j = json::parse(l);  // valid JSON, one object per line
      ASSERT_TRUE(j.is_object());
      ASSERT_EQ(j.size(), 1u);
      const std::string text = j["text"];
      EXPECT_EQ(allowed.count(text), 1u) << text;
      EXPECT_TRUE(seen.insert(text).second) << "twice: " << text;
    }
  // Same seed, same files; another seed, another sample.
  ConvertOptions o2 = o;
  o2.output = d.path() + "/again";
  testing::internal::CaptureStderr();
  data_convert(o2);
  o2.output = d.path() + "/other";
  o2.seed = 43;
  data_convert(o2);
  testing::internal::GetCapturedStderr();
  EXPECT_EQ(read_lines(d.path() + "/again/train.jsonl"), train);
  EXPECT_NE(read_lines(d.path() + "/other/train.jsonl"), train);
}

TEST(Convert, ReferenceRunExactRecord) {
  LORA_REQUIRE_SHARED(kQuotes);
  TempDir d;
  ConvertOptions o;
  o.inputs = {test::shared_dir() + "/" + kQuotes};
  o.template_src = kRefTemplate;
  o.output = d.path();
  o.split = "40,10,0";
  o.shuffle = false;
  testing::internal::CaptureStderr();
  data_convert(o);
  testing::internal::GetCapturedStderr();
  const auto train = read_lines(d.path() + "/train.jsonl");
  ASSERT_EQ(train.size(), 40u);
  // The file's first quote, written out by hand.
  EXPECT_EQ(json::parse(train[0])["text"],
            "<|im_start|>user\nWrite an inspirational quote about be-yourself<|im_end|>\n<|im_start|>assistant\n"
            "\"\u201CBe yourself; everyone else is already taken.\u201D\" - Oscar Wilde<|im_end|>");
  EXPECT_EQ(train[0],
            "{\"text\":\"<|im_start|>user\\nWrite an inspirational quote about be-yourself<|im_end|>\\n<|im_start|>"
            "assistant\\n\\\"\u201CBe yourself; everyone else is already taken.\u201D\\\" - Oscar Wilde<|im_end|>\"}");
}

TEST(Convert, StrictFilterMaxRecordsAndOverwrite) {
  TempDir d;
  const std::string src = test::fixture("data/quotes.json");
  ConvertOptions o;
  o.inputs = {src};
  o.template_src = R"J({"text": "{quote} ({tags[0]})"})J";
  o.output = d.path() + "/out";
  o.split = "1,0,0";
  o.strict = true;
  EXPECT_EQ(error_of([&] { data_convert(o); }), src + ": [1]: no field \"tags[0]\", which the template uses");
  o.strict = false;
  testing::internal::CaptureStderr();
  ConvertResult r = data_convert(o);
  testing::internal::GetCapturedStderr();
  EXPECT_EQ(r.n_missing, 1);
  EXPECT_EQ(read_lines(o.output + "/train.jsonl"), (std::vector<std::string>{R"J({"text":"First (t1)"})J"}));
  // The files exist now: a second run needs --force.
  EXPECT_EQ(error_of([&] { data_convert(o); }), o.output + "/train.jsonl: already exists");
  o.force = true;
  o.template_src = R"({"text": "{quote} by {author}", "year": {meta.year}})";
  o.split = "1,1";
  o.shuffle = false;
  r = data_convert(o);
  EXPECT_EQ(read_lines(o.output + "/train.jsonl"), (std::vector<std::string>{R"({"text":"First by A","year":1900})"}));
  EXPECT_EQ(read_lines(o.output + "/valid.jsonl"), (std::vector<std::string>{R"({"text":"Second by B","year":2000})"}));
  // --filter-max-chars counts the text of the string values (here "First by A" is 10 characters).
  o.template_src = R"({"text": "{quote} by {author}"})";
  o.filter_max_chars = 10;
  o.split = "1,0";
  testing::internal::CaptureStderr();
  r = data_convert(o);
  testing::internal::GetCapturedStderr();
  EXPECT_EQ(r.n_too_long, 1);
  EXPECT_EQ(read_lines(o.output + "/train.jsonl"), (std::vector<std::string>{R"({"text":"First by A"})"}));
  EXPECT_FALSE(test::file_exists(o.output + "/valid.jsonl"));  // the stale one from the last run is gone
  // --max-records keeps N after the shuffle.
  o.filter_max_chars = 0;
  o.max_records = 1;
  o.split = "1.0,0";
  r = data_convert(o);
  EXPECT_EQ(r.counts, (std::array<int64_t, 3>{1, 0, 0}));
  EXPECT_EQ(r.n_unused, 1);
}

TEST(Convert, TemplateMustGiveAJsonObject) {
  TempDir d;
  const std::string src = test::fixture("data/quotes.json");
  ConvertOptions o;
  o.inputs = {src};
  o.output = d.path();
  o.split = "1,0";
  o.template_src = R"({"text": {quote}x})";
  std::string e = error_of([&] { data_convert(o); });
  EXPECT_EQ(e.rfind(src + ": [0]: the template does not give valid JSON for this record", 0), 0u) << e;
  o.template_src = R"("{quote}")";
  EXPECT_EQ(error_of([&] { data_convert(o); }), src + ": [0]: the template gives JSON that is not an object");
  o.template_src = R"({"text": "{missing}"})";
  testing::internal::CaptureStderr();
  e = error_of([&] { data_convert(o); });
  testing::internal::GetCapturedStderr();
  EXPECT_EQ(e, src + ": no records left out of 2 read");
  EXPECT_FALSE(test::file_exists(d.path() + "/train.jsonl"));
}

TEST(Convert, CsvFortuneAndManyInputs) {
  TempDir d;
  ConvertOptions o;
  o.inputs = {test::fixture("data/quotes.csv"), test::fixture("data/fortunes/tiny")};
  o.template_src = R"({"prompt": "Quote:", "completion": "{quote}"})";
  o.output = d.path();
  o.split = "3,0";
  o.shuffle = false;
  testing::internal::CaptureStderr();
  const ConvertResult r = data_convert(o);
  testing::internal::GetCapturedStderr();
  EXPECT_EQ(r.n_source, 6);   // 4 CSV rows + 2 fortunes
  EXPECT_EQ(r.n_missing, 1);  // the fortune without an attribution has no "quote"
  const auto lines = read_lines(d.path() + "/train.jsonl");
  ASSERT_EQ(lines.size(), 3u);
  EXPECT_EQ(json::parse(lines[2])["completion"], "Line one\nline two");
  EXPECT_EQ(r.n_unused, 2);
}

}  // namespace
}  // namespace lora
