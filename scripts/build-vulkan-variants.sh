#!/usr/bin/env bash
# Builds device binaries of trit whose Vulkan backend (crates/trit-vulkan) is taken from other
# commits, for A/B runs on the device machine (scripts/bench-vulkan-ab.sh,
# scripts/device-decode-check.sh): for each BUILDS entry "name=commit", that commit's
# crates/trit-vulkan is checked out over the working tree's, trit is built (TRIT_NATIVE=0,
# target/device) and gzipped to .devc/NAME.gz; then the working tree's crates/trit-vulkan is
# put back. "name=" (no commit) builds the working tree as it is; "name=@file.patch" builds
# it with that patch of crates/trit-vulkan applied (scripts/experiments/), and
# "name=commit@file.patch" that commit's crates/trit-vulkan with the patch applied. OPS=name also
# gzips that build's op-test binary to .devc/ops.gz. crates/trit-vulkan must have no
# uncommitted or untracked changes. (Files a commit deletes are not deleted for its build.)
#   BUILDS="new= swz=c7931ad@scripts/experiments/int8-swizzle.patch v4u8=c7931ad@scripts/experiments/int8-uvec4-u8.patch" \
#     OPS=v4u8 bash scripts/build-vulkan-variants.sh
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -n "$(git status --porcelain -- crates/trit-vulkan)" ]; then
  echo "crates/trit-vulkan has uncommitted changes; commit or stash them first" >&2
  exit 1
fi
mkdir -p .devc
restore() {
  git reset -q -- crates/trit-vulkan
  git checkout -q HEAD -- crates/trit-vulkan
  git clean -qfd crates/trit-vulkan
}
trap restore EXIT
export TRIT_NATIVE=0 CARGO_TARGET_DIR=target/device
for b in ${BUILDS:?BUILDS=\"name=commit ...\"}; do
  n=${b%%=*}; c=${b#*=}
  restore
  case "$c" in
    "") ;;
    @*) git apply "${c#@}" ;;
    *@*) git checkout -q "${c%%@*}" -- crates/trit-vulkan && git apply "${c#*@}" ;;
    *) git checkout -q "$c" -- crates/trit-vulkan ;;
  esac
  echo "== $n (${c:-working tree})"
  cargo build --release -p trit-cli 2>&1 | tail -1
  # stripped and packed hard: four builds, the peer and the repository fit the 64 MiB carry
  strip -o "target/device/$n.stripped" target/device/release/trit
  gzip -9 -c "target/device/$n.stripped" > ".devc/$n.gz"
  if [ "${OPS:-}" = "$n" ]; then
    bin=$(cargo test --release -p trit-vulkan --test ops --no-run --message-format=json 2>/dev/null \
      | python3 -c 'import json,sys
for l in sys.stdin:
    m = json.loads(l)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "ops" and m.get("executable"):
        print(m["executable"])')
    gzip -c "$bin" > .devc/ops.gz
  fi
done
ls -la .devc
