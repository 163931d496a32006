#!/usr/bin/env bash
# Installs the Debian packages that building the test plugins needs (Rust for
# wasm32-wasip1 through Debian's rustc-web and its std source, and the wasm linker).
# Does nothing when they are there. Go plugins use the machine's Go (>= 1.24) if any.
set -euo pipefail

packages=(rustc-web cargo-web rust-web-src lld-19 wasi-libc)
missing=()
for p in "${packages[@]}"; do
    dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
    echo "setup: plugin toolchain present"
    exit 0
fi
sudo=""
[ "$(id -u)" -eq 0 ] || sudo=sudo
echo "setup: installing ${missing[*]}"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
