//! Pieces of Envoy YAML both harnesses build their configs from.

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
