#!/usr/bin/env bash
# Runs ON the device machine, from the repository root: the trit Vulkan part of
# scripts/finetune-device.sh only (synthetic 2B-4T TQ2_0, ctx 512, rank 16, alpha 32, all 7
# projections, one 512-token window per step), for A/B runs of the training kernels:
#   $D/trit      the binary under test        $D/trit-old  an earlier binary, if present (same call, last)
# plus one short run with TRIT_VULKAN_PROFILE=1 (GPU time per kernel from timestamps, buffer
# allocations). D (.dev/ft2) holds the binaries; .gl/*.deb the Vulkan loader. Results: $OUT/all.txt.
set -uo pipefail
OUT=${OUT:-/tmp/out}
D=${D:-.dev/ft2}
STEPS=${STEPS:-8}
mkdir -p "$OUT"
L="$OUT/all.txt"
for f in .gl/*.deb; do dpkg -x "$f" /; done
ldconfig
export VK_DRIVER_FILES=${VK_DRIVER_FILES:-/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json}
chmod +x $D/trit* 2>/dev/null
if ! ldconfig -p | grep -q libgomp.so.1; then
  mkdir -p /tmp/extra && for f in .dev/libgomp1_*.deb; do dpkg -x "$f" /tmp/extra; done
  export LD_LIBRARY_PATH=/tmp/extra/usr/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee -a "$L"
M=/tmp/m.gguf
$D/trit synth --config 2b4t -o $M > /tmp/synth.log 2>&1 || { echo "synth failed" | tee -a "$L"; tail -3 /tmp/synth.log | tee -a "$L"; }
python3 - > /tmp/train.txt <<'PY'
import random
random.seed(1)
words = ("the of and to in is was for on that with as by at from his her it an were are which this be or has "
         "had one their not but all new more first two after who other its time also into only over some "
         "model ternary weights train adapter vulkan kernel gradient loss token window rank layer").split()
print(" ".join(random.choice(words) for _ in range(60000)))
PY
FT=(finetune -m $M -f /tmp/train.txt -c 512 --lora-rank 16 --lora-alpha 32 --lora-targets all -lr 2e-4
    --epochs 100 --checkpoint-dir /tmp/ckpt --device vulkan -t "$(nproc)")
gpu_used() { nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits | head -1; }
# run NAME BIN STEPS SECS [env...]: tokens/s over the steps after the first two (as finetune-device.sh)
run() {
  local name=$1 bin=$2 steps=$3 secs=$4; shift 4
  local base; base=$(gpu_used)
  (while :; do gpu_used; sleep 0.1; done) > "/tmp/$name.mem" 2>/dev/null &
  local sampler=$!
  env "$@" timeout "$secs" $bin "${FT[@]}" --max-steps "$steps" -o /tmp/$name.gguf --log-csv /tmp/$name.csv > "$OUT/$name.log" 2>&1
  echo "$name: exit $?" | tee -a "$L"
  kill "$sampler" 2>/dev/null; wait "$sampler" 2>/dev/null
  python3 - "$name" "$(( $(sort -n /tmp/$name.mem | tail -1) - base ))" <<'PY' | tee -a "$L"
import csv, sys
name, peak = sys.argv[1], sys.argv[2]
rows = [r for r in csv.DictReader(open(f"/tmp/{name}.csv")) if r["train_loss"]]
ends = [int(r["step"]) * 512 / float(r["tokens_per_s"]) for r in rows]
k = 2 if len(rows) > 2 else 0
t0 = ends[k - 1] if k else 0.0
print(f"{name}: steps {k + 1}..{len(rows)}: {(len(rows) - k) * 512 / (ends[-1] - t0):.1f} tok/s; "
      f"peak GPU (nvidia-smi) {peak} MiB; loss {rows[0]['train_loss']} -> {rows[-1]['train_loss']}")
PY
  grep -E "GPU memory" "$OUT/$name.log" | tee -a "$L"
}
run new $D/trit "$STEPS" 60
run prof $D/trit 3 45 TRIT_VULKAN_PROFILE=1
grep -E "trit-vulkan: buffer of" "$OUT/prof.log" | sort -t' ' -k5 -rn | head -12 | tee -a "$L"
grep -A60 "trit-vulkan profile" "$OUT/prof.log" | head -70 | tee -a "$L"
[ -x $D/trit-old ] && run old $D/trit-old "$STEPS" 60
