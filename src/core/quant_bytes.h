// Internal to core/quant*.cpp: fp16 fields of llama.cpp's blocks, read and written at any byte
// address (blocks sit unaligned inside memory-mapped files).
#pragma once
#include <cstdint>
#include <cstring>

#include "core/dtype.h"

namespace lora::quant_detail {

inline float load_f16(const uint8_t* p) {
  uint16_t h;
  std::memcpy(&h, p, 2);
  return f16_to_f32(h);
}

inline void store_f16(uint8_t* p, float f) {
  const uint16_t h = f32_to_f16(f);
  std::memcpy(p, &h, 2);
}

}  // namespace lora::quant_detail
