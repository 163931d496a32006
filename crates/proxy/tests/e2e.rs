//! End to end: the real server on port 0, a real upstream, real plugins built from
//! source (scripts/build-plugins.sh), an Envoy YAML config, requests over TCP.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::SocketAddr;
use std::path::PathBuf;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use wasmproxy_proxy::{RunningServer, Server, ServerOptions};

fn plugin(file: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../plugins/out").join(file);
    assert!(path.exists(), "{} is missing: run scripts/build-plugins.sh", path.display());
    path.display().to_string()
}

/// A body fed by a channel, for an upstream that answers in chunks.
struct Chunks(tokio::sync::mpsc::Receiver<Bytes>);

impl hyper::body::Body for Chunks {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Self::Error>>> {
        self.0.poll_recv(cx).map(|chunk| chunk.map(|c| Ok(hyper::body::Frame::data(c))))
    }
}

/// An upstream that answers with what it received: `METHOD PATH` then `name: value` lines
/// (or, for `/chunks`, three chunks 50 ms apart; `/sleep` answers after 300 ms).
async fn upstream() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (stream, peer) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                let service = service_fn(move |req: http::Request<hyper::body::Incoming>| async move {
                    if req.uri().path() == "/chunks" {
                        let (tx, rx) = tokio::sync::mpsc::channel(1);
                        tokio::spawn(async move {
                            for chunk in ["one", "two", "three"] {
                                let _ = tx.send(Bytes::from(chunk)).await;
                                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                            }
                        });
                        return Ok(http::Response::new(http_body_util::Either::Right(Chunks(rx))));
                    }
                    if req.uri().path() == "/sleep" {
                        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
                    }
                    let mut text = format!("{} {} {:?}\n", req.method(), req.uri(), req.version());
                    for (k, v) in req.headers() {
                        text.push_str(&format!("{}: {}\n", k, v.to_str().unwrap_or("?")));
                    }
                    let body = req.into_body().collect().await.unwrap().to_bytes();
                    text.push_str(&format!("body: {}\n", String::from_utf8_lossy(&body)));
                    text.push_str(&format!("peer port: {}\n", peer.port()));
                    Ok::<_, std::convert::Infallible>(
                        http::Response::builder()
                            .header("x-upstream", "yes")
                            .body(http_body_util::Either::Left(Full::new(Bytes::from(text))))
                            .unwrap(),
                    )
                });
                // HTTP/1.1, or HTTP/2 by prior knowledge (h2c).
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

fn config(upstream: SocketAddr, filters: &str) -> String {
    format!(
        r#"
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
              - match: {{ prefix: /direct }}
                direct_response: {{ status: 200, body: {{ inline_string: "direct hello" }} }}
              - match: {{ path: /old }}
                redirect: {{ path_redirect: /new }}
              - match: {{ prefix: /api/ }}
                route: {{ cluster: upstream, prefix_rewrite: /v2/ }}
              - match: {{ prefix: /timed/chunks }}
                route: {{ cluster: upstream, prefix_rewrite: /chunks, timeout: 0.075s }}
              - match: {{ prefix: /timed/sleep }}
                route: {{ cluster: upstream, prefix_rewrite: /sleep, timeout: 0.1s }}
              - match: {{ prefix: /to-h2/ }}
                route: {{ cluster: upstream_h2 }}
              - match: {{ prefix: /by-name/ }}
                route: {{ cluster: by_name }}
              - match: {{ prefix: / }}
                route: {{ cluster: upstream }}
          http_filters:
{filters}
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
  clusters:
  - name: upstream
    type: STATIC
    connect_timeout: 1s
    load_assignment:
      cluster_name: upstream
      endpoints:
      - lb_endpoints:
        - endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {port} }} }} }}
  - name: upstream_h2
    type: STATIC
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config: {{ http2_protocol_options: {{}} }}
    load_assignment:
      cluster_name: upstream_h2
      endpoints:
      - lb_endpoints:
        - endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {port} }} }} }}
  - name: by_name
    type: STRICT_DNS
    dns_lookup_family: V4_ONLY
    load_assignment:
      cluster_name: by_name
      endpoints:
      - lb_endpoints:
        - endpoint: {{ address: {{ socket_address: {{ address: localhost, port_value: {port} }} }} }}
  - name: closed
    type: STATIC
    connect_timeout: 1s
    load_assignment:
      cluster_name: closed
      endpoints:
      - lb_endpoints:
        - endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: 1 }} }} }}
"#,
        port = upstream.port()
    )
}

fn wasm_filter(name: &str, file: &str, configuration: &str, extra: &str) -> String {
    format!(
        r#"          - name: envoy.filters.http.wasm
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm
              config:
                name: {name}
                {extra}
                configuration:
                  "@type": type.googleapis.com/google.protobuf.StringValue
                  value: '{configuration}'
                vm_config:
                  runtime: envoy.wasm.runtime.v8
                  code: {{ local: {{ filename: "{}" }} }}
"#,
        plugin(file)
    )
}

fn start(yaml: &str) -> RunningServer {
    let config = wasmproxy_config::load_str(yaml, std::path::Path::new(".")).unwrap_or_else(|e| panic!("{e}"));
    Server::start(config, ServerOptions { concurrency: 2, ..Default::default() }).unwrap()
}

struct Reply {
    status: u16,
    headers: http::HeaderMap,
    body: String,
}

async fn get(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Reply {
    send(addr, "GET", path, headers, Bytes::new()).await
}

async fn send(addr: SocketAddr, method: &str, path: &str, headers: &[(&str, &str)], body: Bytes) -> Reply {
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let mut req = http::Request::builder().method(method).uri(format!("http://{addr}{path}"));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let response = client.request(req.body(Full::new(body)).unwrap()).await.unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = String::from_utf8(response.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap();
    Reply { status, headers, body }
}

fn header<'a>(r: &'a Reply, name: &str) -> &'a str {
    r.headers.get(name).map(|v| v.to_str().unwrap()).unwrap_or("<none>")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_direct_responses_redirects_and_the_upstream() {
    let up = upstream().await;
    let server = start(&config(up, ""));
    let addr = server.listeners[0].1;
    let r = get(addr, "/direct", &[]).await;
    assert_eq!((r.status, r.body.as_str()), (200, "direct hello"));
    assert_eq!(header(&r, "server"), "envoy");
    let r = get(addr, "/old?x=1", &[]).await;
    assert_eq!(r.status, 301);
    assert_eq!(header(&r, "location"), format!("http://{addr}/new?x=1"));
    let r = get(addr, "/hello?q=1", &[("x-user", "alice")]).await;
    assert_eq!(r.status, 200);
    assert_eq!(header(&r, "x-upstream"), "yes");
    assert!(r.headers.contains_key("x-envoy-upstream-service-time"));
    assert!(r.body.starts_with("GET /hello?q=1 HTTP/1.1\n"), "{}", r.body);
    assert!(r.body.contains("x-user: alice\n"), "{}", r.body);
    assert!(r.body.contains("x-forwarded-proto: http\n"), "{}", r.body);
    assert!(r.body.contains("x-request-id: "), "{}", r.body);
    assert!(r.body.contains(&format!("host: {addr}\n")), "{}", r.body);
    let r = get(addr, "/api/items", &[]).await;
    assert!(r.body.starts_with("GET /v2/items HTTP/1.1\n"), "prefix_rewrite: {}", r.body);
    server.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_header_filter_plugin_works_as_in_envoy() {
    let up = upstream().await;
    let filter = wasm_filter(
        "hello",
        "header_filter.wasm",
        r#"{"request_header": "x-user", "response_headers": [["x-wasm-filter", "rust"], ["x-greeting", "hi"]]}"#,
        "",
    );
    let server = start(&config(up, &filter));
    let addr = server.listeners[0].1;
    for _ in 0..4 {
        let r = get(addr, "/hello", &[("x-user", "alice")]).await;
        assert_eq!(r.status, 200);
        assert_eq!(header(&r, "x-wasm-filter"), "rust");
        assert_eq!(header(&r, "x-greeting"), "hi");
        assert_eq!(header(&r, "x-request-header"), "alice");
        let d = get(addr, "/direct", &[]).await;
        assert_eq!(header(&d, "x-request-header"), "-", "direct responses go through the filter too");
    }
    server.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_pauses_calls_out_and_resumes_with_a_new_header() {
    let up = upstream().await;
    let probe = serde_json::json!({
        "phases": {
            "request_headers": [["http_call", "upstream", ":method=GET;:path=/auth;:authority=auth.local", "", "1000"]],
            "http_call_response": [["add_header", "0", "x-auth", "checked"], ["continue", "0"]],
        },
        "returns": {"request_headers": "pause"},
    });
    let server = start(&config(up, &wasm_filter("auth", "probe.wasm", &probe.to_string(), "")));
    let r = get(server.listeners[0].1, "/resource", &[]).await;
    assert_eq!(r.status, 200);
    assert!(r.body.contains("x-auth: checked\n"), "{}", r.body);
    server.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_replies_and_failure_policies() {
    let up = upstream().await;
    let deny = serde_json::json!({"phases": {"request_headers": [["send_local_response", "403", "denied by plugin", "x-why=test"]]}});
    let server = start(&config(up, &wasm_filter("deny", "probe.wasm", &deny.to_string(), "")));
    let r = get(server.listeners[0].1, "/x", &[]).await;
    assert_eq!((r.status, r.body.as_str(), header(&r, "x-why")), (403, "denied by plugin", "test"));
    server.stop();

    let crash = serde_json::json!({"phases": {"request_headers": [["panic", "boom"]]}});
    let server = start(&config(up, &wasm_filter("crash", "probe.wasm", &crash.to_string(), "")));
    for _ in 0..3 {
        let r = get(server.listeners[0].1, "/x", &[]).await;
        assert_eq!(r.status, 503, "fail closed, and the VM stays failed");
    }
    server.stop();
    let server =
        start(&config(up, &wasm_filter("crash", "probe.wasm", &crash.to_string(), "failure_policy: FAIL_OPEN")));
    // As in Envoy: the stream the VM failed in gets 503; later ones skip the filter. Each
    // of the two workers has its own VM, so at most two requests fail.
    let mut statuses = Vec::new();
    for _ in 0..5 {
        let r = get(server.listeners[0].1, "/x", &[]).await;
        statuses.push((r.status, header(&r, "x-upstream").to_string()));
    }
    assert_eq!(statuses[0].0, 503, "{statuses:?}");
    let passed = statuses.iter().filter(|s| **s == (200, "yes".to_string())).count();
    assert!(passed >= 3, "fail open skips the failed filter: {statuses:?}");
    server.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_failures_answer_as_envoy() {
    let up = upstream().await;
    let yaml = config(up, "").replace("route: { cluster: upstream }", "route: { cluster: closed }");
    let server = start(&yaml);
    let r = get(server.listeners[0].1, "/x", &[]).await;
    assert_eq!(r.status, 503);
    assert_eq!(
        r.body,
        "upstream connect error or disconnect/reset before headers. reset reason: remote connection failure"
    );
    server.stop();
}

#[test]
fn a_plugin_that_refuses_its_configuration_stops_start_up_by_name() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let up = rt.block_on(upstream());
    let filter = wasm_filter("picky", "header_filter.wasm", "{not json", "");
    let config = wasmproxy_config::load_str(&config(up, &filter), std::path::Path::new(".")).unwrap();
    let err = Server::start(config, ServerOptions { concurrency: 1, ..Default::default() }).err().expect("must fail");
    assert_eq!(
        err.to_string(),
        "Wasm plugin \"picky\": plugin \"picky\": on_configure returned false (the plugin refused its configuration)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_clients_get_the_same_answers() {
    let up = upstream().await;
    let filter = wasm_filter("hello", "header_filter.wasm", r#"{"request_header": "x-user"}"#, "");
    let server = start(&config(up, &filter));
    let addr = server.listeners[0].1;
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).http2_only(true).build_http();
    for path in ["/direct", "/h2?x=1"] {
        let req = http::Request::builder()
            .uri(format!("http://{addr}{path}"))
            .header("x-user", "h2-user")
            .body(Full::new(Bytes::new()))
            .unwrap();
        let response = client.request(req).await.unwrap();
        assert_eq!(response.version(), http::Version::HTTP_2);
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["x-request-header"], "h2-user");
        let body = response.into_body().collect().await.unwrap().to_bytes();
        if path != "/direct" {
            let text = String::from_utf8_lossy(&body);
            assert!(text.starts_with("GET /h2?x=1 HTTP/1.1\n"), "{text}");
            assert!(text.contains("x-user: h2-user\n"), "{text}");
            assert!(text.contains(&format!("host: {addr}\n")), ":authority becomes host upstream: {text}");
        }
    }
    server.stop();
}

/// HTTP/2 to a cluster carries the request's authority as `:authority` (no `host`), as
/// Envoy sends it; a STRICT_DNS cluster reaches its host by name, on the address family
/// `dns_lookup_family` asks for; HTTP/1.1 connections to the upstream are reused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_and_dns_clusters() {
    let up = upstream().await;
    let server = start(&config(up, ""));
    let addr = server.listeners[0].1;
    let r = get(addr, "/to-h2/x?y=1", &[("host", "api.example.test")]).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body.starts_with("GET http://api.example.test/to-h2/x?y=1 HTTP/2.0\n"), "{}", r.body);
    assert!(!r.body.contains("\nhost:"), "no host header over HTTP/2: {}", r.body);
    let mut peers = Vec::new();
    for _ in 0..3 {
        let r = get(addr, "/by-name/x", &[("host", "named.test")]).await;
        assert_eq!(r.status, 200, "{}", r.body);
        assert!(r.body.starts_with("GET /by-name/x HTTP/1.1\n"), "{}", r.body);
        assert!(r.body.contains("host: named.test\n"), "{}", r.body);
        peers.push(r.body.lines().find(|l| l.starts_with("peer port: ")).unwrap_or_default().to_string());
    }
    // The proxy has two workers, each with its own connections: at most two ports.
    peers.sort();
    peers.dedup();
    assert!(peers.len() <= 2, "connections are reused: {peers:?}");
    server.stop();
}

/// The route timeout runs to the end of the response, as Envoy's: an upstream too slow
/// with its headers gets 504; one too slow with its body is cut, and the client sees the
/// stream reset rather than a short body.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_route_timeout_covers_the_whole_response() {
    let up = upstream().await;
    let server = start(&config(up, ""));
    let addr = server.listeners[0].1;
    let r = get(addr, "/timed/sleep", &[]).await;
    assert_eq!((r.status, r.body.as_str()), (504, "upstream request timeout"));
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let request = http::Request::get(format!("http://{addr}/timed/chunks")).body(Full::new(Bytes::new())).unwrap();
    let response = client.request(request).await.unwrap();
    assert_eq!(response.status(), 200, "the headers came in time");
    let body = response.into_body().collect().await;
    assert!(body.is_err(), "the body outlived the route timeout and was cut");
    server.stop();
}

fn raw(addr: SocketAddr, request: &[u8]) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(std::time::Duration::from_secs(10))).unwrap();
    stream.write_all(request).unwrap();
    let mut out = Vec::new();
    let _ = stream.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_and_oversized_requests_are_refused() {
    let up = upstream().await;
    let server = start(&config(up, ""));
    let addr = server.listeners[0].1;
    let garbage = raw(addr, b"THIS IS NOT HTTP\r\n\r\n");
    assert!(garbage.starts_with("HTTP/1.1 400"), "{garbage:?}");
    let big = format!("GET / HTTP/1.1\r\nHost: x\r\nx-big: {}\r\n\r\n", "a".repeat(70 * 1024));
    let refused = raw(addr, big.as_bytes());
    assert!(refused.starts_with("HTTP/1.1 431"), "{refused:?}");
    // The server is fine afterwards.
    let ok = raw(addr, b"GET /direct HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    assert!(ok.starts_with("HTTP/1.1 200"), "{ok:?}");
    server.stop();
}

/// Reads one response with a `content-length` from `stream`: its head and its body.
fn read_response(stream: &mut std::net::TcpStream) -> (String, String) {
    use std::io::Read;
    let mut got = Vec::new();
    let mut byte = [0u8; 1];
    while !got.ends_with(b"\r\n\r\n") {
        assert_eq!(
            stream.read(&mut byte).unwrap(),
            1,
            "the connection closed mid-head: {:?}",
            String::from_utf8_lossy(&got)
        );
        got.push(byte[0]);
    }
    let head = String::from_utf8(got).unwrap();
    let length: usize = head
        .lines()
        .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse().unwrap()))
        .expect("a content-length");
    let mut body = vec![0u8; length];
    stream.read_exact(&mut body).unwrap();
    (head, String::from_utf8(body).unwrap())
}

/// Whether the peer closed `stream` (reads the end within the read timeout).
fn closed(stream: &mut std::net::TcpStream) -> bool {
    use std::io::Read;
    matches!(stream.read(&mut [0u8; 1]), Ok(0))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keep_alive_connection_serves_after_waiting_pipelined_and_split_requests_too() {
    let up = upstream().await;
    let server = start(&config(up, ""));
    let addr = server.listeners[0].1;
    tokio::task::spawn_blocking(move || {
        use std::io::Write;
        // Longer than a connection waits before it gives hyper up (`PARK_IDLE_AFTER`).
        let pause = || std::thread::sleep(std::time::Duration::from_millis(300));
        let mut c = std::net::TcpStream::connect(addr).unwrap();
        c.set_read_timeout(Some(std::time::Duration::from_secs(10))).unwrap();
        // Requests with the connection waiting between them.
        for _ in 0..3 {
            c.write_all(b"GET /direct HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
            let (head, body) = read_response(&mut c);
            assert!(head.starts_with("HTTP/1.1 200"), "{head}");
            assert_eq!(body, "direct hello");
            pause();
        }
        // Two requests in one write, the second to the upstream with a body.
        c.write_all(
            b"GET /direct HTTP/1.1\r\nHost: x\r\n\r\nPOST /up HTTP/1.1\r\nHost: x\r\ncontent-length: 5\r\n\r\nhello",
        )
        .unwrap();
        assert_eq!(read_response(&mut c).1, "direct hello");
        let (head, body) = read_response(&mut c);
        assert!(
            head.starts_with("HTTP/1.1 200") && body.starts_with("POST /up") && body.contains("body: hello"),
            "{body}"
        );
        pause();
        // A head that arrives in two parts, a pause between them.
        c.write_all(b"GET /split HTTP/1.1\r\nHo").unwrap();
        pause();
        c.write_all(b"st: x\r\n\r\n").unwrap();
        let (_, body) = read_response(&mut c);
        assert!(body.starts_with("GET /split"), "{body}");
        // A body that arrives after a pause.
        c.write_all(b"POST /late HTTP/1.1\r\nHost: x\r\ncontent-length: 4\r\n\r\n").unwrap();
        pause();
        c.write_all(b"late").unwrap();
        let (_, body) = read_response(&mut c);
        assert!(body.contains("body: late"), "{body}");
        // `connection: close`, and HTTP/1.0 (refused, as Envoy refuses it by default): answered,
        // then closed.
        c.write_all(b"GET /direct HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
        assert_eq!(read_response(&mut c).1, "direct hello");
        assert!(closed(&mut c), "closed after `connection: close`");
        let mut old = std::net::TcpStream::connect(addr).unwrap();
        old.set_read_timeout(Some(std::time::Duration::from_secs(10))).unwrap();
        old.write_all(b"GET /direct HTTP/1.0\r\nHost: x\r\n\r\n").unwrap();
        let (head, body) = read_response(&mut old);
        assert_eq!(body, "Upgrade Required");
        assert!(head.contains(" 426 ") && head.to_ascii_lowercase().contains("connection: close"), "{head}");
        assert!(closed(&mut old), "closed after an HTTP/1.0 answer");
    })
    .await
    .unwrap();
    server.stop();
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugins_read_envoy_properties_with_envoys_encodings() {
    let up = upstream().await;
    let to_upstream = |path: &str, header: &str| serde_json::json!(["property_header", path, "0", header]);
    let to_client = |path: &str, header: &str| serde_json::json!(["property_header", path, "2", header]);
    let probe = serde_json::json!({
        "phases": {
            "request_headers": [
                to_upstream("request.method", "p-method"),
                to_upstream("request.path", "p-path"),
                to_upstream("request.url_path", "p-url-path"),
                to_upstream("request.query", "p-query"),
                to_upstream("request.host", "p-host"),
                to_upstream("request.protocol", "p-protocol"),
                to_upstream("request.headers.x-user", "p-user"),
                to_upstream("source.address", "p-source"),
                to_upstream("destination.port", "p-dport"),
                to_upstream("connection.id", "p-conn"),
                to_upstream("plugin_name", "p-plugin"),
                to_upstream("request.time", "p-time"),
                to_upstream("nope.nothing", "p-nope"),
                to_upstream("xds.node.id", "p-node-id"),
                to_upstream("xds.node.metadata.team", "p-node-team"),
                to_upstream("xds.node.locality.region", "p-node-region"),
                to_upstream("xds.listener_direction", "p-direction"),
                to_upstream("xds.filter_chain_name", "p-chain"),
                to_upstream("xds.cluster_name", "p-early-cluster"),
                to_upstream("xds.route_metadata", "p-route-metadata"),
                ["set_property", "my_state", "v1"],
            ],
            "response_headers": [
                to_client("response.code", "p-code"),
                to_client("upstream.address", "p-upstream"),
                to_client("xds.cluster_name", "p-cluster"),
                to_client("my_state", "p-state"),
            ],
        }
    });
    let node = "node: { id: node-1, cluster: cluster-a, metadata: { team: edge }, locality: { region: eu } }\n";
    let yaml = config(up, &wasm_filter("props", "probe.wasm", &probe.to_string(), "")).replacen(
        "    filter_chains:\n    - filters:",
        "    traffic_direction: OUTBOUND\n    filter_chains:\n    - name: chain-x\n      filters:",
        1,
    );
    let server = start(&format!("{node}{yaml}"));
    let addr = server.listeners[0].1;
    let r = get(addr, "/props?x=1", &[("x-user", "alice")]).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let seen = |name: &str| {
        r.body
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name}: ")))
            .unwrap_or_else(|| panic!("{name} not in {}", r.body))
            .to_string()
    };
    assert_eq!(seen("p-method"), format!("0:{}", hex(b"GET")));
    assert_eq!(seen("p-path"), format!("0:{}", hex(b"/props?x=1")));
    assert_eq!(seen("p-url-path"), format!("0:{}", hex(b"/props")));
    assert_eq!(seen("p-query"), format!("0:{}", hex(b"x=1")));
    assert_eq!(seen("p-host"), format!("0:{}", hex(addr.to_string().as_bytes())));
    assert_eq!(seen("p-protocol"), format!("0:{}", hex(b"HTTP/1.1")));
    assert_eq!(seen("p-user"), format!("0:{}", hex(b"alice")));
    assert!(seen("p-source").starts_with(&format!("0:{}", hex(b"127.0.0.1:"))));
    assert_eq!(seen("p-dport"), format!("0:{}", hex(&i64::from(addr.port()).to_le_bytes())), "int64 little-endian");
    let conn = seen("p-conn");
    assert!(conn.starts_with("0:") && conn.len() == 2 + 16 && conn != format!("0:{}", "0".repeat(16)), "{conn}");
    assert_eq!(seen("p-plugin"), format!("0:{}", hex(b"props")));
    assert_eq!(seen("p-time").len(), 2 + 16, "a timestamp is int64 nanoseconds");
    assert_eq!(seen("p-nope"), "1:", "NOT_FOUND");
    assert_eq!(seen("p-node-id"), format!("0:{}", hex(b"node-1")));
    assert_eq!(seen("p-node-team"), format!("0:{}", hex(b"edge")));
    assert_eq!(seen("p-node-region"), format!("0:{}", hex(b"eu")));
    assert_eq!(seen("p-direction"), format!("0:{}", hex(&2i64.to_le_bytes())), "OUTBOUND");
    assert_eq!(seen("p-chain"), format!("0:{}", hex(b"chain-x")));
    assert_eq!(seen("p-early-cluster"), format!("0:{}", hex(b"upstream")), "the route is known in request headers");
    assert_eq!(seen("p-route-metadata"), "0:", "an empty Metadata message");
    assert_eq!(header(&r, "p-code"), format!("0:{}", hex(&200i64.to_le_bytes())));
    assert_eq!(header(&r, "p-upstream"), format!("0:{}", hex(up.to_string().as_bytes())));
    assert_eq!(header(&r, "p-cluster"), format!("0:{}", hex(b"upstream")));
    assert_eq!(header(&r, "p-state"), format!("0:{}", hex(b"v1")), "set_property is read back from filter state");
    server.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_bodies_stream_through_and_a_plugin_holding_too_much_gets_413() {
    let up = upstream().await;
    let server = start(&config(up, ""));
    let addr = server.listeners[0].1;
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let post = |addr: SocketAddr, body: Bytes| {
        http::Request::builder().method("POST").uri(format!("http://{addr}/upload")).body(Full::new(body)).unwrap()
    };
    // No filter holds the body: 5 MiB streams to the upstream, beyond any buffer limit.
    let big = Bytes::from(vec![b'x'; 5 << 20]);
    let response = client.request(post(addr, big)).await.unwrap();
    assert_eq!(response.status(), 200);
    let echoed = response.into_body().collect().await.unwrap().to_bytes();
    assert!(echoed.len() > 5 << 20, "the upstream received the whole body ({} bytes echoed)", echoed.len());
    server.stop();

    // A plugin that pauses every chunk holds the body; past Envoy's 1 MiB limit: 413.
    let hold = serde_json::json!({"returns": {"request_body": "pause"}});
    let server = start(&config(up, &wasm_filter("hold", "probe.wasm", &hold.to_string(), "")));
    let response = client.request(post(server.listeners[0].1, Bytes::from(vec![b'y'; 2 << 20]))).await.unwrap();
    assert_eq!(response.status(), 413);
    server.stop();
}

async fn post(addr: SocketAddr, path: &str, body: &'static str) -> Reply {
    send(addr, "POST", path, &[], Bytes::from_static(body.as_bytes())).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugins_rewrite_request_and_response_bodies() {
    let up = upstream().await;
    // As real plugins do, the lengths go, since the bodies change size.
    // The request body is held to its end and replaced there; each response chunk gets a
    // prefix and a suffix, the empty chunk that ends an HTTP/1.1 body included (as in Envoy).
    let probe = serde_json::json!({
        "phases": {
            "request_headers": [["remove_header", "0", "content-length"]],
            "response_headers": [["remove_header", "2", "content-length"]],
            "request_body": [["set_buffer", "0", "0", "1000", "rewritten request"]],
            "response_body": [["set_buffer", "1", "0", "0", "[prefix] "], ["set_buffer", "1", "100000", "0", " [suffix]"]],
        },
        "returns": {"request_body": "pause_until_end"},
    });
    let server = start(&config(up, &wasm_filter("bodies", "probe.wasm", &probe.to_string(), "")));
    let r = post(server.listeners[0].1, "/echo", "original request").await;
    assert_eq!(r.status, 200);
    assert!(r.body.starts_with("[prefix] POST /echo HTTP/1.1\n"), "{}", r.body);
    assert!(r.body.contains("body: rewritten request\n"), "{}", r.body);
    assert!(r.body.ends_with(" [suffix][prefix]  [suffix]"), "{}", r.body);
    assert_eq!(header(&r, "content-length"), "<none>", "streamed without a length");
    server.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_replies_from_the_response_phase() {
    let up = upstream().await;
    let probe = serde_json::json!({"phases": {"response_headers": [["send_local_response", "418", "teapot", "x-from=response"]]}});
    let server = start(&config(up, &wasm_filter("late", "probe.wasm", &probe.to_string(), "")));
    let r = get(server.listeners[0].1, "/x", &[]).await;
    assert_eq!((r.status, r.body.as_str(), header(&r, "x-from")), (418, "teapot", "response"));
    assert_eq!(header(&r, "x-upstream"), "<none>", "the upstream's response is replaced");
    server.stop();
}

/// As Envoy 1.40: a reply made in the request phase goes back through the response
/// callbacks of the filter that made it and of the filters before it, in reverse order;
/// the filters after it never see it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_local_reply_goes_back_through_the_filters_before_it() {
    let up = upstream().await;
    let add = |name: &str| serde_json::json!([["add_header", "2", name, "1"]]);
    let a = serde_json::json!({"phases": {"response_headers": add("x-a")}});
    let b = serde_json::json!({"phases": {
        "request_headers": [["send_local_response", "403", "nope", "x-b=1"]],
        "response_headers": add("x-bb"),
    }});
    let c = serde_json::json!({"phases": {"response_headers": add("x-c")}});
    let filters = [("a", a), ("b", b), ("c", c)]
        .iter()
        .map(|(name, probe)| wasm_filter(name, "probe.wasm", &probe.to_string(), ""))
        .collect::<String>();
    let server = start(&config(up, &filters));
    let r = get(server.listeners[0].1, "/x", &[]).await;
    assert_eq!((r.status, r.body.as_str()), (403, "nope"));
    assert_eq!((header(&r, "x-b"), header(&r, "x-bb"), header(&r, "x-a")), ("1", "1", "1"));
    assert_eq!(header(&r, "x-c"), "<none>", "the filter after the one that replied never sees the reply");
    assert_eq!(header(&r, "x-upstream"), "<none>");
    server.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_filters_run_in_order_with_the_go_plugin() {
    let up = upstream().await;
    // Three filters: the Rust header filter (JSON in a google.protobuf.StringValue), the
    // probe changing x-user, and the Go header filter. Requests go through them in order,
    // responses in reverse order.
    let first = format!(
        r#"          - name: envoy.filters.http.wasm
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm
              config:
                name: first
                configuration:
                  "@type": type.googleapis.com/google.protobuf.StringValue
                  value: '{{"request_header": "x-user", "response_headers": [["x-first", "rust"]]}}'
                vm_config:
                  code: {{ local: {{ filename: "{}" }} }}
"#,
        plugin("header_filter.wasm")
    );
    let add =
        serde_json::json!({"phases": {"request_headers": [["replace_header", "0", "x-user", "changed-by-probe"]]}});
    let second = wasm_filter("second", "probe.wasm", &add.to_string(), "");
    let third = wasm_filter(
        "third",
        "go_header_filter.wasm",
        r#"{"request_header": "x-user", "response_headers": [["x-third", "go"]]}"#,
        "",
    );
    let server = start(&config(up, &format!("{first}{second}{third}")));
    let r = get(server.listeners[0].1, "/x", &[("x-user", "alice")]).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(header(&r, "x-first"), "rust");
    assert_eq!(header(&r, "x-third"), "go");
    assert!(r.body.contains("x-user: changed-by-probe\n"), "the upstream sees the probe's change: {}", r.body);
    let seen: Vec<&str> = r.headers.get_all("x-request-header").iter().map(|v| v.to_str().unwrap()).collect();
    assert_eq!(
        seen,
        ["changed-by-probe", "alice"],
        "the Go filter (after the probe) saw its change; the first did not"
    );
    server.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugins_with_the_same_vm_key_share_one_vm_per_worker() {
    let up = upstream().await;
    let count =
        |header: &str| serde_json::json!({"phases": {"request_headers": [["vm_counter", "0", header]]}}).to_string();
    let filter = |name: &str, header: &str, vm_id: &str| {
        wasm_filter(name, "probe.wasm", &count(header), &format!("root_id: {name}")).replace(
            "                vm_config:\n",
            &format!("                vm_config:\n                  vm_id: {vm_id}\n"),
        )
    };
    // a and b share vm "one"; c has its own VM.
    let filters = format!("{}{}{}", filter("a", "x-a", "one"), filter("b", "x-b", "one"), filter("c", "x-c", "two"));
    let server = start(&config(up, &filters));
    let r = get(server.listeners[0].1, "/x", &[]).await;
    let seen = |name: &str| r.body.lines().find_map(|l| l.strip_prefix(&format!("{name}: "))).map(str::to_string);
    let (a, b, c): (u32, u32, u32) = (
        seen("x-a").unwrap().parse().unwrap(),
        seen("x-b").unwrap().parse().unwrap(),
        seen("x-c").unwrap().parse().unwrap(),
    );
    assert_eq!(b, a + 1, "a and b run in the same VM: {}", r.body);
    assert_eq!(c, 1, "c runs in its own VM: {}", r.body);
    server.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn response_bodies_reach_the_plugin_chunk_by_chunk() {
    let up = upstream().await;
    // The probe appends "|" to the data of each body callback it gets.
    let mark = serde_json::json!({"phases": {"response_body": [["set_buffer", "1", "100000", "0", "|"]]}});
    let server = start(&config(up, &wasm_filter("mark", "probe.wasm", &mark.to_string(), "")));
    let r = get(server.listeners[0].1, "/chunks", &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body, "one|two|three||", "a callback per chunk, and one for the end of the stream");
    server.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_local_reply_from_the_request_body_phase_wins() {
    let up = upstream().await;
    let deny = serde_json::json!({"phases": {"request_body": [["send_local_response", "403", "body refused", ""]]}});
    let server = start(&config(up, &wasm_filter("deny_body", "probe.wasm", &deny.to_string(), "")));
    let r = post(server.listeners[0].1, "/upload", "some body").await;
    assert_eq!((r.status, r.body.as_str()), (403, "body refused"));
    assert_eq!(header(&r, "x-upstream"), "<none>");
    server.stop();
}

/// A self-signed certificate for `localhost`: its PEM file and key in `dir`, and the
/// certificate for clients to trust.
fn tls_files(dir: &std::path::Path) -> (PathBuf, String, rustls::pki_types::CertificateDer<'static>) {
    std::fs::create_dir_all(dir).unwrap();
    let made = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let cert = dir.join("cert.pem");
    std::fs::write(&cert, made.cert.pem()).unwrap();
    (cert, made.signing_key.serialize_pem(), made.cert.der().clone())
}

/// `GET path` over TLS (SNI `localhost`), offering `alpn`: the HTTP version spoken and the reply.
async fn get_tls(
    addr: SocketAddr,
    cert: &rustls::pki_types::CertificateDer<'static>,
    alpn: &[u8],
    path: &str,
) -> (http::Version, Reply) {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.clone()).unwrap();
    let mut config = rustls::ClientConfig::builder().with_root_certificates(roots).with_no_client_auth();
    config.alpn_protocols = vec![alpn.to_vec()];
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let tls = TokioIo::new(connector.connect(name, tcp).await.unwrap());
    let request =
        http::Request::builder().uri(format!("https://localhost{path}")).body(Full::new(Bytes::new())).unwrap();
    let response = if alpn == b"h2" {
        let (mut sender, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), tls).await.unwrap();
        tokio::spawn(conn);
        sender.send_request(request).await.unwrap()
    } else {
        let (mut sender, conn) = hyper::client::conn::http1::handshake(tls).await.unwrap();
        tokio::spawn(conn);
        let (mut parts, body) = request.into_parts();
        parts.headers.insert(http::header::HOST, http::HeaderValue::from_static("localhost"));
        sender.send_request(http::Request::from_parts(parts, body)).await.unwrap()
    };
    let (version, status, headers) = (response.version(), response.status().as_u16(), response.headers().clone());
    let body = String::from_utf8(response.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap();
    (version, Reply { status, headers, body })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_is_terminated_with_alpn_and_plugins_read_the_tls_properties() {
    let up = upstream().await;
    let dir = std::env::temp_dir().join(format!("wasmproxy-e2e-tls-{}", std::process::id()));
    let (cert_file, key_pem, cert) = tls_files(&dir);
    let to_upstream = |path: &str, header: &str| serde_json::json!(["property_header", path, "0", header]);
    let probe = serde_json::json!({"phases": {"request_headers": [
        to_upstream("connection.tls_version", "p-tls"),
        to_upstream("connection.requested_server_name", "p-sni"),
        to_upstream("request.scheme", "p-scheme"),
    ]}});
    // The chain from a file, the key inline.
    let tls = format!(
        r#"    - transport_socket:
        name: envoy.transport_sockets.tls
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext
          common_tls_context:
            alpn_protocols: [h2, http/1.1]
            tls_certificates:
            - certificate_chain: {{ filename: "{}" }}
              private_key: {{ inline_string: {:?} }}
      filters:"#,
        cert_file.display(),
        key_pem
    );
    let admin = "admin: { address: { socket_address: { address: 127.0.0.1, port_value: 0 } } }\n";
    let yaml =
        config(up, &wasm_filter("tls", "probe.wasm", &probe.to_string(), "")).replacen("    - filters:", &tls, 1);
    let server = start(&format!("{admin}{yaml}"));
    let addr = server.listeners[0].1;
    for (alpn, version) in [(&b"h2"[..], http::Version::HTTP_2), (&b"http/1.1"[..], http::Version::HTTP_11)] {
        let (spoken, r) = get_tls(addr, &cert, alpn, "/secure").await;
        assert_eq!((spoken, r.status), (version, 200), "{}", r.body);
        let seen = |name: &str| {
            r.body.lines().find_map(|l| l.strip_prefix(&format!("{name}: "))).unwrap_or("<none>").to_string()
        };
        assert_eq!(seen("p-tls"), format!("0:{}", hex(b"TLSv1.3")));
        assert_eq!(seen("p-sni"), "0:", "only the TLS inspector records it, as in Envoy");
        assert_eq!(seen("p-scheme"), format!("0:{}", hex(b"https")));
        assert_eq!(seen("x-forwarded-proto"), "https");
    }
    // Plain HTTP on the TLS port: closed without an answer, as Envoy does.
    assert_eq!(raw(addr, b"GET / HTTP/1.1\r\nhost: x\r\n\r\n"), "");
    // The failed handshake is counted before its socket closes, as Envoy counts it: the
    // client saw the close, so the count is in. Named after the configured address.
    let stats = admin_stats(server.admin.unwrap()).await;
    let address = "listener.127.0.0.1_0";
    for line in [format!("{address}.ssl.handshake: 2"), format!("{address}.ssl.connection_error: 1")] {
        assert!(stats.lines().any(|l| l == line), "{line} not in\n{stats}");
    }
    server.stop();
    let _ = std::fs::remove_dir_all(&dir);
}

/// Admin's `/stats`.
async fn admin_stats(admin: SocketAddr) -> String {
    get(admin, "/stats", &[]).await.body
}

#[test]
fn a_certificate_that_cannot_be_read_stops_start_up_naming_the_field() {
    let yaml = config("127.0.0.1:9".parse().unwrap(), "").replacen(
        "    - filters:",
        r#"    - transport_socket:
        name: envoy.transport_sockets.tls
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext
          common_tls_context:
            tls_certificates:
            - certificate_chain: { filename: /nonexistent/cert.pem }
              private_key: { inline_string: "not a key" }
      filters:"#,
        1,
    );
    let config = wasmproxy_config::load_str(&yaml, std::path::Path::new(".")).unwrap_or_else(|e| panic!("{e}"));
    let Err(e) = Server::start(config, ServerOptions::default()) else { panic!("started") };
    let e = e.to_string();
    assert!(
        e.contains(
            "listener main: filter_chains[0].transport_socket: tls_certificates[0].certificate_chain: cannot read \
             /nonexistent/cert.pem"
        ),
        "{e}"
    );
}

#[test]
fn a_client_that_stops_reading_a_response_is_cut_at_the_stream_idle_timeout_or_the_route_timeout() {
    use std::io::{Read, Write};
    let admin = "admin: { address: { socket_address: { address: 127.0.0.1, port_value: 0 } } }\n";
    let yaml = format!("{admin}{}", config(common::endless_upstream(), ""));
    let idle = yaml.replacen("stat_prefix: ingress\n", "stat_prefix: ingress\n          stream_idle_timeout: 1s\n", 1);
    let route = yaml.replacen("route: { cluster: upstream }", "route: { cluster: upstream, timeout: 1s }", 1);
    for (yaml, stat) in
        [(idle, "http.ingress.downstream_rq_idle_timeout"), (route, "cluster.upstream.upstream_rq_timeout")]
    {
        let server = common::start(&yaml, 1);
        let mut client = std::net::TcpStream::connect(server.listeners[0].1).unwrap();
        client.set_read_timeout(Some(std::time::Duration::from_secs(10))).unwrap();
        client.write_all(b"GET /endless HTTP/1.1\r\nhost: x\r\n\r\n").unwrap();
        let mut first = vec![0u8; 256 * 1024];
        client.read_exact(&mut first).unwrap();
        assert!(first.starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&first[..64]));
        // The client reads nothing more: the stream is cut, as in Envoy.
        let cut = common::until(|| common::stat(&server, stat).to_string(), |n| n == "1");
        assert_eq!(cut, "1", "{stat}");
        // And its connection closes: what was on its way comes, then the end.
        let mut rest = Vec::new();
        let end = client.read_to_end(&mut rest);
        let timed_out =
            matches!(&end, Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut));
        assert!(!timed_out, "{stat}: the connection stays open ({end:?}, {} more bytes)", rest.len());
        assert!(rest.len() < 1 << 30, "{stat}: the body was cut");
        server.stop();
    }
}

#[test]
fn an_upstream_that_stops_reading_a_request_body_gets_the_client_a_408_at_the_stream_idle_timeout() {
    use std::io::{Read, Write};
    // An upstream that takes connections and never reads from them or answers.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let up = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming() {
            held.push(stream);
        }
    });
    let admin = "admin: { address: { socket_address: { address: 127.0.0.1, port_value: 0 } } }\n";
    let yaml = format!("{admin}{}", config(up, "")).replacen(
        "stat_prefix: ingress\n",
        "stat_prefix: ingress\n          stream_idle_timeout: 1s\n",
        1,
    );
    let server = common::start(&yaml, 1);
    let mut client = std::net::TcpStream::connect(server.listeners[0].1).unwrap();
    client.set_read_timeout(Some(std::time::Duration::from_secs(10))).unwrap();
    let length = 64 << 20;
    client
        .write_all(format!("POST /upload HTTP/1.1\r\nhost: x\r\ncontent-length: {length}\r\n\r\n").as_bytes())
        .unwrap();
    // The body goes until nothing more is taken (or the proxy closes).
    let mut feeder = client.try_clone().unwrap();
    std::thread::spawn(move || {
        let chunk = vec![b'y'; 64 * 1024];
        for _ in 0..length / chunk.len() {
            if feeder.write_all(&chunk).is_err() {
                return;
            }
        }
    });
    // Envoy's answer once the stream has been idle for its timeout, not the route's.
    let mut answer = vec![0u8; 4096];
    let n = client.read(&mut answer).unwrap();
    let answer = String::from_utf8_lossy(&answer[..n]).into_owned();
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.ends_with("stream timeout"), "{answer}");
    assert_eq!(common::stat(&server, "http.ingress.downstream_rq_idle_timeout"), 1);
    server.stop();
}
