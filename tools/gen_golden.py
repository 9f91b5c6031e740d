#!/usr/bin/env python3
"""Makes the whole-model golden fixtures in tests/fixtures/golden/ (used by tests/golden/test_golden_llama.cpp
and tests/unit/test_cpu_ops.cpp).

What it writes:
  - Tiny random Llama-family models (2 layers, 4 query heads over 2 kv heads, head_dim 8, hidden 32,
    FFN 45, vocab 67), each as an HF folder <variant>/ (config.json + model.safetensors, F32) and, for
    the llama variants, as <variant>.gguf (llama arch, F32, Q/K rows permuted exactly as llama.cpp's
    convert_hf_to_gguf.py LlamaModel.permute does):
      llama_tied    tie_word_embeddings = true (no lm_head / output.weight stored)
      llama_untied  separate lm_head
      qwen2_bias    Qwen2ForCausalLM: q/k/v biases (HF folder only)
    plus llama3rope.config.json: llama_untied's config with Llama-3 rope scaling chosen so that all
    three frequency bands (kept, smoothed, scaled) occur; the test pairs it with llama_untied's weights.
  - <variant>.logits.bin: transformers' float32 logits (T, V), little-endian f32, for the token
    sequence in golden.json, from the full sequence in one forward (eager attention).
  - golden.json: the tokens, sizes, variant list and library versions.
  - rope_inv_freq.json: inv_freq of transformers' LlamaRotaryEmbedding for default, linear and llama3
    rope parameters (checked by rope_table_make's test).

Versions used for the committed fixtures: see tests/fixtures/golden/README.md (written by this script).
Rerun (deterministic; needs torch, transformers, safetensors, gguf, numpy):
    python3 tools/gen_golden.py            # writes tests/fixtures/golden/
"""
import json
import os
import shutil
import sys
import tempfile

import numpy as np
import torch
import transformers
import gguf
import safetensors
from importlib.metadata import version
from safetensors.torch import save_file
from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM
from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "golden")

HIDDEN, FFN, LAYERS, HEADS, KV_HEADS, VOCAB, MAX_POS = 32, 45, 2, 4, 2, 67, 128
HEAD_DIM = HIDDEN // HEADS
TOKENS = [1, 17, 5, 66, 42, 42, 0, 23, 9, 61, 30, 2, 51, 7]
LLAMA3_SCALING = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                  "original_max_position_embeddings": 64}


def config_dict(arch, tied, rope_scaling=None):
    d = {
        "architectures": ["Qwen2ForCausalLM" if arch == "qwen2" else "LlamaForCausalLM"],
        "model_type": arch,
        "hidden_size": HIDDEN,
        "intermediate_size": FFN,
        "num_hidden_layers": LAYERS,
        "num_attention_heads": HEADS,
        "num_key_value_heads": KV_HEADS,
        "vocab_size": VOCAB,
        "max_position_embeddings": MAX_POS,
        "rms_norm_eps": 1e-6 if arch == "qwen2" else 1e-5,
        "rope_theta": 1000000.0 if arch == "qwen2" else 10000.0,
        "tie_word_embeddings": tied,
        "hidden_act": "silu",
        "bos_token_id": 1,
        "eos_token_id": 2,
        "torch_dtype": "float32",
    }
    if arch == "llama":
        d["attention_bias"] = False
        d["mlp_bias"] = False
    if rope_scaling:
        d["rope_scaling"] = rope_scaling
    return d


def make_model(arch, tied, seed):
    """Random weights with large enough spread that attention and logits are far from uniform."""
    torch.manual_seed(seed)
    cfg_d = config_dict(arch, tied)
    kwargs = {k: v for k, v in cfg_d.items() if k not in ("architectures", "model_type", "torch_dtype")}
    cfg = (Qwen2Config if arch == "qwen2" else LlamaConfig)(**kwargs)
    cfg._attn_implementation = "eager"
    model = (Qwen2ForCausalLM if arch == "qwen2" else LlamaForCausalLM)(cfg).float().eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.copy_(1.0 + 0.2 * torch.randn_like(p))
            elif name.endswith("bias"):
                p.copy_(0.3 * torch.randn_like(p))
            else:
                p.copy_(torch.randn_like(p) / p.shape[-1] ** 0.5 * 1.5)
    return model, cfg_d


def state_dict_hf(model, tied):
    sd = {k: v.detach().contiguous().clone() for k, v in model.state_dict().items()}
    if tied:
        sd.pop("lm_head.weight", None)
    sd.pop("model.rotary_emb.inv_freq", None)
    return sd


def save_hf(folder, cfg_d, sd):
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump(cfg_d, f, indent=2)
        f.write("\n")
    save_file(sd, os.path.join(folder, "model.safetensors"), metadata={"format": "pt"})


def permute(w, n_head, n_head_kv):
    """llama.cpp convert_hf_to_gguf.py LlamaModel.permute: HF rotate-half rows -> GGUF interleaved pairs."""
    if n_head_kv is not None and n_head != n_head_kv:
        n_head = n_head_kv
    return (w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape))


def save_gguf(path, cfg_d, sd, tied):
    w = gguf.GGUFWriter(path, "llama")
    w.add_name("golden-tiny-llama")
    w.add_context_length(MAX_POS)
    w.add_embedding_length(HIDDEN)
    w.add_block_count(LAYERS)
    w.add_feed_forward_length(FFN)
    w.add_head_count(HEADS)
    w.add_head_count_kv(KV_HEADS)
    w.add_rope_dimension_count(HEAD_DIM)
    w.add_rope_freq_base(cfg_d["rope_theta"])
    w.add_layer_norm_rms_eps(cfg_d["rms_norm_eps"])
    w.add_vocab_size(VOCAB)
    w.add_file_type(0)  # ALL_F32
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    n = lambda t: sd[t].numpy().astype(np.float32)
    w.add_tensor("token_embd.weight", n("model.embed_tokens.weight"))
    for i in range(LAYERS):
        p = f"model.layers.{i}."
        w.add_tensor(f"blk.{i}.attn_norm.weight", n(p + "input_layernorm.weight"))
        w.add_tensor(f"blk.{i}.attn_q.weight", permute(n(p + "self_attn.q_proj.weight"), HEADS, HEADS))
        w.add_tensor(f"blk.{i}.attn_k.weight", permute(n(p + "self_attn.k_proj.weight"), HEADS, KV_HEADS))
        w.add_tensor(f"blk.{i}.attn_v.weight", n(p + "self_attn.v_proj.weight"))
        w.add_tensor(f"blk.{i}.attn_output.weight", n(p + "self_attn.o_proj.weight"))
        w.add_tensor(f"blk.{i}.ffn_norm.weight", n(p + "post_attention_layernorm.weight"))
        w.add_tensor(f"blk.{i}.ffn_gate.weight", n(p + "mlp.gate_proj.weight"))
        w.add_tensor(f"blk.{i}.ffn_up.weight", n(p + "mlp.up_proj.weight"))
        w.add_tensor(f"blk.{i}.ffn_down.weight", n(p + "mlp.down_proj.weight"))
    w.add_tensor("output_norm.weight", n("model.norm.weight"))
    if not tied:
        w.add_tensor("output.weight", n("lm_head.weight"))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def reference_logits(folder):
    """Loads the saved HF folder back with transformers (so the files, not our in-memory model, are what
    is checked) and returns float32 logits (T, V) for TOKENS."""
    model = transformers.AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32,
                                                              attn_implementation="eager").eval()
    with torch.no_grad():
        out = model(torch.tensor([TOKENS])).logits[0]
    return out.float().numpy()


def rope_cases():
    cases = []
    specs = [
        (8, 10000.0, {"rope_type": "default"}),
        (64, 500000.0, {"rope_type": "default"}),
        (16, 10000.0, {"rope_type": "linear", "factor": 2.0}),
        (8, 10000.0, LLAMA3_SCALING),
        (128, 500000.0, {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                         "original_max_position_embeddings": 8192}),
        (64, 10000.0, {"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                       "original_max_position_embeddings": 8192}),
    ]
    for d, theta, params in specs:
        rp = dict(params, rope_theta=theta)
        cfg = LlamaConfig(hidden_size=d * 2, num_attention_heads=2, head_dim=d, rope_parameters=rp,
                          max_position_embeddings=131072)
        inv = LlamaRotaryEmbedding(cfg).inv_freq.float().numpy()
        c = {"type": params["rope_type"] if params["rope_type"] != "default" else "", "head_dim": d, "theta": theta,
             "inv_freq": [float(x) for x in inv]}
        for k in ("factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings"):
            if k in params:
                c[k] = params[k]
        cases.append(c)
    return cases


def main():
    os.makedirs(OUT, exist_ok=True)
    variants = []
    for name, arch, tied, seed in [("llama_tied", "llama", True, 1), ("llama_untied", "llama", False, 2),
                                   ("qwen2_bias", "qwen2", False, 3)]:
        model, cfg_d = make_model(arch, tied, seed)
        sd = state_dict_hf(model, tied)
        folder = os.path.join(OUT, name)
        save_hf(folder, cfg_d, sd)
        has_gguf = arch == "llama"
        if has_gguf:
            save_gguf(os.path.join(OUT, name + ".gguf"), cfg_d, sd, tied)
        logits = reference_logits(folder)
        logits.astype("<f4").tofile(os.path.join(OUT, name + ".logits.bin"))
        variants.append({"name": name, "hf": name, "gguf": name + ".gguf" if has_gguf else None,
                         "logits": name + ".logits.bin"})
        if name == "llama_untied":
            # Same weights, Llama-3 rope scaling in config.json only.
            cfg3 = config_dict(arch, tied, LLAMA3_SCALING)
            with open(os.path.join(OUT, "llama3rope.config.json"), "w") as f:
                json.dump(cfg3, f, indent=2)
                f.write("\n")
            with tempfile.TemporaryDirectory() as tmp:
                shutil.copy(os.path.join(folder, "model.safetensors"), tmp)
                shutil.copy(os.path.join(OUT, "llama3rope.config.json"), os.path.join(tmp, "config.json"))
                logits3 = reference_logits(tmp)
            logits3.astype("<f4").tofile(os.path.join(OUT, "llama3rope.logits.bin"))
            variants.append({"name": "llama3rope", "hf": name, "hf_config": "llama3rope.config.json", "gguf": None,
                             "logits": "llama3rope.logits.bin"})
    versions = {"torch": torch.__version__, "transformers": transformers.__version__, "gguf": version("gguf"),
                "safetensors": safetensors.__version__, "numpy": np.__version__, "python": sys.version.split()[0]}
    with open(os.path.join(OUT, "golden.json"), "w") as f:
        json.dump({"tokens": TOKENS, "vocab": VOCAB, "variants": variants, "versions": versions}, f, indent=2)
        f.write("\n")
    with open(os.path.join(OUT, "rope_inv_freq.json"), "w") as f:
        json.dump({"source": "transformers LlamaRotaryEmbedding(config).inv_freq", "cases": rope_cases()}, f,
                  indent=1)
        f.write("\n")
    with open(os.path.join(OUT, "README.md"), "w") as f:
        f.write("# Golden fixtures: tiny random Llama models and transformers' logits\n\n")
        f.write("Made by `tools/gen_golden.py` (read its header for what each file is); rerun with\n"
                "`python3 tools/gen_golden.py`. Used by `tests/golden/test_golden_llama.cpp` and\n"
                "`tests/unit/test_cpu_ops.cpp` (rope_inv_freq.json).\n\n")
        f.write("Library versions that produced the committed files:\n\n")
        for k, v in versions.items():
            f.write(f"- {k} {v}\n")
        f.write("\nReference logits: `LlamaForCausalLM` / `Qwen2ForCausalLM` loaded from the saved folder in\n"
                "float32 with eager attention, the whole token sequence in one forward.\n")


if __name__ == "__main__":
    main()
