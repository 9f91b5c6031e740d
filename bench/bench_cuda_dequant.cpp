// The GPU dequantizers (cuda/dequant.h) on TinyLlama's shapes: a small and a square weight (256 and
// 2048 rows), the largest FFN weight (5632, 2048) and the lm_head (32000, 2048), for every quantized type,
// to bf16 (the QLoRA linear's path) and to f32. Timed with CUDA events: median of 20 calls after 3
// warm-up calls. Prints µs, the bytes moved (quantized bytes read + output written) per second, and a
// device-to-device cudaMemcpy of the bf16 output's size (read + write) as the bandwidth ceiling; "x copy"
// is the bf16 time over that copy's. Built only with the CUDA backend.
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <functional>
#include <vector>

#include "core/dtype.h"
#include "core/quant.h"
#include "core/rng.h"
#include "cuda/check.h"
#include "cuda/dequant.h"
#include "cuda/device.h"

namespace {

using namespace lora;

// Median µs of fn over 20 timed calls after 3 warm-up calls.
double time_us(cudaStream_t s, const std::function<void()>& fn) {
  cudaEvent_t a, b;
  LORA_CUDA_CHECK(cudaEventCreate(&a));
  LORA_CUDA_CHECK(cudaEventCreate(&b));
  std::vector<double> us;
  for (int r = 0; r < 23; ++r) {
    LORA_CUDA_CHECK(cudaEventRecord(a, s));
    fn();
    LORA_CUDA_CHECK(cudaEventRecord(b, s));
    LORA_CUDA_CHECK(cudaEventSynchronize(b));
    float ms = 0;
    LORA_CUDA_CHECK(cudaEventElapsedTime(&ms, a, b));
    if (r >= 3) us.push_back(1e3 * double(ms));
  }
  LORA_CUDA_CHECK(cudaEventDestroy(a));
  LORA_CUDA_CHECK(cudaEventDestroy(b));
  std::sort(us.begin(), us.end());
  return us[us.size() / 2];
}

}  // namespace

int main() {
  if (cuda_device_count() == 0) {
    std::printf("bench_cuda_dequant: no CUDA device\n");
    return 0;
  }
  auto dev = cuda_device_open(0);
  cudaStream_t s = dev->stream;
  std::printf("%s\n", cuda_device_describe(*dev).c_str());
  const int64_t kCols = 2048, kMaxRows = 32000, kPoolRows = 64;
  void *src = nullptr, *dst = nullptr, *dst2 = nullptr;
  LORA_CUDA_CHECK(cudaMalloc(&src, size_t(dtype_nbytes(DTYPE_Q8_0, kMaxRows * kCols))));  // the widest type
  LORA_CUDA_CHECK(cudaMalloc(&dst, size_t(kMaxRows * kCols) * 4));
  LORA_CUDA_CHECK(cudaMalloc(&dst2, size_t(kMaxRows * kCols) * 2));

  const int64_t kRows[] = {256, 2048, 5632, kMaxRows};
  double copy_us[4];
  std::printf("\n| rows x cols | memcpy bf16-size D2D us | GB/s |\n|--|--:|--:|\n");
  for (int k = 0; k < 4; ++k) {
    const int64_t rows = kRows[k];
    const size_t bytes = size_t(rows * kCols) * 2;
    const double us = time_us(s, [&] { LORA_CUDA_CHECK(cudaMemcpyAsync(dst2, dst, bytes, cudaMemcpyDeviceToDevice, s)); });
    copy_us[k] = us;
    std::printf("| %lld x %lld | %.1f | %.0f |\n", (long long)rows, (long long)kCols, us, 2.0 * double(bytes) / us / 1e3);
  }

  std::printf("\n| type | rows x cols | bf16 us | bf16 GB/s | x copy | f32 us | f32 GB/s |\n"
              "|--|--|--:|--:|--:|--:|--:|\n");
  Rng rng(7);
  std::vector<float> x(size_t(kPoolRows * kCols));
  for (auto& v : x) v = 2.0f * rng.uniform() - 1.0f;
  for (DType t : {DTYPE_Q4_0, DTYPE_Q4_1, DTYPE_Q5_0, DTYPE_Q5_1, DTYPE_Q8_0, DTYPE_Q4_K, DTYPE_Q5_K, DTYPE_Q6_K}) {
    // kPoolRows quantized rows, repeated to fill kMaxRows (the content does not change the speed).
    const int64_t row_bytes = dtype_nbytes(t, kCols);
    std::vector<uint8_t> pool(size_t(kPoolRows * row_bytes)), host(size_t(kMaxRows * row_bytes));
    for (int64_t r = 0; r < kPoolRows; ++r) quant_quantize_row(t, x.data() + r * kCols, pool.data() + r * row_bytes, kCols);
    for (int64_t r = 0; r < kMaxRows; ++r)
      std::memcpy(host.data() + r * row_bytes, pool.data() + (r % kPoolRows) * row_bytes, size_t(row_bytes));
    LORA_CUDA_CHECK(cudaMemcpy(src, host.data(), host.size(), cudaMemcpyHostToDevice));
    for (int k = 0; k < 4; ++k) {
      const int64_t rows = kRows[k];
      const double in_bytes = double(rows * row_bytes), n = double(rows * kCols);
      const double us_bf16 = time_us(s, [&] {
        cuda_dequantize_bf16(t, src, static_cast<__nv_bfloat16*>(dst), rows, kCols, kCols, s);
      });
      const double us_f32 = time_us(s, [&] { cuda_dequantize_f32(t, src, static_cast<float*>(dst), rows, kCols, s); });
      std::printf("| %s | %lld x %lld | %.1f | %.0f | %.2f | %.1f | %.0f |\n", dtype_name(t), (long long)rows,
                  (long long)kCols, us_bf16, (in_bytes + 2 * n) / us_bf16 / 1e3, us_bf16 / copy_us[k], us_f32,
                  (in_bytes + 4 * n) / us_f32 / 1e3);
    }
  }
  LORA_CUDA_CHECK(cudaFree(src));
  LORA_CUDA_CHECK(cudaFree(dst));
  LORA_CUDA_CHECK(cudaFree(dst2));
  return 0;
}
