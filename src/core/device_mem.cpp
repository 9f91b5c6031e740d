// Device memory dispatch (core/device_mem.h).
#include "core/device_mem.h"

#include <array>
#include <cstdlib>
#include <cstring>

#include "core/error.h"

namespace lora {

namespace {

std::array<DeviceMemFns, 2>& table() {
  static std::array<DeviceMemFns, 2> t{};
  return t;
}

const DeviceMemFns& fns_of(Device dev) {
  const DeviceMemFns& f = table()[size_t(dev)];
  LORA_CHECK(f.alloc != nullptr, "no memory functions registered for device {}", int(dev));
  return f;
}

}  // namespace

void device_mem_register(Device dev, const DeviceMemFns& fns) {
  LORA_CHECK(dev != DEVICE_CPU, "the CPU's memory functions are built in");
  table()[size_t(dev)] = fns;
}

bool device_mem_available(Device dev) { return dev == DEVICE_CPU || table()[size_t(dev)].alloc != nullptr; }

std::shared_ptr<void> device_alloc(Device dev, size_t n) {
  if (dev == DEVICE_CPU) {
    auto buf = std::make_shared<Buffer>(n);
    return std::shared_ptr<void>(buf, buf->data());
  }
  const DeviceMemFns& f = fns_of(dev);
  void* p = f.alloc(n == 0 ? 1 : n);
  return std::shared_ptr<void>(p, f.free);
}

void device_copy(void* dst, Device dst_dev, const void* src, Device src_dev, size_t n) {
  if (n == 0) return;
  if (dst_dev == DEVICE_CPU && src_dev == DEVICE_CPU) {
    std::memmove(dst, src, n);
    return;
  }
  const Device gpu = dst_dev != DEVICE_CPU ? dst_dev : src_dev;
  const CopyKind kind = src_dev == DEVICE_CPU ? COPY_H2D : (dst_dev == DEVICE_CPU ? COPY_D2H : COPY_D2D);
  fns_of(gpu).copy(dst, src, n, kind);
}

void device_zero(void* p, Device dev, size_t n) {
  if (n == 0) return;
  if (dev == DEVICE_CPU) {
    std::memset(p, 0, n);
    return;
  }
  fns_of(dev).zero(p, n);
}

OwnedTensor tensor_alloc_on(Device dev, DType dtype, std::initializer_list<int64_t> shape) {
  int64_t n = 1;
  for (auto s : shape) n *= s;
  OwnedTensor o;
  o.buf = device_alloc(dev, size_t(dtype_nbytes(dtype, n)));
  o.t = tensor_view(o.buf.get(), dtype, shape.begin(), int(shape.size()), dev);
  return o;
}

void tensor_copy(const Tensor& dst, const Tensor& src) {
  LORA_CHECK(dst.is_contiguous() && src.is_contiguous(), "tensor_copy needs contiguous tensors");
  LORA_CHECK(dst.dtype == src.dtype && dst.numel() == src.numel(), "tensor_copy {} {} <- {} {}",
             dtype_name(dst.dtype), dst.shape_str(), dtype_name(src.dtype), src.shape_str());
  device_copy(dst.data, dst.device, src.data, src.device, size_t(src.nbytes()));
}

void tensor_zero(const Tensor& t) {
  LORA_CHECK(t.is_contiguous(), "tensor_zero needs a contiguous tensor");
  device_zero(t.data, t.device, size_t(t.nbytes()));
}

OwnedTensor tensor_to_host(const Tensor& t) {
  OwnedTensor o = tensor_alloc(t.dtype, t.shape.data(), t.ndim);
  tensor_copy(o.t, t);
  return o;
}

std::vector<float> tensor_read_f32(const Tensor& t) {
  LORA_CHECK(t.dtype == DTYPE_F32, "tensor_read_f32 of a {} tensor", dtype_name(t.dtype));
  std::vector<float> v(size_t(t.numel()));
  device_copy(v.data(), DEVICE_CPU, t.data, t.device, v.size() * 4);
  return v;
}

}  // namespace lora
