// Internal to the CUDA backend: the launchers of the training kernels (xent.cu, optimizer.cu,
// lora_kernels.cu) that the CUDA Ops class wraps: the fused cross-entropy, the multi-tensor optimizer
// update, the f32 -> bf16 conversion, LoRA dropout, the DoRA pieces and small column/element helpers.
// Plain C++ (no fmt, no device code), so host code compiled by g++ can call them. Contract shared by
// all of them (as src/cuda/kernels.h):
//   - every pointer is DEVICE memory, activations are contiguous row-major f32, and each formula is the
//     CPU backend's (src/cpu/xent.cpp, src/cpu/linear.cpp, src/cpu/optimizer.cpp) in meaning; where a
//     launcher promises bit-equality with a host loop it says so;
//   - work is queued on `stream` (asynchronous); nothing is checked on the device, so the caller checks
//     user input (targets) on the host first; the kernels still never read out of bounds;
//   - column sums over rows are deterministic (fixed order, no atomics), so runs repeat bit for bit;
//   - a negative size, a missing pointer, an unsupported dtype or a failed launch throws
//     lora::InternalError (through cuda_fail) before anything is queued; empty sizes queue nothing.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

#include "core/dtype.h"

namespace lora {

// ---- cross-entropy (xent.cu) ----

// Softmax cross-entropy fused with its gradient over logits (R, V) f32, one block per row:
//   row_loss[r] = mask[r] · (logsumexp(logits[r]) - logits[r][targets[r]])   (R) f32,
// with the max subtracted before the exponentials, the Σ exp accumulated in double and the loss
// formed in double, then rounded to f32 (as the CPU's xent). When grad, logits[r] is overwritten by
// (softmax - onehot(target)) · mask[r] · dscale, computed as the CPU does: exp(x - float(lse)) · c,
// then c subtracted at the target, c = mask · dscale in f32. mask may be null (every row 1). A row with
// mask 0, or whose target is outside [0, V) (the caller validates targets on the host; a bad one is
// treated as masked), gets row_loss 0 and, when grad, a zero gradient row. V up to 2^31 - 1.
// dscale_dev (device, one float), when non-null, replaces dscale: a value that changes between replays of a
// recorded CUDA graph must be read from memory.
void cuda_xent_fwd_bwd(float* logits, int64_t R, int64_t V, const int32_t* targets, const float* mask, float dscale,
                       bool grad, float* row_loss, cudaStream_t stream, const float* dscale_dev = nullptr);

// ---- optimizer (optimizer.cu) ----

// One parameter tensor of the multi-tensor update: weights (updated in place), gradient and state,
// n f32 values each. m and v may be null where the rule does not use them (sgd: m always; v without
// momentum).
struct CudaOptTensor {
  float* w;
  const float* g;
  float* m;
  float* v;
  int64_t n;
};

// The per-step scalars, computed on the host exactly as the CPU update computes them (train/optimizer.cpp
// fills ops.h's OptimizerStep; these are the same numbers). sgd_dampening = dampening > 0 (then the
// momentum term adds damp·g, else g); sgd_momentum = mom > 0 (else plain SGD and v is not used).
struct CudaOptScalars {
  float lr, b1, b2, omb1, omb2, eps, c1, c2, decay, wd, mom, damp;
  bool bias_correction, nesterov, sgd_dampening, sgd_momentum;
};

enum CudaOptKind { CUDA_OPT_ADAM = 0, CUDA_OPT_ADAMW = 1, CUDA_OPT_SGD = 2 };

// One update of every tensor of the table tensors_device (n_tensors entries, in DEVICE memory: the
// caller uploads it once and reuses it while the pointers stay valid), ONE launch: blocks over
// (tensor, chunk of its elements). kind is a CudaOptKind. The element formulas are ops.h's OptimizerStep
// (MLX's order), each operation rounded on its own (__fmul_rn/__fadd_rn/__fdiv_rn/__fsqrt_rn, no
// fused multiply-add), so the result is bit for bit the CPU loop of src/cpu/optimizer.cpp compiled
// without FMA contraction (-ffp-contract=off): see the test and docs/numerics.md (kCudaOptimizerVsCpu).
// max_n (the largest n of the table) sizes the grid only: a larger tensor is still fully updated
// (grid-stride), just with less parallelism.
void cuda_optimizer_update(const CudaOptTensor* tensors_device, int64_t n_tensors, int64_t max_n, int kind,
                           const CudaOptScalars& s, cudaStream_t stream);

// dst (n) bf16 = src (n) f32 rounded to nearest even, NaN kept quiet: bit for bit core/dtype.h's
// f32_to_bf16 (a NaN keeps its sign and top payload bits with the quiet bit set; CUDA's own
// __float2bfloat16_rn would give the canonical 0x7fff instead).
void cuda_convert_f32_to_bf16(const float* src, void* dst_bf16, int64_t n, cudaStream_t stream);

// ---- LoRA / DoRA (lora_kernels.cu) ----

// out (n) = keep(i) ? x[i] · (1 / (1 - p)) : 0, keep(i) exactly ops.h's lora_dropout_keep for an operand
// with dropout p, dropout_key key and dropout_stream stream_id (the same Philox-4x32-10 words as
// core/rng.h: element i uses word i & 3 of philox4x32(key, stream_id, i >> 2)); the scale is the CPU's
// f32 keep_scale = 1.0f / (1.0f - p), multiplied (not divided), so out equals the CPU's dropout_apply
// bit for bit. out may alias x. p must be in [0, 1). The backward of a dropped input is this same mask:
// cuda_lora_dropout(t, t, ...) then cuda_scale_add(dx, t, 1.0f) is the CPU's dx += keep ? t·keep_scale : 0.
void cuda_lora_dropout(const float* x, float* out, int64_t n, float p, uint64_t key, uint64_t stream_id,
                       cudaStream_t stream);

// DoRA row norms: denom (out) = ||W[o, :] + scale · (A · B)[:, o]||_2 with W (out, in) in w_type
// (F32/BF16/F16), A (in, r), B (r, out) f32; the rank-r dot in f32, the sum of squares in double (as
// the CPU's dora_denom). r in [1, 2048].
void cuda_dora_denom(const void* w, DType w_type, const float* a, const float* b, float scale, int64_t out, int64_t in,
                     int64_t r, float* denom, cudaStream_t stream);

// y (N, out) = ypre ⊙ (m / denom) (+ bias): per element ypre · (m[o] / denom[o]), then + bias[o] when
// bias (out, in bias_type F32/BF16/F16) is non-null; each operation rounded on its own, bit for bit the
// CPU's linear_lora_fwd. y may alias ypre.
void cuda_dora_scale_fwd(const float* ypre, const float* m, const float* denom, const void* bias, DType bias_type,
                         int64_t N, int64_t out, float* y, cudaStream_t stream);

// DoRA backward of the rescale (the norm is a constant, as mlx-lm): g (N, out) = dy ⊙ (m / denom) (bit for
// bit the CPU's), and when dm is non-null dm (out) += float(Σ_rows double(dy)·double(ypre) / double(denom))
// (products exact in double, a fixed-order double sum: deterministic; equal to the CPU's unless the
// double sums' different order moves the final f32 rounding). g may alias dy (dm is reduced first).
// g may be null (dm only); ypre may be null when dm is.
void cuda_dora_bwd(const float* dy, const float* ypre, const float* m, const float* denom, int64_t N, int64_t out,
                   float* g, float* dm, cudaStream_t stream);

// y (N, out) += bias (out) in bias_type (F32/BF16/F16), as the CPU's linear bias.
void cuda_bias_add(float* y, const void* bias, DType bias_type, int64_t N, int64_t out, cudaStream_t stream);

// acc (out) += float(Σ_rows double(dy[:, o])) for dy (N, out): the CPU's dbias; fixed-order double sum,
// deterministic (no atomics).
void cuda_col_sum_acc(const float* dy, int64_t N, int64_t out, float* acc, cudaStream_t stream);

// y (n) += alpha · x (n): the product rounded to f32, then the sum (two roundings, no FMA), so alpha = 1
// is exactly y + x.
void cuda_scale_add(float* y, const float* x, float alpha, int64_t n, cudaStream_t stream);

}  // namespace lora
