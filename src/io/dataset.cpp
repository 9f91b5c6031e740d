// JSONL training data: parsing with format detection and per-line errors, then tokenization with the
// loss offset as mlx-lm computes it (see dataset.h for the contract).
#include "io/dataset.h"

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/log.h"
#include "io/mapped_file.h"
#include "io/tokenizer.h"

namespace lora {

using json = nlohmann::json;

const char* data_format_name(DataFormat f) {
  switch (f) {
    case DATA_FORMAT_TEXT: return "text";
    case DATA_FORMAT_COMPLETIONS: return "completions";
    case DATA_FORMAT_CHAT: return "chat";
  }
  return "?";
}

namespace {

const char* kFormatsHint =
    "each line must be one JSON object in one of three formats: {\"text\": ...}, "
    "{\"prompt\": ..., \"completion\": ...} or {\"messages\": [{\"role\": ..., \"content\": ...}, ...]}";

// nlohmann's messages start with "[json.exception.parse_error.101] parse error at line 1, "; keep
// the part after that (the column and what was wrong).
std::string json_error_text(const std::exception& e) {
  std::string s = e.what();
  if (!s.empty() && s[0] == '[') {
    const size_t close = s.find("] ");
    if (close != std::string::npos) s = s.substr(close + 2);
  }
  const std::string lead = "parse error at line 1, ";
  if (s.rfind(lead, 0) == 0) s = s.substr(lead.size());
  return s;
}

const char* json_type_name(const json& v) {
  switch (v.type()) {
    case json::value_t::null: return "null";
    case json::value_t::boolean: return "a boolean";
    case json::value_t::string: return "a string";
    case json::value_t::array: return "an array";
    case json::value_t::object: return "an object";
    case json::value_t::discarded: return "invalid";
    default: return "a number";
  }
}

// The format a record looks like, by mlx-lm's precedence; false when none.
bool detect_format(const json& o, DataFormat* f) {
  if (o.contains("prompt") && o.contains("completion")) *f = DATA_FORMAT_COMPLETIONS;
  else if (o.contains("messages")) *f = DATA_FORMAT_CHAT;
  else if (o.contains("text")) *f = DATA_FORMAT_TEXT;
  else return false;
  return true;
}

std::string keys_of(const json& o) {
  std::string s;
  for (auto it = o.begin(); it != o.end(); ++it) s += (s.empty() ? "" : ", ") + ("\"" + it.key() + "\"");
  return s.empty() ? "none" : s;
}

std::string get_string(const json& o, const char* key, const std::string& where) {
  auto it = o.find(key);
  if (it == o.end()) fail_input(where, fmt::format("missing \"{}\"", key), kFormatsHint);
  if (!it->is_string())
    fail_input(where, fmt::format("\"{}\" must be a string, not {}", key, json_type_name(*it)), kFormatsHint);
  return it->get<std::string>();
}

std::vector<ChatMessage> get_messages(const json& o, const std::string& where) {
  auto it = o.find("messages");
  if (it == o.end()) fail_input(where, "missing \"messages\"", kFormatsHint);
  if (!it->is_array())
    fail_input(where, fmt::format("\"messages\" must be an array, not {}", json_type_name(*it)), kFormatsHint);
  if (it->empty()) fail_input(where, "\"messages\" is empty", "a conversation needs at least one message");
  std::vector<ChatMessage> out;
  for (size_t i = 0; i < it->size(); ++i) {
    const json& m = (*it)[i];
    const std::string w = fmt::format("{}: messages[{}]", where, i);
    if (!m.is_object()) fail_input(w, fmt::format("must be an object, not {}", json_type_name(m)), kFormatsHint);
    ChatMessage cm;
    cm.role = get_string(m, "role", w);
    auto c = m.find("content");
    if (c == m.end()) fail_input(w, "missing \"content\"", kFormatsHint);
    if (c->is_null()) cm.content.clear();  // e.g. an assistant turn that only calls a tool
    else if (c->is_string()) cm.content = c->get<std::string>();
    else
      fail_input(w, fmt::format("\"content\" must be a string, not {}", json_type_name(*c)),
                 "content given as a list of parts is not supported; join the text parts into one string");
    out.push_back(std::move(cm));
  }
  return out;
}

DataRecord parse_record(const json& o, DataFormat format, const std::string& where) {
  DataRecord r;
  switch (format) {
    case DATA_FORMAT_TEXT: r.text = get_string(o, "text", where); break;
    case DATA_FORMAT_COMPLETIONS:
      r.prompt = get_string(o, "prompt", where);
      r.completion = get_string(o, "completion", where);
      break;
    case DATA_FORMAT_CHAT: {
      r.messages = get_messages(o, where);
      auto t = o.find("tools");
      if (t != o.end() && !t->is_null()) {
        if (!t->is_array())
          fail_input(where, fmt::format("\"tools\" must be an array, not {}", json_type_name(*t)),
                     "tools are a list of function definitions, as in the OpenAI chat format");
        r.has_tools = !t->empty();
      }
      break;
    }
  }
  return r;
}

std::vector<int32_t> encode_render(const Tokenizer& tok, const std::string& text) {
  // As transformers' apply_chat_template(tokenize=True): the template writes BOS/EOS itself.
  return tok.encode(text, /*add_special=*/false, /*parse_special=*/true);
}

}  // namespace

DataFile dataset_read_jsonl(const std::string& path) {
  DataFile f;
  f.path = path;
  if (!path_exists(path)) fail_input(path, "file not found");
  const std::string data = read_text_file(path);
  size_t pos = 0;
  if (data.compare(0, 3, "\xEF\xBB\xBF") == 0) pos = 3;  // UTF-8 byte-order mark
  int64_t line_no = 0;
  int64_t first_line = 0;
  while (pos < data.size()) {
    size_t end = data.find('\n', pos);
    if (end == std::string::npos) end = data.size();
    std::string_view line(data.data() + pos, end - pos);
    pos = end + 1;
    ++line_no;
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (line.find_first_not_of(" \t") == std::string_view::npos) continue;  // blank line
    const std::string where = fmt::format("{}:{}", path, line_no);
    json o;
    try {
      o = json::parse(line);
    } catch (const json::parse_error& e) {
      fail_input(where, "malformed JSON: " + json_error_text(e),
                 "each line must hold one complete JSON object (JSON Lines); check quotes and escapes");
    }
    if (!o.is_object()) fail_input(where, fmt::format("expected a JSON object, got {}", json_type_name(o)), kFormatsHint);
    if (f.records.empty()) {
      if (!detect_format(o, &f.format))
        fail_input(where, fmt::format("unknown data format (keys: {})", keys_of(o)), kFormatsHint);
      first_line = line_no;
    } else {
      DataFormat g;
      if (detect_format(o, &g) && g != f.format)
        fail_input(where,
                   fmt::format("record is in the {} format but the file's first record (line {}) is {}",
                               data_format_name(g), first_line, data_format_name(f.format)),
                   "all records of a file must have the same format");
    }
    DataRecord r = parse_record(o, f.format, where);
    r.line = line_no;
    f.records.push_back(std::move(r));
  }
  if (f.records.empty()) fail_input(path, "the file is empty (no records)", kFormatsHint);
  return f;
}

Example dataset_tokenize(const DataRecord& r, DataFormat format, const Tokenizer& tok, const DatasetOptions& opts,
                         const ChatRenderFn& render, const std::string& where) {
  Example ex;
  if (format == DATA_FORMAT_TEXT) {
    if (opts.mask_prompt)
      fail_input(where, "--mask-prompt needs chat or completions data",
                 "text records have no prompt to mask; drop --mask-prompt or use {\"prompt\", \"completion\"} records");
    ex.tokens = tok.encode(r.text, /*add_special=*/true, /*parse_special=*/true);
    if (tok.eos_id >= 0 && (ex.tokens.empty() || ex.tokens.back() != tok.eos_id)) ex.tokens.push_back(tok.eos_id);
    return ex;
  }
  LORA_CHECK(render, "no chat renderer");
  auto do_render = [&](const std::vector<ChatMessage>& msgs, bool gen) {
    try {
      return render(msgs, gen);
    } catch (const Error& e) {
      fail_input(where, std::string("chat template: ") + e.what(), e.hint());
    }
  };
  if (format == DATA_FORMAT_COMPLETIONS) {
    const std::vector<ChatMessage> full = {{"user", r.prompt}, {"assistant", r.completion}};
    ex.tokens = encode_render(tok, do_render(full, false));
    if (opts.mask_prompt) ex.offset = int64_t(encode_render(tok, do_render({full[0]}, true)).size());
  } else {
    ex.tokens = encode_render(tok, do_render(r.messages, false));
    if (opts.mask_prompt) {
      const std::vector<ChatMessage> head(r.messages.begin(), r.messages.end() - 1);
      ex.offset = int64_t(encode_render(tok, do_render(head, true)).size());
    }
  }
  return ex;
}

int64_t Dataset::n_tokens() const {
  int64_t n = 0;
  for (const auto& e : examples) n += int64_t(e.tokens.size());
  return n;
}

Dataset dataset_load_file(const std::string& path, const Tokenizer& tok, const DatasetOptions& opts) {
  DataFile f = dataset_read_jsonl(path);
  Dataset ds;
  ds.path = path;
  ds.format = f.format;
  if (f.format == DATA_FORMAT_TEXT && opts.mask_prompt)
    fail_input(path, "--mask-prompt needs chat or completions data",
               "text records have no prompt to mask; drop --mask-prompt or use {\"prompt\", \"completion\"} records");
  ChatRenderFn render = opts.render;
  if (f.format != DATA_FORMAT_TEXT && !render) {
    const std::string src = opts.chat_template.empty() ? tok.chat_template : opts.chat_template;
    if (src.empty())
      fail_input(path, fmt::format("{} data needs a chat template, and the tokenizer has none", data_format_name(f.format)),
                 "pass --chat-template NAME|FILE (built-in: chatml, zephyr, llama2, llama3, mistral), or use {\"text\"} records");
    ChatRenderOptions ro;
    ro.bos_token = tok.bos_token;
    ro.eos_token = tok.eos_token;
    render = [src, ro](const std::vector<ChatMessage>& m, bool gen) {
      ChatRenderOptions o = ro;
      o.add_generation_prompt = gen;
      return chat_render(src, m, o);
    };
  }
  int64_t with_tools = 0;
  ds.examples.reserve(f.records.size());
  for (const auto& r : f.records) {
    with_tools += r.has_tools ? 1 : 0;
    ds.examples.push_back(dataset_tokenize(r, f.format, tok, opts, render, fmt::format("{}:{}", path, r.line)));
  }
  if (with_tools > 0)
    log_warn("{}: {} record(s) carry \"tools\"; tool definitions are not passed to the chat template yet, "
             "so the model is trained without them", path, with_tools);
  return ds;
}

DataSplits dataset_load_dir(const std::string& dir, const Tokenizer& tok, const DatasetOptions& opts, bool need_train,
                            bool need_test) {
  if (!path_is_dir(dir))
    fail_input(dir, path_exists(dir) ? "not a folder" : "folder not found",
               "--data names a folder holding train.jsonl, valid.jsonl and test.jsonl (`lora data` builds one)");
  DataSplits s;
  const std::string train = dir + "/train.jsonl", valid = dir + "/valid.jsonl", test = dir + "/test.jsonl";
  if (need_train) {
    if (!path_exists(train))
      fail_input(train, "file not found",
                 "--data names a folder holding train.jsonl, valid.jsonl and test.jsonl (`lora data` builds one)");
    s.train = dataset_load_file(train, tok, opts);
    if (path_exists(valid)) s.valid = dataset_load_file(valid, tok, opts);
    else log_warn("{} not found: training without validation", valid);
  }
  if (need_test) {
    if (!path_exists(test)) fail_input(test, "file not found", "--test evaluates on test.jsonl in the --data folder");
    s.test = dataset_load_file(test, tok, opts);
  }
  return s;
}

}  // namespace lora
