// Check macros for the CUDA backend. Every CUDA runtime and cuBLAS(Lt) call goes through one of these:
// on failure they throw lora::InternalError naming the expression, the error's name and text, and
// file:line (a failed CUDA call is a bug or a broken device, never bad user input).
// cublasLt.h is included only by src/cuda/gemm.*, so LORA_CUBLAS_CHECK takes the status as an int
// (CUBLAS_STATUS_SUCCESS is 0) and its failure path, which names the status, lives in gemm.cpp.
#pragma once
#include <cuda_runtime.h>

namespace lora {

[[noreturn]] void cuda_fail(cudaError_t err, const char* expr, const char* file, int line);
[[noreturn]] void cublas_fail(int status, const char* expr, const char* file, int line);

}  // namespace lora

#define LORA_CUDA_CHECK(expr)                                                        \
  do {                                                                               \
    const cudaError_t lora_cuda_err_ = (expr);                                       \
    if (lora_cuda_err_ != cudaSuccess) ::lora::cuda_fail(lora_cuda_err_, #expr, __FILE__, __LINE__); \
  } while (0)

#define LORA_CUBLAS_CHECK(expr)                                                      \
  do {                                                                               \
    const int lora_cublas_st_ = static_cast<int>(expr);                              \
    if (lora_cublas_st_ != 0) ::lora::cublas_fail(lora_cublas_st_, #expr, __FILE__, __LINE__); \
  } while (0)
