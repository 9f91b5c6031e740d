// GGUF reader/writer: real files from ../shared and the SmolLM2 download, a write/read round trip, and
// every kind of truncation and corruption giving a lora::Error (never a crash).
#include <gtest/gtest.h>

#include <cstdio>
#include <cstring>
#include <fstream>
#include <vector>

#include "core/error.h"
#include "io/gguf.h"
#include "io/mapped_file.h"
#include "test_util.h"

using namespace lora;

namespace {
std::string tmp_path(const std::string& name) { return ::testing::TempDir() + "/" + name; }

void write_bytes(const std::string& path, const std::string& bytes) {
  std::ofstream f(path, std::ios::binary);
  f.write(bytes.data(), std::streamsize(bytes.size()));
}

std::string read_bytes(const std::string& path) { return read_text_file(path); }

// Expects GGUFFile::open to throw lora::Error whose message contains `needle`.
void expect_error(const std::string& path, const std::string& needle) {
  try {
    GGUFFile::open(path);
    FAIL() << "expected an error containing '" << needle << "'";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find(path), std::string::npos) << "message must name the file: " << e.what();
  }
}
}  // namespace

TEST(Gguf, ReadsStories260K) {
  LORA_REQUIRE_SHARED("models/stories260K/stories260K.gguf");
  auto f = GGUFFile::open(test::shared_dir() + "/models/stories260K/stories260K.gguf");
  EXPECT_EQ(f->version(), 3u);
  EXPECT_EQ(f->kv().size(), 19u);
  EXPECT_EQ(f->tensors().size(), 48u);
  EXPECT_EQ(f->req_str("general.architecture"), "llama");
  EXPECT_EQ(f->get_int("llama.embedding_length", 0), 64);
  EXPECT_EQ(f->get_int("llama.block_count", 0), 5);
  EXPECT_EQ(f->get_str_array("tokenizer.ggml.tokens").size(), 512u);
  const auto* t = f->find_tensor("token_embd.weight");
  ASSERT_NE(t, nullptr);
  EXPECT_EQ(t->dtype, DTYPE_F32);
  ASSERT_EQ(t->ne.size(), 2u);
  EXPECT_EQ(t->ne[0], 64);
  EXPECT_EQ(t->ne[1], 512);
  // README: tensor data starts at byte 14176.
  const auto* base = f->mapping()->data();
  size_t min_off = SIZE_MAX;
  for (const auto& ti : f->tensors())
    min_off = std::min(min_off, size_t(static_cast<const uint8_t*>(ti.data) - base));
  EXPECT_EQ(min_off, 14176u);
}

TEST(Gguf, ReadsSmolLM2) {
  LORA_REQUIRE_SMOLLM2();
  auto f = GGUFFile::open(test::smollm2_gguf());
  EXPECT_EQ(f->tensors().size(), 272u);
  EXPECT_EQ(f->req_str("tokenizer.ggml.model"), "gpt2");
  EXPECT_EQ(f->get_int("llama.attention.head_count_kv", 0), 3);
  EXPECT_NEAR(f->get_float("llama.rope.freq_base", 0), 100000.0, 0.0);
  EXPECT_FALSE(f->get_str("tokenizer.chat_template").empty());
  int n_q41 = 0;
  for (const auto& t : f->tensors()) n_q41 += t.dtype == DTYPE_Q4_1;
  EXPECT_EQ(n_q41, 210);
}

TEST(Gguf, WriteReadRoundTrip) {
  std::vector<float> a(2 * 3);
  for (size_t i = 0; i < a.size(); ++i) a[i] = float(i) * 0.5f - 1.0f;
  std::vector<uint16_t> b(32);
  for (size_t i = 0; i < b.size(); ++i) b[i] = f32_to_bf16(float(i));
  std::vector<uint8_t> q(34, 7);  // one Q8_0 block
  GGUFWriter w;
  w.set_str("general.architecture", "llama");
  w.set_u32("llama.block_count", 2);
  w.set_f32("llama.rope.freq_base", 500000.0f);
  w.set_bool("tokenizer.ggml.add_bos_token", true);
  w.set_str_array("tokenizer.ggml.tokens", {"a", "b", "\xe2\x96\x81x"});
  w.set_i32_array("tokenizer.ggml.token_type", {1, 3, 1});
  w.add_tensor("a", DTYPE_F32, {3, 2}, a.data());
  w.add_tensor("b", DTYPE_BF16, {32}, b.data());
  w.add_tensor("q", DTYPE_Q8_0, {32}, q.data());
  const std::string path = tmp_path("roundtrip.gguf");
  w.write(path);

  auto f = GGUFFile::open(path);
  EXPECT_EQ(f->get_str("general.architecture"), "llama");
  EXPECT_EQ(f->get_int("llama.block_count", 0), 2);
  EXPECT_EQ(f->get_float("llama.rope.freq_base", 0), 500000.0);
  EXPECT_TRUE(f->get_bool("tokenizer.ggml.add_bos_token", false));
  EXPECT_EQ(f->get_str_array("tokenizer.ggml.tokens")[2], "\xe2\x96\x81x");
  EXPECT_EQ(f->get_int_array("tokenizer.ggml.token_type")[1], 3);
  const auto* ta = f->find_tensor("a");
  ASSERT_NE(ta, nullptr);
  EXPECT_EQ(ta->ne, (std::vector<int64_t>{3, 2}));
  EXPECT_EQ(std::memcmp(ta->data, a.data(), a.size() * 4), 0);
  EXPECT_EQ(std::memcmp(f->find_tensor("b")->data, b.data(), b.size() * 2), 0);
  EXPECT_EQ(f->find_tensor("q")->dtype, DTYPE_Q8_0);
  EXPECT_EQ(std::memcmp(f->find_tensor("q")->data, q.data(), q.size()), 0);
  for (const auto& t : f->tensors())
    EXPECT_EQ((static_cast<const uint8_t*>(t.data) - f->mapping()->data()) % 32, 0) << t.name;

  // Wrong-type getters name the key.
  try {
    f->get_int("general.architecture", 0);
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("general.architecture"), std::string::npos);
  }
}

TEST(Gguf, EveryTruncationIsAnError) {
  std::vector<float> a(64, 1.0f);
  GGUFWriter w;
  w.set_str("general.architecture", "llama");
  w.set_str_array("tokenizer.ggml.tokens", {"x", "y"});
  w.add_tensor("a", DTYPE_F32, {64}, a.data());
  const std::string full_path = tmp_path("full.gguf");
  w.write(full_path);
  const std::string bytes = read_bytes(full_path);
  const std::string path = tmp_path("truncated.gguf");
  for (size_t n = 0; n < bytes.size(); n += (n < 200 ? 1 : 37)) {
    write_bytes(path, bytes.substr(0, n));
    EXPECT_THROW(GGUFFile::open(path), Error) << "truncated at " << n;
  }
}

TEST(Gguf, CorruptHeaders) {
  const std::string path = tmp_path("corrupt.gguf");
  write_bytes(path, "GGML\x03\0\0\0");
  expect_error(path, "not a GGUF file");

  std::string v1("GGUF\x01\0\0\0", 8);
  write_bytes(path, v1 + std::string(16, '\0'));
  expect_error(path, "version 1");

  // A huge metadata count must not allocate or hang.
  std::string h("GGUF\x03\0\0\0", 8);
  h += std::string("\0\0\0\0\0\0\0\0", 8);           // 0 tensors
  h += std::string("\xff\xff\xff\xff\xff\xff\xff\x0f", 8);  // absurd kv count
  write_bytes(path, h);
  expect_error(path, "metadata count");

  // A string length beyond the file.
  std::string s("GGUF\x03\0\0\0", 8);
  s += std::string("\0\0\0\0\0\0\0\0", 8);
  s += std::string("\x01\0\0\0\0\0\0\0", 8);
  s += std::string("\xff\xff\xff\xff\0\0\0\0", 8);
  s += std::string(16, 'k');
  write_bytes(path, s);
  expect_error(path, "remain");
}

TEST(Gguf, UnsupportedTensorTypeNamesTheTensor) {
  // Build a valid file, then patch the tensor's ggml type to Q2_K (10).
  std::vector<float> a(256, 0.0f);
  GGUFWriter w;
  w.add_tensor("blk.0.attn_q.weight", DTYPE_F32, {256}, a.data());
  const std::string path = tmp_path("q2k.gguf");
  w.write(path);
  std::string bytes = read_bytes(path);
  const std::string name = "blk.0.attn_q.weight";
  const size_t pos = bytes.find(name) + name.size() + 4 + 8;  // n_dims (u32), ne[0] (i64)
  const uint32_t q2k = 10;
  std::memcpy(&bytes[pos], &q2k, 4);
  write_bytes(path, bytes);
  expect_error(path, "blk.0.attn_q.weight");
  expect_error(path, "Q2_K");
}

TEST(Gguf, MissingFile) {
  try {
    GGUFFile::open("/nonexistent/model.gguf");
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("/nonexistent/model.gguf"), std::string::npos);
    EXPECT_FALSE(e.hint().empty());
  }
}
