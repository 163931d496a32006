//! Configuration that changes while serving: listeners (LDS) and clusters (CDS) from
//! files, rewritten between requests as an operator would (a new file moved into place),
//! against the real server on port 0, real upstreams and a real plugin.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use wasmproxy_host::{Compiler, EngineConfig};
use wasmproxy_proxy::{RunningServer, Server, ServerOptions};

use common::{body, get, plugin, replace, until, upstream};

fn cds(version: &str, upstream: SocketAddr) -> String {
    format!(
        r#"version_info: "{version}"
resources:
- "@type": type.googleapis.com/envoy.config.cluster.v3.Cluster
  name: backend
  type: STATIC
  load_assignment:
    cluster_name: backend
    endpoints:
    - lb_endpoints:
      - endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {} }} }} }}
"#,
        upstream.port()
    )
}

/// A listener `name` on port 0: `/direct` answers `direct`, the rest goes to `backend`
/// through the talk demo's plugin configured with `headers` (`key=value` lines).
fn listener(name: &str, direct: &str, module: &Path, headers: &str) -> String {
    format!(
        r#"- "@type": type.googleapis.com/envoy.config.listener.v3.Listener
  name: {name}
  address: {{ socket_address: {{ address: 127.0.0.1, port_value: 0 }} }}
  filter_chains:
  - filters:
    - name: envoy.filters.network.http_connection_manager
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
        stat_prefix: {name}
        route_config:
          virtual_hosts:
          - name: all
            domains: ["*"]
            routes:
            - match: {{ prefix: /direct }}
              direct_response: {{ status: 200, body: {{ inline_string: "{direct}" }} }}
            - match: {{ prefix: / }}
              route: {{ cluster: backend }}
        http_filters:
        - name: envoy.filters.http.wasm
          typed_config:
            "@type": type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm
            config:
              name: demo
              configuration: {{ "@type": type.googleapis.com/google.protobuf.StringValue, value: "{headers}" }}
              vm_config: {{ code: {{ local: {{ filename: "{}" }} }} }}
        - name: envoy.filters.http.router
          typed_config: {{ "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router }}
"#,
        module.display()
    )
}

fn lds(version: &str, listeners: &[String]) -> String {
    format!("version_info: \"{version}\"\nresources:\n{}", listeners.concat())
}

fn start(dir: &Path) -> RunningServer {
    start_with(dir, EngineConfig::default())
}

/// [`start`] with these engine settings.
fn start_with(dir: &Path, engine: EngineConfig) -> RunningServer {
    let yaml = format!(
        r#"
admin: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: 0 }} }} }}
dynamic_resources:
  lds_config: {{ path_config_source: {{ path: "{}" }} }}
  cds_config: {{ path_config_source: {{ path: "{}" }} }}
"#,
        dir.join("lds.yaml").display(),
        dir.join("cds.yaml").display()
    );
    let config = wasmproxy_config::load_str(&yaml, Path::new(".")).unwrap_or_else(|e| panic!("{e}"));
    let options = ServerOptions { concurrency: 2, drain_time: Duration::from_secs(2), engine, ..Default::default() };
    Server::start(config, options).unwrap()
}

/// A counter or gauge on admin `/stats` (0 if absent).
fn stat(server: &RunningServer, name: &str) -> u64 {
    let stats = get(server.admin.unwrap(), &format!("/stats?filter=^{name}$"));
    let line = body(&stats).lines().find(|l| l.starts_with(&format!("{name}: "))).unwrap_or("");
    line.rsplit(' ').next().and_then(|v| v.parse().ok()).unwrap_or(0)
}

/// Each bound listener's address, from admin `/listeners`.
fn listeners(server: &RunningServer) -> Vec<(String, SocketAddr)> {
    let text = get(server.admin.unwrap(), "/listeners");
    body(&text)
        .lines()
        .filter_map(|l| l.split_once("::"))
        .map(|(name, addr)| (name.to_string(), addr.parse().unwrap()))
        .collect()
}

fn work_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("wasmproxy-dynamic-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn clusters_routes_plugins_and_listeners_change_while_serving() {
    let (a, b) = (upstream("a"), upstream("b"));
    let dir = work_dir("changes");
    let demo = plugin("talk_demo.wasm");
    replace(&dir.join("cds.yaml"), cds("c1", a));
    replace(&dir.join("lds.yaml"), lds("l1", &[listener("main", "v1", &demo, "x-demo=one")]));
    let server = start(&dir);
    let main = server.listeners.iter().find(|(n, _)| n == "main").expect("the LDS listener is bound").1;
    let first = get(main, "/x");
    assert_eq!(body(&first), "a /x", "{first}");
    assert!(first.contains("x-demo: one"), "{first}");
    assert_eq!(body(&get(main, "/direct")), "v1");
    assert_eq!(
        (stat(&server, "cluster_manager.cds.update_success"), stat(&server, "listener_manager.lds.update_success")),
        (1, 1)
    );

    // A cluster change: the same name, another endpoint.
    replace(&dir.join("cds.yaml"), cds("c2", b));
    assert_eq!(body(&until(|| get(main, "/x"), |r| body(r) == "b /x")), "b /x");
    assert_eq!(stat(&server, "cluster_manager.cluster_modified"), 1);

    // A route and plugin configuration change, while a request is in flight on the old
    // version: it finishes on what it started with.
    let slow = std::thread::spawn(move || get(main, "/slow"));
    std::thread::sleep(Duration::from_millis(100));
    replace(&dir.join("lds.yaml"), lds("l2", &[listener("main", "v2", &demo, "x-demo=two")]));
    let changed = until(|| get(main, "/direct"), |r| body(r) == "v2");
    assert_eq!(body(&changed), "v2");
    assert!(get(main, "/x").contains("x-demo: two"));
    let slow = slow.join().unwrap();
    assert!(slow.starts_with("HTTP/1.1 200") && body(&slow) == "b /slow" && slow.contains("x-demo: one"), "{slow}");
    assert_eq!(listeners(&server), vec![("main".to_string(), main)], "the listener kept its socket");
    assert_eq!(stat(&server, "listener_manager.listener_modified"), 1);

    // A new module at the same path: the plugin gets a new VM once its listener changes.
    let module = dir.join("filter.wasm");
    std::fs::copy(&demo, &module).unwrap();
    replace(&dir.join("lds.yaml"), lds("l3", &[listener("main", "v3", &module, "x-demo=three")]));
    until(|| get(main, "/direct"), |r| body(r) == "v3");
    let created = stat(&server, "wasm.envoy.wasm.runtime.v8.created");
    std::fs::copy(plugin("header_filter.wasm"), &module).unwrap();
    replace(&dir.join("lds.yaml"), lds("l4", &[listener("main", "v4", &module, "")]));
    let header_filter = until(|| get(main, "/x"), |r| r.contains("x-wasm-filter: rust"));
    assert!(header_filter.contains("x-wasm-filter: rust") && !header_filter.contains("x-demo"), "{header_filter}");
    // Each worker takes the new listener on its own: the second may still be at it.
    let vms =
        until(|| stat(&server, "wasm.envoy.wasm.runtime.v8.created").to_string(), |n| n == (created + 2).to_string());
    assert_eq!(vms, (created + 2).to_string(), "one new VM per worker");

    // A listener added, then removed.
    let two = [listener("main", "v4", &module, ""), listener("extra", "extra", &demo, "x-demo=extra")];
    replace(&dir.join("lds.yaml"), lds("l5", &two));
    let bound = until(|| format!("{:?}", listeners(&server)), |l| l.contains("extra"));
    let extra = listeners(&server).into_iter().find(|(n, _)| n == "extra").unwrap_or_else(|| panic!("{bound}")).1;
    assert_eq!(body(&get(extra, "/direct")), "extra");
    replace(&dir.join("lds.yaml"), lds("l6", &two[..1]));
    until(|| format!("{:?}", listeners(&server)), |l| !l.contains("extra"));
    assert_eq!(until(|| get(extra, "/direct"), |r| r == "refused"), "refused", "the removed listener's socket closed");
    assert_eq!(body(&get(main, "/direct")), "v4");
    assert_eq!(
        (stat(&server, "listener_manager.listener_added"), stat(&server, "listener_manager.listener_removed")),
        (2, 1)
    );
    assert_eq!(stat(&server, "listener_manager.total_listeners_active"), 1);

    // The dynamic resources in /config_dump, with their versions.
    let dump = get(server.admin.unwrap(), "/config_dump");
    assert!(dump.contains(r#""version_info": "l6""#) && dump.contains(r#""version_info": "c2""#), "{dump}");
    assert!(dump.contains("dynamic_listeners") && dump.contains("dynamic_active_clusters"), "{dump}");
    server.stop();
}

#[test]
fn plugins_started_on_baseline_code_move_to_optimized_code_while_serving() {
    let a = upstream("a");
    let dir = work_dir("tiered");
    let demo = plugin("talk_demo.wasm");
    replace(&dir.join("cds.yaml"), cds("c1", a));
    replace(&dir.join("lds.yaml"), lds("l1", &[listener("main", "v1", &demo, "x-demo=one")]));
    // An empty cache: the plugin starts on baseline code.
    let cache = dir.join("cache");
    let engine = EngineConfig { compiler: Compiler::Tiered, cache_dir: Some(cache.clone()), ..Default::default() };
    let server = start_with(&dir, engine);
    let main = server.listeners[0].1;
    let created = || stat(&server, "wasm.envoy.wasm.runtime.v8.created");
    // A request in flight (300 ms upstream) whichever code it started on.
    let slow = std::thread::spawn(move || get(main, "/slow"));
    // Requests keep being answered by the plugin while its VMs move: one new VM per worker.
    let deadline = Instant::now() + Duration::from_secs(120);
    while created() < 4 && Instant::now() < deadline {
        let answer = get(main, "/x");
        assert!(answer.starts_with("HTTP/1.1 200") && answer.contains("x-demo: one"), "{answer}");
    }
    assert_eq!(created(), 4, "each worker's VM moved to optimized code");
    let slow = slow.join().unwrap();
    assert!(slow.starts_with("HTTP/1.1 200") && slow.contains("x-demo: one"), "{slow}");
    // The old VMs go once their streams are done; the cache holds the optimized code.
    assert_eq!(until(|| stat(&server, "wasm.envoy.wasm.runtime.v8.active").to_string(), |n| n == "2"), "2");
    assert_eq!(std::fs::read_dir(&cache).unwrap().count(), 1);
    // A new plugin configuration is a new root context in the moved VMs, as before.
    replace(&dir.join("lds.yaml"), lds("l2", &[listener("main", "v2", &demo, "x-demo=two")]));
    assert!(until(|| get(main, "/x"), |r| r.contains("x-demo: two")).contains("x-demo: two"));
    assert_eq!(created(), 4);
    server.stop();

    // A restart with the cache: optimized code at once, nothing to move.
    let server =
        start_with(&dir, EngineConfig { compiler: Compiler::Tiered, cache_dir: Some(cache), ..Default::default() });
    let main = server.listeners[0].1;
    assert!(get(main, "/x").contains("x-demo: two"));
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(stat(&server, "wasm.envoy.wasm.runtime.v8.created"), 2);
    server.stop();
}

#[test]
fn a_bad_update_is_rejected_and_the_last_good_configuration_keeps_serving() {
    let a = upstream("a");
    let dir = work_dir("rejected");
    let demo = plugin("talk_demo.wasm");
    replace(&dir.join("cds.yaml"), cds("c1", a));
    replace(&dir.join("lds.yaml"), lds("l1", &[listener("main", "good", &demo, "x-demo=one")]));
    let server = start(&dir);
    let main = server.listeners[0].1;

    // A field wasmproxy does not know, a route to a cluster nobody has, a module that is
    // not there: each rejected, each counted.
    let unknown_field =
        lds("l2", &[listener("main", "bad", &demo, "x-demo=one").replace("  name: main", "  name: main\n  bogus: 1")]);
    let unknown_cluster =
        lds("l3", &[listener("main", "bad", &demo, "").replace("cluster: backend", "cluster: nowhere")]);
    let no_module = lds("l4", &[listener("main", "bad", &dir.join("missing.wasm"), "")]);
    // Routes from a control plane: by ADS without `ads_config`, or through a cluster that
    // is not a static one.
    let with_rds = |source: &str| {
        let l = listener("main", "bad", &demo, "");
        let (start, end) = (l.find("        route_config:").unwrap(), l.find("        http_filters:").unwrap());
        format!("{}        rds: {{ route_config_name: r, config_source: {source} }}\n{}", &l[..start], &l[end..])
    };
    let no_ads = lds("l5", &[with_rds("{ ads: {} }")]);
    let grpc = "{ api_config_source: { api_type: GRPC, grpc_services: [{ envoy_grpc: { cluster_name: backend } }] } }";
    let not_static = lds("l6", &[with_rds(grpc)]);
    for (i, bad) in [unknown_field, unknown_cluster, no_module, no_ads, not_static].iter().enumerate() {
        replace(&dir.join("lds.yaml"), bad);
        let rejected =
            until(|| stat(&server, "listener_manager.lds.update_rejected").to_string(), |n| n == (i + 1).to_string());
        assert_eq!(rejected, (i + 1).to_string(), "update {i} was not rejected");
        assert_eq!(body(&get(main, "/direct")), "good");
    }
    // A file that is not YAML is Envoy's `update_failure`, not a rejection.
    replace(&dir.join("lds.yaml"), "resources: [");
    until(|| stat(&server, "listener_manager.lds.update_failure").to_string(), |n| n == "1");
    assert_eq!(
        (stat(&server, "listener_manager.lds.update_failure"), stat(&server, "listener_manager.lds.update_rejected")),
        (1, 5)
    );
    assert_eq!(body(&get(main, "/direct")), "good");
    // A bad cluster file: the cluster keeps its endpoint.
    replace(&dir.join("cds.yaml"), cds("c2", a).replace("type: STATIC", "type: NOT_A_TYPE"));
    until(|| stat(&server, "cluster_manager.cds.update_rejected").to_string(), |n| n == "1");
    assert_eq!(stat(&server, "cluster_manager.cds.update_rejected"), 1);
    assert_eq!(body(&get(main, "/x")), "a /x");
    assert_eq!(stat(&server, "listener_manager.lds.update_success"), 1);

    // A good update after the bad ones is taken.
    replace(&dir.join("lds.yaml"), lds("l7", &[listener("main", "fixed", &demo, "x-demo=one")]));
    assert_eq!(body(&until(|| get(main, "/direct"), |r| body(r) == "fixed")), "fixed");
    server.stop();
}

fn rds(version: &str, direct: &str) -> String {
    format!(
        r#"version_info: "{version}"
resources:
- "@type": type.googleapis.com/envoy.config.route.v3.RouteConfiguration
  name: from_file
  virtual_hosts:
  - name: all
    domains: ["*"]
    routes:
    - match: {{ prefix: /direct }}
      direct_response: {{ status: 200, body: {{ inline_string: "{direct}" }} }}
    - match: {{ prefix: / }}
      route: {{ cluster: backend }}
"#
    )
}

fn eds(version: &str, upstream: SocketAddr) -> String {
    format!(
        r#"version_info: "{version}"
resources:
- "@type": type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment
  cluster_name: backend_service
  endpoints:
  - lb_endpoints:
    - endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {} }} }} }}
"#,
        upstream.port()
    )
}

/// `GET path` twice on one keep-alive connection, `between` run between the two; both answers.
fn two_on_one_connection(addr: SocketAddr, path: &str, between: impl FnOnce()) -> (String, String) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut exchange = |close: bool| {
        let connection = if close { "connection: close\r\n" } else { "" };
        write!(stream, "GET {path} HTTP/1.1\r\nhost: test\r\n{connection}\r\n").unwrap();
        let mut response = Vec::new();
        let mut byte = [0u8; 1];
        // Headers, then a body of the announced length.
        while !response.ends_with(b"\r\n\r\n") {
            assert_eq!(stream.read(&mut byte).unwrap(), 1, "the connection closed");
            response.push(byte[0]);
        }
        let head = String::from_utf8_lossy(&response).to_string();
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length: "))
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or(0);
        let mut body = vec![0u8; length];
        stream.read_exact(&mut body).unwrap();
        head + &String::from_utf8_lossy(&body)
    };
    let first = exchange(false);
    between();
    (first, exchange(true))
}

#[test]
fn routes_and_endpoints_from_files_change_without_closing_connections() {
    let (a, b) = (upstream("a"), upstream("b"));
    let dir = work_dir("rds-eds");
    replace(&dir.join("rds.yaml"), rds("r1", "one"));
    replace(&dir.join("eds.yaml"), eds("e1", a));
    let yaml = format!(
        r#"
admin: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: 0 }} }} }}
static_resources:
  listeners:
  - name: main
    address: {{ socket_address: {{ address: 127.0.0.1, port_value: 0 }} }}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: ingress
          rds:
            route_config_name: from_file
            config_source: {{ path_config_source: {{ path: "{rds}" }} }}
          http_filters:
          - name: envoy.filters.http.router
            typed_config: {{ "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router }}
  clusters:
  - name: backend
    type: EDS
    eds_cluster_config:
      service_name: backend_service
      eds_config: {{ path_config_source: {{ path: "{eds}" }} }}
"#,
        rds = dir.join("rds.yaml").display(),
        eds = dir.join("eds.yaml").display()
    );
    let config = wasmproxy_config::load_str(&yaml, Path::new(".")).unwrap_or_else(|e| panic!("{e}"));
    let server = Server::start(config, ServerOptions { concurrency: 1, ..Default::default() }).unwrap();
    let main = server.listeners[0].1;
    assert_eq!(body(&get(main, "/direct")), "one");
    assert_eq!(body(&get(main, "/x")), "a /x");

    // A route change applies to the next stream of an open connection, which stays open
    // (Envoy does not drain connections for RDS).
    let (before, after) = two_on_one_connection(main, "/direct", || {
        replace(&dir.join("rds.yaml"), rds("r2", "two"));
        until(|| get(main, "/direct"), |r| body(r) == "two");
    });
    assert!(before.ends_with("one") && after.ends_with("two"), "{before}\n{after}");

    // An endpoint change: the cluster moves to the other upstream.
    replace(&dir.join("eds.yaml"), eds("e2", b));
    assert_eq!(body(&until(|| get(main, "/x"), |r| body(r) == "b /x")), "b /x");

    // A route file that does not parse keeps the routes it had.
    replace(&dir.join("rds.yaml"), "resources: [");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(body(&get(main, "/direct")), "two");
    server.stop();
}
