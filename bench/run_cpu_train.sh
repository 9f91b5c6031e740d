#!/usr/bin/env bash
# CPU LoRA training benchmark at the reference settings of docs/formats.md (mlx-lm's TinyLlama run):
# a TinyLlama-shaped model with random bf16 weights (made once with `lora init` from TinyLlama's real
# config.json in ../shared), LoRA rank 8 on q_proj and v_proj of the last 16 of 22 blocks, batch 1,
# 89-token rows padded to 96, Adam; once without and once with --grad-checkpoint. Prints each run's
# details, then the markdown rows for docs/performance.md under one line naming the commit, the CPU,
# the threads and the load average (the machine may be shared: the rows are medians of --reps steps).
#   bench/run_cpu_train.sh [--reps N] [--threads N] [--profile]   (extra flags go to bench_train)
set -euo pipefail
cd "$(dirname "$0")/.."
SHARED=${LORA_SHARED:-../shared}
CONFIG=$SHARED/models/TinyLlama-1.1B-Chat-v1.0/config.json
MODEL=${LORA_BENCH_MODEL:-/tmp/lora-bench/tinyllama-random-bf16}
BUILD=${LORA_BUILD_DIR:-build}
[ -f "$CONFIG" ] || { echo "needs $CONFIG (the shared/ folder)" >&2; exit 1; }
LORA_BUILD_DIR=$BUILD scripts/build.sh --target lora bench_train >/dev/null
if [ ! -f "$MODEL/model.safetensors" ]; then
  mkdir -p "$(dirname "$MODEL")"
  "$BUILD/lora" init --config "$CONFIG" --out "$MODEL" --dtype bf16 --seed 0
fi
ARGS=(--model "$MODEL" --dtype bf16 --batch 1 --seq 96 --len 89 --rank 8 --keys q_proj,v_proj --num-layers 16
      --reps 5 --warmup 1)
rows=()
for ckpt in "" --grad-checkpoint; do
  out=$("$BUILD/bench/bench_train" "${ARGS[@]}" $ckpt "$@")
  echo "$out"
  echo
  rows+=("$(grep '^| bf16' <<<"$out")")
done
threads=$(grep -m1 '^threads:' <<<"$out" | sed 's/threads: \([0-9]*\).*/\1/')
echo "commit $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- src || echo '+local changes'), cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) cores, $threads threads, load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo
echo "| weights | grad ckpt | s/step (median) | spread | tokens/s | mlx-lm tokens/s | GFLOP/s | % of floor | peak RSS |"
echo "|---|---|---:|---:|---:|---:|---:|---:|---:|"
printf '%s\n' "${rows[@]}"
