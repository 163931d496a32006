//! The data plane: worker threads, listeners, the HTTP connection manager, routes,
//! clusters, the Wasm HTTP filter and Envoy's own HTTP filters, tracing, driven by a
//! [`wasmproxy_config::Bootstrap`].
//!
//! Each worker is a thread with its own single-threaded tokio runtime, its own
//! `SO_REUSEPORT` listener sockets, its own upstream clients and its own instance of
//! every plugin VM: nothing is locked per request.
//!
//! Modules import downwards only, in this order (see `docs/ARCHITECTURE.md`):
//! `server` → `xds` → `admin` → `hcm`, `tcp` → `filters` → `tracer` → `wasm` → `upstream` → `observe` → `stream_info` →
//! `tls` → `http` → the leaves (`clock`, `limits`, `matcher`, `memory`, `proto`, `random`,
//! `server_health`, `teardown`).

mod admin;
pub mod clock;
mod filters;
mod hcm;
pub mod http;
pub mod limits;
mod matcher;
mod memory;
mod observe;
mod proto;
mod random;
mod server;
mod server_health;
mod stream_info;
mod tcp;
mod teardown;
mod tls;
mod tracer;
mod upstream;
mod wasm;
mod xds;

pub use admin::{LogControl, LogControlError};
pub use server::{RunningServer, Server, ServerError, ServerOptions, Stopper};

/// Reads and checks every certificate, key and CA the configuration names (filter chains,
/// with their SDS secrets, and clusters) as serving them would, for `--mode validate`; the
/// error names the listener or cluster and the field at fault.
pub fn check_tls(config: &wasmproxy_config::Bootstrap) -> Result<(), String> {
    let mut secrets =
        server::secrets::Secrets::new(config.secrets.clone(), &config.node, wasmproxy_stats::Store::new());
    for listener in &config.listeners {
        for (i, chain) in listener.chains().enumerate() {
            let Some(tls) = &chain.tls else { continue };
            let fail =
                |e: String| format!("listener {}: {}.transport_socket: {e}", listener.name, listener.chain_field(i));
            secrets.server_tls(tls).map_err(fail)?;
        }
    }
    for cluster in &config.clusters {
        upstream::cluster::ClusterSnapshot::new(cluster)?;
    }
    Ok(())
}
