// The CPU backend: the Ops class (ops/ops.h) assembled from one file per op family (kernels.h).
#include "cpu/cpu_ops.h"

#include "cpu/kernels.h"

namespace lora {

namespace {

class CpuOps final : public Ops {
 public:
  Device device() const override { return DEVICE_CPU; }
  void embedding_fwd(const int32_t* ids, int64_t n, const Tensor& table, Tensor& out) override {
    cpu::embedding_fwd(ids, n, table, out);
  }
  void rmsnorm_fwd(const Tensor& x, const Tensor& w, float eps, Tensor& y) override { cpu::rmsnorm_fwd(x, w, eps, y); }
  void linear_fwd(const Tensor& x, const Tensor& w, const Tensor* bias, Tensor& y) override {
    cpu::linear_fwd(x, w, bias, y);
  }
  void rope_fwd(Tensor& x, const int32_t* pos, const RopeTable& rope) override { cpu::rope_fwd(x, pos, rope); }
  void attention_fwd(const Tensor& q, const Tensor& k, const Tensor& v, int64_t pos0, Tensor& out) override {
    cpu::attention_fwd(q, k, v, pos0, out);
  }
  void swiglu_fwd(const Tensor& gate, const Tensor& up, Tensor& out) override { cpu::swiglu_fwd(gate, up, out); }
  void add_fwd(Tensor& y, const Tensor& x) override { cpu::add_fwd(y, x); }
};

}  // namespace

Ops& cpu_ops() {
  static CpuOps ops;
  return ops;
}

}  // namespace lora
