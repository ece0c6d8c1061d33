#!/usr/bin/env bash
# CPU kernel benchmark: trit's ternary kernels vs ggml's, in one trit binary and one run.
#   bash scripts/bench-cpu.sh            # THREADS=2 P=512 N=128 R=3 by default
#   KERNEL_BENCH=1 bash scripts/bench-cpu.sh   # also the criterion kernel benches
#   PAIRED_ROUNDS=0 bash scripts/bench-cpu.sh  # skip the paired decode rounds (default 4)
#   AVX2=1 bash scripts/bench-cpu.sh           # also AVX2 against AVX2: ggml built without
#                                              # -march=native (target/avx2), trit's kernels
#                                              # forced to AVX2 (TRIT_ISA=avx2)
# Prints llama-bench tables for a synthetic bitnet-b1.58-2B-4T (TQ2_0 and TQ1_0), the
# trit/ggml speed ratios, the memory bandwidth and the decode roofline (tokens/s ≤
# bandwidth ÷ bytes read per token; a token reads every weight once, the tied f16 output
# head included, so bytes per token ≈ the model size), against both the streaming-read
# bandwidth and the copy bandwidth (read + written, as STREAM and the issue count it).
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
# Each membw call prints copy and read on 4K and on 2M pages; a reading is the better page
# size (the model's pages can be either: a file mapping on a filesystem with large folios
# gets 2M mappings, --no-mmap gets what malloc gets).
txt = open(f"{d}/membw.txt").read()
def readings(pat):
    vals = [float(x) for x in re.findall(pat, txt)]
    return sorted(max(vals[i:i + 2]) for i in range(0, len(vals), 2))
reads = readings(r"read \(\w+ pages\): .*?: ([0-9.]+) GB/s")
copies = readings(r"copy \(\w+ pages\): .*?read\+write ([0-9.]+) GB/s")
med = lambda v: v[len(v) // 2]
bw, cbw = med(reads), med(copies)
print(f"\n| model | test | ggml t/s | trit t/s | trit/ggml | roofline t/s (read / copy) | trit % of roofline (read / copy) |")
print("| --- | --- | ---: | ---: | ---: | ---: | ---: |")
for ty in ["tq2_0", "tq1_0"]:
    by = {}
    for first in ["ggml", "trit"]:
        for r in csv.DictReader(open(f"{d}/{ty}-{first}-first.csv")):
            test = f"pp{r['n_prompt']}" if int(r["n_gen"]) == 0 else f"tg{r['n_gen']}"
            by.setdefault((test, first), {})[r["backends"].split("/")[-1]] = (float(r["avg_ts"]), float(r["stddev_ts"]), int(r["model_size"]))
    for (test, first), k in by.items():
        g, t = k["ggml"], k["trit"]
        roof, croof = bw * 1e9 / g[2], cbw * 1e9 / g[2]
        tg = test.startswith("tg")
        roof_s = f"{roof:.1f} / {croof:.1f}" if tg else "-"
        pct = f"{100 * t[0] / roof:.0f}% / {100 * t[0] / croof:.0f}%" if tg else "-"
        print(f"| {ty} | {test} ({first} first) | {g[0]:.2f} ± {g[1]:.2f} | {t[0]:.2f} ± {t[1]:.2f} | {t[0] / g[0]:.2f}x | {roof_s} | {pct} |")
print(f"\nroofline: bytes per token = model size; read bandwidth {bw:.2f} GB/s (median of {len(reads)} readings: "
      + ", ".join(f"{x:.1f}" for x in reads) + f"); copy bandwidth, read + written as STREAM counts it, {cbw:.2f} GB/s ("
      + ", ".join(f"{x:.1f}" for x in copies) + ")")
for name, v in [("read", reads), ("copy", copies)]:
    if v[0] > 0 and v[-1] / v[0] > 1.15:
        print(f"warning: the {name} bandwidth readings spread {v[-1] / v[0]:.2f}x; the roofline percentages are only as good as that")
PY

# Paired decode rounds: the host's bandwidth swings 1.5x within minutes, so a roofline
# against the median of readings taken a quarter of an hour apart is only as good as that.
# Here every tgN run (one repetition, no prompt) sits between two bandwidth readings and is
# measured against their mean; ggml's and trit's kernels alternate, the order flipping each
# round, and each round's trit/ggml ratio compares two runs a minute apart.
PAIRED_ROUNDS=${PAIRED_ROUNDS:-4}
if [ "$PAIRED_ROUNDS" -gt 0 ]; then
    echo "== paired decode rounds: $PAIRED_ROUNDS per model, tg$N, $THREADS threads"
    for ty in tq2_0 tq1_0; do
        m="$DIR/2b4t-$ty.gguf"
        for round in $(seq 1 "$PAIRED_ROUNDS"); do
            if [ $((round % 2)) = 1 ]; then order="ggml trit"; else order="trit ggml"; fi
            i=0
            target/release/examples/membw "$THREADS" 256 > "$DIR/paired-$ty-$round-bw$i.txt"
            for kern in $order; do
                # trit's runs also time its kernels inside the model (TRIT_KERNEL_STATS=1, on stderr).
                TRIT_KERNEL_STATS=1 $T bench -m "$m" -p 0 -n "$N" -r 1 -t "$THREADS" --ternary-kernels "$kern" -o jsonl \
                    > "$DIR/paired-$ty-$round-$kern.jsonl" 2> "$DIR/paired-$ty-$round-$kern.err"
                i=$((i + 1))
                target/release/examples/membw "$THREADS" 256 > "$DIR/paired-$ty-$round-bw$i.txt"
                echo "$ty round $round: $kern $(grep -o '"avg_ts":[0-9.]*' "$DIR/paired-$ty-$round-$kern.jsonl")"
            done
            echo "$order" > "$DIR/paired-$ty-$round-order.txt"
        done
    done
    python3 - "$DIR" "$PAIRED_ROUNDS" <<'PY'
import json, re, statistics, sys
d, rounds = sys.argv[1], int(sys.argv[2])
def bw(path):
    t = open(path).read()
    best = lambda pat: max(float(x) for x in re.findall(pat, t))
    return best(r"read \(\w+ pages\): .*?: ([0-9.]+) GB/s"), best(r"copy \(\w+ pages\): .*?read\+write ([0-9.]+) GB/s")
print("\n| model | round | order | ggml t/s | trit t/s | trit/ggml | read / copy GB/s around trit's run | trit % of roofline (read / copy) |")
print("| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: |")
for ty in ["tq2_0", "tq1_0"]:
    ratios, pr, pc = [], [], []
    for r in range(1, rounds + 1):
        order = open(f"{d}/paired-{ty}-{r}-order.txt").read().split()
        rec = {k: json.loads(open(f"{d}/paired-{ty}-{r}-{k}.jsonl").readline()) for k in order}
        i = order.index("trit")
        (r0, c0), (r1, c1) = bw(f"{d}/paired-{ty}-{r}-bw{i}.txt"), bw(f"{d}/paired-{ty}-{r}-bw{i + 1}.txt")
        rb, cb = (r0 + r1) / 2, (c0 + c1) / 2
        t, g, size = rec["trit"]["avg_ts"], rec["ggml"]["avg_ts"], rec["trit"]["model_size"]
        ratios.append(t / g); pr.append(100 * t * size / (rb * 1e9)); pc.append(100 * t * size / (cb * 1e9))
        print(f"| {ty} | {r} | {' first, '.join(order[:1])} first | {g:.2f} | {t:.2f} | {t / g:.2f}x | {rb:.1f} / {cb:.1f} | {pr[-1]:.0f}% / {pc[-1]:.0f}% |")
    med = statistics.median
    print(f"| {ty} | median | | | | {med(ratios):.2f}x | | {med(pr):.0f}% / {med(pc):.0f}% |")
# Where trit's token goes (TRIT_KERNEL_STATS=1): each kernel's own streaming rate against the
# read bandwidth around the run, and the share of the token spent outside the kernels.
print("\n| model | round | ternary mat-vecs GB/s (share of the token) | f16 head GB/s (share) | attention (share) | outside trit's kernels (share) | kernels' GB/s ÷ read GB/s |")
print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
for ty in ["tq2_0", "tq1_0"]:
    for r in range(1, rounds + 1):
        st = {}
        for line in open(f"{d}/paired-{ty}-{r}-trit.err"):
            if line.startswith("kernel-stats "):
                kv = dict(x.split("=", 1) for x in line.split()[1:] if "=" in x)
                st[kv["kind"]] = kv
        if not st:
            continue
        order = open(f"{d}/paired-{ty}-{r}-order.txt").read().split()
        i = order.index("trit")
        rb = (bw(f"{d}/paired-{ty}-{r}-bw{i}.txt")[0] + bw(f"{d}/paired-{ty}-{r}-bw{i + 1}.txt")[0]) / 2
        cell = lambda k: f"{float(st[k]['gbps']):.1f} ({100 * float(st[k]['share']):.0f}%)" if k in st else "-"
        share = lambda k: f"{100 * float(st[k]['share']):.0f}%" if k in st else "-"
        streams = [k for k in ("ternary-matvec", "f16-matvec") if k in st]
        b = sum(float(st[k]["bytes"]) for k in streams)
        s = sum(float(st[k]["secs"]) for k in streams)
        print(f"| {ty} | {r} | {cell('ternary-matvec')} | {cell('f16-matvec')} | {share('f16-attention')} | {share('other')} | {b / s / 1e9:.1f} ÷ {rb:.1f} = {100 * b / s / 1e9 / rb:.0f}% |")
PY
fi

# AVX2 against AVX2, for the many CPUs without AVX-512: a second build whose ggml is compiled
# for the x86-64 baseline with AVX2 (TRIT_NATIVE=0), and trit's kernels held to AVX2.
if [ "${AVX2:-0}" = 1 ]; then
    TRIT_NATIVE=0 CARGO_TARGET_DIR=target/avx2 cargo build --release -p trit-cli
    echo "== AVX2 against AVX2 (TRIT_NATIVE=0 build, TRIT_ISA=avx2), $THREADS threads"
    for ty in tq2_0 tq1_0; do
        for order in ggml,trit trit,ggml; do
            TRIT_ISA=avx2 target/avx2/release/trit bench -m "$DIR/2b4t-$ty.gguf" -p "$P" -n "$N" -r "$R" \
                -t "$THREADS" --ternary-kernels "$order" -o csv > "$DIR/avx2-$ty-${order%%,*}-first.csv"
        done
    done
    python3 - "$DIR" <<'PY'
import csv, sys
d = sys.argv[1]
print("\n| model (AVX2) | test | ggml t/s | trit t/s | trit/ggml |")
print("| --- | --- | ---: | ---: | ---: |")
for ty in ["tq2_0", "tq1_0"]:
    for first in ["ggml", "trit"]:
        by = {}
        for r in csv.DictReader(open(f"{d}/avx2-{ty}-{first}-first.csv")):
            test = f"pp{r['n_prompt']}" if int(r["n_gen"]) == 0 else f"tg{r['n_gen']}"
            by.setdefault(test, {})[r["backends"].split("/")[-1]] = float(r["avg_ts"])
        for test, k in by.items():
            print(f"| {ty} | {test} ({first} first) | {k['ggml']:.2f} | {k['trit']:.2f} | {k['trit'] / k['ggml']:.2f}x |")
PY
fi

if [ "${KERNEL_BENCH:-0}" = 1 ]; then
    cargo bench -p trit-kernels --features ggml
fi
