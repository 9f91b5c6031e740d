// The CUDA device context: one per GPU. It owns everything that belongs to a device — its stream, the
// cuBLASLt handle with its workspace and cached GEMM plans (behind GemmContext, defined in gemm.cpp so
// that only gemm.* includes cublasLt.h), and later its arenas. Nothing here assumes a single device:
// every entry point that touches the GPU makes ctx.index current first (cuda_device_use), because the
// current device is per host thread.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>
#include <memory>
#include <string>

namespace lora {

struct GemmContext;  // gemm.cpp: cuBLASLt handle, workspace, plan cache
struct GemmContextDeleter {
  void operator()(GemmContext* g) const;
};

struct CudaDevice {
  int index = -1;
  std::string name;         // "NVIDIA H100 80GB HBM3"
  int sm_count = 0;
  int cc_major = 0, cc_minor = 0;  // compute capability
  int64_t total_memory = 0;  // bytes
  cudaStream_t stream = nullptr;  // all work of this context is ordered on it
  std::unique_ptr<GemmContext, GemmContextDeleter> gemm;

  CudaDevice() = default;
  CudaDevice(const CudaDevice&) = delete;
  CudaDevice& operator=(const CudaDevice&) = delete;
  ~CudaDevice();  // makes the device current, frees the GEMM context, destroys the stream
};

// Number of visible CUDA devices; 0 (and no error) when there is no driver or no GPU.
int cuda_device_count();

// Opens device `index` (0 <= index < cuda_device_count()): creates its stream, cuBLASLt handle and
// workspace. Throws lora::Error when the index is out of range, InternalError when a CUDA call fails.
std::unique_ptr<CudaDevice> cuda_device_open(int index);

// Makes the context's device current on the calling thread.
void cuda_device_use(const CudaDevice& dev);

// Waits for all work queued on the context's stream.
void cuda_device_sync(CudaDevice& dev);

// One line: "cuda:0 NVIDIA H100 80GB HBM3, sm_90, 132 SMs, 79.1 GiB, driver 13.0, runtime 13.0".
std::string cuda_device_describe(const CudaDevice& dev);

}  // namespace lora
