// cuda_kv_store (declared in cuda/kernels.h): K or V rows of the current tokens into their KV-cache rows,
// the row numbers read from device memory, so that a recorded decode step stores each new token at its
// own position when replayed. Only cuda/check.h and CUDA headers here.
#include <cuda_runtime.h>

#include <cstdint>

#include "cuda/check.h"
#include "cuda/kernels.h"

namespace lora {

namespace {

// One block per token row; rows outside [0, S) are skipped (the host checks positions before upload).
__global__ void kv_store_kernel(float* __restrict__ cache, const float* __restrict__ src, const int32_t* __restrict__ pos,
                                int64_t row, int64_t S) {
  const int64_t i = blockIdx.x;
  const int64_t p = pos[i];
  if (p < 0 || p >= S) return;
  float* dst = cache + p * row;
  const float* s = src + i * row;
  for (int64_t j = threadIdx.x; j < row; j += blockDim.x) dst[j] = s[j];
}

}  // namespace

void cuda_kv_store(float* cache, int64_t S, const float* src, const int32_t* pos, int64_t n, int64_t row,
                   cudaStream_t stream) {
  if (n < 0 || row < 0 || S < 0) cuda_fail(cudaErrorInvalidValue, "cuda_kv_store: negative size", __FILE__, __LINE__);
  if (n == 0 || row == 0) return;
  kv_store_kernel<<<unsigned(n), 256, 0, stream>>>(cache, src, pos, row, S);
  LORA_CUDA_CHECK(cudaGetLastError());
}

}  // namespace lora
