//! Configuration updates under load, on both proxies: two workers serve a listener (the
//! Rust header filter adding `x-version: N`) and a cluster, while clients send requests
//! without pause and the configuration changes N times: every update changes the plugin's
//! configuration and a route, every third moves the upstream (over ADS: the cluster's EDS
//! endpoints; from files: the cluster), every fifth adds or removes a second listener,
//! every seventh changes the cluster itself, and every tenth gives the plugin a new module
//! by URL (`code.remote`, two builds of the filter in turn, each with its sha256). The
//! updates come from LDS and CDS files (replaced), then from a control plane over ADS (the
//! same resources, pushed as snapshots). Reported: requests that failed (no answer, or not 2xx, after one retry of a
//! request a closing keep-alive connection never answered, as HTTP clients retry), the time
//! from each update to the first answer with the new `x-version` (p50, p99), and resident
//! memory and live Wasm VMs before and after.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use wasmproxy_conformance::control_plane::ControlPlane;
use wasmproxy_conformance::proxy::{Kind, Running, admin_get};
use wasmproxy_conformance::upstream::hex_sha256;

use crate::Args;

/// Client threads sending requests throughout.
const CLIENTS: usize = 8;

/// How long an update may take to show before it counts as never seen.
const SHOW_TIMEOUT: Duration = Duration::from_secs(5);

/// Every how many updates the plugin's module changes (by URL).
const MODULE_EVERY: usize = 10;

/// One proxy's figures.
struct UpdateRun {
    /// Seconds the updates took, from the first file written to the last update seen.
    seconds: f64,
    requests: u64,
    failed: u64,
    /// Seconds from each file replacement to the first answer showing it.
    delays: Vec<f64>,
    /// Updates never seen within [`SHOW_TIMEOUT`].
    unseen: usize,
    rss_before_mb: f64,
    rss_after_mb: f64,
    vms_before: u64,
    vms_after: u64,
}

/// Where the updates come from.
#[derive(Clone, Copy, PartialEq)]
enum Source {
    /// LDS and CDS files, replaced.
    Files,
    /// A control plane's snapshots, over ADS.
    Ads,
}

/// Runs `updates` updates on each proxy, from files then over ADS; returns the markdown
/// section.
pub fn run(args: &Args, updates: usize, work: &Path, plugins: &Path) -> Result<String, String> {
    let upstreams =
        [crate::upstream::start().map_err(|e| e.to_string())?, crate::upstream::start().map_err(|e| e.to_string())?];
    let mut rows = Vec::new();
    for source in [Source::Files, Source::Ads] {
        for kind in [Kind::Envoy, Kind::Wasmproxy] {
            let r = run_one(args, kind, source, updates, work, plugins, upstreams)?;
            println!(
                "updates {:<9} {:<5} {:.1} s, {} requests, {} failed, delay p50 {:.1} ms p99 {:.1} ms, unseen {}, rss {:.1} -> {:.1} MB, vms {} -> {}",
                kind.name(),
                source.name(),
                r.seconds,
                r.requests,
                r.failed,
                percentile(&r.delays, 0.5) * 1000.0,
                percentile(&r.delays, 0.99) * 1000.0,
                r.unseen,
                r.rss_before_mb,
                r.rss_after_mb,
                r.vms_before,
                r.vms_after
            );
            rows.push((kind, source, r));
        }
    }
    let mut out = format!(
        "\n## Configuration updates under load\n\nTwo workers each; {CLIENTS} clients send requests without pause \
         (HTTP/1.1 keep-alive) while {updates} updates are made: every one changes the Wasm filter's configuration \
         and a route, every third moves the upstream (over ADS its EDS endpoints, from files the cluster), every \
         fifth adds or removes a second listener, every seventh changes the cluster itself (its connect timeout), \
         and every tenth gives the filter a new module by URL (`code.remote` with its sha256, through a cluster; \
         two builds of the filter in turn; the next update goes back to the local file). From files: each update a new LDS (and CDS) file moved into place. Over ADS: the same resources \
         pushed as a snapshot by the test control plane (go-control-plane). Failed: no answer or not 2xx (a request \
         a closing keep-alive connection never answered is retried once, as HTTP clients do). Delay: from the file \
         replacement or the push to the first answer carrying the new configuration.\n\n\
         | proxy | from | seconds | requests meanwhile (req/s) | failed | delay p50 / p99 (ms) | not seen in 5 s | RSS before / after (MB) | Wasm VMs before / after |\n\
         |---|---|---|---|---|---|---|---|---|\n"
    );
    for (kind, source, r) in &rows {
        out.push_str(&format!(
            "| {} | {} | {:.1} | {} ({:.0}) | {} | {:.1} / {:.1} | {} | {:.1} / {:.1} | {} / {} |\n",
            kind.name(),
            source.name(),
            r.seconds,
            r.requests,
            r.requests as f64 / r.seconds.max(0.001),
            r.failed,
            percentile(&r.delays, 0.5) * 1000.0,
            percentile(&r.delays, 0.99) * 1000.0,
            r.unseen,
            r.rss_before_mb,
            r.rss_after_mb,
            r.vms_before,
            r.vms_after
        ));
    }
    Ok(out)
}

impl Source {
    fn name(self) -> &'static str {
        match self {
            Source::Files => "files",
            Source::Ads => "ADS",
        }
    }
}

fn run_one(
    args: &Args,
    kind: Kind,
    source: Source,
    updates: usize,
    work: &Path,
    plugins: &Path,
    upstreams: [SocketAddr; 2],
) -> Result<UpdateRun, String> {
    let dir = work.join(format!("updates-{}-{}", kind.name(), source.name()));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let (lds, cds) = (dir.join("lds.json"), dir.join("cds.json"));
    let filter = plugins.join("header_filter.wasm");
    let modules = ModuleServer::start(&filter)?;
    let plane = match source {
        Source::Ads => Some(ControlPlane::start(0)?),
        Source::Files => None,
    };
    // Update `n`: its clusters (with `upstream`) and its listeners.
    let update = |n: usize, upstream: SocketAddr| -> Result<(), String> {
        let code = if n > 0 && n.is_multiple_of(MODULE_EVERY) {
            modules.code(n / MODULE_EVERY % 2)
        } else {
            json!({"local": {"filename": filter.display().to_string()}})
        };
        let listeners = listeners(n, &code, n / 5 % 2 == 1);
        // The cluster changes every seventh update.
        let timeout = if (n / 7).is_multiple_of(2) { "1s" } else { "2s" };
        match &plane {
            Some(plane) => {
                let clusters = [eds_cluster(timeout), endpoints(upstream), modules.cluster()];
                let resources: Vec<Value> = clusters.into_iter().chain(listeners).collect();
                plane.set("bench", &n.to_string(), &resources)
            }
            None => {
                // The CDS file is replaced when the cluster moves (every third update) or
                // changes (every seventh).
                if n.is_multiple_of(3) || n.is_multiple_of(7) {
                    let clusters = [cluster(upstream, timeout), modules.cluster()];
                    let resources = json!({"version_info": n.to_string(), "resources": clusters});
                    replace(&cds, &resources.to_string())?;
                }
                replace(&lds, &json!({"version_info": n.to_string(), "resources": listeners}).to_string())
            }
        }
    };
    update(0, upstreams[0])?;
    let config = dir.join("envoy.yaml");
    let bootstrap = match &plane {
        Some(plane) => wasmproxy_conformance::config::ads_bootstrap("bench", "GRPC", &plane.xds_port.to_string()),
        None => format!(
            "node: {{ id: bench, cluster: bench }}\nadmin: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: 0 }} }} }}\n\
             dynamic_resources:\n  lds_config: {{ path_config_source: {{ path: \"{}\" }} }}\n  cds_config: {{ path_config_source: {{ path: \"{}\" }} }}\n",
            lds.display(),
            cds.display()
        ),
    };
    std::fs::write(&config, bootstrap).map_err(|e| e.to_string())?;
    let running = crate::start(args, kind, &config, work, 2, &[])?;
    let clients = Clients::start(running.listener);
    std::thread::sleep(Duration::from_secs(1));
    let (rss_before_mb, vms_before) = (rss_mb(&running), vms(&running));
    let mut delays = Vec::new();
    let mut unseen = 0;
    let started = Instant::now();
    let counted_before = clients.counts();
    for n in 1..=updates {
        // The cluster moves every third update.
        let upstream = upstreams[n / 3 % 2];
        let written = Instant::now();
        update(n, upstream)?;
        match clients.wait_for(n as u64, SHOW_TIMEOUT) {
            Some(seen) => delays.push(seen.duration_since(written).as_secs_f64()),
            None => unseen += 1,
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let seconds = started.elapsed().as_secs_f64();
    let counted = clients.counts();
    let (requests, failed) = (counted.0 - counted_before.0, counted.1 - counted_before.1);
    // What the replaced versions held goes once their connections have moved on.
    std::thread::sleep(Duration::from_secs(2));
    let (rss_after_mb, vms_after) = (rss_mb(&running), vms(&running));
    let (_, failed_after) = clients.stop();
    // A failure after the updates (the drains ending) counts too.
    let failed = failed + (failed_after - counted.1);
    Ok(UpdateRun { seconds, requests, failed, delays, unseen, rss_before_mb, rss_after_mb, vms_before, vms_after })
}

/// Replaces a file as Envoy wants it replaced: written beside it, then moved into place.
fn replace(path: &Path, text: &str) -> Result<(), String> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).map_err(|e| e.to_string())?;
    std::fs::rename(&tmp, path).map_err(|e| e.to_string())
}

/// The cluster `upstream` at `upstream`, connecting within `timeout`.
fn cluster(upstream: SocketAddr, timeout: &str) -> Value {
    json!({
        "@type": "type.googleapis.com/envoy.config.cluster.v3.Cluster", "name": "upstream", "type": "STATIC",
        "connect_timeout": timeout, "load_assignment": assignment(upstream),
    })
}

/// The cluster `upstream` taking its endpoints by EDS (ADS), connecting within `timeout`.
fn eds_cluster(timeout: &str) -> Value {
    json!({
        "@type": "type.googleapis.com/envoy.config.cluster.v3.Cluster", "name": "upstream", "type": "EDS",
        "connect_timeout": timeout, "eds_cluster_config": {"eds_config": {"ads": {}, "resource_api_version": "V3"}},
    })
}

/// The endpoints of `upstream`, as an EDS resource: the one at `upstream`.
fn endpoints(upstream: SocketAddr) -> Value {
    let mut resource = assignment(upstream);
    resource["@type"] = json!("type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment");
    resource
}

/// The load assignment of `upstream`: the endpoint at `upstream`.
fn assignment(upstream: SocketAddr) -> Value {
    json!({
        "cluster_name": "upstream",
        "endpoints": [{"lb_endpoints": [{"endpoint": {"address":
            {"socket_address": {"address": "127.0.0.1", "port_value": upstream.port()}}}}]}],
    })
}

/// Serves two builds of the header filter (`/0.wasm`: the file; `/1.wasm`: the file with a
/// custom section more), for `code.remote`.
struct ModuleServer {
    addr: SocketAddr,
    sha256: [String; 2],
}

impl ModuleServer {
    fn start(filter: &Path) -> Result<ModuleServer, String> {
        let first = std::fs::read(filter).map_err(|e| format!("{}: {e}", filter.display()))?;
        let mut second = first.clone();
        // A custom section (id 0): 5 bytes, the name "http" and nothing.
        second.extend_from_slice(b"\x00\x05\x04http");
        let sha256 = [hex_sha256(&first), hex_sha256(&second)];
        let modules = [first, second];
        let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
        let addr = listener.local_addr().map_err(|e| e.to_string())?;
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { return };
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") && stream.read(&mut byte).unwrap_or(0) == 1 {
                    head.push(byte[0]);
                }
                let module = &modules[usize::from(head.starts_with(b"GET /1.wasm"))];
                let _ =
                    write!(stream, "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n", module.len());
                let _ = stream.write_all(module);
            }
        });
        Ok(ModuleServer { addr, sha256 })
    }

    /// The cluster `modules` the modules are fetched through.
    fn cluster(&self) -> Value {
        json!({
            "@type": "type.googleapis.com/envoy.config.cluster.v3.Cluster", "name": "modules", "type": "STATIC",
            "load_assignment": {"cluster_name": "modules", "endpoints": [{"lb_endpoints": [{"endpoint": {"address":
                {"socket_address": {"address": "127.0.0.1", "port_value": self.addr.port()}}}}]}]},
        })
    }

    /// `code.remote` for build `which` (0 or 1).
    fn code(&self, which: usize) -> Value {
        json!({"remote": {
            "http_uri": {"uri": format!("http://modules.bench/{which}.wasm"), "cluster": "modules", "timeout": "5s"},
            "sha256": self.sha256[which],
        }})
    }
}

/// The listeners of update `version`: `main` (its plugin adding `x-version: <version>`,
/// with its module from `code`; a route `/v<version>`), and with `extra` a second one.
fn listeners(version: usize, code: &Value, extra: bool) -> Vec<Value> {
    let listener = |name: &str| {
        let configuration = format!(r#"{{"response_headers": [["x-version", "{version}"]]}}"#);
        json!({
            "@type": "type.googleapis.com/envoy.config.listener.v3.Listener", "name": name,
            "address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}},
            "filter_chains": [{"filters": [{"name": "envoy.filters.network.http_connection_manager", "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                "stat_prefix": name,
                "route_config": {"virtual_hosts": [{"name": "all", "domains": ["*"], "routes": [
                    {"match": {"prefix": format!("/v{version}")},
                        "direct_response": {"status": 200, "body": {"inline_string": format!("v{version}")}}},
                    {"match": {"prefix": "/"}, "route": {"cluster": "upstream"}},
                ]}]},
                "http_filters": [
                    {"name": "envoy.filters.http.wasm", "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
                        "config": {
                            "name": "versioned",
                            "vm_config": {"vm_id": "bench", "runtime": "envoy.wasm.runtime.v8", "code": code},
                            "configuration": {"@type": "type.googleapis.com/google.protobuf.StringValue", "value": configuration},
                        },
                    }},
                    {"name": "envoy.filters.http.router", "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}},
                ],
            }}]}],
        })
    };
    let mut all = vec![listener("main")];
    if extra {
        all.push(listener("extra"));
    }
    all
}

/// The clients: each keeps a connection, sends requests back to back, and notes the
/// newest `x-version` seen and when.
struct Clients {
    stop: Arc<AtomicBool>,
    requests: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
    newest: Arc<Mutex<(u64, Instant)>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Clients {
    fn start(addr: SocketAddr) -> Clients {
        let stop = Arc::new(AtomicBool::new(false));
        let (requests, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let newest = Arc::new(Mutex::new((0, Instant::now())));
        let threads = (0..CLIENTS)
            .map(|_| {
                let (stop, requests, failed, newest) = (stop.clone(), requests.clone(), failed.clone(), newest.clone());
                std::thread::spawn(move || {
                    let mut connection: Option<TcpStream> = None;
                    while !stop.load(Ordering::Relaxed) {
                        requests.fetch_add(1, Ordering::Relaxed);
                        match exchange_with_retry(addr, &mut connection) {
                            Some((200..=299, version)) => {
                                let mut n = newest.lock().unwrap_or_else(|e| e.into_inner());
                                if version > n.0 {
                                    *n = (version, Instant::now());
                                }
                            }
                            _ => {
                                failed.fetch_add(1, Ordering::Relaxed);
                                connection = None;
                            }
                        }
                    }
                })
            })
            .collect();
        Clients { stop, requests, failed, newest, threads }
    }

    /// When an answer first carried `x-version` `version` (or a later one), within `timeout`.
    fn wait_for(&self, version: u64, timeout: Duration) -> Option<Instant> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            let (newest, at) = *self.newest.lock().unwrap_or_else(|e| e.into_inner());
            if newest >= version {
                return Some(at);
            }
            std::thread::sleep(Duration::from_micros(200));
        }
        None
    }

    /// Requests sent so far, and how many failed.
    fn counts(&self) -> (u64, u64) {
        (self.requests.load(Ordering::Relaxed), self.failed.load(Ordering::Relaxed))
    }

    /// Stops the clients: requests sent, and how many failed.
    fn stop(self) -> (u64, u64) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            let _ = t.join();
        }
        (self.requests.load(Ordering::Relaxed), self.failed.load(Ordering::Relaxed))
    }
}

/// One GET on the kept connection (a new one if none); a kept connection that gives no
/// answer at all (the proxy closed it as the request went out) is replaced and the request
/// sent once more. The status and the `x-version` value.
fn exchange_with_retry(addr: SocketAddr, connection: &mut Option<TcpStream>) -> Option<(u16, u64)> {
    let reused = connection.is_some();
    match exchange(addr, connection) {
        Ok(answer) => Some(answer),
        Err(nothing_read) if reused && nothing_read => {
            *connection = None;
            exchange(addr, connection).ok()
        }
        Err(_) => None,
    }
}

/// `Err(true)` when the connection gave nothing back.
fn exchange(addr: SocketAddr, connection: &mut Option<TcpStream>) -> Result<(u16, u64), bool> {
    if connection.is_none() {
        let stream = TcpStream::connect(addr).map_err(|_| false)?;
        let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
        let _ = stream.set_nodelay(true);
        *connection = Some(stream);
    }
    let stream = connection.as_mut().ok_or(false)?;
    stream.write_all(b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n").map_err(|_| true)?;
    let mut head = Vec::with_capacity(512);
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => return Err(head.is_empty()),
        }
    }
    let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
    let status: u16 = head.get(9..12).and_then(|s| s.parse().ok()).ok_or(false)?;
    let header = |name: &str| head.lines().find_map(|l| l.strip_prefix(name)).map(str::trim);
    let length: usize = header("content-length:").and_then(|v| v.parse().ok()).unwrap_or(0);
    let mut body = vec![0u8; length];
    stream.read_exact(&mut body).map_err(|_| false)?;
    if header("connection:") == Some("close") {
        *connection = None;
    }
    Ok((status, header("x-version:").and_then(|v| v.parse().ok()).unwrap_or(0)))
}

fn rss_mb(running: &Running) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", running.child.id())).unwrap_or_default();
    let kb = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok());
    kb.unwrap_or(0.0) / 1024.0
}

/// Live Wasm VMs (`wasm.envoy.wasm.runtime.v8.active`).
fn vms(running: &Running) -> u64 {
    let stats = admin_get(running.admin, "/stats?filter=wasm.envoy.wasm.runtime.v8.active").unwrap_or_default();
    stats.lines().find_map(|l| l.rsplit(' ').next()?.parse().ok()).unwrap_or(0)
}

fn percentile(values: &[f64], q: f64) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(|a, b| a.total_cmp(b));
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}
