#!/usr/bin/env bash
# The aarch64 kernels (NEON, NEON + dotprod) of crates/trit-kernels, tested on an x86-64
# host: cross-compiles the crate's tests for aarch64-unknown-linux-gnu and runs them under
# qemu user-mode emulation on three emulated CPUs:
#   max         (has dotprod)  -> paths scalar, neon, neondot; detect picks neondot
#   cortex-a53  (ARMv8.0)      -> paths scalar, neon;          detect picks neon
#   max + TRIT_ISA=scalar      -> detect honours the override
# Each run checks that the CPU offers exactly those paths (tests/exact.rs,
# expected_paths_are_detected), so none can pass by testing fewer. Emulation proves the
# kernels correct (bit-for-bit equal to the scalar path), not fast.
# Installs what is missing (Debian/Ubuntu packages, the Rust target). scripts/test.sh runs
# it last. Without the `ggml` feature (that needs the C++ build).
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v qemu-aarch64-static >/dev/null || need+=(qemu-user-static)
command -v aarch64-linux-gnu-gcc >/dev/null || need+=(gcc-aarch64-linux-gnu)
[ -e /usr/aarch64-linux-gnu/lib/libc.so.6 ] || need+=(libc6-dev-arm64-cross)
if [ ${#need[@]} -gt 0 ]; then
    sudo=""
    [ "$(id -u)" = 0 ] || sudo=sudo
    echo "== installing ${need[*]}"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}"
fi
rustup target list --installed | grep -qx aarch64-unknown-linux-gnu || rustup target add aarch64-unknown-linux-gnu

export CARGO_TERM_COLOR=never
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER="qemu-aarch64-static -L /usr/aarch64-linux-gnu"
args=(--release -p trit-kernels --target aarch64-unknown-linux-gnu --tests)

echo "== cargo build (tests, aarch64)"
cargo test "${args[@]}" --no-run

run() {
    echo "== $*"
    env "$@" cargo test "${args[@]}"
}
unset TRIT_ISA
run QEMU_CPU=max TRIT_EXPECT_ISAS=scalar,neon,neondot TRIT_EXPECT_DETECT=neondot
run QEMU_CPU=cortex-a53 TRIT_EXPECT_ISAS=scalar,neon TRIT_EXPECT_DETECT=neon
run QEMU_CPU=max TRIT_ISA=scalar TRIT_EXPECT_ISAS=scalar,neon,neondot TRIT_EXPECT_DETECT=scalar
echo "== aarch64 kernel tests passed on all three emulated CPUs"
