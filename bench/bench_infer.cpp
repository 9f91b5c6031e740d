// Inference benchmark on the CPU: prefill and decode tokens/s for a model, with the achieved memory
// bandwidth against a measured STREAM-like read bandwidth of this machine (the roofline for batch-1
// decode, which reads every weight once per token).
//
//   bench_infer --model DIR|FILE [--dtype f32|bf16] [--prefill 512] [--decode 32] [--reps 5] [--threads N]
//
// Each measurement: one warm-up, then --reps timed runs; prints the median and the spread (min..max).
#include <omp.h>
#include <sys/mman.h>
#ifdef __AVX2__
#include <immintrin.h>
#endif

#include <cstdlib>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cstdio>
#include <numeric>
#include <vector>

#include "core/error.h"
#include "core/log.h"
#include "core/rng.h"
#include "core/timer.h"
#include "cpu/cpu_ops.h"
#include "model/llama.h"
#include "model/model.h"

using namespace lora;

namespace {

struct Stat {
  double median, min, max;
};
Stat stats(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return {v[v.size() / 2], v.front(), v.back()};
}

// Read bandwidth in GB/s: every thread sums its contiguous part of a 1 GiB buffer (much larger than
// the caches) with four independent integer accumulators, so the loop is bound by memory, not by add
// latency. The buffer is 2 MiB-aligned and advised for transparent huge pages (fewer TLB misses).
double measure_read_bandwidth(int reps) {
  const size_t n = size_t(1) << 28;  // 1 GiB of uint32
  auto* a = static_cast<uint32_t*>(std::aligned_alloc(size_t(2) << 20, n * 4));
  if (!a) throw std::bad_alloc();
  ::madvise(a, n * 4, MADV_HUGEPAGE);
#pragma omp parallel for schedule(static)
  for (size_t i = 0; i < n; ++i) a[i] = uint32_t(i & 1023);
  std::vector<double> gbs;
  volatile uint64_t sink = 0;
  for (int r = 0; r < reps + 1; ++r) {
    Timer t;
    uint64_t total = 0;
#pragma omp parallel reduction(+ : total)
    {
      const size_t nt = size_t(omp_get_num_threads()), id = size_t(omp_get_thread_num());
      const size_t b = n / 32 * id / nt * 32, e = n / 32 * (id + 1) / nt * 32;
#ifdef __AVX2__
      __m256i s0 = _mm256_setzero_si256(), s1 = s0, s2 = s0, s3 = s0;
      for (size_t i = b; i < e; i += 32) {
        s0 = _mm256_add_epi32(s0, _mm256_load_si256(reinterpret_cast<const __m256i*>(a + i)));
        s1 = _mm256_add_epi32(s1, _mm256_load_si256(reinterpret_cast<const __m256i*>(a + i + 8)));
        s2 = _mm256_add_epi32(s2, _mm256_load_si256(reinterpret_cast<const __m256i*>(a + i + 16)));
        s3 = _mm256_add_epi32(s3, _mm256_load_si256(reinterpret_cast<const __m256i*>(a + i + 24)));
      }
      alignas(32) uint32_t lanes[8];
      _mm256_store_si256(reinterpret_cast<__m256i*>(lanes), _mm256_add_epi32(_mm256_add_epi32(s0, s1), _mm256_add_epi32(s2, s3)));
      for (uint32_t l : lanes) total += l;
#else
      uint32_t s0 = 0;
      for (size_t i = b; i < e; ++i) s0 += a[i];
      total += s0;
#endif
    }
    sink = sink + total;
    if (r > 0) gbs.push_back(double(n * 4) / t.seconds() / 1e9);
  }
  std::free(a);
  return stats(gbs).median;
}

int64_t weight_bytes_per_token(const Model& m) {
  // Decode reads every layer weight, the final norm and the LM head once; of the embedding only a row.
  int64_t b = m.out_norm.nbytes() + m.lm_head.nbytes();
  for (const auto& l : m.layers)
    for (const Tensor* t : {&l.attn_norm, &l.wq, &l.wk, &l.wv, &l.wo, &l.ffn_norm, &l.w_gate, &l.w_up, &l.w_down, &l.bq, &l.bk, &l.bv})
      if (t->defined()) b += t->nbytes();
  return b;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"CPU inference benchmark: prefill and decode tokens/s against the memory-bandwidth roofline"};
  std::string model_path, dtype = "f32";
  int64_t prefill = 512, decode = 32;
  int reps = 5, threads = 0;
  app.add_option("--model", model_path, "Model folder or .gguf")->required();
  app.add_option("--dtype", dtype, "Weight storage for compute: f32 or bf16")->capture_default_str();
  app.add_option("--prefill", prefill, "Prompt length for the prefill measurement")->capture_default_str();
  app.add_option("--decode", decode, "Tokens per decode measurement")->capture_default_str();
  app.add_option("--reps", reps, "Timed repetitions (after one warm-up)")->capture_default_str();
  app.add_option("--threads", threads, "Threads (0 = all cores)")->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  if (threads > 0) omp_set_num_threads(threads);

  try {
    ModelLoadOptions lo;
    if (!dtype_from_name(dtype, &lo.compute_dtype)) throw lora::Error("unknown --dtype " + dtype);
    Timer tl;
    Model m = model_load(model_path, lo);
    const double load_s = tl.seconds();
    const int64_t V = m.cfg.vocab;
    const int64_t wbytes = weight_bytes_per_token(m);
    std::printf("model: %s (%.1fM parameters, weights for compute in %s, %.2f GB read per decoded token), loaded in %.1f s\n",
                model_path.c_str(), double(m.cfg.n_params()) / 1e6, dtype.c_str(), double(wbytes) / 1e9, load_s);
    std::printf("threads: %d\n", omp_get_max_threads());
    const double bw = measure_read_bandwidth(5);
    std::printf("measured read bandwidth: %.2f GB/s (median of 5, 1 GiB buffer)\n", bw);

    Rng rng(1);
    std::vector<int32_t> toks(size_t(prefill + decode + 8));
    for (auto& t : toks) t = int32_t(rng.below(uint64_t(V)));
    std::vector<float> logits(static_cast<size_t>(V));

    LlamaSession s(m, cpu_ops(), prefill + decode + 8, std::max<int64_t>(prefill, 1));
    // Prefill.
    std::vector<double> pre;
    for (int r = 0; r < reps + 1; ++r) {
      s.truncate(0);
      Timer t;
      s.forward(toks.data(), prefill, logits.data());
      if (r > 0) pre.push_back(double(prefill) / t.seconds());
    }
    // Decode after a short prompt.
    std::vector<double> dec;
    for (int r = 0; r < reps + 1; ++r) {
      s.truncate(0);
      s.forward(toks.data(), 8, logits.data());
      Timer t;
      for (int64_t i = 0; i < decode; ++i) s.forward(&toks[size_t(8 + i)], 1, logits.data());
      if (r > 0) dec.push_back(double(decode) / t.seconds());
    }
    const Stat p = stats(pre), d = stats(dec);
    const double flops_per_tok = 2.0 * double(m.cfg.n_params() - m.cfg.vocab * m.cfg.dim * (m.cfg.tie_embeddings ? 0 : 1));
    std::printf("\n| measurement | tokens/s (median) | spread (min..max) | roofline unit |\n|---|---:|---:|---|\n");
    std::printf("| prefill %lld tokens | %.1f | %.1f..%.1f | %.1f GFLOP/s |\n", (long long)prefill, p.median, p.min, p.max,
                p.median * flops_per_tok / 1e9);
    const double gbs = d.median * double(wbytes) / 1e9;
    std::printf("| decode batch 1 (%lld tokens) | %.2f | %.2f..%.2f | %.2f GB/s = %.0f%% of measured bandwidth |\n",
                (long long)decode, d.median, d.min, d.max, gbs, 100.0 * gbs / bw);
    std::printf("\npeak RSS: %.2f GB\n", double(peak_rss_bytes()) / 1e9);
  } catch (const lora::Error& e) {
    std::fprintf(stderr, "error: %s\n", e.full().c_str());
    return 1;
  }
  return 0;
}
