// Causal attention forward with grouped KV heads (declared in cuda/attention.h), f32 throughout.
//
// One thread block per (query t, head h), kWarps warps. The visible keys 0 .. pos0+t are cut into
// chunks of 32; warp w takes chunks w, w + kWarps, ... Within a chunk, lane j owns key j: it computes
// the full dot q·k_j (q sits in shared memory and is read as a broadcast), then the warp runs one step of
// the online softmax — chunk max by shuffles, rescale of the running sum and output by exp(m_old - m_new),
// p_j = exp(s_j - m_new) — and accumulates Σ p_j v_j with each lane owning dims lane, lane+32, ...
// (coalesced V rows; p_j broadcast by shuffle). At the end the warps' (m, l, o) are merged in shared
// memory the same way and the block writes o / l. Memory is O(D) per block whatever S is.
//
// Keys at or beyond pos0 + t + 1 are never loaded (neither K nor V), so unused cache rows (which may hold
// NaN) cannot leak into the output. Decode (T = 1) gets H blocks of kWarps warps each walking S / (32·kWarps)
// chunks; prefill blocks are issued last query first so the long rows start early.
// Only cuda/check.h and CUDA headers here (see cmake/cuda.cmake: no fmt under nvcc).
#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>

#include "cuda/attention.h"
#include "cuda/check.h"

namespace lora {

namespace {

constexpr int kWarps = 8;  // warps per block, each walking its own chunks of 32 keys

template <int D>
__global__ void __launch_bounds__(kWarps * 32)
    attention_fwd_kernel(const float* __restrict__ q, const float* __restrict__ k, const float* __restrict__ v,
                         float* __restrict__ out, int H, int group, int KV, int T, int64_t pos0, float scale) {
  constexpr int kPerLane = (D + 31) / 32;  // output dims owned by one lane
  __shared__ __align__(16) float q_s[D];
  __shared__ float m_s[kWarps], l_s[kWarps];
  __shared__ float o_s[kWarps][D];

  const int h = int(blockIdx.x % unsigned(H));
  const int t = T - 1 - int(blockIdx.x / unsigned(H));  // last query first: it has the most keys
  const int kvh = h / group;
  const int warp = int(threadIdx.x) / 32, lane = int(threadIdx.x) % 32;
  const int64_t n_keys = pos0 + t + 1;
  const int64_t row_stride = int64_t(KV) * D;  // floats between consecutive positions of k and v

  const float* qrow = q + (int64_t(t) * H + h) * D;
  for (int d = int(threadIdx.x); d < D; d += kWarps * 32) q_s[d] = qrow[d];
  __syncthreads();

  const float* kbase = k + int64_t(kvh) * D;
  const float* vbase = v + int64_t(kvh) * D;
  float m = -INFINITY, l = 0.0f;
  float o[kPerLane];
#pragma unroll
  for (int i = 0; i < kPerLane; ++i) o[i] = 0.0f;

  const int64_t n_chunks = (n_keys + 31) / 32;
  for (int64_t c = warp; c < n_chunks; c += kWarps) {
    const int64_t j0 = c * 32;
    const int64_t j = j0 + lane;
    const bool live = j < n_keys;
    float s = -INFINITY;
    if (live) {
      const float4* kr = reinterpret_cast<const float4*>(kbase + j * row_stride);
      const float4* qv = reinterpret_cast<const float4*>(q_s);
      float acc = 0.0f;
#pragma unroll
      for (int d4 = 0; d4 < D / 4; ++d4) {
        const float4 kk = kr[d4];
        const float4 qq = qv[d4];
        acc = fmaf(qq.x, kk.x, acc);
        acc = fmaf(qq.y, kk.y, acc);
        acc = fmaf(qq.z, kk.z, acc);
        acc = fmaf(qq.w, kk.w, acc);
      }
      s = acc * scale;
    }
    // Chunk max (finite: key j0 is live), then the online-softmax step.
    float cm = s;
#pragma unroll
    for (int off = 16; off > 0; off /= 2) cm = fmaxf(cm, __shfl_xor_sync(0xffffffffu, cm, off));
    const float m_new = fmaxf(m, cm);
    const float alpha = expf(m - m_new);  // 0 on the first chunk (m = -inf)
    const float p = live ? expf(s - m_new) : 0.0f;
    float ps = p;
#pragma unroll
    for (int off = 16; off > 0; off /= 2) ps += __shfl_xor_sync(0xffffffffu, ps, off);
    l = l * alpha + ps;
    m = m_new;
#pragma unroll
    for (int i = 0; i < kPerLane; ++i) o[i] *= alpha;
    // Σ p_j v_j over the chunk's live keys only (a dead row may be NaN, and 0·NaN is NaN).
    const int n_live = int(n_keys - j0 < 32 ? n_keys - j0 : 32);
    for (int jj = 0; jj < n_live; ++jj) {
      const float pj = __shfl_sync(0xffffffffu, p, jj);
      const float* vr = vbase + (j0 + jj) * row_stride;
#pragma unroll
      for (int i = 0; i < kPerLane; ++i) {
        const int d = lane + 32 * i;
        if (d < D) o[i] = fmaf(pj, vr[d], o[i]);
      }
    }
  }

  // Merge the warps: M = max m_w, L = Σ l_w·exp(m_w - M), O = Σ o_w·exp(m_w - M). A warp with no chunk has
  // m = -inf and contributes 0; warp 0 always has chunk 0, so M is finite.
  if (lane == 0) {
    m_s[warp] = m;
    l_s[warp] = l;
  }
#pragma unroll
  for (int i = 0; i < kPerLane; ++i) {
    const int d = lane + 32 * i;
    if (d < D) o_s[warp][d] = o[i];
  }
  __syncthreads();
  float M = m_s[0];
#pragma unroll
  for (int w = 1; w < kWarps; ++w) M = fmaxf(M, m_s[w]);
  float L = 0.0f, wscale[kWarps];
#pragma unroll
  for (int w = 0; w < kWarps; ++w) {
    wscale[w] = expf(m_s[w] - M);
    L += l_s[w] * wscale[w];
  }
  const float inv = 1.0f / L;
  float* orow = out + (int64_t(t) * H + h) * D;
  for (int d = int(threadIdx.x); d < D; d += kWarps * 32) {
    float acc = 0.0f;
#pragma unroll
    for (int w = 0; w < kWarps; ++w) acc += o_s[w][d] * wscale[w];
    orow[d] = acc * inv;
  }
}

template <int D>
void launch(const float* q, const float* k, const float* v, float* out, int64_t T, int64_t H, int64_t KV,
            int64_t pos0, cudaStream_t stream) {
  const float scale = 1.0f / sqrtf(float(D));
  const unsigned blocks = unsigned(T * H);
  attention_fwd_kernel<D><<<blocks, kWarps * 32, 0, stream>>>(q, k, v, out, int(H), int(H / KV), int(KV), int(T),
                                                              pos0, scale);
}

bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15u) == 0; }

}  // namespace

void cuda_attention_fwd(const float* q, const float* k, const float* v, float* out, int64_t T, int64_t H,
                        int64_t KV, int64_t D, int64_t S, int64_t pos0, cudaStream_t stream) {
  // Precondition failures are bugs in the caller (the Ops layer checks shapes first): InternalError.
  if (!(D == 8 || D == 16 || D == 64 || D == 128))
    cuda_fail(cudaErrorInvalidValue, "cuda_attention_fwd: head dim D must be 8, 16, 64 or 128", __FILE__, __LINE__);
  if (!(T >= 0 && H > 0 && KV > 0 && H % KV == 0 && pos0 >= 0 && pos0 + T <= S))
    cuda_fail(cudaErrorInvalidValue, "cuda_attention_fwd: need T >= 0, H % KV == 0, pos0 >= 0, pos0 + T <= S",
              __FILE__, __LINE__);
  if (T * H > int64_t(INT32_MAX) || S > int64_t(INT32_MAX) / (KV * D))
    cuda_fail(cudaErrorInvalidValue, "cuda_attention_fwd: T·H or S·KV·D too large", __FILE__, __LINE__);
  if (T == 0) return;
  if (!q || !k || !v || !out || !aligned16(q) || !aligned16(k) || !aligned16(v) || !aligned16(out))
    cuda_fail(cudaErrorInvalidValue, "cuda_attention_fwd: q, k, v, out must be non-null and 16-byte aligned",
              __FILE__, __LINE__);
  switch (D) {
    case 8: launch<8>(q, k, v, out, T, H, KV, pos0, stream); break;
    case 16: launch<16>(q, k, v, out, T, H, KV, pos0, stream); break;
    case 64: launch<64>(q, k, v, out, T, H, KV, pos0, stream); break;
    default: launch<128>(q, k, v, out, T, H, KV, pos0, stream); break;
  }
  LORA_CUDA_CHECK(cudaGetLastError());
}

}  // namespace lora
