//! What the admin's `/wasm` shows of each plugin VM on each thread: its module, plugins,
//! memory, callbacks, streams and failures, kept current by the thread that runs it (each
//! callback counted as it returns) and read by the admin thread.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, Weak};
use std::time::SystemTime;

use serde_json::{Value, json};
use wasmproxy_host::{VmFailure, VmFailureKind};

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
    pub plugins: Mutex<Vec<String>>,
    /// Callbacks run (root and stream callbacks, timers, queues, callouts' answers).
    pub calls: AtomicU64,
    /// Streams and TCP connections started in it.
    pub streams: AtomicU64,
    /// Its linear memory after the last callback, in bytes.
    pub memory_bytes: AtomicU64,
    /// Failures by kind: traps, deadlines, memory cap, others (`proc_exit`, start-up).
    pub failures: [AtomicU64; 4],
    /// Reloads after a failure (FAIL_RELOAD).
    pub reloads: AtomicU64,
    /// Whether it is failed now.
    pub failed: AtomicBool,
    /// The last failure, with its time.
    pub last_error: Mutex<Option<(SystemTime, String)>>,
}

/// The failure kinds `/wasm` counts, in [`VmStatus::failures`] order.
const KINDS: [&str; 4] = ["trap", "deadline", "memory_limit", "other"];

impl WasmBoard {
    /// An empty board.
    pub fn new() -> Arc<WasmBoard> {
        Arc::default()
    }

    /// A new VM's status, shown while the VM lives.
    pub fn register(&self, status: VmStatus) -> Arc<VmStatus> {
        let status = Arc::new(status);
        let mut vms = self.vms.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        vms.retain(|v| v.strong_count() > 0);
        vms.push(Arc::downgrade(&status));
        status
    }

    /// The live VMs, by thread (the main thread last) and start.
    pub fn snapshot(&self) -> Vec<Arc<VmStatus>> {
        let vms = self.vms.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut live: Vec<Arc<VmStatus>> = vms.iter().filter_map(Weak::upgrade).collect();
        live.sort_by_key(|v| (v.worker.unwrap_or(usize::MAX), v.started));
        live
    }

    /// `/wasm?format=json`.
    pub fn json(&self) -> Value {
        let vms: Vec<Value> = self.snapshot().iter().map(|v| v.json()).collect();
        json!({ "vms": vms })
    }

    /// `/wasm`: a line per VM, then its plugins and its last failure.
    pub fn text(&self) -> String {
        let mut out = String::new();
        for v in self.snapshot() {
            let j = v.json();
            out.push_str(&format!(
                "{thread} vm_id={vm_id:?} module={module} sha256={sha} code={code} memory_bytes={memory} calls={calls} streams={streams} failures=[{failures}] reloads={reloads} state={state} age_s={age}\n",
                thread = v.worker.map_or("main".to_string(), |w| format!("worker_{w}")),
                vm_id = v.vm_id,
                module = v.module.0,
                sha = v.module.1,
                code = j["code"].as_str().unwrap_or_default(),
                memory = v.memory_bytes.load(Relaxed),
                calls = v.calls.load(Relaxed),
                streams = v.streams.load(Relaxed),
                failures = KINDS.iter().zip(&v.failures).map(|(k, n)| format!("{k}:{}", n.load(Relaxed))).collect::<Vec<_>>().join(" "),
                reloads = v.reloads.load(Relaxed),
                state = j["state"].as_str().unwrap_or_default(),
                age = j["age_s"],
            ));
            out.push_str(&format!(
                "  plugins: {}\n",
                j["plugins"].as_array().map_or(String::new(), |p| p
                    .iter()
                    .filter_map(Value::as_str)
                    .collect::<Vec<_>>()
                    .join(", "))
            ));
            if let Some(e) = j.get("last_error").filter(|e| !e.is_null()) {
                out.push_str(&format!(
                    "  last error at {}: {}\n",
                    e["time"].as_str().unwrap_or_default(),
                    e["message"].as_str().unwrap_or_default()
                ));
            }
        }
        out
    }
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
            streams: AtomicU64::new(0),
            memory_bytes: AtomicU64::new(0),
            failures: Default::default(),
            reloads: AtomicU64::new(0),
            failed: AtomicBool::new(false),
            last_error: Mutex::new(None),
        }
    }

    /// A callback ran; the VM's memory is now `memory` bytes, and it failed so if `failure`.
    pub fn note_call(&self, memory: usize, failure: Option<&VmFailure>) {
        self.calls.fetch_add(1, Relaxed);
        self.memory_bytes.store(memory as u64, Relaxed);
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
            VmFailureKind::Exit | VmFailureKind::StartFailed => 3,
        };
        self.failures[kind].fetch_add(1, Relaxed);
        let mut last = self.last_error.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        *last = Some((SystemTime::now(), failure.to_string()));
    }

    /// The VM was built again after a failure.
    pub fn note_reload(&self) {
        self.reloads.fetch_add(1, Relaxed);
        self.failed.store(false, Relaxed);
    }

    /// Its status as `/wasm?format=json` shows it.
    pub fn json(&self) -> Value {
        let failures: serde_json::Map<String, Value> =
            KINDS.iter().zip(&self.failures).map(|(k, n)| (k.to_string(), json!(n.load(Relaxed)))).collect();
        let last = self.last_error.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
        let age = self.started.elapsed().map_or(0.0, |d| (d.as_secs_f64() * 1000.0).round() / 1000.0);
        json!({
            "thread": self.worker.map_or("main".to_string(), |w| format!("worker_{w}")),
            "vm_id": self.vm_id,
            "module": self.module.0,
            "sha256": self.module.1,
            "code": if self.optimized { "optimized" } else { "baseline" },
            "plugins": *self.plugins.lock().unwrap_or_else(std::sync::PoisonError::into_inner),
            "memory_bytes": self.memory_bytes.load(Relaxed),
            "calls": self.calls.load(Relaxed),
            "streams": self.streams.load(Relaxed),
            "failures": failures,
            "reloads": self.reloads.load(Relaxed),
            "state": if self.failed.load(Relaxed) { "failed" } else { "running" },
            "age_s": age,
            "last_error": last.map(|(at, message)| json!({ "time": crate::clock::Utc::at(at).iso8601_millis(), "message": message })),
        })
    }
}
