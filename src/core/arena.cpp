// Bump allocator over one Buffer.
#include "core/arena.h"

#include <algorithm>

#include "core/error.h"

namespace lora {

void* Arena::alloc_bytes(size_t n) {
  const size_t aligned = (n + 63) / 64 * 64;
  LORA_CHECK(used_ + aligned <= buf_.size(), "arena of {} bytes exhausted (asked {} more, {} used)",
             buf_.size(), aligned, used_);
  void* p = static_cast<char*>(buf_.data()) + used_;
  used_ += aligned;
  peak_ = std::max(peak_, used_);
  return p;
}

Tensor Arena::alloc(DType dtype, std::initializer_list<int64_t> shape) {
  int64_t n = 1;
  for (auto s : shape) n *= s;
  return tensor_view(alloc_bytes(size_t(dtype_nbytes(dtype, n))), dtype, shape);
}

}  // namespace lora
