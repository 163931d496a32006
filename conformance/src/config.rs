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
