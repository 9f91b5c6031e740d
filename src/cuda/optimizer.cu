// cuda_optimizer_update and cuda_convert_f32_to_bf16 (train_kernels.h).
// The update is ONE launch for every tensor of the adapter: grid (tensor, chunk), each block walks its
// tensor's chunks of kChunk elements (grid-stride over chunks when the grid is capped). The element
// formulas are src/cpu/optimizer.cpp's, in MLX's fp32 order, with every multiply, add, divide and sqrt
// an explicitly rounded intrinsic: nvcc contracts a * b + c into an FMA by default, which would change
// the low bits, and MLX rounds each operation on its own.
#include <cstdint>

#include "cuda/check.h"
#include "cuda/train_kernels.h"

namespace lora {

namespace {

constexpr int kThreads = 256;
constexpr int64_t kChunk = kThreads * 8;  // elements per block and chunk
constexpr int64_t kMaxChunkBlocks = 65535;  // grid.y limit

__device__ __forceinline__ void adam_element(const CudaOptTensor& t, int64_t j, bool adamw, const CudaOptScalars& s) {
  float wj = t.w[j];
  if (adamw) wj = __fmul_rn(wj, s.decay);
  const float gj = t.g[j];
  const float mj = __fadd_rn(__fmul_rn(s.b1, t.m[j]), __fmul_rn(s.omb1, gj));
  const float vj = __fadd_rn(__fmul_rn(s.b2, t.v[j]), __fmul_rn(s.omb2, __fmul_rn(gj, gj)));
  t.m[j] = mj;
  t.v[j] = vj;
  if (s.bias_correction)
    t.w[j] = __fsub_rn(wj, __fdiv_rn(__fmul_rn(s.c1, mj), __fadd_rn(__fmul_rn(__fsqrt_rn(vj), s.c2), s.eps)));
  else
    t.w[j] = __fsub_rn(wj, __fdiv_rn(__fmul_rn(s.lr, mj), __fadd_rn(__fsqrt_rn(vj), s.eps)));
}

__device__ __forceinline__ void sgd_element(const CudaOptTensor& t, int64_t j, const CudaOptScalars& s) {
  const float wj = t.w[j];
  float gj = t.g[j];
  if (s.wd != 0.0f) gj = __fadd_rn(gj, __fmul_rn(s.wd, wj));
  if (!s.sgd_momentum) {
    t.w[j] = __fsub_rn(wj, __fmul_rn(s.lr, gj));
    return;
  }
  float vj = __fmul_rn(s.mom, t.v[j]);
  vj = __fadd_rn(vj, s.sgd_dampening ? __fmul_rn(s.damp, gj) : gj);
  t.v[j] = vj;
  const float upd = s.nesterov ? __fadd_rn(gj, __fmul_rn(s.mom, vj)) : vj;
  t.w[j] = __fsub_rn(wj, __fmul_rn(s.lr, upd));
}

// blockIdx.x: the tensor; blockIdx.y: the first chunk, then every gridDim.y-th one.
__global__ void optimizer_kernel(const CudaOptTensor* __restrict__ tensors, int kind, CudaOptScalars s) {
  const CudaOptTensor t = tensors[blockIdx.x];
  for (int64_t base = int64_t(blockIdx.y) * kChunk; base < t.n; base += int64_t(gridDim.y) * kChunk) {
    const int64_t end = base + kChunk < t.n ? base + kChunk : t.n;
    for (int64_t j = base + threadIdx.x; j < end; j += kThreads) {
      if (kind == CUDA_OPT_SGD)
        sgd_element(t, j, s);
      else
        adam_element(t, j, kind == CUDA_OPT_ADAMW, s);
    }
  }
}

// core/dtype.h's f32_to_bf16 on the bits.
__global__ void f32_to_bf16_kernel(const float* __restrict__ src, uint16_t* __restrict__ dst, int64_t n) {
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    uint32_t u = __float_as_uint(src[i]);
    if ((u & 0x7fffffffu) > 0x7f800000u) {
      dst[i] = uint16_t((u >> 16) | 0x40u);
      continue;
    }
    u += 0x7fffu + ((u >> 16) & 1u);
    dst[i] = uint16_t(u >> 16);
  }
}

}  // namespace

void cuda_optimizer_update(const CudaOptTensor* tensors_device, int64_t n_tensors, int64_t max_n, int kind,
                           const CudaOptScalars& s, cudaStream_t stream) {
  if (n_tensors < 0 || max_n < 0 || n_tensors > int64_t(0x7fffffff))
    cuda_fail(cudaErrorInvalidValue, "cuda_optimizer_update: negative or too large size", __FILE__, __LINE__);
  if (kind != CUDA_OPT_ADAM && kind != CUDA_OPT_ADAMW && kind != CUDA_OPT_SGD)
    cuda_fail(cudaErrorInvalidValue, "cuda_optimizer_update: kind must be 0 (adam), 1 (adamw) or 2 (sgd)", __FILE__,
              __LINE__);
  if (n_tensors == 0 || max_n == 0) return;
  if (!tensors_device) cuda_fail(cudaErrorInvalidValue, "cuda_optimizer_update: null tensor table", __FILE__, __LINE__);
  const int64_t chunks = (max_n + kChunk - 1) / kChunk;
  const dim3 grid(static_cast<unsigned>(n_tensors), static_cast<unsigned>(chunks < kMaxChunkBlocks ? chunks : kMaxChunkBlocks));
  optimizer_kernel<<<grid, kThreads, 0, stream>>>(tensors_device, kind, s);
  LORA_CUDA_CHECK(cudaGetLastError());
}

void cuda_convert_f32_to_bf16(const float* src, void* dst_bf16, int64_t n, cudaStream_t stream) {
  if (n < 0) cuda_fail(cudaErrorInvalidValue, "cuda_convert_f32_to_bf16: negative size", __FILE__, __LINE__);
  if (n == 0) return;
  if (!src || !dst_bf16) cuda_fail(cudaErrorInvalidValue, "cuda_convert_f32_to_bf16: null pointer", __FILE__, __LINE__);
  const int64_t blocks = (n + kThreads - 1) / kThreads;
  const dim3 grid(static_cast<unsigned>(blocks < 65536 ? blocks : 65536));
  f32_to_bf16_kernel<<<grid, kThreads, 0, stream>>>(src, static_cast<uint16_t*>(dst_bf16), n);
  LORA_CUDA_CHECK(cudaGetLastError());
}

}  // namespace lora
