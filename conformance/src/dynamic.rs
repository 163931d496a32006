//! Configuration that changes while serving: listeners and clusters from LDS and CDS files
//! (`path_config_source`), replaced between requests; the answers and the listener and
//! cluster managers' stats after each update.

use wasmproxy_conformance::client::Request;

use crate::scenario::{Scenario, wasm_filter};

/// The listener and cluster managers' stats that both proxies keep.
const STATS: &[&str] = &[
    r"^listener_manager\.lds\.(update_(attempt|success|rejected|failure)|version|version_text): ",
    r"^listener_manager\.(listener_(added|modified|removed)|total_listeners_active): ",
    r"^cluster_manager\.cds\.(update_(attempt|success|rejected|failure)|version|version_text): ",
    r"^cluster_manager\.(cluster_(added|modified|removed)|active_clusters): ",
];

/// A bootstrap whose listeners and clusters come from `@DYNAMIC@lds.yaml` and
/// `@DYNAMIC@cds.yaml` (Envoy wants a node for dynamic resources).
fn bootstrap() -> String {
    r#"node: { id: conformance, cluster: conformance }
admin:
  address: { socket_address: { address: 127.0.0.1, port_value: 0 } }
dynamic_resources:
  lds_config: { path_config_source: { path: "@DYNAMIC@lds.yaml" } }
  cds_config: { path_config_source: { path: "@DYNAMIC@cds.yaml" } }
"#
    .into()
}

/// A CDS file: the cluster `upstream` at `port` (`@UPSTREAM_PORT@` for the recording one).
fn cds(version: &str, port: &str) -> String {
    format!(
        r#"version_info: "{version}"
resources:
- "@type": type.googleapis.com/envoy.config.cluster.v3.Cluster
  name: upstream
  type: STATIC
  connect_timeout: 1s
  load_assignment:
    cluster_name: upstream
    endpoints:
    - lb_endpoints:
      - endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {port} }} }} }}
"#
    )
}

/// An LDS file with one listener, `main`, on port 0: `routes` (YAML route items) then the
/// catch-all to `upstream`, and `filters` (YAML HTTP filter items) before the router.
fn lds(version: &str, routes: &str, filters: &str) -> String {
    let filters: String = filters.lines().map(|l| format!("{}\n", l.strip_prefix("  ").unwrap_or(l))).collect();
    format!(
        r#"version_info: "{version}"
resources:
- "@type": type.googleapis.com/envoy.config.listener.v3.Listener
  name: main
  address: {{ socket_address: {{ address: 127.0.0.1, port_value: 0 }} }}
  filter_chains:
  - filters:
    - name: envoy.filters.network.http_connection_manager
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
        stat_prefix: ingress
        route_config:
          name: local_routes
          virtual_hosts:
          - name: all
            domains: ["*"]
            routes:
{routes}            - match: {{ prefix: / }}
              route: {{ cluster: upstream }}
        http_filters:
{filters}        - name: envoy.filters.http.router
          typed_config:
            "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
"#
    )
}

/// A scenario on the dynamic bootstrap, starting from these files.
fn dynamic(name: &'static str, about: &'static str, lds: String, cds: String, requests: Vec<Request>) -> Scenario {
    Scenario {
        name,
        about,
        config: bootstrap(),
        requests,
        deliberate: None,
        known: None,
        stats: STATS,
        prometheus: &[],
        files: vec![("lds.yaml", lds), ("cds.yaml", cds)],
    }
}

const DIRECT: &str = "            - match: { prefix: /changed }\n              direct_response: { status: 200, body: { inline_string: \"new route\" } }\n";

/// The header filter (Rust SDK) adding one response header.
fn header_filter(value: &str) -> String {
    let configuration = format!(r#"{{"response_headers": [["x-version", "{value}"]]}}"#);
    wasm_filter("versioned", "header_filter.wasm", &configuration, "")
}

/// A bootstrap whose listener takes its routes from `@DYNAMIC@rds.yaml` and whose cluster
/// takes its endpoints from `@DYNAMIC@eds.yaml`.
fn rds_eds_bootstrap() -> String {
    r#"node: { id: conformance, cluster: conformance }
admin:
  address: { socket_address: { address: 127.0.0.1, port_value: 0 } }
static_resources:
  listeners:
  - name: main
    address: { socket_address: { address: 127.0.0.1, port_value: 0 } }
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: ingress
          rds:
            route_config_name: from_file
            config_source: { path_config_source: { path: "@DYNAMIC@rds.yaml" } }
          http_filters:
          - name: envoy.filters.http.router
            typed_config: { "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router }
  clusters:
  - name: upstream
    type: EDS
    connect_timeout: 1s
    eds_cluster_config:
      service_name: upstream_service
      eds_config: { path_config_source: { path: "@DYNAMIC@eds.yaml" } }
"#
    .into()
}

/// An RDS file: the route configuration `from_file` with `routes`, then the catch-all.
fn rds(version: &str, routes: &str) -> String {
    let routes: String = routes.lines().map(|l| format!("{}\n", l.strip_prefix("        ").unwrap_or(l))).collect();
    format!(
        r#"version_info: "{version}"
resources:
- "@type": type.googleapis.com/envoy.config.route.v3.RouteConfiguration
  name: from_file
  virtual_hosts:
  - name: all
    domains: ["*"]
    routes:
{routes}    - match: {{ prefix: / }}
      route: {{ cluster: upstream }}
"#
    )
}

/// An EDS file: `upstream_service` at `port`.
fn eds(version: &str, port: &str) -> String {
    format!(
        r#"version_info: "{version}"
resources:
- "@type": type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment
  cluster_name: upstream_service
  endpoints:
  - lb_endpoints:
    - endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {port} }} }} }}
"#
    )
}

pub fn scenarios() -> Vec<Scenario> {
    let upstream = || cds("c1", "@UPSTREAM_PORT@");
    vec![
        dynamic(
            "dynamic_route_change",
            "an LDS update changes a listener's routes; the listener keeps its address",
            lds("l1", "", ""),
            upstream(),
            vec![Request::get("/changed"), Request::get("/changed").after_update("lds.yaml", lds("l2", DIRECT, ""))],
        ),
        dynamic(
            "dynamic_cluster_change",
            "a CDS update moves a cluster to an endpoint nobody listens on",
            lds("l1", "", ""),
            upstream(),
            vec![Request::get("/c"), Request::get("/c").after_update("cds.yaml", cds("c2", "1"))],
        ),
        dynamic(
            "dynamic_wasm_configuration_change",
            "an LDS update changes a Wasm filter's plugin configuration (same VM)",
            lds("l1", "", &header_filter("1")),
            upstream(),
            vec![Request::get("/w"), Request::get("/w").after_update("lds.yaml", lds("l2", "", &header_filter("2")))],
        ),
        dynamic(
            "dynamic_wasm_module_change",
            "an LDS update gives a Wasm filter another module",
            lds("l1", "", &wasm_filter("demo", "talk_demo.wasm", "x-demo=one", "")),
            upstream(),
            vec![Request::get("/m"), Request::get("/m").after_update("lds.yaml", lds("l2", "", &header_filter("2")))],
        ),
        dynamic(
            "dynamic_rejected_update",
            "LDS updates that are refused (a route to a cluster nobody has, a file that does not parse): the last good \
             configuration keeps serving",
            lds("l1", DIRECT, ""),
            upstream(),
            vec![
                Request::get("/changed"),
                Request::get("/changed")
                    .after_update("lds.yaml", lds("l2", "", "").replace("cluster: upstream", "cluster: nowhere")),
                Request::get("/changed").after_update("lds.yaml", "resources: [".into()),
            ],
        ),
        Scenario {
            config: rds_eds_bootstrap(),
            stats: &[
                r"^http\.ingress\.rds\.from_file\.(update_(attempt|success|rejected|failure)|version|version_text): ",
                r"^cluster\.upstream\.(update_(attempt|success|rejected|failure)|version|version_text): ",
            ],
            files: vec![("rds.yaml", rds("r1", "")), ("eds.yaml", eds("e1", "@UPSTREAM_PORT@"))],
            ..dynamic(
                "dynamic_rds_and_eds",
                "a static listener's routes from an RDS file and a static cluster's endpoints from an EDS file, \
                 each changed while serving",
                String::new(),
                String::new(),
                vec![
                    Request::get("/changed"),
                    Request::get("/changed").after_update("rds.yaml", rds("r2", DIRECT)),
                    Request::get("/x").after_update("eds.yaml", eds("e2", "1")),
                ],
            )
        },
        dynamic(
            "dynamic_listener_removed",
            "an LDS update without the listener: its socket closes",
            lds("l1", "", ""),
            upstream(),
            vec![
                Request::get("/r"),
                Request::get("/r").after_update("lds.yaml", "version_info: l2\nresources: []\n".into()),
            ],
        ),
    ]
}
