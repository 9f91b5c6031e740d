// Model: the weights of a Llama-family model in one in-memory layout, whatever file they came from.
//  - Linear weights are (out, in) row-major, as in HF/PyTorch.
//  - q_proj/k_proj rows are in HF's rotate-half RoPE layout; GGUF's interleaved layout is undone at load.
//  - Storage: memory-mapped where the dtype allows (F32/BF16/F16 from safetensors or GGUF, quantized
//    blocks when kept), otherwise owned buffers (dequantized GGUF blocks become F32; quantized at load).
//  - lm_head aliases tok_embd when the embeddings are tied.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "core/tensor.h"
#include "model/config.h"

namespace lora {

struct LayerWeights {
  Tensor attn_norm;  // (C)
  Tensor wq;         // (H*D, C)
  Tensor wk;         // (KV*D, C)
  Tensor wv;         // (KV*D, C)
  Tensor wo;         // (C, H*D)
  Tensor bq, bk, bv; // (H*D), (KV*D), (KV*D) — qwen2 only, else undefined
  Tensor ffn_norm;   // (C)
  Tensor w_gate;     // (F, C)
  Tensor w_up;       // (F, C)
  Tensor w_down;     // (C, F)
};

struct Model {
  ModelConfig cfg;
  std::string source;  // path it was loaded from
  Tensor tok_embd;     // (V, C)
  std::vector<LayerWeights> layers;
  Tensor out_norm;     // (C)
  Tensor lm_head;      // (V, C); same data as tok_embd when tied

  // Keep-alive for whatever the views point into (mappings, buffers).
  std::vector<std::shared_ptr<void>> storage;
};

struct ModelLoadOptions {
  // Storage type for weights on CPU: F32 (default; dequantizes quantized GGUF tensors), or keep BF16.
  DType compute_dtype = DTYPE_F32;
  // Quantized GGUF weights (2-D: linears, embeddings, lm_head) stay in their llama.cpp blocks instead of
  // being dequantized: the linears and the embedding dequantize a panel at a time (QLoRA; a quarter of the
  // memory for inference). Norms and biases are F32 either way.
  bool keep_quantized = false;
  // Quantize every 2-D weight at load to this llama.cpp type (Q8_0, Q4_0, Q4_K, ...), with llama.cpp's
  // choices for lm_head and for rows that are not whole blocks (quant_type_for_weight); F32 = none.
  // Implies keep_quantized.
  DType quantize = DTYPE_F32;
};

// path: an HF folder (config.json + safetensors) or a .gguf file. lora::Error for anything wrong,
// naming the file and the tensor/field, with a hint.
Model model_load(const std::string& path, const ModelLoadOptions& opts = {});

// A copy of m's weights on `dev` (model_device.cpp): linear weights and embeddings as weight_type
// (BF16 for CUDA), norms and biases F32. dev == DEVICE_CPU returns m itself (a shallow copy).
Model model_to_device(const Model& m, Device dev, DType weight_type);

// The HF tensor name for a weight, e.g. "model.layers.3.self_attn.q_proj.weight".
std::string model_hf_name(int layer, const std::string& leaf);

}  // namespace lora
