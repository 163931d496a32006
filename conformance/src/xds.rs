//! Configuration from a control plane: the same go-control-plane server drives Envoy and
//! wasmproxy over ADS (state of the world and delta): the first snapshot, a route, a
//! plugin's configuration and an endpoint changing, and a listener both must NACK; what the
//! clients see, the update stats, and the discovery requests the control plane received.

use serde_json::{Value, json};
use wasmproxy_conformance::client::Request;
use wasmproxy_conformance::{config, upstream};

use crate::scenario::{Scenario, XDS};

/// The update stats both proxies keep for each subscription, and the stream's state.
const STATS: &[&str] = &[
    r"^listener_manager\.lds\.(update_(attempt|success|rejected|failure)|version|version_text): ",
    r"^cluster_manager\.cds\.(update_(attempt|success|rejected|failure)|version|version_text): ",
    r"^http\.ingress\.rds\.routes\.(update_(attempt|success|rejected|failure)|version|version_text): ",
    r"^cluster\.upstream\.(update_(attempt|success|rejected|failure)|version|version_text): ",
    r"^control_plane\.connected_state: ",
    r"^listener_manager\.(listener_(added|modified|removed)|total_listeners_active): ",
];

/// A snapshot of the cluster `upstream` (EDS) at `port`, the listener `main` (its routes by
/// RDS, through the header filter adding `x-version: <plugin>`), and its routes, `/changed`
/// answering `direct`.
fn snapshot(version: &str, port: &str, plugin: &str, direct: &str) -> String {
    let ads = json!({"ads": {}, "resource_api_version": "V3"});
    let configuration = format!(r#"{{"response_headers": [["x-version", "{plugin}"]]}}"#);
    let resources: Vec<Value> = vec![
        json!({
            "@type": "type.googleapis.com/envoy.config.cluster.v3.Cluster",
            "name": "upstream", "type": "EDS", "connect_timeout": "1s",
            "eds_cluster_config": {"eds_config": ads},
        }),
        json!({
            "@type": "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment",
            "cluster_name": "upstream",
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {"socket_address": {
                "address": "127.0.0.1", "port_value": port}}}}]}],
        }),
        json!({
            "@type": "type.googleapis.com/envoy.config.listener.v3.Listener",
            "name": "main",
            "address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}},
            "filter_chains": [{"filters": [{
                "name": "envoy.filters.network.http_connection_manager",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                    "stat_prefix": "ingress",
                    "rds": {"route_config_name": "routes", "config_source": ads},
                    "http_filters": [
                        {"name": "envoy.filters.http.wasm", "typed_config": {
                            "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
                            "config": {
                                "name": "versioned", "root_id": "versioned_root",
                                "configuration": {"@type": "type.googleapis.com/google.protobuf.StringValue", "value": configuration},
                                "vm_config": {"vm_id": "versioned_vm", "runtime": "envoy.wasm.runtime.v8",
                                    "code": {"local": {"filename": "@PLUGINS@/header_filter.wasm"}}},
                            },
                        }},
                        {"name": "envoy.filters.http.router", "typed_config": {
                            "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}},
                    ],
                },
            }]}],
        }),
        json!({
            "@type": "type.googleapis.com/envoy.config.route.v3.RouteConfiguration",
            "name": "routes",
            "virtual_hosts": [{"name": "all", "domains": ["*"], "routes": [
                {"match": {"prefix": "/changed"}, "direct_response": {"status": 200, "body": {"inline_string": direct}}},
                {"match": {"prefix": "/"}, "route": {"cluster": "upstream"}},
            ]}],
        }),
    ];
    json!({"version": version, "resources": resources}).to_string()
}

/// A scenario on the ADS bootstrap, starting from the first snapshot.
fn xds(name: &'static str, about: &'static str, api_type: &str, requests: Vec<Request>) -> Scenario {
    Scenario {
        name,
        about,
        config: config::ads_bootstrap("conformance", api_type, "@XDS_PORT@"),
        requests,
        deliberate: None,
        known: None,
        stats: STATS,
        prometheus: &[],
        files: vec![(XDS, snapshot("1", "@UPSTREAM_PORT@", "1", "first"))],
    }
}

/// The first snapshot, then a route, the plugin's configuration and the endpoint changing.
fn changes() -> Vec<Request> {
    vec![
        Request::get("/changed"),
        Request::get("/w"),
        Request::get("/changed").after_update(XDS, snapshot("2", "@UPSTREAM_PORT@", "2", "second")),
        Request::get("/w"),
        Request::get("/c").after_update(XDS, snapshot("3", "1", "2", "second")),
    ]
}

/// The snapshot with the listener's Wasm filter configured by ECDS instead: the filter
/// `versioned` asks for its configuration, which comes as a resource of its own (its
/// module `module`).
fn ecds_snapshot(version: &str, plugin: &str, module: &str) -> String {
    let mut snapshot: Value =
        serde_json::from_str(&snapshot(version, "@UPSTREAM_PORT@", plugin, "first")).unwrap_or_default();
    let resources = snapshot["resources"].as_array_mut().expect("resources");
    let filter = &mut resources[2]["filter_chains"][0]["filters"][0]["typed_config"]["http_filters"][0];
    let mut typed_config = filter["typed_config"].take();
    typed_config["config"]["vm_config"]["code"]["local"]["filename"] = json!(format!("@PLUGINS@/{module}"));
    *filter = json!({
        "name": "versioned",
        "config_discovery": {
            "config_source": {"ads": {}, "resource_api_version": "V3"},
            "type_urls": ["type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm"],
        },
    });
    resources.push(json!({
        "@type": "type.googleapis.com/envoy.config.core.v3.TypedExtensionConfig",
        "name": "versioned",
        "typed_config": typed_config,
    }));
    snapshot.to_string()
}

/// The first snapshot with the cluster's endpoints under another name (`other`, at `port`
/// if given, else not in the snapshot yet): the changed cluster warms until they come.
fn renamed_endpoints(version: &str, port: Option<&str>) -> String {
    let mut snapshot: Value =
        serde_json::from_str(&snapshot(version, "@UPSTREAM_PORT@", "1", "first")).unwrap_or_default();
    let resources = snapshot["resources"].as_array_mut().expect("resources");
    resources[0]["eds_cluster_config"]["service_name"] = json!("other");
    if let Some(port) = port {
        let mut other = resources[1].clone();
        other["cluster_name"] = json!("other");
        other["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]["socket_address"]["port_value"] = json!(port);
        resources.push(other);
    }
    snapshot.to_string()
}

/// The first snapshot with a TCP listener instead (`main`, a TCP proxy to `upstream`),
/// its Wasm network filter `logger` configured by ECDS: the probe logging `<word>` for
/// each connection, as a filter of type `wasm_type` (`network` or `http`).
fn ecds_network_snapshot(version: &str, word: &str, wasm_type: &str) -> String {
    let mut snapshot: Value =
        serde_json::from_str(&snapshot(version, "@UPSTREAM_PORT@", "1", "first")).unwrap_or_default();
    let resources = snapshot["resources"].as_array_mut().expect("resources");
    resources.truncate(2);
    resources.push(json!({
        "@type": "type.googleapis.com/envoy.config.listener.v3.Listener",
        "name": "main",
        "address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}},
        "filter_chains": [{"filters": [
            {"name": "logger", "config_discovery": {
                "config_source": {"ads": {}, "resource_api_version": "V3"},
                "type_urls": ["type.googleapis.com/envoy.extensions.filters.network.wasm.v3.Wasm"],
            }},
            {"name": "envoy.filters.network.tcp_proxy", "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy",
                "stat_prefix": "tcp", "cluster": "upstream"}},
        ]}],
    }));
    let probe = json!({"kind": "stream", "phases": {"new_connection": [["log", "2", format!("connection {word}")]]}});
    resources.push(json!({
        "@type": "type.googleapis.com/envoy.config.core.v3.TypedExtensionConfig",
        "name": "logger",
        "typed_config": {
            "@type": format!("type.googleapis.com/envoy.extensions.filters.{wasm_type}.wasm.v3.Wasm"),
            "config": {
                "name": "logger", "root_id": "logger",
                "configuration": {"@type": "type.googleapis.com/google.protobuf.StringValue", "value": probe.to_string()},
                "vm_config": {"vm_id": "logger", "runtime": "envoy.wasm.runtime.v8",
                    "code": {"local": {"filename": "@PLUGINS@/probe.wasm"}}},
            },
        },
    }));
    snapshot.to_string()
}

/// The first snapshot with the listener's plugin fetched by URL (`code.remote`, with its
/// sha256) through the cluster `upstream`, which serves build `build` of the header filter.
fn remote_module_snapshot(version: &str, plugin: &str, build: u8) -> String {
    let mut snapshot: Value =
        serde_json::from_str(&snapshot(version, "@UPSTREAM_PORT@", plugin, "first")).unwrap_or_default();
    let module = upstream::module("header_filter.wasm", build).unwrap_or_default();
    let filter = &mut snapshot["resources"][2]["filter_chains"][0]["filters"][0]["typed_config"]["http_filters"][0];
    filter["typed_config"]["config"]["vm_config"]["code"] = json!({"remote": {
        "http_uri": {"uri": format!("http://modules.test/modules/{build}/header_filter.wasm"), "cluster": "upstream", "timeout": "5s"},
        "sha256": upstream::hex_sha256(&module),
    }});
    snapshot.to_string()
}

/// A snapshot whose listener neither proxy takes (a port past 65535).
fn refused() -> String {
    snapshot("2", "@UPSTREAM_PORT@", "2", "second").replace(r#""port_value":0"#, r#""port_value":70000"#)
}

/// The `dynamic-config-cp` example's snapshot: version 1 routes `/`, version 2 only `/v2`.
fn dynamic_config_cp_snapshot(version: &str) -> String {
    let prefix = if version == "1" { "/" } else { "/v2" };
    let resources = config::dynamic_config_cp_resources(json!("@UPSTREAM_PORT@"), prefix);
    json!({"node": "test-id", "version": version, "resources": resources}).to_string()
}

pub fn scenarios() -> Vec<Scenario> {
    vec![
        xds(
            "xds_ads_changes",
            "ADS (state of the world): the first snapshot, then routes, a plugin's configuration and endpoints \
             changing while serving",
            "GRPC",
            changes(),
        ),
        xds(
            "xds_delta_ads_changes",
            "ADS (delta): the first snapshot, then routes, a plugin's configuration and endpoints changing while \
             serving",
            "DELTA_GRPC",
            changes(),
        ),
        Scenario {
            files: vec![(XDS, remote_module_snapshot("1", "1", 0))],
            ..xds(
                "xds_remote_module",
                "code.remote: the listener's plugin fetched by URL through a cluster (checked against its sha256) \
                 before the listener serves; then a new build of the module pushed with its sha256 and fetched",
                "GRPC",
                vec![
                    Request::get("/w"),
                    Request::get("/sleep")
                        .after_update(XDS, remote_module_snapshot("2", "2", 1))
                        .once_stats_show("listener_manager.listener_modified: 1"),
                    Request::get("/sleep"),
                    Request::get("/w"),
                ],
            )
        },
        Scenario {
            // Not the attempts and failures: how many reconnections fail before the control
            // plane is back depends on when each proxy's back-off ends.
            stats: &[
                r"^listener_manager\.lds\.(update_(success|rejected)|version|version_text): ",
                r"^cluster_manager\.cds\.(update_(success|rejected)|version|version_text): ",
                r"^http\.ingress\.rds\.routes\.(update_(success|rejected)|version|version_text): ",
                r"^cluster\.upstream\.(update_(success|rejected)|version|version_text): ",
                r"^control_plane\.connected_state: ",
                r"^listener_manager\.(listener_(added|modified|removed)|total_listeners_active): ",
            ],
            ..xds(
                "xds_control_plane_restart",
                "ADS: the control plane goes away (the configuration keeps serving) and comes back on its port with \
                 a new snapshot; the proxy reconnects, names the versions it holds, and takes it",
                "GRPC",
                vec![
                    Request::get("/changed"),
                    Request::get("/changed")
                        .after_control_plane_restart(XDS, snapshot("2", "@UPSTREAM_PORT@", "2", "second")),
                    Request::get("/w"),
                ],
            )
        },
        xds(
            "xds_ads_nack",
            "ADS: a listener the proxy cannot take is NACKed; the last good configuration keeps serving",
            "GRPC",
            vec![Request::get("/changed"), Request::get("/changed").after_update(XDS, refused())],
        ),
        Scenario {
            stats: &[
                r"^cluster\.upstream\.(update_(attempt|success|rejected|failure)|version_text): ",
                r"^cluster_manager\.cds\.(update_(attempt|success|rejected|failure)|version_text): ",
                r"^cluster_manager\.(cluster_(added|removed)|active_clusters|warming_clusters): ",
            ],
            ..xds(
                "xds_eds_cluster_warming",
                "EDS warming: a cluster changed to endpoints not sent yet keeps serving its last version until they \
                 come, then serves them",
                "GRPC",
                vec![
                    Request::get("/w"),
                    Request::get("/w").after_update(XDS, renamed_endpoints("2", None)),
                    Request::get("/w").after_update(XDS, renamed_endpoints("3", Some("1"))),
                ],
            )
        },
        Scenario {
            stats: &[
                r"^extension_config_discovery\.http_filter\.versioned\.(update_(attempt|success|rejected|failure)|config_(reload|fail)|version_text): ",
                r"^listener_manager\.lds\.(update_(attempt|success|rejected|failure)|version_text): ",
                r"^listener_manager\.(listener_(added|modified|removed)|total_listeners_active): ",
            ],
            files: vec![(XDS, ecds_snapshot("1", "1", "header_filter.wasm"))],
            ..xds(
                "xds_ecds_wasm_filter",
                "ECDS: a Wasm filter's configuration by ADS, changed while serving; one whose module is missing is \
                 NACKed and the last good one serves",
                "GRPC",
                vec![
                    Request::get("/w"),
                    Request::get("/w").after_update(XDS, ecds_snapshot("2", "2", "header_filter.wasm")),
                    Request::get("/w").after_update(XDS, ecds_snapshot("3", "3", "missing.wasm")),
                ],
            )
        },
        Scenario {
            stats: &[
                r"^extension_config_discovery\.network_filter\.logger\.(update_(attempt|success|rejected|failure)|config_(reload|fail)|version_text): ",
                r"^listener_manager\.lds\.(update_(attempt|success|rejected|failure)|version_text): ",
            ],
            files: vec![(XDS, ecds_network_snapshot("1", "one", "network"))],
            deliberate: Some(
                "Envoy 1.40 builds a network filter's new ECDS configuration twice (an extra root context \
                 started, configured and later done, and two old ones done): wasmproxy builds it once, as Envoy \
                 does for an HTTP filter's; the connections, what the plugin sees in them, the stats and the \
                 discovery requests are Envoy's",
            ),
            ..xds(
                "xds_ecds_network_filter",
                "ECDS: a Wasm network filter's configuration by ADS, changed while serving; an HTTP filter's \
                 configuration for it is NACKed and the last good one serves",
                "GRPC",
                vec![
                    Request::raw("GET /tcp1 HTTP/1.1\r\nhost: tcp.test\r\n\r\n"),
                    Request::raw("GET /tcp2 HTTP/1.1\r\nhost: tcp.test\r\n\r\n")
                        .after_update(XDS, ecds_network_snapshot("2", "two", "network")),
                    Request::raw("GET /tcp3 HTTP/1.1\r\nhost: tcp.test\r\n\r\n")
                        .after_update(XDS, ecds_network_snapshot("3", "three", "http")),
                ],
            )
        },
        Scenario {
            name: "xds_dynamic_config_cp_example",
            about: "Envoy's dynamic-config-cp example against its control plane's snapshot: clusters and listeners \
                    by ADS, the listener's routes on an RDS stream of their own; then the routes change",
            config: config::dynamic_config_cp("@XDS_PORT@"),
            requests: vec![
                Request::get("/x"),
                Request::get("/x").after_update(XDS, dynamic_config_cp_snapshot("2")),
                Request::get("/v2"),
            ],
            deliberate: None,
            known: None,
            stats: &[
                r"^http\.http\.rds\.local_route\.(update_(attempt|success|rejected|failure)|version|version_text): ",
                r"^cluster_manager\.cds\.(update_(attempt|success|rejected|failure)|version_text): ",
                r"^listener_manager\.lds\.(update_(attempt|success|rejected|failure)|version_text): ",
            ],
            prometheus: &[],
            files: vec![(XDS, dynamic_config_cp_snapshot("1"))],
        },
    ]
}
