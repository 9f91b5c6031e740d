// Arena: one allocation made at start-up, carved into tensors by a bump pointer. Used to plan
// activation and scratch memory once, so nothing is allocated inside a step. reset() reuses it.
// The memory lives on one Device (host by default); the tensors it hands out carry that device.
#pragma once
#include <cstddef>
#include <initializer_list>

#include <memory>

#include "core/tensor.h"

namespace lora {

class Arena {
 public:
  Arena() = default;
  explicit Arena(size_t capacity, Device dev = DEVICE_CPU);
  // 64-byte aligned; throws InternalError when the plan was too small (a bug, not user input).
  void* alloc_bytes(size_t n);
  Tensor alloc(DType dtype, std::initializer_list<int64_t> shape);
  void reset() { used_ = 0; }
  size_t used() const { return used_; }
  size_t peak() const { return peak_; }
  size_t capacity() const { return size_; }
  Device device() const { return dev_; }

 private:
  std::shared_ptr<void> mem_;
  size_t size_ = 0;
  Device dev_ = DEVICE_CPU;
  size_t used_ = 0;
  size_t peak_ = 0;
};

}  // namespace lora
