//! The Wasm HTTP filter (`envoy.filters.http.wasm`): a plugin's root context in a VM,
//! a context per stream driven through the callbacks, waiting while the plugin pauses
//! until it resumes the stream.

use std::rc::Rc;

use bytes::Bytes;
use tokio::sync::mpsc;
use wasmproxy_config::model::{FailurePolicy, WasmPlugin};
use wasmproxy_host::{StreamAction, StreamData, VmError, WasmVm};

use crate::http::direction::Direction;
use crate::http::reply::{DataVerdict, LocalReply, Verdict};
use crate::stream_info::StreamRef;
use crate::wasm::instance::{PluginInstance, ReloadStats, VmCell};
use crate::wasm::recycle::RecyclePolicy;

/// One plugin on a worker: its root context in a (possibly shared) VM, used by every
/// filter chain that configures the same plugin. Dropped when no configuration uses it any
/// more and the streams on it have finished: its root context is then shut down.
pub struct FilterSlot {
    /// The VM new streams start in, shared by the plugins of its VM key (replaced when the
    /// module's optimized code is ready, or when the VM is recycled).
    vm: VmCell,
    /// The plugin's index in the VM (see [`PluginInstance::root`]).
    pub index: usize,
    /// What to do when the VM fails.
    pub failure_policy: FailurePolicy,
    /// The plugin and its reload counters (reloading is tried only under FAIL_RELOAD).
    pub reload: Rc<(WasmPlugin, ReloadStats)>,
    /// When its VM is replaced, and `wasm.<plugin name>.vm_recycle` and `.vm_recycle_us`
    /// (the time spent building fresh VMs).
    recycling: (RecyclePolicy, wasmproxy_stats::Counter, wasmproxy_stats::Counter),
}

impl FilterSlot {
    /// The plugin `plugin` at `index` in the VM `vm` holds, recycled as `policy` says; its
    /// `wasm.<name>.vm_reload*` counters are registered in `store`, as Envoy registers them
    /// for every plugin (and `vm_recycle`, wasmproxy's).
    pub fn new(
        vm: VmCell,
        index: usize,
        plugin: &WasmPlugin,
        store: &wasmproxy_stats::Store,
        policy: RecyclePolicy,
    ) -> FilterSlot {
        let stats = ReloadStats::new(store, &plugin.name);
        let counter =
            |suffix: &str| store.counter(wasmproxy_stats::StatName::plain(format!("wasm.{}.{suffix}", plugin.name)));
        FilterSlot {
            vm,
            index,
            failure_policy: plugin.failure_policy,
            reload: Rc::new((plugin.clone(), stats)),
            recycling: (policy, counter("vm_recycle"), counter("vm_recycle_us")),
        }
    }

    /// The VM new streams start in.
    pub fn vm(&self) -> Rc<PluginInstance> {
        self.vm.borrow().clone()
    }

    /// The plugin's root context now.
    pub fn root(&self) -> u32 {
        self.vm.borrow().root(self.index)
    }

    /// Under FAIL_RELOAD, a failed VM is built again (see [`PluginInstance::revive`]);
    /// a VM past its recycling limits hands the new stream to a fresh one.
    pub(super) fn revive(&self) {
        if self.failure_policy == FailurePolicy::FailReload {
            self.vm().revive(&self.reload.0, &self.reload.1);
        }
        let (policy, recycled, spent_us) = &self.recycling;
        if policy.is_off() {
            return;
        }
        let vm = self.vm();
        let Some(reason) = vm.due(policy) else { return };
        let name = &self.reload.0.name;
        let started = std::time::Instant::now();
        match vm.move_to(vm.module()) {
            Ok(next) => {
                *self.vm.borrow_mut() = next;
                let us = started.elapsed().as_micros() as u64;
                recycled.inc();
                spent_us.add(us);
                tracing::info!(
                    "Wasm VM of plugin {name:?} recycled ({}): new streams start in a fresh VM, built in {us} µs",
                    reason.name()
                );
            }
            Err(e) => {
                vm.postpone_recycling();
                tracing::warn!("Wasm VM of plugin {name:?} due for recycling ({}) kept: {e}", reason.name());
            }
        }
    }

    /// A new stream through this plugin.
    pub fn start_stream(self: &Rc<Self>, info: &StreamRef) -> Result<FilterStream, VmError> {
        self.revive();
        let mut stream = self.vm().start_stream(self.root(), info)?;
        stream.slot = Some(self.clone());
        Ok(stream)
    }

    /// A Wasm access logger's turn: as in Envoy, the plugin's root context gets
    /// `on_log` with the finished request's headers and properties.
    pub fn log_request(
        &self,
        info: &StreamRef,
        request: &mut Option<wasmproxy_host::Headers>,
        response: &mut Option<wasmproxy_host::Headers>,
    ) {
        let (instance, root) = (self.vm(), self.root());
        instance.streams.borrow_mut().insert(root, info.clone());
        let _ = instance.call(Some(root), |vm| {
            if let Some(s) = vm.stream(root) {
                s.request_headers = request.take();
                s.response_headers = response.take();
            }
            if let Err(e) = vm.on_log(root) {
                tracing::debug!("Wasm access logger: {e}");
            }
            if let Some(s) = vm.stream(root) {
                *request = s.request_headers.take();
                *response = s.response_headers.take();
            }
        });
        instance.streams.borrow_mut().remove(&root);
    }
}

impl Drop for FilterSlot {
    fn drop(&mut self) {
        if !crate::teardown::stopped() {
            self.vm.borrow().remove_plugin(self.index);
        }
    }
}

/// One stream's context in one plugin.
pub struct FilterStream {
    pub(super) instance: Rc<PluginInstance>,
    pub(super) ctx: u32,
    /// What the plugin asks later, once the stream first waits for it (most streams never do).
    pub(super) rx: Option<mpsc::UnboundedReceiver<StreamAction>>,
    /// Whether the plugin holds body bytes back, per direction ([`Direction::index`]).
    pub(super) holding: [bool; 2],
    /// The plugin, kept while the stream runs on its root context.
    pub(super) slot: Option<Rc<FilterSlot>>,
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
            self.run(Direction::Request, |vm, ctx| vm.on_request_headers(ctx, eos).map(|s| s.is_stop())).await;
        *headers = self.with_stream(|s| s.request_headers.take()).flatten().unwrap_or_default();
        verdict
    }

    /// `on_response_headers`.
    pub async fn response_headers(&mut self, headers: &mut wasmproxy_host::Headers, eos: bool) -> Verdict {
        self.with_stream(|s| s.response_headers = Some(std::mem::take(headers)));
        let verdict =
            self.run(Direction::Response, |vm, ctx| vm.on_response_headers(ctx, eos).map(|s| s.is_stop())).await;
        *headers = self.with_stream(|s| s.response_headers.take()).flatten().unwrap_or_default();
        verdict
    }

    /// One chunk through the body callback, as Envoy does: the plugin sees everything it
    /// has held back so far plus this chunk; Continue passes it all on; Pause holds it
    /// (up to `limit` bytes) until a later chunk, or the end, or `continue_stream`.
    pub async fn data(&mut self, direction: Direction, chunk: Bytes, eos: bool, limit: usize) -> DataVerdict {
        let holding = &mut self.holding[direction.index()];
        let was_holding = std::mem::take(holding);
        let held = self
            .with_stream(|s| {
                let body = direction.body(s);
                match body {
                    Some(body) if was_holding => body.extend_from_slice(&chunk),
                    _ => *body = Some(chunk.to_vec()),
                }
                body.as_ref().map_or(0, Vec::len)
            })
            .unwrap_or(0);
        let verdict = match self.step(direction, |vm, ctx| direction.on_body(vm, ctx, eos)) {
            Step::Continued => Verdict::Continue,
            Step::Done(v) => v,
            Step::Stopped if !eos => {
                if held > limit {
                    // Envoy: over the buffer limit, 413 for requests, 500 for responses.
                    let (status, body) = direction.over_limit();
                    let headers = wasmproxy_host::Headers::new();
                    let reply = LocalReply { status, body: body.as_bytes().to_vec(), headers, grpc_status: None };
                    return DataVerdict::Done(Verdict::LocalReply(reply));
                }
                self.holding[direction.index()] = true;
                return DataVerdict::Held;
            }
            Step::Stopped => self.wait(direction).await,
        };
        match verdict {
            Verdict::Continue => DataVerdict::Pass(
                self.with_stream(|s| direction.body(s).take()).flatten().map(Bytes::from).unwrap_or_default(),
            ),
            other => DataVerdict::Done(other),
        }
    }

    /// The body the plugin holds in `direction`, given up without a callback (the trailers
    /// came: Envoy passes held data on before them, the plugin's last body callback having
    /// said the body goes on); `None` if it holds nothing.
    pub fn release_held(&mut self, direction: Direction) -> Option<Bytes> {
        if !std::mem::take(&mut self.holding[direction.index()]) {
            return None;
        }
        self.with_stream(|s| direction.body(s).take()).flatten().map(Bytes::from)
    }

    /// `on_request_trailers` or `on_response_trailers`.
    pub async fn trailers(&mut self, direction: Direction, trailers: &mut wasmproxy_host::Headers) -> Verdict {
        self.with_stream(|s| *direction.trailers(s) = Some(std::mem::take(trailers)));
        let verdict = self.run(direction, |vm, ctx| direction.on_trailers(vm, ctx)).await;
        *trailers = self.with_stream(|s| direction.trailers(s).take()).flatten().unwrap_or_default();
        verdict
    }

    /// Runs a callback; if the plugin stopped, waits for it to continue (or reply, or reset).
    async fn run(
        &mut self,
        direction: Direction,
        call: impl FnOnce(&mut WasmVm, u32) -> Result<bool, VmError>,
    ) -> Verdict {
        match self.step(direction, call) {
            Step::Continued => Verdict::Continue,
            Step::Done(v) => v,
            Step::Stopped => self.wait(direction).await,
        }
    }

    /// Runs a callback and applies what it asked for this stream.
    fn step(&mut self, direction: Direction, call: impl FnOnce(&mut WasmVm, u32) -> Result<bool, VmError>) -> Step {
        let ctx = self.ctx;
        let (result, mine) = self.instance.call(Some(ctx), |vm| call(vm, ctx));
        let Ok(stopped) = result else { return Step::Done(Verdict::Failed) };
        let mut continued = false;
        for action in mine {
            match own_action(action, direction) {
                Some(Verdict::Continue) => continued = true,
                Some(v) => return Step::Done(v),
                None => {}
            }
        }
        if !stopped || continued { Step::Continued } else { Step::Stopped }
    }

    /// Waits for the plugin to continue this direction (or reply, or reset).
    async fn wait(&mut self, direction: Direction) -> Verdict {
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
        let ctx = self.ctx;
        let _ = self.instance.call(Some(ctx), |vm| {
            if let Some(s) = vm.stream(ctx) {
                s.request_headers = request.take();
                s.response_headers = response.take();
                s.request_body = None;
                s.response_body = None;
            }
            let _ = vm.on_log(ctx);
            if let Some(s) = vm.stream(ctx) {
                *request = s.request_headers.take();
                *response = s.response_headers.take();
            }
        });
    }

    /// The end of the stream, once every filter has logged (Envoy 1.40's order): `on_done`,
    /// then `on_delete`. The stream's properties go with the context.
    pub fn end(self) {
        let ctx = self.ctx;
        let _ = self.instance.call(Some(ctx), |vm| {
            if vm.on_done(ctx).is_ok() {
                let _ = vm.on_delete(ctx);
            }
        });
        self.instance.streams.borrow_mut().remove(&self.ctx);
    }
}

fn own_action(action: StreamAction, direction: Direction) -> Option<Verdict> {
    match action {
        StreamAction::Continue(d) if d == direction.stream_type() => Some(Verdict::Continue),
        StreamAction::SendLocalResponse { status, body, headers, grpc_status, .. } => {
            Some(Verdict::LocalReply(LocalReply { status: status as u16, body, headers, grpc_status }))
        }
        StreamAction::Close(_) => Some(Verdict::Reset),
        _ => None,
    }
}
