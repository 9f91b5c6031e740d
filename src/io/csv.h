// CSV and TSV as RFC 4180 describes them: fields separated by `sep`, a field that starts with a double
// quote runs to the matching quote and may hold separators, line breaks and doubled quotes ("");
// rows end with LF or CRLF. A quote inside an unquoted field is an ordinary character (common in TSV).
// Blank lines are skipped. Errors (lora::Error naming "<path>:<line>"): an unterminated quoted field,
// text after a closing quote.
#pragma once
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace lora {

struct CsvRow {
  int64_t line = 0;  // 1-based line where the row starts
  std::vector<std::string> fields;
};

std::vector<CsvRow> csv_parse(std::string_view text, char sep, const std::string& path);

}  // namespace lora
