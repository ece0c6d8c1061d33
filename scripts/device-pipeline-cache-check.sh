#!/usr/bin/env bash
# Runs ON the device machine: start-up with trit's pipeline cache on disk
# (src/pipeline_cache.rs) against NVIDIA's own shader cache. Carry .gl and .devc with
# .devc/new.gz (trit, TRIT_NATIVE=0). A tiny model, `trit run -n 8 -ngl 99`, process wall time:
#   both empty | the driver's empty, trit's filled by the run before (a new build, or another
#   program linking libtrit, on this driver) | the driver's empty, trit's off | both filled.
set -uo pipefail
. "$(dirname "$0")/device-env.sh"
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
/tmp/b/new synth --config tiny --type tq2_0 -o /tmp/tiny.gguf --no-progress > /dev/null 2>&1
rm -rf /tmp/pc && mkdir -p /tmp/pc/trit
one() { # name, driver cache dir (emptied unless "keep"), trit cache setting
  [ "$4" = keep ] || { rm -rf "$2" && mkdir -p "$2"; }
  startup_run "$1" /tmp/b/new "__GL_SHADER_DISK_CACHE_PATH=$2" "TRIT_VULKAN_PIPELINE_CACHE=$3"
}
one both-empty /tmp/pc/gl1 /tmp/pc/trit fresh
ls -la /tmp/pc/trit
one trit-filled /tmp/pc/gl2 /tmp/pc/trit fresh
one trit-off /tmp/pc/gl3 0 fresh
one both-filled /tmp/pc/gl2 /tmp/pc/trit keep
