// GEMM on the GPU through cuBLASLt, with ROW-MAJOR semantics (PyTorch order, as everywhere in lora):
//
//   C (M, N) = alpha · op(A) · op(B) + beta · C      fp32 accumulation (CUBLAS_COMPUTE_32F)
//
//   A is stored (M, K) with row stride lda when !trans_a, (K, M) when trans_a;
//   B is stored (K, N) with row stride ldb when !trans_b, (N, K) when trans_b;
//   C is stored (M, N) with row stride ldc.
//
// The main use is a linear layer, y (N, out) = x (N, in) · W (out, in)ᵀ:
//   gemm_bf16(dev, false, true, N, out, in, 1, x, in, W, in, 0, y, DTYPE_F32 or DTYPE_BF16, out).
// Work is queued on dev.stream (asynchronous: call cuda_device_sync before reading C on the host).
// Plans (matmul descriptor, three layouts, the heuristic's algorithm) are cached per device context by
// shape, transposes, leading dimensions and pointer alignment, so a training step pays no set-up.
// Only gemm.h/gemm.cpp know about cuBLASLt (the handle hides behind GemmContext).
#pragma once
#include <cstdint>

#include "core/dtype.h"
#include "cuda/device.h"

namespace lora {

// Creates the device's cuBLASLt handle, workspace and plan cache (called by cuda_device_open).
GemmContext* gemm_context_create(CudaDevice& dev);

// A and B are bf16; C is DTYPE_F32 or DTYPE_BF16 (rounded once from the fp32 accumulator).
void gemm_bf16(CudaDevice& dev, bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha,
               const void* a, int64_t lda, const void* b, int64_t ldb, float beta, void* c, DType c_type,
               int64_t ldc);

// Exact fp32 (no TF32): same contract, all operands f32.
void gemm_f32(CudaDevice& dev, bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha,
              const float* a, int64_t lda, const float* b, int64_t ldb, float beta, float* c, int64_t ldc);

// Number of cached plans (tests check that a repeated shape reuses its plan).
int64_t gemm_plan_count(const CudaDevice& dev);

}  // namespace lora
