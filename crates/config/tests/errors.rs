//! Bad configs: every error names its field path (and line and column for YAML), and all errors
//! are reported at once.

use std::path::Path;

use wasmproxy_config::{load_file, load_str};

/// A small valid config; each test changes a line or two of it.
const BASE: &str = r#"static_resources:
  listeners:
  - name: web
    address:
      socket_address: { address: 127.0.0.1, port_value: 8080 }
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: web
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: { prefix: / }
                route: { cluster: backend }
          http_filters:
          - name: plugin
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm
              config:
                name: plugin
                vm_config:
                  runtime: envoy.wasm.runtime.v8
                  code: { local: { filename: plugin.wasm } }
          - name: envoy.filters.http.router
            typed_config: { "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router }
  clusters:
  - name: backend
    connect_timeout: 1s
    load_assignment:
      endpoints:
      - lb_endpoints:
        - endpoint: { address: { socket_address: { address: 127.0.0.1, port_value: 9000 } } }
"#;

const HCM: &str = "static_resources.listeners[0].filter_chains[0].filters[0].typed_config";
const PLUGIN: &str =
    "static_resources.listeners[0].filter_chains[0].filters[0].typed_config.http_filters[0].typed_config.config";

/// BASE with each `(from, to)` replaced (each `from` must occur exactly once).
fn config(changes: &[(&str, &str)]) -> String {
    let mut text = BASE.to_owned();
    for (from, to) in changes {
        assert_eq!(text.matches(from).count(), 1, "{from:?} must occur once");
        text = text.replacen(from, to, 1);
    }
    text
}

/// The errors of a config, one `Display` line each.
fn errors(changes: &[(&str, &str)]) -> Vec<String> {
    match load_str(&config(changes), Path::new("/etc/wasmproxy")) {
        Ok(_) => panic!("the config loaded"),
        Err(errors) => errors.to_string().lines().map(str::to_owned).collect(),
    }
}

#[test]
fn the_base_config_loads() {
    let bootstrap = load_str(BASE, Path::new("/etc/wasmproxy")).unwrap();
    assert_eq!(bootstrap.listeners[0].name, "web");
    assert_eq!(bootstrap.clusters[0].name, "backend");
}

#[test]
fn unknown_field() {
    assert_eq!(
        errors(&[("route: { cluster: backend }", "route: { cluster: backend, colour: blue }")]),
        vec![format!("{HCM}.route_config.virtual_hosts[0].routes[0].route.colour: unknown field (line 18, column 44)")]
    );
}

#[test]
fn unsupported_fields() {
    assert_eq!(
        errors(&[("          route_config:\n", "          scoped_routes: { name: web }\n          x_route_config:\n")]),
        vec![
            format!("{HCM}.scoped_routes: not supported by wasmproxy (line 12, column 11)"),
            format!("{HCM}.x_route_config: unknown field (line 13, column 11)"),
        ]
    );
    assert_eq!(
        errors(&[(
            "code: { local: { filename: plugin.wasm } }",
            "code: { remote: { http_uri: { uri: \"https://x/p.wasm\" }, sha256: abc } }"
        )]),
        vec![
            format!("{PLUGIN}.vm_config.code.remote.http_uri: missing required field \"cluster\" (line 27, column 47)"),
            format!("{PLUGIN}.vm_config.code.remote.http_uri: missing required field \"timeout\" (line 27, column 47)"),
            format!("{PLUGIN}.vm_config.code.remote.sha256: must be a sha256 in hex (64 digits) (line 27, column 84)"),
        ]
    );
    let sha = "a".repeat(64);
    let oci = |uri: &str, cluster: &str| {
        let code =
            format!("code: {{ remote: {{ http_uri: {{ uri: \"{uri}\", {cluster}timeout: 1s }}, sha256: {sha} }} }}");
        let text = config(&[("code: { local: { filename: plugin.wasm } }", &code)]);
        match load_str(&text, Path::new("/etc/wasmproxy")) {
            Ok(_) => Vec::new(),
            Err(errors) => errors.to_string().lines().map(str::to_owned).collect(),
        }
    };
    assert_eq!(oci("oci://registry.test:5000/plugins/a:v1", ""), Vec::<String>::new());
    assert_eq!(oci(&format!("oci://localhost/a@sha256:{sha}"), ""), Vec::<String>::new());
    let at = format!("{PLUGIN}.vm_config.code.remote.http_uri");
    assert_eq!(
        oci("oci://registry.test/a:v1", "cluster: modules, "),
        vec![format!(
            "{at}.cluster: an oci:// module is pulled from the registry its reference names: remove the cluster (line 27, column 91)"
        )]
    );
    assert_eq!(
        oci("oci://plugins/a:v1", ""),
        vec![format!(
            "{at}.uri: \"oci://plugins/a:v1\" is not an OCI image reference: \"plugins\" is not a registry's host[:port] (a name with a dot or a port) (line 27, column 54)"
        )]
    );
    assert_eq!(
        oci("oci://r.test/Plugins/a", ""),
        vec![format!(
            "{at}.uri: \"oci://r.test/Plugins/a\" is not an OCI image reference: \"Plugins/a\" is not a repository (lowercase letters, digits, . _ - and /) (line 27, column 54)"
        )]
    );
    assert_eq!(
        oci("oci://r.test/a@sha256:12", ""),
        vec![format!(
            "{at}.uri: \"oci://r.test/a@sha256:12\" is not an OCI image reference: the digest is not 64 lowercase hex digits (line 27, column 54)"
        )]
    );
    assert_eq!(
        oci("ftp://r.test/a", "cluster: backend, "),
        vec![format!(
            "{at}.uri: \"ftp://r.test/a\" is not an absolute http://, https:// or oci:// URI (line 27, column 54)"
        )]
    );
    assert_eq!(
        errors(&[(
            "    - filters:\n",
            "    - transport_socket: { name: envoy.transport_sockets.tls }\n      filters:\n"
        )]),
        vec![
            "static_resources.listeners[0].filter_chains[0].transport_socket: transport socket \"envoy.transport_sockets.tls\" without typed_config is not supported by wasmproxy (line 7, column 25)"
        ]
    );
}

#[test]
fn a_wasm_network_filter_before_a_connection_manager_is_refused() {
    let network = "    - filters:\n      - name: net\n        config_discovery: { config_source: { ads: {} }, type_urls: [type.googleapis.com/envoy.extensions.filters.network.wasm.v3.Wasm] }\n";
    assert_eq!(
        errors(&[("    - filters:\n", network)]),
        vec![
            "static_resources.listeners[0].filter_chains[0].filters[0]: a Wasm network filter before http_connection_manager is not supported by wasmproxy (it runs before tcp_proxy) (line 8, column 9)",
            "static_resources.listeners[0].filter_chains[0].filters[0].config_discovery.config_source.ads: ads needs dynamic_resources.ads_config (line 9, column 51)",
        ]
    );
}

#[test]
fn an_ocsp_staple_on_a_clusters_client_certificate_is_refused() {
    let socket = "    connect_timeout: 1s\n    transport_socket:\n      name: envoy.transport_sockets.tls\n      typed_config:\n        \"@type\": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext\n        common_tls_context:\n          tls_certificates:\n          - { certificate_chain: { filename: c.pem }, private_key: { filename: k.pem }, ocsp_staple: { filename: o.der } }\n";
    assert_eq!(
        errors(&[("    connect_timeout: 1s\n", socket)]),
        vec![
            "static_resources.clusters[0].transport_socket.typed_config.common_tls_context.tls_certificates[0].ocsp_staple: a cluster's client certificate with an OCSP staple is not supported by wasmproxy (line 38, column 11)"
        ]
    );
}

/// A filter chain terminating TLS with these fields of its `DownstreamTlsContext`, one a line.
fn tls_errors(fields: &[&str]) -> Vec<String> {
    let fields: String = fields.iter().map(|f| format!("          {f}\n")).collect();
    let socket = format!(
        "    - transport_socket:\n        name: envoy.transport_sockets.tls\n        typed_config:\n          \"@type\": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext\n{fields}      filters:\n"
    );
    errors(&[("    - filters:\n", &socket)])
}

#[test]
fn tls_fields_wasmproxy_does_not_serve_are_refused_by_name() {
    const CONTEXT: &str = "static_resources.listeners[0].filter_chains[0].transport_socket.typed_config";
    let cert = "{ certificate_chain: { filename: c.pem }, private_key: { filename: k.pem } }";
    let certs = format!("common_tls_context: {{ tls_certificates: [{cert}] }}");
    assert_eq!(
        tls_errors(&["require_client_certificate: true", &certs]),
        vec![format!(
            "{CONTEXT}.require_client_certificate: require_client_certificate without a validation_context is not supported by wasmproxy (line 11, column 39)"
        )]
    );
    assert_eq!(
        tls_errors(&["common_tls_context: { validation_context: { match_subject_alt_names: [{ exact: a }] } }"]),
        vec![
            format!(
                "{CONTEXT}.common_tls_context.validation_context: SAN-based verification of peer certificates without trusted CA is insecure and not allowed (trusted_ca is required) (line 11, column 53)"
            ),
            format!("{CONTEXT}.common_tls_context.tls_certificates: a certificate is required (line 11, column 31)"),
        ]
    );
    assert_eq!(
        tls_errors(&["common_tls_context: { tls_certificate_sds_secret_configs: [{ name: nowhere }] }"]),
        vec![format!(
            "{CONTEXT}.common_tls_context.tls_certificate_sds_secret_configs[0].name: unknown secret \"nowhere\" (not in static_resources.secrets, and no sds_config) (line 11, column 70)"
        )]
    );
    let validation = |v: &str| format!("common_tls_context: {{ tls_certificates: [{cert}], {v} }}");
    assert_eq!(
        tls_errors(&[&validation("combined_validation_context: { default_validation_context: {} }")]),
        vec![format!(
            "{CONTEXT}.common_tls_context.combined_validation_context: missing required field \"validation_context_sds_secret_config\" (line 11, column 160)"
        )]
    );
    assert_eq!(
        tls_errors(&[&validation(
            "validation_context: { trusted_ca: { filename: ca.pem } }, validation_context_sds_secret_config: { name: ca }"
        )]),
        vec![format!(
            "{CONTEXT}.common_tls_context: only one of validation_context, validation_context_sds_secret_config may be given (line 11, column 31)"
        )]
    );
    assert_eq!(
        tls_errors(&["session_timeout: 4294967296s", &certs]),
        vec![format!(
            "{CONTEXT}.session_timeout: 4294967296s is too long: a session timeout is less than 4294967296s (line 11, column 28)"
        )]
    );
    assert_eq!(
        tls_errors(&["ocsp_staple_policy: SOMETIMES", &certs]),
        vec![format!(
            "{CONTEXT}.ocsp_staple_policy: unknown value \"SOMETIMES\" (expected one of: LENIENT_STAPLING, STRICT_STAPLING, MUST_STAPLE) (line 11, column 31)"
        )]
    );
    assert_eq!(
        tls_errors(&["session_timeout: -1s", &certs]),
        vec![format!("{CONTEXT}.session_timeout: invalid duration \"-1s\": must not be negative (line 11, column 28)")]
    );
    let params = |p: &str| format!("common_tls_context: {{ tls_params: {{ {p} }}, tls_certificates: [{cert}] }}");
    assert_eq!(
        tls_errors(&[&params("tls_minimum_protocol_version: TLSv1_1")]),
        vec![format!(
            "{CONTEXT}.common_tls_context.tls_params.tls_minimum_protocol_version: TLS 1.0 and 1.1 are not supported by wasmproxy (rustls speaks TLS 1.2 and 1.3) (line 11, column 77)"
        )]
    );
    assert_eq!(
        tls_errors(&[&params("cipher_suites: [ECDHE-RSA-AES128-GCM-SHA256, RC4-MD5], ecdh_curves: [P-256, P-999]")]),
        vec![
            format!(
                "{CONTEXT}.common_tls_context.tls_params.cipher_suites[1]: unknown cipher suite \"RC4-MD5\" (line 11, column 92)"
            ),
            format!(
                "{CONTEXT}.common_tls_context.tls_params.ecdh_curves[1]: unknown curve \"P-999\" (line 11, column 123)"
            ),
        ]
    );
    assert_eq!(
        tls_errors(&[&params("cipher_suites: [AES128-SHA]")]),
        vec![format!(
            "{CONTEXT}.common_tls_context.tls_params.cipher_suites: no cipher suite left that rustls has (line 11, column 62)"
        )]
    );
    assert_eq!(
        tls_errors(&[&format!(
            "common_tls_context: {{ tls_certificates: [{cert}], tls_certificate_sds_secret_configs: [{{ name: s }}] }}"
        )]),
        vec![format!(
            "{CONTEXT}.common_tls_context.tls_certificate_sds_secret_configs[0]: certificates from SDS beside tls_certificates are not supported by wasmproxy (line 11, column 168)"
        )]
    );
}

#[test]
fn route_to_a_missing_cluster() {
    assert_eq!(
        errors(&[("route: { cluster: backend }", "route: { cluster: nowhere }")]),
        vec![format!(
            "{HCM}.route_config.virtual_hosts[0].routes[0].route.cluster: unknown cluster \"nowhere\" (line 18, column 35)"
        )]
    );
}

#[test]
fn bad_duration() {
    assert_eq!(
        errors(&[("connect_timeout: 1s", "connect_timeout: 5")]),
        vec![
            "static_resources.clusters[0].connect_timeout: invalid duration \"5\": expected a number of seconds such as \"1.5s\" (line 32, column 22)"
        ]
    );
    assert_eq!(
        errors(&[("connect_timeout: 1s", "connect_timeout: 0s")]),
        vec!["static_resources.clusters[0].connect_timeout: must be greater than 0s (line 32, column 22)"]
    );
}

#[test]
fn fail_open_with_failure_policy() {
    assert_eq!(
        errors(&[(
            "                name: plugin\n",
            "                fail_open: true\n                failure_policy: FAIL_CLOSED\n"
        )]),
        vec![format!(
            "{PLUGIN}.fail_open: cannot be set together with failure_policy (fail_open is deprecated) (line 24, column 28)"
        )]
    );
}

#[test]
fn bad_enum_values() {
    assert_eq!(
        errors(&[("connect_timeout: 1s", "lb_policy: ROUND_ROBINN")]),
        vec![
            "static_resources.clusters[0].lb_policy: unknown value \"ROUND_ROBINN\" (expected one of: ROUND_ROBIN, LEAST_REQUEST, RING_HASH, RANDOM, MAGLEV) (line 32, column 16)"
        ]
    );
    assert_eq!(
        errors(&[("connect_timeout: 1s", "lb_policy: cluster_provided")]),
        vec![
            "static_resources.clusters[0].lb_policy: CLUSTER_PROVIDED is not supported by wasmproxy (supported: ROUND_ROBIN, LEAST_REQUEST, RING_HASH, RANDOM, MAGLEV) (line 32, column 16)"
        ]
    );
    assert_eq!(
        errors(&[("stat_prefix: web", "stat_prefix: web\n          codec_type: HTTP3")]),
        vec![format!(
            "{HCM}.codec_type: HTTP3 is not supported by wasmproxy (supported: AUTO, HTTP1, HTTP2) (line 12, column 23)"
        )]
    );
}

#[test]
fn router_not_last() {
    let swapped = config(&[]).replace(
        "          - name: envoy.filters.http.router\n            typed_config: { \"@type\": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router }\n",
        "",
    );
    let swapped = swapped.replace(
        "          http_filters:\n",
        "          http_filters:\n          - name: envoy.filters.http.router\n            typed_config: { \"@type\": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router }\n",
    );
    let errors = load_str(&swapped, Path::new(".")).unwrap_err();
    assert_eq!(
        errors.to_string(),
        format!(
            "{HCM}.http_filters[0]: the router (envoy.filters.http.router) must be the last HTTP filter (line 20, column 13)\n\
             {HCM}.http_filters[1]: the last HTTP filter must be the router (envoy.filters.http.router) (line 22, column 13)"
        )
    );
}

#[test]
fn yaml_syntax_error_has_its_line() {
    let errors = load_str(&config(&[("stat_prefix: web", "stat_prefix: [web")]), Path::new(".")).unwrap_err();
    assert_eq!(errors.len(), 1);
    let error = &errors.errors[0];
    assert_eq!(error.path, "");
    assert_eq!(error.line, Some(12));
    assert!(error.message.starts_with("YAML syntax error: "), "{error}");
}

#[test]
fn json_syntax_error_has_its_line() {
    let errors = load_str("{\n  \"admin\": {\n    \"address\" 1\n  }\n}\n", Path::new(".")).unwrap_err();
    assert_eq!(errors.to_string(), "JSON syntax error: expected `:` (line 3, column 15)");
}

#[test]
fn every_error_is_reported() {
    let errors = errors(&[
        ("stat_prefix: web", "statPrefix: web\n          stat_prefix: web2"),
        ("runtime: envoy.wasm.runtime.v8", "runtime: envoy.wasm.runtime.wavm"),
        ("port_value: 9000", "port_value: 70000"),
        ("    connect_timeout: 1s\n", "    connect_timeout: 1s\n    connect_timeout: 2s\n"),
    ]);
    assert_eq!(
        errors,
        vec![
            "static_resources.clusters[0].connect_timeout: duplicate key (line 34, column 5)".to_string(),
            format!("{HCM}.stat_prefix: given twice, as \"statPrefix\" and \"stat_prefix\" (line 12, column 11)"),
            format!(
                "{PLUGIN}.vm_config.runtime: unknown Wasm runtime \"envoy.wasm.runtime.wavm\" (expected one of: envoy.wasm.runtime.v8, envoy.wasm.runtime.wasmtime, envoy.wasm.runtime.wamr, envoy.wasm.runtime.null) (line 27, column 28)"
            ),
            "static_resources.clusters[0].load_assignment.endpoints[0].lb_endpoints[0].endpoint.address.socket_address.port_value: 70000 is out of range (0 to 65535) (line 38, column 84)".to_string(),
        ]
    );
}

#[test]
fn wasm_configuration_errors() {
    assert_eq!(
        errors(&[(
            "                name: plugin\n",
            "                name: plugin\n                configuration: { \"@type\": type.googleapis.com/google.protobuf.Int32Value, value: 3 }\n"
        )]),
        vec![format!(
            "{PLUGIN}.configuration: configuration type google.protobuf.Int32Value is not supported by wasmproxy (use google.protobuf.StringValue, google.protobuf.BytesValue or google.protobuf.Struct) (line 25, column 32)"
        )]
    );
    assert_eq!(
        errors(&[(
            "                  runtime: envoy.wasm.runtime.v8\n",
            "                  runtime: envoy.wasm.runtime.v8\n                  environment_variables: { key_values: { HOME: x }, host_env_keys: [HOME] }\n"
        )]),
        vec![format!(
            "{PLUGIN}.vm_config.environment_variables.host_env_keys[0]: key \"HOME\" is duplicated: all environment variable keys must be unique (line 27, column 85)"
        )]
    );
    assert_eq!(
        errors(&[(
            "                name: plugin\n",
            "                name: plugin\n                capability_restriction_config: {}\n"
        )]),
        vec![format!("{PLUGIN}.capability_restriction_config: not supported by wasmproxy (line 25, column 17)")]
    );
}

#[test]
fn unsupported_filter_types() {
    assert_eq!(
        errors(&[(
            "\"@type\": type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
            "\"@type\": type.googleapis.com/envoy.extensions.filters.http.lua.v3.Lua"
        )]),
        vec![format!(
            "{HCM}.http_filters[0].typed_config.@type: HTTP filter type envoy.extensions.filters.http.lua.v3.Lua is not supported by wasmproxy (line 22, column 24)"
        )]
    );
}

#[test]
fn cross_checks() {
    assert_eq!(
        errors(&[
            ("  - name: backend\n", "  - name: backend\n    type: STATIC\n"),
            ("address: 127.0.0.1, port_value: 9000", "address: backend.local, port_value: 9000"),
        ]),
        vec![
            "static_resources.clusters[0].load_assignment.endpoints[0].lb_endpoints[0].endpoint.address.socket_address.address: \"backend.local\" is not an IP address (line 37, column 61)"
        ]
    );
    let mut text = config(&[]);
    text.push_str("  - name: backend\n  listeners_extra: 1\n");
    let errors = load_str(&text, Path::new(".")).unwrap_err().to_string();
    assert_eq!(
        errors,
        "static_resources.listeners_extra: unknown field (line 38, column 3)\n\
         static_resources.clusters[1].name: duplicate cluster name \"backend\" (first at static_resources.clusters[0].name) (line 37, column 11)"
    );
}

#[test]
fn listener_address_conflicts_and_terminal_filters() {
    let second_listener = r#"  - name: other
    address:
      socket_address: { address: 0.0.0.0, port_value: 8080 }
    filter_chains:
      filters:
      - name: tcp
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
          stat_prefix: tcp
          cluster: backend
      - name: wasm
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.wasm.v3.Wasm
          config: { vm_config: { code: { local: { inline_bytes: AGFzbQ== } } } }
  clusters:
"#;
    let text = config(&[("  clusters:\n", second_listener)]);
    let errors = load_str(&text, Path::new(".")).unwrap_err().to_string();
    assert_eq!(
        errors,
        "static_resources.listeners[1].filter_chains[0].filters[0]: a terminal filter (http_connection_manager, tcp_proxy) must be the last filter (line 35, column 9)\n\
         static_resources.listeners[1].filter_chains[0].filters[1]: the last filter must be a terminal filter (http_connection_manager or tcp_proxy) (line 40, column 9)\n\
         static_resources.listeners[1].address: 0.0.0.0:8080 conflicts with 127.0.0.1:8080 at static_resources.listeners[0].address (line 32, column 7)"
    );
}

#[test]
fn missing_file() {
    let errors = load_file(Path::new("/nonexistent/envoy.yaml")).unwrap_err().to_string();
    assert_eq!(errors, "cannot read /nonexistent/envoy.yaml: No such file or directory (os error 2)");
}

#[test]
fn node_identity_loads_and_its_other_fields_are_refused() {
    let text = format!(
        "node:\n  id: n1\n  cluster: c1\n  metadata: {{ team: edge, replicas: 3, canary: true, tags: [a] }}\n  locality: {{ region: eu }}\n{BASE}"
    );
    let bootstrap = load_str(&text, Path::new("/etc/wasmproxy")).unwrap();
    let node = &bootstrap.node;
    assert_eq!((node.id.as_str(), node.cluster.as_str(), node.locality.region.as_str()), ("n1", "c1", "eu"));
    use wasmproxy_config::StructValue as V;
    assert_eq!(
        node.metadata,
        vec![
            ("team".into(), V::String("edge".into())),
            ("replicas".into(), V::Number(3.0)),
            ("canary".into(), V::Bool(true)),
            ("tags".into(), V::List(vec![V::String("a".into())])),
        ]
    );
    let bad = format!("node:\n  id: n1\n  user_agent_name: mine\n  locality: {{ planet: earth }}\n{BASE}");
    let errors = load_str(&bad, Path::new("/etc/wasmproxy")).unwrap_err().to_string();
    assert_eq!(
        errors.lines().collect::<Vec<_>>(),
        vec![
            "node.locality.planet: unknown field (line 4, column 15)",
            "node.user_agent_name: not supported by wasmproxy (line 3, column 3)",
        ]
    );
}

#[test]
fn listener_buffer_limit() {
    let with = |line: &str| config(&[("  - name: web\n", &format!("  - name: web\n    {line}\n"))]);
    let load = |text: String| load_str(&text, Path::new("/etc/wasmproxy")).map(|b| b.listeners[0].buffer_limit_bytes);
    assert_eq!(load(BASE.to_owned()).unwrap(), 1 << 20, "Envoy's default");
    assert_eq!(load(with("per_connection_buffer_limit_bytes: 32768")).unwrap(), 32768);
    assert_eq!(load(with("perConnectionBufferLimitBytes: \"0\"")).unwrap(), 0);
    let Err(errors) = load(with("per_connection_buffer_limit_bytes: 5000000000")) else { panic!("loaded") };
    assert_eq!(
        errors.to_string(),
        "static_resources.listeners[0].per_connection_buffer_limit_bytes: 5000000000 is out of range (0 to 4294967295) \
         (line 4, column 40)"
    );
}

#[test]
fn bad_stats_tags_and_metadata() {
    let stats = "stats_config:\n  stats_tags:\n  - { tag_name: a, regex: '(unclosed' }\n  - { tag_name: b, regex: 'no_group' }\n  - { tag_name: a, fixed_value: x }\n  - { tag_name: c }\n  stats_matcher: { reject_all: true }\nstatic_resources:\n";
    let got = errors(&[("static_resources:\n", stats)]);
    assert_eq!(
        got,
        [
            "stats_config.stats_tags[0].regex: invalid regex: unclosed group (line 3, column 27)",
            "stats_config.stats_tags[1].regex: needs a capture group (the part of the name to cut; a second one is the value) (line 4, column 27)",
            "stats_config.stats_tags[2]: tag name \"a\" is given twice (line 5, column 5)",
            "stats_config.stats_tags[3]: one of regex or fixed_value is required (line 6, column 5)",
            "stats_config.stats_matcher: not supported by wasmproxy (line 7, column 3)",
        ]
    );
    assert_eq!(
        errors(&[(
            "route: { cluster: backend }",
            "route: { cluster: backend }\n                metadata: { typed_filter_metadata: { x: { \"@type\": type.googleapis.com/google.protobuf.StringValue, value: v } } }"
        )]),
        vec![format!(
            "{HCM}.route_config.virtual_hosts[0].routes[0].metadata.typed_filter_metadata.x: metadata of type \
             google.protobuf.StringValue is not supported by wasmproxy (use google.protobuf.Struct) (line 19, column 57)"
        )]
    );
}

#[test]
fn filter_chains_that_match_the_same_connections_are_refused() {
    // A second chain for the same server name as the first (one name of two in common).
    let second = "    - filter_chain_match: { server_names: [b.example, a.example] }\n      filters:\n      \
                  - name: envoy.filters.network.tcp_proxy\n        typed_config:\n          \
                  \"@type\": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy\n          \
                  stat_prefix: t\n          cluster: backend\n  clusters:\n";
    let first = "    - filter_chain_match: { server_names: [a.example, '*.w.example'] }\n      filters:\n";
    assert_eq!(
        errors(&[("    - filters:\n", first), ("  clusters:\n", second)]),
        vec![
            "static_resources.listeners[0].filter_chains[1]: its filter_chain_match has the same matching rules as \
             static_resources.listeners[0].filter_chains[0] (Envoy refuses a listener whose chains match the same \
             connections) (line 31, column 7)"
        ]
    );
    // Different names, or the same name on another port, are distinct.
    let other = second.replace("b.example, a.example", "c.example");
    let loads = |changes: &[(&str, &str)]| load_str(&config(changes), Path::new(".")).map(drop);
    assert_eq!(loads(&[("    - filters:\n", first), ("  clusters:\n", &other)]), Ok(()));
    let other_port = second.replace("{ server_names", "{ destination_port: 8443, server_names");
    assert_eq!(loads(&[("    - filters:\n", first), ("  clusters:\n", &other_port)]), Ok(()));
}

#[test]
fn filter_chain_match_and_listener_filter_mistakes_are_named() {
    const CHAIN: &str = "static_resources.listeners[0].filter_chains[0]";
    let matching =
        |m: &str| errors(&[("    - filters:\n", &format!("    - filter_chain_match: {{ {m} }}\n      filters:\n"))]);
    assert_eq!(
        matching("server_names: ['w*.example.com']"),
        vec![format!(
            "{CHAIN}.filter_chain_match.server_names[0]: \"w*.example.com\": partial wildcards are not supported (only \"*.\" before whole labels) (line 7, column 44)"
        )]
    );
    assert_eq!(
        matching("prefix_ranges: [{ address_prefix: 10.0.0.0, prefix_len: 33 }]"),
        vec![format!(
            "{CHAIN}.filter_chain_match.prefix_ranges[0].prefix_len: 33 is longer than the address 10.0.0.0 (line 7, column 45)"
        )]
    );
    assert_eq!(
        matching("destination_port: 0, address_suffix: x"),
        vec![
            format!("{CHAIN}.filter_chain_match.destination_port: must be 1 to 65535 (line 7, column 47)"),
            format!("{CHAIN}.filter_chain_match.address_suffix: not supported by wasmproxy (line 7, column 50)"),
        ]
    );
    let listener_filter = "    listener_filters:\n    - name: envoy.filters.listener.http_inspector\n      typed_config:\n        \
                           \"@type\": type.googleapis.com/envoy.extensions.filters.listener.http_inspector.v3.HttpInspector\n    \
                           filter_chains:\n";
    assert_eq!(
        errors(&[("    filter_chains:\n", listener_filter)]),
        vec![
            "static_resources.listeners[0].listener_filters[0].typed_config.@type: listener filter type \
             envoy.extensions.filters.listener.http_inspector.v3.HttpInspector is not supported by wasmproxy (line 9, column 18)"
        ]
    );
}

#[test]
fn an_auto_sni_header_must_be_a_header_name() {
    let options = "    typed_extension_protocol_options:\n      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:\n        \
                   \"@type\": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions\n        \
                   upstream_http_protocol_options: { auto_sni: true, override_auto_sni_header: \"X Sni\" }\n        \
                   explicit_http_config: { http_protocol_options: {} }\n    connect_timeout: 1s\n";
    let errors = errors(&[("    connect_timeout: 1s\n", options)]);
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0].starts_with(
            "static_resources.clusters[0].typed_extension_protocol_options.envoy.extensions.upstreams.http.v3.HttpProtocolOptions.upstream_http_protocol_options.override_auto_sni_header: must be a lowercase header name"
        ),
        "{errors:?}"
    );
}

#[test]
fn route_header_mutations_are_checked() {
    let vhost = "              domains: [\"*\"]\n";
    let at = format!("{HCM}.route_config.virtual_hosts[0].");
    // The one error for `fields` added to the virtual host: its path (after the virtual
    // host's), its message, on the line the fields are.
    let check = |fields: &str, path: &str, message: &str| {
        let e = errors(&[(vhost, &format!("{vhost}              {fields}\n"))]);
        assert_eq!(e.len(), 1, "{e:?}");
        let expected = format!("{at}{path}: {message} (line 16, column");
        assert!(e[0].starts_with(&expected), "{}\nexpected {expected}", e[0]);
    };
    check(
        "request_headers_to_add: [{ header: { key: Host, value: x } }]",
        "request_headers_to_add[0].header.key",
        ":-prefixed or host headers may not be modified",
    );
    check(
        "response_headers_to_remove: [\":status\"]",
        "response_headers_to_remove[0]",
        ":-prefixed or host headers may not be removed",
    );
    check(
        "response_headers_to_add: [{ header: { key: x, value: \"50% off\" } }]",
        "response_headers_to_add[0].header.value",
        "\"50% off\": no command operator at byte 2 (a literal % is written %%)",
    );
    check(
        "response_headers_to_add: [{ header: { key: x, value: \"%NOPE%\" } }]",
        "response_headers_to_add[0].header.value",
        "\"%NOPE%\": the command operator %NOPE% is not supported by wasmproxy",
    );
    check(
        "request_headers_to_add: [{ header: { key: x, value: y }, append: true, append_action: ADD_IF_ABSENT }]",
        "request_headers_to_add[0].append_action",
        "Both append and append_action are set and it's not allowed",
    );
    check(
        "request_headers_to_add: [{ header: { key: x, raw_value: eA== } }]",
        "request_headers_to_add[0].header.raw_value",
        "not used by route header mutations (Envoy adds nothing for it); use value",
    );
}

#[test]
fn retry_policies_are_checked() {
    let route = "route: { cluster: backend }";
    let with = |policy: &str| errors(&[(route, &format!("route: {{ cluster: backend, retry_policy: {policy} }}"))]);
    let at = format!("{HCM}.route_config.virtual_hosts[0].routes[0].route.retry_policy");
    let e = with("{ retry_on: \"5xx,sometimes\" }");
    assert!(
        e[0].starts_with(&format!("{at}.retry_on: \"sometimes\" is not a retry condition wasmproxy knows")),
        "{e:?}"
    );
    let e = with("{ retry_on: 5xx, retry_back_off: { base_interval: 1s, max_interval: 0.5s } }");
    assert!(
        e[0].starts_with(&format!("{at}.retry_back_off.max_interval: must not be less than base_interval")),
        "{e:?}"
    );
    let e = with(
        "{ retry_on: 5xx, retry_host_predicate: [{ name: x, typed_config: { \"@type\": type.googleapis.com/envoy.extensions.retry.host.omit_canary_hosts.v3.OmitCanaryHostsPredicate } }] }",
    );
    assert!(e[0].contains("retry host predicate envoy.extensions.retry.host.omit_canary_hosts.v3.OmitCanaryHostsPredicate is not supported by wasmproxy"), "{e:?}");
    let e = with("{ retry_on: 5xx, rate_limited_retry_back_off: { reset_headers: [{ name: x }] } }");
    assert!(e[0].starts_with(&format!("{at}.rate_limited_retry_back_off: not supported by wasmproxy")), "{e:?}");
    let good = config(&[(
        route,
        "route: { cluster: backend, retry_policy: { retry_on: \"connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes\", num_retries: 2, retriable_status_codes: [503], per_try_timeout: 1s, retry_host_predicate: [{ name: envoy.retry_host_predicates.previous_hosts, typed_config: { \"@type\": type.googleapis.com/envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate } }], host_selection_retry_max_attempts: 3 } }",
    )]);
    load_str(&good, Path::new("/etc/wasmproxy")).unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn filters_turned_off_per_route() {
    let route = "route: { cluster: backend }";
    let with = |entry: &str| {
        errors(&[(route, &format!("{route}\n                typed_per_filter_config: {{ plugin: {entry} }}"))])
    };
    let at = format!("{HCM}.route_config.virtual_hosts[0].routes[0].typed_per_filter_config.plugin");
    let filter_config = "\"@type\": type.googleapis.com/envoy.config.route.v3.FilterConfig";
    let e = with(&format!("{{ {filter_config} }}"));
    assert!(
        e[0].starts_with(&format!("{at}: Empty route/virtual host per filter configuration for plugin filter")),
        "{e:?}"
    );
    let e = with(&format!(
        "{{ {filter_config}, disabled: true, config: {{ \"@type\": type.googleapis.com/google.protobuf.Empty }} }}"
    ));
    assert!(e[0].contains("the filter plugin doesn't support virtual host or route specific configurations"), "{e:?}");
    let e = with("{ \"@type\": type.googleapis.com/envoy.extensions.filters.http.lua.v3.LuaPerRoute, disabled: true }");
    assert!(
        e[0].contains("per-route configuration envoy.extensions.filters.http.lua.v3.LuaPerRoute is not supported"),
        "{e:?}"
    );
    let good = config(&[(
        route,
        &format!(
            "{route}\n                typed_per_filter_config: {{ plugin: {{ {filter_config}, disabled: true }} }}"
        ),
    )]);
    load_str(&good, Path::new("/etc/wasmproxy")).unwrap_or_else(|e| panic!("{e}"));

    // An optional filter wasmproxy lacks is skipped with a warning; one not optional is refused.
    let compressor = "          - name: authz\n            is_optional: true\n            typed_config: { \"@type\": type.googleapis.com/envoy.extensions.filters.http.lua.v3.Lua }\n          - name: envoy.filters.http.router\n";
    let optional = config(&[("          - name: envoy.filters.http.router\n", compressor)]);
    let (_, warnings) = wasmproxy_config::load_str_with_warnings(&optional, Path::new("/etc/wasmproxy"))
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        warnings
            .iter()
            .any(|w| w.to_string().contains("optional filter \"authz\" is not supported by wasmproxy: skipped")),
        "{warnings:?}"
    );
    let required = errors(&[(
        "          - name: envoy.filters.http.router\n",
        &compressor.replace("            is_optional: true\n", ""),
    )]);
    assert!(required[0].contains("Lua is not supported by wasmproxy"), "{required:?}");
}

#[test]
fn native_filter_errors() {
    let router = "          - name: envoy.filters.http.router\n";
    let filter = |type_name: &str, body: &str| {
        errors(&[(
            router,
            &format!(
                "          - name: native\n            typed_config:\n              \"@type\": type.googleapis.com/envoy.extensions.filters.http.{type_name}\n{body}{router}"
            ),
        )])
    };
    let at = format!("{HCM}.http_filters[1].typed_config");
    let limit = "local_ratelimit.v3.LocalRateLimit";
    let e = filter(
        limit,
        "              stat_prefix: rl\n              token_bucket: { max_tokens: 1, fill_interval: 0.01s }\n",
    );
    assert_eq!(
        e,
        vec![format!(
            "{at}.token_bucket.fill_interval: local rate limit token bucket fill timer must be >= 50ms (line 32, column 29)"
        )]
    );
    let e = filter(
        limit,
        "              stat_prefix: rl\n              local_rate_limit_per_downstream_connection: true\n",
    );
    assert!(e[0].contains("local_rate_limit_per_downstream_connection: not supported by wasmproxy"), "{e:?}");
    let e = filter(limit, "              stat_prefix: rl\n              rate_limits: []\n");
    assert!(e[0].starts_with(&format!("{at}.rate_limits: not supported by wasmproxy")), "{e:?}");
    let descriptor = |value: &str, every: &str| {
        format!(
            "              - {{ entries: [{{ key: k, value: {value} }}], token_bucket: {{ max_tokens: 1, fill_interval: {every} }} }}\n"
        )
    };
    let e = filter(
        limit,
        &format!(
            "              stat_prefix: rl\n              descriptors:\n{}{}",
            descriptor("a", "1s"),
            descriptor("a", "2s")
        ),
    );
    assert!(e[0].contains("duplicate descriptor in the local rate descriptor: k=a"), "{e:?}");
    let e = filter(
        limit,
        &format!("              stat_prefix: rl\n              descriptors:\n{}", descriptor("a", "0.01s")),
    );
    assert!(e[0].contains("local rate limit descriptor token bucket fill timer must be >= 50ms"), "{e:?}");
    let e = filter(limit, "              token_bucket: { max_tokens: 0, fill_interval: 1s }\n");
    assert!(e.iter().any(|l| l.contains("missing required field \"stat_prefix\"")), "{e:?}");
    assert!(e.iter().any(|l| l.contains("max_tokens: must be greater than 0")), "{e:?}");

    let compressor = "compressor.v3.Compressor";
    let library = |type_name: &str, settings: &str| {
        format!(
            "              compressor_library:\n                name: text\n                typed_config:\n                  \"@type\": type.googleapis.com/envoy.extensions.compression.{type_name}\n{settings}"
        )
    };
    let e = filter(compressor, &library("lz4.compressor.v3.Lz4", ""));
    assert!(
        e[0].contains("compressor library type envoy.extensions.compression.lz4.compressor.v3.Lz4 is not supported"),
        "{e:?}"
    );
    let e = filter(compressor, &library("gzip.compressor.v3.Gzip", "                  window_bits: 20\n"));
    assert!(e[0].contains("window_bits: must be between 9 and 15"), "{e:?}");
    let e = filter(
        compressor,
        &(library("gzip.compressor.v3.Gzip", "")
            + "              response_direction_config: { status_header_enabled: true }\n"),
    );
    assert!(e[0].contains("status_header_enabled: not supported by wasmproxy"), "{e:?}");
    let e = filter(compressor, "              choose_first: true\n");
    assert!(e[0].contains("missing required field \"compressor_library\""), "{e:?}");

    let authz = "ext_authz.v3.ExtAuthz";
    let e = filter(authz, "              failure_mode_allow: true\n");
    assert!(e[0].contains("one of grpc_service or http_service is required"), "{e:?}");
    let grpc = "              grpc_service: { envoy_grpc: { cluster_name: authz } }\n";
    let e = filter(authz, grpc);
    assert!(e[0].contains("grpc_service.envoy_grpc.cluster_name: unknown cluster \"authz\""), "{e:?}");
    let grpc = "              grpc_service: { envoy_grpc: { cluster_name: backend } }\n";
    let e = filter(authz, &format!("{grpc}              transport_api_version: V2\n"));
    assert!(e[0].contains("transport_api_version: V2 is not supported (use V3)"), "{e:?}");
    let e = filter(authz, &format!("{grpc}              include_peer_certificate: true\n"));
    assert!(e[0].contains("include_peer_certificate: not supported by wasmproxy (only false)"), "{e:?}");
    let http = "              http_service:\n                server_uri: { uri: x, cluster: backend, timeout: 1s }\n";
    let e = filter(
        authz,
        &format!(
            "{http}                authorization_request: {{ allowed_headers: {{ patterns: [{{ exact: a }}] }} }}\n              allowed_headers: {{ patterns: [{{ exact: b }}] }}\n"
        ),
    );
    assert!(e[0].contains("Invalid duplicate configuration for allowed_headers."), "{e:?}");
    let e = filter(
        authz,
        &format!(
            "{http}                authorization_request: {{ headers_to_add: [{{ key: x, value: \"%START_TIME%\" }}] }}\n"
        ),
    );
    assert!(e[0].contains("substitution formats are not supported by wasmproxy here"), "{e:?}");

    let rbac = "rbac.v3.RBAC";
    let e = filter(
        rbac,
        "              rules: { policies: { p: { permissions: [{ destination_port_range: { start: 10, end: 5 } }], principals: [{ any: true }] } } }\n",
    );
    assert!(e[0].contains("range start 10 cannot be greater or equal than range end 5"), "{e:?}");
    let e =
        filter(rbac, "              rules: { policies: { p: { permissions: [{ any: true }], principals: [] } } }\n");
    assert!(e[0].contains("a policy needs at least one permission and one principal"), "{e:?}");
    let e = filter(
        rbac,
        "              rules: { policies: { p: { permissions: [{ metadata: {} }], principals: [{ any: true }] } } }\n",
    );
    assert!(e.iter().any(|l| l.contains("permissions[0].metadata: not supported by wasmproxy")), "{e:?}");
    let e = filter(
        rbac,
        "              matcher: { matcher_list: { matchers: [{ predicate: { single_predicate: { input: { name: i, typed_config: { \"@type\": type.googleapis.com/envoy.type.matcher.v3.HttpResponseHeaderMatchInput, header_name: a } }, value_match: { exact: b } } }, on_match: { action: { name: a, typed_config: { \"@type\": type.googleapis.com/envoy.config.rbac.v3.Action, name: n } } } }] } }\n",
    );
    assert!(
        e[0].contains("RBAC HTTP filter cannot match on 'envoy.type.matcher.v3.HttpResponseHeaderMatchInput'"),
        "{e:?}"
    );

    let fault = "fault.v3.HTTPFault";
    let e = filter(fault, "              abort: { http_status: 700 }\n");
    assert!(e[0].contains("abort.http_status: must be at least 200 and below 600"), "{e:?}");
    let e = filter(fault, "              delay: { percentage: { numerator: 5 } }\n");
    assert!(e[0].contains("one of fixed_delay or header_delay is required"), "{e:?}");
    let e = filter(fault, "              response_rate_limit: { fixed_limit: { limit_kbps: 1 } }\n");
    assert!(e[0].contains("response_rate_limit: not supported by wasmproxy"), "{e:?}");

    let e = filter("buffer.v3.Buffer", "              max_request_bytes: 0\n");
    assert!(e[0].contains("max_request_bytes: must be greater than 0"), "{e:?}");
    let e = filter(
        authz,
        &format!("{grpc}              with_request_body: {{ max_request_bytes: 10, allow_partial_message: true }}\n"),
    );
    assert!(e[0].contains("allow_partial_message: not supported by wasmproxy"), "{e:?}");

    let mutation = "header_mutation.v3.HeaderMutation";
    let e = filter(
        mutation,
        "              mutations: { request_mutations: [{ append: { header: { key: \":path\", value: x } } }] }\n",
    );
    assert!(e[0].contains(":-prefixed or host headers may not be modified"), "{e:?}");
    let e = filter(mutation, "              mutations: { query_parameter_mutations: [] }\n");
    assert!(e[0].contains("query_parameter_mutations: not supported by wasmproxy"), "{e:?}");

    let limit = "ratelimit.v3.RateLimit";
    let e = filter(limit, "              domain: d\n");
    assert!(e[0].contains("missing required field \"rate_limit_service\""), "{e:?}");
    let e = filter(
        limit,
        "              domain: d\n              request_type: sometimes\n              rate_limit_service: { grpc_service: { envoy_grpc: { cluster_name: backend } } }\n",
    );
    assert!(e[0].contains("\"sometimes\" is not one of internal, external, both"), "{e:?}");
    let e = errors(&[(
        "route: { cluster: backend }",
        "route: { cluster: backend, rate_limits: [{ actions: [{ query_parameters: {} }] }] }",
    )]);
    assert!(e[0].contains("actions[0].query_parameters: not supported by wasmproxy"), "{e:?}");

    let check = "health_check.v3.HealthCheck";
    let e = filter(check, "              headers: []\n");
    assert!(e[0].contains("missing required field \"pass_through_mode\""), "{e:?}");
    let e = filter(check, "              pass_through_mode: false\n              cache_time: 5s\n");
    assert!(e[0].contains("cache_time: not supported by wasmproxy"), "{e:?}");

    let route = "route: { cluster: backend }";
    let per_route = |entry: &str| {
        errors(&[(route, &format!("{route}\n                typed_per_filter_config: {{ native: {entry} }}"))])
    };
    let e = per_route(
        "{ \"@type\": type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit, stat_prefix: r }",
    );
    assert!(e[0].contains("local rate limit token bucket must be set for per filter configs"), "{e:?}");
    let e = per_route(
        "{ \"@type\": type.googleapis.com/envoy.extensions.filters.http.compressor.v3.CompressorPerRoute, disabled: false }",
    );
    assert!(e[0].contains("disabled: must be true"), "{e:?}");
    let e = per_route(
        "{ \"@type\": type.googleapis.com/envoy.extensions.filters.http.cors.v3.CorsPolicy, allow_origin_string_match: [{ safe_regex: { regex: \"(\" } }] }",
    );
    assert!(e[0].contains("allow_origin_string_match[0].safe_regex"), "{e:?}");
    let authz_route = "\"@type\": type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthzPerRoute";
    let e = per_route(&format!("{{ {authz_route}, disabled: false }}"));
    assert!(e[0].contains("disabled: must be true (or give check_settings)"), "{e:?}");
    let e = per_route(&format!("{{ {authz_route}, check_settings: {{ grpc_service: {{}} }} }}"));
    assert!(e[0].contains("check_settings.grpc_service: not supported by wasmproxy"), "{e:?}");
    let e = per_route("{ \"@type\": type.googleapis.com/envoy.extensions.filters.http.buffer.v3.BufferPerRoute }");
    assert!(e[0].contains("one of disabled or buffer is required"), "{e:?}");
}

#[test]
fn load_balancing_and_health_errors() {
    let cluster = |extra: &str| errors(&[("    connect_timeout: 1s\n", &format!("    connect_timeout: 1s\n{extra}"))]);
    assert_eq!(
        cluster(
            "    health_checks: [{ interval: 1s, unhealthy_threshold: 1, healthy_threshold: 1, tcp_health_check: {} }]\n"
        ),
        vec!["static_resources.clusters[0].health_checks[0]: missing required field \"timeout\" (line 33, column 21)"]
    );
    assert_eq!(
        cluster(
            "    health_checks: [{ timeout: 1s, interval: 1s, unhealthy_threshold: 1, healthy_threshold: 1,\n      \
             http_health_check: { path: /h, expected_statuses: [{ start: 300, end: 200 }] } }]\n"
        ),
        vec![
            "static_resources.clusters[0].health_checks[0].http_health_check.expected_statuses[0]: [300, 200) is not a range of HTTP status codes (line 34, column 58)"
        ]
    );
    assert_eq!(
        cluster("    outlier_detection: { base_ejection_time: 60s, max_ejection_time: 30s }\n"),
        vec![
            "static_resources.clusters[0].outlier_detection: base_ejection_time must not be larger than max_ejection_time (line 33, column 24)"
        ]
    );
    assert_eq!(
        cluster("    lb_policy: MAGLEV\n    maglev_lb_config: { table_size: 65536 }\n"),
        vec!["static_resources.clusters[0].maglev_lb_config.table_size: must be a prime number (line 34, column 37)"]
    );
    assert_eq!(
        cluster("    outlier_detection: { monitors: [] }\n"),
        vec![
            "static_resources.clusters[0].outlier_detection.monitors: not supported by wasmproxy (line 33, column 26)"
        ]
    );
    assert_eq!(
        errors(&[("endpoint: { address", "load_balancing_weight: 0\n          endpoint: { address")]),
        vec![
            "static_resources.clusters[0].load_assignment.endpoints[0].lb_endpoints[0].load_balancing_weight: must be at least 1 (line 36, column 34)"
        ]
    );
}

#[test]
fn tracing_errors() {
    let with = |tracing: &str| {
        let changed = config(&[("          stat_prefix: web\n", &format!("          stat_prefix: web\n{tracing}"))]);
        match load_str(&changed, Path::new("/etc/wasmproxy")) {
            Ok(bootstrap) => Ok(bootstrap),
            Err(e) => Err(e.to_string()),
        }
    };
    let zipkin = |fields: &str| {
        format!(
            "          tracing:\n            provider:\n              name: envoy.tracers.zipkin\n              typed_config:\n                \"@type\": type.googleapis.com/envoy.config.trace.v3.ZipkinConfig\n{fields}"
        )
    };
    let e = with(&zipkin(
        "                collector_cluster: backend\n                collector_endpoint: /api/v2/spans\n",
    ))
    .unwrap_err();
    assert!(e.contains("collector_endpoint_version: required: HTTP_JSON"), "{e}");
    let e = with(&zipkin(
        "                collector_cluster: nosuch\n                collector_endpoint: /s\n                collector_endpoint_version: GRPC\n",
    ))
    .unwrap_err();
    assert!(e.contains("collector_endpoint_version: must be HTTP_JSON"), "{e}");
    assert!(e.contains("nosuch"), "{e}");
    let e = with("          tracing: { verbose: true, random_sampling: { value: 101 } }\n").unwrap_err();
    assert!(e.contains("tracing.verbose: not supported by wasmproxy"), "{e}");
    assert!(e.contains("random_sampling.value: must be between 0 and 100"), "{e}");
    let e = with("          tracing: { provider: { name: x, typed_config: { \"@type\": type.googleapis.com/envoy.config.trace.v3.DatadogConfig } } }\n").unwrap_err();
    assert!(e.contains("tracer type envoy.config.trace.v3.DatadogConfig is not supported by wasmproxy"), "{e}");
    let otel = "          tracing:\n            provider:\n              name: envoy.tracers.opentelemetry\n              typed_config:\n                \"@type\": type.googleapis.com/envoy.config.trace.v3.OpenTelemetryConfig\n                grpc_service: { envoy_grpc: { cluster_name: backend } }\n                http_service: { http_uri: { uri: \"http://c/v1/traces\", cluster: backend, timeout: 1s } }\n";
    let e = with(otel).unwrap_err();
    assert!(e.contains("only one of grpc_service, http_service may be given"), "{e}");
    let formatted =
        otel.replace("                grpc_service: { envoy_grpc: { cluster_name: backend } }\n", "").replace(
            "timeout: 1s } }",
            "timeout: 1s }, request_headers_to_add: [{ header: { key: x-k, value: \"%REQ(x)%\" } }] }",
        );
    let e = with(&formatted).unwrap_err();
    assert!(e.contains("request_headers_to_add[0]: only literal values are supported by wasmproxy here"), "{e}");

    let good = with(&zipkin(
        "                collector_cluster: backend\n                collector_endpoint: /api/v2/spans\n                collector_endpoint_version: HTTP_JSON\n            random_sampling: { value: 12.5 }\n",
    ))
    .unwrap_or_else(|e| panic!("{e}"));
    let wasmproxy_config::NetworkFilter::HttpConnectionManager(hcm) = &good.listeners[0].filter_chains[0].filters[0]
    else {
        panic!("not a connection manager")
    };
    let tracing = hcm.tracing.as_ref().unwrap();
    assert_eq!((tracing.random_sampling, tracing.client_sampling, tracing.max_path_tag_length), (1250, 10_000, 256));
}
