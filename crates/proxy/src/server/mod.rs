//! The proxy's main thread: it starts the workers, builds each configuration once (static
//! resources, then the dynamic resource files as they change), hands it to the workers,
//! and serves admin.

mod canary;
mod chain_match;
mod control;
mod drain;
mod listener;
mod referenced;
pub(crate) mod secrets;
mod snapshot;
pub mod tunables;
mod watcher;
mod worker;

use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;

use tokio::sync::watch;
use wasmproxy_config::model::{Bootstrap, ConfigSource, SocketAddress};
use wasmproxy_host::{EngineConfig, WasmEngine};

use crate::admin::{AdminState, LogControl};
use crate::observe::stats::tag_rules;
use crate::server::control::Control;
use crate::server::secrets::Secrets;
use crate::server::snapshot::Builder;
use crate::server::tunables::{ConnectionLimits, Tunables};
use crate::server::worker::{WorkerMessage, WorkerSetup};
use crate::upstream::registry::Upstreams;
use crate::wasm::status::WasmBoard;

/// How to run.
#[derive(Clone)]
pub struct ServerOptions {
    /// Worker threads (`--concurrency`).
    pub concurrency: usize,
    /// Wasm engine settings.
    pub engine: EngineConfig,
    /// The command line as admin `/server_info` shows it (`command_line_options`).
    pub command_line: serde_json::Value,
    /// Run-time log levels for admin `/logging`, if the embedder has them.
    pub logging: Option<Arc<dyn LogControl>>,
    /// Once told to stop (SIGTERM, `/quitquitquit`), how long accepted connections may
    /// take to finish.
    pub drain_time: std::time::Duration,
    /// Plugins tick only when told ([`RunningServer::tick_plugins`]), not on their tick
    /// periods: `wasmproxy plugin-test` delivers the ticks a spec declares.
    pub manual_ticks: bool,
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions {
            concurrency: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
            engine: EngineConfig::default(),
            command_line: serde_json::Value::Object(Default::default()),
            logging: None,
            drain_time: std::time::Duration::from_secs(30),
            manual_ticks: false,
        }
    }
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// A plugin could not be loaded or refused its configuration.
    #[error("{0}")]
    Plugin(String),
    /// A listener could not be bound.
    #[error("listener {name}: cannot listen on {address}: {error}")]
    Bind {
        /// The listener's name.
        name: String,
        /// Where.
        address: String,
        /// Why.
        error: std::io::Error,
    },
    /// A worker could not start.
    #[error("{0}")]
    Worker(String),
    /// A configuration value the server reads at start is not valid.
    #[error("{0}")]
    Config(String),
    /// An access logger could not start.
    #[error("listener {listener}: {error}")]
    AccessLog {
        /// The listener's name.
        listener: String,
        /// Why.
        error: crate::observe::access_log::AccessLogError,
    },
}

/// The proxy.
pub struct Server;

/// A started proxy.
pub struct RunningServer {
    /// Each listener's name and bound address (port 0 resolved).
    pub listeners: Vec<(String, SocketAddr)>,
    /// The admin listener's bound address, if configured.
    pub admin: Option<SocketAddr>,
    shutdown: Arc<watch::Sender<bool>>,
    workers: Vec<std::thread::JoinHandle<()>>,
    inboxes: Vec<tokio::sync::mpsc::UnboundedSender<WorkerMessage>>,
    shared: Arc<wasmproxy_host::SharedState>,
}

impl Server {
    /// Starts the proxy: returns once every worker listens.
    pub fn start(config: Bootstrap, options: ServerOptions) -> Result<RunningServer, ServerError> {
        let tunables = Tunables::read(&config.runtime).map_err(ServerError::Config)?;
        let engine = engine(&options, &tunables)?;
        let store = engine.shared().metrics.store().clone();
        store.set_tag_rules(tag_rules(&config.stats_config));
        let engine_handle = engine.clone();
        let secrets = Secrets::new(config.secrets.clone(), &config.node, store.clone());
        let mut builder = Builder::new(engine, config.node.clone(), secrets);
        // Services are bootstrap extensions: checked once, against the static clusters.
        let static_clusters: Vec<String> = config.clusters.iter().map(|c| c.name.clone()).collect();
        let (mut singletons, mut per_worker) = (Vec::new(), Vec::new());
        for service in &config.wasm_services {
            let loaded = builder.service(service, &static_clusters)?;
            if service.singleton { singletons.push(loaded) } else { per_worker.push(loaded) }
        }
        let config = Arc::new(config);
        let concurrency = options.concurrency.max(1);
        let (shutdown, shutdown_rx) = watch::channel(false);
        let shutdown = Arc::new(shutdown);
        let upstreams = Upstreams::new();
        let limits = Arc::new(ConnectionLimits::new(&tunables));
        // Workers, then Envoy's main thread for singleton services: each waits for its
        // first configuration in its inbox.
        let (mut inboxes, mut workers, wasm) = (Vec::new(), Vec::new(), WasmBoard::new());
        let rules = Arc::new(tunables.plugin_rules(options.manual_ticks));
        let threads = (0..concurrency).map(|i| (format!("wasmproxy-worker-{i}"), Some(i), per_worker.clone()));
        let main = (!singletons.is_empty()).then(|| ("wasmproxy-main".to_string(), None, singletons));
        for (name, worker, services) in threads.chain(main) {
            let (inbox, rx) = tokio::sync::mpsc::unbounded_channel();
            let setup = WorkerSetup {
                inbox: rx,
                serves_listeners: worker.is_some(),
                services,
                node: config.node.clone(),
                shutdown: shutdown_rx.clone(),
                stats: store.clone(),
                upstreams: upstreams.clone(),
                limits: limits.clone(),
                worker,
                drain_time: options.drain_time,
                wasm: wasm.clone(),
                rules: rules.clone(),
            };
            workers.push(spawn_worker(name, setup)?);
            inboxes.push(inbox);
        }
        tell_of_optimized_code(&engine_handle, inboxes.clone());
        let (shared, kept) = (engine_handle.shared().clone(), inboxes.clone());
        let mut server = RunningServer { listeners: Vec::new(), admin: None, shutdown, workers, inboxes: kept, shared };
        let cache_dir = options.engine.cache_dir.clone();
        let mut control = Control::new(builder, config.clone(), inboxes, concurrency, &store, cache_dir);
        let (fetcher, fetches) = tokio::sync::mpsc::unbounded_channel();
        control.fetch_with(fetcher);
        if let Err(e) = control.start() {
            server.stop();
            return Err(e);
        }
        server.listeners = control.bound();
        if let Some(a) = &config.admin {
            let state = AdminState::new(
                store.clone(),
                upstreams.clone(),
                config.clone(),
                control.view(),
                options.command_line.clone(),
                concurrency,
                options.logging.clone(),
                server.shutdown.clone(),
                wasm.clone(),
            );
            let (bound, handle) = match start_admin(&a.address, state, &shutdown_rx) {
                Ok(started) => started,
                Err(e) => {
                    server.stop();
                    return Err(e);
                }
            };
            server.admin = Some(bound);
            server.workers.push(handle);
        }
        let ready = control.ready();
        let view = control.view();
        let fetches_code = control.uses_remote_code();
        let threads = &mut server.workers;
        if let Err(e) = configuration_threads(control, &config, &store, &upstreams, &shutdown_rx, fetches, threads) {
            server.stop();
            return Err(e);
        }
        // As Envoy's initialization, start-up waits for the first clusters and listeners
        // from ADS and for the routes of the listeners (each up to its
        // `initial_fetch_timeout`; with no limit, it does not wait), and for modules by URL.
        if waits_for_xds(&config) || fetches_code {
            ready.wait();
            server.listeners = view.read().unwrap_or_else(|e| e.into_inner()).listeners.clone();
        }
        Ok(server)
    }
}

impl RunningServer {
    /// Stops every worker and waits for them.
    pub fn stop(self) {
        let _ = self.shutdown.send(true);
        for w in self.workers {
            let _ = w.join();
        }
    }

    /// Ticks every plugin with a tick period now, on every thread (with
    /// [`ServerOptions::manual_ticks`], the only ticks there are). Returns how many root
    /// contexts ticked.
    pub fn tick_plugins(&self) -> usize {
        let mut ticked = 0;
        for inbox in &self.inboxes {
            let (done, heard) = std::sync::mpsc::channel();
            if inbox.send(WorkerMessage::Tick(done)).is_ok() {
                ticked += heard.recv_timeout(std::time::Duration::from_secs(30)).unwrap_or(0);
            }
        }
        ticked
    }

    /// The plugins' shared data and queues (Envoy's are per process, as these).
    pub fn shared(&self) -> &Arc<wasmproxy_host::SharedState> {
        &self.shared
    }

    /// What stops the server from another thread (a signal handler).
    pub fn stopper(&self) -> Stopper {
        Stopper(self.shutdown.clone())
    }

    /// Waits until the workers stop (they do when `stop` is called from elsewhere or the
    /// process ends).
    pub fn wait(self) {
        for w in self.workers {
            let _ = w.join();
        }
    }
}

/// Tells a running server to stop: listeners close, accepted connections finish (up to
/// the drain time), then the workers end.
#[derive(Clone)]
pub struct Stopper(Arc<watch::Sender<bool>>);

impl Stopper {
    /// Stops the server.
    pub fn stop(&self) {
        let _ = self.0.send(true);
    }
}

/// Starts the thread `name` of a worker (or of the main thread's services).
fn spawn_worker(name: String, setup: WorkerSetup) -> Result<std::thread::JoinHandle<()>, ServerError> {
    std::thread::Builder::new()
        .name(name.clone())
        .spawn(move || worker::run(setup))
        .map_err(|e| ServerError::Worker(format!("cannot start {name}: {e}")))
}

/// Binds and starts the admin listener: its address and thread.
fn start_admin(
    address: &SocketAddress,
    state: AdminState,
    shutdown: &watch::Receiver<bool>,
) -> Result<(SocketAddr, std::thread::JoinHandle<()>), ServerError> {
    let (addr, bind_error) = resolve("admin", address)?;
    let (bound, handle) = crate::admin::start(addr, Arc::new(state), shutdown.clone()).map_err(bind_error)?;
    tracing::info!("admin on {bound}");
    Ok((bound, handle))
}

/// Starts the xDS streams' thread and the configuration thread, if anything can change
/// (files or xDS); their handles go to `threads`.
fn configuration_threads(
    control: Control,
    config: &Bootstrap,
    store: &Arc<wasmproxy_stats::Store>,
    upstreams: &Arc<Upstreams>,
    shutdown: &watch::Receiver<bool>,
    fetches: tokio::sync::mpsc::UnboundedReceiver<crate::xds::Fetch>,
    threads: &mut Vec<std::thread::JoinHandle<()>>,
) -> Result<(), ServerError> {
    let (sender, events) = std::sync::mpsc::channel();
    let dynamic = &config.dynamic_resources;
    let wanted = control.wanted();
    // Dynamic resources (files too: a listener from a file may take its routes from xDS),
    // or a static resource that names a control plane or a module by URL.
    let dynamic_at_all = dynamic.ads.is_some() || dynamic.lds.is_some() || dynamic.cds.is_some();
    let fetches_code = control.uses_remote_code();
    if dynamic_at_all || !wanted.is_empty() || fetches_code {
        let events = sender.clone();
        let setup = crate::xds::XdsSetup {
            ads: dynamic.ads.clone(),
            clusters: config.clusters.clone(),
            node: crate::stream_info::node::encode_node(&config.node),
            wanted,
            store: store.clone(),
            upstreams: upstreams.clone(),
            events: Box::new(move |event| {
                let _ = events.send(watcher::ControlEvent::Xds(event));
            }),
            fetches,
            shutdown: shutdown.clone(),
        };
        threads.push(crate::xds::spawn(setup).map_err(ServerError::Config)?);
    }
    if !control.sources().is_empty() || !control.wanted().is_empty() || dynamic_at_all || fetches_code {
        threads.push(watcher::spawn(control, shutdown.clone(), sender, events)?);
    }
    Ok(())
}

/// Whether start-up waits for xDS: LDS or CDS come from it, and every wait has a limit.
fn waits_for_xds(config: &Bootstrap) -> bool {
    let dynamic = &config.dynamic_resources;
    let limits: Vec<std::time::Duration> =
        [&dynamic.lds, &dynamic.cds].into_iter().flatten().filter_map(ConfigSource::initial_fetch_timeout).collect();
    !limits.is_empty() && limits.iter().all(|l| !l.is_zero())
}

/// The Wasm engine, with the runtime's tunables over the options' settings.
fn engine(options: &ServerOptions, tunables: &Tunables) -> Result<WasmEngine, ServerError> {
    let mut config = options.engine.clone();
    if let Some(d) = tunables.callback_deadline {
        config.callback_deadline = d;
    }
    if let Some(n) = tunables.memory_limit_bytes {
        config.memory_limit_bytes = n;
    }
    WasmEngine::new(config).map_err(|e| ServerError::Plugin(e.to_string()))
}

/// Modules compiled to baseline code move to optimized code when it is ready: every
/// thread hears of it (VMs started after that get it at once).
fn tell_of_optimized_code(engine: &WasmEngine, inboxes: Vec<tokio::sync::mpsc::UnboundedSender<WorkerMessage>>) {
    engine.on_optimized(Arc::new(move |sha256: &str| {
        for inbox in &inboxes {
            let _ = inbox.send(WorkerMessage::Optimized(sha256.to_string()));
        }
    }));
}

fn resolve(
    name: &str,
    address: &SocketAddress,
) -> Result<(SocketAddr, impl Fn(std::io::Error) -> ServerError + use<>), ServerError> {
    let (name, text) = (name.to_string(), format!("{}:{}", address.address, address.port));
    let bind_error = move |error| ServerError::Bind { name: name.clone(), address: text.clone(), error };
    let addr = (address.address.as_str(), address.port)
        .to_socket_addrs()
        .map_err(&bind_error)?
        .next()
        .ok_or_else(|| bind_error(std::io::Error::other("no address")))?;
    Ok((addr, bind_error))
}
