// `lora convert --adapter-path IN --to mlx|peft|gguf --out OUT --model M`: an adapter between mlx-lm's layout
// (adapters.safetensors + adapter_config.json), PEFT's (adapter_model.safetensors + adapter_config.json) and
// GGUF-LoRA (one .gguf file for llama.cpp's --lora); the input layout is detected from its files. The base
// model gives the shapes, the GGUF architecture and heads (Q/K permutation of B), and DoRA's magnitudes when
// a file lacks them. Factors are copied exactly (transposes and row permutations only).
#include <cstdio>

#include "cli/common.h"
#include "cli/convert.h"
#include "core/error.h"
#include "io/mapped_file.h"
#include "train/adapter_gguf.h"
#include "train/adapter_io.h"
#include "train/adapter_peft.h"

namespace lora::cli {

int run_convert_adapter(const ConvertFlags& f) {
  if (f.to != "mlx" && f.to != "peft" && f.to != "gguf")
    fail_input("--to " + f.to, "is not an adapter layout", "use --to mlx, --to peft or --to gguf with --adapter-path");
  // Refuse an existing output before the work (the savers check again).
  if (f.to == "gguf" && !f.force && path_exists(f.out) && !path_is_dir(f.out))
    fail_input(f.out, "already exists", "choose another --out, or pass --force to replace it");
  ModelLoadOptions lo;
  lo.compute_dtype = DTYPE_BF16;  // shapes (and DoRA's base norms) only: keep the file memory-mapped
  const Model m = model_load(f.model, lo);
  const Adapter a = adapter_load(f.adapter_path, m);
  const char* to_name = "mlx-lm";
  if (f.to == "peft") {
    adapter_save_peft(a, f.out, f.model, f.force);
    to_name = "PEFT";
  } else if (f.to == "gguf") {
    adapter_save_gguf(a, m, f.out, f.force);
    to_name = "GGUF-LoRA";
  } else {
    adapter_save_mlx(a, f.out, f.force);
  }
  std::printf("Wrote the %s adapter (from %s, rank %lld, %zu tensors) in %s's layout to %s\n", fine_tune_type_name(a.cfg.type),
              adapter_layout_name(f.adapter_path), (long long)a.cfg.rank, a.params.size(), to_name, f.out.c_str());
  return 0;
}

}  // namespace lora::cli
