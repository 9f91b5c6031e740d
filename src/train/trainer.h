// The training loop of `lora train`, mirroring mlx-lm's tuner/trainer.py (v0.28.1):
//  - Validation at iteration 1, every steps_per_eval and at the last iteration, before that
//    iteration's step: "Iter N: Val loss x.xxx, Val took x.xxxs" over the first val_batches batches
//    of the length-sorted validation set (-1 = all); loss = total masked loss / total targets.
//  - One iteration = one optimizer update over grad_accumulation_steps micro-batches (gradients of
//    each micro-batch's mean loss, summed and divided by the count). Micro-batch j of iteration it
//    is BatchIterator::batch_at((it-1)·k + j), so the data order depends only on the seed.
//  - Every steps_per_report and at the end: "Iter N: Train loss x.xxx, Learning Rate x.xxxe-xx,
//    It/sec x.xxx, Tokens/sec x.xxx, Trained Tokens n, Peak mem x.xxx GB" (train loss = mean of the
//    iteration losses since the last report; tokens = masked targets, mlx-lm's ntoks; peak mem = the
//    process's peak RSS). mlx-lm divides steps_per_report by the time even when fewer steps ran; we
//    divide the steps that ran.
//  - Checkpoints every save_every iterations: adapters.safetensors, {it:07d}_adapters.safetensors and
//    the resume state beside it; at the end adapters.safetensors (and a checkpoint with state for the
//    last iteration, so the run can be resumed to more iterations).
//  - metrics.jsonl in the adapter folder: one JSON object per report or evaluation, flushed as it goes;
//    loss.svg beside it at the end.
//  - resume: continue from the newest checkpoint with state (weights, optimizer, step, report
//    accumulators); metrics.jsonl keeps its lines up to that iteration. --iters is the total.
#pragma once
#include <cstdint>
#include <cstdio>
#include <functional>
#include <string>
#include <vector>

#include "io/dataset.h"
#include "model/llama_train.h"
#include "model/lora.h"
#include "model/model.h"
#include "ops/ops.h"
#include "train/optimizer.h"
#include "train/schedule.h"

namespace lora {

struct TrainerOptions {
  int64_t iters = 1000;
  int64_t batch_size = 4;
  int64_t val_batches = 25;  // -1 = all, 0 = no validation
  int64_t steps_per_report = 10;
  int64_t steps_per_eval = 200;
  int64_t save_every = 100;
  int64_t max_seq_length = 2048;
  int64_t grad_accumulation_steps = 1;
  bool grad_checkpoint = false;
  uint64_t seed = 0;
  std::string adapter_path = "adapters";
  bool resume = false;
  OptimizerConfig optimizer;
  LrSchedule schedule;
  int progress = -1;   // live progress bar on stderr: -1 = when stderr is a terminal, 0 off, 1 on
  std::FILE* out = nullptr;  // report lines (nullptr = stdout)
  // "Peak mem" in the reports: bytes; null = the process's peak RSS (the CPU backend). A GPU backend
  // passes its peak device memory.
  std::function<int64_t()> peak_mem_bytes;
};

struct TrainSummary {
  int64_t first_iter = 1;  // 1, or the checkpoint's iteration + 1 when resumed
  int64_t last_iter = 0;
  double last_train_loss = 0;
  double first_val_loss = -1, last_val_loss = -1;  // -1 = no validation
  int64_t trained_tokens = 0;
};

// Trains `a` on `train` (examples outlive the call). valid may be null (no validation).
TrainSummary train_run(const Model& m, Adapter& a, Ops& ops, const std::vector<Example>& train,
                       const std::vector<Example>* valid, const TrainerOptions& o);

// Mean masked loss over the first num_batches (-1 = all) length-sorted batches of `ex`.
// lora::Error naming `what` when there are fewer examples than batch_size.
double evaluate_loss(const Model& m, Adapter& a, Ops& ops, const std::vector<Example>& ex, int64_t batch_size,
                     int64_t num_batches, int64_t max_seq_length, const std::string& what);

// "12.345"-style helpers shared with the CLI: mlx-lm's Python formats.
std::string format_fixed3(double v);  // "{:.3f}"
std::string format_sci3(double v);    // "{:.3e}" as Python prints it ("1.000e-05")

}  // namespace lora
