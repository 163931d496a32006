//! Listeners with several filter chains, end to end: the TLS inspector reading SNI so that
//! TLS passes through the TCP proxy to the upstream that owns the name, plain text on the
//! same port going to the default chain, and a client that stalls before its first bytes
//! are whole.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

use common::{echo, echo_upstream, start, stat};

/// An echo upstream speaking TLS as `name` (its own certificate, which the client trusts).
fn tls_upstream(name: &str) -> (SocketAddr, CertificateDer<'static>) {
    let made = rcgen::generate_simple_self_signed(vec![name.to_string()]).unwrap();
    let key = PrivateKeyDer::from_pem_slice(made.signing_key.serialize_pem().as_bytes()).unwrap();
    let cert = made.cert.der().clone();
    let config =
        rustls::ServerConfig::builder().with_no_client_auth().with_single_cert(vec![cert.clone()], key).unwrap();
    let config = Arc::new(config);
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let config = config.clone();
            std::thread::spawn(move || {
                let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
                let session = rustls::ServerConnection::new(config).unwrap();
                echo(rustls::StreamOwned::new(session, stream));
            });
        }
    });
    (addr, cert)
}

/// A listener with the TLS inspector: `pass.example` goes through to `secure`, anything else
/// to `plain` (the default chain); `timeout` is its `listener_filters_timeout` lines.
fn config(secure: SocketAddr, plain: SocketAddr, timeout: &str) -> String {
    let cluster = |name: &str, addr: SocketAddr| {
        format!(
            "  - name: {name}\n    load_assignment:\n      cluster_name: {name}\n      endpoints:\n      - lb_endpoints:\n        \
             - endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {} }} }} }}\n",
            addr.port()
        )
    };
    let proxy = |cluster: &str| {
        format!(
            "      filters:\n      - name: envoy.filters.network.tcp_proxy\n        typed_config:\n          \
             \"@type\": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy\n          \
             stat_prefix: {cluster}\n          cluster: {cluster}\n"
        )
    };
    format!(
        r#"admin:
  address: {{ socket_address: {{ address: 127.0.0.1, port_value: 0 }} }}
static_resources:
  listeners:
  - name: edge
    address: {{ socket_address: {{ address: 127.0.0.1, port_value: 0 }} }}
{timeout}    listener_filters:
    - name: envoy.filters.listener.tls_inspector
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector
    filter_chains:
    - filter_chain_match: {{ server_names: [pass.example], transport_protocol: tls }}
{}    default_filter_chain:
{}  clusters:
{}{}"#,
        proxy("secure"),
        proxy("plain"),
        cluster("secure", secure),
        cluster("plain", plain),
    )
}

/// Sends `data` and reads as many bytes back.
fn round_trip(stream: &mut (impl Read + Write), data: &[u8]) -> Vec<u8> {
    stream.write_all(data).unwrap();
    stream.flush().unwrap();
    let mut back = vec![0u8; data.len()];
    stream.read_exact(&mut back).unwrap();
    back
}

#[test]
fn tls_passes_through_by_server_name_and_plain_text_takes_the_default_chain() {
    let (secure, cert) = tls_upstream("pass.example");
    let plain = echo_upstream();
    let server = start(&config(secure, plain, ""), 1);
    let addr = server.listeners[0].1;

    // TLS for pass.example: the handshake is the upstream's, through the proxy.
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert).unwrap();
    let client = rustls::ClientConfig::builder().with_root_certificates(roots).with_no_client_auth();
    let session =
        rustls::ClientConnection::new(Arc::new(client), ServerName::try_from("pass.example").unwrap()).unwrap();
    let tcp = TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut tls = rustls::StreamOwned::new(session, tcp);
    assert_eq!(round_trip(&mut tls, b"secret"), b"secret");

    // Plain text on the same port: the default chain, to the plain echo.
    let mut tcp = TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    assert_eq!(round_trip(&mut tcp, b"hello"), b"hello");
    drop((tls, tcp));

    assert_eq!(stat(&server, "tls_inspector.tls_found"), 1);
    assert_eq!(stat(&server, "tls_inspector.sni_found"), 1);
    assert_eq!(stat(&server, "tls_inspector.tls_not_found"), 1);
    assert_eq!(stat(&server, "cluster.secure.upstream_cx_total"), 1);
    assert_eq!(stat(&server, "cluster.plain.upstream_cx_total"), 1);
    server.stop();
}

#[test]
fn a_client_stalling_before_its_first_bytes_are_whole_is_closed_at_the_timeout() {
    let (secure, _) = tls_upstream("pass.example");
    let plain = echo_upstream();
    let server = start(&config(secure, plain, "    listener_filters_timeout: 0.2s\n"), 1);
    let addr = server.listeners[0].1;
    // The start of a TLS record, then nothing.
    let mut tcp = TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    tcp.write_all(b"\x16\x03\x01").unwrap();
    let started = Instant::now();
    let mut rest = Vec::new();
    // Closed with the client's bytes unread: a reset, or an end.
    let read = tcp.read_to_end(&mut rest);
    let closed = read.is_ok() || read.as_ref().is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionReset);
    assert!(closed && rest.is_empty(), "closed without a byte: {read:?} {rest:?}");
    assert!(started.elapsed() < Duration::from_secs(5), "closed at the timeout, not the read timeout");
    // Named by its configured address, as in Envoy.
    let listener = "listener.127.0.0.1_0";
    assert_eq!(stat(&server, &format!("{listener}.downstream_pre_cx_timeout")), 1);
    assert_eq!(stat(&server, &format!("{listener}.downstream_cx_total")), 0, "never given a chain");
    server.stop();

    // With continue_on_listener_filters_timeout, the connection goes on as plain text.
    let timeout = "    listener_filters_timeout: 0.2s\n    continue_on_listener_filters_timeout: true\n";
    let server = start(&config(secure, plain, timeout), 1);
    let mut tcp = TcpStream::connect(server.listeners[0].1).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    assert_eq!(round_trip(&mut tcp, b"\x16\x03\x01"), b"\x16\x03\x01", "echoed by the default chain");
    drop(tcp);
    assert_eq!(stat(&server, "cluster.plain.upstream_cx_total"), 1);
    server.stop();
}
