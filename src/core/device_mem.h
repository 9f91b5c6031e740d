// Memory on a Device, reachable from every layer without knowing the backend: allocation, copies
// between host and device, zeroing. The CPU entries are built in (aligned malloc, memcpy, memset);
// a GPU backend registers its own functions once (the CUDA backend does it when a device context is
// opened: src/cuda/device.cpp), so core/model/train code can move tensors with tensor_copy() whatever
// side they live on. Copies involving a device are ordered on that backend's current stream and
// return when the data is usable by the host (device->host waits; host->device stages the source).
#pragma once
#include <cstddef>
#include <initializer_list>
#include <memory>
#include <vector>

#include "core/tensor.h"

namespace lora {

enum CopyKind { COPY_H2D, COPY_D2H, COPY_D2D };

struct DeviceMemFns {
  void* (*alloc)(size_t n) = nullptr;   // throws on failure (out of memory names the size)
  void (*free)(void* p) = nullptr;
  void (*copy)(void* dst, const void* src, size_t n, CopyKind kind) = nullptr;
  void (*zero)(void* p, size_t n) = nullptr;
};

// Registers the functions of a non-CPU device (idempotent).
void device_mem_register(Device dev, const DeviceMemFns& fns);
bool device_mem_available(Device dev);

// n bytes on dev (64-byte aligned on the host), freed when the last owner lets go.
std::shared_ptr<void> device_alloc(Device dev, size_t n);
void device_copy(void* dst, Device dst_dev, const void* src, Device src_dev, size_t n);
void device_zero(void* p, Device dev, size_t n);

// Tensor helpers (contiguous tensors; sizes must match exactly, dtypes too for tensor_copy).
OwnedTensor tensor_alloc_on(Device dev, DType dtype, std::initializer_list<int64_t> shape);
void tensor_copy(const Tensor& dst, const Tensor& src);
void tensor_zero(const Tensor& t);
// A host copy of t (t itself when already on the host is NOT shared: always a fresh buffer).
OwnedTensor tensor_to_host(const Tensor& t);
// Reads a device or host f32 tensor into a vector.
std::vector<float> tensor_read_f32(const Tensor& t);

}  // namespace lora
