// Batch-1 matrix-vector products (see matvec.h). With AVX2+FMA (the build uses -march=native) each row
// is a dot product over 32 elements per step with four independent accumulators, so the loads of W
// stream at memory bandwidth; x (a few KB) stays in L1. A scalar fallback keeps other CPUs working.
#include "cpu/matvec.h"

#include <cstring>
#include <vector>

#if defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
#include <immintrin.h>
#define LORA_MATVEC_AVX2 1
#endif

#include "core/error.h"
#include "core/quant.h"

namespace lora::cpu {

namespace {

#ifdef LORA_MATVEC_AVX2
inline float hsum(__m256 v) {
  __m128 lo = _mm256_castps256_ps128(v), hi = _mm256_extractf128_ps(v, 1);
  lo = _mm_add_ps(lo, hi);
  lo = _mm_add_ps(lo, _mm_movehl_ps(lo, lo));
  lo = _mm_add_ss(lo, _mm_movehdup_ps(lo));
  return _mm_cvtss_f32(lo);
}
// 8 weights of each type as f32.
inline __m256 load8(const float* p) { return _mm256_loadu_ps(p); }
inline __m256 load8(const uint16_t* p, bool is_bf16) {
  const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
  if (is_bf16) return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
  return _mm256_cvtph_ps(h);
}
#endif

float dot_f32(const float* w, const float* x, int64_t n) {
  int64_t i = 0;
  float s = 0.0f;
#ifdef LORA_MATVEC_AVX2
  __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
  for (; i + 32 <= n; i += 32) {
    a0 = _mm256_fmadd_ps(load8(w + i), _mm256_loadu_ps(x + i), a0);
    a1 = _mm256_fmadd_ps(load8(w + i + 8), _mm256_loadu_ps(x + i + 8), a1);
    a2 = _mm256_fmadd_ps(load8(w + i + 16), _mm256_loadu_ps(x + i + 16), a2);
    a3 = _mm256_fmadd_ps(load8(w + i + 24), _mm256_loadu_ps(x + i + 24), a3);
  }
  for (; i + 8 <= n; i += 8) a0 = _mm256_fmadd_ps(load8(w + i), _mm256_loadu_ps(x + i), a0);
  s = hsum(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)));
#endif
  for (; i < n; ++i) s += w[i] * x[i];
  return s;
}

template <bool kBF16>
float dot_half(const uint16_t* w, const float* x, int64_t n) {
  int64_t i = 0;
  float s = 0.0f;
#ifdef LORA_MATVEC_AVX2
  __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
  for (; i + 32 <= n; i += 32) {
    a0 = _mm256_fmadd_ps(load8(w + i, kBF16), _mm256_loadu_ps(x + i), a0);
    a1 = _mm256_fmadd_ps(load8(w + i + 8, kBF16), _mm256_loadu_ps(x + i + 8), a1);
    a2 = _mm256_fmadd_ps(load8(w + i + 16, kBF16), _mm256_loadu_ps(x + i + 16), a2);
    a3 = _mm256_fmadd_ps(load8(w + i + 24, kBF16), _mm256_loadu_ps(x + i + 24), a3);
  }
  for (; i + 8 <= n; i += 8) a0 = _mm256_fmadd_ps(load8(w + i, kBF16), _mm256_loadu_ps(x + i), a0);
  s = hsum(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)));
#endif
  for (; i < n; ++i) s += (kBF16 ? bf16_to_f32(w[i]) : f16_to_f32(w[i])) * x[i];
  return s;
}

}  // namespace

void convert_to_f32(const void* src, DType t, float* dst, int64_t n) {
  if (t == DTYPE_F32) {
    std::memcpy(dst, src, size_t(n) * 4);
    return;
  }
  if (dtype_is_quant(t)) {
    quant_dequantize_row(t, src, dst, n);
    return;
  }
  LORA_CHECK(t == DTYPE_BF16 || t == DTYPE_F16, "convert_to_f32: unsupported dtype {}", dtype_name(t));
  const uint16_t* s = static_cast<const uint16_t*>(src);
  const bool bf16 = t == DTYPE_BF16;
  int64_t i = 0;
#ifdef LORA_MATVEC_AVX2
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(dst + i, load8(s + i, bf16));
#endif
  for (; i < n; ++i) dst[i] = bf16 ? bf16_to_f32(s[i]) : f16_to_f32(s[i]);
}

void matvec(const void* w, DType wt, int64_t out, int64_t in, const float* x, float* y) {
  // Below ~64K weights the fork/join costs more than the work.
  const bool par = out * in >= (int64_t(1) << 16);
  switch (wt) {
    case DTYPE_F32: {
      const float* W = static_cast<const float*>(w);
#pragma omp parallel for schedule(static) if (par)
      for (int64_t r = 0; r < out; ++r) y[r] = dot_f32(W + r * in, x, in);
      break;
    }
    case DTYPE_BF16: {
      const uint16_t* W = static_cast<const uint16_t*>(w);
#pragma omp parallel for schedule(static) if (par)
      for (int64_t r = 0; r < out; ++r) y[r] = dot_half<true>(W + r * in, x, in);
      break;
    }
    case DTYPE_F16: {
      const uint16_t* W = static_cast<const uint16_t*>(w);
#pragma omp parallel for schedule(static) if (par)
      for (int64_t r = 0; r < out; ++r) y[r] = dot_half<false>(W + r * in, x, in);
      break;
    }
    default: {
      // Quantized rows: each is dequantized into a per-thread row buffer (in L1/L2) and dotted.
      LORA_CHECK(dtype_is_quant(wt), "matvec: unsupported weight dtype {}", dtype_name(wt));
      const char* W = static_cast<const char*>(w);
      const int64_t row_bytes = dtype_nbytes(wt, in);
#pragma omp parallel if (par)
      {
        thread_local std::vector<float> row;  // grown once per thread: decoding allocates nothing per token
        if (int64_t(row.size()) < in) row.resize(static_cast<size_t>(in));
#pragma omp for schedule(static)
        for (int64_t r = 0; r < out; ++r) {
          quant_dequantize_row(wt, W + r * row_bytes, row.data(), in);
          y[r] = dot_f32(row.data(), x, in);
        }
      }
    }
  }
}

}  // namespace lora::cpu
