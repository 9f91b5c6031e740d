// Learning-rate schedules with MLX's formulas (see schedule.h).
#include "train/schedule.h"

#include <algorithm>
#include <cmath>
#include <numbers>

#include "core/error.h"

namespace lora {

namespace {

size_t n_args(const std::string& name) {
  if (name == "cosine_decay") return 2;  // init, decay_steps[, end]
  if (name == "linear_schedule") return 3;
  if (name == "exponential_decay") return 2;
  if (name == "step_decay") return 3;
  return 0;
}

// MLX computes schedules on fp32 arrays; Python scalars become fp32 after Python-side arithmetic.
float value_of(const std::string& name, const std::vector<double>& a, int64_t step) {
  if (name == "cosine_decay") {
    const double init = a[0], end = a.size() > 2 ? a[2] : 0.0;
    const int64_t decay_steps = int64_t(a[1]);
    const float s = float(std::min(step, decay_steps));
    const float c = std::cos(float(std::numbers::pi / double(decay_steps)) * s);
    const float decay = 0.5f * (1.0f + c);
    return float(end) + decay * float(init - end);
  }
  if (name == "linear_schedule") {
    const double init = a[0], end = a[1];
    const int64_t steps = int64_t(a[2]);
    const float s = float(std::min(step, steps));
    return s * float((end - init) / double(steps)) + float(init);
  }
  if (name == "exponential_decay") return float(a[0]) * std::pow(float(a[1]), float(step));
  if (name == "step_decay") {
    const int64_t size = int64_t(a[2]);
    return float(a[0]) * std::pow(float(a[1]), float(step / size));
  }
  LORA_CHECK(false, "unknown schedule {}", name);
  return 0;
}

}  // namespace

void schedule_check(const LrSchedule& s, const std::string& where) {
  if (s.warmup < 0) fail_input(where + ": warmup", "is negative", "give the number of warmup steps (0 = none)");
  if (s.name.empty()) return;
  const size_t need = n_args(s.name);
  if (need == 0)
    fail_input(where + ": name", "unknown schedule '" + s.name + "'",
               "use cosine_decay, linear_schedule, exponential_decay or step_decay (mlx.optimizers' names)");
  const size_t max_args = s.name == "cosine_decay" ? 3 : need;
  if (s.arguments.size() < need || s.arguments.size() > max_args)
    fail_input(where + ": arguments", fmt::format("{} takes {} arguments, got {}", s.name,
                                                  need == max_args ? fmt::format("{}", need) : fmt::format("{} or {}", need, max_args),
                                                  s.arguments.size()),
               s.name == "cosine_decay"      ? "[init, decay_steps] or [init, decay_steps, end]"
               : s.name == "linear_schedule" ? "[init, end, steps]"
               : s.name == "step_decay"      ? "[init, decay_rate, step_size]"
                                             : "[init, decay_rate]");
  auto positive_int = [&](size_t i, const char* what) {
    if (!(s.arguments[i] >= 1) || s.arguments[i] != std::floor(s.arguments[i]))
      fail_input(where + ": arguments", fmt::format("{} must be a positive integer, got {}", what, s.arguments[i]), "");
  };
  if (s.name == "cosine_decay") positive_int(1, "decay_steps");
  if (s.name == "linear_schedule") positive_int(2, "steps");
  if (s.name == "step_decay") positive_int(2, "step_size");
}

float schedule_value(const LrSchedule& s, int64_t step) {
  const bool constant = s.name.empty();
  const double init = constant ? s.constant : s.arguments[0];
  auto main_value = [&](int64_t k) { return constant ? float(s.constant) : value_of(s.name, s.arguments, k); };
  if (s.warmup <= 0) return main_value(step);
  if (step < s.warmup + 1) return value_of("linear_schedule", {s.warmup_init, init, double(s.warmup)}, step);
  return main_value(step - (s.warmup + 1));
}

LrSchedule schedule_from_flags(const std::string& kind, double lr, int64_t warmup, int64_t total_steps) {
  LrSchedule s;
  s.constant = lr;
  s.warmup = warmup;
  const int64_t decay = std::max<int64_t>(1, total_steps - (warmup > 0 ? warmup + 1 : 0));
  if (kind == "constant" || kind.empty()) {
    // Constant after a warmup: linear_schedule(lr, lr, 1) is a constant that mlx-lm can also read.
    if (warmup > 0) s.name = "linear_schedule", s.arguments = {lr, lr, 1.0};
    return s;
  }
  if (kind == "cosine") s.name = "cosine_decay", s.arguments = {lr, double(decay), 0.0};
  else if (kind == "linear") s.name = "linear_schedule", s.arguments = {lr, 0.0, double(decay)};
  else fail_input("--lr-schedule", "unknown schedule '" + kind + "'", "use cosine, linear or constant");
  return s;
}

}  // namespace lora
