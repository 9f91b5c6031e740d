// `lora convert --adapter-path IN --to mlx|peft --out OUT --model M`: an adapter between mlx-lm's layout
// (adapters.safetensors + adapter_config.json) and PEFT's (adapter_model.safetensors + adapter_config.json);
// the input layout is detected from its files. The base model gives the shapes (and DoRA's magnitudes when
// a file lacks them). Factors are copied exactly (transposes only). GGUF-LoRA and model conversion are not
// here yet.
#include <cstdio>

#include "cli/common.h"
#include "core/error.h"
#include "train/adapter_io.h"
#include "train/adapter_peft.h"

namespace lora::cli {

namespace {

struct ConvertFlags {
  std::string model, adapter_path, to, out;
  bool force = false;
};

int run_convert(const ConvertFlags& f) {
  ModelLoadOptions lo;
  lo.compute_dtype = DTYPE_BF16;  // shapes (and DoRA's base norms) only: keep the file memory-mapped
  const Model m = model_load(f.model, lo);
  const Adapter a = adapter_load(f.adapter_path, m);
  if (f.to == "peft")
    adapter_save_peft(a, f.out, f.model, f.force);
  else
    adapter_save_mlx(a, f.out, f.force);
  std::printf("Wrote the %s adapter (%s, rank %lld, %zu tensors) in %s's layout to %s\n",
              fine_tune_type_name(a.cfg.type), adapter_is_peft(f.adapter_path) ? "from PEFT" : "from mlx-lm",
              (long long)a.cfg.rank, a.params.size(), f.to == "peft" ? "PEFT" : "mlx-lm", f.out.c_str());
  return 0;
}

}  // namespace

void register_convert(CLI::App& app, Action& action) {
  auto f = std::make_shared<ConvertFlags>();
  auto* cmd = app.add_subcommand("convert", "Convert an adapter between mlx-lm's and PEFT's layouts");
  cmd->add_option("--model,-m", f->model, "The base model the adapter belongs to (HF folder or .gguf)")->required();
  cmd->add_option("--adapter-path", f->adapter_path, "The adapter folder to read (mlx-lm or PEFT layout, detected)")->required();
  cmd->add_option("--to", f->to, "Output layout: mlx or peft")->required()->check(CLI::IsMember({"mlx", "peft"}));
  cmd->add_option("--out", f->out, "Output folder")->required();
  cmd->add_flag("--force", f->force, "Replace an adapter already in --out");
  cmd->callback([f, &action] { action = [f] { return run_convert(*f); }; });
}

}  // namespace lora::cli
