// Dequantization of llama.cpp's block formats on the GPU (dequant.cu): the QLoRA linear expands each
// quantized weight to bf16 right before its GEMM, and the quantized token-embedding table is gathered
// row by row. Contract:
//   - every pointer is DEVICE memory; work is queued on `stream` (asynchronous);
//   - a quantized (rows, cols) matrix is row-major: row r is cols / dtype_block_elems(t) consecutive
//     blocks and rows follow each other with no gap, i.e. exactly what quant_quantize_row writes for each
//     row. Blocks may sit at any byte address (src needs no alignment);
//   - values are bit-identical to the CPU's quant_dequantize_row (f32); the bf16 outputs are those f32
//     values rounded to nearest even (__float2bfloat16_rn);
//   - types: Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q5_K, Q6_K, and the plain F32, F16, BF16 (converted
//     element by element, no vectorised path). Any other type, cols not a multiple of the block size, a
//     negative size or dst_ld < cols throws lora::InternalError (through cuda_fail); empty sizes launch
//     nothing; launch failures throw InternalError.
#pragma once
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "core/dtype.h"

namespace lora {

// Whether the launchers below accept source type t.
bool cuda_dequant_supported(DType t);

// dst (rows, cols) bf16 with leading dimension dst_ld (elements) = dequantize(src (rows, cols) in t).
// Elements dst[r * dst_ld + c] with c >= cols are left untouched. Fastest (16-byte stores) when dst is
// 16-byte aligned and dst_ld % 8 == 0.
void cuda_dequantize_bf16(DType t, const void* src, __nv_bfloat16* dst, int64_t rows, int64_t cols, int64_t dst_ld,
                          cudaStream_t stream);

// dst (rows, cols) f32, contiguous = dequantize(src (rows, cols) in t).
void cuda_dequantize_f32(DType t, const void* src, float* dst, int64_t rows, int64_t cols, cudaStream_t stream);

// out (n, cols) f32: out[i, :] = dequantized row ids[i] of table (V, cols) in t; ids (n) int32 on the
// device. As in cuda_embedding_fwd (kernels.h), the caller checks ids on the host; an id outside [0, V)
// still reads nothing and yields a row of zeros.
void cuda_embedding_quant(DType t, const void* table, int64_t V, int64_t cols, const int32_t* ids, int64_t n,
                          float* out, cudaStream_t stream);

}  // namespace lora
