#!/usr/bin/env python3
"""Golden fixtures for several optimizer steps of LoRA/DoRA training: the loss at every step and the
final adapter, from mlx-lm's own trainer and from transformers + PEFT with an MLX-semantics Adam.

Model: the tiny random Llama tests/fixtures/golden/llama_untied (2 layers, hidden 32, GQA 4/2, V 67).
For each case (see CASES) this writes into tests/fixtures/golden_steps/:
  <case>.init.safetensors    the starting adapter in mlx-lm's layout ("model.layers.{i}.{key}.lora_a"
                             (in, r) drawn uniform in ±1/sqrt(in) here, "lora_b" (r, out) = 0 as in real
                             training, DoRA "m" (out) = row norms of W); what our side loads through
                             adapter_load_weights / --resume-adapter-file
  <case>.golden.safetensors  tokens (N, L) int32 and offsets (N,) int32: the examples (the loss covers
                             tokens[i] for i >= offset); mlx.<param> / peft.<param>: the adapter after
                             STEPS updates from each peer; metadata (JSON strings): rank, scale,
                             num_layers, keys, type, lr, steps, mlx_losses / peft_losses (the mean masked
                             loss of every step, before its update), mlx_val_first / mlx_val_last (mlx-lm's
                             "Val loss" at iteration 1 and at the last iteration, over the same examples)

(a) mlx-lm: mlx_lm.tuner.trainer.train with optim.Adam(lr) (no bias correction, MLX's default), the
    N examples as ONE batch (batch_size = N), so every step sees all of them and mlx-lm's random
    batch order cannot matter. Every example has the same length L and max_seq_length = L: mlx-lm
    then builds batches of exactly L columns (min(1 + 32·ceil(L/32), max_seq_length) = L), and its
    mask `steps <= length` ends at the last real target. With shorter rows that mask would count one
    padding target per row (its padding-target bug, docs/formats.md), which our loss excludes; equal
    lengths keep both peers on the same loss. Per-step losses come from a TrainingCallback with
    steps_per_report = 1 (unrounded); the final adapter from model.trainable_parameters().
(b) transformers + PEFT, float32 on the CPU: LoraConfig(r, lora_alpha = scale·r) on the same modules
    and layers, the same starting values, loss = Σ mask·CE / Σ mask, and a hand-written Adam with
    MLX's update (m = b1·m + (1-b1)·g; v = b2·v + (1-b2)·g²; w -= lr·m / (sqrt(v) + eps)).

Produced with torch 2.15, transformers 5.24, peft 0.21.2, mlx 0.32.4, mlx-lm 0.28.1 (CPU), numpy 2.4,
python 3.11. Rerun: python3 tools/gen_golden_steps.py   (used by tests/golden/test_golden_steps.cpp)
"""
import json
import os
import tempfile

import numpy as np
import torch
from safetensors.numpy import save_file

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODEL = os.path.join(ROOT, "tests/fixtures/golden/llama_untied")
OUT = os.path.join(ROOT, "tests/fixtures/golden_steps")

N, L = 4, 17          # examples, tokens per example (= max_seq_length)
OFFSETS = [0, 0, 5, 3]  # where each example's loss starts (prompt masking)
STEPS = 8
CASES = [
    # name, type, rank, scale, num_layers (-1 = all), keys, learning rate. mlx-lm's defaults (rank 8,
    # scale 20, q/v) with lr 1e-2 make the loss bounce from step 6 on, and a chaotic trajectory
    # amplifies f32 rounding (PEFT and mlx-lm then differ by 2% in loss): 2e-3 keeps it smooth.
    ("lora", "lora", 8, 20.0, -1, ["self_attn.q_proj", "self_attn.v_proj"], 2e-3),
    ("dora", "dora", 4, 10.0, 1, ["self_attn.q_proj", "self_attn.v_proj"], 1e-2),
]


def examples(V):
    # Learnable structure (a few repeated phrases) so the loss clearly falls over the steps.
    rng = np.random.default_rng(42)
    phrases = rng.integers(3, V, (3, 6))
    toks = np.zeros((N, L), np.int32)
    for i in range(N):
        row = [1]  # BOS
        while len(row) < L:
            row += list(phrases[rng.integers(0, 3)])
        toks[i] = np.array(row[:L], np.int32)
    return toks, np.array(OFFSETS, np.int32)


def layers_of(n_layers, num_layers):
    return list(range(n_layers)) if num_layers < 0 else list(range(n_layers - num_layers, n_layers))


def init_adapter(model, case):
    name, typ, rank, _, num_layers, keys, _ = case
    rng = np.random.default_rng(100 + len(name))
    sd = model.state_dict()
    params = {}
    for i in layers_of(model.config.num_hidden_layers, num_layers):
        for k in keys:
            w = sd[f"model.layers.{i}.{k}.weight"].numpy().astype(np.float32)
            out, inp = w.shape
            base = f"model.layers.{i}.{k}"
            b = 1 / np.sqrt(inp)
            params[base + ".lora_a"] = rng.uniform(-b, b, (inp, rank)).astype(np.float32)
            params[base + ".lora_b"] = np.zeros((rank, out), np.float32)
            if typ == "dora":
                params[base + ".m"] = np.linalg.norm(w, axis=1).astype(np.float32)
    return params


def mlx_run(case, params, toks, offsets):
    import mlx.core as mx
    import mlx.optimizers as optim
    from mlx.utils import tree_flatten
    from mlx_lm.tuner.callbacks import TrainingCallback
    from mlx_lm.tuner.trainer import TrainingArgs, train
    from mlx_lm.tuner.utils import linear_to_lora_layers
    from mlx_lm.utils import load_model
    from pathlib import Path

    name, typ, rank, scale, num_layers, keys, LR = case
    mx.random.seed(0)
    np.random.seed(0)
    model, _ = load_model(Path(MODEL))
    model.freeze()
    linear_to_lora_layers(model, num_layers if num_layers > 0 else len(model.layers),
                          {"rank": rank, "scale": scale, "dropout": 0.0, "keys": keys}, use_dora=(typ == "dora"))
    model.load_weights([(k, mx.array(v)) for k, v in params.items()], strict=False)
    got = set(k for k, _ in tree_flatten(model.trainable_parameters()))
    assert got == set(params), (sorted(got), sorted(params))

    data = [(list(map(int, toks[i])), int(offsets[i])) for i in range(N)]

    class Cb(TrainingCallback):
        def __init__(self):
            self.train, self.val = [], []

        def on_train_loss_report(self, info):
            self.train.append(info["train_loss"])

        def on_val_loss_report(self, info):
            self.val.append(info["val_loss"])

    cb = Cb()
    with tempfile.TemporaryDirectory() as d:
        args = TrainingArgs(batch_size=N, iters=STEPS, val_batches=-1, steps_per_report=1, steps_per_eval=10**6,
                            steps_per_save=10**6, max_seq_length=L, adapter_file=os.path.join(d, "a.safetensors"))
        train(model, optim.Adam(learning_rate=LR), data, data, args=args, training_callback=cb)
    final = {k: np.array(v, dtype=np.float32) for k, v in tree_flatten(model.trainable_parameters())}
    assert len(cb.train) == STEPS and len(cb.val) == 2
    return cb.train, cb.val, final


def peft_run(case, params, toks, offsets):
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaForCausalLM

    name, typ, rank, scale, num_layers, keys, LR = case
    model = LlamaForCausalLM.from_pretrained(MODEL, dtype=torch.float32, attn_implementation="eager")
    cfg = LoraConfig(r=rank, lora_alpha=scale * rank, lora_dropout=0.0, use_dora=(typ == "dora"),
                     target_modules=[k.split(".")[1] for k in keys], bias="none",
                     layers_to_transform=layers_of(model.config.num_hidden_layers, num_layers))
    pm = get_peft_model(model, cfg)
    named = dict(pm.named_parameters())
    handles = {}  # mlx name -> (torch parameter, transposed?)
    with torch.no_grad():
        for k, v in params.items():
            base, leaf = k.rsplit(".", 1)
            pre = f"base_model.model.{base}"
            if leaf == "lora_a":
                t, tr = named[pre + ".lora_A.default.weight"], True
            elif leaf == "lora_b":
                t, tr = named[pre + ".lora_B.default.weight"], True
            else:
                t, tr = named[pre + ".lora_magnitude_vector.default.weight"], False
            t.copy_(torch.from_numpy(v.T.copy() if tr else v))
            handles[k] = (t, tr)
    trainable = [n for n, p in pm.named_parameters() if p.requires_grad]
    assert len(trainable) == len(params), trainable

    x = torch.from_numpy(toks[:, :-1]).long()
    y = torch.from_numpy(toks[:, 1:]).long()
    pos = torch.arange(1, L).unsqueeze(0)  # target t predicts token t+1
    mask = (pos >= torch.from_numpy(offsets).long().unsqueeze(1)).float()

    b1, b2, eps = 0.9, 0.999, 1e-8
    lr = torch.tensor(LR, dtype=torch.float32)
    state = {k: (torch.zeros_like(t), torch.zeros_like(t)) for k, (t, _) in handles.items()}
    losses = []
    for _ in range(STEPS):
        pm.zero_grad()
        logits = pm(input_ids=x).logits
        ce = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1), reduction="none")
        loss = (ce * mask.reshape(-1)).sum() / mask.sum()
        loss.backward()
        losses.append(float(loss))
        with torch.no_grad():
            for k, (t, _) in handles.items():
                g = t.grad
                m, v = state[k]
                m = b1 * m + (1 - b1) * g
                v = b2 * v + (1 - b2) * torch.square(g)
                state[k] = (m, v)
                t.sub_(lr * m / (torch.sqrt(v) + eps))
    final = {}
    for k, (t, tr) in handles.items():
        v = t.detach().numpy()
        final[k] = (v.T if tr else v).astype(np.float32).copy()
    return losses, final


def main():
    from transformers import LlamaForCausalLM
    torch.manual_seed(0)
    base = LlamaForCausalLM.from_pretrained(MODEL, dtype=torch.float32)
    toks, offsets = examples(base.config.vocab_size)
    os.makedirs(OUT, exist_ok=True)
    for case in CASES:
        name, typ, rank, scale, num_layers, keys, LR = case
        params = init_adapter(base, case)
        mlx_losses, mlx_val, mlx_final = mlx_run(case, params, toks, offsets)
        peft_losses, peft_final = peft_run(case, params, toks, offsets)
        worst = max(np.abs(mlx_final[k] - peft_final[k]).max() / (np.abs(peft_final[k]).max() + 1e-6) for k in params)
        dl = max(abs(a - b) / abs(b) for a, b in zip(mlx_losses, peft_losses))
        print(f"{name}: mlx losses {['%.5f' % v for v in mlx_losses]}")
        print(f"{name}: peft losses {['%.5f' % v for v in peft_losses]}")
        print(f"{name}: worst relative loss diff {dl:.2e}, worst final param diff / max |param| {worst:.2e}; "
              f"mlx val {mlx_val}")
        meta = {"type": typ, "rank": str(rank), "scale": repr(scale), "num_layers": str(num_layers),
                "keys": json.dumps(keys), "lr": repr(LR), "steps": str(STEPS),
                "mlx_losses": json.dumps([float(v) for v in mlx_losses]),
                "peft_losses": json.dumps([float(v) for v in peft_losses]),
                "mlx_val_first": repr(float(mlx_val[0])), "mlx_val_last": repr(float(mlx_val[1]))}
        save_file(params, os.path.join(OUT, name + ".init.safetensors"), metadata={"format": "mlx"})
        tensors = {"tokens": toks, "offsets": offsets}
        tensors.update({"mlx." + k: v for k, v in mlx_final.items()})
        tensors.update({"peft." + k: v for k, v in peft_final.items()})
        save_file(tensors, os.path.join(OUT, name + ".golden.safetensors"), metadata=meta)
        for f in (".init.safetensors", ".golden.safetensors"):
            os.chmod(os.path.join(OUT, name + f), 0o644)
        print("wrote", name)


if __name__ == "__main__":
    main()
