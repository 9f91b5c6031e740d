// Helpers shared by the end-to-end CLI tests (tests/cli/): run the `lora` binary with arguments and capture
// its exit code, stdout and stderr; read and write whole files; fresh temporary folders; quote data sets.
#pragma once
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>

#include "test_util.h"

namespace lora::test {

struct CmdResult {
  int code = -1;
  std::string out, err;
};

inline std::string slurp(const std::string& p) {
  std::ifstream f(p, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

inline void write(const std::string& p, const std::string& data) {
  std::ofstream f(p, std::ios::binary);
  f << data;
}

inline bool contains(const std::string& s, const std::string& needle) { return s.find(needle) != std::string::npos; }

// An empty folder <TempDir>/<prefix><name> (removed first if present).
inline std::string tmp_dir(const std::string& prefix, const std::string& name) {
  const std::string d = ::testing::TempDir() + "/" + prefix + name;
  EXPECT_EQ(std::system(("rm -rf '" + d + "' && mkdir -p '" + d + "'").c_str()), 0);
  return d;
}

// Writes dir/train.jsonl (and dir/valid.jsonl when with_valid) with n_train / n_valid short {"text"}
// records from ../shared's english_quotes ("quote - author", at most 90 characters); returns dir.
inline std::string write_quotes(const std::string& dir, int n_train, int n_valid, bool with_valid = true) {
  std::ifstream in(shared_dir() + "/data/english_quotes/quotes.jsonl");
  std::string line, tr, va;
  int n = 0;
  while (std::getline(in, line) && n < n_train + n_valid) {
    const nlohmann::json j = nlohmann::json::parse(line, nullptr, false);
    if (j.is_discarded() || !j.contains("quote") || !j.contains("author")) continue;
    const std::string text = j["quote"].get<std::string>() + " - " + j["author"].get<std::string>();
    if (text.size() > 90) continue;
    (n < n_train ? tr : va) += nlohmann::json({{"text", text}}).dump() + "\n";
    ++n;
  }
  write(dir + "/train.jsonl", tr);
  if (with_valid) write(dir + "/valid.jsonl", va);
  return dir;
}

// Runs `lora <args>` with stdin_text on stdin (empty: /dev/null); prefix names its files under TempDir.
inline CmdResult run_lora(const std::string& prefix, const std::string& args, const std::string& stdin_text = "") {
  static int n = 0;
  const std::string base = ::testing::TempDir() + "/" + prefix + "run" + std::to_string(::getpid()) + "_" + std::to_string(n++);
  std::string in = "/dev/null";
  if (!stdin_text.empty()) {
    in = base + ".in";
    write(in, stdin_text);
  }
  std::string cmd = "'";  // appended piece by piece: GCC 12 warns (-Wrestrict, falsely) on one long + chain
  cmd += lora_bin();
  cmd += "' " + args;
  cmd += " <'" + in + "' >'" + base + ".out' 2>'" + base + ".err'";
  const int st = std::system(cmd.c_str());
  CmdResult r;
  r.code = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
  r.out = slurp(base + ".out");
  r.err = slurp(base + ".err");
  return r;
}

}  // namespace lora::test
