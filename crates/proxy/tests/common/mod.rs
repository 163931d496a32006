//! What several of this crate's end-to-end tests share: starting a server from YAML,
//! reading its admin stats, an echo upstream, replacing a watched file.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::path::Path;

use wasmproxy_proxy::{RunningServer, Server, ServerOptions};

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

/// Replaces a file as Envoy wants it replaced (and as certificates rotate): written beside
/// it, then moved into place.
pub fn replace(path: &Path, bytes: impl AsRef<[u8]>) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}
