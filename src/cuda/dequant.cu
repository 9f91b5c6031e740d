// cuda_dequantize_bf16 / cuda_dequantize_f32 / cuda_embedding_quant (dequant.h): llama.cpp's block
// formats expanded on the GPU, bit-identical to core/quant.cpp's CPU dequantizers.
//
// Layout of the work: a CTA of 256 threads takes a tile of 2048 output elements (64 blocks of 32 or 8
// super-blocks of 256): it first stages the tile's quantized bytes in shared memory with 16-byte loads
// (bytes at the unaligned head and tail, since blocks are only byte-aligned), then each thread decodes 8
// consecutive elements of one block and writes them with one 16-byte store (bf16) or two (f32). Reading
// the staged bytes goes through aligned 32-bit shared loads and funnel shifts, never wider unaligned
// loads. Without ids, a tile is any 2048 consecutive elements of the flattened matrix (rows are
// contiguous); with ids (the embedding gather), a tile is a chunk of one output row.
//
// Bit-exactness: every f32 operation is written with __fmul_rn / __fadd_rn / __fsub_rn in the CPU's
// order (which compiles with fp-contract off), so nvcc cannot contract a multiply-add into an FMA.
// Only cuda/check.h and CUDA headers here.
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "cuda/check.h"
#include "cuda/dequant.h"

namespace lora {

namespace {

constexpr int kThreads = 256;
constexpr int kGroup = 8;                        // output elements per thread
constexpr int kTileElems = kThreads * kGroup;    // 2048
constexpr int kStageBytes = 64 * 34 + 16 + 16;   // largest tile (Q8_0) + unaligned head + read-ahead
constexpr int64_t kMaxGrid = int64_t(1) << 20;   // grid-stride beyond this many CTAs

template <DType T> struct Fmt;
template <> struct Fmt<DTYPE_Q4_0> { static constexpr int kElems = 32, kBytes = 18; };
template <> struct Fmt<DTYPE_Q4_1> { static constexpr int kElems = 32, kBytes = 20; };
template <> struct Fmt<DTYPE_Q5_0> { static constexpr int kElems = 32, kBytes = 22; };
template <> struct Fmt<DTYPE_Q5_1> { static constexpr int kElems = 32, kBytes = 24; };
template <> struct Fmt<DTYPE_Q8_0> { static constexpr int kElems = 32, kBytes = 34; };
template <> struct Fmt<DTYPE_Q4_K> { static constexpr int kElems = 256, kBytes = 144; };
template <> struct Fmt<DTYPE_Q5_K> { static constexpr int kElems = 256, kBytes = 176; };
template <> struct Fmt<DTYPE_Q6_K> { static constexpr int kElems = 256, kBytes = 210; };

// Exactly core/dtype.cpp's f16_to_f32 (NaN payloads included).
__device__ __forceinline__ float f16_bits_to_f32(uint32_t h) {
  const uint32_t sign = (h & 0x8000u) << 16, exp = (h >> 10) & 0x1fu, mant = h & 0x3ffu;
  if (exp == 0) {
    const float v = __fmul_rn(float(mant), 5.9604644775390625e-08f);  // mant * 2^-24, exact
    return sign ? -v : v;
  }
  if (exp == 31) return __uint_as_float(sign | 0x7f800000u | (mant << 13));
  return __uint_as_float(sign | ((exp + 112u) << 23) | (mant << 13));
}

// ---- reading the staged bytes -------------------------------------------------------------------------
// s8 / s32 view the same 16-byte aligned shared buffer; pos is a byte offset into it.

__device__ __forceinline__ uint32_t ld4(const uint32_t* s32, int pos) {
  const int i = pos >> 2;
  return __funnelshift_r(s32[i], s32[i + 1], unsigned(pos & 3) * 8u);
}

// Bytes pos..pos+7, little-endian (byte k in bits 8k..8k+7).
__device__ __forceinline__ uint64_t ld8(const uint32_t* s32, int pos) {
  const int i = pos >> 2;
  const unsigned sh = unsigned(pos & 3) * 8u;
  const uint32_t a = s32[i], b = s32[i + 1], c = s32[i + 2];
  return uint64_t(__funnelshift_r(a, b, sh)) | (uint64_t(__funnelshift_r(b, c, sh)) << 32);
}

__device__ __forceinline__ float ld_f16(const uint8_t* s8, int pos) {
  return f16_bits_to_f32(uint32_t(s8[pos]) | (uint32_t(s8[pos + 1]) << 8));
}

__device__ __forceinline__ uint32_t nib(uint64_t q, int k, int shift) { return uint32_t(q >> (8 * k + shift)) & 0xFu; }

// ---- decoding 8 elements o..o+7 (o % 8 == 0) of the block at byte pos --------------------------------

template <DType T>
__device__ __forceinline__ void decode(const uint8_t* s8, const uint32_t* s32, int pos, int o, float* v);

template <>
__device__ __forceinline__ void decode<DTYPE_Q4_0>(const uint8_t* s8, const uint32_t* s32, int pos, int o, float* v) {
  const float d = ld_f16(s8, pos);
  const uint64_t q = ld8(s32, pos + 2 + (o & 15));
  const int sh = o >= 16 ? 4 : 0;  // elements 16..31 are the high nibbles
#pragma unroll
  for (int k = 0; k < 8; ++k) v[k] = __fmul_rn(float(int(nib(q, k, sh)) - 8), d);
}

template <>
__device__ __forceinline__ void decode<DTYPE_Q4_1>(const uint8_t* s8, const uint32_t* s32, int pos, int o, float* v) {
  const float d = ld_f16(s8, pos), m = ld_f16(s8, pos + 2);
  const uint64_t q = ld8(s32, pos + 4 + (o & 15));
  const int sh = o >= 16 ? 4 : 0;
#pragma unroll
  for (int k = 0; k < 8; ++k) v[k] = __fadd_rn(__fmul_rn(float(nib(q, k, sh)), d), m);
}

template <>
__device__ __forceinline__ void decode<DTYPE_Q5_0>(const uint8_t* s8, const uint32_t* s32, int pos, int o, float* v) {
  const float d = ld_f16(s8, pos);
  const uint32_t qh = ld4(s32, pos + 2) >> o;  // bit j of qh is the fifth bit of element j
  const uint64_t q = ld8(s32, pos + 6 + (o & 15));
  const int sh = o >= 16 ? 4 : 0;
#pragma unroll
  for (int k = 0; k < 8; ++k) {
    const int x = int(nib(q, k, sh) | (((qh >> k) & 1u) << 4)) - 16;
    v[k] = __fmul_rn(float(x), d);
  }
}

template <>
__device__ __forceinline__ void decode<DTYPE_Q5_1>(const uint8_t* s8, const uint32_t* s32, int pos, int o, float* v) {
  const float d = ld_f16(s8, pos), m = ld_f16(s8, pos + 2);
  const uint32_t qh = ld4(s32, pos + 4) >> o;
  const uint64_t q = ld8(s32, pos + 8 + (o & 15));
  const int sh = o >= 16 ? 4 : 0;
#pragma unroll
  for (int k = 0; k < 8; ++k) {
    const uint32_t x = nib(q, k, sh) | (((qh >> k) & 1u) << 4);
    v[k] = __fadd_rn(__fmul_rn(float(x), d), m);
  }
}

template <>
__device__ __forceinline__ void decode<DTYPE_Q8_0>(const uint8_t* s8, const uint32_t* s32, int pos, int o, float* v) {
  const float d = ld_f16(s8, pos);
  const uint64_t q = ld8(s32, pos + 2 + o);
#pragma unroll
  for (int k = 0; k < 8; ++k) v[k] = __fmul_rn(float(int(int8_t(uint8_t(q >> (8 * k))))), d);
}

// quant_k4_scale_min for sub-block j of the scales[12] at byte sp.
__device__ __forceinline__ void k4_scale_min(const uint8_t* s8, int sp, int j, uint32_t* sc, uint32_t* m) {
  if (j < 4) {
    *sc = s8[sp + j] & 63u;
    *m = s8[sp + j + 4] & 63u;
  } else {
    *sc = (s8[sp + j + 4] & 0xFu) | ((uint32_t(s8[sp + j - 4]) >> 6) << 4);
    *m = (uint32_t(s8[sp + j + 4]) >> 4) | ((uint32_t(s8[sp + j]) >> 6) << 4);
  }
}

// Q4_K/Q5_K: element e is in sub-block s = e / 32; qs chunk c = e / 64 holds sub-block 2c in its low
// nibbles and 2c+1 in its high nibbles, byte l = e % 32 of the chunk.
template <>
__device__ __forceinline__ void decode<DTYPE_Q4_K>(const uint8_t* s8, const uint32_t* s32, int pos, int o, float* v) {
  const int s = o >> 5, l0 = o & 31;
  uint32_t sc, mn;
  k4_scale_min(s8, pos + 4, s, &sc, &mn);
  const float d1 = __fmul_rn(ld_f16(s8, pos), float(sc));
  const float m1 = __fmul_rn(ld_f16(s8, pos + 2), float(mn));
  const uint64_t q = ld8(s32, pos + 16 + 32 * (s >> 1) + l0);
  const int sh = (s & 1) * 4;
#pragma unroll
  for (int k = 0; k < 8; ++k) v[k] = __fsub_rn(__fmul_rn(d1, float(nib(q, k, sh))), m1);
}

template <>
__device__ __forceinline__ void decode<DTYPE_Q5_K>(const uint8_t* s8, const uint32_t* s32, int pos, int o, float* v) {
  const int s = o >> 5, l0 = o & 31;
  uint32_t sc, mn;
  k4_scale_min(s8, pos + 4, s, &sc, &mn);
  const float d1 = __fmul_rn(ld_f16(s8, pos), float(sc));
  const float m1 = __fmul_rn(ld_f16(s8, pos + 2), float(mn));
  const uint64_t qh = ld8(s32, pos + 16 + l0);  // bit s of qh[l] is the fifth bit
  const uint64_t q = ld8(s32, pos + 48 + 32 * (s >> 1) + l0);
  const int sh = (s & 1) * 4;
#pragma unroll
  for (int k = 0; k < 8; ++k) {
    const uint32_t x = nib(q, k, sh) + ((uint32_t(qh >> (8 * k + s)) & 1u) << 4);
    v[k] = __fsub_rn(__fmul_rn(d1, float(x)), m1);
  }
}

// Q6_K (packing in quant_k.cpp): element e = 128h + 32qq + l takes the low (qq < 2) or high nibble of
// ql[64h + 32(qq & 1) + l], bits 2qq..2qq+1 of qh[32h + l], and scale scales[8h + l/16 + 2qq].
template <>
__device__ __forceinline__ void decode<DTYPE_Q6_K>(const uint8_t* s8, const uint32_t* s32, int pos, int o, float* v) {
  const int h = o >> 7, qq = (o >> 5) & 3, l0 = o & 31;
  const float d = ld_f16(s8, pos + 208);
  const int sc = int(int8_t(s8[pos + 192 + 8 * h + (l0 >> 4) + 2 * qq]));
  const float ds = __fmul_rn(d, float(sc));
  const uint64_t ql = ld8(s32, pos + 64 * h + 32 * (qq & 1) + l0);
  const uint64_t qh = ld8(s32, pos + 128 + 32 * h + l0);
  const int sh = qq >= 2 ? 4 : 0;
#pragma unroll
  for (int k = 0; k < 8; ++k) {
    const int x = int(nib(ql, k, sh) | ((uint32_t(qh >> (8 * k + 2 * qq)) & 3u) << 4)) - 32;
    v[k] = __fmul_rn(ds, float(x));
  }
}

// ---- staging and storing -------------------------------------------------------------------------------

// Copies nbytes from global g to s8[head ...], head = g % 16, so that 16-byte aligned global chunks land
// on 16-byte aligned shared addresses: those move as uint4, the unaligned head and tail byte by byte.
// Never reads outside [g, g + nbytes).
__device__ __forceinline__ void stage_bytes(const uint8_t* __restrict__ g, int nbytes, uint8_t* s8, int head) {
  const uintptr_t g0 = reinterpret_cast<uintptr_t>(g), g1 = g0 + uintptr_t(nbytes);
  const uintptr_t a1 = (g0 + 15) & ~uintptr_t(15), a2 = g1 & ~uintptr_t(15);
  const int t = int(threadIdx.x);
  if (a1 >= a2) {  // no whole aligned chunk inside
    for (int k = t; k < nbytes; k += kThreads) s8[head + k] = __ldg(g + k);
    return;
  }
  const uintptr_t base = g0 & ~uintptr_t(15);  // shared position of address x: x - base
  const int n_head = int(a1 - g0), n_mid = int((a2 - a1) >> 4), n_tail = int(g1 - a2);
  const uint4* gm = reinterpret_cast<const uint4*>(a1);
  uint4* sm = reinterpret_cast<uint4*>(s8 + (a1 - base));
  for (int k = t; k < n_mid; k += kThreads) sm[k] = __ldg(gm + k);
  if (t < n_head) s8[head + t] = __ldg(g + t);
  if (t < n_tail) s8[int(a2 - base) + t] = __ldg(reinterpret_cast<const uint8_t*>(a2) + t);
}

__device__ __forceinline__ uint32_t bf16_bits(float v) { return __bfloat16_as_ushort(__float2bfloat16_rn(v)); }

template <bool kVec>
__device__ __forceinline__ void store8(__nv_bfloat16* p, const float* v) {
  if constexpr (kVec) {
    uint4 w;
    w.x = bf16_bits(v[0]) | (bf16_bits(v[1]) << 16);
    w.y = bf16_bits(v[2]) | (bf16_bits(v[3]) << 16);
    w.z = bf16_bits(v[4]) | (bf16_bits(v[5]) << 16);
    w.w = bf16_bits(v[6]) | (bf16_bits(v[7]) << 16);
    *reinterpret_cast<uint4*>(p) = w;
  } else {
#pragma unroll
    for (int k = 0; k < 8; ++k) p[k] = __float2bfloat16_rn(v[k]);
  }
}

template <bool kVec>
__device__ __forceinline__ void store8(float* p, const float* v) {
  if constexpr (kVec) {
    reinterpret_cast<float4*>(p)[0] = make_float4(v[0], v[1], v[2], v[3]);
    reinterpret_cast<float4*>(p)[1] = make_float4(v[4], v[5], v[6], v[7]);
  } else {
#pragma unroll
    for (int k = 0; k < 8; ++k) p[k] = v[k];
  }
}

// Output (rows, bpr * BE) with leading dimension ld. Without ids, source row r is src + r * bpr * BB and
// tile k covers the flattened blocks [k * TB, k * TB + TB). With ids, output row r reads table row ids[r]
// (zeros when outside [0, V)) and tile k is chunk k % tiles_per_row of output row k / tiles_per_row.
// Six CTAs per SM caps registers at 40 (no spills with nvcc 13); uncapped, ptxas takes 64 and halves
// the resident threads.
template <DType T, class Out, bool kVec>
__global__ void __launch_bounds__(kThreads, 6)
    dequant_kernel(const uint8_t* __restrict__ src, int64_t rows, int64_t bpr, const int32_t* __restrict__ ids,
                   int64_t V, Out* __restrict__ dst, int64_t ld, int64_t tiles) {
  constexpr int BE = Fmt<T>::kElems, BB = Fmt<T>::kBytes, TB = kTileElems / BE, kPerBlock = BE / kGroup;
  static_assert(TB * BB + 32 <= kStageBytes, "staging buffer too small");
  __shared__ uint4 stage[kStageBytes / 16];
  uint8_t* s8 = reinterpret_cast<uint8_t*>(stage);
  const uint32_t* s32 = reinterpret_cast<const uint32_t*>(stage);
  const int64_t tiles_per_row = (bpr + TB - 1) / TB;
  const int i = int(threadIdx.x) / kPerBlock;            // block within the tile
  const int o = (int(threadIdx.x) % kPerBlock) * kGroup;  // first element within the block
  const bool narrow = rows * bpr <= int64_t(0xffffffff);  // block numbers fit 32 bits
  for (int64_t tile = blockIdx.x; tile < tiles; tile += gridDim.x) {
    int64_t gb0;  // first block of the tile, numbered row * bpr + block-in-row in the output
    int64_t nblk;
    const uint8_t* g;
    bool zero = false;
    if (ids == nullptr) {
      gb0 = tile * TB;
      nblk = rows * bpr - gb0;
      g = src + gb0 * BB;
    } else {
      const int64_t r = tile / tiles_per_row, c0 = (tile % tiles_per_row) * TB;
      gb0 = r * bpr + c0;
      nblk = bpr - c0;
      const int32_t id = ids[r];
      zero = id < 0 || int64_t(id) >= V;
      g = src + (zero ? int64_t(0) : (int64_t(id) * bpr + c0) * BB);
    }
    if (nblk > TB) nblk = TB;
    const int head = int(reinterpret_cast<uintptr_t>(g) & 15u);
    if (!zero) stage_bytes(g, int(nblk) * BB, s8, head);
    __syncthreads();
    if (i < nblk) {
      float v[kGroup];
      if (zero) {
#pragma unroll
        for (int k = 0; k < kGroup; ++k) v[k] = 0.0f;
      } else {
        decode<T>(s8, s32, head + i * BB, o, v);
      }
      const int64_t gb = gb0 + i;
      int64_t row, col;
      if (narrow) {  // 32-bit division: the 64-bit one is a long software routine
        const uint32_t r = uint32_t(gb) / uint32_t(bpr);
        row = r;
        col = int64_t(uint32_t(gb) - r * uint32_t(bpr)) * BE + o;
      } else {
        row = gb / bpr;
        col = (gb % bpr) * BE + o;
      }
      store8<kVec>(dst + row * ld + col, v);
    }
    __syncthreads();  // the next tile overwrites the staging buffer
  }
}

// ---- plain source types (F32, F16, BF16): one element per thread --------------------------------------

template <DType T> __device__ __forceinline__ float plain_to_f32(const void* src, int64_t i);
template <> __device__ __forceinline__ float plain_to_f32<DTYPE_F32>(const void* src, int64_t i) {
  return static_cast<const float*>(src)[i];
}
template <> __device__ __forceinline__ float plain_to_f32<DTYPE_F16>(const void* src, int64_t i) {
  return f16_bits_to_f32(static_cast<const uint16_t*>(src)[i]);
}
template <> __device__ __forceinline__ float plain_to_f32<DTYPE_BF16>(const void* src, int64_t i) {
  return __uint_as_float(uint32_t(static_cast<const uint16_t*>(src)[i]) << 16);
}

__device__ __forceinline__ void put(float* p, float v) { *p = v; }
__device__ __forceinline__ void put(__nv_bfloat16* p, float v) { *p = __float2bfloat16_rn(v); }

template <DType T, class Out>
__global__ void __launch_bounds__(kThreads)
    plain_kernel(const void* __restrict__ src, int64_t rows, int64_t cols, const int32_t* __restrict__ ids, int64_t V,
                 Out* __restrict__ dst, int64_t ld) {
  const int64_t total = rows * cols;
  for (int64_t e = int64_t(blockIdx.x) * kThreads + threadIdx.x; e < total; e += int64_t(gridDim.x) * kThreads) {
    const int64_t r = e / cols, c = e % cols;
    float v = 0.0f;
    if (ids == nullptr) {
      v = plain_to_f32<T>(src, e);
    } else {
      const int32_t id = ids[r];
      if (id >= 0 && int64_t(id) < V) v = plain_to_f32<T>(src, int64_t(id) * cols + c);
    }
    put(dst + r * ld + c, v);
  }
}

// ---- launchers -----------------------------------------------------------------------------------------

int64_t block_elems(DType t) {
  switch (t) {
    case DTYPE_F32: case DTYPE_F16: case DTYPE_BF16: return 1;
    case DTYPE_Q4_0: case DTYPE_Q4_1: case DTYPE_Q5_0: case DTYPE_Q5_1: case DTYPE_Q8_0: return 32;
    case DTYPE_Q4_K: case DTYPE_Q5_K: case DTYPE_Q6_K: return 256;
    default: return 0;
  }
}

template <DType T, class Out>
void launch_quant(const void* src, int64_t rows, int64_t cols, const int32_t* ids, int64_t V, Out* dst, int64_t ld,
                  cudaStream_t stream) {
  constexpr int BE = Fmt<T>::kElems, TB = kTileElems / BE;
  const int64_t bpr = cols / BE;
  const int64_t tiles = ids ? rows * ((bpr + TB - 1) / TB) : (rows * bpr + TB - 1) / TB;
  const unsigned grid = unsigned(tiles < kMaxGrid ? tiles : kMaxGrid);
  constexpr int64_t kVecElems = 16 / int64_t(sizeof(Out));  // elements per 16-byte store
  const bool vec = reinterpret_cast<uintptr_t>(dst) % 16 == 0 && ld % kVecElems == 0;
  const auto* s = static_cast<const uint8_t*>(src);
  if (vec)
    dequant_kernel<T, Out, true><<<grid, kThreads, 0, stream>>>(s, rows, bpr, ids, V, dst, ld, tiles);
  else
    dequant_kernel<T, Out, false><<<grid, kThreads, 0, stream>>>(s, rows, bpr, ids, V, dst, ld, tiles);
}

template <DType T, class Out>
void launch_plain(const void* src, int64_t rows, int64_t cols, const int32_t* ids, int64_t V, Out* dst, int64_t ld,
                  cudaStream_t stream) {
  const int64_t blocks = (rows * cols + kThreads - 1) / kThreads;
  const unsigned grid = unsigned(blocks < kMaxGrid ? blocks : kMaxGrid);
  plain_kernel<T, Out><<<grid, kThreads, 0, stream>>>(src, rows, cols, ids, V, dst, ld);
}

// Checks the sizes (what names the caller in the failure), then launches for type t.
template <class Out>
void dispatch(const char* bad_type, const char* bad_size, DType t, const void* src, int64_t rows, int64_t cols,
              const int32_t* ids, int64_t V, Out* dst, int64_t ld, cudaStream_t stream) {
  const int64_t be = block_elems(t);
  if (be == 0) cuda_fail(cudaErrorInvalidValue, bad_type, __FILE__, __LINE__);
  if (rows < 0 || cols < 0 || V < 0 || cols % be != 0 || ld < cols)
    cuda_fail(cudaErrorInvalidValue, bad_size, __FILE__, __LINE__);
  if (rows == 0 || cols == 0) return;
  switch (t) {
    case DTYPE_F32: launch_plain<DTYPE_F32>(src, rows, cols, ids, V, dst, ld, stream); break;
    case DTYPE_F16: launch_plain<DTYPE_F16>(src, rows, cols, ids, V, dst, ld, stream); break;
    case DTYPE_BF16: launch_plain<DTYPE_BF16>(src, rows, cols, ids, V, dst, ld, stream); break;
    case DTYPE_Q4_0: launch_quant<DTYPE_Q4_0>(src, rows, cols, ids, V, dst, ld, stream); break;
    case DTYPE_Q4_1: launch_quant<DTYPE_Q4_1>(src, rows, cols, ids, V, dst, ld, stream); break;
    case DTYPE_Q5_0: launch_quant<DTYPE_Q5_0>(src, rows, cols, ids, V, dst, ld, stream); break;
    case DTYPE_Q5_1: launch_quant<DTYPE_Q5_1>(src, rows, cols, ids, V, dst, ld, stream); break;
    case DTYPE_Q8_0: launch_quant<DTYPE_Q8_0>(src, rows, cols, ids, V, dst, ld, stream); break;
    case DTYPE_Q4_K: launch_quant<DTYPE_Q4_K>(src, rows, cols, ids, V, dst, ld, stream); break;
    case DTYPE_Q5_K: launch_quant<DTYPE_Q5_K>(src, rows, cols, ids, V, dst, ld, stream); break;
    case DTYPE_Q6_K: launch_quant<DTYPE_Q6_K>(src, rows, cols, ids, V, dst, ld, stream); break;
    default: cuda_fail(cudaErrorInvalidValue, bad_type, __FILE__, __LINE__);
  }
  LORA_CUDA_CHECK(cudaGetLastError());
}

}  // namespace

bool cuda_dequant_supported(DType t) { return block_elems(t) != 0; }

void cuda_dequantize_bf16(DType t, const void* src, __nv_bfloat16* dst, int64_t rows, int64_t cols, int64_t dst_ld,
                          cudaStream_t stream) {
  dispatch("cuda_dequantize_bf16: unsupported source dtype (quantized Q4_0..Q6_K, F32, F16, BF16 only)",
           "cuda_dequantize_bf16: negative size, cols not a multiple of the block size, or dst_ld < cols", t, src,
           rows, cols, nullptr, 0, dst, dst_ld, stream);
}

void cuda_dequantize_f32(DType t, const void* src, float* dst, int64_t rows, int64_t cols, cudaStream_t stream) {
  dispatch("cuda_dequantize_f32: unsupported source dtype (quantized Q4_0..Q6_K, F32, F16, BF16 only)",
           "cuda_dequantize_f32: negative size or cols not a multiple of the block size", t, src, rows, cols, nullptr,
           0, dst, cols, stream);
}

void cuda_embedding_quant(DType t, const void* table, int64_t V, int64_t cols, const int32_t* ids, int64_t n,
                          float* out, cudaStream_t stream) {
  if (n > 0 && cols > 0 && ids == nullptr)
    cuda_fail(cudaErrorInvalidValue, "cuda_embedding_quant: ids is null", __FILE__, __LINE__);
  dispatch("cuda_embedding_quant: unsupported table dtype (quantized Q4_0..Q6_K, F32, F16, BF16 only)",
           "cuda_embedding_quant: negative size or cols not a multiple of the block size", t, table, n, cols, ids, V,
           out, cols, stream);
}

}  // namespace lora
