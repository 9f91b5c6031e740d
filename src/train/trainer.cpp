// The training loop (see trainer.h for what it mirrors and where it deliberately differs).
#include "train/trainer.h"

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <optional>

#include "core/error.h"
#include "core/log.h"
#include "core/timer.h"
#include "io/batching.h"
#include "io/mapped_file.h"
#include "train/adapter_io.h"
#include "train/metrics.h"

namespace lora {

std::string format_fixed3(double v) { return fmt::format("{:.3f}", v); }
std::string format_sci3(double v) { return fmt::format("{:.3e}", v); }

namespace {

TrainBatchView view_of(const Batch& b) { return {b.B, b.T, b.inputs.data(), b.targets.data(), b.mask.data()}; }

int64_t longest(const std::vector<Example>& ex) {
  int64_t n = 0;
  for (const Example& e : ex) n = std::max<int64_t>(n, int64_t(e.tokens.size()));
  return n;
}

// Positions a session must plan for: the padded length of the longest row any batch can hold.
int64_t planned_len(const std::vector<const std::vector<Example>*>& sets, int64_t max_seq_length) {
  int64_t n = 2;
  for (const auto* s : sets)
    if (s) n = std::max(n, longest(*s));
  return batch_padded_len(std::min(n, max_seq_length), max_seq_length);
}

double eval_batches(TrainSession& s, const BatchIterator& it, int64_t num_batches) {
  int64_t n = it.batches_per_epoch();
  if (num_batches >= 0) n = std::min(n, num_batches);
  double loss_sum = 0;
  int64_t targets = 0;
  for (int64_t i = 0; i < n; ++i) {
    const Batch b = it.batch_sorted(i);
    const LossResult r = s.loss(view_of(b));
    loss_sum += r.loss_sum;
    targets += r.n_targets;
  }
  return targets ? loss_sum / double(targets) : std::nan("");
}

void check_enough(const std::vector<Example>& ex, int64_t batch_size, const std::string& what) {
  if (int64_t(ex.size()) < batch_size)
    fail_input("--batch-size", fmt::format("is {} but {} has only {} examples", batch_size, what, ex.size()),
               "use a smaller --batch-size or add examples (each batch needs batch-size examples)");
}

std::string clock_str(double s) {
  if (!std::isfinite(s) || s < 0) return "--:--";
  const int64_t t = int64_t(s + 0.5);
  return t >= 3600 ? fmt::format("{}:{:02d}:{:02d}", t / 3600, (t / 60) % 60, t % 60) : fmt::format("{:02d}:{:02d}", t / 60, t % 60);
}

// A one-line progress bar on stderr (only when it is a terminal), cleared before report lines.
class Progress {
 public:
  Progress(bool on, int64_t first, int64_t total) : on_(on), first_(first), total_(total) {}
  void show(int64_t it) {
    if (!on_) return;
    const double el = t_.seconds();
    const double rate = double(it - first_ + 1) / std::max(el, 1e-9);
    const double eta = double(total_ - it) / rate;
    const int w = 30, fill = int(double(w) * double(it) / double(total_));
    std::string bar(size_t(fill), '#');
    bar.resize(size_t(w), '.');
    std::fprintf(stderr, "\r[%s] %lld/%lld  %s elapsed, ETA %s, %.2f it/s\033[K", bar.c_str(), (long long)it, (long long)total_,
                 clock_str(el).c_str(), clock_str(eta).c_str(), rate);
    std::fflush(stderr);
    shown_ = true;
  }
  void clear() {
    if (on_ && shown_) std::fputs("\r\033[K", stderr), std::fflush(stderr);
    shown_ = false;
  }

 private:
  bool on_;
  int64_t first_, total_;
  bool shown_ = false;
  Timer t_;
};

}  // namespace

double evaluate_loss(const Model& m, Adapter& a, Ops& ops, const std::vector<Example>& ex, int64_t batch_size,
                     int64_t num_batches, int64_t max_seq_length, const std::string& what) {
  check_enough(ex, batch_size, what);
  BatchIterator it(ex, BatchOptions{batch_size, max_seq_length, 0}, what);
  TrainSessionOptions so;
  so.max_batch = batch_size;
  so.max_len = planned_len({&ex}, max_seq_length);
  TrainSession s(m, a, ops, so);
  return eval_batches(s, it, num_batches);
}

TrainSummary train_run(const Model& m, Adapter& a, Ops& ops, const std::vector<Example>& train,
                       const std::vector<Example>* valid, const TrainerOptions& o) {
  std::FILE* out = o.out ? o.out : stdout;
  LORA_CHECK(o.iters >= 1 && o.batch_size >= 1 && o.grad_accumulation_steps >= 1, "bad trainer options");
  const int64_t k = o.grad_accumulation_steps;
  check_enough(train, o.batch_size, "train.jsonl");
  const BatchOptions bo{o.batch_size, o.max_seq_length, o.seed};
  BatchIterator train_it(train, bo, "train.jsonl");
  std::optional<BatchIterator> valid_it;
  if (valid && o.val_batches != 0) {
    check_enough(*valid, o.batch_size, "valid.jsonl");
    valid_it.emplace(*valid, bo, "valid.jsonl");
  }

  make_dirs(o.adapter_path);
  const std::string adapter_file = path_join(o.adapter_path, kAdapterWeightsFile);
  Optimizer opt(o.optimizer, a);
  TrainState st;
  st.seed = o.seed;
  st.optimizer = optimizer_kind_name(o.optimizer.kind);
  st.fine_tune_type = fine_tune_type_name(a.cfg.type);
  st.batch_size = o.batch_size;
  st.grad_accumulation_steps = k;
  int64_t start = 1;
  if (o.resume) {
    const auto latest = train_state_latest(o.adapter_path);
    if (!latest)
      fail_input("--resume", "no checkpoint with training state in " + o.adapter_path,
                 "run without --resume first; checkpoints are written every --save-every iterations and at the last one");
    if (*latest >= o.iters)
      fail_input("--resume", fmt::format("the newest checkpoint in {} is at iteration {}, which already reaches --iters {}",
                                         o.adapter_path, *latest, o.iters),
                 "--iters counts the total: set it above the checkpoint's iteration");
    const TrainState saved = train_state_load(o.adapter_path, *latest, opt);
    if (saved.optimizer != st.optimizer)
      fail_input("--optimizer", fmt::format("is {} but the checkpoint was trained with {}", st.optimizer, saved.optimizer), "resume with the same optimizer");
    if (saved.fine_tune_type != st.fine_tune_type)
      fail_input("--fine-tune-type", fmt::format("is {} but the checkpoint is {}", st.fine_tune_type, saved.fine_tune_type), "resume with the same type");
    if (saved.batch_size != o.batch_size)
      fail_input("--batch-size", fmt::format("is {} but the checkpoint used {}", o.batch_size, saved.batch_size), "resume with the same batch size");
    if (saved.grad_accumulation_steps != k)
      fail_input("--grad-accumulation-steps", fmt::format("is {} but the checkpoint used {}", k, saved.grad_accumulation_steps),
                 "resume with the same value");
    if (saved.seed != o.seed) log_warn("--seed {} differs from the checkpoint's {}: the data order changes from here on", o.seed, saved.seed);
    adapter_load_weights(path_join(o.adapter_path, adapter_checkpoint_name(*latest)), a, /*require_all=*/true);
    st = saved;
    st.seed = o.seed;
    start = *latest + 1;
    std::fprintf(out, "Resuming from iteration %lld (%s)\n", (long long)*latest,
                 path_join(o.adapter_path, adapter_checkpoint_name(*latest)).c_str());
  }
  MetricsWriter metrics(path_join(o.adapter_path, "metrics.jsonl"), o.resume ? start - 1 : -1);

  TrainSessionOptions so;
  so.max_batch = o.batch_size;
  so.max_len = planned_len({&train, valid_it ? valid : nullptr}, o.max_seq_length);
  so.grad_checkpoint = o.grad_checkpoint;
  so.dropout_seed = o.seed;
  TrainSession session(m, a, ops, so);

  std::fprintf(out, "Starting training..., iters: %lld\n", (long long)o.iters);
  std::fflush(out);
  const bool tty = o.progress < 0 ? ::isatty(STDERR_FILENO) != 0 : o.progress > 0;
  Progress progress(tty, start, o.iters);
  TrainSummary sum;
  sum.first_iter = start;
  Timer run_timer;
  const double elapsed0 = st.elapsed_s;
  double losses = st.report_loss_sum;
  int64_t n_tokens = st.report_tokens, steps = st.report_steps, trained_tokens = st.trained_tokens;
  double train_time = 0;
  auto elapsed = [&] { return elapsed0 + run_timer.seconds(); };
  auto peak_gb = [&o] { return double(o.peak_mem_bytes ? o.peak_mem_bytes() : int64_t(peak_rss_bytes())) / 1e9; };
  auto save_checkpoint = [&](int64_t it) {
    st.iteration = it;
    st.optimizer_step = opt.step();
    st.trained_tokens = trained_tokens;
    st.elapsed_s = elapsed();
    st.report_loss_sum = losses, st.report_steps = steps, st.report_tokens = n_tokens;
    adapter_save_weights(path_join(o.adapter_path, adapter_checkpoint_name(it)), a);
    train_state_save(o.adapter_path, st, opt);
  };

  for (int64_t it = start; it <= o.iters; ++it) {
    if (valid_it && (it == 1 || it % o.steps_per_eval == 0 || it == o.iters)) {
      Timer vt;
      const double val_loss = eval_batches(session, *valid_it, o.val_batches);
      const double val_time = vt.seconds();
      progress.clear();
      std::fprintf(out, "Iter %lld: Val loss %s, Val took %ss\n", (long long)it, format_fixed3(val_loss).c_str(),
                   format_fixed3(val_time).c_str());
      std::fflush(out);
      MetricsRecord r;
      r.kind = "val";
      r.iter = it;
      r.val_loss = val_loss;
      r.val_time_s = val_time;
      r.trained_tokens = trained_tokens;
      r.peak_mem_gb = peak_gb();
      r.elapsed_s = elapsed();
      metrics.write(r);
      if (sum.first_val_loss < 0) sum.first_val_loss = val_loss;
      sum.last_val_loss = val_loss;
    }

    Timer step_timer;
    a.zero_grad();
    double it_loss = 0;
    int64_t it_tokens = 0;
    for (int64_t j = 0; j < k; ++j) {
      const int64_t micro = (it - 1) * k + j;
      const Batch b = train_it.batch_at(micro);
      if (b.n_targets == 0) continue;  // nothing to learn from (all targets masked)
      const LossResult r = session.loss_and_grad(view_of(b), micro, double(b.n_targets) * double(k));
      it_loss += r.mean() / double(k);
      it_tokens += r.n_targets;
    }
    const float lr = schedule_value(o.schedule, opt.step());
    opt.update(a, lr, ops);
    train_time += step_timer.seconds();
    losses += it_loss;
    n_tokens += it_tokens;
    steps += 1;
    sum.last_iter = it;

    if (it % o.steps_per_report == 0 || it == o.iters) {
      const double train_loss = losses / double(steps);
      const double it_sec = double(steps) / train_time;
      const double tok_sec = double(n_tokens) / train_time;
      trained_tokens += n_tokens;
      const double pk = peak_gb();
      progress.clear();
      std::fprintf(out, "Iter %lld: Train loss %s, Learning Rate %s, It/sec %s, Tokens/sec %s, Trained Tokens %lld, Peak mem %s GB\n",
                   (long long)it, format_fixed3(train_loss).c_str(), format_sci3(lr).c_str(), format_fixed3(it_sec).c_str(),
                   format_fixed3(tok_sec).c_str(), (long long)trained_tokens, format_fixed3(pk).c_str());
      std::fflush(out);
      MetricsRecord r;
      r.kind = "train";
      r.iter = it;
      r.train_loss = train_loss;
      r.learning_rate = double(lr);
      r.iterations_per_sec = it_sec;
      r.tokens_per_sec = tok_sec;
      r.trained_tokens = trained_tokens;
      r.peak_mem_gb = pk;
      r.elapsed_s = elapsed();
      metrics.write(r);
      sum.last_train_loss = train_loss;
      losses = 0, n_tokens = 0, steps = 0, train_time = 0;
    }

    if (it % o.save_every == 0) {
      adapter_save_weights(adapter_file, a);
      save_checkpoint(it);
      progress.clear();
      std::fprintf(out, "Iter %lld: Saved adapter weights to %s and %s.\n", (long long)it, adapter_file.c_str(),
                   path_join(o.adapter_path, adapter_checkpoint_name(it)).c_str());
      std::fflush(out);
    }
    progress.show(it);
  }
  progress.clear();
  adapter_save_weights(adapter_file, a);
  if (o.iters % o.save_every != 0) save_checkpoint(o.iters);
  std::fprintf(out, "Saved final weights to %s.\n", adapter_file.c_str());
  std::fflush(out);

  std::vector<LossPoint> tr, va;
  metrics_read_losses(path_join(o.adapter_path, "metrics.jsonl"), &tr, &va);
  const std::string svg = loss_svg(tr, va, "Loss — " + o.adapter_path);
  write_file_atomic(path_join(o.adapter_path, "loss.svg"), svg.data(), svg.size());
  sum.trained_tokens = trained_tokens;
  return sum;
}

}  // namespace lora
