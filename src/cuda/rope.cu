// cuda_rope_fwd / cuda_rope_bwd (kernels.h): rotate-half RoPE in place on x (n, nh, D), HF layout, with
// the RopeTable's f32 cos/sin tables (max_pos, D/2) on the device. For pair i in [0, D/2):
//   fwd: x[i] <- x[i] c - x[i + D/2] s,   x[i + D/2] <- x[i + D/2] c + x[i] s
//   bwd: the inverse (transposed) rotation, s -> -s.
// One block per token; its threads stride over the nh · D/2 pairs (each pair read and written by one
// thread, so in place is safe). Positions are checked on the host by the caller; one outside
// [0, max_pos) leaves its token unchanged rather than reading past the table.
#include "cuda/check.h"
#include "cuda/kernels.h"

namespace lora {

namespace {

__global__ void rope_kernel(float* __restrict__ x, const int32_t* __restrict__ pos, int64_t nh, int64_t D,
                            const float* __restrict__ cos_t, const float* __restrict__ sin_t, int64_t max_pos,
                            float sign) {
  const int64_t t = blockIdx.x, half = D / 2;
  const int32_t p = pos[t];
  if (p < 0 || int64_t(p) >= max_pos) return;
  const float* c = cos_t + int64_t(p) * half;
  const float* s = sin_t + int64_t(p) * half;
  float* xt = x + t * nh * D;
  for (int64_t k = threadIdx.x; k < nh * half; k += blockDim.x) {
    const int64_t h = k / half, i = k - h * half;
    float* v = xt + h * D;
    const float a = v[i], b = v[i + half], ci = c[i], si = sign * s[i];
    v[i] = a * ci - b * si;
    v[i + half] = b * ci + a * si;
  }
}

void launch(float* x, const int32_t* pos, int64_t n, int64_t nh, int64_t D, const float* cos_table,
            const float* sin_table, int64_t max_pos, float sign, cudaStream_t stream, const char* bad_size) {
  if (n < 0 || nh < 0 || D < 0 || max_pos < 0 || n > int64_t(0x7fffffff))
    cuda_fail(cudaErrorInvalidValue, bad_size, __FILE__, __LINE__);
  if (n == 0 || nh == 0 || D / 2 == 0) return;
  const int64_t pairs = nh * (D / 2);
  const dim3 grid(static_cast<unsigned>(n)), block(pairs >= 256 ? 256 : 32 * unsigned((pairs + 31) / 32));
  rope_kernel<<<grid, block, 0, stream>>>(x, pos, nh, D, cos_table, sin_table, max_pos, sign);
  LORA_CUDA_CHECK(cudaGetLastError());
}

}  // namespace

void cuda_rope_fwd(float* x, const int32_t* pos, int64_t n, int64_t nh, int64_t D, const float* cos_table,
                   const float* sin_table, int64_t max_pos, cudaStream_t stream) {
  launch(x, pos, n, nh, D, cos_table, sin_table, max_pos, 1.0f, stream, "cuda_rope_fwd: negative or too large size");
}

void cuda_rope_bwd(float* dx, const int32_t* pos, int64_t n, int64_t nh, int64_t D, const float* cos_table,
                   const float* sin_table, int64_t max_pos, cudaStream_t stream) {
  launch(dx, pos, n, nh, D, cos_table, sin_table, max_pos, -1.0f, stream, "cuda_rope_bwd: negative or too large size");
}

}  // namespace lora
