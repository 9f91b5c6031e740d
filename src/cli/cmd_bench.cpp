// `lora bench`: timed training steps and generation on one backend, one markdown table row per run
// (like llama-bench), and optionally one JSON object per row appended to --json FILE.
//
// Model: --model (HF folder or GGUF), or --preset tinyllama (the default): TinyLlama-1.1B's shape with
// random BF16 weights (model_init_random), written once under --cache-dir ($TMPDIR or /tmp) and
// memory-mapped on later runs.
//
// Training runs (the grid --batch-size x --mean-len x --grad-checkpoint): the workload of
// ../shared/bench/peft_baseline.py, so the numbers compare with transformers + PEFT. Sequence i has
// L = max(24, min(max_seq_length, int(gauss(mean, 0.3·mean)))) random ids in [3, V) (int() truncates,
// as the peer's script); a step is B sequences, inputs s[0:L-1] and targets s[1:L], padded with id 0
// to the longest row (--pad-multiple 32 pads as `lora train` does), mask 1 on real targets. Tokens
// per step = Σ(L - 1) (PEFT's count). A step is exactly one iteration of `lora train`: zero_grad,
// loss_and_grad, Optimizer::update (Adam, MLX semantics). A step's time ends when its update has been
// queued; loss_and_grad reads the loss back, so the GPU has finished that step's forward/backward and
// the previous step's update; the last timed step also waits for its own update (ops.sync), so the
// steps' times add up to the run's wall time. tokens/s = total tokens / total time (as PEFT).
// Peak memory: reset after the warm-up (on CUDA the peak restarts at the bytes live then, weights
// included, as torch.cuda.reset_peak_memory_stats; on the CPU VmHWM restarts at the current RSS).
//
// Generation runs (batch 1): one warm-up (a full prefill and a few decodes), then --gen-reps times a
// prefill of --prompt-len random tokens (one LlamaSession::forward) and --gen-len decode steps of one
// token each, feeding back the host argmax. KV cache: prompt-len + gen-len positions.
//
// FLOPs (model FLOPs: what the math needs; N = B·T padded rows, P = Σ in·out of a block's seven
// linears, A = causal attention 4·H·D·T(T+1)/2 per row and block, head = 2·N·V·C):
//   forward   = L·(2·N·P + A) + head + LoRA 2·N·r·(in+out) per adapted linear
//               (DoRA adds 2·out·in·(r+1) per adapted linear for the row norms of W + scale·BᵀAᵀ)
//   backward  = head + Σ blocks at and above the lowest trained one (2·N·P + 2·A): the activation
//               gradients dx = dy·W of the frozen weights (the lowest trained block skips q/k/v's dx)
//               and the attention's four products; full fine-tuning adds the weight gradients 2·N·P
//               per trained block; LoRA 2·N·r·(2·out + 2·in) per adapted linear (in once where no dx)
//   recompute = with --grad-checkpoint, the trained blocks' forward again: "hardware" FLOPs only
// MFU = (forward + backward) / time / the device's dense BF16 peak (a table by GPU name, or
// --peak-tflops); HFU adds the recompute. Element-wise ops are not counted (bench/bench_train.cpp
// counts the same way). Bytes: the weights each step reads (forward: every block and the head;
// backward: the head and the trained blocks again; recompute: the trained blocks once more), and for
// decode the weights plus the K/V rows attention reads; GB/s = those bytes / time (1 GB = 1e9 B).
#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <nlohmann/json.hpp>
#include <set>

#include <omp.h>

#include "cli/common.h"
#include "core/error.h"
#include "core/log.h"
#include "core/rng.h"
#include "core/timer.h"
#include "io/mapped_file.h"
#include "model/init.h"
#include "model/llama.h"
#include "model/llama_train.h"
#include "model/lora.h"
#include "train/adapter_io.h"
#include "train/optimizer.h"
#ifdef LORA_HAVE_CUDA
#include "cuda/cuda_ops.h"
#endif

namespace lora::cli {

namespace {

struct BenchFlags {
  std::string model, preset = "tinyllama", cache_dir, device = "auto", mode = "all", json_path;
  int threads = 0;
  std::string batch_sizes = "1", mean_lens = "89", grad_checkpoint = "0,1";
  int64_t max_seq_length = 512, pad_multiple = 1, iters = 50, warmup = 3;
  bool warm_shapes = true;
  int64_t lora_rank = 8, num_layers = 16;
  double lora_scale = 20.0, learning_rate = 1e-4, peak_tflops = 0;
  std::string lora_keys = "q_proj,v_proj", fine_tune_type = "lora", quantize;
  uint64_t seed = 42;
  int64_t prompt_len = 512, gen_len = 128, gen_reps = 1;
};

// ---- flag parsing ----

// "1,8" -> {1, 8}; every item an integer in [lo, hi], else lora::Error naming the flag.
std::vector<int64_t> parse_int_list(const char* flag, const std::string& s, int64_t lo, int64_t hi, const std::string& hint) {
  std::vector<int64_t> out;
  size_t i = 0;
  while (i <= s.size()) {
    size_t j = s.find(',', i);
    if (j == std::string::npos) j = s.size();
    std::string t = s.substr(i, j - i);
    while (!t.empty() && t.front() == ' ') t.erase(t.begin());
    while (!t.empty() && t.back() == ' ') t.pop_back();
    int64_t v = 0;
    const auto [end, ec] = std::from_chars(t.data(), t.data() + t.size(), v);
    if (t.empty() || ec != std::errc() || end != t.data() + t.size())
      fail_input(flag, fmt::format("'{}' in '{}' is not an integer", t, s), hint);
    if (v < lo) fail_input(flag, fmt::format("{} is below {}", v, lo), hint);
    if (v > hi) fail_input(flag, fmt::format("{} is above {}", v, hi), hint);
    out.push_back(v);
    i = j + 1;
  }
  return out;
}

std::vector<LinearKey> parse_keys(const std::string& s) {
  std::vector<LinearKey> keys;
  size_t i = 0;
  while (i <= s.size()) {
    size_t j = s.find(',', i);
    if (j == std::string::npos) j = s.size();
    const std::string t = s.substr(i, j - i);
    LinearKey k;
    if (!linear_key_from_name(t, &k))
      fail_input("--lora-keys", fmt::format("'{}' is not a linear layer", t), "e.g. q_proj,v_proj (q/k/v/o_proj, gate/up/down_proj)");
    keys.push_back(k);
    i = j + 1;
  }
  return keys;
}

// ---- statistics ----

struct Spread {
  double median = 0, min = 0, max = 0, p10 = 0, p90 = 0;
};
// numpy's default (linear) interpolation between order statistics.
double quantile(const std::vector<double>& sorted, double q) {
  const double h = double(sorted.size() - 1) * q;
  const size_t lo = size_t(std::floor(h)), hi = std::min(sorted.size() - 1, lo + 1);
  return sorted[lo] + (h - double(lo)) * (sorted[hi] - sorted[lo]);
}
Spread spread_of(std::vector<double> v) {
  LORA_CHECK(!v.empty(), "no samples");
  std::sort(v.begin(), v.end());
  return {quantile(v, 0.5), v.front(), v.back(), quantile(v, 0.1), quantile(v, 0.9)};
}

// ---- device ----

// Dense BF16 tensor-core peak (FLOP/s) from the GPU's name; 0 when unknown (the CPU, other GPUs).
double device_peak_flops(const Backend& b, double override_tflops) {
  if (override_tflops > 0) return override_tflops * 1e12;
  if (!b.is_gpu()) return 0;
  const std::string& d = b.description;
  auto has = [&d](const char* s) { return d.find(s) != std::string::npos; };
  if (has("H200")) return 989.4e12;
  if (has("H100") && has("PCIe")) return 756e12;
  if (has("H100") && (has("HBM3") || has("SXM"))) return 989.4e12;
  if (has("A100")) return 312e12;
  return 0;
}

// The GPU's name as torch.cuda.get_device_name gives it ("NVIDIA H100 80GB HBM3"), or "cpu".
std::string device_name(const Backend& b) {
#ifdef LORA_HAVE_CUDA
  if (const CudaDevice* d = b.is_gpu() ? cuda_ops_device(*b.ops) : nullptr) return d->name;
#endif
  return "cpu";
}

void reset_peak(const Backend& b) {
#ifdef LORA_HAVE_CUDA
  if (b.is_gpu()) {
    cuda_ops_reset_peak(*b.ops);
    return;
  }
#endif
  // Writing 5 to clear_refs restarts VmHWM (what peak_bytes reads) at the current RSS (Linux >= 4.0);
  // where it cannot, the peak is the process's since it started.
  if (std::FILE* f = std::fopen("/proc/self/clear_refs", "w")) {
    std::fputs("5", f);
    std::fclose(f);
  }
}

// ---- the preset model ----

const char* kTinyLlamaConfig = R"({
  "architectures": ["LlamaForCausalLM"],
  "model_type": "llama",
  "vocab_size": 32000,
  "hidden_size": 2048,
  "intermediate_size": 5632,
  "num_hidden_layers": 22,
  "num_attention_heads": 32,
  "num_key_value_heads": 4,
  "max_position_embeddings": 2048,
  "rms_norm_eps": 1e-05,
  "rope_theta": 10000.0,
  "tie_word_embeddings": false,
  "hidden_act": "silu",
  "initializer_range": 0.02,
  "bos_token_id": 1,
  "eos_token_id": 2,
  "attention_bias": false,
  "mlp_bias": false
}
)";

// The preset's model folder: reused when it holds a model of the preset's shape, else written (about
// 2.2 GB; model_init_random writes model.safetensors and then config.json, each atomically, so a
// folder with both is complete).
std::string preset_model_dir(const std::string& cache_flag) {
  std::string cache = cache_flag;
  if (cache.empty()) {
    const char* t = std::getenv("TMPDIR");
    cache = t && *t ? t : "/tmp";
  }
  make_dirs(cache);
  const std::string dir = path_join(cache, "lora-bench-tinyllama-bf16");
  const std::string src = path_join(cache, "lora-bench-tinyllama.config.json");
  write_file_atomic(src, kTinyLlamaConfig, std::strlen(kTinyLlamaConfig));
  const ModelConfig want = config_from_hf_json(src);
  if (path_exists(path_join(dir, "config.json")) && path_exists(path_join(dir, "model.safetensors"))) {
    const ModelConfig have = config_from_hf_json(path_join(dir, "config.json"));
    if (have.dim == want.dim && have.ffn_dim == want.ffn_dim && have.n_layers == want.n_layers && have.n_heads == want.n_heads &&
        have.n_kv_heads == want.n_kv_heads && have.vocab == want.vocab && have.max_pos == want.max_pos &&
        have.tie_embeddings == want.tie_embeddings && have.torch_dtype == "bfloat16")
      return dir;
  }
  std::fprintf(stderr, "writing TinyLlama-1.1B-shaped random BF16 weights to %s (once; later runs reuse them)...\n", dir.c_str());
  Timer t;
  ModelInitOptions o;
  o.dtype = DTYPE_BF16;
  o.seed = 0;  // the same weights whatever --seed, so the cache stays valid
  o.overwrite = true;
  model_init_random(src, dir, o);
  std::fprintf(stderr, "wrote %s in %.1f s\n", dir.c_str(), t.seconds());
  return dir;
}

// ---- costs ----

struct Cost {
  double fwd = 0, bwd = 0, recompute = 0;  // FLOPs
  double bytes = 0;                        // bytes of weights (and K/V) read
  double model_flops() const { return fwd + bwd; }
  double hw_flops() const { return fwd + bwd + recompute; }
  Cost& operator+=(const Cost& o) {
    fwd += o.fwd, bwd += o.bwd, recompute += o.recompute, bytes += o.bytes;
    return *this;
  }
};

double layer_bytes(const LayerWeights& w) {
  double n = 0;
  for (const Tensor* t : {&w.attn_norm, &w.wq, &w.wk, &w.wv, &w.wo, &w.bq, &w.bk, &w.bv, &w.ffn_norm, &w.w_gate, &w.w_up, &w.w_down})
    if (t->defined()) n += double(t->nbytes());
  return n;
}
double head_bytes(const Model& m) { return double(m.out_norm.nbytes() + m.lm_head.nbytes()); }
double all_bytes(const Model& m) {
  double n = head_bytes(m);
  for (const LayerWeights& w : m.layers) n += layer_bytes(w);
  return n;
}

struct BlockShape {
  double p = 0, p_qkv = 0;  // Σ in·out of the seven linears, of q/k/v
  explicit BlockShape(const ModelConfig& c) {
    for (int k = 0; k < LIN_COUNT; ++k) {
      const auto s = linear_key_shape(c, LinearKey(k));
      p += double(s[0]) * double(s[1]);
      if (k == LIN_Q || k == LIN_K || k == LIN_V) p_qkv += double(s[0]) * double(s[1]);
    }
  }
};

// One training step on a (B, T) batch (the formula in the header). eff: the model the session computes
// on (adapter_effective_model: full fine-tuning's fp32 blocks).
Cost train_step_cost(const Model& eff, const Adapter& ad, int64_t B, int64_t T, bool ckpt) {
  const ModelConfig& c = eff.cfg;
  const BlockShape bs(c);
  const double N = double(B) * double(T), r = double(ad.cfg.rank);
  const double attn = 4.0 * double(c.n_heads * c.head_dim) * (double(T) * double(T + 1) / 2) * double(B);
  const double head = 2.0 * N * double(c.vocab) * double(c.dim);
  const bool full = ad.cfg.type == FT_FULL;
  Cost f;
  f.fwd = double(c.n_layers) * (2.0 * N * bs.p + attn) + head;
  f.bwd = head;
  f.bytes = all_bytes(eff) + head_bytes(eff);
  for (int64_t l = ad.first_layer; l < c.n_layers; ++l) {
    const bool bottom = l == ad.first_layer;
    const double lb = layer_bytes(eff.layers[size_t(l)]);
    f.bwd += 2.0 * N * (bs.p - (bottom && !full ? bs.p_qkv : 0.0)) + 2.0 * attn;
    if (full) f.bwd += 2.0 * N * bs.p;
    f.bytes += lb;
    if (ckpt) {
      f.recompute += 2.0 * N * bs.p + attn;
      f.bytes += lb;
    }
    if (full) continue;
    for (int k = 0; k < LIN_COUNT; ++k) {
      const LoraLinear* ll = ad.lora[size_t(l)][size_t(k)];
      if (!ll) continue;
      const auto s = linear_key_shape(c, LinearKey(k));
      const double out = double(s[0]), in = double(s[1]);
      double lf = 2.0 * N * r * (in + out);
      if (ll->m.defined()) lf += 2.0 * out * in * (r + 1);
      f.fwd += lf;
      if (ckpt) f.recompute += lf;
      const bool dx = !(bottom && (k == LIN_Q || k == LIN_K || k == LIN_V));
      f.bwd += 2.0 * N * r * (2.0 * out + (dx ? 2.0 : 1.0) * in);
    }
  }
  return f;
}

// A prefill of n tokens from position 0 (the head runs for the last token only).
Cost prefill_cost(const Model& m, int64_t n) {
  const ModelConfig& c = m.cfg;
  Cost f;
  f.fwd = double(c.n_layers) * (2.0 * double(n) * BlockShape(c).p +
                                4.0 * double(c.n_heads * c.head_dim) * double(n) * double(n + 1) / 2) +
          2.0 * double(c.vocab) * double(c.dim);
  f.bytes = all_bytes(m);
  return f;
}

// One decode step at position p (p positions cached; attention reads p + 1 rows of K and V).
Cost decode_cost(const Model& m, const KVCache& kv, int64_t p) {
  const ModelConfig& c = m.cfg;
  Cost f;
  f.fwd = double(c.n_layers) * (2.0 * BlockShape(c).p + 4.0 * double(c.n_heads * c.head_dim) * double(p + 1)) +
          2.0 * double(c.vocab) * double(c.dim);
  const double kv_row = double(dtype_nbytes(kv.k[0].t.dtype, c.kv_dim()));
  f.bytes = all_bytes(m) + double(c.n_layers) * 2.0 * double(p + 1) * kv_row;
  return f;
}

// ---- data (peft_baseline.py's synthetic workload) ----

struct StepBatch {
  int64_t B = 0, T = 0, n_targets = 0;
  std::vector<int32_t> inputs, targets;  // (B, T)
  std::vector<float> mask;               // (B, T)
  TrainBatchView view() const { return {B, T, inputs.data(), targets.data(), mask.data()}; }
};

std::vector<StepBatch> make_batches(int64_t n_steps, int64_t B, int64_t mean_len, int64_t max_seq, int64_t pad_multiple,
                                    int64_t V, uint64_t seed) {
  Rng rng(seed, 0);
  auto gauss = [&rng](double mu, double sigma) {  // Box-Muller
    const double u1 = 1.0 - rng.uniform_double(), u2 = rng.uniform_double();
    return mu + sigma * std::sqrt(-2.0 * std::log(u1)) * std::cos(2.0 * M_PI * u2);
  };
  std::vector<StepBatch> out(static_cast<size_t>(n_steps));
  for (StepBatch& b : out) {
    std::vector<std::vector<int32_t>> seqs(static_cast<size_t>(B));
    int64_t longest = 0;
    for (auto& s : seqs) {
      const double g = gauss(double(mean_len), 0.3 * double(mean_len));
      int64_t L = std::max<int64_t>(24, std::min<int64_t>(max_seq, int64_t(std::trunc(std::clamp(g, -1e9, 1e9)))));
      L = std::min(L, max_seq);  // below 24 only when max_seq is
      s.resize(size_t(L));
      for (auto& id : s) id = int32_t(3 + rng.below(uint64_t(V - 3)));
      longest = std::max(longest, L);
    }
    b.B = B;
    b.T = std::min(max_seq, (longest - 1 + pad_multiple - 1) / pad_multiple * pad_multiple);
    b.T = std::max(b.T, longest - 1);
    b.inputs.assign(size_t(B * b.T), 0);
    b.targets.assign(size_t(B * b.T), 0);
    b.mask.assign(size_t(B * b.T), 0.0f);
    for (int64_t r = 0; r < B; ++r) {
      const auto& s = seqs[size_t(r)];
      for (int64_t t = 0; t + 1 < int64_t(s.size()); ++t) {
        const size_t i = size_t(r * b.T + t);
        b.inputs[i] = s[size_t(t)];
        b.targets[i] = s[size_t(t + 1)];
        b.mask[i] = 1.0f;
      }
      b.n_targets += int64_t(s.size()) - 1;
    }
  }
  return out;
}

// ---- runs and output ----

struct Row {
  std::string mode, test;  // mode: train | prefill | decode; test: the table's name ("train lora", "pp512", "tg128")
  int64_t batch = 1, mean_len = 0, prompt_len = 0, gen_len = 0, iters = 0;
  int ckpt = -1;  // -1: not a training row
  int64_t tokens = 0, padded_tokens = 0, trainable = 0;
  double seconds = 0;
  Spread ms;
  Cost cost;  // summed over the timed steps
  double peak_gib = 0, loss = std::nan("");
};

struct Bench {
  Bench(const BenchFlags& flags, Backend b) : f(flags), backend(std::move(b)) {}
  ~Bench() {
    if (json) std::fclose(json);
  }
  const BenchFlags& f;
  Backend backend;
  std::string model_label;
  Model host;    // as loaded
  Model placed;  // on the backend's device
  double peak_flops = 0;
  std::FILE* json = nullptr;  // --json, opened for appending (closed by the destructor)
};

std::string num(double v) {
  if (!std::isfinite(v)) return "-";
  const double a = std::fabs(v);
  if (a >= 100) return fmt::format("{:.0f}", v);
  if (a >= 10) return fmt::format("{:.1f}", v);
  if (a >= 1) return fmt::format("{:.2f}", v);
  return fmt::format("{:.3g}", v);
}

void print_table_header() {
  std::printf("| test | B | mean len | ckpt | tokens | tokens/s | ms (median) | ms min..max | ms p10..p90 | TFLOP/s | MFU | GB/s | peak GiB |\n");
  std::printf("|---|--:|--:|:-:|--:|--:|--:|--:|--:|--:|--:|--:|--:|\n");
  std::fflush(stdout);
}

void emit(Bench& b, const Row& r) {
  const double tflops = r.cost.model_flops() / r.seconds / 1e12;
  const double mfu = b.peak_flops > 0 && r.mode != "decode" ? r.cost.model_flops() / r.seconds / b.peak_flops : std::nan("");
  const double hfu = b.peak_flops > 0 && r.mode != "decode" ? r.cost.hw_flops() / r.seconds / b.peak_flops : std::nan("");
  const double gbs = r.cost.bytes / r.seconds / 1e9;
  std::printf("| %s | %lld | %s | %s | %lld | %.1f | %s | %s..%s | %s..%s | %s | %s | %s | %.3f |\n", r.test.c_str(),
              (long long)r.batch, r.mode == "train" ? std::to_string(r.mean_len).c_str() : "-",
              r.ckpt < 0 ? "-" : (r.ckpt ? "on" : "off"), (long long)r.tokens, double(r.tokens) / r.seconds,
              num(r.ms.median).c_str(), num(r.ms.min).c_str(), num(r.ms.max).c_str(), num(r.ms.p10).c_str(),
              num(r.ms.p90).c_str(), num(tflops).c_str(), std::isfinite(mfu) ? fmt::format("{:.1f}%", 100 * mfu).c_str() : "-",
              num(gbs).c_str(), r.peak_gib);
  std::fflush(stdout);
  if (!b.json) return;
  using nlohmann::json;
  auto or_null = [](double v) { return std::isfinite(v) ? json(v) : json(nullptr); };
  json j = {{"system", "lora.cpp"},
            {"mode", r.mode},
            {"test", r.test},
            {"device", b.backend.description},
            {"device_name", device_name(b.backend)},
            {"model", b.model_label},
            {"batch_size", r.batch},
            {"tokens", r.tokens},
            {"seconds", r.seconds},
            {"tokens_per_sec", double(r.tokens) / r.seconds},
            {"ms_per_step", 1e3 * r.seconds / double(r.mode == "train" ? r.iters : r.mode == "decode" ? r.gen_len * b.f.gen_reps : b.f.gen_reps)},
            {"ms_per_step_median", r.ms.median},
            {"ms_min", r.ms.min},
            {"ms_max", r.ms.max},
            {"p10", r.ms.p10},
            {"p90", r.ms.p90},
            {"peak_gib", r.peak_gib},
            {"model_tflop", r.cost.model_flops() / 1e12},
            {"hardware_tflop", r.cost.hw_flops() / 1e12},
            {"tflops", tflops},
            {"mfu", or_null(mfu)},
            {"hfu", or_null(hfu)},
            {"peak_tflops", b.peak_flops > 0 ? json(b.peak_flops / 1e12) : json(nullptr)},
            {"gb_per_s", gbs},
            {"threads", omp_get_max_threads()}};
  if (const char* c = std::getenv("LORA_COMMIT")) j["commit"] = c;
  if (r.mode == "train") {
    j["mean_len"] = r.mean_len;
    j["max_seq_length"] = b.f.max_seq_length;
    j["pad_multiple"] = b.f.pad_multiple;
    j["grad_checkpoint"] = r.ckpt == 1;
    j["iters"] = r.iters;
    j["warmup"] = b.f.warmup;
    j["warm_shapes"] = b.f.warm_shapes;
    j["padded_tokens"] = r.padded_tokens;
    j["fine_tune_type"] = b.f.fine_tune_type;
    j["lora_rank"] = b.f.lora_rank;
    j["lora_scale"] = b.f.lora_scale;
    j["lora_keys"] = b.f.lora_keys;
    j["num_layers"] = b.f.num_layers;
    j["learning_rate"] = b.f.learning_rate;
    j["seed"] = b.f.seed;
    j["trainable"] = r.trainable;
    j["loss"] = or_null(r.loss);
  } else {
    j["prompt_len"] = r.prompt_len;
    j["gen_len"] = r.gen_len;
    j["reps"] = b.f.gen_reps;
  }
  std::fprintf(b.json, "%s\n", j.dump().c_str());
  std::fflush(b.json);
}

void run_train(Bench& b, const LoraConfig& lc, int64_t B, int64_t mean_len, bool ckpt) {
  const BenchFlags& f = b.f;
  Ops& ops = *b.backend.ops;
  Adapter ad = adapter_create(b.host, lc, f.seed);
  b.backend.place(ad);
  Optimizer opt(optimizer_defaults(OPT_ADAM), ad);
  const std::vector<StepBatch> data =
      make_batches(f.warmup + f.iters, B, mean_len, f.max_seq_length, f.pad_multiple, b.host.cfg.vocab, f.seed);
  TrainSessionOptions so;
  so.max_batch = B;
  so.max_len = 1;
  for (const StepBatch& s : data) so.max_len = std::max(so.max_len, s.T);
  so.grad_checkpoint = ckpt;
  so.dropout_seed = f.seed;
  TrainSession session(b.placed, ad, ops, so);
  const Model eff = adapter_effective_model(b.placed, ad);

  Row r;
  r.mode = "train";
  r.test = fmt::format("train {}", fine_tune_type_name(lc.type));
  r.batch = B;
  r.mean_len = mean_len;
  r.ckpt = ckpt ? 1 : 0;
  r.iters = f.iters;
  r.trainable = ad.n_trainable();
  auto step = [&](int64_t i) {
    ad.zero_grad();
    const LossResult lr = session.loss_and_grad(data[size_t(i)].view(), i);
    opt.update(ad, float(f.learning_rate), ops);
    return lr.mean();
  };
  // Every length bucket of the timed steps is used twice first (a graph-recording backend runs a shape's
  // first step eagerly and records the second), as PEFT with torch.compile compiles every padded shape
  // before timing: the timed steps then show the steady state of a long run.
  if (f.warm_shapes) {
    std::set<std::pair<int64_t, int64_t>> seen;
    for (int64_t i = f.warmup; i < f.warmup + f.iters; ++i) {
      const StepBatch& s = data[size_t(i)];
      if (!seen.insert({s.B, (s.T + 31) / 32}).second) continue;
      for (int rep = 0; rep < 2; ++rep) {
        ad.zero_grad();
        session.loss_and_grad(s.view(), i);
      }
    }
    ad.zero_grad();
  }
  for (int64_t i = 0; i < f.warmup; ++i) step(i);
  ops.sync();
  reset_peak(b.backend);
  std::vector<double> ms;
  Timer total;
  for (int64_t i = f.warmup; i < f.warmup + f.iters; ++i) {
    Timer t;
    r.loss = step(i);
    if (i + 1 == f.warmup + f.iters) ops.sync();
    ms.push_back(1e3 * t.seconds());
    const StepBatch& s = data[size_t(i)];
    r.tokens += s.n_targets;
    r.padded_tokens += s.B * s.T;
    r.cost += train_step_cost(eff, ad, s.B, s.T, ckpt);
  }
  r.seconds = total.seconds();
  r.peak_gib = double(b.backend.peak_bytes()) / double(int64_t(1) << 30);
  r.ms = spread_of(ms);
  if (!std::isfinite(r.loss)) log_warn("bench: the last training loss is {} (B {}, mean len {})", r.loss, B, mean_len);
  emit(b, r);
}

int32_t argmax(const std::vector<float>& v) {
  return int32_t(std::max_element(v.begin(), v.end()) - v.begin());
}

void run_generate(Bench& b) {
  const BenchFlags& f = b.f;
  const ModelConfig& c = b.placed.cfg;
  Ops& ops = *b.backend.ops;
  reset_peak(b.backend);
  LlamaSession s(b.placed, ops, f.prompt_len + f.gen_len);
  Rng rng(f.seed, 1);
  std::vector<int32_t> prompt(static_cast<size_t>(f.prompt_len));
  for (auto& id : prompt) id = int32_t(3 + rng.below(uint64_t(c.vocab - 3)));
  std::vector<float> logits(static_cast<size_t>(c.vocab));

  // Warm-up: the same shapes as the timed passes (GEMM plans, scratch, caches).
  s.forward(prompt.data(), f.prompt_len, logits.data());
  int32_t tok = argmax(logits);
  for (int64_t i = 0; i < std::min<int64_t>(4, f.gen_len); ++i) {
    s.forward(&tok, 1, logits.data());
    tok = argmax(logits);
  }
  ops.sync();

  Row pp, tg;
  pp.mode = "prefill";
  pp.test = fmt::format("pp{}", f.prompt_len);
  tg.mode = "decode";
  tg.test = fmt::format("tg{}", f.gen_len);
  for (Row* r : {&pp, &tg}) r->prompt_len = f.prompt_len, r->gen_len = f.gen_len;
  std::vector<double> pp_ms, tg_ms;
  for (int64_t rep = 0; rep < f.gen_reps; ++rep) {
    s.truncate(0);
    Timer t;
    s.forward(prompt.data(), f.prompt_len, logits.data());  // returns once the logits are on the host
    tok = argmax(logits);
    const double sec = t.seconds();
    pp_ms.push_back(1e3 * sec);
    pp.seconds += sec;
    pp.tokens += f.prompt_len;
    pp.cost += prefill_cost(b.placed, f.prompt_len);
    for (int64_t i = 0; i < f.gen_len; ++i) {
      const int64_t p = s.cache().pos;
      Timer td;
      s.forward(&tok, 1, logits.data());
      tok = argmax(logits);
      const double sd = td.seconds();
      tg_ms.push_back(1e3 * sd);
      tg.seconds += sd;
      tg.tokens += 1;
      tg.cost += decode_cost(b.placed, s.cache(), p);
    }
  }
  pp.ms = spread_of(pp_ms);
  tg.ms = spread_of(tg_ms);
  pp.peak_gib = tg.peak_gib = double(b.backend.peak_bytes()) / double(int64_t(1) << 30);
  emit(b, pp);
  emit(b, tg);
}

int run_bench(const BenchFlags& flags, const CLI::App& cmd) {
  BenchFlags f = flags;  // defaults that do not fit the model are adjusted below (and reported as adjusted)
  auto given = [&](const char* flag) { return cmd.count(flag) > 0; };
  // Flags first, so that a typo fails before minutes of model generation.
  if (f.mode != "train" && f.mode != "generate" && f.mode != "all")
    fail_input("--mode", fmt::format("'{}' is not a mode", f.mode), "use train, generate or all");
  const bool do_train = f.mode != "generate", do_gen = f.mode != "train";
  const auto batch_sizes = parse_int_list("--batch-size", f.batch_sizes, 1, 1 << 20, "positive integers, comma-separated, e.g. 1,8");
  const auto mean_lens = parse_int_list("--mean-len", f.mean_lens, 1, 1 << 30, "positive integers, comma-separated, e.g. 89,256");
  const auto ckpts = parse_int_list("--grad-checkpoint", f.grad_checkpoint, 0, 1, "0 (off), 1 (on) or both: 0,1");
  FineTuneType ft;
  if (!fine_tune_type_from_name(f.fine_tune_type, &ft))
    fail_input("--fine-tune-type", fmt::format("'{}' is not a fine-tune type", f.fine_tune_type), "use lora, dora or full");
  const std::vector<LinearKey> keys = parse_keys(f.lora_keys);
  if (f.iters < 1) fail_input("--iters", fmt::format("{} is below 1", f.iters), "time at least one step");
  if (f.warmup < 0) fail_input("--warmup", "is negative", "give the number of untimed steps (0 or more)");
  if (f.max_seq_length < 2) fail_input("--max-seq-length", fmt::format("{} is below 2", f.max_seq_length), "a sequence needs an input and a target");
  if (f.pad_multiple < 1) fail_input("--pad-multiple", fmt::format("{} is below 1", f.pad_multiple), "1 pads to the longest row; 32 as lora train");
  if (f.lora_rank < 1) fail_input("--lora-rank", fmt::format("{} is below 1", f.lora_rank), "");
  if (f.num_layers == 0 || f.num_layers < -1) fail_input("--num-layers", fmt::format("{} is out of range", f.num_layers), "the last N blocks (N >= 1), or -1 for all");
  if (f.prompt_len < 1) fail_input("--prompt-len", fmt::format("{} is below 1", f.prompt_len), "");
  if (f.gen_len < 1) fail_input("--gen-len", fmt::format("{} is below 1", f.gen_len), "");
  if (f.gen_reps < 1) fail_input("--gen-reps", fmt::format("{} is below 1", f.gen_reps), "");
  if (given("--model") && given("--preset")) fail_input("--preset", "was given together with --model", "give one");
  if (!given("--model") && f.preset != "tinyllama")
    fail_input("--preset", fmt::format("'{}' is not a preset", f.preset), "the preset is tinyllama; or give --model");
  apply_threads(f.threads);

  Bench b(f, backend_open(f.device));
  std::string path = f.model;
  if (given("--model")) {
    b.model_label = f.model;
  } else {
    path = preset_model_dir(f.cache_dir);
    b.model_label = "tinyllama-1.1b-random";
  }
  const DType quant = parse_quantize_flag(f.quantize);
  if (quant != DTYPE_F32) b.model_label += "-" + f.quantize;
  b.host = model_load(path, backend_load_options(b.backend, quant));
  const ModelConfig& c = b.host.cfg;
  if (c.vocab <= 3) fail_input(path, fmt::format("the vocabulary has {} tokens", c.vocab), "the benchmark draws ids from [3, V)");

  // Sizes against the model (defaults adapt quietly, values given must fit).
  if (f.max_seq_length > c.max_pos) {
    if (given("--max-seq-length"))
      fail_input("--max-seq-length", fmt::format("{} exceeds the model's context length of {}", f.max_seq_length, c.max_pos), "use a smaller value");
    f.max_seq_length = c.max_pos;
  }
  if (f.num_layers > c.n_layers) {
    if (given("--num-layers"))
      fail_input("--num-layers", fmt::format("is {} but the model has only {} layers", f.num_layers, c.n_layers),
                 fmt::format("use 1..{} (the last N blocks) or -1 for all", c.n_layers));
    f.num_layers = c.n_layers;
  }
  if (do_gen && f.prompt_len + f.gen_len > c.max_pos)
    fail_input("--prompt-len", fmt::format("{} + --gen-len {} exceeds the model's context length of {}", f.prompt_len, f.gen_len, c.max_pos),
               "use a shorter prompt or fewer generated tokens");

  b.placed = b.backend.place(b.host);
  b.peak_flops = device_peak_flops(b.backend, f.peak_tflops);
  if (!f.json_path.empty()) {
    b.json = std::fopen(f.json_path.c_str(), "a");
    if (!b.json) fail_input("--json", fmt::format("cannot open {} for appending", f.json_path), "check the path and permissions");
  }

  LoraConfig lc;
  lc.type = ft;
  lc.rank = f.lora_rank;
  lc.scale = f.lora_scale;
  lc.keys = keys;
  lc.num_layers = f.num_layers;

  const char* commit = std::getenv("LORA_COMMIT");
  std::printf("lora bench | device: %s | model: %s (%sM parameters, %s weights) | peak BF16: %s | commit: %s\n",
              b.backend.description.c_str(), b.model_label.c_str(), num(double(c.n_params()) / 1e6).c_str(),
              dtype_name(b.placed.layers.empty() ? b.placed.lm_head.dtype : b.placed.layers[0].wq.dtype),
              b.peak_flops > 0 ? fmt::format("{:.1f} TFLOP/s", b.peak_flops / 1e12).c_str() : "-", commit && *commit ? commit : "-");
  if (do_train) {
    const std::string blocks = f.num_layers < 0 ? std::string("all blocks") : fmt::format("the last {} blocks", f.num_layers);
    const std::string what = ft == FT_FULL ? "full fine-tuning of " + blocks
                                           : fmt::format("{} rank {} scale {:g} on {} of {}", f.fine_tune_type, f.lora_rank,
                                                         f.lora_scale, f.lora_keys, blocks);
    std::printf("train: %s, adam lr %g; %lld timed steps after %lld warm-up; lengths max(24, N(mean, 0.3 mean)) <= %lld, "
                "padded to %s, seed %llu\n",
                what.c_str(), f.learning_rate, (long long)f.iters, (long long)f.warmup, (long long)f.max_seq_length,
                f.pad_multiple == 1 ? "the longest row" : fmt::format("a multiple of {}", f.pad_multiple).c_str(),
                (unsigned long long)f.seed);
  }
  std::printf("\n");
  print_table_header();

  // Generation first: its buffers are small, so the training rows' peaks are not raised by them.
  if (do_gen) run_generate(b);
  if (do_train)
    for (int64_t B : batch_sizes)
      for (int64_t len : mean_lens)
        for (int64_t ck : ckpts) run_train(b, lc, B, len, ck != 0);
  return 0;
}

}  // namespace

void register_bench(CLI::App& app, Action& action) {
  auto f = std::make_shared<BenchFlags>();
  auto* cmd = app.add_subcommand("bench", "Benchmark training steps and generation (tokens/s, ms/step, peak memory, MFU)");
  cmd->add_option("--model,-m", f->model, "Model: a Hugging Face folder or a .gguf file (default: --preset)");
  cmd->add_option("--preset", f->preset, "Random-weight model when no --model: tinyllama (TinyLlama-1.1B's shape, BF16)");
  cmd->add_option("--cache-dir", f->cache_dir, "Where the preset's weights are written once and reused (default $TMPDIR or /tmp)");
  cmd->add_option("--mode", f->mode, "train, generate or all");
  cmd->add_option("--batch-size", f->batch_sizes, "Training batch sizes, comma-separated (one run each)");
  cmd->add_option("--mean-len", f->mean_lens, "Mean sequence lengths, comma-separated (lengths ~ N(mean, 0.3 mean), at least 24)");
  cmd->add_option("--max-seq-length", f->max_seq_length, "Longest training sequence (default: 512 or the model's context)");
  cmd->add_option("--pad-multiple", f->pad_multiple, "Pad each batch to a multiple of this (1 = the longest row, as PEFT; 32 = lora train)");
  cmd->add_option("--grad-checkpoint", f->grad_checkpoint, "Gradient checkpointing off (0), on (1), or both (0,1)");
  cmd->add_option("--iters", f->iters, "Timed training steps per run");
  cmd->add_option("--warmup", f->warmup, "Untimed training steps first");
  cmd->add_option("--warm-shapes", f->warm_shapes,
                  "Run each 32-token length bucket of the timed steps twice before timing (CUDA graphs recorded)");
  cmd->add_option("--fine-tune-type", f->fine_tune_type, "lora, dora or full");
  cmd->add_option("--lora-rank", f->lora_rank, "LoRA rank");
  cmd->add_option("--lora-scale", f->lora_scale, "LoRA scale");
  cmd->add_option("--num-layers", f->num_layers, "Blocks to fine-tune, counted from the last (-1 = all)");
  cmd->add_option("--lora-keys", f->lora_keys, "Comma-separated layers to adapt");
  cmd->add_option("--learning-rate", f->learning_rate, "Adam learning rate");
  cmd->add_option("--seed", f->seed, "Seed for the data and the LoRA initialisation");
  cmd->add_option("--prompt-len", f->prompt_len, "Generation: prompt tokens (prefill)");
  cmd->add_option("--gen-len", f->gen_len, "Generation: decode steps of one token");
  cmd->add_option("--gen-reps", f->gen_reps, "Generation: timed prefill + decode repetitions");
  cmd->add_option("--peak-tflops", f->peak_tflops, "Dense BF16 peak for MFU (0 = from the GPU's name; none on the CPU)");
  cmd->add_option("--json", f->json_path, "Append one JSON object per table row to this file");
  cmd->add_option("--threads,-t", f->threads, "CPU threads (0 = all cores)")->check(CLI::NonNegativeNumber);
  add_device_flag(cmd, f->device);
  cmd->add_option("--quantize", f->quantize, "QLoRA: quantize the model's weights at load (q8_0, q4_0, q4_k, ...)");
  cmd->callback([f, cmd, &action] { action = [f, cmd] { return run_bench(*f, *cmd); }; });
}

}  // namespace lora::cli
