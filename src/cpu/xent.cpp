// xent_fwd_bwd: softmax cross-entropy fused with its gradient over one chunk of rows (ops.h). The model
// computes the LM head one chunk of rows at a time, so only a chunk's logits (rows, V) live at once;
// this turns them into the loss and, in place, into dlogits = (softmax - onehot) · mask · dscale.
// Per row: max, Σ exp (accumulated in double), loss = logsumexp - logit[target]. Rows with mask 0 give
// zero loss and zero gradient. OpenMP over rows; the caller sums row_loss.
#include <cmath>
#include <string>

#include "cpu/kernels.h"

namespace lora::cpu {

void xent_fwd_bwd(Tensor& logits, const int32_t* targets, const float* mask, float dscale, bool grad, float* row_loss) {
  LORA_CHECK(logits.dtype == DTYPE_F32 && logits.is_contiguous(), "xent: logits must be contiguous f32");
  const int64_t V = logits.dim(-1), n = tensor_rows(logits);
  for (int64_t i = 0; i < n; ++i)
    if (mask[i] != 0.0f && (targets[i] < 0 || targets[i] >= V))
      fail_input("batch targets",
                 "target id " + std::to_string(targets[i]) + " is outside the vocabulary [0, " + std::to_string(V) + ")",
                 "the data must be tokenized with this model's tokenizer");
  float* L = logits.f32();
#pragma omp parallel for schedule(static) if (n * V >= (int64_t(1) << 15))
  for (int64_t i = 0; i < n; ++i) {
    float* row = L + i * V;
    const float mk = mask[i];
    if (mk == 0.0f) {
      row_loss[i] = 0.0f;
      if (grad)
        for (int64_t j = 0; j < V; ++j) row[j] = 0.0f;
      continue;
    }
    float mx = -INFINITY;
    for (int64_t j = 0; j < V; ++j) mx = std::max(mx, row[j]);
    double sum = 0.0;
#pragma omp simd reduction(+ : sum)
    for (int64_t j = 0; j < V; ++j) sum += double(std::exp(row[j] - mx));
    const double lse = double(mx) + std::log(sum);
    const int64_t tgt = targets[i];
    row_loss[i] = float(double(mk) * (lse - double(row[tgt])));
    if (grad) {
      const float c = mk * dscale;
      const float lsef = float(lse);
#pragma omp simd
      for (int64_t j = 0; j < V; ++j) row[j] = std::exp(row[j] - lsef) * c;
      row[tgt] -= c;
    }
  }
}

}  // namespace lora::cpu
