// `lora convert`: registers the flags (cli/convert.h) and dispatches: with --adapter-path to the adapter
// conversion (convert_adapter.cpp), without to the model conversion (convert_model.cpp).
#include <cstdio>

#include "cli/common.h"
#include "cli/convert.h"
#include "core/error.h"

namespace lora::cli {

void register_convert(CLI::App& app, Action& action) {
  auto f = std::make_shared<ConvertFlags>();
  auto* cmd = app.add_subcommand(
      "convert", "Convert a model (HF folder <-> GGUF, optionally quantized) or an adapter (mlx-lm, PEFT, GGUF-LoRA)");
  cmd->add_option("--model,-m", f->model, "The model to convert, or the base model the adapter belongs to (HF folder or .gguf)")
      ->required();
  cmd->add_option("--adapter-path", f->adapter_path,
                  "Convert this adapter (mlx-lm, PEFT or GGUF-LoRA layout, detected) instead of the model");
  cmd->add_option("--to", f->to, "Output: gguf or hf for a model; mlx, peft or gguf for an adapter")
      ->required()
      ->check(CLI::IsMember({"mlx", "peft", "gguf", "hf"}));
  cmd->add_option("--out", f->out, "Output folder (or .gguf file)")->required();
  cmd->add_option("--quantize", f->quantize, "Quantize a model's weights when writing GGUF: q8_0, q4_0 or q4_k")
      ->check(CLI::IsMember({"q8_0", "q4_0", "q4_k"}));
  cmd->add_option("--outtype", f->outtype, "Float type of a converted model's weights (default: the source's)")
      ->check(CLI::IsMember({"f32", "f16", "bf16"}));
  cmd->add_flag("--force", f->force, "Replace an existing output");
  cmd->callback([f, &action] {
    action = [f] { return f->adapter_path.empty() ? run_convert_model(*f) : run_convert_adapter(*f); };
  });
}

}  // namespace lora::cli
