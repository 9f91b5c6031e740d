// `lora data`: builds a --data folder (train/valid/test.jsonl) for `lora train` from JSON Lines, a JSON
// array, CSV/TSV or fortune files, through a record template (io/data_convert.h has the rules).
#include <cstdio>

#include "cli/common.h"
#include "core/error.h"
#include "io/data_convert.h"
#include "io/mapped_file.h"

namespace lora::cli {

namespace {
struct DataFlags {
  std::vector<std::string> inputs;
  std::string format = "auto";
  std::string template_src;
  std::string template_file;
  std::string output;
  std::string split = "0.8,0.1,0.1";
  uint64_t seed = 0;
  bool no_shuffle = false;
  int64_t max_records = 0;
  int64_t filter_max_chars = 0;
  bool force = false;
  bool strict = false;
};

int run_data(const DataFlags& f) {
  ConvertOptions o;
  o.inputs = f.inputs;
  if (!source_format_from_name(f.format, &o.format))
    fail_input("--format", "unknown format '" + f.format + "'", "use auto, jsonl, json, csv, tsv or fortune");
  if (!f.template_file.empty()) {
    o.template_src = read_text_file(f.template_file);
    while (!o.template_src.empty() && (o.template_src.back() == '\n' || o.template_src.back() == '\r'))
      o.template_src.pop_back();
    o.template_name = f.template_file;
  } else {
    o.template_src = f.template_src;
  }
  o.output = f.output;
  o.split = f.split;
  o.seed = f.seed;
  o.shuffle = !f.no_shuffle;
  o.max_records = f.max_records;
  o.filter_max_chars = f.filter_max_chars;
  o.force = f.force;
  o.strict = f.strict;
  const ConvertResult r = data_convert(o);
  std::puts(r.summary.c_str());
  return 0;
}
}  // namespace

void register_data(CLI::App& app, Action& action) {
  auto f = std::make_shared<DataFlags>();
  auto* cmd = app.add_subcommand("data", "Build train/valid/test.jsonl from JSON Lines, JSON, CSV/TSV or fortune files");
  cmd->footer(
      "Template: a JSON object with {field} placeholders ({tags[0]}, {a.b}; {{ and }} are literal braces), e.g.\n"
      "  lora data -i quotes.jsonl -o data --split 40,10,0 \\\n"
      "    --template '{\"text\": \"<|im_start|>user\\nWrite an inspirational quote about {tags[0]}<|im_end|>\\n"
      "<|im_start|>assistant\\n\\\"{quote}\\\" - {author}<|im_end|>\"}'\n"
      "Fortune files give the fields text, category and, when attributed, quote and author.");
  cmd->add_option("--input,-i", f->inputs, "Source file or folder (repeatable)")->required();
  cmd->add_option("--format", f->format, "Source format: auto, jsonl, json, csv, tsv or fortune");
  auto* t = cmd->add_option("--template,-t", f->template_src, "Record template (JSON with {field} placeholders)");
  auto* tf = cmd->add_option("--template-file", f->template_file, "Read the record template from FILE");
  t->excludes(tf);
  tf->excludes(t);
  cmd->add_option("--output,-o", f->output, "Output folder (created if absent)")->required();
  cmd->add_option("--split", f->split, "train,valid,test as counts (40,10,0) or ratios (0.8,0.1,0.1)");
  cmd->add_option("--seed", f->seed, "Seed of the shuffle before the split");
  cmd->add_flag("--no-shuffle", f->no_shuffle, "Keep the source order");
  cmd->add_option("--max-records", f->max_records, "Keep at most N records after filtering and shuffling (0 = all)");
  cmd->add_option("--filter-max-chars", f->filter_max_chars,
                  "Drop records whose text is longer than N characters (0 = no limit)");
  cmd->add_flag("--force", f->force, "Overwrite train/valid/test.jsonl already in --output");
  cmd->add_flag("--strict", f->strict, "A record that lacks a template field is an error instead of skipped");
  cmd->callback([f, &action] {
    action = [f] {
      if (f->template_src.empty() && f->template_file.empty())
        fail_input("--template", "no template given", "pass --template '{\"text\": \"...{field}...\"}' or --template-file FILE");
      return run_data(*f);
    };
  });
}

}  // namespace lora::cli
