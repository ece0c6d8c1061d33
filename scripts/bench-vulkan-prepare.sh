#!/usr/bin/env bash
# Builds, here, what scripts/bench-vulkan-device.sh runs on the GPU machine (which has no
# Rust toolchain), into .dev/ (git-ignored; carried by the device tool):
#   .dev/trit               trit with its Rust Vulkan backend (GGML_NATIVE off: portable CPU code)
#   .dev/trit-peer          trit built on llama.cpp's own Vulkan backend, same pinned source,
#                           Rust backend disabled (--no-default-features)
#   .dev/trit-vulkan-tests  the op-by-op tests of crates/trit-vulkan
# and the Vulkan loader package into .gl/ (see the device tool's README).
# TRIT_DEV_DIR=DIR puts trit and the op tests in DIR instead of .dev (a helper's own folder);
# TRIT_SKIP_PEER=1 keeps the peer already built (.dev/trit-peer).
set -euo pipefail
cd "$(dirname "$0")/.."
D=${TRIT_DEV_DIR:-.dev}
mkdir -p .dev .gl "$D"
export TRIT_NATIVE=0
CARGO_TARGET_DIR=target/device cargo build --release -p trit-cli
CARGO_TARGET_DIR=target/device cargo test --release -p trit-vulkan --test ops --no-run 2>&1 | tee /tmp/ops-build.log
if [ "${TRIT_SKIP_PEER:-0}" != 1 ]; then
  # llama.cpp's own Vulkan backend compiles its shaders with glslangValidator and needs SPIRV-Headers.
  { command -v glslangValidator && [ -d /usr/include/spirv ]; } >/dev/null || { [ "$(id -u)" = 0 ] && apt-get install -y -qq glslang-tools spirv-headers >/dev/null; } \
    || { echo "the peer needs glslangValidator and SPIRV-Headers: apt-get install glslang-tools spirv-headers" >&2; exit 1; }
  TRIT_PEER_LLAMA_VULKAN=1 CARGO_TARGET_DIR=target/peer cargo build --release -p trit-cli --no-default-features
  cp target/peer/release/trit .dev/trit-peer
  strip .dev/trit-peer || true
fi
cp target/device/release/trit "$D/trit"
cp "$(grep -o 'target/device/release/deps/ops-[0-9a-f]*' /tmp/ops-build.log | head -1)" "$D/trit-vulkan-tests"
strip "$D/trit" "$D/trit-vulkan-tests" || true
if ! ls .gl/libglvnd0_*.deb >/dev/null 2>&1; then
  o='-oAPT::Architecture=amd64 -oAPT::Architectures=amd64 -oDir::State::Lists=/tmp/amd64'
  mkdir -p /tmp/amd64/partial
  apt-get $o update -qq
  (cd .gl && apt-get $o download libvulkan1 libegl1 libglvnd0 libopengl0 libgl1 libglx0 libgles2)
fi
ls .dev/libgomp1_*.deb >/dev/null 2>&1 || (cd .dev && apt-get -oAPT::Architecture=amd64 -oDir::State::Lists=/tmp/amd64 download libgomp1)
ls -la .dev "$D" .gl
