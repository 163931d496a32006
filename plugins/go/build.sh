#!/usr/bin/env bash
# Build every Go plugin (each directory of plugins/go holding Go files) with the
# standard Go toolchain into plugins/out/go_<name>.wasm, as WASI reactors:
#   GOOS=wasip1 GOARCH=wasm go build -buildmode=c-shared
# Needs Go >= 1.24 (//go:wasmexport). Without it, prints a notice and exits 0.
# Runnable from any directory. Set GO=/path/to/go to pick a toolchain.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
out="$(cd "$here/.." && pwd)/out"
go_bin="${GO:-go}"

skip() {
    echo "Go >= 1.24 not found, skipping Go plugins"
    exit 0
}

command -v "$go_bin" >/dev/null 2>&1 || skip
# GOTOOLCHAIN=local: never download another toolchain; use the one found.
version="$(GOTOOLCHAIN=local "$go_bin" env GOVERSION 2>/dev/null)" || skip
if [[ ! "$version" =~ ^go([0-9]+)\.([0-9]+) ]]; then
    skip
fi
major="${BASH_REMATCH[1]}"
minor="${BASH_REMATCH[2]}"
if (( major < 1 || (major == 1 && minor < 24) )); then
    skip
fi

mkdir -p "$out"
cd "$here"
for dir in "$here"/*/; do
    name="$(basename "$dir")"
    compgen -G "$dir*.go" >/dev/null || continue
    dest="$out/go_$name.wasm"
    start=$SECONDS
    GOTOOLCHAIN=local GOOS=wasip1 GOARCH=wasm CGO_ENABLED=0 \
        "$go_bin" build -trimpath -buildmode=c-shared -o "$dest" "./$name"
    size=$(wc -c <"$dest")
    echo "built $dest ($size bytes, $((SECONDS - start)) s, $version)"
done
