#!/usr/bin/env bash
# LoRA fine-tuning, end to end on the CPU: build trit, convert the tiny BitNet fixture
# (2 layers, hidden 256, TQ2_0), fine-tune an adapter on examples/finetune/chat.jsonl with
# loss on the assistant turns only, show the loss falling, then answer the same questions
# with and without the adapter. About a minute on 2 cores.
#
#   bash scripts/finetune-demo.sh [OUT_DIR]        (default: /tmp/trit-finetune-demo)
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-/tmp/trit-finetune-demo}
mkdir -p "$OUT"
bash scripts/setup.sh
cargo build --release
T=target/release/trit

echo "== convert the fixture model"
$T convert tests/fixtures/bitnet-2b4t-bf16 -o "$OUT/tiny.gguf"

echo "== fine-tune (also available as: llama-finetune-lora with QVAC's flag names)"
$T finetune -m "$OUT/tiny.gguf" -f examples/finetune/chat.jsonl --assistant-only-loss \
    -c 256 --epochs 20 -lr 3e-3 --lr-schedule cosine --warmup 10 \
    --lora-rank 16 --lora-alpha 32 --seed 42 \
    --checkpoint-every 100 --checkpoint-dir "$OUT/checkpoints" \
    -o "$OUT/chat-lora.gguf"

echo "== loss curve (every 20th step; full log in $OUT/chat-lora.csv, plot in $OUT/chat-lora.png)"
awk -F, 'NR == 1 || (NR - 2) % 20 == 0 { printf "%-6s %-8s %-12s %s\n", $1, $2, $3, $4 }' "$OUT/chat-lora.csv"
first=$(awk -F, 'NR == 2 { print $4 }' "$OUT/chat-lora.csv")
last=$(awk -F, '$4 != "" { l = $4 } END { print l }' "$OUT/chat-lora.csv")
echo "train loss: $first -> $last"
awk -v a="$first" -v b="$last" 'BEGIN { exit !(b < a / 10) }' || { echo "loss did not fall tenfold" >&2; exit 1; }

for q in "What is LoRA?" "Which weights does trit train?" "Say hello."; do
    echo "== Q: $q"
    echo "-- base model:"
    $T run -m "$OUT/tiny.gguf" -p "$q" -cnv -st --temp 0 -n 48 2>/dev/null </dev/null | head -c 300; echo
    echo "-- with the adapter (trit run --lora):"
    $T run -m "$OUT/tiny.gguf" --lora "$OUT/chat-lora.gguf" -p "$q" -cnv -st --temp 0 -n 48 2>/dev/null </dev/null
    echo
done
