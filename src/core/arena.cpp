// Bump allocator over one allocation (host or device).
#include "core/arena.h"

#include <algorithm>

#include "core/device_mem.h"
#include "core/error.h"

namespace lora {

Arena::Arena(size_t capacity, Device dev) : mem_(device_alloc(dev, capacity)), size_(capacity), dev_(dev) {}

void* Arena::alloc_bytes(size_t n) {
  const size_t aligned = (n + 63) / 64 * 64;
  LORA_CHECK(used_ + aligned <= size_, "arena of {} bytes exhausted (asked {} more, {} used)",
             size_, aligned, used_);
  void* p = static_cast<char*>(mem_.get()) + used_;
  used_ += aligned;
  peak_ = std::max(peak_, used_);
  return p;
}

Tensor Arena::alloc(DType dtype, std::initializer_list<int64_t> shape) {
  int64_t n = 1;
  for (auto s : shape) n *= s;
  return tensor_view(alloc_bytes(size_t(dtype_nbytes(dtype, n))), dtype, shape, dev_);
}

}  // namespace lora
