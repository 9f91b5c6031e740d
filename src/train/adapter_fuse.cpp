// Fusing LoRA / DoRA / full adapters into a model copy (see adapter_fuse.h).
#include "train/adapter_fuse.h"

#include <cmath>
#include <vector>

#include "core/error.h"
#include "core/quant.h"

namespace lora {

namespace {

Tensor* linear_slot(LayerWeights& l, LinearKey k) {
  switch (k) {
    case LIN_Q: return &l.wq;
    case LIN_K: return &l.wk;
    case LIN_V: return &l.wv;
    case LIN_O: return &l.wo;
    case LIN_GATE: return &l.w_gate;
    case LIN_UP: return &l.w_up;
    case LIN_DOWN: return &l.w_down;
    default: break;
  }
  LORA_CHECK(false, "bad linear key {}", int(k));
  return nullptr;
}

// W' for one adapted linear: base W (out, in) of any float or quantized dtype -> fp32 fused copy.
OwnedTensor fuse_linear(const Tensor& w, const LoraLinear& ll, double scale, bool dora) {
  LORA_CHECK(w.ndim == 2 && w.is_contiguous(), "fused weight must be a contiguous matrix");
  const int64_t out = w.dim(0), in = w.dim(1), r = ll.a.dim(1);
  LORA_CHECK(ll.a.dim(0) == in && ll.b.dim(0) == r && ll.b.dim(1) == out, "LoRA shapes do not match the weight");
  OwnedTensor f = tensor_alloc(DTYPE_F32, {out, in});
  float* W = f.t.f32();
  quant_dequantize(w.dtype, w.data, W, out * in);  // plain floats or quantized blocks
  const float* A = ll.a.f32();  // (in, r)
  const float* B = ll.b.f32();  // (r, out)
  const float s = float(scale);
  std::vector<float> sb(static_cast<size_t>(r), 0.0f);
#pragma omp parallel for firstprivate(sb) schedule(static)
  for (int64_t o = 0; o < out; ++o) {
    for (int64_t k = 0; k < r; ++k) sb[k] = s * B[k * out + o];  // scale · Bᵀ[o, k]
    float* row = W + o * in;
    for (int64_t i = 0; i < in; ++i) {
      float acc = 0;
      for (int64_t k = 0; k < r; ++k) acc += sb[k] * A[i * r + k];  // (Bᵀ Aᵀ)[o, i]
      row[i] += acc;
    }
    if (dora) {
      double nrm = 0;
      for (int64_t i = 0; i < in; ++i) nrm += double(row[i]) * row[i];
      const float g = float(ll.m.f32()[o] / std::sqrt(nrm));
      for (int64_t i = 0; i < in; ++i) row[i] *= g;
    }
  }
  return f;
}

}  // namespace

Model adapter_fuse(const Model& m, const Adapter& a) {
  if (a.cfg.type == FT_FULL) {
    Model out = adapter_effective_model(m, a);
    for (const TrainParam& p : a.params) {
      out.storage.push_back(p.value.buf);
    }
    return out;
  }
  Model out = m;
  const bool dora = a.cfg.type == FT_DORA;
  for (size_t li = 0; li < a.lora.size() && li < out.layers.size(); ++li) {
    for (int k = 0; k < LIN_COUNT; ++k) {
      const LoraLinear* ll = a.lora[li][k];
      if (!ll) continue;
      Tensor* slot = linear_slot(out.layers[li], LinearKey(k));
      OwnedTensor f = fuse_linear(*slot, *ll, a.cfg.scale, dora);
      *slot = f.t;
      out.storage.push_back(f.buf);
    }
  }
  return out;
}

}  // namespace lora
