// Internal to the CUDA backend: the launchers of the element-wise kernels (embedding.cu, rmsnorm.cu,
// rope.cu, swiglu.cu) that the CUDA Ops class wraps. Plain C++ (no fmt, no device code), so host code
// compiled by g++ can call them. Contract shared by all of them:
//   - every pointer is DEVICE memory (ids and positions too), activations are contiguous f32 with the
//     shapes and formulas of the matching op in ops/ops.h (same contract as the CPU backend);
//   - work is queued on `stream` (asynchronous); nothing is checked on the device, so the caller checks
//     user input (token ids, positions) on the host first. The kernels still never read out of bounds:
//     an id outside [0, V) yields a zero row, a position outside [0, max_pos) leaves its row unchanged;
//   - a weight/table dtype other than F32, BF16, F16, or a negative size, throws lora::InternalError
//     (through cuda_fail); empty sizes launch nothing; launch failures throw InternalError.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

#include "core/dtype.h"

namespace lora {

// out (n, C) f32 = table[ids] ; table (V, C) in table_type (F32/BF16/F16), ids (n) int32.
void cuda_embedding_fwd(const int32_t* ids, int64_t n, const void* table, DType table_type, int64_t V, int64_t C,
                        float* out, cudaStream_t stream);

// y (n, C) = x * rsqrt(mean(x²) + eps) * w ; w (C) in w_type (F32/BF16/F16). One block per row, f32
// accumulation. y may alias x.
void cuda_rmsnorm_fwd(const float* x, const void* w, DType w_type, int64_t n, int64_t C, float eps, float* y,
                      cudaStream_t stream);

// dx (n, C) += d/dx of cuda_rmsnorm_fwd given dy (n, C); when dw (C, f32) is non-null, dw += Σ_rows
// dy ⊙ x · rsqrt(...) (a deterministic column reduction, no atomics; it takes n floats of stream-ordered
// scratch from cudaMallocAsync). dx must not alias x or dy.
void cuda_rmsnorm_bwd(const float* x, const void* w, DType w_type, int64_t n, int64_t C, float eps, const float* dy,
                      float* dx, float* dw, cudaStream_t stream);

// In place on x (n, nh, D): rotate-half RoPE at positions pos (n) with the RopeTable's cos/sin
// (max_pos, D/2) f32 tables copied to the device. cuda_rope_bwd applies the inverse rotation (gradient).
void cuda_rope_fwd(float* x, const int32_t* pos, int64_t n, int64_t nh, int64_t D, const float* cos_table,
                   const float* sin_table, int64_t max_pos, cudaStream_t stream);
void cuda_rope_bwd(float* dx, const int32_t* pos, int64_t n, int64_t nh, int64_t D, const float* cos_table,
                   const float* sin_table, int64_t max_pos, cudaStream_t stream);

// out (numel) = silu(gate) * up ; out may alias gate or up.
void cuda_swiglu_fwd(const float* gate, const float* up, float* out, int64_t numel, cudaStream_t stream);
// dgate = dout · up · s · (1 + g · (1 - s)), dup = dout · g · s with s = sigmoid(g); dgate may alias
// gate, dup may alias up.
void cuda_swiglu_bwd(const float* gate, const float* up, const float* dout, float* dgate, float* dup, int64_t numel,
                     cudaStream_t stream);

// y (numel) += x (numel). (Lives in swiglu.cu with the other element-wise ops, like the CPU backend.)
void cuda_add_fwd(float* y, const float* x, int64_t numel, cudaStream_t stream);

// cache (S, row) row pos[i] = src row i, i < n (kv_cache.cu); positions outside [0, S) are skipped.
void cuda_kv_store(float* cache, int64_t S, const float* src, const int32_t* pos, int64_t n, int64_t row,
                   cudaStream_t stream);

// y (out) = W (out, in) · x (in), W BF16 row-major, x and y f32 (gemv.cu): the one-token linear layer, one
// warp per row streaming 16-byte weight chunks. Needs in % 8 == 0, in <= 12288 and W 16-byte aligned
// (cuda_gemv_bf16_supported); otherwise InternalError.
bool cuda_gemv_bf16_supported(const void* w, int64_t in);
void cuda_gemv_bf16(const float* x, const void* w, int64_t out, int64_t in, float* y, cudaStream_t stream);

// Keeps the GPU busy for about `microseconds` (one thread; spin.cu): the op profiler's lead time.
void cuda_spin(double microseconds, cudaStream_t stream);

}  // namespace lora
