#!/usr/bin/env bash
# Builds, here, what scripts/finetune-device.sh runs on the GPU machine (which has no Rust
# toolchain and no network), into git-ignored folders the device tool carries:
#   .dev/trit                        trit with its Rust Vulkan backend (TRIT_NATIVE=0: portable CPU code)
#   .dev/trit-vulkan-train-tests     the training-op tests of crates/trit-vulkan (tests/train_ops.rs)
#   .dev/trit-vulkan-transfer-tests  its staged-transfer tests (tests/transfers.rs)
#   .dev/libgomp1_*.deb              OpenMP runtime for ggml's CPU backend, if the device lacks it
#   .gl/*.deb                        the Vulkan loader (device README recipe)
#   .whl/peft-*.whl                  PEFT for the PyTorch peer, in case the device image lacks it
#                                    (pure Python; its needs are in the image)
# Shares .dev/trit and .gl with scripts/bench-vulkan-prepare.sh (same build settings).
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .dev .gl .whl
export TRIT_NATIVE=0
CARGO_TARGET_DIR=target/device cargo build --release -p trit-cli
CARGO_TARGET_DIR=target/device cargo test --release -p trit-vulkan --test train_ops --test transfers --no-run 2>&1 | tee /tmp/train-ops-build.log
cp target/device/release/trit .dev/trit
cp "$(grep -o 'target/device/release/deps/train_ops-[0-9a-f]*' /tmp/train-ops-build.log | head -1)" .dev/trit-vulkan-train-tests
cp "$(grep -o 'target/device/release/deps/transfers-[0-9a-f]*' /tmp/train-ops-build.log | head -1)" .dev/trit-vulkan-transfer-tests
strip .dev/trit .dev/trit-vulkan-train-tests .dev/trit-vulkan-transfer-tests || true
if ! ls .gl/libglvnd0_*.deb >/dev/null 2>&1; then
  o='-oAPT::Architecture=amd64 -oAPT::Architectures=amd64 -oDir::State::Lists=/tmp/amd64'
  mkdir -p /tmp/amd64/partial
  apt-get $o update -qq
  (cd .gl && apt-get $o download libvulkan1 libegl1 libglvnd0 libopengl0 libgl1 libglx0 libgles2)
fi
ls .dev/libgomp1_*.deb >/dev/null 2>&1 || (cd .dev && apt-get -oAPT::Architecture=amd64 -oDir::State::Lists=/tmp/amd64 download libgomp1)
ls .whl/peft-*.whl >/dev/null 2>&1 || python3 -m pip download -q --no-deps --only-binary=:all: -d .whl peft==0.21.2 \
  || echo "warning: no PEFT wheel; the device script falls back to its own LoRA layers if the image has no peft"
ls -la .dev .gl .whl
du -sh .dev .gl .whl
