//! The benchmark scenarios: one listener with the filters under test in front of the
//! router, to the shared upstream or a direct response.

use wasmproxy_conformance::config::{network_wasm_filter, wasm_filter, with_chains, with_tls};

/// One scenario.
pub struct Scenario {
    /// A short unique name.
    pub name: &'static str,
    /// What it measures.
    pub about: &'static str,
    /// The Envoy YAML, with `@UPSTREAM_PORT@` and `@PLUGINS@` to fill in.
    pub config: String,
    /// The path requested.
    pub path: &'static str,
    /// A body to POST (none: GET).
    pub body: Option<Vec<u8>>,
    /// Loaded over HTTP/2 by `h2load` (many streams per connection) instead of `wrk`.
    pub http2: bool,
    /// Over TLS (the listener presents the run's certificate).
    pub tls: bool,
    /// Each request on a connection of its own (`connection: close`): a handshake each, over TLS.
    pub new_connections: bool,
    /// Each request on a TLS connection of its own that resumes an earlier one's session
    /// (a rustls client of the harness's own) instead of `wrk`.
    pub resumed: bool,
    /// Request headers every request carries (`name: value`).
    pub headers: &'static [&'static str],
}

/// The cluster every scenario sends to: the shared upstream.
const UPSTREAM_CLUSTER: &str = "  clusters:
  - name: upstream
    type: STATIC
    load_assignment:
      cluster_name: upstream
      endpoints:
      - lb_endpoints:
        - endpoint: { address: { socket_address: { address: 127.0.0.1, port_value: @UPSTREAM_PORT@ } } }
";

/// `config` with the upstream cluster over TLS (SNI `backend.example.com`, the upstream's
/// certificate not checked, as Envoy leaves it without a validation context).
pub fn upstream_tls(config: &str) -> String {
    config.replacen(
        "    type: STATIC\n    load_assignment:",
        "    type: STATIC\n    transport_socket:\n      name: envoy.transport_sockets.tls\n      typed_config:\n        \
         \"@type\": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext\n        \
         sni: backend.example.com\n    load_assignment:",
        1,
    )
}

/// `config` (a listener from [`with_tls`]) refusing session resumption: neither tickets nor
/// the session cache.
fn without_resumption(config: &str) -> String {
    config.replacen(
        "          common_tls_context:\n",
        "          disable_stateless_session_resumption: true\n          \
         disable_stateful_session_resumption: true\n          common_tls_context:\n",
        1,
    )
}

/// A bootstrap with one listener: `filters` before the router, every path routed to the
/// upstream except `/direct`, which gets a direct response.
pub fn bootstrap(filters: &str) -> String {
    format!(
        r#"admin:
  address: {{ socket_address: {{ address: 127.0.0.1, port_value: 0 }} }}
static_resources:
  listeners:
  - name: main
    address: {{ socket_address: {{ address: 127.0.0.1, port_value: 0 }} }}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: bench
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: {{ prefix: /direct }}
                direct_response: {{ status: 200, body: {{ inline_string: "hello world\n" }} }}
              - match: {{ prefix: / }}
                route: {{ cluster: upstream }}
          http_filters:
{filters}          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
{UPSTREAM_CLUSTER}"#
    )
}

/// A bootstrap with one TCP proxy listener to the upstream: the probe as a Wasm network
/// filter (seeing every chunk both ways, reading the cluster's metadata once per
/// connection) and a file access log, written when a connection ends.
pub fn tcp_bootstrap() -> String {
    let probe = r#"{"kind": "stream", "phases": {"new_connection": [["get_property", "xds.listener_metadata"]], "downstream_data": [], "upstream_data": []}}"#;
    let filter = network_wasm_filter("net", "probe.wasm", probe);
    format!(
        r#"admin:
  address: {{ socket_address: {{ address: 127.0.0.1, port_value: 0 }} }}
static_resources:
  listeners:
  - name: main
    address: {{ socket_address: {{ address: 127.0.0.1, port_value: 0 }} }}
    metadata: {{ filter_metadata: {{ bench: {{ kind: tcp }} }} }}
    filter_chains:
    - filters:
{filter}      - name: envoy.filters.network.tcp_proxy
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
          stat_prefix: bench_tcp
          cluster: upstream
          access_log:
          - name: envoy.access_loggers.file
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog
              path: /dev/null
{UPSTREAM_CLUSTER}"#
    )
}

/// The header filter of the issue: reads one request header, adds two response headers
/// from its configuration, counts requests.
pub fn header_filter(name: &str, file: &str) -> String {
    wasm_filter(
        name,
        file,
        r#"{"request_header": "x-user", "response_headers": [["x-wasm-filter", "bench"], ["x-greeting", "hello"]]}"#,
        "",
    )
}

/// A compressor filter with this library (type under `envoy.extensions.compression.`) and
/// Envoy's defaults otherwise.
fn compressor(library: &str) -> String {
    format!(
        r#"          - name: envoy.filters.http.compressor
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.compressor.v3.Compressor
              compressor_library: {{ name: text, typed_config: {{ "@type": type.googleapis.com/envoy.extensions.compression.{library} }} }}
"#
    )
}

/// The CORS filter and a local rate limit whose bucket never runs out.
const CORS_AND_RATE_LIMIT: &str = r#"          - name: envoy.filters.http.cors
            typed_config: { "@type": type.googleapis.com/envoy.extensions.filters.http.cors.v3.Cors }
          - name: envoy.filters.http.local_ratelimit
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit
              stat_prefix: bench
              token_bucket: { max_tokens: 1000000000, tokens_per_fill: 1000000000, fill_interval: 1s }
              filter_enabled: { default_value: { numerator: 100 } }
              filter_enforced: { default_value: { numerator: 100 } }
"#;

/// RBAC (a policy every bench request matches), ext_authz asking the upstream (200: allowed)
/// and a header mutation, before the Rust header filter.
const AUTHZ_RBAC_MUTATION: &str = r#"          - name: envoy.filters.http.rbac
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC
              rules:
                action: ALLOW
                policies:
                  local-clients:
                    permissions: [{ url_path: { path: { prefix: / } } }]
                    principals: [{ remote_ip: { address_prefix: 127.0.0.0, prefix_len: 8 } }]
          - name: envoy.filters.http.ext_authz
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz
              http_service:
                server_uri: { uri: "http://authz", cluster: upstream, timeout: 1s }
                path_prefix: /authz
          - name: envoy.filters.http.header_mutation
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.header_mutation.v3.HeaderMutation
              mutations:
                request_mutations: [{ append: { header: { key: x-checked, value: "yes" } } }]
                response_mutations: [{ remove: x-internal }]
"#;

/// Every scenario, in report order.
pub fn all() -> Vec<Scenario> {
    let body = |name, about, config, path| Scenario {
        name,
        about,
        config,
        path,
        body: None,
        http2: false,
        tls: false,
        new_connections: false,
        resumed: false,
        headers: &[],
    };
    let hf = || header_filter("hf", "header_filter.wasm");
    let ten: String = (0..10).map(|i| header_filter(&format!("hf{i}"), "header_filter.wasm")).collect();
    // The probe replaces each body with 4 KiB of its own, both ways, at the end of stream.
    let rewrite = format!(
        r#"{{"phases": {{"request_headers": [["remove_header", "0", "content-length"]],
            "request_body": [["set_buffer", "0", "0", "100000", "{big}"]],
            "response_headers": [["remove_header", "2", "content-length"]],
            "response_body": [["set_buffer", "1", "0", "100000", "{big}"]]}},
            "returns": {{"request_body": "pause_until_end", "response_body": "pause_until_end"}}}}"#,
        big = "b".repeat(4096)
    )
    .replace('\n', " ");
    vec![
        body("proxy_no_filter", "plain proxying to the upstream, no filter", bootstrap(""), "/"),
        body(
            "header_filter_rust",
            "the Rust SDK header filter, to the upstream",
            bootstrap(&header_filter("hf", "header_filter.wasm")),
            "/",
        ),
        body(
            "header_filter_go",
            "the same filter built with Go, to the upstream",
            bootstrap(&header_filter("hf", "go_header_filter.wasm")),
            "/",
        ),
        Scenario {
            name: "body_rewrite_4k",
            about: "a filter reading and replacing 4 KiB request and response bodies",
            config: bootstrap(&wasm_filter("body", "probe.wasm", &rewrite, "")),
            path: "/",
            body: Some(vec![b'a'; 4096]),
            ..body("", "", String::new(), "/")
        },
        Scenario {
            name: "http2_many_streams",
            about: "the Rust header filter to the upstream, over HTTP/2: `h2load`, 8 connections of 32 streams",
            http2: true,
            ..body("", "", bootstrap(&header_filter("hf", "header_filter.wasm")), "/")
        },
        body("ten_filters", "ten Rust header filters in one chain, to the upstream", bootstrap(&ten), "/"),
        body(
            "direct_response_header_filter",
            "the talk's example: a direct response with the header filter, no upstream",
            bootstrap(&header_filter("hf", "header_filter.wasm")),
            "/direct",
        ),
        body("direct_response_no_filter", "a direct response, no filter", bootstrap(""), "/direct"),
        body(
            "tcp_proxy_network_filter",
            "HTTP/1.1 through a TCP proxy with a Wasm network filter and a file access log",
            tcp_bootstrap(),
            "/",
        ),
        Scenario {
            tls: true,
            ..body(
                "https_header_filter",
                "the Rust header filter to the upstream, over TLS 1.3 (keep-alive)",
                with_tls(&bootstrap(&hf()), "h2, http/1.1"),
                "/",
            )
        },
        Scenario {
            tls: true,
            new_connections: true,
            ..body(
                "https_handshakes",
                "a TLS 1.3 handshake for each request (`connection: close`), the Rust header filter, a direct response: \
                 `wrk` resumes its last session (a ticket, with a new X25519 exchange), so nearly all are resumed",
                with_tls(&bootstrap(&hf()), "h2, http/1.1"),
                "/direct",
            )
        },
        Scenario {
            tls: true,
            new_connections: true,
            ..body(
                "https_full_handshakes",
                "as `https_handshakes`, the listener refusing resumption (no tickets, no session cache): \
                 a full handshake each, signed with the ECDSA P-256 key",
                without_resumption(&with_tls(&bootstrap(&hf()), "h2, http/1.1")),
                "/direct",
            )
        },
        Scenario {
            tls: true,
            new_connections: true,
            resumed: true,
            ..body(
                "https_resumed_handshakes",
                "as `https_handshakes`, each connection resuming an earlier one's session (a TLS 1.3 ticket): \
                 one rustls client, one connection after another",
                with_tls(&bootstrap(&hf()), "h2, http/1.1"),
                "/direct",
            )
        },
        Scenario {
            tls: true,
            http2: true,
            ..body(
                "https_http2",
                "the Rust header filter to the upstream, HTTP/2 over TLS (ALPN): `h2load`",
                with_tls(&bootstrap(&hf()), "h2, http/1.1"),
                "/",
            )
        },
        Scenario {
            tls: true,
            new_connections: true,
            ..body(
                "https_handshakes_sni_chains",
                "as `https_handshakes`, on a listener with the TLS inspector picking among three filter chains",
                with_chains(
                    &bootstrap(&hf()),
                    &[
                        ("a", "{server_names: [a.example.com]}", Some("h2, http/1.1")),
                        ("b", "{server_names: ['*.b.example.com']}", Some("h2, http/1.1")),
                        ("any", "{}", Some("h2, http/1.1")),
                    ],
                ),
                "/direct",
            )
        },
        body(
            "retries_one_in_ten_fails",
            "the Rust header filter to an upstream that answers 503 to one first try in ten; the route retries \
             (`retry_on: 5xx`, 2 retries, 1 ms back-off base, `x-envoy-attempt-count` to the upstream, room for \
             10000 retries at once): every answer the client gets is a 200",
            bootstrap(&hf())
                .replacen(
                    "              - match: { prefix: / }\n                route: { cluster: upstream }\n",
                    "              - match: { prefix: / }\n                route: { cluster: upstream, retry_policy: { retry_on: 5xx, num_retries: 2, retry_back_off: { base_interval: 0.001s } } }\n",
                    1,
                )
                .replacen("              domains: [\"*\"]\n", "              domains: [\"*\"]\n              include_request_attempt_count: true\n", 1)
                .replacen("    type: STATIC\n", "    type: STATIC\n    circuit_breakers: { thresholds: [{ max_retries: 10000 }] }\n", 1),
            crate::upstream::FAILING_PATH,
        ),
        body(
            "retries_outlier_detection",
            "retries_one_in_ten_fails with outlier detection on the cluster (consecutive 5xx, success rate \
             and failure percentage counted for every answer, a 1 s interval): every answer is still a 200",
            bootstrap(&hf())
                .replacen(
                    "              - match: { prefix: / }\n                route: { cluster: upstream }\n",
                    "              - match: { prefix: / }\n                route: { cluster: upstream, retry_policy: { retry_on: 5xx, num_retries: 2, retry_back_off: { base_interval: 0.001s } } }\n",
                    1,
                )
                .replacen("              domains: [\"*\"]\n", "              domains: [\"*\"]\n              include_request_attempt_count: true\n", 1)
                .replacen(
                    "    type: STATIC\n",
                    "    type: STATIC\n    circuit_breakers: { thresholds: [{ max_retries: 10000 }] }\n    outlier_detection: { interval: 1s, enforcing_failure_percentage: 100 }\n",
                    1,
                ),
            crate::upstream::FAILING_PATH,
        ),
        Scenario {
            headers: &["Accept-Encoding: gzip"],
            ..body(
                "compress_gzip_16k",
                "envoy.filters.http.compressor with gzip (Envoy's defaults: level 6, 4 KiB window) on 16 KiB text \
                 answers, and the Rust header filter",
                bootstrap(&format!("{}{}", compressor("gzip.compressor.v3.Gzip"), hf())),
                crate::upstream::TEXT_PATH,
            )
        },
        Scenario {
            headers: &["Accept-Encoding: zstd"],
            ..body(
                "compress_zstd_16k",
                "envoy.filters.http.compressor with zstd (level 3) on 16 KiB text answers, and the Rust header filter",
                bootstrap(&format!("{}{}", compressor("zstd.compressor.v3.Zstd"), hf())),
                crate::upstream::TEXT_PATH,
            )
        },
        Scenario {
            headers: &["Origin: https://app.example.com"],
            ..body(
                "cors_ratelimit_wasm_chain",
                "envoy.filters.http.cors (a virtual host policy; the answers get its headers), \
                 envoy.filters.http.local_ratelimit (a bucket never empty) and the Rust header filter, to the upstream",
                bootstrap(&format!("{CORS_AND_RATE_LIMIT}{}", hf())).replacen(
                    "              domains: [\"*\"]\n",
                    "              domains: [\"*\"]\n              typed_per_filter_config:\n                envoy.filters.http.cors: { \"@type\": type.googleapis.com/envoy.extensions.filters.http.cors.v3.CorsPolicy, allow_origin_string_match: [{ exact: \"https://app.example.com\" }], expose_headers: x-greeting }\n",
                    1,
                ),
                "/",
            )
        },
        body(
            "authz_rbac_wasm_chain",
            "envoy.filters.http.rbac (an ALLOW policy on the path and the client's address), \
             envoy.filters.http.ext_authz with an HTTP service (the upstream: each request checked, then sent), \
             envoy.filters.http.header_mutation and the Rust header filter",
            bootstrap(&format!("{AUTHZ_RBAC_MUTATION}{}", hf())),
            "/",
        ),
        body(
            "tracing_zipkin_all_sampled",
            "tracing with the Zipkin provider, every request sampled (a span each, B3 headers to the upstream, \
             JSON v2 reports of 5 spans to the upstream as collector), and the Rust header filter",
            bootstrap(&hf())
                .replacen(
                    "          stat_prefix: bench\n",
                    "          stat_prefix: bench\n          tracing:\n            provider:\n              name: envoy.tracers.zipkin\n              typed_config:\n                \"@type\": type.googleapis.com/envoy.config.trace.v3.ZipkinConfig\n                collector_cluster: upstream\n                collector_endpoint: /api/v2/spans\n                collector_endpoint_version: HTTP_JSON\n",
                    1,
                ),
            "/",
        ),
        body(
            "upstream_https",
            "the Rust header filter, keep-alive HTTP/1.1 in, to the upstream over TLS (SNI, no certificate check, \
             Envoy's client defaults)",
            upstream_tls(&bootstrap(&hf())),
            "/",
        ),
        Scenario {
            body: Some(GRPC_CALL.to_vec()),
            headers: &["Content-Type: application/grpc", "TE: trailers"],
            ..body(
                "grpc_http1_bridge",
                "envoy.filters.http.grpc_http1_bridge and the Rust header filter: unary gRPC calls from an HTTP/1.1 \
                 client to an HTTP/2 upstream, each answer held whole and its status moved into the headers",
                grpc_bridged(&bootstrap(&format!("{GRPC_BRIDGE}{}", hf()))),
                GRPC_PATH,
            )
        },
    ]
}

/// The method the gRPC scenario calls.
const GRPC_PATH: &str = "/bench.Echo/Say";

/// One gRPC message of 64 bytes, framed.
const GRPC_CALL: &[u8; 69] = &{
    let mut call = [b'm'; 69];
    call[0] = 0;
    call[1] = 0;
    call[2] = 0;
    call[3] = 0;
    call[4] = 64;
    call
};

/// The gRPC HTTP/1 bridge filter.
const GRPC_BRIDGE: &str = r#"          - name: envoy.filters.http.grpc_http1_bridge
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.grpc_http1_bridge.v3.Config
"#;

/// `config` with the upstream cluster speaking HTTP/2 (gRPC).
fn grpc_bridged(config: &str) -> String {
    config.replacen(
        "    type: STATIC\n    load_assignment:",
        "    type: STATIC\n    typed_extension_protocol_options:\n      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:\n        \
         \"@type\": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions\n        \
         explicit_http_config: { http2_protocol_options: {} }\n    load_assignment:",
        1,
    )
}
