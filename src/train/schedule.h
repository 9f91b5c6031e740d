// Learning-rate schedules as mlx-lm's build_schedule makes them from the YAML key
//   lr_schedule: {name: cosine_decay, arguments: [1e-5, 1000, 1e-7], warmup: 100, warmup_init: 1e-7}
// with mlx.optimizers.schedulers' formulas, computed in fp32 in MLX's operation order:
//   cosine_decay(init, decay_steps, end=0)  end + 0.5·(1 + cos(pi/decay_steps · min(step, decay_steps)))·(init - end)
//   linear_schedule(init, end, steps)       min(step, steps) · ((end - init)/steps) + init
//   exponential_decay(init, decay_rate)     init · decay_rate^step
//   step_decay(init, decay_rate, step_size) init · decay_rate^(step / step_size)
// With warmup N: join_schedules([linear_schedule(warmup_init, init, N), main], [N + 1]), i.e. steps
// 0..N ramp linearly and step s > N gives main(s - N - 1). The step is the optimizer's update count
// before the update (MLX evaluates the schedule, then increments the step).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace lora {

struct LrSchedule {
  std::string name;                // "" = constant learning_rate
  std::vector<double> arguments;   // as in the YAML; arguments[0] is the initial rate
  int64_t warmup = 0;
  double warmup_init = 0.0;
  double constant = 1e-5;          // the rate when name is empty (after warmup, if any)
};

// Validates name and arguments; lora::Error naming `where` ("lr_schedule" or a flag).
void schedule_check(const LrSchedule& s, const std::string& where);
// The learning rate at optimizer step `step` (0-based), in fp32 as MLX computes it.
float schedule_value(const LrSchedule& s, int64_t step);

// Our CLI flags: --lr-schedule cosine|linear|constant --warmup N over `total_steps` optimizer steps,
// peak rate lr (cosine and linear decay to 0 at the last step).
LrSchedule schedule_from_flags(const std::string& kind, double lr, int64_t warmup, int64_t total_steps);

}  // namespace lora
