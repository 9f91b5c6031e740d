// The Llama forward pass for inference (model/llama.h): one readable per-layer loop over the op API,
// with K and V appended to the cache as they are produced (the k/v projections write straight into
// the cache rows, and RoPE rotates them in place there).
//
// Memory traffic per decoded token (batch 1, the case that sets tokens/s): every linear weight is read
// exactly once by a matrix-vector product, so the bytes moved are about
//     per layer: wq + wk + wv + wo + w_gate + w_up + w_down = ((2 + 2·KV/H)·C² + 3·C·F) weights
//   + lm_head: V·C weights (the same bytes as tok_embd when tied)
//   + one row of tok_embd (C values)
//   + the KV cache read by attention: 2 · L · pos · KV · D · 4 bytes (f32), growing with the position
//   + activations and norm weights: a few times C, F, V floats (kilobytes; they stay in cache).
// E.g. TinyLlama-1.1B with BF16 weights: ≈ 1.03 G weights · 2 B ≈ 2.1 GB per token, plus
// 2·22·4·64·4 B = 45 KB per cached position. Nothing else makes a pass over the weights, which is what
// makes decoding bandwidth-bound: tokens/s ≈ memory bandwidth / those bytes.
//
// Scratch for max_batch tokens is planned once in the constructor (an Arena); forward() allocates
// nothing.
#include "model/llama.h"

#include <algorithm>
#include <string>
#include <vector>

#include "core/device_mem.h"
#include "core/error.h"

namespace lora {

namespace {

const Tensor* bias_or_null(const Tensor& b) { return b.defined() ? &b : nullptr; }

}  // namespace

LlamaSession::LlamaSession(const Model& m, Ops& ops, int64_t n_ctx, int64_t max_batch)
    : m_(m), ops_(ops) {
  const ModelConfig& c = m.cfg;
  LORA_CHECK(int64_t(m.layers.size()) == c.n_layers, "model has {} layers, config says {}", m.layers.size(),
             c.n_layers);
  LORA_CHECK(c.n_kv_heads > 0 && c.n_heads % c.n_kv_heads == 0, "bad head counts {} / {}", c.n_heads, c.n_kv_heads);
  if (n_ctx <= 0) n_ctx = c.max_pos;
  const Device dev = ops.device();
  LORA_CHECK(m.tok_embd.device == dev, "model weights are not on the backend's device");
  cache_ = kv_cache_make(c, n_ctx, dev);
  rope_ = rope_table_make(c.head_dim, n_ctx, c.rope_theta, &c.rope_scaling);
  max_batch_ = std::clamp<int64_t>(max_batch, 1, n_ctx);
  const int64_t B = max_batch_;
  // x, xn, tmp (B, C); q, att (B, H*D); gate, up (B, F); k, v (B, KV*D); ids, pos (B) + n_keys;
  // 64-byte padding per allocation.
  const int64_t floats = B * (3 * c.dim + 2 * c.q_dim() + 2 * c.ffn_dim + 2 * c.kv_dim());
  scratch_ = Arena(size_t(floats + 2 * B + 1) * 4 + 16 * 64, dev);
  if (dev != DEVICE_CPU) logits_dev_ = tensor_alloc_on(dev, DTYPE_F32, {B, c.vocab});
}

void LlamaSession::forward(const int32_t* tokens, int64_t n, float* logits, bool all_logits) {
  if (n <= 0) fail_input("prompt", "is empty", "give at least one token");
  if (cache_.pos + n > cache_.n_ctx)
    fail_input("prompt",
               "prompt of " + std::to_string(cache_.pos + n) + " tokens does not fit the context of " +
                   std::to_string(cache_.n_ctx),
               "shorten the prompt or raise --max-kv-size (up to the model's context length)");
  const int64_t V = m_.cfg.vocab;
  for (int64_t off = 0; off < n; off += max_batch_) {
    const int64_t nb = std::min(max_batch_, n - off);
    const bool last = off + nb == n;
    float* out = all_logits ? logits + off * V : (last ? logits : nullptr);
    forward_chunk(tokens + off, nb, out, all_logits);
  }
}

void LlamaSession::truncate(int64_t pos) {
  LORA_CHECK(pos >= 0 && pos <= cache_.pos, "truncate to {} with {} positions cached", pos, cache_.pos);
  cache_.pos = pos;
}

// Runs n <= max_batch tokens at positions cache_.pos ... and advances the cache. logits == nullptr skips
// the head (a non-final chunk of a prompt). The token ids, their positions and the new cache length are
// uploaded in one block; K and V are projected into scratch, rotated there and stored into their cache
// rows by kv_store (positions read from backend memory), and a single token attends through
// attention_decode (its key count read from memory too). So a decode step's ops touch the same memory at
// every position, and a graph-recording backend records it once (on the second decode) and replays it.
void LlamaSession::forward_chunk(const int32_t* tokens, int64_t n, float* logits, bool all_logits) {
  const ModelConfig& c = m_.cfg;
  const int64_t C = c.dim, F = c.ffn_dim, H = c.n_heads, KV = c.n_kv_heads, D = c.head_dim, V = c.vocab;
  const int64_t p0 = cache_.pos;
  const float eps = float(c.rms_eps);
  LORA_CHECK(n >= 1 && n <= max_batch_ && p0 + n <= cache_.n_ctx, "chunk of {} at {}", n, p0);
  token_ids_check(tokens, n, V);  // before anything is cached

  scratch_.reset();
  Tensor x = scratch_.alloc(DTYPE_F32, {n, C});       // (N, C) residual stream
  Tensor xn = scratch_.alloc(DTYPE_F32, {n, C});      // (N, C) normalized
  Tensor tmp = scratch_.alloc(DTYPE_F32, {n, C});     // (N, C) o_proj / down output
  Tensor q = scratch_.alloc(DTYPE_F32, {n, H, D});    // (N, H, D)
  Tensor att = scratch_.alloc(DTYPE_F32, {n, H, D});  // (N, H, D)
  Tensor gate = scratch_.alloc(DTYPE_F32, {n, F});    // (N, F)
  Tensor up = scratch_.alloc(DTYPE_F32, {n, F});      // (N, F)
  Tensor k = scratch_.alloc(DTYPE_F32, {n, KV, D});   // (N, KV, D) before kv_store
  Tensor v = scratch_.alloc(DTYPE_F32, {n, KV, D});   // (N, KV, D)
  // ids (N), pos (N), n_keys (1): one upload.
  int32_t* ids = static_cast<int32_t*>(scratch_.alloc_bytes(size_t(2 * n + 1) * sizeof(int32_t)));
  int32_t* pos = ids + n;
  const int32_t* n_keys = ids + 2 * n;
  staging_.resize(size_t(2 * n + 1));
  for (int64_t t = 0; t < n; ++t) {
    staging_[size_t(t)] = tokens[t];
    staging_[size_t(n + t)] = int32_t(p0 + t);
  }
  staging_[size_t(2 * n)] = int32_t(p0 + n);
  device_copy(ids, ops_.device(), staging_.data(), DEVICE_CPU, staging_.size() * sizeof(int32_t));
  Tensor q2 = q.reshape({n, H * D});
  Tensor att2 = att.reshape({n, H * D});
  Tensor k2 = k.reshape({n, KV * D});
  Tensor v2 = v.reshape({n, KV * D});

  auto layers = [&] {
    ops_.embedding_fwd(ids, n, m_.tok_embd, x);
    for (int64_t l = 0; l < c.n_layers; ++l) {
      const LayerWeights& w = m_.layers[size_t(l)];
      Tensor& kc = cache_.k[size_t(l)].t;  // (S, KV, D)
      Tensor& vc = cache_.v[size_t(l)].t;

      // Attention block.
      ops_.rmsnorm_fwd(x, w.attn_norm, eps, xn);
      ops_.linear_fwd(xn, w.wq, bias_or_null(w.bq), q2);
      ops_.linear_fwd(xn, w.wk, bias_or_null(w.bk), k2);
      ops_.linear_fwd(xn, w.wv, bias_or_null(w.bv), v2);
      ops_.rope_fwd(q, pos, rope_);
      ops_.rope_fwd(k, pos, rope_);
      ops_.kv_store(kc, k, pos);
      ops_.kv_store(vc, v, pos);
      // The whole cache: attention reads rows 0 .. p0+N-1 only.
      if (n == 1)
        ops_.attention_decode(q, kc, vc, n_keys, att);
      else
        ops_.attention_fwd(q, kc, vc, p0, att);
      ops_.linear_fwd(att2, w.wo, nullptr, tmp);
      ops_.add_fwd(x, tmp);

      // MLP block.
      ops_.rmsnorm_fwd(x, w.ffn_norm, eps, xn);
      ops_.linear_fwd(xn, w.w_gate, nullptr, gate);
      ops_.linear_fwd(xn, w.w_up, nullptr, up);
      ops_.swiglu_fwd(gate, up, gate);
      ops_.linear_fwd(gate, w.w_down, nullptr, tmp);
      ops_.add_fwd(x, tmp);
    }
  };
  auto head = [&](int64_t rows, Tensor out) {
    Tensor x_in = rows == n ? x : x.slice_rows(n - 1, n);  // (rows, C)
    Tensor xn_out = xn.slice_rows(0, rows);
    ops_.rmsnorm_fwd(x_in, m_.out_norm, eps, xn_out);
    ops_.linear_fwd(xn_out, m_.lm_head, nullptr, out);
  };

  const int64_t rows = logits ? (all_logits ? n : 1) : 0;
  // The head writes straight into the caller's buffer on the host, into staging on a GPU.
  Tensor out = rows == 0                     ? Tensor{}
               : logits_dev_.t.defined() ? logits_dev_.t.slice_rows(0, rows)
                                         : tensor_view(logits, DTYPE_F32, {rows, V});
  if (n == 1 && rows == 1 && ops_.supports_graphs()) {
    // Decode: eager the first time (scratch reaches its size), recorded the second, replayed after.
    const uint64_t key = uint64_t(reinterpret_cast<uintptr_t>(this)) * 0x9E3779B97F4A7C15ull ^ 0xDEC0DEull;
    if (decode_uses_ == 0 || !ops_.graph_launch(key)) {
      const bool rec = decode_uses_ > 0 && ops_.graph_capture_begin();
      layers();
      head(1, out);
      if (rec) {
        ops_.graph_capture_end(key);
        ops_.graph_launch(key);
        decode_key_ = key;
      }
    }
    ++decode_uses_;
  } else {
    layers();
    if (rows > 0) head(rows, out);
  }
  cache_.pos = p0 + n;
  if (rows > 0 && logits_dev_.t.defined())
    device_copy(logits, DEVICE_CPU, out.data, out.device, size_t(rows * V) * sizeof(float));
}

LlamaSession::~LlamaSession() {
  if (decode_key_) ops_.graph_drop(decode_key_);
}

}  // namespace lora
