//! Real-looking configs from tests/fixtures load into the expected model, with Envoy's defaults.

use std::path::{Path, PathBuf};
use std::time::Duration;

use wasmproxy_config::struct_value::encode_struct;
use wasmproxy_config::*;

fn string(s: &str) -> StructValue {
    StructValue::String(s.into())
}

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn load(name: &str) -> (Bootstrap, Vec<String>) {
    match load_file_with_warnings(&fixtures().join(name)) {
        Ok((bootstrap, warnings)) => (bootstrap, warnings.iter().map(ToString::to_string).collect()),
        Err(errors) => panic!("{name} did not load:\n{errors}"),
    }
}

fn addr(address: &str, port: u16) -> SocketAddress {
    SocketAddress { address: address.into(), port }
}

fn endpoint(address: &str, port: u16) -> Endpoint {
    Endpoint::at(addr(address, port))
}

fn hcm(listener: &Listener) -> &HttpConnectionManager {
    match &listener.filter_chains[0].filters[..] {
        [NetworkFilter::HttpConnectionManager(hcm)] => hcm,
        other => panic!("not a single HTTP connection manager: {other:?}"),
    }
}

fn wasm(filter: &HttpFilter) -> &WasmPlugin {
    match filter {
        HttpFilter::Wasm(plugin) => plugin,
        other => panic!("not a Wasm filter: {other:?}"),
    }
}

fn forward(cluster: &str, timeout: Option<Duration>) -> RouteAction {
    RouteAction::Forward(ForwardAction {
        cluster: cluster.into(),
        prefix_rewrite: None,
        host_rewrite_literal: None,
        timeout,
        ..Default::default()
    })
}

#[test]
fn rust_sdk_example_shape() {
    let (bootstrap, warnings) = load("sdk_http_headers.yaml");
    assert_eq!(warnings, Vec::<String>::new());
    assert_eq!(bootstrap.admin, None);
    assert_eq!(bootstrap.listeners.len(), 1, "a single mapping is a list of one");
    let listener = &bootstrap.listeners[0];
    assert_eq!(listener.name, "listener_0");
    assert_eq!(listener.address, addr("0.0.0.0", 10000));

    let hcm = hcm(listener);
    assert_eq!(hcm.stat_prefix, "ingress_http");
    assert_eq!(hcm.codec_type, CodecType::Auto);
    assert_eq!(hcm.server_name, "envoy");
    assert_eq!(hcm.request_headers_timeout, None);
    assert_eq!(hcm.stream_idle_timeout, Some(Duration::from_secs(300)));
    assert_eq!(hcm.idle_timeout, Some(Duration::from_secs(3600)));
    assert_eq!(
        hcm.route_config,
        RouteConfig {
            name: "local_routes".into(),
            virtual_hosts: vec![VirtualHost {
                name: "local_service".into(),
                domains: vec!["*".into()],
                routes: vec![Route {
                    name: String::new(),
                    matcher: RouteMatch {
                        path: PathMatch::Prefix("/".into()),
                        case_sensitive: true,
                        headers: vec![],
                        query_parameters: vec![],
                        grpc: false,
                    },
                    action: forward("httpbin", Some(Duration::from_secs(15))),
                    metadata: Metadata::default(),
                    headers: Default::default(),
                    filter_overrides: vec![],
                    decorator: None,
                }],
                metadata: Metadata::default(),
                headers: Default::default(),
                retry_policy: None,
                filter_overrides: vec![],
                cors: None,
                rate_limits: vec![],
                include_request_attempt_count: false,
                include_attempt_count_in_response: false,
            }],
            ..Default::default()
        }
    );
    assert_eq!(hcm.http_filters.len(), 2);
    assert_eq!(
        *wasm(&hcm.http_filters[0]),
        WasmPlugin {
            name: "http_headers".into(),
            root_id: String::new(),
            vm: WasmVm {
                vm_id: String::new(),
                runtime: "envoy.wasm.runtime.v8".into(),
                code: WasmCode::File("plugins/proxy_wasm_example_http_headers.wasm".into()),
                configuration: vec![],
                environment: vec![],
            },
            configuration: b"x-hello=world\nx-served-by=wasmproxy\n".to_vec(),
            failure_policy: FailurePolicy::FailClosed,
            reload_backoff: None,
            allow_on_headers_stop_iteration: false,
            legacy_fail_open: false,
        }
    );
    assert_eq!(hcm.http_filters[1], HttpFilter::Router);

    assert_eq!(
        bootstrap.clusters,
        vec![Cluster {
            name: "httpbin".into(),
            discovery: Discovery::StrictDns,
            connect_timeout: Duration::from_secs(5000),
            lb_policy: LbPolicy::RoundRobin,
            endpoints: vec![Endpoint { hostname: "httpbin.org".into(), ..endpoint("httpbin.org", 80) }],
            dns_refresh_rate: Duration::from_secs(5),
            dns_lookup_family: DnsLookupFamily::Auto,
            eds: None,
            http2: false,
            metadata: Metadata::default(),
            tls: None,
            upstream_http: UpstreamHttpOptions::default(),
            circuit_breakers: Default::default(),
            high_circuit_breakers: Default::default(),
            protocol_choice: Default::default(),
            connections: Default::default(),
            common_lb: Default::default(),
            health_checks: Vec::new(),
            outlier_detection: None,
        }]
    );
    assert_eq!(bootstrap.wasm_services, vec![]);
    assert_eq!(bootstrap.runtime, vec![]);
}

#[test]
fn envoy_docs_shape_with_struct_configuration_and_routes() {
    let (bootstrap, warnings) = load("envoy_docs_wasm.yaml");
    assert_eq!(
        warnings,
        vec![
            "static_resources.listeners[0].filter_chains[0].filters[0].typed_config.route_config.virtual_hosts[0].routes[1].match.safe_regex.google_re2: deprecated and ignored: RE2 is the regex engine (line 53, column 45)",
            "static_resources.clusters[1].http2_protocol_options: deprecated: use typed_extension_protocol_options (line 139, column 29)",
        ]
    );
    assert_eq!(bootstrap.admin, Some(Admin { address: addr("127.0.0.1", 9901) }));
    let listener = &bootstrap.listeners[0];
    assert_eq!(listener.name, "ingress");
    assert_eq!(listener.address, addr("::", 8080));

    let hcm = hcm(listener);
    assert_eq!(hcm.codec_type, CodecType::Http1);
    assert_eq!(hcm.server_name, "wasmproxy-test");
    assert_eq!(hcm.request_headers_timeout, Some(Duration::from_secs(10)));
    assert_eq!(hcm.stream_idle_timeout, None, "0s disables it");
    assert_eq!(hcm.idle_timeout, Some(Duration::from_millis(1500)));

    let api = &hcm.route_config.virtual_hosts[0];
    assert_eq!(api.name, "api");
    assert_eq!(api.domains, vec!["api.example.com", "api.example.com:8080"]);
    assert_eq!(
        api.routes[0],
        Route {
            name: "users".into(),
            matcher: RouteMatch {
                path: PathMatch::Prefix("/users".into()),
                case_sensitive: false,
                headers: vec![
                    HeaderMatcher {
                        name: "x-tenant".into(),
                        value: ValueMatch::Exact { value: "acme".into(), ignore_case: true },
                        invert: false,
                    },
                    HeaderMatcher { name: "x-debug".into(), value: ValueMatch::Present, invert: true },
                    HeaderMatcher {
                        name: "x-version".into(),
                        value: ValueMatch::Regex("v[0-9]+".into()),
                        invert: false
                    },
                    HeaderMatcher {
                        name: "x-old".into(),
                        value: ValueMatch::Prefix { value: "beta".into(), ignore_case: false },
                        invert: false,
                    },
                ],
                query_parameters: vec![
                    QueryParameterMatcher {
                        name: "format".into(),
                        value: ValueMatch::Suffix { value: "json".into(), ignore_case: false },
                    },
                    QueryParameterMatcher { name: "verbose".into(), value: ValueMatch::Present },
                ],
                grpc: false,
            },
            action: RouteAction::Forward(ForwardAction {
                cluster: "users".into(),
                prefix_rewrite: Some("/v2/users".into()),
                host_rewrite_literal: Some("users.internal".into()),
                timeout: Some(Duration::from_millis(250)),
                ..Default::default()
            }),
            metadata: Metadata::default(),
            headers: Default::default(),
            filter_overrides: vec![],
            decorator: None,
        }
    );
    assert_eq!(api.routes[1].matcher.path, PathMatch::Regex("/items/[0-9]+".into()));
    assert_eq!(api.routes[1].action, forward("users", None), "timeout 0s = no timeout");

    let fallback = &hcm.route_config.virtual_hosts[1];
    let actions: Vec<&RouteAction> = fallback.routes.iter().map(|r| &r.action).collect();
    assert_eq!(
        actions,
        vec![
            &RouteAction::DirectResponse { status: 200, body: Some(b"ok\n".to_vec()) },
            &RouteAction::DirectResponse { status: 410, body: Some(b"gone".to_vec()) },
            &RouteAction::DirectResponse { status: 204, body: None },
            &RouteAction::Redirect(RedirectAction {
                scheme: Some("https".into()),
                host: Some("new.example.com".into()),
                port: Some(8443),
                path: None,
                prefix_rewrite: Some("/new".into()),
                status: 308,
                strip_query: true,
            }),
            &RouteAction::Redirect(RedirectAction {
                path: Some("/index.html".into()),
                status: 301,
                ..RedirectAction::default()
            }),
        ]
    );
    assert_eq!(fallback.routes[0].matcher.path, PathMatch::Exact("/health".into()));

    let plugin = wasm(&hcm.http_filters[0]);
    assert_eq!(plugin.name, "my_plugin");
    assert_eq!(plugin.root_id, "my_root_id");
    // As Envoy hands it over: a serialized Struct, with Envoy's YAML scalars (a float is a string).
    assert_eq!(
        plugin.configuration,
        encode_struct(&[
            ("header".into(), string("x-plugin")),
            ("count".into(), StructValue::Number(3.0)),
            ("ratio".into(), string("0.5")),
            ("enabled".into(), StructValue::Bool(true)),
            ("tags".into(), StructValue::List(vec![string("a"), string("b")])),
            ("nested".into(), StructValue::Struct(vec![("key".into(), string("1"))])),
        ])
    );
    assert_eq!(plugin.vm.vm_id, "my_vm_id");
    assert_eq!(plugin.vm.runtime, "envoy.wasm.runtime.wasmtime");
    assert_eq!(plugin.vm.code, WasmCode::File("/etc/envoy_filter_http_wasm_example.wasm".into()));
    assert_eq!(plugin.vm.configuration, Vec::<u8>::new(), "an empty Any is no configuration");
    let path = std::env::var("PATH").unwrap();
    assert_eq!(
        plugin.vm.environment,
        vec![("MODE".into(), "test".into()), ("LEVEL".into(), "2".into()), ("PATH".into(), path)]
    );
    assert_eq!(plugin.failure_policy, FailurePolicy::FailReload);
    assert_eq!(plugin.reload_backoff, Some((Duration::from_millis(500), Duration::from_secs(5))));
    assert!(plugin.allow_on_headers_stop_iteration);

    let second = wasm(&hcm.http_filters[1]);
    assert_eq!(second.name, "");
    assert_eq!(second.vm.code, WasmCode::Inline(b"not really wasm".to_vec()));
    assert_eq!(second.vm.configuration, b"vm-config".to_vec());
    assert_eq!(second.configuration, Vec::<u8>::new());
    assert_eq!(second.failure_policy, FailurePolicy::FailOpen);
    assert_eq!(second.reload_backoff, None);
    assert_eq!(hcm.http_filters[2], HttpFilter::Router);

    assert_eq!(
        bootstrap.clusters,
        vec![
            Cluster {
                name: "users".into(),
                discovery: Discovery::Static,
                connect_timeout: Duration::from_secs(5),
                lb_policy: LbPolicy::Random,
                endpoints: vec![endpoint("10.0.0.1", 8001), endpoint("10.0.0.2", 8002)],
                dns_refresh_rate: Duration::from_secs(5),
                dns_lookup_family: DnsLookupFamily::Auto,
                eds: None,
                http2: true,
                metadata: Metadata::default(),
                tls: None,
                upstream_http: UpstreamHttpOptions::default(),
                circuit_breakers: Default::default(),
                high_circuit_breakers: Default::default(),
                protocol_choice: Default::default(),
                connections: Default::default(),
                common_lb: Default::default(),
                health_checks: Vec::new(),
                outlier_detection: None,
            },
            Cluster {
                name: "legacy_h2".into(),
                discovery: Discovery::LogicalDns,
                connect_timeout: Duration::from_millis(2500),
                lb_policy: LbPolicy::LeastRequest,
                endpoints: vec![endpoint("backend.local", 443)],
                dns_refresh_rate: Duration::from_secs(5),
                dns_lookup_family: DnsLookupFamily::Auto,
                eds: None,
                http2: true,
                metadata: Metadata::default(),
                tls: None,
                upstream_http: UpstreamHttpOptions::default(),
                circuit_breakers: Default::default(),
                high_circuit_breakers: Default::default(),
                protocol_choice: Default::default(),
                connections: Default::default(),
                common_lb: Default::default(),
                health_checks: Vec::new(),
                outlier_detection: None,
            },
        ]
    );
}

#[test]
fn json_with_camel_case_names() {
    let (bootstrap, warnings) = load("camel_case.json");
    assert_eq!(warnings, Vec::<String>::new());
    assert_eq!(bootstrap.admin, Some(Admin { address: addr("127.0.0.1", 9901) }));
    let listener = &bootstrap.listeners[0];
    assert_eq!(listener.name, "json_listener");
    assert_eq!(listener.address, addr("127.0.0.1", 18000), "a port given as a string");
    let hcm = hcm(listener);
    assert_eq!(hcm.stat_prefix, "json_http");
    assert_eq!(hcm.codec_type, CodecType::Http2);
    assert_eq!(hcm.server_name, "json-server");
    assert_eq!(hcm.stream_idle_timeout, Some(Duration::from_secs(30)));
    let routes = &hcm.route_config.virtual_hosts[0].routes;
    assert_eq!(
        routes[0].matcher.query_parameters,
        vec![QueryParameterMatcher { name: "debug".into(), value: ValueMatch::Present }]
    );
    assert_eq!(
        routes[0].action,
        RouteAction::Forward(ForwardAction {
            cluster: "json_cluster".into(),
            prefix_rewrite: None,
            host_rewrite_literal: Some("json.internal".into()),
            timeout: Some(Duration::from_secs(15)),
            ..Default::default()
        })
    );
    assert_eq!(routes[1].action, RouteAction::DirectResponse { status: 418, body: Some(b"short and stout".to_vec()) });
    assert_eq!(
        *wasm(&hcm.http_filters[0]),
        WasmPlugin {
            name: "json_plugin".into(),
            root_id: "json_root".into(),
            vm: WasmVm {
                vm_id: "json_vm".into(),
                runtime: "envoy.wasm.runtime.v8".into(),
                code: WasmCode::Inline(b"\0asm\x01\0\0\0".to_vec()),
                configuration: vec![],
                environment: vec![],
            },
            configuration: encode_struct(&[
                ("limit".into(), StructValue::Number(10.0)),
                ("names".into(), StructValue::List(vec![string("x"), string("y")])),
                ("strict".into(), StructValue::Bool(false)),
                ("note".into(), StructValue::Null),
            ]),
            failure_policy: FailurePolicy::FailClosed,
            reload_backoff: None,
            allow_on_headers_stop_iteration: true,
            legacy_fail_open: false,
        }
    );
    assert_eq!(hcm.http_filters[1], HttpFilter::Router);
    assert_eq!(bootstrap.clusters[0].connect_timeout, Duration::from_millis(250));
    assert_eq!(bootstrap.clusters[0].endpoints, vec![endpoint("127.0.0.1", 18080)]);
}

#[test]
fn json_decided_by_content_in_load_str() {
    let text = std::fs::read_to_string(fixtures().join("camel_case.json")).unwrap();
    let bootstrap = load_str(&text, Path::new("/base")).unwrap();
    assert_eq!(bootstrap.listeners[0].name, "json_listener");
}

#[test]
fn wasm_service_singleton_and_runtime_layers() {
    let (bootstrap, warnings) = load("wasm_service.yaml");
    assert_eq!(
        warnings,
        vec![
            "layered_runtime.layers[2].admin_layer: ignored: wasmproxy's admin cannot change runtime values (line 40, column 18)"
        ]
    );
    assert_eq!(bootstrap.listeners, vec![]);
    assert_eq!(
        bootstrap.wasm_services,
        vec![
            WasmService {
                plugin: WasmPlugin {
                    name: "singleton_service".into(),
                    root_id: "service_root".into(),
                    vm: WasmVm {
                        vm_id: "service_vm".into(),
                        runtime: "envoy.wasm.runtime.v8".into(),
                        code: WasmCode::File("/opt/plugins/service.wasm".into()),
                        configuration: vec![],
                        environment: vec![],
                    },
                    configuration: b"hello service".to_vec(),
                    ..WasmPlugin::default()
                },
                singleton: true,
            },
            WasmService {
                plugin: WasmPlugin {
                    name: "per_worker_service".into(),
                    vm: WasmVm {
                        runtime: "envoy.wasm.runtime.null".into(),
                        code: WasmCode::Inline(b"envoy.wasm.null_service".to_vec()),
                        ..WasmVm::default()
                    },
                    ..WasmPlugin::default()
                },
                singleton: false,
            },
        ]
    );
    assert_eq!(
        bootstrap.runtime,
        vec![
            ("wasm.callback_deadline_ms".to_string(), "250".to_string()),
            ("re2.max_program_size.error_level".into(), "1000".into()),
            ("feature.enabled".into(), "true".into()),
            ("feature.name".into(), "x".into()),
        ]
    );
}

#[test]
fn network_wasm_filter_before_tcp_proxy() {
    let (bootstrap, warnings) = load("tcp_proxy_network_wasm.yaml");
    assert_eq!(warnings, Vec::<String>::new());
    assert_eq!(bootstrap.clusters[0].dns_lookup_family, DnsLookupFamily::V4Only);
    let listener = &bootstrap.listeners[0];
    assert_eq!(listener.name, "main");
    assert_eq!(
        listener.filter_chains[0].filters,
        vec![
            NetworkFilter::Wasm(WasmPlugin {
                name: "envoy_tcp_routing_filter".into(),
                root_id: "envoy_tcp_routing_filter".into(),
                vm: WasmVm {
                    vm_id: "vm.envoy_tcp_routing".into(),
                    runtime: "envoy.wasm.runtime.v8".into(),
                    code: WasmCode::File("tcp_routing.wasm".into()),
                    configuration: vec![],
                    environment: vec![],
                },
                configuration: b"standalone".to_vec(),
                ..WasmPlugin::default()
            }),
            NetworkFilter::TcpProxy(TcpProxy {
                stat_prefix: "destination".into(),
                cluster: "egress-router1".into(),
                access_logs: vec![],
                idle_timeout: Some(Duration::from_secs(3600)),
            }),
        ]
    );
    assert_eq!(bootstrap.clusters.len(), 2);
    assert_eq!(bootstrap.clusters[0].discovery, Discovery::LogicalDns);
    assert_eq!(bootstrap.clusters[0].connect_timeout, Duration::from_secs(30));
    assert_eq!(bootstrap.clusters[1].endpoints, vec![endpoint("httpbin", 8081)]);
}

#[test]
fn talk_demo_older_shapes_load_with_warnings() {
    let (bootstrap, warnings) = load("talk_demo.yaml");
    assert_eq!(
        warnings,
        vec![
            "admin.access_log_path: deprecated and ignored: wasmproxy's admin writes no access log (line 4, column 20)",
            "static_resources.listeners[0].filter_chains[0].filters[0].typed_config.http_filters[0].typed_config.value.config.fail_open: deprecated: use failure_policy: FAIL_OPEN (line 43, column 30)",
            "static_resources.listeners[0].filter_chains[0].filters[0].typed_config.http_filters[1]: envoy.filters.http.router without typed_config is accepted as the router, but Envoy 1.40 refuses it: add typed_config with \"@type\": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router (line 55, column 13)",
        ]
    );
    assert_eq!(bootstrap.admin, Some(Admin { address: addr("0.0.0.0", 8001) }));
    let hcm = hcm(&bootstrap.listeners[0]);
    let plugin = wasm(&hcm.http_filters[0]);
    assert_eq!(plugin.name, "header_filter");
    assert_eq!(plugin.root_id, "add_header");
    assert_eq!(plugin.failure_policy, FailurePolicy::FailOpen);
    assert_eq!(plugin.configuration, b"x-wasm-demo=hello\nx-powered-by=proxy-wasm\n".to_vec());
    assert_eq!(plugin.vm.code, WasmCode::File("./header_filter.wasm".into()));
    assert_eq!(hcm.http_filters[1], HttpFilter::Router);
    assert_eq!(bootstrap.clusters[0].connect_timeout, Duration::from_millis(250));
    assert_eq!(bootstrap.clusters[0].lb_policy, LbPolicy::RoundRobin);
}

#[test]
fn anchors_ignored_keys_and_a_struct_in_a_typed_struct() {
    let yaml = r#"
!ignore plugin_code: &code { local: { filename: /plugins/p.wasm } }
bootstrap_extensions:
- name: envoy.bootstrap.wasm
  typed_config:
    "@type": type.googleapis.com/envoy.extensions.wasm.v3.WasmService
    config:
      configuration:
        "@type": type.googleapis.com/xds.type.v3.TypedStruct
        type_url: type.googleapis.com/google.protobuf.Struct
        value: { mode: "fast", retries: 2 }
      vm_config: { code: *code }
- name: envoy.bootstrap.wasm
  typed_config:
    "@type": type.googleapis.com/envoy.extensions.wasm.v3.WasmService
    config:
      configuration: {}
      vm_config: { code: *code, configuration: { "@type": type.googleapis.com/google.protobuf.Struct } }
"#;
    let bootstrap = load_str(yaml, Path::new("/")).unwrap();
    let [first, second] = &bootstrap.wasm_services[..] else { panic!("two services") };
    // Envoy hands over the TypedStruct itself: type_url (1), value (2).
    let inner = encode_struct(&[("mode".into(), string("fast")), ("retries".into(), StructValue::Number(2.0))]);
    let url = b"type.googleapis.com/google.protobuf.Struct";
    let typed_struct = [&[0x0a, url.len() as u8][..], url, &[0x12, inner.len() as u8], &inner].concat();
    assert_eq!(first.plugin.configuration, typed_struct);
    assert_eq!(first.plugin.vm.code, WasmCode::File("/plugins/p.wasm".into()));
    assert_eq!(first.plugin.vm.runtime, "", "no runtime: Envoy picks its first available one");
    assert_eq!(second.plugin.configuration, Vec::<u8>::new());
    assert_eq!(second.plugin.vm.configuration, Vec::<u8>::new(), "an empty Struct serializes to nothing");
    assert_eq!(second.plugin.vm.code, WasmCode::File("/plugins/p.wasm".into()));
}

#[test]
fn an_upstream_tls_context_is_read_with_envoys_client_defaults() {
    let yaml = r#"
static_resources:
  clusters:
  - name: secure
    load_assignment:
      endpoints:
      - lb_endpoints:
        - endpoint: { address: { socket_address: { address: 127.0.0.1, port_value: 443 } } }
    transport_socket:
      name: envoy.transport_sockets.tls
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext
        sni: api.example.com
        common_tls_context:
          validation_context:
            trusted_ca: { filename: ca.pem }
            match_typed_subject_alt_names:
            - san_type: DNS
              matcher: { exact: api.example.com }
            match_subject_alt_names: [{ prefix: "spiffe://" }]
  - name: plain_tls
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        upstream_http_protocol_options:
          auto_sni: true
          auto_san_validation: true
          override_auto_sni_header: x-sni
        explicit_http_config: { http_protocol_options: {} }
    load_assignment:
      endpoints:
      - lb_endpoints:
        - endpoint: { address: { socket_address: { address: 127.0.0.1, port_value: 443 } } }
    transport_socket:
      name: envoy.transport_sockets.tls
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext
"#;
    let bootstrap = wasmproxy_config::load_str(yaml, Path::new("/etc/envoy")).unwrap_or_else(|e| panic!("{e}"));
    let tls = bootstrap.clusters[0].tls.clone().unwrap();
    assert_eq!(tls.sni.as_deref(), Some("api.example.com"));
    assert_eq!(tls.versions, (TlsVersion::Tls12, TlsVersion::Tls12), "Envoy's client defaults");
    let Some(ValidationSource::Inline(validation)) = tls.validation else { panic!("{:?}", tls.validation) };
    assert_eq!(validation.trusted_ca, Some(DataSource::File("/etc/envoy/ca.pem".into())));
    assert_eq!(
        validation.subject_alt_names,
        vec![
            SanMatcher {
                san_type: Some(SanType::Dns),
                matcher: ValueMatch::Exact { value: "api.example.com".into(), ignore_case: false }
            },
            SanMatcher {
                san_type: None,
                matcher: ValueMatch::Prefix { value: "spiffe://".into(), ignore_case: false }
            },
        ]
    );
    let plain = bootstrap.clusters[1].tls.clone().unwrap();
    assert_eq!((plain.sni, plain.validation, plain.certificate), (None, None, None), "nothing checked, as in Envoy");
    assert_eq!(bootstrap.clusters[0].upstream_http, UpstreamHttpOptions::default());
    assert_eq!(
        bootstrap.clusters[1].upstream_http,
        UpstreamHttpOptions {
            auto_sni: true,
            auto_san_validation: true,
            override_auto_sni_header: Some("x-sni".into())
        }
    );
}

#[test]
fn endpoints_load_balancing_health_and_tracing_leftovers_are_read() {
    let yaml = r#"
static_resources:
  listeners:
  - name: web
    address: { socket_address: { address: 127.0.0.1, port_value: 8080 } }
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: web
          request_id_extension:
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.request_id.uuid.v3.UuidRequestIdConfig
              pack_trace_reason: false
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: { prefix: / }
                decorator: { operation: checkout }
                route:
                  cluster: backend
                  hash_policy: [{ header: { header_name: X-User }, terminal: true }, { connection_properties: { source_ip: true } }]
          http_filters:
          - name: envoy.filters.http.router
            typed_config: { "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router }
  clusters:
  - name: backend
    lb_policy: RING_HASH
    ring_hash_lb_config: { minimum_ring_size: 128 }
    common_lb_config: { healthy_panic_threshold: { value: 25 }, locality_weighted_lb_config: {} }
    health_checks:
    - { timeout: 1s, interval: 5s, unhealthy_threshold: 2, healthy_threshold: 1, http_health_check: { path: /healthz, expected_statuses: [{ start: 200, end: 300 }] } }
    outlier_detection: { consecutive_5xx: 3, base_ejection_time: 60s }
    load_assignment:
      cluster_name: backend
      endpoints:
      - locality: { region: eu, zone: a }
        load_balancing_weight: 2
        priority: 1
        lb_endpoints:
        - endpoint: { address: { socket_address: { address: 10.0.0.1, port_value: 80 } }, hostname: one, health_check_config: { port_value: 8081 } }
          load_balancing_weight: 3
          health_status: DEGRADED
"#;
    let bootstrap = wasmproxy_config::load_str(yaml, Path::new("/")).unwrap_or_else(|e| panic!("{e}"));
    let hcm = hcm(&bootstrap.listeners[0]);
    assert!(!hcm.request_id.pack_trace_reason && hcm.request_id.use_for_trace_sampling);
    let route = &hcm.route_config.virtual_hosts[0].routes[0];
    assert_eq!(route.decorator.as_ref().map(|d| d.operation.as_str()), Some("checkout"));
    let RouteAction::Forward(f) = &route.action else { panic!("a forward") };
    assert_eq!(f.hash_policy.len(), 2);
    assert_eq!(f.hash_policy[0].key, HashKey::Header { name: "x-user".into(), rewrite: None });
    let c = &bootstrap.clusters[0];
    assert_eq!(
        (c.lb_policy, c.common_lb.minimum_ring_size, c.common_lb.panic_threshold),
        (LbPolicy::RingHash, 128, 25.0)
    );
    assert!(c.common_lb.locality_weighted);
    let e = &c.endpoints[0];
    assert_eq!((e.weight, e.locality_weight, e.priority, e.health_status), (3, 2, 1, EdsHealth::Degraded));
    assert_eq!((e.hostname.as_str(), e.health_check_port, e.locality.zone.as_str()), ("one", Some(8081), "a"));
    let HealthCheckKind::Http(http) = &c.health_checks[0].kind else { panic!("an HTTP check") };
    assert_eq!(http.expected_statuses, vec![(200, 300)]);
    let od = c.outlier_detection.as_ref().expect("outlier detection");
    // max_ejection_time keeps its default above a longer base_ejection_time.
    assert_eq!((od.consecutive_5xx, od.max_ejection_time), (3, Duration::from_secs(300)));
}
