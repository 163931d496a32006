#!/usr/bin/env bash
# The whole test suite, from a fresh machine: install the plugin toolchain, build every
# test plugin from source, check the committed example plugin, run every test.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
scripts/setup.sh
scripts/build-plugins.sh
scripts/check-example-plugin.sh
cargo test --workspace --all-targets --locked
