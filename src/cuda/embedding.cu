// cuda_embedding_fwd: out (n, C) f32 = table[ids] with table (V, C) in F32/BF16/F16 (kernels.h).
// One block per token row, threads striding over the C columns (coalesced reads of the table row).
// ids live on the device and are not checked there: the caller validates them on the host (a bad id is
// user input -> lora::Error); an id outside [0, V) still never reads out of bounds (its row is zeroed).
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "cuda/check.h"
#include "cuda/kernels.h"

namespace lora {

namespace {

__device__ __forceinline__ float to_f32(float v) { return v; }
__device__ __forceinline__ float to_f32(__nv_bfloat16 v) { return __bfloat162float(v); }
__device__ __forceinline__ float to_f32(__half v) { return __half2float(v); }

template <class T>
__global__ void embedding_kernel(const int32_t* __restrict__ ids, const T* __restrict__ table, int64_t V, int64_t C,
                                 float* __restrict__ out) {
  const int64_t row = blockIdx.x;
  const int32_t id = ids[row];
  float* o = out + row * C;
  if (id < 0 || int64_t(id) >= V) {
    for (int64_t i = threadIdx.x; i < C; i += blockDim.x) o[i] = 0.0f;
    return;
  }
  const T* src = table + int64_t(id) * C;
  for (int64_t i = threadIdx.x; i < C; i += blockDim.x) o[i] = to_f32(src[i]);
}

}  // namespace

void cuda_embedding_fwd(const int32_t* ids, int64_t n, const void* table, DType table_type, int64_t V, int64_t C,
                        float* out, cudaStream_t stream) {
  if (n < 0 || V < 0 || C < 0 || n > int64_t(0x7fffffff))
    cuda_fail(cudaErrorInvalidValue, "cuda_embedding_fwd: negative or too large size", __FILE__, __LINE__);
  if (n == 0 || C == 0) return;
  const dim3 grid(static_cast<unsigned>(n)), block(C >= 256 ? 256 : 32 * unsigned((C + 31) / 32));
  switch (table_type) {
    case DTYPE_F32:
      embedding_kernel<<<grid, block, 0, stream>>>(ids, static_cast<const float*>(table), V, C, out);
      break;
    case DTYPE_BF16:
      embedding_kernel<<<grid, block, 0, stream>>>(ids, static_cast<const __nv_bfloat16*>(table), V, C, out);
      break;
    case DTYPE_F16:
      embedding_kernel<<<grid, block, 0, stream>>>(ids, static_cast<const __half*>(table), V, C, out);
      break;
    default:
      cuda_fail(cudaErrorInvalidValue, "cuda_embedding_fwd: table dtype must be F32, BF16 or F16", __FILE__,
                __LINE__);
  }
  LORA_CUDA_CHECK(cudaGetLastError());
}

}  // namespace lora
