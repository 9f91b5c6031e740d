// Backward of the training attention (cuda_attention_bwd, declared in cuda/attention.h), f32 throughout.
// Flash-attention style: the probabilities are recomputed tile by tile from q, k and the forward's lse,
//   P = exp(scale·q·kᵀ - lse) (causal),  dV = Pᵀ·dO,  dP = dO·Vᵀ,  dS = P ⊙ (dP - delta),
//   dQ = scale·dS·K,  dK = scale·dSᵀ·Q,   with delta = rowsum(dO ⊙ O) per (query, head),
// in two kernels on the stream:
//   1. attention_bwd_kernel, grid (key tiles + query tiles, head h, batch row b). A block of the first kind
//      holds K, V of its BC keys in shared memory and the per-HEAD dK, dV of those keys in registers, and
//      walks the query tiles (BR queries) from its first key on; a block of the second kind holds Q, dO of
//      its BR queries and dQ in registers and walks the key tiles up to its last query. Both recompute
//      delta for the queries they load (same code, so the same bits everywhere: no delta pass). One launch
//      for both kinds, so the short blocks of one fill the tail of the other;
//   2. attention_bwd_group_sum_kernel (only when H > KV): dk, dv = the sum of the group's H/KV per-head
//      partials, in head order, from (B, T, H, D) stream-ordered scratch (cudaMallocAsync / cudaFreeAsync,
//      so CUDA graph capture works). With H == KV the partials are dk, dv themselves.
// Every output element is summed by one thread in a fixed order — no atomics, bit-reproducible.
// Parallelism is the point of the per-head split: TinyLlama's T = 90 (H = 32, KV = 4) has only 12 (key
// tile, kv head) pairs but 192 (key tile, head) pairs. S and dP are recomputed by both kinds of block (the
// price of determinism without a dQ workspace per key tile).
//
// Two tile sets: small (16 keys per dK/dV block, 16 queries per dQ block) when the large set would give
// fewer than kLargeTileBlocks dK/dV blocks, so that short rows still put a few blocks on every SM; large
// (32 keys, 64 queries; the larger register micro-tiles use shared memory better) otherwise. Both give the
// same bits: every sum runs over the same terms in the same order (a dK/dV block of 32 keys sees the
// queries before its second 16 keys too, but their P and dS are exact zeros). The shared-memory reads are
// the bottleneck, so the score products skip the strips of a tile past T or past the last visible key.
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

constexpr int kThreads = 128;  // threads per block of attention_bwd_kernel (4 warps)
constexpr int kWarps = kThreads / 32;
constexpr int64_t kLargeTileBlocks = 512;  // about 4 per SM on a 132-SM GPU (plus the dQ blocks)

// Tile shapes for head dim D, BR queries x BC keys. Shared memory (floats):
//   dK/dV block: 2·BC·LD (K, V) + 2·BR·LD (Q, dO) + 2·BR·LDP (P, dS) + 2·BR (lse, delta)
//   dQ block:    2·BR·LD (Q, dO) + 2·BC·LD (K, V) + BR·LDP (dS) + 2·BR
// Large, D = 64: 67 KB / 59 KB; D = 128 (BR = 32): 75 KB / 71 KB — over the 48 KB default, so the launcher
// raises the kernel's dynamic shared memory limit (sm_80 allows 163 KB per block, sm_90 227 KB). Small,
// D = 64: 51 KB / 27 KB (4 blocks per SM on an H100).
template <int D, int BR_, int BC_>
struct Tile {
  static constexpr int BR = BR_;      // queries per tile
  static constexpr int BC = BC_;      // keys per tile
  static constexpr int LD = D + 1;    // padded row stride of the (rows, D) tiles
  static constexpr int LDP = BC + 1;  // padded row stride of the (BR, BC) tiles
  // The (BR, BC) score micro-tiles: 16 x 8 threads, rows ty + 16·i, columns tx + 8·j.
  static constexpr int SY = 16, SX = 8, SI = BR / SY, SJ = BC / SX;
  // The (rows, D) accumulators (dK, dV: rows = BC; dQ: rows = BR): TY x TX threads, rows ty + TY·i,
  // dims tx + TX·j.
  // (KI = BC / TY dK/dV rows and QI = BR / TY dQ rows per thread are defined where used: nvcc warns about
  // static members a kernel never reads.)
  static constexpr int TX = D < 16 ? D : 16, TY = kThreads / TX, NJ = D / TX;
  static_assert(SY * SX == kThreads && BR % SY == 0 && BC % SX == 0, "score micro-tile does not cover the tile");
  static_assert(TX * TY == kThreads && D % TX == 0, "accumulators do not tile D");
  static_assert(BR % kWarps == 0, "delta rows are split evenly over the warps");
};

// Shared memory of the two kinds of block (see above), in floats.
template <class Tl>
constexpr int dkv_smem_floats() {
  return 2 * Tl::BC * Tl::LD + 2 * Tl::BR * Tl::LD + 2 * Tl::BR * Tl::LDP + 2 * Tl::BR;
}
template <class Tl>
constexpr int dq_smem_floats() {
  return 2 * Tl::BR * Tl::LD + 2 * Tl::BC * Tl::LD + Tl::BR * Tl::LDP + 2 * Tl::BR;
}

template <int D>
struct SmallTiles {
  using KV = Tile<D, D == 128 ? 32 : 64, 16>;  // dK/dV blocks: 16 keys, walking 64 (32) queries at a time
  using Q = Tile<D, 16, 32>;                   // dQ blocks: 16 queries, walking 32 keys at a time
};
template <int D>
struct LargeTiles {
  using KV = Tile<D, D == 128 ? 32 : 64, 32>;
  using Q = Tile<D, D == 128 ? 32 : 64, 32>;
};

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

// delta_s[r] = Σ_d dout·out of the query row r at element row0 + r·stride, for r < n_valid (0 for the rest
// of the BR rows). Warp w sums rows w, w + 4, ...: lane l takes d = l, l + 32, ... in order, then a
// butterfly over the lanes — the same bits in every block that needs the row.
template <int D, int BR>
__device__ __forceinline__ void rows_delta(const float* __restrict__ out, const float* __restrict__ dout,
                                           int64_t row0, int64_t stride, int n_valid, float* delta_s) {
  constexpr int RW = BR / kWarps, E = (D + 31) / 32;
  const int warp = int(threadIdx.x) / 32, lane = int(threadIdx.x) % 32;
  float s[RW];
#pragma unroll
  for (int i = 0; i < RW; ++i) {
    const int r = warp + kWarps * i;
    s[i] = 0.0f;
    if (r < n_valid) {  // warp-uniform
      const float* o = out + row0 + r * stride;
      const float* g = dout + row0 + r * stride;
#pragma unroll
      for (int e = 0; e < E; ++e) {
        const int d = lane + 32 * e;
        if (d < D) s[i] = fmaf(g[d], o[d], s[i]);
      }
    }
  }
#pragma unroll
  for (int i = 0; i < RW; ++i) {
#pragma unroll
    for (int off = 16; off > 0; off /= 2) s[i] += __shfl_xor_sync(0xffffffffu, s[i], off);
    if (lane == 0) delta_s[warp + kWarps * i] = s[i];
  }
}

// The thread's micro-tile of S = Q·Kᵀ and dP = dO·Vᵀ (BR, BC), from the shared tiles; s unscaled. Rows
// >= n_rows and columns >= n_cols are masked by the caller; the strips of the micro-tile that hold only
// such rows (SY·i >= n_rows) or columns (SX·j >= n_cols) are skipped — the test is the same for every
// thread, so it costs no divergence and saves the shared-memory reads (the bottleneck) of a short last
// tile. Skipped entries stay 0; the others are computed exactly as without the skip.
template <int D, class Tl>
__device__ __forceinline__ void scores_tile(const float* Qs, const float* dOs, const float* Ks, const float* Vs,
                                            int n_rows, int n_cols, float (&s)[Tl::SI][Tl::SJ],
                                            float (&dp)[Tl::SI][Tl::SJ]) {
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
      a[i] = Tl::SY * i < n_rows ? Qs[(ty + Tl::SY * i) * Tl::LD + kk] : 0.0f;
      g[i] = Tl::SY * i < n_rows ? dOs[(ty + Tl::SY * i) * Tl::LD + kk] : 0.0f;
    }
#pragma unroll
    for (int j = 0; j < Tl::SJ; ++j) {
      kc[j] = Tl::SX * j < n_cols ? Ks[(tx + Tl::SX * j) * Tl::LD + kk] : 0.0f;
      vc[j] = Tl::SX * j < n_cols ? Vs[(tx + Tl::SX * j) * Tl::LD + kk] : 0.0f;
    }
#pragma unroll
    for (int i = 0; i < Tl::SI; ++i)
#pragma unroll
      for (int j = 0; j < Tl::SJ; ++j)
        if (Tl::SY * i < n_rows && Tl::SX * j < n_cols) {
          s[i][j] = fmaf(a[i], kc[j], s[i][j]);
          dp[i][j] = fmaf(g[i], vc[j], dp[i][j]);
        }
  }
}

// From the micro-tiles of S and dP: P = exp(scale·s - lse) and dS = P ⊙ (dP - delta) where key j0 + c is
// visible to query i0 + r (key <= query, and the query exists), 0 elsewhere; written to the shared
// (BR, LDP) tiles (Ps may be null when only dS is needed). i0 and j0 need not be multiples of the tile.
template <class Tl>
__device__ __forceinline__ void probs_tile(const float (&s)[Tl::SI][Tl::SJ], const float (&dp)[Tl::SI][Tl::SJ],
                                           const float* lse_s, const float* delta_s, int64_t i0, int64_t j0, int T,
                                           float scale, float* Ps, float* dSs) {
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

// lse_s, delta_s (BR) of the query tile at rows i0 .. i0 + n_q - 1 of head h (0 past n_q).
template <int D, int BR>
__device__ __forceinline__ void load_row_stats(const float* __restrict__ out, const float* __restrict__ dout,
                                               const float* __restrict__ lse, int64_t b, int64_t i0, int n_q, int T,
                                               int H, int h, float* lse_s, float* delta_s) {
  for (int r = int(threadIdx.x); r < BR; r += kThreads) lse_s[r] = r < n_q ? lse[(b * T + i0 + r) * H + h] : 0.0f;
  const int64_t q_stride = int64_t(H) * D;
  rows_delta<D, BR>(out, dout, (b * T + i0) * q_stride + int64_t(h) * D, q_stride, n_q, delta_s);
}

// dK, dV of keys key_tile·BC .. +BC-1 from query head h alone, scaled, into rows of the (B, T, H, D)
// partials dk_part, dv_part. Queries before the tile's first key see none of its keys, so the walk starts
// there (the query tiles are not aligned to BR).
template <int D, class Tl>
__device__ __forceinline__ void dkv_block(float* smem, const float* __restrict__ q, const float* __restrict__ k,
                                          const float* __restrict__ v, const float* __restrict__ out,
                                          const float* __restrict__ dout, const float* __restrict__ lse,
                                          float* __restrict__ dk_part, float* __restrict__ dv_part, int T, int H,
                                          int KV, float scale, int key_tile, int h, int64_t b) {
  constexpr int BR = Tl::BR, BC = Tl::BC, LD = Tl::LD, LDP = Tl::LDP;
  constexpr int KI = BC / Tl::TY;  // dK/dV rows per thread
  static_assert(BC % Tl::TY == 0, "dK/dV accumulators do not tile the keys");
  float* Ks = smem;               // (BC, LD)
  float* Vs = Ks + BC * LD;       // (BC, LD)
  float* Qs = Vs + BC * LD;       // (BR, LD)
  float* dOs = Qs + BR * LD;      // (BR, LD)
  float* Ps = dOs + BR * LD;      // (BR, LDP)
  float* dSs = Ps + BR * LDP;     // (BR, LDP)
  float* lse_s = dSs + BR * LDP;  // (BR)
  float* delta_s = lse_s + BR;    // (BR)

  const int64_t j0 = int64_t(key_tile) * BC;
  const int g = h / (H / KV);
  const int n_keys = int(T - j0 < BC ? T - j0 : BC);  // valid keys of this tile
  const int64_t kv_stride = int64_t(KV) * D, q_stride = int64_t(H) * D;

  load_tile<D, LD>(Ks, k + (b * T + j0) * kv_stride + int64_t(g) * D, kv_stride, BC, n_keys);
  load_tile<D, LD>(Vs, v + (b * T + j0) * kv_stride + int64_t(g) * D, kv_stride, BC, n_keys);

  const int ty = int(threadIdx.x) / Tl::TX, tx = int(threadIdx.x) % Tl::TX;
  float acc_dk[KI][Tl::NJ], acc_dv[KI][Tl::NJ];
#pragma unroll
  for (int i = 0; i < KI; ++i)
#pragma unroll
    for (int j = 0; j < Tl::NJ; ++j) acc_dk[i][j] = acc_dv[i][j] = 0.0f;

  for (int64_t i0 = j0; i0 < T; i0 += BR) {
    const int n_q = int(T - i0 < BR ? T - i0 : BR);
    __syncthreads();  // the previous tile's readers are done with Qs, dOs, Ps, dSs, lse_s, delta_s
    const int64_t qrow0 = (b * T + i0) * q_stride + int64_t(h) * D;
    load_tile<D, LD>(Qs, q + qrow0, q_stride, BR, n_q);
    load_tile<D, LD>(dOs, dout + qrow0, q_stride, BR, n_q);
    load_row_stats<D, BR>(out, dout, lse, b, i0, n_q, T, H, h, lse_s, delta_s);
    __syncthreads();  // (and K, V are loaded)
    float s[Tl::SI][Tl::SJ], dp[Tl::SI][Tl::SJ];
    scores_tile<D, Tl>(Qs, dOs, Ks, Vs, n_q, n_keys, s, dp);
    probs_tile<Tl>(s, dp, lse_s, delta_s, i0, j0, T, scale, Ps, dSs);
    __syncthreads();
    // dV (BC, D) += Pᵀ·dO and dK (BC, D) += dSᵀ·Q over the tile's valid queries (the rest are zero rows).
#pragma unroll 2
    for (int r = 0; r < n_q; ++r) {
      float pc[KI], dsc[KI], gd[Tl::NJ], qd[Tl::NJ];
#pragma unroll
      for (int i = 0; i < KI; ++i) {
        pc[i] = Ps[r * LDP + ty + Tl::TY * i];
        dsc[i] = dSs[r * LDP + ty + Tl::TY * i];
      }
#pragma unroll
      for (int j = 0; j < Tl::NJ; ++j) {
        gd[j] = dOs[r * LD + tx + Tl::TX * j];
        qd[j] = Qs[r * LD + tx + Tl::TX * j];
      }
#pragma unroll
      for (int i = 0; i < KI; ++i)
#pragma unroll
        for (int j = 0; j < Tl::NJ; ++j) {
          acc_dv[i][j] = fmaf(pc[i], gd[j], acc_dv[i][j]);
          acc_dk[i][j] = fmaf(dsc[i], qd[j], acc_dk[i][j]);
        }
    }
  }

#pragma unroll
  for (int i = 0; i < KI; ++i) {
    const int c = ty + Tl::TY * i;
    if (c >= n_keys) continue;
    const int64_t base = (b * T + j0 + c) * q_stride + int64_t(h) * D;  // row (b, j0 + c), head h
#pragma unroll
    for (int j = 0; j < Tl::NJ; ++j) {
      const int d = tx + Tl::TX * j;
      dk_part[base + d] = acc_dk[i][j] * scale;
      dv_part[base + d] = acc_dv[i][j];
    }
  }
}

// dQ of queries i0 .. i0 + BR - 1 (i0 = query_tile·BR) of head h, walking the key tiles up to its last query.
template <int D, class Tl>
__device__ __forceinline__ void dq_block(float* smem, const float* __restrict__ q, const float* __restrict__ k,
                                         const float* __restrict__ v, const float* __restrict__ out,
                                         const float* __restrict__ dout, const float* __restrict__ lse,
                                         float* __restrict__ dq, int T, int H, int KV, float scale, int query_tile,
                                         int h, int64_t b) {
  constexpr int BR = Tl::BR, BC = Tl::BC, LD = Tl::LD, LDP = Tl::LDP;
  constexpr int QI = BR / Tl::TY;  // dQ rows per thread
  static_assert(BR % Tl::TY == 0, "dQ accumulators do not tile the queries");
  float* Qs = smem;               // (BR, LD)
  float* dOs = Qs + BR * LD;      // (BR, LD)
  float* Ks = dOs + BR * LD;      // (BC, LD)
  float* Vs = Ks + BC * LD;       // (BC, LD)
  float* dSs = Vs + BC * LD;      // (BR, LDP)
  float* lse_s = dSs + BR * LDP;  // (BR)
  float* delta_s = lse_s + BR;    // (BR)

  const int64_t i0 = int64_t(query_tile) * BR;
  const int g = h / (H / KV);
  const int n_q = int(T - i0 < BR ? T - i0 : BR);
  const int64_t kv_stride = int64_t(KV) * D, q_stride = int64_t(H) * D;

  const int64_t qrow0 = (b * T + i0) * q_stride + int64_t(h) * D;
  load_tile<D, LD>(Qs, q + qrow0, q_stride, BR, n_q);
  load_tile<D, LD>(dOs, dout + qrow0, q_stride, BR, n_q);
  load_row_stats<D, BR>(out, dout, lse, b, i0, n_q, T, H, h, lse_s, delta_s);

  const int ty = int(threadIdx.x) / Tl::TX, tx = int(threadIdx.x) % Tl::TX;
  float acc[QI][Tl::NJ];
#pragma unroll
  for (int i = 0; i < QI; ++i)
#pragma unroll
    for (int j = 0; j < Tl::NJ; ++j) acc[i][j] = 0.0f;

  const int64_t key_end = i0 + n_q;  // keys 0 .. i0 + n_q - 1 are visible to some query of the tile
  for (int64_t j0 = 0; j0 < key_end; j0 += BC) {
    const int n_k = int(key_end - j0 < BC ? key_end - j0 : BC);
    __syncthreads();  // the previous tile's readers are done with Ks, Vs, dSs (and Q, dO, lse, delta are loaded)
    load_tile<D, LD>(Ks, k + (b * T + j0) * kv_stride + int64_t(g) * D, kv_stride, BC, n_k);
    load_tile<D, LD>(Vs, v + (b * T + j0) * kv_stride + int64_t(g) * D, kv_stride, BC, n_k);
    __syncthreads();
    float s[Tl::SI][Tl::SJ], dp[Tl::SI][Tl::SJ];
    scores_tile<D, Tl>(Qs, dOs, Ks, Vs, n_q, n_k, s, dp);
    probs_tile<Tl>(s, dp, lse_s, delta_s, i0, j0, T, scale, nullptr, dSs);
    __syncthreads();
    // dQ (BR, D) += dS·K over the tile's valid keys (masked columns of dS are zero).
#pragma unroll 2
    for (int c = 0; c < n_k; ++c) {
      float dsr[QI], kd[Tl::NJ];
#pragma unroll
      for (int i = 0; i < QI; ++i) dsr[i] = dSs[(ty + Tl::TY * i) * LDP + c];
#pragma unroll
      for (int j = 0; j < Tl::NJ; ++j) kd[j] = Ks[c * LD + tx + Tl::TX * j];
#pragma unroll
      for (int i = 0; i < QI; ++i)
#pragma unroll
        for (int j = 0; j < Tl::NJ; ++j) acc[i][j] = fmaf(dsr[i], kd[j], acc[i][j]);
    }
  }

#pragma unroll
  for (int i = 0; i < QI; ++i) {
    const int r = ty + Tl::TY * i;
    if (r >= n_q) continue;
    const int64_t base = (b * T + i0 + r) * q_stride + int64_t(h) * D;
#pragma unroll
    for (int j = 0; j < Tl::NJ; ++j) dq[base + tx + Tl::TX * j] = acc[i][j] * scale;
  }
}

// grid: x = n_kt key tiles of TKV::BC keys (tile 0 first: it sees the most queries), then the query tiles of
// TQ::BR queries (last first: it sees the most keys); y = head h; z = batch row b. dk_part, dv_part (B, T, H, D).
template <int D, class TKV, class TQ>
__global__ void __launch_bounds__(kThreads)
    attention_bwd_kernel(const float* __restrict__ q, const float* __restrict__ k, const float* __restrict__ v,
                         const float* __restrict__ out, const float* __restrict__ dout, const float* __restrict__ lse,
                         float* __restrict__ dq, float* __restrict__ dk_part, float* __restrict__ dv_part, int T,
                         int H, int KV, float scale) {
  extern __shared__ __align__(16) float smem[];
  const int n_kt = (T + TKV::BC - 1) / TKV::BC;
  const int h = int(blockIdx.y);
  const int64_t b = blockIdx.z;
  if (int(blockIdx.x) < n_kt) {  // block-uniform
    dkv_block<D, TKV>(smem, q, k, v, out, dout, lse, dk_part, dv_part, T, H, KV, scale, int(blockIdx.x), h, b);
  } else {
    const int n_qt = (T + TQ::BR - 1) / TQ::BR;
    dq_block<D, TQ>(smem, q, k, v, out, dout, lse, dq, T, H, KV, scale, n_qt - 1 - (int(blockIdx.x) - n_kt), h, b);
  }
}

// dk, dv (n4 float4s of (B, T, KV, D)) = Σ_{m < group} of the partials (B, T, H, D) at head g·group + m, in
// increasing m; one float4 of each per thread, grid-stride.
__global__ void attention_bwd_group_sum_kernel(const float4* __restrict__ dk_part, const float4* __restrict__ dv_part,
                                               float4* __restrict__ dk, float4* __restrict__ dv, int64_t n4, int D4,
                                               int group) {
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n4; i += int64_t(gridDim.x) * blockDim.x) {
    // i = ((b·T + t)·KV + g)·D4 + d4; the group's first head sits at ((b·T + t)·H + g·group)·D4 + d4, which
    // is ((b·T + t)·KV + g)·group·D4 + d4 since H = KV·group.
    const int64_t src = i / D4 * group * D4 + i % D4;
    float4 sk = dk_part[src], sv = dv_part[src];
    for (int m = 1; m < group; ++m) {
      const float4 a = dk_part[src + int64_t(m) * D4], c = dv_part[src + int64_t(m) * D4];
      sk.x += a.x;
      sk.y += a.y;
      sk.z += a.z;
      sk.w += a.w;
      sv.x += c.x;
      sv.y += c.y;
      sv.z += c.z;
      sv.w += c.w;
    }
    dk[i] = sk;
    dv[i] = sv;
  }
}

template <int D, class Tiles>
cudaError_t launch_tiles(const float* q, const float* k, const float* v, const float* out, const float* lse,
                         const float* dout, float* dq, float* dk_part, float* dv_part, int64_t B, int64_t T, int64_t H,
                         int64_t KV, cudaStream_t stream) {
  using TKV = typename Tiles::KV;
  using TQ = typename Tiles::Q;
  const float scale = 1.0f / sqrtf(float(D));
  constexpr int dkv_floats = dkv_smem_floats<TKV>(), dq_floats = dq_smem_floats<TQ>();
  constexpr int floats = dkv_floats > dq_floats ? dkv_floats : dq_floats;
  const size_t smem_bytes = size_t(floats) * sizeof(float);
  // Per device and cheap, so set on every call rather than cached (a cache would need one flag per device).
  const cudaError_t err = cudaFuncSetAttribute(attention_bwd_kernel<D, TKV, TQ>,
                                               cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem_bytes));
  if (err != cudaSuccess) return err;
  const int64_t n_kt = (T + TKV::BC - 1) / TKV::BC, n_qt = (T + TQ::BR - 1) / TQ::BR;
  const dim3 grid(unsigned(n_kt + n_qt), unsigned(H), unsigned(B));
  attention_bwd_kernel<D, TKV, TQ><<<grid, kThreads, smem_bytes, stream>>>(q, k, v, out, dout, lse, dq, dk_part,
                                                                            dv_part, int(T), int(H), int(KV), scale);
  return cudaGetLastError();
}

template <int D>
cudaError_t launch_bwd(const float* q, const float* k, const float* v, const float* out, const float* lse,
                       const float* dout, float* dq, float* dk_part, float* dv_part, int64_t B, int64_t T, int64_t H,
                       int64_t KV, cudaStream_t stream) {
  const int64_t large_kv_blocks = B * H * ((T + LargeTiles<D>::KV::BC - 1) / LargeTiles<D>::KV::BC);
  if (large_kv_blocks < kLargeTileBlocks)
    return launch_tiles<D, SmallTiles<D>>(q, k, v, out, lse, dout, dq, dk_part, dv_part, B, T, H, KV, stream);
  return launch_tiles<D, LargeTiles<D>>(q, k, v, out, lse, dout, dq, dk_part, dv_part, B, T, H, KV, stream);
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

  // Per-head dK, dV partials (B, T, H, D) each, stream-ordered scratch; with H == KV they are dk, dv.
  const int64_t group = H / KV, n_part = B * T * H * D;
  float* part = nullptr;
  if (group > 1)
    LORA_CUDA_CHECK(cudaMallocAsync(reinterpret_cast<void**>(&part), size_t(2 * n_part) * sizeof(float), stream));
  float* dk_part = group > 1 ? part : dk;
  float* dv_part = group > 1 ? part + n_part : dv;
  cudaError_t err = cudaSuccess;
  switch (D) {
    case 8: err = launch_bwd<8>(q, k, v, out, lse, dout, dq, dk_part, dv_part, B, T, H, KV, stream); break;
    case 16: err = launch_bwd<16>(q, k, v, out, lse, dout, dq, dk_part, dv_part, B, T, H, KV, stream); break;
    case 64: err = launch_bwd<64>(q, k, v, out, lse, dout, dq, dk_part, dv_part, B, T, H, KV, stream); break;
    default: err = launch_bwd<128>(q, k, v, out, lse, dout, dq, dk_part, dv_part, B, T, H, KV, stream); break;
  }
  if (err == cudaSuccess && group > 1) {
    const int64_t n4 = B * T * KV * D / 4;
    constexpr int kSumThreads = 128;  // T = 90 (KV = 4, D = 64): 45 blocks
    const int64_t blocks = (n4 + kSumThreads - 1) / kSumThreads;
    attention_bwd_group_sum_kernel<<<unsigned(blocks < 65536 ? blocks : 65536), kSumThreads, 0, stream>>>(
        reinterpret_cast<const float4*>(dk_part), reinterpret_cast<const float4*>(dv_part),
        reinterpret_cast<float4*>(dk), reinterpret_cast<float4*>(dv), n4, int(D / 4), int(group));
    err = cudaGetLastError();
  }
  if (part) {
    const cudaError_t free_err = cudaFreeAsync(part, stream);  // after the kernels in stream order
    if (err == cudaSuccess) err = free_err;
  }
  LORA_CUDA_CHECK(err);
}

}  // namespace lora
