// `lora fuse`: mlx_lm.fuse for LoRA, DoRA and full fine-tuning adapters. Loads the base model (an HF folder),
// fuses the adapter into its weights (train/adapter_fuse.h: W' = W + scale·BᵀAᵀ, DoRA's row rescaling, or
// full fine-tuning's weights) and writes an HF folder (model/model_save.h): every weight in the base's own
// dtype (the fused ones rounded from fp32 once), sharded above 4 GiB with an index, config.json and the
// tokenizer and generation files copied. The output folder appears whole or not at all; an existing one is
// replaced only with --force.
#include <fmt/format.h>

#include <cstdio>
#include <map>

#include "cli/common.h"
#include "core/error.h"
#include "core/log.h"
#include "io/mapped_file.h"
#include "model/model_save.h"
#include "train/adapter_fuse.h"
#include "train/adapter_io.h"

namespace lora::cli {

namespace {

struct FuseFlags {
  std::string model, adapter_path = "adapters", save_path = "fused_model";
  bool force = false;
};

int run_fuse(const FuseFlags& f) {
  if (!path_is_dir(f.model))
    fail_input(f.model.empty() ? std::string("--model") : f.model,
               path_exists(f.model) ? "is not an HF model folder (fusing into a GGUF base is not supported yet)"
                                    : "no such folder",
               "pass a Hugging Face model folder (config.json + *.safetensors)");
  std::printf("Loading pretrained model\n");
  std::fflush(stdout);
  ModelLoadOptions lo;
  lo.compute_dtype = DTYPE_BF16;  // keeps each tensor's stored dtype (F32, BF16 or F16), memory-mapped
  const Model base = model_load(f.model, lo);
  const Adapter a = adapter_load(f.adapter_path, base);
  std::printf("Fusing %s adapter from %s (%zu tensors)\n", fine_tune_type_name(a.cfg.type), f.adapter_path.c_str(),
              a.params.size());
  const Model fused = adapter_fuse(base, a);
  // Each weight keeps the base's dtype: the fused fp32 copies are rounded back once.
  std::map<std::string, DType> base_dtype;
  for (const NamedTensor& n : model_hf_tensors(base)) base_dtype[n.name] = n.t.dtype;
  ModelSaveOptions so;
  so.overwrite = f.force;
  so.dtype_of = [&](const std::string& name, const Tensor& t) {
    auto it = base_dtype.find(name);
    return it != base_dtype.end() ? it->second : t.dtype;
  };
  model_save_hf(fused, f.model, f.save_path, so);
  std::printf("Saved fused model to %s\n", f.save_path.c_str());
  return 0;
}

}  // namespace

void register_fuse(CLI::App& app, Action& action) {
  auto f = std::make_shared<FuseFlags>();
  auto* cmd = app.add_subcommand("fuse", "Fuse a trained adapter into the base model and save an HF folder (mlx_lm.fuse)");
  cmd->add_option("--model,-m", f->model, "Base model: a Hugging Face folder")->required();
  cmd->add_option("--adapter-path", f->adapter_path, "The adapter folder (adapter_config.json + adapters.safetensors)");
  cmd->add_option("--save-path", f->save_path, "Output folder for the fused model");
  cmd->add_flag("--force", f->force, "Replace --save-path if it exists");
  cmd->callback([f, &action] { action = [f] { return run_fuse(*f); }; });
}

}  // namespace lora::cli
