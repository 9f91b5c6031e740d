// The LoRA/DoRA pieces of the CUDA linear layer (train_kernels.h): dropout with core/rng.h's Philox
// stream, the DoRA row norms, the DoRA rescale forward and backward, bias add, deterministic column sums
// and y += alpha·x. The GEMMs around them are cuBLASLt's (gemm.h). Element-wise formulas use explicitly
// rounded intrinsics where the CPU rounds each operation (nvcc would otherwise fuse a * b + c), so those
// outputs equal the CPU's bit for bit; column sums are double sums in a fixed order (two kernels:
// per-slice partials, then the slices in order), so they repeat exactly from run to run.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>

#include "cuda/check.h"
#include "cuda/train_kernels.h"

namespace lora {

namespace {

constexpr int kThreads = 256;
constexpr int64_t kMaxBlocks = 65536;  // grid-stride beyond this

dim3 grid_for(int64_t n) {
  const int64_t b = (n + kThreads - 1) / kThreads;
  return dim3(static_cast<unsigned>(b < kMaxBlocks ? b : kMaxBlocks));
}

void check_size(bool ok, const char* what) {
  if (!ok) cuda_fail(cudaErrorInvalidValue, what, __FILE__, __LINE__);
}

__device__ __forceinline__ float to_f32(float v) { return v; }
__device__ __forceinline__ float to_f32(__nv_bfloat16 v) { return __bfloat162float(v); }
__device__ __forceinline__ float to_f32(__half v) { return __half2float(v); }

// ---- dropout ----

// core/rng.h's philox4x32 (Philox-4x32-10), word for word.
__device__ __forceinline__ uint4 philox4x32(uint64_t key, uint64_t counter_hi, uint64_t counter_lo) {
  uint32_t c0 = uint32_t(counter_lo), c1 = uint32_t(counter_lo >> 32);
  uint32_t c2 = uint32_t(counter_hi), c3 = uint32_t(counter_hi >> 32);
  uint32_t k0 = uint32_t(key), k1 = uint32_t(key >> 32);
#pragma unroll
  for (int r = 0; r < 10; ++r) {
    const uint32_t hi0 = __umulhi(0xD2511F53u, c0), lo0 = 0xD2511F53u * c0;
    const uint32_t hi1 = __umulhi(0xCD9E8D57u, c2), lo1 = 0xCD9E8D57u * c2;
    const uint32_t n0 = hi1 ^ c1 ^ k0;
    const uint32_t n1 = lo1;
    const uint32_t n2 = hi0 ^ c3 ^ k1;
    const uint32_t n3 = lo0;
    c0 = n0;
    c1 = n1;
    c2 = n2;
    c3 = n3;
    k0 += 0x9E3779B9u;
    k1 += 0xBB67AE85u;
  }
  return make_uint4(c0, c1, c2, c3);
}

// lora_dropout_keep: u = (word >> 8) · 2^-24 (exact in f32), kept when u >= p.
__device__ __forceinline__ float dropout_one(float x, uint32_t word, float p, float keep_scale) {
  const float u = float(word >> 8) * (1.0f / 16777216.0f);
  return u >= p ? __fmul_rn(x, keep_scale) : 0.0f;
}

// One thread per group of 4 elements (one Philox call). out may alias x: each element is read, then
// written, by the same thread.
__global__ void dropout_kernel(const float* x, float* out, int64_t n, float p, float keep_scale, uint64_t key,
                               uint64_t stream_id) {
  const int64_t groups = (n + 3) / 4;
  for (int64_t g = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; g < groups; g += int64_t(gridDim.x) * blockDim.x) {
    const uint4 w = philox4x32(key, stream_id, uint64_t(g));
    const int64_t i = 4 * g;
    out[i] = dropout_one(x[i], w.x, p, keep_scale);
    if (i + 1 < n) out[i + 1] = dropout_one(x[i + 1], w.y, p, keep_scale);
    if (i + 2 < n) out[i + 2] = dropout_one(x[i + 2], w.z, p, keep_scale);
    if (i + 3 < n) out[i + 3] = dropout_one(x[i + 3], w.w, p, keep_scale);
  }
}

// ---- DoRA row norms ----

constexpr int kDenomRows = 4;          // output rows per block (each A row read once serves 4 of them)
constexpr int64_t kDenomMaxRank = 2048;  // kDenomRows · r floats of B: 32 KiB of shared memory at most

__device__ double block_sum_d(double v, double* sh) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  const int warp = int(threadIdx.x) / 32, lane = int(threadIdx.x) % 32;
  if (lane == 0) sh[warp] = v;
  __syncthreads();
  v = lane < int(blockDim.x) / 32 ? sh[lane] : 0.0;
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  __syncthreads();
  return v;
}

// Block: rows o0 .. o0+kDenomRows-1 of W. bs (kDenomRows, r) holds those columns of B. Thread j (strided)
// forms v = W[o, j] + scale · Σ_k A[j, k] · B[k, o] in f32 and sums v² in double.
template <class W>
__global__ void dora_denom_kernel(const W* __restrict__ w, const float* __restrict__ a, const float* __restrict__ b,
                                  float scale, int64_t out, int64_t in, int64_t r, float* __restrict__ denom) {
  extern __shared__ float bs[];
  __shared__ double sh[32];
  const int64_t o0 = int64_t(blockIdx.x) * kDenomRows;
  const int nq = out - o0 < kDenomRows ? int(out - o0) : kDenomRows;
  for (int64_t e = threadIdx.x; e < kDenomRows * r; e += blockDim.x) {
    const int64_t q = e / r, k = e % r;
    bs[e] = q < nq ? b[k * out + o0 + q] : 0.0f;
  }
  __syncthreads();
  double ss[kDenomRows];
#pragma unroll
  for (int q = 0; q < kDenomRows; ++q) ss[q] = 0.0;
  for (int64_t j = threadIdx.x; j < in; j += blockDim.x) {
    float acc[kDenomRows];
#pragma unroll
    for (int q = 0; q < kDenomRows; ++q) acc[q] = 0.0f;
    const float* aj = a + j * r;  // (r)
    for (int64_t k = 0; k < r; ++k) {
      const float av = aj[k];
#pragma unroll
      for (int q = 0; q < kDenomRows; ++q) acc[q] = fmaf(av, bs[q * r + k], acc[q]);
    }
#pragma unroll
    for (int q = 0; q < kDenomRows; ++q)
      if (q < nq) {
        const float v = fmaf(scale, acc[q], to_f32(w[(o0 + q) * in + j]));
        ss[q] += double(v) * double(v);
      }
  }
#pragma unroll
  for (int q = 0; q < kDenomRows; ++q) {
    const double total = block_sum_d(ss[q], sh);  // every thread takes part (nq is the same block-wide)
    if (threadIdx.x == 0 && q < nq) denom[o0 + q] = float(sqrt(total));
  }
}

// ---- element-wise over (N, out) ----

// y = ypre · (m / denom) (+ bias). y may alias ypre.
template <class B>
__global__ void dora_scale_kernel(const float* ypre, const float* __restrict__ m, const float* __restrict__ denom,
                                  const B* __restrict__ bias, int64_t total, int64_t out, float* y) {
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < total; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t o = i % out;
    float v = __fmul_rn(ypre[i], __fdiv_rn(m[o], denom[o]));
    if (bias) v = __fadd_rn(v, to_f32(bias[o]));
    y[i] = v;
  }
}

// g = dy · (m / denom). g may alias dy.
__global__ void dora_grad_kernel(const float* dy, const float* __restrict__ m, const float* __restrict__ denom,
                                 int64_t total, int64_t out, float* g) {
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < total; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t o = i % out;
    g[i] = __fmul_rn(dy[i], __fdiv_rn(m[o], denom[o]));
  }
}

template <class B>
__global__ void bias_add_kernel(float* __restrict__ y, const B* __restrict__ bias, int64_t total, int64_t out) {
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < total; i += int64_t(gridDim.x) * blockDim.x)
    y[i] = __fadd_rn(y[i], to_f32(bias[i % out]));
}

__global__ void scale_add_kernel(float* __restrict__ y, const float* __restrict__ x, float alpha, int64_t n) {
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    y[i] = __fadd_rn(y[i], __fmul_rn(alpha, x[i]));
}

// ---- deterministic column sums ----
// Stage 1, block (32, 8), grid (column blocks, row slices): partial[s, o] = Σ over slice s's rows of
// a[r, o] (· b[r, o] when b is non-null) in double, thread row ty summing rows ty, ty+8, ... of the
// slice, then the 8 in order. Stage 2: acc[o] += float(Σ_s partial[s, o] (/ den[o])), slices in order.
// The split depends only on (N, out), so the result repeats exactly.

constexpr int64_t kSliceMinRows = 256;
constexpr int64_t kMaxSlices = 64;

__global__ void col_partial_kernel(const float* __restrict__ a, const float* __restrict__ b, int64_t N, int64_t out,
                                   int64_t slice_rows, double* __restrict__ partial) {
  __shared__ double part[8][33];
  const int64_t o = int64_t(blockIdx.x) * 32 + threadIdx.x;
  const int64_t r0 = int64_t(blockIdx.y) * slice_rows;
  const int64_t r1 = r0 + slice_rows < N ? r0 + slice_rows : N;
  double s = 0.0;
  if (o < out)
    for (int64_t r = r0 + threadIdx.y; r < r1; r += 8) {
      double t = double(a[r * out + o]);
      if (b) t *= double(b[r * out + o]);  // exact: a product of two floats fits a double
      s += t;
    }
  part[threadIdx.y][threadIdx.x] = s;
  __syncthreads();
  if (threadIdx.y == 0 && o < out) {
    double t = 0.0;
    for (int k = 0; k < 8; ++k) t += part[k][threadIdx.x];
    partial[int64_t(blockIdx.y) * out + o] = t;
  }
}

__global__ void col_final_kernel(const double* __restrict__ partial, int64_t slices, int64_t out,
                                 const float* __restrict__ den, float* __restrict__ acc) {
  const int64_t o = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (o >= out) return;
  double t = 0.0;
  for (int64_t s = 0; s < slices; ++s) t += partial[s * out + o];
  if (den) t = t / double(den[o]);
  acc[o] += float(t);
}

// acc (out) += float(Σ_rows a (⊙ b) (/ den)); scratch from cudaMallocAsync on the stream.
void col_sum(const float* a, const float* b, const float* den, int64_t N, int64_t out, float* acc, cudaStream_t stream) {
  const int64_t slice_rows0 = (N + kMaxSlices - 1) / kMaxSlices;
  const int64_t slice_rows = slice_rows0 > kSliceMinRows ? slice_rows0 : kSliceMinRows;
  const int64_t slices = (N + slice_rows - 1) / slice_rows;  // 1 .. kMaxSlices
  double* partial = nullptr;  // (slices, out)
  LORA_CUDA_CHECK(cudaMallocAsync(reinterpret_cast<void**>(&partial), size_t(slices * out) * sizeof(double), stream));
  const dim3 g1(static_cast<unsigned>((out + 31) / 32), static_cast<unsigned>(slices)), b1(32, 8);
  col_partial_kernel<<<g1, b1, 0, stream>>>(a, b, N, out, slice_rows, partial);
  cudaError_t err = cudaGetLastError();
  if (err == cudaSuccess) {
    col_final_kernel<<<static_cast<unsigned>((out + kThreads - 1) / kThreads), kThreads, 0, stream>>>(partial, slices,
                                                                                                      out, den, acc);
    err = cudaGetLastError();
  }
  const cudaError_t free_err = cudaFreeAsync(partial, stream);
  if (err == cudaSuccess) err = free_err;
  LORA_CUDA_CHECK(err);
}

bool plain_float(DType t) { return t == DTYPE_F32 || t == DTYPE_BF16 || t == DTYPE_F16; }

void check_rows(int64_t N, int64_t out, const char* what) {
  check_size(N >= 0 && out >= 0 && (out == 0 || N <= INT64_MAX / out), what);
}

}  // namespace

void cuda_lora_dropout(const float* x, float* out, int64_t n, float p, uint64_t key, uint64_t stream_id,
                       cudaStream_t stream) {
  check_size(n >= 0, "cuda_lora_dropout: negative size");
  check_size(p >= 0.0f && p < 1.0f, "cuda_lora_dropout: p outside [0, 1)");
  if (n == 0) return;
  check_size(x && out, "cuda_lora_dropout: null pointer");
  const float keep_scale = 1.0f / (1.0f - p);  // the CPU's dropout_apply, in f32
  dropout_kernel<<<grid_for((n + 3) / 4), kThreads, 0, stream>>>(x, out, n, p, keep_scale, key, stream_id);
  LORA_CUDA_CHECK(cudaGetLastError());
}

void cuda_dora_denom(const void* w, DType w_type, const float* a, const float* b, float scale, int64_t out, int64_t in,
                     int64_t r, float* denom, cudaStream_t stream) {
  check_size(out >= 0 && in >= 0 && r >= 1 && r <= kDenomMaxRank && out <= int64_t(0x7fffffff) * kDenomRows,
             "cuda_dora_denom: negative size, or rank outside [1, 2048]");
  check_size(plain_float(w_type), "cuda_dora_denom: weight dtype must be F32, BF16 or F16");
  if (out == 0) return;
  check_size(w && a && b && denom, "cuda_dora_denom: null pointer");
  const dim3 grid(static_cast<unsigned>((out + kDenomRows - 1) / kDenomRows));
  const size_t smem = size_t(kDenomRows * r) * sizeof(float);
  switch (w_type) {
    case DTYPE_F32:
      dora_denom_kernel<<<grid, kThreads, smem, stream>>>(static_cast<const float*>(w), a, b, scale, out, in, r, denom);
      break;
    case DTYPE_BF16:
      dora_denom_kernel<<<grid, kThreads, smem, stream>>>(static_cast<const __nv_bfloat16*>(w), a, b, scale, out, in,
                                                          r, denom);
      break;
    default:
      dora_denom_kernel<<<grid, kThreads, smem, stream>>>(static_cast<const __half*>(w), a, b, scale, out, in, r, denom);
      break;
  }
  LORA_CUDA_CHECK(cudaGetLastError());
}

void cuda_dora_scale_fwd(const float* ypre, const float* m, const float* denom, const void* bias, DType bias_type,
                         int64_t N, int64_t out, float* y, cudaStream_t stream) {
  check_rows(N, out, "cuda_dora_scale_fwd: negative or too large size");
  check_size(!bias || plain_float(bias_type), "cuda_dora_scale_fwd: bias dtype must be F32, BF16 or F16");
  const int64_t total = N * out;
  if (total == 0) return;
  check_size(ypre && m && denom && y, "cuda_dora_scale_fwd: null pointer");
  const dim3 grid = grid_for(total);
  if (!bias || bias_type == DTYPE_F32)
    dora_scale_kernel<<<grid, kThreads, 0, stream>>>(ypre, m, denom, static_cast<const float*>(bias), total, out, y);
  else if (bias_type == DTYPE_BF16)
    dora_scale_kernel<<<grid, kThreads, 0, stream>>>(ypre, m, denom, static_cast<const __nv_bfloat16*>(bias), total,
                                                     out, y);
  else
    dora_scale_kernel<<<grid, kThreads, 0, stream>>>(ypre, m, denom, static_cast<const __half*>(bias), total, out, y);
  LORA_CUDA_CHECK(cudaGetLastError());
}

void cuda_dora_bwd(const float* dy, const float* ypre, const float* m, const float* denom, int64_t N, int64_t out,
                   float* g, float* dm, cudaStream_t stream) {
  check_rows(N, out, "cuda_dora_bwd: negative or too large size");
  if (N == 0 || out == 0) return;
  check_size(dy && m && denom && (!dm || ypre), "cuda_dora_bwd: null pointer");
  if (dm) col_sum(dy, ypre, denom, N, out, dm, stream);  // first: g may overwrite dy
  if (g) {
    dora_grad_kernel<<<grid_for(N * out), kThreads, 0, stream>>>(dy, m, denom, N * out, out, g);
    LORA_CUDA_CHECK(cudaGetLastError());
  }
}

void cuda_bias_add(float* y, const void* bias, DType bias_type, int64_t N, int64_t out, cudaStream_t stream) {
  check_rows(N, out, "cuda_bias_add: negative or too large size");
  check_size(plain_float(bias_type), "cuda_bias_add: bias dtype must be F32, BF16 or F16");
  const int64_t total = N * out;
  if (total == 0) return;
  check_size(y && bias, "cuda_bias_add: null pointer");
  const dim3 grid = grid_for(total);
  switch (bias_type) {
    case DTYPE_F32:
      bias_add_kernel<<<grid, kThreads, 0, stream>>>(y, static_cast<const float*>(bias), total, out);
      break;
    case DTYPE_BF16:
      bias_add_kernel<<<grid, kThreads, 0, stream>>>(y, static_cast<const __nv_bfloat16*>(bias), total, out);
      break;
    default:
      bias_add_kernel<<<grid, kThreads, 0, stream>>>(y, static_cast<const __half*>(bias), total, out);
      break;
  }
  LORA_CUDA_CHECK(cudaGetLastError());
}

void cuda_col_sum_acc(const float* dy, int64_t N, int64_t out, float* acc, cudaStream_t stream) {
  check_rows(N, out, "cuda_col_sum_acc: negative or too large size");
  if (N == 0 || out == 0) return;
  check_size(dy && acc, "cuda_col_sum_acc: null pointer");
  col_sum(dy, nullptr, nullptr, N, out, acc, stream);
}

void cuda_scale_add(float* y, const float* x, float alpha, int64_t n, cudaStream_t stream) {
  check_size(n >= 0, "cuda_scale_add: negative size");
  if (n == 0) return;
  check_size(y && x, "cuda_scale_add: null pointer");
  scale_add_kernel<<<grid_for(n), kThreads, 0, stream>>>(y, x, alpha, n);
  LORA_CUDA_CHECK(cudaGetLastError());
}

}  // namespace lora
