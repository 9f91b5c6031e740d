// Backend-neutral helpers of the op API: the RoPE cos/sin table (ops.h: RopeTable), shared by every
// backend. Frequencies follow Hugging Face transformers (modeling_rope_utils.py): the default
// inv_freq, "linear" scaling (inv_freq / factor) and Llama 3 scaling (_compute_llama3_parameters).
// Angles are formed in f32 as HF does (pos * inv_freq in float32), then cos/sin are taken in double.
#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "core/error.h"
#include "ops/ops.h"

namespace lora {

namespace {

// Llama 3 rope scaling: long wavelengths are divided by `factor`, short ones kept, the band between
// low_freq_wavelen and high_freq_wavelen interpolated smoothly.
double rope_llama3_scale(double inv_freq, const RopeScaling& s) {
  const double pi = 3.14159265358979323846;
  const double old_ctx = double(s.original_max_position);
  const double low_freq_wavelen = old_ctx / s.low_freq_factor;
  const double high_freq_wavelen = old_ctx / s.high_freq_factor;
  const double wavelen = 2.0 * pi / inv_freq;
  if (wavelen < high_freq_wavelen) return inv_freq;            // high frequency: unchanged
  if (wavelen > low_freq_wavelen) return inv_freq / s.factor;  // low frequency: scaled
  const double smooth = (old_ctx / wavelen - s.low_freq_factor) / (s.high_freq_factor - s.low_freq_factor);
  return (1.0 - smooth) * inv_freq / s.factor + smooth * inv_freq;
}

}  // namespace

RopeTable rope_table_make(int64_t head_dim, int64_t max_pos, double theta, const RopeScaling* scaling) {
  LORA_CHECK(head_dim > 0 && head_dim % 2 == 0, "rope head_dim {} must be even", head_dim);
  LORA_CHECK(max_pos > 0, "rope max_pos {} must be positive", max_pos);
  RopeTable t;
  t.head_dim = head_dim;
  t.max_pos = max_pos;
  const int64_t half = head_dim / 2;
  t.inv_freq.resize(size_t(half));
  for (int64_t i = 0; i < half; ++i) {
    double f = 1.0 / std::pow(theta, double(2 * i) / double(head_dim));
    if (scaling && scaling->type == "llama3") {
      LORA_CHECK(scaling->factor > 0 && scaling->high_freq_factor != scaling->low_freq_factor,
                 "bad llama3 rope scaling");
      f = rope_llama3_scale(f, *scaling);
    } else if (scaling && scaling->type == "linear") {
      LORA_CHECK(scaling->factor > 0, "bad linear rope scaling factor {}", scaling->factor);
      f = f / scaling->factor;
    } else if (scaling && !scaling->type.empty() && scaling->type != "default") {
      fail_input("rope_scaling", "unsupported rope scaling type '" + scaling->type + "'",
                 "supported: llama3, linear (or none)");
    }
    t.inv_freq[size_t(i)] = float(f);
  }
  t.cos.resize(size_t(max_pos * half));
  t.sin.resize(size_t(max_pos * half));
  for (int64_t p = 0; p < max_pos; ++p) {
    for (int64_t i = 0; i < half; ++i) {
      const float angle = float(p) * t.inv_freq[size_t(i)];  // f32 product, as HF
      t.cos[size_t(p * half + i)] = float(std::cos(double(angle)));
      t.sin[size_t(p * half + i)] = float(std::sin(double(angle)));
    }
  }
  return t;
}

}  // namespace lora

namespace lora {

void token_ids_check(const int32_t* ids, int64_t n, int64_t V) {
  for (int64_t i = 0; i < n; ++i)
    if (ids[i] < 0 || ids[i] >= V)
      fail_input("token ids",
                 "token id " + std::to_string(ids[i]) + " at index " + std::to_string(i) +
                     " is outside the vocabulary [0, " + std::to_string(V) + ")",
                 "token ids must come from this model's tokenizer");
}

void Ops::attention_decode(const Tensor& q, const Tensor& k, const Tensor& v, const int32_t* n_keys, Tensor& out) {
  LORA_CHECK(device() == DEVICE_CPU, "attention_decode: the default is for host backends");
  attention_fwd(q, k, v, int64_t(*n_keys) - 1, out);
}

void Ops::kv_store(Tensor& cache, const Tensor& src, const int32_t* pos) {
  LORA_CHECK(device() == DEVICE_CPU, "kv_store: the default is for host backends");
  const int64_t row = cache.numel() / cache.dim(0), n = src.numel() / row, S = cache.dim(0);
  LORA_CHECK(src.numel() == n * row && cache.dtype == src.dtype, "kv_store: src {} for cache {}", src.shape_str(),
             cache.shape_str());
  const size_t bytes = size_t(dtype_nbytes(cache.dtype, row));
  for (int64_t i = 0; i < n; ++i) {
    LORA_CHECK(pos[i] >= 0 && pos[i] < S, "kv_store: position {} outside the cache of {}", pos[i], S);
    std::memcpy(static_cast<char*>(cache.data) + size_t(pos[i]) * bytes, static_cast<const char*>(src.data) + size_t(i) * bytes,
                bytes);
  }
}

double Ops::xent_fwd_bwd(Tensor& logits, const int32_t* targets, const float* mask, float dscale, bool grad) {
  LORA_CHECK(device() == DEVICE_CPU, "the summing xent_fwd_bwd is for host backends");
  const int64_t V = logits.dim(-1), n = V ? logits.numel() / V : 0;
  std::vector<float> rows(static_cast<size_t>(n));
  xent_fwd_bwd(logits, targets, mask, &dscale, grad, rows.data());
  double total = 0;
  for (float r : rows) total += double(r);
  return total;
}

}  // namespace lora
