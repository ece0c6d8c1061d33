#!/usr/bin/env bash
# Runs ON the device machine: the f16/int8 tensor-core, ternary tile-path and split-fusion op tests
# (.dev/trit-vulkan-tests, tests/ops.rs), then scripts/finetune-device.sh with the given
# environment (STEPS, PARTS, PROFILE, PROFILE_ALSO, ...). Keeps $OUT to at most eight files:
# log.txt, ops-tests.txt, summary.md, train-op-tests.txt, profile.txt and the logs of the
# first two PROFILE_ALSO runs.
set -uo pipefail
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
for f in .gl/*.deb; do dpkg -x "$f" /; done
ldconfig
export VK_DRIVER_FILES=${VK_DRIVER_FILES:-/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json}
if [ -x .dev/trit-vulkan-tests ]; then
  timeout 120 .dev/trit-vulkan-tests "${OPS_FILTER:-tensor_cores}" --test-threads 1 --nocapture > "$OUT/ops-tests.txt" 2>&1
  timeout 60 .dev/trit-vulkan-tests fusion_sees --test-threads 1 --nocapture >> "$OUT/ops-tests.txt" 2>&1
  timeout 120 .dev/trit-vulkan-tests coopmat_paths --test-threads 1 --nocapture >> "$OUT/ops-tests.txt" 2>&1
  grep -E "test result|FAILED|panicked" "$OUT/ops-tests.txt"
fi
bash scripts/finetune-device.sh > "$OUT/log.txt" 2>&1
for i in 1 2; do cp "/tmp/ft/profile-also-$i.log" "$OUT/" 2>/dev/null; done
tail -20 "$OUT/log.txt"
