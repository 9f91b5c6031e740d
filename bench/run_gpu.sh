#!/usr/bin/env bash
# GPU benchmark, ours and the peer's side by side in one call on the same card (issue 4's table):
#   - lora bench --device cuda: prefill 512 + decode 128 at batch 1 (bf16); training at the reference settings
#     (TinyLlama shape, random bf16 weights, LoRA rank 8 scale 20 on q/v of the last 16 layers, Adam 1e-4) at
#     batch 1 x ~89 tokens and batch 8 x ~256 tokens, each with and without --grad-checkpoint;
#   - ../shared/bench/peft_baseline.py (transformers + PEFT) at the same four training settings;
#   - tools/bench_table.py: the markdown table for docs/performance.md with the ratio per setting.
# Run from the repository root on the GPU machine, after scripts/gpu-check.sh has unpacked the bundle
# (scripts/gpu-check.sh run bench does both). Results go to $OUT (or bench-out/) as JSON lines.
#   bench/run_gpu.sh [--quick]     --quick: fewer iterations (a smoke test of the script)
set -euo pipefail
cd "$(dirname "$0")/.."
BUNDLE=${LORA_BUNDLE:-.gpu-bundle}
LORA=${LORA_BIN:-$BUNDLE/lora}
SHARED=${LORA_SHARED:-../shared}
PEFT=$SHARED/bench/peft_baseline.py
RES=${OUT:-bench-out}
mkdir -p "$RES"
ITERS=50; ITERS8=20
[ "${1:-}" = --quick ] && { ITERS=5; ITERS8=3; }
export LORA_COMMIT=${LORA_COMMIT:-$(git rev-parse --short HEAD 2>/dev/null || echo -)}
rm -f "$RES/lora.jsonl" "$RES/peft.jsonl"

echo "== lora bench (generation, batch 1 x 89 training)"
"$LORA" bench --device cuda --mode all --batch-size 1 --mean-len 89 --grad-checkpoint 0,1 --iters "$ITERS" \
  --prompt-len 512 --gen-len 128 --gen-reps 3 --json "$RES/lora.jsonl"
echo "== lora bench (batch 8 x 256 training)"
"$LORA" bench --device cuda --mode train --batch-size 8 --mean-len 256 --grad-checkpoint 0,1 --iters "$ITERS8" \
  --json "$RES/lora.jsonl"

echo "== transformers + PEFT ($PEFT)"
for ck in --no-grad-checkpoint --grad-checkpoint; do
  python3 "$PEFT" --batch-size 1 --mean-len 89 --iters "$ITERS" $ck --json "$RES/peft.jsonl" 2>&1 | grep -v -i warn | tail -1
  python3 "$PEFT" --batch-size 8 --mean-len 256 --iters "$ITERS8" $ck --json "$RES/peft.jsonl" 2>&1 | grep -v -i warn | tail -1
done
python3 tools/bench_table.py "$RES/lora.jsonl" "$RES/peft.jsonl" | tee "$RES/table.md"
