// Batching (io/batching.h): length sorting, full batches only, the seeded per-epoch order and its
// resumability, the padding rule, truncation and its single warning, and the loss mask (exactly the
// real targets at or after the offset; padding never).
#include <algorithm>
#include <set>

#include "core/error.h"
#include "io/batching.h"
#include "test_util.h"

namespace lora {
namespace {

// Example i has lengths[i] tokens with ids 100*i + 1, 100*i + 2, ... (never 0, the pad id).
std::vector<Example> make_examples(const std::vector<int64_t>& lengths, const std::vector<int64_t>& offsets = {}) {
  std::vector<Example> ex(lengths.size());
  for (size_t i = 0; i < lengths.size(); ++i) {
    for (int64_t t = 0; t < lengths[i]; ++t) ex[i].tokens.push_back(int32_t(100 * i + t + 1));
    ex[i].offset = offsets.empty() ? 0 : offsets[i];
  }
  return ex;
}

TEST(Batching, PaddedLengthRule) {
  // T = min(32 * ceil((len - 1) / 32), max_seq_length), at least one block.
  EXPECT_EQ(batch_padded_len(1, 2048), 32);
  EXPECT_EQ(batch_padded_len(2, 2048), 32);
  EXPECT_EQ(batch_padded_len(33, 2048), 32);  // 32 inputs + 1 target row
  EXPECT_EQ(batch_padded_len(34, 2048), 64);
  EXPECT_EQ(batch_padded_len(65, 2048), 64);
  EXPECT_EQ(batch_padded_len(66, 2048), 96);
  EXPECT_EQ(batch_padded_len(512, 512), 512);  // truncated rows: capped at max_seq_length
  EXPECT_EQ(batch_padded_len(500, 512), 512);
  EXPECT_EQ(batch_padded_len(10, 8), 8);
  EXPECT_EQ(batch_padded_len(5, 16), 16);
}

TEST(Batching, OneRowByHand) {
  // tokens 1..5, loss from token 3 on: targets t=2 (token 4) and t=3 (token 5) only.
  std::vector<Example> ex(1);
  ex[0].tokens = {11, 12, 13, 14, 15};
  ex[0].offset = 3;
  BatchIterator it(ex, {1, 2048, 0});
  const Batch b = it.batch_at(0);
  ASSERT_EQ(b.B, 1);
  ASSERT_EQ(b.T, 32);
  ASSERT_EQ(b.inputs.size(), 32u);
  const std::vector<int32_t> in_head = {11, 12, 13, 14, 15, 0};
  const std::vector<int32_t> tg_head = {12, 13, 14, 15, 0, 0};
  const std::vector<float> m_head = {0, 0, 1, 1, 0, 0};
  EXPECT_EQ(std::vector<int32_t>(b.inputs.begin(), b.inputs.begin() + 6), in_head);
  EXPECT_EQ(std::vector<int32_t>(b.targets.begin(), b.targets.begin() + 6), tg_head);
  EXPECT_EQ(std::vector<float>(b.mask.begin(), b.mask.begin() + 6), m_head);
  for (size_t t = 6; t < 32; ++t) {
    EXPECT_EQ(b.inputs[t], 0);
    EXPECT_EQ(b.targets[t], 0);
    EXPECT_EQ(b.mask[t], 0.0f);
  }
  EXPECT_EQ(b.n_tokens, 5);
  EXPECT_EQ(b.n_targets, 2);
}

TEST(Batching, MaskCoversExactlyTheRealTargets) {
  const std::vector<int64_t> lengths = {3, 40, 17, 64, 65, 2, 9, 33};
  const std::vector<int64_t> offsets = {0, 10, 0, 63, 0, 0, 5, 40};  // the last: offset past its end
  const auto ex = make_examples(lengths, offsets);
  BatchIterator it(ex, {4, 2048, 7});
  int64_t total_targets = 0, total_tokens = 0;
  for (int64_t i = 0; i < it.batches_per_epoch(); ++i) {
    const Batch b = it.batch_sorted(i);
    ASSERT_EQ(b.T % 32, 0);
    int64_t longest = 0, sum_mask = 0;
    for (int64_t r = 0; r < b.B; ++r) {
      const Example& e = ex[size_t(b.rows[size_t(r)])];
      const int64_t len = int64_t(e.tokens.size());
      longest = std::max(longest, len);
      int64_t row_targets = 0;
      for (int64_t t = 0; t < b.T; ++t) {
        const size_t k = size_t(r * b.T + t);
        // inputs/targets are the row shifted by one, then zeros.
        EXPECT_EQ(b.inputs[k], t < len ? e.tokens[size_t(t)] : 0);
        EXPECT_EQ(b.targets[k], t + 1 < len ? e.tokens[size_t(t + 1)] : 0);
        if (b.mask[k] != 0.0f) {
          EXPECT_EQ(b.mask[k], 1.0f);
          EXPECT_NE(b.targets[k], 0) << "padding in the mask";
          ++row_targets;
        }
      }
      // Real targets are tokens 1..len-1; those at or after the offset count.
      EXPECT_EQ(row_targets, std::max<int64_t>(0, len - std::max<int64_t>(e.offset, 1))) << "row of length " << len;
      sum_mask += row_targets;
    }
    EXPECT_EQ(b.T, batch_padded_len(longest, 2048));
    EXPECT_EQ(b.n_targets, sum_mask);
    total_targets += b.n_targets;
    total_tokens += b.n_tokens;
  }
  EXPECT_EQ(total_tokens, 3 + 40 + 17 + 64 + 65 + 2 + 9 + 33);
  EXPECT_EQ(total_targets, 2 + 30 + 16 + 1 + 64 + 1 + 4 + 0);
}

TEST(Batching, SortedFullBatchesOnly) {
  // 10 examples, batch 4: two batches of the 8 shortest; the 2 longest are never seen (as mlx-lm).
  const std::vector<int64_t> lengths = {50, 3, 90, 7, 7, 20, 100, 1, 60, 30};
  const auto ex = make_examples(lengths);
  BatchIterator it(ex, {4, 2048, 1});
  ASSERT_EQ(it.batches_per_epoch(), 2);
  std::vector<int64_t> seen_lengths;
  std::set<int64_t> seen_rows;
  for (int64_t i = 0; i < 2; ++i)
    for (int64_t r : it.batch_sorted(i).rows) {
      seen_lengths.push_back(lengths[size_t(r)]);
      seen_rows.insert(r);
    }
  EXPECT_EQ(seen_lengths, (std::vector<int64_t>{1, 3, 7, 7, 20, 30, 50, 60}));
  EXPECT_EQ(seen_rows.count(2), 0u);  // length 90
  EXPECT_EQ(seen_rows.count(6), 0u);  // length 100
  // Ties keep file order: the two length-7 examples are 3 then 4.
  EXPECT_EQ(it.batch_sorted(0).rows, (std::vector<int64_t>{7, 1, 3, 4}));
}

TEST(Batching, TooFewExamplesIsAnError) {
  const auto ex = make_examples({5, 6, 7});
  try {
    BatchIterator it(ex, {4, 2048, 0}, "data/train.jsonl");
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_EQ(std::string(e.what()), "data/train.jsonl: has 3 example(s), fewer than --batch-size 4");
  }
  EXPECT_THROW(BatchIterator(ex, {0, 2048, 0}), Error);
  EXPECT_THROW(BatchIterator(ex, {1, 1, 0}), Error);
}

std::vector<int64_t> lengths_n(int n) {
  std::vector<int64_t> l;
  for (int i = 0; i < n; ++i) l.push_back(1 + (i * 37) % 200);
  return l;
}

TEST(Batching, EpochOrderIsAPermutationPerSeedAndEpoch) {
  const auto ex = make_examples(lengths_n(40));
  BatchIterator a(ex, {2, 2048, 42}), b(ex, {2, 2048, 42}), c(ex, {2, 2048, 43});
  ASSERT_EQ(a.batches_per_epoch(), 20);
  for (int64_t e = 0; e < 4; ++e) {
    auto o = a.epoch_order(e);
    EXPECT_EQ(o, b.epoch_order(e)) << "epoch " << e;
    std::vector<int64_t> sorted = o;
    std::sort(sorted.begin(), sorted.end());
    for (int64_t i = 0; i < 20; ++i) EXPECT_EQ(sorted[size_t(i)], i);
  }
  // 20! orders: two seeds, or two epochs, giving the same one means the seed/epoch is ignored.
  EXPECT_NE(a.epoch_order(0), c.epoch_order(0));
  EXPECT_NE(a.epoch_order(0), a.epoch_order(1));
  // Iteration k is batch order[k % n] of epoch k / n.
  for (int64_t k : {0, 5, 19, 20, 33, 79}) {
    EXPECT_EQ(a.epoch_of(k), k / 20);
    EXPECT_EQ(a.batch_at(k).rows, a.batch_sorted(a.epoch_order(k / 20)[size_t(k % 20)]).rows) << k;
  }
}

TEST(Batching, ResumeReproducesTheStream) {
  const auto ex = make_examples(lengths_n(24));
  BatchIterator full(ex, {3, 128, 9});
  std::vector<Batch> ref;
  for (int i = 0; i < 30; ++i) ref.push_back(full.next());
  EXPECT_EQ(full.step(), 30);
  BatchIterator resumed(ex, {3, 128, 9});
  resumed.seek(17);
  for (int i = 17; i < 30; ++i) {
    const Batch b = resumed.next();
    EXPECT_EQ(b.rows, ref[size_t(i)].rows) << i;
    EXPECT_EQ(b.inputs, ref[size_t(i)].inputs) << i;
    EXPECT_EQ(b.mask, ref[size_t(i)].mask) << i;
  }
  // Every epoch visits every batch once.
  std::set<std::vector<int64_t>> epoch0, epoch1;
  for (int i = 0; i < 8; ++i) epoch0.insert(ref[size_t(i)].rows);
  for (int i = 8; i < 16; ++i) epoch1.insert(ref[size_t(i)].rows);
  EXPECT_EQ(epoch0.size(), 8u);
  EXPECT_EQ(epoch0, epoch1);
}

TEST(Batching, TruncationWarnsOnceWithTheCount) {
  // max_seq_length 8: lengths 12 and 9 are cut to 8 tokens; the 20 is in the dropped last batch.
  const auto ex = make_examples({12, 3, 9, 5, 20});
  testing::internal::CaptureStderr();
  BatchIterator it(ex, {2, 8, 0}, "d/train.jsonl");
  for (int k = 0; k < 6; ++k) it.next();
  const std::string err = testing::internal::GetCapturedStderr();
  EXPECT_EQ(it.n_truncated(), 2);
  EXPECT_NE(err.find("d/train.jsonl: 2 of 4 example(s) are longer than --max-seq-length 8 tokens and will be truncated"),
            std::string::npos)
      << err;
  EXPECT_EQ(err.find("warning"), err.rfind("warning")) << "more than one warning: " << err;
  // The batch of the two long rows: 8 tokens each, T = 8, 7 targets each, no zero inside.
  const Batch b = it.batch_sorted(1);
  ASSERT_EQ(b.rows, (std::vector<int64_t>{2, 0}));
  EXPECT_EQ(b.T, 8);
  EXPECT_EQ(b.n_tokens, 16);
  EXPECT_EQ(b.n_targets, 14);
  for (int64_t t = 0; t < 8; ++t) {
    EXPECT_EQ(b.inputs[size_t(8 + t)], ex[0].tokens[size_t(t)]);
    EXPECT_EQ(b.targets[size_t(8 + t)], t < 7 ? ex[0].tokens[size_t(t + 1)] : 0);
    EXPECT_EQ(b.mask[size_t(8 + t)], t < 7 ? 1.0f : 0.0f);
  }
}

TEST(Batching, NoTruncationNoWarning) {
  const auto ex = make_examples({12, 3, 9, 5});
  testing::internal::CaptureStderr();
  BatchIterator it(ex, {2, 2048, 0});
  EXPECT_EQ(testing::internal::GetCapturedStderr(), "");
  EXPECT_EQ(it.n_truncated(), 0);
}

}  // namespace
}  // namespace lora
