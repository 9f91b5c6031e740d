// Training data: a folder with train.jsonl / valid.jsonl / test.jsonl as mlx-lm reads it (v0.28.1),
// tokenized into examples (token ids + the index where the loss starts).
//
// Formats, detected from the first record of each file (the same precedence as mlx-lm):
//   completions {"prompt": str, "completion": str}  rendered as a user/assistant chat through the chat
//                                                   template; with mask_prompt the loss starts after the
//                                                   render of the user message with the generation prompt
//   chat        {"messages": [{"role","content"}, ...], optional "tools": [...]}
//                                                   the whole conversation rendered without a generation
//                                                   prompt; with mask_prompt the loss starts after the
//                                                   render of all but the last message with the prompt
//   text        {"text": str}                       tokenized with BOS as the tokenizer adds it; EOS
//                                                   appended when the last token is not already EOS
// Chat renders are tokenized as transformers' apply_chat_template does: special tokens in the text are
// parsed and no BOS/EOS is added (the template writes them).
//
// Every record of a file must have the first record's format. Errors are lora::Error naming
// "<file>:<line>" (1-based, blank lines count as lines but are skipped) and a hint.
#pragma once
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "io/chat_template.h"

namespace lora {

class Tokenizer;

enum DataFormat { DATA_FORMAT_TEXT, DATA_FORMAT_COMPLETIONS, DATA_FORMAT_CHAT };
const char* data_format_name(DataFormat f);  // "text" | "completions" | "chat"

// One parsed record, before tokenization.
struct DataRecord {
  int64_t line = 0;                   // 1-based line in the file
  std::string text;                   // text
  std::string prompt, completion;     // completions
  std::vector<ChatMessage> messages;  // chat
  bool has_tools = false;             // chat: a "tools" array was given (see dataset_tokenize)
};

struct DataFile {
  std::string path;
  DataFormat format = DATA_FORMAT_TEXT;
  std::vector<DataRecord> records;
};

// Parses a JSONL file (no tokenization). Errors: unreadable/empty file, malformed JSON, non-object
// lines, missing fields, wrong field types, a record whose format differs from the first one's.
DataFile dataset_read_jsonl(const std::string& path);

// One tokenized example. The loss covers token positions [offset, tokens.size()) as targets, i.e.
// the model is trained to predict tokens[i] for offset <= i (and i >= 1).
struct Example {
  std::vector<int32_t> tokens;
  int64_t offset = 0;  // 0 = train on every token
};

// Renders a conversation to text (tests inject one; the default is chat_render with the template).
using ChatRenderFn = std::function<std::string(const std::vector<ChatMessage>&, bool add_generation_prompt)>;

struct DatasetOptions {
  bool mask_prompt = false;   // train on the final assistant message only (chat/completions)
  std::string chat_template;  // Jinja source; empty = the tokenizer's own chat_template
  ChatRenderFn render;        // overrides chat_template when set
};

// Tokenizes one record of `format`. `where` ("train.jsonl:7") names it in errors.
Example dataset_tokenize(const DataRecord& r, DataFormat format, const Tokenizer& tok, const DatasetOptions& opts,
                         const ChatRenderFn& render, const std::string& where);

struct Dataset {
  std::string path;
  DataFormat format = DATA_FORMAT_TEXT;
  std::vector<Example> examples;
  int64_t n_tokens() const;  // sum of example lengths
};

// Reads and tokenizes one file. Errors as dataset_read_jsonl, plus mask_prompt on text data and chat
// data without a usable chat template.
Dataset dataset_load_file(const std::string& path, const Tokenizer& tok, const DatasetOptions& opts);

struct DataSplits {
  Dataset train;                 // empty when not needed
  std::optional<Dataset> valid;  // absent: no valid.jsonl (warned when training)
  std::optional<Dataset> test;   // loaded only when need_test
};

// `--data DIR`. need_train: train.jsonl must exist (lora::Error otherwise); valid.jsonl is optional
// (a warning when training without it); test.jsonl is read only when need_test and must then exist.
DataSplits dataset_load_dir(const std::string& dir, const Tokenizer& tok, const DatasetOptions& opts,
                            bool need_train = true, bool need_test = false);

}  // namespace lora
