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

/// A TLS server with one certificate (DER, its key PKCS#8 DER), fed ciphertext without a
/// socket: the fuzz target's way into the TLS session code.
#[doc(hidden)]
pub struct FuzzTlsServer(std::sync::Arc<rustls::ServerConfig>);

impl FuzzTlsServer {
    /// The server; `Err` for a certificate or key rustls refuses.
    pub fn new(certificate: &[u8], key: &[u8]) -> Result<FuzzTlsServer, String> {
        let key = rustls::pki_types::PrivatePkcs8KeyDer::from(key.to_vec());
        let config = rustls::ServerConfig::builder_with_provider(tls::pem::provider())
            .with_safe_default_protocol_versions()
            .and_then(|b| b.with_no_client_auth().with_single_cert(vec![certificate.to_vec().into()], key.into()))
            .map_err(|e| e.to_string())?;
        Ok(FuzzTlsServer(std::sync::Arc::new(config)))
    }

    /// Feeds `reads` to a new session, each as one read from the client; whether the
    /// session failed. The scan that finds where the client's hello ends reads them first.
    pub fn reads(&self, reads: &[&[u8]]) -> bool {
        let _ = tls::inspector::hello_bytes(&reads.concat());
        tls::records::server_reads(self.0.clone(), reads)
    }
}

/// Reads `der` as an OCSP response to staple, as `ocsp_staple` is read: for the fuzz
/// target; its times (`thisUpdate`, and `nextUpdate` if any), or Envoy's error.
pub fn fuzz_ocsp_response(der: &[u8]) -> Result<(i64, Option<i64>), String> {
    tls::ocsp::OcspResponse::parse(der.to_vec()).map(|r| (r.this_update, r.next_update))
}

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
        upstream::cluster::ClusterSnapshot::new(cluster, &mut secrets)?;
    }
    Ok(())
}
