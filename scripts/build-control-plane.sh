#!/usr/bin/env bash
# Builds the xDS control plane the tests drive proxies with (tools/xds/control-plane, on
# go-control-plane) into target/xds-control-plane, with the machine's Go (>= 1.24; its
# modules come from the Go module proxy). Does nothing when it is up to date.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out="$repo/target/xds-control-plane"
src="$repo/tools/xds"
if [ -x "$out" ] && [ -z "$(find "$src" -newer "$out" -type f)" ]; then
    echo "build-control-plane: up to date"
    exit 0
fi
command -v go >/dev/null || { echo "build-control-plane: go is missing (Go >= 1.24 is needed)" >&2; exit 1; }
mkdir -p "$repo/target"
(cd "$src" && go build -o "$out" ./control-plane)
echo "build-control-plane: built $out"
