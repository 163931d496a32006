//! What a scenario is, and the config pieces scenarios are made of: one Envoy bootstrap
//! with the recording upstream, a few routes, and the filters under test.

use wasmproxy_conformance::client::Request;
pub use wasmproxy_conformance::config::{network_wasm_filter, wasm_filter};

/// One comparison: a config, the requests sent to it, and, if Envoy and wasmproxy are
/// meant to differ here, why.
pub struct Scenario {
    /// A short unique name.
    pub name: &'static str,
    /// What it checks.
    pub about: &'static str,
    /// The Envoy YAML, with `@UPSTREAM_PORT@` and `@PLUGINS@` still to fill in.
    pub config: String,
    /// The requests, sent in order.
    pub requests: Vec<Request>,
    /// Why a remaining difference is a deliberate improvement over Envoy.
    pub deliberate: Option<&'static str>,
    /// A difference not fixed yet, and where it will be.
    pub known: Option<&'static str>,
    /// Admin `/stats` names (regular expressions) whose lines are compared too.
    pub stats: &'static [&'static str],
    /// Admin `/stats/prometheus` lines (regular expressions) compared too.
    pub prometheus: &'static [&'static str],
    /// Dynamic resource files written before the proxy starts (name, text with the same
    /// placeholders as the config); the config names them `@DYNAMIC@<name>`. One named
    /// [`XDS`] is instead a snapshot (`{"version", "resources"}`, proto JSON) that a test
    /// control plane, started for each proxy, serves to the node `conformance` (or the
    /// snapshot's `"node"`); the config
    /// names its port `@XDS_PORT@`, and a request's update of [`XDS`] sets a new snapshot.
    pub files: Vec<(&'static str, String)>,
}

/// The name of the control plane's snapshot among a scenario's files.
pub const XDS: &str = "xds";

/// The catch-all route every scenario's bootstrap ends its routes with (its `route:`
/// follows): a scenario puts its own routes in front of it, or changes it.
pub const CATCH_ALL: &str = "              - match: { prefix: / }\n                name: upstream_route\n";

/// An access log (at the connection manager's indentation, for [`bootstrap_hcm`]) of each
/// request's code, flags and details.
pub const CODE_FLAGS_LOG: &str = r#"          access_log:
          - name: envoy.access_loggers.stdout
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.access_loggers.stream.v3.StdoutAccessLog
              log_format: { text_format_source: { inline_string: "%RESPONSE_CODE% %RESPONSE_FLAGS% %RESPONSE_CODE_DETAILS%\n" } }
"#;

/// The routes every config has, before the catch-all to the upstream.
const ROUTES: &str = r#"              - match: { prefix: /direct }
                name: direct_route
                direct_response: { status: 200, body: { inline_string: "direct body" } }
              - match: { path: /redirect }
                redirect: { path_redirect: /elsewhere }
              - match: { prefix: /rewrite/ }
                route: { cluster: upstream, prefix_rewrite: /rewritten/ }
              - match: { prefix: /timeout }
                route: { cluster: upstream, prefix_rewrite: /sleep, timeout: 0.1s }
              - match: { prefix: /closed }
                route: { cluster: closed }
              - match: { prefix: /pkg.Nope/ }
                route: { cluster: grpc }
              - match: { prefix: / }
                name: upstream_route
                route: { cluster: upstream }
"#;

/// A bootstrap with the admin, one listener with `filters` (YAML list items) before the
/// router, the upstream cluster (also as `grpc`, over HTTP/2) and a cluster nobody
/// listens on. `top` goes first (e.g. a
/// `node:` block).
pub fn bootstrap(top: &str, filters: &str) -> String {
    bootstrap_hcm(top, "", filters)
}

/// [`bootstrap`] with `hcm` (YAML at the connection manager's indentation, e.g.
/// `access_log:`) added to the HTTP connection manager.
pub fn bootstrap_hcm(top: &str, hcm: &str, filters: &str) -> String {
    format!(
        r#"{top}admin:
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
          stat_prefix: ingress
{hcm}          route_config:
            name: local_routes
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
{ROUTES}          http_filters:
{filters}          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
  clusters:
  - name: upstream
    type: STATIC
    connect_timeout: 1s
    load_assignment:
      cluster_name: upstream
      endpoints:
      - lb_endpoints:
        - endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: @UPSTREAM_PORT@ }} }} }}
  - name: grpc
    type: STATIC
    connect_timeout: 1s
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config: {{ http2_protocol_options: {{}} }}
    load_assignment:
      cluster_name: grpc
      endpoints:
      - lb_endpoints:
        - endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: @UPSTREAM_PORT@ }} }} }}
  - name: closed
    type: STATIC
    connect_timeout: 1s
    load_assignment:
      cluster_name: closed
      endpoints:
      - lb_endpoints:
        - endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: 1 }} }} }}
"#
    )
}

/// The probe plugin (Rust SDK) with a JSON configuration (see plugins/rust/probe/README.md).
pub fn probe(name: &str, config: serde_json::Value) -> String {
    wasm_filter(name, "probe.wasm", &config.to_string(), "")
}

/// One probe filter with these phases, in the bootstrap.
pub fn probe_config(phases: serde_json::Value) -> String {
    bootstrap("", &probe("probe", serde_json::json!({ "phases": phases })))
}
