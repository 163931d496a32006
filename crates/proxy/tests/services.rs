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

/// A bootstrap: admin, a listener whose probe filter runs `phases`, a cluster, and the
/// services.
fn config(upstream: SocketAddr, phases: &serde_json::Value, services: &[String]) -> String {
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
        - endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {port} }} }} }}
  - name: grpc
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config: {{ http2_protocol_options: {{}} }}
    load_assignment:
      cluster_name: grpc
      endpoints:
      - lb_endpoints:
        - endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {port} }} }} }}
"#,
        services.concat(),
        probe_path(),
        serde_json::json!({ "phases": phases }),
        port = upstream.port()
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
    let producer =
        serde_json::json!({"request_headers": [["resolve_queue", "consumer_vm", "events"], ["enqueue", "1", "event"]]});
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
    let server = start(&config(up, &serde_json::json!({}), &[service("ticker", false, &ticker)])).unwrap();
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
    let error = start(&config(up, &serde_json::json!({}), &[service("picky", true, &refuses)])).err().unwrap();
    assert!(error.contains("Wasm service \"picky\""), "{error}");
}

/// A body fed by a channel (for the gRPC server's streamed answers).
struct ChannelBody(tokio::sync::mpsc::Receiver<hyper::body::Frame<bytes::Bytes>>);

impl hyper::body::Body for ChannelBody {
    type Data = bytes::Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<bytes::Bytes>, Self::Error>>> {
        self.0.poll_recv(cx).map(|f| f.map(Ok))
    }
}

fn grpc_frame(message: &[u8]) -> bytes::Bytes {
    let mut out = vec![0];
    out.extend_from_slice(&(message.len() as u32).to_be_bytes());
    out.extend_from_slice(message);
    out.into()
}

/// A gRPC server over h2c: `pkg.Echo/Say` answers `re:<message>`; `pkg.Echo/Stream`
/// answers `echo:<message>` to each message and ends with status 0 when the client
/// half-closes; any other method gets a trailers-only UNIMPLEMENTED. It records what it
/// got as `<path> <header>=<value>... <message>` lines.
fn grpc_server() -> (SocketAddr, Arc<std::sync::Mutex<Vec<String>>>) {
    use http_body_util::BodyExt;
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let record = seen.clone();
    let (addr_tx, addr_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            addr_tx.send(listener.local_addr().unwrap()).unwrap();
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                let record = record.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                        let record = record.clone();
                        async move {
                            let path = req.uri().path().to_string();
                            let h = |n: &str| req.headers().get(n).map_or("-", |v| v.to_str().unwrap()).to_string();
                            let head = format!(
                                "{path} content-type={} te={} grpc-timeout={} :authority={}",
                                h("content-type"),
                                h("te"),
                                h("grpc-timeout"),
                                req.uri().authority().map_or("-", |a| a.as_str())
                            );
                            let (tx, rx) = tokio::sync::mpsc::channel(16);
                            let mut body = req.into_body();
                            let mut response = http::Response::builder().header("content-type", "application/grpc");
                            match path.as_str() {
                                "/pkg.Echo/Say" | "/pkg.Echo/Stream" => {
                                    let reply = if path.ends_with("Say") { "re:" } else { "echo:" };
                                    tokio::spawn(async move {
                                        let mut pending = Vec::new();
                                        while let Some(Ok(frame)) = body.frame().await {
                                            let Ok(data) = frame.into_data() else { continue };
                                            pending.extend_from_slice(&data);
                                            while pending.len() >= 5 {
                                                let len =
                                                    u32::from_be_bytes(pending[1..5].try_into().unwrap()) as usize;
                                                if pending.len() < 5 + len {
                                                    break;
                                                }
                                                let message = pending[5..5 + len].to_vec();
                                                pending.drain(..5 + len);
                                                let text = String::from_utf8_lossy(&message).into_owned();
                                                record.lock().unwrap().push(format!("{head} {text}"));
                                                let answer = grpc_frame(format!("{reply}{text}").as_bytes());
                                                let _ = tx.send(hyper::body::Frame::data(answer)).await;
                                            }
                                        }
                                        let mut trailers = http::HeaderMap::new();
                                        trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
                                        let _ = tx.send(hyper::body::Frame::trailers(trailers)).await;
                                    });
                                }
                                _ => {
                                    response = response.header("grpc-status", "12");
                                    drop(tx);
                                }
                            }
                            Ok::<_, std::convert::Infallible>(response.body(ChannelBody(rx)).unwrap())
                        }
                    });
                    let _ = hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                });
            }
        });
    });
    (addr_rx.recv().unwrap(), seen)
}

#[test]
fn grpc_calls_and_streams_reach_a_grpc_server_and_come_back() {
    let (grpc, seen) = grpc_server();
    let count = |name: &str| serde_json::json!(["increment_metric", name, "1"]);
    let define = |name: &str| serde_json::json!(["define_metric", "counter", name]);
    // Tokens: the first gRPC call is 5, the first stream 6, the next call 9 (as Envoy).
    let client = serde_json::json!({
        "configure": [
            define("messages"), define("closes"), define("initial"), define("trailing"),
            ["grpc_call", "grpc", "pkg.Echo", "Say", "hello", "1000"],
            ["grpc_stream", "grpc", "pkg.Echo", "Stream"],
            ["grpc_send", "6", "one", "false"], ["grpc_send", "6", "two", "true"],
            ["grpc_call", "grpc", "pkg.Echo", "Missing", "x", "1000"],
        ],
        "phases": {
            "root_grpc_message": [count("messages")],
            "root_grpc_close": [count("closes"), ["get_status"]],
            "root_grpc_initial_metadata": [count("initial")],
            "root_grpc_trailing_metadata": [count("trailing")],
        },
    });
    let server = start(&config(grpc, &serde_json::json!({}), &[service("client", true, &client)])).unwrap();
    let expected = [("messages", 3), ("closes", 2), ("initial", 1), ("trailing", 1)];
    let all_in = || expected.iter().all(|(name, n)| counter(&server, name) == *n);
    assert!(
        wait_for(all_in),
        "{:?}",
        expected.iter().map(|(name, _)| (name, counter(&server, name))).collect::<Vec<_>>()
    );
    let mut seen = seen.lock().unwrap().clone();
    seen.sort();
    let head = "content-type=application/grpc te=trailers";
    assert_eq!(
        seen,
        [
            format!("/pkg.Echo/Say {head} grpc-timeout=1000m :authority=grpc hello"),
            format!("/pkg.Echo/Stream {head} grpc-timeout=- :authority=grpc one"),
            format!("/pkg.Echo/Stream {head} grpc-timeout=- :authority=grpc two"),
        ]
    );
    server.stop();
}

#[test]
fn concurrent_cas_increments_from_both_workers_end_at_the_exact_total() {
    let (up, _) = counting_upstream();
    let phases = serde_json::json!({"response_headers": [["cas_increment", "hits", "2", "x-hits"]]});
    let server = start(&config(up, &phases, &[])).unwrap();
    let addr = server.listeners[0].1;
    let hits = move || {
        let response = http_get(addr, "/");
        let value = response.lines().find_map(|l| l.strip_prefix("x-hits: ")).map(str::trim);
        value.and_then(|v| v.parse::<usize>().ok()).expect("x-hits in every response")
    };
    // The key's first write goes alone: a write to a key that does not exist yet has no
    // CAS to check (cas 0 always writes, in Envoy too), so two first writers could both
    // write 1. From then on every write carries the CAS it read.
    assert_eq!(hits(), 1);
    const CLIENTS: usize = 4;
    const EACH: usize = 50;
    let clients: Vec<_> =
        (0..CLIENTS).map(|_| std::thread::spawn(move || (0..EACH).map(|_| hits()).collect::<Vec<_>>())).collect();
    let mut seen: Vec<usize> = clients.into_iter().flat_map(|c| c.join().unwrap()).collect();
    seen.sort_unstable();
    // Every concurrent increment landed once: the values handed out are exactly 2..=N+1.
    assert_eq!(seen, (2..=CLIENTS * EACH + 1).collect::<Vec<_>>());
    server.stop();
}

#[test]
fn queues_carry_messages_from_workers_to_a_singleton_and_back() {
    let (up, _) = counting_upstream();
    // Filters on both workers enqueue to the singleton's queue; for each message the
    // singleton enqueues a reply to a queue a per-worker service registered.
    let front = serde_json::json!({
        "configure": [["register_queue", "events"], ["define_metric", "counter", "front_got"]],
        "phases": { "queue_ready": [
            ["dequeue_from", "front_vm", "events"], ["increment_metric", "front_got", "1"],
            ["enqueue_to", "back_vm", "replies", "reply"],
        ] },
    });
    let back = serde_json::json!({
        "configure": [["register_queue", "replies"], ["define_metric", "counter", "back_got"]],
        "phases": { "queue_ready": [["dequeue_from", "back_vm", "replies"], ["increment_metric", "back_got", "1"]] },
    });
    let phases = serde_json::json!({"request_headers": [["enqueue_to", "front_vm", "events", "event"]]});
    let services = [service("front", true, &front), service("back", false, &back)];
    let server = start(&config(up, &phases, &services)).unwrap();
    let addr = server.listeners[0].1;
    const REQUESTS: u64 = 30;
    for _ in 0..REQUESTS {
        assert!(http_get(addr, "/").starts_with("HTTP/1.1 200"));
    }
    let both = || counter(&server, "front_got") >= REQUESTS && counter(&server, "back_got") >= REQUESTS;
    assert!(wait_for(both), "front {} back {}", counter(&server, "front_got"), counter(&server, "back_got"));
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!((counter(&server, "front_got"), counter(&server, "back_got")), (REQUESTS, REQUESTS));
    server.stop();
}
