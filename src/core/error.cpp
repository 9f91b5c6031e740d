// Error helpers (see error.h for the contract).
#include "core/error.h"

namespace lora {

std::string Error::full() const {
  std::string s = what();
  if (!hint_.empty()) s += "\nhint: " + hint_;
  return s;
}

void fail_input(const std::string& where, const std::string& what, const std::string& hint) {
  throw Error(where.empty() ? what : where + ": " + what, hint);
}

void fail_internal(const char* expr, const char* file, int line, const std::string& msg) {
  throw InternalError(fmt::format("internal error: check `{}` failed at {}:{}{}{}", expr, file, line,
                                  msg.empty() ? "" : ": ", msg));
}

}  // namespace lora
