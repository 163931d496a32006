#!/usr/bin/env bash
# Builds the test plugins from source into plugins/out/<name>.wasm, one line per plugin.
#
# Rust plugins (plugins/rust/, their own cargo workspace) need Debian's Rust with its
# std source, since rustup has no wasm32 target here:
#   apt-get install -y --no-install-recommends rustc-web cargo-web rust-web-src lld-19 wasi-libc
# Go plugins are built by plugins/go/build.sh when it exists (it writes to plugins/out/ itself).
# Runnable from any directory; the only network it may use is crates.io.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
rust_dir="$repo/plugins/rust"
out_dir="$repo/plugins/out"

build_rust() {
    local cargo=/usr/bin/cargo rustc=/usr/bin/rustc
    if [ ! -x "$cargo" ] || [ ! -x "$rustc" ]; then
        echo "build-plugins: $cargo / $rustc missing; install Debian's rustc-web cargo-web rust-web-src lld-19 wasi-libc" >&2
        return 1
    fi
    (
        cd "$rust_dir"
        # A parent cargo (build.rs, cargo test) sets these for its own build; they must not leak in.
        unset CARGO RUSTC_WRAPPER RUSTC_WORKSPACE_WRAPPER CARGO_ENCODED_RUSTFLAGS RUSTFLAGS \
            CARGO_TARGET_DIR CARGO_BUILD_TARGET CARGO_BUILD_RUSTFLAGS RUSTUP_TOOLCHAIN
        # RUSTFLAGS replaces the rustflags of plugins/rust/.cargo/config.toml, so it repeats
        # them; the path remapping makes the output the same from any checkout, which is
        # how CI checks the committed example plugin (scripts/check-example-plugin.sh).
        local cargo_home="${CARGO_HOME:-$HOME/.cargo}"
        RUSTFLAGS="-L native=/usr/lib/wasm32-wasi --remap-path-prefix=$repo=/wasmproxy --remap-path-prefix=$cargo_home=/cargo" \
        RUSTC_BOOTSTRAP=1 RUSTC="$rustc" RUSTDOC=/usr/bin/rustdoc \
            "$cargo" build --release --locked
    )
    local manifest name wasm
    for manifest in "$rust_dir"/*/Cargo.toml; do
        name="$(basename "$(dirname "$manifest")")"
        wasm="$rust_dir/target/wasm32-wasip1/release/${name//-/_}.wasm"
        cp "$wasm" "$out_dir/$name.wasm"
        echo "rust  $name  plugins/out/$name.wasm  $(wc -c <"$out_dir/$name.wasm") bytes"
    done
}

# === Go plugins: plugins/go/build.sh is maintained separately and writes plugins/out/ itself ===
build_go() {
    if [ -x "$repo/plugins/go/build.sh" ]; then
        PLUGINS_OUT="$out_dir" "$repo/plugins/go/build.sh"
    fi
}

mkdir -p "$out_dir"
build_rust
build_go

# === AssemblyScript plugins: plugins/assemblyscript/build.sh is maintained separately and writes plugins/out/ itself ===
# (npm ci from the npm registry when its node_modules is missing or stale; skips itself without node/npm)
build_assemblyscript() {
    if [ -x "$repo/plugins/assemblyscript/build.sh" ]; then
        PLUGINS_OUT="$out_dir" "$repo/plugins/assemblyscript/build.sh"
    fi
}

build_assemblyscript
