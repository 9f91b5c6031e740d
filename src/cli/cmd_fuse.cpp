// `lora fuse`: mlx_lm.fuse for LoRA, DoRA and full fine-tuning adapters. Loads the base model (an HF folder
// or a GGUF file), fuses the adapter into its weights (train/adapter_fuse.h: W' = W + scale·BᵀAᵀ, DoRA's row
// rescaling, or full fine-tuning's weights) and writes an HF folder (model/model_save.h): every weight in the
// base's own dtype (the fused ones rounded from fp32 once), sharded above 4 GiB with an index, config.json and
// the tokenizer and generation files copied (from a GGUF base: written from its metadata and vocabulary).
// --export-gguf also writes the fused model as GGUF (model/model_gguf_save.h) in --gguf-type (f16 default,
// bf16, f32 or q8_0) at --gguf-path, relative to --save-path as in mlx_lm (default ggml-model-<type>.gguf,
// mlx_lm's ggml-model-f16.gguf for the default type).
// A quantized GGUF base (Q8_0, Q4_K, ...) needs --dequantize (mlx_lm's --de-quantize): the fused weights are
// then written in float (bf16 in the HF folder, --gguf-type in the GGUF). Without it the command refuses:
// fused weights are dense float sums that an HF folder cannot hold as llama.cpp blocks, and silently
// re-quantizing them would compound two quantization errors. The output folder appears whole or not at
// all; an existing one (or GGUF file) is replaced only with --force.
#include <fmt/format.h>

#include <cstdio>
#include <filesystem>
#include <map>

#include "cli/common.h"
#include "core/error.h"
#include "core/log.h"
#include "io/mapped_file.h"
#include "io/gguf.h"
#include "model/model_gguf_save.h"
#include "model/model_save.h"
#include "train/adapter_fuse.h"
#include "train/adapter_io.h"

namespace lora::cli {

namespace {

struct FuseFlags {
  std::string model, adapter_path = "adapters", save_path = "fused_model";
  bool force = false;
  bool export_gguf = false;
  std::string gguf_path;          // default <save_path>/ggml-model-<type>.gguf
  std::string gguf_type = "f16";
  bool dequantize = false;
};

// Whether a GGUF file holds llama.cpp-quantized weights.
bool gguf_is_quantized(const GGUFFile& g) {
  for (const GGUFTensorInfo& t : g.tensors())
    if (dtype_is_quant(t.dtype)) return true;
  return false;
}

int run_fuse(const FuseFlags& f) {
  if (f.model.empty() || !path_exists(f.model))
    fail_input(f.model.empty() ? std::string("--model") : f.model, "no such file or folder",
               "pass a Hugging Face model folder (config.json + *.safetensors) or a .gguf file");
  const bool gguf_base = !path_is_dir(f.model);
  std::shared_ptr<GGUFFile> g;
  if (gguf_base) {
    g = GGUFFile::open(f.model);
    if (gguf_is_quantized(*g) && !f.dequantize)
      fail_input(f.model, "is a quantized GGUF base; fused weights cannot be stored in its llama.cpp blocks",
                 "pass --dequantize to write the fused model in float (bf16 in the HF folder, --gguf-type in the GGUF)");
  }
  DType gguf_type = DTYPE_F16;
  if (!dtype_from_name(f.gguf_type, &gguf_type))
    fail_input("--gguf-type " + f.gguf_type, "is not a known type", "use f16, bf16, f32 or q8_0");
  // As mlx_lm: --gguf-path is relative to --save-path (an absolute path stays as it is).
  const std::string gguf_path =
      (std::filesystem::path(f.save_path) / (f.gguf_path.empty() ? "ggml-model-" + f.gguf_type + ".gguf" : f.gguf_path))
          .string();
  if (f.export_gguf && std::filesystem::path(f.gguf_path).is_absolute() && path_exists(gguf_path) && !f.force)
    fail_input(gguf_path, "already exists", "choose another --gguf-path, or pass --force to replace it");
  std::printf("Loading pretrained model\n");
  std::fflush(stdout);
  ModelLoadOptions lo;
  lo.compute_dtype = DTYPE_BF16;  // keeps each tensor's stored dtype (F32, BF16 or F16), memory-mapped
  const Model base = model_load(f.model, lo);  // a quantized GGUF's blocks are dequantized to F32 here
  const Adapter a = adapter_load(f.adapter_path, base);
  std::printf("Fusing %s adapter from %s (%zu tensors)\n", fine_tune_type_name(a.cfg.type), f.adapter_path.c_str(),
              a.params.size());
  const Model fused = adapter_fuse(base, a);
  // Each weight keeps the base's dtype: the fused fp32 copies are rounded back once.
  // A dequantized base's weights were quantized: they are written as bf16.
  std::map<std::string, DType> base_dtype;
  if (!(g && gguf_is_quantized(*g)))
    for (const NamedTensor& n : model_hf_tensors(base)) base_dtype[n.name] = n.t.dtype;
  ModelSaveOptions so;
  so.overwrite = f.force;
  so.dtype_of = [&](const std::string& name, const Tensor& t) {
    auto it = base_dtype.find(name);
    return it != base_dtype.end() ? it->second : g ? DTYPE_BF16 : t.dtype;
  };
  TokenizerVocab vocab;
  if (g) {
    vocab = tokenizer_vocab_from_gguf(*g);
    so.vocab = vocab.model.empty() ? nullptr : &vocab;
    so.config_json = model_config_to_hf_json(fused.cfg, model_torch_dtype_name(so.dtype_of("", fused.layers.at(0).wq)));
  }
  model_save_hf(fused, g ? std::string() : f.model, f.save_path, so);
  std::printf("Saved fused model to %s\n", f.save_path.c_str());
  if (f.export_gguf) {
    if (!g) vocab = tokenizer_vocab_from_hf(f.model, fused.cfg.vocab, fused.cfg.bos_id, fused.cfg.eos_id);
    GGUFSaveOptions go;
    go.keep_dtype = false;
    go.outtype = dtype_is_quant(gguf_type) ? DTYPE_F16 : gguf_type;
    go.quantize = dtype_is_quant(gguf_type) ? gguf_type : DTYPE_F32;
    go.name = std::filesystem::path(f.save_path).filename().string();
    go.overwrite = true;  // a default path lies inside the folder just written; an explicit one was checked
    model_save_gguf(fused, vocab, gguf_path, go);
    std::printf("Saved GGUF (%s) to %s\n", f.gguf_type.c_str(), gguf_path.c_str());
  }
  return 0;
}

}  // namespace

void register_fuse(CLI::App& app, Action& action) {
  auto f = std::make_shared<FuseFlags>();
  auto* cmd = app.add_subcommand("fuse", "Fuse a trained adapter into the base model and save an HF folder (mlx_lm.fuse)");
  cmd->add_option("--model,-m", f->model, "Base model: a Hugging Face folder or a .gguf file")->required();
  cmd->add_option("--adapter-path", f->adapter_path, "The adapter to fuse: an mlx-lm or PEFT folder, or a GGUF-LoRA .gguf file");
  cmd->add_option("--save-path", f->save_path, "Output folder for the fused model");
  cmd->add_flag("--force", f->force, "Replace --save-path (and --gguf-path) if it exists");
  cmd->add_flag("--export-gguf", f->export_gguf, "Also write the fused model as one GGUF file for llama.cpp");
  cmd->add_option("--gguf-path", f->gguf_path, "Where --export-gguf writes, relative to --save-path (default: ggml-model-<type>.gguf)");
  cmd->add_option("--gguf-type", f->gguf_type, "Weight type of the exported GGUF")
      ->check(CLI::IsMember({"f16", "bf16", "f32", "q8_0"}))
      ->capture_default_str();
  cmd->add_flag("--dequantize,--de-quantize", f->dequantize,
                "Fuse into a quantized GGUF base and write the fused model in float (required for such a base)");
  cmd->callback([f, &action] { action = [f] { return run_fuse(*f); }; });
}

}  // namespace lora::cli
