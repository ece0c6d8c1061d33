#!/usr/bin/env bash
# CPU kernel benchmark: trit's ternary kernels vs ggml's, in one trit binary and one run.
#   bash scripts/bench-cpu.sh            # THREADS=2 P=512 N=128 R=3 by default
#   KERNEL_BENCH=1 bash scripts/bench-cpu.sh   # also the criterion kernel benches
# Prints llama-bench tables for a synthetic bitnet-b1.58-2B-4T (TQ2_0 and TQ1_0), the
# trit/ggml speed ratios, the memory bandwidth and the decode roofline
# (tokens/s ≤ read bandwidth ÷ bytes read per token; a token reads every weight once,
# the tied f16 output head included, so bytes per token ≈ the model size).
set -euo pipefail
cd "$(dirname "$0")/.."
THREADS=${THREADS:-2}
P=${P:-512}
N=${N:-128}
R=${R:-3}
DIR=${BENCH_DIR:-/tmp/trit-bench}
mkdir -p "$DIR"

cargo build --release -p trit-cli
cargo build --release -p trit-kernels --example membw
T=target/release/trit

echo "== machine: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) cores; load: $(cut -d' ' -f1-3 /proc/loadavg)"
# This VM's bandwidth drifts by tens of percent within minutes: read it before and after each
# model's runs (each order) and report the roofline against the median reading, with the range.
: > "$DIR/membw.txt"
bw() { target/release/examples/membw "$THREADS" 256 | tee -a "$DIR/membw.txt"; }
bw

# Each model twice, ggml's kernels first and then trit's first: the host's speed drifts within
# minutes, and a single order would credit the drift to whichever kernels ran later.
for ty in tq2_0 tq1_0; do
    m="$DIR/2b4t-$ty.gguf"
    [ -f "$m" ] || $T synth --config 2b4t --type "$ty" -o "$m"
    for order in ggml,trit trit,ggml; do
        echo "== $ty: trit bench -m $m -p $P -n $N -r $R -t $THREADS --ternary-kernels $order"
        $T bench -m "$m" -p "$P" -n "$N" -r "$R" -t "$THREADS" --ternary-kernels "$order" -o csv > "$DIR/$ty-${order%%,*}-first.csv"
        bw
    done
done

python3 - "$DIR" <<'PY'
import csv, re, sys
d = sys.argv[1]
bws = sorted(float(x) for x in re.findall(r"read: .*?: ([0-9.]+) GB/s", open(f"{d}/membw.txt").read()))
bw = bws[len(bws) // 2]
print(f"\n| model | test | ggml t/s | trit t/s | trit/ggml | roofline t/s | trit % of roofline |")
print("| --- | --- | ---: | ---: | ---: | ---: | ---: |")
for ty in ["tq2_0", "tq1_0"]:
    by = {}
    for first in ["ggml", "trit"]:
        for r in csv.DictReader(open(f"{d}/{ty}-{first}-first.csv")):
            test = f"pp{r['n_prompt']}" if int(r["n_gen"]) == 0 else f"tg{r['n_gen']}"
            by.setdefault((test, first), {})[r["backends"].split("/")[-1]] = (float(r["avg_ts"]), float(r["stddev_ts"]), int(r["model_size"]))
    for (test, first), k in by.items():
        g, t = k["ggml"], k["trit"]
        roof = bw * 1e9 / g[2]
        roof_s = f"{roof:.1f}" if test.startswith("tg") else "-"
        pct = f"{100 * t[0] / roof:.0f}%" if test.startswith("tg") else "-"
        print(f"| {ty} | {test} ({first} first) | {g[0]:.2f} ± {g[1]:.2f} | {t[0]:.2f} ± {t[1]:.2f} | {t[0] / g[0]:.2f}x | {roof_s} | {pct} |")
print(f"\nroofline: read bandwidth {bw:.2f} GB/s (median of {len(bws)} readings: " + ", ".join(f"{x:.1f}" for x in bws) + ") / model bytes per token")
if bws[0] > 0 and bws[-1] / bws[0] > 1.15:
    print(f"warning: the bandwidth readings spread {bws[-1] / bws[0]:.2f}x; the roofline percentages are only as good as that")
PY

if [ "${KERNEL_BENCH:-0}" = 1 ]; then
    cargo bench -p trit-kernels --features ggml
fi
