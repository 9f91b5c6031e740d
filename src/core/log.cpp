// stderr logging and process memory readings.
#include "core/log.h"

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <mutex>

namespace lora {

namespace {
LogLevel initial_level() {
  const char* e = std::getenv("LORA_LOG");
  if (!e) return LOG_INFO;
  if (!std::strcmp(e, "debug")) return LOG_DEBUG;
  if (!std::strcmp(e, "warn")) return LOG_WARN;
  if (!std::strcmp(e, "error")) return LOG_ERROR;
  if (!std::strcmp(e, "quiet")) return LOG_QUIET;
  return LOG_INFO;
}
LogLevel g_level = initial_level();
std::mutex g_mu;

size_t read_status_kb(const char* key) {
  std::ifstream f("/proc/self/status");
  std::string line;
  const size_t klen = std::strlen(key);
  while (std::getline(f, line))
    if (line.compare(0, klen, key) == 0) return size_t(std::strtoull(line.c_str() + klen + 1, nullptr, 10));
  return 0;
}
}  // namespace

void set_log_level(LogLevel l) { g_level = l; }
LogLevel log_level() { return g_level; }

void log_write(LogLevel l, const std::string& msg) {
  std::lock_guard<std::mutex> lock(g_mu);
  const char* tag = l == LOG_WARN ? "warning: " : l == LOG_ERROR ? "error: " : "";
  std::fprintf(stderr, "%s%s\n", tag, msg.c_str());
}

size_t peak_rss_bytes() { return read_status_kb("VmHWM:") * 1024; }
size_t current_rss_bytes() { return read_status_kb("VmRSS:") * 1024; }

}  // namespace lora
