// cuda_rmsnorm_fwd / cuda_rmsnorm_bwd (kernels.h), Hugging Face LlamaRMSNorm semantics in f32:
//   y = x * r * w with r = 1 / sqrt(mean(x²) + eps)
//   dx += r · g - x · r³ · (g · x) / C with g = dy ⊙ w,      dw += Σ_rows dy ⊙ x · r.
// One block per row; the row's sums are a warp-shuffle then cross-warp reduction in f32 (the CPU
// backend sums in double; tests/tolerances.h kCudaRmsnorm* cover the difference). dw is a second,
// deterministic column reduction over the rows (no atomics, so training runs repeat bit for bit).
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "cuda/check.h"
#include "cuda/kernels.h"

namespace lora {

namespace {

constexpr int kThreads = 256;  // per row block: 8 warps

__device__ __forceinline__ float to_f32(float v) { return v; }
__device__ __forceinline__ float to_f32(__nv_bfloat16 v) { return __bfloat162float(v); }
__device__ __forceinline__ float to_f32(__half v) { return __half2float(v); }

// Sum of v over the block (blockDim.x a multiple of 32, at most 1024); every thread gets the total.
// sh holds 32 floats of shared memory; the trailing barrier lets the caller reuse it at once.
__device__ float block_sum(float v, float* sh) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  const int warp = int(threadIdx.x) / 32, lane = int(threadIdx.x) % 32;
  if (lane == 0) sh[warp] = v;
  __syncthreads();
  v = lane < int(blockDim.x) / 32 ? sh[lane] : 0.0f;
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  __syncthreads();
  return v;
}

// y may alias x: each thread rewrites only elements it has read, after the reduction's barriers.
template <class W>
__global__ void rmsnorm_fwd_kernel(const float* x, const W* __restrict__ w, int64_t C, float eps, float* y) {
  __shared__ float sh[32];
  const int64_t row = blockIdx.x;
  const float* xr = x + row * C;
  float* yr = y + row * C;
  float ss = 0.0f;
  for (int64_t i = threadIdx.x; i < C; i += blockDim.x) ss += xr[i] * xr[i];
  ss = block_sum(ss, sh);
  const float inv = 1.0f / sqrtf(ss / float(C) + eps);
  for (int64_t i = threadIdx.x; i < C; i += blockDim.x) yr[i] = (xr[i] * inv) * to_f32(w[i]);
}

template <class W>
__global__ void rmsnorm_bwd_kernel(const float* __restrict__ x, const W* __restrict__ w, int64_t C, float eps,
                                   const float* __restrict__ dy, float* __restrict__ dx, float* __restrict__ rinv) {
  __shared__ float sh[32];
  const int64_t row = blockIdx.x;
  const float* xr = x + row * C;
  const float* gr = dy + row * C;
  float* dxr = dx + row * C;
  float ss = 0.0f, gx = 0.0f;
  for (int64_t i = threadIdx.x; i < C; i += blockDim.x) {
    const float xi = xr[i];
    ss += xi * xi;
    gx += gr[i] * to_f32(w[i]) * xi;
  }
  ss = block_sum(ss, sh);
  gx = block_sum(gx, sh);
  const float inv = 1.0f / sqrtf(ss / float(C) + eps);
  const float b = inv * inv * inv * gx / float(C);
  for (int64_t i = threadIdx.x; i < C; i += blockDim.x) dxr[i] += inv * gr[i] * to_f32(w[i]) - b * xr[i];
  if (rinv && threadIdx.x == 0) rinv[row] = inv;
}

// dw[c] += Σ_r dy[r, c] · x[r, c] · rinv[r]. Block (32, 8): 32 adjacent columns (coalesced), 8 row
// slices summed in a fixed order.
__global__ void rmsnorm_dw_kernel(const float* __restrict__ x, const float* __restrict__ dy,
                                  const float* __restrict__ rinv, int64_t n, int64_t C, float* __restrict__ dw) {
  __shared__ float part[8][33];
  const int64_t c = int64_t(blockIdx.x) * 32 + threadIdx.x;
  float s = 0.0f;
  if (c < C)
    for (int64_t r = threadIdx.y; r < n; r += 8) s += dy[r * C + c] * x[r * C + c] * rinv[r];
  part[threadIdx.y][threadIdx.x] = s;
  __syncthreads();
  if (threadIdx.y == 0 && c < C) {
    float t = 0.0f;
    for (int k = 0; k < 8; ++k) t += part[k][threadIdx.x];
    dw[c] += t;
  }
}

void check_sizes(int64_t n, int64_t C, const char* what) {
  if (n < 0 || C < 0 || n > int64_t(0x7fffffff)) cuda_fail(cudaErrorInvalidValue, what, __FILE__, __LINE__);
}

}  // namespace

void cuda_rmsnorm_fwd(const float* x, const void* w, DType w_type, int64_t n, int64_t C, float eps, float* y,
                      cudaStream_t stream) {
  check_sizes(n, C, "cuda_rmsnorm_fwd: negative or too large size");
  if (n == 0 || C == 0) return;
  const dim3 grid(static_cast<unsigned>(n)), block(kThreads);
  switch (w_type) {
    case DTYPE_F32:
      rmsnorm_fwd_kernel<<<grid, block, 0, stream>>>(x, static_cast<const float*>(w), C, eps, y);
      break;
    case DTYPE_BF16:
      rmsnorm_fwd_kernel<<<grid, block, 0, stream>>>(x, static_cast<const __nv_bfloat16*>(w), C, eps, y);
      break;
    case DTYPE_F16:
      rmsnorm_fwd_kernel<<<grid, block, 0, stream>>>(x, static_cast<const __half*>(w), C, eps, y);
      break;
    default:
      cuda_fail(cudaErrorInvalidValue, "cuda_rmsnorm_fwd: weight dtype must be F32, BF16 or F16", __FILE__, __LINE__);
  }
  LORA_CUDA_CHECK(cudaGetLastError());
}

void cuda_rmsnorm_bwd(const float* x, const void* w, DType w_type, int64_t n, int64_t C, float eps, const float* dy,
                      float* dx, float* dw, cudaStream_t stream) {
  check_sizes(n, C, "cuda_rmsnorm_bwd: negative or too large size");
  if (w_type != DTYPE_F32 && w_type != DTYPE_BF16 && w_type != DTYPE_F16)
    cuda_fail(cudaErrorInvalidValue, "cuda_rmsnorm_bwd: weight dtype must be F32, BF16 or F16", __FILE__, __LINE__);
  if (n == 0 || C == 0) return;
  float* rinv = nullptr;  // (n) per-row r for the dw reduction, stream-ordered scratch
  if (dw) LORA_CUDA_CHECK(cudaMallocAsync(reinterpret_cast<void**>(&rinv), size_t(n) * sizeof(float), stream));
  const dim3 grid(static_cast<unsigned>(n)), block(kThreads);
  switch (w_type) {
    case DTYPE_F32:
      rmsnorm_bwd_kernel<<<grid, block, 0, stream>>>(x, static_cast<const float*>(w), C, eps, dy, dx, rinv);
      break;
    case DTYPE_BF16:
      rmsnorm_bwd_kernel<<<grid, block, 0, stream>>>(x, static_cast<const __nv_bfloat16*>(w), C, eps, dy, dx, rinv);
      break;
    default:
      rmsnorm_bwd_kernel<<<grid, block, 0, stream>>>(x, static_cast<const __half*>(w), C, eps, dy, dx, rinv);
      break;
  }
  cudaError_t err = cudaGetLastError();
  if (dw) {
    if (err == cudaSuccess) {
      const dim3 g2(static_cast<unsigned>((C + 31) / 32)), b2(32, 8);
      rmsnorm_dw_kernel<<<g2, b2, 0, stream>>>(x, dy, rinv, n, C, dw);
      err = cudaGetLastError();
    }
    const cudaError_t free_err = cudaFreeAsync(rinv, stream);
    if (err == cudaSuccess) err = free_err;
  }
  LORA_CUDA_CHECK(err);
}

}  // namespace lora
