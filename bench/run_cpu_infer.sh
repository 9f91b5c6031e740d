#!/usr/bin/env bash
# CPU inference benchmark of a TinyLlama-shaped model with random weights (issue: foundation, §7).
# Makes the model once with `lora init` from TinyLlama's real config.json (../shared), then runs
# bench_infer with the weights kept in bf16 and converted to f32 at load. Prints markdown tables for
# docs/performance.md.
#   bench/run_cpu_infer.sh [--reps N] [--prefill N] [--decode N]
set -euo pipefail
cd "$(dirname "$0")/.."
SHARED=${LORA_SHARED:-../shared}
CONFIG=$SHARED/models/TinyLlama-1.1B-Chat-v1.0/config.json
MODEL=${LORA_BENCH_MODEL:-/tmp/lora-bench/tinyllama-random-bf16}
[ -f "$CONFIG" ] || { echo "needs $CONFIG (the shared/ folder)" >&2; exit 1; }
scripts/build.sh --target lora bench_infer >/dev/null
if [ ! -f "$MODEL/model.safetensors" ]; then
  mkdir -p "$(dirname "$MODEL")"
  build/lora init --config "$CONFIG" --out "$MODEL" --dtype bf16 --seed 0
fi
echo "commit: $(git rev-parse --short HEAD)  cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)  cores: $(nproc)"
for dtype in bf16 f32; do
  echo
  echo "### weights in $dtype"
  build/bench/bench_infer --model "$MODEL" --dtype "$dtype" "$@"
done
