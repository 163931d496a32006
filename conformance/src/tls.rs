//! TLS scenarios: HTTPS terminated on a listener (`transport_socket` with Envoy's
//! `DownstreamTlsContext`), with the certificate each run makes for `localhost`.

use serde_json::json;
use wasmproxy_conformance::client::Request;
use wasmproxy_conformance::config::with_tls;

use crate::scenario::{Scenario, probe_config};

/// The stats a TLS listener adds.
const TLS_STATS: &[&str] = &[
    r"listener\..*\.ssl\.(handshake|connection_error|no_certificate|versions\..*)",
    r"http\.ingress\.downstream_cx_(total|ssl_total|destroy)$",
];

/// The TLS scenarios.
pub fn scenarios() -> Vec<Scenario> {
    let properties =
        ["connection.tls_version", "connection.requested_server_name", "connection.mtls", "request.scheme"];
    let read = |paths: &[&str]| paths.iter().map(|p| json!(["get_property", p])).collect::<Vec<_>>();
    vec![Scenario {
        name: "tls_termination",
        about: "HTTPS with ALPN (h2, then http/1.1): the plugin reads the TLS properties; plain HTTP on the TLS port is closed",
        config: with_tls(&probe_config(json!({"request_headers": read(&properties)})), "h2, http/1.1"),
        requests: vec![
            Request::get("/over-h2").tls("h2"),
            Request::get("/over-http1").tls("http/1.1"),
            Request::raw("GET /plain HTTP/1.1\r\nhost: x\r\n\r\n"),
        ],
        deliberate: None,
        known: None,
        stats: TLS_STATS,
        prometheus: &[],
        files: Vec::new(),
    }]
}
