// The backend-neutral op API. The model is written once against this interface; the CPU backend
// (src/cpu) and the CUDA backend (src/cuda) implement it. Forward ops only for now; each *_bwd joins
// its *_fwd here when training lands (docs/architecture.md).
//
// Dimension letters: N rows (tokens in flight, = B*T), C model width, F FFN width, H query heads,
// KV key/value heads, D head dim, S cached positions, V vocabulary.
// All activations are contiguous F32 on the CPU backend. Weights may be F32, BF16 or F16.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "core/tensor.h"

namespace lora {

// RoPE frequency scaling from config.json rope_scaling (Llama 3 style) or GGUF metadata.
struct RopeScaling {
  std::string type;  // "" (none), "llama3", "linear"
  double factor = 1.0;
  double low_freq_factor = 1.0;
  double high_freq_factor = 4.0;
  int64_t original_max_position = 8192;
};

// cos/sin tables for RoPE in HF's rotate-half layout: for pair i in [0, D/2) of a head, the rotated
// elements are x[i] and x[i + D/2], with angle pos * inv_freq[i]. Llama-3 scaling is folded into
// inv_freq.
struct RopeTable {
  int64_t head_dim = 0;
  int64_t max_pos = 0;
  std::vector<float> inv_freq;  // (D/2)
  std::vector<float> cos, sin;  // (max_pos, D/2)
};

class Ops {
 public:
  virtual ~Ops() = default;
  virtual Device device() const = 0;

  // out (N, C) = table[ids] ; table (V, C) any float dtype.
  virtual void embedding_fwd(const int32_t* ids, int64_t n, const Tensor& table, Tensor& out) = 0;
  // y (N, C) = x * rsqrt(mean(x^2) + eps) * w ; w (C).
  virtual void rmsnorm_fwd(const Tensor& x, const Tensor& w, float eps, Tensor& y) = 0;
  // y (N, out) = x (N, in) · Wᵀ (+ bias (out)). W (out, in) in F32/BF16/F16. For N == 1 this is a
  // bandwidth-bound matrix-vector product; for larger N a GEMM.
  virtual void linear_fwd(const Tensor& x, const Tensor& w, const Tensor* bias, Tensor& y) = 0;
  // In place on x (N, nh, D): rotate-half RoPE at positions pos[0..N).
  virtual void rope_fwd(Tensor& x, const int32_t* pos, const RopeTable& rope) = 0;
  // Causal attention with grouped KV heads. q (T, H, D) for positions pos0..pos0+T-1; k, v (S, KV, D)
  // hold positions 0..pos0+T-1 (S >= pos0 + T, only the first pos0+T rows are read). out (T, H, D).
  // Query t attends to keys 0..pos0+t. Scale 1/sqrt(D).
  virtual void attention_fwd(const Tensor& q, const Tensor& k, const Tensor& v, int64_t pos0, Tensor& out) = 0;
  // out (N, F) = silu(gate) * up.
  virtual void swiglu_fwd(const Tensor& gate, const Tensor& up, Tensor& out) = 0;
  // y += x (same shape).
  virtual void add_fwd(Tensor& y, const Tensor& x) = 0;
};

RopeTable rope_table_make(int64_t head_dim, int64_t max_pos, double theta, const RopeScaling* scaling);

}  // namespace lora
