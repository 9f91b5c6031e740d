#!/usr/bin/env bash
# Configures (Release) and builds into build/. CUDA is built when nvcc is found.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/local/cuda/bin"
BUILD=${LORA_BUILD_DIR:-build}
if [ ! -f "$BUILD/CMakeCache.txt" ]; then
  cmake -S . -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release ${LORA_CMAKE_ARGS:-} >/dev/null
fi
cmake --build "$BUILD" -j "$(nproc)" "$@"
