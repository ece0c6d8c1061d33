#!/usr/bin/env bash
# Runs ON the device machine (decode round 16): lanes per row of the wide norm mat-vecs for
# the single products (output and down projections, TRIT_VULKAN_NORM_LANES_ONE) and for QKV
# with rope (TRIT_VULKAN_NORM_LANES_QKV), in one build, next to the peer. Carry .gl and .devc:
#   .devc/new.gz        trit (TRIT_NATIVE=0, target/device)
#   .devc/trit-peer.gz  trit on llama.cpp's own Vulkan backend (scripts/bench-vulkan-prepare.sh)
#   .devc/ops.gz        the op tests, built with --no-run
# Steps: the op tests on the GPU; tg128 of the peer and each setting over ROUNDS (default 2)
# rounds (scripts/bench-vulkan-ab.sh, TYPES default tq2_0); a kernel profile of TQ2_0 decode
# per setting (the graph submitted at once). Writes $OUT/*.txt.
#   SETTINGS="name=VAR=V,VAR=V ..." (default below; "base" = the build's defaults)
set -uo pipefail
. "$(dirname "$0")/device-env.sh"
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
device_ops ops
L=TRIT_VULKAN_NORM_LANES
SETTINGS=${SETTINGS:-"base= one16=${L}_ONE=16 one8=${L}_ONE=8 qkv16=${L}_QKV=16 qkv8=${L}_QKV=8 both16=${L}_ONE=16,${L}_QKV=16 both8=${L}_ONE=8,${L}_QKV=8"}
bins="peer=/tmp/b/trit-peer"
for s in $SETTINGS; do
  n=${s%%=*}; v=${s#*=}
  bins="$bins $n=/tmp/b/new"
  export "ENV_$n=${v//,/ }"
done
BINS=$bins TYPES=${TYPES:-tq2_0} bash "$(dirname "$0")/bench-vulkan-ab.sh"
for s in $SETTINGS; do
  n=${s%%=*}; v=${s#*=}
  # shellcheck disable=SC2086  # the setting is a word list
  env ${v//,/ } TRIT_VULKAN_CHUNK=100000 TRIT_VULKAN_PROFILE=1 /tmp/b/new bench -m /tmp/m-tq2_0.gguf \
    -ngl 99 -p 0 -n 128 -r 1 > "$OUT/profile-$n.txt" 2>&1
  echo "profile $n:"; grep -E "profile:|us/call" "$OUT/profile-$n.txt" | head -8
done
