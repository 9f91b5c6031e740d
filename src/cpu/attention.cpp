// attention_fwd: causal attention with grouped KV heads (ops.h). Query t (at position pos0 + t) of head h
// reads kv head h / (H / KV) at positions 0 .. pos0 + t. Scores scaled by 1/sqrt(D); softmax in f32 with
// the max subtracted. OpenMP over (query, head) pairs; each computes its scores, then the weighted sum
// of V rows. Straightforward on purpose: at batch 1 the matvecs dominate, not this.
//
// attention_train_fwd runs the same per-(query, head) routine (attend_one, kept out of line so both
// callers execute identical code and a training forward reproduces inference bit for bit) over B rows
// of T tokens and also stores each query's log-sum-exp. attention_bwd recomputes the probabilities
// from q, k and that log-sum-exp with GEMMs, one block of query rows at a time, per (row, kv head):
//   P = exp(scale · Q Kᵀ - lse) (causal),  dV += Pᵀ dO,  dP = dO Vᵀ,
//   dS = P ⊙ (dP - rowsum(dO ⊙ O)) · scale,  dQ = dS K,  dK += dSᵀ Q.
// A (row, kv head) task owns its dK/dV slices, so the group's query heads accumulate without races.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "cpu/gemm.h"
#include "cpu/kernels.h"

namespace lora::cpu {

namespace {

// One query row against n_keys keys: writes the output row o (D) and returns the log-sum-exp of the
// scaled scores. scores has room for n_keys floats. K and V rows are kv_stride floats apart.
[[gnu::noinline]] float attend_one(const float* qv, const float* K, const float* Vv, int64_t kv_stride, int64_t D,
                                   int64_t n_keys, float scale, float* scores, float* o) {
  float mx = -INFINITY;
  for (int64_t j = 0; j < n_keys; ++j) {
    const float* kr = K + j * kv_stride;
    float s = 0.0f;
#pragma omp simd reduction(+ : s)
    for (int64_t d = 0; d < D; ++d) s += qv[d] * kr[d];
    s *= scale;
    scores[j] = s;
    mx = std::max(mx, s);
  }
  float sum = 0.0f;
  for (int64_t j = 0; j < n_keys; ++j) {
    const float e = std::exp(scores[j] - mx);
    scores[j] = e;
    sum += e;
  }
  const float inv = 1.0f / sum;
  std::fill(o, o + D, 0.0f);
  for (int64_t j = 0; j < n_keys; ++j) {
    const float p = scores[j] * inv;
    const float* vr = Vv + j * kv_stride;
#pragma omp simd
    for (int64_t d = 0; d < D; ++d) o[d] += p * vr[d];
  }
  return mx + std::log(sum);
}

void check_f32(std::initializer_list<const Tensor*> ts, const char* what) {
  for (const Tensor* t : ts)
    LORA_CHECK(t->dtype == DTYPE_F32 && t->is_contiguous(), "{}: tensors must be contiguous f32", what);
}

}  // namespace

void attention_fwd(const Tensor& q, const Tensor& k, const Tensor& v, int64_t pos0, Tensor& out) {
  LORA_CHECK(q.ndim == 3 && k.ndim == 3 && v.ndim == 3 && out.ndim == 3, "attention: q, k, v, out must be 3-D");
  check_f32({&q, &k, &v, &out}, "attention");
  const int64_t T = q.dim(0), H = q.dim(1), D = q.dim(2);
  const int64_t S = k.dim(0), KV = k.dim(1);
  LORA_CHECK(k.dim(2) == D && v.dim(0) == S && v.dim(1) == KV && v.dim(2) == D, "attention: q {} k {} v {}",
             q.shape_str(), k.shape_str(), v.shape_str());
  LORA_CHECK(out.dim(0) == T && out.dim(1) == H && out.dim(2) == D, "attention: out {} for q {}", out.shape_str(),
             q.shape_str());
  LORA_CHECK(KV > 0 && H % KV == 0, "attention: {} heads over {} kv heads", H, KV);
  LORA_CHECK(pos0 >= 0 && pos0 + T <= S, "attention: positions {}..{} beyond the {} cached", pos0, pos0 + T, S);
  const int64_t group = H / KV;
  const float scale = 1.0f / std::sqrt(float(D));
  const float* Q = q.f32();
  const float* K = k.f32();
  const float* Vv = v.f32();
  float* O = out.f32();
  const int64_t work = T * H * (pos0 + T) * D;
#pragma omp parallel for collapse(2) schedule(dynamic, 1) if (work >= (int64_t(1) << 15))
  for (int64_t t = 0; t < T; ++t) {
    for (int64_t h = 0; h < H; ++h) {
      // Per thread, sized to the cache length S (not the current position) so that a decode loop
      // grows it once, not every few tokens.
      thread_local std::vector<float> scores;
      if (int64_t(scores.size()) < S) scores.resize(size_t(S));
      const int64_t kvh = h / group;
      attend_one(Q + (t * H + h) * D, K + kvh * D, Vv + kvh * D, KV * D, D, pos0 + t + 1, scale, scores.data(),
                 O + (t * H + h) * D);
    }
  }
}

void attention_train_fwd(const Tensor& q, const Tensor& k, const Tensor& v, Tensor& out, Tensor& lse) {
  LORA_CHECK(q.ndim == 4 && k.ndim == 4 && v.ndim == 4 && out.ndim == 4, "attention_train: q, k, v, out must be 4-D");
  check_f32({&q, &k, &v, &out, &lse}, "attention_train");
  const int64_t B = q.dim(0), T = q.dim(1), H = q.dim(2), D = q.dim(3), KV = k.dim(2);
  LORA_CHECK(k.dim(0) == B && k.dim(1) == T && k.dim(3) == D && v.shape == k.shape && out.shape == q.shape &&
                 lse.numel() == B * T * H && KV > 0 && H % KV == 0,
             "attention_train: q {} k {} v {} out {} lse {}", q.shape_str(), k.shape_str(), v.shape_str(),
             out.shape_str(), lse.shape_str());
  const int64_t group = H / KV;
  const float scale = 1.0f / std::sqrt(float(D));
  const float* Q = q.f32();
  const float* K = k.f32();
  const float* Vv = v.f32();
  float* O = out.f32();
  float* L = lse.f32();
#pragma omp parallel for collapse(3) schedule(dynamic, 4) if (B * T * T * H * D >= (int64_t(1) << 15))
  for (int64_t b = 0; b < B; ++b)
    for (int64_t t = 0; t < T; ++t)
      for (int64_t h = 0; h < H; ++h) {
        thread_local std::vector<float> scores;
        if (int64_t(scores.size()) < T) scores.resize(size_t(T));
        const int64_t kvh = h / group;
        const int64_t row = b * T + t;
        L[row * H + h] = attend_one(Q + (row * H + h) * D, K + (b * T * KV + kvh) * D, Vv + (b * T * KV + kvh) * D,
                                    KV * D, D, t + 1, scale, scores.data(), O + (row * H + h) * D);
      }
}

void attention_bwd(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& out, const Tensor& lse,
                   const Tensor& dout, Tensor& dq, Tensor& dk, Tensor& dv) {
  check_f32({&q, &k, &v, &out, &lse, &dout, &dq, &dk, &dv}, "attention_bwd");
  LORA_CHECK(q.ndim == 4 && k.ndim == 4, "attention_bwd: q, k must be 4-D");
  const int64_t B = q.dim(0), T = q.dim(1), H = q.dim(2), D = q.dim(3), KV = k.dim(2);
  LORA_CHECK(k.dim(0) == B && k.dim(1) == T && k.dim(3) == D && v.numel() == k.numel() && out.numel() == q.numel() &&
                 dout.numel() == q.numel() && dq.numel() == q.numel() && dk.numel() == k.numel() &&
                 dv.numel() == k.numel() && lse.numel() == B * T * H && KV > 0 && H % KV == 0,
             "attention_bwd: q {} k {}", q.shape_str(), k.shape_str());
  const int64_t group = H / KV;
  const float scale = 1.0f / std::sqrt(float(D));
  const int64_t QS = H * D, KS = KV * D;  // row strides
  const float* Q = q.f32();
  const float* K = k.f32();
  const float* Vv = v.f32();
  const float* O = out.f32();
  const float* L = lse.f32();
  const float* DO = dout.f32();
  float* DQ = dq.f32();
  float* DK = dk.f32();
  float* DV = dv.f32();
  constexpr int64_t kBlock = 64;  // query rows per block: P and dP blocks are (64, T)
#pragma omp parallel for collapse(2) schedule(dynamic, 1)
  for (int64_t b = 0; b < B; ++b)
    for (int64_t g = 0; g < KV; ++g) {
      thread_local std::vector<float> P, dP, Dsum;
      if (int64_t(P.size()) < kBlock * T) {
        P.resize(size_t(kBlock * T));
        dP.resize(size_t(kBlock * T));
        Dsum.resize(size_t(kBlock));
      }
      const float* Kb = K + b * T * KS + g * D;
      const float* Vb = Vv + b * T * KS + g * D;
      float* dKb = DK + b * T * KS + g * D;
      float* dVb = DV + b * T * KS + g * D;
      for (int64_t t = 0; t < T; ++t) {
        std::fill(dKb + t * KS, dKb + t * KS + D, 0.0f);
        std::fill(dVb + t * KS, dVb + t * KS + D, 0.0f);
      }
      for (int64_t h = g * group; h < (g + 1) * group; ++h) {
        for (int64_t t0 = 0; t0 < T; t0 += kBlock) {
          const int64_t tq = std::min(kBlock, T - t0), nk = t0 + tq;  // keys 0 .. nk-1 are visible
          const float* Qc = Q + (b * T + t0) * QS + h * D;
          const float* Oc = O + (b * T + t0) * QS + h * D;
          const float* dOc = DO + (b * T + t0) * QS + h * D;
          float* dQc = DQ + (b * T + t0) * QS + h * D;
          // P (tq, nk) = exp(scale · Qc Kᵀ - lse), zero above the diagonal.
          gemm_f32_serial(false, true, tq, nk, D, scale, Qc, QS, Kb, KS, 0.0f, P.data(), nk);
          for (int64_t i = 0; i < tq; ++i) {
            const float l = L[(b * T + t0 + i) * H + h];
            float* pr = P.data() + i * nk;
            const int64_t last = t0 + i;  // keys 0..last visible
            for (int64_t j = 0; j <= last; ++j) pr[j] = std::exp(pr[j] - l);
            for (int64_t j = last + 1; j < nk; ++j) pr[j] = 0.0f;
            double s = 0.0;
            for (int64_t d = 0; d < D; ++d) s += double(dOc[i * QS + d]) * double(Oc[i * QS + d]);
            Dsum[size_t(i)] = float(s);
          }
          // dV (nk, D) += Pᵀ dOc
          gemm_f32_serial(true, false, nk, D, tq, 1.0f, P.data(), nk, dOc, QS, 1.0f, dVb, KS);
          // dP (tq, nk) = dOc Vᵀ
          gemm_f32_serial(false, true, tq, nk, D, 1.0f, dOc, QS, Vb, KS, 0.0f, dP.data(), nk);
          // dS = P ⊙ (dP - Dsum) · scale, into dP
          for (int64_t i = 0; i < tq; ++i) {
            const float* pr = P.data() + i * nk;
            float* dr = dP.data() + i * nk;
            const float di = Dsum[size_t(i)];
#pragma omp simd
            for (int64_t j = 0; j < nk; ++j) dr[j] = pr[j] * (dr[j] - di) * scale;
          }
          // dQc (tq, D) = dS K ; dK (nk, D) += dSᵀ Qc
          gemm_f32_serial(false, false, tq, D, nk, 1.0f, dP.data(), nk, Kb, KS, 0.0f, dQc, QS);
          gemm_f32_serial(true, false, nk, D, tq, 1.0f, dP.data(), nk, Qc, QS, 1.0f, dKb, KS);
        }
      }
    }
}

}  // namespace lora::cpu
