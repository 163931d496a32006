//! The data plane: worker threads, listeners, the HTTP connection manager, routes,
//! clusters and the Wasm HTTP filter, driven by a [`wasmproxy_config::Bootstrap`].
//!
//! Each worker is a thread with its own single-threaded tokio runtime, its own
//! `SO_REUSEPORT` listener sockets, its own upstream clients and its own instance of
//! every plugin VM: nothing is locked per request.
//!
//! Modules import downwards only, in this order (see `docs/ARCHITECTURE.md`):
//! `server` → `admin` → `hcm`, `tcp` → `wasm` → `upstream` → `observe` → `stream_info` →
//! `tls` → `http` → the leaves (`clock`, `limits`, `matcher`, `memory`, `proto`, `random`,
//! `teardown`).

mod admin;
pub mod clock;
mod hcm;
pub mod http;
pub mod limits;
mod matcher;
mod memory;
mod observe;
mod proto;
mod random;
mod server;
mod stream_info;
mod tcp;
mod teardown;
mod tls;
mod upstream;
mod wasm;

pub use admin::{LogControl, LogControlError};
pub use server::{RunningServer, Server, ServerError, ServerOptions, Stopper};

/// Reads and checks a filter chain's TLS settings (its certificate and key) as serving
/// them would, for `--mode validate`; the error names the field at fault.
pub fn check_tls(tls: &wasmproxy_config::model::DownstreamTls) -> Result<(), String> {
    tls::downstream::server_config(tls).map(drop)
}

/// Reads and checks a cluster's TLS settings (client certificate, CA) as serving them
/// would, for `--mode validate`; the error names the cluster and the field at fault.
pub fn check_cluster(cluster: &wasmproxy_config::model::Cluster) -> Result<(), String> {
    upstream::cluster::ClusterSnapshot::new(cluster).map(drop)
}
