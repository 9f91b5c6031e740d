// cuda_xent_fwd_bwd (train_kernels.h): softmax cross-entropy fused with its gradient, the CPU's xent.cpp
// on the GPU. One block per row of logits (R, V); three passes over the row, each coalesced: the max,
// Σ exp(x - max) (f32 exponentials summed in double per thread, then a double block sum), and, for the
// gradient, exp(x - float(lse)) · c rewritten in place. When V % 4 == 0 and the logits are 16-byte
// aligned (every row then is), the passes read and write float4.
#include <cstdint>

#include "cuda/check.h"
#include "cuda/train_kernels.h"

namespace lora {

namespace {

constexpr int kMaxThreads = 512;

// Max / sum over the block (blockDim.x a multiple of 32, at most 1024); every thread gets the result.
// The trailing barrier lets the caller reuse sh at once.
__device__ float block_max(float v, float* sh) {
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  const int warp = int(threadIdx.x) / 32, lane = int(threadIdx.x) % 32;
  if (lane == 0) sh[warp] = v;
  __syncthreads();
  v = lane < int(blockDim.x) / 32 ? sh[lane] : -INFINITY;
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  __syncthreads();
  return v;
}

__device__ double block_sum(double v, double* sh) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  const int warp = int(threadIdx.x) / 32, lane = int(threadIdx.x) % 32;
  if (lane == 0) sh[warp] = v;
  __syncthreads();
  v = lane < int(blockDim.x) / 32 ? sh[lane] : 0.0;
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  __syncthreads();
  return v;
}

// The gradient of one element: exp(x - lsef) · c, minus c at the target (the CPU rounds the product,
// stores it, then subtracts: __fmul_rn/__fsub_rn keep nvcc from fusing the two).
__device__ __forceinline__ float xent_grad(float x, float lsef, float c, bool is_target) {
  float p = __fmul_rn(expf(x - lsef), c);
  if (is_target) p = __fsub_rn(p, c);
  return p;
}

template <bool kVec4>
__global__ void xent_kernel(float* __restrict__ logits, int64_t V, const int32_t* __restrict__ targets,
                            const float* __restrict__ mask, float dscale, const float* __restrict__ dscale_dev,
                            bool grad, float* __restrict__ row_loss) {
  __shared__ float shf[32];
  __shared__ double shd[32];
  const int64_t r = blockIdx.x;
  float* row = logits + r * V;  // (V)
  const int64_t t = targets[r];
  float mk = mask ? mask[r] : 1.0f;
  if (t < 0 || t >= V) mk = 0.0f;  // the host rejects these first; never read out of bounds
  const int tid = int(threadIdx.x), nt = int(blockDim.x);
  if (mk == 0.0f) {  // the same for the whole block: no barrier below is skipped by part of it
    if (grad)
      for (int64_t j = tid; j < V; j += nt) row[j] = 0.0f;
    if (tid == 0) row_loss[r] = 0.0f;
    return;
  }
  const float xt = row[t];  // read before any thread rewrites the row (after the barriers below)
  const int64_t V4 = V / 4;
  float4* row4 = reinterpret_cast<float4*>(row);

  float mx = -INFINITY;
  if constexpr (kVec4) {
    for (int64_t j = tid; j < V4; j += nt) {
      const float4 q = row4[j];
      mx = fmaxf(mx, fmaxf(fmaxf(q.x, q.y), fmaxf(q.z, q.w)));
    }
  } else {
    for (int64_t j = tid; j < V; j += nt) mx = fmaxf(mx, row[j]);
  }
  mx = block_max(mx, shf);

  double s = 0.0;
  if constexpr (kVec4) {
    for (int64_t j = tid; j < V4; j += nt) {
      const float4 q = row4[j];
      s += double(expf(q.x - mx));
      s += double(expf(q.y - mx));
      s += double(expf(q.z - mx));
      s += double(expf(q.w - mx));
    }
  } else {
    for (int64_t j = tid; j < V; j += nt) s += double(expf(row[j] - mx));
  }
  s = block_sum(s, shd);
  const double lse = double(mx) + log(s);
  if (tid == 0) row_loss[r] = float(double(mk) * (lse - double(xt)));
  if (!grad) return;

  const float c = mk * (dscale_dev ? *dscale_dev : dscale);
  const float lsef = float(lse);
  if constexpr (kVec4) {
    for (int64_t j = tid; j < V4; j += nt) {
      float4 q = row4[j];
      const int64_t j0 = 4 * j;
      q.x = xent_grad(q.x, lsef, c, j0 == t);
      q.y = xent_grad(q.y, lsef, c, j0 + 1 == t);
      q.z = xent_grad(q.z, lsef, c, j0 + 2 == t);
      q.w = xent_grad(q.w, lsef, c, j0 + 3 == t);
      row4[j] = q;
    }
  } else {
    for (int64_t j = tid; j < V; j += nt) row[j] = xent_grad(row[j], lsef, c, j == t);
  }
}

}  // namespace

void cuda_xent_fwd_bwd(float* logits, int64_t R, int64_t V, const int32_t* targets, const float* mask, float dscale,
                       bool grad, float* row_loss, cudaStream_t stream, const float* dscale_dev) {
  if (R < 0 || V < 0 || R > int64_t(0x7fffffff) || V > int64_t(0x7fffffff))
    cuda_fail(cudaErrorInvalidValue, "cuda_xent_fwd_bwd: negative or too large size", __FILE__, __LINE__);
  if (R == 0) return;
  if (!targets || !row_loss || (V > 0 && !logits))
    cuda_fail(cudaErrorInvalidValue, "cuda_xent_fwd_bwd: null pointer", __FILE__, __LINE__);
  const bool vec4 = V % 4 == 0 && reinterpret_cast<uintptr_t>(logits) % 16 == 0;
  const int64_t units = vec4 ? V / 4 : V;  // elements (or float4s) per row
  const int64_t want = (units + 31) / 32 * 32;
  const unsigned threads = unsigned(want < 32 ? 32 : (want > kMaxThreads ? kMaxThreads : want));
  const dim3 grid(static_cast<unsigned>(R));
  if (vec4)
    xent_kernel<true><<<grid, threads, 0, stream>>>(logits, V, targets, mask, dscale, dscale_dev, grad, row_loss);
  else
    xent_kernel<false><<<grid, threads, 0, stream>>>(logits, V, targets, mask, dscale, dscale_dev, grad, row_loss);
  LORA_CUDA_CHECK(cudaGetLastError());
}

}  // namespace lora
