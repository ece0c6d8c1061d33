#!/usr/bin/env bash
# Installs what building and testing trit needs on a fresh Debian/Ubuntu machine, then
# checks the Rust toolchain. Safe to run again. Without root it prints the apt command.
set -euo pipefail

# glslc compiles the Vulkan kernels at build time; spirv-cross checks they translate to
# Metal (a test); mesa-vulkan-drivers (lavapipe) + libvulkan1 let the Vulkan tests run
# without a GPU; libvulkan-dev brings the loader's development link.
APT_PACKAGES=(cmake g++ patch pkg-config libclang-dev clang python3
  glslc spirv-cross libvulkan1 libvulkan-dev mesa-vulkan-drivers)

missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    echo "setup: installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  else
    echo "setup: please run: sudo apt-get install -y ${missing[*]}" >&2
    exit 1
  fi
fi
# The official OpenAI Python client, for the llama-server compatibility test.
if ! python3 -c "import openai" 2>/dev/null; then
  python3 -m pip install -q --disable-pip-version-check openai >/dev/null 2>&1 \
    || echo "setup: could not pip install openai; the openai-client server test will print SKIPPED" >&2
fi
command -v cargo >/dev/null || { echo "setup: install Rust first: https://rustup.rs (cargo 1.85 or newer)" >&2; exit 1; }
rustup component list --installed 2>/dev/null | grep -q clippy || rustup component add clippy rustfmt >/dev/null 2>&1 || true
echo "setup: ok ($(cargo --version), $(cmake --version | head -1))"
