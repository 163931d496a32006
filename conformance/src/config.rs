//! Pieces of Envoy YAML (and of xDS snapshots) the harnesses and tests build their configs from.

/// A Wasm HTTP filter running `file` from the plugins directory, with a StringValue
/// configuration and `extra` lines of `PluginConfig` (e.g. `failure_policy: FAIL_OPEN`).
pub fn wasm_filter(name: &str, file: &str, configuration: &str, extra: &str) -> String {
    let quoted = configuration.replace('\'', "''");
    format!(
        r#"          - name: envoy.filters.http.wasm
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm
              config:
                name: {name}
                root_id: {name}_root
                {extra}
                configuration:
                  "@type": type.googleapis.com/google.protobuf.StringValue
                  value: '{quoted}'
                vm_config:
                  vm_id: {name}_vm
                  runtime: envoy.wasm.runtime.v8
                  code: {{ local: {{ filename: "@PLUGINS@/{file}" }} }}
"#
    )
}

/// A Wasm network filter named `name` running `file` from the plugins directory, with a
/// StringValue configuration, as an item of a filter chain's `filters`.
pub fn network_wasm_filter(name: &str, file: &str, configuration: &str) -> String {
    let quoted = configuration.replace('\'', "''");
    format!(
        r#"      - name: envoy.filters.network.wasm
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.wasm.v3.Wasm
          config:
            name: {name}
            root_id: {name}_root
            vm_config:
              vm_id: {name}_vm
              code: {{ local: {{ filename: "@PLUGINS@/{file}" }} }}
            configuration:
              "@type": type.googleapis.com/google.protobuf.StringValue
              value: '{quoted}'
"#
    )
}

/// `config` with its first filter chain terminating TLS with the run's certificate
/// (`@TLS_CERT@`, `@TLS_KEY@`: see [`crate::certs`]), offering the ALPN protocols `alpn`
/// (a YAML list's items).
pub fn with_tls(config: &str, alpn: &str) -> String {
    let socket = format!(
        r#"    - transport_socket:
        name: envoy.transport_sockets.tls
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext
          common_tls_context:
            alpn_protocols: [{alpn}]
            tls_certificates:
            - certificate_chain: {{ filename: "@TLS_CERT@" }}
              private_key: {{ filename: "@TLS_KEY@" }}
      filters:"#
    );
    config.replacen("    - filters:", &socket, 1)
}

/// [`with_tls`], also requiring a client certificate from the run's CA
/// (`@TLS_CA@`) that names `client.example.com`.
pub fn with_mtls(config: &str, alpn: &str) -> String {
    with_tls(config, alpn).replacen(
        "          common_tls_context:\n",
        "          require_client_certificate: true\n          common_tls_context:\n            validation_context:\n              \
         trusted_ca: { filename: \"@TLS_CA@\" }\n              \
         match_typed_subject_alt_names: [{ san_type: DNS, matcher: { exact: client.example.com } }]\n",
        1,
    )
}

/// `config` with the static cluster `cluster` speaking TLS to its endpoints, with these
/// lines of `UpstreamTlsContext` (at its field's indentation: 8 spaces).
pub fn with_upstream_tls(config: &str, cluster: &str, tls: &str) -> String {
    let head = format!("  - name: {cluster}\n    type: STATIC\n    connect_timeout: 1s\n");
    let socket = format!(
        "{head}    transport_socket:\n      name: envoy.transport_sockets.tls\n      typed_config:\n        \
         \"@type\": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext\n{tls}"
    );
    config.replacen(&head, &socket, 1)
}

/// `config` with its one filter chain repeated for each `(name, filter_chain_match, alpn)`:
/// named, matched by the flow-style `filter_chain_match` (`"{}"`: anything), terminating
/// TLS with the run's certificate offering `alpn` when given; and the TLS inspector as the
/// listener filter.
pub fn with_chains(config: &str, chains: &[(&str, &str, Option<&str>)]) -> String {
    let (Some(start), Some(end)) = (config.find("    - filters:\n"), config.find("  clusters:\n")) else {
        return config.to_string();
    };
    let one = &config[start..end];
    let mut out = config[..start].replacen(
        "    filter_chains:\n",
        "    listener_filters:\n    - name: envoy.filters.listener.tls_inspector\n      typed_config:\n        \
         \"@type\": type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector\n    \
         filter_chains:\n",
        1,
    );
    for (name, matching, alpn) in chains {
        let chain = match alpn {
            Some(alpn) => with_tls(one, alpn),
            None => one.to_string(),
        };
        let named = format!("    - name: {name}\n      filter_chain_match: {matching}\n      ");
        out.push_str(&chain.replacen("    - ", &named, 1));
    }
    out.push_str(&config[end..]);
    out
}

/// A bootstrap for the node `node` whose listeners and clusters all come from ADS
/// (`api_type` GRPC or DELTA_GRPC) through the static HTTP/2 cluster `xds_cluster` at
/// `xds_port`, with an admin listener on port 0.
pub fn ads_bootstrap(node: &str, api_type: &str, xds_port: &str) -> String {
    format!(
        r#"node: {{ id: {node}, cluster: test }}
admin:
  address: {{ socket_address: {{ address: 127.0.0.1, port_value: 0 }} }}
dynamic_resources:
  ads_config:
    api_type: {api_type}
    transport_api_version: V3
    grpc_services: [{{ envoy_grpc: {{ cluster_name: xds_cluster }} }}]
  cds_config: {{ ads: {{}}, resource_api_version: V3 }}
  lds_config: {{ ads: {{}}, resource_api_version: V3 }}
static_resources:
  clusters:
  - name: xds_cluster
    type: STATIC
    connect_timeout: 1s
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config: {{ http2_protocol_options: {{}} }}
    load_assignment:
      cluster_name: xds_cluster
      endpoints:
      - lb_endpoints:
        - endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {xds_port} }} }} }}
"#
    )
}

/// Envoy's `dynamic-config-cp` example (its `envoy.yaml`), unchanged apart from addresses:
/// the control plane at `xds_port`, the admin on port 0.
pub fn dynamic_config_cp(xds_port: &str) -> String {
    format!(
        r#"node:
  cluster: test-cluster
  id: test-id

dynamic_resources:
  ads_config:
    api_type: GRPC
    grpc_services:
    - envoy_grpc:
        cluster_name: xds_cluster
  cds_config:
    ads: {{}}
  lds_config:
    ads: {{}}

static_resources:
  clusters:
  - type: STRICT_DNS
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config:
          http2_protocol_options: {{}}
    name: xds_cluster
    load_assignment:
      cluster_name: xds_cluster
      endpoints:
      - lb_endpoints:
        - endpoint:
            address:
              socket_address:
                address: 127.0.0.1
                port_value: {xds_port}

admin:
  address:
    socket_address:
      address: 127.0.0.1
      port_value: 0
"#
    )
}

/// What that example's control plane (go-control-plane's `internal/example`) serves, with
/// an upstream at `localhost:<upstream_port>` for `www.envoyproxy.io:80` and the listener on
/// port 0: a LOGICAL_DNS cluster, a listener whose routes come on an RDS stream of their own
/// (`api_config_source`), and the routes (`route_prefix` to the cluster, rewriting the host).
pub fn dynamic_config_cp_resources(upstream_port: serde_json::Value, route_prefix: &str) -> Vec<serde_json::Value> {
    use serde_json::json;
    let rds_source = json!({
        "resource_api_version": "V3",
        "api_config_source": {
            "transport_api_version": "V3", "api_type": "GRPC", "set_node_on_first_message_only": true,
            "grpc_services": [{"envoy_grpc": {"cluster_name": "xds_cluster"}}],
        },
    });
    vec![
        json!({
            "@type": "type.googleapis.com/envoy.config.cluster.v3.Cluster",
            "name": "example_proxy_cluster", "connect_timeout": "5s", "type": "LOGICAL_DNS",
            "lb_policy": "ROUND_ROBIN", "dns_lookup_family": "V4_ONLY",
            "load_assignment": {"cluster_name": "example_proxy_cluster", "endpoints": [{"lb_endpoints": [{"endpoint": {
                "address": {"socket_address": {"protocol": "TCP", "address": "localhost", "port_value": upstream_port}}}}]}]},
        }),
        json!({
            "@type": "type.googleapis.com/envoy.config.route.v3.RouteConfiguration", "name": "local_route",
            "virtual_hosts": [{"name": "local_service", "domains": ["*"], "routes": [{"match": {"prefix": route_prefix},
                "route": {"cluster": "example_proxy_cluster", "host_rewrite_literal": "www.envoyproxy.io"}}]}],
        }),
        json!({
            "@type": "type.googleapis.com/envoy.config.listener.v3.Listener", "name": "listener_0",
            "address": {"socket_address": {"protocol": "TCP", "address": "127.0.0.1", "port_value": 0}},
            "filter_chains": [{"filters": [{"name": "http-connection-manager", "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                "codec_type": "AUTO", "stat_prefix": "http",
                "rds": {"config_source": rds_source, "route_config_name": "local_route"},
                "http_filters": [{"name": "http-router", "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}],
            }}]}],
        }),
    ]
}
