// `lora convert --adapter-path IN --to mlx|peft --out OUT --model M`: an adapter between mlx-lm's layout
// (adapters.safetensors + adapter_config.json) and PEFT's (adapter_model.safetensors + adapter_config.json);
// the input layout is detected from its files. The base model gives the shapes (and DoRA's magnitudes when
// a file lacks them). Factors are copied exactly (transposes only).
#include <cstdio>

#include "cli/common.h"
#include "cli/convert.h"
#include "core/error.h"
#include "train/adapter_io.h"
#include "train/adapter_peft.h"

namespace lora::cli {

int run_convert_adapter(const ConvertFlags& f) {
  if (f.to != "mlx" && f.to != "peft")
    fail_input("--to " + f.to, "is not an adapter layout", "use --to mlx or --to peft with --adapter-path");
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

}  // namespace lora::cli
