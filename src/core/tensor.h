// Tensor: a non-owning view (data pointer, dtype, shape, strides, device). Storage is owned elsewhere
// (a Buffer, an Arena, or a memory-mapped file). Shapes are row-major, outermost first, like PyTorch:
// a linear weight is (out, in), activations are (T, C) or (B, T, C). Strides count elements.
// Quantized tensors are only ever contiguous (blocks run along the last dimension).
#pragma once
#include <array>
#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <memory>
#include <string>

#include "core/dtype.h"

namespace lora {

enum class Device : uint8_t { DEVICE_CPU, DEVICE_CUDA };
using enum Device;

constexpr int kMaxDims = 4;

struct Tensor {
  void* data = nullptr;
  DType dtype = DTYPE_F32;
  Device device = DEVICE_CPU;
  int ndim = 0;
  std::array<int64_t, kMaxDims> shape{1, 1, 1, 1};
  std::array<int64_t, kMaxDims> stride{0, 0, 0, 0};

  bool defined() const { return data != nullptr; }
  int64_t numel() const;
  int64_t dim(int i) const { return shape[i < 0 ? i + ndim : i]; }
  int64_t nbytes() const;  // contiguous size in bytes
  bool is_contiguous() const;
  std::string shape_str() const;  // "(2048, 256)"

  template <class T> T* ptr() const { return static_cast<T*>(data); }
  float* f32() const { return static_cast<float*>(data); }

  // A view of rows [begin, end) of the outermost dimension.
  Tensor slice_rows(int64_t begin, int64_t end) const;
  // Same data, new contiguous shape (numel must match).
  Tensor reshape(std::initializer_list<int64_t> new_shape) const;
};

// A contiguous view over existing memory.
Tensor tensor_view(void* data, DType dtype, std::initializer_list<int64_t> shape, Device dev = DEVICE_CPU);
Tensor tensor_view(void* data, DType dtype, const int64_t* shape, int ndim, Device dev = DEVICE_CPU);

// Owning, 64-byte aligned host memory.
class Buffer {
 public:
  Buffer() = default;
  explicit Buffer(size_t nbytes);
  void* data() const { return ptr_.get(); }
  size_t size() const { return size_; }

 private:
  struct Free { void operator()(void* p) const; };
  std::unique_ptr<void, Free> ptr_;
  size_t size_ = 0;
};

// A tensor together with the memory that owns it (a host Buffer, or device memory from
// core/device_mem.h's device_alloc).
struct OwnedTensor {
  std::shared_ptr<void> buf;
  Tensor t;
};
OwnedTensor tensor_alloc(DType dtype, std::initializer_list<int64_t> shape);
OwnedTensor tensor_alloc(DType dtype, const int64_t* shape, int ndim);

}  // namespace lora
