#!/usr/bin/env bash
# Runs ON the device machine: one call's worth of decode checks for issue #4.
#   1. the Vulkan op tests (tests/ops.rs built with --no-run, carried gzipped as .devc/ops.gz);
#   2. scripts/bench-vulkan-ab.sh over the carried builds (.devc/NAME.gz, unpacked to
#      /tmp/b/NAME; BINS, ENV_<name>, ARGS_<name>, ROUNDS as that script takes them);
#   3. TRIT_VULKAN_PROFILE=1 (per-kernel GPU time, split by shape) and =2 (host times, replay on)
#      of PROFILE_BIN (default /tmp/b/head) on the TQ2_0 model.
# Writes $OUT/ops.txt, $OUT/ab.txt, $OUT/profile1.txt, $OUT/profile2.txt.
set -uo pipefail
mkdir -p .dev /tmp/b && cp .devc/*.deb .dev/ 2>/dev/null
. "$(dirname "$0")/device-env.sh"
for g in .devc/*.gz; do n=$(basename "$g" .gz); zcat "$g" > "/tmp/b/$n"; chmod +x "/tmp/b/$n"; done
if [ -x /tmp/b/ops ]; then
  timeout 300 /tmp/b/ops --test-threads 1 > "$OUT/ops.txt" 2>&1
  grep -E "test result|FAILED|panicked" "$OUT/ops.txt"
fi
bash "$(dirname "$0")/bench-vulkan-ab.sh"
pb=${PROFILE_BIN:-/tmp/b/head}
TRIT_VULKAN_PROFILE=1 TRIT_VULKAN_PROFILE_SHAPES=1 "$pb" bench -m /tmp/m-tq2_0.gguf -ngl 99 -p 0 -n 128 -r 1 \
  > "$OUT/profile1.txt" 2>&1
TRIT_VULKAN_PROFILE=2 "$pb" bench -m /tmp/m-tq2_0.gguf -ngl 99 -p 0 -n 128 -r 1 > "$OUT/profile2.txt" 2>&1
tail -5 "$OUT/profile2.txt"
