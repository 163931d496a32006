#!/usr/bin/env bash
# The whole test suite, from a fresh machine: install the plugin toolchain and Envoy,
# build every test plugin and the test xDS control plane from source, check the committed
# example plugin, run every test (the benchmarks run once each as smoke tests), then the
# conformance scenarios against Envoy 1.40 and the validation of Envoy's example
# configurations by both, then each fuzz target for a bounded time
# (scripts/fuzz.sh). Ends with one summary line.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# A fresh machine builds once: incremental data would only take disk (GBs) and time.
if [ -n "${CI:-}" ]; then
    export CARGO_INCREMENTAL=0
fi
scripts/setup.sh
scripts/build-plugins.sh
scripts/build-control-plane.sh
scripts/check-example-plugin.sh

log="$(mktemp)"
trap 'rm -f "$log"' EXIT
set +e
cargo test --workspace --all-targets --locked 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
set +e
scripts/conformance.sh | tee -a "$log"
conformance=${PIPESTATUS[0]}
scripts/fuzz.sh | tee -a "$log"
fuzz=${PIPESTATUS[0]}
set -e
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
     /^conformance: / { c = $0 }
     /^envoy-examples: / { e = $0 }
     /^fuzz: [0-9]+ targets/ { z = $0 }
     END { printf "all tests: %d passed, %d failed; %s; %s; %s\n", p, f, c, e, (z == "" ? "fuzz: failed" : z) }' "$log"
[ "$status" -eq 0 ] && [ "$conformance" -eq 0 ] && [ "$fuzz" -eq 0 ]
