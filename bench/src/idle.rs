//! Memory per connection: each proxy (one worker, the Rust header filter, to the shared
//! upstream) first holds `N` HTTP/1.1 keep-alive connections that each sent one request
//! and then went quiet, then `2N` connections that each send a request in turn, over and
//! over, so every connection sends one every few seconds, then `N` idle connections over
//! TLS 1.3. Resident memory is read before and after; the figures go to the
//! `## Connections held` section of BENCHMARKS.md.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use wasmproxy_conformance::proxy::Kind;

use crate::{Args, scenarios};

/// How long the busy connections keep sending.
const ACTIVE_FOR: Duration = Duration::from_secs(20);

/// One proxy's figures.
struct Held {
    /// Resident memory with no connection open, after one request (MB).
    rss_base_mb: f64,
    /// KiB of resident memory each idle connection adds.
    idle_kib: f64,
    /// KiB each busy connection adds (the largest resident memory seen while they send).
    active_kib: f64,
    /// Requests the busy connections sent, and how many failed.
    requests: u64,
    failed: u64,
    /// Seconds between two requests on one busy connection.
    period_s: f64,
    /// KiB of resident memory each idle TLS connection adds.
    idle_tls_kib: f64,
}

/// A client connection: plain, or TLS.
pub trait Conn: Read + Write {}

impl<T: Read + Write> Conn for T {}

/// Runs both proxies with `connections` idle and twice as many busy; returns the section.
pub fn run(args: &Args, connections: usize, work: &Path, fill: &dyn Fn(&str) -> String) -> Result<String, String> {
    let config = scenarios::bootstrap(&scenarios::header_filter("hf", "header_filter.wasm"));
    let tls_config = wasmproxy_conformance::config::with_tls(&config, "http/1.1");
    let mut rows = Vec::new();
    for kind in [Kind::Envoy, Kind::Wasmproxy] {
        let file = work.join(format!("held-{}.yaml", kind.name()));
        std::fs::write(&file, fill(&config)).map_err(|e| e.to_string())?;
        let tls_file = work.join(format!("held-tls-{}.yaml", kind.name()));
        std::fs::write(&tls_file, fill(&tls_config)).map_err(|e| e.to_string())?;
        let mut held = measure(args, kind, &file, work, connections)?;
        held.idle_tls_kib = idle_tls(args, kind, &tls_file, work, connections)?;
        println!(
            "{:<9} base {:.1} MB, idle {:.1} KiB/conn, busy {:.1} KiB/conn ({} requests, {} failed, one per {:.1} s per conn), idle over TLS {:.1} KiB/conn",
            kind.name(),
            held.rss_base_mb,
            held.idle_kib,
            held.active_kib,
            held.requests,
            held.failed,
            held.period_s,
            held.idle_tls_kib
        );
        rows.push((kind, held));
    }
    Ok(section(connections, &rows))
}

fn measure(args: &Args, kind: Kind, config: &Path, work: &Path, connections: usize) -> Result<Held, String> {
    // Idle: one proxy; busy: a fresh one, so memory freed by the idle phase does not hide
    // what the busy phase takes.
    let running = crate::start(args, kind, config, work, 1, &[])?;
    let base = warm_up(&running)?;
    let mut idle = Vec::with_capacity(connections);
    for _ in 0..connections {
        let mut c = connect(running.listener)?;
        exchange_at(&mut c, "/")?;
        idle.push(c);
    }
    settle();
    let idle_kib = (rss_mb(&running.child) - base) * 1024.0 / connections as f64;
    drop(idle);
    drop(running);
    let running = crate::start(args, kind, config, work, 1, &[])?;
    let before_busy = warm_up(&running)?;
    let busy_count = connections * 2;
    let mut busy = Vec::with_capacity(busy_count);
    for _ in 0..busy_count {
        busy.push(connect(running.listener)?);
    }
    let (mut requests, mut failed, mut passes, mut peak) = (0u64, 0u64, 0u32, before_busy);
    let started = Instant::now();
    while started.elapsed() < ACTIVE_FOR {
        for c in &mut busy {
            requests += 1;
            if exchange_at(c, "/").is_err() {
                failed += 1;
            }
        }
        passes += 1;
        peak = peak.max(rss_mb(&running.child));
    }
    Ok(Held {
        rss_base_mb: base,
        idle_kib,
        active_kib: (peak - before_busy) * 1024.0 / busy_count as f64,
        requests,
        failed,
        period_s: started.elapsed().as_secs_f64() / f64::from(passes.max(1)),
        idle_tls_kib: 0.0,
    })
}

/// KiB each of `connections` idle TLS 1.3 connections adds (each sent one request).
fn idle_tls(args: &Args, kind: Kind, config: &Path, work: &Path, connections: usize) -> Result<f64, String> {
    let running = crate::start(args, kind, config, work, 1, &[])?;
    let client = tls_client()?;
    let mut warm = Vec::new();
    for _ in 0..32 {
        let mut c = connect_tls(running.listener, &client)?;
        exchange_at(&mut c, "/")?;
        warm.push(c);
    }
    drop(warm);
    settle();
    let base = rss_mb(&running.child);
    let mut idle = Vec::with_capacity(connections);
    for _ in 0..connections {
        let mut c = connect_tls(running.listener, &client)?;
        exchange_at(&mut c, "/")?;
        idle.push(c);
    }
    settle();
    Ok((rss_mb(&running.child) - base) * 1024.0 / connections as f64)
}

/// A TLS client trusting the run's CA, offering HTTP/1.1.
pub fn tls_client() -> Result<Arc<rustls::ClientConfig>, String> {
    let run = wasmproxy_conformance::certs::CLIENT.get().ok_or("no certificates made for the run")?;
    let mut roots = rustls::RootCertStore::empty();
    roots.add(run.ca.clone()).map_err(|e| e.to_string())?;
    let mut config = rustls::ClientConfig::builder().with_root_certificates(roots).with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

fn connect_tls(addr: SocketAddr, client: &Arc<rustls::ClientConfig>) -> Result<Box<dyn Conn>, String> {
    let name = rustls::pki_types::ServerName::try_from("localhost").map_err(|e| e.to_string())?;
    let session = rustls::ClientConnection::new(client.clone(), name).map_err(|e| e.to_string())?;
    Ok(Box::new(rustls::StreamOwned::new(session, connect_tcp(addr)?)))
}

/// Warms the proxy up (the plugin's VM, the upstream pool, the allocator's arenas) on a
/// few connections, closes them, and returns the resident memory then (MB).
fn warm_up(running: &wasmproxy_conformance::proxy::Running) -> Result<f64, String> {
    let mut warm = Vec::new();
    for _ in 0..32 {
        let mut c = connect(running.listener)?;
        exchange_at(&mut c, "/")?;
        warm.push(c);
    }
    drop(warm);
    settle();
    Ok(rss_mb(&running.child))
}

/// Lets the proxy finish its bookkeeping before memory is read (wasmproxy gives the
/// buffers of connections idle for 100 ms back, and looks once a second whether to return
/// free memory to the system).
fn settle() {
    std::thread::sleep(Duration::from_secs(2));
}

fn connect(addr: SocketAddr) -> Result<Box<dyn Conn>, String> {
    Ok(Box::new(connect_tcp(addr)?))
}

fn connect_tcp(addr: SocketAddr) -> Result<TcpStream, String> {
    let c = TcpStream::connect(addr).map_err(|e| format!("connect {addr}: {e}"))?;
    c.set_read_timeout(Some(Duration::from_secs(10))).map_err(|e| e.to_string())?;
    let _ = c.set_nodelay(true);
    Ok(c)
}

/// One GET of `path` on a keep-alive connection, its whole answer read.
pub fn exchange_at(c: &mut impl Conn, path: &str) -> Result<(), String> {
    c.write_all(format!("GET {path} HTTP/1.1\r\nHost: bench\r\n\r\n").as_bytes()).map_err(|e| e.to_string())?;
    let mut got = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    loop {
        let n = c.read(&mut buf).map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("closed".into());
        }
        got.extend_from_slice(&buf[..n]);
        let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") else { continue };
        let head = String::from_utf8_lossy(&got[..end]).to_ascii_lowercase();
        if !head.starts_with("http/1.1 200") {
            return Err(head.lines().next().unwrap_or("").to_string());
        }
        let length = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse::<usize>().ok())
            .ok_or("no content-length")?;
        if got.len() >= end + 4 + length {
            return Ok(());
        }
    }
}

/// The process's resident memory now (VmRSS), in MB.
fn rss_mb(child: &std::process::Child) -> f64 {
    crate::load::status_mb(child.id(), "VmRSS:")
}

fn section(connections: usize, rows: &[(Kind, Held)]) -> String {
    let mut out = format!(
        "\n## Connections held\n\nOne worker, the Rust header filter, to the upstream. Idle: {connections} HTTP/1.1 \
         keep-alive connections each send one request, then stay open and quiet. Busy: {} connections each send a \
         request in turn for {} s, so each sends one every few seconds. Idle over TLS: {connections} TLS 1.3 \
         connections each send one request, then stay open and quiet. Memory each connection adds to the \
         resident set (busy: the largest seen while they send).\n\n\
         | proxy | RSS before (MB) | idle (KiB/conn) | busy (KiB/conn) | busy requests | failed | seconds between a connection's requests | idle over TLS 1.3 (KiB/conn) |\n\
         |---|---|---|---|---|---|---|---|\n",
        connections * 2,
        ACTIVE_FOR.as_secs()
    );
    for (kind, h) in rows {
        out.push_str(&format!(
            "| {} | {:.1} | {:.1} | {:.1} | {} | {} | {:.1} | {:.1} |\n",
            kind.name(),
            h.rss_base_mb,
            h.idle_kib,
            h.active_kib,
            h.requests,
            h.failed,
            h.period_s,
            h.idle_tls_kib
        ));
    }
    let ratio = |f: fn(&Held) -> f64| {
        let (e, w) = (rows.iter().find(|(k, _)| *k == Kind::Envoy), rows.iter().find(|(k, _)| *k == Kind::Wasmproxy));
        match (e, w) {
            (Some((_, e)), Some((_, w))) if f(e) > 0.0 => format!("{:.2}x", f(w) / f(e)),
            _ => "n/a".into(),
        }
    };
    out.push_str(&format!(
        "\nwasmproxy / Envoy, memory per connection: idle {}, busy {}, idle over TLS {}.\n",
        ratio(|h| h.idle_kib),
        ratio(|h| h.active_kib),
        ratio(|h| h.idle_tls_kib)
    ));
    out
}
