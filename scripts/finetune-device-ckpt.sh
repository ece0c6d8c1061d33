#!/usr/bin/env bash
# Runs ON the device machine (NVIDIA H100/H200, no Rust, no network), from the repository root:
# `trit finetune --device vulkan` on the synthetic bitnet-b1.58-2B-4T model (TQ2_0, ctx 512,
# rank 16, alpha 32, all 7 projections, one 512-token window per step) without and with
# --gradient-checkpointing, then (if time is left) the PyTorch + PEFT peer without and with
# gradient checkpointing. Peak GPU memory is nvidia-smi's, sampled every ~100 ms, minus the idle
# level. Inputs (scripts/finetune-device-prepare.sh builds them; B= where they are):
# $B/trit, $B/finetune_peer.py (default scripts/), .dev/libgomp1_*.deb, .gl/*.deb.
# $OUT gets summary.md and raw.tar.gz (logs, CSVs, JSON). STEPS (8), DEADLINE (180 s).
set -uo pipefail
OUT=${OUT:-/tmp/out}
STEPS=${STEPS:-8}
DEADLINE=${DEADLINE:-180}
B=${B:-.dev}
PEER=${PEER:-scripts/finetune_peer.py}
PYTHON=${PYTHON:-python3}
SYNTH=${SYNTH:-2b4t}  # tiny-deep for a dry run elsewhere (NO_GL=1, lavapipe, a stub nvidia-smi)
W=/tmp/ftc
rm -rf "$W"; mkdir -p "$OUT" "$W"
: > "$W/failures.txt"
fail() { echo "FAILED: $*" | tee -a "$W/failures.txt"; }
budget() {
  local left=$((DEADLINE - SECONDS - 10))
  [ "$left" -lt 1 ] && left=1
  [ "$left" -lt "$1" ] && echo "$left" || echo "$1"
}
[ "${NO_GL:-0}" = 1 ] || { for f in .gl/*.deb; do dpkg -x "$f" /; done; ldconfig; }
export VK_DRIVER_FILES=${VK_DRIVER_FILES:-/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json}
chmod +x $B/trit 2>/dev/null
if ! ldconfig -p | grep -q libgomp.so.1; then
  mkdir -p /tmp/extra && for f in .dev/libgomp1_*.deb; do dpkg -x "$f" /tmp/extra; done
  export LD_LIBRARY_PATH=/tmp/extra/usr/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$W/gpu.txt"
NCPU=$(nproc)
gpu_used() { nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits | head -1; }
measured() {
  local name=$1 secs=$2; shift 2
  if [ "$secs" -lt 15 ]; then fail "$name: skipped, out of time"; return 1; fi
  local base; base=$(gpu_used)
  (while :; do gpu_used; sleep 0.1; done) > "/tmp/$name.mem" 2>/dev/null &
  local sampler=$!
  timeout "$secs" "$@"
  local rc=$?
  kill "$sampler" 2>/dev/null; wait "$sampler" 2>/dev/null
  echo $(( $(sort -n "/tmp/$name.mem" | tail -1) - base )) > "$W/$name.peak-mib"
  [ "$rc" -eq 0 ] || fail "$name: exit $rc (124 = timeout after ${secs}s)"
  return "$rc"
}

M=/tmp/m-tq2_0.gguf
t=$SECONDS
timeout "$(budget 90)" $B/trit synth --config "$SYNTH" -o $M > "$W/synth.log" 2>&1 || fail "trit synth"
echo "synth: $((SECONDS - t)) s"
python3 - > /tmp/train.txt <<'PY'
import random
random.seed(1)
words = ("the of and to in is was for on that with as by at from his her it an were are which this be or has "
         "had one their not but all new more first two after who other its time also into only over some "
         "model ternary weights train adapter vulkan kernel gradient loss token window rank layer").split()
print(" ".join(random.choice(words) for _ in range(60000)))
PY
FT=(finetune -m $M -f /tmp/train.txt -c 512 --lora-rank 16 --lora-alpha 32 --lora-targets all -lr 2e-4
    --epochs 100 --checkpoint-dir /tmp/ckpt --device vulkan --max-steps "$STEPS" -t "$NCPU")
for run in plain ckpt; do
  extra=(); [ $run = ckpt ] && extra=(--gradient-checkpointing)
  measured "trit-$run" "$(budget 60)" $B/trit "${FT[@]}" "${extra[@]}" -o /tmp/$run.gguf \
    --log-csv "$W/trit-$run.csv" > "$W/trit-$run.log" 2>&1
  grep -E 'device:|trained|GPU memory|memory by part|error|Error' "$W/trit-$run.log" | tail -5
done
for run in plain ckpt; do
  extra=(); [ $run = ckpt ] && extra=(--gradient-checkpointing)
  PYTHONUNBUFFERED=1 measured "peft-$run" "$(budget 45)" $PYTHON "$PEER" --ctx 512 --rank 16 --alpha 32 \
    --steps 5 --warmup 2 --out "$W/peft-$run.json" "${extra[@]}" > "$W/peft-$run.log" 2>&1
  grep -E '"tok_s"|"lora"|"peak_allocated_mib"|Error' "$W/peft-$run.log" | head -4
done

python3 - "$W" <<'PY' | tee "$W/table.md"
import csv, json, os, re, sys
out = sys.argv[1]
def rd(p, f):
    try:
        return f(os.path.join(out, p))
    except Exception:
        return None
def trit(name, skip=2, ctx=512):
    rows = rd(f"{name}.csv", lambda p: [r for r in csv.DictReader(open(p)) if r["train_loss"]])
    if not rows:
        return None
    ends = [int(r["step"]) * ctx / float(r["tokens_per_s"]) for r in rows]
    k = skip if len(rows) > skip else 0
    t0 = ends[k - 1] if k > 0 else 0.0
    log = rd(f"{name}.log", lambda p: open(p).read()) or ""
    m = re.search(r"GPU memory \(trit-vulkan buffers\): peak (\d+) MiB", log)
    parts = re.search(r"memory by part \(MiB\): (.*)", log)
    return {"tok_s": (len(rows) - k) * ctx / (ends[-1] - t0), "steps": len(rows),
            "loss": (float(rows[0]["train_loss"]), float(rows[-1]["train_loss"])),
            "compute": [r["compute_mb"] for r in rows], "gpu_peak": [r["gpu_peak_mb"] for r in rows],
            "buffers": m.group(1) if m else "-", "parts": parts.group(1) if parts else "-"}
peak = lambda n: rd(f"{n}.peak-mib", lambda p: int(open(p).read().strip()))
print("GPU:", rd("gpu.txt", lambda p: open(p).read().strip()))
print("| run | tokens/s | peak GPU (nvidia-smi, MiB) | other | loss first -> last |")
print("| --- | ---: | ---: | --- | --- |")
for run in ["plain", "ckpt"]:
    r = trit(f"trit-{run}")
    if r:
        print(f"| trit Vulkan{' --gradient-checkpointing' if run == 'ckpt' else ''} (steps 3..{r['steps']}) | {r['tok_s']:.1f} | {peak('trit-' + run)} | trit-vulkan buffers peak {r['buffers']} MiB | {r['loss'][0]:.4f} -> {r['loss'][1]:.4f} |")
        print(f"|   per step: compute_mb {r['compute']}, gpu_peak_mb {r['gpu_peak']} | | | {r['parts']} | |")
    else:
        print(f"| trit {run} | failed | | | |")
for run in ["plain", "ckpt"]:
    p = rd(f"peft-{run}.json", lambda p: json.load(open(p)))
    if p:
        print(f"| PyTorch {p['torch']} + {p['lora']}, bf16{', gradient checkpointing' if p.get('gradient_checkpointing') else ''} | {p['tok_s']:.1f} | {peak('peft-' + run)} | allocator peak {p['peak_allocated_mib']:.0f} MiB | {p['losses'][0]:.3f} -> {p['losses'][-1]:.3f} |")
    else:
        print(f"| PEFT {run} | failed / skipped | | | |")
PY
echo "== failures"; cat "$W/failures.txt"
{ cat "$W/table.md"; echo; echo "failures:"; cat "$W/failures.txt"; } > "$OUT/summary.md"
tar -czf "$OUT/raw.tar.gz" -C "$W" . 2>/dev/null
echo "total $SECONDS s"
