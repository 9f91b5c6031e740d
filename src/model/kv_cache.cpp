// KV cache allocation (model/llama.h: KVCache). f32, (n_ctx, KV, D) per layer for K and for V. The
// buffers are not zeroed: attention reads only positions already written, and untouched pages of a
// large context are never committed by the OS. On a GPU the cache lives in device memory.
#include <string>

#include "core/device_mem.h"
#include "core/error.h"
#include "model/llama.h"

namespace lora {

KVCache kv_cache_make(const ModelConfig& cfg, int64_t n_ctx, Device dev) {
  if (n_ctx <= 0)
    fail_input("kv cache", "context length must be positive, got " + std::to_string(n_ctx), "check --max-kv-size");
  LORA_CHECK(cfg.n_layers > 0 && cfg.n_kv_heads > 0 && cfg.head_dim > 0, "kv cache for an empty config");
  KVCache c;
  c.n_ctx = n_ctx;
  c.pos = 0;
  c.k.reserve(size_t(cfg.n_layers));
  c.v.reserve(size_t(cfg.n_layers));
  for (int64_t l = 0; l < cfg.n_layers; ++l) {
    c.k.push_back(tensor_alloc_on(dev, DTYPE_F32, {n_ctx, cfg.n_kv_heads, cfg.head_dim}));  // (S, KV, D)
    c.v.push_back(tensor_alloc_on(dev, DTYPE_F32, {n_ctx, cfg.n_kv_heads, cfg.head_dim}));  // (S, KV, D)
  }
  return c;
}

}  // namespace lora
