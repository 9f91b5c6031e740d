// metrics.jsonl (one JSON object per training report or evaluation, full float precision) and the
// loss curve loss.svg drawn from it (hand-written SVG: train and validation curves, ticked axes,
// labels, legend).
#pragma once
#include <cstdint>
#include <cstdio>
#include <optional>
#include <string>
#include <vector>

namespace lora {

struct MetricsRecord {
  std::string kind;  // "train" | "val"
  int64_t iter = 0;
  std::optional<double> train_loss, val_loss, learning_rate, iterations_per_sec, tokens_per_sec, val_time_s;
  int64_t trained_tokens = 0;
  double peak_mem_gb = 0, elapsed_s = 0;
};

// One line of JSON: every key present, null where it does not apply, numbers as %.17g.
std::string metrics_line(const MetricsRecord& r);

class MetricsWriter {
 public:
  // Opens dir/metrics.jsonl: truncated, or (keep_upto >= 0) rewritten with only the lines whose iter
  // is <= keep_upto, then appended to.
  MetricsWriter(const std::string& path, int64_t keep_upto);
  ~MetricsWriter();
  MetricsWriter(const MetricsWriter&) = delete;
  MetricsWriter& operator=(const MetricsWriter&) = delete;
  void write(const MetricsRecord& r);  // appends and flushes

 private:
  std::string path_;
  std::FILE* f_ = nullptr;
};

struct LossPoint {
  int64_t iter;
  double loss;
};
// Reads (iter, train_loss) and (iter, val_loss) points from a metrics.jsonl (bad lines skipped).
void metrics_read_losses(const std::string& path, std::vector<LossPoint>* train, std::vector<LossPoint>* val);
// The SVG text of a loss plot.
std::string loss_svg(const std::vector<LossPoint>& train, const std::vector<LossPoint>& val, const std::string& title);

}  // namespace lora
