//! TLS scenarios: HTTPS terminated on a listener (`transport_socket` with Envoy's
//! `DownstreamTlsContext`), with the certificate each run makes for `localhost`.

use serde_json::json;
use wasmproxy_conformance::client::Request;
use wasmproxy_conformance::config::{with_chains, with_tls};

use crate::scenario::{Scenario, probe_config};

/// The stats a TLS listener adds.
const TLS_STATS: &[&str] = &[
    r"listener\..*\.ssl\.(handshake|connection_error|no_certificate|versions\..*)",
    r"http\.ingress\.downstream_cx_(total|ssl_total|destroy):",
];

/// The stats of a listener that picks its chain with the TLS inspector.
const CHAIN_STATS: &[&str] = &[
    r"listener\..*\.ssl\.(handshake|connection_error|no_certificate|versions\..*)",
    r"listener\.[0-9.]*_0\.(no_filter_chain_match|downstream_cx_total|downstream_listener_filter_remote_close):",
    r"tls_inspector\..*",
    r"http\.ingress\.downstream_cx_(total|ssl_total|destroy):",
];

/// The TLS scenarios.
pub fn scenarios() -> Vec<Scenario> {
    let properties =
        ["connection.tls_version", "connection.requested_server_name", "connection.mtls", "request.scheme"];
    let read = |paths: &[&str]| paths.iter().map(|p| json!(["get_property", p])).collect::<Vec<_>>();
    let chain_properties = ["xds.filter_chain_name", "connection.requested_server_name", "connection.tls_version"];
    vec![
        Scenario {
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
        },
        Scenario {
            name: "sni_filter_chains",
            about: "the TLS inspector and filter_chain_match: an exact server name, a wildcard, plain text on the \
                    same port, a name no chain has (closed), ALPN picking a chain",
            config: with_chains(
                &probe_config(json!({"request_headers": read(&chain_properties)})),
                &[
                    ("exact", "{server_names: [a.example.com]}", Some("h2, http/1.1")),
                    ("wildcard", "{server_names: ['*.example.com'], application_protocols: [h2]}", Some("h2")),
                    ("wildcard-h1", "{server_names: ['*.example.com']}", Some("http/1.1")),
                    ("plain", "{transport_protocol: raw_buffer}", None),
                ],
            ),
            requests: vec![
                Request::get("/exact").tls("h2").sni("a.example.com"),
                Request::get("/wildcard").tls("h2").sni("b.example.com"),
                Request::get("/wildcard-h1").tls("http/1.1").sni("c.example.com"),
                Request::raw("GET /plain HTTP/1.1\r\nhost: x\r\n\r\n"),
                Request::get("/no-chain").tls("h2").sni("localhost"),
            ],
            deliberate: None,
            known: None,
            stats: CHAIN_STATS,
            prometheus: &[],
            files: Vec::new(),
        },
    ]
}
