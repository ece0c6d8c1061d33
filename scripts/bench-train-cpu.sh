#!/usr/bin/env bash
# CPU LoRA training: trit's kernels against ggml's, in one trit binary and one run.
#   bash scripts/bench-train-cpu.sh      # THREADS=2 CTX=256 STEPS=3 ROUNDS=3 by default
#   BIN=/tmp/b/trit bash scripts/bench-train-cpu.sh   # a trit binary built elsewhere (the
#                                        # device machine: scripts/device-cpu-check.sh TRAIN=1)
# `trit finetune` on a synthetic bitnet-b1.58-2B-4T (TQ2_0; rank 8, all 7 projections) for
# STEPS optimizer steps of CTX tokens, ROUNDS rounds, the order of the variants rotating each
# round (this VM's speed drifts within minutes):
#   trit      trit's kernels (the default): ternary products, and OUT_PROD — the gradient
#             through the frozen weights (in i16 where the CPU has i16 dot products: AVX-512
#             VNNI, AVX-VNNI) and the f16 head, the LoRA and attention products
#   f32       trit's kernels with the gradient through the ternary weights in f32
#             (--ternary-grad f32: ggml's bits)
#   noout     trit's kernels without the OUT_PROD hook (TRIT_OUT_PROD=0: ggml's OUT_PROD)
#   ggml      ggml's kernels throughout (--ternary-kernels ggml)
# VARIANTS picks and orders them (default "trit f32 noout ggml").
# Prints tokens/s of the last step of each run (the first steps warm the allocator up), the
# medians and ratios, and whether f32's and noout's losses are bit-identical (they must be:
# the OUT_PROD hook's f32 form computes exactly what ggml's does; ggml's forward products
# differ from trit's in float summation order, so ggml's losses differ in the last digits, and
# trit's i16 gradients differ from f32's by about as much).
set -euo pipefail
cd "$(dirname "$0")/.."
THREADS=${THREADS:-2}
CTX=${CTX:-256}
STEPS=${STEPS:-3}
ROUNDS=${ROUNDS:-3}
DIR=${BENCH_DIR:-/tmp/trit-bench}
mkdir -p "$DIR"

if [ -n "${BIN:-}" ]; then
    T=$BIN
else
    cargo build --release -p trit-cli
    T=target/release/trit
fi
m="$DIR/2b4t-tq2_0.gguf"
[ -f "$m" ] || $T synth --config 2b4t --type tq2_0 -o "$m"
# Enough text for STEPS windows of CTX tokens (any text: the speed does not depend on it).
python3 - "$DIR/train.txt" "$((CTX * STEPS * 2))" <<'PY'
import random, sys
random.seed(1)
words = "the quick brown fox jumps over a lazy dog while models learn ternary weights on small devices".split()
open(sys.argv[1], "w").write(" ".join(random.choice(words) for _ in range(int(sys.argv[2]))) + "\n")
PY

echo "== machine: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) cores; load: $(cut -d' ' -f1-3 /proc/loadavg)"
run() { # variant round -> appends "variant tok/s losses" to results
    local v=$1 r=$2 env=() args=()
    case $v in
        noout) env=(TRIT_OUT_PROD=0) ;;
        ggml) args=(--ternary-kernels ggml) ;;
        f32) args=(--ternary-grad f32) ;;
        trit) ;;
        *) echo "unknown variant '$v' (trit, f32, noout, ggml)" >&2; exit 2 ;;
    esac
    local out="$DIR/train-$v-$r"
    rm -rf "$out.ck"
    env "${env[@]}" $T finetune -m "$m" -f "$DIR/train.txt" -c "$CTX" --max-steps "$STEPS" -t "$THREADS" \
        -o "$out.gguf" --checkpoint-dir "$out.ck" "${args[@]}" > "$out.log" 2>&1
    # CSV: step,epoch,lr,train_loss,val_loss,tokens_per_s,...
    local tps losses
    tps=$(tail -n 1 "$out.csv" | cut -d, -f6)
    losses=$(tail -n +2 "$out.csv" | cut -d, -f4 | tr '\n' ' ')
    echo "$v $tps $losses" | tee -a "$DIR/train-results.txt"
    rm -rf "$out.ck"
}
: > "$DIR/train-results.txt"
read -r -a order <<< "${VARIANTS:-trit f32 noout ggml}"
for r in $(seq 1 "$ROUNDS"); do
    echo "== round $r: ${order[*]}"
    for v in "${order[@]}"; do run "$v" "$r"; done
    order=("${order[@]:1}" "${order[0]}")
done

python3 - "$DIR/train-results.txt" "$THREADS" "$CTX" <<'PY'
import sys
rows = [l.split() for l in open(sys.argv[1]) if l.strip()]
tps = {}
losses = {}
for v, t, *ls in rows:
    tps.setdefault(v, []).append(float(t))
    losses.setdefault(v, set()).add(tuple(ls))
med = lambda x: sorted(x)[len(x) // 2]
print(f"\n{sys.argv[2]} threads, {sys.argv[3]}-token windows; tokens/s of each run's last step:")
print("| variant | runs | median | trit / variant |")
print("| --- | --- | ---: | ---: |")
for v in tps:
    print(f"| {v} | {', '.join(f'{x:.1f}' for x in tps[v])} | {med(tps[v]):.1f} | {med(tps['trit']) / med(tps[v]):.2f}x |")
print()
for v in losses:
    print(f"losses {v}: {' | '.join(' '.join(l) for l in losses[v])}")
same = "noout" not in losses or "f32" not in losses or (losses["f32"] == losses["noout"] and len(losses["f32"]) == 1)
print(f"f32 and noout losses bit-identical in every round: {'yes' if same else 'NO'}")
sys.exit(0 if same else 1)
PY
