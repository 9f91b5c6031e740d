// Causal attention with grouped KV heads on the GPU, f32 in and out: the inference forward (and its
// graph-friendly decode form, cuda_attention_decode) and the training forward / backward
// (src/cuda/attention.cu, src/cuda/attention_bwd.cu).
//
// Inference, same contract as Ops::attention_fwd (ops/ops.h): q (T, H, D) for positions pos0 ..
// pos0+T-1; k, v (S, KV, D) hold positions 0 .. pos0+T-1 (S >= pos0 + T; rows beyond are never read,
// they may hold garbage); out (T, H, D). Query t attends to keys 0 .. pos0+t; scale 1/sqrt(D); query head
// h reads kv head h / (H / KV). Softmax in f32 with a running max (online softmax over blocks of keys),
// so no (T, S) score matrix exists. Decode and short T run one block per query (split-K when the context
// is long), prefill (T >= 32, pos0 <= T or many heads) runs flash-attention tiles of queries x keys.
//
// Training, same contract as Ops::attention_train_fwd / attention_bwd: B independent rows of T tokens at
// positions 0 .. T-1; q, out (B, T, H, D), k, v (B, T, KV, D), lse (B, T, H).
//
// Common to all: pointers are device pointers to contiguous row-major data, 16-byte aligned (float4
// loads); D is 8, 16, 64 or 128; H % KV == 0; work is queued on `stream` (asynchronous); a violated
// precondition (or a failed launch) throws lora::InternalError via cuda_fail; empty sizes queue nothing.
#pragma once
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

namespace lora {

// Inference forward. pos0 >= 0; pos0 + T <= S. When T·H is too small to fill the GPU (decode) and the
// context is long, the keys are split across several blocks whose partial (max, sum, output) are merged
// by a second kernel ("split-K"); the partials live in a workspace owned by attention.cu, one per device,
// allocated on first use and grown (stream-ordered, never shrunk, freed only at process exit). Calls that
// use it are serialized through an event, so calls on different streams of one device are safe but do
// not overlap; the workspace path is not meant for CUDA graph capture (use cuda_attention_fwd_ws there).
void cuda_attention_fwd(const float* q, const float* k, const float* v, float* out, int64_t T, int64_t H,
                        int64_t KV, int64_t D, int64_t S, int64_t pos0, cudaStream_t stream);

// Floats of workspace the split-K path wants for these sizes (0: the call does not split).
size_t cuda_attention_fwd_workspace_floats(int64_t T, int64_t H, int64_t D, int64_t pos0);

// cuda_attention_fwd with a caller-owned workspace (device memory, 16-byte aligned): the split-K path
// is taken when workspace_floats >= cuda_attention_fwd_workspace_floats(T, H, D, pos0) > 0, otherwise
// the single-pass path (workspace may be null). The workspace must not be in use by other work that may
// run concurrently with this call (the caller orders it, e.g. one workspace per stream).
void cuda_attention_fwd_ws(const float* q, const float* k, const float* v, float* out, int64_t T, int64_t H,
                           int64_t KV, int64_t D, int64_t S, int64_t pos0, float* workspace, size_t workspace_floats,
                           cudaStream_t stream);

// Decode for CUDA graphs: one query per head, q, out (H, D), attending keys 0 .. n-1 of the whole cache
// k, v (S_max, KV, D), where n = *n_keys_dev (device memory, 1 <= n <= S_max) is read by the kernels when
// they run: the query is the token at position n-1, already written into the cache. Same result as
// cuda_attention_fwd(T = 1, pos0 = n-1, S = S_max) up to f32 rounding (the keys are split differently).
// The launch configuration depends only on (H, KV, D, S_max), never on n, and the call neither allocates
// nor synchronizes: capture it in a graph once, then change *n_keys_dev (e.g. cudaMemcpyAsync on the
// stream) before each replay. Rows >= n are never read (they may hold NaN); n outside [1, S_max] is a
// caller bug that reads nothing and sets out to NaN. workspace (device, 16-byte aligned) holds at least
// cuda_attention_decode_workspace_floats(H, D, S_max) floats, needs no initialization, and must not be
// used by concurrent work; n_keys_dev is 4-byte aligned. Deterministic (no atomics): the same inputs and n
// give the same bits. H <= 65535.
size_t cuda_attention_decode_workspace_floats(int64_t H, int64_t D, int64_t S_max);
void cuda_attention_decode(const float* q, const float* k, const float* v, float* out, int64_t H, int64_t KV,
                           int64_t D, int64_t S_max, const int32_t* n_keys_dev, float* workspace,
                           cudaStream_t stream);

// Training forward: out (B, T, H, D) and lse (B, T, H) = natural log-sum-exp of each query's scaled scores
// over keys 0 .. t of its row. Runs the kernel cuda_attention_fwd picks for (T, pos0 = 0, S = T) with a
// batch index, so each row's output is bit-identical to cuda_attention_fwd's on that row. B, H <= 65535.
void cuda_attention_train_fwd(const float* q, const float* k, const float* v, float* out, float* lse, int64_t B,
                              int64_t T, int64_t H, int64_t KV, int64_t D, cudaStream_t stream);

// Training backward (flash-attention style, recomputing P = exp(scale·q·k - lse) from the forward's lse):
// dq (B, T, H, D), dk, dv (B, T, KV, D) are OVERWRITTEN (dk/dv summed over the H/KV query heads of each
// group). out and lse are the forward's. Deterministic: every element of dq and of each head's dk/dv is
// summed by one thread in a fixed order, and the heads of a group are then added in head order (no
// atomics), so two calls give bit-identical results. When H > KV it takes 2·B·T·H·D floats of
// stream-ordered scratch (cudaMallocAsync / cudaFreeAsync, so it can be captured in a CUDA graph) for the
// per-head dk/dv; none when H == KV. Outputs must not alias inputs. B, KV and H <= 65535.
void cuda_attention_bwd(const float* q, const float* k, const float* v, const float* out, const float* lse,
                        const float* dout, float* dq, float* dk, float* dv, int64_t B, int64_t T, int64_t H,
                        int64_t KV, int64_t D, cudaStream_t stream);

}  // namespace lora
