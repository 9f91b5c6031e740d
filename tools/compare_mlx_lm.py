#!/usr/bin/env python3
"""Side by side with mlx-lm on the CPU: the reference run's settings on a small random Llama, trained
once by `python -m mlx_lm lora --train` and once by our `lora train`, with and without
--grad-checkpoint; prints (and writes to <work>/report.md) a markdown table of what each printed.

What it does (every step is rerun from scratch; outputs live under --work, default build-peer/compare):
  1. model/: `lora init` of a 4-layer Llama (hidden 256, 4 heads / 2 KV heads, FFN 704, vocab 32000,
     f32 weights so that both sides compute in f32) with TinyLlama-1.1B-Chat's tokenizer files
     (from ../shared/models, copied into the work folder only).
  2. data/: `lora data` of english_quotes, 40 train / 10 valid, seed 42, the reference template (README).
  3. Both trainers with the reference run's flags: --batch-size 1 --iters 50 --learning-rate 1e-4
     --steps-per-report 5 --steps-per-eval 20 --max-seq-length 512 --seed 42, LoRA rank 8 scale 20
     dropout 0 on q_proj/v_proj (both sides' defaults) of the last --num-layers 4 blocks (= all four:
     our `lora train` rejects more blocks than the model has; mlx-lm would clamp its default 16).
     Each run's wall time and peak RSS (wait4), and the 1-minute load average sampled every second.
  4. The Iter 1 validation loss exactly: mlx-lm's evaluation (its loss, batch 1, zero padding to
     1 + 32·ceil(len/32)) on the base model (LoRA B = 0 adds nothing) recomputed here with mlx twice,
     with its mask (which counts one padding target, id 0, per row: PR #1697) and with the padding
     target excluded (our mask); the second must equal ours (from our metrics.jsonl, unrounded).

Versions used: mlx 0.32.4 (mlx[cpu]), mlx-lm 0.28.1, transformers 5.24, python 3.11.
Rerun: python3 tools/compare_mlx_lm.py [--lora build-peer/lora] [--work build-peer/compare]
"""
import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.environ.get("LORA_SHARED", os.path.join(os.path.dirname(ROOT), "shared"))
TOKENIZER_FILES = ["tokenizer.json", "tokenizer.model", "tokenizer_config.json", "special_tokens_map.json",
                   "generation_config.json"]
TEMPLATE = ('{"text": "<|im_start|>user\\nWrite an inspirational quote about {tags[0]}<|im_end|>\\n'
            '<|im_start|>assistant\\n\\"{quote}\\" - {author}<|im_end|>"}')
CONFIG = {
    "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 256, "intermediate_size": 704,
    "num_hidden_layers": 4, "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 32000,
    "max_position_embeddings": 2048, "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "tie_word_embeddings": False,
    "hidden_act": "silu", "bos_token_id": 1, "eos_token_id": 2, "attention_bias": False, "mlp_bias": False,
    "initializer_range": 0.02, "torch_dtype": "float32",
}
RUN_FLAGS = ["--train", "--fine-tune-type", "lora", "--batch-size", "1", "--iters", "50", "--learning-rate", "1e-4",
             "--steps-per-report", "5", "--steps-per-eval", "20", "--max-seq-length", "512", "--seed", "42",
             "--num-layers", "4"]


def sh(cmd, **kw):
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, **kw)


def prepare(args):
    w = args.work
    cfg_dir, model, data = os.path.join(w, "config"), os.path.join(w, "model"), os.path.join(w, "data")
    os.makedirs(cfg_dir, exist_ok=True)
    with open(os.path.join(cfg_dir, "config.json"), "w") as f:
        json.dump(CONFIG, f, indent=2)
    tl = os.path.join(SHARED, "models/TinyLlama-1.1B-Chat-v1.0")
    for n in TOKENIZER_FILES:
        shutil.copyfile(os.path.join(tl, n), os.path.join(cfg_dir, n))
    sh([args.lora, "init", "-c", os.path.join(cfg_dir, "config.json"), "-o", model, "--dtype", "f32", "--seed", "0",
        "--force"])
    sh([args.lora, "data", "-i", os.path.join(SHARED, "data/english_quotes/quotes.jsonl"), "-o", data, "--split",
        "40,10,0", "--seed", "42", "--template", TEMPLATE, "--force"])
    return model, data


class LoadSampler:
    def __init__(self):
        self.samples, self._stop = [], threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            with open("/proc/loadavg") as f:
                self.samples.append(float(f.read().split()[0]))
            self._stop.wait(1.0)

    def __enter__(self):
        self._t.start()
        return self

    def __exit__(self, *a):
        self._stop.set()
        self._t.join()


def timed(cmd, log):
    """Runs cmd with stdout+stderr to log; returns (wall s, peak RSS bytes, load samples, text)."""
    print("+", " ".join(cmd), flush=True)
    with open(log, "w") as out, LoadSampler() as ls:
        t0 = time.perf_counter()
        p = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
        _, status, ru = os.wait4(p.pid, 0)
        wall = time.perf_counter() - t0
        p.returncode = os.waitstatus_to_exitcode(status)
    text = open(log, errors="replace").read()
    if p.returncode != 0:
        sys.exit(f"{cmd[0]} failed ({p.returncode}); see {log}:\n{text[-3000:]}")
    return wall, ru.ru_maxrss * 1024, ls.samples, text


def parse(text):
    r = {"trainable": None, "val": {}, "train": {}}
    for line in text.replace("\r", "\n").splitlines():
        if line.startswith("Trainable parameters:"):
            r["trainable"] = line.strip()
        m = re.match(r"Iter (\d+): Val loss ([\d.naif]+), Val took ([\d.]+)s", line)
        if m:
            r["val"][int(m[1])] = (float(m[2]), float(m[3]))
        m = re.match(r"Iter (\d+): Train loss ([\d.naif]+), Learning Rate ([\d.e+-]+), It/sec ([\d.]+), "
                     r"Tokens/sec ([\d.]+), Trained Tokens (\d+), Peak mem ([\d.]+) GB", line)
        if m:
            r["train"][int(m[1])] = dict(loss=float(m[2]), it_sec=float(m[4]), tok_sec=float(m[5]),
                                         tokens=int(m[6]), peak=float(m[7]))
    return r


def exact_val_losses(model_dir, data_dir):
    """mlx-lm's Iter 1 validation loss on the base model, with its mask and with ours (no padding target)."""
    import mlx.core as mx
    import mlx.nn as nn
    from mlx_lm.utils import load

    model, tok = load(model_dir)
    rows = [json.loads(l)["text"] for l in open(os.path.join(data_dir, "valid.jsonl")) if l.strip()]
    sums = {"mlx": [0.0, 0], "ours": [0.0, 0]}
    for text in rows:
        ids = tok.encode(text)
        if ids[-1] != tok.eos_token_id:
            ids.append(tok.eos_token_id)  # as mlx-lm's TextDataset
        n = min(len(ids), 512)
        width = min(1 + 32 * ((len(ids) + 31) // 32), 512)
        row = ids[:n] + [0] * (width - n)
        x = mx.array([row])
        logits = model(x[:, :-1]).astype(mx.float32)
        ce = nn.losses.cross_entropy(logits, x[:, 1:])[0]
        steps = mx.arange(1, width)
        for k, last in (("mlx", n), ("ours", n - 1)):  # mlx-lm: steps <= length counts target `length` (padding)
            mk = (steps <= last).astype(mx.float32)
            sums[k][0] += float((ce * mk).sum())
            sums[k][1] += int(mk.sum())
    return {k: (s / c, c) for k, (s, c) in sums.items()}


def our_first_val(adapter_dir):
    for line in open(os.path.join(adapter_dir, "metrics.jsonl")):
        r = json.loads(line)
        if r.get("val_loss") is not None:
            return r["val_loss"]
    return None


def fmt_mb(b):
    return f"{b / 2**20:.0f} MiB"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--lora", default=os.path.join(ROOT, "build-peer/lora"))
    ap.add_argument("--work", default=os.path.join(ROOT, "build-peer/compare"))
    ap.add_argument("--python", default=sys.executable)
    args = ap.parse_args()
    args.lora, args.work = os.path.abspath(args.lora), os.path.abspath(args.work)
    model, data = prepare(args)

    runs = {}
    for gc in (False, True):
        sfx = "_gc" if gc else ""
        extra = ["--grad-checkpoint"] if gc else []
        for side in ("mlx-lm", "lora.cpp"):
            ad = os.path.join(args.work, ("mlx" if side == "mlx-lm" else "ours") + "_adapters" + sfx)
            shutil.rmtree(ad, ignore_errors=True)
            if side == "mlx-lm":
                cmd = [args.python, "-m", "mlx_lm", "lora", "--model", model, "--data", data, *RUN_FLAGS, *extra,
                       "--adapter-path", ad]
            else:
                cmd = [args.lora, "train", "--model", model, "--data", data, *RUN_FLAGS, *extra, "--adapter-path", ad]
            wall, rss, load, text = timed(cmd, os.path.join(args.work, f"{side}{sfx}.log"))
            r = parse(text)
            r.update(wall=wall, rss=rss, load=load, cmd=cmd, adapters=ad)
            runs[(side, gc)] = r

    exact = exact_val_losses(model, data)
    ours_val = our_first_val(runs[("lora.cpp", False)]["adapters"])

    out = []
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    out.append(f"Machine: {cpu}, {os.cpu_count()} cores; python {sys.version.split()[0]}.\n")
    cols = [(s, g) for g in (False, True) for s in ("mlx-lm", "lora.cpp")]
    head = " | ".join(f"{s}{' --grad-checkpoint' if g else ''}" for s, g in cols)
    out.append(f"| | {head} |")
    out.append("|---" * (len(cols) + 1) + "|")

    def row(name, f):
        out.append(f"| {name} | " + " | ".join(f(runs[c]) for c in cols) + " |")

    row("trainable parameters", lambda r: (r["trainable"] or "-").replace("Trainable parameters: ", ""))
    for it in sorted(set().union(*(r["val"].keys() for r in runs.values()))):
        row(f"Iter {it} val loss", lambda r, it=it: f"{r['val'][it][0]:.3f}" if it in r["val"] else "-")
    for it in sorted(set().union(*(r["train"].keys() for r in runs.values()))):
        row(f"Iter {it} train loss", lambda r, it=it: f"{r['train'][it]['loss']:.3f}" if it in r["train"] else "-")
    row("trained tokens", lambda r: str(r["train"][max(r["train"])]["tokens"]))
    # Per report window (5 steps): on a shared 2-core machine a busy neighbour slows a window several
    # times over (OpenMP threads wait for a core), so min / median / max say more than one mean.
    row("tokens/s per report: min / median / max", lambda r: " / ".join(
        f"{f([v['tok_sec'] for v in r['train'].values()]):.0f}" for f in (min, statistics.median, max)))
    row("val took (4 evaluations, s)", lambda r: " + ".join(f"{r['val'][k][1]:.1f}" for k in sorted(r["val"])))
    row("reported peak mem", lambda r: f"{r['train'][max(r['train'])]['peak']:.3f} GB")
    row("process peak RSS", lambda r: fmt_mb(r["rss"]))
    row("wall time (whole command)", lambda r: f"{r['wall']:.1f} s")
    row("load average (1 min) during run, mean / max",
        lambda r: f"{statistics.mean(r['load']):.2f} / {max(r['load']):.2f}" if r["load"] else "-")
    out.append("")
    out.append("Iter 1 validation loss, unrounded (base model, LoRA B = 0):\n")
    out.append(f"- mlx-lm's evaluation recomputed with mlx, its mask (one padding target per row): "
               f"{exact['mlx'][0]:.6f} over {exact['mlx'][1]} targets")
    out.append(f"- the same without the padding target (our mask): {exact['ours'][0]:.6f} over {exact['ours'][1]} targets")
    out.append(f"- lora.cpp (metrics.jsonl): {ours_val:.6f}; |ours - mlx fixed| = {abs(ours_val - exact['ours'][0]):.2e}; "
               f"padding-target bug shifts mlx-lm's value by {exact['mlx'][0] - exact['ours'][0]:+.4f}")
    out.append("")
    out.append("Commands:\n")
    for c in cols:
        out.append("    " + " ".join(runs[c]["cmd"]).replace(args.work + "/", "$WORK/").replace(ROOT + "/", ""))
    text = "\n".join(out) + "\n"
    with open(os.path.join(args.work, "report.md"), "w") as f:
        f.write(text)
    print(text)


if __name__ == "__main__":
    main()
