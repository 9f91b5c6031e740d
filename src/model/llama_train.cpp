// The Llama forward and hand-written backward for training (model/llama_train.h): one per-layer loop
// each way over the op API.
//
// Forward over (B, T): rows are independent sequences at positions 0..T-1 (padding sits at the end of
// a row, so causal masking alone keeps it out of real tokens). Blocks below first_layer run with one
// shared work set of buffers and save nothing; each trainable block saves what its backward reads
//   x_in (N, C); q, att (N, H, D); k, v (N, KV, D); lse (N, H); x_mid (N, C); gate, up (N, F);
//   per adapted linear: u = drop(x) A (N, r) (DoRA also ypre (N, out), denom (out));
// the normalized inputs xn1, xn2 (N, C) are recomputed from x_in, x_mid in the backward (one rmsnorm each
// instead of 2·C floats per token per block), or, with grad_checkpoint, only x_in, recomputing the rest into the work set during backward (the
// dropout masks are counter-based, so the recomputation draws the same masks: gradients are equal bit
// for bit). The head runs one chunk of rows at a time: logits (R, V) -> xent (loss and, in place,
// dlogits) -> dxf = dlogits · lm_head, so only R·V logits ever exist.
//
// Backward of a block, dx holding d(loss)/d(block output) and becoming d/d(block input):
//   MLP: dh = linear_bwd(down); dgate, dup = swiglu_bwd; dxn = linear_bwd(gate) + linear_bwd(up);
//        dx += rmsnorm_bwd(x_mid, ffn_norm, dxn)
//   attention: datt = linear_bwd(o); dq, dk, dv = attention_bwd; rope_bwd(dq, dk);
//        dxn = Σ linear_bwd(q, k, v); dx += rmsnorm_bwd(x_in, attn_norm, dxn)
// The lowest LoRA block skips the input gradient (nothing below it trains).
//
// Memory: every buffer comes from one Arena on the backend's device, planned in the constructor for
// (max_batch, max_len) by the same layout() that carves it per step, so the plan and the use cannot
// drift. The batch (host arrays) is checked on the host and copied in at the start of a step; the
// per-row losses come back at the end (the step's only wait on a GPU).
#include "model/llama_train.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <map>
#include <string>
#include <vector>

#include "core/arena.h"
#include "core/device_mem.h"
#include "core/error.h"

namespace lora {

namespace {

// Graph-recording backends see T rounded up to a multiple of this, so that one recording serves every
// batch of a length bucket (PEFT + torch.compile pads to 32 the same way).
constexpr int64_t kGraphBucket = 32;

// Carves tensors out of an Arena, or (arena == nullptr) only counts the bytes they need.
struct Carver {
  Arena* arena = nullptr;
  size_t bytes = 0;
  Tensor f32(std::initializer_list<int64_t> shape) {
    int64_t n = 1;
    for (auto s : shape) n *= s;
    bytes += size_t((n * 4 + 63) / 64 * 64);
    if (arena) return arena->alloc(DTYPE_F32, shape);
    static float dummy;
    return tensor_view(&dummy, DTYPE_F32, shape);
  }
  int32_t* i32(int64_t n) {
    bytes += size_t((n * 4 + 63) / 64 * 64);
    if (arena) return static_cast<int32_t*>(arena->alloc_bytes(size_t(n) * 4));
    return nullptr;
  }
  float* f32_raw(int64_t n) {
    bytes += size_t((n * 4 + 63) / 64 * 64);
    if (arena) return static_cast<float*>(arena->alloc_bytes(size_t(n) * 4));
    return nullptr;
  }
};

// The activations of one block.
struct BlockAct {
  Tensor x_in, xn1;           // (N, C)
  Tensor q, att;              // (B, T, H, D)
  Tensor k, v;                // (B, T, KV, D)
  Tensor lse;                 // (B, T, H)
  Tensor x_mid, xn2;          // (N, C)
  Tensor gate, up;            // (N, F)
  LoraSaved saved[LIN_COUNT];
};

}  // namespace

struct TrainSession::Impl {
  const Model& base;
  Model m;  // the effective model (full fine-tuning: the adapter's fp32 copies of the unfrozen blocks)
  Adapter& a;
  Ops& ops;
  TrainSessionOptions o;
  RopeTable rope;
  Arena arena;
  size_t planned = 0;
  bool full = false;

  // Carved per step by layout().
  int64_t B = 0, T = 0, N = 0;
  // The batch in backend memory, one contiguous block uploaded by one copy: positions, inputs, targets
  // (N each, int32), mask (N, f32), dscale (1, f32: 1 / the gradient's denominator).
  int32_t* pos = nullptr;
  int32_t* inputs = nullptr;
  int32_t* targets = nullptr;
  float* mask = nullptr;
  float* dscale_dev = nullptr;
  std::vector<int32_t> staging;  // host side of that block
  // Recorded steps (backends with graphs): uses per (B, T, train), recorded on the second use.
  std::map<uint64_t, int> graph_uses;
  bool graphs = false;   // the backend records, and the session pads T to kGraphBucket
  int64_t plan_len = 0;  // o.max_len, rounded up to the bucket when graphs are on
  float* row_loss = nullptr;  // (N) per-row losses of the head
  std::vector<float> row_loss_host;
  Tensor x, dx;            // (N, C) residual stream and its gradient
  Tensor tmp;              // (N, C) o_proj / down_proj output
  Tensor hbuf;             // (N, F) swiglu output (down_proj input)
  Tensor xf, dxf;          // (N, C) final norm output and its gradient
  Tensor logits;           // (R, V) one chunk of rows
  int64_t head_rows = 0;   // R
  // Backward scratch.
  Tensor dxn;              // (N, C)
  Tensor dh, dup;          // (N, F)
  Tensor datt, dq;         // (B, T, H, D)
  Tensor dk, dv;           // (B, T, KV, D)
  BlockAct work;
  std::vector<BlockAct> saved;  // [layer - first_layer] (only x_in with grad_checkpoint)

  // The operands of the current layer's adapted linears (rebuilt per layer, per step).
  LoraOperand cur[LIN_COUNT];
  bool has_lora[LIN_COUNT] = {};

  Impl(const Model& mm, Adapter& aa, Ops& oo, const TrainSessionOptions& opts)
      : base(mm), m(adapter_effective_model(mm, aa)), a(aa), ops(oo), o(opts) {
    const ModelConfig& c = m.cfg;
    LORA_CHECK(int64_t(m.layers.size()) == c.n_layers, "model has {} layers, config says {}", m.layers.size(),
               c.n_layers);
    LORA_CHECK(o.max_batch >= 1 && o.max_len >= 1, "bad train session size {} x {}", o.max_batch, o.max_len);
    full = a.cfg.type == FT_FULL;
    graphs = o.graphs && ops.supports_graphs();
    plan_len = graphs ? (o.max_len + kGraphBucket - 1) / kGraphBucket * kGraphBucket : o.max_len;
    rope = rope_table_make(c.head_dim, plan_len, c.rope_theta, &c.rope_scaling);
    Carver count;
    layout(count, o.max_batch, plan_len, true);
    Carver count_fwd;
    layout(count_fwd, o.max_batch, plan_len, false);
    planned = std::max(count.bytes, count_fwd.bytes);
    arena = Arena(planned, ops.device());
  }

  ~Impl() {
    for (const auto& [key, uses] : graph_uses) ops.graph_drop(key);
  }

  int64_t trainable_layers() const { return m.cfg.n_layers - a.first_layer; }

  // shared_norms: the block's normalized inputs xn1, xn2 alias the work set's (a saved block recomputes them
  // in its backward: one rmsnorm each instead of 2·C floats per token per block kept).
  void carve_block(Carver& cv, BlockAct& ba, bool with_saved, bool shared_norms = false) {
    const ModelConfig& c = m.cfg;
    const int64_t C = c.dim, F = c.ffn_dim, H = c.n_heads, KV = c.n_kv_heads, D = c.head_dim;
    ba.x_in = cv.f32({N, C});
    ba.xn1 = shared_norms ? work.xn1 : cv.f32({N, C});
    ba.q = cv.f32({B, T, H, D});
    ba.att = cv.f32({B, T, H, D});
    ba.k = cv.f32({B, T, KV, D});
    ba.v = cv.f32({B, T, KV, D});
    ba.lse = cv.f32({B, T, H});
    ba.x_mid = cv.f32({N, C});
    ba.xn2 = shared_norms ? work.xn2 : cv.f32({N, C});
    ba.gate = cv.f32({N, F});
    ba.up = cv.f32({N, F});
    for (auto& s : ba.saved) s = LoraSaved{};
    if (!with_saved || full) return;
    for (int k = 0; k < LIN_COUNT; ++k) {
      const LoraLinear* ll = first_lora(LinearKey(k));
      if (!ll) continue;
      const int64_t out = ll->b.dim(1);
      ba.saved[k].u = cv.f32({N, a.cfg.rank});
      if (ll->m.defined()) {
        ba.saved[k].ypre = cv.f32({N, out});
        ba.saved[k].denom = cv.f32({out});
      }
    }
  }

  // Any layer's adapter of key k (they all have the same shapes), or nullptr.
  const LoraLinear* first_lora(LinearKey k) const {
    for (int64_t l = a.first_layer; l < m.cfg.n_layers; ++l)
      if (a.lora[size_t(l)][size_t(k)]) return a.lora[size_t(l)][size_t(k)];
    return nullptr;
  }

  // Carves every buffer for a (B, T) batch. train: with the saved activations and backward scratch.
  void layout(Carver& cv, int64_t b, int64_t t, bool train) {
    const ModelConfig& c = m.cfg;
    const int64_t C = c.dim, F = c.ffn_dim, H = c.n_heads, KV = c.n_kv_heads, D = c.head_dim, V = c.vocab;
    B = b;
    T = t;
    N = b * t;
    pos = cv.i32(4 * N + 1);
    inputs = pos ? pos + N : nullptr;
    targets = pos ? pos + 2 * N : nullptr;
    mask = pos ? reinterpret_cast<float*>(pos + 3 * N) : nullptr;
    dscale_dev = pos ? reinterpret_cast<float*>(pos + 4 * N) : nullptr;
    row_loss = cv.f32_raw(N);
    x = cv.f32({N, C});
    tmp = cv.f32({N, C});
    hbuf = cv.f32({N, F});
    xf = cv.f32({N, C});
    // Head chunk: about 4M logits (16 MB) at most on the CPU (cache-sized), 16M (64 MB) on a GPU (fewer,
    // larger GEMMs); at least 16 rows.
    const int64_t head_logits = int64_t(1) << (ops.device() == DEVICE_CPU ? 22 : 24);
    head_rows = std::min<int64_t>(N, std::max<int64_t>(16, head_logits / std::max<int64_t>(V, 1)));
    logits = cv.f32({head_rows, V});
    carve_block(cv, work, train);
    saved.assign(train ? size_t(trainable_layers()) : 0, BlockAct{});
    if (!train) return;
    dx = cv.f32({N, C});
    dxf = cv.f32({N, C});
    dxn = cv.f32({N, C});
    dh = cv.f32({N, F});
    dup = cv.f32({N, F});
    datt = cv.f32({B, T, H, D});
    dq = cv.f32({B, T, H, D});
    dk = cv.f32({B, T, KV, D});
    dv = cv.f32({B, T, KV, D});
    for (auto& s : saved) {
      if (o.grad_checkpoint)
        s.x_in = cv.f32({N, C});
      else
        carve_block(cv, s, true, /*shared_norms=*/true);
    }
  }

  // Checks the batch, carves the buffers for it and uploads it. pad: round T up to the graph bucket (the
  // extra positions are masked padding at the end of each row, which causal attention keeps out of the
  // real ones, so the loss and gradients are those of the unpadded batch).
  void begin(const TrainBatchView& bv, bool train, float dscale, bool pad) {
    LORA_CHECK(bv.B >= 1 && bv.T >= 1 && bv.B <= o.max_batch && bv.T <= o.max_len,
               "batch ({}, {}) exceeds the planned ({}, {})", bv.B, bv.T, o.max_batch, o.max_len);
    const ModelConfig& c = m.cfg;
    const int64_t n_in = bv.B * bv.T;
    token_ids_check(bv.inputs, n_in, c.vocab);
    for (int64_t i = 0; i < n_in; ++i)
      if (bv.mask[i] != 0.0f && (bv.targets[i] < 0 || bv.targets[i] >= c.vocab))
        fail_input("batch targets",
                   "target id " + std::to_string(bv.targets[i]) + " is outside the vocabulary [0, " +
                       std::to_string(c.vocab) + ")",
                   "the data must be tokenized with this model's tokenizer");
    const int64_t Tp = pad ? (bv.T + kGraphBucket - 1) / kGraphBucket * kGraphBucket : bv.T;
    arena.reset();
    Carver cv{&arena};
    layout(cv, bv.B, Tp, train);
    staging.assign(size_t(4 * N + 1), 0);
    int32_t* hp = staging.data();
    float* hm = reinterpret_cast<float*>(hp + 3 * N);
    for (int64_t b = 0; b < B; ++b)
      for (int64_t t = 0; t < T; ++t) {
        const int64_t i = b * T + t;
        hp[i] = int32_t(t);
        if (t >= bv.T) continue;  // padding: id 0, target 0, mask 0
        hp[N + i] = bv.inputs[b * bv.T + t];
        hp[2 * N + i] = bv.targets[b * bv.T + t];
        hm[i] = bv.mask[b * bv.T + t];
      }
    std::memcpy(hp + 4 * N, &dscale, sizeof(float));
    device_copy(pos, ops.device(), hp, DEVICE_CPU, staging.size() * sizeof(int32_t));
  }

  // Forward (and backward) of the carved batch.
  void compute(bool train, int64_t step) {
    const ModelConfig& c = m.cfg;
    const float eps = float(c.rms_eps);
    forward_blocks(train, step);
    ops.rmsnorm_fwd(x, m.out_norm, eps, xf);
    for (int64_t r0 = 0; r0 < N; r0 += head_rows) {
      const int64_t r1 = std::min(N, r0 + head_rows);
      Tensor xc = xf.slice_rows(r0, r1);
      Tensor lg = logits.slice_rows(0, r1 - r0);
      ops.linear_fwd(xc, m.lm_head, nullptr, lg);
      ops.xent_fwd_bwd(lg, targets + r0, mask + r0, dscale_dev, train, row_loss + r0);
      if (train) {
        Tensor dxc = dxf.slice_rows(r0, r1);
        ops.linear_bwd(xc, m.lm_head, lg, &dxc, false, nullptr, nullptr, nullptr, nullptr);
      }
    }
    if (!train) return;
    tensor_zero(dx);
    ops.rmsnorm_bwd(x, m.out_norm, eps, dxf, dx, nullptr);
    for (int64_t l = c.n_layers - 1; l >= a.first_layer; --l) {
      set_operands(l, step, true);
      BlockAct& s = saved[size_t(l - a.first_layer)];
      const bool bottom = l == a.first_layer;
      if (o.grad_checkpoint) {
        tensor_copy(x, s.x_in);
        block_fwd(l, work, true);
        block_bwd(l, work, bottom);
      } else {
        block_bwd(l, s, bottom);
      }
    }
  }

  void set_operands(int64_t l, int64_t step, bool dropout_on) {
    for (int k = 0; k < LIN_COUNT; ++k) {
      const LoraLinear* ll = full ? nullptr : a.lora[size_t(l)][size_t(k)];
      has_lora[k] = ll != nullptr;
      if (!ll) continue;
      LoraOperand& lo = cur[k];
      lo = LoraOperand{};
      lo.a = ll->a;
      lo.b = ll->b;
      lo.m = ll->m;
      lo.da = ll->da;
      lo.db = ll->db;
      lo.dm = ll->dm;
      lo.scale = float(a.cfg.scale);
      lo.dropout = dropout_on ? float(a.cfg.dropout) : 0.0f;
      lo.dropout_key = o.dropout_seed;
      lo.dropout_stream = (uint64_t(step) << 20) ^ (uint64_t(l) << 4) ^ uint64_t(k);
    }
  }

  void lin_fwd(int64_t l, LinearKey k, const Tensor& in, Tensor& out, BlockAct& ba, bool save) {
    const LayerWeights& w = m.layers[size_t(l)];
    const Tensor& bias = layer_linear_bias(w, k);
    LoraSaved* sv = save && has_lora[k] ? &ba.saved[k] : nullptr;
    ops.linear_lora_fwd(in, layer_linear(w, k), bias.defined() ? &bias : nullptr, has_lora[k] ? &cur[k] : nullptr,
                        sv, out);
  }

  void lin_bwd(int64_t l, LinearKey k, const Tensor& in, const Tensor& dy, Tensor* dxp, bool acc, BlockAct& ba) {
    const LayerWeights& w = m.layers[size_t(l)];
    Tensor* dw = nullptr;
    Tensor* db = nullptr;
    if (full) {
      LayerWeights& g = a.full_grad[size_t(l)];
      dw = &layer_linear(g, k);
      Tensor& gb = layer_linear_bias(g, k);
      db = gb.defined() ? &gb : nullptr;
    }
    ops.linear_bwd(in, layer_linear(w, k), dy, dxp, acc, dw, db, has_lora[k] ? &cur[k] : nullptr,
                   has_lora[k] ? &ba.saved[k] : nullptr);
  }

  // Runs block l on the residual x (in place), filling ba. save: keep the adapters' saved state.
  void block_fwd(int64_t l, BlockAct& ba, bool save) {
    const ModelConfig& c = m.cfg;
    const LayerWeights& w = m.layers[size_t(l)];
    const float eps = float(c.rms_eps);
    Tensor q2 = ba.q.reshape({N, c.q_dim()}), k2 = ba.k.reshape({N, c.kv_dim()}), v2 = ba.v.reshape({N, c.kv_dim()});
    Tensor att2 = ba.att.reshape({N, c.q_dim()});
    Tensor q3 = ba.q.reshape({N, c.n_heads, c.head_dim}), k3 = ba.k.reshape({N, c.n_kv_heads, c.head_dim});
    tensor_copy(ba.x_in, x);
    ops.rmsnorm_fwd(x, w.attn_norm, eps, ba.xn1);
    lin_fwd(l, LIN_Q, ba.xn1, q2, ba, save);
    lin_fwd(l, LIN_K, ba.xn1, k2, ba, save);
    lin_fwd(l, LIN_V, ba.xn1, v2, ba, save);
    ops.rope_fwd(q3, pos, rope);
    ops.rope_fwd(k3, pos, rope);
    ops.attention_train_fwd(ba.q, ba.k, ba.v, ba.att, ba.lse);
    lin_fwd(l, LIN_O, att2, tmp, ba, save);
    ops.add_fwd(x, tmp);
    tensor_copy(ba.x_mid, x);
    ops.rmsnorm_fwd(x, w.ffn_norm, eps, ba.xn2);
    lin_fwd(l, LIN_GATE, ba.xn2, ba.gate, ba, save);
    lin_fwd(l, LIN_UP, ba.xn2, ba.up, ba, save);
    ops.swiglu_fwd(ba.gate, ba.up, hbuf);
    lin_fwd(l, LIN_DOWN, hbuf, tmp, ba, save);
    ops.add_fwd(x, tmp);
  }

  // dx: gradient of block l's output on entry, of its input on return (unless bottom).
  void block_bwd(int64_t l, BlockAct& ba, bool bottom) {
    const ModelConfig& c = m.cfg;
    const LayerWeights& w = m.layers[size_t(l)];
    LayerWeights* g = full ? &a.full_grad[size_t(l)] : nullptr;
    const float eps = float(c.rms_eps);
    const bool need_dx = !bottom || full;  // full fine-tuning needs dxn for the norm weights' gradients
    // Without checkpointing the normalized inputs were not kept (carve_block: shared_norms): recompute them.
    if (!o.grad_checkpoint) ops.rmsnorm_fwd(ba.x_mid, w.ffn_norm, eps, ba.xn2);
    // MLP.
    ops.swiglu_fwd(ba.gate, ba.up, hbuf);
    lin_bwd(l, LIN_DOWN, hbuf, dx, &dh, false, ba);
    ops.swiglu_bwd(ba.gate, ba.up, dh, dh, dup);
    lin_bwd(l, LIN_GATE, ba.xn2, dh, &dxn, false, ba);
    lin_bwd(l, LIN_UP, ba.xn2, dup, &dxn, true, ba);
    ops.rmsnorm_bwd(ba.x_mid, w.ffn_norm, eps, dxn, dx, g ? &g->ffn_norm : nullptr);
    if (!o.grad_checkpoint) ops.rmsnorm_fwd(ba.x_in, w.attn_norm, eps, ba.xn1);
    // Attention.
    Tensor att2 = ba.att.reshape({N, c.q_dim()});
    Tensor datt2 = datt.reshape({N, c.q_dim()});
    lin_bwd(l, LIN_O, att2, dx, &datt2, false, ba);
    ops.attention_bwd(ba.q, ba.k, ba.v, ba.att, ba.lse, datt, dq, dk, dv);
    Tensor dq3 = dq.reshape({N, c.n_heads, c.head_dim}), dk3 = dk.reshape({N, c.n_kv_heads, c.head_dim});
    ops.rope_bwd(dq3, pos, rope);
    ops.rope_bwd(dk3, pos, rope);
    Tensor dq2 = dq.reshape({N, c.q_dim()}), dk2 = dk.reshape({N, c.kv_dim()}), dv2 = dv.reshape({N, c.kv_dim()});
    lin_bwd(l, LIN_Q, ba.xn1, dq2, need_dx ? &dxn : nullptr, false, ba);
    lin_bwd(l, LIN_K, ba.xn1, dk2, need_dx ? &dxn : nullptr, true, ba);
    lin_bwd(l, LIN_V, ba.xn1, dv2, need_dx ? &dxn : nullptr, true, ba);
    if (need_dx) ops.rmsnorm_bwd(ba.x_in, w.attn_norm, eps, dxn, dx, g ? &g->attn_norm : nullptr);
  }

  // Embedding and every block forward. train: trainable blocks save their activations.
  void forward_blocks(bool train, int64_t step) {
    const ModelConfig& c = m.cfg;
    ops.embedding_fwd(inputs, N, m.tok_embd, x);
    for (int64_t l = 0; l < c.n_layers; ++l) {
      const bool trainable = l >= a.first_layer;
      set_operands(l, step, train);
      if (train && trainable) {
        BlockAct& s = saved[size_t(l - a.first_layer)];
        if (o.grad_checkpoint) {
          tensor_copy(s.x_in, x);
          block_fwd(l, work, false);
        } else {
          block_fwd(l, s, true);
        }
      } else {
        block_fwd(l, work, false);
      }
    }
  }

  LossResult run(const TrainBatchView& bv, bool train, int64_t step, double grad_denominator) {
    LossResult res;
    double msum = 0;
    for (int64_t i = 0; i < bv.B * bv.T; ++i) msum += bv.mask[i];
    res.n_targets = int64_t(std::llround(msum));
    const double denom = grad_denominator > 0 ? grad_denominator : double(res.n_targets);
    const float dscale = denom > 0 ? float(1.0 / denom) : 0.0f;
    // Dropout masks depend on the step (kernel arguments a recording would freeze): run those eagerly.
    const bool record = graphs && !(train && a.cfg.dropout > 0);
    begin(bv, train, dscale, /*pad=*/record);  // dropout masks index the unpadded (B, T) layout
    if (!record) {
      compute(train, step);
      return finish(res);
    }
    // The first use of a shape runs eagerly (it also grows the backend's scratch to its final size),
    // the second records, every later one replays.
    const uint64_t key = (uint64_t(reinterpret_cast<uintptr_t>(this)) * 0x9E3779B97F4A7C15ull) ^
                         (uint64_t(B) << 48) ^ (uint64_t(T) << 8) ^ uint64_t(train);
    int& uses = graph_uses[key];
    if (uses == 0 || !(ops.graph_launch(key))) {
      if (uses > 0 && ops.graph_capture_begin()) {
        compute(train, step);
        ops.graph_capture_end(key);
        ops.graph_launch(key);
      } else {
        compute(train, step);
      }
    }
    ++uses;
    return finish(res);
  }

  // Reads the per-row losses back (waiting for the step on a GPU) and sums them in double.
  LossResult finish(LossResult res) {
    row_loss_host.resize(size_t(N));
    device_copy(row_loss_host.data(), DEVICE_CPU, row_loss, ops.device(), size_t(N) * sizeof(float));
    for (float r : row_loss_host) res.loss_sum += double(r);
    return res;
  }
};

TrainSession::TrainSession(const Model& m, Adapter& a, Ops& ops, const TrainSessionOptions& o)
    : impl_(std::make_unique<Impl>(m, a, ops, o)) {
  if (o.grad_checkpoint) ops.set_dequant_reuse(true);  // recompute then backward: reuse a block's weights
}

TrainSession::~TrainSession() {
  if (impl_->o.grad_checkpoint) impl_->ops.set_dequant_reuse(false);
}

LossResult TrainSession::loss_and_grad(const TrainBatchView& b, int64_t step, double grad_denominator) {
  return impl_->run(b, true, step, grad_denominator);
}

LossResult TrainSession::loss(const TrainBatchView& b) { return impl_->run(b, false, 0, 0); }

void TrainSession::logits(const TrainBatchView& b, float* out) {
  Impl& s = *impl_;
  s.begin(b, false, 0.0f, /*pad=*/false);
  s.forward_blocks(false, 0);
  const ModelConfig& c = s.m.cfg;
  s.ops.rmsnorm_fwd(s.x, s.m.out_norm, float(c.rms_eps), s.xf);
  if (s.ops.device() == DEVICE_CPU) {
    Tensor lg = tensor_view(out, DTYPE_F32, {s.N, c.vocab});
    s.ops.linear_fwd(s.xf, s.m.lm_head, nullptr, lg);
    return;
  }
  OwnedTensor lg = tensor_alloc_on(s.ops.device(), DTYPE_F32, {s.N, c.vocab});  // tests only: not planned
  s.ops.linear_fwd(s.xf, s.m.lm_head, nullptr, lg.t);
  device_copy(out, DEVICE_CPU, lg.t.data, lg.t.device, size_t(lg.t.nbytes()));
}

size_t TrainSession::planned_bytes() const { return impl_->planned; }

}  // namespace lora
