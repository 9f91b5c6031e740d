// cuda_gemv_bf16 (declared in cuda/kernels.h): y (out) = W (out, in) · x (in) for BF16 weights and f32
// x, y — the decode step's linear layers (one token), where cuBLASLt's GEMM kernels read the weights at a
// fraction of the memory bandwidth. One warp per output row: x sits in shared memory (f32), each lane
// streams 16 bytes (8 weights) at a time, f32 FMAs, a warp shuffle reduction. Memory-bound by design:
// every weight byte is read once. Only cuda/check.h and CUDA headers here.
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "cuda/check.h"
#include "cuda/kernels.h"

namespace lora {

namespace {

constexpr int kWarps = 8;  // rows per block

__global__ void __launch_bounds__(kWarps * 32)
    gemv_bf16_kernel(const float* __restrict__ x, const uint4* __restrict__ w, int64_t out, int64_t in,
                     float* __restrict__ y) {
  extern __shared__ float xs[];  // (in)
  for (int64_t i = threadIdx.x; i < in; i += blockDim.x) xs[i] = x[i];
  __syncthreads();
  const int warp = int(threadIdx.x) / 32, lane = int(threadIdx.x) % 32;
  const int64_t row = int64_t(blockIdx.x) * kWarps + warp;
  if (row >= out) return;
  const int64_t n8 = in / 8;  // 16-byte chunks per row
  const uint4* wr = w + row * n8;
  float acc = 0.0f;
  for (int64_t c = lane; c < n8; c += 32) {
    const uint4 q = wr[c];
    const float* xv = xs + c * 8;
    const uint32_t parts[4] = {q.x, q.y, q.z, q.w};
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const float lo = __uint_as_float(parts[j] << 16), hi = __uint_as_float(parts[j] & 0xffff0000u);
      acc = fmaf(lo, xv[2 * j], acc);
      acc = fmaf(hi, xv[2 * j + 1], acc);
    }
  }
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) acc += __shfl_xor_sync(0xffffffffu, acc, off);
  if (lane == 0) y[row] = acc;
}

}  // namespace

bool cuda_gemv_bf16_supported(const void* w, int64_t in) {
  return in > 0 && in % 8 == 0 && in <= 12288 && reinterpret_cast<uintptr_t>(w) % 16 == 0;
}

void cuda_gemv_bf16(const float* x, const void* w, int64_t out, int64_t in, float* y, cudaStream_t stream) {
  if (out < 0 || !cuda_gemv_bf16_supported(w, in))
    cuda_fail(cudaErrorInvalidValue, "cuda_gemv_bf16: unsupported size or alignment", __FILE__, __LINE__);
  if (out == 0) return;
  const size_t smem = size_t(in) * sizeof(float);
  if (smem > 48 * 1024) {
    static bool raised = false;  // once per process: the attribute belongs to the kernel
    if (!raised) {
      LORA_CUDA_CHECK(cudaFuncSetAttribute(gemv_bf16_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, 12288 * 4));
      raised = true;
    }
  }
  const unsigned blocks = unsigned((out + kWarps - 1) / kWarps);
  gemv_bf16_kernel<<<blocks, kWarps * 32, smem, stream>>>(x, static_cast<const uint4*>(w), out, in, y);
  LORA_CUDA_CHECK(cudaGetLastError());
}

}  // namespace lora
