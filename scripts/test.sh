#!/usr/bin/env bash
# The test command (README, .ci/run): installs what is missing, checks formatting and
# lints, then runs every test in release mode (one build of llama.cpp serves all).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export CARGO_TERM_COLOR=never
echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --release --workspace --all-targets -- -D warnings
echo "== cargo build (libtrit.so/.a for the C example test, every binary)"
cargo build --release --workspace
echo "== cargo test"
cargo test --release --workspace
# lavapipe's subgroups are its vector width / 32 lanes: 8 by default on AVX2/AVX-512 hosts.
echo "== Vulkan op tests again on lavapipe with subgroups of 4 lanes (LP_NATIVE_VECTOR_WIDTH=128):"
echo "   the kernels that need 8 or more (the NORM mat-vecs) must be left out, the rest still right"
LP_NATIVE_VECTOR_WIDTH=128 cargo test --release -p trit-vulkan --test ops
echo "== ... and with subgroups of 16 lanes (LP_NATIVE_VECTOR_WIDTH=512; the NORM mat-vecs' 16-lane form)"
LP_NATIVE_VECTOR_WIDTH=512 cargo test --release -p trit-vulkan --test ops
echo "== Vulkan op, training and weight storage tests again with TQ1_0 weights kept as stored"
echo "   (TRIT_VULKAN_TQ1_AS_TQ2=0: the TQ1_0 kernels, which the default re-encoding bypasses)"
TRIT_VULKAN_TQ1_AS_TQ2=0 cargo test --release -p trit-vulkan --test ops --test train_ops --test weight_store --test scratch
echo "== aarch64 NEON / dot-product kernels under qemu user-mode emulation"
if rustup target list --installed | grep -qx aarch64-unknown-linux-gnu || rustup target add aarch64-unknown-linux-gnu; then
  bash scripts/test-aarch64.sh
else
  echo "!!!!!!!! SKIPPED (not passed): the aarch64 kernel tests; rustup could not install the" \
    "aarch64-unknown-linux-gnu target on this machine !!!!!!!! "
fi
