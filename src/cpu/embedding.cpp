// embedding_fwd: out (N, C) = table[ids], table (V, C) in F32/BF16/F16 or quantized blocks (rows
// dequantized one at a time). An id outside [0, V) is user
// input (a prompt or a request's token ids) and comes back as lora::Error, never a read out of bounds.
#include <cstring>
#include <string>

#include "core/quant.h"
#include "cpu/kernels.h"

namespace lora::cpu {

void embedding_fwd(const int32_t* ids, int64_t n, const Tensor& table, Tensor& out) {
  LORA_CHECK(table.ndim == 2 && table.is_contiguous() && dtype_is_weight(table.dtype),
             "embedding: table must be a contiguous float (V, C), got {} {}", dtype_name(table.dtype),
             table.shape_str());
  const int64_t V = table.dim(0), C = table.dim(1);
  LORA_CHECK(out.dtype == DTYPE_F32 && out.is_contiguous() && out.numel() == n * C,
             "embedding: out {} for {} ids of width {}", out.shape_str(), n, C);
  token_ids_check(ids, n, V);
  const int64_t row_bytes = dtype_nbytes(table.dtype, C);
  for (int64_t i = 0; i < n; ++i)
    quant_dequantize_row(table.dtype, static_cast<const char*>(table.data) + ids[i] * row_bytes, out.f32() + i * C, C);
}

}  // namespace lora::cpu
