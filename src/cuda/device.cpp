// The CUDA device context (see device.h) and the failure path of LORA_CUDA_CHECK.
#include "cuda/device.h"

#include <fmt/format.h>

#include "core/error.h"
#include "cuda/check.h"
#include "cuda/gemm.h"

namespace lora {

void cuda_fail(cudaError_t err, const char* expr, const char* file, int line) {
  throw InternalError(fmt::format("CUDA error {} ({}) in {} at {}:{}", cudaGetErrorName(err),
                                  cudaGetErrorString(err), expr, file, line));
}

int cuda_device_count() {
  int n = 0;
  const cudaError_t err = cudaGetDeviceCount(&n);
  if (err != cudaSuccess) {
    (void)cudaGetLastError();  // no driver / no device is not an error here; clear the sticky state
    return 0;
  }
  return n;
}

std::unique_ptr<CudaDevice> cuda_device_open(int index) {
  const int n = cuda_device_count();
  if (index < 0 || index >= n)
    fail_input(fmt::format("cuda:{}", index), fmt::format("no such CUDA device ({} visible)", n),
               "check nvidia-smi and CUDA_VISIBLE_DEVICES");
  auto dev = std::make_unique<CudaDevice>();
  dev->index = index;
  LORA_CUDA_CHECK(cudaSetDevice(index));
  cudaDeviceProp prop{};
  LORA_CUDA_CHECK(cudaGetDeviceProperties(&prop, index));
  dev->name = prop.name;
  dev->sm_count = prop.multiProcessorCount;
  dev->cc_major = prop.major;
  dev->cc_minor = prop.minor;
  dev->total_memory = int64_t(prop.totalGlobalMem);
  LORA_CUDA_CHECK(cudaStreamCreateWithFlags(&dev->stream, cudaStreamNonBlocking));
  dev->gemm.reset(gemm_context_create(*dev));
  return dev;
}

CudaDevice::~CudaDevice() {
  // Destructors must not throw: errors here are ignored (the process is tearing the device down).
  if (index >= 0) (void)cudaSetDevice(index);
  gemm.reset();
  if (stream) (void)cudaStreamDestroy(stream);
}

void cuda_device_use(const CudaDevice& dev) { LORA_CUDA_CHECK(cudaSetDevice(dev.index)); }

void cuda_device_sync(CudaDevice& dev) {
  cuda_device_use(dev);
  LORA_CUDA_CHECK(cudaStreamSynchronize(dev.stream));
}

std::string cuda_device_describe(const CudaDevice& dev) {
  int driver = 0, runtime = 0;
  LORA_CUDA_CHECK(cudaDriverGetVersion(&driver));
  LORA_CUDA_CHECK(cudaRuntimeGetVersion(&runtime));
  return fmt::format("cuda:{} {}, sm_{}{}, {} SMs, {:.1f} GiB, driver {}.{}, runtime {}.{}", dev.index,
                     dev.name, dev.cc_major, dev.cc_minor, dev.sm_count,
                     double(dev.total_memory) / (1024.0 * 1024.0 * 1024.0), driver / 1000,
                     (driver % 1000) / 10, runtime / 1000, (runtime % 1000) / 10);
}

}  // namespace lora
