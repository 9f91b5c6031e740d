// Tests for core/quant.h: llama.cpp's block formats.
//  - dequantization equals gguf-py's bit for bit on fixture blocks (quantized rows + random valid
//    blocks) for all 8 types, serial and multi-threaded;
//  - quantization equals the oracle's bytes: gguf-py for Q4_0..Q8_0, the scalar f32 port of ggml's
//    reference in tools/gen_quant_fixtures.py for Q4_K/Q5_K/Q6_K;
//  - quantize -> dequantize error stays within each format's step (named tolerances);
//  - real rows of SmolLM2-135M-Instruct.Q4_1.gguf (Q8_0 and Q4_1) against gguf-py.
// Fixtures: tests/fixtures/quant/*.json, made by tools/gen_quant_fixtures.py.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <fstream>
#include <ostream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "core/error.h"
#include "core/rng.h"
#include "io/gguf.h"
#include "core/quant.h"
#include "test_util.h"
#include "tolerances.h"

namespace lora {
namespace {

using nlohmann::json;

std::vector<uint8_t> base64_decode(const std::string& s) {
  auto val = [](char c) -> int {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+') return 62;
    if (c == '/') return 63;
    return -1;
  };
  std::vector<uint8_t> out;
  uint32_t acc = 0;
  int bits = 0;
  for (char c : s) {
    const int v = val(c);
    if (v < 0) continue;  // '=' padding
    acc = (acc << 6) | uint32_t(v);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out.push_back(uint8_t((acc >> bits) & 0xFF));
    }
  }
  return out;
}

std::vector<float> as_floats(const std::vector<uint8_t>& b) {
  std::vector<float> f(b.size() / 4);
  std::memcpy(f.data(), b.data(), f.size() * 4);
  return f;
}

json load_json(const std::string& rel) {
  std::ifstream in(test::fixture(rel));
  EXPECT_TRUE(in.good()) << "missing fixture " << test::fixture(rel) << " (run tools/gen_quant_fixtures.py)";
  if (!in.good()) return json::object();
  return json::parse(in);
}

// Index of the first element whose bits differ, or -1.
int64_t first_bit_mismatch(const std::vector<float>& a, const std::vector<float>& b) {
  if (a.size() != b.size()) return 0;
  for (size_t i = 0; i < a.size(); ++i)
    if (f32_to_bits(a[i]) != f32_to_bits(b[i])) return int64_t(i);
  return -1;
}

struct TypeCase {
  DType type;
  const char* file;
};
void PrintTo(const TypeCase& c, std::ostream* os) { *os << dtype_name(c.type); }

const TypeCase kTypes[] = {
    {DTYPE_Q4_0, "quant/q4_0.json"}, {DTYPE_Q4_1, "quant/q4_1.json"}, {DTYPE_Q5_0, "quant/q5_0.json"},
    {DTYPE_Q5_1, "quant/q5_1.json"}, {DTYPE_Q8_0, "quant/q8_0.json"}, {DTYPE_Q4_K, "quant/q4_k.json"},
    {DTYPE_Q5_K, "quant/q5_k.json"}, {DTYPE_Q6_K, "quant/q6_k.json"},
};

class QuantFixture : public ::testing::TestWithParam<TypeCase> {};

TEST_P(QuantFixture, DequantizeMatchesGgufPyBitForBit) {
  const auto [type, file] = GetParam();
  const json j = load_json(file);
  ASSERT_EQ(j.at("block_elems").get<int64_t>(), dtype_block_elems(type));
  ASSERT_EQ(j.at("block_bytes").get<int64_t>(), dtype_block_bytes(type));
  const auto& dq = j.at("dequant");
  const int64_t n = dq.at("n").get<int64_t>();
  const auto blocks = base64_decode(dq.at("blocks_b64").get<std::string>());
  const auto want = as_floats(base64_decode(dq.at("floats_b64").get<std::string>()));
  ASSERT_EQ(int64_t(blocks.size()), dtype_nbytes(type, n));
  ASSERT_EQ(int64_t(want.size()), n);

  std::vector<float> got(size_t(n), -1.0f);
  quant_dequantize_row(type, blocks.data(), got.data(), n);
  const int64_t bad = first_bit_mismatch(got, want);
  EXPECT_EQ(bad, -1) << dtype_name(type) << " element " << bad << " (block " << bad / dtype_block_elems(type)
                     << "): got " << (bad >= 0 ? got[bad] : 0.0f) << ", gguf-py " << (bad >= 0 ? want[bad] : 0.0f);

  std::vector<float> par(size_t(n), -1.0f);
  quant_dequantize(type, blocks.data(), par.data(), n);
  EXPECT_EQ(first_bit_mismatch(par, want), -1) << "quant_dequantize (threaded) differs";
}

TEST_P(QuantFixture, QuantizeMatchesOracleBytes) {
  const auto [type, file] = GetParam();
  const json j = load_json(file);
  const auto& q = j.at("quant");
  const int64_t n = q.at("n").get<int64_t>();
  const auto x = as_floats(base64_decode(q.at("input_b64").get<std::string>()));
  const auto want = base64_decode(q.at("blocks_b64").get<std::string>());
  ASSERT_EQ(int64_t(x.size()), n);
  ASSERT_EQ(int64_t(want.size()), dtype_nbytes(type, n));
  ASSERT_TRUE(quant_can_quantize(type));

  std::vector<uint8_t> got(want.size(), 0xAB);  // poison: every byte must be written
  quant_quantize_row(type, x.data(), got.data(), n);
  const int64_t bb = dtype_block_bytes(type);
  for (size_t i = 0; i < got.size(); ++i) {
    if (got[i] != want[i]) {
      ADD_FAILURE() << dtype_name(type) << ": byte " << i % bb << " of block " << i / bb << " is "
                    << int(got[i]) << ", " << q.at("oracle").get<std::string>() << " wrote " << int(want[i]);
      break;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(AllTypes, QuantFixture, ::testing::ValuesIn(kTypes),
                         [](const auto& info) { return std::string(dtype_name(info.param.type)); });

// ---- round-trip error bounds ---------------------------------------------------------------------

// Random rows: N(0, 1) times a per-block scale spread over 1e-2..1e2, some blocks shifted off zero.
std::vector<float> random_rows(int64_t n, int64_t block, uint64_t seed) {
  Rng rng(seed);
  std::vector<float> x(static_cast<size_t>(n));
  for (int64_t b = 0; b < n / block; ++b) {
    const float scale = std::pow(10.0f, 4.0f * rng.uniform() - 2.0f);
    const float shift = (b % 3 == 0) ? scale * (4.0f * rng.uniform() - 2.0f) : 0.0f;
    for (int64_t i = 0; i < block; ++i) {
      // Box-Muller
      const double u1 = 1.0 - rng.uniform_double(), u2 = rng.uniform_double();
      const double g = std::sqrt(-2.0 * std::log(u1)) * std::cos(6.283185307179586 * u2);
      x[size_t(b * block + i)] = float(g) * scale + shift;
    }
  }
  return x;
}

std::vector<float> round_trip(DType t, const std::vector<float>& x) {
  std::vector<uint8_t> q(size_t(dtype_nbytes(t, int64_t(x.size()))));
  quant_quantize_row(t, x.data(), q.data(), int64_t(x.size()));
  std::vector<float> y(x.size());
  quant_dequantize_row(t, q.data(), y.data(), int64_t(x.size()));
  return y;
}

// 32-element types: the bound follows from the quantizer. With d the exact f32 step and d16, m16 the
// stored fp16 values: |x - y| <= (steps) * |d| + (top code) * |d - d16| + |m - m16| + f32 slack, and
// |d - d16| <= kQuantF16Rounding * |d|, |m - m16| <= kQuantF16Rounding * |m|.
TEST(QuantRoundTrip, BlockTypesStayWithinTheirStep) {
  struct Spec { DType t; bool symmetric; int levels; double steps; };
  const Spec specs[] = {
      {DTYPE_Q8_0, true, 127, tol::kQuantRoundHalfStep},  // round(x/d), |x/d| <= 127: never clamps
      {DTYPE_Q4_0, true, 8, tol::kQuantClampedStep},      // codes -8..7 for x/d in [-8, 8]: +8 clamps to 7
      {DTYPE_Q5_0, true, 16, tol::kQuantClampedStep},
      {DTYPE_Q4_1, false, 15, tol::kQuantRoundHalfStep},  // min..max in 15 steps
      {DTYPE_Q5_1, false, 31, tol::kQuantRoundHalfStep},
  };
  const int64_t n = 32 * 512;
  const auto x = random_rows(n, 32, 7);
  for (const auto& s : specs) {
    const auto y = round_trip(s.t, x);
    double worst = 0;  // max over blocks of err / bound
    for (int64_t b = 0; b < n / 32; ++b) {
      const float* xb = x.data() + b * 32;
      const float mn = *std::min_element(xb, xb + 32), mx = *std::max_element(xb, xb + 32);
      const double amax = std::max(std::fabs(mn), std::fabs(mx));
      const double d = s.symmetric ? amax / s.levels : (double(mx) - mn) / s.levels;
      const double m = s.symmetric ? 0.0 : std::fabs(mn);
      const double bound = s.steps * d + s.levels * tol::kQuantF16Rounding * d +
                           tol::kQuantF16Rounding * m + tol::kQuantF32Slack * (amax + m);
      for (int i = 0; i < 32; ++i) worst = std::max(worst, std::fabs(double(xb[i]) - y[size_t(b * 32 + i)]) / bound);
    }
    EXPECT_LE(worst, 1.0) << dtype_name(s.t) << ": the worst block error is " << worst << "x its bound";
  }
}

// K-quants: the optimiser's scales are themselves rounded to 6 bits (or int8 for Q6_K), so there is no
// tight closed-form bound; the tolerances are the measured worst case on N(0, 1) data with a margin
// (docs/numerics.md). Error is relative to the super-block's max |x|.
TEST(QuantRoundTrip, KQuantsStayNearTheirStep) {
  struct Spec { DType t; double rel; };
  const Spec specs[] = {{DTYPE_Q4_K, tol::kQuantQ4KRoundTrip}, {DTYPE_Q5_K, tol::kQuantQ5KRoundTrip},
                        {DTYPE_Q6_K, tol::kQuantQ6KRoundTrip}};
  const int64_t n = 256 * 64;
  const auto x = random_rows(n, 256, 11);
  for (const auto& s : specs) {
    const auto y = round_trip(s.t, x);
    double worst = 0, sq_x = 0;
    for (int64_t b = 0; b < n / 256; ++b) {
      const float* xb = x.data() + b * 256;
      double amax = 0;
      for (int i = 0; i < 256; ++i) amax = std::max(amax, std::fabs(double(xb[i])));
      for (int i = 0; i < 256; ++i) {
        const double e = std::fabs(double(xb[i]) - y[size_t(b * 256 + i)]);
        worst = std::max(worst, e / amax);
        sq_x += double(xb[i]) * xb[i] / (amax * amax);
      }
    }
    EXPECT_LE(worst, s.rel) << dtype_name(s.t) << ": worst error / block max";
    EXPECT_GT(sq_x, 0.0);  // the data was not all zeros
  }
}

TEST(QuantRoundTrip, ZerosStayZero) {
  const std::vector<float> x(256 * 2, 0.0f);
  for (DType t : {DTYPE_Q4_0, DTYPE_Q4_1, DTYPE_Q5_0, DTYPE_Q5_1, DTYPE_Q8_0, DTYPE_Q4_K, DTYPE_Q5_K, DTYPE_Q6_K}) {
    const auto y = round_trip(t, x);
    for (float v : y) ASSERT_EQ(v, 0.0f) << dtype_name(t);
  }
}

// ---- API edges -----------------------------------------------------------------------------------

TEST(QuantApi, PlainTypesDelegateToDtypeConversion) {
  const float x[4] = {1.5f, -2.25f, 65504.0f, 1e-7f};
  for (DType t : {DTYPE_F32, DTYPE_F16, DTYPE_BF16}) {
    std::vector<uint8_t> buf(16);
    quant_quantize_row(t, x, buf.data(), 4);
    float got[4], want[4];
    quant_dequantize_row(t, buf.data(), got, 4);
    dtype_convert_to_f32(t, buf.data(), want, 4);
    for (int i = 0; i < 4; ++i) EXPECT_EQ(f32_to_bits(got[i]), f32_to_bits(want[i])) << dtype_name(t);
  }
}

TEST(QuantApi, RejectsUnsupportedTypesAndPartialBlocks) {
  std::vector<float> x(64, 1.0f);
  std::vector<uint8_t> q(256);
  EXPECT_FALSE(quant_can_quantize(DTYPE_I32));
  EXPECT_THROW(quant_quantize_row(DTYPE_I32, x.data(), q.data(), 4), InternalError);
  EXPECT_THROW(quant_quantize_row(DTYPE_Q8_0, x.data(), q.data(), 33), InternalError);
  EXPECT_THROW(quant_dequantize_row(DTYPE_Q4_K, q.data(), x.data(), 32), InternalError);
  EXPECT_THROW(quant_dequantize_row(DTYPE_I64, q.data(), x.data(), 4), InternalError);
}

TEST(QuantApi, ThreadedDequantizeEqualsSerialOnManyBlocks) {
  // Random bytes with a fixed, finite fp16 d: every code pattern, ~70 chunks of work.
  const int64_t nb = 150000;
  std::vector<uint8_t> q(size_t(nb * 34));
  Rng rng(3);
  for (auto& b : q) b = uint8_t(rng.next_u32());
  for (int64_t i = 0; i < nb; ++i) {
    const uint16_t d = f32_to_f16(0.01f * float(1 + i % 7));
    std::memcpy(&q[size_t(i * 34)], &d, 2);
  }
  std::vector<float> a(size_t(nb * 32)), b(size_t(nb * 32));
  quant_dequantize_row(DTYPE_Q8_0, q.data(), a.data(), nb * 32);
  quant_dequantize(DTYPE_Q8_0, q.data(), b.data(), nb * 32);
  EXPECT_EQ(first_bit_mismatch(a, b), -1);
}

// ---- the real model file -------------------------------------------------------------------------

// Reads bytes [offset, offset + n) of a file without any GGUF parsing.
std::vector<uint8_t> read_at(const std::string& path, uint64_t offset, size_t n) {
  std::ifstream in(path, std::ios::binary);
  in.seekg(std::streamoff(offset));
  std::vector<uint8_t> b(n);
  in.read(reinterpret_cast<char*>(b.data()), std::streamsize(n));
  if (!in) b.clear();
  return b;
}

TEST(QuantSmolLM2, RowsMatchGgufPy) {
  LORA_REQUIRE_SMOLLM2();
  const json j = load_json("quant/smollm2.json");
  ASSERT_FALSE(j.empty());
  ASSERT_GE(j.at("rows").size(), 3u);
  for (const auto& r : j.at("rows")) {
    DType t;
    ASSERT_TRUE(dtype_from_name(r.at("type").get<std::string>(), &t));
    const auto row_bytes = r.at("row_bytes").get<size_t>();
    const auto raw = read_at(test::smollm2_gguf(), r.at("file_offset").get<uint64_t>(), row_bytes);
    ASSERT_EQ(raw.size(), row_bytes) << "the file is shorter than the fixture expects";
    const auto head = base64_decode(r.at("head_b64").get<std::string>());
    ASSERT_TRUE(std::equal(head.begin(), head.end(), raw.begin()))
        << "these bytes differ from the fixture's: is " << test::smollm2_gguf() << " a different file? (expected "
        << j.at("size").get<uint64_t>() << " bytes)";
    const auto want = as_floats(base64_decode(r.at("floats_b64").get<std::string>()));
    const int64_t n = r.at("ne")[0].get<int64_t>();
    ASSERT_EQ(int64_t(want.size()), n);
    std::vector<float> got(static_cast<size_t>(n));
    quant_dequantize_row(t, raw.data(), got.data(), n);
    EXPECT_EQ(first_bit_mismatch(got, want), -1)
        << r.at("tensor").get<std::string>() << " row " << r.at("row").get<int64_t>();
  }
}

// The same rows through io/gguf.h, dequantizing the whole tensor with the threaded path (what the model
// loader does at start-up).
TEST(QuantSmolLM2, WholeTensorsViaGGUFFile) {
  LORA_REQUIRE_SMOLLM2();
  const json j = load_json("quant/smollm2.json");
  ASSERT_FALSE(j.empty());
  const auto file = GGUFFile::open(test::smollm2_gguf());
  std::string loaded;
  std::vector<float> all;
  for (const auto& r : j.at("rows")) {
    const auto name = r.at("tensor").get<std::string>();
    const GGUFTensorInfo* info = file->find_tensor(name);
    ASSERT_NE(info, nullptr) << name;
    ASSERT_EQ(dtype_name(info->dtype), r.at("type").get<std::string>());
    const int64_t ne0 = info->ne[0];
    if (loaded != name) {
      all.assign(size_t(info->numel()), 0.0f);
      quant_dequantize(info->dtype, info->data, all.data(), info->numel());
      loaded = name;
    }
    const auto want = as_floats(base64_decode(r.at("floats_b64").get<std::string>()));
    const int64_t row = r.at("row").get<int64_t>();
    const std::vector<float> got(all.begin() + row * ne0, all.begin() + (row + 1) * ne0);
    EXPECT_EQ(first_bit_mismatch(got, want), -1) << name << " row " << row;
  }
}

}  // namespace
}  // namespace lora
