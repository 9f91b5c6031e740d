// Errors. Two kinds:
//  - lora::Error: bad user input (missing/corrupt file, wrong shape, bad flag). Carries a message that
//    names the file and the field, plus a hint. Thrown by library code, caught at the boundary (cli/
//    prints it and exits 1; the server turns it into an HTTP 400). Never a crash.
//  - LORA_CHECK: an internal invariant. Throws lora::InternalError naming the expression and file:line.
// Why exceptions and not Status everywhere: parsers (GGUF, JSON, Jinja) fail deep inside recursion and
// the only sensible reaction is to unwind to the command boundary. Result<T> (below) wraps a call for
// the few callers that want a value-or-message (the server, tests).
#pragma once
#include <fmt/format.h>
#include <optional>
#include <stdexcept>
#include <string>
#include <utility>
#include <variant>

namespace lora {

class Error : public std::runtime_error {
 public:
  Error(std::string message, std::string hint = {})
      : std::runtime_error(std::move(message)), hint_(std::move(hint)) {}
  const std::string& hint() const { return hint_; }
  // "message\nhint: ..." as printed to the user.
  std::string full() const;

 private:
  std::string hint_;
};

class InternalError : public std::logic_error {
 public:
  using std::logic_error::logic_error;
};

// Throws lora::Error. `where` is typically "path: field" and is printed first.
[[noreturn]] void fail_input(const std::string& where, const std::string& what, const std::string& hint = {});

[[noreturn]] void fail_internal(const char* expr, const char* file, int line, const std::string& msg);

// Value-or-error for callers that must not unwind (server request handlers, tests).
template <class T>
class Result {
 public:
  Result(T v) : v_(std::move(v)) {}
  Result(Error e) : v_(std::move(e)) {}
  bool ok() const { return std::holds_alternative<T>(v_); }
  explicit operator bool() const { return ok(); }
  T& value() { return std::get<T>(v_); }
  const T& value() const { return std::get<T>(v_); }
  const Error& error() const { return std::get<Error>(v_); }

 private:
  std::variant<T, Error> v_;
};

// Runs f(); returns its value, or the lora::Error it threw.
template <class F>
auto capture(F&& f) -> Result<decltype(f())> {
  try {
    return Result<decltype(f())>(f());
  } catch (const Error& e) {
    return Result<decltype(f())>(e);
  }
}

}  // namespace lora

#define LORA_CHECK(cond, ...)                                                                  \
  do {                                                                                         \
    if (!(cond)) ::lora::fail_internal(#cond, __FILE__, __LINE__, ::fmt::format("" __VA_ARGS__)); \
  } while (0)
