// `lora convert`: the flags and the two conversions behind one subcommand. With --adapter-path it
// converts an adapter (convert_adapter.cpp: mlx-lm <-> PEFT <-> GGUF-LoRA); without, a model
// (convert_model.cpp: HF folder <-> GGUF, optionally quantized). cmd_convert.cpp registers the flags.
#pragma once
#include <string>

namespace lora::cli {

struct ConvertFlags {
  std::string model;         // --model: the model to convert, or the base an adapter belongs to
  std::string adapter_path;  // --adapter-path: the adapter to convert (empty: convert the model)
  std::string to;            // --to: mlx|peft|gguf (adapters), gguf|hf (models)
  std::string out;           // --out: output folder or .gguf file
  std::string quantize;      // --quantize q8_0|q4_0|q4_k (models to GGUF)
  std::string outtype;       // --outtype f32|f16|bf16 (models; empty: keep the source's dtype)
  bool force = false;        // --force: replace an existing output
};

int run_convert_adapter(const ConvertFlags& f);
int run_convert_model(const ConvertFlags& f);

}  // namespace lora::cli
