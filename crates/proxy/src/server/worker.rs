//! A worker thread: its own single-threaded runtime, listener sockets, clusters and
//! plugin VMs; it accepts connections and serves them until told to stop.

use std::collections::HashMap;
use std::net::TcpListener as StdListener;
use std::rc::Rc;
use std::sync::Arc;

use tokio::sync::watch;
use wasmproxy_config::model::{AccessLogSink, Bootstrap, HttpFilter, NetworkFilter, WasmPlugin};
use wasmproxy_host::PluginModule;
use wasmproxy_stats::Store;

use crate::hcm::Hcm;
use crate::hcm::connection::serve_http;
use crate::hcm::route_table::RouteTable;
use crate::observe::access_log::AccessLogger;
use crate::observe::stats::{HttpStats, ListenerStats, Upstreams, address_stat_name};
use crate::server::tunables::{ConnectionLimits, Overflow};
use crate::stream_info::ConnectionInfo;
use crate::stream_info::node::NodeAttributes;
use crate::tcp::TcpChain;
use crate::upstream::cluster::Clusters;
use crate::wasm::http_filter::FilterSlot;
use crate::wasm::instance::PluginInstance;

/// Every plugin's compiled module.
#[derive(Default)]
pub struct Modules {
    /// Wasm HTTP filters, by listener and HTTP filter index.
    pub filters: HashMap<(usize, usize), Arc<PluginModule>>,
    /// Wasm network filters, by listener and network filter index.
    pub network: HashMap<(usize, usize), Arc<PluginModule>>,
    /// Wasm services, by their index in `bootstrap_extensions`.
    pub services: Vec<Arc<PluginModule>>,
    /// Access loggers of each listener's HTTP connection manager, by listener index.
    pub access_logs: HashMap<usize, Vec<Arc<AccessLogger>>>,
    /// Wasm access loggers, by listener and `access_log` index.
    pub access_log_plugins: HashMap<(usize, usize), Arc<PluginModule>>,
}

/// What a worker (or the main thread, which runs the singleton services) is given to start.
pub struct WorkerSetup {
    /// The configuration.
    pub config: Arc<Bootstrap>,
    /// Compiled plugin modules.
    pub modules: Arc<Modules>,
    /// One socket per listener, in listener order (none on the main thread).
    pub sockets: Vec<StdListener>,
    /// The Wasm services this thread runs (by index): the per-worker ones on each worker,
    /// the singletons on the main thread.
    pub services: Vec<usize>,
    /// Set to true to stop.
    pub shutdown: watch::Receiver<bool>,
    /// The process's stats.
    pub stats: Arc<Store>,
    /// Every cluster's endpoints and their figures (admin `/clusters`).
    pub upstreams: Arc<Upstreams>,
    /// Open downstream connections against their limits.
    pub limits: Arc<ConnectionLimits>,
    /// The worker's index (`None` on the main thread).
    pub worker: Option<usize>,
    /// How long connections may take to finish once the server is told to stop.
    pub drain_time: std::time::Duration,
}

/// Runs a worker on this thread; `ready` hears once whether it started.
pub fn run(setup: WorkerSetup, ready: std::sync::mpsc::Sender<Result<(), String>>) {
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            let _ = ready.send(Err(format!("cannot start a worker runtime: {e}")));
            return;
        }
    };
    let local = tokio::task::LocalSet::new();
    local.block_on(&runtime, async move {
        // The services live as long as the thread: their root contexts tick and take
        // queue messages from their VM's tasks.
        let (hcms, _services) = match build(&setup).await {
            Ok(built) => built,
            Err(e) => {
                let _ = ready.send(Err(e));
                return;
            }
        };
        let mut listeners = Vec::new();
        for socket in setup.sockets {
            match tokio::net::TcpListener::from_std(socket) {
                Ok(l) => listeners.push(l),
                Err(e) => {
                    let _ = ready.send(Err(format!("cannot use a listener socket: {e}")));
                    return;
                }
            }
        }
        let _ = ready.send(Ok(()));
        let drain = Drain::new(setup.shutdown.clone());
        for (listener, served) in listeners.into_iter().zip(hcms) {
            if let Some(served) = served {
                tokio::task::spawn_local(accept_loop(listener, served, drain.clone()));
            }
        }
        let mut shutdown = setup.shutdown;
        while !*shutdown.borrow() {
            if shutdown.changed().await.is_err() {
                break;
            }
        }
        // Stopped: the accept loops have closed their sockets; connections finish what
        // they accepted (HTTP/1.1 answers its request and closes, HTTP/2 sends GOAWAY), up
        // to the drain time.
        let open = drain.open.get();
        if open > 0 {
            tracing::info!("draining {open} connection(s) for at most {:?}", setup.drain_time);
            if tokio::time::timeout(setup.drain_time, drain.all_closed()).await.is_err() {
                tracing::warn!("drain time over: closing {} connection(s)", drain.open.get());
            }
        }
        crate::teardown::mark_stopped();
    });
}

/// The connections of one worker, for a drain: how many are open, and the stop signal
/// each watches.
#[derive(Clone)]
struct Drain {
    shutdown: watch::Receiver<bool>,
    open: Rc<std::cell::Cell<usize>>,
    closed: Rc<tokio::sync::Notify>,
}

impl Drain {
    fn new(shutdown: watch::Receiver<bool>) -> Drain {
        Drain { shutdown, open: Rc::default(), closed: Rc::default() }
    }

    fn opened(&self) {
        self.open.set(self.open.get() + 1);
    }

    fn closed(&self) {
        self.open.set(self.open.get().saturating_sub(1));
        self.closed.notify_waiters();
    }

    async fn all_closed(&self) {
        while self.open.get() > 0 {
            let notified = self.closed.notified();
            if self.open.get() == 0 {
                return;
            }
            notified.await;
        }
    }

    /// Resolves when the server is told to stop.
    async fn stopping(&self) {
        let mut rx = self.shutdown.clone();
        while !*rx.borrow_and_update() {
            if rx.changed().await.is_err() {
                return;
            }
        }
    }
}

/// What serves a listener's connections.
#[derive(Clone)]
enum Terminal {
    /// The HTTP connection manager.
    Http(Rc<Hcm>),
    /// The TCP proxy with its Wasm network filters.
    Tcp(Rc<TcpChain>),
}

/// How a listener's connections are served on one worker.
struct Served {
    terminal: Terminal,
    /// What its connections tell plugins: `xds.listener_direction`, `xds.filter_chain_name`.
    listener_direction: i64,
    filter_chain_name: Rc<str>,
    stats: ListenerStats,
    /// The listener's index (for its connection limit).
    index: usize,
    limits: Arc<ConnectionLimits>,
}

/// A service's VM and its root context.
type Service = (Rc<PluginInstance>, u32);

async fn build(setup: &WorkerSetup) -> Result<(Vec<Option<Served>>, Vec<Service>), String> {
    let clusters =
        Rc::new(Clusters::new(&setup.config.clusters, &setup.stats, &setup.upstreams, setup.worker == Some(0)).await);
    let node = Rc::new(NodeAttributes::new(&setup.config.node));
    let mut hcms = Vec::new();
    let mut vms: HashMap<(String, Vec<u8>, String), Rc<PluginInstance>> = HashMap::new();
    // Envoy's VM key: plugins with the same vm_id, VM configuration and code share a VM.
    let mut instance = |module: &Arc<PluginModule>, plugin: &WasmPlugin| -> Result<Rc<PluginInstance>, String> {
        let key = (plugin.vm.vm_id.clone(), plugin.vm.configuration.clone(), module.sha256_hex());
        if let Some(vm) = vms.get(&key) {
            return Ok(Rc::clone(vm));
        }
        let vm = PluginInstance::start(module, plugin, clusters.clone(), node.clone(), &setup.stats)
            .map_err(|e| e.to_string())?;
        vms.insert(key, vm.clone());
        Ok(vm)
    };
    let mut services = Vec::new();
    for &si in &setup.services {
        let (Some(service), Some(module)) = (setup.config.wasm_services.get(si), setup.modules.services.get(si)) else {
            return Err("internal: a service module is missing".into());
        };
        let fail = |e: String| format!("Wasm service {:?}: {e}", service.plugin.name);
        let vm = instance(module, &service.plugin).map_err(fail)?;
        let root = vm.add_plugin(&service.plugin).map_err(|e| fail(e.to_string()))?;
        services.push((vm, root));
    }
    if setup.sockets.is_empty() {
        return Ok((hcms, services));
    }
    for (li, listener) in setup.config.listeners.iter().enumerate() {
        let chain = &listener.filter_chain;
        let address = address_stat_name(&listener.address.address, listener.address.port);
        let about = |terminal| {
            Some(Served {
                terminal,
                listener_direction: listener.traffic_direction,
                filter_chain_name: Rc::from(chain.name.as_str()),
                stats: ListenerStats::new(&setup.stats, &address, setup.worker.unwrap_or(0)),
                index: li,
                limits: setup.limits.clone(),
            })
        };
        if let Some(NetworkFilter::TcpProxy(proxy)) = chain.filters.last() {
            let cluster = clusters.get(&proxy.cluster).ok_or_else(|| format!("unknown cluster {}", proxy.cluster))?;
            let mut filters = Vec::new();
            for (fi, filter) in chain.filters.iter().enumerate() {
                if let NetworkFilter::Wasm(plugin) = filter {
                    let module = setup.modules.network.get(&(li, fi)).ok_or("internal: a plugin module is missing")?;
                    let fail = |e: String| format!("listener {}: Wasm filter {:?}: {e}", listener.name, plugin.name);
                    let vm = instance(module, plugin).map_err(fail)?;
                    let root = vm.add_plugin(plugin).map_err(|e| fail(e.to_string()))?;
                    filters.push(FilterSlot::new(vm, root, plugin, &setup.stats));
                }
            }
            hcms.push(about(Terminal::Tcp(Rc::new(TcpChain { filters, cluster }))));
            continue;
        }
        let Some(NetworkFilter::HttpConnectionManager(config)) =
            chain.filters.iter().find(|f| matches!(f, NetworkFilter::HttpConnectionManager(_)))
        else {
            hcms.push(None);
            continue;
        };
        let routes = RouteTable::new(&config.route_config).map_err(|e| format!("listener {}: {e}", listener.name))?;
        let mut filters = Vec::new();
        for (fi, filter) in config.http_filters.iter().enumerate() {
            if let HttpFilter::Wasm(plugin) = filter {
                let module = setup.modules.filters.get(&(li, fi)).ok_or("internal: a plugin module is missing")?;
                let fail = |e: String| format!("listener {}: Wasm filter {:?}: {e}", listener.name, plugin.name);
                let vm = instance(module, plugin).map_err(fail)?;
                let root = vm.add_plugin(plugin).map_err(|e| fail(e.to_string()))?;
                filters.push(FilterSlot::new(vm, root, plugin, &setup.stats));
            }
        }
        let stats = HttpStats::new(&setup.stats, &config.stat_prefix, &address);
        let access_logs = setup.modules.access_logs.get(&li).cloned().unwrap_or_default();
        let mut wasm_loggers = Vec::new();
        for (ai, log) in config.access_logs.iter().enumerate() {
            if let AccessLogSink::Wasm(plugin) = &log.sink {
                let module =
                    setup.modules.access_log_plugins.get(&(li, ai)).ok_or("internal: a plugin module is missing")?;
                let fail = |e: String| format!("listener {}: Wasm access logger {:?}: {e}", listener.name, plugin.name);
                let vm = instance(module, plugin).map_err(fail)?;
                let root = vm.add_plugin(plugin).map_err(|e| fail(e.to_string()))?;
                wasm_loggers.push(FilterSlot::new(vm, root, plugin, &setup.stats));
            }
        }
        let hcm = Hcm {
            config: (**config).clone(),
            routes,
            filters,
            clusters: clusters.clone(),
            stats,
            access_logs,
            wasm_loggers,
            buffer_limit: match listener.buffer_limit_bytes {
                0 => usize::MAX,
                n => n as usize,
            },
        };
        hcms.push(about(Terminal::Http(Rc::new(hcm))));
    }
    Ok((hcms, services))
}

/// Connection ids, unique in the process (Envoy's `connection.id`).
static NEXT_CONNECTION_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

async fn accept_loop(listener: tokio::net::TcpListener, served: Served, drain: Drain) {
    let served = Rc::new(served);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            // Stop accepting: the socket closes as the loop ends.
            _ = drain.stopping() => return,
        };
        let (stream, peer) = match accepted {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!("accept failed: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                continue;
            }
        };
        // Over a connection limit, the connection is closed at once (Envoy's overflow).
        match served.limits.admit(served.index) {
            Ok(()) => {}
            Err(Overflow::Listener) => {
                served.stats.cx_overflow.inc();
                continue;
            }
            Err(Overflow::Global) => {
                served.stats.global_cx_overflow.inc();
                continue;
            }
        }
        let _ = stream.set_nodelay(true);
        let local = stream.local_addr().unwrap_or(peer);
        let id = NEXT_CONNECTION_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let connection = Rc::new(ConnectionInfo {
            id,
            peer,
            local,
            listener_direction: served.listener_direction,
            filter_chain_name: served.filter_chain_name.clone(),
            protocol_known: Default::default(),
            http2: Default::default(),
            activity: Default::default(),
        });
        let accepted = std::time::Instant::now();
        served.stats.connection_opened();
        let served = served.clone();
        let drain = drain.clone();
        drain.opened();
        tokio::task::spawn_local(async move {
            match &served.terminal {
                Terminal::Tcp(chain) => chain.clone().serve(stream, connection).await,
                Terminal::Http(hcm) => serve_http(hcm.clone(), stream, connection, drain.stopping()).await,
            }
            served.stats.connection_closed(accepted.elapsed());
            served.limits.release(served.index);
            drain.closed();
        });
    }
}
