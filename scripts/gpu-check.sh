#!/usr/bin/env bash
# GPU check in two halves, for a GPU machine that has the CUDA toolkit and driver but none of Debian's
# -dev packages and no network:
#   scripts/gpu-check.sh bundle   here: build with CUDA into build-gpu/, then copy the binaries and every
#                                 non-CUDA, non-glibc shared library they need into .gpu-bundle/ (the
#                                 binaries carry RPATH $ORIGIN, so they find them there).
#   scripts/gpu-check.sh run      there, from the repository root: print the device, run every bundled
#                                 CUDA test (ctest label `cuda` equivalents: the test_cuda_* binaries).
# .gpu-bundle/ is git-ignored; carry it to the GPU machine with the working tree.
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
    for b in "$BUNDLE"/*; do ldd "$b"; done | awk '/=> \// {print $3}' | sort -u | while read -r lib; do
      case "$(basename "$lib")" in
        libc.so*|libm.so*|libpthread.so*|libdl.so*|librt.so*|ld-linux*|libcuda.so*|libcudart*|libcublas*|libnvrtc*) ;;
        *) cp -L "$lib" "$BUNDLE/" ;;
      esac
    done
    # Debian's OpenBLAS is reached through the alternatives system: keep the real library's soname.
    echo "gpu-check: bundled $(ls "$BUNDLE" | wc -l) files ($(du -sh "$BUNDLE" | cut -f1)) in $BUNDLE"
    ;;
  run)
    [ -d "$BUNDLE" ] || { echo "gpu-check: no $BUNDLE (run 'scripts/gpu-check.sh bundle' on the build machine)" >&2; exit 1; }
    export LD_LIBRARY_PATH="$PWD/$BUNDLE:${LD_LIBRARY_PATH:-}:/usr/local/cuda/lib64"
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
    status=0
    for t in "$BUNDLE"/test_cuda_*; do
      [ -x "$t" ] || continue
      echo "== $(basename "$t")"
      "$t" || status=1
    done
    exit $status
    ;;
  *)
    echo "usage: scripts/gpu-check.sh bundle|run" >&2
    exit 1
    ;;
esac
