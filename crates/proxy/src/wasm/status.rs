//! What the admin's `/wasm` shows of each plugin VM on each thread: its module, plugins,
//! memory, callbacks, streams and failures, kept current by the thread that runs it (each
//! callback counted as it returns) and read by the admin thread.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::SystemTime;

use serde_json::{Value, json};
use wasmproxy_host::{VmFailure, VmFailureKind};

/// `/wasm?format=html`: a page showing `/wasm?format=json`, refreshed every 2 s.
pub const PAGE: &str = include_str!("status_page.html");

/// Every live VM's status, for the admin.
#[derive(Default)]
pub struct WasmBoard {
    vms: Mutex<Vec<Weak<VmStatus>>>,
}

/// One VM's status (one per `PluginInstance`: a VM reloaded under FAIL_RELOAD keeps its
/// counts; a VM recycled or moved to optimized code is a new one).
pub struct VmStatus {
    /// The worker it runs on (`None`: the main thread, for singleton services).
    pub worker: Option<usize>,
    /// Its `vm_id`.
    pub vm_id: String,
    /// Its module's name (the file, or the URL's) and sha256.
    pub module: (String, String),
    /// Whether it runs optimized code (else baseline code, until it moves).
    pub optimized: bool,
    /// When it started.
    pub started: SystemTime,
    /// Its plugins' names.
    plugins: Mutex<Vec<String>>,
    /// Callbacks run (root and stream callbacks, timers, queues, callouts' answers).
    pub calls: AtomicU64,
    /// Each callback's times, in [`CALLBACKS`] order (the last: any other).
    cpu: Box<[CallbackCpu]>,
    /// Streams and TCP connections started in it.
    pub streams: AtomicU64,
    /// Its linear memory after the last callback (or the last plugin's start), in bytes.
    pub memory_bytes: AtomicU64,
    /// Callouts in flight after the last callback (answers the plugin still waits for).
    pub callouts: AtomicU64,
    /// Failures by kind: traps, deadlines, memory cap, CPU budget, others (`proc_exit`,
    /// start-up).
    pub failures: [AtomicU64; 5],
    /// Reloads after a failure (FAIL_RELOAD).
    pub reloads: AtomicU64,
    /// Whether it is failed now.
    pub failed: AtomicBool,
    /// The last failure, with its time.
    pub last_error: Mutex<Option<(SystemTime, String)>>,
}

/// The callbacks `/wasm` shows one by one (any other is counted as `other`), those of every
/// stream first: each callback is looked up here.
const CALLBACKS: [&str; 28] = [
    "proxy_on_context_create",
    "proxy_on_request_headers",
    "proxy_on_response_headers",
    "proxy_on_log",
    "proxy_on_done",
    "proxy_on_delete",
    "proxy_on_request_body",
    "proxy_on_response_body",
    "proxy_on_request_trailers",
    "proxy_on_response_trailers",
    "proxy_on_request_metadata",
    "proxy_on_response_metadata",
    "proxy_on_vm_start",
    "proxy_on_configure",
    "proxy_on_tick",
    "proxy_on_queue_ready",
    "proxy_on_http_call_response",
    "proxy_on_grpc_receive_initial_metadata",
    "proxy_on_grpc_receive",
    "proxy_on_grpc_receive_trailing_metadata",
    "proxy_on_grpc_close",
    "proxy_on_foreign_function",
    "proxy_on_new_connection",
    "proxy_on_downstream_data",
    "proxy_on_upstream_data",
    "proxy_on_downstream_connection_close",
    "proxy_on_upstream_connection_close",
    "proxy_on_memory_allocate",
];

/// One callback's times: how many, their sum, and a histogram of buckets of powers of two
/// (bucket `i` holds `[2^(i-1), 2^i)` nanoseconds; bucket 0 holds 0; the last, the rest).
struct CallbackCpu {
    calls: AtomicU64,
    nanos: AtomicU64,
    buckets: [AtomicU64; BUCKETS],
}

/// Buckets enough for 2^46 ns (19 hours): longer than any callback deadline.
const BUCKETS: usize = 48;

impl Default for CallbackCpu {
    fn default() -> Self {
        CallbackCpu {
            calls: AtomicU64::new(0),
            nanos: AtomicU64::new(0),
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }
}

/// The upper bound of the bucket holding the `q` quantile of `counts` (nanoseconds).
fn quantile(counts: &[u64], q: f64) -> u64 {
    let total: u64 = counts.iter().sum();
    let rank = ((total as f64 * q).ceil() as u64).max(1);
    let mut seen = 0;
    for (i, n) in counts.iter().enumerate() {
        seen += n;
        if seen >= rank {
            return if i == 0 { 0 } else { (1u64 << i.min(63)) - 1 };
        }
    }
    0
}

/// The failure kinds `/wasm` counts, in [`VmStatus::failures`] order.
const KINDS: [&str; 5] = ["trap", "deadline", "memory_limit", "cpu_budget", "other"];

impl WasmBoard {
    /// An empty board.
    pub fn new() -> Arc<WasmBoard> {
        Arc::default()
    }

    /// A new VM's status, shown while the VM lives.
    pub fn register(&self, status: VmStatus) -> Arc<VmStatus> {
        let status = Arc::new(status);
        let mut vms = lock(&self.vms);
        vms.retain(|v| v.strong_count() > 0);
        vms.push(Arc::downgrade(&status));
        status
    }

    /// The live VMs, by thread (the main thread last) and start.
    pub fn snapshot(&self) -> Vec<Arc<VmStatus>> {
        let vms = lock(&self.vms);
        let mut live: Vec<Arc<VmStatus>> = vms.iter().filter_map(Weak::upgrade).collect();
        live.sort_by_key(|v| (v.worker.unwrap_or(usize::MAX), v.started));
        live
    }

    /// `/wasm?format=json`.
    pub fn json(&self) -> Value {
        let vms: Vec<Value> = self.snapshot().iter().map(|v| v.json()).collect();
        json!({ "vms": vms })
    }

    /// `/wasm`: a line per VM, then its plugins, its last failure and its callbacks.
    pub fn text(&self) -> String {
        let mut out = String::new();
        for v in self.snapshot() {
            let j = v.json();
            let text = |key: &str| j[key].as_str().unwrap_or_default().to_string();
            let failures: Vec<String> = KINDS.iter().map(|k| format!("{k}:{}", j["failures"][k])).collect();
            out.push_str(&format!(
                "{} vm_id={:?} module={} sha256={} code={} memory_bytes={} callouts_in_flight={} calls={} streams={} failures=[{}] reloads={} state={} age_s={}\n",
                text("thread"),
                text("vm_id"),
                text("module"),
                text("sha256"),
                text("code"),
                j["memory_bytes"],
                j["callouts_in_flight"],
                j["calls"],
                j["streams"],
                failures.join(" "),
                j["reloads"],
                text("state"),
                j["age_s"],
            ));
            let plugins: Vec<&str> = j["plugins"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
            out.push_str(&format!("  plugins: {}\n", plugins.join(", ")));
            if !j["last_error"].is_null() {
                let e = &j["last_error"];
                out.push_str(&format!(
                    "  last error at {}: {}\n",
                    e["time"].as_str().unwrap_or_default(),
                    e["message"].as_str().unwrap_or_default()
                ));
            }
            for (callback, c) in j["callbacks"].as_object().into_iter().flatten() {
                out.push_str(&format!(
                    "  {callback}: calls={} cpu_us={} p50_us={} p99_us={} max_us={}\n",
                    c["calls"],
                    micros(&c["cpu_ns"]),
                    micros(&c["p50_ns"]),
                    micros(&c["p99_ns"]),
                    micros(&c["max_ns"]),
                ));
            }
        }
        out
    }
}

/// Nanoseconds (a JSON number) as microseconds with one decimal.
fn micros(nanos: &Value) -> String {
    format!("{:.1}", nanos.as_u64().unwrap_or(0) as f64 / 1000.0)
}

/// A lock, even if a thread panicked holding it.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl VmStatus {
    /// The status of a VM starting now.
    pub fn new(worker: Option<usize>, vm_id: &str, module: (String, String), optimized: bool) -> VmStatus {
        VmStatus {
            worker,
            vm_id: vm_id.to_string(),
            module,
            optimized,
            started: SystemTime::now(),
            plugins: Mutex::default(),
            calls: AtomicU64::new(0),
            cpu: (0..=CALLBACKS.len()).map(|_| CallbackCpu::default()).collect(),
            streams: AtomicU64::new(0),
            memory_bytes: AtomicU64::new(0),
            callouts: AtomicU64::new(0),
            failures: Default::default(),
            reloads: AtomicU64::new(0),
            failed: AtomicBool::new(false),
            last_error: Mutex::new(None),
        }
    }

    /// The slot of the callbacks `/wasm` does not show one by one.
    pub const OTHER: usize = CALLBACKS.len();

    /// Where the export `callback` is counted ([`VmStatus::note_callback`]).
    pub fn slot(callback: &str) -> usize {
        CALLBACKS.iter().position(|c| *c == callback).unwrap_or(CALLBACKS.len())
    }

    /// The export counted at `slot` ran for `nanos`. Only the VM's thread writes these:
    /// a relaxed load and store each, no locked add.
    pub fn note_callback(&self, slot: usize, nanos: u64) {
        let add = |a: &AtomicU64, n: u64| a.store(a.load(Relaxed).wrapping_add(n), Relaxed);
        add(&self.calls, 1);
        let c = &self.cpu[slot.min(VmStatus::OTHER)];
        add(&c.calls, 1);
        add(&c.nanos, nanos);
        add(&c.buckets[((u64::BITS - nanos.leading_zeros()) as usize).min(BUCKETS - 1)], 1);
    }

    /// The VM's memory is now `memory` bytes, `callouts` are in flight, and it failed so
    /// if `failure`.
    pub fn note_call(&self, memory: usize, callouts: usize, failure: Option<&VmFailure>) {
        self.note_memory(memory);
        self.callouts.store(callouts as u64, Relaxed);
        if let Some(f) = failure {
            self.note_failure(f);
        }
    }

    /// The VM failed.
    pub fn note_failure(&self, failure: &VmFailure) {
        if self.failed.swap(true, Relaxed) {
            return;
        }
        let kind = match failure.kind {
            VmFailureKind::Trap => 0,
            VmFailureKind::Deadline => 1,
            VmFailureKind::MemoryLimit => 2,
            VmFailureKind::CpuBudget => 3,
            VmFailureKind::Exit | VmFailureKind::StartFailed => 4,
        };
        self.failures[kind].fetch_add(1, Relaxed);
        let mut last = lock(&self.last_error);
        *last = Some((SystemTime::now(), failure.to_string()));
    }

    /// The VM's linear memory is now `memory` bytes.
    pub fn note_memory(&self, memory: usize) {
        self.memory_bytes.store(memory as u64, Relaxed);
    }

    /// A plugin was added to the VM.
    pub fn add_plugin(&self, name: &str) {
        lock(&self.plugins).push(name.to_string());
    }

    /// A plugin was removed from the VM.
    pub fn remove_plugin(&self, name: &str) {
        let mut names = lock(&self.plugins);
        if let Some(at) = names.iter().position(|n| n == name) {
            names.remove(at);
        }
    }

    /// The VM was built again after a failure.
    pub fn note_reload(&self) {
        self.reloads.fetch_add(1, Relaxed);
        self.failed.store(false, Relaxed);
    }

    /// Each callback that ran: its count, CPU time, quantiles (each the upper bound of its
    /// bucket) and histogram: `[lower bound, count]` per bucket of powers of two, in
    /// nanoseconds.
    fn callbacks_json(&self) -> Value {
        let names = CALLBACKS.iter().map(|c| crate::wasm::meter::short_name(c)).chain(["other"]);
        let callbacks = names.zip(self.cpu.iter()).filter(|(_, c)| c.calls.load(Relaxed) > 0).map(|(name, c)| {
            let counts: Vec<u64> = c.buckets.iter().map(|b| b.load(Relaxed)).collect();
            let histogram: Vec<Value> = counts
                .iter()
                .enumerate()
                .filter(|(_, n)| **n > 0)
                .map(|(i, n)| json!([if i == 0 { 0 } else { 1u64 << (i - 1) }, n]))
                .collect();
            let entry = json!({
                "calls": c.calls.load(Relaxed),
                "cpu_ns": c.nanos.load(Relaxed),
                "p50_ns": quantile(&counts, 0.5),
                "p99_ns": quantile(&counts, 0.99),
                "max_ns": quantile(&counts, 1.0),
                "histogram_ns": histogram,
            });
            (name.to_string(), entry)
        });
        Value::Object(callbacks.collect())
    }

    /// Its status as `/wasm?format=json` shows it.
    pub fn json(&self) -> Value {
        let failures: serde_json::Map<String, Value> =
            KINDS.iter().zip(&self.failures).map(|(k, n)| (k.to_string(), json!(n.load(Relaxed)))).collect();
        let last = lock(&self.last_error).clone();
        let age = self.started.elapsed().map_or(0.0, |d| (d.as_secs_f64() * 1000.0).round() / 1000.0);
        json!({
            "thread": self.worker.map_or("main".to_string(), |w| format!("worker_{w}")),
            "vm_id": self.vm_id,
            "module": self.module.0,
            "sha256": self.module.1,
            "code": if self.optimized { "optimized" } else { "baseline" },
            "plugins": *lock(&self.plugins),
            "memory_bytes": self.memory_bytes.load(Relaxed),
            "callouts_in_flight": self.callouts.load(Relaxed),
            "calls": self.calls.load(Relaxed),
            "callbacks": self.callbacks_json(),
            "streams": self.streams.load(Relaxed),
            "failures": failures,
            "reloads": self.reloads.load(Relaxed),
            "state": if self.failed.load(Relaxed) { "failed" } else { "running" },
            "age_s": age,
            "last_error": last.map(|(at, message)| json!({ "time": crate::clock::Utc::at(at).iso8601_millis(), "message": message })),
        })
    }
}
