// Causal attention forward with grouped KV heads on the GPU (src/cuda/attention.cu), f32 in and out.
// Same contract as Ops::attention_fwd (ops/ops.h): q (T, H, D) for positions pos0 .. pos0+T-1; k, v
// (S, KV, D) hold positions 0 .. pos0+T-1 (S >= pos0 + T; rows beyond are never read, they may hold
// garbage); out (T, H, D). Query t attends to keys 0 .. pos0+t; scale 1/sqrt(D); query head h reads kv
// head h / (H / KV). Softmax in f32 with a running max (online softmax over blocks of keys), so no
// (T, S) score matrix exists and long contexts need no workspace. All pointers are device pointers to
// contiguous row-major data, 16-byte aligned (float4 loads).
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

namespace lora {

// Queues the attention on `stream` (asynchronous). D must be 8, 16, 64 or 128; H % KV == 0; pos0 >= 0;
// pos0 + T <= S. A violated precondition (or a failed launch) throws lora::InternalError via cuda_fail.
// T == 0 queues nothing.
void cuda_attention_fwd(const float* q, const float* k, const float* v, float* out, int64_t T, int64_t H,
                        int64_t KV, int64_t D, int64_t S, int64_t pos0, cudaStream_t stream);

}  // namespace lora
