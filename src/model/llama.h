// The Llama forward pass for inference: one readable per-layer loop over the op API, with a KV cache.
// prefill: many tokens at once (GEMMs); decode: one token (matrix-vector products). The cache and
// scratch live on the backend's device (Model weights must be there too: model_to_device); tokens
// and logits cross to/from the host here.
#pragma once
#include <cstdint>
#include <vector>

#include "core/arena.h"
#include "model/model.h"
#include "ops/ops.h"

namespace lora {

// Per-layer K and V for positions [0, n_ctx): (n_ctx, KV, D) f32 each.
struct KVCache {
  int64_t n_ctx = 0;
  int64_t pos = 0;  // positions filled
  std::vector<OwnedTensor> k, v;
};
KVCache kv_cache_make(const ModelConfig& cfg, int64_t n_ctx, Device dev = DEVICE_CPU);

class LlamaSession {
 public:
  // n_ctx: KV cache length (defaults to cfg.max_pos); max_batch: most tokens per forward() call.
  LlamaSession(const Model& m, Ops& ops, int64_t n_ctx = 0, int64_t max_batch = 512);
  ~LlamaSession();
  LlamaSession(const LlamaSession&) = delete;
  LlamaSession& operator=(const LlamaSession&) = delete;

  // Runs tokens at positions cache().pos ... and appends them to the cache. Writes logits (n, V) for
  // every token when all_logits, else (V) for the last one. n may exceed max_batch (split internally).
  // lora::Error when the cache would overflow (message says how long the context is).
  void forward(const int32_t* tokens, int64_t n, float* logits, bool all_logits = false);
  // Drops cached positions >= pos (to rewind for chat or reuse a prefix).
  void truncate(int64_t pos);
  const KVCache& cache() const { return cache_; }
  int64_t n_ctx() const { return cache_.n_ctx; }
  const Model& model() const { return m_; }

 private:
  void forward_chunk(const int32_t* tokens, int64_t n, float* logits, bool all_logits);
  const Model& m_;
  Ops& ops_;
  KVCache cache_;
  RopeTable rope_;
  int64_t max_batch_;
  Arena scratch_;
  OwnedTensor logits_dev_;  // (max_batch, V) staging for logits on a GPU backend (undefined on the CPU)
  std::vector<int32_t> staging_;  // host side of the per-chunk upload
  int64_t decode_uses_ = 0;       // decode steps so far (recorded on the second)
  uint64_t decode_key_ = 0;       // the recording's key, dropped with the session
};

}  // namespace lora
