//! The proxies a spec runs on: wasmproxy in this process, and Envoy (`--envoy PATH`) started
//! as the conformance harness starts it. Both are asked the same things: where they
//! listen, what the plugin logged, its metrics (admin `/stats`), and, where they can be,
//! to tick, to deliver a queue message, or to show shared data.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tracing_subscriber::layer::SubscriberExt;
use wasmproxy_conformance::proxy::{self, Binaries, Kind, Launch, Running};
use wasmproxy_proxy::{RunningServer, Server, ServerOptions};

/// One line the proxy logged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    /// Envoy's name of its level (`info`, `warning`, ...).
    pub level: String,
    /// The text, without the `wasm log <plugin>:` prefix for a plugin's line.
    pub text: String,
    /// Logged by the plugin (else by the proxy about it: a trap, a refused call).
    pub plugin: bool,
}

impl std::fmt::Display for LogLine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "[{}] {}", self.level, self.text)
    }
}

impl LogLine {
    /// A line as the proxy printed it (`[level] ` first, or not): a plugin's line when it
    /// starts `wasm log`.
    fn parse(line: &str) -> LogLine {
        let (level, rest) = match line.strip_prefix('[').and_then(|l| l.split_once("] ")) {
            Some((level, rest)) => (level.to_string(), rest),
            None => (String::new(), line),
        };
        match rest.strip_prefix("wasm log").and_then(|r| r.split_once(": ")) {
            Some((_, text)) => LogLine { level, text: text.to_string(), plugin: true },
            None => LogLine { level, text: rest.to_string(), plugin: false },
        }
    }
}

/// A proxy running the spec's configuration.
pub enum Target {
    /// wasmproxy, in this process.
    Wasmproxy {
        /// The server (taken when stopped).
        server: Option<RunningServer>,
        /// What it has logged.
        logs: Arc<Mutex<Vec<LogLine>>>,
    },
    /// Envoy, a child process.
    Envoy(Running),
}

/// How long a queue message is waited for, to be taken by the plugin.
const QUEUE_WAIT: Duration = Duration::from_secs(1);

/// How long a case's stream may take to finish (its plugin's last callbacks) after the
/// client has its answer.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(10);

impl Target {
    /// wasmproxy on the configuration (Envoy's JSON), one worker, ticking only when told.
    pub fn wasmproxy(config: &str, logs: Arc<Mutex<Vec<LogLine>>>) -> Result<Target, String> {
        let bootstrap = wasmproxy_config::load_str(config, Path::new("")).map_err(|e| e.to_string())?;
        let mut options = ServerOptions { concurrency: 1, manual_ticks: true, ..ServerOptions::default() };
        options.engine.cache_dir = crate::serve::default_cache_dir();
        options.drain_time = Duration::ZERO;
        let server = Server::start(bootstrap, options).map_err(|e| e.to_string())?;
        Ok(Target::Wasmproxy { server: Some(server), logs })
    }

    /// Envoy at `binary` on the configuration written to `work`.
    pub fn envoy(binary: &Path, config: &str, work: &Path, level: &str) -> Result<Target, String> {
        let file = work.join("envoy.json");
        std::fs::write(&file, config).map_err(|e| format!("cannot write {}: {e}", file.display()))?;
        let bins = Binaries { envoy: binary.to_path_buf(), wasmproxy: binary.to_path_buf() };
        let launch = Launch { wasm_log_level: level.to_string(), log_levels: true, ..Launch::default() };
        let running = proxy::start_with(Kind::Envoy, &bins, &file, work, &launch)
            .map_err(|e| format!("Envoy did not start:\n{e}"))?;
        Ok(Target::Envoy(running))
    }

    /// Where the listener is.
    pub fn listener(&self) -> SocketAddr {
        match self {
            Target::Wasmproxy { server, .. } => server.as_ref().map_or(unspecified(), |s| s.listeners[0].1),
            Target::Envoy(running) => running.listener,
        }
    }

    fn admin(&self) -> SocketAddr {
        match self {
            Target::Wasmproxy { server, .. } => server.as_ref().and_then(|s| s.admin).unwrap_or(unspecified()),
            Target::Envoy(running) => running.admin,
        }
    }

    /// How many lines it has logged so far.
    pub fn log_mark(&self) -> usize {
        match self {
            Target::Wasmproxy { logs, .. } => logs.lock().unwrap_or_else(|e| e.into_inner()).len(),
            Target::Envoy(running) => {
                running.sync_stderr();
                running.stderr_len()
            }
        }
    }

    /// The lines logged since `mark` (on Envoy, all it has written to stderr so far: its
    /// lines are read from the pipe by a thread of ours, which may lag behind).
    pub fn logs_since(&self, mark: usize) -> Vec<LogLine> {
        match self {
            Target::Wasmproxy { logs, .. } => {
                logs.lock().unwrap_or_else(|e| e.into_inner()).get(mark..).unwrap_or_default().to_vec()
            }
            Target::Envoy(running) => {
                running.sync_stderr();
                running.stderr_since(mark).iter().map(|l| LogLine::parse(l)).collect()
            }
        }
    }

    /// Admin `/stats`, one `name: value` per line.
    pub fn stats(&self) -> String {
        proxy::admin_get(self.admin(), "/stats").unwrap_or_default()
    }

    /// The callouts the plugin's VMs wait for the answers of (`/wasm`); `None` on Envoy,
    /// which does not tell.
    pub fn callouts_in_flight(&self) -> Option<u64> {
        let Target::Wasmproxy { .. } = self else { return None };
        let status = proxy::admin_get(self.admin(), "/wasm?format=json").unwrap_or_default();
        let status: serde_json::Value = serde_json::from_str(&status).unwrap_or_default();
        let vms = status["vms"].as_array().map(Vec::as_slice).unwrap_or_default();
        Some(vms.iter().filter_map(|vm| vm["callouts_in_flight"].as_u64()).sum())
    }

    /// Waits until no downstream connection is open (the last stream's callbacks done).
    pub fn settle(&self) {
        let deadline = Instant::now() + SETTLE_TIMEOUT;
        while Instant::now() < deadline {
            let stats = proxy::admin_get(self.admin(), "/stats?filter=downstream_cx_active").unwrap_or_default();
            if stats.lines().any(|l| l.trim() == "http.plugin_test.downstream_cx_active: 0") {
                return;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// Ticks the plugin once; how many root contexts ticked.
    pub fn tick(&self) -> Result<usize, String> {
        match self {
            Target::Wasmproxy { server, .. } => Ok(server.as_ref().map_or(0, |s| s.tick_plugins())),
            Target::Envoy(_) => Err("Envoy ticks on its own timers only".into()),
        }
    }

    /// Puts `message` on the queue `name` of VM id `vm_id`, as another plugin would.
    pub fn enqueue(&self, vm_id: &str, name: &str, message: &[u8]) -> Result<(), String> {
        let Target::Wasmproxy { server: Some(server), .. } = self else {
            return Err("Envoy takes queue messages from its plugins only".into());
        };
        let queues = &server.shared().queues;
        let id = queues
            .resolve(vm_id, name.as_bytes())
            .map_err(|_| format!("no queue {name:?} registered by VM id {vm_id:?}"))?;
        let before = queues.waiting(id);
        if let status @ (wasmproxy_host::abi::Status::NotFound | wasmproxy_host::abi::Status::InternalFailure) =
            queues.enqueue(id, message)
        {
            return Err(format!("the queue {name:?} refused the message ({status:?})"));
        }
        // The plugin hears of it on its worker; wait until it has taken it (if it does).
        let deadline = Instant::now() + QUEUE_WAIT;
        while queues.waiting(id) > before && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        Ok(())
    }

    /// The shared data at `key` of VM id `vm_id`.
    pub fn shared_data(&self, vm_id: &str, key: &str) -> Result<Option<Vec<u8>>, String> {
        let Target::Wasmproxy { server: Some(server), .. } = self else {
            return Err("Envoy does not show shared data".into());
        };
        Ok(server.shared().data.get(vm_id, key.as_bytes()).ok().map(|(value, _)| value))
    }

    /// Stops it.
    pub fn stop(&mut self) {
        match self {
            Target::Wasmproxy { server, .. } => {
                if let Some(s) = server.take() {
                    s.stop();
                }
            }
            Target::Envoy(running) => running.stop(),
        }
    }
}

fn unspecified() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

/// Captures the in-process proxy's log lines: the plugins' (target `wasm`) at `level` and
/// above, the rest from warnings up. Installed once, for the process.
pub fn capture_logs(level: &str) -> Result<Arc<Mutex<Vec<LogLine>>>, String> {
    let wasm = match level {
        "trace" => tracing::Level::TRACE,
        "debug" => tracing::Level::DEBUG,
        "info" => tracing::Level::INFO,
        "warning" | "warn" => tracing::Level::WARN,
        "error" | "critical" => tracing::Level::ERROR,
        other => {
            return Err(format!("log_level: {other:?} is not one of trace, debug, info, warning, error, critical"));
        }
    };
    let lines = Arc::new(Mutex::new(Vec::new()));
    let filter =
        tracing_subscriber::filter::Targets::new().with_target("wasm", wasm).with_default(tracing::Level::WARN);
    let layer = tracing_subscriber::Layer::with_filter(Capture(lines.clone()), filter);
    tracing::subscriber::set_global_default(tracing_subscriber::registry().with(layer))
        .map_err(|e| format!("cannot capture the logs: {e}"))?;
    Ok(lines)
}

/// The layer writing each event down as a [`LogLine`].
struct Capture(Arc<Mutex<Vec<LogLine>>>);

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Capture {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        let mut fields = Fields::default();
        event.record(&mut fields);
        let level = match *event.metadata().level() {
            tracing::Level::ERROR if fields.critical => "critical",
            tracing::Level::ERROR => "error",
            tracing::Level::WARN => "warning",
            tracing::Level::INFO => "info",
            tracing::Level::DEBUG => "debug",
            tracing::Level::TRACE => "trace",
        };
        let line = LogLine::parse(&format!("[{level}] {}", fields.message));
        self.0.lock().unwrap_or_else(|e| e.into_inner()).push(line);
    }
}

/// An event's message and whether it says it is critical.
#[derive(Default)]
struct Fields {
    message: String,
    critical: bool,
}

impl tracing::field::Visit for Fields {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.message = format!("{value:?}");
        }
    }

    fn record_bool(&mut self, field: &tracing::field::Field, value: bool) {
        if field.name() == "critical" {
            self.critical = value;
        }
    }
}
