//! Configuration from a real xDS control plane (go-control-plane, `tools/xds/control-plane`,
//! built by `scripts/build-control-plane.sh`) over ADS: clusters, endpoints, listeners and
//! routes pushed while serving, a resource the proxy must NACK, and the control plane going
//! away and coming back, against the real server on port 0, real upstreams and a real
//! plugin.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use wasmproxy_proxy::{RunningServer, Server, ServerOptions};

use common::{body, get, plugin, stat, until, upstream};

const NODE: &str = "proxy-1";
const CLUSTER: &str = "type.googleapis.com/envoy.config.cluster.v3.Cluster";
const LISTENER: &str = "type.googleapis.com/envoy.config.listener.v3.Listener";

/// The control plane, a child process killed when dropped.
struct ControlPlane {
    child: Child,
    xds: u16,
    api: SocketAddr,
}

impl ControlPlane {
    /// Starts it with ADS on `xds_port` (0: any).
    fn start(xds_port: u16) -> ControlPlane {
        let binary = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/xds-control-plane");
        assert!(binary.exists(), "{} is missing: run scripts/build-control-plane.sh", binary.display());
        let mut child = Command::new(binary)
            .arg(format!("--xds-port={xds_port}"))
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        let port = |key: &str| -> u16 {
            let word = line.split_whitespace().find_map(|w| w.strip_prefix(key)).unwrap_or_else(|| panic!("{line}"));
            word.parse().unwrap()
        };
        ControlPlane { xds: port("xds="), api: SocketAddr::from(([127, 0, 0, 1], port("api="))), child }
    }

    fn http(&self, method: &str, path: &str, body: &str) -> String {
        let mut stream = TcpStream::connect(self.api).unwrap();
        write!(
            stream,
            "{method} {path} HTTP/1.0\r\nhost: cp\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut text = String::new();
        stream.read_to_string(&mut text).unwrap();
        text
    }

    /// Serves this snapshot to the node.
    fn set(&self, version: &str, resources: &[Value]) {
        let snapshot = json!({"version": version, "resources": resources}).to_string();
        let answer = self.http("PUT", &format!("/snapshot?node={NODE}"), &snapshot);
        assert!(answer.starts_with("HTTP/1.0 204"), "{answer}");
    }

    /// Every discovery request received so far.
    fn requests(&self) -> Vec<Value> {
        let text = self.http("GET", "/requests", "");
        body(&text).lines().filter(|l| l.starts_with('{')).map(|l| serde_json::from_str(l).unwrap()).collect()
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn bootstrap(xds_port: u16, delta: bool) -> String {
    let api_type = if delta { "DELTA_GRPC" } else { "GRPC" };
    format!(
        r#"
node: {{ id: {NODE}, cluster: test }}
admin: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: 0 }} }} }}
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
    assert_eq!(body(&get(http, "/direct")), "v2");
    assert!(stat(&server, "listener_manager.lds.update_failure") >= 1);
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
    eventually("the RDS request for the new routes", || {
        plane.requests().iter().any(|r| r["resource_names"] == json!(["next"]))
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

/// The `http` listener's address now (a changed listener may be bound anew).
fn http_of(server: &RunningServer) -> SocketAddr {
    let text = get(server.admin.unwrap(), "/listeners");
    body(&text)
        .lines()
        .find_map(|l| l.strip_prefix("http::"))
        .map(|a| a.parse().unwrap())
        .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 1)))
}
