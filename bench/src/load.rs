//! Load with `wrk` (HTTP/1.1) and `h2load` (HTTP/2), and what the kernel says about the proxy process (CPU time, peak RSS).

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use wasmproxy_conformance::proxy::Running;

use crate::scenarios::Scenario;

/// What one `wrk` run reported.
pub struct LoadResult {
    /// Requests completed.
    pub requests: u64,
    /// Over how long.
    pub seconds: f64,
    /// Median latency.
    pub p50_ms: f64,
    /// 99th percentile latency.
    pub p99_ms: f64,
}

/// Runs `wrk` (one thread, `connections` keep-alive connections) against `url`.
pub fn run(url: &str, s: &Scenario, connections: usize, duration: Duration) -> Result<LoadResult, String> {
    let mut wrk = Command::new("wrk");
    wrk.args(["-t", "1", "-c", &connections.to_string(), "-d", &format!("{}s", duration.as_secs()), "--latency"]);
    if s.new_connections {
        wrk.args(["-H", "Connection: close"]);
    }
    for header in s.headers {
        wrk.args(["-H", header]);
    }
    let script;
    if let Some(body) = &s.body {
        script = std::env::temp_dir().join(format!("wasmproxy-bench-{}.lua", std::process::id()));
        // Every byte as a Lua decimal escape: a body may hold any byte (a gRPC frame).
        let escaped: String = body.iter().map(|b| format!("\\{b:03}")).collect();
        let lua = format!("wrk.method = \"POST\"\nwrk.body = \"{escaped}\"\n");
        std::fs::write(&script, lua).map_err(|e| e.to_string())?;
        wrk.arg("-s").arg(&script);
    }
    let out = wrk.arg(url).output().map_err(|e| format!("cannot run wrk (apt install wrk): {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    if text.contains("Non-2xx") || text.contains("Socket errors") {
        return Err(format!("errors under load:\n{text}"));
    }
    parse(&text).ok_or_else(|| format!("cannot read wrk's output:\n{text}"))
}

/// One client (rustls, on this thread) making TLS 1.3 connections to `addr` one after
/// another for `duration`, each resuming a session of an earlier one (a ticket), sending
/// one GET of `path` and closing once the answer is in. No latencies: they are NaN.
pub fn run_resumed(addr: SocketAddr, path: &str, duration: Duration) -> Result<LoadResult, String> {
    let client = crate::idle::tls_client()?;
    let name = rustls::pki_types::ServerName::try_from("localhost").map_err(|e| e.to_string())?;
    let started = std::time::Instant::now();
    let (mut connections, mut full) = (0u64, 0u64);
    while started.elapsed() < duration {
        let tcp = std::net::TcpStream::connect(addr).map_err(|e| format!("connect {addr}: {e}"))?;
        let _ = tcp.set_nodelay(true);
        let session = rustls::ClientConnection::new(client.clone(), name.clone()).map_err(|e| e.to_string())?;
        let mut tls = rustls::StreamOwned::new(session, tcp);
        crate::idle::exchange_at(&mut tls, path)?;
        if tls.conn.handshake_kind() != Some(rustls::HandshakeKind::Resumed) {
            full += 1;
        }
        connections += 1;
    }
    // The first connection gets the session the others resume.
    if full > 1 {
        return Err(format!("{full} of {connections} connections were not resumed"));
    }
    Ok(LoadResult {
        requests: connections,
        seconds: started.elapsed().as_secs_f64(),
        p50_ms: f64::NAN,
        p99_ms: f64::NAN,
    })
}

/// Runs `h2load` (one thread, `connections` HTTP/2 connections with `streams` concurrent
/// streams each) against `url` for `duration`. h2load reports no percentiles: the
/// latencies are NaN.
pub fn run_h2(url: &str, connections: usize, streams: usize, duration: Duration) -> Result<LoadResult, String> {
    let out = Command::new("h2load")
        .args(["-t", "1", "-c", &connections.to_string(), "-m", &streams.to_string()])
        .args(["-D", &duration.as_secs().to_string(), url])
        .output()
        .map_err(|e| format!("cannot run h2load (apt install nghttp2-client): {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let counts = h2load_counts(&text).ok_or_else(|| format!("cannot read h2load's output:\n{text}"))?;
    if counts.errors > 0 || counts.succeeded_2xx < counts.done {
        return Err(format!("errors under load:\n{text}"));
    }
    Ok(LoadResult { requests: counts.done, seconds: duration.as_secs_f64(), p50_ms: f64::NAN, p99_ms: f64::NAN })
}

/// What `h2load` counted.
pub struct H2loadCounts {
    /// Requests done.
    pub done: u64,
    /// Of them, answered 2xx.
    pub succeeded_2xx: u64,
    /// Failed, errored or timed out.
    pub errors: u64,
}

/// Reads h2load's `requests:` and `status codes:` lines.
pub fn h2load_counts(text: &str) -> Option<H2loadCounts> {
    // `requests: N total, N started, N done, N succeeded, N failed, N errored, N timeout`
    // `status codes: N 2xx, N 3xx, N 4xx, N 5xx`
    let field = |line: &str, name: &str| -> u64 {
        line.split(',')
            .find(|part| part.trim().ends_with(name))
            .and_then(|part| part.split_whitespace().rev().nth(1)?.parse().ok())
            .unwrap_or(0)
    };
    let requests = text.lines().find(|l| l.starts_with("requests:"))?;
    let statuses = text.lines().find(|l| l.starts_with("status codes:")).unwrap_or("");
    Some(H2loadCounts {
        done: field(requests, "done"),
        succeeded_2xx: field(statuses, "2xx"),
        errors: field(requests, "failed") + field(requests, "errored") + field(requests, "timeout"),
    })
}

fn parse(text: &str) -> Option<LoadResult> {
    // "  123456 requests in 5.00s, 12.34MB read"
    let line = text.lines().find(|l| l.contains(" requests in "))?;
    let mut words = line.split_whitespace();
    let requests = words.next()?.parse().ok()?;
    let seconds = words.nth(2)?.trim_end_matches(',').trim_end_matches('s').parse().ok()?;
    let percentile = |p: &str| {
        let l = text.lines().find(|l| l.trim_start().starts_with(p))?;
        millis(l.split_whitespace().nth(1)?)
    };
    Some(LoadResult { requests, seconds, p50_ms: percentile("50%")?, p99_ms: percentile("99%")? })
}

/// wrk's durations: `812.00us`, `1.23ms`, `2.01s`.
fn millis(text: &str) -> Option<f64> {
    let (number, unit) = text.split_at(text.find(|c: char| c.is_ascii_alphabetic())?);
    let n: f64 = number.parse().ok()?;
    Some(match unit {
        "us" => n / 1000.0,
        "ms" => n,
        "s" => n * 1000.0,
        "m" => n * 60_000.0,
        _ => return None,
    })
}

/// The process's user + system CPU seconds so far.
pub fn cpu_seconds(running: &Running) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", running.child.id())).unwrap_or_default();
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok()).unwrap_or(0.0);
    // utime and stime are fields 14 and 15 of stat, 11 and 12 after the ')'.
    (ticks(11) + ticks(12)) / 100.0
}

/// The process's peak resident set (VmHWM), in MB.
pub fn peak_rss_mb(running: &Running) -> f64 {
    status_mb(running.child.id(), "VmHWM:")
}

/// A memory figure of `/proc/PID/status` (given in kB, e.g. `VmRSS:`), in MB.
pub fn status_mb(pid: u32, field: &str) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kb = status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        .unwrap_or(0.0);
    kb / 1024.0
}

/// One GET answered 200.
pub fn get_ok(addr: SocketAddr, path: &str) -> bool {
    use std::io::{Read, Write};
    let Ok(mut stream) = std::net::TcpStream::connect(addr) else { return false };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    if write!(stream, "GET {path} HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n").is_err() {
        return false;
    }
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).is_ok() && head.starts_with(b"HTTP/1.1 200")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrk_output_is_read() {
        let text = "Running 5s test @ http://127.0.0.1:1/\n  1 threads and 32 connections\n  Latency Distribution\n     50%  812.00us\n     75%    1.10ms\n     90%    1.50ms\n     99%    2.01ms\n  123456 requests in 5.00s, 12.34MB read\nRequests/sec:  24691.20\n";
        let r = parse(text).unwrap();
        assert_eq!((r.requests, r.seconds), (123456, 5.0));
        assert!((r.p50_ms - 0.812).abs() < 1e-9 && (r.p99_ms - 2.01).abs() < 1e-9);
    }

    #[test]
    fn h2load_output_is_read() {
        let text = "finished in 5.00s, 41233.40 req/s, 1.85MB/s\nrequests: 206167 total, 206423 started, 206167 done, 206160 succeeded, 7 failed, 0 errored, 0 timeout\nstatus codes: 206160 2xx, 0 3xx, 0 4xx, 7 5xx\n";
        let c = h2load_counts(text).unwrap();
        assert_eq!((c.done, c.succeeded_2xx, c.errors), (206167, 206160, 7));
    }
}
