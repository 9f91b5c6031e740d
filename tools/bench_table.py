"""Markdown table for docs/performance.md from bench/run_gpu.sh's JSON lines: ours (lora bench --json) beside
the peer's (../shared/bench/peft_baseline.py --json), matched by batch size and gradient checkpointing.

  python3 tools/bench_table.py lora.jsonl peft.jsonl
"""
import json, sys


def load(path):
    try:
        return [json.loads(l) for l in open(path) if l.strip()]
    except FileNotFoundError:
        return []


def f(v, d=1):
    return "-" if v is None else f"{v:,.{d}f}"


def main():
    ours, peft = load(sys.argv[1]), load(sys.argv[2]) if len(sys.argv) > 2 else []
    dev = next((r.get("device") for r in ours), "?")
    commit = next((r.get("commit") for r in ours if r.get("commit")), "-")
    print(f"device: {dev}; commit {commit}; peer: {next((r.get('device') for r in peft), '-')}\n")
    print("| setting | ckpt | lora.cpp tokens/s | ms/step (median, p10..p90) | MFU | GB/s | peak GiB "
          "| PEFT tokens/s | PEFT ms/step | PEFT peak GiB | speed-up | memory |")
    print("|---|:-:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|")
    for r in ours:
        if r.get("mode") != "train":
            continue
        ck = bool(r.get("grad_checkpoint"))
        p = next((q for q in peft if q.get("batch_size") == r["batch_size"] and bool(q.get("grad_checkpoint")) == ck), None)
        setting = f"batch {r['batch_size']} x ~{r.get('mean_len')} tokens"
        mfu = r.get("mfu")
        row = [setting, "on" if ck else "off", f(r["tokens_per_sec"]),
               f"{r['ms_per_step_median']:.2f} ({r['p10']:.2f}..{r['p90']:.2f})",
               "-" if mfu is None else f"{100 * mfu:.1f}%", f(r.get("gb_per_s"), 0), f(r["peak_gib"], 3)]
        if p:
            row += [f(p["tokens_per_sec"]), f(p["ms_per_step"], 2), f(p["peak_gib"], 3),
                    f"{r['tokens_per_sec'] / p['tokens_per_sec']:.1f}x",
                    f"{r['peak_gib'] / p['peak_gib']:.2f}x"]
        else:
            row += ["-"] * 5
        print("| " + " | ".join(row) + " |")
    print()
    print("| generation | tokens/s | ms/token (median, p10..p90) | TFLOP/s | GB/s | peak GiB |")
    print("|---|--:|--:|--:|--:|--:|")
    for r in ours:
        if r.get("mode") not in ("prefill", "decode"):
            continue
        per_tok = r["ms_per_step_median"] if r["mode"] == "decode" else r["ms_per_step_median"] / max(1, r.get("prompt_len", 1))
        print(f"| {r['test']} | {f(r['tokens_per_sec'])} | {r['ms_per_step_median']:.3f} ({r['p10']:.3f}..{r['p90']:.3f})"
              f" | {f(r.get('tflops'), 1)} | {f(r.get('gb_per_s'), 0)} | {f(r['peak_gib'], 3)} |")


if __name__ == "__main__":
    main()
