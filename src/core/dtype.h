// Element types: plain floats and llama.cpp's quantized block types, with their sizes and
// scalar conversions (f16/bf16 <-> f32). Block layouts themselves live in core/quant.h.
#pragma once
#include <cstdint>
#include <cstring>
#include <string_view>

namespace lora {

enum class DType : uint8_t {
  DTYPE_F32, DTYPE_F16, DTYPE_BF16, DTYPE_I32, DTYPE_I64,
  DTYPE_Q4_0, DTYPE_Q4_1, DTYPE_Q5_0, DTYPE_Q5_1, DTYPE_Q8_0,
  DTYPE_Q4_K, DTYPE_Q5_K, DTYPE_Q6_K,
};
using enum DType;

const char* dtype_name(DType t);
// Parses "f32", "F16", "bf16", "q4_k", ... ; returns false when unknown.
bool dtype_from_name(std::string_view name, DType* out);
bool dtype_is_quant(DType t);
// Elements per block (1 for plain types, 32 or 256 for quantized ones) and bytes per block.
int64_t dtype_block_elems(DType t);
int64_t dtype_block_bytes(DType t);
// Bytes for n elements (n must be a multiple of the block size for quantized types).
int64_t dtype_nbytes(DType t, int64_t n);

inline float f32_from_bits(uint32_t u) { float f; std::memcpy(&f, &u, 4); return f; }
inline uint32_t f32_to_bits(float f) { uint32_t u; std::memcpy(&u, &f, 4); return u; }

inline float bf16_to_f32(uint16_t h) { return f32_from_bits(uint32_t(h) << 16); }
// Round to nearest even, NaN kept quiet (same as PyTorch/MLX).
inline uint16_t f32_to_bf16(float f) {
  uint32_t u = f32_to_bits(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return uint16_t((u >> 16) | 0x40);
  u += 0x7fffu + ((u >> 16) & 1u);
  return uint16_t(u >> 16);
}
float f16_to_f32(uint16_t h);
uint16_t f32_to_f16(float f);

// Converts n elements of a plain type (F32/F16/BF16) to f32.
void dtype_convert_to_f32(DType src_type, const void* src, float* dst, int64_t n);
// Converts n f32 values to a plain type (F32/F16/BF16).
void dtype_convert_from_f32(DType dst_type, const float* src, void* dst, int64_t n);

}  // namespace lora
