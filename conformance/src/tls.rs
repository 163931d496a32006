//! TLS scenarios: HTTPS terminated on a listener (`transport_socket` with Envoy's
//! `DownstreamTlsContext`), with the certificate each run makes for `localhost`.

use serde_json::json;
use wasmproxy_conformance::client::Request;
use wasmproxy_conformance::config::{with_chains, with_mtls, with_tls, with_upstream_tls};

use crate::scenario::{Scenario, bootstrap, probe, probe_config};
use crate::scenarios::tcp_proxy;

/// The stats a TLS listener adds.
const TLS_STATS: &[&str] = &[
    r"listener\..*\.ssl\.(handshake|connection_error|no_certificate|versions\..*|ciphers\..*|curves\..*)",
    r"http\.ingress\.downstream_cx_(total|ssl_total|destroy):",
];

/// The stats of TLS to upstreams.
const UPSTREAM_STATS: &[&str] = &[
    r"cluster\.(upstream|grpc)\.ssl\.(handshake|connection_error|fail_verify_error|fail_verify_san|versions\..*):",
    r"cluster\.(upstream|grpc)\.upstream_cx_(total|connect_fail):",
];

/// The stats of a listener that resumes sessions.
const RESUMPTION_STATS: &[&str] =
    &[r"listener\..*\.ssl\.(handshake|connection_error|session_reused|versions\..*|ciphers\..*)"];

/// The stats of a listener that checks client certificates.
const MTLS_STATS: &[&str] = &[
    r"listener\..*\.ssl\.(handshake|connection_error|no_certificate|fail_verify_no_cert|fail_verify_san|fail_verify_error):",
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
    let certificate_properties = [
        "connection.mtls",
        "connection.subject_peer_certificate",
        "connection.dns_san_peer_certificate",
        "connection.uri_san_peer_certificate",
        "connection.sha256_peer_certificate_digest",
        "connection.subject_local_certificate",
        "connection.dns_san_local_certificate",
        "connection.uri_san_local_certificate",
    ];
    let upstream_properties = [
        "upstream.tls_version",
        "upstream.subject_peer_certificate",
        "upstream.dns_san_peer_certificate",
        "upstream.uri_san_peer_certificate",
        "upstream.sha256_peer_certificate_digest",
        "upstream.subject_local_certificate",
    ];
    let chain_properties = ["xds.filter_chain_name", "connection.requested_server_name", "connection.tls_version"];
    vec![
        Scenario {
            name: "tls_termination",
            about: "HTTPS with ALPN (h2, then http/1.1): the plugin reads the TLS properties; a client offering \
                    P-384 alone is refused (not among Envoy's curves); plain HTTP on the TLS port is closed",
            config: with_tls(&probe_config(json!({"request_headers": read(&properties)})), "h2, http/1.1"),
            requests: vec![
                Request::get("/over-h2").tls("h2"),
                Request::get("/over-http1").tls("http/1.1"),
                Request::get("/p384-only").tls("http/1.1").curve("secp384r1"),
                Request::raw("GET /plain HTTP/1.1\r\nhost: x\r\n\r\n"),
            ],
            deliberate: None,
            known: None,
            stats: TLS_STATS,
            prometheus: &[],
            files: Vec::new(),
        },
        Scenario {
            name: "tls_params_ciphers_curves",
            about: "TLS 1.2 only, one cipher suite and one curve (the client offers more): what is agreed, in the stats",
            config: with_tls(&probe_config(json!({})), "h2, http/1.1").replacen(
                "          common_tls_context:\n",
                "          common_tls_context:\n            tls_params:\n              tls_maximum_protocol_version: TLSv1_2\n              \
                 cipher_suites: ['[ECDHE-ECDSA-CHACHA20-POLY1305|ECDHE-RSA-CHACHA20-POLY1305]']\n              \
                 ecdh_curves: [P-384]\n",
                1,
            ),
            requests: vec![Request::get("/tls12").tls("http/1.1")],
            deliberate: None,
            known: None,
            stats: TLS_STATS,
            prometheus: &[],
            files: Vec::new(),
        },
        Scenario {
            name: "tls_session_timeout",
            about: "TLS 1.2 sessions living session_timeout (3 s): resumed at once, not after 5 s (the ticket's \
                    lifetime says so to the client)",
            config: with_chain_params(
                &with_tls(&probe_config(json!({})), "http/1.1"),
                &[("session_timeout: 3s", "{ tls_maximum_protocol_version: TLSv1_2 }")],
            ),
            requests: vec![
                Request::get("/first").tls("http/1.1").resuming(),
                Request::get("/at-once").tls("http/1.1").resuming(),
                Request::get("/after-5s").tls("http/1.1").resuming().after_pause(5000),
            ],
            deliberate: None,
            known: None,
            stats: RESUMPTION_STATS,
            prometheus: &[],
            files: Vec::new(),
        },
        Scenario {
            name: "tls12_cipher_preference",
            about: "TLS 1.2 suites in the listener's order, not the client's (which puts AES-256 first), in \
                    an equal-preference group the client's pick, an RSA suite skipped for an ECDSA key, and with \
                    prefer_client_ciphers the client's order",
            config: with_chain_params(
                &with_chains(
                    &probe_config(json!({})),
                    &[
                        ("group", "{server_names: [a.example.com]}", Some("http/1.1")),
                        ("ordered", "{server_names: [b.example.com]}", Some("http/1.1")),
                        ("client-order", "{server_names: [c.example.com]}", Some("http/1.1")),
                    ],
                ),
                &[
                    (
                        "",
                        "{ tls_maximum_protocol_version: TLSv1_2, cipher_suites: \
                         ['[ECDHE-ECDSA-CHACHA20-POLY1305|ECDHE-ECDSA-AES128-GCM-SHA256]', ECDHE-ECDSA-AES256-GCM-SHA384] }",
                    ),
                    (
                        "",
                        "{ tls_maximum_protocol_version: TLSv1_2, cipher_suites: \
                         [ECDHE-RSA-AES128-GCM-SHA256, ECDHE-ECDSA-CHACHA20-POLY1305, ECDHE-ECDSA-AES256-GCM-SHA384] }",
                    ),
                    (
                        "prefer_client_ciphers: true",
                        "{ tls_maximum_protocol_version: TLSv1_2, cipher_suites: \
                         [ECDHE-ECDSA-CHACHA20-POLY1305, ECDHE-ECDSA-AES256-GCM-SHA384] }",
                    ),
                ],
            ),
            requests: vec![
                Request::get("/group").tls("http/1.1").sni("a.example.com"),
                Request::get("/ordered").tls("http/1.1").sni("b.example.com"),
                Request::get("/client-order").tls("http/1.1").sni("c.example.com"),
            ],
            deliberate: None,
            known: None,
            stats: RESUMPTION_STATS,
            prometheus: &[],
            files: Vec::new(),
        },
        Scenario {
            name: "tls_resumption_without_tickets",
            about: "disable_stateless_session_resumption: TLS 1.3 sessions are not resumed (BoringSSL resumes \
                    them by tickets only); TLS 1.2 ones are, from the session cache",
            config: with_chain_params(
                &with_chains(
                    &probe_config(json!({})),
                    &[
                        ("tls13", "{server_names: [a.example.com]}", Some("http/1.1")),
                        ("tls12", "{server_names: [b.example.com]}", Some("http/1.1")),
                    ],
                )
                .replace(
                    "          common_tls_context:\n",
                    "          disable_stateless_session_resumption: true\n          common_tls_context:\n",
                ),
                &[("", ""), ("", "{ tls_maximum_protocol_version: TLSv1_2 }")],
            ),
            requests: vec![
                Request::get("/tls13").tls("http/1.1").sni("a.example.com").resuming(),
                Request::get("/tls13-again").tls("http/1.1").sni("a.example.com").resuming(),
                Request::get("/tls12").tls("http/1.1").sni("b.example.com").resuming(),
                Request::get("/tls12-again").tls("http/1.1").sni("b.example.com").resuming(),
            ],
            deliberate: None,
            known: None,
            stats: RESUMPTION_STATS,
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
        Scenario {
            name: "mtls_properties",
            about: "a client certificate required and checked against the CA and a SAN matcher: the plugin reads \
                    the peer's and the local certificate's properties; a client without one is refused",
            config: with_mtls(&probe_config(json!({"request_headers": read(&certificate_properties)})), "h2, http/1.1"),
            requests: vec![
                Request::get("/with-cert").tls("h2").client_cert(),
                Request::get("/with-cert-h1").tls("http/1.1").client_cert(),
                Request::get("/without-cert").tls("h2"),
            ],
            deliberate: None,
            known: None,
            stats: MTLS_STATS,
            prometheus: &[],
            files: Vec::new(),
        },
        Scenario {
            name: "admin_certs",
            about: "admin's /certs: a listener checking client certificates against the CA, a cluster presenting \
                    a client certificate and checking the upstream's against the CA, another with no certificate",
            config: with_upstream_tls(
                &with_upstream_tls(
                    &with_mtls(&probe_config(json!({})), "h2"),
                    "upstream",
                    "        common_tls_context:\n          tls_certificates:\n          - certificate_chain: { filename: \"@TLS_CLIENT_CERT@\" }\n            \
                     private_key: { filename: \"@TLS_CLIENT_KEY@\" }\n          validation_context:\n            \
                     trusted_ca: { filename: \"@TLS_CA@\" }\n",
                ),
                "grpc",
                "",
            ),
            requests: vec![Request::get("/with-cert").tls("h2").client_cert(), Request::admin("/certs")],
            deliberate: None,
            known: None,
            stats: &[],
            prometheus: &[],
            files: Vec::new(),
        },
        Scenario {
            name: "tcp_proxy_tls",
            about: "TLS terminated in front of the TCP proxy (its Wasm network filter reads the TLS properties) \
                    and originated from it to the upstream with SNI and the CA checked",
            config: with_upstream_tls(
                &with_tls(
                    &tcp_proxy(json!({
                        "kind": "stream",
                        "phases": {
                            "downstream_data": read(&["connection.tls_version", "connection.requested_server_name"]),
                            "upstream_data": read(&["upstream.tls_version", "upstream.dns_san_peer_certificate"]),
                        },
                    })),
                    "http/1.1",
                ),
                "upstream",
                "        sni: backend.example.com\n        common_tls_context:\n          validation_context:\n            \
                 trusted_ca: { filename: \"@TLS_CA@\" }\n",
            ),
            requests: vec![Request::get("/through-tls-tcp").tls("http/1.1").sni("tcp.example.com")],
            deliberate: None,
            known: None,
            stats: &[
                r"listener\..*\.ssl\.(handshake|connection_error|versions\..*):",
                r"cluster\.upstream\.ssl\.(handshake|connection_error|versions\..*):",
            ],
            prometheus: &[],
            files: Vec::new(),
        },
        Scenario {
            name: "tls_bad_client_hellos",
            about: "a TLS listener gets a handshake record of garbage, application data before any handshake, a \
                    record longer than TLS allows, and a ClientHello cut short and never finished (closed at the \
                    chain's transport_socket_connect_timeout); a good client is served after them",
            config: with_tls(&probe_config(json!({})), "h2, http/1.1").replacen(
                "    - transport_socket:\n",
                "    - transport_socket_connect_timeout: 0.5s\n      transport_socket:\n",
                1,
            ),
            requests: vec![
                Request::raw_bytes(&[&[0x16, 0x03, 0x01, 0x00, 0x10][..], &[0xff; 16]].concat()),
                Request::raw_bytes(b"\x17\x03\x03\x00\x05hello"),
                Request::raw_bytes(&[&[0x16, 0x03, 0x01, 0x7f, 0xff][..], &[0x01; 64]].concat()),
                Request::raw_bytes(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03]).give_up_after(2000),
                Request::get("/after-them").tls("h2"),
            ],
            deliberate: Some(
                "every broken ClientHello closes the connection unanswered on both, and the good client after them is \
                 served; only the TLS alerts differ: BoringSSL writes alert records as version 0x0301 where rustls \
                 writes 0x0303 (RFC 8446 5.1), names an oversized record record_overflow where rustls says \
                 decode_error, and refuses a handshake message that announces 16 MB at once (illegal_parameter) \
                 where rustls waits for more bytes, so that connection closes at the handshake timeout",
            ),
            known: None,
            stats: &[
                r"listener\.[0-9.]*_0\.(ssl\.(handshake|connection_error)|downstream_cx_(total|transport_socket_connect_timeout)):",
            ],
            prometheus: &[],
            files: Vec::new(),
        },
        Scenario {
            name: "several_certificates_by_sni",
            about: "one chain with two certificates: the client's SNI picks the one that names it (exactly, else \
                    by a wildcard), the first without a match; the plugin reads which it got",
            config: with_tls(
                &probe_config(json!({"request_headers": read(&["connection.dns_san_local_certificate", "connection.subject_local_certificate"])})),
                "h2, http/1.1",
            )
            .replacen(
                "              private_key: { filename: \"@TLS_KEY@\" }\n",
                "              private_key: { filename: \"@TLS_KEY@\" }\n            \
                 - certificate_chain: { filename: \"@TLS_CLIENT_CERT@\" }\n              \
                 private_key: { filename: \"@TLS_CLIENT_KEY@\" }\n",
                1,
            ),
            requests: vec![
                Request::get("/exact").tls("h2").sni("client.example.com"),
                Request::get("/wildcard").tls("h2").sni("api.example.com"),
                Request::get("/localhost").tls("http/1.1"),
            ],
            deliberate: None,
            known: None,
            stats: &[r"listener\..*\.ssl\.(handshake|connection_error):"],
            prometheus: &[],
            files: Vec::new(),
        },
        Scenario {
            name: "upstream_auto_sni",
            about: "auto_sni and auto_san_validation: each new upstream connection named after its request's host \
                    (or override_auto_sni_header), its certificate checked against that name, connections reused \
                    per host",
            config: with_upstream_tls(
                &probe_config(json!({"response_headers": read(&["upstream.tls_version"])})),
                "upstream",
                "        common_tls_context:\n          validation_context:\n            \
                 trusted_ca: { filename: \"@TLS_CA@\" }\n",
            )
            .replacen(
                "    load_assignment:\n      cluster_name: upstream\n",
                "    typed_extension_protocol_options:\n      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:\n        \
                 \"@type\": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions\n        \
                 upstream_http_protocol_options: { auto_sni: true, auto_san_validation: true, override_auto_sni_header: x-sni }\n        \
                 explicit_http_config: { http_protocol_options: {} }\n    load_assignment:\n      cluster_name: upstream\n",
                1,
            )
,
            requests: vec![
                Request::get("/first").header("host", "backend.example.com"),
                Request::get("/port-stripped").header("host", "api.example.com:8443"),
                Request::get("/again").header("host", "backend.example.com"),
                Request::get("/overridden").header("host", "backend.example.com").header("x-sni", "x.example.com"),
                Request::get("/not-named").header("host", "other.test"),
            ],
            deliberate: None,
            known: None,
            stats: &[
                r"cluster\.upstream\.ssl\.(handshake|connection_error|fail_verify_san|fail_verify_error):",
                r"cluster\.upstream\.upstream_cx_(total|connect_fail):",
            ],
            prometheus: &[],
            files: Vec::new(),
        },
        Scenario {
            name: "upstream_tls",
            about: "clusters over TLS: SNI and the CA and SAN checked (HTTP/1.1), nothing checked and no SNI \
                    (HTTP/2, ALPN h2 offered by default); the upstream tells what it was offered",
            config: with_upstream_tls(
                &with_upstream_tls(
                    &probe_config(json!({"response_headers": read(&upstream_properties)})),
                    "upstream",
                    "        sni: backend.example.com\n        common_tls_context:\n          validation_context:\n            \
                     trusted_ca: { filename: \"@TLS_CA@\" }\n            \
                     match_typed_subject_alt_names: [{ san_type: DNS, matcher: { exact: backend.example.com } }]\n",
                ),
                "grpc",
                "",
            ),
            requests: vec![Request::get("/checked"), Request::get("/pkg.Nope/unchecked").h2()],
            deliberate: None,
            known: None,
            stats: UPSTREAM_STATS,
            prometheus: &[],
            files: Vec::new(),
        },
        Scenario {
            name: "http_call_https",
            about: "a plugin's http_call to a cluster over TLS (SNI, the CA checked), then the request to it too",
            config: with_upstream_tls(
                &bootstrap(
                    "",
                    &probe(
                        "probe",
                        json!({"phases": {
                            "request_headers": [["http_call", "upstream", ":method=GET;:path=/status/200;:authority=auth", "", "1000"]],
                            "http_call_response": [["call_response"], ["add_header", "0", "x-auth", "checked"], ["continue", "0"]],
                        }, "returns": {"request_headers": "pause"}}),
                    ),
                ),
                "upstream",
                "        sni: backend.example.com\n        common_tls_context:\n          validation_context:\n            \
                 trusted_ca: { filename: \"@TLS_CA@\" }\n",
            ),
            requests: vec![Request::get("/protected")],
            deliberate: None,
            known: None,
            // (Envoy opens a second connection for the request after the callout's; wasmproxy
            // reuses the callout's: connection counts are left out.)
            stats: &[r"cluster\.upstream\.ssl\.(connection_error|fail_verify_error|fail_verify_san):"],
            prometheus: &[],
            files: Vec::new(),
        },
        Scenario {
            name: "upstream_tls_refused",
            about: "an upstream whose certificate has none of the names asked for: 503, counted as Envoy counts it",
            config: with_upstream_tls(
                &probe_config(json!({})),
                "upstream",
                "        common_tls_context:\n          validation_context:\n            \
                 trusted_ca: { filename: \"@TLS_CA@\" }\n            \
                 match_typed_subject_alt_names: [{ san_type: DNS, matcher: { exact: other.test } }]\n",
            ),
            requests: vec![Request::get("/refused")],
            deliberate: None,
            known: None,
            stats: UPSTREAM_STATS,
            prometheus: &[],
            files: Vec::new(),
        },
        Scenario {
            name: "sds_file_certificate",
            about: "the listener's certificate from an SDS file (path_config_source); the file replaced with a new \
                    version: taken, counted, served",
            config: with_tls(&bootstrap("node: { id: edge-1, cluster: edge }\n", &probe("probe", json!({}))), "h2, http/1.1").replacen(
                "            tls_certificates:\n            - certificate_chain: { filename: \"@TLS_CERT@\" }\n              \
                 private_key: { filename: \"@TLS_KEY@\" }\n",
                "            tls_certificate_sds_secret_configs:\n            - name: server\n              \
                 sds_config: { path_config_source: { path: \"@DYNAMIC@sds.yaml\" } }\n",
                1,
            ),
            requests: vec![
                Request::get("/first").tls("h2"),
                Request::get("/after-rotation").tls("http/1.1").after_update("sds.yaml", sds_file("two")),
            ],
            deliberate: None,
            known: None,
            // (`update_time` is the time of day.)
            stats: &[
                r"sds\.server\.(update_(attempt|success|rejected|failure|duration)|version|version_text|init_fetch_timeout|key_rotation_failed):",
                r"listener\..*\.ssl\.handshake:",
            ],
            prometheus: &[],
            files: vec![("sds.yaml", sds_file("one"))],
        },
        Scenario {
            name: "tls_ocsp_stapling",
            about: "OCSP responses stapled, by SNI chain: a current one (LENIENT_STAPLING); an expired one left out \
                    (LENIENT_STAPLING) or the handshake refused (STRICT_STAPLING); a current one over TLS 1.2 \
                    (MUST_STAPLE); what each counts in ssl.ocsp_staple_*",
            config: with_chain_staples(
                &with_chain_params(
                    &with_chains(
                        &probe_config(json!({})),
                        &[
                            ("current", "{server_names: [a.example.com]}", Some("http/1.1")),
                            ("expired-lenient", "{server_names: [b.example.com]}", Some("http/1.1")),
                            ("expired-strict", "{server_names: [c.example.com]}", Some("http/1.1")),
                            ("must-staple", "{server_names: [d.example.com]}", Some("http/1.1")),
                        ],
                    ),
                    &[
                        ("", ""),
                        ("ocsp_staple_policy: LENIENT_STAPLING", ""),
                        ("ocsp_staple_policy: STRICT_STAPLING", ""),
                        ("ocsp_staple_policy: MUST_STAPLE", "{ tls_maximum_protocol_version: TLSv1_2 }"),
                    ],
                ),
                &["@OCSP_CURRENT@", "@OCSP_EXPIRED@", "@OCSP_EXPIRED@", "@OCSP_CURRENT@"],
            ),
            requests: vec![
                Request::get("/current").tls("http/1.1").sni("a.example.com"),
                Request::get("/expired-lenient").tls("http/1.1").sni("b.example.com"),
                Request::get("/expired-strict").tls("http/1.1").sni("c.example.com"),
                Request::get("/must-staple-tls12").tls("http/1.1").sni("d.example.com"),
            ],
            deliberate: None,
            known: None,
            stats: &[
                r"listener\..*\.ssl\.(handshake|connection_error|ocsp_staple_(requests|responses|omitted|failed)|versions\..*):",
            ],
            prometheus: &[],
            files: Vec::new(),
        },
        Scenario {
            name: "sds_file_validation_context",
            about: "client certificates checked against a combined_validation_context: the SAN matcher in the \
                    default context, the CA from an SDS file; the file replaced with a secret trusting another \
                    certificate: the client's certificate is refused from then on",
            config: with_mtls(
                &bootstrap("node: { id: edge-1, cluster: edge }\n", &probe("probe", json!({}))),
                "h2, http/1.1",
            )
            .replacen(
                "            validation_context:\n              trusted_ca: { filename: \"@TLS_CA@\" }\n              ",
                "            combined_validation_context:\n              validation_context_sds_secret_config:\n                \
                 name: client-ca\n                sds_config: { path_config_source: { path: \"@DYNAMIC@ca.yaml\" } }\n              \
                 default_validation_context:\n                ",
                1,
            ),
            requests: vec![
                Request::get("/trusted").tls("h2").client_cert(),
                Request::get("/without-cert").tls("h2"),
                Request::get("/after-rotation")
                    .tls("http/1.1")
                    .client_cert()
                    .after_update("ca.yaml", validation_sds_file("two", "@TLS_CERT@")),
            ],
            deliberate: None,
            known: None,
            stats: &[
                r"sds\.client-ca\.(update_(attempt|success|rejected|failure)|version|version_text):",
                r"listener\..*\.ssl\.(handshake|connection_error|fail_verify_no_cert|fail_verify_san|fail_verify_error):",
            ],
            prometheus: &[],
            files: vec![("ca.yaml", validation_sds_file("one", "@TLS_CA@"))],
        },
        Scenario {
            name: "sds_file_upstream_secrets",
            about: "a cluster's client certificate and CA from SDS files (combined_validation_context with the SAN \
                    matcher in the default context): the plugin reads the upstream properties; the certificate's \
                    file replaced with another certificate: the next request goes on the open connection, as in \
                    Envoy",
            config: with_upstream_tls(
                &bootstrap("node: { id: edge-1, cluster: edge }\n", &probe("probe", json!({"phases": {"response_headers": read(&upstream_properties)}}))),
                "upstream",
                "        sni: backend.example.com\n        common_tls_context:\n          tls_certificate_sds_secret_configs:\n          \
                 - name: client\n            sds_config: { path_config_source: { path: \"@DYNAMIC@client.yaml\" } }\n          \
                 combined_validation_context:\n            validation_context_sds_secret_config:\n              name: client-ca\n              \
                 sds_config: { path_config_source: { path: \"@DYNAMIC@ca.yaml\" } }\n            default_validation_context:\n              \
                 match_typed_subject_alt_names: [{ san_type: DNS, matcher: { exact: backend.example.com } }]\n",
            ),
            requests: vec![
                Request::get("/first"),
                Request::get("/after-rotation").after_update("client.yaml", certificate_sds_file("client", "two", "@TLS_CERT@", "@TLS_KEY@")),
            ],
            deliberate: None,
            known: None,
            stats: &[
                r"sds\.(client|client-ca)\.(update_(attempt|success|rejected|failure)|version_text):",
                r"cluster\.upstream\.ssl\.(handshake|connection_error|fail_verify_error|fail_verify_san|session_reused):",
                r"cluster\.upstream\.upstream_cx_(total|connect_fail):",
            ],
            prometheus: &[],
            files: vec![
                ("ca.yaml", validation_sds_file("one", "@TLS_CA@")),
                ("client.yaml", certificate_sds_file("client", "one", "@TLS_CLIENT_CERT@", "@TLS_CLIENT_KEY@")),
            ],
        },
    ]
}

/// `config` with, for its TLS filter chains in order, the OCSP response in the file
/// `staples[i]` stapled to the certificate.
fn with_chain_staples(config: &str, staples: &[&str]) -> String {
    let key = "              private_key: { filename: \"@TLS_KEY@\" }\n";
    let mut parts = config.split(key);
    let mut out = parts.next().unwrap_or_default().to_string();
    for (i, part) in parts.enumerate() {
        out.push_str(key);
        if let Some(staple) = staples.get(i) {
            out.push_str(&format!("              ocsp_staple: {{ filename: \"{staple}\" }}\n"));
        }
        out.push_str(part);
    }
    out
}

/// An SDS file holding the secret `name`: a certificate and its key.
fn certificate_sds_file(name: &str, version: &str, chain: &str, key: &str) -> String {
    format!(
        "version_info: {version}\nresources:\n- \"@type\": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret\n  \
         name: {name}\n  tls_certificate:\n    certificate_chain: {{ filename: \"{chain}\" }}\n    private_key: {{ filename: \"{key}\" }}\n"
    )
}

/// An SDS file holding the secret `client-ca`: a validation context trusting `ca`.
fn validation_sds_file(version: &str, ca: &str) -> String {
    format!(
        "version_info: {version}\nresources:\n- \"@type\": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret\n  \
         name: client-ca\n  validation_context:\n    trusted_ca: {{ filename: \"{ca}\" }}\n"
    )
}

/// `config` with, for its TLS filter chains in order, a line of `DownstreamTlsContext`
/// (`name: value`) and `tls_params` (flow style); empty for none.
fn with_chain_params(config: &str, chains: &[(&str, &str)]) -> String {
    let context = "          common_tls_context:\n";
    let mut parts = config.split(context);
    let mut out = parts.next().unwrap_or_default().to_string();
    for (i, part) in parts.enumerate() {
        let (field, params) = chains.get(i).copied().unwrap_or_default();
        if !field.is_empty() {
            out.push_str(&format!("          {field}\n"));
        }
        out.push_str(context);
        if !params.is_empty() {
            out.push_str(&format!("            tls_params: {params}\n"));
        }
        out.push_str(part);
    }
    out
}

/// An SDS file holding the run's server certificate as the secret `server`.
fn sds_file(version: &str) -> String {
    format!(
        "version_info: {version}\nresources:\n- \"@type\": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret\n  \
         name: server\n  tls_certificate:\n    certificate_chain: {{ filename: \"@TLS_CERT@\" }}\n    \
         private_key: {{ filename: \"@TLS_KEY@\" }}\n"
    )
}
