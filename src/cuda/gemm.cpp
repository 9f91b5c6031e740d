// cuBLASLt GEMM with row-major semantics (contract in gemm.h), the device's GEMM context (handle,
// workspace, plan cache) and the failure path of LORA_CUBLAS_CHECK. The only file that includes
// cublasLt.h.
//
// Row-major to cuBLAS's column-major: a row-major (R, S) matrix with row stride ld is the column-major
// (S, R) matrix with leading dimension ld, i.e. its transpose. So we ask cuBLASLt for
//   Cᵀ (N, M) = op(B)ᵀ (N, K) · op(A)ᵀ (K, M)
// passing our B as cuBLAS's first operand and our A as its second; no data moves.
#include <cublasLt.h>
#include <fmt/format.h>

#include <array>
#include <map>

#include "core/error.h"
#include "cuda/check.h"
#include "cuda/gemm.h"

namespace lora {

void cublas_fail(int status, const char* expr, const char* file, int line) {
  const auto st = static_cast<cublasStatus_t>(status);
  throw InternalError(fmt::format("cuBLAS error {} ({}) in {} at {}:{}", cublasLtGetStatusName(st),
                                  cublasLtGetStatusString(st), expr, file, line));
}

namespace {

// 32 MiB: NVIDIA's recommendation for Hopper (Ampere needs less); allocated once per device.
constexpr size_t kWorkspaceBytes = size_t(32) << 20;
// More distinct shapes than a model has: past this the cache is a leak, so it starts over.
constexpr size_t kMaxPlans = 1024;

// (a/b type, c type, trans_a, trans_b, M, N, K, lda, ldb, ldc, align a, align b, align c)
using GemmKey = std::array<int64_t, 13>;

struct GemmPlan {
  cublasLtMatmulDesc_t desc = nullptr;
  cublasLtMatrixLayout_t la = nullptr, lb = nullptr, lc = nullptr;  // cuBLAS's A (= our B), B (= our A), C/D
  cublasLtMatmulAlgo_t algo{};
  GemmPlan() = default;
  GemmPlan(const GemmPlan&) = delete;
  GemmPlan& operator=(const GemmPlan&) = delete;
  ~GemmPlan() {
    if (lc) (void)cublasLtMatrixLayoutDestroy(lc);
    if (lb) (void)cublasLtMatrixLayoutDestroy(lb);
    if (la) (void)cublasLtMatrixLayoutDestroy(la);
    if (desc) (void)cublasLtMatmulDescDestroy(desc);
  }
};

// Largest power of two (up to 256) dividing the address: cuBLASLt's heuristic must know it, or it
// may pick a kernel that needs 16-byte-aligned operands.
int64_t pointer_alignment(const void* p) {
  const auto u = reinterpret_cast<uintptr_t>(p);
  int64_t a = 1;
  while (a < 256 && (u % uintptr_t(a * 2)) == 0) a *= 2;
  return a;
}

}  // namespace

struct GemmContext {
  cublasLtHandle_t handle = nullptr;
  void* workspace = nullptr;
  size_t workspace_bytes = 0;
  std::map<GemmKey, std::unique_ptr<GemmPlan>> plans;
  ~GemmContext() {
    plans.clear();
    if (workspace) (void)cudaFree(workspace);
    if (handle) (void)cublasLtDestroy(handle);
  }
};

void GemmContextDeleter::operator()(GemmContext* g) const { delete g; }

GemmContext* gemm_context_create(CudaDevice& dev) {
  cuda_device_use(dev);
  auto g = std::make_unique<GemmContext>();
  LORA_CUBLAS_CHECK(cublasLtCreate(&g->handle));
  LORA_CUDA_CHECK(cudaMalloc(&g->workspace, kWorkspaceBytes));
  g->workspace_bytes = kWorkspaceBytes;
  return g.release();
}

int64_t gemm_plan_count(const CudaDevice& dev) { return dev.gemm ? int64_t(dev.gemm->plans.size()) : 0; }

namespace {

GemmPlan& gemm_plan_get(GemmContext& g, cudaDataType_t ab_type, cudaDataType_t c_type, bool trans_a,
                        bool trans_b, int64_t M, int64_t N, int64_t K, const void* a, int64_t lda,
                        const void* b, int64_t ldb, const void* c, int64_t ldc) {
  const int64_t align_a = pointer_alignment(a), align_b = pointer_alignment(b), align_c = pointer_alignment(c);
  const GemmKey key{int64_t(ab_type), int64_t(c_type), trans_a, trans_b, M, N, K, lda, ldb, ldc,
                    align_a, align_b, align_c};
  if (auto it = g.plans.find(key); it != g.plans.end()) return *it->second;
  if (g.plans.size() >= kMaxPlans) g.plans.clear();

  auto p = std::make_unique<GemmPlan>();
  LORA_CUBLAS_CHECK(cublasLtMatmulDescCreate(&p->desc, CUBLAS_COMPUTE_32F, CUDA_R_32F));
  const cublasOperation_t op_first = trans_b ? CUBLAS_OP_T : CUBLAS_OP_N;   // cuBLAS's A = our B
  const cublasOperation_t op_second = trans_a ? CUBLAS_OP_T : CUBLAS_OP_N;  // cuBLAS's B = our A
  LORA_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_TRANSA, &op_first,
                                                   sizeof(op_first)));
  LORA_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_TRANSB, &op_second,
                                                   sizeof(op_second)));
  // Column-major shapes as stored: our B is (K, N) row-major = (N, K) column-major, or (K, N) when
  // trans_b; our A is (M, K) row-major = (K, M) column-major, or (M, K) when trans_a; C is (N, M).
  LORA_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p->la, ab_type, uint64_t(trans_b ? K : N),
                                               uint64_t(trans_b ? N : K), ldb));
  LORA_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p->lb, ab_type, uint64_t(trans_a ? M : K),
                                               uint64_t(trans_a ? K : M), lda));
  LORA_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p->lc, c_type, uint64_t(N), uint64_t(M), ldc));

  cublasLtMatmulPreference_t pref = nullptr;
  LORA_CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&pref));
  const uint64_t ws = g.workspace_bytes;
  const uint32_t al_first = uint32_t(align_b), al_second = uint32_t(align_a), al_c = uint32_t(align_c);
  cublasLtMatmulHeuristicResult_t result{};
  int returned = 0;
  cublasStatus_t st = cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws,
                                                           sizeof(ws));
  if (st == CUBLAS_STATUS_SUCCESS)
    st = cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &al_first,
                                              sizeof(al_first));
  if (st == CUBLAS_STATUS_SUCCESS)
    st = cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &al_second,
                                              sizeof(al_second));
  if (st == CUBLAS_STATUS_SUCCESS)
    st = cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &al_c,
                                              sizeof(al_c));
  if (st == CUBLAS_STATUS_SUCCESS)
    st = cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &al_c,
                                              sizeof(al_c));
  if (st == CUBLAS_STATUS_SUCCESS)
    st = cublasLtMatmulAlgoGetHeuristic(g.handle, p->desc, p->la, p->lb, p->lc, p->lc, pref, 1, &result,
                                        &returned);
  (void)cublasLtMatmulPreferenceDestroy(pref);
  LORA_CUBLAS_CHECK(st);
  LORA_CHECK(returned > 0, "cuBLASLt has no algorithm for M={} N={} K={} trans_a={} trans_b={} lda={} ldb={} ldc={}",
             M, N, K, trans_a, trans_b, lda, ldb, ldc);
  p->algo = result.algo;
  return *g.plans.emplace(key, std::move(p)).first->second;
}

void gemm_run(CudaDevice& dev, cudaDataType_t ab_type, cudaDataType_t c_type, bool trans_a, bool trans_b,
              int64_t M, int64_t N, int64_t K, float alpha, const void* a, int64_t lda, const void* b,
              int64_t ldb, float beta, void* c, int64_t ldc) {
  LORA_CHECK(dev.gemm != nullptr, "CUDA device {} has no GEMM context", dev.index);
  LORA_CHECK(M >= 0 && N >= 0 && K > 0, "gemm: bad shape M={} N={} K={}", M, N, K);
  LORA_CHECK(lda >= (trans_a ? M : K) && ldb >= (trans_b ? K : N) && ldc >= N,
             "gemm: leading dimension too small (M={} N={} K={} lda={} ldb={} ldc={})", M, N, K, lda, ldb, ldc);
  if (M == 0 || N == 0) return;
  cuda_device_use(dev);
  GemmContext& g = *dev.gemm;
  GemmPlan& p = gemm_plan_get(g, ab_type, c_type, trans_a, trans_b, M, N, K, a, lda, b, ldb, c, ldc);
  LORA_CUBLAS_CHECK(cublasLtMatmul(g.handle, p.desc, &alpha, b, p.la, a, p.lb, &beta, c, p.lc, c, p.lc,
                                   &p.algo, g.workspace, g.workspace_bytes, dev.stream));
}

}  // namespace

void gemm_bf16(CudaDevice& dev, bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha,
               const void* a, int64_t lda, const void* b, int64_t ldb, float beta, void* c, DType c_type,
               int64_t ldc) {
  LORA_CHECK(c_type == DTYPE_F32 || c_type == DTYPE_BF16, "gemm_bf16: output must be f32 or bf16, got {}",
             dtype_name(c_type));
  gemm_run(dev, CUDA_R_16BF, c_type == DTYPE_F32 ? CUDA_R_32F : CUDA_R_16BF, trans_a, trans_b, M, N, K,
           alpha, a, lda, b, ldb, beta, c, ldc);
}

void gemm_f32(CudaDevice& dev, bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha,
              const float* a, int64_t lda, const float* b, int64_t ldb, float beta, float* c, int64_t ldc) {
  // CUBLAS_COMPUTE_32F with f32 operands is IEEE fp32; TF32 would need CUBLAS_COMPUTE_32F_FAST_TF32.
  gemm_run(dev, CUDA_R_32F, CUDA_R_32F, trans_a, trans_b, M, N, K, alpha, a, lda, b, ldb, beta, c, ldc);
}

}  // namespace lora
