#!/usr/bin/env bash
# The benchmark harness (bench/): builds wasmproxy in release, makes sure Envoy 1.40, wrk
# and the plugins are there, then runs every scenario on both proxies, alternately.
# Arguments go to the harness, e.g. `--rounds 5 --seconds 10`, `--only header_filter`,
# `--write docs/BENCHMARKS.md`. Takes about ten minutes with the defaults.
# `--soak 1000000 --write docs/BENCHMARKS.md` runs the soak instead (a million requests
# over HTTP/1.1, then over HTTP/2, with memory sampled) and updates its section.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
scripts/setup.sh
for tool in wrk:wrk h2load:nghttp2-client perf:linux-perf; do
    if ! command -v "${tool%%:*}" >/dev/null; then
        sudo=""
        [ "$(id -u)" -eq 0 ] || sudo=sudo
        $sudo apt-get install -y -qq --no-install-recommends "${tool#*:}" >/dev/null
    fi
done
[ -f plugins/out/probe.wasm ] || scripts/build-plugins.sh
cargo build --locked --release -q -p wasmproxy
cargo build --locked -q -p wasmproxy-bench
exec target/debug/wasmproxy-bench "$@"
