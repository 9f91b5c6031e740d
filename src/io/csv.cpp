// RFC 4180 CSV/TSV reader (see csv.h).
#include "io/csv.h"

#include <fmt/format.h>

#include "core/error.h"

namespace lora {

std::vector<CsvRow> csv_parse(std::string_view text, char sep, const std::string& path) {
  std::vector<CsvRow> rows;
  size_t i = 0;
  if (text.substr(0, 3) == "\xEF\xBB\xBF") i = 3;  // UTF-8 byte-order mark
  int64_t line = 1;
  const size_t n = text.size();
  while (i < n) {
    CsvRow row;
    row.line = line;
    bool row_done = false;
    while (!row_done) {
      std::string field;
      if (i < n && text[i] == '"') {
        const int64_t open_line = line;
        ++i;
        for (;;) {
          if (i >= n)
            fail_input(fmt::format("{}:{}", path, open_line), "unterminated quoted field",
                       "a field that starts with \" must end with \"; write a quote inside it as \"\"");
          const char c = text[i++];
          if (c == '"') {
            if (i < n && text[i] == '"') {
              field += '"';
              ++i;
              continue;
            }
            break;
          }
          if (c == '\n') ++line;
          field += c;
        }
        if (i < n && text[i] == '\r' && i + 1 < n && text[i + 1] == '\n') ++i;
        if (i < n && text[i] != sep && text[i] != '\n')
          fail_input(fmt::format("{}:{}", path, line), "unexpected text after a closing quote",
                     "quote the whole field, and write a quote inside it as \"\"");
      } else {
        while (i < n && text[i] != sep && text[i] != '\n') field += text[i++];
        if (!field.empty() && field.back() == '\r' && (i >= n || text[i] == '\n')) field.pop_back();
      }
      row.fields.push_back(std::move(field));
      if (i >= n) {
        row_done = true;
      } else if (text[i] == sep) {
        ++i;
      } else {  // '\n'
        ++i;
        ++line;
        row_done = true;
      }
    }
    const bool blank = row.fields.size() == 1 && row.fields[0].empty();
    if (!blank) rows.push_back(std::move(row));
  }
  return rows;
}

}  // namespace lora
