#!/usr/bin/env bash
# Runs ON the device machine: start-up time with every pipeline built with the device
# (`eager`: .devc/eager.gz, or any build with TRIT_VULKAN_EAGER_PIPELINES=1) against
# pipelines built on first use (`lazy`: .devc/lazy.gz), each first with an empty NVIDIA
# shader cache (a fresh __GL_SHADER_DISK_CACHE_PATH: the first run of a new build or after a
# driver update) and then with the cache it filled; then the op tests (.devc/ops.gz, cold
# cache) and tg128 of both builds (scripts/bench-vulkan-ab.sh) to show decode unchanged.
set -uo pipefail
. "$(dirname "$0")/device-env.sh"
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
/tmp/b/lazy synth --config tiny --type tq2_0 -o /tmp/tiny.gguf --no-progress > /dev/null 2>&1
for b in eager lazy; do
  rm -rf "/tmp/glcache-$b" && mkdir -p "/tmp/glcache-$b"
  for run in cold warm; do
    startup_run "$b-$run" "/tmp/b/$b" "__GL_SHADER_DISK_CACHE_PATH=/tmp/glcache-$b"
  done
done
mkdir -p /tmp/glcache-ops
t0=$(date +%s.%N)
__GL_SHADER_DISK_CACHE_PATH=/tmp/glcache-ops timeout 300 /tmp/b/ops --test-threads 1 > "$OUT/ops.txt" 2>&1
t1=$(date +%s.%N)
echo "op tests, cold cache: $(python3 -c "print(f'{$t1 - $t0:.1f} s')")"; grep -E "test result|FAILED|panicked" "$OUT/ops.txt"
BINS="eager=/tmp/b/eager lazy=/tmp/b/lazy" TYPES=tq2_0 bash "$(dirname "$0")/bench-vulkan-ab.sh"
