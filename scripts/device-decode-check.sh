#!/usr/bin/env bash
# Runs ON the device machine: one call's worth of decode checks for issue #4, on binaries
# carried gzipped as .devc/NAME.gz (scripts/device-env.sh unpacks them to /tmp/b/NAME).
#   1. the Vulkan op tests (tests/ops.rs built with --no-run, carried as .devc/ops.gz), all or
#      those matching OPS_FILTER (libtest filters);
#   2. scripts/bench-vulkan-ab.sh over the carried builds (BINS, ENV_<name>, ARGS_<name>,
#      ROUNDS, TYPES as that script takes them);
#   3. TRIT_VULKAN_PROFILE=1 (per-kernel GPU time, split by shape; each graph submitted at
#      once, as the profiler does unless TRIT_VULKAN_CHUNK is set; PROFILE_ENV: more
#      environment for it) and,
#      unless HOST_PROFILE=0, =2 (host times, replay on), of PROFILE_BIN (default /tmp/b/head)
#      on the TQ2_0 model; PROFILE_BINS="name=path ...": the =1 profile of more builds.
# Writes $OUT/ops.txt, $OUT/ab.txt, $OUT/profile1.txt, $OUT/profile2.txt.
set -uo pipefail
. "$(dirname "$0")/device-env.sh"
# shellcheck disable=SC2086  # OPS_FILTER is a word list
device_ops ops ${OPS_FILTER:-}
bash "$(dirname "$0")/bench-vulkan-ab.sh"
pb=${PROFILE_BIN:-/tmp/b/head}
if [ -x "$pb" ]; then
  # shellcheck disable=SC2086  # PROFILE_ENV is a word list
  env ${PROFILE_ENV:-} TRIT_VULKAN_PROFILE=1 TRIT_VULKAN_PROFILE_SHAPES=1 "$pb" bench -m /tmp/m-tq2_0.gguf -ngl 99 \
    -p 0 -n 128 -r 1 > "$OUT/profile1.txt" 2>&1
  grep -E "profile:|us/call" "$OUT/profile1.txt" | head -8
fi
# PROFILE_BINS="name=path ...": the same profile (without the shape split) of more builds.
for nb in ${PROFILE_BINS:-}; do
  # shellcheck disable=SC2086  # PROFILE_ENV is a word list
  env ${PROFILE_ENV:-} TRIT_VULKAN_PROFILE=1 "${nb#*=}" bench -m /tmp/m-tq2_0.gguf -ngl 99 -p 0 -n 128 -r 1 \
    > "$OUT/profile-${nb%%=*}.txt" 2>&1
  echo "profile ${nb%%=*}:"; grep -E "profile:|us/call" "$OUT/profile-${nb%%=*}.txt" | head -8
done
if [ "${HOST_PROFILE:-1}" != 0 ] && [ -x "$pb" ]; then
  TRIT_VULKAN_PROFILE=2 "$pb" bench -m /tmp/m-tq2_0.gguf -ngl 99 -p 0 -n 128 -r 1 > "$OUT/profile2.txt" 2>&1
  tail -5 "$OUT/profile2.txt"
fi
