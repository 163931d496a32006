//! Test support: a recording embedder, the engine, plugin paths, a harness around one VM.

use std::cell::RefCell;
use std::collections::HashMap;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use wasmproxy_host::abi::{LogLevel, Status};
use wasmproxy_host::*;

/// Everything the fake embedder saw.
#[derive(Default)]
pub struct Recorded {
    pub logs: Vec<(LogLevel, String, String)>,
    pub http_calls: Vec<HttpCallRequest>,
    pub grpc_calls: Vec<GrpcCallRequest>,
    pub grpc_streams: Vec<GrpcStreamRequest>,
    pub grpc_sent: Vec<(u32, Vec<u8>, bool)>,
    pub grpc_cancelled: Vec<u32>,
    pub grpc_closed: Vec<u32>,
    pub ticks: Vec<(u32, Option<Duration>)>,
    pub properties: HashMap<Vec<u8>, Vec<u8>>,
    pub foreign: Vec<(u32, String, Vec<u8>)>,
    pub failures: Vec<VmFailure>,
}

/// Queue notifications: (root context, queue id), from any thread.
pub type Notifications = Arc<Mutex<Vec<(u32, u32)>>>;

/// An embedder that records what the host asked of it and answers like a small Envoy.
pub struct FakeEmbedder {
    pub rec: Rc<RefCell<Recorded>>,
    pub notifications: Notifications,
    pub clusters: Vec<&'static str>,
}

impl Embedder for FakeEmbedder {
    fn log(&mut self, r: &LogRecord<'_>) {
        self.rec.borrow_mut().logs.push((r.level, r.prefix.to_string(), r.message.to_string()));
    }
    fn log_level(&self) -> LogLevel {
        LogLevel::Debug
    }
    fn property(&mut self, _ctx: u32, path: &[&[u8]]) -> Result<Vec<u8>, Status> {
        let joined = path.join(&b'.');
        match joined.as_slice() {
            b"source.address" => Ok(b"127.0.0.1:4242".to_vec()),
            b"response.code" => Ok(200i64.to_le_bytes().to_vec()),
            _ => self.rec.borrow().properties.get(&joined).cloned().ok_or(Status::NotFound),
        }
    }
    fn set_property(&mut self, _ctx: u32, path: &[u8], value: &[u8]) -> Status {
        let key: Vec<u8> = path.iter().map(|b| if *b == 0 { b'.' } else { *b }).collect();
        self.rec.borrow_mut().properties.insert(key, value.to_vec());
        Status::Ok
    }
    fn http_call(&mut self, request: HttpCallRequest) -> Result<(), Status> {
        if !self.clusters.contains(&request.cluster.as_str()) {
            return Err(Status::BadArgument);
        }
        self.rec.borrow_mut().http_calls.push(request);
        Ok(())
    }
    fn grpc_call(&mut self, request: GrpcCallRequest) -> Result<(), Status> {
        if !self.clusters.iter().any(|c| c.as_bytes() == request.service_config) {
            return Err(Status::ParseFailure);
        }
        self.rec.borrow_mut().grpc_calls.push(request);
        Ok(())
    }
    fn grpc_stream(&mut self, request: GrpcStreamRequest) -> Result<(), Status> {
        if !self.clusters.iter().any(|c| c.as_bytes() == request.service_config) {
            return Err(Status::ParseFailure);
        }
        self.rec.borrow_mut().grpc_streams.push(request);
        Ok(())
    }
    fn grpc_send(&mut self, token: u32, message: &[u8], end: bool) {
        self.rec.borrow_mut().grpc_sent.push((token, message.to_vec(), end));
    }
    fn grpc_cancel(&mut self, token: u32) {
        self.rec.borrow_mut().grpc_cancelled.push(token);
    }
    fn grpc_close(&mut self, token: u32) {
        self.rec.borrow_mut().grpc_closed.push(token);
    }
    fn set_tick_period(&mut self, root: u32, period: Option<Duration>) {
        self.rec.borrow_mut().ticks.push((root, period));
    }
    fn foreign_function(&mut self, ctx: u32, name: &str, args: &[u8]) -> Result<Vec<u8>, Status> {
        self.rec.borrow_mut().foreign.push((ctx, name.to_string(), args.to_vec()));
        match name {
            "echo" => Ok(args.to_vec()),
            _ => Err(Status::NotFound),
        }
    }
    fn queue_notifier(&mut self) -> Option<QueueNotifier> {
        let n = self.notifications.clone();
        Some(Arc::new(move |root, queue| n.lock().unwrap().push((root, queue))))
    }
    fn vm_failed(&mut self, failure: &VmFailure) {
        self.rec.borrow_mut().failures.push(failure.clone());
    }
}

/// The engine most tests share (default settings, a small pool).
pub fn engine() -> &'static WasmEngine {
    static ENGINE: OnceLock<WasmEngine> = OnceLock::new();
    ENGINE.get_or_init(|| WasmEngine::new(EngineConfig { pooling_instances: Some(64), ..Default::default() }).unwrap())
}

/// A built plugin in plugins/out/ (scripts/build-plugins.sh builds them).
pub fn plugin_path(file: &str) -> PathBuf {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../plugins/out").join(file);
    assert!(path.exists(), "{} is missing: build the test plugins first with scripts/build-plugins.sh", path.display());
    path
}

/// A hand-written WAT module from plugins/wat/, compiled to binary.
pub fn wat_module(engine: &WasmEngine, file: &str) -> Result<Arc<PluginModule>, LoadError> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../plugins/wat").join(file);
    let bytes = wat::parse_file(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    PluginModule::load(engine, ModuleSource::Bytes { name: file.to_string(), bytes })
}

pub fn load(engine: &WasmEngine, file: &str) -> Arc<PluginModule> {
    PluginModule::load(engine, ModuleSource::File(plugin_path(file))).unwrap()
}

/// One VM with a recording embedder and (after `start`) one root context.
pub struct Harness {
    pub vm: WasmVm,
    pub rec: Rc<RefCell<Recorded>>,
    pub notifications: Notifications,
    pub root: u32,
}

#[derive(Default)]
pub struct Setup {
    pub vm_id: &'static str,
    pub vm_config: String,
    pub plugin_config: String,
    pub name: &'static str,
    pub root_id: &'static str,
    pub env: Vec<(String, String)>,
}

impl Harness {
    /// A VM of `module` without root contexts.
    pub fn vm(module: &Arc<PluginModule>, setup: &Setup) -> Result<Harness, VmError> {
        let rec = Rc::new(RefCell::new(Recorded::default()));
        let notifications = Notifications::default();
        let embedder = FakeEmbedder {
            rec: rec.clone(),
            notifications: notifications.clone(),
            clusters: vec!["upstream", "grpc_cluster"],
        };
        let vm_config = VmConfig {
            vm_id: setup.vm_id.to_string(),
            configuration: setup.vm_config.clone().into_bytes(),
            environment: setup.env.clone(),
        };
        let vm = WasmVm::new(module, vm_config, Box::new(embedder))?;
        Ok(Harness { vm, rec, notifications, root: 0 })
    }

    /// A VM with one root context configured with `setup.plugin_config`.
    pub fn start(module: &Arc<PluginModule>, setup: Setup) -> Harness {
        let mut h = Harness::vm(module, &setup).unwrap();
        h.root = h.vm.create_root_context(Arc::new(plugin_config(&setup))).unwrap();
        h
    }

    /// The probe with a plugin configuration (JSON).
    pub fn probe(plugin_config: serde_json::Value) -> Harness {
        let module = load(engine(), "probe.wasm");
        Harness::start(&module, Setup { plugin_config: plugin_config.to_string(), ..Default::default() })
    }

    /// The messages logged so far, and forgets them.
    pub fn take_logs(&self) -> Vec<String> {
        std::mem::take(&mut self.rec.borrow_mut().logs).into_iter().map(|(_, _, m)| m).collect()
    }

    /// An HTTP stream context with these request headers.
    pub fn http_stream(&mut self, headers: &[(&str, &str)]) -> u32 {
        let ctx = self.vm.create_context(self.root, ContextKind::Http).unwrap();
        self.vm.stream(ctx).unwrap().request_headers = Some(Headers::from_pairs(headers.iter().copied()));
        ctx
    }
}

pub fn plugin_config(setup: &Setup) -> PluginConfig {
    PluginConfig {
        name: setup.name.to_string(),
        root_id: setup.root_id.to_string(),
        configuration: setup.plugin_config.clone().into_bytes(),
        allow_on_headers_stop_iteration: false,
    }
}

/// The usual request headers.
pub const GET: &[(&str, &str)] =
    &[(":method", "GET"), (":path", "/hello"), (":authority", "example.com"), ("x-user", "alice")];
