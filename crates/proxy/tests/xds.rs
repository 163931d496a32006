//! Configuration from a real xDS control plane (go-control-plane, `tools/xds/control-plane`,
//! built by `scripts/build-control-plane.sh`) over ADS: clusters, endpoints, listeners and
//! routes pushed while serving, a resource the proxy must NACK, and the control plane going
//! away and coming back, against the real server on port 0, real upstreams and a real
//! plugin.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use wasmproxy_proxy::{RunningServer, Server, ServerOptions};

use common::{answering, body, get, listener_addr, plugin, stat, until, upstream};

const NODE: &str = "proxy-1";
const CLUSTER: &str = "type.googleapis.com/envoy.config.cluster.v3.Cluster";
const LISTENER: &str = "type.googleapis.com/envoy.config.listener.v3.Listener";

/// The control plane, serving the node `NODE`.
struct ControlPlane {
    inner: wasmproxy_conformance::control_plane::ControlPlane,
    xds: u16,
}

impl ControlPlane {
    fn start(xds_port: u16) -> ControlPlane {
        let inner = wasmproxy_conformance::control_plane::ControlPlane::start(xds_port).unwrap();
        ControlPlane { xds: inner.xds_port, inner }
    }

    fn set(&self, version: &str, resources: &[Value]) {
        self.inner.set(NODE, version, resources).unwrap();
    }

    fn requests(&self) -> Vec<Value> {
        self.inner.requests()
    }
}

fn bootstrap(xds_port: u16, delta: bool) -> String {
    let api_type = if delta { "DELTA_GRPC" } else { "GRPC" };
    wasmproxy_conformance::config::ads_bootstrap(NODE, api_type, &xds_port.to_string())
}

/// An EDS cluster `backend` from ADS.
fn cluster() -> Value {
    json!({
        "@type": CLUSTER,
        "name": "backend",
        "type": "EDS",
        "connect_timeout": "1s",
        "eds_cluster_config": {"eds_config": {"ads": {}, "resource_api_version": "V3"}},
    })
}

fn endpoints(upstream: SocketAddr) -> Value {
    json!({
        "@type": "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment",
        "cluster_name": "backend",
        "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {"socket_address": {
            "address": "127.0.0.1", "port_value": upstream.port()}}}}]}],
    })
}

/// A listener on port 0 whose routes come from ADS (`routes`), through the talk demo's
/// plugin configured with `headers`.
fn listener(headers: &str, module: &Path) -> Value {
    json!({
        "@type": LISTENER,
        "name": "http",
        "address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}},
        "filter_chains": [{"filters": [{
            "name": "envoy.filters.network.http_connection_manager",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                "stat_prefix": "ingress",
                "rds": {"route_config_name": "routes", "config_source": {"ads": {}, "resource_api_version": "V3"}},
                "http_filters": [
                    {"name": "envoy.filters.http.wasm", "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
                        "config": {
                            "name": "demo",
                            "configuration": {"@type": "type.googleapis.com/google.protobuf.StringValue", "value": headers},
                            "vm_config": {"code": {"local": {"filename": module.display().to_string()}}},
                        },
                    }},
                    {"name": "envoy.filters.http.router", "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}},
                ],
            },
        }]}],
    })
}

/// Routes: `/direct` answers `direct`, the rest goes to `backend`.
fn routes(direct: &str) -> Value {
    routes_named("routes", direct)
}

fn routes_named(name: &str, direct: &str) -> Value {
    json!({
        "@type": "type.googleapis.com/envoy.config.route.v3.RouteConfiguration",
        "name": name,
        "virtual_hosts": [{"name": "all", "domains": ["*"], "routes": [
            {"match": {"prefix": "/direct"}, "direct_response": {"status": 200, "body": {"inline_string": direct}}},
            {"match": {"prefix": "/"}, "route": {"cluster": "backend"}},
        ]}],
    })
}

fn start(xds_port: u16, delta: bool) -> RunningServer {
    let config =
        wasmproxy_config::load_str(&bootstrap(xds_port, delta), Path::new(".")).unwrap_or_else(|e| panic!("{e}"));
    Server::start(config, ServerOptions { concurrency: 2, ..Default::default() }).unwrap()
}

/// Waits (at most 40 s: a reconnection may back off for a while) until `ready` holds.
fn eventually(what: &str, ready: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(40);
    while !ready() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_control_plane_drives_the_configuration_over_ads() {
    drive(false);
}

#[test]
fn a_control_plane_drives_the_configuration_over_delta_ads() {
    drive(true);
}

/// Clusters, endpoints, listeners and routes pushed while serving; a NACK; the control plane
/// restarting; in the state-of-the-world protocol or the delta one.
fn drive(delta: bool) {
    let (a, b) = (upstream("a"), upstream("b"));
    let demo = plugin("talk_demo.wasm");
    let plane = ControlPlane::start(0);
    plane.set("1", &[cluster(), endpoints(a), listener("x-demo=one", &demo), routes("v1")]);

    // Start-up waits for the first clusters, listeners and the listener's routes.
    let server = start(plane.xds, delta);
    let http = server.listeners.iter().find(|(n, _)| n == "http").expect("the listener from ADS is served").1;
    let first = get(http, "/x");
    assert!(first.starts_with("HTTP/1.1 200") && body(&first) == "a /x", "{first}");
    assert!(first.contains("x-demo: one"), "{first}");
    assert_eq!(body(&get(http, "/direct")), "v1");
    assert_eq!(stat(&server, "control_plane.connected_state"), 1);
    assert_eq!(stat(&server, "listener_manager.lds.update_success"), 1);
    assert_eq!(stat(&server, "cluster_manager.cds.update_success"), 1);
    assert_eq!(stat(&server, "http.ingress.rds.routes.update_success"), 1);
    assert_eq!(stat(&server, "cluster.backend.update_success"), 1);
    // `/config_dump` shows what came, with its version.
    let dump: Value = serde_json::from_str(&common::admin_get(&server, "/config_dump")).unwrap();
    let dumped = &dump["configs"][3]["dynamic_route_configs"][0];
    assert_eq!((dumped["version_info"].as_str(), dumped["route_config"]["name"].as_str()), (Some("1"), Some("routes")));
    let dumped = &dump["configs"][2]["dynamic_listeners"][0];
    assert_eq!(dumped["active_state"]["listener"]["name"], "http");

    // The node goes on the first request; every type is ACKed with its nonce (and, in the
    // state of the world, its version).
    let requests = plane.requests();
    assert_eq!(requests[0]["type_url"], CLUSTER, "CDS is asked for first: {requests:?}");
    assert_eq!(requests[0]["node"], NODE);
    assert!(requests.iter().all(|r| r["delta"] == delta), "{requests:?}");
    for kind in ["Cluster", "ClusterLoadAssignment", "Listener", "RouteConfiguration"] {
        let acked = requests.iter().any(|r| {
            r["type_url"].as_str().unwrap().ends_with(&format!(".{kind}"))
                && (delta || r["version_info"] == "1")
                && !r["response_nonce"].as_str().unwrap().is_empty()
                && r.get("error_detail").is_none()
        });
        assert!(acked, "{kind} not ACKed: {requests:?}");
    }
    let subscribed = |kind: &str| {
        requests
            .iter()
            .any(|r| r["type_url"].as_str().unwrap().ends_with(kind) && r["resource_names"] == json!([kind_name(kind)]))
    };
    assert!(subscribed("RouteConfiguration") && subscribed("ClusterLoadAssignment"), "{requests:?}");

    // Routes, endpoints and the plugin's configuration change while serving.
    plane.set("2", &[cluster(), endpoints(b), listener("x-demo=one", &demo), routes("v2")]);
    let answer = until(|| get(http, "/direct"), |a| body(a) == "v2");
    assert_eq!(body(&answer), "v2");
    let answer = until(|| get(http, "/y"), |a| body(a) == "b /y");
    assert_eq!(body(&answer), "b /y", "{answer}");

    // A listener wasmproxy refuses is NACKed, naming the field; the last good one serves.
    let mut bad = listener("x-demo=two", &demo);
    bad["filter_chains"][0]["filters"][0]["typed_config"]["http_filters"][0]["typed_config"]["config"]["vm_config"]["runtime"] =
        json!("envoy.wasm.runtime.v8_but_not_really");
    plane.set("3", &[cluster(), endpoints(b), bad, routes("v2")]);
    eventually("the NACK", || {
        plane.requests().iter().any(|r| r["type_url"] == LISTENER && r.get("error_detail").is_some())
    });
    let nack = plane.requests().into_iter().find(|r| r["type_url"] == LISTENER && r.get("error_detail").is_some());
    let nack = nack.unwrap();
    if !delta {
        assert_eq!(nack["version_info"], "2", "a NACK carries the last good version: {nack}");
    }
    let detail = nack["error_detail"].as_str().unwrap();
    assert!(detail.contains("vm_config.runtime"), "{detail}");
    assert_eq!(stat(&server, "listener_manager.lds.update_rejected"), 1);
    assert!(get(http, "/z").contains("x-demo: one"));

    // The control plane goes away: the configuration stays; it comes back (same port) with
    // a new snapshot, and the proxy takes it.
    let xds_port = plane.xds;
    drop(plane);
    eventually("the disconnection", || stat(&server, "control_plane.connected_state") == 0);
    // (The stream's thread tells of the failure; the configuration thread counts it.)
    eventually("the failure counted", || stat(&server, "listener_manager.lds.update_failure") >= 1);
    assert_eq!(body(&get(http, "/direct")), "v2");
    let plane = ControlPlane::start(xds_port);
    plane.set("4", &[cluster(), endpoints(a), listener("x-demo=four", &demo), routes("v4")]);
    if delta {
        // On the new stream, the resources held are named with their versions.
        eventually("the new stream", || plane.requests().iter().any(|r| r["type_url"] == LISTENER));
        let requests = plane.requests();
        let lds = requests.iter().find(|r| r["type_url"] == LISTENER).unwrap();
        assert!(lds["initial_versions"]["http"].is_string(), "{requests:?}");
    }
    eventually("the new snapshot", || body(&get(http_of(&server), "/direct")) == "v4");
    let answer = get(http_of(&server), "/w");
    assert!(body(&answer) == "a /w" && answer.contains("x-demo: four"), "{answer}");
    if !delta {
        // On the new stream, the versions held are sent back: the clusters of snapshot 3,
        // the listeners of snapshot 2 (3's were NACKed).
        let requests = plane.requests();
        assert_eq!(requests[0]["type_url"], CLUSTER);
        assert_eq!(requests[0]["version_info"], "3", "{requests:?}");
        let lds = requests.iter().find(|r| r["type_url"] == LISTENER).unwrap();
        assert_eq!(lds["version_info"], "2", "{requests:?}");
    }
    server.stop();
}

/// The one resource of each named kind in these snapshots.
fn kind_name(kind: &str) -> &'static str {
    if kind == "RouteConfiguration" { "routes" } else { "backend" }
}

#[test]
fn a_changed_listener_warms_until_its_routes_come() {
    let a = upstream("a");
    let demo = plugin("talk_demo.wasm");
    let plane = ControlPlane::start(0);
    plane.set("1", &[cluster(), endpoints(a), listener("x-demo=one", &demo), routes("v1")]);
    let server = start(plane.xds, false);
    let http = http_of(&server);
    assert_eq!(body(&get(http, "/direct")), "v1");

    // The listener now takes routes that do not exist yet: until they come, the last
    // version of the listener keeps serving (no drain, no 404).
    let mut next = listener("x-demo=one", &demo);
    next["filter_chains"][0]["filters"][0]["typed_config"]["rds"] = json!({
        "route_config_name": "next",
        "config_source": {"ads": {}, "initial_fetch_timeout": "1.5s"},
    });
    plane.set("2", &[cluster(), endpoints(a), next.clone(), routes("v1")]);
    // (The old version's routes stay subscribed while it serves.)
    eventually("the RDS request for the new routes", || {
        plane.requests().iter().any(|r| r["resource_names"] == json!(["next", "routes"]))
    });
    let asked = Instant::now();
    while asked.elapsed() < Duration::from_millis(500) {
        assert_eq!(body(&get(http, "/direct")), "v1", "the warming listener's last version serves");
    }
    // Past its initial_fetch_timeout, it serves without them, as Envoy: no route.
    let answer = until(|| get(http_of(&server), "/direct"), |a| a.starts_with("HTTP/1.1 404"));
    assert!(answer.starts_with("HTTP/1.1 404"), "{answer}");
    assert!(asked.elapsed() >= Duration::from_millis(1000), "it waited for initial_fetch_timeout");
    // They come: they serve. (A snapshot in go-control-plane's ADS mode holds only the
    // routes the proxy asks for.)
    plane.set("3", &[cluster(), endpoints(a), next, routes_named("next", "v3")]);
    let answer = until(|| get(http_of(&server), "/direct"), |a| body(a) == "v3");
    assert_eq!(body(&answer), "v3");
    server.stop();
}

#[test]
fn a_cluster_warms_until_its_endpoints_come() {
    let (a, b) = (upstream("a"), upstream("b"));
    let demo = plugin("talk_demo.wasm");
    let plane = ControlPlane::start(0);
    // The cluster's endpoints are not in the first snapshot: start-up waits for them up to
    // the cluster's initial_fetch_timeout, then the cluster serves without (503).
    let mut waiting = cluster();
    waiting["eds_cluster_config"]["eds_config"]["initial_fetch_timeout"] = json!("1s");
    plane.set("1", &[waiting.clone(), listener("x-demo=one", &demo), routes("v1")]);
    let started = Instant::now();
    let server = start(plane.xds, false);
    assert!(started.elapsed() >= Duration::from_millis(900), "start-up waited for the endpoints");
    assert!(get(http_of(&server), "/x").starts_with("HTTP/1.1 503"));
    assert_eq!(stat(&server, "cluster_manager.warming_clusters"), 0);

    plane.set("2", &[cluster(), endpoints(a), listener("x-demo=one", &demo), routes("v1")]);
    let answer = until(|| get(http_of(&server), "/x"), |a| body(a) == "a /x");
    assert_eq!(body(&answer), "a /x");

    // The cluster now takes its endpoints by another name, not sent yet: it warms (for
    // ever: no initial_fetch_timeout), and its last version serves meanwhile.
    let mut renamed = cluster();
    renamed["eds_cluster_config"]["service_name"] = json!("renamed");
    renamed["eds_cluster_config"]["eds_config"]["initial_fetch_timeout"] = json!("0s");
    plane.set("3", &[renamed.clone(), endpoints(a), listener("x-demo=one", &demo), routes("v1")]);
    eventually("the cluster warming", || stat(&server, "cluster_manager.warming_clusters") == 1);
    assert_eq!(body(&get(http_of(&server), "/x")), "a /x", "the warming cluster's last version serves");
    let mut to_b = endpoints(b);
    to_b["cluster_name"] = json!("renamed");
    plane.set("4", &[renamed, endpoints(a), to_b, listener("x-demo=one", &demo), routes("v1")]);
    let answer = until(|| get(http_of(&server), "/x"), |a| body(a) == "b /x");
    assert_eq!(body(&answer), "b /x");
    assert_eq!(stat(&server, "cluster_manager.warming_clusters"), 0);
    server.stop();
}

/// A listener `name` whose first HTTP filter is `filter`, configured by ECDS (ADS) within
/// `timeout`, then the router; its routes from ADS (`routes`).
fn discovering_listener(name: &str, filter: &str, timeout: &str) -> Value {
    let mut l = listener("unused", Path::new("/unused"));
    l["name"] = json!(name);
    l["filter_chains"][0]["filters"][0]["typed_config"]["http_filters"][0] = json!({
        "name": filter,
        "config_discovery": {
            "config_source": {"ads": {}, "initial_fetch_timeout": timeout},
            "type_urls": ["type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm"],
        },
    });
    l
}

/// An ECDS resource: the talk demo's plugin named `name`, configured with `headers`.
fn extension(name: &str, headers: &str, module: &Path) -> Value {
    json!({
        "@type": "type.googleapis.com/envoy.config.core.v3.TypedExtensionConfig",
        "name": name,
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
            "config": {
                "name": "demo",
                "configuration": {"@type": "type.googleapis.com/google.protobuf.StringValue", "value": headers},
                "vm_config": {"code": {"local": {"filename": module.display().to_string()}}},
            },
        },
    })
}

#[test]
fn a_wasm_filters_configuration_comes_by_ecds() {
    let a = upstream("a");
    let demo = plugin("talk_demo.wasm");
    let plane = ControlPlane::start(0);
    let base = || vec![cluster(), endpoints(a), discovering_listener("http", "demo", "15s"), routes("v1")];
    let with = |extra: Vec<Value>| base().into_iter().chain(extra).collect::<Vec<_>>();
    plane.set("1", &with(vec![extension("demo", "x-demo=one", &demo)]));
    // Start-up waits for the filter's configuration too.
    let server = start(plane.xds, false);
    let http = http_of(&server);
    let answer = get(http, "/x");
    assert!(body(&answer) == "a /x" && answer.contains("x-demo: one"), "{answer}");
    assert_eq!(stat(&server, "extension_config_discovery.http_filter.demo.config_reload"), 1);
    assert_eq!(stat(&server, "extension_config_discovery.http_filter.demo.update_success"), 1);
    let dump: Value = serde_json::from_str(&common::admin_get(&server, "/config_dump")).unwrap();
    let ecds =
        dump["configs"].as_array().unwrap().iter().find(|c| c["@type"].as_str().unwrap().ends_with("EcdsConfigDump"));
    assert_eq!(ecds.unwrap()["ecds_filters"][0]["ecds_filter"]["name"], "demo");

    // A new configuration: new streams get it.
    plane.set("2", &with(vec![extension("demo", "x-demo=two", &demo)]));
    let answer = until(|| get(http_of(&server), "/y"), |a| a.contains("x-demo: two"));
    assert!(answer.contains("x-demo: two"), "{answer}");

    // One wasmproxy cannot take (a module that is not there) is NACKed; the last serves.
    plane.set("3", &with(vec![extension("demo", "x-demo=three", Path::new("/nonexistent.wasm"))]));
    eventually("the ECDS NACK", || {
        plane.requests().iter().any(|r| {
            r["type_url"].as_str().unwrap().ends_with("TypedExtensionConfig") && r.get("error_detail").is_some()
        })
    });
    assert_eq!(stat(&server, "extension_config_discovery.http_filter.demo.config_fail"), 1);
    assert!(get(http_of(&server), "/z").contains("x-demo: two"));

    // A filter whose configuration never comes: past its initial_fetch_timeout, its
    // listener serves, and every request gets 500 (no default configuration).
    let mut four = with(vec![extension("demo", "x-demo=two", &demo)]);
    four.push(discovering_listener("other", "absent", "1s"));
    plane.set("4", &four);
    let other = || listener_addr(&server, "other");
    let started = Instant::now();
    eventually("the listener whose filter has no configuration", || other().is_some());
    assert!(started.elapsed() >= Duration::from_millis(800), "it warmed for initial_fetch_timeout first");
    let answer = get(other().unwrap(), "/x");
    assert!(answer.starts_with("HTTP/1.1 500"), "{answer}");
    assert!(get(http_of(&server), "/z").contains("x-demo: two"));
    server.stop();
}

/// A TCP listener `tcp` whose network filter `rewriter` is configured by ECDS (ADS, within
/// `timeout`), then a TCP proxy to the cluster `backend`.
fn discovering_tcp_listener(timeout: &str) -> Value {
    json!({
        "@type": LISTENER,
        "name": "tcp",
        "address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}},
        "filter_chains": [{"filters": [
            {"name": "rewriter", "config_discovery": {
                "config_source": {"ads": {}, "initial_fetch_timeout": timeout},
                "type_urls": ["type.googleapis.com/envoy.extensions.filters.network.wasm.v3.Wasm"],
            }},
            {"name": "envoy.filters.network.tcp_proxy", "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy",
                "stat_prefix": "tcp", "cluster": "backend"}},
        ]}],
    })
}

/// An ECDS resource `rewriter`: the probe plugin as a network filter putting `prefix` in
/// front of what the client sends.
fn network_extension(prefix: &str) -> Value {
    let probe = json!({"kind": "stream", "phases": {"downstream_data": [["set_buffer", "2", "0", "0", prefix]]}});
    json!({
        "@type": "type.googleapis.com/envoy.config.core.v3.TypedExtensionConfig",
        "name": "rewriter",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.network.wasm.v3.Wasm",
            "config": {
                "name": "rewriter",
                "configuration": {"@type": "type.googleapis.com/google.protobuf.StringValue", "value": probe.to_string()},
                "vm_config": {"code": {"local": {"filename": plugin("probe.wasm").display().to_string()}}},
            },
        },
    })
}

/// Sends `hello` through the TCP listener and answers what the echo sent back.
fn echoed(server: &RunningServer) -> String {
    use std::io::{Read, Write};
    let Some(addr) = listener_addr(server, "tcp") else { return String::new() };
    let Ok(mut stream) = std::net::TcpStream::connect(addr) else { return String::new() };
    stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let _ = stream.write_all(b"hello");
    let _ = stream.shutdown(std::net::Shutdown::Write);
    let mut echoed = Vec::new();
    let _ = stream.read_to_end(&mut echoed);
    String::from_utf8_lossy(&echoed).into_owned()
}

#[test]
fn a_wasm_network_filters_configuration_comes_by_ecds() {
    let echo = common::echo_upstream();
    let plane = ControlPlane::start(0);
    let with = |extra: Vec<Value>| {
        let mut all = vec![cluster(), endpoints(echo), discovering_tcp_listener("15s")];
        all.extend(extra);
        all
    };
    plane.set("1", &with(vec![network_extension("<")]));
    let server = start(plane.xds, false);
    assert_eq!(echoed(&server), "<hello");
    assert_eq!(stat(&server, "extension_config_discovery.network_filter.rewriter.update_success"), 1);

    // A new configuration: new connections get it.
    plane.set("2", &with(vec![network_extension("[")]));
    assert_eq!(until(|| echoed(&server), |e| e == "[hello"), "[hello");

    // An HTTP filter's configuration for it is refused (NACKed); the last one serves.
    let mut http = network_extension("(");
    http["typed_config"]["@type"] = json!("type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm");
    plane.set("3", &with(vec![http]));
    eventually("the ECDS NACK", || {
        plane.requests().iter().any(|r| {
            r["type_url"].as_str().unwrap().ends_with("TypedExtensionConfig")
                && r["error_detail"].as_str().is_some_and(|m| m.contains("network.wasm.v3.Wasm"))
        })
    });
    assert_eq!(stat(&server, "extension_config_discovery.network_filter.rewriter.update_rejected"), 1);
    assert_eq!(echoed(&server), "[hello");
    server.stop();

    // A filter whose configuration never comes: past its initial_fetch_timeout the
    // listener serves, and closes every connection (Envoy's missing-configuration filter).
    plane.set("4", &[cluster(), endpoints(echo), discovering_tcp_listener("0.5s")]);
    let server = start(plane.xds, false);
    assert!(listener_addr(&server, "tcp").is_some(), "the listener serves");
    assert_eq!(echoed(&server), "", "closed at once");
    server.stop();
}

/// An upstream answering each request with the `host` it was sent.
fn host_upstream() -> SocketAddr {
    answering(|head| {
        let head = head.to_lowercase();
        head.lines().find_map(|l| l.strip_prefix("host: ")).unwrap_or("").trim().to_string()
    })
}

#[test]
fn envoys_dynamic_config_cp_example_runs_against_the_control_plane() {
    let upstream = host_upstream();
    let plane = ControlPlane::start(0);
    // Envoy's `dynamic-config-cp` example, unchanged apart from addresses, and what its
    // control plane serves.
    let resources = wasmproxy_conformance::config::dynamic_config_cp_resources(json!(upstream.port()), "/");
    plane.inner.set("test-id", "1", &resources).unwrap();
    let yaml = wasmproxy_conformance::config::dynamic_config_cp(&plane.xds.to_string());
    let config = wasmproxy_config::load_str(&yaml, Path::new(".")).unwrap_or_else(|e| panic!("{e}"));
    let server = Server::start(config, ServerOptions { concurrency: 2, ..Default::default() }).unwrap();
    let listener = server.listeners.iter().find(|(n, _)| n == "listener_0").expect("listener_0 is served").1;
    let answer = get(listener, "/");
    assert!(answer.starts_with("HTTP/1.1 200") && body(&answer) == "www.envoyproxy.io", "{answer}");
    // The routes came on a stream of their own (the control plane counts two streams: ADS
    // and RDS) and were ACKed.
    let requests = plane.requests();
    let rds: Vec<&Value> =
        requests.iter().filter(|r| r["type_url"].as_str().unwrap().ends_with("RouteConfiguration")).collect();
    assert_eq!(rds[0]["resource_names"], json!(["local_route"]), "{requests:?}");
    assert_eq!((rds[1]["version_info"].as_str(), rds[1]["response_nonce"].as_str()), (Some("1"), Some("1")));
    assert_eq!(plane.inner.streams(), 2);
    assert_eq!(stat(&server, "http.http.rds.local_route.update_success"), 1);
    server.stop();
}

/// The `http` listener's address now (a changed listener may be bound anew).
fn http_of(server: &RunningServer) -> SocketAddr {
    listener_addr(server, "http").unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 1)))
}
