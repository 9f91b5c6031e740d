// safetensors reader/writer: a byte-exact write/read/write round trip, a byte-exact rewrite of the
// real stories260K-hf file (written by the Python library), folder layouts (single file, index +
// shards, one odd name), and corrupt or truncated files giving a lora::Error that names the file and
// the tensor (never a crash or an out-of-bounds read).
#include <gtest/gtest.h>

#include <sys/stat.h>

#include <cstdint>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

#include "core/error.h"
#include "io/mapped_file.h"
#include "io/safetensors.h"
#include "test_util.h"

using namespace lora;

namespace {

// A fresh empty folder per call, under gtest's temp dir.
std::string make_tmp_dir(const std::string& name) {
  const std::string d = ::testing::TempDir() + "/lora_st_" + name + "_" + std::to_string(::getpid());
  std::string cmd = "rm -rf '" + d + "'";
  EXPECT_EQ(std::system(cmd.c_str()), 0);
  EXPECT_EQ(::mkdir(d.c_str(), 0755), 0);
  return d;
}

void write_bytes(const std::string& path, const std::string& bytes) {
  std::ofstream f(path, std::ios::binary);
  f.write(bytes.data(), std::streamsize(bytes.size()));
}

// A safetensors file from a literal header and data bytes (for corrupt-file tests).
std::string raw_file(const std::string& header, const std::string& data) {
  std::string out(8, '\0');
  const uint64_t n = header.size();
  for (int i = 0; i < 8; ++i) out[size_t(i)] = char((n >> (8 * i)) & 0xff);
  return out + header + data;
}

// The lora::Error message of f(), or "" when it did not throw.
template <class F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

#define EXPECT_CONTAINS(hay, needle) \
  EXPECT_NE(std::string(hay).find(needle), std::string::npos) << "message: " << (hay) << "\nwanted: " << (needle)

}  // namespace

TEST(Safetensors, RoundTripIsByteExact) {
  const std::string dir = make_tmp_dir("rt");
  std::vector<float> a(6);
  for (size_t i = 0; i < a.size(); ++i) a[i] = float(i) * 0.5f - 1.25f;
  std::vector<uint16_t> b = {f32_to_bf16(1.0f), f32_to_bf16(-2.5f), f32_to_bf16(3.0e-3f)};
  std::vector<uint16_t> h = {f32_to_f16(0.25f), f32_to_f16(-7.0f)};
  std::vector<int32_t> i32 = {1, -2, 3, 4};
  std::vector<int64_t> i64 = {int64_t(1) << 40, -5};
  // Deliberately not in name order: the writer sorts.
  std::vector<SafeTensorWrite> ts = {
      {"z.weight", DTYPE_F32, {2, 3}, a.data()},
      {"b.bf16", DTYPE_BF16, {3}, b.data()},
      {"m.f16", DTYPE_F16, {1, 2}, h.data()},
      {"c.i32", DTYPE_I32, {2, 2}, i32.data()},
      {"d.i64", DTYPE_I64, {2}, i64.data()},
      {"e.empty", DTYPE_F32, {0, 4}, nullptr},
  };
  const std::map<std::string, std::string> meta = {{"format", "pt"}, {"note", "quote \" and \\ kept"}};
  const std::string p1 = dir + "/one.safetensors";
  safetensors_write(p1, ts, meta);

  auto f = SafetensorsFile::open(p1);
  EXPECT_EQ(f->metadata(), meta);
  ASSERT_EQ(f->tensors().size(), ts.size());
  for (const auto& t : ts) {
    const SafeTensorInfo* info = f->find(t.name);
    ASSERT_NE(info, nullptr) << t.name;
    EXPECT_EQ(info->dtype, t.dtype) << t.name;
    EXPECT_EQ(info->shape, t.shape) << t.name;
    EXPECT_EQ(info->file, p1);
    const int64_t nb = dtype_nbytes(t.dtype, info->numel());
    ASSERT_EQ(info->nbytes, nb);
    if (nb) {
      EXPECT_EQ(std::memcmp(info->data, t.data, size_t(nb)), 0) << t.name;
    }
  }

  // Layout: header length + 8 is a multiple of 8; data in name order, back to back.
  const std::string bytes = read_text_file(p1);
  uint64_t n = 0;
  std::memcpy(&n, bytes.data(), 8);
  EXPECT_EQ((n + 8) % 8, 0u);
  const uint8_t* data0 = f->find("b.bf16")->data ? static_cast<const uint8_t*>(f->find("b.bf16")->data) : nullptr;
  EXPECT_EQ(static_cast<const uint8_t*>(f->find("c.i32")->data) - data0, 6);
  EXPECT_EQ(static_cast<const uint8_t*>(f->find("z.weight")->data) - data0, 6 + 16 + 16 + 0 + 4);

  // Writing what was read gives the same bytes again.
  std::vector<SafeTensorWrite> again;
  for (const auto& [name, info] : f->tensors()) again.push_back({name, info.dtype, info.shape, info.data});
  const std::string p2 = dir + "/two.safetensors";
  safetensors_write(p2, again, f->metadata());
  EXPECT_EQ(read_text_file(p2), bytes);
}

TEST(Safetensors, RewritesStories260KByteForByte) {
  LORA_REQUIRE_SHARED("models/stories260K-hf/model.safetensors");
  const std::string src = test::shared_dir() + "/models/stories260K-hf/model.safetensors";
  auto f = SafetensorsFile::open(src);
  // README: 47 tensors, all F32, __metadata__ {"format": "pt"}.
  EXPECT_EQ(f->tensors().size(), 47u);
  EXPECT_EQ(f->metadata().at("format"), "pt");
  const SafeTensorInfo* e = f->find("model.embed_tokens.weight");
  ASSERT_NE(e, nullptr);
  EXPECT_EQ(e->shape, (std::vector<int64_t>{512, 64}));
  for (const auto& [name, info] : f->tensors()) EXPECT_EQ(info.dtype, DTYPE_F32) << name;
  // The Python library wrote this file; ours must produce the identical bytes from the same tensors.
  std::vector<SafeTensorWrite> ts;
  for (const auto& [name, info] : f->tensors()) ts.push_back({name, info.dtype, info.shape, info.data});
  const std::string dir = make_tmp_dir("stories");
  safetensors_write(dir + "/model.safetensors", ts, f->metadata());
  EXPECT_TRUE(read_text_file(dir + "/model.safetensors") == read_text_file(src));
}

TEST(Safetensors, OpenDirLayouts) {
  std::vector<float> x = {1, 2, 3, 4}, y = {5, 6};
  // 1. model.safetensors
  {
    const std::string d = make_tmp_dir("single");
    safetensors_write(d + "/model.safetensors", {{"x", DTYPE_F32, {2, 2}, x.data()}});
    auto s = SafetensorsSet::open_dir(d);
    ASSERT_NE(s.find("x"), nullptr);
    EXPECT_EQ(s.names(), std::vector<std::string>{"x"});
    EXPECT_EQ(s.find("y"), nullptr);
  }
  // 2. index + two shards
  {
    const std::string d = make_tmp_dir("sharded");
    safetensors_write(d + "/model-00001-of-00002.safetensors", {{"x", DTYPE_F32, {4}, x.data()}});
    safetensors_write(d + "/model-00002-of-00002.safetensors", {{"y", DTYPE_F32, {2}, y.data()}});
    write_bytes(d + "/model.safetensors.index.json",
                R"({"metadata": {"total_size": 24}, "weight_map": {"x": "model-00001-of-00002.safetensors",
                    "y": "model-00002-of-00002.safetensors"}})");
    auto s = SafetensorsSet::open_dir(d);
    ASSERT_NE(s.find("y"), nullptr);
    EXPECT_EQ(static_cast<const float*>(s.find("y")->data)[1], 6.0f);
    EXPECT_EQ(s.find("y")->file, d + "/model-00002-of-00002.safetensors");
    EXPECT_EQ(s.names().size(), 2u);
    // The index pointing at a missing shard.
    write_bytes(d + "/model.safetensors.index.json",
                R"({"weight_map": {"x": "model-00001-of-00002.safetensors", "y": "gone.safetensors"}})");
    const std::string msg = error_of([&] { SafetensorsSet::open_dir(d); });
    EXPECT_CONTAINS(msg, "gone.safetensors");
    // The index naming a tensor that its shard lacks.
    write_bytes(d + "/model.safetensors.index.json",
                R"({"weight_map": {"x": "model-00001-of-00002.safetensors", "w": "model-00002-of-00002.safetensors"}})");
    const std::string msg2 = error_of([&] { SafetensorsSet::open_dir(d); });
    EXPECT_CONTAINS(msg2, "model-00002-of-00002.safetensors: w");
    // Malformed index.
    write_bytes(d + "/model.safetensors.index.json", "{\"weight_map\": [");
    EXPECT_CONTAINS(error_of([&] { SafetensorsSet::open_dir(d); }), "model.safetensors.index.json");
  }
  // 3. a single file with another name
  {
    const std::string d = make_tmp_dir("odd");
    safetensors_write(d + "/weights.safetensors", {{"y", DTYPE_F32, {2}, y.data()}});
    auto s = SafetensorsSet::open_dir(d);
    EXPECT_NE(s.find("y"), nullptr);
    // A second unrelated file makes the choice ambiguous.
    safetensors_write(d + "/adapters.safetensors", {{"a", DTYPE_F32, {2}, y.data()}});
    const std::string msg = error_of([&] { SafetensorsSet::open_dir(d); });
    EXPECT_CONTAINS(msg, d);
    EXPECT_CONTAINS(msg, "adapters.safetensors");
  }
  // 4. empty folder, missing folder
  {
    const std::string d = make_tmp_dir("empty");
    EXPECT_CONTAINS(error_of([&] { SafetensorsSet::open_dir(d); }), "no .safetensors file");
    EXPECT_CONTAINS(error_of([&] { SafetensorsSet::open_dir(d + "/nope"); }), d + "/nope");
  }
}

TEST(Safetensors, CorruptFilesAreErrorsNamingFileAndField) {
  const std::string d = make_tmp_dir("corrupt");
  const std::string p = d + "/bad.safetensors";
  const std::string data16(16, '\x01');
  struct Case {
    std::string what;
    std::string bytes;
    std::vector<std::string> needles;
  };
  const std::string ok_entry = R"("w":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]})";
  std::string huge_len(8, '\xff');
  std::vector<Case> cases = {
      {"empty file", "", {"too short"}},
      {"short length field", std::string(5, '\0'), {"too short"}},
      {"header length past the end", raw_file("{}", "").substr(0, 8) + "{", {"header length"}},
      {"absurd header length", huge_len + "{}", {"header length"}},
      {"invalid JSON", raw_file("{\"w\": {", data16), {"header", "invalid JSON"}},
      {"not an object", raw_file("[1, 2]", data16), {"header", "JSON object"}},
      {"unsupported dtype", raw_file(R"({"w":{"dtype":"F64","shape":[2],"data_offsets":[0,16]}})", data16),
       {"w: dtype", "F64"}},
      {"dtype not a string", raw_file(R"({"w":{"dtype":3,"shape":[2],"data_offsets":[0,8]}})", data16),
       {"w: dtype"}},
      {"shape not integers", raw_file(R"({"w":{"dtype":"F32","shape":[2,"x"],"data_offsets":[0,8]}})", data16),
       {"w: shape"}},
      {"negative shape", raw_file(R"({"w":{"dtype":"F32","shape":[-2,2],"data_offsets":[0,16]}})", data16),
       {"w: shape"}},
      {"huge shape", raw_file(R"({"w":{"dtype":"F32","shape":[4294967296,4294967296,4294967296],"data_offsets":[0,16]}})", data16),
       {"w: shape"}},
      {"shape vs offsets", raw_file(R"({"w":{"dtype":"F32","shape":[3,2],"data_offsets":[0,16]}})", data16),
       {"w: data_offsets", "need 24"}},
      {"offsets reversed", raw_file(R"({"w":{"dtype":"F32","shape":[0],"data_offsets":[8,0]}})", data16),
       {"w: data_offsets"}},
      {"offsets past end", raw_file(R"({"w":{"dtype":"F32","shape":[4],"data_offsets":[8,24]}})", data16),
       {"w: data_offsets", "past the end"}},
      {"missing offsets", raw_file(R"({"w":{"dtype":"F32","shape":[4]}})", data16), {"w: data_offsets"}},
      {"overlap", raw_file(R"({"v":{"dtype":"F32","shape":[3],"data_offsets":[0,12]},"w":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}})", data16),
       {"data_offsets", "overlaps"}},
      {"bad metadata", raw_file(R"({"__metadata__":{"a":1},)" + ok_entry + "}", data16), {"__metadata__.a"}},
      {"truncated data", raw_file("{" + ok_entry + "}", data16).substr(0, 8 + 2 + ok_entry.size() + 10),
       {"w: data_offsets", "past the end"}},
  };
  for (const auto& c : cases) {
    write_bytes(p, c.bytes);
    const std::string msg = error_of([&] { SafetensorsFile::open(p); });
    ASSERT_FALSE(msg.empty()) << c.what << ": no error";
    EXPECT_CONTAINS(msg, p);
    for (const auto& n : c.needles) EXPECT_CONTAINS(msg, n) << " (" << c.what << ")";
  }
  // The good file the corrupt ones were made from does open.
  write_bytes(p, raw_file("{" + ok_entry + "}", data16));
  EXPECT_NO_THROW(SafetensorsFile::open(p));
  EXPECT_CONTAINS(error_of([&] { SafetensorsFile::open(d + "/missing.safetensors"); }), "missing.safetensors");
}

TEST(Safetensors, TruncatedRealFileIsAnError) {
  LORA_REQUIRE_SHARED("models/stories260K-hf/model.safetensors");
  const std::string bytes = read_text_file(test::shared_dir() + "/models/stories260K-hf/model.safetensors");
  const std::string d = make_tmp_dir("trunc");
  const std::string p = d + "/model.safetensors";
  // Cut inside the header, right after it, and inside the last tensor.
  for (size_t cut : {size_t(4), size_t(100), size_t(4856 + 8), bytes.size() - 1}) {
    write_bytes(p, bytes.substr(0, cut));
    const std::string msg = error_of([&] { SafetensorsFile::open(p); });
    ASSERT_FALSE(msg.empty()) << "cut at " << cut;
    EXPECT_CONTAINS(msg, p);
  }
}

TEST(Safetensors, WriterRejectsBadInput) {
  const std::string d = make_tmp_dir("wbad");
  std::vector<float> x = {1, 2};
  const std::string p = d + "/o.safetensors";
  EXPECT_CONTAINS(error_of([&] { safetensors_write(p, {{"q", DTYPE_Q8_0, {32}, x.data()}}); }), "q");
  EXPECT_CONTAINS(error_of([&] {
                    safetensors_write(p, {{"a", DTYPE_F32, {1}, x.data()}, {"a", DTYPE_F32, {1}, x.data()}});
                  }),
                  "twice");
  EXPECT_FALSE(path_exists(p));  // nothing half-written
}

// Random byte flips in a real header: every outcome is either a valid file or a lora::Error — never
// another exception, a crash or (under the sanitizers) an out-of-bounds read.
TEST(Safetensors, HeaderByteFlipsNeverCrash) {
  LORA_REQUIRE_SHARED("models/stories260K-hf/model.safetensors");
  const std::string bytes = read_text_file(test::shared_dir() + "/models/stories260K-hf/model.safetensors");
  const std::string d = make_tmp_dir("flips");
  const std::string p = d + "/model.safetensors";
  uint32_t x = 12345;
  auto next = [&x] { return x = x * 1664525u + 1013904223u; };
  int errors = 0;
  for (int it = 0; it < 300; ++it) {
    std::string b = bytes;
    const int flips = 1 + int(next() % 3);
    for (int k = 0; k < flips; ++k) b[8 + (next() >> 8) % 4856] = char(next() >> 24);
    write_bytes(p, b);
    try {
      SafetensorsFile::open(p);
    } catch (const Error& e) {
      ++errors;
      EXPECT_CONTAINS(e.what(), p);
    }
  }
  EXPECT_GT(errors, 0);
}
