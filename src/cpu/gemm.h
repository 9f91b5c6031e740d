// The one place the CPU backend calls BLAS (only gemm.cpp includes cblas.h).
//
// Threading: OpenBLAS (Debian's pthread build) is pinned to one thread and we split GEMMs over OpenMP
// threads ourselves. Mixing OpenBLAS's own thread pool with our OpenMP loops oversubscribes the cores
// (OpenMP threads spin after each parallel region while OpenBLAS's threads want the same cores); with
// one threading runtime the ops and the GEMMs take turns cleanly.
#pragma once
#include <cstdint>

namespace lora::cpu {

// c (m, n) = a (m, k) · b (n, k)ᵀ, all f32 row-major with leading dimensions lda, ldb, ldc. Parallel
// over blocks of n (OpenMP). Must not be called from inside an OpenMP parallel region.
void gemm_nt_f32(int64_t m, int64_t n, int64_t k, const float* a, int64_t lda, const float* b, int64_t ldb,
                 float* c, int64_t ldc);
// The same on the calling thread only (for callers that parallelize themselves).
void gemm_nt_f32_serial(int64_t m, int64_t n, int64_t k, const float* a, int64_t lda, const float* b,
                        int64_t ldb, float* c, int64_t ldc);

// The general form: c (m, n) = alpha · op(a) · op(b) + beta · c, op(a) = aᵀ when ta (a stored (k, m)),
// op(b) = bᵀ when tb (b stored (n, k)). The parallel one splits over n when n is wide, else over m,
// so each thread owns disjoint columns/rows of c (beta = 1 accumulation is race-free).
void gemm_f32(bool ta, bool tb, int64_t m, int64_t n, int64_t k, float alpha, const float* a, int64_t lda,
              const float* b, int64_t ldb, float beta, float* c, int64_t ldc);
void gemm_f32_serial(bool ta, bool tb, int64_t m, int64_t n, int64_t k, float alpha, const float* a, int64_t lda,
                     const float* b, int64_t ldb, float beta, float* c, int64_t ldc);

}  // namespace lora::cpu
