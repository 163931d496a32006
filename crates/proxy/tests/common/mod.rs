//! What several of this crate's end-to-end tests share: starting a server from YAML,
//! reading its admin stats, an echo upstream, an endless one and a naming HTTP upstream, plain HTTP/1.1
//! requests, waiting for a change, replacing a watched file, the test plugins.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use wasmproxy_proxy::{RunningServer, Server, ServerOptions};

pub mod registry;

/// Starts a server with `workers` worker threads on a configuration given as YAML.
pub fn start(yaml: &str, workers: usize) -> RunningServer {
    let config = wasmproxy_config::load_str(yaml, Path::new(".")).unwrap_or_else(|e| panic!("{e}"));
    Server::start(config, ServerOptions { concurrency: workers, ..Default::default() }).unwrap()
}

/// The body of an admin page (the whole answer's text after its head).
pub fn admin_get(server: &RunningServer, path: &str) -> String {
    let mut stream = TcpStream::connect(server.admin.unwrap()).unwrap();
    stream.write_all(format!("GET {path} HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n").as_bytes()).unwrap();
    let mut text = String::new();
    let _ = stream.read_to_string(&mut text);
    text.split_once("\r\n\r\n").map(|(_, body)| body.to_string()).unwrap_or_default()
}

/// A counter or gauge from the admin `/stats` (0 if absent).
pub fn stat(server: &RunningServer, name: &str) -> u64 {
    let text = admin_get(server, "/stats");
    let prefix = format!("{name}: ");
    text.lines().find_map(|l| l.strip_prefix(&prefix)?.trim().parse().ok()).unwrap_or(0)
}

/// Echoes what it reads until the peer half-closes.
pub fn echo(mut stream: impl Read + Write) {
    let mut buf = [0u8; 4096];
    while let Ok(n) = stream.read(&mut buf) {
        if n == 0 || stream.write_all(&buf[..n]).is_err() {
            break;
        }
    }
}

/// An upstream over plain TCP that echoes each connection until the client half-closes,
/// then half-closes too.
pub fn echo_upstream() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let copy = stream.try_clone().unwrap();
                echo(stream);
                let _ = copy.shutdown(Shutdown::Write);
            });
        }
    });
    addr
}

/// An upstream answering each connection's request with a 1 GiB HTTP/1.1 body, sent until
/// the connection fails.
pub fn endless_upstream() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let _ = stream.read(&mut [0u8; 4096]);
                let _ = stream.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 1073741824\r\n\r\n");
                let chunk = vec![b'x'; 64 * 1024];
                for _ in 0..16 * 1024 {
                    if stream.write_all(&chunk).is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

/// Replaces a file as Envoy wants it replaced (and as certificates rotate): written beside
/// it, then moved into place.
pub fn replace(path: &Path, bytes: impl AsRef<[u8]>) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// A test plugin built by `scripts/build-plugins.sh`.
pub fn plugin(file: &str) -> PathBuf {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../plugins/out").join(file);
    assert!(path.exists(), "{} is missing: run scripts/build-plugins.sh", path.display());
    path
}

/// An upstream on its own thread answering every request with `name` and the path (and
/// after 300 ms for `/slow`).
pub fn upstream(name: &'static str) -> SocketAddr {
    answering(move |head| {
        let path = head.split(' ').nth(1).unwrap_or("").to_string();
        if path == "/slow" {
            std::thread::sleep(Duration::from_millis(300));
        }
        format!("{name} {path}")
    })
}

/// An upstream on its own thread answering every request (one per connection) with the
/// body `answer` makes of the request's head.
pub fn answering(answer: impl Fn(&str) -> String + Send + Sync + 'static) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let answer = std::sync::Arc::new(answer);
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let answer = answer.clone();
            std::thread::spawn(move || {
                let Some(head) = read_head(&mut stream) else { return };
                let body = answer(&head);
                let _ = write!(
                    stream,
                    "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
            });
        }
    });
    addr
}

/// A request's head, read byte by byte up to its blank line (`None` if the peer closes first).
pub fn read_head(stream: &mut impl Read) -> Option<String> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if stream.read(&mut byte).unwrap_or(0) == 0 {
            return None;
        }
        head.push(byte[0]);
    }
    Some(String::from_utf8_lossy(&head).into_owned())
}

/// `GET path` on a new connection: the status line, the headers and the body, as text.
pub fn get(addr: SocketAddr, path: &str) -> String {
    let Ok(mut stream) = TcpStream::connect(addr) else { return "refused".into() };
    stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let _ = write!(stream, "GET {path} HTTP/1.1\r\nhost: test\r\nconnection: close\r\n\r\n");
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    response
}

/// The body of an answer `get` returned.
pub fn body(response: &str) -> &str {
    response.split_once("\r\n\r\n").map_or("", |(_, b)| b)
}

/// Asks until `ready` holds (at most 10 s); returns the last answer.
pub fn until(ask: impl Fn() -> String, ready: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let answer = ask();
        if ready(&answer) || Instant::now() > deadline {
            return answer;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A listener `http` on port 0 whose plugin (the talk demo's, adding `x-demo: <value>`) has
/// its module by URL (`http_uri` given as YAML, with `sha256`, retried three times 20 ms
/// apart), then the cluster `backend`; `clusters` are more clusters' YAML.
pub fn remote_module_config(http_uri: &str, sha256: &str, value: &str, backend: SocketAddr, clusters: &str) -> String {
    format!(
        r#"
admin: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: 0 }} }} }}
static_resources:
  listeners:
  - name: http
    address: {{ socket_address: {{ address: 127.0.0.1, port_value: 0 }} }}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: in
          route_config:
            virtual_hosts: [{{ name: all, domains: ["*"], routes: [{{ match: {{ prefix: / }}, route: {{ cluster: backend }} }}] }}]
          http_filters:
          - name: envoy.filters.http.wasm
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm
              config:
                name: demo
                configuration: {{ "@type": type.googleapis.com/google.protobuf.StringValue, value: "x-demo={value}" }}
                vm_config:
                  code:
                    remote:
                      http_uri: {http_uri}
                      sha256: {sha256}
                      retry_policy: {{ num_retries: 3, retry_back_off: {{ base_interval: 0.02s }} }}
          - name: envoy.filters.http.router
            typed_config: {{ "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router }}
  clusters:
  - name: backend
    load_assignment:
      cluster_name: backend
      endpoints: [{{ lb_endpoints: [{{ endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {} }} }} }} }}] }}]
{clusters}"#,
        backend.port()
    )
}

/// Starts a server with two workers, its compile (and module) cache in `cache`.
pub fn start_cached(yaml: &str, cache: &Path) -> RunningServer {
    let config = wasmproxy_config::load_str(yaml, Path::new(".")).unwrap_or_else(|e| panic!("{e}"));
    let engine = wasmproxy_host::EngineConfig { cache_dir: Some(cache.to_path_buf()), ..Default::default() };
    Server::start(config, ServerOptions { concurrency: 2, engine, ..Default::default() }).unwrap()
}

/// A new, empty directory of this test process's, named `name`.
pub fn fresh_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("wasmproxy-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Where the listener `name` is bound now, from admin `/listeners` (a changed listener may
/// be bound anew).
pub fn listener_addr(server: &RunningServer, name: &str) -> Option<SocketAddr> {
    let text = get(server.admin.unwrap(), "/listeners");
    let prefix = format!("{name}::");
    body(&text).lines().find_map(|l| l.strip_prefix(&prefix)).map(|a| a.parse().unwrap())
}

/// Where the listener `http` serves, if it does.
pub fn http_listener(server: &RunningServer) -> Option<SocketAddr> {
    server.listeners.iter().find(|(n, _)| n == "http").map(|(_, a)| *a)
}
