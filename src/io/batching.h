// Batches for training and evaluation, as mlx-lm's iterate_batches (v0.28.1) with its known bugs fixed.
//
//  - Examples are sorted by token length (stable: ties keep file order) and cut into consecutive
//    batches of batch_size. As in mlx-lm only full batches are used: the data set must hold at least
//    batch_size examples, and the last len % batch_size (longest) examples are never visited.
//    (mlx-lm sorts by the number of JSON keys of a record, i.e. not at all — their issue #596.)
//  - Each epoch visits every batch once, in a random order that is a pure function of (seed, epoch)
//    (lora::Rng), so iteration k's batch is the same whether training started at 0 or resumed at k.
//  - Rows longer than max_seq_length are truncated to max_seq_length tokens (one warning, at
//    construction, counts them). With L = the longest (truncated) row length - 1 in the batch, the
//    model sees T = min(32·ceil(L/32), max_seq_length) positions: rows are padded with id 0 to T+1,
//    inputs = row[0:T], targets = row[1:T+1]. (mlx-lm pads the row to 1 + 32·ceil((L+1)/32) capped at
//    max_seq_length; ours is the same rule measured on the inputs, so T is a multiple of 32 or
//    max_seq_length.)
//  - mask[b, t] = 1 exactly when target t is a real token at or after the example's loss offset:
//    offset <= t+1 < length. Padding is never counted (mlx-lm's `steps <= length` counts one padding
//    target per row — their PR #1697).
//  - Evaluation (mlx-lm draws a fresh random order for every validation pass, so --val-batches N
//    scores a different subset each time): take batch_at(0 .. N-1) of an iterator built on the
//    validation set, i.e. epoch 0's order, the same N batches at every evaluation.
#pragma once
#include <cstdint>
#include <vector>

#include "io/dataset.h"

namespace lora {

struct Batch {
  int64_t B = 0, T = 0;
  std::vector<int32_t> inputs;   // (B, T)
  std::vector<int32_t> targets;  // (B, T)
  std::vector<float> mask;       // (B, T) 1 on the targets the loss covers, else 0
  std::vector<int64_t> rows;     // (B,) index of each row's example in the data set
  int64_t n_tokens = 0;   // sum of the rows' (truncated) lengths: the "Trained Tokens" mlx-lm reports for
                          // unmasked data (its mask counts length targets per row, one of them padding)
  int64_t n_targets = 0;  // sum of mask: the loss's denominator
};

struct BatchOptions {
  int64_t batch_size = 4;
  int64_t max_seq_length = 2048;
  uint64_t seed = 0;
};

// Rows are padded to a multiple of this many inputs.
inline constexpr int64_t kBatchPadMultiple = 32;

// T for a batch whose longest row (already truncated) has `max_len` tokens.
int64_t batch_padded_len(int64_t max_len, int64_t max_seq_length);

class BatchIterator {
 public:
  // Keeps a pointer to `examples`, which must outlive the iterator. `what` names the data in errors
  // and the truncation warning (e.g. "data/train.jsonl"). lora::Error when there are fewer examples
  // than batch_size or the options are out of range.
  BatchIterator(const std::vector<Example>& examples, const BatchOptions& opts, const std::string& what = "data");

  int64_t batches_per_epoch() const { return int64_t(batches_.size()); }
  int64_t n_truncated() const { return n_truncated_; }  // examples (in full batches) longer than max_seq_length
  int64_t epoch_of(int64_t k) const { return k / batches_per_epoch(); }

  // Visiting order of the batches in `epoch` (a permutation of 0..batches_per_epoch()-1).
  std::vector<int64_t> epoch_order(int64_t epoch) const;
  // The batch of training iteration k (0-based): epoch k / n, position k % n of that epoch's order.
  Batch batch_at(int64_t k) const;
  // Batch number `i` in the length-sorted order (no shuffling), e.g. for evaluation over all batches.
  Batch batch_sorted(int64_t i) const;

  // Sequential use: next() returns batch_at(step()) and advances; seek(k) resumes at iteration k.
  Batch next() { return batch_at(step_++); }
  void seek(int64_t k) { step_ = k; }
  int64_t step() const { return step_; }

 private:
  Batch make_batch(int64_t b) const;

  const std::vector<Example>* examples_;
  BatchOptions opts_;
  std::vector<std::vector<int64_t>> batches_;  // example indices of each batch, in sorted order
  int64_t n_truncated_ = 0;
  int64_t step_ = 0;
};

}  // namespace lora
