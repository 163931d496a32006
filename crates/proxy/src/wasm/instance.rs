//! One plugin VM on one worker: shared by every plugin with the same VM key, its timers
//! and queue notifications run as local tasks, rebuilt after a failure under FAIL_RELOAD.

use rustc_hash::FxHashMap as HashMap;
use std::cell::{Cell, OnceCell, RefCell};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Notify, mpsc};
use wasmproxy_config::model::WasmPlugin;
use wasmproxy_host::{ContextKind, PluginModule, StreamAction, VmConfig, VmError, WasmVm};

use crate::stream_info::StreamRef;
use crate::stream_info::node::NodeAttributes;
use crate::upstream::cluster::Clusters;
use crate::wasm::budget::Budgets;
use crate::wasm::embedder::EmbedderParts;
use crate::wasm::http_filter::FilterStream;
use crate::wasm::meter::PluginMeter;
use crate::wasm::plugin::{plugin_config, vm_config};
use crate::wasm::recycle::{RecyclePolicy, RecycleReason, Recycling};
use crate::wasm::status::{VmStatus, WasmBoard};

/// Where a thread's VMs report: the process's stats, the admin's board of VMs, the
/// worker's index (`None`: the main thread); and the rules they run under.
#[derive(Clone)]
pub struct VmHome {
    /// The stats store.
    pub store: Arc<wasmproxy_stats::Store>,
    /// What `/wasm` shows.
    pub board: Arc<WasmBoard>,
    /// The worker.
    pub worker: Option<usize>,
    /// Recycling, CPU budgets, ticks.
    pub rules: Arc<PluginRules>,
}

/// The rules of the configuration's plugins beyond Envoy's (from `layered_runtime`), and
/// how they tick.
#[derive(Debug, Clone, Default)]
pub struct PluginRules {
    /// When VMs are replaced.
    pub recycling: Recycling,
    /// The plugins' CPU budgets.
    pub budgets: Budgets,
    /// Ticks come only when asked ([`PluginInstance::tick_now`]), not from the timers
    /// (`wasmproxy plugin-test`).
    pub manual_ticks: bool,
}

/// The VM new streams of a VM key's plugins start in: replaced (for every plugin at once)
/// when the module's optimized code is ready or the VM is recycled.
pub type VmCell = Rc<RefCell<Rc<PluginInstance>>>;

/// The streams a VM's contexts belong to, for property lookups.
pub(super) type StreamsByContext = Rc<RefCell<HashMap<u32, StreamRef>>>;

/// One VM on one worker, shared by every plugin with the same VM key (vm_id, VM
/// configuration, code), each with its own root context, as in Envoy.
pub struct PluginInstance {
    pub(super) vm: RefCell<WasmVm>,
    pub(super) waiters: RefCell<HashMap<u32, mpsc::UnboundedSender<StreamAction>>>,
    ticks: Rc<Notify>,
    /// Each plugin's callback stats, by its index (as `Rebuild::plugins`).
    meters: RefCell<Vec<Option<PluginMeter>>>,
    pub(super) streams: StreamsByContext,
    /// `wasm.<runtime>.active`, lowered when the VM goes.
    active: wasmproxy_stats::Gauge,
    /// What it takes to build the VM again (FAIL_RELOAD).
    pub(super) rebuild: Rebuild,
    /// When it started, and the streams started in it since (for recycling).
    born: Cell<std::time::Instant>,
    streams_started: Cell<u64>,
    /// What `/wasm` shows of it.
    status: Arc<VmStatus>,
    /// Each callback's slot in `status`, by the host's name for it (compared by address).
    status_slots: RefCell<Vec<(&'static str, usize)>>,
}

/// How to build a failed VM again: its module, VM configuration, the plugins (by the index
/// [`PluginInstance::add_plugin`] gave them, with their root context now; `None` once
/// removed), and when it was last (re)loaded.
pub(super) struct Rebuild {
    module: Arc<PluginModule>,
    pub(super) vm_config: VmConfig,
    parts: EmbedderParts,
    pub(super) plugins: RefCell<Vec<Option<(WasmPlugin, u32)>>>,
    last_load: Cell<Option<std::time::Instant>>,
    created: wasmproxy_stats::Counter,
    /// Where a VM started in its place reports.
    home: VmHome,
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

impl PluginInstance {
    /// Starts a VM on this worker, with its timers and queue notifications running as
    /// local tasks; plugins are added with [`PluginInstance::add_plugin`].
    pub fn start(
        module: &Arc<PluginModule>,
        config: &WasmPlugin,
        clusters: Rc<Clusters>,
        node: Rc<NodeAttributes>,
        home: &VmHome,
    ) -> Result<Rc<PluginInstance>, VmError> {
        let store = &home.store;
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
            meters: RefCell::default(),
            streams,
            active,
            rebuild: Rebuild {
                module: module.clone(),
                vm_config: vm_config(config),
                parts,
                plugins: RefCell::default(),
                last_load: Cell::new(Some(std::time::Instant::now())),
                created,
                home: home.clone(),
            },
            born: Cell::new(std::time::Instant::now()),
            streams_started: Cell::new(0),
            status: home.board.register(VmStatus::new(
                home.worker,
                &config.vm.vm_id,
                (module.name().to_string(), module.sha256_hex()),
                module.is_optimized(),
            )),
            status_slots: RefCell::default(),
        });
        let _ = cell.set(Rc::downgrade(&instance));
        let weak = Rc::downgrade(&instance);
        tokio::task::spawn_local(async move {
            while let Some((root, queue)) = queue_rx.recv().await {
                let Some(instance) = weak.upgrade() else { return };
                instance.deliver(|vm| vm.on_queue_ready(root, queue));
            }
        });
        if !home.rules.manual_ticks {
            tokio::task::spawn_local(run_ticks(Rc::downgrade(&instance)));
        }
        Ok(instance)
    }

    /// Runs `proxy_on_tick` now for every root context with a tick period (whether or not
    /// its tick is due), each re-armed a period later. Returns how many ticked.
    pub fn tick_now(&self) -> usize {
        let far = std::time::Instant::now() + Duration::from_secs(365 * 86_400);
        let mut ticked = 0;
        self.deliver(|vm| vm.run_due_ticks(far).map(|n| ticked = n));
        ticked
    }

    /// The one way into the plugin: runs `call` on the VM, hands every action it asked of
    /// another context to that context's waiting stream, and returns the result with the
    /// actions asked of `own` (the context the callback ran for, if a stream's), for the
    /// caller to apply.
    pub(super) fn call<T>(&self, own: Option<u32>, call: impl FnOnce(&mut WasmVm) -> T) -> (T, Vec<StreamAction>) {
        let (result, actions) = {
            let mut vm = self.vm.borrow_mut();
            let live = vm.failure().is_none();
            let result = call(&mut vm);
            if live {
                self.status.note_call(vm.memory_size(), vm.callouts_in_flight(), vm.failure());
            }
            self.account(&mut vm);
            (result, vm.take_actions())
        };
        let mut mine = Vec::new();
        if actions.is_empty() {
            return (result, mine);
        }
        let waiters = self.waiters.borrow();
        for (ctx, action) in actions {
            if Some(ctx) == own {
                mine.push(action);
            } else if let Some(tx) = waiters.get(&ctx) {
                let _ = tx.send(action);
            }
        }
        (result, mine)
    }

    /// Counts the callbacks that ran, and their time, for the VM and for their plugins
    /// (never inlined, so that a profile shows what it costs: `bench --plugin-costs`).
    #[inline(never)]
    fn account(&self, vm: &mut WasmVm) {
        let plugins = self.rebuild.plugins.borrow();
        let meters = self.meters.borrow();
        let mut over_budget = None;
        let mut slots = self.status_slots.borrow_mut();
        for t in vm.take_callback_times() {
            let slot = match slots.iter().find(|(c, _)| std::ptr::eq(*c, t.callback)) {
                Some((_, slot)) => *slot,
                None => {
                    slots.push((t.callback, VmStatus::slot(t.callback)));
                    slots[slots.len() - 1].1
                }
            };
            self.status.note_callback(slot, t.nanos);
            let plugin = plugins.iter().position(|p| p.as_ref().is_some_and(|(_, root)| *root == t.root));
            if let Some(meter) = plugin.and_then(|i| meters.get(i)).and_then(Option::as_ref)
                && let Some(why) = meter.note(slot, t.callback, t.nanos)
            {
                over_budget = Some((t.callback, why));
            }
        }
        if let Some((callback, why)) = over_budget {
            vm.fail(wasmproxy_host::VmFailureKind::CpuBudget, callback, why);
            if let Some(f) = vm.failure() {
                self.status.note_failure(f);
            }
        }
    }

    /// Runs a root-context callback (a timer, a queue, a callout's answer); a failure
    /// fails the streams waiting on the VM.
    pub(super) fn deliver(&self, call: impl FnOnce(&mut WasmVm) -> Result<(), VmError>) {
        let (result, _) = self.call(None, call);
        if result.is_err() {
            // Waiting streams see their channel close and apply the failure policy.
            self.waiters.borrow_mut().clear();
        }
    }

    /// Adds a plugin: its root context, configured (`on_vm_start`, `on_configure`).
    /// Returns the plugin's index in this VM, which stays its own across reloads (its root
    /// context id may not: see [`PluginInstance::root`]).
    pub fn add_plugin(&self, config: &WasmPlugin) -> Result<usize, VmError> {
        let mut vm = self.vm.borrow_mut();
        let root = vm.create_root_context(Arc::new(plugin_config(config)))?;
        // Its start-up (`on_vm_start`, `on_configure`) ran outside `call`.
        self.status.note_memory(vm.memory_size());
        drop(vm);
        self.status.add_plugin(&config.name);
        let home = &self.rebuild.home;
        let budget = home.rules.budgets.policy(&config.name);
        self.meters.borrow_mut().push(Some(PluginMeter::new(&home.store, &config.name, budget)));
        let mut plugins = self.rebuild.plugins.borrow_mut();
        plugins.push(Some((config.clone(), root)));
        Ok(plugins.len() - 1)
    }

    /// The module the VM runs.
    pub fn module(&self) -> &Arc<PluginModule> {
        &self.rebuild.module
    }

    /// A new VM running `module` (this one's, with optimized code; or the same, to
    /// recycle it) with this VM's plugins at the same indices, each a new root context;
    /// their root contexts here are shut down, and the streams running here finish here.
    pub fn move_to(&self, module: &Arc<PluginModule>) -> Result<Rc<PluginInstance>, VmError> {
        let plugins = self.rebuild.plugins.borrow().clone();
        let Some((first, _)) = plugins.iter().flatten().next() else {
            return Err(VmError::Instantiate("a VM without plugins is not moved".into()));
        };
        let (clusters, node) = (self.rebuild.parts.clusters.clone(), self.rebuild.parts.node.clone());
        let next = PluginInstance::start(module, first, clusters, node, &self.rebuild.home)?;
        for plugin in &plugins {
            match plugin {
                Some((config, _)) => drop(next.add_plugin(config)?),
                None => {
                    next.rebuild.plugins.borrow_mut().push(None);
                    next.meters.borrow_mut().push(None);
                }
            }
        }
        for index in 0..plugins.len() {
            self.remove_plugin(index);
        }
        Ok(next)
    }

    /// Why this VM is due for recycling under `policy`, if it is (never while failed: its
    /// failure policy decides then).
    pub fn due(&self, policy: &RecyclePolicy) -> Option<RecycleReason> {
        let vm = self.vm.borrow();
        if vm.failure().is_some() {
            return None;
        }
        policy.due(vm.memory_size() as u64, self.born.get().elapsed(), self.streams_started.get())
    }

    /// A VM that could not be recycled is tried again after as many streams, as long.
    pub fn postpone_recycling(&self) {
        self.born.set(std::time::Instant::now());
        self.streams_started.set(0);
    }

    /// A stream (or TCP connection) starts in this VM.
    pub(super) fn count_stream(&self) {
        self.streams_started.set(self.streams_started.get() + 1);
        self.status.streams.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// A failure outside a callback (making a context) is shown too.
    pub(super) fn note_failure(&self) {
        if let Some(f) = self.vm.borrow().failure() {
            self.status.note_failure(f);
        }
    }

    /// The root context of the plugin at `index` now (0 once it is removed: no context).
    pub fn root(&self, index: usize) -> u32 {
        self.rebuild.plugins.borrow().get(index).and_then(|p| p.as_ref()).map_or(0, |(_, root)| *root)
    }

    /// Removes a plugin whose configuration is gone: its root context is shut down
    /// (`on_done`, then deleted once the plugin is done), as Envoy does when a filter's
    /// configuration is replaced. Streams already running on it finish first.
    pub fn remove_plugin(&self, index: usize) {
        let Some((config, root)) = self.rebuild.plugins.borrow_mut().get_mut(index).and_then(Option::take) else {
            return;
        };
        self.status.remove_plugin(&config.name);
        if self.vm.borrow().failure().is_none() {
            let _ = self.call(None, |vm| vm.shutdown_root(root));
        }
        if let Some(meter) = self.meters.borrow_mut().get_mut(index) {
            *meter = None;
        }
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
        let wait = base.mul_f64(1.0 + 0.5 * crate::random::unit());
        if let Some(last) = self.rebuild.last_load.get()
            && now.duration_since(last) < wait
        {
            stats.backoff.inc();
            return false;
        }
        stats.reload.inc();
        self.rebuild.last_load.set(Some(now));
        match self.build_again() {
            Ok((vm, roots)) => {
                *self.vm.borrow_mut() = vm;
                for ((_, root), new) in self.rebuild.plugins.borrow_mut().iter_mut().flatten().zip(roots) {
                    *root = new;
                }
                self.rebuild.created.inc();
                self.status.note_reload();
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

    /// A new VM with every plugin's root context, made in the same order; the new root
    /// ids are recorded once the VM is in place.
    fn build_again(&self) -> Result<(WasmVm, Vec<u32>), VmError> {
        let r = &self.rebuild;
        let mut vm = WasmVm::new(&r.module, r.vm_config.clone(), Box::new(r.parts.embedder()))?;
        let mut roots = Vec::new();
        for (plugin, _) in r.plugins.borrow().iter().flatten() {
            roots.push(vm.create_root_context(Arc::new(plugin_config(plugin)))?);
        }
        Ok((vm, roots))
    }

    pub(super) fn start_stream(self: &Rc<Self>, root: u32, info: &StreamRef) -> Result<FilterStream, VmError> {
        let ctx = self.vm.borrow_mut().create_context(root, ContextKind::Http);
        let ctx = ctx.inspect_err(|_| self.note_failure())?;
        self.count_stream();
        self.streams.borrow_mut().insert(ctx, info.clone());
        Ok(FilterStream { instance: self.clone(), ctx, rx: None, holding: [false; 2], slot: None })
    }
}

/// The VM's timers: waits for the next tick due (or for a new tick period) and runs the
/// ticks due, as long as the VM lives.
async fn run_ticks(weak: std::rc::Weak<PluginInstance>) {
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
}
