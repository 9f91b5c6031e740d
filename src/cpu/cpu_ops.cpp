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

  void rmsnorm_bwd(const Tensor& x, const Tensor& w, float eps, const Tensor& dy, Tensor& dx, Tensor* dw) override {
    cpu::rmsnorm_bwd(x, w, eps, dy, dx, dw);
  }
  void rope_bwd(Tensor& dx, const int32_t* pos, const RopeTable& rope) override { cpu::rope_bwd(dx, pos, rope); }
  void attention_train_fwd(const Tensor& q, const Tensor& k, const Tensor& v, Tensor& out, Tensor& lse) override {
    cpu::attention_train_fwd(q, k, v, out, lse);
  }
  void attention_bwd(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& out, const Tensor& lse,
                     const Tensor& dout, Tensor& dq, Tensor& dk, Tensor& dv) override {
    cpu::attention_bwd(q, k, v, out, lse, dout, dq, dk, dv);
  }
  void swiglu_bwd(const Tensor& gate, const Tensor& up, const Tensor& dout, Tensor& dgate, Tensor& dup) override {
    cpu::swiglu_bwd(gate, up, dout, dgate, dup);
  }
  void linear_lora_fwd(const Tensor& x, const Tensor& w, const Tensor* bias, const LoraOperand* lo, LoraSaved* saved,
                       Tensor& y) override {
    cpu::linear_lora_fwd(x, w, bias, lo, saved, y);
  }
  void linear_bwd(const Tensor& x, const Tensor& w, const Tensor& dy, Tensor* dx, bool dx_accumulate, Tensor* dw,
                  Tensor* dbias, const LoraOperand* lo, const LoraSaved* saved) override {
    cpu::linear_bwd(x, w, dy, dx, dx_accumulate, dw, dbias, lo, saved);
  }
  using Ops::xent_fwd_bwd;
  void xent_fwd_bwd(Tensor& logits, const int32_t* targets, const float* mask, const float* dscale, bool grad,
                    float* row_loss) override {
    cpu::xent_fwd_bwd(logits, targets, mask, *dscale, grad, row_loss);
  }
  void optimizer_update(const OptimizerSlot* slots, int64_t n, const OptimizerStep& s) override {
    cpu::optimizer_update(slots, n, s);
  }
};

}  // namespace

Ops& cpu_ops() {
  static CpuOps ops;
  return ops;
}

}  // namespace lora
