// Matrix-vector product for batch-1 decoding: y (out) = W (out, in) · x (in). Memory-bandwidth bound:
// every weight byte is read exactly once, converted in registers (bf16 by a shift, f16 by F16C).
#pragma once
#include <cstdint>

#include "core/dtype.h"

namespace lora::cpu {

// W is contiguous (out, in) of type wt (F32, BF16 or F16). OpenMP over output rows.
void matvec(const void* w, DType wt, int64_t out, int64_t in, const float* x, float* y);

// n elements of F32/BF16/F16 to f32, vectorized (the panel conversion of linear.cpp's GEMM path).
void convert_to_f32(const void* src, DType t, float* dst, int64_t n);

}  // namespace lora::cpu
