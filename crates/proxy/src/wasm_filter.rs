//! The Wasm HTTP filter: one VM per plugin per worker, a context per stream driven
//! through the callbacks, waiting while the plugin pauses until it resumes the stream.

use rustc_hash::FxHashMap as HashMap;
use std::cell::{Cell, OnceCell, RefCell};
use std::rc::{Rc, Weak};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{Notify, mpsc};
use wasmproxy_abi::{FilterStatus, LogLevel, PeerType, Status, StreamType};
use wasmproxy_config::model::{FailurePolicy, WasmPlugin};
use wasmproxy_host::{
    ContextKind, Embedder, GrpcCallRequest, GrpcStreamRequest, HttpCallRequest, HttpCallResponse, LogRecord,
    PluginConfig, PluginModule, QueueNotifier, StreamAction, StreamData, VmConfig, VmError, WasmVm,
};

use crate::cluster::{Clusters, UpstreamError};
use crate::grpc;
use crate::stream_info::{StreamRef, filter_state_key};
use crate::xds::NodeAttributes;

/// The streams a VM's contexts belong to, for property lookups.
type StreamsByContext = Rc<RefCell<HashMap<u32, StreamRef>>>;

/// A reply the proxy makes itself (a plugin's local response, or a failure).
#[derive(Debug, Clone)]
pub struct LocalReply {
    /// HTTP status.
    pub status: u16,
    /// Body.
    pub body: Vec<u8>,
    /// Extra headers.
    pub headers: wasmproxy_host::Headers,
}

/// What a filter decided for the stream.
pub enum Verdict {
    /// Go on.
    Continue,
    /// Answer the client with this reply.
    LocalReply(LocalReply),
    /// Reset the stream.
    Reset,
    /// The VM failed: apply the plugin's failure policy.
    Failed,
}

/// One Wasm filter in a chain: a root context in a (possibly shared) VM.
pub struct FilterSlot {
    /// The VM.
    pub vm: Rc<PluginInstance>,
    /// This plugin's root context in it.
    pub root: u32,
    /// What to do when the VM fails.
    pub failure_policy: FailurePolicy,
    /// The plugin and its reload counters (reloading is tried only under FAIL_RELOAD).
    pub reload: Rc<(WasmPlugin, ReloadStats)>,
}

impl FilterSlot {
    /// The plugin `plugin` in `vm` at root context `root`; its `wasm.<name>.vm_reload*`
    /// counters are registered in `store`, as Envoy registers them for every plugin.
    pub fn new(vm: Rc<PluginInstance>, root: u32, plugin: &WasmPlugin, store: &wasmproxy_stats::Store) -> FilterSlot {
        let stats = ReloadStats::new(store, &plugin.name);
        FilterSlot { vm, root, failure_policy: plugin.failure_policy, reload: Rc::new((plugin.clone(), stats)) }
    }

    /// Under FAIL_RELOAD, a failed VM is built again (see [`PluginInstance::revive`]).
    fn revive(&self) {
        if self.failure_policy == FailurePolicy::FailReload {
            self.vm.revive(&self.reload.0, &self.reload.1);
        }
    }

    /// A new stream through this plugin.
    pub fn start_stream(&self, info: &StreamRef) -> Result<FilterStream, VmError> {
        self.revive();
        self.vm.start_stream(self.root, info)
    }

    /// A Wasm access logger's turn: as in Envoy, the plugin's root context gets
    /// `on_log` with the finished request's headers and properties.
    pub fn log_request(
        &self,
        info: &StreamRef,
        request: &mut Option<wasmproxy_host::Headers>,
        response: &mut Option<wasmproxy_host::Headers>,
    ) {
        let instance = &self.vm;
        instance.streams.borrow_mut().insert(self.root, info.clone());
        {
            let mut vm = instance.vm.borrow_mut();
            if let Some(s) = vm.stream(self.root) {
                s.request_headers = request.take();
                s.response_headers = response.take();
            }
            if let Err(e) = vm.on_log(self.root) {
                tracing::debug!("Wasm access logger: {e}");
            }
            vm.take_actions();
            if let Some(s) = vm.stream(self.root) {
                *request = s.request_headers.take();
                *response = s.response_headers.take();
            }
        }
        instance.streams.borrow_mut().remove(&self.root);
    }
}

/// One VM on one worker, shared by every plugin with the same VM key (vm_id, VM
/// configuration, code), each with its own root context, as in Envoy.
pub struct PluginInstance {
    vm: RefCell<WasmVm>,
    waiters: RefCell<HashMap<u32, mpsc::UnboundedSender<StreamAction>>>,
    ticks: Rc<Notify>,
    streams: StreamsByContext,
    /// `wasm.<runtime>.active`, lowered when the VM goes.
    active: wasmproxy_stats::Gauge,
    /// What it takes to build the VM again (FAIL_RELOAD).
    rebuild: Rebuild,
}

/// How to build a failed VM again: its module, VM configuration, the plugins in the order
/// their root contexts were made, and when it was last (re)loaded.
struct Rebuild {
    module: Arc<PluginModule>,
    vm_config: VmConfig,
    parts: EmbedderParts,
    plugins: RefCell<Vec<(WasmPlugin, u32)>>,
    last_load: Cell<Option<std::time::Instant>>,
    created: wasmproxy_stats::Counter,
}

/// What a VM's embedder shares with its instance (and with the embedder of a reloaded VM).
#[derive(Clone)]
struct EmbedderParts {
    clusters: Rc<Clusters>,
    node: Rc<NodeAttributes>,
    instance: Rc<OnceCell<Weak<PluginInstance>>>,
    ticks: Rc<Notify>,
    queue_tx: mpsc::UnboundedSender<(u32, u32)>,
    streams: StreamsByContext,
}

impl EmbedderParts {
    fn embedder(&self) -> WorkerEmbedder {
        WorkerEmbedder { parts: self.clone(), grpc: Rc::default() }
    }
}

/// A number in [0, 1) from the process's random hasher keys.
fn unit_random() -> f64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u8(0);
    (h.finish() >> 11) as f64 / (1u64 << 53) as f64
}

/// Envoy's reload counters for one plugin: `wasm.<plugin name>.vm_reload*`.
pub struct ReloadStats {
    reload: wasmproxy_stats::Counter,
    success: wasmproxy_stats::Counter,
    failure: wasmproxy_stats::Counter,
    backoff: wasmproxy_stats::Counter,
}

impl ReloadStats {
    /// The counters of the plugin named `name`.
    pub fn new(store: &wasmproxy_stats::Store, name: &str) -> ReloadStats {
        let c = |suffix: &str| store.counter(wasmproxy_stats::StatName::plain(format!("wasm.{name}.{suffix}")));
        ReloadStats {
            reload: c("vm_reload"),
            success: c("vm_reload_success"),
            failure: c("vm_reload_failure"),
            backoff: c("vm_reload_backoff"),
        }
    }
}

impl Drop for PluginInstance {
    fn drop(&mut self) {
        self.active.dec();
    }
}

/// The proxy's answers to one VM: callouts to this worker's clusters, timers, queues, logs.
struct WorkerEmbedder {
    parts: EmbedderParts,
    /// Open gRPC callouts: the task, and for streams where the plugin's messages go.
    grpc: Rc<RefCell<HashMap<u32, GrpcCallout>>>,
}

/// One gRPC call or stream in flight.
struct GrpcCallout {
    task: tokio::task::AbortHandle,
    outgoing: Option<mpsc::UnboundedSender<Option<Vec<u8>>>>,
}

impl WorkerEmbedder {
    /// Where a callout's events go: this VM's `on_grpc_*` callbacks; the callout is
    /// forgotten once it closes.
    fn grpc_sink(&self, token: u32) -> grpc::Sink {
        let instance = self.parts.instance.get().cloned();
        let calls = self.grpc.clone();
        Rc::new(move |event| {
            if let grpc::Event::Close(..) = event {
                calls.borrow_mut().remove(&token);
            }
            let Some(instance) = instance.as_ref().and_then(Weak::upgrade) else { return };
            instance.deliver(|vm| match event {
                grpc::Event::InitialMetadata(h) => vm.on_grpc_receive_initial_metadata(token, h),
                grpc::Event::Message(m) => vm.on_grpc_receive(token, m),
                grpc::Event::TrailingMetadata(h) => vm.on_grpc_receive_trailing_metadata(token, h),
                grpc::Event::Close(code, message) => vm.on_grpc_close(token, code, &message),
            });
        })
    }
}

impl Embedder for WorkerEmbedder {
    fn property_in_stream(
        &mut self,
        context_id: u32,
        path: &[&[u8]],
        data: Option<&StreamData>,
    ) -> Result<Vec<u8>, Status> {
        if let [b"xds", b"node", rest @ ..] = path {
            return self.parts.node.property(rest);
        }
        let streams = self.parts.streams.borrow();
        let stream = streams.get(&context_id).ok_or(Status::NotFound)?;
        stream.borrow().property(path, data)
    }

    fn set_property(&mut self, context_id: u32, path: &[u8], value: &[u8]) -> Status {
        match self.parts.streams.borrow().get(&context_id) {
            Some(stream) => {
                stream.borrow_mut().filter_state.insert(filter_state_key(path), value.to_vec());
                Status::Ok
            }
            None => Status::NotFound,
        }
    }

    fn log(&mut self, r: &LogRecord<'_>) {
        let (prefix, message) = (r.prefix, r.message);
        match r.level {
            LogLevel::Trace => tracing::trace!(target: "wasm", "wasm log{prefix}: {message}"),
            LogLevel::Debug => tracing::debug!(target: "wasm", "wasm log{prefix}: {message}"),
            LogLevel::Info => tracing::info!(target: "wasm", "wasm log{prefix}: {message}"),
            LogLevel::Warn => tracing::warn!(target: "wasm", "wasm log{prefix}: {message}"),
            LogLevel::Error => tracing::error!(target: "wasm", "wasm log{prefix}: {message}"),
            // `tracing` has no critical level: the field tells the log format (Envoy's `[critical]`).
            LogLevel::Critical => tracing::error!(target: "wasm", critical = true, "wasm log{prefix}: {message}"),
        }
    }

    /// Once per failure: what failed, in which VM and plugins, with the wasm backtrace
    /// (function names from the module's name section).
    fn vm_failed(&mut self, failure: &wasmproxy_host::VmFailure) {
        let (vm_id, plugins) = match self.parts.instance.get().and_then(Weak::upgrade) {
            Some(i) => {
                let names: Vec<String> =
                    i.rebuild.plugins.borrow().iter().map(|(p, _)| format!("{:?}", p.name)).collect();
                (i.rebuild.vm_config.vm_id.clone(), names.join(", "))
            }
            None => (String::new(), String::new()),
        };
        tracing::error!(target: "wasm", "Wasm VM {vm_id:?} (plugins {plugins}) failed: {failure}\n{}", failure.backtrace);
    }

    fn log_level(&self) -> LogLevel {
        if tracing::enabled!(target: "wasm", tracing::Level::TRACE) {
            LogLevel::Trace
        } else if tracing::enabled!(target: "wasm", tracing::Level::DEBUG) {
            LogLevel::Debug
        } else if tracing::enabled!(target: "wasm", tracing::Level::INFO) {
            LogLevel::Info
        } else if tracing::enabled!(target: "wasm", tracing::Level::WARN) {
            LogLevel::Warn
        } else {
            LogLevel::Error
        }
    }

    fn http_call(&mut self, request: HttpCallRequest) -> Result<(), Status> {
        let cluster = self.parts.clusters.get(&request.cluster).ok_or(Status::BadArgument)?;
        let instance = self.parts.instance.get().cloned();
        tokio::task::spawn_local(async move {
            // Envoy's async client goes through the router: the upstream learns the call is
            // internal and how long it may take, and failures come back as the router's
            // local replies (503, 504), not as no response.
            let mut headers = request.headers;
            headers.add(b"x-envoy-internal", b"true");
            if let Some(t) = request.timeout {
                headers.add(b"x-envoy-expected-rq-timeout-ms", t.as_millis().to_string().as_bytes());
            }
            let started = std::time::Instant::now();
            let result = cluster.send(&headers, Bytes::from(request.body), request.timeout, true).await;
            let response = match result {
                Ok(mut r) => {
                    let ms = started.elapsed().as_millis().to_string();
                    r.headers.add(b"x-envoy-upstream-service-time", ms.as_bytes());
                    Some(HttpCallResponse { headers: r.headers, body: r.body.to_vec(), trailers: r.trailers })
                }
                Err(UpstreamError::ResponseTooLarge) => {
                    tracing::debug!("http_call to {}: the response is too large", request.cluster);
                    None
                }
                Err(e) => {
                    tracing::debug!("http_call to {} failed: {e:?}", request.cluster);
                    let (headers, body) = crate::hcm::upstream_error_reply(&e);
                    Some(HttpCallResponse { headers, body: body.to_vec(), trailers: wasmproxy_host::Headers::new() })
                }
            };
            if let Some(instance) = instance.and_then(|w| w.upgrade()) {
                instance.deliver(|vm| vm.on_http_call_response(request.token, response));
            }
        });
        Ok(())
    }

    fn grpc_call(&mut self, request: GrpcCallRequest) -> Result<(), Status> {
        let (cluster, authority) =
            grpc::target(&self.parts.clusters, &request.service_config).ok_or(Status::ParseFailure)?;
        let headers = grpc::request_headers(
            &authority,
            &request.service,
            &request.method,
            &request.initial_metadata,
            request.timeout,
        );
        let sink = self.grpc_sink(request.token);
        let task = tokio::task::spawn_local(grpc::unary(cluster, headers, request.message, request.timeout, sink));
        self.grpc.borrow_mut().insert(request.token, GrpcCallout { task: task.abort_handle(), outgoing: None });
        Ok(())
    }

    fn grpc_stream(&mut self, request: GrpcStreamRequest) -> Result<(), Status> {
        let (cluster, authority) =
            grpc::target(&self.parts.clusters, &request.service_config).ok_or(Status::ParseFailure)?;
        let headers =
            grpc::request_headers(&authority, &request.service, &request.method, &request.initial_metadata, None);
        let (tx, rx) = mpsc::unbounded_channel();
        let sink = self.grpc_sink(request.token);
        let task = tokio::task::spawn_local(grpc::stream(cluster, headers, rx, sink));
        self.grpc.borrow_mut().insert(request.token, GrpcCallout { task: task.abort_handle(), outgoing: Some(tx) });
        Ok(())
    }

    fn grpc_send(&mut self, token: u32, message: &[u8], end_of_stream: bool) {
        if let Some(GrpcCallout { outgoing: Some(tx), .. }) = self.grpc.borrow().get(&token) {
            let _ = tx.send(Some(message.to_vec()));
            if end_of_stream {
                let _ = tx.send(None);
            }
        }
    }

    fn grpc_cancel(&mut self, token: u32) {
        if let Some(callout) = self.grpc.borrow_mut().remove(&token) {
            callout.task.abort();
        }
    }

    fn grpc_close(&mut self, token: u32) {
        let mut calls = self.grpc.borrow_mut();
        match calls.get(&token) {
            // A stream is half-closed: the answer still comes.
            Some(GrpcCallout { outgoing: Some(tx), .. }) => {
                let _ = tx.send(None);
            }
            Some(_) => {
                if let Some(call) = calls.remove(&token) {
                    call.task.abort();
                }
            }
            None => {}
        }
    }

    /// Envoy's foreign functions beyond `compress` and `uncompress` (which the host does).
    fn foreign_function(&mut self, context_id: u32, name: &str, args: &[u8]) -> Result<Vec<u8>, Status> {
        let field = |number: u64| -> Result<Vec<u8>, Status> {
            let fields = crate::proto::length_delimited_fields(args).ok_or(Status::BadArgument)?;
            Ok(fields.iter().find(|(n, _)| *n == number).map(|(_, v)| v.to_vec()).unwrap_or_default())
        };
        match name {
            // The router picks the route from the headers the filters leave, so there is
            // no cached route to clear.
            "clear_route_cache" => Ok(Vec::new()),
            // `DeclarePropertyArguments`: a name may be declared once per stream.
            "declare_property" => {
                let property = field(1)?;
                let streams = self.parts.streams.borrow();
                let stream = streams.get(&context_id).ok_or(Status::NotFound)?;
                let mut info = stream.borrow_mut();
                if property.is_empty() || !info.declared.insert(property) {
                    return Err(Status::BadArgument);
                }
                Ok(Vec::new())
            }
            // `SetEnvoyFilterStateArguments`: `path` must name one of Envoy's filter-state
            // object factories; wasmproxy has none, so every path is unknown, as a path
            // without a factory is in Envoy.
            "set_envoy_filter_state" => {
                field(1)?;
                Err(Status::NotFound)
            }
            _ => Err(Status::NotFound),
        }
    }

    fn set_tick_period(&mut self, _root: u32, _period: Option<Duration>) {
        self.parts.ticks.notify_one();
    }

    fn queue_notifier(&mut self) -> Option<QueueNotifier> {
        let tx = self.parts.queue_tx.clone();
        Some(Arc::new(move |root, queue| {
            let _ = tx.send((root, queue));
        }))
    }
}

impl PluginInstance {
    /// Starts a VM on this worker, with its timers and queue notifications running as
    /// local tasks; plugins are added with [`PluginInstance::add_plugin`].
    pub fn start(
        module: &Arc<PluginModule>,
        config: &WasmPlugin,
        clusters: Rc<Clusters>,
        node: Rc<NodeAttributes>,
        store: &wasmproxy_stats::Store,
    ) -> Result<Rc<PluginInstance>, VmError> {
        let cell = Rc::new(OnceCell::new());
        let ticks = Rc::new(Notify::new());
        let (queue_tx, mut queue_rx) = mpsc::unbounded_channel();
        let streams = StreamsByContext::default();
        let parts = EmbedderParts { clusters, node, instance: cell.clone(), ticks: ticks.clone(), queue_tx, streams };
        let vm = WasmVm::new(module, vm_config(config), Box::new(parts.embedder()))?;
        // Envoy's VM counts, named after the configured runtime (wasmproxy runs every
        // runtime on wasmtime): `wasm.envoy.wasm.runtime.v8.created` / `.active`.
        let runtime = if config.vm.runtime.is_empty() { "envoy.wasm.runtime.v8" } else { &config.vm.runtime };
        let created = store.counter(wasmproxy_stats::StatName::plain(format!("wasm.{runtime}.created")));
        created.inc();
        let active = store.gauge(wasmproxy_stats::StatName::plain(format!("wasm.{runtime}.active")));
        active.inc();
        let streams = parts.streams.clone();
        let instance = Rc::new(PluginInstance {
            vm: RefCell::new(vm),
            waiters: RefCell::new(HashMap::default()),
            ticks,
            streams,
            active,
            rebuild: Rebuild {
                module: module.clone(),
                vm_config: vm_config(config),
                parts,
                plugins: RefCell::default(),
                last_load: Cell::new(Some(std::time::Instant::now())),
                created,
            },
        });
        let _ = cell.set(Rc::downgrade(&instance));
        let weak = Rc::downgrade(&instance);
        tokio::task::spawn_local(async move {
            while let Some((root, queue)) = queue_rx.recv().await {
                let Some(instance) = weak.upgrade() else { return };
                instance.deliver(|vm| vm.on_queue_ready(root, queue));
            }
        });
        let weak = Rc::downgrade(&instance);
        tokio::task::spawn_local(async move {
            loop {
                let Some(instance) = weak.upgrade() else { return };
                let due = instance.vm.borrow().next_tick_due();
                let notify = instance.ticks.clone();
                drop(instance);
                match due {
                    Some(at) => {
                        tokio::select! {
                            _ = tokio::time::sleep_until(at.into()) => {
                                let Some(instance) = weak.upgrade() else { return };
                                instance.deliver(|vm| vm.run_due_ticks(std::time::Instant::now()).map(drop));
                            }
                            _ = notify.notified() => {}
                        }
                    }
                    None => notify.notified().await,
                }
            }
        });
        Ok(instance)
    }

    /// Runs a root-context callback, then hands the actions it produced to their streams.
    fn deliver(&self, call: impl FnOnce(&mut WasmVm) -> Result<(), VmError>) {
        let (result, actions) = {
            let mut vm = self.vm.borrow_mut();
            let result = call(&mut vm);
            (result, vm.take_actions())
        };
        self.dispatch(actions);
        if result.is_err() {
            // Waiting streams see their channel close and apply the failure policy.
            self.waiters.borrow_mut().clear();
        }
    }

    fn dispatch(&self, actions: Vec<(u32, StreamAction)>) {
        let waiters = self.waiters.borrow();
        for (ctx, action) in actions {
            if let Some(tx) = waiters.get(&ctx) {
                let _ = tx.send(action);
            }
        }
    }

    /// Adds a plugin: its root context, configured (`on_vm_start`, `on_configure`).
    pub fn add_plugin(&self, config: &WasmPlugin) -> Result<u32, VmError> {
        let root = self.vm.borrow_mut().create_root_context(Arc::new(plugin_config(config)))?;
        self.rebuild.plugins.borrow_mut().push((config.clone(), root));
        Ok(root)
    }

    /// FAIL_RELOAD, as Envoy does it: a failed VM is built again for the next stream,
    /// unless the last (re)load was less than the plugin's backoff ago (`vm_reload_backoff`;
    /// the stream is then answered as FAIL_CLOSED would). Every plugin of the VM gets its
    /// root context again, with the same ids. True if the VM is live.
    pub fn revive(&self, plugin: &WasmPlugin, stats: &ReloadStats) -> bool {
        if self.vm.borrow().failure().is_none() {
            return true;
        }
        let now = std::time::Instant::now();
        // Envoy 1.40 draws the wait anew for each stream, from [base, 1.5 × base) after the
        // last (re)load; its `max_interval` does not come into it.
        let (base, _max) = plugin.reload_backoff.unwrap_or((Duration::from_secs(1), Duration::from_secs(10)));
        let wait = base.mul_f64(1.0 + 0.5 * unit_random());
        if let Some(last) = self.rebuild.last_load.get()
            && now.duration_since(last) < wait
        {
            stats.backoff.inc();
            return false;
        }
        stats.reload.inc();
        self.rebuild.last_load.set(Some(now));
        match self.build_again() {
            Ok(vm) => {
                *self.vm.borrow_mut() = vm;
                self.rebuild.created.inc();
                self.waiters.borrow_mut().clear();
                // The new VM's timers are the tick task's to wait for.
                self.ticks.notify_one();
                stats.success.inc();
                tracing::warn!(
                    "Wasm VM {:?} reloaded after a failure (plugin {:?})",
                    self.rebuild.vm_config.vm_id,
                    plugin.name
                );
                true
            }
            Err(e) => {
                stats.failure.inc();
                tracing::error!(
                    "Wasm VM {:?} could not be reloaded (plugin {:?}): {e}",
                    self.rebuild.vm_config.vm_id,
                    plugin.name
                );
                false
            }
        }
    }

    /// A new VM with every plugin's root context, made in the same order, so the root
    /// ids the filters hold stay right.
    fn build_again(&self) -> Result<WasmVm, VmError> {
        let r = &self.rebuild;
        let mut vm = WasmVm::new(&r.module, r.vm_config.clone(), Box::new(r.parts.embedder()))?;
        for (plugin, root) in r.plugins.borrow().iter() {
            if vm.create_root_context(Arc::new(plugin_config(plugin)))? != *root {
                return Err(VmError::Instantiate("the reloaded VM gave a plugin another root id".into()));
            }
        }
        Ok(vm)
    }

    fn start_stream(self: &Rc<Self>, root: u32, info: &StreamRef) -> Result<FilterStream, VmError> {
        let ctx = self.vm.borrow_mut().create_context(root, ContextKind::Http)?;
        self.streams.borrow_mut().insert(ctx, info.clone());
        Ok(FilterStream { instance: self.clone(), ctx, rx: None, holding_request: false, holding_response: false })
    }
}

impl FilterSlot {
    /// A new TCP connection through this network filter.
    pub fn start_connection(&self, info: &StreamRef) -> Result<ConnectionFilter, VmError> {
        self.revive();
        let ctx = self.vm.vm.borrow_mut().create_context(self.root, ContextKind::Tcp)?;
        let (tx, rx) = mpsc::unbounded_channel();
        self.vm.waiters.borrow_mut().insert(ctx, tx);
        self.vm.streams.borrow_mut().insert(ctx, info.clone());
        Ok(ConnectionFilter {
            instance: self.vm.clone(),
            ctx,
            rx,
            held: [false; 2],
            held_end: [false; 2],
            fail_open: self.failure_policy == FailurePolicy::FailOpen,
        })
    }
}

/// What a network filter did with a chunk of bytes.
pub enum TcpVerdict {
    /// Pass these bytes on (what it held so far with the chunk, as it left them).
    Pass(Bytes),
    /// It holds the bytes until it continues (or more come).
    Held,
    /// Close the connection.
    Close,
    /// The VM failed.
    Failed,
}

/// One connection's context in one network filter (`envoy.filters.network.wasm`).
pub struct ConnectionFilter {
    instance: Rc<PluginInstance>,
    ctx: u32,
    rx: mpsc::UnboundedReceiver<StreamAction>,
    /// Whether data is held, downstream and upstream, and whether the end of that side
    /// is held with it.
    held: [bool; 2],
    held_end: [bool; 2],
    /// What a failure of the VM does to the connection: skip the filter (FAIL_OPEN, and
    /// FAIL_RELOAD until reloading lands) or close the connection.
    pub fail_open: bool,
}

/// How `on_new_connection` went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Opened {
    /// The connection goes on.
    Yes,
    /// The plugin closed it.
    Closed,
    /// The VM failed.
    Failed,
}

impl ConnectionFilter {
    /// `on_new_connection`.
    pub fn new_connection(&mut self) -> Opened {
        let (result, actions) = {
            let mut vm = self.instance.vm.borrow_mut();
            (vm.on_new_connection(self.ctx), vm.take_actions())
        };
        match (self.apply_others(actions), result) {
            (true, _) => Opened::Closed,
            (false, Err(_)) => Opened::Failed,
            (false, Ok(_)) => Opened::Yes,
        }
    }

    /// Bytes from the client (`StreamType::Downstream`) or the upstream (`Upstream`)
    /// through `on_downstream_data` / `on_upstream_data`, as DOWNSTREAM_DATA / UPSTREAM_DATA.
    pub fn data(&mut self, direction: StreamType, chunk: &[u8], end_of_stream: bool) -> TcpVerdict {
        let downstream = direction == StreamType::Downstream;
        let i = usize::from(!downstream);
        let held = self.held[i];
        let (result, actions) = {
            let mut vm = self.instance.vm.borrow_mut();
            if let Some(s) = vm.stream(self.ctx) {
                let slot = if downstream { &mut s.downstream_data } else { &mut s.upstream_data };
                match slot {
                    Some(data) if held => data.extend_from_slice(chunk),
                    _ => *slot = Some(chunk.to_vec()),
                }
            }
            let result = if downstream {
                vm.on_downstream_data(self.ctx, end_of_stream)
            } else {
                vm.on_upstream_data(self.ctx, end_of_stream)
            };
            (result, vm.take_actions())
        };
        if self.apply_others(actions) {
            return TcpVerdict::Close;
        }
        match result {
            Err(_) => TcpVerdict::Failed,
            // Held (the end too, as Envoy) until the plugin continues.
            Ok(FilterStatus::StopIteration) => {
                self.held[i] = true;
                self.held_end[i] = end_of_stream;
                TcpVerdict::Held
            }
            Ok(_) => TcpVerdict::Pass(self.release(direction).0),
        }
    }

    /// The bytes held in one direction, given up (when the plugin continues), and whether
    /// the end of that side was held with them.
    pub fn release(&mut self, direction: StreamType) -> (Bytes, bool) {
        let downstream = direction == StreamType::Downstream;
        let i = usize::from(!downstream);
        self.held[i] = false;
        let end = std::mem::take(&mut self.held_end[i]);
        let mut vm = self.instance.vm.borrow_mut();
        let taken = vm
            .stream(self.ctx)
            .and_then(|s| if downstream { s.downstream_data.take() } else { s.upstream_data.take() });
        (taken.map(Bytes::from).unwrap_or_default(), end)
    }

    /// Whether bytes are held in this direction.
    pub fn holds(&self, direction: StreamType) -> bool {
        self.held[usize::from(direction != StreamType::Downstream)]
    }

    /// What the plugin asks later (from a callout's answer, a timer...): `continue` or `close`.
    pub fn poll_action(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<Option<StreamAction>> {
        self.rx.poll_recv(cx)
    }

    /// Hands other contexts' actions on; true if this connection is to be closed.
    fn apply_others(&self, actions: Vec<(u32, StreamAction)>) -> bool {
        let mut closed = false;
        let mut others = Vec::new();
        for (ctx, action) in actions {
            if ctx == self.ctx {
                closed |= matches!(action, StreamAction::Close(_));
            } else {
                others.push((ctx, action));
            }
        }
        self.instance.dispatch(others);
        closed
    }

    /// The upstream connection closed (`on_upstream_connection_close`, when it happens).
    pub fn upstream_closed(&mut self, peer: PeerType) {
        let actions = {
            let mut vm = self.instance.vm.borrow_mut();
            let _ = vm.on_upstream_connection_close(self.ctx, peer);
            vm.take_actions()
        };
        self.apply_others(actions);
    }

    /// The end: the downstream close callback (with who closed it), then done, log,
    /// delete (Envoy's order for TCP).
    pub fn finish(self, downstream: PeerType) {
        self.instance.waiters.borrow_mut().remove(&self.ctx);
        let mut vm = self.instance.vm.borrow_mut();
        let _ = vm.on_downstream_connection_close(self.ctx, downstream);
        let _ = vm.finish_stream(self.ctx);
        vm.take_actions();
        self.instance.streams.borrow_mut().remove(&self.ctx);
    }
}

/// One stream's context in one plugin.
pub struct FilterStream {
    instance: Rc<PluginInstance>,
    ctx: u32,
    /// What the plugin asks later, once the stream first waits for it (most streams never do).
    rx: Option<mpsc::UnboundedReceiver<StreamAction>>,
    holding_request: bool,
    holding_response: bool,
}

/// What a filter did with a chunk of a streamed body.
pub enum DataVerdict {
    /// Pass these bytes on (what the plugin held back so far, with the chunk, as it left them).
    Pass(Bytes),
    /// The plugin holds the data for now.
    Held,
    /// Anything else (local reply, reset, failure).
    Done(Verdict),
}

/// The outcome of one callback for this stream.
enum Step {
    /// The filter goes on.
    Continued,
    /// The filter stopped; nothing asked to resume yet.
    Stopped,
    /// A local reply, a reset or a failure.
    Done(Verdict),
}

impl FilterStream {
    fn with_stream<T>(&self, f: impl FnOnce(&mut StreamData) -> T) -> Option<T> {
        self.instance.vm.borrow_mut().stream(self.ctx).map(f)
    }

    /// `on_request_headers`: the headers go in, and come back as the plugin left them.
    pub async fn request_headers(&mut self, headers: &mut wasmproxy_host::Headers, eos: bool) -> Verdict {
        self.with_stream(|s| s.request_headers = Some(std::mem::take(headers)));
        let verdict =
            self.run(StreamType::HttpRequest, |vm, ctx| vm.on_request_headers(ctx, eos).map(|s| s.is_stop())).await;
        *headers = self.with_stream(|s| s.request_headers.take()).flatten().unwrap_or_default();
        verdict
    }

    /// One chunk through the body callback, as Envoy does: the plugin sees everything it
    /// has held back so far plus this chunk; Continue passes it all on; Pause holds it
    /// (up to `limit` bytes) until a later chunk, or the end, or `continue_stream`.
    pub async fn data(&mut self, direction: StreamType, chunk: Bytes, eos: bool, limit: usize) -> DataVerdict {
        let request = direction == StreamType::HttpRequest;
        let holding = if request { self.holding_request } else { self.holding_response };
        let held = self
            .with_stream(|s| {
                let slot = if request { &mut s.request_body } else { &mut s.response_body };
                match slot {
                    Some(body) if holding => body.extend_from_slice(&chunk),
                    _ => *slot = Some(chunk.to_vec()),
                }
                slot.as_ref().map_or(0, Vec::len)
            })
            .unwrap_or(0);
        let step = self.step(direction, |vm, ctx| {
            if request {
                vm.on_request_body(ctx, eos).map(|s| s.is_stop())
            } else {
                vm.on_response_body(ctx, eos).map(|s| s.is_stop())
            }
        });
        let verdict = match step {
            Step::Continued => Verdict::Continue,
            Step::Done(v) => v,
            Step::Stopped if !eos => {
                if held > limit {
                    // Envoy: over the buffer limit, 413 for requests, 500 for responses.
                    let (status, body) =
                        if request { (413, "Payload Too Large") } else { (500, "Internal Server Error") };
                    return DataVerdict::Done(Verdict::LocalReply(LocalReply {
                        status,
                        body: body.as_bytes().to_vec(),
                        headers: wasmproxy_host::Headers::new(),
                    }));
                }
                if request {
                    self.holding_request = true;
                } else {
                    self.holding_response = true;
                }
                return DataVerdict::Held;
            }
            Step::Stopped => self.wait(direction).await,
        };
        if request {
            self.holding_request = false;
        } else {
            self.holding_response = false;
        }
        match verdict {
            Verdict::Continue => DataVerdict::Pass(
                self.with_stream(|s| if request { s.request_body.take() } else { s.response_body.take() })
                    .flatten()
                    .map(Bytes::from)
                    .unwrap_or_default(),
            ),
            other => DataVerdict::Done(other),
        }
    }

    /// `on_request_trailers` or `on_response_trailers`.
    pub async fn trailers(&mut self, direction: StreamType, trailers: &mut wasmproxy_host::Headers) -> Verdict {
        let request = direction == StreamType::HttpRequest;
        self.with_stream(|s| {
            let slot = if request { &mut s.request_trailers } else { &mut s.response_trailers };
            *slot = Some(std::mem::take(trailers));
        });
        let verdict = self
            .run(direction, |vm, ctx| {
                let status = if request { vm.on_request_trailers(ctx) } else { vm.on_response_trailers(ctx) };
                status.map(|s| s == FilterStatus::StopIteration)
            })
            .await;
        *trailers = self
            .with_stream(|s| if request { s.request_trailers.take() } else { s.response_trailers.take() })
            .flatten()
            .unwrap_or_default();
        verdict
    }

    /// `on_response_headers`.
    pub async fn response_headers(&mut self, headers: &mut wasmproxy_host::Headers, eos: bool) -> Verdict {
        self.with_stream(|s| s.response_headers = Some(std::mem::take(headers)));
        let verdict =
            self.run(StreamType::HttpResponse, |vm, ctx| vm.on_response_headers(ctx, eos).map(|s| s.is_stop())).await;
        *headers = self.with_stream(|s| s.response_headers.take()).flatten().unwrap_or_default();
        verdict
    }

    /// Runs a callback; if the plugin stopped, waits for it to continue (or reply, or reset).
    async fn run(
        &mut self,
        direction: StreamType,
        call: impl FnOnce(&mut WasmVm, u32) -> Result<bool, VmError>,
    ) -> Verdict {
        match self.step(direction, call) {
            Step::Continued => Verdict::Continue,
            Step::Done(v) => v,
            Step::Stopped => self.wait(direction).await,
        }
    }

    /// Runs a callback and applies what it asked for this stream.
    fn step(&mut self, direction: StreamType, call: impl FnOnce(&mut WasmVm, u32) -> Result<bool, VmError>) -> Step {
        let (stopped, actions) = {
            let mut vm = self.instance.vm.borrow_mut();
            match call(&mut vm, self.ctx) {
                Ok(stopped) => (stopped, vm.take_actions()),
                Err(_) => return Step::Done(Verdict::Failed),
            }
        };
        let mut continued = false;
        let mut others = Vec::new();
        for (ctx, action) in actions {
            if ctx != self.ctx {
                others.push((ctx, action));
                continue;
            }
            match own_action(action, direction) {
                Some(Verdict::Continue) => continued = true,
                Some(v) => {
                    self.instance.dispatch(others);
                    return Step::Done(v);
                }
                None => {}
            }
        }
        self.instance.dispatch(others);
        if !stopped || continued { Step::Continued } else { Step::Stopped }
    }

    /// Waits for the plugin to continue this direction (or reply, or reset).
    async fn wait(&mut self, direction: StreamType) -> Verdict {
        let rx = self.rx.get_or_insert_with(|| {
            let (tx, rx) = mpsc::unbounded_channel();
            self.instance.waiters.borrow_mut().insert(self.ctx, tx);
            rx
        });
        while let Some(action) = rx.recv().await {
            if let Some(v) = own_action(action, direction) {
                return v;
            }
        }
        Verdict::Failed
    }

    /// The access-log phase: `on_log`, which sees the final headers again. They are lent
    /// to the context for the call and come back, for the next filter.
    pub fn log(&self, request: &mut Option<wasmproxy_host::Headers>, response: &mut Option<wasmproxy_host::Headers>) {
        self.instance.waiters.borrow_mut().remove(&self.ctx);
        let mut vm = self.instance.vm.borrow_mut();
        if let Some(s) = vm.stream(self.ctx) {
            s.request_headers = request.take();
            s.response_headers = response.take();
            s.request_body = None;
            s.response_body = None;
        }
        let _ = vm.on_log(self.ctx);
        vm.take_actions();
        if let Some(s) = vm.stream(self.ctx) {
            *request = s.request_headers.take();
            *response = s.response_headers.take();
        }
    }

    /// The end of the stream, once every filter has logged (Envoy 1.40's order): `on_done`,
    /// then `on_delete`. The stream's properties go with the context.
    pub fn end(self) {
        let mut vm = self.instance.vm.borrow_mut();
        if vm.on_done(self.ctx).is_ok() {
            let _ = vm.on_delete(self.ctx);
        }
        vm.take_actions();
        self.instance.streams.borrow_mut().remove(&self.ctx);
    }
}

fn own_action(action: StreamAction, direction: StreamType) -> Option<Verdict> {
    match action {
        StreamAction::Continue(d) if d == direction => Some(Verdict::Continue),
        StreamAction::SendLocalResponse { status, body, headers, .. } => {
            Some(Verdict::LocalReply(LocalReply { status: status as u16, body, headers }))
        }
        StreamAction::Close(_) => Some(Verdict::Reset),
        _ => None,
    }
}

/// Envoy's `VmConfig` as the host takes it.
pub fn vm_config(config: &WasmPlugin) -> VmConfig {
    VmConfig {
        vm_id: config.vm.vm_id.clone(),
        configuration: config.vm.configuration.clone(),
        environment: config.vm.environment.clone(),
    }
}

/// Envoy's `PluginConfig` as the host takes it.
pub fn plugin_config(config: &WasmPlugin) -> PluginConfig {
    PluginConfig {
        name: config.name.clone(),
        root_id: config.root_id.clone(),
        configuration: config.configuration.clone(),
        allow_on_headers_stop_iteration: config.allow_on_headers_stop_iteration,
    }
}
