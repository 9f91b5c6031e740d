#!/usr/bin/env bash
# Runs every test: installs dependencies, fetches the test model, configures, builds, runs ctest.
# Tests that need ../shared (real models and data) skip with a message when it is absent.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
scripts/fetch-models.sh
scripts/build.sh
ctest --test-dir "${LORA_BUILD_DIR:-build}" --output-on-failure -j "$(nproc)" "$@"
