// The element-wise ops (kernels.h): cuda_swiglu_fwd (out = silu(gate) * up, silu(g) = g / (1 + e^-g)),
// cuda_swiglu_bwd (with s = sigmoid(g): dgate = dout · up · s · (1 + g · (1 - s)), dup = dout · g · s)
// and cuda_add_fwd (the residual y += x). Grid-stride loops over the flat element range; each element
// is read and written by one thread, so the documented aliasing (out = gate or up, dgate = gate,
// dup = up) is safe — hence no __restrict__ on the aliasable pointers.
#include "cuda/check.h"
#include "cuda/kernels.h"

namespace lora {

namespace {

constexpr int kThreads = 256;
constexpr int64_t kMaxBlocks = 65536;  // grid-stride beyond this: plenty to fill any GPU

dim3 grid_for(int64_t n) {
  const int64_t b = (n + kThreads - 1) / kThreads;
  return dim3(static_cast<unsigned>(b < kMaxBlocks ? b : kMaxBlocks));
}

__global__ void swiglu_fwd_kernel(const float* gate, const float* up, float* out, int64_t n) {
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const float g = gate[i];
    out[i] = g / (1.0f + expf(-g)) * up[i];
  }
}

__global__ void swiglu_bwd_kernel(const float* gate, const float* up, const float* __restrict__ dout, float* dgate,
                                  float* dup, int64_t n) {
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const float g = gate[i], u = up[i], d = dout[i];
    const float s = 1.0f / (1.0f + expf(-g));
    dgate[i] = d * u * s * (1.0f + g * (1.0f - s));
    dup[i] = d * g * s;
  }
}

__global__ void add_kernel(float* __restrict__ y, const float* __restrict__ x, int64_t n) {
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    y[i] += x[i];
}

}  // namespace

void cuda_swiglu_fwd(const float* gate, const float* up, float* out, int64_t numel, cudaStream_t stream) {
  if (numel < 0) cuda_fail(cudaErrorInvalidValue, "cuda_swiglu_fwd: negative size", __FILE__, __LINE__);
  if (numel == 0) return;
  swiglu_fwd_kernel<<<grid_for(numel), kThreads, 0, stream>>>(gate, up, out, numel);
  LORA_CUDA_CHECK(cudaGetLastError());
}

void cuda_swiglu_bwd(const float* gate, const float* up, const float* dout, float* dgate, float* dup, int64_t numel,
                     cudaStream_t stream) {
  if (numel < 0) cuda_fail(cudaErrorInvalidValue, "cuda_swiglu_bwd: negative size", __FILE__, __LINE__);
  if (numel == 0) return;
  swiglu_bwd_kernel<<<grid_for(numel), kThreads, 0, stream>>>(gate, up, dout, dgate, dup, numel);
  LORA_CUDA_CHECK(cudaGetLastError());
}

void cuda_add_fwd(float* y, const float* x, int64_t numel, cudaStream_t stream) {
  if (numel < 0) cuda_fail(cudaErrorInvalidValue, "cuda_add_fwd: negative size", __FILE__, __LINE__);
  if (numel == 0) return;
  add_kernel<<<grid_for(numel), kThreads, 0, stream>>>(y, x, numel);
  LORA_CUDA_CHECK(cudaGetLastError());
}

}  // namespace lora
