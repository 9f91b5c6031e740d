// GGUF-LoRA adapters, the layout llama.cpp's convert_lora_to_gguf.py writes and `llama-cli --lora` reads
// (formats.md, "Adapter files"):
//   KV       general.architecture (the base's GGUF arch: llama for llama/mistral, qwen2), general.type
//            "adapter", adapter.type "lora", adapter.lora.alpha (f32; run-time scale = alpha / rank, and
//            llama.cpp takes scale 1 when it is absent or 0)
//   tensors  blk.{i}.{attn_q|attn_k|attn_v|attn_output|ffn_gate|ffn_up|ffn_down}.weight.lora_a, ggml ne
//            [in, r] (= PEFT's lora_A (r, in) = our lora_aᵀ), and .lora_b, ne [r, out] (= our lora_bᵀ).
//            For llama/mistral the out rows of attn_q's and attn_k's lora_b are in llama.cpp's interleaved
//            RoPE order (the permutation model_load undoes for the weights, with n_head / n_head_kv).
// We write F32 factors; we read F32, F16, BF16 and Q8_0 (convert_lora_to_gguf.py's --outtype) and any other
// block type the GGUF reader knows. DoRA and full fine-tuning have no GGUF-LoRA form.
#pragma once
#include <string>

#include "model/lora.h"
#include "model/model.h"
#include "train/adapter_io.h"

namespace lora {

// True when path is a file (not a folder) in GGUF format whose general.type is "adapter".
bool adapter_is_gguf(const std::string& path);
// The GGUF architecture name an adapter for m must carry ("llama" for llama and mistral, "qwen2").
std::string adapter_gguf_arch(const ModelConfig& c);

// Loads a GGUF-LoRA file for m: rank from the factors, keys and num_layers from the tensor names (the
// same keys in a final run of blocks), scale = alpha / rank. lora::Error naming the file and the tensor
// or key for another architecture, unknown names, widths or ranks that do not fit, a missing factor.
Adapter adapter_load_gguf(const std::string& path, const Model& m);
// The factors of a GGUF-LoRA file under our names and orientation (Q/K rows un-permuted), checked against
// m (architecture, layers, widths, one rank) but not against an adapter (--resume-adapter-file).
// *scale receives alpha / rank (1 when alpha is absent or 0).
std::vector<AdapterTensor> adapter_read_gguf_tensors(const std::string& path, const Model& m, double* scale);

// Writes a as a GGUF-LoRA file (F32 factors, alpha = scale · rank). An existing out_file is replaced only
// with force. DoRA and full fine-tuning are refused (hint: `lora fuse`).
void adapter_save_gguf(const Adapter& a, const Model& m, const std::string& out_file, bool force);

}  // namespace lora
