// dtype tables and scalar conversions.
#include "core/dtype.h"

#include <cctype>
#include <cmath>
#include <string>

#include "core/error.h"

namespace lora {

namespace {
struct DTypeInfo {
  DType type;
  const char* name;
  int64_t block_elems;
  int64_t block_bytes;
};
// Block sizes follow llama.cpp's ggml-common.h.
constexpr DTypeInfo kInfo[] = {
    {DTYPE_F32, "f32", 1, 4},      {DTYPE_F16, "f16", 1, 2},        {DTYPE_BF16, "bf16", 1, 2},
    {DTYPE_I32, "i32", 1, 4},      {DTYPE_I64, "i64", 1, 8},        {DTYPE_Q4_0, "q4_0", 32, 18},
    {DTYPE_Q4_1, "q4_1", 32, 20},  {DTYPE_Q5_0, "q5_0", 32, 22},    {DTYPE_Q5_1, "q5_1", 32, 24},
    {DTYPE_Q8_0, "q8_0", 32, 34},  {DTYPE_Q4_K, "q4_k", 256, 144},  {DTYPE_Q5_K, "q5_k", 256, 176},
    {DTYPE_Q6_K, "q6_k", 256, 210},
};
const DTypeInfo& info(DType t) {
  for (const auto& i : kInfo)
    if (i.type == t) return i;
  LORA_CHECK(false, "unknown dtype {}", int(t));
  __builtin_unreachable();
}
}  // namespace

const char* dtype_name(DType t) { return info(t).name; }

bool dtype_from_name(std::string_view name, DType* out) {
  std::string lower(name);
  for (auto& c : lower) c = char(std::tolower(static_cast<unsigned char>(c)));
  if (lower == "float32") lower = "f32";
  if (lower == "float16") lower = "f16";
  if (lower == "bfloat16") lower = "bf16";
  for (const auto& i : kInfo)
    if (lower == i.name) {
      *out = i.type;
      return true;
    }
  return false;
}

bool dtype_is_quant(DType t) { return info(t).block_elems > 1; }
int64_t dtype_block_elems(DType t) { return info(t).block_elems; }
int64_t dtype_block_bytes(DType t) { return info(t).block_bytes; }

int64_t dtype_nbytes(DType t, int64_t n) {
  const auto& i = info(t);
  LORA_CHECK(n % i.block_elems == 0, "{} elements is not a multiple of the {} block size {}", n, i.name,
             i.block_elems);
  return n / i.block_elems * i.block_bytes;
}

float f16_to_f32(uint16_t h) {
  const uint32_t sign = uint32_t(h & 0x8000u) << 16;
  uint32_t exp = (h >> 10) & 0x1fu;
  uint32_t mant = h & 0x3ffu;
  if (exp == 0) {
    if (mant == 0) return f32_from_bits(sign);
    // Subnormal: value = mant * 2^-24.
    float v = std::ldexp(float(mant), -24);
    return sign ? -v : v;
  }
  if (exp == 31) return f32_from_bits(sign | 0x7f800000u | (mant << 13));
  return f32_from_bits(sign | ((exp + 112) << 23) | (mant << 13));
}

uint16_t f32_to_f16(float f) {
  // Round to nearest even, as numpy and the F16C instruction do.
  uint32_t x = f32_to_bits(f);
  const uint32_t sign = (x >> 16) & 0x8000u;
  x &= 0x7fffffffu;
  if (x > 0x7f800000u) return uint16_t(sign | 0x7e00u);           // NaN
  if (x >= 0x477ff000u) return uint16_t(sign | 0x7c00u);          // overflow to inf (>= 65520)
  if (x < 0x38800000u) {                                          // subnormal or zero in f16
    if (x < 0x33000000u) return uint16_t(sign);                   // < 2^-25 rounds to 0
    const uint32_t e = x >> 23;
    const uint32_t m = (x & 0x7fffffu) | 0x800000u;
    const uint32_t shift = 126 - e;                               // 14 + (113 - e) - 1 ... in [14, 24]
    uint32_t r = m >> shift;
    const uint32_t rem = m & ((1u << shift) - 1u);
    const uint32_t half = 1u << (shift - 1);
    if (rem > half || (rem == half && (r & 1u))) ++r;
    return uint16_t(sign | r);
  }
  uint32_t r = x + 0xfffu + ((x >> 13) & 1u);
  return uint16_t(sign | ((r - 0x38000000u) >> 13));
}

void dtype_convert_to_f32(DType t, const void* src, float* dst, int64_t n) {
  switch (t) {
    case DTYPE_F32: std::memcpy(dst, src, size_t(n) * 4); return;
    case DTYPE_F16: {
      auto* s = static_cast<const uint16_t*>(src);
      for (int64_t i = 0; i < n; ++i) dst[i] = f16_to_f32(s[i]);
      return;
    }
    case DTYPE_BF16: {
      auto* s = static_cast<const uint16_t*>(src);
      for (int64_t i = 0; i < n; ++i) dst[i] = bf16_to_f32(s[i]);
      return;
    }
    default: LORA_CHECK(false, "dtype_convert_to_f32: {} is not a plain float type", dtype_name(t));
  }
}

void dtype_convert_from_f32(DType t, const float* src, void* dst, int64_t n) {
  switch (t) {
    case DTYPE_F32: std::memcpy(dst, src, size_t(n) * 4); return;
    case DTYPE_F16: {
      auto* d = static_cast<uint16_t*>(dst);
      for (int64_t i = 0; i < n; ++i) d[i] = f32_to_f16(src[i]);
      return;
    }
    case DTYPE_BF16: {
      auto* d = static_cast<uint16_t*>(dst);
      for (int64_t i = 0; i < n; ++i) d[i] = f32_to_bf16(src[i]);
      return;
    }
    default: LORA_CHECK(false, "dtype_convert_from_f32: {} is not a plain float type", dtype_name(t));
  }
}

}  // namespace lora
