// The model's linear-layer GEMMs through gemm_bf16 (cuBLASLt) on the GPU, timed with CUDA events: y (M, out)
// = x (M, in) · W (out, in)ᵀ, bf16 inputs, f32 output, for TinyLlama's shapes and token counts M = 1 (decode),
// 96 (a batch-1 training step), 512 (prefill), 2048 (batch 8 x 256). Prints µs per call (median of 20 after
// 3 warm-up calls), TFLOP/s and the weight-read GB/s. Built only with the CUDA backend.
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdio>
#include <vector>

#include "cuda/check.h"
#include "cuda/device.h"
#include "cuda/gemm.h"

int main() {
  using namespace lora;
  if (cuda_device_count() == 0) {
    std::printf("bench_cuda_gemm: no CUDA device\n");
    return 0;
  }
  auto dev = cuda_device_open(0);
  std::printf("%s\n| M | out | in | us (median) | TFLOP/s | weight GB/s |\n|--:|--:|--:|--:|--:|--:|\n",
              cuda_device_describe(*dev).c_str());
  const int64_t shapes[][2] = {{2048, 2048}, {256, 2048}, {5632, 2048}, {2048, 5632}, {32000, 2048}};
  void *x = nullptr, *w = nullptr, *y = nullptr;
  LORA_CUDA_CHECK(cudaMalloc(&x, size_t(2048) * 5632 * 2));
  LORA_CUDA_CHECK(cudaMalloc(&w, size_t(32000) * 2048 * 2));
  LORA_CUDA_CHECK(cudaMalloc(&y, size_t(2048) * 32000 * 4));
  LORA_CUDA_CHECK(cudaMemset(x, 0, size_t(2048) * 5632 * 2));
  LORA_CUDA_CHECK(cudaMemset(w, 0, size_t(32000) * 2048 * 2));
  cudaEvent_t a, b;
  LORA_CUDA_CHECK(cudaEventCreate(&a));
  LORA_CUDA_CHECK(cudaEventCreate(&b));
  for (int64_t M : {1, 96, 512, 2048})
    for (auto& s : shapes) {
      const int64_t out = s[0], in = s[1];
      std::vector<float> us;
      for (int r = 0; r < 23; ++r) {
        LORA_CUDA_CHECK(cudaEventRecord(a, dev->stream));
        gemm_bf16(*dev, false, true, M, out, in, 1.0f, x, in, w, in, 0.0f, y, DTYPE_F32, out);
        LORA_CUDA_CHECK(cudaEventRecord(b, dev->stream));
        LORA_CUDA_CHECK(cudaEventSynchronize(b));
        float ms = 0;
        LORA_CUDA_CHECK(cudaEventElapsedTime(&ms, a, b));
        if (r >= 3) us.push_back(1e3f * ms);
      }
      std::sort(us.begin(), us.end());
      const double t = us[us.size() / 2];
      std::printf("| %lld | %lld | %lld | %.1f | %.1f | %.0f |\n", (long long)M, (long long)out, (long long)in, t,
                  2.0 * double(M) * double(out) * double(in) / (t * 1e-6) / 1e12,
                  double(out) * double(in) * 2 / (t * 1e-6) / 1e9);
    }
  return 0;
}
