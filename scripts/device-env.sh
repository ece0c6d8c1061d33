# Sourced ON the device machine by scripts/bench-vulkan-device.sh, scripts/bench-vulkan-ab.sh and
# scripts/device-decode-check.sh, from the repository root: the carried Vulkan loader
# (.gl/*.deb, the device README's recipe) and NVIDIA's ICD, ggml's OpenMP runtime from a
# carried libgomp1_*.deb (.dev/ or .devc/) where the machine lacks it, the carried gzipped
# binaries .devc/NAME.gz unpacked to /tmp/b/NAME, and $OUT created. Once per process tree.

# The Vulkan op tests carried as .devc/ops.gz, if they were, on the GPU, output to $OUT/NAME.txt
# and their summary lines printed: device_ops NAME [libtest filters]. A test binary's first run
# on NVIDIA compiles the pipelines it uses (~46 s on an H100).
device_ops() {
  local name=$1; shift
  [ -x /tmp/b/ops ] || return 0
  timeout 300 /tmp/b/ops --test-threads 1 "$@" > "$OUT/$name.txt" 2>&1
  grep -E "test result|FAILED|panicked" "$OUT/$name.txt"
}
# Start-up time: `env VARS... BIN run` of the tiny model (/tmp/tiny.gguf) with every layer on
# the GPU, output to $OUT/run-NAME.txt, its wall time, exit status and last words printed:
# startup_run NAME BIN [VAR=VALUE ...].
startup_run() {
  local name=$1 bin=$2 t0 t1 rc; shift 2
  t0=$(date +%s.%N)
  env "$@" "$bin" run -m /tmp/tiny.gguf -p "Hello" -n 8 -ngl 99 --temp 0 > "$OUT/run-$name.txt" 2>&1
  rc=$?
  t1=$(date +%s.%N)
  echo "start-up $name: $(python3 -c "print(f'{$t1 - $t0:.2f} s')") (rc $rc): $(tail -c 60 "$OUT/run-$name.txt" | tr '\n' ' ')"
}
[ -n "${TRIT_DEVICE_ENV:-}" ] && return 0
export TRIT_DEVICE_ENV=1
export OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
for f in .gl/*.deb; do dpkg -x "$f" /; done
ldconfig
export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
if ! ldconfig -p | grep -q libgomp.so.1; then  # OpenMP runtime for ggml's CPU backend
  mkdir -p /tmp/extra
  for f in .dev/libgomp1_*.deb .devc/libgomp1_*.deb; do [ -f "$f" ] && dpkg -x "$f" /tmp/extra; done
  export LD_LIBRARY_PATH=/tmp/extra/usr/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
fi
for g in .devc/*.gz; do
  [ -f "$g" ] || continue
  mkdir -p /tmp/b && n=$(basename "$g" .gz) && zcat "$g" > "/tmp/b/$n" && chmod +x "/tmp/b/$n"
done
