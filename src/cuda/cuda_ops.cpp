// The CUDA Ops class (cuda/cuda_ops.h): wires the kernels' launchers (kernels.h, attention.h,
// train_kernels.h) and cuBLASLt (gemm.h) into the op API. Host code (compiled by g++), so it may use
// fmt and lora::Error; the kernels live in the .cu files.
#include "cuda/cuda_ops.h"

#include <fmt/format.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <map>
#include <string>
#include <vector>

#include "core/device_mem.h"
#include "core/error.h"
#include "cuda/attention.h"
#include "cuda/check.h"
#include "cuda/dequant.h"
#include "cuda/gemm.h"
#include "cuda/kernels.h"
#include "cuda/train_kernels.h"

namespace lora {

namespace {

// ---- DEVICE_CUDA memory functions (core/device_mem.h), bound to the most recently created context ----

CudaDevice* g_mem_dev = nullptr;
// Bumped by every copy and memset through core/device_mem.h: they may overwrite an activation whose bf16
// copy the backend is holding (CudaOps::conv_*).
uint64_t g_mem_writes = 0;
// Bytes lora itself holds on the device (core/device_mem.h allocations and the backends' scratch), and
// their peak: the counterpart of torch.cuda.max_memory_allocated (the CUDA context, cuBLASLt's
// workspace and the kernels' small stream-ordered scratch are not counted, as PyTorch does not count
// its context either).
int64_t g_live = 0, g_peak = 0;
std::map<void*, size_t> g_sizes;

void count_alloc(void* p, size_t n) {
  g_sizes[p] = n;
  g_live += int64_t(n);
  g_peak = std::max(g_peak, g_live);
}
void count_free(void* p) {
  auto it = g_sizes.find(p);
  if (it == g_sizes.end()) return;
  g_live -= int64_t(it->second);
  g_sizes.erase(it);
}

void* mem_alloc(size_t n) {
  cuda_device_use(*g_mem_dev);
  void* p = nullptr;
  const cudaError_t err = cudaMalloc(&p, n);
  if (err != cudaSuccess) {
    (void)cudaGetLastError();
    size_t free_b = 0, total_b = 0;
    (void)cudaMemGetInfo(&free_b, &total_b);
    fail_input(fmt::format("cuda:{}", g_mem_dev->index),
               fmt::format("out of GPU memory: {:.2f} GiB asked, {:.2f} of {:.2f} GiB free", double(n) / (1 << 30),
                           double(free_b) / (1 << 30), double(total_b) / (1 << 30)),
               "use a smaller --batch-size or --max-seq-length, --grad-checkpoint, or a smaller model");
  }
  count_alloc(p, n);
  return p;
}

void mem_free(void* p) {
  count_free(p);
  (void)cudaFree(p);
}

void mem_copy(void* dst, const void* src, size_t n, CopyKind kind) {
  cuda_device_use(*g_mem_dev);
  const cudaMemcpyKind k = kind == COPY_H2D   ? cudaMemcpyHostToDevice
                           : kind == COPY_D2H ? cudaMemcpyDeviceToHost
                                              : cudaMemcpyDeviceToDevice;
  ++g_mem_writes;
  LORA_CUDA_CHECK(cudaMemcpyAsync(dst, src, n, k, g_mem_dev->stream));
  // Host memory involved: make the copy complete before returning (the source may be reused at once,
  // the destination read at once).
  if (kind != COPY_D2D) LORA_CUDA_CHECK(cudaStreamSynchronize(g_mem_dev->stream));
}

void mem_zero(void* p, size_t n) {
  cuda_device_use(*g_mem_dev);
  ++g_mem_writes;
  LORA_CUDA_CHECK(cudaMemsetAsync(p, 0, n, g_mem_dev->stream));
}

// A device buffer that grows to the largest request. A grown-out buffer is kept until the backend is
// destroyed, not freed: a recorded CUDA graph may still refer to it. Growth happens in a shape's first
// (eager) step, never while recording.
struct Scratch {
  void* p = nullptr;
  size_t n = 0;
  std::vector<void*> retired;
  void* get(size_t bytes, cudaStream_t s) {
    if (bytes <= n) return p;
    if (p) retired.push_back(p);
    bytes = std::max(bytes, n + n / 2);
    LORA_CUDA_CHECK(cudaMallocAsync(&p, bytes, s));
    count_alloc(p, bytes);
    n = bytes;
    return p;
  }
  void release() {
    retired.push_back(p);
    for (void* q : retired)
      if (q) {
        count_free(q);
        (void)cudaFree(q);
      }
    retired.clear();
    p = nullptr;
    n = 0;
  }
};

void require(bool ok, const char* what) { LORA_CHECK(ok, "cuda ops: {}", what); }

class CudaOps;

// LORA_CUDA_PROFILE=1: every op is bracketed by CUDA events (recordings are off, so each op runs eagerly)
// and a table of GPU time per op and shape goes to stderr when the backend is destroyed. Before each op the
// stream is drained and a 300 us spin kernel queued, so the events time the op's kernels on the GPU
// without the host's launch cost (steps get much slower: use it to see where GPU time goes, not for speed).
struct ProfEvent {
  std::string name;
  cudaEvent_t a = nullptr, b = nullptr;
};

class CudaOps final : public Ops {
 public:
  explicit CudaOps(std::unique_ptr<CudaDevice> dev) : dev_(std::move(dev)), prof_(std::getenv("LORA_CUDA_PROFILE")) {}
  ~CudaOps() override {
    if (prof_) prof_report();
    if (g_mem_dev == dev_.get()) {
      (void)cudaStreamSynchronize(dev_->stream);
    }
    for (auto& [k, g] : graphs_) (void)cudaGraphExecDestroy(g);
    for (auto* s : {&x_bf16_, &g_bf16_, &lora_u_, &lora_g_, &lora_drop_, &lora_t_, &lora_den_, &opt_table_, &attn_ws_, &w_deq_})
      s->release();
    for (DeqSlot& s : deq_slots_) s.buf.release();
    for (auto& [k, v] : rope_) {
      (void)cudaFree(v.cos);
      (void)cudaFree(v.sin);
    }
  }

  Device device() const override { return DEVICE_CUDA; }
  CudaDevice& dev() { return *dev_; }
  cudaStream_t st() const { return dev_->stream; }

  void sync() override { cuda_device_sync(*dev_); }

  // The profiler keeps the recording shapes (T padded to the bucket) but runs every op eagerly.
  bool supports_graphs() const override { return !std::getenv("LORA_NO_CUDA_GRAPHS"); }

  // ---- profiling (LORA_CUDA_PROFILE) ----
  struct Scope {
    CudaOps* o;
    ProfEvent* e = nullptr;
    Scope(CudaOps* ops, std::string name, bool keeps_conv = false) : o(ops) {
      if (!keeps_conv) o->conv_forget();
      if (!o->prof_) return;
      o->prof_events_.push_back({std::move(name)});
      e = &o->prof_events_.back();
      LORA_CUDA_CHECK(cudaEventCreate(&e->a));
      LORA_CUDA_CHECK(cudaEventCreate(&e->b));
      // Lead time: the host queues the op's kernels while the GPU spins, so a..b is GPU time only.
      LORA_CUDA_CHECK(cudaStreamSynchronize(o->st()));
      cuda_spin(300.0, o->st());
      LORA_CUDA_CHECK(cudaEventRecord(e->a, o->st()));
    }
    ~Scope() {
      if (e) (void)cudaEventRecord(e->b, o->st());
    }
  };
  void prof_report() {
    (void)cudaStreamSynchronize(st());
    std::map<std::string, std::pair<int64_t, double>> by;
    double total = 0;
    for (ProfEvent& e : prof_events_) {
      float ms = 0;
      if (cudaEventElapsedTime(&ms, e.a, e.b) == cudaSuccess) {
        by[e.name].first += 1;
        by[e.name].second += ms;
        total += ms;
      }
      (void)cudaEventDestroy(e.a);
      (void)cudaEventDestroy(e.b);
    }
    prof_events_.clear();
    std::vector<std::pair<double, std::string>> rows;
    for (auto& [n, v] : by) rows.push_back({v.second, n});
    std::sort(rows.rbegin(), rows.rend());
    std::fprintf(stderr, "lora cuda profile: %.3f ms of GPU time in ops\n%-44s %8s %10s %9s %6s\n", total, "op", "calls",
                 "total ms", "avg us", "%");
    for (auto& [ms, n] : rows)
      std::fprintf(stderr, "%-44s %8lld %10.3f %9.2f %5.1f%%\n", n.c_str(), (long long)by[n].first, ms,
                   1e3 * ms / double(by[n].first), 100.0 * ms / total);
  }
  bool graph_capture_begin() override {
    if (!supports_graphs() || prof_) return false;
    conv_forget();
    deq_forget();
    capturing_ = true;
    LORA_CUDA_CHECK(cudaStreamBeginCapture(st(), cudaStreamCaptureModeRelaxed));
    return true;
  }
  void graph_capture_end(uint64_t key) override {
    cudaGraph_t g = nullptr;
    capturing_ = false;
    deq_forget();
    LORA_CUDA_CHECK(cudaStreamEndCapture(st(), &g));
    cudaGraphExec_t e = nullptr;
    LORA_CUDA_CHECK(cudaGraphInstantiate(&e, g, 0));
    LORA_CUDA_CHECK(cudaGraphDestroy(g));
    conv_forget();
    if (auto it = graphs_.find(key); it != graphs_.end()) (void)cudaGraphExecDestroy(it->second);
    graphs_[key] = e;
  }
  void graph_drop(uint64_t key) override {
    auto it = graphs_.find(key);
    if (it == graphs_.end()) return;
    (void)cudaStreamSynchronize(st());
    (void)cudaGraphExecDestroy(it->second);
    graphs_.erase(it);
  }
  bool graph_launch(uint64_t key) override {
    auto it = graphs_.find(key);
    if (it == graphs_.end()) return false;
    conv_forget();
    deq_forget();
    LORA_CUDA_CHECK(cudaGraphLaunch(it->second, st()));
    return true;
  }

  void embedding_fwd(const int32_t* ids, int64_t n, const Tensor& table, Tensor& out) override {
    Scope prof(this, prof_ ? "embedding_fwd" : "");
    require(table.ndim == 2 && out.numel() == n * table.dim(1), "embedding shapes");
    if (dtype_is_quant(table.dtype))
      cuda_embedding_quant(table.dtype, table.data, table.dim(0), table.dim(1), ids, n, out.f32(), st());
    else
      cuda_embedding_fwd(ids, n, table.data, table.dtype, table.dim(0), table.dim(1), out.f32(), st());
  }

  void rmsnorm_fwd(const Tensor& x, const Tensor& w, float eps, Tensor& y) override {
    Scope prof(this, prof_ ? "rmsnorm_fwd" : "");
    const int64_t C = w.numel(), n = x.numel() / C;
    require(y.numel() == x.numel(), "rmsnorm shapes");
    cuda_rmsnorm_fwd(x.f32(), w.data, w.dtype, n, C, eps, y.f32(), st());
  }

  void rmsnorm_bwd(const Tensor& x, const Tensor& w, float eps, const Tensor& dy, Tensor& dx, Tensor* dw) override {
    Scope prof(this, prof_ ? "rmsnorm_bwd" : "");
    const int64_t C = w.numel(), n = x.numel() / C;
    cuda_rmsnorm_bwd(x.f32(), w.data, w.dtype, n, C, eps, dy.f32(), dx.f32(), dw ? dw->f32() : nullptr, st());
  }

  // ---- linear ----

  // The bf16 copy of the last linear input, reused while nothing has written since: q, k and v read the
  // same normalized input, as do gate and up. Every op other than the linear forwards ends the reuse
  // (Scope's constructor and the linear ops' outputs), as do copies and memsets (g_mem_writes) and the
  // edges of a recording.
  const void* conv_src_ = nullptr;
  int64_t conv_n_ = 0;
  uint64_t conv_writes_ = 0;
  void conv_forget() { conv_src_ = nullptr; }

  // QLoRA: a quantized weight (out, in) is used as bf16 row chunks dequantized into w_deq_ right before
  // each GEMM, so no full-size bf16 copy of the model is ever held; a chunk is at most kDeqChunkElems
  // (every TinyLlama linear is one chunk; the 32000-row lm_head is three). The scratch is sized once to
  // the cap (or to the whole weight for DoRA's norms), so it does not grow while a step is recorded.
  static constexpr int64_t kDeqChunkElems = int64_t(12) << 20;
  int64_t dequant_rows(const Tensor& w) const {
    const int64_t out = w.dim(0), in = w.dim(1);
    return std::max<int64_t>(1, std::min(out, kDeqChunkElems / in));
  }
  const void* dequant_chunk(const Tensor& w, int64_t r0, int64_t nr, int64_t cap_rows) {
    const int64_t in = w.dim(1);
    if (deq_reuse_ > 0 && r0 == 0 && nr == w.dim(0))
      if (const void* kept = dequant_kept(w)) return kept;
    void* d = w_deq_.get(size_t(std::max(cap_rows * in, kDeqChunkElems)) * 2, st());
    cuda_dequantize_bf16(w.dtype, static_cast<const char*>(w.data) + dtype_nbytes(w.dtype, r0 * in),
                         static_cast<__nv_bfloat16*>(d), nr, in, in, st());
    return d;
  }
  // Whole weights kept dequantized while set_dequant_reuse is on. A slot serves one weight size (element
  // count) for good, and each size gets at most three slots, most recently used kept: a Llama block has at
  // most three linears of one size (q/o, k/v, and gate/up/down, whose counts are equal), so a block's
  // recompute leaves all seven for its backward while the memory held is about one block's weights
  // (TinyLlama: 87 MB of bf16) rather than seven of the largest. Slots are allocated outside recordings only (allocating would enter the graph);
  // otherwise the weight goes through w_deq_. Nothing kept survives the edges of a recording or a replay,
  // so a recording only hits what it dequantized itself.
  static constexpr int kDeqSlots = 8;
  struct DeqSlot {
    int64_t size = 0;           // the element count this slot serves (0: free)
    const void* w = nullptr;    // the weight it holds now
    uint64_t used = 0;
    Scratch buf;
  };
  DeqSlot deq_slots_[kDeqSlots];
  int deq_reuse_ = 0;
  uint64_t deq_clock_ = 0;
  bool capturing_ = false;
  void deq_forget() {
    for (DeqSlot& s : deq_slots_) s.w = nullptr;
  }
  const void* dequant_kept(const Tensor& w) {
    const int64_t n = w.numel();
    DeqSlot* victim = nullptr;
    DeqSlot* free_slot = nullptr;
    int same = 0;
    for (DeqSlot& s : deq_slots_) {
      if (s.size == n) {
        if (s.w == w.data) {
          s.used = ++deq_clock_;
          return s.buf.p;
        }
        ++same;
        if (!victim || s.used < victim->used) victim = &s;
      } else if (s.size == 0 && !free_slot) {
        free_slot = &s;
      }
    }
    if (same < 3 && free_slot && !capturing_) {
      victim = free_slot;
      victim->size = n;
      victim->buf.get(size_t(n) * 2, st());
    }
    if (!victim) return nullptr;
    void* d = victim->buf.p;
    cuda_dequantize_bf16(w.dtype, w.data, static_cast<__nv_bfloat16*>(d), w.dim(0), w.dim(1), w.dim(1), st());
    victim->w = w.data;
    victim->used = ++deq_clock_;
    return d;
  }
  void set_dequant_reuse(bool on) override {
    deq_reuse_ = std::max(0, deq_reuse_ + (on ? 1 : -1));
    deq_forget();
  }

  // The bf16 input of a linear (x converted once, reused by q/k/v and gate/up: conv_*).
  const void* input_bf16(const Tensor& x, int64_t n_elems) {
    void* xb = x_bf16_.get(size_t(n_elems) * 2, st());
    if (!(conv_src_ == x.data && conv_n_ == n_elems && conv_writes_ == g_mem_writes && conv_on_)) {
      cuda_convert_f32_to_bf16(x.f32(), xb, n_elems, st());
      conv_src_ = x.data;
      conv_n_ = n_elems;
      conv_writes_ = g_mem_writes;
    }
    return xb;
  }

  // y (N, out) = alpha · x (N, in) · Wᵀ + beta · y, W (out, in) BF16, F32 or quantized.
  void gemm_xwT(const Tensor& x, const Tensor& w, float beta, Tensor& y) {
    const int64_t out = w.dim(0), in = w.dim(1), N = x.numel() / in;
    require(x.numel() == N * in && y.numel() == N * out, "linear shapes");
    if (dtype_is_quant(w.dtype)) {
      const void* xb = N == 1 ? nullptr : input_bf16(x, N * in);
      const int64_t rows = dequant_rows(w);
      for (int64_t r0 = 0; r0 < out; r0 += rows) {
        const int64_t nr = std::min(rows, out - r0);
        const void* wb = dequant_chunk(w, r0, nr, rows);
        if (N == 1 && beta == 0.0f && gemv_on_ && cuda_gemv_bf16_supported(wb, in))
          cuda_gemv_bf16(x.f32(), wb, nr, in, y.f32() + r0, st());
        else
          gemm_bf16(*dev_, false, true, N, nr, in, 1.0f, xb ? xb : input_bf16(x, N * in), in, wb, in, beta,
                    y.f32() + r0, DTYPE_F32, out);
      }
      return;
    }
    if (w.dtype == DTYPE_BF16 && N == 1 && beta == 0.0f && gemv_on_ && cuda_gemv_bf16_supported(w.data, in)) {
      cuda_gemv_bf16(x.f32(), w.data, out, in, y.f32(), st());  // decode: bandwidth-bound, no conversion
      return;
    }
    if (w.dtype == DTYPE_BF16) {
      const void* xb = input_bf16(x, N * in);
      gemm_bf16(*dev_, false, true, N, out, in, 1.0f, xb, in, w.data, in, beta, y.data, DTYPE_F32, out);
    } else {
      require(w.dtype == DTYPE_F32, "linear weights must be BF16 or F32 on CUDA (model_to_device converts)");
      gemm_f32(*dev_, false, true, N, out, in, 1.0f, x.f32(), in, w.f32(), in, beta, y.f32(), out);
    }
  }

  // dx (N, in) = g (N, out) · W (out, in) + beta · dx.
  void gemm_gW(const Tensor& g, const Tensor& w, float beta, Tensor& dx) {
    const int64_t out = w.dim(0), in = w.dim(1), N = g.numel() / out;
    if (dtype_is_quant(w.dtype)) {  // dx = Σ over row chunks g[:, r0:r0+nr] · W[r0:r0+nr, :]
      void* gb = g_bf16_.get(size_t(N * out) * 2, st());
      cuda_convert_f32_to_bf16(g.f32(), gb, N * out, st());
      const int64_t rows = dequant_rows(w);
      for (int64_t r0 = 0; r0 < out; r0 += rows) {
        const int64_t nr = std::min(rows, out - r0);
        const void* wb = dequant_chunk(w, r0, nr, rows);
        gemm_bf16(*dev_, false, false, N, in, nr, 1.0f, static_cast<const char*>(gb) + size_t(r0) * 2, out, wb, in,
                  r0 == 0 ? beta : 1.0f, dx.data, DTYPE_F32, in);
      }
      return;
    }
    if (w.dtype == DTYPE_BF16) {
      void* gb = g_bf16_.get(size_t(N * out) * 2, st());
      cuda_convert_f32_to_bf16(g.f32(), gb, N * out, st());
      gemm_bf16(*dev_, false, false, N, in, out, 1.0f, gb, out, w.data, in, beta, dx.data, DTYPE_F32, in);
    } else {
      require(w.dtype == DTYPE_F32, "linear weights must be BF16 or F32 on CUDA");
      gemm_f32(*dev_, false, false, N, in, out, 1.0f, g.f32(), out, w.f32(), in, beta, dx.f32(), in);
    }
  }

  void linear_fwd(const Tensor& x, const Tensor& w, const Tensor* bias, Tensor& y) override {
    Scope prof(this, prof_ ? fmt::format("linear_fwd {}x{} N={}", w.dim(0), w.dim(1), x.numel() / w.dim(1)) : "", true);
    linear_fwd_impl(x, w, bias, y);
  }
  void linear_fwd_impl(const Tensor& x, const Tensor& w, const Tensor* bias, Tensor& y) {
    if (y.data == conv_src_) conv_forget();
    gemm_xwT(x, w, 0.0f, y);
    if (bias) cuda_bias_add(y.f32(), bias->data, bias->dtype, y.numel() / w.dim(0), w.dim(0), st());
  }

  // drop(x) into scratch (or x itself without dropout).
  const float* lora_input(const Tensor& x, const LoraOperand& lo) {
    if (lo.dropout <= 0.0f) return x.f32();
    float* d = static_cast<float*>(lora_drop_.get(size_t(x.numel()) * 4, st()));
    cuda_lora_dropout(x.f32(), d, x.numel(), lo.dropout, lo.dropout_key, lo.dropout_stream, st());
    return d;
  }

  void linear_lora_fwd(const Tensor& x, const Tensor& w, const Tensor* bias, const LoraOperand* lo, LoraSaved* saved,
                       Tensor& y) override {
    Scope prof(this, prof_ ? fmt::format("linear_lora_fwd {}x{}{}", w.dim(0), w.dim(1), lo ? (lo->is_dora() ? " dora" : " lora") : "") : "", true);
    if (y.data == conv_src_) conv_forget();  // the output overwrites the held input (never in the model)
    if (!lo) return linear_fwd_impl(x, w, bias, y);
    const int64_t out = w.dim(0), in = w.dim(1), N = x.numel() / in, r = lo->a.dim(1);
    require(lo->a.dim(0) == in && lo->b.dim(0) == r && lo->b.dim(1) == out, "lora shapes");
    const float* xd = lora_input(x, *lo);
    float* u = saved && saved->u.defined() ? saved->u.f32()
                                           : static_cast<float*>(lora_u_.get(size_t(N * r) * 4, st()));
    gemm_f32(*dev_, false, false, N, r, in, 1.0f, xd, in, lo->a.f32(), r, 0.0f, u, r);  // u = drop(x) A
    if (!lo->is_dora()) {
      linear_fwd_impl(x, w, bias, y);
      gemm_f32(*dev_, false, false, N, out, r, lo->scale, u, r, lo->b.f32(), out, 1.0f, y.f32(), out);
      return;
    }
    // DoRA: ypre = W x + scale · u B; y = (m / denom) ⊙ ypre + bias.
    float* ypre = saved && saved->ypre.defined() ? saved->ypre.f32()
                                                 : static_cast<float*>(lora_t_.get(size_t(N * out) * 4, st()));
    float* den = saved && saved->denom.defined() ? saved->denom.f32()
                                                 : static_cast<float*>(lora_den_.get(size_t(out) * 4, st()));
    Tensor yp = tensor_view(ypre, DTYPE_F32, {N, out}, DEVICE_CUDA);
    gemm_xwT(x, w, 0.0f, yp);
    gemm_f32(*dev_, false, false, N, out, r, lo->scale, u, r, lo->b.f32(), out, 1.0f, ypre, out);
    if (dtype_is_quant(w.dtype))  // the norms need the whole weight at once: one chunk of all its rows
      cuda_dora_denom(dequant_chunk(w, 0, out, std::max(out, dequant_rows(w))), DTYPE_BF16, lo->a.f32(), lo->b.f32(),
                      lo->scale, out, in, r, den, st());
    else
      cuda_dora_denom(w.data, w.dtype, lo->a.f32(), lo->b.f32(), lo->scale, out, in, r, den, st());
    cuda_dora_scale_fwd(ypre, lo->m.f32(), den, bias ? bias->data : nullptr, bias ? bias->dtype : DTYPE_F32, N, out,
                        y.f32(), st());
  }

  void linear_bwd(const Tensor& x, const Tensor& w, const Tensor& dy, Tensor* dx, bool dx_accumulate, Tensor* dw,
                  Tensor* dbias, const LoraOperand* lo, const LoraSaved* saved) override {
    Scope prof(this, prof_ ? fmt::format("linear_bwd {}x{}{}{}", w.dim(0), w.dim(1), lo ? " lora" : "", dx ? "" : " no-dx") : "");
    const int64_t out = w.dim(0), in = w.dim(1), N = dy.numel() / out;
    Tensor g = dy;
    if (lo && lo->is_dora()) {
      require(saved && saved->ypre.defined() && saved->denom.defined(), "dora backward needs ypre and denom");
      float* gd = static_cast<float*>(lora_t_.get(size_t(N * out) * 4, st()));
      cuda_dora_bwd(dy.f32(), saved->ypre.f32(), lo->m.f32(), saved->denom.f32(), N, out, gd,
                    lo->dm.defined() ? lo->dm.f32() : nullptr, st());
      g = tensor_view(gd, DTYPE_F32, {N, out}, DEVICE_CUDA);
    }
    if (dx) gemm_gW(g, w, dx_accumulate ? 1.0f : 0.0f, *dx);
    if (dw) gemm_f32(*dev_, true, false, out, in, N, 1.0f, g.f32(), out, x.f32(), in, 1.0f, dw->f32(), in);
    if (dbias) cuda_col_sum_acc(g.f32(), N, out, dbias->f32(), st());
    if (!lo) return;
    require(saved && saved->u.defined(), "lora backward needs the saved u");
    const int64_t r = lo->a.dim(1);
    // gb (N, r) = scale · g Bᵀ
    float* gb = static_cast<float*>(lora_g_.get(size_t(N * r) * 4, st()));
    gemm_f32(*dev_, false, true, N, r, out, lo->scale, g.f32(), out, lo->b.f32(), out, 0.0f, gb, r);
    // dB += scale · uᵀ g ; dA += drop(x)ᵀ gb
    if (lo->db.defined())
      gemm_f32(*dev_, true, false, r, out, N, lo->scale, saved->u.f32(), r, g.f32(), out, 1.0f, lo->db.f32(), out);
    if (lo->da.defined()) {
      const float* xd = lora_input(x, *lo);
      gemm_f32(*dev_, true, false, in, r, N, 1.0f, xd, in, gb, r, 1.0f, lo->da.f32(), r);
    }
    if (!dx) return;
    if (lo->dropout <= 0.0f) {
      gemm_f32(*dev_, false, true, N, in, r, 1.0f, gb, r, lo->a.f32(), r, 1.0f, dx->f32(), in);  // dx += gb Aᵀ
      return;
    }
    // With dropout: dx += mask ⊙ (gb Aᵀ) / (1 - p), the same mask as the forward.
    float* t = static_cast<float*>(lora_t_.get(size_t(N * in) * 4 * 2, st()));
    float* t2 = t + N * in;
    gemm_f32(*dev_, false, true, N, in, r, 1.0f, gb, r, lo->a.f32(), r, 0.0f, t, in);
    cuda_lora_dropout(t, t2, N * in, lo->dropout, lo->dropout_key, lo->dropout_stream, st());
    cuda_scale_add(dx->f32(), t2, 1.0f, N * in, st());
  }

  // ---- rope, attention, swiglu ----

  struct RopeDev {
    float* cos = nullptr;
    float* sin = nullptr;
  };
  // Device copies of RoPE tables, keyed by content (head dim, length, frequencies): a table's host address
  // may be reused by another model's table after the first is freed.
  const RopeDev& rope_dev(const RopeTable& rope) {
    std::vector<float> key = rope.inv_freq;
    key.push_back(float(rope.max_pos));
    key.push_back(float(rope.head_dim));
    auto it = rope_.find(key);
    if (it != rope_.end()) return it->second;
    RopeDev d;
    const size_t bytes = rope.cos.size() * 4;
    LORA_CUDA_CHECK(cudaMalloc(reinterpret_cast<void**>(&d.cos), std::max<size_t>(bytes, 4)));
    LORA_CUDA_CHECK(cudaMalloc(reinterpret_cast<void**>(&d.sin), std::max<size_t>(bytes, 4)));
    LORA_CUDA_CHECK(cudaMemcpy(d.cos, rope.cos.data(), bytes, cudaMemcpyHostToDevice));
    LORA_CUDA_CHECK(cudaMemcpy(d.sin, rope.sin.data(), bytes, cudaMemcpyHostToDevice));
    count_alloc(d.cos, bytes);
    count_alloc(d.sin, bytes);
    return rope_[key] = d;
  }

  void rope_fwd(Tensor& x, const int32_t* pos, const RopeTable& rope) override {
    Scope prof(this, prof_ ? "rope_fwd" : "");
    const RopeDev& d = rope_dev(rope);
    cuda_rope_fwd(x.f32(), pos, x.dim(0), x.dim(1), x.dim(2), d.cos, d.sin, rope.max_pos, st());
  }
  void rope_bwd(Tensor& dx, const int32_t* pos, const RopeTable& rope) override {
    Scope prof(this, prof_ ? "rope_bwd" : "");
    const RopeDev& d = rope_dev(rope);
    cuda_rope_bwd(dx.f32(), pos, dx.dim(0), dx.dim(1), dx.dim(2), d.cos, d.sin, rope.max_pos, st());
  }

  void attention_fwd(const Tensor& q, const Tensor& k, const Tensor& v, int64_t pos0, Tensor& out) override {
    Scope prof(this, prof_ ? fmt::format("attention_fwd T={}", q.dim(0)) : "");
    cuda_attention_fwd(q.f32(), k.f32(), v.f32(), out.f32(), q.dim(0), q.dim(1), k.dim(1), q.dim(2), k.dim(0), pos0,
                       st());
  }
  void attention_decode(const Tensor& q, const Tensor& k, const Tensor& v, const int32_t* n_keys, Tensor& out) override {
    Scope prof(this, prof_ ? "attention_decode" : "");
    const int64_t H = q.dim(1), D = q.dim(2), S = k.dim(0);
    const size_t ws = cuda_attention_decode_workspace_floats(H, D, S);
    float* w = static_cast<float*>(attn_ws_.get(std::max<size_t>(ws, 1) * 4, st()));
    cuda_attention_decode(q.f32(), k.f32(), v.f32(), out.f32(), H, k.dim(1), D, S, n_keys, w, st());
  }
  void kv_store(Tensor& cache, const Tensor& src, const int32_t* pos) override {
    Scope prof(this, prof_ ? "kv_store" : "");
    const int64_t row = cache.numel() / cache.dim(0);
    cuda_kv_store(cache.f32(), cache.dim(0), src.f32(), pos, src.numel() / row, row, st());
  }
  void attention_train_fwd(const Tensor& q, const Tensor& k, const Tensor& v, Tensor& out, Tensor& lse) override {
    Scope prof(this, prof_ ? "attention_train_fwd" : "");
    cuda_attention_train_fwd(q.f32(), k.f32(), v.f32(), out.f32(), lse.f32(), q.dim(0), q.dim(1), q.dim(2), k.dim(2),
                             q.dim(3), st());
  }
  void attention_bwd(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& out, const Tensor& lse,
                     const Tensor& dout, Tensor& dq, Tensor& dk, Tensor& dv) override {
    Scope prof(this, prof_ ? "attention_bwd" : "");
    cuda_attention_bwd(q.f32(), k.f32(), v.f32(), out.f32(), lse.f32(), dout.f32(), dq.f32(), dk.f32(), dv.f32(),
                       q.dim(0), q.dim(1), q.dim(2), k.dim(2), q.dim(3), st());
  }
  void swiglu_fwd(const Tensor& gate, const Tensor& up, Tensor& out) override {
    Scope prof(this, prof_ ? "swiglu_fwd" : "");
    cuda_swiglu_fwd(gate.f32(), up.f32(), out.f32(), out.numel(), st());
  }
  void swiglu_bwd(const Tensor& gate, const Tensor& up, const Tensor& dout, Tensor& dgate, Tensor& dup) override {
    Scope prof(this, prof_ ? "swiglu_bwd" : "");
    cuda_swiglu_bwd(gate.f32(), up.f32(), dout.f32(), dgate.f32(), dup.f32(), dout.numel(), st());
  }
  void add_fwd(Tensor& y, const Tensor& x) override {
    Scope prof(this, prof_ ? "add_fwd" : "");
    cuda_add_fwd(y.f32(), x.f32(), y.numel(), st());
  }

  // ---- loss and optimizer ----

  void xent_fwd_bwd(Tensor& logits, const int32_t* targets, const float* mask, const float* dscale, bool grad,
                    float* row_loss) override {
    Scope prof(this, prof_ ? "xent_fwd_bwd" : "");
    const int64_t V = logits.dim(-1), R = logits.numel() / V;
    cuda_xent_fwd_bwd(logits.f32(), R, V, targets, mask, 1.0f, grad, row_loss, st(), dscale);
  }

  void optimizer_update(const OptimizerSlot* slots, int64_t n, const OptimizerStep& s) override {
    Scope prof(this, prof_ ? "optimizer_update" : "");
    if (n == 0) return;
    std::vector<CudaOptTensor> table(static_cast<size_t>(n));
    int64_t max_n = 0;
    for (int64_t i = 0; i < n; ++i) {
      const OptimizerSlot& p = slots[i];
      require(p.w.device == DEVICE_CUDA && p.g.numel() == p.w.numel(), "optimizer slot");
      table[size_t(i)] = {p.w.f32(), p.g.f32(), p.m.defined() ? p.m.f32() : nullptr,
                          p.v.defined() ? p.v.f32() : nullptr, p.w.numel()};
      max_n = std::max(max_n, p.w.numel());
    }
    // The table changes only when the params move: upload it then (a pageable copy would stall the stream).
    const size_t bytes = table.size() * sizeof(CudaOptTensor);
    if (table_host_.size() != table.size() ||
        std::memcmp(table_host_.data(), table.data(), bytes) != 0) {
      void* d = opt_table_.get(bytes, st());
      LORA_CUDA_CHECK(cudaMemcpyAsync(d, table.data(), bytes, cudaMemcpyHostToDevice, st()));
      LORA_CUDA_CHECK(cudaStreamSynchronize(st()));
      table_host_ = table;
    }
    CudaOptScalars c{};
    c.lr = s.lr;
    c.b1 = s.b1;
    c.b2 = s.b2;
    c.omb1 = s.omb1;
    c.omb2 = s.omb2;
    c.eps = s.eps;
    c.c1 = s.c1;
    c.c2 = s.c2;
    c.decay = s.decay;
    c.wd = s.wd;
    c.mom = s.mom;
    c.damp = s.damp;
    c.bias_correction = s.bias_correction;
    c.nesterov = s.nesterov;
    c.sgd_dampening = s.dampening;
    c.sgd_momentum = s.mom > 0;
    const int kind = s.rule == OptimizerStep::RULE_SGD ? CUDA_OPT_SGD
                     : s.rule == OptimizerStep::RULE_ADAMW ? CUDA_OPT_ADAMW
                                                           : CUDA_OPT_ADAM;
    cuda_optimizer_update(static_cast<const CudaOptTensor*>(opt_table_.p), n, max_n, kind, c, st());
  }

 private:
  std::unique_ptr<CudaDevice> dev_;
  Scratch x_bf16_, g_bf16_, lora_u_, lora_g_, lora_drop_, lora_t_, lora_den_, opt_table_, attn_ws_;
  Scratch w_deq_;  // QLoRA: one chunk of a quantized weight dequantized to bf16 (dequant_chunk)
  std::vector<CudaOptTensor> table_host_;
  std::map<std::vector<float>, RopeDev> rope_;
  std::map<uint64_t, cudaGraphExec_t> graphs_;
  bool prof_ = false;
  bool conv_on_ = !std::getenv("LORA_NO_CONV_REUSE");  // the unfused path stays selectable
  bool gemv_on_ = !std::getenv("LORA_NO_GEMV");        // one-token linears: cuda_gemv_bf16, else cuBLASLt
  std::deque<ProfEvent> prof_events_;
};

}  // namespace

std::unique_ptr<Ops> cuda_ops_create(int index) {
  auto dev = cuda_device_open(index);
  auto ops = std::make_unique<CudaOps>(std::move(dev));
  g_mem_dev = &ops->dev();
  DeviceMemFns fns;
  fns.alloc = mem_alloc;
  fns.free = mem_free;
  fns.copy = mem_copy;
  fns.zero = mem_zero;
  device_mem_register(DEVICE_CUDA, fns);
  return ops;
}

CudaDevice* cuda_ops_device(Ops& ops) {
  auto* c = dynamic_cast<CudaOps*>(&ops);
  return c ? &c->dev() : nullptr;
}

int64_t cuda_ops_peak_bytes(Ops&) { return g_peak; }

void cuda_ops_reset_peak(Ops&) { g_peak = g_live; }

}  // namespace lora
