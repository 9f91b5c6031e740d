// cuda_spin: a one-thread kernel that keeps the GPU busy for a given time. The op profiler
// (LORA_CUDA_PROFILE in cuda_ops.cpp) queues one before each op so that the host has queued the op's
// kernels before the GPU reaches them: the events around the op then time the GPU alone, not the launch.
// Only cuda/check.h and CUDA headers here.
#include <cuda_runtime.h>

#include <cstdint>

#include "cuda/check.h"

namespace lora {

namespace {

__global__ void spin_kernel(uint64_t ns) {
  uint64_t t0 = 0, t = 0;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t0));
  do {
    __nanosleep(1000);
    asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
  } while (t - t0 < ns);
}

}  // namespace

void cuda_spin(double microseconds, cudaStream_t stream) {
  spin_kernel<<<1, 1, 0, stream>>>(uint64_t(microseconds * 1e3));
  LORA_CUDA_CHECK(cudaGetLastError());
}

}  // namespace lora
