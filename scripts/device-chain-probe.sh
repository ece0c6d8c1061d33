#!/usr/bin/env bash
# The dispatch-boundary probe on the device machine (issue #4; src/probe.rs in trit-vulkan):
# one chain of dependent integer mat-vec stages run as one dispatch per stage (as a decode
# token is recorded today) and chained inside one dispatch, checked bit for bit against the
# host's reference on the GPU, each shape timed in three rounds.
#
# Built here, carried in .devc/ (run with carry [".gl", ".devc"]):
#   TRIT_NATIVE=0 CARGO_TARGET_DIR=target/device cargo test --release -p trit-vulkan --test chain_probe --no-run
#   gzip -c "$(ls -t target/device/release/deps/chain_probe-* | grep -v '\.d$' | head -1)" > .devc/chain.gz
# On the device:  bash scripts/device-chain-probe.sh
# SHAPES: stages,rows,row_words,tokens[,workgroup] ... (default: a 2B-4T token's 536 MB of
# ternary weights in 150 stages of 2560 rows, then the same bytes in 30 stages, then in 600;
# workgroup 256 invocations = 8 rows, or 1024 = 32 rows).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/device-env.sh
SHAPES=${SHAPES:-"150,2560,86,32 30,2560,430,8 600,2560,22,16"}
nvidia-smi --query-gpu=name,memory.total,clocks.max.memory --format=csv,noheader || true
for shape in $SHAPES; do
  echo "== shape $shape"
  # The whole recording submitted at once, so the time after the last submission is the GPU's.
  TRIT_VULKAN_CHUNK=1000000 TRIT_CHAIN_PROBE="$shape" /tmp/b/chain --nocapture --test-threads 1 2>&1 | tee -a "$OUT/chain-probe.txt"
done
