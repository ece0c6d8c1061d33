#!/usr/bin/env bash
# Runs ON the device machine (NVIDIA H100/H200, no Rust there), from the repository root, with
# prebuilt x86-64 binaries carried in .dev/ (made by scripts/bench-vulkan-prepare.sh here):
#   .dev/trit                 trit, built with TRIT_NATIVE=0 (its Rust Vulkan backend)
#   .dev/trit-peer            trit built with TRIT_PEER_LLAMA_VULKAN=1: the same pinned llama.cpp
#                             with llama.cpp's own Vulkan backend (the peer)
#   .dev/trit-vulkan-tests    the op-by-op test binary of crates/trit-vulkan
# and the Vulkan loader in .gl/*.deb (device README recipe). Writes results to $OUT.
# TRIT_DEV_DIR=DIR: trit and the op tests from DIR (the peer stays .dev/trit-peer).
set -uo pipefail
. "$(dirname "$0")/device-env.sh"
B=${TRIT_DEV_DIR:-.dev}
chmod +x $B/trit* .dev/trit-peer 2>/dev/null
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
nproc | tee -a "$OUT/gpu.txt"

echo "== op-by-op tests on the real GPU (trit-vulkan vs the CPU backend)"
$B/trit-vulkan-tests --test-threads 1 2>&1 | tee "$OUT/op-tests.txt" | tail -25

echo "== synthetic bitnet-b1.58-2B-4T"
$B/trit synth --config 2b4t -o /tmp/m-tq2_0.gguf >/dev/null
$B/trit synth --config 2b4t --type tq1_0 -o /tmp/m-tq1_0.gguf >/dev/null
ls -la /tmp/m-*.gguf

echo "== where decode time goes (TRIT_VULKAN_PROFILE=1, tq2_0, 64 tokens; every graph recorded)"
TRIT_VULKAN_PROFILE=1 $B/trit bench -m /tmp/m-tq2_0.gguf -ngl 99 -p 0 -n 64 -r 1 -o json 2>&1 >/dev/null \
  | grep -A40 "trit-vulkan profile" | tee "$OUT/profile-tg.txt" | head -12
echo "== host time per decode graph (TRIT_VULKAN_PROFILE=2): replayed, and recorded without the decode fusions"
for v in "" "TRIT_VULKAN_NO_REPLAY=1 TRIT_VULKAN_NO_FUSION=attn,multi"; do
  env TRIT_VULKAN_PROFILE=2 $v $B/trit bench -m /tmp/m-tq2_0.gguf -ngl 99 -p 0 -n 64 -r 1 -o json 2>&1 >/dev/null \
    | grep "trit-vulkan profile" | tee -a "$OUT/profile-host.txt"
done

echo "== logits on the synthetic model: GPU (-ngl 99) vs CPU (-ngl 0 -fa off)"
for ty in tq2_0 tq1_0; do
  $B/trit logits -m /tmp/m-$ty.gguf --ids 1,2,3,4,5,6,7,8 -o /tmp/lc.npy -ngl 0 -fa off >/dev/null 2>&1
  $B/trit logits -m /tmp/m-$ty.gguf --ids 1,2,3,4,5,6,7,8 -o /tmp/lg.npy -ngl 99 >/dev/null 2>&1
  python3 - $ty <<'PY' | tee -a "$OUT/logits.txt"
import ast, struct, sys
def load(p):  # .npy of f32 without numpy
    raw = open(p, "rb").read()
    hl = struct.unpack("<H", raw[8:10])[0]
    h = ast.literal_eval(raw[10:10 + hl].decode())
    n = 1
    for x in h["shape"]:
        n *= x
    v = struct.unpack("<%df" % n, raw[10 + hl:10 + hl + 4 * n])
    r = h["shape"][-1]
    return [v[i:i + r] for i in range(0, n, r)]
a, b = load("/tmp/lc.npy"), load("/tmp/lg.npy")
d = max(abs(x - y) for ra, rb in zip(a, b) for x, y in zip(ra, rb))
m = max(abs(x) for ra in a for x in ra)
agree = sum(ra.index(max(ra)) == rb.index(max(rb)) for ra, rb in zip(a, b))
print(f"{sys.argv[1]}: max |gpu - cpu| {d:.4g} (max |cpu| {m:.4g}), top-1 agrees at {agree} of {len(a)} positions")
PY
done

for ty in tq2_0 tq1_0; do
  m=/tmp/m-$ty.gguf
  echo "== $ty: trit (Rust Vulkan backend)"
  $B/trit bench -m $m -ngl 99 -p 512 -n 128 -r 3 -o json > "$OUT/trit-$ty.json" 2> "$OUT/trit-$ty.err"
  tail -3 "$OUT/trit-$ty.err"
  echo "== $ty: llama.cpp Vulkan (same pinned source)"
  .dev/trit-peer bench -m $m -ngl 99 -p 512 -n 128 -r 3 -o json > "$OUT/peer-$ty.json" 2> "$OUT/peer-$ty.err"
  tail -3 "$OUT/peer-$ty.err"
done
# Decode again, the peer first this time: the same binaries' tg128 moved by up to 10% within
# one call, so the table shows both rounds.
for ty in tq2_0 tq1_0; do
  m=/tmp/m-$ty.gguf
  echo "== $ty: decode, second round (peer first)"
  .dev/trit-peer bench -m $m -ngl 99 -p 0 -n 128 -r 3 -o json > "$OUT/peer2-$ty.json" 2> "$OUT/peer2-$ty.err"
  $B/trit bench -m $m -ngl 99 -p 0 -n 128 -r 3 -o json > "$OUT/trit2-$ty.json" 2> "$OUT/trit2-$ty.err"
done
# AB_ENV="VAR=value ...[;VAR=value ...]": decode once more with trit under each of these
# settings (A/B rows). TRIT_BIN=path in an entry runs that trit binary instead (another
# build carried along, e.g. the code before a change).
IFS=';' read -r -a AB <<< "${AB_ENV:-}"
for i in "${!AB[@]}"; do
  bin=$B/trit
  for kv in ${AB[$i]}; do case $kv in TRIT_BIN=*) bin=${kv#TRIT_BIN=}; chmod +x "$bin" ;; esac; done
  for ty in tq2_0 tq1_0; do
    echo "== $ty: decode with ${AB[$i]}"
    env ${AB[$i]} "$bin" bench -m /tmp/m-$ty.gguf -ngl 99 -p 0 -n 128 -r 3 -o json > "$OUT/ab$i-$ty.json" 2> "$OUT/ab$i-$ty.err"
  done
done
python3 - "$OUT" "${AB_ENV:-}" <<'PY'
import json, sys, os
out = sys.argv[1]
rows = []
for ty in ("tq2_0", "tq1_0"):
    def load(who):
        p = os.path.join(out, f"{who}-{ty}.json")
        try:
            return {("pp" if r["n_prompt"] else "tg"): r for r in json.load(open(p))}
        except Exception as e:
            print(f"{p}: {e}")
            return {}
    for suffix, tests, note in (("", ("pp", "tg"), ""), ("2", ("tg",), " (2nd round, peer first)")):
        t, p = load("trit" + suffix), load("peer" + suffix)
        for test in tests:
            if test in t and test in p:
                a, b = t[test], p[test]
                rows.append((ty, f"{test}{a['n_prompt'] or a['n_gen']}{note}", a["avg_ts"], a["stddev_ts"], b["avg_ts"], b["stddev_ts"], a["avg_ts"] / b["avg_ts"]))
    for i, env in enumerate(sys.argv[2].split(";") if sys.argv[2] else []):
        ab = load(f"ab{i}")
        if "tg" in ab and "tg" in p:
            a, b = ab["tg"], p["tg"]
            rows.append((ty, f"tg{a['n_gen']} with {env} (vs the 2nd round's peer)", a["avg_ts"], a["stddev_ts"], b["avg_ts"], b["stddev_ts"], a["avg_ts"] / b["avg_ts"]))
print("| type | test | trit Vulkan t/s | llama.cpp Vulkan t/s | ratio |")
print("| --- | --- | ---: | ---: | ---: |")
for ty, test, a, sa, b, sb, r in rows:
    print(f"| {ty} | {test} | {a:.2f} ± {sa:.2f} | {b:.2f} ± {sb:.2f} | {r:.2f}x |")
PY
