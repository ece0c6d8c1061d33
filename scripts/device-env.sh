# Sourced ON the device machine by scripts/bench-vulkan-device.sh and scripts/bench-vulkan-ab.sh,
# from the repository root: the carried Vulkan loader (.gl/*.deb, the device README's recipe)
# and NVIDIA's ICD, ggml's OpenMP runtime from .dev/libgomp1_*.deb where the machine lacks it,
# and $OUT created.
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
for f in .gl/*.deb; do dpkg -x "$f" /; done
ldconfig
export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
if ! ldconfig -p | grep -q libgomp.so.1; then  # OpenMP runtime for ggml's CPU backend
  mkdir -p /tmp/extra && for f in .dev/libgomp1_*.deb; do dpkg -x "$f" /tmp/extra; done
  export LD_LIBRARY_PATH=/tmp/extra/usr/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
fi
