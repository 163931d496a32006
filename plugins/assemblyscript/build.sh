#!/usr/bin/env bash
# Build the AssemblyScript plugins (plugins/assemblyscript/assembly/) with the pinned
# assemblyscript 0.14.13 + @solo-io/proxy-runtime 0.1.8 into plugins/out/as_<name>.wasm.
#
#   npm ci (only when node_modules is missing or does not match package-lock.json), then
#   asc assembly/index.ts -b <out> --use abort=abort_proc_exit --optimize
#
# Needs node and npm (Node 20 tested); without them it prints a notice and exits 0.
# Runnable from any directory. The only network it may use is the npm registry (npm ci).
# PLUGINS_OUT=<dir> overrides the output directory (default: plugins/out).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
out="${PLUGINS_OUT:-$here/../out}"

if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    echo "node/npm not found, skipping AssemblyScript plugins"
    exit 0
fi

cd "$here"

# node_modules is reinstalled when the lock changed since the last npm ci (a stamp of
# package.json + package-lock.json is kept in node_modules) or a tool went missing.
stamp="node_modules/.wasmproxy-lock.sha256"
want="$(cat package.json package-lock.json | sha256sum | cut -d' ' -f1)"
if [ ! -x node_modules/.bin/asc ] || [ ! -f node_modules/@solo-io/proxy-runtime/assembly/index.ts ] \
    || [ "$(cat "$stamp" 2>/dev/null || true)" != "$want" ]; then
    # No package has install scripts; --ignore-scripts keeps it that way.
    npm ci --no-audit --no-fund --ignore-scripts >&2
    echo "$want" >"$stamp"
fi

mkdir -p "$out"
out="$(cd "$out" && pwd)"

build() {
    local name="$1" entry="$2"
    local dest="$out/as_$name.wasm"
    local tmp="$dest.tmp.$$"
    local log="$dest.log.$$"
    # Compile to a temporary file first so a failed build never leaves a partial plugin.
    if ! node_modules/.bin/asc "$entry" -b "$tmp" --use abort=abort_proc_exit --optimize 2>"$log"; then
        cat "$log" >&2
        rm -f "$tmp" "$log"
        return 1
    fi
    # The SDK always triggers "WARNING AS201" (usize.toString() in ~lib/number.ts); show the
    # compiler's output only when it says anything else.
    if grep -E '^(ERROR|WARNING|INFO) ' "$log" | grep -qv '^WARNING AS201: '; then
        cat "$log" >&2
    fi
    rm -f "$log"
    mv -f "$tmp" "$dest"
    local shown="${dest#"$repo"/}"
    echo "built $shown ($(wc -c <"$dest") bytes)"
}

build header_filter assembly/index.ts
