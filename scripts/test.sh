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
