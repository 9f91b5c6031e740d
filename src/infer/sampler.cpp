// Sampler implementation (see sampler.h).
#include "infer/sampler.h"

#include <algorithm>
#include <cmath>
#include <unordered_set>

namespace lora {

int32_t argmax(const float* x, int64_t n) {
  int64_t best = 0;
  for (int64_t i = 1; i < n; ++i)
    if (x[i] > x[best]) best = i;
  return int32_t(best);
}

Sampler::Sampler(const SamplerParams& p) : p_(p), rng_(p.seed, /*stream=*/0x5A4D) {}

int32_t Sampler::sample(float* logits, int64_t vocab, const std::vector<int32_t>& history) {
  if (p_.repetition_penalty != 1.0f && !history.empty()) {
    const size_t start = history.size() > size_t(p_.repetition_context) ? history.size() - p_.repetition_context : 0;
    std::unordered_set<int32_t> seen(history.begin() + start, history.end());
    for (int32_t id : seen) {
      if (id < 0 || id >= vocab) continue;
      float& l = logits[id];
      l = l > 0 ? l / p_.repetition_penalty : l * p_.repetition_penalty;
    }
  }
  if (p_.temp <= 0.0f) return argmax(logits, vocab);

  // Candidates sorted by logit, descending; filters cut the tail.
  cand_.resize(size_t(vocab));
  for (int64_t i = 0; i < vocab; ++i) cand_[i] = {logits[i], int32_t(i)};
  size_t n = cand_.size();
  auto by_logit = [](const auto& a, const auto& b) { return a.first > b.first || (a.first == b.first && a.second < b.second); };
  if (p_.top_k > 0 && size_t(p_.top_k) < n) {
    std::partial_sort(cand_.begin(), cand_.begin() + p_.top_k, cand_.end(), by_logit);
    n = size_t(p_.top_k);
  } else {
    std::sort(cand_.begin(), cand_.end(), by_logit);
  }
  // Probabilities at temperature 1 for the filters (as llama.cpp's top-p/min-p before temp).
  const float mx = cand_[0].first;
  std::vector<double> prob(n);
  double sum = 0;
  for (size_t i = 0; i < n; ++i) sum += (prob[i] = std::exp(double(cand_[i].first - mx)));
  if (p_.top_p < 1.0f) {
    double acc = 0;
    size_t keep = n;
    for (size_t i = 0; i < n; ++i) {
      acc += prob[i] / sum;
      if (acc >= p_.top_p) {
        keep = i + 1;
        break;
      }
    }
    n = std::max<size_t>(keep, 1);
  }
  if (p_.min_p > 0.0f) {
    // Keep tokens whose probability is at least min_p times the top one's.
    size_t keep = 1;
    while (keep < n && prob[keep] >= p_.min_p * prob[0]) ++keep;
    n = keep;
  }
  // Temperature, then draw.
  double total = 0;
  for (size_t i = 0; i < n; ++i) total += (prob[i] = std::exp(double(cand_[i].first - mx) / p_.temp));
  const double r = rng_.uniform_double() * total;
  double acc = 0;
  for (size_t i = 0; i < n; ++i) {
    acc += prob[i];
    if (r < acc) return cand_[i].second;
  }
  return cand_[n - 1].second;
}

}  // namespace lora
