//! `dynamic_resources` from files, and the LDS and CDS files themselves: read with the
//! bootstrap's readers, errors naming the field.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

use wasmproxy_config::{
    ConfigSource, HttpFilter, NetworkFilter, ResourceFileError, ResourceSource, load_clusters, load_listeners, load_str,
};

fn file(name: &str, text: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("wasmproxy-config-dynamic-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

const LISTENER: &str = r#"version_info: "7"
resources:
- "@type": type.googleapis.com/envoy.config.listener.v3.Listener
  name: dynamic
  address: { socket_address: { address: 127.0.0.1, port_value: 0 } }
  filter_chains:
  - filters:
    - name: envoy.filters.network.tcp_proxy
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
        stat_prefix: tcp
        cluster: backend
"#;

#[test]
fn dynamic_resources_name_their_files() {
    let dir = TempDir::new("names");
    for name in ["lds.yaml", "cds.json"] {
        std::fs::write(dir.path().join(name), "resources: []").expect("write");
    }
    let yaml = r#"
dynamic_resources:
  lds_config: { path_config_source: { path: DIR/lds.yaml, watched_directory: { path: DIR } }, resource_api_version: V3 }
  cds_config: { path: cds.json }
static_resources:
  listeners:
  - address: { socket_address: { address: 127.0.0.1, port_value: 0 } }
    filter_chains:
    - filters:
      - name: envoy.filters.network.tcp_proxy
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
          stat_prefix: tcp
          cluster: from_cds
"#
    .replace("DIR", &dir.path().display().to_string());
    let bootstrap = load_str(&yaml, dir.path()).unwrap_or_else(|e| panic!("{e}"));
    let lds = bootstrap.dynamic_resources.lds.expect("lds");
    let lds = lds.file().expect("a file");
    let (lds_path, watched) = (dir.path().join("lds.yaml"), Some(dir.path().to_path_buf()));
    assert_eq!((&lds.path, &lds.watched_directory), (&lds_path, &watched));
    assert_eq!(bootstrap.dynamic_resources.cds.expect("cds").file().expect("a file").path, PathBuf::from("cds.json"));

    // As in Envoy, a file that does not exist is refused, not waited for.
    let e = load_str(&yaml, Path::new("/nonexistent")).unwrap_err().to_string();
    assert!(e.contains("dynamic_resources.cds_config.path: paths must refer to an existing path in the system: 'cds.json' does not exist"), "{e}");

    // Without CDS, a TCP proxy's cluster no static one has is a warning, as Envoy takes it
    // (its connections are closed until the cluster comes).
    let without_cds = yaml.replace("  cds_config: { path: cds.json }\n", "");
    let (_, warnings) = wasmproxy_config::load_str_with_warnings(&without_cds, dir.path()).unwrap();
    let warnings: Vec<String> = warnings.iter().map(ToString::to_string).collect();
    assert!(
        warnings.iter().any(|w| w.contains("cluster: unknown cluster \"from_cds\": until one comes")),
        "{warnings:?}"
    );
}

const ADS: &str = r#"
node: { id: n1, cluster: c1 }
dynamic_resources:
  ads_config:
    api_type: GRPC
    transport_api_version: V3
    set_node_on_first_message_only: true
    grpc_services: [{ envoy_grpc: { cluster_name: xds_cluster, authority: cp.local } }]
  lds_config: { ads: {}, resource_api_version: V3, initial_fetch_timeout: 2s }
  cds_config: { ads: {} }
static_resources:
  clusters:
  - name: xds_cluster
    load_assignment:
      cluster_name: xds_cluster
      endpoints: [{ lb_endpoints: [{ endpoint: { address: { socket_address: { address: 127.0.0.1, port_value: 18000 } } } }] }]
"#;

#[test]
fn ads_config_names_a_static_cluster_and_the_sources_that_use_it() {
    let bootstrap = load_str(ADS, Path::new(".")).unwrap_or_else(|e| panic!("{e}"));
    let dynamic = &bootstrap.dynamic_resources;
    let ads = dynamic.ads.as_ref().expect("ads_config");
    assert_eq!((ads.cluster.as_str(), ads.authority.as_str()), ("xds_cluster", "cp.local"));
    assert!(ads.set_node_on_first_message_only && !ads.delta);
    let timeout = |s: &Option<ConfigSource>| match s {
        Some(ConfigSource::Ads { initial_fetch_timeout }) => *initial_fetch_timeout,
        other => panic!("{other:?}"),
    };
    assert_eq!(timeout(&dynamic.lds), std::time::Duration::from_secs(2));
    assert_eq!(timeout(&dynamic.cds), std::time::Duration::from_secs(15), "Envoy's default");

    let cases = [
        (
            "cluster_name: xds_cluster",
            "cluster_name: elsewhere",
            "unknown cluster \"elsewhere\" (it must be in static_resources.clusters)",
        ),
        ("api_type: GRPC", "api_type: REST", "REST is not supported by wasmproxy"),
        (
            "envoy_grpc: { cluster_name: xds_cluster, authority: cp.local }",
            "google_grpc: { target_uri: x, stat_prefix: y }",
            "missing required field \"envoy_grpc\"",
        ),
        (
            "cds_config: { ads: {} }",
            "cds_config: { api_config_source: { api_type: GRPC } }",
            "cds_config.api_config_source: missing required field \"grpc_services\"",
        ),
        (
            "cds_config: { ads: {} }",
            "cds_config: { api_config_source: { api_type: REST, cluster_names: [xds_cluster] } }",
            "api_type: REST is not supported by wasmproxy",
        ),
    ];
    for (from, to, expected) in cases {
        let e = load_str(&ADS.replace(from, to), Path::new(".")).unwrap_err().to_string();
        assert!(e.contains(expected), "{to}: {e}");
    }
    // A stream of its own: `api_config_source`.
    let own = ADS.replace(
        "cds_config: { ads: {} }",
        "cds_config: { api_config_source: { api_type: DELTA_GRPC, grpc_services: [{ envoy_grpc: { cluster_name: xds_cluster } }] } }",
    );
    let bootstrap = load_str(&own, Path::new(".")).unwrap_or_else(|e| panic!("{e}"));
    match bootstrap.dynamic_resources.cds {
        Some(ConfigSource::Grpc { api, initial_fetch_timeout }) => {
            assert!(api.delta && api.cluster == "xds_cluster" && !api.set_node_on_first_message_only);
            assert_eq!(initial_fetch_timeout, std::time::Duration::from_secs(15));
        }
        other => panic!("{other:?}"),
    }
    // `ads` sources need the stream.
    let without = ADS.replace("  ads_config:", "  unused:").replace("    api_type: GRPC\n", "");
    let without: String = without.lines().filter(|l| !l.starts_with("    ")).collect::<Vec<_>>().join("\n");
    let e = load_str(&without, Path::new(".")).unwrap_err().to_string();
    assert!(e.contains("ads needs dynamic_resources.ads_config"), "{e}");
}

#[test]
fn a_listener_file_is_read_with_the_bootstraps_reader() {
    let path = file("lds.yaml", LISTENER);
    let lds = load_listeners(ResourceSource::File(&path), Path::new("."), &["backend".to_string()])
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(lds.version_info, "7");
    assert_eq!(lds.resources[0].name, "dynamic");
    assert_eq!(lds.documents[0]["name"], "dynamic");

    // A TCP proxy to a cluster nobody has is taken, as Envoy takes it.
    let taken = load_listeners(ResourceSource::File(&path), Path::new("."), &[]).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(taken.resources[0].name, "dynamic");

    // A resource of another type, and a field Envoy does not have.
    let other = file("other.yaml", &LISTENER.replace("listener.v3.Listener", "cluster.v3.Cluster"));
    let e =
        load_listeners(ResourceSource::File(&other), Path::new("."), &["backend".to_string()]).unwrap_err().to_string();
    assert!(e.contains("resources[0]: expected a envoy.config.listener.v3.Listener"), "{e}");
    let bogus = file("bogus.yaml", &LISTENER.replace("  name: dynamic", "  name: dynamic\n  bogus: 1"));
    let e =
        load_listeners(ResourceSource::File(&bogus), Path::new("."), &["backend".to_string()]).unwrap_err().to_string();
    assert!(e.contains("resources[0].bogus: unknown field (line 5"), "{e}");

    // Not YAML at all: unreadable, not refused.
    let broken = file("broken.yaml", "resources: [");
    let unreadable = load_listeners(ResourceSource::File(&broken), Path::new("."), &[]);
    assert!(matches!(unreadable, Err(ResourceFileError::Unreadable(_))), "{unreadable:?}");
}

#[test]
fn a_cluster_file_is_read_with_the_bootstraps_reader() {
    let text = r#"{"version_info": "c9", "resources": [{"@type": "type.googleapis.com/envoy.config.cluster.v3.Cluster",
        "name": "backend", "type": "STATIC", "load_assignment": {"cluster_name": "backend", "endpoints": [{"lb_endpoints":
        [{"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 8080}}}}]}]}}]}"#;
    let cds =
        load_clusters(ResourceSource::File(&file("cds.json", text)), Path::new(".")).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((cds.version_info.as_str(), cds.resources[0].endpoints[0].address.port), ("c9", 8080));
    let twice = text.replace(
        r#"[{"@type""#,
        r#"[{"@type": "type.googleapis.com/envoy.config.cluster.v3.Cluster", "name": "backend"}, {"@type""#,
    );
    let e = load_clusters(ResourceSource::File(&file("twice.json", &twice)), Path::new(".")).unwrap_err().to_string();
    assert!(e.contains(r#"resources[1].name: duplicate cluster name "backend" (first at resources[0].name)"#), "{e}");
}

#[test]
fn config_discovery_takes_a_wasm_filter_from_xds() {
    let listener = |discovery: &str| {
        format!(
            r#"{ADS}  listeners:
  - name: l
    address: {{ socket_address: {{ address: 127.0.0.1, port_value: 0 }} }}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: in
          route_config: {{ virtual_hosts: [{{ name: v, domains: ["*"], routes: [{{ match: {{ prefix: / }}, direct_response: {{ status: 200 }} }}] }}] }}
          http_filters:
          - name: discovered
            config_discovery: {discovery}
          - name: envoy.filters.http.router
            typed_config: {{ "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router }}
"#
        )
    };
    let wasm = "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm";
    let good = format!("{{ config_source: {{ ads: {{}}, initial_fetch_timeout: 3s }}, type_urls: [{wasm}] }}");
    let bootstrap = load_str(&listener(&good), Path::new(".")).unwrap_or_else(|e| panic!("{e}"));
    let NetworkFilter::HttpConnectionManager(hcm) = &bootstrap.listeners[0].filter_chains[0].filters[0] else {
        panic!("not a connection manager")
    };
    match &hcm.http_filters[0] {
        HttpFilter::Discovered(d) => {
            assert_eq!(d.name, "discovered");
            assert_eq!(d.source.initial_fetch_timeout(), Some(std::time::Duration::from_secs(3)));
            assert!(d.default.is_none() && !d.apply_default_without_warming);
        }
        other => panic!("{other:?}"),
    }
    let cases = [
        (
            "{ config_source: { ads: {} }, type_urls: [type.googleapis.com/envoy.extensions.filters.http.router.v3.Router] }",
            "envoy.extensions.filters.http.router.v3.Router is not supported by wasmproxy",
        ),
        (
            "{ config_source: { path_config_source: { path: . } }, type_urls: [x] }",
            "ECDS from a file is not supported by wasmproxy",
        ),
        (
            "{ config_source: { ads: {} }, apply_default_config_without_warming: true, type_urls: [x] }",
            "needs a default_config",
        ),
        ("{ config_source: { ads: {} } }", "missing required field \"type_urls\""),
    ];
    for (discovery, expected) in cases {
        let e = load_str(&listener(discovery), Path::new(".")).unwrap_err().to_string();
        assert!(e.contains(expected), "{discovery}: {e}");
    }
}

/// A directory of this test's own, removed at the end.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("wasmproxy-config-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("create dir");
        TempDir(dir)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
