// cuda_dequantize_bf16 / cuda_dequantize_f32 / cuda_embedding_quant (dequant.h): llama.cpp's block
// formats expanded on the GPU, bit-identical to core/quant.cpp's CPU dequantizers.
//
// Layout of the work: the kernel is bandwidth-bound, so it is built to keep many bytes in flight. Every
// warp works alone (no CTA-wide barrier) on a tile of 1024 output elements (32 blocks of 32 or 4
// super-blocks of 256):
//   1. stage: the tile's quantized bytes go to the warp's own slice of shared memory; each lane issues
//      all its 16-byte loads (up to 3) before the first use, the unaligned head and tail bytes (blocks
//      are only byte-aligned) go byte by byte, so a staged byte keeps its global address mod 16;
//   2. prep: each lane decodes one tile-wide scale item (a block's d, m, qh, or a super-block's
//      sub-block d*sc / dmin*m), once per tile instead of once per 8 elements;
//   3. four rounds: in each, lane l takes 8 consecutive elements of one block (its scales come by
//      __shfl_sync from the lane that prepared them), so one 16-byte store instruction of the warp
//      covers 256 consecutive elements (512 B of bf16).
// The staged bytes are read with aligned 32-bit shared loads and funnel shifts, never wider unaligned
// loads. Without ids, tile k is flattened blocks [k * TB, k * TB + TB) of the matrix (rows are
// contiguous); with ids (the embedding gather), a tile is a chunk of one output row.
//
// Bit-exactness: every f32 operation is written with __fmul_rn / __fadd_rn / __fsub_rn in the CPU's
// order (which compiles with fp-contract off), so nvcc cannot contract a multiply-add into an FMA.
// Small integers become floats as (2^23 + n) - (2^23 + bias), exact (both operands and the result are
// integers below 2^24), on the FP32 pipe instead of the 16/clk/SM conversion unit.
// Only cuda/check.h and CUDA headers here.
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <type_traits>

#include "cuda/check.h"
#include "cuda/dequant.h"

namespace lora {

namespace {

constexpr int kThreads = 256;               // plain_kernel's CTA
constexpr int kQuantThreads = 128;          // dequant_kernel's CTA: 4 independent warps
constexpr int kWarps = kQuantThreads / 32;
constexpr int kGroup = 8;                   // consecutive output elements per lane and round
constexpr int kRounds = 4;                  // rounds per warp tile
constexpr int kTileElems = 32 * kGroup * kRounds;  // 1024 output elements per warp tile
constexpr int64_t kMaxGrid = int64_t(1) << 20;     // grid-stride beyond this many CTAs

template <DType T> struct Fmt;
template <> struct Fmt<DTYPE_Q4_0> { static constexpr int kElems = 32, kBytes = 18; };
template <> struct Fmt<DTYPE_Q4_1> { static constexpr int kElems = 32, kBytes = 20; };
template <> struct Fmt<DTYPE_Q5_0> { static constexpr int kElems = 32, kBytes = 22; };
template <> struct Fmt<DTYPE_Q5_1> { static constexpr int kElems = 32, kBytes = 24; };
template <> struct Fmt<DTYPE_Q8_0> { static constexpr int kElems = 32, kBytes = 34; };
template <> struct Fmt<DTYPE_Q4_K> { static constexpr int kElems = 256, kBytes = 144; };
template <> struct Fmt<DTYPE_Q5_K> { static constexpr int kElems = 256, kBytes = 176; };
template <> struct Fmt<DTYPE_Q6_K> { static constexpr int kElems = 256, kBytes = 210; };

// A warp tile of type T.
template <DType T> struct Tile {
  static constexpr int kBE = Fmt<T>::kElems, kBB = Fmt<T>::kBytes;
  static constexpr int kBlocks = kTileElems / kBE;     // 32 or 4
  static constexpr int kPerRound = 32 * kGroup / kBE;  // blocks per round: 8 or 1
  static constexpr int kLanesPerBlock = kBE / kGroup;  // 4 or 32
  static constexpr int kBytes = kBlocks * kBB;         // quantized bytes of a full tile
  // + the unaligned head (< 16 B) + what ld8 reads past a block's end (<= 4 B), in whole uint4.
  static constexpr int kStage = (kBytes + 32 + 15) / 16 * 16;
  static constexpr int kLoads = (kBytes + 511) / 512;  // 16-byte loads per lane cover the tile
  static_assert(kBlocks * kBE == kTileElems && kPerRound * kRounds == kBlocks, "tile shape");
};

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

// ---- small integers to float, exactly ------------------------------------------------------------------

constexpr float kTwo23 = 8388608.0f;

// The float 2^23 + u (u < 2^23): u in the mantissa under the exponent of 2^23.
__device__ __forceinline__ float magic_u32(uint32_t u) { return __uint_as_float(0x4B000000u | u); }

// The float 2^23 + byte k of x, in one byte permute.
__device__ __forceinline__ float magic_byte(uint32_t x, int k) {
  return __uint_as_float(__byte_perm(x, 0x4B000000u, 0x7440u + unsigned(k)));
}

// float(int(u) - kBias) from magic = 2^23 + u: exact, since both operands and the difference are
// integers of magnitude below 2^24 (a zero difference is +0, as float(0) is).
template <int kBias>
__device__ __forceinline__ float unbias(float magic) { return __fsub_rn(magic, kTwo23 + float(kBias)); }

// ---- reading the staged bytes -------------------------------------------------------------------------
// s8 / s32 view the same 16-byte aligned shared buffer; pos is a byte offset into it.

__device__ __forceinline__ uint32_t ld4(const uint32_t* s32, int pos) {
  const int i = pos >> 2;
  return __funnelshift_r(s32[i], s32[i + 1], unsigned(pos & 3) * 8u);
}

// Bytes pos..pos+7 as two little-endian words (byte k of the 8 in bits 8(k%4).. of word k/4).
__device__ __forceinline__ uint2 ld8(const uint32_t* s32, int pos) {
  const int i = pos >> 2;
  const unsigned sh = unsigned(pos & 3) * 8u;
  const uint32_t a = s32[i], b = s32[i + 1], c = s32[i + 2];
  return make_uint2(__funnelshift_r(a, b, sh), __funnelshift_r(b, c, sh));
}

__device__ __forceinline__ float ld_f16(const uint8_t* s8, int pos) {
  return f16_bits_to_f32(uint32_t(s8[pos]) | (uint32_t(s8[pos + 1]) << 8));
}

// Nibbles (sh 0: low, 4: high) of the 4 bytes of w, one per byte.
__device__ __forceinline__ uint32_t nibbles(uint32_t w, int sh) { return (w >> sh) & 0x0F0F0F0Fu; }

__device__ __forceinline__ uint32_t shfl_u(uint32_t v, int src) { return __shfl_sync(0xffffffffu, v, src); }
__device__ __forceinline__ float shfl_f(float v, int src) { return __shfl_sync(0xffffffffu, v, src); }

// ---- the formats ----------------------------------------------------------------------------------------
// Codec<T>:
//   prep(s8, s32, head, lane): the scale item lane prepares once per tile (blocks at head + i * kBB);
//   hdr(prep, q, lane): the item lane needs in round q (shuffles: every lane of the warp calls it);
//   decode(s8, s32, pos, o, hdr, v): v[0..7] = elements o..o+7 (o % 8 == 0) of the block at pos.
// For a partial tile, items of blocks past its end come from stale shared bytes and are never used.

struct Item {
  float a = 0.0f, b = 0.0f;
  uint32_t c = 0;
};

template <DType T> struct Codec;

// 32-element blocks: lane l prepares block l of the tile; in round q, lane l decodes block 8q + l / 4,
// elements 8 (l % 4)...
template <DType T> struct Codec32 {
  static __device__ __forceinline__ int src_lane(int q, int lane) { return 8 * q + (lane >> 2); }
};

template <> struct Codec<DTYPE_Q4_0> : Codec32<DTYPE_Q4_0> {
  static __device__ __forceinline__ Item prep(const uint8_t* s8, const uint32_t*, int head, int lane) {
    Item it;
    it.a = ld_f16(s8, head + 18 * lane);
    return it;
  }
  static __device__ __forceinline__ Item hdr(const Item& p, int q, int lane) {
    Item it;
    it.a = shfl_f(p.a, src_lane(q, lane));
    return it;
  }
  static __device__ __forceinline__ void decode(const uint8_t*, const uint32_t* s32, int pos, int o, const Item& h,
                                                float* v) {
    const uint2 q = ld8(s32, pos + 2 + (o & 15));
    const int sh = o >= 16 ? 4 : 0;  // elements 16..31 are the high nibbles
    const uint32_t w0 = nibbles(q.x, sh), w1 = nibbles(q.y, sh);
#pragma unroll
    for (int k = 0; k < 8; ++k) v[k] = __fmul_rn(unbias<8>(magic_byte(k < 4 ? w0 : w1, k & 3)), h.a);
  }
};

template <> struct Codec<DTYPE_Q4_1> : Codec32<DTYPE_Q4_1> {
  static __device__ __forceinline__ Item prep(const uint8_t* s8, const uint32_t*, int head, int lane) {
    Item it;
    it.a = ld_f16(s8, head + 20 * lane);
    it.b = ld_f16(s8, head + 20 * lane + 2);
    return it;
  }
  static __device__ __forceinline__ Item hdr(const Item& p, int q, int lane) {
    Item it;
    it.a = shfl_f(p.a, src_lane(q, lane));
    it.b = shfl_f(p.b, src_lane(q, lane));
    return it;
  }
  static __device__ __forceinline__ void decode(const uint8_t*, const uint32_t* s32, int pos, int o, const Item& h,
                                                float* v) {
    const uint2 q = ld8(s32, pos + 4 + (o & 15));
    const int sh = o >= 16 ? 4 : 0;
    const uint32_t w0 = nibbles(q.x, sh), w1 = nibbles(q.y, sh);
#pragma unroll
    for (int k = 0; k < 8; ++k) v[k] = __fadd_rn(__fmul_rn(unbias<0>(magic_byte(k < 4 ? w0 : w1, k & 3)), h.a), h.b);
  }
};

template <> struct Codec<DTYPE_Q5_0> : Codec32<DTYPE_Q5_0> {
  static __device__ __forceinline__ Item prep(const uint8_t* s8, const uint32_t* s32, int head, int lane) {
    Item it;
    it.a = ld_f16(s8, head + 22 * lane);
    it.c = ld4(s32, head + 22 * lane + 2);  // qh: bit j is the fifth bit of element j
    return it;
  }
  static __device__ __forceinline__ Item hdr(const Item& p, int q, int lane) {
    Item it;
    it.a = shfl_f(p.a, src_lane(q, lane));
    it.c = shfl_u(p.c, src_lane(q, lane));
    return it;
  }
  static __device__ __forceinline__ void decode(const uint8_t*, const uint32_t* s32, int pos, int o, const Item& h,
                                                float* v) {
    const uint2 q = ld8(s32, pos + 6 + (o & 15));
    const int sh = o >= 16 ? 4 : 0;
    const uint32_t w0 = nibbles(q.x, sh), w1 = nibbles(q.y, sh), qh = h.c >> o;
#pragma unroll
    for (int k = 0; k < 8; ++k) {
      const uint32_t x = ((k < 4 ? w0 : w1) >> (8 * (k & 3)) & 0xFu) | (((qh >> k) & 1u) << 4);
      v[k] = __fmul_rn(unbias<16>(magic_u32(x)), h.a);
    }
  }
};

template <> struct Codec<DTYPE_Q5_1> : Codec32<DTYPE_Q5_1> {
  static __device__ __forceinline__ Item prep(const uint8_t* s8, const uint32_t* s32, int head, int lane) {
    Item it;
    it.a = ld_f16(s8, head + 24 * lane);
    it.b = ld_f16(s8, head + 24 * lane + 2);
    it.c = ld4(s32, head + 24 * lane + 4);
    return it;
  }
  static __device__ __forceinline__ Item hdr(const Item& p, int q, int lane) {
    Item it;
    it.a = shfl_f(p.a, src_lane(q, lane));
    it.b = shfl_f(p.b, src_lane(q, lane));
    it.c = shfl_u(p.c, src_lane(q, lane));
    return it;
  }
  static __device__ __forceinline__ void decode(const uint8_t*, const uint32_t* s32, int pos, int o, const Item& h,
                                                float* v) {
    const uint2 q = ld8(s32, pos + 8 + (o & 15));
    const int sh = o >= 16 ? 4 : 0;
    const uint32_t w0 = nibbles(q.x, sh), w1 = nibbles(q.y, sh), qh = h.c >> o;
#pragma unroll
    for (int k = 0; k < 8; ++k) {
      const uint32_t x = ((k < 4 ? w0 : w1) >> (8 * (k & 3)) & 0xFu) | (((qh >> k) & 1u) << 4);
      v[k] = __fadd_rn(__fmul_rn(unbias<0>(magic_u32(x)), h.a), h.b);
    }
  }
};

template <> struct Codec<DTYPE_Q8_0> : Codec32<DTYPE_Q8_0> {
  static __device__ __forceinline__ Item prep(const uint8_t* s8, const uint32_t*, int head, int lane) {
    Item it;
    it.a = ld_f16(s8, head + 34 * lane);
    return it;
  }
  static __device__ __forceinline__ Item hdr(const Item& p, int q, int lane) {
    Item it;
    it.a = shfl_f(p.a, src_lane(q, lane));
    return it;
  }
  static __device__ __forceinline__ void decode(const uint8_t*, const uint32_t* s32, int pos, int o, const Item& h,
                                                float* v) {
    const uint2 q = ld8(s32, pos + 2 + o);
    // int8 x as the byte x + 128 (flipping the top bit), so that x = (2^23 + byte) - (2^23 + 128).
    const uint32_t w0 = q.x ^ 0x80808080u, w1 = q.y ^ 0x80808080u;
#pragma unroll
    for (int k = 0; k < 8; ++k) v[k] = __fmul_rn(unbias<128>(magic_byte(k < 4 ? w0 : w1, k & 3)), h.a);
  }
};

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
// nibbles and 2c+1 in its high nibbles, byte l = e % 32 of the chunk. Lane l prepares sub-block l % 8
// of super-block l / 8 (d * sc, dmin * m); in round q, lane l decodes elements 8l.. of super-block q,
// in sub-block l / 4.
template <DType T> struct CodecK4 {
  static __device__ __forceinline__ Item prep(const uint8_t* s8, const uint32_t*, int head, int lane) {
    const int pos = head + Fmt<T>::kBytes * (lane >> 3);
    uint32_t sc, mn;
    k4_scale_min(s8, pos + 4, lane & 7, &sc, &mn);
    Item it;
    it.a = __fmul_rn(ld_f16(s8, pos), float(sc));
    it.b = __fmul_rn(ld_f16(s8, pos + 2), float(mn));
    return it;
  }
  static __device__ __forceinline__ Item hdr(const Item& p, int q, int lane) {
    Item it;
    it.a = shfl_f(p.a, 8 * q + (lane >> 2));
    it.b = shfl_f(p.b, 8 * q + (lane >> 2));
    return it;
  }
};

template <> struct Codec<DTYPE_Q4_K> : CodecK4<DTYPE_Q4_K> {
  static __device__ __forceinline__ void decode(const uint8_t*, const uint32_t* s32, int pos, int o, const Item& h,
                                                float* v) {
    const int s = o >> 5, l0 = o & 31;
    const uint2 q = ld8(s32, pos + 16 + 32 * (s >> 1) + l0);
    const int sh = (s & 1) * 4;
    const uint32_t w0 = nibbles(q.x, sh), w1 = nibbles(q.y, sh);
#pragma unroll
    for (int k = 0; k < 8; ++k)
      v[k] = __fsub_rn(__fmul_rn(h.a, unbias<0>(magic_byte(k < 4 ? w0 : w1, k & 3))), h.b);
  }
};

template <> struct Codec<DTYPE_Q5_K> : CodecK4<DTYPE_Q5_K> {
  static __device__ __forceinline__ void decode(const uint8_t*, const uint32_t* s32, int pos, int o, const Item& h,
                                                float* v) {
    const int s = o >> 5, l0 = o & 31;
    const uint2 qh = ld8(s32, pos + 16 + l0);  // bit s of qh[l] is the fifth bit
    const uint2 q = ld8(s32, pos + 48 + 32 * (s >> 1) + l0);
    const int sh = (s & 1) * 4;
    const uint32_t w0 = nibbles(q.x, sh), w1 = nibbles(q.y, sh);
    // The fifth bits, one per byte at bit 4.
    const uint32_t h0 = ((qh.x >> s) & 0x01010101u) << 4, h1 = ((qh.y >> s) & 0x01010101u) << 4;
#pragma unroll
    for (int k = 0; k < 8; ++k)
      v[k] = __fsub_rn(__fmul_rn(h.a, unbias<0>(magic_byte(k < 4 ? (w0 | h0) : (w1 | h1), k & 3))), h.b);
  }
};

// Q6_K (packing in quant_k.cpp): element e = 128h + 32qq + l takes the low (qq < 2) or high nibble of
// ql[64h + 32(qq & 1) + l], bits 2qq..2qq+1 of qh[32h + l], and scale scales[8h + l/16 + 2qq]. The
// tile's 4 super-blocks have 64 scales: lane l prepares d * scales[j] for items p = l and p = l + 32
// (super-block p / 16, j = p % 16).
template <> struct Codec<DTYPE_Q6_K> {
  static __device__ __forceinline__ float ds(const uint8_t* s8, int head, int p) {
    const int pos = head + 210 * (p >> 4);
    return __fmul_rn(ld_f16(s8, pos + 208), float(int(int8_t(s8[pos + 192 + (p & 15)]))));
  }
  static __device__ __forceinline__ Item prep(const uint8_t* s8, const uint32_t*, int head, int lane) {
    Item it;
    it.a = ds(s8, head, lane);
    it.b = ds(s8, head, lane + 32);
    return it;
  }
  static __device__ __forceinline__ Item hdr(const Item& p, int q, int lane) {
    const int o = lane * kGroup, h = o >> 7, qq = (o >> 5) & 3, l0 = o & 31;
    const int j = 8 * h + (l0 >> 4) + 2 * qq;  // item 16q + j
    Item it;
    it.a = shfl_f(q < 2 ? p.a : p.b, 16 * (q & 1) + j);
    return it;
  }
  static __device__ __forceinline__ void decode(const uint8_t*, const uint32_t* s32, int pos, int o, const Item& h,
                                                float* v) {
    const int hh = o >> 7, qq = (o >> 5) & 3, l0 = o & 31;
    const uint2 ql = ld8(s32, pos + 64 * hh + 32 * (qq & 1) + l0);
    const uint2 qh = ld8(s32, pos + 128 + 32 * hh + l0);
    const int sh = qq >= 2 ? 4 : 0;
    const uint32_t w0 = nibbles(ql.x, sh) | (((qh.x >> (2 * qq)) & 0x03030303u) << 4);
    const uint32_t w1 = nibbles(ql.y, sh) | (((qh.y >> (2 * qq)) & 0x03030303u) << 4);
#pragma unroll
    for (int k = 0; k < 8; ++k) v[k] = __fmul_rn(h.a, unbias<32>(magic_byte(k < 4 ? w0 : w1, k & 3)));
  }
};

// ---- staging and storing -------------------------------------------------------------------------------

// The warp copies nbytes from global g to s8[head ...], head = g % 16, so that 16-byte aligned global
// chunks land on 16-byte aligned shared addresses: those move as uint4 (each lane issues all of its
// kLoads loads before storing any), the unaligned head (lanes 0..15) and tail (lanes 16..31) byte by
// byte. Never reads outside [g, g + nbytes); needs nbytes <= 512 * kLoads.
template <int kLoads>
__device__ __forceinline__ void stage_warp(const uint8_t* __restrict__ g, int nbytes, uint8_t* s8, int head,
                                           int lane) {
  const uintptr_t g0 = reinterpret_cast<uintptr_t>(g), g1 = g0 + uintptr_t(nbytes);
  const uintptr_t a1 = (g0 + 15) & ~uintptr_t(15), a2 = g1 & ~uintptr_t(15);
  if (a1 >= a2) {  // no whole aligned chunk inside
    for (int k = lane; k < nbytes; k += 32) s8[head + k] = __ldg(g + k);
    return;
  }
  const int n_head = int(a1 - g0), n_mid = int((a2 - a1) >> 4), n_tail = int(g1 - a2);
  const uint4* gm = reinterpret_cast<const uint4*>(a1);
  uint4 r[kLoads];
#pragma unroll
  for (int k = 0; k < kLoads; ++k)
    if (lane + 32 * k < n_mid) r[k] = __ldg(gm + lane + 32 * k);
  const int e = lane & 15;
  const bool is_head = lane < 16;
  const bool has_byte = e < (is_head ? n_head : n_tail);
  uint8_t b = 0;
  if (has_byte) b = __ldg(is_head ? g + e : reinterpret_cast<const uint8_t*>(a2) + e);
  uint4* sm = reinterpret_cast<uint4*>(s8 + head + n_head);  // head + n_head is 0 or 16
#pragma unroll
  for (int k = 0; k < kLoads; ++k)
    if (lane + 32 * k < n_mid) sm[lane + 32 * k] = r[k];
  if (has_byte) s8[is_head ? head + e : head + n_head + 16 * n_mid + e] = b;
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
// warp tile k covers the flattened blocks [k * TB, k * TB + TB). With ids, output row r reads table row
// ids[r] (zeros when outside [0, V)) and tile k is chunk k % tiles_per_row of output row k / tiles_per_row.
// Warp w of CTA b takes tiles b * 4 + w, then + gridDim.x * 4 (only past kMaxGrid CTAs). Every branch
// around a __syncwarp or a shuffle is warp-uniform (it depends on the tile only).
// Ten 4-warp CTAs per SM (40 warps; registers capped at 48, the most that needs no spills with nvcc 13;
// small CTAs retire and refill independently, which shortens the last wave): a warp has its whole
// tile's loads in flight while it stages, so an SM has ~23 KB (Q4_K) to ~44 KB (Q8_0) of reads
// outstanding, against ~7-13 KB for the former one 2048-element tile per 256-thread CTA. The gather
// (kIds) needs more registers and is not on the training path: eight CTAs.
template <DType T, class Out, bool kVec, bool kIds>
__global__ void __launch_bounds__(kQuantThreads, kIds ? 8 : 10)
    dequant_kernel(const uint8_t* __restrict__ src, int64_t rows, int64_t bpr, const int32_t* __restrict__ ids,
                   int64_t V, Out* __restrict__ dst, int64_t ld, int64_t tiles) {
  using Tl = Tile<T>;
  using C = Codec<T>;
  constexpr int BE = Tl::kBE, BB = Tl::kBB, TB = Tl::kBlocks;
  static_assert(Tl::kBytes <= 512 * Tl::kLoads, "stage_warp needs more loads per lane");
  __shared__ uint4 stage[kWarps][Tl::kStage / 16];
  const int lane = int(threadIdx.x) & 31, warp = int(threadIdx.x) >> 5;
  uint8_t* s8 = reinterpret_cast<uint8_t*>(stage[warp]);
  const uint32_t* s32 = reinterpret_cast<const uint32_t*>(stage[warp]);
  const int64_t tiles_per_row = (bpr + TB - 1) / TB;
  const bool contiguous = ld == bpr * BE;                  // output element (row, col) at gb * BE + ...
  const bool narrow = rows * bpr <= int64_t(0xffffffff);  // block numbers fit 32 bits
  const int ib = lane / Tl::kLanesPerBlock;                // block within a round
  const int o = (lane % Tl::kLanesPerBlock) * kGroup;      // first element within the block
  for (int64_t tile = int64_t(blockIdx.x) * kWarps + warp; tile < tiles; tile += int64_t(gridDim.x) * kWarps) {
    int64_t gb0;  // first block of the tile, numbered row * bpr + block-in-row in the output
    int64_t nblk;
    const uint8_t* g;
    bool zero = false;
    if constexpr (!kIds) {
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
    Item prep;
    if (!zero) {
      stage_warp<Tl::kLoads>(g, int(nblk) * BB, s8, head, lane);
      __syncwarp();
      prep = C::prep(s8, s32, head, lane);
    }
#pragma unroll 1
    for (int q = 0; q < kRounds; ++q) {
      const int i = q * Tl::kPerRound + ib;
      float v[kGroup];
      if (zero) {
#pragma unroll
        for (int k = 0; k < kGroup; ++k) v[k] = 0.0f;
      } else {
        const Item h = C::hdr(prep, q, lane);  // every lane: shuffles
        if (i < nblk) C::decode(s8, s32, head + i * BB, o, h, v);
      }
      if (i < nblk) {
        const int64_t gb = gb0 + i;
        int64_t off;
        if (contiguous) {
          off = gb * BE + o;
        } else if (narrow) {  // 32-bit division: the 64-bit one is a long software routine
          const uint32_t r = uint32_t(gb) / uint32_t(bpr);
          off = int64_t(r) * ld + int64_t(uint32_t(gb) - r * uint32_t(bpr)) * BE + o;
        } else {
          off = (gb / bpr) * ld + (gb % bpr) * BE + o;
        }
        store8<kVec>(dst + off, v);
      }
    }
    __syncwarp();  // the next tile's staging overwrites the buffer
  }
}

// ---- plain source types (F32, F16, BF16): one element per thread --------------------------------------
// src may sit at any byte address (the contract), and a misaligned typed load faults on the GPU: with
// aligned false, elements are read byte by byte.

__device__ __forceinline__ uint32_t ld_bytes(const void* src, int64_t off, int n) {
  const uint8_t* p = static_cast<const uint8_t*>(src) + off;
  uint32_t v = 0;
  for (int k = 0; k < n; ++k) v |= uint32_t(p[k]) << (8 * k);
  return v;
}

template <DType T> __device__ __forceinline__ float plain_to_f32(const void* src, int64_t i, bool aligned);
template <> __device__ __forceinline__ float plain_to_f32<DTYPE_F32>(const void* src, int64_t i, bool aligned) {
  return aligned ? static_cast<const float*>(src)[i] : __uint_as_float(ld_bytes(src, 4 * i, 4));
}
template <> __device__ __forceinline__ float plain_to_f32<DTYPE_F16>(const void* src, int64_t i, bool aligned) {
  return f16_bits_to_f32(aligned ? uint32_t(static_cast<const uint16_t*>(src)[i]) : ld_bytes(src, 2 * i, 2));
}
template <> __device__ __forceinline__ float plain_to_f32<DTYPE_BF16>(const void* src, int64_t i, bool aligned) {
  return __uint_as_float((aligned ? uint32_t(static_cast<const uint16_t*>(src)[i]) : ld_bytes(src, 2 * i, 2)) << 16);
}

__device__ __forceinline__ void put(float* p, float v) { *p = v; }
__device__ __forceinline__ void put(__nv_bfloat16* p, float v) { *p = __float2bfloat16_rn(v); }

template <DType T, class Out>
__global__ void __launch_bounds__(kThreads)
    plain_kernel(const void* __restrict__ src, int64_t rows, int64_t cols, const int32_t* __restrict__ ids, int64_t V,
                 Out* __restrict__ dst, int64_t ld, bool aligned) {
  const int64_t total = rows * cols;
  for (int64_t e = int64_t(blockIdx.x) * kThreads + threadIdx.x; e < total; e += int64_t(gridDim.x) * kThreads) {
    const int64_t r = e / cols, c = e % cols;
    float v = 0.0f;
    if (ids == nullptr) {
      v = plain_to_f32<T>(src, e, aligned);
    } else {
      const int32_t id = ids[r];
      if (id >= 0 && int64_t(id) < V) v = plain_to_f32<T>(src, int64_t(id) * cols + c, aligned);
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
  constexpr int BE = Fmt<T>::kElems, TB = Tile<T>::kBlocks;
  const int64_t bpr = cols / BE;
  const int64_t tiles = ids ? rows * ((bpr + TB - 1) / TB) : (rows * bpr + TB - 1) / TB;  // one per warp
  const int64_t ctas = (tiles + kWarps - 1) / kWarps;
  const unsigned grid = unsigned(ctas < kMaxGrid ? ctas : kMaxGrid);
  constexpr int64_t kVecElems = 16 / int64_t(sizeof(Out));  // elements per 16-byte store
  const bool vec = reinterpret_cast<uintptr_t>(dst) % 16 == 0 && ld % kVecElems == 0;
  const auto* s = static_cast<const uint8_t*>(src);
  if constexpr (std::is_same_v<Out, float>) {  // only cuda_embedding_quant passes ids (f32 out)
    if (ids) {
      if (vec)
        dequant_kernel<T, Out, true, true><<<grid, kQuantThreads, 0, stream>>>(s, rows, bpr, ids, V, dst, ld, tiles);
      else
        dequant_kernel<T, Out, false, true><<<grid, kQuantThreads, 0, stream>>>(s, rows, bpr, ids, V, dst, ld, tiles);
      return;
    }
  }
  if (vec)
    dequant_kernel<T, Out, true, false><<<grid, kQuantThreads, 0, stream>>>(s, rows, bpr, nullptr, V, dst, ld, tiles);
  else
    dequant_kernel<T, Out, false, false><<<grid, kQuantThreads, 0, stream>>>(s, rows, bpr, nullptr, V, dst, ld, tiles);
}

template <DType T, class Out>
void launch_plain(const void* src, int64_t rows, int64_t cols, const int32_t* ids, int64_t V, Out* dst, int64_t ld,
                  cudaStream_t stream) {
  const int64_t blocks = (rows * cols + kThreads - 1) / kThreads;
  const unsigned grid = unsigned(blocks < kMaxGrid ? blocks : kMaxGrid);
  const bool aligned = reinterpret_cast<uintptr_t>(src) % (T == DTYPE_F32 ? 4 : 2) == 0;
  plain_kernel<T, Out><<<grid, kThreads, 0, stream>>>(src, rows, cols, ids, V, dst, ld, aligned);
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
