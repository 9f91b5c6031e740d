// Tensor views and owning buffers.
#include "core/tensor.h"

#include <cstdlib>
#include <new>

#include "core/error.h"

namespace lora {

int64_t Tensor::numel() const {
  int64_t n = 1;
  for (int i = 0; i < ndim; ++i) n *= shape[i];
  return n;
}

int64_t Tensor::nbytes() const { return dtype_nbytes(dtype, numel()); }

bool Tensor::is_contiguous() const {
  int64_t expect = 1;
  for (int i = ndim - 1; i >= 0; --i) {
    if (shape[i] != 1 && stride[i] != expect) return false;
    expect *= shape[i];
  }
  return true;
}

std::string Tensor::shape_str() const {
  std::string s = "(";
  for (int i = 0; i < ndim; ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + ")";
}

Tensor Tensor::slice_rows(int64_t begin, int64_t end) const {
  LORA_CHECK(ndim >= 1 && begin >= 0 && begin <= end && end <= shape[0], "bad slice [{}, {}) of {}", begin,
             end, shape_str());
  Tensor t = *this;
  t.shape[0] = end - begin;
  const int64_t off_elems = begin * stride[0];
  t.data = static_cast<char*>(data) + dtype_nbytes(dtype, off_elems);
  return t;
}

Tensor Tensor::reshape(std::initializer_list<int64_t> new_shape) const {
  LORA_CHECK(is_contiguous(), "reshape of a non-contiguous tensor");
  Tensor t = tensor_view(data, dtype, new_shape, device);
  LORA_CHECK(t.numel() == numel(), "reshape {} -> {} changes the element count", shape_str(), t.shape_str());
  return t;
}

Tensor tensor_view(void* data, DType dtype, const int64_t* shape, int ndim, Device dev) {
  LORA_CHECK(ndim >= 0 && ndim <= kMaxDims, "ndim {} out of range", ndim);
  Tensor t;
  t.data = data;
  t.dtype = dtype;
  t.device = dev;
  t.ndim = ndim;
  int64_t s = 1;
  for (int i = ndim - 1; i >= 0; --i) {
    t.shape[i] = shape[i];
    t.stride[i] = s;
    s *= shape[i];
  }
  return t;
}

Tensor tensor_view(void* data, DType dtype, std::initializer_list<int64_t> shape, Device dev) {
  return tensor_view(data, dtype, shape.begin(), int(shape.size()), dev);
}

void Buffer::Free::operator()(void* p) const { std::free(p); }

Buffer::Buffer(size_t nbytes) : size_(nbytes) {
  const size_t rounded = (nbytes + 63) / 64 * 64;
  void* p = std::aligned_alloc(64, rounded ? rounded : 64);
  if (!p) throw std::bad_alloc();
  ptr_.reset(p);
}

OwnedTensor tensor_alloc(DType dtype, const int64_t* shape, int ndim) {
  int64_t n = 1;
  for (int i = 0; i < ndim; ++i) n *= shape[i];
  auto buf = std::make_shared<Buffer>(size_t(dtype_nbytes(dtype, n)));
  return {std::shared_ptr<void>(buf, buf->data()), tensor_view(buf->data(), dtype, shape, ndim)};
}

OwnedTensor tensor_alloc(DType dtype, std::initializer_list<int64_t> shape) {
  return tensor_alloc(dtype, shape.begin(), int(shape.size()));
}

}  // namespace lora
