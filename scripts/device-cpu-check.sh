#!/usr/bin/env bash
# Runs ON the device machine: trit's CPU kernels on the host's cores (16 on the single-GPU
# kinds), for the CPU issue (#3) on a larger CPU than the 2-core VM. Binaries carried gzipped
# as .devc/NAME.gz (scripts/device-env.sh unpacks them to /tmp/b/NAME): `trit` (a native
# build, as scripts/test.sh builds it) and the `membw` example. Per thread count (THREADS,
# default "16 8"): `membw`, then ROUNDS (default 5) rounds of tg64, one fresh process each,
# the order rotating over VARIANTS (default "trit all none attn1 ggml"): trit's kernels as
# they are by default (trit), with every epilogue of vendor patch 0013 (all: TRIT_EPILOGUE=all),
# with none (TRIT_EPILOGUE=0), with attention's chunks sized per head as before 2026-12-06
# (attn1: TRIT_F16_CHUNKS_PER_MATRIX=1), and ggml-cpu's own kernels (--ternary-kernels ggml);
# also on request: `active` and `ggml-active`, trit's and ggml's with OMP_WAIT_POLICY=active,
# `noskip`, trit's computing attention over every KV cell (TRIT_ATTN_SKIP=0), and the
# mat-vec chunking: `tail` (TRIT_MATVEC_TAIL=1: quarter-size chunks at the end of each
# product), `ch4` and `ch8` (TRIT_MATVEC_CHUNKS=4 / 8 chunks per thread instead of 2);
# then pp512 of trit's and ggml's kernels and trit's kernel stats. All on the synthetic 2B-4T
# TQ2_0 model, made here. With TRAIN=1, per thread count also CPU LoRA training, trit's kernels
# against ggml's (scripts/bench-train-cpu.sh, ROUNDS=2 STEPS=2, its variants TRAIN_VARIANTS,
# default "trit f32 noout ggml"; TRAIN_ONLY=1 skips the rest). First, where carried as
# .devc/exact.gz (`cargo test --release -p trit-kernels --test exact --no-run`), the kernels'
# bit-exactness tests on this host's ISA paths (the Xeons have AVX-VNNI, the dev VM not).
# Writes $OUT/cpu.txt (every result line) and prints a summary.
#   device run: carry [".devc"], command: bash scripts/device-cpu-check.sh
set -uo pipefail
. "$(dirname "$0")/device-env.sh"
B=/tmp/b/trit
lscpu | grep -E "^Model name|^CPU\(s\)|^Thread|^Core|^Socket|^NUMA node\(s\)|^L3" | tee "$OUT/cpu.txt"
grep -o -w -E "avx512f|avx512_vnni|avx_vnni|gfni|avx512vbmi" /proc/cpuinfo | sort -u | tr '\n' ' '; echo
if [ -x /tmp/b/exact ]; then # the kernels' bit-exactness tests, on this CPU's paths (AVX-VNNI too)
  /tmp/b/exact --test-threads 2 > "$OUT/exact.txt" 2>&1
  grep -E "test result|FAILED|panicked" "$OUT/exact.txt" | tee -a "$OUT/cpu.txt"
fi
"$B" synth --config 2b4t --type tq2_0 -o /tmp/m.gguf > /dev/null 2>&1 || { echo "synth failed"; exit 1; }
run() { # name threads test-args... -> "name t/s"
  local name=$1 t=$2; shift 2
  local env=() args=()
  case $name in
    all) env=(TRIT_EPILOGUE=all) ;;
    none) env=(TRIT_EPILOGUE=0) ;;
    attn1) env=(TRIT_F16_CHUNKS_PER_MATRIX=1) ;;
    noskip) env=(TRIT_ATTN_SKIP=0) ;;
    tail) env=(TRIT_MATVEC_TAIL=1) ;;
    ch4) env=(TRIT_MATVEC_CHUNKS=4) ;;
    ch8) env=(TRIT_MATVEC_CHUNKS=8) ;;
    ggml) args=(--ternary-kernels ggml) ;;
    active) env=(OMP_WAIT_POLICY=active) ;;
    ggml-active) env=(OMP_WAIT_POLICY=active) args=(--ternary-kernels ggml) ;;
  esac
  env "${env[@]}" "$B" bench -m /tmp/m.gguf -t "$t" "${args[@]}" "$@" -o jsonl 2>/dev/null |
    grep -o '"avg_ts":[0-9.]*' | cut -d: -f2
}
for t in ${THREADS:-16 8}; do
  if [ "${TRAIN:-0}" = 1 ]; then
    BIN=$B BENCH_DIR=/tmp/train THREADS=$t ROUNDS=2 STEPS=2 VARIANTS="${TRAIN_VARIANTS:-trit f32 noout ggml}" \
      bash scripts/bench-train-cpu.sh 2>&1 |
      grep -v "^ *Compiling" | tee -a "$OUT/cpu.txt"
    [ "${TRAIN_ONLY:-0}" = 1 ] && continue
  fi
  /tmp/b/membw "$t" 256 2>&1 | tee -a "$OUT/cpu.txt"
  read -r -a order <<< "${VARIANTS:-trit all none attn1 ggml}"
  for r in $(seq 1 "${ROUNDS:-5}"); do
    line="t=$t round $r:"
    for name in "${order[@]}"; do line="$line $name $(run "$name" "$t" -p 0 -n 64 -r 1)"; done
    echo "$line" | tee -a "$OUT/cpu.txt"
    order=("${order[@]:1}" "${order[0]}")
  done
  echo "t=$t pp512: trit $(run trit "$t" -p 512 -n 0 -r 2) ggml $(run ggml "$t" -p 512 -n 0 -r 2)" | tee -a "$OUT/cpu.txt"
  TRIT_KERNEL_STATS=1 "$B" bench -m /tmp/m.gguf -t "$t" -p 0 -n 64 -r 1 2>&1 | grep kernel-stats | tee -a "$OUT/cpu.txt"
done
