// Logging to stderr with a level set once (LORA_LOG=debug|info|warn|error or set_log_level).
#pragma once
#include <fmt/format.h>

#include <string>

namespace lora {

enum class LogLevel { LOG_DEBUG, LOG_INFO, LOG_WARN, LOG_ERROR, LOG_QUIET };
using enum LogLevel;

void set_log_level(LogLevel l);
LogLevel log_level();
void log_write(LogLevel l, const std::string& msg);

template <class... A> void log_debug(fmt::format_string<A...> f, A&&... a) {
  if (log_level() <= LOG_DEBUG) log_write(LOG_DEBUG, fmt::format(f, std::forward<A>(a)...));
}
template <class... A> void log_info(fmt::format_string<A...> f, A&&... a) {
  if (log_level() <= LOG_INFO) log_write(LOG_INFO, fmt::format(f, std::forward<A>(a)...));
}
template <class... A> void log_warn(fmt::format_string<A...> f, A&&... a) {
  if (log_level() <= LOG_WARN) log_write(LOG_WARN, fmt::format(f, std::forward<A>(a)...));
}

// Peak resident set size of this process in bytes (from the kernel's VmHWM).
size_t peak_rss_bytes();
size_t current_rss_bytes();

}  // namespace lora
