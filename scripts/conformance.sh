#!/usr/bin/env bash
# Runs the conformance harness (conformance/): every scenario on Envoy 1.40 and on
# wasmproxy, compared. Arguments go to the harness, e.g. `--only local_reply` or
# `--write docs/CONFORMANCE.md`. Needs scripts/setup.sh, scripts/build-plugins.sh and
# scripts/build-control-plane.sh first.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
cargo build --locked -q -p wasmproxy -p wasmproxy-conformance
exec target/debug/wasmproxy-conformance "$@"
