#!/usr/bin/env bash
# Runs ON the device machine (NVIDIA H100/H200, no Rust, no network), from the repository root:
# LoRA training speed and peak GPU memory of `trit finetune` on its Rust Vulkan backend against
# PyTorch + PEFT on the same GPU, for the synthetic bitnet-b1.58-2B-4T model (`trit synth
# --config 2b4t`, TQ2_0), context 512, rank 16 (alpha 32), all 7 projections, one 512-token
# window per optimizer step; plus the training-op tests on the real GPU, the scheduler's
# split report of the real training graph (what falls back to the CPU) and trit on the CPU.
# Prebuilt inputs (scripts/finetune-device-prepare.sh, here): .dev/trit,
# .dev/trit-vulkan-train-tests, .dev/libgomp1_*.deb, .gl/*.deb, .whl/peft-*.whl.
# Every part reports its own failure and the rest goes on. $OUT gets four files (the device tool
# returns at most eight): summary.md (the table, failures, GPU), train-op-tests.txt, splits.txt
# and raw.tar.gz (every log, CSV and JSON, the full scheduler log).
# STEPS (12) measured optimizer steps per run; DEADLINE (560) seconds for the whole script.
# BIN (.dev): folder of trit and the test binary. PARTS (tests,vulkan,ckpt,pytorch,pytorch-ckpt,
# splits,cpu): which parts run; ckpt and pytorch-ckpt are trit and PEFT with gradient checkpointing. BASELINE: another trit binary (e.g. main's build) measured like the first in the
# same call, as a before/after row. PROFILE=1: one more short run of trit on Vulkan under
# TRIT_VULKAN_PROFILE=1, its kernel and host-time profile in $OUT/profile.txt; PROFILE_ALSO="VAR=value;VAR=v2 OTHER=x":
# one more such run per ';'-separated variant with those variables set (e.g. a kernel layout
# switch), appended there.
# For a dry run of this script elsewhere: SYNTH=tiny PYTHON=<python with torch>
# PEER_ARGS="--tiny --device cpu" TRIT_VULKAN_ALLOW_CPU=1 VK_DRIVER_FILES=<lavapipe's ICD> and a
# stub nvidia-smi.
set -uo pipefail
OUT=${OUT:-/tmp/out}
STEPS=${STEPS:-12}
DEADLINE=${DEADLINE:-560}
SYNTH=${SYNTH:-2b4t}
PYTHON=${PYTHON:-python3}
PEER_ARGS=${PEER_ARGS:-}
PARTS=${PARTS:-tests,vulkan,ckpt,pytorch,pytorch-ckpt,splits,cpu}
BASELINE=${BASELINE:-}
PROFILE=${PROFILE:-}
PROFILE_ALSO=${PROFILE_ALSO:-}
has() { [[ ",$PARTS," == *",$1,"* ]]; }
W=/tmp/ft  # everything but the four result files
rm -rf "$W"; mkdir -p "$OUT" "$W"
: > "$W/failures.txt"
fail() { echo "FAILED: $*" | tee -a "$W/failures.txt"; }
# Seconds a part may take: at most $1, and what is left before DEADLINE (less a margin for the table).
budget() {
  local left=$((DEADLINE - SECONDS - 20))
  [ "$left" -lt 1 ] && left=1
  [ "$left" -lt "$1" ] && echo "$left" || echo "$1"
}

for f in .gl/*.deb; do dpkg -x "$f" /; done
ldconfig
export VK_DRIVER_FILES=${VK_DRIVER_FILES:-/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json}
B=${BIN:-.dev}
chmod +x $B/trit* $BASELINE 2>/dev/null
if ! ldconfig -p | grep -q libgomp.so.1; then  # OpenMP runtime for ggml's CPU backend
  mkdir -p /tmp/extra && for f in $B/libgomp1_*.deb; do dpkg -x "$f" /tmp/extra; done
  export LD_LIBRARY_PATH=/tmp/extra/usr/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$W/gpu.txt"
nproc | tee -a "$W/gpu.txt"
NCPU=$(nproc)

gpu_used() { nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits | head -1; }
# measured NAME SECONDS CMD...: run CMD under a timeout while sampling the GPU's used memory
# every ~100 ms; writes $W/NAME.peak-mib (peak minus the idle level before it started).
measured() {
  local name=$1 secs=$2; shift 2
  if [ "$secs" -lt 20 ]; then fail "$name: skipped, out of time"; return 1; fi
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

if has tests; then
echo "== training-op tests on the real GPU (trit-vulkan vs the CPU backend)"
timeout "$(budget 90)" $B/trit-vulkan-train-tests --test-threads 1 --nocapture > "$OUT/train-op-tests.txt" 2>&1 \
  || fail "training-op tests (see train-op-tests.txt)"
if [ -x $B/trit-vulkan-transfer-tests ]; then  # staged uploads, fills and reads (tests/transfers.rs)
  timeout "$(budget 120)" $B/trit-vulkan-transfer-tests --test-threads 1 >> "$OUT/train-op-tests.txt" 2>&1 \
    || fail "transfer tests (see train-op-tests.txt)"
fi
grep -E 'test result|FAILED|panicked' "$OUT/train-op-tests.txt"
fi

echo "== synthetic bitnet-b1.58-2B-4T (TQ2_0) and training text"
M=/tmp/m-tq2_0.gguf
timeout "$(budget 120)" $B/trit synth --config "$SYNTH" -o $M > /tmp/synth.log 2>&1 || fail "trit synth (see /tmp/synth.log)"
ls -la $M
# Plain text: enough 512-token windows (stride 256) for every run's steps.
python3 - > /tmp/train.txt <<'PY'
import random
random.seed(1)
words = ("the of and to in is was for on that with as by at from his her it an were are which this be or has "
         "had one their not but all new more first two after who other its time also into only over some "
         "model ternary weights train adapter vulkan kernel gradient loss token window rank layer").split()
print(" ".join(random.choice(words) for _ in range(60000)))
PY

FT=(finetune -m $M -f /tmp/train.txt -c 512 --lora-rank 16 --lora-alpha 32 --lora-targets all -lr 2e-4
    --epochs 100 --checkpoint-dir /tmp/ckpt)

if has vulkan; then
echo "== trit finetune on Vulkan: $STEPS steps"
measured trit-vulkan "$(budget 240)" $B/trit "${FT[@]}" --device vulkan --max-steps "$STEPS" -t "$NCPU" \
  -o /tmp/vk.gguf --log-csv "$W/trit-vulkan.csv" > "$W/trit-vulkan.log" 2>&1
grep -E 'device:|trained|GPU memory|error|Error' "$W/trit-vulkan.log" | tail -5
grep -q 'device: .*trit-vulkan' "$W/trit-vulkan.log" || fail "trit-vulkan: the run did not train on the Vulkan backend"
fi
if has ckpt; then
echo "== trit finetune on Vulkan with --gradient-checkpointing: $STEPS steps"
measured trit-ckpt "$(budget 240)" $B/trit "${FT[@]}" --device vulkan --gradient-checkpointing --max-steps "$STEPS" \
  -t "$NCPU" -o /tmp/vkc.gguf --log-csv "$W/trit-ckpt.csv" > "$W/trit-ckpt.log" 2>&1
grep -E 'device:|trained|GPU memory|memory by part|error|Error' "$W/trit-ckpt.log" | tail -5
fi
if [ -n "$BASELINE" ]; then
echo "== baseline trit ($BASELINE) on Vulkan: $STEPS steps"
measured trit-baseline "$(budget 240)" "$BASELINE" "${FT[@]}" --device vulkan --max-steps "$STEPS" -t "$NCPU" \
  -o /tmp/vk0.gguf --log-csv "$W/trit-baseline.csv" > "$W/trit-baseline.log" 2>&1
grep -E 'device:|trained|GPU memory|error|Error' "$W/trit-baseline.log" | tail -3
fi
# profiled NAME [VAR=value]: 4 steps of trit on Vulkan under TRIT_VULKAN_PROFILE=1, the profile
# appended to $OUT/profile.txt.
# Words of a variant that start with "--" are trit flags (e.g. --gradient-checkpointing), the rest
# environment assignments.
profiled() {
  local name=$1; shift
  local vars=() flags=()
  for w in "$@"; do if [[ $w == --* ]]; then flags+=("$w"); else vars+=("$w"); fi; done
  echo "== $name: trit finetune on Vulkan under TRIT_VULKAN_PROFILE=1 $*: 4 steps" | tee -a "$OUT/profile.txt"
  env TRIT_VULKAN_PROFILE=1 "${vars[@]}" timeout "$(budget 150)" $B/trit "${FT[@]}" "${flags[@]}" --device vulkan --max-steps 4 -t "$NCPU" \
    -o /tmp/vkp.gguf --log-csv "$W/$name.csv" > "$W/$name.log" 2>&1 || fail "$name run (exit $?)"
  grep -E 'trit-vulkan profile|^  |GPU memory|memory by part|checkpointing keeps' "$W/$name.log" >> "$OUT/profile.txt"
  grep -c 'buffer of' "$W/$name.log" | sed 's/^/buffer allocations: /' >> "$OUT/profile.txt"
  tail -3 "$W/$name.csv" >> "$OUT/profile.txt"
}
if has pytorch || has pytorch-ckpt; then
if ! $PYTHON -c 'import peft' 2>/dev/null && ls .whl/peft-*.whl >/dev/null 2>&1; then
  $PYTHON -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/peft-*.whl \
    && export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
fi
# (tokens/s: the median step after 3 warm-up steps)
for run in pytorch pytorch-ckpt; do
  has $run || continue
  extra=(); [ $run = pytorch-ckpt ] && extra=(--gradient-checkpointing)
  echo "== PyTorch + PEFT (bf16) on the same GPU ${extra[*]}: $STEPS steps"
  PYTHONUNBUFFERED=1 measured $run "$(budget 200)" $PYTHON scripts/finetune_peer.py --ctx 512 --rank 16 --alpha 32 \
    --steps "$STEPS" --warmup 3 --out "$W/$run.json" "${extra[@]}" $PEER_ARGS > "$W/$run.log" 2>&1
  grep -E '"tok_s"|"lora"|"peak_allocated_mib"|Error' "$W/$run.log" | head -5
done

if [ -n "$PROFILE" ]; then
  profiled profile
  if [ -n "$PROFILE_ALSO" ]; then
    IFS=';' read -ra variants <<< "$PROFILE_ALSO"
    i=0
    for v in "${variants[@]}"; do
      i=$((i + 1))
      # shellcheck disable=SC2086  # a variant may set several variables
      profiled "profile-also-$i" $v
    done
  fi
  head -150 "$OUT/profile.txt"
fi

if has splits; then
echo "== scheduler splits of the real training graph (GGML_SCHED_DEBUG=2, one step)"
GGML_SCHED_DEBUG=2 timeout "$(budget 120)" $B/trit "${FT[@]}" --device vulkan --max-steps 1 -t "$NCPU" -v \
  -o /tmp/vk1.gguf --log-csv /tmp/vk1.csv > /tmp/sched.log 2>&1 || fail "split report run (see sched.log.gz)"
python3 - /tmp/sched.log > "$OUT/splits.txt" <<'PY' || fail "split summary"
import re, sys, collections
text = open(sys.argv[1], errors="replace").read()
# The last complete graph printed (the training step's, forward + backward + AdamW).
starts = [m.start() for m in re.finditer(r"^## SPLIT #0:", text, re.M)]
if not starts:
    print("no split report in the log"); sys.exit(1)
graphs = [text[a:b] for a, b in zip(starts, starts[1:] + [len(text)])]
g = max(graphs, key=lambda s: s.count("\nnode #"))
splits = re.findall(r"^## SPLIT #(\d+): (\S+) # (\d+) inputs", g, re.M)
nodes = re.findall(r"^node #\s*\d+ \(\s*([A-Z_0-9]+)\):\s+(.*?) \(.*?\) \[\s*(\S+)", g, re.M)
print(f"largest graph: {len(nodes)} nodes, {len(splits)} splits")
for n, be, ins in splits:
    print(f"  split #{n}: {be}, {ins} inputs")
per = collections.Counter((be, op) for op, _, be in nodes)
print("nodes by backend and op:")
for (be, op), c in sorted(per.items()):
    print(f"  {be:<12} {op:<12} {c}")
cpu = [(op, name) for op, name, be in nodes if be == "CPU"]
print(f"on the CPU: {len(cpu)} nodes: " + ", ".join(f"{op} {name}" for op, name in cpu[:40]))
PY
cat "$OUT/splits.txt" | head -60
gzip -c /tmp/sched.log > "$W/sched.log.gz"
fi

if has cpu; then
echo "== trit finetune on the CPU ($NCPU threads): 2 steps"
timeout "$(budget 150)" $B/trit "${FT[@]}" --device cpu --max-steps 2 -t "$NCPU" -o /tmp/cpu.gguf \
  --log-csv "$W/trit-cpu.csv" > "$W/trit-cpu.log" 2>&1 || fail "trit CPU run (exit $?)"
grep -E 'trained|error' "$W/trit-cpu.log" | tail -2
fi

echo "== table"
python3 - "$W" <<'PY' | tee "$W/table.md"
import csv, json, os, statistics, sys
out = sys.argv[1]
def rd(p, f):
    try:
        return f(os.path.join(out, p))
    except Exception as e:
        return None
def trit(name, skip, ctx=512):
    # tokens_per_s in trit's CSV is cumulative (tokens so far / time since the first step
    # started), one 512-token window per step: recover each step's end time and measure the
    # steps after the first `skip` (graph building and pipeline warm-up) on their own.
    rows = rd(f"{name}.csv", lambda p: [r for r in csv.DictReader(open(p)) if r["train_loss"]])
    if not rows:
        return None
    ends = [int(r["step"]) * ctx / float(r["tokens_per_s"]) for r in rows]
    k = skip if len(rows) > skip else 0
    t0 = ends[k - 1] if k > 0 else 0.0
    tok_s = (len(rows) - k) * ctx / (ends[-1] - t0)
    return {"tok_s": tok_s, "first": k + 1, "steps": len(rows), "loss": (float(rows[0]["train_loss"]), float(rows[-1]["train_loss"])),
            "peak_rss_mib": max(float(r["peak_rss_mb"]) for r in rows)}
peak = lambda n: rd(f"{n}.peak-mib", lambda p: int(open(p).read().strip()))
import re
def vk_buffers(name="trit-vulkan"):
    m = rd(f"{name}.log", lambda p: re.search(r"GPU memory \(trit-vulkan buffers\): peak (\d+) MiB", open(p).read()))
    return int(m.group(1)) if m else None
def parts(name):
    m = rd(f"{name}.log", lambda p: re.search(r"memory by part \(MiB\): (.*)", open(p).read()))
    return m.group(1) if m else "-"
vk, cpu, base = trit("trit-vulkan", 2), trit("trit-cpu", 1), trit("trit-baseline", 2)
ck = trit("trit-ckpt", 2)
pt = rd("pytorch.json", lambda p: json.load(open(p)))
ptc = rd("pytorch-ckpt.json", lambda p: json.load(open(p)))
gpu = rd("gpu.txt", lambda p: open(p).read().split("\n")[0])
print(f"GPU: {gpu}; synthetic 2B-4T (TQ2_0 for trit, bf16 for PyTorch), ctx 512, rank 16, alpha 32, all 7 projections")
print("| run | tokens/s | peak GPU memory (nvidia-smi, MiB) | other memory | loss first -> last |")
print("| --- | ---: | ---: | --- | --- |")
def fmt(x, f="{:.1f}"):
    return "-" if x is None else f.format(x)
if vk:
    print(f"| trit, Vulkan (steps {vk['first']}..{vk['steps']}) | {fmt(vk['tok_s'])} | {fmt(peak('trit-vulkan'), '{}')} | trit-vulkan buffers peak {fmt(vk_buffers(), '{}')} MiB; host peak RSS {vk['peak_rss_mib']:.0f} MiB | {vk['loss'][0]:.3f} -> {vk['loss'][1]:.3f} |")
else:
    print("| trit, Vulkan | failed | - | - | - |")
if ck:
    print(f"| trit, Vulkan, --gradient-checkpointing (steps {ck['first']}..{ck['steps']}) | {fmt(ck['tok_s'])} | {fmt(peak('trit-ckpt'), '{}')} | trit-vulkan buffers peak {fmt(vk_buffers('trit-ckpt'), '{}')} MiB; by part: {parts('trit-ckpt')} | {ck['loss'][0]:.3f} -> {ck['loss'][1]:.3f} |")
if base:
    print(f"| trit, Vulkan, baseline binary (steps {base['first']}..{base['steps']}) | {fmt(base['tok_s'])} | {fmt(peak('trit-baseline'), '{}')} | host peak RSS {base['peak_rss_mib']:.0f} MiB | {base['loss'][0]:.3f} -> {base['loss'][1]:.3f} |")
if pt:
    print(f"| PyTorch {pt['torch']} + {pt['lora']}, bf16, {pt['arch']} ({pt['attn']}) | {fmt(pt['tok_s'])} | {fmt(peak('pytorch'), '{}')} | torch allocator peak {fmt(pt['peak_allocated_mib'], '{:.0f}')} MiB (reserved {fmt(pt['peak_reserved_mib'], '{:.0f}')}) | {pt['losses'][0]:.3f} -> {pt['losses'][-1]:.3f} |")
else:
    print("| PyTorch + PEFT | failed | - | - | - |")
if ptc:
    print(f"| PyTorch {ptc['torch']} + {ptc['lora']}, bf16, gradient checkpointing | {fmt(ptc['tok_s'])} | {fmt(peak('pytorch-ckpt'), '{}')} | torch allocator peak {fmt(ptc['peak_allocated_mib'], '{:.0f}')} MiB | {ptc['losses'][0]:.3f} -> {ptc['losses'][-1]:.3f} |")
if cpu:
    print(f"| trit, CPU ({os.cpu_count()} cores, steps {cpu['first']}..{cpu['steps']}) | {fmt(cpu['tok_s'])} | - | host peak RSS {cpu['peak_rss_mib']:.0f} MiB | {cpu['loss'][0]:.3f} -> {cpu['loss'][1]:.3f} |")
else:
    print("| trit, CPU | failed | - | - | - |")
if vk and pt:
    pv, pp = peak("trit-vulkan"), peak("pytorch")
    mem = f"{pv / pp:.2f}x" if pv and pp else "-"
    print(f"\ntrit Vulkan / PyTorch: {vk['tok_s'] / pt['tok_s']:.2f}x tokens/s, {mem} peak GPU memory (targets: >= 1.0x, < 0.33x)")
    if ck:
        pc = peak("trit-ckpt")
        mem = f"{pc / pp:.2f}x" if pc and pp else "-"
        print(f"trit Vulkan --gradient-checkpointing / PyTorch: {ck['tok_s'] / pt['tok_s']:.2f}x tokens/s, {mem} peak GPU memory")
        if ptc:
            print(f"trit Vulkan --gradient-checkpointing / PyTorch with gradient checkpointing: {ck['tok_s'] / ptc['tok_s']:.2f}x tokens/s")
    if base:
        print(f"baseline trit Vulkan / PyTorch: {base['tok_s'] / pt['tok_s']:.2f}x tokens/s; this build / baseline: {vk['tok_s'] / base['tok_s']:.2f}x")
PY
echo "== failures"
cat "$W/failures.txt"
{ cat "$W/table.md"; echo; echo "GPU, cores:"; cat "$W/gpu.txt"; echo; echo "failures:"; cat "$W/failures.txt"; } > "$OUT/summary.md"
tar -czf "$OUT/raw.tar.gz" -C "$W" . 2>/dev/null || fail "packing raw.tar.gz"
ls -la "$OUT"
