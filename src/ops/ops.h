// The backend-neutral op API. The model is written once against this interface; the CPU backend
// (src/cpu) and the CUDA backend (src/cuda) implement it. Forward ops only for now; each *_bwd joins
// its *_fwd (training: the *_bwd ops, the training attention forward, the fused cross-entropy and the
// LoRA/DoRA path of the linear layer, below the forward ops).
//
// Backward contract: activation gradients named dx are ACCUMULATED (+=) where the op says so (the
// residual stream and inputs that feed several linears sum their gradients for free); parameter
// gradients (dw, dbias, LoRA da/db/dm) always accumulate (+=), so gradient accumulation needs no copy.
//
// Dimension letters: N rows (tokens in flight, = B*T), C model width, F FFN width, H query heads,
// KV key/value heads, D head dim, S cached positions, V vocabulary.
// All activations are contiguous F32 (both backends, for now). Weights may be F32, BF16 or F16.
//
// Memory: every Tensor and every raw pointer an op takes (token ids, positions, targets, masks,
// per-row losses) lives in the backend's memory (Ops::device()): host memory for the CPU backends,
// device memory for CUDA. The model stages host inputs with core/device_mem.h (an Arena on
// ops.device() and device_copy), and validates user input (ids, targets) on the host before that,
// because device kernels cannot throw. Ops are queued in order; sync() waits for them (needed only
// before the host reads device memory some other way than device_copy).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "core/rng.h"
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

// The trainable adapter of one linear layer, fp32: y = W x + scale · ((drop(x) · A) · B), and with DoRA
// (m defined) y = (m / ||W + scale · Bᵀ Aᵀ||_row) ⊙ (that) + bias, the norm treated as a constant in the
// backward (mlx-lm's DoRALinear stops its gradient). Dropout keeps each element of x with probability
// 1 - p, scaling kept ones by 1 / (1 - p); the mask element i of the (N, in) input is drawn from the
// counter-based stream (dropout_key, dropout_stream) (lora_dropout_keep), so recomputation and resumed
// runs see the same mask.
struct LoraOperand {
  Tensor a, b;        // (in, r), (r, out) f32
  Tensor m;           // (out) f32, DoRA only (undefined for LoRA)
  Tensor da, db, dm;  // gradients, same shapes, += (may be undefined when only forward runs)
  float scale = 20.0f;
  float dropout = 0.0f;  // probability p of zeroing; 0 = no dropout
  uint64_t dropout_key = 0, dropout_stream = 0;
  bool is_dora() const { return m.defined(); }
};

// What the LoRA/DoRA forward saves for its backward (buffers planned by the caller).
struct LoraSaved {
  Tensor u;      // (N, r) = drop(x) · A
  Tensor ypre;   // (N, out) DoRA: W x + scale · u B, before the magnitude rescale and the bias
  Tensor denom;  // (out) DoRA: ||W + scale · Bᵀ Aᵀ||_row
};

// Whether element i of the dropout mask keeps its value (true) for the operand's stream.
inline bool lora_dropout_keep(const LoraOperand& lo, int64_t i) {
  const auto w = philox4x32(lo.dropout_key, lo.dropout_stream, uint64_t(i) >> 2);
  const float u = float(w[size_t(i & 3)] >> 8) * (1.0f / 16777216.0f);
  return u >= lo.dropout;
}

// One parameter tensor with its gradient and state, for Ops::optimizer_update.
struct OptimizerSlot {
  Tensor w, g;  // value (updated in place) and gradient, f32, same size
  Tensor m, v;  // adam: first/second moments; sgd with momentum: v; undefined when unused
};

// The per-step scalars of the update rules, computed once on the host exactly as MLX does (fp32):
//   ADAM / ADAMW: w' = w (·decay for ADAMW); m = b1·m + omb1·g; v = b2·v + omb2·g²;
//                 w = w' - (lr·m) / (sqrt(v) + eps), or with bias_correction w' - (c1·m) / (sqrt(v)·c2 + eps)
//   SGD: g' = g + wd·w (when wd != 0); no momentum: w -= lr·g'; else v = mom·v + (dampening ? damp·g' : g'),
//        w -= lr·(nesterov ? g' + mom·v : v)
struct OptimizerStep {
  enum Rule { RULE_ADAM, RULE_ADAMW, RULE_SGD } rule = RULE_ADAM;
  float lr = 0, b1 = 0, b2 = 0, omb1 = 0, omb2 = 0, eps = 0, c1 = 0, c2 = 0, decay = 1, wd = 0, mom = 0, damp = 1;
  bool bias_correction = false, nesterov = false, dampening = false;
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
  // Decoding one token: q, out (1, H, D) for the token at position n_keys[0] - 1, attending keys
  // 0 .. n_keys[0] - 1 of the whole cache k, v (S, KV, D). n_keys points to one int32 in backend memory, so
  // a recorded decode step replays correctly as the cache grows. Numbers as attention_fwd(q, k, v,
  // n_keys[0] - 1, out). Host backends: the default below.
  virtual void attention_decode(const Tensor& q, const Tensor& k, const Tensor& v, const int32_t* n_keys, Tensor& out);
  // cache (S, KV, D) row pos[i] = src row i for i < n (src (n, KV, D); pos in backend memory). Host default.
  virtual void kv_store(Tensor& cache, const Tensor& src, const int32_t* pos);
  // out (N, F) = silu(gate) * up.
  virtual void swiglu_fwd(const Tensor& gate, const Tensor& up, Tensor& out) = 0;
  // y += x (same shape).
  virtual void add_fwd(Tensor& y, const Tensor& x) = 0;

  // ---- training ----
  // dx (N, C) += d/dx of rmsnorm_fwd given dy (N, C); dw (C, f32) += d/dw when dw is non-null.
  virtual void rmsnorm_bwd(const Tensor& x, const Tensor& w, float eps, const Tensor& dy, Tensor& dx, Tensor* dw) = 0;
  // In place on dx (N, nh, D): the gradient of rope_fwd (the inverse rotation) at positions pos.
  virtual void rope_bwd(Tensor& dx, const int32_t* pos, const RopeTable& rope) = 0;
  // Causal attention over B independent rows of T tokens at positions 0..T-1: q, out (B, T, H, D),
  // k, v (B, T, KV, D); lse (B, T, H) f32 receives each query's log-sum-exp of scaled scores (for the
  // backward). Each row's numbers are exactly attention_fwd's on that row (pos0 = 0).
  virtual void attention_train_fwd(const Tensor& q, const Tensor& k, const Tensor& v, Tensor& out, Tensor& lse) = 0;
  // Gradients of attention_train_fwd: dq (B, T, H, D), dk, dv (B, T, KV, D) are overwritten (dk/dv summed
  // over the query heads of each group). out and lse are the forward's.
  virtual void attention_bwd(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& out, const Tensor& lse,
                             const Tensor& dout, Tensor& dq, Tensor& dk, Tensor& dv) = 0;
  // dgate, dup (N, F) from dout (N, F) for out = silu(gate) * up. dgate may alias gate, dup may alias up.
  virtual void swiglu_bwd(const Tensor& gate, const Tensor& up, const Tensor& dout, Tensor& dgate, Tensor& dup) = 0;
  // The linear layer with an optional LoRA/DoRA adapter (lo == nullptr: exactly linear_fwd). saved
  // (when non-null) receives what linear_bwd needs for the adapter.
  virtual void linear_lora_fwd(const Tensor& x, const Tensor& w, const Tensor* bias, const LoraOperand* lo,
                               LoraSaved* saved, Tensor& y) = 0;
  // Backward of linear_lora_fwd given dy (N, out) and its input x (N, in):
  //   dx (N, in): = (or += when dx_accumulate) dy · W plus the adapter's path; skipped when null.
  //   dw (out, in) f32 += dyᵀ x and dbias (out) += Σ dy (full fine-tuning), when non-null.
  //   lo->da, db, dm += the adapter's gradients (lo and saved non-null).
  virtual void linear_bwd(const Tensor& x, const Tensor& w, const Tensor& dy, Tensor* dx, bool dx_accumulate,
                          Tensor* dw, Tensor* dbias, const LoraOperand* lo, const LoraSaved* saved) = 0;
  // Softmax cross-entropy fused with its gradient, for one chunk of rows: logits (N, V) f32.
  // row_loss (N) receives mask · (logsumexp(logits) - logits[target]) per row (computed in at least f32
  // with a max-subtracted sum; the caller sums the rows in double). When grad, logits is overwritten by
  // dlogits = (softmax - onehot(target)) · mask · (*dscale). dscale points to one float in backend memory
  // (so a recorded CUDA graph reads the current batch's value). Targets outside [0, V): lora::Error on the
  // CPU backends; the model checks them on the host first (see "Memory" above).
  virtual void xent_fwd_bwd(Tensor& logits, const int32_t* targets, const float* mask, const float* dscale, bool grad,
                            float* row_loss) = 0;
  // Host backends only: the same, returning Σ row_loss in double (tests and tools).
  double xent_fwd_bwd(Tensor& logits, const int32_t* targets, const float* mask, float dscale, bool grad);

  // One optimizer update of n slots (train/optimizer.h computes the scalars; MLX's fp32 order of
  // operations, see OptimizerStep). Every tensor is f32 on this backend; m/v undefined where the rule
  // does not use them.
  virtual void optimizer_update(const OptimizerSlot* slots, int64_t n, const OptimizerStep& s) = 0;

  // Waits for every queued op (no-op on the CPU).
  virtual void sync() {}

  // QLoRA hint: a backend that dequantizes quantized weights per call may keep the last few whole weights
  // (about one block's) dequantized and reuse them while on. Worth it when a block's weights are used
  // again right away: with gradient checkpointing a block's recompute is followed by its backward.
  // Calls nest (on while more ons than offs); each call drops what is kept (a weight freed and another
  // allocated at its address must never hit). Default: ignored.
  virtual void set_dequant_reuse(bool on) { (void)on; }

  // Recorded op sequences (CUDA graphs), so that a step of many small ops is not bound by launch overhead.
  // graph_capture_begin() starts recording the ops queued next instead of running them (false: this
  // backend does not record, run the ops eagerly); graph_capture_end(key) stores the recording under key;
  // graph_launch(key) runs it (false when there is none). A recording replays the same ops on the same
  // memory: inputs that change between replays must be written into that memory before the launch.
  virtual bool supports_graphs() const { return false; }
  virtual bool graph_capture_begin() { return false; }
  virtual void graph_capture_end(uint64_t key) { (void)key; }
  virtual bool graph_launch(uint64_t key) { (void)key; return false; }
  // Frees a recording (its owner's memory is going away; a later recording may reuse the key).
  virtual void graph_drop(uint64_t key) { (void)key; }
};

// lora::Error naming the first id outside [0, V) (user input: a prompt or a dataset).
void token_ids_check(const int32_t* ids, int64_t n, int64_t V);

RopeTable rope_table_make(int64_t head_dim, int64_t max_pos, double theta, const RopeScaling* scaling);

}  // namespace lora
