#!/usr/bin/env bash
# QLoRA benchmark (issue 5's targets), one call on one card: the reference workload (TinyLlama shape, random
# bf16 weights, LoRA rank 8 scale 20 on q/v of the last 16 layers, Adam 1e-4, batch 1 x ~89 tokens) with the
# base kept in bf16, quantized at load to Q8_0 and to Q4_K (llama.cpp's blocks, dequantized per GEMM), each
# with and without --grad-checkpoint; then a markdown table: tokens/s, ratio to bf16, peak GPU memory.
# Run from the repository root on the GPU machine after scripts/gpu-check.sh has unpacked the bundle
# (scripts/gpu-check.sh run qlora). Results go to $OUT (or bench-out/) as JSON lines.
#   bench/run_gpu_qlora.sh [--quick]
set -euo pipefail
cd "$(dirname "$0")/.."
BUNDLE=${LORA_BUNDLE:-.gpu-bundle}
LORA=${LORA_BIN:-$BUNDLE/lora}
RES=${OUT:-bench-out}
mkdir -p "$RES"
ITERS=50
[ "${1:-}" = --quick ] && ITERS=5
export LORA_COMMIT=${LORA_COMMIT:-$(git rev-parse --short HEAD 2>/dev/null || echo -)}
rm -f "$RES/qlora.jsonl"
for q in "" q8_0 q4_k; do
  echo "== lora bench ${q:-bf16}"
  "$LORA" bench --device cuda --mode train --batch-size 1 --mean-len 89 --grad-checkpoint 0,1 --iters "$ITERS" \
    ${q:+--quantize $q} --json "$RES/qlora.jsonl"
done
python3 - "$RES/qlora.jsonl" <<'PY' | tee "$RES/qlora_table.md"
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
def key(r): return (r.get("grad_checkpoint"), r.get("batch_size"))
base = {key(r): r for r in rows if not r.get("model", "").endswith(("q8_0", "q4_k"))}
print("| base | checkpointing | tokens/s | vs bf16 | peak GPU memory |")
print("|---|---|---|---|---|")
for r in rows:
    b = base.get(key(r))
    q = r.get("model", "").rsplit("-", 1)[-1] if r.get("model", "").endswith(("q8_0", "q4_k")) else "bf16"
    tps = r["tokens_per_sec"]
    ratio = tps / b["tokens_per_sec"] if b else float("nan")
    gib = r.get("peak_gib", 0.0)
    print(f"| {q} | {'on' if r.get('grad_checkpoint') else 'off'} | {tps:,.0f} | {ratio:.2f} | {gib:.3f} GiB ({gib * 1.073741824:.3f} GB) |")
PY
