// `lora convert --model IN --to gguf|hf --out OUT [--quantize q8_0|q4_0|q4_k] [--outtype f32|f16|bf16]`:
// a model between an HF folder and one GGUF file, either direction (and GGUF -> GGUF to re-quantize).
//  - to GGUF: model/model_gguf_save.h (llama.cpp's names, Q/K permutation, hyper-parameters, the tokenizer
//    from tokenizer.model / tokenizer.json + tokenizer_config.json, or the source GGUF's own).
//  - to HF: model/model_save.h with config.json written from the hyper-parameters and the tokenizer files
//    written from the GGUF's vocabulary (io/tokenizer_write.h); quantized tensors are dequantized to
//    --outtype, default bf16 (the dtype Llama-family checkpoints ship in and our GPU path computes in, and
//    no overflow risk: a Q8_0 block scale is an f16, so |x| can exceed f16's 65504).
// Without --outtype every weight keeps its type, so HF -> GGUF -> HF is bit-exact. Outputs are written
// atomically; an existing OUT is refused without --force.
#include <cstdio>
#include <filesystem>

#include "cli/convert.h"
#include "core/error.h"
#include "io/gguf.h"
#include "io/mapped_file.h"
#include "model/model.h"
#include "model/model_gguf_save.h"
#include "model/model_save.h"

namespace lora::cli {

namespace {

DType parse_type(const std::string& flag, const std::string& v) {
  DType t;
  if (!dtype_from_name(v, &t)) fail_input(flag + " " + v, "is not a known type", "see lora convert --help");
  return t;
}

std::string stem(const std::string& path) {
  std::filesystem::path p(path);
  while (!p.empty() && p.filename().empty()) p = p.parent_path();  // "dir/" -> "dir"
  return p.stem().string();
}

}  // namespace

int run_convert_model(const ConvertFlags& f) {
  if (f.to != "gguf" && f.to != "hf")
    fail_input("--to " + f.to, "is not a model format",
               "use --to gguf or --to hf for a model (mlx and peft are adapter layouts: add --adapter-path)");
  if (!f.quantize.empty() && f.to != "gguf")
    fail_input("--quantize " + f.quantize, "applies only to --to gguf", "drop --quantize, or convert --to gguf");
  if (f.model.empty() || !path_exists(f.model))
    fail_input(f.model.empty() ? std::string("--model") : f.model, "no such file or folder",
               "pass an HF model folder or a .gguf file");
  if (f.out.empty()) fail_input("--out", "is empty", "give the output path");
  if (path_exists(f.out) && !f.force)
    fail_input(f.out, "already exists", "choose another --out, or pass --force to replace it");
  const bool from_gguf = !path_is_dir(f.model);

  ModelLoadOptions lo;
  lo.compute_dtype = DTYPE_BF16;  // keep each tensor's stored float type (memory-mapped where possible)
  lo.keep_quantized = true;       // quantized GGUF blocks stay blocks: copied as they are when the type matches
  const Model m = model_load(f.model, lo);

  TokenizerVocab vocab;
  if (from_gguf) {
    vocab = tokenizer_vocab_from_gguf(*GGUFFile::open(f.model));
    if (vocab.model.empty())
      std::fprintf(stderr, "warning: %s has no embedded tokenizer; the output has none either\n", f.model.c_str());
  }

  if (f.to == "gguf") {
    if (!from_gguf) vocab = tokenizer_vocab_from_hf(f.model, m.cfg.vocab, m.cfg.bos_id, m.cfg.eos_id);
    GGUFSaveOptions o;
    o.keep_dtype = f.outtype.empty();
    if (!o.keep_dtype) o.outtype = parse_type("--outtype", f.outtype);
    if (!f.quantize.empty()) o.quantize = parse_type("--quantize", f.quantize);
    o.name = stem(f.model);
    o.overwrite = f.force;
    model_save_gguf(m, vocab, f.out, o);
    std::printf("Wrote %s (GGUF, %s%s)\n", f.out.c_str(), f.quantize.empty() ? "" : "quantized to ",
                !f.quantize.empty() ? f.quantize.c_str() : f.outtype.empty() ? "weights in their source types"
                                                                            : f.outtype.c_str());
    return 0;
  }

  // --to hf
  ModelSaveOptions so;
  so.overwrite = f.force;
  so.what = "--out";
  const bool has_out = !f.outtype.empty();
  const DType out = has_out ? parse_type("--outtype", f.outtype) : DTYPE_BF16;
  so.dtype_of = [has_out, out](const std::string&, const Tensor& t) {
    return has_out ? out : dtype_is_quant(t.dtype) ? DTYPE_BF16 : t.dtype;
  };
  if (from_gguf) {
    const DType main = has_out ? out : dtype_is_quant(m.layers.at(0).wq.dtype) ? DTYPE_BF16 : m.layers.at(0).wq.dtype;
    so.config_json = model_config_to_hf_json(m.cfg, model_torch_dtype_name(main));
    if (!vocab.model.empty()) so.vocab = &vocab;
  }
  model_save_hf(m, from_gguf ? std::string() : f.model, f.out, so);
  std::printf("Wrote %s (HF folder, %s)\n", f.out.c_str(), has_out ? f.outtype.c_str() : "weights in their source types");
  return 0;
}

}  // namespace lora::cli
