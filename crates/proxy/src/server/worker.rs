//! A worker thread: its own single-threaded runtime, listener sockets, clusters and plugin
//! VMs. It serves the configuration snapshots its inbox brings, one after the other,
//! keeping what did not change, until told to stop.

use std::net::TcpListener as StdListener;
use std::rc::Rc;
use std::sync::Arc;

use tokio::sync::{mpsc, watch};
use wasmproxy_config::model::{HttpConnectionManager, Listener, Node, TracingProvider};
use wasmproxy_stats::Store;

use crate::filters::compressor::Sibling;
use crate::filters::{ChainFilter, SharedKind, SharedNative, WorkerContext};
use crate::hcm::forwarding::LocalNode;
use crate::hcm::{Hcm, RouteTables, Routes};
use crate::observe::stats::{HttpStats, InspectorStats, ListenerStats, TcpProxyStats, address_stat_name};
use crate::server::drain::Drain;
use crate::server::listener::{Current, Served, ServedChain, Terminal, accept_loop};
use crate::server::snapshot::{
    AccessLogs, HttpFilterSnapshot, ListenerSnapshot, RouteSnapshot, Snapshot, TerminalSnapshot,
};
use crate::server::tunables::ConnectionLimits;
use crate::stream_info::metadata::MetadataAttributes;
use crate::stream_info::node::NodeAttributes;
use crate::tcp::TcpChain;
use crate::tracer::{Driver, Tracer};
use crate::upstream::cluster::Clusters;
use crate::upstream::registry::Upstreams;
use crate::wasm::access_logger::StreamLoggers;
use crate::wasm::http_filter::FilterSlot;
use crate::wasm::instance::VmHome;
use crate::wasm::plugin::LoadedPlugin;
use crate::wasm::registry::Registry;

/// What the main thread tells a worker.
pub enum WorkerMessage {
    /// Serve this configuration. `sockets` has this worker's socket for each listener (by
    /// name) that needs a new one: a new listener, or one that moved to another address.
    /// `done` hears whether it was applied.
    Configure {
        /// The configuration.
        snapshot: Arc<Snapshot>,
        /// New sockets, by listener name.
        sockets: Vec<(String, StdListener)>,
        /// Told once the worker serves the configuration (or why it could not).
        done: std::sync::mpsc::Sender<Result<(), String>>,
    },
    /// The optimized code of the module with this sha256 (hex) is ready: move its VMs to it.
    Optimized(String),
    /// Tick every plugin with a tick period now; the sender hears how many ticked.
    Tick(std::sync::mpsc::Sender<usize>),
}

/// What a worker (or the main thread, which runs the singleton services) is given to start.
pub struct WorkerSetup {
    /// Where configurations come from; the first one arrives before the worker is ready.
    pub inbox: mpsc::UnboundedReceiver<WorkerMessage>,
    /// Whether this thread serves listeners (the main thread serves none).
    pub serves_listeners: bool,
    /// The Wasm services this thread runs: the per-worker ones on each worker, the
    /// singletons on the main thread.
    pub services: Vec<LoadedPlugin>,
    /// The node, for `xds.node`.
    pub node: Node,
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
    /// How long connections may take to finish once the server is told to stop, or once
    /// their listener is replaced or removed.
    pub drain_time: std::time::Duration,
    /// What the admin's `/wasm` shows.
    pub wasm: Arc<crate::wasm::status::WasmBoard>,
    /// Recycling, CPU budgets, and whether plugins tick only when told
    /// ([`WorkerMessage::Tick`]).
    pub rules: Arc<crate::wasm::instance::PluginRules>,
}

/// Runs a worker on this thread until the server stops.
pub fn run(mut setup: WorkerSetup) {
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            // The first configuration's `done` says so, and start-up fails.
            if let Some(WorkerMessage::Configure { done, .. }) = setup.inbox.blocking_recv() {
                let _ = done.send(Err(format!("cannot start a worker runtime: {e}")));
            }
            return;
        }
    };
    let local = tokio::task::LocalSet::new();
    local.block_on(&runtime, async move {
        let drain = Drain::new(setup.shutdown.clone());
        let mut worker = Worker::new(&setup, drain.clone());
        let mut services_started = false;
        tokio::task::spawn_local(crate::memory::give_back_periodically());
        loop {
            let message = tokio::select! {
                message = setup.inbox.recv() => message,
                _ = drain.stopping() => break,
            };
            let (snapshot, sockets, done) = match message {
                Some(WorkerMessage::Configure { snapshot, sockets, done }) => (snapshot, sockets, done),
                Some(WorkerMessage::Optimized(sha256)) => {
                    worker.plugins.optimize(&sha256);
                    continue;
                }
                Some(WorkerMessage::Tick(done)) => {
                    let _ = done.send(worker.plugins.tick_now());
                    continue;
                }
                // No more messages: serve the last configuration until stopped.
                None => {
                    drain.stopping().await;
                    break;
                }
            };
            let mut applied = worker.apply(&snapshot, sockets).await;
            // The services start with the first configuration (their callouts need its
            // clusters) and live as long as the thread.
            if applied.is_ok() && !services_started {
                services_started = true;
                applied = worker.start_services(&setup.services);
            }
            let _ = done.send(applied);
        }
        // Stopped: the accept loops have closed their sockets; connections finish what
        // they accepted (HTTP/1.1 answers its request and closes, HTTP/2 sends GOAWAY), up
        // to the drain time.
        let open = drain.open();
        if open > 0 {
            tracing::info!("draining {open} connection(s) for at most {:?}", setup.drain_time);
            if tokio::time::timeout(setup.drain_time, drain.all_closed()).await.is_err() {
                tracing::warn!("drain time over: closing {} connection(s)", drain.open());
            }
        }
        crate::teardown::mark_stopped();
    });
}

/// A listener as this worker serves it.
struct ActiveListener {
    snapshot: Arc<ListenerSnapshot>,
    /// What new connections get (none for a listener wasmproxy takes no connection on).
    current: Option<Current>,
    /// The accept loop, which owns the socket.
    accept: Option<tokio::task::JoinHandle<()>>,
}

impl ActiveListener {
    /// This version's connections drain; with `close`, the socket closes too.
    fn retire(&self, drain_time: std::time::Duration, close: bool) {
        if let Some(current) = &self.current {
            current.borrow().retirement.retire(drain_time);
        }
        if close && let Some(accept) = &self.accept {
            accept.abort();
        }
    }
}

/// What becomes of one listener of a new snapshot on a worker, prepared before anything
/// changes.
enum Step {
    /// Served as it is (the listener at this index).
    Keep(usize),
    /// Changed at the same address: this version takes over the socket of the listener at
    /// this index, whose version drains.
    Swap(usize, Arc<ListenerSnapshot>, Served),
    /// A new socket (the listener it replaces, if any, closes its own and drains).
    Start {
        old: Option<usize>,
        snapshot: Arc<ListenerSnapshot>,
        listener: tokio::net::TcpListener,
        served: Option<Served>,
    },
}

/// One worker's state: what it serves now.
struct Worker {
    index: Option<usize>,
    serves_listeners: bool,
    stats: Arc<Store>,
    clusters: Rc<Clusters>,
    /// The route configurations from RDS files, replaced with each snapshot.
    route_tables: Rc<RouteTables>,
    plugins: Registry,
    listeners: Vec<ActiveListener>,
    services: Vec<Rc<FilterSlot>>,
    service_plugins: Vec<LoadedPlugin>,
    limits: Arc<ConnectionLimits>,
    drain: Drain,
    drain_time: std::time::Duration,
    /// The node's names, for the connection managers' `add_user_agent` and spans.
    node: Rc<LocalNode>,
    /// The tracing providers' drivers, one per configuration, shared by the connection
    /// managers that configure the same one.
    tracing_drivers: Vec<(TracingProvider, Rc<Driver>)>,
}

impl Worker {
    fn new(setup: &WorkerSetup, drain: Drain) -> Worker {
        let clusters = Rc::new(Clusters::new(&setup.stats, &setup.upstreams, setup.worker == Some(0)));
        let node = Rc::new(NodeAttributes::new(&setup.node));
        Worker {
            index: setup.worker,
            serves_listeners: setup.serves_listeners,
            stats: setup.stats.clone(),
            plugins: Registry::new(
                clusters.clone(),
                node,
                VmHome {
                    store: setup.stats.clone(),
                    board: setup.wasm.clone(),
                    worker: setup.worker,
                    rules: setup.rules.clone(),
                },
            ),
            clusters,
            route_tables: Rc::default(),
            listeners: Vec::new(),
            services: Vec::new(),
            service_plugins: Vec::new(),
            limits: setup.limits.clone(),
            drain,
            drain_time: setup.drain_time,
            node: Rc::new(LocalNode {
                cluster: setup.node.cluster.clone(),
                id: setup.node.id.clone(),
                zone: setup.node.locality.zone.clone(),
            }),
            tracing_drivers: Vec::new(),
        }
    }

    /// Serves `snapshot`. Everything that can fail (a plugin's root context on this
    /// worker, a socket) is prepared first, so a failure leaves the worker serving what it
    /// served; then the clusters and route tables are taken and each listener is kept as it
    /// is if unchanged, swapped if changed (its old version drains), started if new;
    /// listeners gone drain and close. Plugins no listener uses any more go.
    async fn apply(&mut self, snapshot: &Snapshot, mut sockets: Vec<(String, StdListener)>) -> Result<(), String> {
        let mut steps = Vec::new();
        if self.serves_listeners {
            for listener in &snapshot.listeners {
                let name = &listener.config.name;
                let socket = sockets.iter().position(|(n, _)| n == name).map(|i| sockets.swap_remove(i).1);
                steps.push(self.prepare(listener, socket)?);
            }
        }
        self.clusters.update(&snapshot.clusters).await;
        *self.route_tables.borrow_mut() = snapshot.route_tables.iter().cloned().collect();
        if self.serves_listeners {
            let mut old: Vec<Option<ActiveListener>> = self.listeners.drain(..).map(Some).collect();
            let next = steps.into_iter().filter_map(|step| self.commit(step, &mut old)).collect();
            for gone in old.into_iter().flatten() {
                gone.retire(self.drain_time, true);
            }
            self.listeners = next;
        }
        let mut used: Vec<LoadedPlugin> = self.service_plugins.clone();
        for l in &self.listeners {
            used.extend(l.snapshot.plugins().cloned());
        }
        self.plugins.keep_only(&used);
        Ok(())
    }

    /// What becomes of one listener of a new snapshot, given a new socket if it needs one
    /// (the main thread sends one for a listener that is new, moved, or changed between
    /// taking connections and not).
    fn prepare(&mut self, snapshot: &Arc<ListenerSnapshot>, socket: Option<StdListener>) -> Result<Step, String> {
        let old = self.listeners.iter().position(|l| l.snapshot.config.name == snapshot.config.name);
        let Some(socket) = socket else {
            let i = old.ok_or_else(|| format!("listener {}: no socket", snapshot.config.name))?;
            if Arc::ptr_eq(&self.listeners[i].snapshot, snapshot) || self.listeners[i].current.is_none() {
                return Ok(Step::Keep(i));
            }
            let served = self.served(snapshot)?;
            return Ok(match served {
                Some(served) => Step::Swap(i, snapshot.clone(), served),
                None => Step::Keep(i),
            });
        };
        let listener = tokio::net::TcpListener::from_std(socket)
            .map_err(|e| format!("listener {}: cannot use its socket: {e}", snapshot.config.name))?;
        Ok(Step::Start { old, snapshot: snapshot.clone(), listener, served: self.served(snapshot)? })
    }

    /// Carries a prepared step out; `old` holds the listeners served until now (listener
    /// names are unique, so each is taken once).
    fn commit(&self, step: Step, old: &mut [Option<ActiveListener>]) -> Option<ActiveListener> {
        Some(match step {
            Step::Keep(i) => old.get_mut(i)?.take()?,
            Step::Swap(i, snapshot, served) => {
                let kept = old.get_mut(i)?.take()?;
                // The old version's connections drain; new ones get this version.
                kept.retire(self.drain_time, false);
                if let Some(current) = &kept.current {
                    *current.borrow_mut() = Rc::new(served);
                }
                ActiveListener { snapshot, current: kept.current, accept: kept.accept }
            }
            Step::Start { old: replaced, snapshot, listener, served } => {
                if let Some(replaced) = replaced.and_then(|i| old.get_mut(i)?.take()) {
                    replaced.retire(self.drain_time, true);
                }
                let Some(served) = served else {
                    // Bound, taking no connection: the socket stays open with the task.
                    let accept = tokio::task::spawn_local(async move {
                        let _listener = listener;
                        std::future::pending::<()>().await
                    });
                    return Some(ActiveListener { snapshot, current: None, accept: Some(accept) });
                };
                let current: Current = Rc::new(std::cell::RefCell::new(Rc::new(served)));
                let accept = accept_loop(listener, current.clone(), self.limits.clone(), self.drain.clone());
                let accept = tokio::task::spawn_local(accept);
                ActiveListener { snapshot, current: Some(current), accept: Some(accept) }
            }
        })
    }

    /// How this worker serves a listener's connections (none for a listener without a
    /// terminal filter wasmproxy serves).
    fn served(&mut self, snapshot: &ListenerSnapshot) -> Result<Option<Served>, String> {
        let listener = &snapshot.config;
        if !snapshot.serves() {
            return Ok(None);
        }
        let address = address_stat_name(&listener.address.address, listener.address.port);
        let mut chains = Vec::with_capacity(snapshot.chains.len());
        for (chain, config) in snapshot.chains.iter().zip(listener.chains()) {
            let terminal = self.terminal(&chain.terminal, listener, &address)?;
            chains.push(ServedChain {
                terminal,
                tls: chain.tls.clone(),
                handshake_timeout: config.handshake_timeout,
                name: Rc::from(config.name.as_str()),
            });
        }
        let tls = chains.iter().any(|c| c.tls.is_some());
        let inspecting = listener.listener_filters.tls_inspector;
        Ok(Some(Served {
            chains,
            matches: listener.filter_chains.iter().map(|c| c.matching.clone()).collect(),
            listener_filters: listener.listener_filters.clone(),
            inspector: inspecting.then(|| InspectorStats::new(&self.stats)),
            listener_direction: listener.traffic_direction,
            listener_metadata: Arc::new(MetadataAttributes::new(&listener.metadata)),
            stats: ListenerStats::new(&self.stats, &address, self.index.unwrap_or(0), tls),
            limit: self.limits.listener(&listener.name),
            retirement: Default::default(),
        }))
    }

    /// What serves one chain's connections on this worker (`address` names the listener
    /// in stats); `None` for a chain without a terminal filter wasmproxy serves.
    fn terminal(
        &mut self,
        terminal: &TerminalSnapshot,
        listener: &Listener,
        address: &str,
    ) -> Result<Option<Terminal>, String> {
        let fail = |e: String| format!("listener {}: {e}", listener.name);
        Ok(Some(match terminal {
            TerminalSnapshot::None => return Ok(None),
            TerminalSnapshot::Tcp(tcp) => Terminal::Tcp(Rc::new(TcpChain {
                filters: self.slots(&tcp.filters).map_err(fail)?,
                missing_filter_config: tcp.missing_filter_config,
                cluster: tcp.cluster.clone(),
                idle_timeout: tcp.idle_timeout,
                clusters: self.clusters.clone(),
                logs: self.loggers(&tcp.logs).map_err(fail)?,
                stats: TcpProxyStats::new(&self.stats, &tcp.stat_prefix),
            })),
            TerminalSnapshot::Http(http) => {
                let filters = self.http_filters(&http.filters, &http.config.stat_prefix);
                Terminal::Http(Rc::new(Hcm {
                    config: http.config.clone(),
                    routes: match &http.routes {
                        RouteSnapshot::Inline(table) => Routes::Inline(table.clone()),
                        RouteSnapshot::Rds(name) => {
                            Routes::Rds { name: name.clone(), tables: self.route_tables.clone() }
                        }
                    },
                    filters: filters.map_err(fail)?,
                    clusters: self.clusters.clone(),
                    stats: HttpStats::new(&self.stats, &http.config.stat_prefix, address),
                    logs: self.loggers(&http.logs).map_err(fail)?,
                    missing_filter_config: http
                        .config
                        .http_filters
                        .iter()
                        .any(|f| matches!(f, wasmproxy_config::model::HttpFilter::Discovered(_))),
                    buffer_limit: match listener.buffer_limit_bytes {
                        0 => usize::MAX,
                        n => n as usize,
                    },
                    node: self.node.clone(),
                    filter_options: http.filter_options.clone(),
                    tracer: self.tracer(&http.config, listener),
                }))
            }
        }))
    }

    /// A connection manager's tracing on this worker, its provider's driver shared with the
    /// others that configure the same provider.
    fn tracer(&mut self, hcm: &HttpConnectionManager, listener: &Listener) -> Option<Tracer> {
        let driver = hcm.tracing.as_ref()?.provider.as_ref().map(|provider| {
            if let Some((_, driver)) = self.tracing_drivers.iter().find(|(p, _)| p == provider) {
                return driver.clone();
            }
            let driver = Rc::new(Driver::new(provider, self.clusters.clone(), &self.node.cluster, &self.stats));
            self.tracing_drivers.push((provider.clone(), driver.clone()));
            driver
        });
        // OUTBOUND listeners are egress; INBOUND and UNSPECIFIED ones ingress, as in Envoy.
        let egress = listener.traffic_direction == 2;
        Tracer::new(hcm, egress, (self.node.id.clone(), self.node.zone.clone()), driver, &self.stats)
    }

    /// This worker's HTTP filters for a snapshot's (`stat_prefix`: the connection manager's).
    fn http_filters(&mut self, filters: &[HttpFilterSnapshot], stat_prefix: &str) -> Result<Vec<ChainFilter>, String> {
        let http_prefix = format!("http.{stat_prefix}.");
        let compressors: Vec<Sibling> = filters
            .iter()
            .filter_map(|f| match f {
                HttpFilterSnapshot::Native(SharedNative { kind: SharedKind::Compressor(c), .. }) => {
                    Some(Sibling::of(c))
                }
                _ => None,
            })
            .collect();
        filters
            .iter()
            .map(|f| match f {
                HttpFilterSnapshot::Wasm(plugin) => self.plugins.plugin(plugin).map(ChainFilter::Wasm),
                HttpFilterSnapshot::Native(native) => Ok(native.on_worker(&WorkerContext {
                    store: &self.stats,
                    http_prefix: &http_prefix,
                    compressors: &compressors,
                    clusters: &self.clusters,
                    local_cluster: &self.node.cluster,
                })),
            })
            .collect()
    }

    /// This worker's slots for these plugins.
    fn slots(&mut self, plugins: &[LoadedPlugin]) -> Result<Vec<Rc<FilterSlot>>, String> {
        plugins.iter().map(|p| self.plugins.plugin(p)).collect()
    }

    /// This worker's access loggers for a snapshot's.
    fn loggers(&mut self, logs: &AccessLogs) -> Result<StreamLoggers, String> {
        Ok(StreamLoggers { writers: logs.writers.clone(), wasm: self.slots(&logs.wasm)? })
    }

    /// Starts this thread's Wasm services: a root context each, living as long as the thread.
    fn start_services(&mut self, services: &[LoadedPlugin]) -> Result<(), String> {
        for service in services {
            let slot =
                self.plugins.plugin(service).map_err(|e| format!("Wasm service {:?}: {e}", service.plugin.name))?;
            self.services.push(slot);
            self.service_plugins.push(service.clone());
        }
        Ok(())
    }
}
