// Causal attention forward with grouped KV heads (declared in cuda/attention.h), f32 throughout: the
// inference forward and the training forward with log-sum-exp. Three paths, chosen by size only (so a
// training row and an inference call on the same row take the same path and give the same bits):
//
// Per query (decode, short T, short chunks after a long context): one thread block per (query t, head h
// [, split][, batch row b]), kWarps warps. The block's keys (all visible keys 0 .. pos0+t, or one split's
// range of them) are cut into chunks of 32; warp w takes chunks w, w + kWarps, ... Within a chunk, lane j
// owns key j: it computes the full dot q·k_j (q sits in shared memory and is read as a broadcast), then
// the warp runs one step of the online softmax — chunk max by shuffles, rescale of the running sum and
// output by exp(m_old - m_new), p_j = exp(s_j - m_new) — and accumulates Σ p_j v_j with each lane owning
// dims lane, lane+32, ... (coalesced V rows; p_j broadcast by shuffle). At the end the warps' (m, l, o)
// are merged in shared memory the same way and the block writes o / l (and lse = m + log l for
// training), or for a split its unnormalized (m, l, o) partial. Memory is O(D) per block whatever S is.
//
// Split-K (decode): with T·H blocks the GPU idles when T·H is small, so when T·H < kSplitMaxBlocks and the
// context holds at least 2·kSplitMinKeys keys, the keys 0 .. pos0+T-1 are cut into n_split ranges of
// split_len keys (a multiple of 32, at least kSplitMinKeys, so every warp gets a chunk); block (t, h, s)
// writes the partial (m, l, o) of range s (an early query's range may be empty: m = -inf, l = 0, o = 0),
// and attention_combine_kernel merges them: M = max m_s, out = Σ o_s e^(m_s-M) / Σ l_s e^(m_s-M).
//
// Tiled (prefill and training, T >= kTiledMinT; see use_tiled): one block of 128 threads per (tile of BR
// queries, head h, batch row b), flash-attention style. Q stays in shared memory; the block walks tiles
// of BC keys up to its last query, loading K and V once per tile for all BR queries: S = Q·Kᵀ as
// per-thread micro-tiles, one online-softmax step per tile and row (row max and sum over the 8 threads
// sharing a row, by shuffles), P through shared memory, O += P·V in registers rescaled by exp(m_old - m_new).
//
// Decode with the key count in device memory (cuda_attention_decode, for CUDA graphs): the per-query
// kernel's chunk loop in blocks of kDecodeWarps warps on a grid fixed by (H, S_max); each block reads n
// from memory and takes its share of keys 0 .. n-1, and a combine kernel merges the partials (see the
// section "Decode with the key count in device memory" below).
//
// Keys at or beyond pos0 + t + 1 are never loaded (neither K nor V), so unused cache rows (which may hold
// NaN) cannot leak into the output. Blocks are issued last query first so the long rows start early.
// Only cuda/check.h and CUDA headers here (see cmake/cuda.cmake: no fmt under nvcc).
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <mutex>
#include <vector>

#include "cuda/attention.h"
#include "cuda/check.h"

namespace lora {

namespace {

constexpr int kWarps = 8;  // warps per block, each walking its own chunks of 32 keys

constexpr int64_t kSplitMinKeys = 256;        // keys per split at least: one 32-key chunk per warp
constexpr int64_t kSplitMaxBlocks = 512;      // T·H blocks at or above this already fill an H100 (132 SMs)
constexpr int64_t kSplitTargetBlocks = 1024;  // aim for about this many blocks (T·H·n_split)
constexpr int64_t kSplitMax = 64;             // at most this many partials per query (bounds the combine)

enum FwdMode {
  FWD_OUT = 0,      // out = o / l
  FWD_OUT_LSE = 1,  // out = o / l and aux[(b, t, h)] = m + log l
  FWD_PARTIAL = 2,  // out (n_split, T, H, D) = unnormalized o, aux (n_split, T, H, 2) = (m, l)
};

// grid: x = T·H (query t = T-1 - x / H, head h = x % H), y = split (FWD_PARTIAL) else 1, z = batch row b.
// k and v hold S positions per batch row (the training forward has S = T, pos0 = 0). Keys of split s are
// [s·split_len, min((s+1)·split_len, pos0+t+1)); callers that do not split pass split_len >= pos0 + T.
template <int D, int kMode>
__global__ void __launch_bounds__(kWarps * 32)
    attention_fwd_kernel(const float* __restrict__ q, const float* __restrict__ k, const float* __restrict__ v,
                         float* __restrict__ out, float* __restrict__ aux, int H, int group, int KV, int T, int64_t S,
                         int64_t pos0, float scale, int64_t split_len) {
  constexpr int kPerLane = (D + 31) / 32;  // output dims owned by one lane
  __shared__ __align__(16) float q_s[D];
  __shared__ float m_s[kWarps], l_s[kWarps];
  __shared__ float o_s[kWarps][D];

  const int h = int(blockIdx.x % unsigned(H));
  const int t = T - 1 - int(blockIdx.x / unsigned(H));  // last query first: it has the most keys
  const int split = int(blockIdx.y);
  const int64_t b = blockIdx.z;
  const int kvh = h / group;
  const int warp = int(threadIdx.x) / 32, lane = int(threadIdx.x) % 32;
  const int64_t row_stride = int64_t(KV) * D;  // floats between consecutive positions of k and v
  const int64_t key_begin = int64_t(split) * split_len;
  const int64_t n_keys = pos0 + t + 1;  // keys 0 .. pos0+t are visible
  const int64_t key_end = n_keys < key_begin + split_len ? n_keys : key_begin + split_len;
  const int64_t qo_index = ((b * T + t) * H + h);  // (b, t, h) row of q, out and lse

  if constexpr (kMode == FWD_PARTIAL) {
    if (key_begin >= key_end) {  // an early query's split past its last key: an empty partial (block-uniform)
      const int64_t pi = (int64_t(split) * T + t) * H + h;
      for (int d = int(threadIdx.x); d < D; d += kWarps * 32) out[pi * D + d] = 0.0f;
      if (threadIdx.x == 0) {
        aux[pi * 2] = -INFINITY;
        aux[pi * 2 + 1] = 0.0f;
      }
      return;
    }
  }

  const float* qrow = q + qo_index * D;
  for (int d = int(threadIdx.x); d < D; d += kWarps * 32) q_s[d] = qrow[d];
  __syncthreads();

  const float* kbase = k + b * S * row_stride + int64_t(kvh) * D;
  const float* vbase = v + b * S * row_stride + int64_t(kvh) * D;
  float m = -INFINITY, l = 0.0f;
  float o[kPerLane];
#pragma unroll
  for (int i = 0; i < kPerLane; ++i) o[i] = 0.0f;

  const int64_t n_chunks = (key_end - key_begin + 31) / 32;
  for (int64_t c = warp; c < n_chunks; c += kWarps) {
    const int64_t j0 = key_begin + c * 32;
    const int64_t j = j0 + lane;
    const bool live = j < key_end;
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
    const int n_live = int(key_end - j0 < 32 ? key_end - j0 : 32);
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
  // m = -inf and contributes 0; warp 0 always has the (non-empty) range's first chunk, so M is finite.
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
  if constexpr (kMode == FWD_PARTIAL) {
    const int64_t pi = (int64_t(split) * T + t) * H + h;
    for (int d = int(threadIdx.x); d < D; d += kWarps * 32) {
      float acc = 0.0f;
#pragma unroll
      for (int w = 0; w < kWarps; ++w) acc += o_s[w][d] * wscale[w];
      out[pi * D + d] = acc;
    }
    if (threadIdx.x == 0) {
      aux[pi * 2] = M;
      aux[pi * 2 + 1] = L;
    }
  } else {
    const float inv = 1.0f / L;
    float* orow = out + qo_index * D;
    for (int d = int(threadIdx.x); d < D; d += kWarps * 32) {
      float acc = 0.0f;
#pragma unroll
      for (int w = 0; w < kWarps; ++w) acc += o_s[w][d] * wscale[w];
      orow[d] = acc * inv;
    }
    if constexpr (kMode == FWD_OUT_LSE) {
      if (threadIdx.x == 0) aux[qo_index] = M + logf(L);
    }
  }
}

// out (TH, D) from the n_split partials part_o (n_split, TH, D), part_ml (n_split, TH, 2); one thread
// per output element. Split 0 of every query is non-empty, so M is finite and empty splits weigh 0.
__global__ void attention_combine_kernel(const float* __restrict__ part_o, const float* __restrict__ part_ml,
                                         float* __restrict__ out, int64_t TH, int D, int n_split) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= TH * D) return;
  const int64_t row = i / D;
  const int64_t d = i % D;
  float M = -INFINITY;
  for (int s = 0; s < n_split; ++s) M = fmaxf(M, part_ml[(s * TH + row) * 2]);
  float L = 0.0f, acc = 0.0f;
  for (int s = 0; s < n_split; ++s) {
    const float w = expf(part_ml[(s * TH + row) * 2] - M);
    L += part_ml[(s * TH + row) * 2 + 1] * w;
    acc += part_o[(s * TH + row) * D + d] * w;
  }
  out[i] = acc * (1.0f / L);
}

constexpr int kTiledThreads = 128;  // threads per block of the tiled path
constexpr int64_t kTiledMinT = 32;  // T at or above this may take the tiled path (see use_tiled)

// Whether a call that does not split takes the tiled path. Tiles load each K/V row once per 32-64 queries
// instead of once per query, but give only ceil(T/64)·H blocks, each walking all pos0 + T keys: a short
// chunk after a long context (pos0 > T) stays per query unless it still makes enough tiled blocks. Training
// (pos0 = 0) is tiled exactly when T >= kTiledMinT.
bool use_tiled(int64_t T, int64_t H, int64_t pos0) {
  return T >= kTiledMinT && (pos0 <= T || (T + 63) / 64 * H >= 256);
}

// Tile shapes of the tiled path for head dim D. Shared memory: BR·LD (Q) + 2·BC·LD (K, V) + BR·LDP (P) +
// 2·BR floats: 42 KB at D = 64, 54 KB at D = 128 (over the 48 KB default: the launcher raises the limit).
template <int D>
struct FwdTile {
  static constexpr int BR = D == 128 ? 32 : 64;  // queries per tile
  static constexpr int BC = 32;                  // keys per tile
  static constexpr int LD = D + 1;               // padded rows: column reads hit 32 different banks
  static constexpr int LDP = BC + 1;
  // S micro-tiles (BR, BC): 16 x 8 threads, rows ty + 16·i, keys tx + 8·j; the 8 threads of a row are
  // 8 consecutive lanes of one warp, so the row max and sum are 3 xor-shuffles.
  static constexpr int SY = 16, SX = 8, SI = BR / SY, SJ = BC / SX;
  // O accumulators (BR, D): TY x TX threads, rows oy + TY·i, dims ox + TX·j.
  static constexpr int TX = D < 16 ? D : 16, TY = kTiledThreads / TX, OI = BR / TY, NJ = D / TX;
  static constexpr int smem_floats = BR * LD + 2 * BC * LD + BR * LDP + 2 * BR;
  static_assert(SY * SX == kTiledThreads && BR % SY == 0 && BC % SX == 0, "S micro-tiles do not cover the tile");
  static_assert(TX * TY == kTiledThreads && BR % TY == 0 && D % TX == 0, "O micro-tiles do not cover the tile");
};

// dst (rows, LD) <- rows 0 .. n_valid-1 of src (row r at src + r·stride, D floats, 16-byte aligned),
// zeros for rows n_valid .. rows-1 (never loaded, so a NaN cache row past the live ones stays out).
template <int D, int LD>
__device__ __forceinline__ void load_tile(float* dst, const float* __restrict__ src, int64_t stride, int rows,
                                          int n_valid) {
  constexpr int V = D / 4;
  for (int i = int(threadIdx.x); i < rows * V; i += kTiledThreads) {
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

// grid: x = query tile (last first), y = head h, z = batch row b. q, out (B, T, H, D) at positions
// pos0 .. pos0+T-1; k, v hold S positions per batch row; lse (B, T, H) when non-null.
template <int D>
__global__ void __launch_bounds__(kTiledThreads)
    attention_fwd_tiled_kernel(const float* __restrict__ q, const float* __restrict__ k, const float* __restrict__ v,
                               float* __restrict__ out, float* __restrict__ lse, int H, int group, int KV, int T,
                               int64_t S, int64_t pos0, float scale) {
  using Tl = FwdTile<D>;
  constexpr int BR = Tl::BR, BC = Tl::BC, LD = Tl::LD, LDP = Tl::LDP;
  extern __shared__ __align__(16) float smem[];
  float* Qs = smem;                // (BR, LD)
  float* Ks = Qs + BR * LD;        // (BC, LD)
  float* Vs = Ks + BC * LD;        // (BC, LD)
  float* Ps = Vs + BC * LD;        // (BR, LDP) this key tile's probabilities (unnormalized)
  float* alpha_s = Ps + BR * LDP;  // (BR) this key tile's rescale of each row's output
  float* l_s = alpha_s + BR;       // (BR) final softmax sums

  const int n_tiles = (T + BR - 1) / BR;
  const int i0 = (n_tiles - 1 - int(blockIdx.x)) * BR;  // last tile first: it has the most keys
  const int h = int(blockIdx.y);
  const int64_t b = blockIdx.z;
  const int n_q = T - i0 < BR ? T - i0 : BR;
  const int64_t q_stride = int64_t(H) * D, kv_stride = int64_t(KV) * D;
  const int64_t qrow0 = (b * T + i0) * q_stride + int64_t(h) * D;
  const float* kb = k + b * S * kv_stride + int64_t(h / group) * D;
  const float* vb = v + b * S * kv_stride + int64_t(h / group) * D;
  load_tile<D, LD>(Qs, q + qrow0, q_stride, BR, n_q);

  const int ty = int(threadIdx.x) / Tl::SX, tx = int(threadIdx.x) % Tl::SX;
  const int oy = int(threadIdx.x) / Tl::TX, ox = int(threadIdx.x) % Tl::TX;
  float m[Tl::SI], l[Tl::SI];
#pragma unroll
  for (int i = 0; i < Tl::SI; ++i) {
    m[i] = -INFINITY;
    l[i] = 0.0f;
  }
  float acc[Tl::OI][Tl::NJ];
#pragma unroll
  for (int i = 0; i < Tl::OI; ++i)
#pragma unroll
    for (int j = 0; j < Tl::NJ; ++j) acc[i][j] = 0.0f;

  const int64_t key_end = pos0 + i0 + n_q;  // keys 0 .. key_end-1 are visible to some query of the tile
  for (int64_t j0 = 0; j0 < key_end; j0 += BC) {
    const int n_k = int(key_end - j0 < BC ? key_end - j0 : BC);
    __syncthreads();  // the previous tile's readers are done with Ks, Vs, Ps, alpha_s (and Qs is loaded)
    load_tile<D, LD>(Ks, kb + j0 * kv_stride, kv_stride, BC, n_k);
    load_tile<D, LD>(Vs, vb + j0 * kv_stride, kv_stride, BC, n_k);
    __syncthreads();
    float s[Tl::SI][Tl::SJ];
#pragma unroll
    for (int i = 0; i < Tl::SI; ++i)
#pragma unroll
      for (int j = 0; j < Tl::SJ; ++j) s[i][j] = 0.0f;
#pragma unroll 4
    for (int kk = 0; kk < D; ++kk) {
      float a[Tl::SI], kc[Tl::SJ];
#pragma unroll
      for (int i = 0; i < Tl::SI; ++i) a[i] = Qs[(ty + Tl::SY * i) * LD + kk];
#pragma unroll
      for (int j = 0; j < Tl::SJ; ++j) kc[j] = Ks[(tx + Tl::SX * j) * LD + kk];
#pragma unroll
      for (int i = 0; i < Tl::SI; ++i)
#pragma unroll
        for (int j = 0; j < Tl::SJ; ++j) s[i][j] = fmaf(a[i], kc[j], s[i][j]);
    }
    // One online-softmax step per row. A row past T (or, never, a row with no visible key so far) keeps
    // m = -inf: alpha = 1 and p = 0 there instead of exp(-inf - -inf) = NaN.
#pragma unroll
    for (int i = 0; i < Tl::SI; ++i) {
      const int r = ty + Tl::SY * i;
      const int64_t last_key = i0 + r < T ? pos0 + i0 + r : int64_t(-1);  // keys 0 .. last_key visible
      float x[Tl::SJ];
      float mx = -INFINITY;
#pragma unroll
      for (int j = 0; j < Tl::SJ; ++j) {
        const bool visible = j0 + tx + Tl::SX * j <= last_key;
        x[j] = visible ? __fmul_rn(s[i][j], scale) : -INFINITY;
        mx = fmaxf(mx, x[j]);
      }
#pragma unroll
      for (int off = 1; off < Tl::SX; off *= 2) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, off));
      const float m_new = fmaxf(m[i], mx);
      const bool live = m_new != -INFINITY;
      const float alpha = live ? expf(m[i] - m_new) : 1.0f;  // 0 on the row's first live tile
      float ps = 0.0f;
#pragma unroll
      for (int j = 0; j < Tl::SJ; ++j) {
        const float p = x[j] != -INFINITY ? expf(x[j] - m_new) : 0.0f;
        Ps[r * LDP + tx + Tl::SX * j] = p;
        ps += p;
      }
#pragma unroll
      for (int off = 1; off < Tl::SX; off *= 2) ps += __shfl_xor_sync(0xffffffffu, ps, off);
      l[i] = l[i] * alpha + ps;
      m[i] = m_new;
      if (tx == 0) alpha_s[r] = alpha;
    }
    __syncthreads();
    // O (BR, D) = O·alpha + P·V over the tile's valid keys (P is 0 where a key is not visible).
#pragma unroll
    for (int i = 0; i < Tl::OI; ++i) {
      const float a = alpha_s[oy + Tl::TY * i];
#pragma unroll
      for (int j = 0; j < Tl::NJ; ++j) acc[i][j] *= a;
    }
#pragma unroll 2
    for (int c = 0; c < n_k; ++c) {
      float pr[Tl::OI], vd[Tl::NJ];
#pragma unroll
      for (int i = 0; i < Tl::OI; ++i) pr[i] = Ps[(oy + Tl::TY * i) * LDP + c];
#pragma unroll
      for (int j = 0; j < Tl::NJ; ++j) vd[j] = Vs[c * LD + ox + Tl::TX * j];
#pragma unroll
      for (int i = 0; i < Tl::OI; ++i)
#pragma unroll
        for (int j = 0; j < Tl::NJ; ++j) acc[i][j] = fmaf(pr[i], vd[j], acc[i][j]);
    }
  }

  if (tx == 0) {
#pragma unroll
    for (int i = 0; i < Tl::SI; ++i) {
      const int r = ty + Tl::SY * i;
      l_s[r] = l[i];
      if (lse && r < n_q) lse[(b * T + i0 + r) * H + h] = m[i] + logf(l[i]);
    }
  }
  __syncthreads();
#pragma unroll
  for (int i = 0; i < Tl::OI; ++i) {
    const int r = oy + Tl::TY * i;
    if (r >= n_q) continue;
    const float inv = 1.0f / l_s[r];
    float* orow = out + qrow0 + int64_t(r) * q_stride;
#pragma unroll
    for (int j = 0; j < Tl::NJ; ++j) orow[ox + Tl::TX * j] = acc[i][j] * inv;
  }
}

template <int D>
void launch_tiled(const float* q, const float* k, const float* v, float* out, float* lse, int64_t B, int64_t T,
                  int64_t H, int64_t KV, int64_t S, int64_t pos0, cudaStream_t stream) {
  using Tl = FwdTile<D>;
  const size_t bytes = size_t(Tl::smem_floats) * sizeof(float);
  // Per device and cheap, so set on every call rather than cached (a cache would need one flag per device).
  LORA_CUDA_CHECK(
      cudaFuncSetAttribute(attention_fwd_tiled_kernel<D>, cudaFuncAttributeMaxDynamicSharedMemorySize, int(bytes)));
  const dim3 grid(unsigned((T + Tl::BR - 1) / Tl::BR), unsigned(H), unsigned(B));
  attention_fwd_tiled_kernel<D><<<grid, kTiledThreads, bytes, stream>>>(q, k, v, out, lse, int(H), int(H / KV),
                                                                        int(KV), int(T), S, pos0,
                                                                        1.0f / sqrtf(float(D)));
}

void launch_tiled_d(int64_t D, const float* q, const float* k, const float* v, float* out, float* lse, int64_t B,
                    int64_t T, int64_t H, int64_t KV, int64_t S, int64_t pos0, cudaStream_t stream) {
  switch (D) {
    case 8: launch_tiled<8>(q, k, v, out, lse, B, T, H, KV, S, pos0, stream); break;
    case 16: launch_tiled<16>(q, k, v, out, lse, B, T, H, KV, S, pos0, stream); break;
    case 64: launch_tiled<64>(q, k, v, out, lse, B, T, H, KV, S, pos0, stream); break;
    default: launch_tiled<128>(q, k, v, out, lse, B, T, H, KV, S, pos0, stream); break;
  }
}

struct SplitPlan {
  int64_t n_split = 1;
  int64_t split_len = 0;
};

// How to split the keys of an inference call (n_split == 1: don't). Depends only on T, H and pos0.
SplitPlan plan_split(int64_t T, int64_t H, int64_t pos0) {
  SplitPlan p;
  const int64_t n_keys_max = pos0 + T, blocks = T * H;
  p.split_len = n_keys_max;
  if (T <= 0 || blocks >= kSplitMaxBlocks || n_keys_max < 2 * kSplitMinKeys) return p;
  int64_t want = (kSplitTargetBlocks + blocks - 1) / blocks;
  want = std::min(want, n_keys_max / kSplitMinKeys);  // every split keeps >= kSplitMinKeys keys
  want = std::min(want, kSplitMax);
  if (want < 2) return p;
  const int64_t len = ((n_keys_max + want - 1) / want + 31) / 32 * 32;  // a whole number of 32-key chunks
  p.split_len = len;
  p.n_split = (n_keys_max + len - 1) / len;  // the last query's keys fill every split
  if (p.n_split < 2) p = SplitPlan{1, n_keys_max};
  return p;
}

size_t split_workspace_floats(const SplitPlan& p, int64_t T, int64_t H, int64_t D) {
  return p.n_split < 2 ? 0 : size_t(p.n_split * T * H * (D + 2));
}

bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15u) == 0; }

void check_fwd_args(const float* q, const float* k, const float* v, float* out, int64_t T, int64_t H, int64_t KV,
                    int64_t D, int64_t S, int64_t pos0) {
  // Precondition failures are bugs in the caller (the Ops layer checks shapes first): InternalError.
  if (!(D == 8 || D == 16 || D == 64 || D == 128))
    cuda_fail(cudaErrorInvalidValue, "cuda_attention_fwd: head dim D must be 8, 16, 64 or 128", __FILE__, __LINE__);
  if (!(T >= 0 && H > 0 && KV > 0 && H % KV == 0 && pos0 >= 0 && pos0 + T <= S))
    cuda_fail(cudaErrorInvalidValue, "cuda_attention_fwd: need T >= 0, H % KV == 0, pos0 >= 0, pos0 + T <= S",
              __FILE__, __LINE__);
  if (T * H > int64_t(INT32_MAX) || S > int64_t(INT32_MAX) / (KV * D) || H > 65535)
    cuda_fail(cudaErrorInvalidValue, "cuda_attention_fwd: T·H, S·KV·D or H too large", __FILE__, __LINE__);
  if (T == 0) return;
  if (!q || !k || !v || !out || !aligned16(q) || !aligned16(k) || !aligned16(v) || !aligned16(out))
    cuda_fail(cudaErrorInvalidValue, "cuda_attention_fwd: q, k, v, out must be non-null and 16-byte aligned",
              __FILE__, __LINE__);
}

template <int D, int kMode>
void launch_fwd(const float* q, const float* k, const float* v, float* out, float* aux, int64_t B, int64_t T,
                int64_t H, int64_t KV, int64_t S, int64_t pos0, int64_t n_split, int64_t split_len,
                cudaStream_t stream) {
  const float scale = 1.0f / sqrtf(float(D));
  const dim3 grid(unsigned(T * H), unsigned(n_split), unsigned(B));
  attention_fwd_kernel<D, kMode><<<grid, kWarps * 32, 0, stream>>>(q, k, v, out, aux, int(H), int(H / KV), int(KV),
                                                                   int(T), S, pos0, scale, split_len);
}

template <int kMode>
void launch_fwd_d(int64_t D, const float* q, const float* k, const float* v, float* out, float* aux, int64_t B,
                  int64_t T, int64_t H, int64_t KV, int64_t S, int64_t pos0, int64_t n_split, int64_t split_len,
                  cudaStream_t stream) {
  switch (D) {
    case 8: launch_fwd<8, kMode>(q, k, v, out, aux, B, T, H, KV, S, pos0, n_split, split_len, stream); break;
    case 16: launch_fwd<16, kMode>(q, k, v, out, aux, B, T, H, KV, S, pos0, n_split, split_len, stream); break;
    case 64: launch_fwd<64, kMode>(q, k, v, out, aux, B, T, H, KV, S, pos0, n_split, split_len, stream); break;
    default: launch_fwd<128, kMode>(q, k, v, out, aux, B, T, H, KV, S, pos0, n_split, split_len, stream); break;
  }
}

// Queues the split path (partials into ws, then the combine) when p.n_split > 1, else the single pass:
// tiled or one block per query (use_tiled).
void run_fwd(const float* q, const float* k, const float* v, float* out, int64_t T, int64_t H, int64_t KV,
             int64_t D, int64_t S, int64_t pos0, const SplitPlan& p, float* ws, cudaStream_t stream) {
  if (p.n_split < 2) {
    if (use_tiled(T, H, pos0))
      launch_tiled_d(D, q, k, v, out, nullptr, 1, T, H, KV, S, pos0, stream);
    else
      launch_fwd_d<FWD_OUT>(D, q, k, v, out, nullptr, 1, T, H, KV, S, pos0, 1, pos0 + T, stream);
    LORA_CUDA_CHECK(cudaGetLastError());
    return;
  }
  float* part_o = ws;                                 // (n_split, T, H, D)
  float* part_ml = ws + p.n_split * T * H * D;        // (n_split, T, H, 2)
  launch_fwd_d<FWD_PARTIAL>(D, q, k, v, part_o, part_ml, 1, T, H, KV, S, pos0, p.n_split, p.split_len, stream);
  LORA_CUDA_CHECK(cudaGetLastError());
  const int64_t n = T * H * D;
  constexpr int kThreads = 256;
  attention_combine_kernel<<<unsigned((n + kThreads - 1) / kThreads), kThreads, 0, stream>>>(
      part_o, part_ml, out, T * H, int(D), int(p.n_split));
  LORA_CUDA_CHECK(cudaGetLastError());
}

// The workspace behind cuda_attention_fwd (see attention.h): one per device, grown stream-ordered on the
// calling stream after waiting for the previous user (on any stream) through `done`. Never freed: the
// process exit releases it (CUDA calls from static destructors are unsafe).
struct FwdWorkspace {
  float* p = nullptr;
  size_t floats = 0;
  cudaEvent_t done = nullptr;  // recorded after the last queued use
};
std::mutex g_ws_mutex;
std::vector<FwdWorkspace> g_ws;  // indexed by device

// ---- Decode with the key count in device memory (cuda_attention_decode) ----
//
// One query per head over the whole cache k, v (S_max, KV, D), of which the first n = *n_keys rows are live.
// The grid is (n_split, H) with n_split = decode_n_split(H, S_max): it never depends on n, so the two
// launches can be recorded in a CUDA graph once and replayed while n grows. Each block reads n first and
// derives its key range from it (decode_split_len): the live keys are spread evenly over as many splits
// as have >= kDecodeMinKeys keys each (at most n_split), so a short context in a long cache still keeps
// several blocks per head busy, and the blocks past the last range exit after that one load. The combine
// derives the same ranges from the same n and merges only the partials written by this launch, so the
// workspace needs no initialization and stale partials of an earlier, longer n are never read.

constexpr int kDecodeWarps = 4;                         // warps per partial block
constexpr int64_t kDecodeMinKeys = kDecodeWarps * 32;   // keys per split at least (one 32-key chunk per warp)
constexpr int64_t kDecodeTargetBlocks = 512;            // H·n_split: ~4 blocks of 4 warps per SM of an H100 (132)
constexpr int64_t kDecodeMaxSplit = 64;                 // bounds the combine's loop and the workspace

// Partial blocks per head: about kDecodeTargetBlocks in all, no more than S_max needs. Depends only on
// (H, S_max), which is what makes the launch graph-safe.
int64_t decode_n_split(int64_t H, int64_t S_max) {
  int64_t n = (kDecodeTargetBlocks + H - 1) / H;
  n = std::min(n, (S_max + kDecodeMinKeys - 1) / kDecodeMinKeys);
  n = std::min(n, kDecodeMaxSplit);
  return std::max<int64_t>(n, 1);
}

// Keys per split for n >= 1 live keys and n_split blocks per head: n spread over
// used = min(n_split, ceil(n / kDecodeMinKeys)) splits, rounded up to whole 32-key chunks. Split s covers
// [s·len, min((s+1)·len, n)); exactly the splits s < ceil(n / len) <= used <= n_split are non-empty.
__host__ __device__ inline int64_t decode_split_len(int64_t n, int64_t n_split) {
  int64_t used = (n + kDecodeMinKeys - 1) / kDecodeMinKeys;
  if (used > n_split) used = n_split;
  const int64_t len = (n + used - 1) / used;
  return (len + 31) / 32 * 32;
}

// grid (n_split, H), kDecodeWarps warps. Block (s, h) writes the unnormalized partial of query head h over
// split s's keys: part_o (n_split, H, D) = Σ e^(s_j - M) v_j, part_ml (n_split, H, 2) = (M, Σ e^(s_j - M)).
// The chunk loop and the warp merge are attention_fwd_kernel's (see the top of this file).
template <int D>
__global__ void __launch_bounds__(kDecodeWarps * 32)
    attention_decode_partial_kernel(const float* __restrict__ q, const float* __restrict__ k,
                                    const float* __restrict__ v, const int32_t* __restrict__ n_keys,
                                    float* __restrict__ part_o, float* __restrict__ part_ml, int H, int group,
                                    int KV, int64_t S_max, int n_split, float scale) {
  constexpr int kPerLane = (D + 31) / 32;  // output dims owned by one lane
  __shared__ __align__(16) float q_s[D];
  __shared__ float m_s[kDecodeWarps], l_s[kDecodeWarps];
  __shared__ float o_s[kDecodeWarps][D];

  // n first: with a short context in a long cache most blocks have nothing to do and leave right here.
  const int64_t n = n_keys[0];
  if (n < 1 || n > S_max) return;  // a caller bug: read nothing (the combine writes NaN)
  const int split = int(blockIdx.x), h = int(blockIdx.y);
  const int64_t split_len = decode_split_len(n, n_split);
  const int64_t key_begin = int64_t(split) * split_len;
  if (key_begin >= n) return;  // past the last live range (block-uniform); the combine does not read it
  const int64_t key_end = n < key_begin + split_len ? n : key_begin + split_len;

  const int warp = int(threadIdx.x) / 32, lane = int(threadIdx.x) % 32;
  const int64_t row_stride = int64_t(KV) * D;  // floats between consecutive positions of k and v
  const float* qrow = q + int64_t(h) * D;
  for (int d = int(threadIdx.x); d < D; d += kDecodeWarps * 32) q_s[d] = qrow[d];
  __syncthreads();

  const float* kbase = k + int64_t(h / group) * D;
  const float* vbase = v + int64_t(h / group) * D;
  float m = -INFINITY, l = 0.0f;
  float o[kPerLane];
#pragma unroll
  for (int i = 0; i < kPerLane; ++i) o[i] = 0.0f;

  const int64_t n_chunks = (key_end - key_begin + 31) / 32;
  for (int64_t c = warp; c < n_chunks; c += kDecodeWarps) {
    const int64_t j0 = key_begin + c * 32;
    const int64_t j = j0 + lane;
    const bool live = j < key_end;
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
    // Σ p_j v_j over the chunk's live keys only (a row >= n may be NaN, and 0·NaN is NaN). A fixed trip
    // count with liveness as a predicate lets the compiler issue the chunk's V loads together (a decode
    // block walks one or a few chunks, so load latency, not bandwidth, is what it waits on).
    const int n_live = int(key_end - j0 < 32 ? key_end - j0 : 32);
#pragma unroll
    for (int jj = 0; jj < 32; ++jj) {
      const float pj = __shfl_sync(0xffffffffu, p, jj);
      if (jj < n_live) {
        const float* vr = vbase + (j0 + jj) * row_stride;
#pragma unroll
        for (int i = 0; i < kPerLane; ++i) {
          const int d = lane + 32 * i;
          if (d < D) o[i] = fmaf(pj, vr[d], o[i]);
        }
      }
    }
  }

  // Merge the warps: a warp with no chunk has m = -inf and weighs 0; warp 0 has the range's first chunk,
  // so M is finite.
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
  for (int w = 1; w < kDecodeWarps; ++w) M = fmaxf(M, m_s[w]);
  float L = 0.0f, wscale[kDecodeWarps];
#pragma unroll
  for (int w = 0; w < kDecodeWarps; ++w) {
    wscale[w] = expf(m_s[w] - M);
    L += l_s[w] * wscale[w];
  }
  const int64_t pi = int64_t(split) * H + h;  // (split, h) row of the partials
  for (int d = int(threadIdx.x); d < D; d += kDecodeWarps * 32) {
    float acc = 0.0f;
#pragma unroll
    for (int w = 0; w < kDecodeWarps; ++w) acc += o_s[w][d] * wscale[w];
    part_o[pi * D + d] = acc;
  }
  if (threadIdx.x == 0) {
    part_ml[pi * 2] = M;
    part_ml[pi * 2 + 1] = L;
  }
}

// out (H, D) from the live partials of attention_decode_partial_kernel, one thread per output element:
// M = max m_s, out = Σ o_s e^(m_s - M) / Σ l_s e^(m_s - M) over s < ceil(n / split_len), in split order.
__global__ void attention_decode_combine_kernel(const float* __restrict__ part_o, const float* __restrict__ part_ml,
                                                const int32_t* __restrict__ n_keys, float* __restrict__ out, int H,
                                                int D, int64_t S_max, int n_split) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= int64_t(H) * D) return;
  const int64_t n = n_keys[0];
  if (n < 1 || n > S_max) {  // a caller bug made loud: the partial kernel read nothing
    out[i] = NAN;
    return;
  }
  const int64_t len = decode_split_len(n, n_split);
  const int n_live = int((n + len - 1) / len);
  const int64_t h = i / D, d = i % D;
  float M = -INFINITY;
  for (int s = 0; s < n_live; ++s) M = fmaxf(M, part_ml[(s * int64_t(H) + h) * 2]);
  float L = 0.0f, acc = 0.0f;
  for (int s = 0; s < n_live; ++s) {
    const int64_t pi = s * int64_t(H) + h;
    const float w = expf(part_ml[pi * 2] - M);
    L += part_ml[pi * 2 + 1] * w;
    acc += part_o[pi * D + d] * w;
  }
  out[i] = acc * (1.0f / L);
}

template <int D>
void launch_decode(const float* q, const float* k, const float* v, const int32_t* n_keys, float* part_o,
                   float* part_ml, int64_t H, int64_t KV, int64_t S_max, int64_t n_split, cudaStream_t stream) {
  const float scale = 1.0f / sqrtf(float(D));  // as attention_fwd_kernel, so the scores are the same bits
  const dim3 grid{unsigned(n_split), unsigned(H)};
  attention_decode_partial_kernel<D><<<grid, kDecodeWarps * 32, 0, stream>>>(
      q, k, v, n_keys, part_o, part_ml, int(H), int(H / KV), int(KV), S_max, int(n_split), scale);
}

}  // namespace

size_t cuda_attention_fwd_workspace_floats(int64_t T, int64_t H, int64_t D, int64_t pos0) {
  if (T <= 0 || H <= 0 || D <= 0 || pos0 < 0) return 0;
  return split_workspace_floats(plan_split(T, H, pos0), T, H, D);
}

void cuda_attention_fwd_ws(const float* q, const float* k, const float* v, float* out, int64_t T, int64_t H,
                           int64_t KV, int64_t D, int64_t S, int64_t pos0, float* workspace, size_t workspace_floats,
                           cudaStream_t stream) {
  check_fwd_args(q, k, v, out, T, H, KV, D, S, pos0);
  if (T == 0) return;
  SplitPlan p = plan_split(T, H, pos0);
  const size_t need = split_workspace_floats(p, T, H, D);
  if (need == 0 || !workspace || workspace_floats < need || !aligned16(workspace)) p = SplitPlan{1, pos0 + T};
  run_fwd(q, k, v, out, T, H, KV, D, S, pos0, p, workspace, stream);
}

void cuda_attention_fwd(const float* q, const float* k, const float* v, float* out, int64_t T, int64_t H,
                        int64_t KV, int64_t D, int64_t S, int64_t pos0, cudaStream_t stream) {
  check_fwd_args(q, k, v, out, T, H, KV, D, S, pos0);
  if (T == 0) return;
  const SplitPlan p = plan_split(T, H, pos0);
  const size_t need = split_workspace_floats(p, T, H, D);
  if (need == 0) {
    run_fwd(q, k, v, out, T, H, KV, D, S, pos0, p, nullptr, stream);
    return;
  }
  int device = 0;
  LORA_CUDA_CHECK(cudaGetDevice(&device));
  std::lock_guard<std::mutex> lock(g_ws_mutex);
  if (size_t(device) >= g_ws.size()) g_ws.resize(size_t(device) + 1);
  FwdWorkspace& ws = g_ws[size_t(device)];
  if (!ws.done) LORA_CUDA_CHECK(cudaEventCreateWithFlags(&ws.done, cudaEventDisableTiming));
  LORA_CUDA_CHECK(cudaStreamWaitEvent(stream, ws.done, 0));  // no-op before the first record
  if (ws.floats < need) {
    const size_t grow = std::max(need, ws.floats * 2);
    if (ws.p) LORA_CUDA_CHECK(cudaFreeAsync(ws.p, stream));  // ordered after every previous user (the wait)
    ws.p = nullptr;
    ws.floats = 0;
    LORA_CUDA_CHECK(cudaMallocAsync(reinterpret_cast<void**>(&ws.p), grow * sizeof(float), stream));
    ws.floats = grow;
  }
  // Record `done` even when a launch fails, so that the next caller waits for what was queued.
  try {
    run_fwd(q, k, v, out, T, H, KV, D, S, pos0, p, ws.p, stream);
  } catch (...) {
    (void)cudaEventRecord(ws.done, stream);
    throw;
  }
  LORA_CUDA_CHECK(cudaEventRecord(ws.done, stream));
}

void cuda_attention_train_fwd(const float* q, const float* k, const float* v, float* out, float* lse, int64_t B,
                              int64_t T, int64_t H, int64_t KV, int64_t D, cudaStream_t stream) {
  if (!(D == 8 || D == 16 || D == 64 || D == 128))
    cuda_fail(cudaErrorInvalidValue, "cuda_attention_train_fwd: head dim D must be 8, 16, 64 or 128", __FILE__,
              __LINE__);
  if (!(B >= 0 && T >= 0 && H > 0 && KV > 0 && H % KV == 0))
    cuda_fail(cudaErrorInvalidValue, "cuda_attention_train_fwd: need B >= 0, T >= 0, H % KV == 0", __FILE__,
              __LINE__);
  if (B > 65535 || H > 65535 || T * H > int64_t(INT32_MAX) || T > int64_t(INT32_MAX) / (KV * D))
    cuda_fail(cudaErrorInvalidValue, "cuda_attention_train_fwd: B, H, T·H or T·KV·D too large", __FILE__, __LINE__);
  if (B == 0 || T == 0) return;
  if (!q || !k || !v || !out || !lse || !aligned16(q) || !aligned16(k) || !aligned16(v) || !aligned16(out))
    cuda_fail(cudaErrorInvalidValue,
              "cuda_attention_train_fwd: q, k, v, out, lse must be non-null (q, k, v, out 16-byte aligned)", __FILE__,
              __LINE__);
  // The path cuda_attention_fwd takes for (T, pos0 = 0, S = T): never split (that needs T·H < 512 <= T).
  if (use_tiled(T, H, 0))
    launch_tiled_d(D, q, k, v, out, lse, B, T, H, KV, /*S=*/T, /*pos0=*/0, stream);
  else
    launch_fwd_d<FWD_OUT_LSE>(D, q, k, v, out, lse, B, T, H, KV, /*S=*/T, /*pos0=*/0, 1, T, stream);
  LORA_CUDA_CHECK(cudaGetLastError());
}

size_t cuda_attention_decode_workspace_floats(int64_t H, int64_t D, int64_t S_max) {
  if (H <= 0 || D <= 0 || S_max <= 0) return 0;
  return size_t(decode_n_split(H, S_max) * H * (D + 2));
}

void cuda_attention_decode(const float* q, const float* k, const float* v, float* out, int64_t H, int64_t KV,
                           int64_t D, int64_t S_max, const int32_t* n_keys_dev, float* workspace,
                           cudaStream_t stream) {
  if (!(D == 8 || D == 16 || D == 64 || D == 128))
    cuda_fail(cudaErrorInvalidValue, "cuda_attention_decode: head dim D must be 8, 16, 64 or 128", __FILE__,
              __LINE__);
  if (!(H > 0 && KV > 0 && H % KV == 0 && S_max >= 1))
    cuda_fail(cudaErrorInvalidValue, "cuda_attention_decode: need H > 0, KV > 0, H % KV == 0, S_max >= 1", __FILE__,
              __LINE__);
  if (H > 65535 || S_max > int64_t(INT32_MAX) / (KV * D))
    cuda_fail(cudaErrorInvalidValue, "cuda_attention_decode: H or S_max·KV·D too large", __FILE__, __LINE__);
  if (!q || !k || !v || !out || !workspace || !n_keys_dev || !aligned16(q) || !aligned16(k) || !aligned16(v) ||
      !aligned16(out) || !aligned16(workspace) || (reinterpret_cast<uintptr_t>(n_keys_dev) & 3u) != 0)
    cuda_fail(cudaErrorInvalidValue,
              "cuda_attention_decode: q, k, v, out, workspace must be non-null and 16-byte aligned, n_keys_dev "
              "non-null and 4-byte aligned",
              __FILE__, __LINE__);
  const int64_t n_split = decode_n_split(H, S_max);
  float* part_o = workspace;                     // (n_split, H, D)
  float* part_ml = workspace + n_split * H * D;  // (n_split, H, 2)
  switch (D) {
    case 8: launch_decode<8>(q, k, v, n_keys_dev, part_o, part_ml, H, KV, S_max, n_split, stream); break;
    case 16: launch_decode<16>(q, k, v, n_keys_dev, part_o, part_ml, H, KV, S_max, n_split, stream); break;
    case 64: launch_decode<64>(q, k, v, n_keys_dev, part_o, part_ml, H, KV, S_max, n_split, stream); break;
    default: launch_decode<128>(q, k, v, n_keys_dev, part_o, part_ml, H, KV, S_max, n_split, stream); break;
  }
  LORA_CUDA_CHECK(cudaGetLastError());
  const int64_t n_out = H * D;
  constexpr int kThreads = 256;
  attention_decode_combine_kernel<<<unsigned((n_out + kThreads - 1) / kThreads), kThreads, 0, stream>>>(
      part_o, part_ml, n_keys_dev, out, int(H), int(D), S_max, int(n_split));
  LORA_CUDA_CHECK(cudaGetLastError());
}

}  // namespace lora
