// Helpers shared by the tests: where ../shared, the fixtures and the downloaded models are, skipping
// with a clear message when something optional is absent, and running the `lora` binary.
#pragma once
#include <gtest/gtest.h>

#include <cstdlib>
#include <string>
#include <sys/stat.h>

namespace lora::test {

inline bool file_exists(const std::string& p) {
  struct stat st;
  return ::stat(p.c_str(), &st) == 0;
}

// ../shared, or $LORA_SHARED when set.
inline std::string shared_dir() {
  if (const char* e = std::getenv("LORA_SHARED")) return e;
  return LORA_SHARED_DIR;
}
// The checkout (fixtures live under it), or $LORA_SOURCE_DIR when set (a bundled test binary run
// from another copy of the tree: scripts/gpu-check.sh).
inline std::string source_dir() {
  if (const char* e = std::getenv("LORA_SOURCE_DIR")) return e;
  return LORA_SOURCE_DIR;
}
inline std::string fixture(const std::string& rel) { return source_dir() + "/tests/fixtures/" + rel; }
inline std::string models_dir() {
  if (const char* e = std::getenv("LORA_MODELS")) return e;
  return LORA_MODELS_DIR;
}
inline std::string lora_bin() {
  if (const char* e = std::getenv("LORA_BIN")) return e;
  return LORA_BIN;
}
// Path of SmolLM2-135M-Instruct's GGUF as fetched by scripts/fetch-models.sh.
inline std::string smollm2_gguf() { return models_dir() + "/SmolLM2-135M-Instruct.Q4_1.gguf"; }

}  // namespace lora::test

// Skips the current test when a path under ../shared is missing: a user's clone has no shared/.
#define LORA_REQUIRE_SHARED(rel)                                                                   \
  do {                                                                                             \
    if (!::lora::test::file_exists(::lora::test::shared_dir() + "/" + (rel)))                      \
      GTEST_SKIP() << "skipped: ../shared/" << (rel)                                              \
                   << " is absent (CI has it beside the checkout; set LORA_SHARED to point at it)"; \
  } while (0)

#define LORA_REQUIRE_SMOLLM2()                                                                     \
  do {                                                                                             \
    if (!::lora::test::file_exists(::lora::test::smollm2_gguf()))                                  \
      GTEST_SKIP() << "skipped: " << ::lora::test::smollm2_gguf()                                  \
                   << " is absent (run scripts/fetch-models.sh)";                                  \
  } while (0)
