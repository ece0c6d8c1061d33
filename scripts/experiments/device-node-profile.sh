#!/usr/bin/env bash
# Runs ON the device machine: where a decode token's time goes, op by op, on the host's
# cores. Needs .devc/trit-prof.gz: `trit` built with scripts/experiments/node-profile.patch
# copied into vendor/patches (TRIT_NODE_PROFILE=1 prints, per op, each thread's mean time in
# the op and in the barrier after it, per graph). Per thread count (THREADS, default "16 8"):
# trit's and ggml's kernels, plain and with OMP_WAIT_POLICY=active, and trit's with every
# epilogue (all: TRIT_EPILOGUE=all) or, with the norm experiment applied, ggml's RMS norm
# (ggml-norm: TRIT_NORM=ggml), tg64 with kernel stats.
#   device run: carry [".devc"], command: bash scripts/experiments/device-node-profile.sh
set -uo pipefail
. "$(dirname "$0")/../device-env.sh"
B=/tmp/b/trit-prof
"$B" synth --config 2b4t --type tq2_0 -o /tmp/m.gguf > /dev/null 2>&1 || { echo "synth failed"; exit 1; }
{
lscpu | grep -E "^Model name|^CPU\(s\)|^Thread|^Socket|^NUMA node\(s\)"
for t in ${THREADS:-16 8}; do
  for v in ${VARIANTS:-trit all ggml trit-active ggml-active}; do
    env=() k=trit
    case $v in
      ggml) k=ggml ;;
      trit-active) env=(OMP_WAIT_POLICY=active) ;;
      ggml-active) env=(OMP_WAIT_POLICY=active) k=ggml ;;
      ggml-norm) env=(TRIT_NORM=ggml) ;; # only with scripts/experiments/cpu-rms-norm-hook.patch
      all) env=(TRIT_EPILOGUE=all) ;;
    esac
    echo "== t=$t $v"
    env "${env[@]}" TRIT_NODE_PROFILE=1 TRIT_KERNEL_STATS=1 "$B" bench -m /tmp/m.gguf -t "$t" \
      -p 0 -n 64 -r 1 --ternary-kernels "$k" -o jsonl 2>&1 |
      grep -E "node-profile|kernel-stats|avg_ts" | sed -E 's/.*"avg_ts":([0-9.]+).*/t\/s \1/'
  done
done
} 2>&1 | tee "$OUT/profile.txt"
