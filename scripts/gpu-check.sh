#!/usr/bin/env bash
# GPU check in two halves, for a GPU machine that has the CUDA toolkit and driver but none of Debian's
# -dev packages and no network:
#   scripts/gpu-check.sh bundle   here: build with CUDA into build-gpu/, then copy the binaries and every
#                                 non-CUDA, non-glibc shared library they need into .gpu-bundle/ (the
#                                 binaries carry RPATH $ORIGIN, so they find them there).
#   scripts/gpu-check.sh run [STAGE...]  there, from the repository root. Stages (default: tests parity e2e):
#       tests   print the device, run every bundled CUDA test (the test_cuda_* binaries = ctest label cuda)
#       parity  tools/peft_parity.py (transformers + PEFT on a TinyLlama-shaped random model) then our
#               test_cuda_peft_parity on the same files (which also imports PEFT's trained adapter and exports
#               ours), then tools/peft_parity.py --check-export (our export in PeftModel.from_pretrained)
#       e2e     the reference workflow with --device cuda: lora init (TinyLlama shape, random) -> lora data
#               (english_quotes 40/10) -> lora train (50 iterations) -> lora generate --adapter-path
#       bench   bench/run_gpu.sh: lora bench and ../shared/bench/peft_baseline.py side by side
#       qlora   bench/run_gpu_qlora.sh: the reference workload with the base in bf16, Q8_0 and Q4_K (QLoRA)
#   Results worth keeping are copied to $OUT when it is set (the device tool's output folder).
# .gpu-bundle/ and .gpu-bundle.tar.xz are git-ignored; carry the .tar.xz to the GPU machine (64 MiB limit).
set -euo pipefail
cd "$(dirname "$0")/.."
BUNDLE=.gpu-bundle
case "${1:-}" in
  bundle)
    export PATH="$PATH:/usr/local/cuda/bin"
    command -v nvcc >/dev/null || { echo "gpu-check: nvcc not found" >&2; exit 1; }
    cmake -S . -B build-gpu -G Ninja -DCMAKE_BUILD_TYPE=Release -DLORA_CUDA=ON -DLORA_BENCH=ON \
      -DLORA_NATIVE=OFF -DCMAKE_BUILD_RPATH='$ORIGIN' >/dev/null
    cmake --build build-gpu -j "$(nproc)"
    rm -rf "$BUNDLE"
    mkdir -p "$BUNDLE"
    bins=(build-gpu/lora build-gpu/tests/test_cuda_* build-gpu/bench/bench_*)
    for b in "${bins[@]}"; do [ -x "$b" ] && cp "$b" "$BUNDLE/"; done
    # Shared libraries: everything ldd resolves, except glibc's own and the CUDA toolkit's (the GPU
    # machine has its own CUDA 13).
    for b in "$BUNDLE"/*; do [ -f "$b" ] && ldd "$b"; done | awk '/=> \// {print $3}' | sort -u | while read -r lib; do
      case "$(basename "$lib")" in
        libc.so*|libm.so*|libpthread.so*|libdl.so*|librt.so*|ld-linux*|libcuda.so*|libcudart*|libcublas*|libnvrtc*) ;;
        *) cp -L "$lib" "$BUNDLE/" ;;
      esac
    done
    # Debian's OpenBLAS is reached through the alternatives system: keep the real library's soname.
    # The GPU machine has no ../shared: take the few shared files the stages read (TinyLlama's config and
    # tokenizer, the quotes, the peer's benchmark script) inside the bundle. Not part of the repository.
    SHARED_SRC=${LORA_SHARED:-../shared}
    if [ -d "$SHARED_SRC" ]; then
      mkdir -p "$BUNDLE/shared/models" "$BUNDLE/shared/data/english_quotes" "$BUNDLE/shared/bench"
      cp -r "$SHARED_SRC/models/TinyLlama-1.1B-Chat-v1.0" "$BUNDLE/shared/models/"
      cp "$SHARED_SRC/data/english_quotes/quotes.jsonl" "$BUNDLE/shared/data/english_quotes/"
      cp "$SHARED_SRC/bench/peft_baseline.py" "$BUNDLE/shared/bench/"
    fi
    # The device tool carries at most 64 MiB: ship the bundle compressed (OpenBLAS alone is 36 MB).
    tar -cf - "$BUNDLE" | xz -T2 -6 > "$BUNDLE.tar.xz"
    echo "gpu-check: bundled $(ls "$BUNDLE" | wc -l) files ($(du -sh "$BUNDLE" | cut -f1)) in $BUNDLE, $(du -sh "$BUNDLE.tar.xz" | cut -f1) compressed in $BUNDLE.tar.xz"
    ;;
  run)
    if [ ! -d "$BUNDLE" ] && [ -f "$BUNDLE.tar.xz" ]; then tar -xJf "$BUNDLE.tar.xz"; fi
    [ -d "$BUNDLE" ] || { echo "gpu-check: no $BUNDLE (run 'scripts/gpu-check.sh bundle' on the build machine)" >&2; exit 1; }
    export LD_LIBRARY_PATH="$PWD/$BUNDLE:${LD_LIBRARY_PATH:-}:/usr/local/cuda/lib64"
    export LORA_SOURCE_DIR="$PWD" LORA_BIN="$PWD/$BUNDLE/lora"
    if [ -d ../shared ]; then export LORA_SHARED="$(cd ../shared && pwd)"
    elif [ -d "$BUNDLE/shared" ]; then export LORA_SHARED="$PWD/$BUNDLE/shared"; fi
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
    shift
    stages=("$@")
    [ ${#stages[@]} -gt 0 ] || stages=(tests parity e2e)
    status=0
    SHARED=${LORA_SHARED:-../shared}
    WORK=${TMPDIR:-/tmp}/lora-gpu-check
    mkdir -p "$WORK"
    for stage in "${stages[@]}"; do
      echo "==== stage: $stage"
      case "$stage" in
        tests)
          for t in "$BUNDLE"/test_cuda_*; do
            [ -x "$t" ] || continue
            echo "== $(basename "$t")"
            "$t" 2>&1 | grep -v '^\[ *\(RUN\|OK\) ' || status=1
          done
          ;;
        parity)
          python3 tools/peft_parity.py --out "$WORK/parity" 2>&1 | grep -v Warning | tail -3 || status=1
          LORA_PEFT_PARITY_DIR="$WORK/parity" "$BUNDLE/test_cuda_peft_parity" || status=1
          python3 tools/peft_parity.py --out "$WORK/parity" --check-export 2>&1 | grep -v -i warn | tail -1 || status=1
          ;;
        e2e)
          L="$BUNDLE/lora"
          [ -f "$WORK/tinyllama/model.safetensors" ] ||
            "$L" init --config "$SHARED/models/TinyLlama-1.1B-Chat-v1.0/config.json" --out "$WORK/tinyllama" --dtype bf16 --seed 0
          "$L" data -i "$SHARED/data/english_quotes/quotes.jsonl" -o "$WORK/quotes" --split 40,10,0 --seed 42 --force \
            --template '{"text": "<|user|>\nWrite an inspirational quote about {tags[0]}</s>\n<|assistant|>\n\"{quote}\" - {author}</s>"}'
          "$L" train --device cuda --model "$WORK/tinyllama" --data "$WORK/quotes" --adapter-path "$WORK/adapters" \
            --iters 50 --batch-size 1 --num-layers 16 --learning-rate 1e-4 --max-seq-length 512 --grad-checkpoint \
            --seed 42 --steps-per-report 10 --steps-per-eval 50 || status=1
          "$L" generate --device cuda --model "$WORK/tinyllama" --adapter-path "$WORK/adapters" \
            --prompt "Write an inspirational quote about love" --max-tokens 24 || status=1
          [ -n "${OUT:-}" ] && cp "$WORK/adapters/metrics.jsonl" "$OUT/e2e_metrics.jsonl" 2>/dev/null
          ;;
        bench)
          bench/run_gpu.sh || status=1
          ;;
        qlora)
          bench/run_gpu_qlora.sh || status=1
          ;;
        *) echo "gpu-check: unknown stage $stage" >&2; status=1 ;;
      esac
    done
    exit $status
    ;;
  *)
    echo "usage: scripts/gpu-check.sh bundle|run" >&2
    exit 1
    ;;
esac
