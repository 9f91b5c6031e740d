// `lora init`: writes a model folder with random weights from a config.json (for tests, benchmarks
// and pretraining a tiny model from scratch with full fine-tuning).
#include "cli/common.h"
#include "core/error.h"
#include "model/init.h"

namespace lora::cli {

namespace {
struct InitFlags {
  std::string config;
  std::string out;
  std::string dtype = "bf16";
  uint64_t seed = 0;
  double std = 0;
  bool force = false;
};
}  // namespace

void register_init(CLI::App& app, Action& action) {
  auto f = std::make_shared<InitFlags>();
  auto* cmd = app.add_subcommand("init", "Write a model folder with random weights from a config.json");
  cmd->add_option("--config,-c", f->config, "An HF config.json (tokenizer files beside it are copied too)")->required();
  cmd->add_option("--out,-o", f->out, "Output folder")->required();
  cmd->add_option("--dtype", f->dtype, "Weight dtype: f32, bf16 or f16");
  cmd->add_option("--seed", f->seed, "Random seed");
  cmd->add_option("--std", f->std, "Standard deviation of the weights (0 = the config's initializer_range or 0.02)");
  cmd->add_flag("--force", f->force, "Overwrite a model already in --out");
  cmd->callback([f, &action] {
    action = [f] {
      ModelInitOptions o;
      if (!dtype_from_name(f->dtype, &o.dtype)) fail_input("--dtype", "unknown dtype '" + f->dtype + "'", "use f32, bf16 or f16");
      o.seed = f->seed;
      o.std = f->std;
      o.overwrite = f->force;
      model_init_random(f->config, f->out, o);
      return 0;
    };
  });
}

}  // namespace lora::cli
