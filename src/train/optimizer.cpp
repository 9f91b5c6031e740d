// Adam / AdamW / SGD with MLX's formulas and fp32 operation order (see optimizer.h).
#include "train/optimizer.h"

#include <cmath>

#include "core/device_mem.h"
#include "core/error.h"
#include "cpu/cpu_ops.h"

// MLX rounds every multiply and add separately; no fused multiply-add (the CUDA update does the same).
#pragma GCC optimize("fp-contract=off")

namespace lora {

const char* optimizer_kind_name(OptimizerKind k) {
  switch (k) {
    case OPT_ADAM: return "adam";
    case OPT_ADAMW: return "adamw";
    case OPT_SGD: return "sgd";
  }
  return "?";
}

bool optimizer_kind_from_name(const std::string& s, OptimizerKind* out) {
  for (OptimizerKind k : {OPT_ADAM, OPT_ADAMW, OPT_SGD})
    if (s == optimizer_kind_name(k)) return *out = k, true;
  return false;
}

OptimizerConfig optimizer_defaults(OptimizerKind k) {
  OptimizerConfig c;
  c.kind = k;
  if (k == OPT_ADAMW) c.weight_decay = 0.01;
  return c;
}

Optimizer::Optimizer(const OptimizerConfig& cfg, const Adapter& a) : cfg_(cfg) {
  const bool adam = cfg.kind != OPT_SGD;
  const bool sgd_v = cfg.kind == OPT_SGD && cfg.momentum > 0;
  for (const TrainParam& p : a.params) {
    names_.push_back(p.name);
    const Device dev = p.value.t.device;
    const int64_t n = p.value.t.numel();
    auto slot = [&](bool used) {
      OwnedTensor o;
      if (!used) return o;
      o = tensor_alloc_on(dev, DTYPE_F32, {n});
      tensor_zero(o.t);
      return o;
    };
    m_.push_back(slot(adam));
    v_.push_back(slot(adam || sgd_v));
  }
}

void Optimizer::update(Adapter& a, float lr, Ops& ops) {
  LORA_CHECK(a.params.size() == m_.size(), "optimizer built for {} params, adapter has {}", m_.size(), a.params.size());
  ++step_;
  OptimizerStep s;
  s.rule = cfg_.kind == OPT_SGD ? OptimizerStep::RULE_SGD
                                : (cfg_.kind == OPT_ADAMW ? OptimizerStep::RULE_ADAMW : OptimizerStep::RULE_ADAM);
  s.lr = lr;
  // Python floats become fp32 scalars in MLX; (1 - b) is computed in double first.
  s.b1 = float(cfg_.beta1);
  s.b2 = float(cfg_.beta2);
  s.eps = float(cfg_.eps);
  s.omb1 = float(1.0 - cfg_.beta1);
  s.omb2 = float(1.0 - cfg_.beta2);
  s.wd = float(cfg_.weight_decay);
  // Bias correction (off by default, as MLX): c1 = lr / (1 - b1^t), c2 = rsqrt(1 - b2^t).
  s.c1 = float(lr / (1.0f - std::pow(s.b1, float(step_))));
  s.c2 = 1.0f / std::sqrt(1.0f - std::pow(s.b2, float(step_)));
  s.decay = 1.0f - lr * s.wd;  // adamw: parameter * (1 - lr·wd)
  s.mom = float(cfg_.momentum);
  s.damp = float(1.0 - cfg_.dampening);
  s.dampening = cfg_.dampening > 0;
  s.bias_correction = cfg_.bias_correction;
  s.nesterov = cfg_.nesterov;
  slots_.resize(a.params.size());
  for (size_t i = 0; i < a.params.size(); ++i) {
    TrainParam& p = a.params[i];
    LORA_CHECK(p.grad.t.numel() == p.value.t.numel(), "grad of {} has the wrong size", p.name);
    LORA_CHECK(p.value.t.device == ops.device(), "param {} is not on the optimizer's backend", p.name);
    slots_[i] = OptimizerSlot{p.value.t, p.grad.t, m_[i].t, v_[i].t};
  }
  ops.optimizer_update(slots_.data(), int64_t(slots_.size()), s);
}

void Optimizer::update(Adapter& a, float lr) { update(a, lr, cpu_ops()); }

std::vector<OptimizerStateTensor> Optimizer::state_tensors() {
  std::vector<OptimizerStateTensor> out;
  for (size_t i = 0; i < names_.size(); ++i) {
    if (m_[i].t.defined()) out.push_back({"m." + names_[i], m_[i].t});
    if (v_[i].t.defined()) out.push_back({"v." + names_[i], v_[i].t});
  }
  return out;
}

}  // namespace lora
