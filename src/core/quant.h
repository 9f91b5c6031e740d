// llama.cpp's quantized block formats (ggml-common.h): byte layouts, dequantization (bit-exact with
// ggml's dequantize_row_*), and the reference quantizers (ggml's quantize_row_*_ref).
//
// All multi-byte fields are little-endian; fp16 fields are IEEE half. Every block struct holds only
// uint8_t arrays, so blocks have alignment 1 and may sit at any address (e.g. inside a mapped file).
//
//   32-element blocks (element j of the block is called x[j]):
//     Q4_0 (18 B): d:f16, qs[16]            x[j] = (q[j] - 8) * d
//     Q4_1 (20 B): d:f16, m:f16, qs[16]     x[j] = q[j] * d + m
//     Q5_0 (22 B): d:f16, qh[4], qs[16]     x[j] = (q[j] - 16) * d
//     Q5_1 (24 B): d:f16, m:f16, qh[4], qs[16]
//                                           x[j] = q[j] * d + m
//     Q8_0 (34 B): d:f16, qs[32]:int8       x[j] = qs[j] * d
//   Nibble order: the low nibble of qs[j] is element j, the high nibble element j + 16. For Q5 the
//   fifth bit of element j is bit j of the u32 qh.
//
//   256-element super-blocks (QK_K):
//     Q4_K (144 B): d:f16, dmin:f16, scales[12], qs[128]
//     Q5_K (176 B): d:f16, dmin:f16, scales[12], qh[32], qs[128]
//         8 sub-blocks of 32; sub-block s has a 6-bit scale sc and 6-bit min m packed in scales[]
//         (quant_k4_scale_min); x = d*sc * q - dmin*m. qs runs in 4 chunks of 32 bytes; chunk c holds
//         sub-block 2c in its low nibbles and 2c+1 in its high nibbles. Q5_K: the fifth bit of element
//         l of sub-block s is bit s of qh[l].
//     Q6_K (210 B): ql[128], qh[64], scales[16]:int8, d:f16
//         16 sub-blocks of 16, x = d * scales[s] * (q - 32), q 6-bit; see quant_k.cpp for the packing.
//
// Rounding: dequantization matches llama.cpp (and gguf-py) bit for bit. Quantization follows the
// reference (*_ref) C code operation by operation with no fused multiply-adds, i.e. the semantics that
// gguf-py's numpy quantizers reproduce; a llama.cpp build that contracts into FMAs may differ in
// rare rounding ties.
#pragma once
#include <cstdint>

#include "core/dtype.h"

namespace lora {

constexpr int64_t kQuantBlock = 32;    // QK4_0 = QK4_1 = QK5_0 = QK5_1 = QK8_0
constexpr int64_t kQuantSuperBlock = 256;  // QK_K
constexpr int kQuantKScaleBytes = 12;  // K_SCALE_SIZE

struct BlockQ4_0 { uint8_t d[2]; uint8_t qs[16]; };
struct BlockQ4_1 { uint8_t d[2]; uint8_t m[2]; uint8_t qs[16]; };
struct BlockQ5_0 { uint8_t d[2]; uint8_t qh[4]; uint8_t qs[16]; };
struct BlockQ5_1 { uint8_t d[2]; uint8_t m[2]; uint8_t qh[4]; uint8_t qs[16]; };
struct BlockQ8_0 { uint8_t d[2]; int8_t qs[32]; };
struct BlockQ4_K { uint8_t d[2]; uint8_t dmin[2]; uint8_t scales[12]; uint8_t qs[128]; };
struct BlockQ5_K { uint8_t d[2]; uint8_t dmin[2]; uint8_t scales[12]; uint8_t qh[32]; uint8_t qs[128]; };
struct BlockQ6_K { uint8_t ql[128]; uint8_t qh[64]; int8_t scales[16]; uint8_t d[2]; };
static_assert(sizeof(BlockQ4_0) == 18 && sizeof(BlockQ4_1) == 20 && sizeof(BlockQ5_0) == 22);
static_assert(sizeof(BlockQ5_1) == 24 && sizeof(BlockQ8_0) == 34);
static_assert(sizeof(BlockQ4_K) == 144 && sizeof(BlockQ5_K) == 176 && sizeof(BlockQ6_K) == 210);

// Dequantizes n elements (n a multiple of dtype_block_elems(t)). Also accepts F32/F16/BF16, which it
// hands to dtype_convert_to_f32. Single-threaded.
void quant_dequantize_row(DType t, const void* src, float* dst, int64_t n);

// The same for a whole tensor, split over OpenMP threads in whole blocks. The result does not depend
// on the thread count.
void quant_dequantize(DType t, const void* src, float* dst, int64_t n);

// Whether quant_quantize_row implements t.
bool quant_can_quantize(DType t);

// Quantizes n floats (n a multiple of the block size) with llama.cpp's reference quantizer:
// Q4_0, Q4_1, Q5_0, Q5_1, Q8_0 (quantize_row_*_ref) and Q4_K, Q5_K, Q6_K (quantize_row_*_K_ref, the
// path llama.cpp takes without an importance matrix). Also F32/F16/BF16 via dtype_convert_from_f32.
// Other types fail a LORA_CHECK. Inputs should be finite; non-finite inputs give unspecified (but
// memory-safe) blocks.
void quant_quantize_row(DType t, const float* src, void* dst, int64_t n);

// The type llama.cpp's quantizer gives a 2-D weight when asked for `requested` (llama_tensor_get_type,
// without an importance matrix): the output projection (lm_head) becomes Q6_K for the 4/5-bit types and
// stays Q8_0 for Q8_0; a row length that is not a whole number of blocks falls back to the 32-element
// type of the same family (Q4_K -> Q5_0, Q5_K -> Q5_1, Q6_K -> Q8_0); rows that are not whole 32-blocks
// either stay `keep` (the source's float type).
DType quant_type_for_weight(DType requested, bool is_output, int64_t cols, DType keep);

// Unpacks the 6-bit scale and min of sub-block j (0..7) from a Q4_K/Q5_K scales[12] array
// (llama.cpp's get_scale_min_k4).
void quant_k4_scale_min(int j, const uint8_t* scales, uint8_t* sc, uint8_t* m);

namespace detail {
// Per-format kernels over nb blocks; quant_k.cpp implements the K-quants.
void dequantize_q4_k(const BlockQ4_K* x, float* y, int64_t nb);
void dequantize_q5_k(const BlockQ5_K* x, float* y, int64_t nb);
void dequantize_q6_k(const BlockQ6_K* x, float* y, int64_t nb);
void quantize_q4_k(const float* x, BlockQ4_K* y, int64_t nb);
void quantize_q5_k(const float* x, BlockQ5_K* y, int64_t nb);
void quantize_q6_k(const float* x, BlockQ6_K* y, int64_t nb);
}  // namespace detail

}  // namespace lora
