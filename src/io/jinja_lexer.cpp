// Jinja lexer: see jinja_lexer.h. The structure follows jinja2/lexer.py (root state finds the next
// tag; block/variable states read expression tokens until the closing delimiter) so that every
// whitespace-control corner behaves as transformers renders it.
#include "io/jinja_lexer.h"

#include <cerrno>
#include <cstdlib>
#include <cstring>

#include "core/error.h"
#include "io/jinja_value.h"

namespace lora::jinja {

Source::Source(std::string name_, const std::string& raw) : name(std::move(name_)) {
  // Jinja splits on \r\n, \r, \n and rejoins with \n; a single trailing newline is dropped.
  text.reserve(raw.size());
  for (size_t i = 0; i < raw.size(); ++i) {
    if (raw[i] == '\r') {
      text += '\n';
      if (i + 1 < raw.size() && raw[i + 1] == '\n') ++i;
    } else {
      text += raw[i];
    }
  }
  if (!text.empty() && text.back() == '\n') text.pop_back();
}

std::pair<int, int> Source::line_col(size_t pos) const {
  int line = 1, col = 1;
  for (size_t i = 0; i < pos && i < text.size(); ++i) {
    if (text[i] == '\n') {
      ++line;
      col = 1;
    } else if ((static_cast<unsigned char>(text[i]) & 0xc0) != 0x80) {
      ++col;
    }
  }
  return {line, col};
}

void syntax_error(const Source& src, size_t pos, const std::string& msg, const std::string& hint) {
  auto [line, col] = src.line_col(pos);
  // Show the offending line so the message stands on its own.
  size_t b = src.text.rfind('\n', pos == 0 ? 0 : pos - 1);
  b = (b == std::string::npos || pos == 0) ? 0 : b + 1;
  if (pos > 0 && src.text[pos - 1] == '\n') b = pos;
  size_t e = src.text.find('\n', b);
  std::string snippet = src.text.substr(b, (e == std::string::npos ? src.text.size() : e) - b);
  if (snippet.size() > 120) snippet = snippet.substr(0, 120) + "...";
  std::string h = hint.empty() ? "check the template's Jinja syntax near: " + snippet : hint + " (near: " + snippet + ")";
  fail_input(src.name + ":" + std::to_string(line) + ":" + std::to_string(col), "syntax error: " + msg, h);
}

std::string token_describe(const Token& t) {
  switch (t.type) {
    case TK_DATA: return "template data";
    case TK_VAR_BEGIN: return "begin of print statement";
    case TK_VAR_END: return "end of print statement";
    case TK_BLOCK_BEGIN: return "begin of statement block";
    case TK_BLOCK_END: return "end of statement block";
    case TK_NAME: return t.text;
    case TK_STRING: return "string";
    case TK_INT: return "integer";
    case TK_FLOAT: return "float";
    case TK_OP: return t.text;
    case TK_EOF: return "end of template";
  }
  return "token";
}

namespace {

bool is_digit(char c) { return c >= '0' && c <= '9'; }
bool is_name_start(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_'; }
bool is_name_char(char c) { return is_name_start(c) || is_digit(c); }

// Byte length of the Python-whitespace code point at s[i], or 0.
size_t space_at(const std::string& s, size_t i) {
  if (i >= s.size()) return 0;
  unsigned char c = s[i];
  if (c < 0x80) return py_isspace(c) ? 1 : 0;
  if (c == 0xc2 && i + 1 < s.size()) {
    unsigned char d = s[i + 1];
    return (d == 0x85 || d == 0xa0) ? 2 : 0;
  }
  if ((c == 0xe1 || c == 0xe2 || c == 0xe3) && i + 2 < s.size()) {
    uint32_t cp = ((c & 0x0f) << 12) | ((s[i + 1] & 0x3f) << 6) | (s[i + 2] & 0x3f);
    return py_isspace(cp) ? 3 : 0;
  }
  return 0;
}
size_t skip_space(const std::string& s, size_t i) {
  while (size_t k = space_at(s, i)) i += k;
  return i;
}
bool all_space(const std::string& s, size_t from) {
  if (from >= s.size()) return false;  // \s+ needs at least one character
  size_t i = from;
  while (i < s.size()) {
    size_t k = space_at(s, i);
    if (!k) return false;
    i += k;
  }
  return true;
}
bool starts(const std::string& s, size_t i, const char* lit) { return s.compare(i, std::strlen(lit), lit) == 0; }

// (\d+_)*\d+ at i; returns the end or npos.
size_t match_digits(const std::string& s, size_t i) {
  if (i >= s.size() || !is_digit(s[i])) return std::string::npos;
  while (i < s.size() && is_digit(s[i])) ++i;
  while (i + 1 < s.size() && s[i] == '_' && is_digit(s[i + 1])) {
    ++i;
    while (i < s.size() && is_digit(s[i])) ++i;
  }
  return i;
}

size_t match_float(const std::string& s, size_t i) {
  if (i > 0 && s[i - 1] == '.') return std::string::npos;
  size_t a = match_digits(s, i);
  if (a == std::string::npos) return a;
  size_t frac = std::string::npos;
  if (a < s.size() && s[a] == '.') frac = match_digits(s, a + 1);
  size_t b = frac != std::string::npos ? frac : a;
  if (b < s.size() && (s[b] == 'e' || s[b] == 'E')) {
    size_t c = b + 1;
    if (c < s.size() && (s[c] == '+' || s[c] == '-')) ++c;
    size_t d = match_digits(s, c);
    if (d != std::string::npos) return d;
  }
  return frac;
}

// Python integer literal (Jinja's integer_re); returns the end or npos, value in *out.
size_t match_int(const Source& src, size_t i, int64_t* out) {
  const std::string& s = src.text;
  if (i >= s.size() || !is_digit(s[i])) return std::string::npos;
  auto valid = [](char c, int base) {
    if (base == 2) return c == '0' || c == '1';
    if (base == 8) return c >= '0' && c <= '7';
    if (base == 16) return is_digit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
    return is_digit(c);
  };
  int base = 10;
  size_t j = i;
  if (s[i] == '0' && i + 1 < s.size()) {
    char p = s[i + 1] | 0x20;
    base = p == 'b' ? 2 : p == 'o' ? 8 : p == 'x' ? 16 : 10;
  }
  std::string digits;
  if (base != 10) {
    j = i + 2;
    while (j < s.size()) {
      if (s[j] == '_' && j + 1 < s.size() && valid(s[j + 1], base)) ++j;
      if (!valid(s[j], base)) break;
      digits += s[j++];
    }
    if (digits.empty()) base = 10, j = i;  // "0b" alone: falls back to the decimal zero rule
  }
  if (base == 10) {
    digits.clear();
    j = i;
    if (s[i] == '0') {  // 0(_?0)*
      digits = "0";
      ++j;
      while (j < s.size()) {
        if (s[j] == '0') ++j;
        else if (s[j] == '_' && j + 1 < s.size() && s[j + 1] == '0') j += 2;
        else break;
      }
    } else {
      while (j < s.size()) {
        if (is_digit(s[j])) digits += s[j++];
        else if (s[j] == '_' && j + 1 < s.size() && is_digit(s[j + 1])) ++j;
        else break;
      }
    }
  }
  errno = 0;
  unsigned long long v = std::strtoull(digits.c_str(), nullptr, base);
  if (errno == ERANGE || v > uint64_t(INT64_MAX))
    syntax_error(src, i, "integer literal too large", "integers must fit in 64 bits");
  *out = int64_t(v);
  return j;
}

int hex_val(char c) {
  if (is_digit(c)) return c - '0';
  c |= 0x20;
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  return -1;
}

// Python's unicode-escape decoding of a string literal's body (after Jinja's backslashreplace).
std::string decode_string(const Source& src, size_t pos, const std::string& body) {
  std::string out;
  size_t i = 0, n = body.size();
  while (i < n) {
    char c = body[i];
    if (c != '\\' || i + 1 >= n) {
      out += c;
      ++i;
      continue;
    }
    char e = body[i + 1];
    i += 2;
    switch (e) {
      case '\n': break;
      case '\\': out += '\\'; break;
      case '\'': out += '\''; break;
      case '"': out += '"'; break;
      case 'a': out += '\a'; break;
      case 'b': out += '\b'; break;
      case 'f': out += '\f'; break;
      case 'n': out += '\n'; break;
      case 'r': out += '\r'; break;
      case 't': out += '\t'; break;
      case 'v': out += '\v'; break;
      case 'x':
      case 'u':
      case 'U': {
        int len = e == 'x' ? 2 : e == 'u' ? 4 : 8;
        uint32_t cp = 0;
        for (int k = 0; k < len; ++k) {
          int h = i + k < n ? hex_val(body[i + k]) : -1;
          if (h < 0)
            syntax_error(src, pos, std::string("truncated \\") + (e == 'x' ? "xXX" : e == 'u' ? "uXXXX" : "UXXXXXXXX") + " escape");
          cp = cp * 16 + uint32_t(h);
        }
        if (cp > 0x10ffff) syntax_error(src, pos, "illegal Unicode character");
        utf8_append(out, cp);
        i += len;
        break;
      }
      case 'N': syntax_error(src, pos, "\\N{...} escapes are not supported", "write the character itself");
      default:
        if (e >= '0' && e <= '7') {
          uint32_t cp = uint32_t(e - '0');
          for (int k = 0; k < 2 && i < n && body[i] >= '0' && body[i] <= '7'; ++k) cp = cp * 8 + uint32_t(body[i++] - '0');
          utf8_append(out, cp);
        } else if (static_cast<unsigned char>(e) >= 0x80) {
          // Backslash before a non-ASCII character: backslashreplace turned the character into
          // \xNN / \uNNNN / \UNNNNNNNN text, and the escaped backslash leaves that text literal.
          size_t start = i - 1;
          size_t end = start + 1;
          while (end < n && (static_cast<unsigned char>(body[end]) & 0xc0) == 0x80) ++end;
          uint32_t cp = utf8_decode(body.substr(start, end - start))[0];
          char buf[16];
          if (cp <= 0xff) std::snprintf(buf, sizeof buf, "\\x%02x", cp);
          else if (cp <= 0xffff) std::snprintf(buf, sizeof buf, "\\u%04x", cp);
          else std::snprintf(buf, sizeof buf, "\\U%08x", cp);
          out += buf;
          i = end;
        } else {
          out += '\\';
          out += e;  // unknown escapes stay as written
        }
    }
  }
  return out;
}

}  // namespace

std::vector<Token> tokenize(const Source& src) {
  const std::string& s = src.text;
  const size_t n = s.size();
  std::vector<Token> out;
  auto emit = [&](TokenType t, std::string text, size_t pos) {
    Token tok;
    tok.type = t;
    tok.text = std::move(text);
    tok.pos = pos;
    out.push_back(std::move(tok));
  };
  // lstrip_blocks: drop spaces between the last newline (or the start of a line) and a block tag.
  auto lstrip = [&](std::string& text, char sign, bool is_var, bool line_starting) {
    if (sign == '-') {
      text = py_strip(text, std::nullopt, false, true);
    } else if (sign != '+' && !is_var) {
      size_t nl = text.rfind('\n');
      size_t l_pos = nl == std::string::npos ? 0 : nl + 1;
      if ((l_pos > 0 || line_starting) && all_space(text, l_pos)) text.resize(l_pos);
    }
  };
  size_t pos = 0;
  bool line_starting = true;
  std::vector<char> brackets;
  while (pos < n) {
    size_t t = pos;
    char kind = 0;
    while ((t = s.find('{', t)) != std::string::npos) {
      if (t + 1 < n && (s[t + 1] == '%' || s[t + 1] == '{' || s[t + 1] == '#')) {
        kind = s[t + 1];
        break;
      }
      ++t;
    }
    if (!kind) {
      emit(TK_DATA, s.substr(pos), pos);
      break;
    }
    std::string text = s.substr(pos, t - pos);
    size_t q = t + 2;
    char sign = (q < n && (s[q] == '-' || s[q] == '+')) ? s[q] : 0;
    if (sign) ++q;

    // {% raw %} ... {% endraw %}
    bool raw = false;
    if (kind == '%') {
      size_t r = skip_space(s, q);
      if (starts(s, r, "raw")) {
        r = skip_space(s, r + 3);
        if (starts(s, r, "-%}")) raw = true, q = skip_space(s, r + 3);
        else if (starts(s, r, "%}")) raw = true, q = r + 2;
      }
    }
    lstrip(text, sign, kind == '{', line_starting);
    if (!text.empty()) emit(TK_DATA, text, pos);

    if (raw) {
      line_starting = s[q - 1] == '\n';
      size_t p = q;
      for (;; ++p) {
        p = s.find("{%", p);
        if (p == std::string::npos) syntax_error(src, t, "Missing end of raw directive", "close it with {% endraw %}");
        size_t r = p + 2;
        char esign = (r < n && (s[r] == '-' || s[r] == '+')) ? s[r] : 0;
        if (esign) ++r;
        r = skip_space(s, r);
        if (!starts(s, r, "endraw")) continue;
        r = skip_space(s, r + 6);
        size_t end;
        if (starts(s, r, "+%}")) end = r + 3;
        else if (starts(s, r, "-%}")) end = skip_space(s, r + 3);
        else if (starts(s, r, "%}")) end = r + 2 + (r + 2 < n && s[r + 2] == '\n');
        else continue;
        std::string body = s.substr(q, p - q);
        lstrip(body, esign, false, line_starting);
        if (!body.empty()) emit(TK_DATA, body, q);
        pos = end;
        line_starting = s[end - 1] == '\n';
        break;
      }
      continue;
    }

    if (kind == '#') {
      size_t p = q, end = std::string::npos;
      for (; p < n; ++p) {
        if (starts(s, p, "+#}")) end = p + 3;
        else if (starts(s, p, "-#}")) end = skip_space(s, p + 3);
        else if (starts(s, p, "#}")) end = p + 2 + (p + 2 < n && s[p + 2] == '\n');
        if (end != std::string::npos) break;
      }
      if (end == std::string::npos) syntax_error(src, t, "Missing end of comment tag", "close the comment with #}");
      pos = end;
      line_starting = s[end - 1] == '\n';
      continue;
    }

    const bool is_var = kind == '{';
    emit(is_var ? TK_VAR_BEGIN : TK_BLOCK_BEGIN, "", t);
    bool closed = false;
    while (q < n) {
      if (brackets.empty()) {
        size_t end = std::string::npos;
        if (is_var) {
          if (starts(s, q, "-}}")) end = skip_space(s, q + 3);
          else if (starts(s, q, "}}")) end = q + 2;
        } else {
          if (starts(s, q, "+%}")) end = q + 3;
          else if (starts(s, q, "-%}")) end = skip_space(s, q + 3);
          else if (starts(s, q, "%}")) end = q + 2 + (q + 2 < n && s[q + 2] == '\n');
        }
        if (end != std::string::npos) {
          emit(is_var ? TK_VAR_END : TK_BLOCK_END, "", q);
          pos = end;
          line_starting = s[end - 1] == '\n';
          closed = true;
          break;
        }
      }
      if (size_t k = space_at(s, q)) {
        q = skip_space(s, q + k);
        continue;
      }
      size_t e;
      if ((e = match_float(s, q)) != std::string::npos) {
        std::string lit;
        for (size_t k = q; k < e; ++k)
          if (s[k] != '_') lit += s[k];
        Token tok;
        tok.type = TK_FLOAT;
        tok.fval = std::strtod(lit.c_str(), nullptr);
        tok.pos = q;
        tok.text = s.substr(q, e - q);
        out.push_back(tok);
        q = e;
        continue;
      }
      int64_t iv;
      if ((e = match_int(src, q, &iv)) != std::string::npos) {
        Token tok;
        tok.type = TK_INT;
        tok.ival = iv;
        tok.pos = q;
        tok.text = s.substr(q, e - q);
        out.push_back(tok);
        q = e;
        continue;
      }
      if (is_name_start(s[q])) {
        e = q;
        while (e < n && is_name_char(s[e])) ++e;
        emit(TK_NAME, s.substr(q, e - q), q);
        q = e;
        continue;
      }
      if (s[q] == '\'' || s[q] == '"') {
        char quote = s[q];
        e = q + 1;
        while (e < n && s[e] != quote) e += (s[e] == '\\' && e + 1 < n) ? 2 : 1;
        if (e < n) {
          Token tok;
          tok.type = TK_STRING;
          tok.text = decode_string(src, q, s.substr(q + 1, e - q - 1));
          tok.pos = q;
          out.push_back(std::move(tok));
          q = e + 1;
          continue;
        }
        syntax_error(src, q, std::string("unexpected char ") + (quote == '\'' ? "\"'\"" : "'\"'") + " (unterminated string)",
                     "close the string literal");
      }
      static const char* two[] = {"//", "**", "==", "!=", ">=", "<="};
      std::string op;
      for (const char* o : two)
        if (starts(s, q, o)) op = o;
      if (op.empty() && std::strchr("+-/*%~[](){}|.,:;=<>", s[q]) && s[q] != 0) op = std::string(1, s[q]);
      if (op.empty()) {
        std::string ch = s.substr(q, 1);
        syntax_error(src, q, "unexpected char '" + ch + "'", "");
      }
      if (op == "{" || op == "(" || op == "[") {
        if (brackets.size() > 256) syntax_error(src, q, "brackets nested too deeply");
        brackets.push_back(op == "{" ? '}' : op == "(" ? ')' : ']');
      } else if (op == "}" || op == ")" || op == "]") {
        if (brackets.empty()) syntax_error(src, q, "unexpected '" + op + "'");
        char want = brackets.back();
        brackets.pop_back();
        if (want != op[0]) syntax_error(src, q, "unexpected '" + op + "', expected '" + std::string(1, want) + "'");
      }
      emit(TK_OP, op, q);
      q += op.size();
    }
    if (!closed) {
      // Ran off the end inside a tag: the parser reports what it was expecting.
      brackets.clear();
      pos = n;
    }
  }
  emit(TK_EOF, "", n);
  return out;
}

}  // namespace lora::jinja
