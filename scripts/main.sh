#!/usr/bin/env bash
# The main job (README): build trit, convert a Hugging Face BitNet checkpoint to GGUF,
# inspect it, generate with it as llama-cli would, benchmark it as llama-bench would, then
# fine-tune a LoRA adapter on examples/finetune/chat.jsonl and generate with it
# (scripts/finetune-demo.sh). A few minutes on 2 cores.
# Usage: bash scripts/main.sh [HF_DIR]   (default: the tiny transformers fixture)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
HF_DIR=${1:-tests/fixtures/bitnet-2b4t-bf16}
OUT=${OUT_DIR:-target/demo}
mkdir -p "$OUT/bin"

echo "== build (release)"
cargo build --release -q
T=target/release/trit
ln -sf "$PWD/$T" "$OUT/bin/llama-cli"
ln -sf "$PWD/$T" "$OUT/bin/llama-bench"

echo "== convert $HF_DIR"
$T convert "$HF_DIR" -o "$OUT/model.gguf"

echo "== info"
$T info "$OUT/model.gguf"

echo "== llama-cli (greedy, 24 tokens)"
"$OUT/bin/llama-cli" -m "$OUT/model.gguf" -p "The quick brown fox" -n 24 --temp 0 -no-cnv

echo "== llama-bench"
"$OUT/bin/llama-bench" -m "$OUT/model.gguf" -p 128 -n 32 -r 3

echo "== fine-tune a LoRA adapter and use it"
bash scripts/finetune-demo.sh "$OUT/finetune"
