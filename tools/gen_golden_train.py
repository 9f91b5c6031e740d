#!/usr/bin/env python3
"""Golden fixtures for LoRA/DoRA training: loss, logits and every adapter gradient of the tiny random
Llama (tests/fixtures/golden/llama_untied) from transformers + PEFT in float32 on the CPU, and the
same loss and gradients from mlx-lm's own LoRALinear/DoRALinear (mlx, CPU).

Writes tests/fixtures/golden_train/{lora,dora}.safetensors, each with
  inputs, targets (B, T) int32, mask (B, T) f32          one batch; row 1 padded at its end, prompt masked
  model.layers.{i}.{key}.lora_a (in, r), .lora_b (r, out) [, .m (out)]   the adapter (mlx-lm layout)
  grad.<adapter name>                                   d(mean masked loss)/d(param), from PEFT
  mlx_grad.<adapter name>                               the same from mlx-lm (when mlx imports)
  logits (B, T, V)                                      PEFT's logits
and metadata {"loss": PEFT's loss, "mlx_loss": mlx-lm's, "scale", "rank"}. Loss = Σ mask·CE / Σ mask.

The adapter values are drawn here (lora_b nonzero so that dA is nonzero) and written into PEFT as
lora_A.weight = aᵀ (r, in), lora_B.weight = bᵀ (out, r), lora_alpha = scale·r, DoRA magnitude = m.

Produced with torch 2.15, transformers 5.24, peft 0.21.2, mlx 0.32.4, mlx-lm 0.28.1, numpy 2.4, python 3.11.
Rerun: python3 tools/gen_golden_train.py   (used by tests/golden/test_golden_train.cpp)
"""
import json
import os

import numpy as np
import torch
from safetensors.numpy import save_file

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODEL = os.path.join(ROOT, "tests/fixtures/golden/llama_untied")
OUT = os.path.join(ROOT, "tests/fixtures/golden_train")
KEYS = ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
        "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"]
RANK, SCALE = 4, 2.0


def batch(V):
    rng = np.random.default_rng(7)
    B, T = 2, 7
    inputs = rng.integers(0, V, (B, T)).astype(np.int32)
    targets = rng.integers(0, V, (B, T)).astype(np.int32)
    mask = np.ones((B, T), np.float32)
    inputs[1, T - 3:] = 0
    targets[1, T - 3:] = 0
    mask[1, T - 3:] = 0
    mask[1, :2] = 0
    return inputs, targets, mask


def adapter(model, dora):
    rng = np.random.default_rng(11 if dora else 10)
    params = {}
    sd = model.state_dict()
    for i in range(model.config.num_hidden_layers):
        for k in KEYS:
            w = sd[f"model.layers.{i}.{k}.weight"].numpy()
            out, inp = w.shape
            base = f"model.layers.{i}.{k}"
            b = 1 / np.sqrt(inp)
            params[base + ".lora_a"] = rng.uniform(-b, b, (inp, RANK)).astype(np.float32)
            params[base + ".lora_b"] = rng.uniform(-0.2, 0.2, (RANK, out)).astype(np.float32)
            if dora:
                m = np.linalg.norm(w.astype(np.float32), axis=1)
                params[base + ".m"] = (m * rng.uniform(0.8, 1.2, out)).astype(np.float32)
    return params


def peft_run(params, dora, inputs, targets, mask):
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaForCausalLM

    model = LlamaForCausalLM.from_pretrained(MODEL, torch_dtype=torch.float32, attn_implementation="eager")
    cfg = LoraConfig(r=RANK, lora_alpha=SCALE * RANK, lora_dropout=0.0, use_dora=dora,
                     target_modules=[k.split(".")[1] for k in KEYS], bias="none")
    pm = get_peft_model(model, cfg)
    named = dict(pm.named_parameters())
    handles = {}
    with torch.no_grad():
        for name, v in params.items():
            base, leaf = name.rsplit(".", 1)
            pre = f"base_model.model.{base}"
            if leaf == "lora_a":
                t = named[pre + ".lora_A.default.weight"]; t.copy_(torch.from_numpy(v.T.copy()))
            elif leaf == "lora_b":
                t = named[pre + ".lora_B.default.weight"]; t.copy_(torch.from_numpy(v.T.copy()))
            else:
                t = named[pre + ".lora_magnitude_vector.default.weight"]; t.copy_(torch.from_numpy(v))
            handles[name] = t
    logits = pm(input_ids=torch.from_numpy(inputs).long()).logits
    ce = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]),
                                           torch.from_numpy(targets).long().reshape(-1), reduction="none")
    m = torch.from_numpy(mask).reshape(-1)
    loss = (ce * m).sum() / m.sum()
    loss.backward()
    grads = {}
    for name, t in handles.items():
        g = t.grad.numpy()
        grads[name] = (g.T if name.endswith((".lora_a", ".lora_b")) else g).astype(np.float32).copy()
    return float(loss), logits.detach().numpy().astype(np.float32), grads


def mlx_run(params, dora, inputs, targets, mask):
    try:
        import mlx.core as mx
        import mlx.nn as nn
        from mlx.utils import tree_flatten
        from mlx_lm.tuner.utils import linear_to_lora_layers
        from mlx_lm.utils import load_model
    except Exception as e:  # mlx is optional for this generator
        print("mlx-lm unavailable:", e)
        return None, {}
    from pathlib import Path
    model, _ = load_model(Path(MODEL))
    model.freeze()
    linear_to_lora_layers(model, -1, {"rank": RANK, "scale": SCALE, "dropout": 0.0, "keys": KEYS}, use_dora=dora)
    model.load_weights([(k, mx.array(v)) for k, v in params.items()], strict=False)
    x, y, mk = mx.array(inputs), mx.array(targets), mx.array(mask)

    def loss_fn(mdl):
        logits = mdl(x).astype(mx.float32)
        ce = nn.losses.cross_entropy(logits, y) * mk
        return ce.sum() / mk.sum()

    loss, grads = nn.value_and_grad(model, loss_fn)(model)
    flat = dict(tree_flatten(grads))
    return float(loss), {k: np.array(flat[k], dtype=np.float32) for k in params}


def main():
    from transformers import LlamaForCausalLM
    torch.manual_seed(0)
    base = LlamaForCausalLM.from_pretrained(MODEL, torch_dtype=torch.float32)
    inputs, targets, mask = batch(base.config.vocab_size)
    os.makedirs(OUT, exist_ok=True)
    for dora in (False, True):
        params = adapter(base, dora)
        loss, logits, grads = peft_run(params, dora, inputs, targets, mask)
        mlx_loss, mlx_grads = mlx_run(params, dora, inputs, targets, mask)
        tensors = {"inputs": inputs, "targets": targets, "mask": mask, "logits": logits}
        tensors.update(params)
        tensors.update({"grad." + k: v for k, v in grads.items()})
        tensors.update({"mlx_grad." + k: v for k, v in mlx_grads.items()})
        meta = {"loss": repr(loss), "scale": repr(SCALE), "rank": str(RANK)}
        if mlx_loss is not None:
            meta["mlx_loss"] = repr(mlx_loss)
            worst = max(np.abs(mlx_grads[k] - grads[k]).max() / (np.abs(grads[k]).max() + 1e-6) for k in grads)
            print(f"{'dora' if dora else 'lora'}: peft loss {loss:.7f} mlx loss {mlx_loss:.7f}; "
                  f"worst mlx/peft grad diff {worst:.2e}")
        name = "dora" if dora else "lora"
        save_file(tensors, os.path.join(OUT, name + ".safetensors"), metadata=meta)
        print("wrote", name, "loss", loss)


if __name__ == "__main__":
    main()
