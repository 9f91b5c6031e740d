// Length-sorted batches, a seeded visiting order per epoch, padding and the loss mask (see batching.h).
#include "io/batching.h"

#include <algorithm>
#include <numeric>

#include "core/error.h"
#include "core/log.h"
#include "core/rng.h"

namespace lora {

namespace {
// Rng stream of the batch order: a tag in the high word keeps it apart from the streams other users
// of the same --seed draw (LoRA init, dropout); the epoch is the low word.
constexpr uint64_t kOrderStreamTag = uint64_t(0xBA7C0DE5u) << 32;
}  // namespace

int64_t batch_padded_len(int64_t max_len, int64_t max_seq_length) {
  const int64_t L = std::max<int64_t>(1, max_len - 1);
  const int64_t padded = kBatchPadMultiple * ((L + kBatchPadMultiple - 1) / kBatchPadMultiple);
  return std::min(padded, max_seq_length);
}

BatchIterator::BatchIterator(const std::vector<Example>& examples, const BatchOptions& opts, const std::string& what)
    : examples_(&examples), opts_(opts) {
  if (opts.batch_size < 1) fail_input("--batch-size", fmt::format("must be at least 1, got {}", opts.batch_size));
  if (opts.max_seq_length < 2)
    fail_input("--max-seq-length", fmt::format("must be at least 2, got {}", opts.max_seq_length));
  const int64_t n = int64_t(examples.size());
  if (n < opts.batch_size)
    fail_input(what, fmt::format("has {} example(s), fewer than --batch-size {}", n, opts.batch_size),
               "lower --batch-size or add examples");
  std::vector<int64_t> idx(size_t(n), 0);
  std::iota(idx.begin(), idx.end(), 0);
  std::stable_sort(idx.begin(), idx.end(),
                   [&](int64_t a, int64_t b) { return examples[size_t(a)].tokens.size() < examples[size_t(b)].tokens.size(); });
  // Full batches only, as mlx-lm: range(0, n - batch_size + 1, batch_size).
  for (int64_t i = 0; i + opts.batch_size <= n; i += opts.batch_size) {
    batches_.emplace_back(idx.begin() + i, idx.begin() + i + opts.batch_size);
    for (int64_t j : batches_.back())
      if (int64_t(examples[size_t(j)].tokens.size()) > opts.max_seq_length) ++n_truncated_;
  }
  if (n_truncated_ > 0)
    log_warn("{}: {} of {} example(s) are longer than --max-seq-length {} tokens and will be truncated", what,
             n_truncated_, batches_.size() * size_t(opts.batch_size), opts.max_seq_length);
}

std::vector<int64_t> BatchIterator::epoch_order(int64_t epoch) const {
  LORA_CHECK(epoch >= 0 && epoch <= int64_t(UINT32_MAX), "epoch {} out of range", epoch);
  std::vector<int64_t> order(batches_.size());
  std::iota(order.begin(), order.end(), 0);
  Rng rng(opts_.seed, kOrderStreamTag | uint64_t(epoch));
  // Fisher-Yates.
  for (size_t i = order.size(); i > 1; --i) std::swap(order[i - 1], order[size_t(rng.below(i))]);
  return order;
}

Batch BatchIterator::batch_at(int64_t k) const {
  LORA_CHECK(k >= 0, "negative iteration {}", k);
  const int64_t n = batches_per_epoch();
  return make_batch(epoch_order(k / n)[size_t(k % n)]);
}

Batch BatchIterator::batch_sorted(int64_t i) const {
  LORA_CHECK(i >= 0 && i < batches_per_epoch(), "batch {} out of range", i);
  return make_batch(i);
}

Batch BatchIterator::make_batch(int64_t b) const {
  const auto& rows = batches_[size_t(b)];
  const int64_t msl = opts_.max_seq_length;
  Batch out;
  out.B = int64_t(rows.size());
  int64_t max_len = 0;
  for (int64_t j : rows) max_len = std::max(max_len, std::min<int64_t>(int64_t((*examples_)[size_t(j)].tokens.size()), msl));
  const int64_t T = batch_padded_len(max_len, msl);
  out.T = T;
  out.rows = rows;
  out.inputs.assign(size_t(out.B * T), 0);
  out.targets.assign(size_t(out.B * T), 0);
  out.mask.assign(size_t(out.B * T), 0.0f);
  for (int64_t r = 0; r < out.B; ++r) {
    const Example& ex = (*examples_)[size_t(rows[size_t(r)])];
    const int64_t len = std::min<int64_t>(int64_t(ex.tokens.size()), msl);  // truncated length
    out.n_tokens += len;
    int32_t* in = out.inputs.data() + r * T;
    int32_t* tg = out.targets.data() + r * T;
    float* m = out.mask.data() + r * T;
    for (int64_t t = 0; t < T; ++t) {
      if (t < len) in[t] = ex.tokens[size_t(t)];
      if (t + 1 < len) {
        tg[t] = ex.tokens[size_t(t + 1)];
        if (t + 1 >= ex.offset) {
          m[t] = 1.0f;
          ++out.n_targets;
        }
      }
    }
  }
  return out;
}

}  // namespace lora
