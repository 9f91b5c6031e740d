// Internal to the CPU backend: the per-op-family entry points that cpu_ops.cpp assembles into the
// Ops class, and small helpers they share. Not part of the public op API (that is ops/ops.h).
#pragma once
#include <cstdint>

#include "core/dtype.h"
#include "core/error.h"
#include "core/tensor.h"
#include "ops/ops.h"

namespace lora::cpu {

void embedding_fwd(const int32_t* ids, int64_t n, const Tensor& table, Tensor& out);     // embedding.cpp
void rmsnorm_fwd(const Tensor& x, const Tensor& w, float eps, Tensor& y);                 // rmsnorm.cpp
void linear_fwd(const Tensor& x, const Tensor& w, const Tensor* bias, Tensor& y);          // linear.cpp
void rope_fwd(Tensor& x, const int32_t* pos, const RopeTable& rope);                      // rope.cpp
void attention_fwd(const Tensor& q, const Tensor& k, const Tensor& v, int64_t pos0, Tensor& out);  // attention.cpp
void swiglu_fwd(const Tensor& gate, const Tensor& up, Tensor& out);                       // swiglu.cpp
void add_fwd(Tensor& y, const Tensor& x);                                                 // swiglu.cpp

// Training (ops.h documents each contract).
void rmsnorm_bwd(const Tensor& x, const Tensor& w, float eps, const Tensor& dy, Tensor& dx, Tensor* dw);  // rmsnorm.cpp
void rope_bwd(Tensor& dx, const int32_t* pos, const RopeTable& rope);                                    // rope.cpp
void attention_train_fwd(const Tensor& q, const Tensor& k, const Tensor& v, Tensor& out, Tensor& lse);  // attention.cpp
void attention_bwd(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& out, const Tensor& lse,
                   const Tensor& dout, Tensor& dq, Tensor& dk, Tensor& dv);                              // attention.cpp
void swiglu_bwd(const Tensor& gate, const Tensor& up, const Tensor& dout, Tensor& dgate, Tensor& dup);  // swiglu.cpp
void linear_lora_fwd(const Tensor& x, const Tensor& w, const Tensor* bias, const LoraOperand* lo, LoraSaved* saved,
                     Tensor& y);                                                                         // linear.cpp
void linear_bwd(const Tensor& x, const Tensor& w, const Tensor& dy, Tensor* dx, bool dx_accumulate, Tensor* dw,
                Tensor* dbias, const LoraOperand* lo, const LoraSaved* saved);                           // linear.cpp
void xent_fwd_bwd(Tensor& logits, const int32_t* targets, const float* mask, float dscale, bool grad,
                  float* row_loss);  // xent.cpp
void optimizer_update(const OptimizerSlot* slots, int64_t n, const OptimizerStep& s);  // optimizer.cpp

// Element i of a small plain-float vector (norm weights, biases) of any float dtype, as f32.
inline float load_f32(const void* p, DType t, int64_t i) {
  switch (t) {
    case DTYPE_F32: return static_cast<const float*>(p)[i];
    case DTYPE_BF16: return bf16_to_f32(static_cast<const uint16_t*>(p)[i]);
    case DTYPE_F16: return f16_to_f32(static_cast<const uint16_t*>(p)[i]);
    default: LORA_CHECK(false, "load_f32: dtype {} is not a plain float type", dtype_name(t));
  }
  return 0.0f;
}

inline bool dtype_is_float(DType t) { return t == DTYPE_F32 || t == DTYPE_BF16 || t == DTYPE_F16; }
// Frozen weights (linears, embeddings) may also be llama.cpp's quantized blocks (QLoRA): they are
// dequantized a panel at a time (core/quant.h), so rows must be whole blocks.
inline bool dtype_is_weight(DType t) { return dtype_is_float(t) || dtype_is_quant(t); }

// Rows of a 2-D-or-more tensor viewed as (rows, last dim).
inline int64_t tensor_rows(const Tensor& t) { return t.ndim == 0 ? 1 : t.numel() / t.dim(-1); }

}  // namespace lora::cpu
