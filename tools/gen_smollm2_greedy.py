#!/usr/bin/env python3
# Makes tests/fixtures/smollm2/greedy.json: the reference for tests/golden/test_smollm2_greedy.cpp.
# For a few chat prompts on SmolLM2-135M-Instruct (the Q4_1 GGUF that scripts/fetch-models.sh fetches),
# transformers in float32 on the dequantized weights renders the GGUF's chat template
# (apply_chat_template, add_generation_prompt=True), tokenizes with the GGUF's vocabulary and
# greedy-decodes up to MAX_NEW tokens (stopping after EOS = <|im_end|>). Recorded per prompt: the prompt
# ids, the generated ids, every step's top-1 id/logit and top-1 minus top-2 margin (so the test can tell a
# real mismatch from a near-tie), and the top-50 logits of the first step.
#
# The weights transformers builds from the GGUF are cross-checked against an independent load with the
# gguf package (gguf.quants.dequantize + undoing llama.cpp's Q/K row permutation): they must be equal,
# so transformers' GGUF loader is not trusted blindly.
#
# Versions used for the committed fixture: transformers 5.24.0, torch 2.15.0, gguf 0.19.0 (recorded in
# the JSON as well). Rerun:  python3 tools/gen_smollm2_greedy.py [path/to/SmolLM2-135M-Instruct.Q4_1.gguf]
import importlib.metadata
import json
import os
import sys
import tempfile

import gguf
import numpy as np
import torch
import transformers
from transformers import AutoModelForCausalLM, AutoTokenizer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GGUF_PATH = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "models", "SmolLM2-135M-Instruct.Q4_1.gguf")
OUT = os.path.join(ROOT, "tests", "fixtures", "smollm2", "greedy.json")
MAX_NEW = 40
TOP_FIRST = 50

# (system prompt or "", user prompt). An empty system prompt lets the template insert its default one.
PROMPTS = [
    ("", "What is the capital of France?"),
    ("", "Write a haiku about the sea."),
    ("", "Give me three tips for learning to program."),
    ("", "Translate 'good morning' into Spanish."),
    ("You are a pirate. Answer every question like a pirate would.", "How do I make a cup of tea?"),
]


def unpermute(w, n_head):
    # Inverse of llama.cpp convert's permute: reshape(n_head, 2, rows/n_head/2, cols).swapaxes(1, 2).
    rows, cols = w.shape
    return w.reshape(n_head, rows // n_head // 2, 2, cols).swapaxes(1, 2).reshape(rows, cols)


def gguf_state_dict(path):
    """HF-named float32 tensors from the GGUF, dequantized and un-permuted independently of transformers."""
    r = gguf.GGUFReader(path)
    f = r.fields
    n_head = int(f["llama.attention.head_count"].contents())
    n_kv = int(f["llama.attention.head_count_kv"].contents())
    names = {"attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
             "attn_output": "self_attn.o_proj", "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj",
             "ffn_down": "mlp.down_proj", "attn_norm": "input_layernorm", "ffn_norm": "post_attention_layernorm"}
    sd = {}
    for t in r.tensors:
        w = gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float32)
        w = w.reshape([int(x) for x in reversed(t.shape)])  # ne[] is innermost first
        parts = t.name.split(".")
        if t.name == "token_embd.weight":
            sd["model.embed_tokens.weight"] = w
        elif t.name == "output_norm.weight":
            sd["model.norm.weight"] = w
        elif t.name == "output.weight":
            sd["lm_head.weight"] = w
        else:
            assert parts[0] == "blk", t.name
            leaf = parts[2]
            if leaf == "attn_q":
                w = unpermute(w, n_head)
            elif leaf == "attn_k":
                w = unpermute(w, n_kv)
            sd[f"model.layers.{parts[1]}.{names[leaf]}.weight"] = w
    return sd


def main():
    torch.manual_seed(0)
    folder, name = os.path.split(os.path.abspath(GGUF_PATH))
    tok = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    model.eval()
    cfg = model.config
    assert cfg.rope_parameters["rope_theta"] == 100000.0 and cfg.tie_word_embeddings, cfg

    # Cross-check transformers' GGUF loader against our own dequantize + un-permute.
    ours = gguf_state_dict(GGUF_PATH)
    theirs = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    for k, v in ours.items():
        assert k in theirs, k
        assert theirs[k].shape == v.shape, (k, theirs[k].shape, v.shape)
        assert np.array_equal(theirs[k], v), (k, float(np.abs(theirs[k] - v).max()))
    print(f"transformers' GGUF weights equal the gguf-package dequantization ({len(ours)} tensors)")

    eos = int(cfg.eos_token_id)
    stop_ids = {eos, tok.convert_tokens_to_ids("<|im_end|>")}
    cases = []
    for system, user in PROMPTS:
        messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": user}]
        text = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        ids = tok(text, add_special_tokens=False)["input_ids"]
        gen, steps, first = [], [], None
        with torch.no_grad():
            out = model(torch.tensor([ids]), use_cache=True)
            past = out.past_key_values
            logits = out.logits[0, -1].double()
            for step in range(MAX_NEW):
                top2 = torch.topk(logits, 2)
                if first is None:
                    tk = torch.topk(logits, TOP_FIRST)
                    first = {"ids": tk.indices.tolist(), "logits": [float(x) for x in tk.values]}
                nxt = int(top2.indices[0])
                steps.append({"top1": nxt, "top1_logit": float(top2.values[0]),
                              "margin": float(top2.values[0] - top2.values[1]), "top2": int(top2.indices[1])})
                gen.append(nxt)
                if nxt in stop_ids:
                    break
                out = model(torch.tensor([[nxt]]), past_key_values=past, use_cache=True)
                past = out.past_key_values
                logits = out.logits[0, -1].double()
        reply = tok.decode(gen, skip_special_tokens=True)
        print(f"--- {user!r}: {len(ids)} prompt ids, {len(gen)} generated, min margin "
              f"{min(s['margin'] for s in steps):.4g}\n{reply}")
        cases.append({"system": system, "prompt": user, "rendered": text, "prompt_ids": ids,
                      "generated_ids": gen, "reply": reply, "steps": steps, "first_step_top": first})

    doc = {
        "about": "Greedy float32 generation of SmolLM2-135M-Instruct (Q4_1 GGUF, dequantized) by transformers; "
                 "made by tools/gen_smollm2_greedy.py",
        "model": os.path.basename(GGUF_PATH),
        "versions": {"transformers": transformers.__version__, "torch": torch.__version__,
                     "gguf": importlib.metadata.version("gguf"), "numpy": np.__version__},
        "max_new_tokens": MAX_NEW,
        "stop_ids": sorted(stop_ids),
        "cases": cases,
    }
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    with open(OUT, "w") as fh:
        json.dump(doc, fh, indent=1)
        fh.write("\n")
    print("wrote", OUT, os.path.getsize(OUT), "bytes")


if __name__ == "__main__":
    main()
