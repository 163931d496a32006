//! Wasm services (`bootstrap_extensions`, `envoy.bootstrap.wasm`) end to end, with two
//! workers: a singleton consuming a queue that filters on both workers feed, a per-worker
//! service calling a cluster on its timer, and a service refusing its configuration.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use wasmproxy_proxy::{RunningServer, Server, ServerOptions};

fn probe_path() -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../plugins/out/probe.wasm");
    assert!(path.exists(), "{} is missing: run scripts/build-plugins.sh", path.display());
    path.display().to_string()
}

/// An upstream that answers 200 and counts the requests it gets.
fn counting_upstream() -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let count = Arc::new(AtomicUsize::new(0));
    let seen = count.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let seen = seen.clone();
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                let mut pending = Vec::new();
                while let Ok(n) = stream.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    pending.extend_from_slice(&buf[..n]);
                    while let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
                        pending.drain(..end + 4);
                        seen.fetch_add(1, Ordering::SeqCst);
                        let _ = stream.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok");
                    }
                }
            });
        }
    });
    (addr, count)
}

/// A service's `bootstrap_extensions` entry running the probe.
fn service(name: &str, singleton: bool, configuration: &serde_json::Value) -> String {
    format!(
        r#"
- name: envoy.bootstrap.wasm
  typed_config:
    "@type": type.googleapis.com/envoy.extensions.wasm.v3.WasmService
    singleton: {singleton}
    config:
      name: {name}
      root_id: {name}_root
      vm_config:
        vm_id: {name}_vm
        runtime: envoy.wasm.runtime.v8
        code: {{ local: {{ filename: "{}" }} }}
      configuration:
        "@type": type.googleapis.com/google.protobuf.StringValue
        value: '{configuration}'
"#,
        probe_path()
    )
    .replace('\n', "\n  ")
}

/// A bootstrap: admin, a listener whose probe filter runs `filter` on request headers,
/// a cluster, and the services.
fn config(upstream: SocketAddr, filter: &serde_json::Value, services: &[String]) -> String {
    format!(
        r#"admin:
  address: {{ socket_address: {{ address: 127.0.0.1, port_value: 0 }} }}
bootstrap_extensions:{}
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
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: {{ prefix: / }}
                direct_response: {{ status: 200, body: {{ inline_string: "ok" }} }}
          http_filters:
          - name: envoy.filters.http.wasm
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm
              config:
                name: filter
                vm_config:
                  vm_id: filter_vm
                  code: {{ local: {{ filename: "{}" }} }}
                configuration:
                  "@type": type.googleapis.com/google.protobuf.StringValue
                  value: '{}'
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
  clusters:
  - name: upstream
    load_assignment:
      cluster_name: upstream
      endpoints:
      - lb_endpoints:
        - endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {} }} }} }}
"#,
        services.concat(),
        probe_path(),
        serde_json::json!({ "phases": { "request_headers": filter } }),
        upstream.port()
    )
}

fn start(yaml: &str) -> Result<RunningServer, String> {
    let config = wasmproxy_config::load_str(yaml, std::path::Path::new(".")).unwrap_or_else(|e| panic!("{e}"));
    Server::start(config, ServerOptions { concurrency: 2, ..Default::default() }).map_err(|e| e.to_string())
}

fn http_get(addr: SocketAddr, path: &str) -> String {
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(stream, "GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n").unwrap();
    let mut out = String::new();
    let _ = stream.read_to_string(&mut out);
    out
}

/// The value of a plugin counter on admin `/stats` (0 if absent).
fn counter(server: &RunningServer, name: &str) -> u64 {
    let stats = http_get(server.admin.unwrap(), "/stats");
    let prefix = format!("wasmcustom.{name}: ");
    stats.lines().find_map(|l| l.strip_prefix(&prefix)?.trim().parse().ok()).unwrap_or(0)
}

/// Polls until `done` or five seconds pass.
fn wait_for(mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if done() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

#[test]
fn a_singleton_service_consumes_what_filters_on_both_workers_enqueue() {
    let (up, _) = counting_upstream();
    let consumer = serde_json::json!({
        "configure": [["register_queue", "events"], ["define_metric", "counter", "consumed"]],
        "phases": { "queue_ready": [["dequeue", "1"], ["increment_metric", "consumed", "1"]] },
    });
    let producer = serde_json::json!([["resolve_queue", "consumer_vm", "events"], ["enqueue", "1", "event"]]);
    let server = start(&config(up, &producer, &[service("consumer", true, &consumer)])).unwrap();
    let addr = server.listeners[0].1;
    const REQUESTS: u64 = 60;
    let clients: Vec<_> = (0..3)
        .map(|_| {
            std::thread::spawn(move || {
                for _ in 0..REQUESTS / 3 {
                    assert!(http_get(addr, "/").starts_with("HTTP/1.1 200"));
                }
            })
        })
        .collect();
    for c in clients {
        c.join().unwrap();
    }
    assert!(wait_for(|| counter(&server, "consumed") >= REQUESTS), "consumed {}", counter(&server, "consumed"));
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(counter(&server, "consumed"), REQUESTS, "every message once: none lost, none doubled");
    server.stop();
}

#[test]
fn a_per_worker_service_calls_a_cluster_on_its_timer() {
    let (up, calls) = counting_upstream();
    let ticker = serde_json::json!({
        "configure": [["set_tick", "50"]],
        "phases": {
            "tick": [["http_call", "upstream", ":method=GET;:path=/tick;:authority=svc", "", "1000"]],
        },
    });
    let server = start(&config(up, &serde_json::json!([]), &[service("ticker", false, &ticker)])).unwrap();
    // Two workers, each with its own service VM ticking every 50 ms.
    assert!(wait_for(|| calls.load(Ordering::SeqCst) >= 6), "calls: {}", calls.load(Ordering::SeqCst));
    server.stop();
    let after_stop = calls.load(Ordering::SeqCst);
    std::thread::sleep(Duration::from_millis(200));
    assert!(calls.load(Ordering::SeqCst) <= after_stop + 2, "the timers stop with the server");
}

#[test]
fn a_service_refusing_its_configuration_stops_start_up_by_name() {
    let (up, _) = counting_upstream();
    let refuses = serde_json::json!({ "configure_result": false });
    let error = start(&config(up, &serde_json::json!([]), &[service("picky", true, &refuses)])).err().unwrap();
    assert!(error.contains("Wasm service \"picky\""), "{error}");
}
