// Adam / AdamW / SGD with MLX's formulas and fp32 operation order (see optimizer.h).
#include "train/optimizer.h"

#include <cmath>

#include "core/error.h"

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
    const size_t n = size_t(p.value.t.numel());
    m_.emplace_back(adam ? n : 0, 0.0f);
    v_.emplace_back(adam || sgd_v ? n : 0, 0.0f);
  }
}

void Optimizer::update(Adapter& a, float lr) {
  LORA_CHECK(a.params.size() == m_.size(), "optimizer built for {} params, adapter has {}", m_.size(), a.params.size());
  ++step_;
  // Python floats become fp32 scalars in MLX; (1 - b) is computed in double first.
  const float b1 = float(cfg_.beta1), b2 = float(cfg_.beta2), eps = float(cfg_.eps);
  const float omb1 = float(1.0 - cfg_.beta1), omb2 = float(1.0 - cfg_.beta2);
  const float wd = float(cfg_.weight_decay);
  // Bias correction (off by default, as MLX): c1 = lr / (1 - b1^t), c2 = rsqrt(1 - b2^t).
  const float c1 = float(lr / (1.0f - std::pow(b1, float(step_))));
  const float c2 = 1.0f / std::sqrt(1.0f - std::pow(b2, float(step_)));
  const float decay = 1.0f - lr * wd;  // adamw: parameter * (1 - lr·wd)
  const float mom = float(cfg_.momentum), damp = float(1.0 - cfg_.dampening);
  for (size_t i = 0; i < a.params.size(); ++i) {
    TrainParam& p = a.params[i];
    float* w = p.value.t.f32();
    const float* g = p.grad.t.f32();
    const int64_t n = p.value.t.numel();
    LORA_CHECK(p.grad.t.numel() == n, "grad of {} has the wrong size", p.name);
    if (cfg_.kind == OPT_SGD) {
      float* v = v_[i].data();
      const bool use_m = mom > 0;
      for (int64_t j = 0; j < n; ++j) {
        float gj = g[j];
        if (wd != 0) gj = gj + wd * w[j];
        if (!use_m) {
          w[j] = w[j] - lr * gj;
          continue;
        }
        float vj = mom * v[j];
        vj += cfg_.dampening > 0 ? damp * gj : gj;
        v[j] = vj;
        const float upd = cfg_.nesterov ? gj + mom * vj : vj;
        w[j] = w[j] - lr * upd;
      }
      continue;
    }
    float* m = m_[i].data();
    float* v = v_[i].data();
    for (int64_t j = 0; j < n; ++j) {
      float wj = w[j];
      if (cfg_.kind == OPT_ADAMW) wj = wj * decay;
      const float gj = g[j];
      const float mj = b1 * m[j] + omb1 * gj;
      const float vj = b2 * v[j] + omb2 * (gj * gj);
      m[j] = mj;
      v[j] = vj;
      if (cfg_.bias_correction)
        w[j] = wj - (c1 * mj) / (std::sqrt(vj) * c2 + eps);
      else
        w[j] = wj - (lr * mj) / (std::sqrt(vj) + eps);
    }
  }
}

std::vector<OptimizerStateTensor> Optimizer::state_tensors() {
  std::vector<OptimizerStateTensor> out;
  for (size_t i = 0; i < names_.size(); ++i) {
    if (!m_[i].empty()) out.push_back({"m." + names_[i], &m_[i]});
    if (!v_[i].empty()) out.push_back({"v." + names_[i], &v_[i]});
  }
  return out;
}

}  // namespace lora
