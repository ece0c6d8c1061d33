#!/usr/bin/env bash
# Runs ON the device machine, with scripts/device-decode-check.sh's setup: the replay op
# test only, the A/B (BINS etc. as bench-vulkan-ab.sh takes them), and
# TRIT_VULKAN_PROFILE=1 with the graph submitted at once (TRIT_VULKAN_CHUNK), so kernel
# times exclude the GPU waiting for the host to record the next chunk.
set -uo pipefail
mkdir -p .dev /tmp/b && cp .devc/*.deb .dev/ 2>/dev/null
. "$(dirname "$0")/device-env.sh"
for g in .devc/*.gz; do n=$(basename "$g" .gz); zcat "$g" > "/tmp/b/$n"; chmod +x "/tmp/b/$n"; done
timeout 120 /tmp/b/ops --test-threads 1 unchanged_graph_is_replayed > "$OUT/ops.txt" 2>&1
grep -E "test result|FAILED|panicked" "$OUT/ops.txt"
bash "$(dirname "$0")/bench-vulkan-ab.sh"
TRIT_VULKAN_CHUNK=100000 TRIT_VULKAN_PROFILE=1 TRIT_VULKAN_PROFILE_SHAPES=1 /tmp/b/head bench -m /tmp/m-tq2_0.gguf \
  -ngl 99 -p 0 -n 128 -r 1 > "$OUT/profile1.txt" 2>&1
grep -E "profile:|us/call" "$OUT/profile1.txt" | head -8
