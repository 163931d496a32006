#!/usr/bin/env bash
# Runs the cargo fuzz targets (fuzz/): the pairs codec, the config loader, request heads,
# hostcalls with arbitrary arguments, xDS resources in protobuf wire format, a TLS server
# session's records (bytes from a client in reads of any size) and OCSP responses to
# staple, each for a bounded time (FUZZ_SECONDS, 30 by default), from the seeds in
# fuzz/seeds/. Needs the nightly toolchain (rustup) and cargo-fuzz (installed from crates.io
# when missing). Exits non-zero on the first crash;
# the crashing input is left in fuzz/artifacts/<target>/.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
seconds="${FUZZ_SECONDS:-30}"
if ! rustup run nightly rustc --version >/dev/null 2>&1; then
    echo "fuzz: installing the nightly toolchain"
    rustup toolchain install nightly --profile minimal
fi
if ! command -v cargo-fuzz >/dev/null; then
    echo "fuzz: installing cargo-fuzz from crates.io"
    cargo install --locked cargo-fuzz
fi
cd fuzz
# No sanitizer: the code under test is Rust (plus wasmtime); what is looked for is a
# panic or abort, with libFuzzer's coverage guidance.
# Built twice at most: a linker killed by the machine (a bus error when the disk is short,
# seen on CI) is not a finding; a second failure is reported.
if ! cargo +nightly fuzz build -s none -O; then
    echo "fuzz: the build failed; trying once more"
    df -h . || true
    cargo +nightly fuzz build -s none -O
fi
targets=(pairs config request_head hostcalls xds_resource tls_records ocsp_response)
for target in "${targets[@]}"; do
    mkdir -p "corpus/$target"
    seeds=()
    [ -d "seeds/$target" ] && seeds=("seeds/$target")
    if ! cargo +nightly fuzz run -s none -O "$target" "corpus/$target" "${seeds[@]}" -- \
        -max_total_time="$seconds" -rss_limit_mb=2048 -print_final_stats=0 >"/tmp/wasmproxy-fuzz-$target.log" 2>&1; then
        tail -40 "/tmp/wasmproxy-fuzz-$target.log"
        echo "fuzz: $target crashed (input in fuzz/artifacts/$target/)"
        exit 1
    fi
    runs=$(grep -o 'Done [0-9]* runs' "/tmp/wasmproxy-fuzz-$target.log" | tail -1 | awk '{print $2}')
    echo "fuzz: $target: ${runs:-?} runs in ${seconds} s, no crash"
done
echo "fuzz: ${#targets[@]} targets, 0 crashes"
