#!/usr/bin/env bash
# The example's plugin is committed so that the README's first command needs no wasm
# toolchain; this checks it is still what plugins/rust/header_filter builds to.
# Run after scripts/build-plugins.sh.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
built="$repo/plugins/out/header_filter.wasm"
committed="$repo/examples/header_filter/header_filter.wasm"
if cmp -s "$built" "$committed"; then
    echo "example plugin: examples/header_filter/header_filter.wasm matches its source"
else
    echo "example plugin: examples/header_filter/header_filter.wasm differs from what plugins/rust/header_filter builds to;" >&2
    echo "  refresh it with: scripts/build-plugins.sh && cp plugins/out/header_filter.wasm examples/header_filter/" >&2
    exit 1
fi
