#!/usr/bin/env bash
# The examples' plugins are committed so that the README's first command needs no wasm
# toolchain; this checks each is still what its source in plugins/rust builds to.
# Run after scripts/build-plugins.sh.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
status=0
for example in header_filter talk_demo; do
    built="$repo/plugins/out/$example.wasm"
    committed="$repo/examples/$example/$example.wasm"
    if cmp -s "$built" "$committed"; then
        echo "example plugin: examples/$example/$example.wasm matches its source"
    else
        echo "example plugin: examples/$example/$example.wasm differs from what plugins/rust/$example builds to;" >&2
        echo "  refresh it with: scripts/build-plugins.sh && cp plugins/out/$example.wasm examples/$example/" >&2
        status=1
    fi
done
exit $status
