//! The host's tests: real SDK plugins (built by scripts/build-plugins.sh) and hand-made
//! broken modules, driven through the host with a recording embedder.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod broken;
mod engine;
mod probe_http;
mod probe_root;
mod probe_tcp;
mod sdks;
mod support;
