//! One VM: an instance of a module on one thread, its contexts, and a method per callback.

use std::sync::Arc;
use std::time::Instant;

use wasmproxy_abi::{AbiVersion, FilterDataStatus, FilterHeadersStatus, FilterStatus, PeerType, Status};
use wasmtime::{Instance, Store, Trap, TypedFunc, WasmBacktrace, WasmParams, WasmResults};

use crate::embedder::{Embedder, HttpCallResponse, StreamAction};
use crate::error::{VmError, VmFailure, VmFailureKind};
use crate::headers::Headers;
use crate::module::PluginModule;
use crate::plugin::{PluginConfig, VmConfig};
use crate::state::{ContextData, ContextKind, StreamData, VmState};
use crate::trace::{self, Shown};

type Cb<P, R> = Option<TypedFunc<P, R>>;
/// Picks a body (or TCP data) callback out of [`Callbacks`].
type PickBody = fn(&Callbacks) -> Option<&TypedFunc<(i32, i32, i32), i32>>;
/// Picks a trailers callback out of [`Callbacks`].
type PickStatus = fn(&Callbacks) -> Option<&TypedFunc<(i32, i32), i32>>;

/// A header callback takes 2 arguments in ABI 0.1.0 and 3 (with end_of_stream) after.
#[derive(Clone)]
enum HeaderCb {
    V1(TypedFunc<(i32, i32), i32>),
    V2(TypedFunc<(i32, i32, i32), i32>),
}

fn header_v1(cb: Option<&HeaderCb>) -> Option<&TypedFunc<(i32, i32), i32>> {
    match cb {
        Some(HeaderCb::V1(f)) => Some(f),
        _ => None,
    }
}

fn header_v2(cb: Option<&HeaderCb>) -> Option<&TypedFunc<(i32, i32, i32), i32>> {
    match cb {
        Some(HeaderCb::V2(f)) => Some(f),
        _ => None,
    }
}

/// The module's callbacks, looked up once per instance.
struct Callbacks {
    context_create: Cb<(i32, i32), ()>,
    vm_start: Cb<(i32, i32), i32>,
    configure: Cb<(i32, i32), i32>,
    validate_configuration: Cb<(i32, i32), i32>,
    tick: Cb<i32, ()>,
    new_connection: Cb<i32, i32>,
    downstream_data: Cb<(i32, i32, i32), i32>,
    upstream_data: Cb<(i32, i32, i32), i32>,
    downstream_close: Cb<(i32, i32), ()>,
    upstream_close: Cb<(i32, i32), ()>,
    request_headers: Option<HeaderCb>,
    request_body: Cb<(i32, i32, i32), i32>,
    request_trailers: Cb<(i32, i32), i32>,
    request_metadata: Cb<(i32, i32), i32>,
    response_headers: Option<HeaderCb>,
    response_body: Cb<(i32, i32, i32), i32>,
    response_trailers: Cb<(i32, i32), i32>,
    response_metadata: Cb<(i32, i32), i32>,
    http_call_response: Cb<(i32, i32, i32, i32, i32), ()>,
    grpc_initial_metadata: Cb<(i32, i32, i32), ()>,
    grpc_trailing_metadata: Cb<(i32, i32, i32), ()>,
    grpc_receive: Cb<(i32, i32, i32), ()>,
    grpc_close: Cb<(i32, i32, i32), ()>,
    queue_ready: Cb<(i32, i32), ()>,
    foreign_function: Cb<(i32, i32, i32), ()>,
    done: Cb<i32, i32>,
    log: Cb<i32, ()>,
    delete: Cb<i32, ()>,
}

/// One instance of a plugin module, with its contexts. Owned by one thread.
pub struct WasmVm {
    store: Store<VmState>,
    cb: Callbacks,
    module: Arc<PluginModule>,
    deadline_ticks: u64,
    failure: Option<VmFailure>,
    /// Time spent in callbacks since the embedder last took it.
    times: Vec<CallbackTime>,
    /// What callbacks are timed by.
    clock: quanta::Clock,
}

/// Callback times kept until taken (an embedder that never takes them keeps no more).
const TIMES_KEPT: usize = 1024;

/// One callback the host ran: which export, for which plugin (its root context), and how
/// long it took on the thread (wall time, which is the thread's CPU time: a callback
/// never waits).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallbackTime {
    /// The export (`proxy_on_request_headers`, ...).
    pub callback: &'static str,
    /// The root context of the context it ran for.
    pub root: u32,
    /// How long it ran, in nanoseconds.
    pub nanos: u64,
}

/// The clock callbacks are timed by, calibrated once per process: the CPU's time-stamp
/// counter where it is invariant (two reads cost a third of two `Instant::now()`s), else
/// the monotonic clock.
fn callback_clock() -> quanta::Clock {
    static CLOCK: std::sync::OnceLock<quanta::Clock> = std::sync::OnceLock::new();
    CLOCK.get_or_init(quanta::Clock::new).clone()
}

fn lookup<P: WasmParams, R: WasmResults>(
    instance: &Instance,
    store: &mut Store<VmState>,
    name: &str,
) -> Result<Cb<P, R>, VmError> {
    if instance.get_func(&mut *store, name).is_none() {
        return Ok(None);
    }
    instance
        .get_typed_func::<P, R>(&mut *store, name)
        .map(Some)
        .map_err(|e| VmError::Instantiate(format!("export {name} has an unexpected signature: {e:#}")))
}

fn lookup_header(instance: &Instance, store: &mut Store<VmState>, name: &str) -> Result<Option<HeaderCb>, VmError> {
    if instance.get_func(&mut *store, name).is_none() {
        return Ok(None);
    }
    if let Ok(f) = instance.get_typed_func::<(i32, i32, i32), i32>(&mut *store, name) {
        return Ok(Some(HeaderCb::V2(f)));
    }
    lookup::<(i32, i32), i32>(instance, store, name).map(|f| f.map(HeaderCb::V1))
}

impl Callbacks {
    fn find(instance: &Instance, s: &mut Store<VmState>) -> Result<Self, VmError> {
        Ok(Callbacks {
            context_create: lookup(instance, s, "proxy_on_context_create")?,
            vm_start: lookup(instance, s, "proxy_on_vm_start")?,
            configure: lookup(instance, s, "proxy_on_configure")?,
            validate_configuration: lookup(instance, s, "proxy_validate_configuration")?,
            tick: lookup(instance, s, "proxy_on_tick")?,
            new_connection: lookup(instance, s, "proxy_on_new_connection")?,
            downstream_data: lookup(instance, s, "proxy_on_downstream_data")?,
            upstream_data: lookup(instance, s, "proxy_on_upstream_data")?,
            downstream_close: lookup(instance, s, "proxy_on_downstream_connection_close")?,
            upstream_close: lookup(instance, s, "proxy_on_upstream_connection_close")?,
            request_headers: lookup_header(instance, s, "proxy_on_request_headers")?,
            request_body: lookup(instance, s, "proxy_on_request_body")?,
            request_trailers: lookup(instance, s, "proxy_on_request_trailers")?,
            request_metadata: lookup(instance, s, "proxy_on_request_metadata")?,
            response_headers: lookup_header(instance, s, "proxy_on_response_headers")?,
            response_body: lookup(instance, s, "proxy_on_response_body")?,
            response_trailers: lookup(instance, s, "proxy_on_response_trailers")?,
            response_metadata: lookup(instance, s, "proxy_on_response_metadata")?,
            http_call_response: lookup(instance, s, "proxy_on_http_call_response")?,
            grpc_initial_metadata: lookup(instance, s, "proxy_on_grpc_receive_initial_metadata")?,
            grpc_trailing_metadata: lookup(instance, s, "proxy_on_grpc_receive_trailing_metadata")?,
            grpc_receive: lookup(instance, s, "proxy_on_grpc_receive")?,
            grpc_close: lookup(instance, s, "proxy_on_grpc_close")?,
            queue_ready: lookup(instance, s, "proxy_on_queue_ready")?,
            foreign_function: lookup(instance, s, "proxy_on_foreign_function")?,
            done: lookup(instance, s, "proxy_on_done")?,
            log: lookup(instance, s, "proxy_on_log")?,
            delete: lookup(instance, s, "proxy_on_delete")?,
        })
    }
}

// === impl WasmVm: creation and contexts ===

impl WasmVm {
    /// Instantiates the module and runs its start-up (`_initialize` then `main`, or `_start`),
    /// with only logging and WASI allowed meanwhile.
    pub fn new(module: &Arc<PluginModule>, vm: VmConfig, embedder: Box<dyn Embedder>) -> Result<Self, VmError> {
        let engine = &module.engine;
        let shared = engine.shared().clone();
        let vm = Arc::new(vm);
        let state = VmState::new(module.abi, vm.clone(), embedder, shared.clone(), engine.config().memory_limit_bytes);
        let mut store = Store::new(module.pre.module().engine(), state);
        store.limiter(|s| &mut s.limits);
        store.epoch_deadline_trap();
        let deadline_ticks = engine.inner.deadline_ticks;
        store.set_epoch_deadline(deadline_ticks);
        store.data_mut().traced = trace::enabled();
        let instance = if store.data().traced {
            trace::instantiate(&engine.tier(module.optimized).linker, &mut store, module.pre.module())
        } else {
            module.pre.instantiate(&mut store)
        };
        let instance = instance.map_err(|e| VmError::Instantiate(format!("{}: {e:#}", module.name)))?;
        let memory = instance
            .get_memory(&mut store, "memory")
            .ok_or_else(|| VmError::Instantiate(format!("{} exports no memory named \"memory\"", module.name)))?;
        let (alloc, alloc_export) = match lookup::<i32, i32>(&instance, &mut store, "malloc")? {
            Some(f) => (Some(f), "malloc"),
            None => {
                (lookup::<i32, i32>(&instance, &mut store, "proxy_on_memory_allocate")?, "proxy_on_memory_allocate")
            }
        };
        store.data_mut().memory = Some(memory);
        store.data_mut().alloc = alloc;
        store.data_mut().alloc_export = alloc_export;
        let cb = Callbacks::find(&instance, &mut store)?;
        shared.data.attach(&vm.vm_id);
        let clock = callback_clock();
        let mut this =
            WasmVm { store, cb, module: module.clone(), deadline_ticks, failure: None, times: Vec::new(), clock };
        this.start(&instance)?;
        Ok(this)
    }

    fn start(&mut self, instance: &Instance) -> Result<(), VmError> {
        let initialize = lookup::<(), ()>(instance, &mut self.store, "_initialize")?;
        let result = if let Some(init) = initialize {
            let main = lookup::<(i32, i32), i32>(instance, &mut self.store, "main")?;
            trace::call(&mut self.store, "_initialize", &init, ()).and_then(|()| match main {
                Some(main) => trace::call(&mut self.store, "main", &main, (0, 0)).map(drop),
                None => Ok(()),
            })
        } else if let Some(start) = lookup::<(), ()>(instance, &mut self.store, "_start")? {
            trace::call(&mut self.store, "_start", &start, ())
        } else {
            Ok(())
        };
        match result {
            // A WASI command (TinyGo) may end `_start` with proc_exit(0): that is success.
            Err(_) if self.store.data().exit_code == Some(0) => self.store.data_mut().exit_code = None,
            Err(e) => {
                let mut failure = self.describe_failure("_initialize", e);
                failure.kind = VmFailureKind::StartFailed;
                return Err(self.record_failure(failure));
            }
            Ok(()) => {}
        }
        self.store.data_mut().restricted = false;
        Ok(())
    }

    /// Creates the root context of a plugin: `on_context_create(root, 0)`, `on_vm_start`,
    /// then `on_configure` with the plugin's configuration. A false answer is an error.
    pub fn create_root_context(&mut self, plugin: Arc<PluginConfig>) -> Result<u32, VmError> {
        let state = self.store.data_mut();
        let id = state.alloc_context_id();
        let log_prefix: Arc<str> = plugin.root_log_prefix(&state.vm.vm_id).into();
        let vm_config_len = state.vm.configuration.len() as i32;
        state.contexts.insert(
            id,
            ContextData {
                kind: ContextKind::Root,
                root: id,
                plugin: plugin.clone(),
                log_prefix,
                stream: StreamData::default(),
                local_response_sent: false,
            },
        );
        self.invoke("proxy_on_context_create", id, |c| c.context_create.as_ref(), (id as i32, 0))?;
        let name = plugin.display_name();
        if self.invoke("proxy_on_vm_start", id, |c| c.vm_start.as_ref(), (id as i32, vm_config_len))? == Some(0) {
            return Err(VmError::ConfigureFailed { plugin: name, callback: "on_vm_start" });
        }
        if !self.configure(id, plugin)? {
            return Err(VmError::ConfigureFailed { plugin: name, callback: "on_configure" });
        }
        Ok(id)
    }

    /// Runs `on_configure` on a root context with (new) plugin configuration; false if it refused.
    pub fn configure(&mut self, root: u32, plugin: Arc<PluginConfig>) -> Result<bool, VmError> {
        self.with_configuring(root, plugin, |vm, len| {
            vm.invoke("proxy_on_configure", root, |c| c.configure.as_ref(), (root as i32, len))
        })
    }

    /// Runs the non-spec `proxy_validate_configuration` (C++ and AssemblyScript SDKs);
    /// true if the module does not export it.
    pub fn validate_configuration(&mut self, root: u32, plugin: Arc<PluginConfig>) -> Result<bool, VmError> {
        self.with_configuring(root, plugin, |vm, len| {
            vm.invoke("proxy_validate_configuration", root, |c| c.validate_configuration.as_ref(), (root as i32, len))
        })
    }

    fn with_configuring(
        &mut self,
        root: u32,
        plugin: Arc<PluginConfig>,
        call: impl FnOnce(&mut Self, i32) -> Result<Option<i32>, VmError>,
    ) -> Result<bool, VmError> {
        self.check_context(root)?;
        let len = plugin.configuration.len() as i32;
        if let Some(ctx) = self.store.data_mut().contexts.get_mut(&root) {
            ctx.plugin = plugin.clone();
        }
        self.store.data_mut().call.configuring = Some(plugin);
        let result = call(self, len);
        self.store.data_mut().call.configuring = None;
        Ok(result? != Some(0))
    }

    /// Creates a stream context (HTTP stream or TCP connection) under a root context.
    pub fn create_context(&mut self, root: u32, kind: ContextKind) -> Result<u32, VmError> {
        let state = self.store.data_mut();
        let Some(root_ctx) = state.contexts.get(&root).filter(|c| c.kind == ContextKind::Root) else {
            return Err(VmError::UnknownContext(root));
        };
        let plugin = root_ctx.plugin.clone();
        let log_prefix: Arc<str> = plugin.log_prefix(&state.vm.vm_id).into();
        let id = state.alloc_context_id();
        state.contexts.insert(
            id,
            ContextData { kind, root, plugin, log_prefix, stream: StreamData::default(), local_response_sent: false },
        );
        self.invoke("proxy_on_context_create", id, |c| c.context_create.as_ref(), (id as i32, root as i32))?;
        Ok(id)
    }

    /// The stream data of a context, to move headers and bodies in and out.
    pub fn stream(&mut self, context_id: u32) -> Option<&mut StreamData> {
        self.store.data_mut().contexts.get_mut(&context_id).map(|c| &mut c.stream)
    }

    /// What plugins asked streams to do since the last call, with the context each is for.
    pub fn take_actions(&mut self) -> Vec<(u32, StreamAction)> {
        std::mem::take(&mut self.store.data_mut().actions)
    }

    /// True if this context exists.
    pub fn has_context(&self, context_id: u32) -> bool {
        self.store.data().contexts.contains_key(&context_id)
    }

    /// Number of live contexts (root and stream).
    pub fn context_count(&self) -> usize {
        self.store.data().contexts.len()
    }

    /// The failure that stopped this VM, if any.
    pub fn failure(&self) -> Option<&VmFailure> {
        self.failure.as_ref()
    }

    /// The ABI version of the module.
    pub fn abi_version(&self) -> AbiVersion {
        self.module.abi
    }

    /// The module this VM runs.
    pub fn module(&self) -> &Arc<PluginModule> {
        &self.module
    }

    /// Bytes of linear memory the plugin has now.
    pub fn memory_size(&self) -> usize {
        self.store.data().memory.map(|m| m.data_size(&self.store)).unwrap_or(0)
    }

    /// The HTTP and gRPC callouts the plugin started whose answers it has not had yet
    /// (gRPC streams until the far end closes them).
    pub fn callouts_in_flight(&self) -> usize {
        let s = self.store.data();
        s.http_calls.len() + s.grpc_calls.len() + s.grpc_streams.values().filter(|g| !g.remote_closed).count()
    }

    fn check_context(&self, id: u32) -> Result<(), VmError> {
        if self.has_context(id) { Ok(()) } else { Err(VmError::UnknownContext(id)) }
    }
}

// === impl WasmVm: running callbacks and failing ===

impl WasmVm {
    /// Calls a callback for a context with a fresh deadline. `Ok(None)` if the module does
    /// not export it. A trap fails the VM for good.
    fn invoke<P: WasmParams + Shown, R: WasmResults + Shown>(
        &mut self,
        name: &'static str,
        context_id: u32,
        pick: impl for<'a> FnOnce(&'a Callbacks) -> Option<&'a TypedFunc<P, R>>,
        params: P,
    ) -> Result<Option<R>, VmError> {
        if let Some(failure) = &self.failure {
            return Err(VmError::Failed(failure.clone()));
        }
        // A local reply stops the filter only for the call that sent it (cpp-host's
        // `stopNextIteration`, reset after each call).
        if let Some(c) = self.store.data_mut().contexts.get_mut(&context_id) {
            c.local_response_sent = false;
        }
        let Some(f) = pick(&self.cb) else { return Ok(None) };
        let state = self.store.data_mut();
        state.effective = context_id;
        state.restricted = false;
        self.store.set_epoch_deadline(self.deadline_ticks);
        let started = self.read_clock();
        let result = trace::call(&mut self.store, name, f, params);
        let ended = self.read_clock();
        self.keep_callback_time(name, context_id, started, ended);
        match result {
            Ok(r) => {
                self.after_call()?;
                Ok(Some(r))
            }
            Err(e) => {
                let failure = self.describe_failure(name, e);
                Err(self.record_failure(failure))
            }
        }
    }

    /// The callback clock's raw reading. This and [`WasmVm::keep_callback_time`] are
    /// functions of their own so that a profile shows what the accounting costs
    /// (`wasmproxy-bench --plugin-costs`).
    #[inline(never)]
    fn read_clock(&self) -> u64 {
        std::hint::black_box(self.clock.raw())
    }

    /// Keeps a callback's time, from two readings, for [`WasmVm::take_callback_times`].
    #[inline(never)]
    fn keep_callback_time(&mut self, callback: &'static str, context_id: u32, started: u64, ended: u64) {
        let root = self.store.data().contexts.get(&context_id).map_or(context_id, |c| c.root);
        if self.times.len() < TIMES_KEPT {
            self.times.push(CallbackTime { callback, root, nanos: self.clock.delta_as_nanos(started, ended) });
        }
    }

    /// Deletes root contexts that called `proxy_done` during the call.
    fn after_call(&mut self) -> Result<(), VmError> {
        while let Some(root) = self.store.data_mut().done_roots.pop() {
            self.on_delete(root)?;
        }
        Ok(())
    }

    fn describe_failure(&mut self, callback: &'static str, e: wasmtime::Error) -> VmFailure {
        let state = self.store.data();
        let kind = if state.limits.memory_limit_hit {
            VmFailureKind::MemoryLimit
        } else if e.downcast_ref::<Trap>() == Some(&Trap::Interrupt) {
            VmFailureKind::Deadline
        } else if state.exit_code.is_some() {
            VmFailureKind::Exit
        } else {
            VmFailureKind::Trap
        };
        let backtrace = e.downcast_ref::<WasmBacktrace>().map(|b| b.to_string()).unwrap_or_default();
        let message = match kind {
            VmFailureKind::Deadline => format!(
                "the callback ran longer than the deadline of {:?} and was stopped",
                self.module.engine.config().callback_deadline
            ),
            _ => e.root_cause().to_string(),
        };
        VmFailure { kind, callback, message: format!("{}: {message}", self.module.name), backtrace }
    }

    fn record_failure(&mut self, failure: VmFailure) -> VmError {
        // A failed VM runs nothing more: its timers stop, so no embedder ticks it in a loop.
        self.store.data_mut().timers.clear();
        self.release_memory();
        self.store.data_mut().embedder.vm_failed(&failure);
        self.failure = Some(failure.clone());
        VmError::Failed(failure)
    }

    /// Hands a failed VM's linear memory back to the system now, rather than when the VM
    /// is dropped (under FAIL_CLOSED a failed VM stays as long as its worker): a plugin
    /// that grew to its memory cap does not keep that memory resident.
    fn release_memory(&mut self) {
        let Some(memory) = self.store.data().memory else { return };
        let data = memory.data_mut(&mut self.store);
        if data.is_empty() {
            return;
        }
        #[cfg(target_os = "linux")]
        // SAFETY: the range is this VM's linear memory, a private mapping whose start and
        // size are multiples of the 64 KiB Wasm page (so of the system page); nothing
        // reads it again, since a failed VM never runs. MADV_DONTNEED releases the pages
        // and leaves zero (or initial-image) pages in their place.
        unsafe {
            libc::madvise(data.as_mut_ptr().cast(), data.len(), libc::MADV_DONTNEED);
        }
    }

    fn stream_len(&mut self, ctx: u32, get: impl Fn(&StreamData) -> usize) -> Result<i32, VmError> {
        let c = self.store.data().contexts.get(&ctx).ok_or(VmError::UnknownContext(ctx))?;
        Ok(get(&c.stream) as i32)
    }

    /// A local reply sent during the call makes the filter stop, whatever the plugin returned.
    fn stopped_by_local_reply(&self, ctx: u32) -> bool {
        self.store.data().contexts.get(&ctx).is_some_and(|c| c.local_response_sent)
    }

    fn headers_callback(
        &mut self,
        name: &'static str,
        ctx: u32,
        pick: fn(&Callbacks) -> Option<&HeaderCb>,
        n: i32,
        eos: bool,
    ) -> Result<FilterHeadersStatus, VmError> {
        let allow_stop = self.store.data().contexts.get(&ctx).is_some_and(|c| c.plugin.allow_on_headers_stop_iteration);
        let raw = match pick(&self.cb) {
            Some(HeaderCb::V2(_)) => self.invoke(name, ctx, |c| header_v2(pick(c)), (ctx as i32, n, i32::from(eos)))?,
            Some(HeaderCb::V1(_)) => self.invoke(name, ctx, |c| header_v1(pick(c)), (ctx as i32, n))?,
            None => None,
        };
        if self.stopped_by_local_reply(ctx) {
            return Ok(FilterHeadersStatus::StopIteration);
        }
        Ok(FilterHeadersStatus::from_guest(raw.unwrap_or(0) as u32, allow_stop))
    }

    fn body_callback(
        &mut self,
        name: &'static str,
        ctx: u32,
        cb: PickBody,
        size: i32,
        eos: bool,
    ) -> Result<FilterDataStatus, VmError> {
        if let Some(c) = self.store.data_mut().contexts.get_mut(&ctx) {
            c.stream.end_of_stream = eos;
        }
        let raw = self.invoke(name, ctx, cb, (ctx as i32, size, i32::from(eos)))?;
        if self.stopped_by_local_reply(ctx) {
            return Ok(FilterDataStatus::StopIterationNoBuffer);
        }
        Ok(FilterDataStatus::from_guest(raw.unwrap_or(0) as u32))
    }

    fn status_callback(
        &mut self,
        name: &'static str,
        ctx: u32,
        cb: PickStatus,
        n: i32,
    ) -> Result<FilterStatus, VmError> {
        let raw = self.invoke(name, ctx, cb, (ctx as i32, n))?;
        if self.stopped_by_local_reply(ctx) {
            return Ok(FilterStatus::StopIteration);
        }
        Ok(FilterStatus::from_guest(raw.unwrap_or(0) as u32))
    }
}

// === impl WasmVm: the HTTP and TCP stream callbacks ===

impl WasmVm {
    /// `proxy_on_request_headers`, with the context's `request_headers` (set them first).
    pub fn on_request_headers(&mut self, ctx: u32, end_of_stream: bool) -> Result<FilterHeadersStatus, VmError> {
        let n = self.stream_len(ctx, |s| s.request_headers.as_ref().map_or(0, Headers::len))?;
        self.headers_callback("proxy_on_request_headers", ctx, |c| c.request_headers.as_ref(), n, end_of_stream)
    }

    /// `proxy_on_request_body`, with the size of the context's `request_body`.
    pub fn on_request_body(&mut self, ctx: u32, end_of_stream: bool) -> Result<FilterDataStatus, VmError> {
        let n = self.stream_len(ctx, |s| s.request_body.as_ref().map_or(0, Vec::len))?;
        self.body_callback("proxy_on_request_body", ctx, |c| c.request_body.as_ref(), n, end_of_stream)
    }

    /// `proxy_on_request_trailers`, with the context's `request_trailers`.
    pub fn on_request_trailers(&mut self, ctx: u32) -> Result<FilterStatus, VmError> {
        let n = self.stream_len(ctx, |s| s.request_trailers.as_ref().map_or(0, Headers::len))?;
        self.status_callback("proxy_on_request_trailers", ctx, |c| c.request_trailers.as_ref(), n)
    }

    /// The non-spec `proxy_on_request_metadata` (Envoy only continues after it).
    pub fn on_request_metadata(&mut self, ctx: u32, count: usize) -> Result<FilterStatus, VmError> {
        self.invoke("proxy_on_request_metadata", ctx, |c| c.request_metadata.as_ref(), (ctx as i32, count as i32))?;
        Ok(FilterStatus::Continue)
    }

    /// `proxy_on_response_headers`, with the context's `response_headers`.
    pub fn on_response_headers(&mut self, ctx: u32, end_of_stream: bool) -> Result<FilterHeadersStatus, VmError> {
        let n = self.stream_len(ctx, |s| s.response_headers.as_ref().map_or(0, Headers::len))?;
        self.headers_callback("proxy_on_response_headers", ctx, |c| c.response_headers.as_ref(), n, end_of_stream)
    }

    /// `proxy_on_response_body`, with the size of the context's `response_body`.
    pub fn on_response_body(&mut self, ctx: u32, end_of_stream: bool) -> Result<FilterDataStatus, VmError> {
        let n = self.stream_len(ctx, |s| s.response_body.as_ref().map_or(0, Vec::len))?;
        self.body_callback("proxy_on_response_body", ctx, |c| c.response_body.as_ref(), n, end_of_stream)
    }

    /// `proxy_on_response_trailers`, with the context's `response_trailers`.
    pub fn on_response_trailers(&mut self, ctx: u32) -> Result<FilterStatus, VmError> {
        let n = self.stream_len(ctx, |s| s.response_trailers.as_ref().map_or(0, Headers::len))?;
        self.status_callback("proxy_on_response_trailers", ctx, |c| c.response_trailers.as_ref(), n)
    }

    /// The non-spec `proxy_on_response_metadata`.
    pub fn on_response_metadata(&mut self, ctx: u32, count: usize) -> Result<FilterStatus, VmError> {
        self.invoke("proxy_on_response_metadata", ctx, |c| c.response_metadata.as_ref(), (ctx as i32, count as i32))?;
        Ok(FilterStatus::Continue)
    }

    /// `proxy_on_new_connection` (TCP).
    pub fn on_new_connection(&mut self, ctx: u32) -> Result<FilterStatus, VmError> {
        self.check_context(ctx)?;
        let raw = self.invoke("proxy_on_new_connection", ctx, |c| c.new_connection.as_ref(), ctx as i32)?;
        Ok(FilterStatus::from_guest(raw.unwrap_or(0) as u32))
    }

    /// `proxy_on_downstream_data`, with the size of the context's `downstream_data`.
    pub fn on_downstream_data(&mut self, ctx: u32, end_of_stream: bool) -> Result<FilterStatus, VmError> {
        let n = self.stream_len(ctx, |s| s.downstream_data.as_ref().map_or(0, Vec::len))?;
        self.tcp_data("proxy_on_downstream_data", ctx, |c| c.downstream_data.as_ref(), n, end_of_stream)
    }

    /// `proxy_on_upstream_data`, with the size of the context's `upstream_data`.
    pub fn on_upstream_data(&mut self, ctx: u32, end_of_stream: bool) -> Result<FilterStatus, VmError> {
        let n = self.stream_len(ctx, |s| s.upstream_data.as_ref().map_or(0, Vec::len))?;
        self.tcp_data("proxy_on_upstream_data", ctx, |c| c.upstream_data.as_ref(), n, end_of_stream)
    }

    fn tcp_data(
        &mut self,
        name: &'static str,
        ctx: u32,
        pick: PickBody,
        n: i32,
        eos: bool,
    ) -> Result<FilterStatus, VmError> {
        let raw = self.invoke(name, ctx, pick, (ctx as i32, n, i32::from(eos)))?;
        Ok(FilterStatus::from_guest(raw.unwrap_or(0) as u32))
    }

    /// `proxy_on_downstream_connection_close`.
    pub fn on_downstream_connection_close(&mut self, ctx: u32, peer: PeerType) -> Result<(), VmError> {
        self.check_context(ctx)?;
        self.invoke(
            "proxy_on_downstream_connection_close",
            ctx,
            |c| c.downstream_close.as_ref(),
            (ctx as i32, peer as i32),
        )?;
        Ok(())
    }

    /// `proxy_on_upstream_connection_close`.
    pub fn on_upstream_connection_close(&mut self, ctx: u32, peer: PeerType) -> Result<(), VmError> {
        self.check_context(ctx)?;
        self.invoke(
            "proxy_on_upstream_connection_close",
            ctx,
            |c| c.upstream_close.as_ref(),
            (ctx as i32, peer as i32),
        )?;
        Ok(())
    }

    /// `proxy_on_done`: true if the context is done (false: a root context will call `proxy_done`).
    pub fn on_done(&mut self, ctx: u32) -> Result<bool, VmError> {
        self.check_context(ctx)?;
        Ok(self.invoke("proxy_on_done", ctx, |c| c.done.as_ref(), ctx as i32)? != Some(0))
    }

    /// `proxy_on_log`, with the final headers in the context's stream data (maps that are
    /// missing answer NOT_FOUND in this phase).
    pub fn on_log(&mut self, ctx: u32) -> Result<(), VmError> {
        self.check_context(ctx)?;
        self.set_access_log_phase(ctx, true);
        let result = self.invoke("proxy_on_log", ctx, |c| c.log.as_ref(), ctx as i32);
        self.set_access_log_phase(ctx, false);
        result.map(drop)
    }

    fn set_access_log_phase(&mut self, ctx: u32, on: bool) {
        if let Some(c) = self.store.data_mut().contexts.get_mut(&ctx) {
            c.stream.access_log_phase = on;
        }
    }

    /// `proxy_on_delete`, then the context is forgotten (its stream data dropped).
    pub fn on_delete(&mut self, ctx: u32) -> Result<(), VmError> {
        self.check_context(ctx)?;
        let result = self.invoke("proxy_on_delete", ctx, |c| c.delete.as_ref(), ctx as i32);
        let state = self.store.data_mut();
        state.contexts.remove(&ctx);
        state.pending_done.remove(&ctx);
        state.timers.remove(&ctx);
        result.map(drop)
    }

    /// Ends a stream context: `proxy_on_done`, `proxy_on_log`, `proxy_on_delete`.
    pub fn finish_stream(&mut self, ctx: u32) -> Result<(), VmError> {
        self.on_done(ctx)?;
        self.on_log(ctx)?;
        self.on_delete(ctx)
    }

    /// Shuts a root context down: `proxy_on_done`; if it answers true the context is
    /// deleted now and this returns true, else it waits for the plugin's `proxy_done`.
    pub fn shutdown_root(&mut self, root: u32) -> Result<bool, VmError> {
        if self.on_done(root)? {
            self.on_delete(root)?;
            return Ok(true);
        }
        self.store.data_mut().pending_done.insert(root);
        Ok(false)
    }
}

// === impl WasmVm: root context callbacks (timers, queues, callouts, foreign functions) ===

impl WasmVm {
    /// `proxy_on_tick` for a root context.
    pub fn on_tick(&mut self, root: u32) -> Result<(), VmError> {
        self.check_context(root)?;
        self.invoke("proxy_on_tick", root, |c| c.tick.as_ref(), root as i32).map(drop)
    }

    /// When the earliest tick of any root context is due; `None` if no timer is set.
    /// An embedder sleeps until then and calls [`WasmVm::run_due_ticks`].
    pub fn next_tick_due(&self) -> Option<Instant> {
        self.store.data().timers.values().map(|(_, due)| *due).min()
    }

    /// Runs `proxy_on_tick` for every root context whose tick is due at `now`, and re-arms
    /// each one period after its tick returns (as Envoy does). Returns how many ran.
    pub fn run_due_ticks(&mut self, now: Instant) -> Result<usize, VmError> {
        let mut due: Vec<u32> =
            self.store.data().timers.iter().filter(|(_, (_, at))| *at <= now).map(|(root, _)| *root).collect();
        due.sort_unstable();
        for root in &due {
            if self.has_context(*root) {
                self.on_tick(*root)?;
            }
            let timers = &mut self.store.data_mut().timers;
            if let Some((period, at)) = timers.get_mut(root) {
                *at = Instant::now() + *period;
            }
        }
        Ok(due.len())
    }

    /// Fails the VM from outside a callback (the embedder's decision: a CPU budget spent):
    /// it runs no more callbacks, as after a trap. `callback` names the one it blames.
    pub fn fail(&mut self, kind: VmFailureKind, callback: &'static str, message: String) {
        if self.failure.is_none() {
            let _ = self.record_failure(VmFailure { kind, callback, message, backtrace: String::new() });
        }
    }

    /// The callbacks run since the last time they were taken, with their times (the
    /// embedder's accounting: `/wasm`, CPU budgets).
    pub fn take_callback_times(&mut self) -> std::vec::Drain<'_, CallbackTime> {
        self.times.drain(..)
    }

    /// `proxy_on_queue_ready` for the root context that registered the queue.
    pub fn on_queue_ready(&mut self, root: u32, queue_id: u32) -> Result<(), VmError> {
        self.check_context(root)?;
        self.invoke("proxy_on_queue_ready", root, |c| c.queue_ready.as_ref(), (root as i32, queue_id as i32)).map(drop)
    }

    /// `proxy_on_foreign_function` for a root context, the arguments readable as buffer 8.
    pub fn on_foreign_function(&mut self, root: u32, function_id: u32, args: Vec<u8>) -> Result<(), VmError> {
        self.check_context(root)?;
        let len = args.len() as i32;
        self.store.data_mut().call.foreign_args = Some(args);
        let r = self.invoke(
            "proxy_on_foreign_function",
            root,
            |c| c.foreign_function.as_ref(),
            (root as i32, function_id as i32, len),
        );
        self.store.data_mut().call.foreign_args = None;
        r.map(drop)
    }

    /// Delivers the answer to an `http_call` (`None`: it failed, and the plugin sees
    /// 0 headers and status BrokenConnection "reset", as in Envoy). Unknown tokens are ignored.
    pub fn on_http_call_response(&mut self, token: u32, response: Option<HttpCallResponse>) -> Result<(), VmError> {
        let Some(root) = self.store.data_mut().http_calls.remove(&token) else { return Ok(()) };
        if !self.has_context(root) {
            return Ok(());
        }
        let counts = response.as_ref().map_or((0, 0, 0), |r| (r.headers.len(), r.body.len(), r.trailers.len()));
        let call = &mut self.store.data_mut().call;
        if response.is_none() {
            call.status = (Status::BrokenConnection as u32, "reset".into());
        }
        call.http_call_response = response;
        let r = self.invoke(
            "proxy_on_http_call_response",
            root,
            |c| c.http_call_response.as_ref(),
            (root as i32, token as i32, counts.0 as i32, counts.1 as i32, counts.2 as i32),
        );
        let call = &mut self.store.data_mut().call;
        call.http_call_response = None;
        call.status = (0, String::new());
        r.map(drop)
    }

    fn grpc_root(&self, token: u32) -> Option<u32> {
        let s = self.store.data();
        s.grpc_calls.get(&token).copied().or_else(|| s.grpc_streams.get(&token).map(|g| g.root))
    }

    /// Delivers gRPC initial metadata.
    pub fn on_grpc_receive_initial_metadata(&mut self, token: u32, metadata: Headers) -> Result<(), VmError> {
        let Some(root) = self.grpc_root(token) else { return Ok(()) };
        let n = metadata.len() as i32;
        self.store.data_mut().call.grpc_initial_metadata = Some(metadata);
        let r = self.invoke(
            "proxy_on_grpc_receive_initial_metadata",
            root,
            |c| c.grpc_initial_metadata.as_ref(),
            (root as i32, token as i32, n),
        );
        self.store.data_mut().call.grpc_initial_metadata = None;
        r.map(drop)
    }

    /// Delivers one gRPC message (readable as buffer 5); a unary call is over after it.
    pub fn on_grpc_receive(&mut self, token: u32, message: Vec<u8>) -> Result<(), VmError> {
        let Some(root) = self.grpc_root(token) else { return Ok(()) };
        let n = message.len() as i32;
        self.store.data_mut().call.grpc_message = Some(message);
        let r = self.invoke("proxy_on_grpc_receive", root, |c| c.grpc_receive.as_ref(), (root as i32, token as i32, n));
        let state = self.store.data_mut();
        state.call.grpc_message = None;
        // A unary call ends with its one message (Envoy's `onSuccess`: no close follows).
        state.grpc_calls.remove(&token);
        r.map(drop)
    }

    /// Delivers gRPC trailing metadata.
    pub fn on_grpc_receive_trailing_metadata(&mut self, token: u32, metadata: Headers) -> Result<(), VmError> {
        let Some(root) = self.grpc_root(token) else { return Ok(()) };
        let n = metadata.len() as i32;
        self.store.data_mut().call.grpc_trailing_metadata = Some(metadata);
        let r = self.invoke(
            "proxy_on_grpc_receive_trailing_metadata",
            root,
            |c| c.grpc_trailing_metadata.as_ref(),
            (root as i32, token as i32, n),
        );
        self.store.data_mut().call.grpc_trailing_metadata = None;
        r.map(drop)
    }

    /// Delivers the end of a gRPC call or stream; the message is readable with `proxy_get_status`.
    pub fn on_grpc_close(&mut self, token: u32, status: u32, message: &str) -> Result<(), VmError> {
        let Some(root) = self.grpc_root(token) else { return Ok(()) };
        self.store.data_mut().call.status = (status, message.to_string());
        let r = self.invoke(
            "proxy_on_grpc_close",
            root,
            |c| c.grpc_close.as_ref(),
            (root as i32, token as i32, status as i32),
        );
        let state = self.store.data_mut();
        state.call.status = (0, String::new());
        state.grpc_calls.remove(&token);
        if let Some(s) = state.grpc_streams.get_mut(&token) {
            s.remote_closed = true;
            if s.local_closed {
                state.grpc_streams.remove(&token);
            }
        }
        r.map(drop)
    }
}

impl Drop for WasmVm {
    fn drop(&mut self) {
        let state = self.store.data();
        state.shared.data.detach(&state.vm.vm_id);
    }
}
