//! The TCP proxy with a Wasm network filter, end to end: a real echo upstream, the probe
//! plugin as `envoy.filters.network.wasm` before `envoy.filters.network.tcp_proxy`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use wasmproxy_proxy::RunningServer;

use common::{echo_upstream, start, stat};

fn config(upstream: SocketAddr, probe: &serde_json::Value) -> String {
    config_with(upstream, probe, "")
}

/// [`config`] with more `PluginConfig` lines (e.g. a failure policy).
fn config_with(upstream: SocketAddr, probe: &serde_json::Value, extra: &str) -> String {
    let plugin = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../plugins/out/probe.wasm");
    assert!(plugin.exists(), "{} is missing: run scripts/build-plugins.sh", plugin.display());
    format!(
        r#"admin:
  address: {{ socket_address: {{ address: 127.0.0.1, port_value: 0 }} }}
static_resources:
  listeners:
  - name: tcp
    address: {{ socket_address: {{ address: 127.0.0.1, port_value: 0 }} }}
    filter_chains:
    - filters:
      - name: envoy.filters.network.wasm
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.wasm.v3.Wasm
          config:
            name: rewriter
            {extra}
            vm_config:
              code: {{ local: {{ filename: "{}" }} }}
            configuration:
              "@type": type.googleapis.com/google.protobuf.StringValue
              value: '{probe}'
      - name: envoy.filters.network.tcp_proxy
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
          stat_prefix: tcp
          cluster: echo
  clusters:
  - name: echo
    load_assignment:
      cluster_name: echo
      endpoints:
      - lb_endpoints:
        - endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {} }} }} }}
"#,
        plugin.display(),
        upstream.port()
    )
}

/// Sends `data`, reads `first` bytes back, half-closes, and reads the rest.
fn exchange(addr: SocketAddr, data: &[u8], first: usize) -> (Vec<u8>, Vec<u8>) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    stream.write_all(data).unwrap();
    let mut head = vec![0u8; first];
    let got = stream.read_exact(&mut head).map(|()| first).unwrap_or(0);
    head.truncate(got);
    let _ = stream.shutdown(Shutdown::Write);
    let mut rest = Vec::new();
    let _ = stream.read_to_end(&mut rest);
    (head, rest)
}

fn counter(server: &RunningServer, name: &str) -> u64 {
    stat(server, &format!("wasmcustom.{name}"))
}

#[test]
fn a_network_filter_rewrites_bytes_both_ways_and_sees_both_closes() {
    let up = echo_upstream();
    let probe = serde_json::json!({
        "kind": "stream",
        "configure": [["define_metric", "counter", "connections"], ["define_metric", "counter", "closes"]],
        "phases": {
            "new_connection": [["increment_metric", "connections", "1"]],
            "downstream_data": [["set_buffer", "2", "0", "0", "<"]],
            "upstream_data": [["set_buffer", "3", "0", "0", ">"]],
            "downstream_close": [["increment_metric", "closes", "1"]],
            "upstream_close": [["increment_metric", "closes", "1"]],
        },
    });
    let server = start(&config(up, &probe), 2);
    let addr = server.listeners[0].1;
    // The client's bytes get "<" in front on the way up, the echo ">" on the way down.
    let (head, rest) = exchange(addr, b"hello", 7);
    assert_eq!(String::from_utf8_lossy(&head), "><hello");
    // The client's end of stream comes as an empty chunk, which gets its "<" too; the
    // echo's end comes with its last bytes or, a moment later, alone as an empty chunk
    // (which gets a ">"), as the sockets deliver it.
    let rest = String::from_utf8_lossy(&rest);
    assert!(rest == "><" || rest == "><>", "{rest:?}");
    let deadline = Instant::now() + Duration::from_secs(5);
    while counter(&server, "closes") < 2 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(counter(&server, "connections"), 1);
    assert_eq!(counter(&server, "closes"), 2, "both close callbacks ran");
    server.stop();
}

#[test]
fn a_network_filter_can_close_the_connection() {
    let up = echo_upstream();
    let probe = serde_json::json!({"kind": "stream", "phases": {"downstream_data": [["close", "2"]]}});
    let server = start(&config(up, &probe), 2);
    let (head, rest) = exchange(server.listeners[0].1, b"never sent on", 1);
    assert!(head.is_empty() && rest.is_empty(), "closed without an answer");
    server.stop();
}

#[test]
fn a_network_filter_that_traps_is_skipped_or_closes_by_its_failure_policy() {
    let up = echo_upstream();
    let probe = serde_json::json!({"kind": "stream", "phases": {"downstream_data": [["panic", "boom"]]}});
    // FAIL_OPEN: the bytes go on without the filter.
    let server = start(&config_with(up, &probe, "failure_policy: FAIL_OPEN"), 2);
    let (head, _) = exchange(server.listeners[0].1, b"hello", 5);
    assert_eq!(head, b"hello");
    server.stop();
    // FAIL_CLOSED (the default): the connection is closed.
    let server = start(&config(up, &probe), 2);
    let (head, rest) = exchange(server.listeners[0].1, b"hello", 5);
    assert!(head.is_empty() && rest.is_empty(), "{head:?} {rest:?}");
    server.stop();
}

/// An upstream that sends `n` bytes before it reads any, then reads to the end and
/// reports how many it got; the connections' buffers small, so they soon fill.
fn upstream_that_writes_first(n: usize) -> (SocketAddr, std::sync::mpsc::Receiver<usize>) {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.set_recv_buffer_size(64 * 1024).unwrap();
    socket.set_send_buffer_size(64 * 1024).unwrap();
    socket.bind(&"127.0.0.1:0".parse::<SocketAddr>().unwrap().into()).unwrap();
    socket.listen(8).unwrap();
    let listener = std::net::TcpListener::from(socket);
    let addr = listener.local_addr().unwrap();
    let (got, report) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        let chunk = vec![b'u'; 64 * 1024];
        for _ in 0..n / chunk.len() {
            if stream.write_all(&chunk).is_err() {
                return;
            }
        }
        let read = std::io::copy(&mut stream, &mut std::io::sink()).unwrap_or(0);
        let _ = got.send(read as usize);
    });
    (addr, report)
}

#[test]
fn bytes_move_both_ways_at_once_past_an_upstream_that_writes_before_it_reads() {
    // A relay that waits on one side's write reads nothing from the other: here the
    // upstream takes no byte until the client has all it sends, and the client's bytes
    // fill the upstream's buffers long before. Envoy moves the two ways independently.
    // More than the proxy's socket could hold unread, so a stalled relay cannot finish.
    let most_unread = std::fs::read_to_string("/proc/sys/net/ipv4/tcp_rmem")
        .ok()
        .and_then(|r| r.split_whitespace().last()?.parse::<usize>().ok())
        .unwrap_or(0);
    let n = (64 << 20).max(2 * most_unread).next_multiple_of(64 * 1024);
    let (up, upstream_got) = upstream_that_writes_first(n);
    let probe = serde_json::json!({"kind": "stream", "phases": {}});
    let server = start(&config(up, &probe), 1);
    let mut client = TcpStream::connect(server.listeners[0].1).unwrap();
    client.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut sender = client.try_clone().unwrap();
    let writer = std::thread::spawn(move || {
        let chunk = vec![b'c'; 64 * 1024];
        for _ in 0..n / chunk.len() {
            sender.write_all(&chunk).unwrap();
        }
        sender.shutdown(Shutdown::Write).unwrap();
    });
    let got = std::io::copy(&mut client, &mut std::io::sink());
    assert_eq!(got.ok(), Some(n as u64), "the client gets all the upstream sent, and its end");
    writer.join().unwrap();
    let sent = upstream_got.recv_timeout(Duration::from_secs(30));
    assert_eq!(sent.ok(), Some(n), "the upstream gets all the client sent, and its end");
    assert_eq!(stat(&server, "tcp.tcp.downstream_cx_tx_bytes_total"), n as u64);
    assert_eq!(stat(&server, "tcp.tcp.downstream_cx_rx_bytes_total"), n as u64);
    server.stop();
}

#[test]
fn a_client_that_stops_reading_is_closed_at_the_idle_timeout() {
    let up = common::endless_upstream();
    let probe = serde_json::json!({"kind": "stream", "phases": {}});
    let yaml = config(up, &probe)
        .replace("          cluster: echo\n", "          cluster: echo\n          idle_timeout: 1s\n");
    assert!(yaml.contains("idle_timeout"), "{yaml}");
    let server = start(&yaml, 1);
    let mut client = TcpStream::connect(server.listeners[0].1).unwrap();
    client.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    client.write_all(b"GET /endless HTTP/1.1\r\nhost: x\r\n\r\n").unwrap();
    // Bytes flow while the client reads; then it stops, and nothing more can go to it.
    let mut first = vec![0u8; 256 * 1024];
    client.read_exact(&mut first).unwrap();
    let closed = common::until(|| stat(&server, "tcp.tcp.idle_timeout").to_string(), |n| n == "1");
    assert_eq!(closed, "1", "the connection that takes no byte is idle");
    drop(client);
    server.stop();
}
