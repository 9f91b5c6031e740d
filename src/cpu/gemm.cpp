// GEMM through OpenBLAS. This is the only file of the project that includes cblas.h
// (docs/conventions.md), so swapping the BLAS means editing one file. See gemm.h for the threading.
//
// Work sharing: the parallel forms cut c into chunks of columns (or rows), about four per thread, and
// hand them out dynamically. On a machine shared with other processes, a thread the OS pauses then
// holds up the others by one chunk, not by its whole static share. Products smaller than
// kParallelMacs multiply-adds (LoRA's rank-r products, for one) run on the calling thread: waking the
// team costs more than they do.
#include "cpu/gemm.h"

#include <cblas.h>
#include <omp.h>

#include <algorithm>
#include <mutex>

#include "core/error.h"

namespace lora::cpu {

namespace {

void blas_single_threaded() {
  static std::once_flag once;
  std::call_once(once, [] { openblas_set_num_threads(1); });
}

constexpr int64_t kParallelMacs = int64_t(1) << 21;

// The chunk length for splitting `extent` columns or rows over `threads`: about four chunks per thread,
// a multiple of 16 (whole micro-tiles), at least min_chunk.
int64_t gemm_chunk(int64_t extent, int64_t threads, int64_t min_chunk) {
  const int64_t per = (extent + 4 * threads - 1) / (4 * threads);
  return std::max(min_chunk, (per + 15) / 16 * 16);
}

}  // namespace

void gemm_nt_f32_serial(int64_t m, int64_t n, int64_t k, const float* a, int64_t lda, const float* b,
                        int64_t ldb, float* c, int64_t ldc) {
  LORA_CHECK(m >= 0 && n >= 0 && k >= 0 && lda >= k && ldb >= k && ldc >= n, "bad gemm shape");
  if (m == 0 || n == 0) return;
  blas_single_threaded();
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, int(m), int(n), int(k), 1.0f, a, int(lda), b, int(ldb),
              0.0f, c, int(ldc));
}

void gemm_nt_f32(int64_t m, int64_t n, int64_t k, const float* a, int64_t lda, const float* b, int64_t ldb,
                 float* c, int64_t ldc) {
  blas_single_threaded();
  const int64_t maxt = omp_get_max_threads();
  if (maxt <= 1 || n < 32 || m * n * k < kParallelMacs || omp_in_parallel()) {
    gemm_nt_f32_serial(m, n, k, a, lda, b, ldb, c, ldc);
    return;
  }
  // Column chunks of c (rows of b), handed out dynamically.
  const int64_t cs = gemm_chunk(n, maxt, 32), nc = (n + cs - 1) / cs;
#pragma omp parallel for num_threads(int(std::min(maxt, nc))) schedule(dynamic, 1)
  for (int64_t t = 0; t < nc; ++t) {
    const int64_t j0 = t * cs, j1 = std::min(n, j0 + cs);
    gemm_nt_f32_serial(m, j1 - j0, k, a, lda, b + j0 * ldb, ldb, c + j0, ldc);
  }
}

void gemm_f32_serial(bool ta, bool tb, int64_t m, int64_t n, int64_t k, float alpha, const float* a, int64_t lda,
                     const float* b, int64_t ldb, float beta, float* c, int64_t ldc) {
  LORA_CHECK(m >= 0 && n >= 0 && k >= 0 && lda >= (ta ? m : k) && ldb >= (tb ? k : n) && ldc >= n,
             "bad gemm shape m {} n {} k {} lda {} ldb {} ldc {}", m, n, k, lda, ldb, ldc);
  if (m == 0 || n == 0) return;
  blas_single_threaded();
  if (k == 0) {  // c = beta · c (BLAS does this too, but some builds reject k == 0 with lda checks)
    for (int64_t i = 0; i < m; ++i)
      for (int64_t j = 0; j < n; ++j) c[i * ldc + j] = beta == 0.0f ? 0.0f : beta * c[i * ldc + j];
    return;
  }
  cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, int(m), int(n), int(k),
              alpha, a, int(std::max<int64_t>(lda, 1)), b, int(std::max<int64_t>(ldb, 1)), beta, c, int(ldc));
}

void gemm_f32(bool ta, bool tb, int64_t m, int64_t n, int64_t k, float alpha, const float* a, int64_t lda,
              const float* b, int64_t ldb, float beta, float* c, int64_t ldc) {
  blas_single_threaded();
  const int64_t maxt = omp_get_max_threads();
  if (maxt <= 1 || m * n * k < kParallelMacs || std::max(m, n) < 32 || omp_in_parallel()) {
    gemm_f32_serial(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
    return;
  }
  if (n >= 64 * maxt || n >= m) {
    // Column chunks of c, handed out dynamically.
    const int64_t cs = gemm_chunk(n, maxt, 32), nc = (n + cs - 1) / cs;
#pragma omp parallel for num_threads(int(std::min(maxt, nc))) schedule(dynamic, 1)
    for (int64_t t = 0; t < nc; ++t) {
      const int64_t j0 = t * cs, j1 = std::min(n, j0 + cs);
      gemm_f32_serial(ta, tb, m, j1 - j0, k, alpha, a, lda, tb ? b + j0 * ldb : b + j0, ldb, beta, c + j0, ldc);
    }
  } else {
    // Row chunks of c.
    const int64_t cs = gemm_chunk(m, maxt, 32), nc = (m + cs - 1) / cs;
#pragma omp parallel for num_threads(int(std::min(maxt, nc))) schedule(dynamic, 1)
    for (int64_t t = 0; t < nc; ++t) {
      const int64_t i0 = t * cs, i1 = std::min(m, i0 + cs);
      gemm_f32_serial(ta, tb, i1 - i0, n, k, alpha, ta ? a + i0 : a + i0 * lda, lda, b, ldb, beta, c + i0 * ldc, ldc);
    }
  }
}

}  // namespace lora::cpu
