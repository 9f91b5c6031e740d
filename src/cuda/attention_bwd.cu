// Backward of the training attention (cuda_attention_bwd, declared in cuda/attention.h), f32 throughout.
// Flash-attention style: the probabilities are recomputed tile by tile from q, k and the forward's lse,
//   P = exp(scale·q·kᵀ - lse) (causal),  dV = Pᵀ·dO,  dP = dO·Vᵀ,  dS = P ⊙ (dP - delta),
//   dQ = scale·dS·K,  dK = scale·dSᵀ·Q,   with delta = rowsum(dO ⊙ O) per (query, head),
// in three kernels on the stream:
//   1. attention_bwd_delta_kernel: delta (B, T, H), one warp per (row, head), into cudaMallocAsync scratch;
//   2. attention_bwd_dkv_kernel: one block per (key tile of BC keys, kv head g, batch row b). It keeps K, V
//      of its keys in shared memory and dK, dV in registers, and walks every query head of group g and every
//      query tile (BR queries) at or after its first key, so dK/dV are summed over queries and heads by one
//      thread each, in a fixed order — no atomics, bit-reproducible;
//   3. attention_bwd_dq_kernel: one block per (query tile, head h, row b), holding Q, dO in shared memory
//      and dQ in registers, walking the key tiles up to its last query.
// S and dP are recomputed by both 2 and 3 (the price of determinism without a dQ workspace per key tile).
//
// Tiles are f32 in shared memory with rows padded to D + 1 (and BC + 1) floats so that the column reads of
// the small matrix products below hit 32 different banks; each thread owns a strided micro-tile of every
// product (rows ty + TY·i, columns tx + TX·j) and accumulates it with FMAs over the contraction index in
// increasing order. Rows past T are zero-filled and masked, so no out-of-range element is read or written.
// Only cuda/check.h and CUDA headers here (see cmake/cuda.cmake: no fmt under nvcc).
#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>

#include "cuda/attention.h"
#include "cuda/check.h"

namespace lora {

namespace {

constexpr int kThreads = 128;  // threads per block of the dK/dV and dQ kernels (4 warps)

// Tile shapes for head dim D. Shared memory (floats):
//   dkv: 2·BC·LD (K, V) + 2·BR·LD (Q, dO) + 2·BR·LDP (P, dS) + 2·BR (lse, delta)
//   dq:  2·BR·LD (Q, dO) + 2·BC·LD (K, V) + BR·LDP (dS) + 2·BR
// D = 64: 67 KB / 59 KB; D = 128 (BR = 32): 75 KB / 71 KB — over the 48 KB default, so the launcher raises
// the kernels' dynamic shared memory limit (sm_80 allows 163 KB per block, sm_90 227 KB).
template <int D>
struct Tile {
  static constexpr int BR = D == 128 ? 32 : 64;  // queries per tile
  static constexpr int BC = 32;                  // keys per tile
  static constexpr int LD = D + 1;               // padded row stride of the (rows, D) tiles
  static constexpr int LDP = BC + 1;             // padded row stride of the (BR, BC) tiles
  // The (BR, BC) score micro-tiles: 16 x 8 threads, rows ty + 16·i, columns tx + 8·j.
  static constexpr int SY = 16, SX = 8, SI = BR / SY, SJ = BC / SX;
  // The (rows, D) accumulators (dK, dV: rows = BC; dQ: rows = BR): TY x TX threads, rows ty + TY·i,
  // dims tx + TX·j.
  static constexpr int TX = D < 16 ? D : 16, TY = kThreads / TX, NJ = D / TX;
  static constexpr int KI = BC / TY;  // dK/dV rows per thread
  static constexpr int QI = BR / TY;  // dQ rows per thread
  static constexpr int dkv_smem_floats = 2 * BC * LD + 2 * BR * LD + 2 * BR * LDP + 2 * BR;
  static constexpr int dq_smem_floats = 2 * BR * LD + 2 * BC * LD + BR * LDP + 2 * BR;
  static_assert(SY * SX == kThreads && BR % SY == 0 && BC % SX == 0, "score micro-tile does not cover the tile");
  static_assert(TX * TY == kThreads && D % TX == 0 && BC % TY == 0 && BR % TY == 0, "accumulators do not tile");
};

// delta (n_vec) = Σ_d dout·out over each D-vector; one warp per vector, 8 per block.
__global__ void attention_bwd_delta_kernel(const float* __restrict__ out, const float* __restrict__ dout,
                                           float* __restrict__ delta, int64_t n_vec, int D) {
  const int warp = int(threadIdx.x) / 32, lane = int(threadIdx.x) % 32;
  const int64_t vec = int64_t(blockIdx.x) * 8 + warp;
  if (vec >= n_vec) return;  // warp-uniform
  const float* o = out + vec * D;
  const float* g = dout + vec * D;
  float s = 0.0f;
  for (int d = lane; d < D; d += 32) s = fmaf(g[d], o[d], s);
#pragma unroll
  for (int off = 16; off > 0; off /= 2) s += __shfl_xor_sync(0xffffffffu, s, off);
  if (lane == 0) delta[vec] = s;
}

// dst (rows, LD) <- rows 0 .. n_valid-1 of src (row r at src + r·stride, D floats, 16-byte aligned),
// zeros for rows n_valid .. rows-1.
template <int D, int LD>
__device__ __forceinline__ void load_tile(float* dst, const float* __restrict__ src, int64_t stride, int rows,
                                          int n_valid) {
  constexpr int V = D / 4;
  for (int i = int(threadIdx.x); i < rows * V; i += kThreads) {
    const int r = i / V, c = (i % V) * 4;
    float4 x = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
    if (r < n_valid) x = *reinterpret_cast<const float4*>(src + r * stride + c);
    float* d = dst + r * LD + c;
    d[0] = x.x;
    d[1] = x.y;
    d[2] = x.z;
    d[3] = x.w;
  }
}

// The thread's micro-tile of S = Q·Kᵀ and dP = dO·Vᵀ (BR, BC), from the shared tiles; s unscaled.
template <int D>
__device__ __forceinline__ void scores_tile(const float* Qs, const float* dOs, const float* Ks, const float* Vs,
                                            float (&s)[Tile<D>::SI][Tile<D>::SJ],
                                            float (&dp)[Tile<D>::SI][Tile<D>::SJ]) {
  using Tl = Tile<D>;
  const int ty = int(threadIdx.x) / Tl::SX, tx = int(threadIdx.x) % Tl::SX;
#pragma unroll
  for (int i = 0; i < Tl::SI; ++i)
#pragma unroll
    for (int j = 0; j < Tl::SJ; ++j) s[i][j] = dp[i][j] = 0.0f;
#pragma unroll 4
  for (int kk = 0; kk < D; ++kk) {
    float a[Tl::SI], g[Tl::SI], kc[Tl::SJ], vc[Tl::SJ];
#pragma unroll
    for (int i = 0; i < Tl::SI; ++i) {
      a[i] = Qs[(ty + Tl::SY * i) * Tl::LD + kk];
      g[i] = dOs[(ty + Tl::SY * i) * Tl::LD + kk];
    }
#pragma unroll
    for (int j = 0; j < Tl::SJ; ++j) {
      kc[j] = Ks[(tx + Tl::SX * j) * Tl::LD + kk];
      vc[j] = Vs[(tx + Tl::SX * j) * Tl::LD + kk];
    }
#pragma unroll
    for (int i = 0; i < Tl::SI; ++i)
#pragma unroll
      for (int j = 0; j < Tl::SJ; ++j) {
        s[i][j] = fmaf(a[i], kc[j], s[i][j]);
        dp[i][j] = fmaf(g[i], vc[j], dp[i][j]);
      }
  }
}

// From the micro-tiles of S and dP: P = exp(scale·s - lse) and dS = P ⊙ (dP - delta) where key j0 + c is
// visible to query i0 + r (c <= r offset by the tile origins, and the query exists), 0 elsewhere; written
// to the shared (BR, LDP) tiles (Ps may be null when only dS is needed).
template <int D>
__device__ __forceinline__ void probs_tile(const float (&s)[Tile<D>::SI][Tile<D>::SJ],
                                           const float (&dp)[Tile<D>::SI][Tile<D>::SJ], const float* lse_s,
                                           const float* delta_s, int64_t i0, int64_t j0, int T, float scale,
                                           float* Ps, float* dSs) {
  using Tl = Tile<D>;
  const int ty = int(threadIdx.x) / Tl::SX, tx = int(threadIdx.x) % Tl::SX;
#pragma unroll
  for (int i = 0; i < Tl::SI; ++i) {
    const int r = ty + Tl::SY * i;
    const int64_t query = i0 + r;
#pragma unroll
    for (int j = 0; j < Tl::SJ; ++j) {
      const int c = tx + Tl::SX * j;
      const int64_t key = j0 + c;
      const bool visible = query < T && key <= query;
      // __fmul_rn: the forward's rounding of the scaled score (no FMA contraction with the subtraction).
      const float p = visible ? expf(__fmul_rn(s[i][j], scale) - lse_s[r]) : 0.0f;
      const float ds = visible ? p * (dp[i][j] - delta_s[r]) : 0.0f;
      if (Ps) Ps[r * Tl::LDP + c] = p;
      dSs[r * Tl::LDP + c] = ds;
    }
  }
}

// grid: x = key tile (tile 0 first: it sees the most queries), y = kv head g, z = batch row b.
template <int D>
__global__ void __launch_bounds__(kThreads)
    attention_bwd_dkv_kernel(const float* __restrict__ q, const float* __restrict__ k, const float* __restrict__ v,
                             const float* __restrict__ dout, const float* __restrict__ lse,
                             const float* __restrict__ delta, float* __restrict__ dk, float* __restrict__ dv, int T,
                             int H, int KV, float scale) {
  using Tl = Tile<D>;
  constexpr int BR = Tl::BR, BC = Tl::BC, LD = Tl::LD, LDP = Tl::LDP;
  extern __shared__ __align__(16) float smem[];
  float* Ks = smem;              // (BC, LD)
  float* Vs = Ks + BC * LD;      // (BC, LD)
  float* Qs = Vs + BC * LD;      // (BR, LD)
  float* dOs = Qs + BR * LD;     // (BR, LD)
  float* Ps = dOs + BR * LD;     // (BR, LDP)
  float* dSs = Ps + BR * LDP;    // (BR, LDP)
  float* lse_s = dSs + BR * LDP; // (BR)
  float* delta_s = lse_s + BR;   // (BR)

  const int64_t j0 = int64_t(blockIdx.x) * BC;
  const int g = int(blockIdx.y);
  const int64_t b = blockIdx.z;
  const int group = H / KV;
  const int n_keys = int(T - j0 < BC ? T - j0 : BC);  // valid keys of this tile
  const int64_t kv_stride = int64_t(KV) * D, q_stride = int64_t(H) * D;

  load_tile<D, LD>(Ks, k + (b * T + j0) * kv_stride + int64_t(g) * D, kv_stride, BC, n_keys);
  load_tile<D, LD>(Vs, v + (b * T + j0) * kv_stride + int64_t(g) * D, kv_stride, BC, n_keys);

  const int ty = int(threadIdx.x) / Tl::TX, tx = int(threadIdx.x) % Tl::TX;
  float acc_dk[Tl::KI][Tl::NJ], acc_dv[Tl::KI][Tl::NJ];
#pragma unroll
  for (int i = 0; i < Tl::KI; ++i)
#pragma unroll
    for (int j = 0; j < Tl::NJ; ++j) acc_dk[i][j] = acc_dv[i][j] = 0.0f;

  const int64_t first_i0 = j0 / BR * BR;  // queries before j0 see none of these keys
  for (int h = g * group; h < (g + 1) * group; ++h) {
    for (int64_t i0 = first_i0; i0 < T; i0 += BR) {
      const int n_q = int(T - i0 < BR ? T - i0 : BR);
      __syncthreads();  // the previous tile's readers are done with Qs, dOs, Ps, dSs (and K, V are loaded)
      const int64_t qrow0 = (b * T + i0) * q_stride + int64_t(h) * D;
      load_tile<D, LD>(Qs, q + qrow0, q_stride, BR, n_q);
      load_tile<D, LD>(dOs, dout + qrow0, q_stride, BR, n_q);
      for (int r = int(threadIdx.x); r < BR; r += kThreads) {
        const int64_t li = (b * T + i0 + r) * H + h;
        lse_s[r] = r < n_q ? lse[li] : 0.0f;
        delta_s[r] = r < n_q ? delta[li] : 0.0f;
      }
      __syncthreads();
      float s[Tl::SI][Tl::SJ], dp[Tl::SI][Tl::SJ];
      scores_tile<D>(Qs, dOs, Ks, Vs, s, dp);
      probs_tile<D>(s, dp, lse_s, delta_s, i0, j0, T, scale, Ps, dSs);
      __syncthreads();
      // dV (BC, D) += Pᵀ·dO and dK (BC, D) += dSᵀ·Q over the tile's valid queries (the rest are zero rows).
#pragma unroll 2
      for (int r = 0; r < n_q; ++r) {
        float pc[Tl::KI], dsc[Tl::KI], gd[Tl::NJ], qd[Tl::NJ];
#pragma unroll
        for (int i = 0; i < Tl::KI; ++i) {
          pc[i] = Ps[r * LDP + ty + Tl::TY * i];
          dsc[i] = dSs[r * LDP + ty + Tl::TY * i];
        }
#pragma unroll
        for (int j = 0; j < Tl::NJ; ++j) {
          gd[j] = dOs[r * LD + tx + Tl::TX * j];
          qd[j] = Qs[r * LD + tx + Tl::TX * j];
        }
#pragma unroll
        for (int i = 0; i < Tl::KI; ++i)
#pragma unroll
          for (int j = 0; j < Tl::NJ; ++j) {
            acc_dv[i][j] = fmaf(pc[i], gd[j], acc_dv[i][j]);
            acc_dk[i][j] = fmaf(dsc[i], qd[j], acc_dk[i][j]);
          }
      }
    }
  }

#pragma unroll
  for (int i = 0; i < Tl::KI; ++i) {
    const int c = ty + Tl::TY * i;
    if (c >= n_keys) continue;
    const int64_t base = (b * T + j0 + c) * kv_stride + int64_t(g) * D;
#pragma unroll
    for (int j = 0; j < Tl::NJ; ++j) {
      const int d = tx + Tl::TX * j;
      dk[base + d] = acc_dk[i][j] * scale;
      dv[base + d] = acc_dv[i][j];
    }
  }
}

// grid: x = query tile (last first: it sees the most keys), y = head h, z = batch row b.
template <int D>
__global__ void __launch_bounds__(kThreads)
    attention_bwd_dq_kernel(const float* __restrict__ q, const float* __restrict__ k, const float* __restrict__ v,
                            const float* __restrict__ dout, const float* __restrict__ lse,
                            const float* __restrict__ delta, float* __restrict__ dq, int T, int H, int KV,
                            float scale) {
  using Tl = Tile<D>;
  constexpr int BR = Tl::BR, BC = Tl::BC, LD = Tl::LD, LDP = Tl::LDP;
  extern __shared__ __align__(16) float smem[];
  float* Qs = smem;               // (BR, LD)
  float* dOs = Qs + BR * LD;      // (BR, LD)
  float* Ks = dOs + BR * LD;      // (BC, LD)
  float* Vs = Ks + BC * LD;       // (BC, LD)
  float* dSs = Vs + BC * LD;      // (BR, LDP)
  float* lse_s = dSs + BR * LDP;  // (BR)
  float* delta_s = lse_s + BR;    // (BR)

  const int n_tiles = (T + BR - 1) / BR;
  const int64_t i0 = int64_t(n_tiles - 1 - int(blockIdx.x)) * BR;
  const int h = int(blockIdx.y);
  const int64_t b = blockIdx.z;
  const int g = h / (H / KV);
  const int n_q = int(T - i0 < BR ? T - i0 : BR);
  const int64_t kv_stride = int64_t(KV) * D, q_stride = int64_t(H) * D;

  const int64_t qrow0 = (b * T + i0) * q_stride + int64_t(h) * D;
  load_tile<D, LD>(Qs, q + qrow0, q_stride, BR, n_q);
  load_tile<D, LD>(dOs, dout + qrow0, q_stride, BR, n_q);
  for (int r = int(threadIdx.x); r < BR; r += kThreads) {
    const int64_t li = (b * T + i0 + r) * H + h;
    lse_s[r] = r < n_q ? lse[li] : 0.0f;
    delta_s[r] = r < n_q ? delta[li] : 0.0f;
  }

  const int ty = int(threadIdx.x) / Tl::TX, tx = int(threadIdx.x) % Tl::TX;
  float acc[Tl::QI][Tl::NJ];
#pragma unroll
  for (int i = 0; i < Tl::QI; ++i)
#pragma unroll
    for (int j = 0; j < Tl::NJ; ++j) acc[i][j] = 0.0f;

  const int64_t key_end = i0 + n_q;  // keys 0 .. i0 + n_q - 1 are visible to some query of the tile
  for (int64_t j0 = 0; j0 < key_end; j0 += BC) {
    const int n_k = int(key_end - j0 < BC ? key_end - j0 : BC);
    __syncthreads();  // the previous tile's readers are done with Ks, dSs (and Q, dO, lse, delta are loaded)
    load_tile<D, LD>(Ks, k + (b * T + j0) * kv_stride + int64_t(g) * D, kv_stride, BC, n_k);
    load_tile<D, LD>(Vs, v + (b * T + j0) * kv_stride + int64_t(g) * D, kv_stride, BC, n_k);
    __syncthreads();
    float s[Tl::SI][Tl::SJ], dp[Tl::SI][Tl::SJ];
    scores_tile<D>(Qs, dOs, Ks, Vs, s, dp);
    probs_tile<D>(s, dp, lse_s, delta_s, i0, j0, T, scale, nullptr, dSs);
    __syncthreads();
    // dQ (BR, D) += dS·K over the tile's valid keys (masked columns of dS are zero).
#pragma unroll 2
    for (int c = 0; c < n_k; ++c) {
      float dsr[Tl::QI], kd[Tl::NJ];
#pragma unroll
      for (int i = 0; i < Tl::QI; ++i) dsr[i] = dSs[(ty + Tl::TY * i) * LDP + c];
#pragma unroll
      for (int j = 0; j < Tl::NJ; ++j) kd[j] = Ks[c * LD + tx + Tl::TX * j];
#pragma unroll
      for (int i = 0; i < Tl::QI; ++i)
#pragma unroll
        for (int j = 0; j < Tl::NJ; ++j) acc[i][j] = fmaf(dsr[i], kd[j], acc[i][j]);
    }
  }

#pragma unroll
  for (int i = 0; i < Tl::QI; ++i) {
    const int r = ty + Tl::TY * i;
    if (r >= n_q) continue;
    const int64_t base = (b * T + i0 + r) * q_stride + int64_t(h) * D;
#pragma unroll
    for (int j = 0; j < Tl::NJ; ++j) dq[base + tx + Tl::TX * j] = acc[i][j] * scale;
  }
}

template <int D>
cudaError_t launch_bwd(const float* q, const float* k, const float* v, const float* lse, const float* dout,
                       const float* delta, float* dq, float* dk, float* dv, int64_t B, int64_t T, int64_t H,
                       int64_t KV, cudaStream_t stream) {
  using Tl = Tile<D>;
  const float scale = 1.0f / sqrtf(float(D));
  const size_t dkv_bytes = size_t(Tl::dkv_smem_floats) * sizeof(float);
  const size_t dq_bytes = size_t(Tl::dq_smem_floats) * sizeof(float);
  // Per device and cheap, so set on every call rather than cached (a cache would need one flag per device).
  cudaError_t err = cudaFuncSetAttribute(attention_bwd_dkv_kernel<D>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                         int(dkv_bytes));
  if (err != cudaSuccess) return err;
  err = cudaFuncSetAttribute(attention_bwd_dq_kernel<D>, cudaFuncAttributeMaxDynamicSharedMemorySize, int(dq_bytes));
  if (err != cudaSuccess) return err;
  const dim3 g_dkv(unsigned((T + Tl::BC - 1) / Tl::BC), unsigned(KV), unsigned(B));
  attention_bwd_dkv_kernel<D><<<g_dkv, kThreads, dkv_bytes, stream>>>(q, k, v, dout, lse, delta, dk, dv, int(T),
                                                                       int(H), int(KV), scale);
  err = cudaGetLastError();
  if (err != cudaSuccess) return err;
  const dim3 g_dq(unsigned((T + Tl::BR - 1) / Tl::BR), unsigned(H), unsigned(B));
  attention_bwd_dq_kernel<D><<<g_dq, kThreads, dq_bytes, stream>>>(q, k, v, dout, lse, delta, dq, int(T), int(H),
                                                                    int(KV), scale);
  return cudaGetLastError();
}

bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15u) == 0; }

}  // namespace

void cuda_attention_bwd(const float* q, const float* k, const float* v, const float* out, const float* lse,
                        const float* dout, float* dq, float* dk, float* dv, int64_t B, int64_t T, int64_t H,
                        int64_t KV, int64_t D, cudaStream_t stream) {
  // Precondition failures are bugs in the caller (the Ops layer checks shapes first): InternalError.
  if (!(D == 8 || D == 16 || D == 64 || D == 128))
    cuda_fail(cudaErrorInvalidValue, "cuda_attention_bwd: head dim D must be 8, 16, 64 or 128", __FILE__, __LINE__);
  if (!(B >= 0 && T >= 0 && H > 0 && KV > 0 && H % KV == 0))
    cuda_fail(cudaErrorInvalidValue, "cuda_attention_bwd: need B >= 0, T >= 0, H % KV == 0", __FILE__, __LINE__);
  if (B > 65535 || H > 65535 || T > int64_t(INT32_MAX) / (H * D) || B * T * H > int64_t(INT32_MAX) * 8)
    cuda_fail(cudaErrorInvalidValue, "cuda_attention_bwd: B, H or T·H·D too large", __FILE__, __LINE__);
  if (B == 0 || T == 0) return;
  const float* in[] = {q, k, v, out, dout};
  for (const float* p : in)
    if (!p || !aligned16(p))
      cuda_fail(cudaErrorInvalidValue, "cuda_attention_bwd: q, k, v, out, dout must be non-null and 16-byte aligned",
                __FILE__, __LINE__);
  if (!lse || !dq || !dk || !dv || !aligned16(dq) || !aligned16(dk) || !aligned16(dv))
    cuda_fail(cudaErrorInvalidValue, "cuda_attention_bwd: lse, dq, dk, dv must be non-null (dq, dk, dv aligned)",
              __FILE__, __LINE__);

  const int64_t n_vec = B * T * H;
  float* delta = nullptr;  // (B, T, H) rowsum(dout ⊙ out), stream-ordered scratch
  LORA_CUDA_CHECK(cudaMallocAsync(reinterpret_cast<void**>(&delta), size_t(n_vec) * sizeof(float), stream));
  attention_bwd_delta_kernel<<<unsigned((n_vec + 7) / 8), 256, 0, stream>>>(out, dout, delta, n_vec, int(D));
  cudaError_t err = cudaGetLastError();
  if (err == cudaSuccess) {
    switch (D) {
      case 8: err = launch_bwd<8>(q, k, v, lse, dout, delta, dq, dk, dv, B, T, H, KV, stream); break;
      case 16: err = launch_bwd<16>(q, k, v, lse, dout, delta, dq, dk, dv, B, T, H, KV, stream); break;
      case 64: err = launch_bwd<64>(q, k, v, lse, dout, delta, dq, dk, dv, B, T, H, KV, stream); break;
      default: err = launch_bwd<128>(q, k, v, lse, dout, delta, dq, dk, dv, B, T, H, KV, stream); break;
    }
  }
  const cudaError_t free_err = cudaFreeAsync(delta, stream);  // after the kernels in stream order
  if (err == cudaSuccess) err = free_err;
  LORA_CUDA_CHECK(err);
}

}  // namespace lora
