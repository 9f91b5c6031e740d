// The 32-element block formats (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0): dequantization and llama.cpp's
// reference quantizers, plus the type dispatch and the multi-threaded whole-tensor dequantizer.
// Layouts and rounding contract: see quant.h. The K-quants live in quant_k.cpp.
// The reference quantizers round every f32 operation separately. GCC contracts a*b+c into an FMA by
// default in C++ (even with -std=c++20) when -march has FMA, which changes their choices (seen on the
// Q4_K fixture); switch contraction off for this file. Must come before any include.
#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif
#include "core/quant.h"

#include <algorithm>
#include <bit>
#include <cfloat>
#include <cmath>
#include <cstring>

#include "core/error.h"
#include "core/quant_bytes.h"

static_assert(std::endian::native == std::endian::little, "quant.cpp assumes a little-endian host");

namespace lora {

namespace {

using quant_detail::load_f16;
using quant_detail::store_f16;

// C's float -> small-integer conversion truncates; out-of-range (or NaN) is undefined behaviour. The
// clamp keeps in-range values unchanged (they are all the reference ever produces for finite input).
int trunc_to_int(float v) {
  v = std::fmin(std::fmax(v, -128.0f), 255.0f);  // NaN -> -128
  return int(v);
}

// ---- dequantization ---------------------------------------------------------------------------------

void dequantize_q4_0(const BlockQ4_0* x, float* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i, y += 32) {
    const float d = load_f16(x[i].d);
    for (int j = 0; j < 16; ++j) {
      const int x0 = (x[i].qs[j] & 0x0F) - 8;
      const int x1 = (x[i].qs[j] >> 4) - 8;
      y[j] = float(x0) * d;
      y[j + 16] = float(x1) * d;
    }
  }
}

void dequantize_q4_1(const BlockQ4_1* x, float* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i, y += 32) {
    const float d = load_f16(x[i].d);
    const float m = load_f16(x[i].m);
    for (int j = 0; j < 16; ++j) {
      const float p0 = float(x[i].qs[j] & 0x0F) * d;
      const float p1 = float(x[i].qs[j] >> 4) * d;
      y[j] = p0 + m;
      y[j + 16] = p1 + m;
    }
  }
}

uint32_t load_u32(const uint8_t* p) {
  uint32_t v;
  std::memcpy(&v, p, 4);
  return v;
}

void dequantize_q5_0(const BlockQ5_0* x, float* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i, y += 32) {
    const float d = load_f16(x[i].d);
    const uint32_t qh = load_u32(x[i].qh);
    for (int j = 0; j < 16; ++j) {
      const int h0 = int((qh >> j) & 1u) << 4;
      const int h1 = int((qh >> (j + 16)) & 1u) << 4;
      const int x0 = ((x[i].qs[j] & 0x0F) | h0) - 16;
      const int x1 = ((x[i].qs[j] >> 4) | h1) - 16;
      y[j] = float(x0) * d;
      y[j + 16] = float(x1) * d;
    }
  }
}

void dequantize_q5_1(const BlockQ5_1* x, float* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i, y += 32) {
    const float d = load_f16(x[i].d);
    const float m = load_f16(x[i].m);
    const uint32_t qh = load_u32(x[i].qh);
    for (int j = 0; j < 16; ++j) {
      const int h0 = int((qh >> j) & 1u) << 4;
      const int h1 = int((qh >> (j + 16)) & 1u) << 4;
      const float p0 = float((x[i].qs[j] & 0x0F) | h0) * d;
      const float p1 = float((x[i].qs[j] >> 4) | h1) * d;
      y[j] = p0 + m;
      y[j + 16] = p1 + m;
    }
  }
}

void dequantize_q8_0(const BlockQ8_0* x, float* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i, y += 32) {
    const float d = load_f16(x[i].d);
    for (int j = 0; j < 32; ++j) y[j] = float(x[i].qs[j]) * d;
  }
}

// ---- reference quantizers ---------------------------------------------------------------------------

// Symmetric 4/5-bit: d = (the element of largest magnitude) / -2^(bits-1), so that element maps to
// q = 0 exactly; q = trunc(x/d + 2^(bits-1) + 0.5) clamped to the top code.
template <int kBits>
void quantize_sym_block(const float* x, float* d_out, uint8_t* q) {
  constexpr int kHalf = 1 << (kBits - 1);
  constexpr int kTop = (1 << kBits) - 1;
  float amax = 0.0f, max = 0.0f;
  for (int j = 0; j < 32; ++j) {
    if (amax < std::fabs(x[j])) {
      amax = std::fabs(x[j]);
      max = x[j];
    }
  }
  const float d = max / float(-kHalf);
  const float id = d != 0.0f ? 1.0f / d : 0.0f;
  *d_out = d;
  for (int j = 0; j < 32; ++j) {
    const float v = x[j] * id;
    q[j] = uint8_t(std::min(kTop, trunc_to_int(v + (float(kHalf) + 0.5f))));
  }
}

// Asymmetric 4/5-bit: d = (max - min) / (2^bits - 1), m = min, q = trunc((x - min)/d + 0.5).
template <int kBits>
void quantize_asym_block(const float* x, float* d_out, float* m_out, uint8_t* q) {
  constexpr int kTop = (1 << kBits) - 1;
  float min = FLT_MAX, max = -FLT_MAX;
  for (int j = 0; j < 32; ++j) {
    if (x[j] < min) min = x[j];
    if (x[j] > max) max = x[j];
  }
  const float d = (max - min) / float(kTop);
  const float id = d != 0.0f ? 1.0f / d : 0.0f;
  *d_out = d;
  *m_out = min;
  for (int j = 0; j < 32; ++j) {
    const float v = (x[j] - min) * id;
    // Q4_1's reference clamps to 15; Q5_1's does not clamp (its value never exceeds 31 for finite
    // input), gguf-py clamps both: the clamp is a no-op on the reference's own range.
    q[j] = uint8_t(std::clamp(trunc_to_int(v + 0.5f), 0, kTop));
  }
}

void pack_nibbles(const uint8_t* q, uint8_t* qs) {
  for (int j = 0; j < 16; ++j) qs[j] = uint8_t((q[j] & 0x0F) | ((q[j + 16] & 0x0F) << 4));
}
void pack_high_bits(const uint8_t* q, uint8_t* qh) {
  uint32_t h = 0;
  for (int j = 0; j < 32; ++j) h |= uint32_t((q[j] >> 4) & 1u) << j;
  std::memcpy(qh, &h, 4);
}

void quantize_q4_0(const float* x, BlockQ4_0* y, int64_t nb) {
  uint8_t q[32];
  for (int64_t i = 0; i < nb; ++i, x += 32) {
    float d;
    quantize_sym_block<4>(x, &d, q);
    store_f16(y[i].d, d);
    pack_nibbles(q, y[i].qs);
  }
}

void quantize_q4_1(const float* x, BlockQ4_1* y, int64_t nb) {
  uint8_t q[32];
  for (int64_t i = 0; i < nb; ++i, x += 32) {
    float d, m;
    quantize_asym_block<4>(x, &d, &m, q);
    store_f16(y[i].d, d);
    store_f16(y[i].m, m);
    pack_nibbles(q, y[i].qs);
  }
}

void quantize_q5_0(const float* x, BlockQ5_0* y, int64_t nb) {
  uint8_t q[32];
  for (int64_t i = 0; i < nb; ++i, x += 32) {
    float d;
    quantize_sym_block<5>(x, &d, q);
    store_f16(y[i].d, d);
    pack_high_bits(q, y[i].qh);
    pack_nibbles(q, y[i].qs);
  }
}

void quantize_q5_1(const float* x, BlockQ5_1* y, int64_t nb) {
  uint8_t q[32];
  for (int64_t i = 0; i < nb; ++i, x += 32) {
    float d, m;
    quantize_asym_block<5>(x, &d, &m, q);
    store_f16(y[i].d, d);
    store_f16(y[i].m, m);
    pack_high_bits(q, y[i].qh);
    pack_nibbles(q, y[i].qs);
  }
}

// Q8_0: d = amax / 127, q = roundf(x / d) (half away from zero).
void quantize_q8_0(const float* x, BlockQ8_0* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i, x += 32) {
    float amax = 0.0f;
    for (int j = 0; j < 32; ++j) amax = std::max(amax, std::fabs(x[j]));
    const float d = amax / 127.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    store_f16(y[i].d, d);
    for (int j = 0; j < 32; ++j) {
      const float r = std::round(x[j] * id);
      y[i].qs[j] = int8_t(trunc_to_int(std::fmin(r, 127.0f)));
    }
  }
}

int64_t blocks_of(DType t, int64_t n) {
  const int64_t be = dtype_block_elems(t);
  LORA_CHECK(n >= 0 && n % be == 0, "{}: {} elements is not a multiple of the block size {}", dtype_name(t), n,
             be);
  return n / be;
}

}  // namespace

void quant_dequantize_row(DType t, const void* src, float* dst, int64_t n) {
  if (!dtype_is_quant(t)) {
    dtype_convert_to_f32(t, src, dst, n);
    return;
  }
  const int64_t nb = blocks_of(t, n);
  switch (t) {
    case DTYPE_Q4_0: dequantize_q4_0(static_cast<const BlockQ4_0*>(src), dst, nb); return;
    case DTYPE_Q4_1: dequantize_q4_1(static_cast<const BlockQ4_1*>(src), dst, nb); return;
    case DTYPE_Q5_0: dequantize_q5_0(static_cast<const BlockQ5_0*>(src), dst, nb); return;
    case DTYPE_Q5_1: dequantize_q5_1(static_cast<const BlockQ5_1*>(src), dst, nb); return;
    case DTYPE_Q8_0: dequantize_q8_0(static_cast<const BlockQ8_0*>(src), dst, nb); return;
    case DTYPE_Q4_K: detail::dequantize_q4_k(static_cast<const BlockQ4_K*>(src), dst, nb); return;
    case DTYPE_Q5_K: detail::dequantize_q5_k(static_cast<const BlockQ5_K*>(src), dst, nb); return;
    case DTYPE_Q6_K: detail::dequantize_q6_k(static_cast<const BlockQ6_K*>(src), dst, nb); return;
    default: LORA_CHECK(false, "quant_dequantize_row: unsupported dtype {}", dtype_name(t));
  }
}

void quant_dequantize(DType t, const void* src, float* dst, int64_t n) {
  const int64_t be = dtype_block_elems(t);
  const int64_t bb = dtype_block_bytes(t);
  const int64_t nb = blocks_of(t, n);
  // Chunks of whole blocks, ~64K elements each: enough work per task, and many tasks for balance.
  const int64_t chunk = std::max<int64_t>(1, 65536 / be);
  const int64_t n_chunks = (nb + chunk - 1) / chunk;
  const auto* s = static_cast<const uint8_t*>(src);
#pragma omp parallel for schedule(static) if (n_chunks > 1)
  for (int64_t c = 0; c < n_chunks; ++c) {
    const int64_t b0 = c * chunk;
    const int64_t b1 = std::min(nb, b0 + chunk);
    quant_dequantize_row(t, s + b0 * bb, dst + b0 * be, (b1 - b0) * be);
  }
}

bool quant_can_quantize(DType t) {
  switch (t) {
    case DTYPE_F32: case DTYPE_F16: case DTYPE_BF16:
    case DTYPE_Q4_0: case DTYPE_Q4_1: case DTYPE_Q5_0: case DTYPE_Q5_1: case DTYPE_Q8_0:
    case DTYPE_Q4_K: case DTYPE_Q5_K: case DTYPE_Q6_K:
      return true;
    default: return false;
  }
}

DType quant_type_for_weight(DType requested, bool is_output, int64_t cols, DType keep) {
  if (!dtype_is_quant(requested)) return requested;
  DType t = requested;
  if (is_output && t != DTYPE_Q8_0) t = DTYPE_Q6_K;
  if (cols % dtype_block_elems(t) != 0) {
    switch (t) {
      case DTYPE_Q4_K: t = DTYPE_Q5_0; break;
      case DTYPE_Q5_K: t = DTYPE_Q5_1; break;
      case DTYPE_Q6_K: t = DTYPE_Q8_0; break;
      default: break;
    }
    if (cols % dtype_block_elems(t) != 0) t = keep;
  }
  return t;
}

void quant_quantize_row(DType t, const float* src, void* dst, int64_t n) {
  LORA_CHECK(quant_can_quantize(t), "quant_quantize_row: quantizing to {} is not implemented", dtype_name(t));
  if (!dtype_is_quant(t)) {
    dtype_convert_from_f32(t, src, dst, n);
    return;
  }
  const int64_t nb = blocks_of(t, n);
  switch (t) {
    case DTYPE_Q4_0: quantize_q4_0(src, static_cast<BlockQ4_0*>(dst), nb); return;
    case DTYPE_Q4_1: quantize_q4_1(src, static_cast<BlockQ4_1*>(dst), nb); return;
    case DTYPE_Q5_0: quantize_q5_0(src, static_cast<BlockQ5_0*>(dst), nb); return;
    case DTYPE_Q5_1: quantize_q5_1(src, static_cast<BlockQ5_1*>(dst), nb); return;
    case DTYPE_Q8_0: quantize_q8_0(src, static_cast<BlockQ8_0*>(dst), nb); return;
    case DTYPE_Q4_K: detail::quantize_q4_k(src, static_cast<BlockQ4_K*>(dst), nb); return;
    case DTYPE_Q5_K: detail::quantize_q5_k(src, static_cast<BlockQ5_K*>(dst), nb); return;
    case DTYPE_Q6_K: detail::quantize_q6_k(src, static_cast<BlockQ6_K*>(dst), nb); return;
    default: LORA_CHECK(false, "quant_quantize_row: quantizing to {} is not implemented", dtype_name(t));
  }
}

}  // namespace lora
