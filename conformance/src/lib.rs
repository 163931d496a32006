//! What the side-by-side tools share: starting Envoy and wasmproxy on one config and
//! finding their ports (`proxy`), the recording upstream (`upstream`), the test xDS
//! control plane (`control_plane`), the client (`client`, with raw HTTP/2 frames in
//! `h2_frames`, over TLS with the run's certificate from `certs`), pieces of config
//! (`config`) and the normalisations (`normalize`). The conformance harness is the
//! `wasmproxy-conformance` binary; the benchmark harness (`bench/`) and the proxy's xDS
//! tests use parts of it too.

pub mod authz;
pub mod certs;
pub mod client;
pub mod config;
pub mod control_plane;
pub mod h2_frames;
pub mod normalize;
pub mod proxy;
pub mod ratelimit_service;
pub mod spans;
pub mod upstream;
