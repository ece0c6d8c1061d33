#!/usr/bin/env bash
# Runs ON the device machine (decode round 15): TQ1_0 weights held as TQ2_0 blocks against
# TQ1_0 kept as stored, in one build, next to the peer. Carry .gl and .devc with
#   .devc/new.gz        trit (TRIT_NATIVE=0, target/device)
#   .devc/trit-peer.gz  trit on llama.cpp's own Vulkan backend (scripts/bench-vulkan-prepare.sh)
#   .devc/ops.gz, .devc/tq1.gz  the op tests and tests/weight_store.rs, built with --no-run
# Steps: the op tests (also with TRIT_VULKAN_TQ1_AS_TQ2=0) and the TQ1_0 storage tests on the
# GPU; tg128 of peer / new / new with TRIT_VULKAN_TQ1_AS_TQ2=0 over ROUNDS (default 2) rounds
# of both types (scripts/bench-vulkan-ab.sh); pp512 of the three on TQ1_0; a kernel profile of
# TQ1_0 decode both ways. Writes $OUT/*.txt.
set -uo pipefail
. "$(dirname "$0")/device-env.sh"
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
device_ops ops
TRIT_VULKAN_TQ1_AS_TQ2=0 device_ops ops-stored
if [ -x /tmp/b/tq1 ]; then
  # A test binary's first run on NVIDIA compiles every pipeline (its shader cache is per
  # executable): 100-120 s for the op tests on an H100.
  for e in 1 0; do
    TRIT_VULKAN_TQ1_AS_TQ2=$e timeout 200 /tmp/b/tq1 --test-threads 1 --nocapture > "$OUT/tq1-$e.txt" 2>&1
    grep -E "held|test result|FAILED|panicked" "$OUT/tq1-$e.txt"
  done
fi
BINS="peer=/tmp/b/trit-peer new=/tmp/b/new stored=/tmp/b/new" ENV_stored="TRIT_VULKAN_TQ1_AS_TQ2=0" \
  bash "$(dirname "$0")/bench-vulkan-ab.sh"
for nb in peer=/tmp/b/trit-peer new=/tmp/b/new stored=/tmp/b/new; do
  n=${nb%%=*}; b=${nb#*=}; e=1; [ "$n" = stored ] && e=0
  TRIT_VULKAN_TQ1_AS_TQ2=$e "$b" bench -m /tmp/m-tq1_0.gguf -ngl 99 -p 512 -n 0 -r 3 > "$OUT/pp-$n.txt" 2>&1
  echo "pp512 tq1_0 $n: $(grep -E 'pp512' "$OUT/pp-$n.txt" | tail -1)"
done
for e in 1 0; do
  TRIT_VULKAN_TQ1_AS_TQ2=$e TRIT_VULKAN_CHUNK=100000 TRIT_VULKAN_PROFILE=1 /tmp/b/new bench -m /tmp/m-tq1_0.gguf \
    -ngl 99 -p 0 -n 128 -r 1 > "$OUT/profile-tq1-$e.txt" 2>&1
  echo "profile TQ1_AS_TQ2=$e:"; grep -E "profile:|us/call" "$OUT/profile-tq1-$e.txt" | head -8
done
