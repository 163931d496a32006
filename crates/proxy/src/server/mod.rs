//! Starting the proxy: compile plugins once, check their configuration on a throwaway VM,
//! bind the listeners, start the workers.

mod listener;
pub mod tunables;
mod worker;

use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;

use tokio::sync::watch;
use wasmproxy_abi::Status;
use wasmproxy_config::model::{
    AccessLogSink, Bootstrap, HttpFilter, NetworkFilter, Node, SocketAddress, WasmCode, WasmPlugin,
};
use wasmproxy_host::{
    Embedder, EngineConfig, GrpcCallRequest, GrpcStreamRequest, HttpCallRequest, ModuleSource, PluginModule,
    WasmEngine, WasmVm,
};

use crate::admin::{AdminState, LogControl};
use crate::observe::access_log::Sinks;
use crate::observe::stats::Upstreams;
use crate::server::tunables::{ConnectionLimits, Tunables};
use crate::server::worker::{Modules, WorkerSetup};
use crate::stream_info::node::NodeAttributes;
use crate::wasm::plugin::{plugin_config, vm_config};

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
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions {
            concurrency: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
            engine: EngineConfig::default(),
            command_line: serde_json::Value::Object(Default::default()),
            logging: None,
            drain_time: std::time::Duration::from_secs(30),
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
}

/// The canary VM's host: its job is to say whether the configuration is accepted. It
/// answers `xds.node`, which plugins read when they configure, and takes callouts to
/// configured clusters (with Envoy's statuses for the others) without making them: the
/// canary is gone before an answer could come.
struct Canary {
    node: NodeAttributes,
    clusters: Vec<String>,
}

impl Canary {
    fn knows(&self, cluster: &[u8]) -> bool {
        self.clusters.iter().any(|c| c.as_bytes() == cluster)
    }

    /// A gRPC callout's target is a known cluster, by name or inside a `GrpcService`.
    fn knows_grpc(&self, service_config: &[u8]) -> bool {
        self.knows(service_config)
            || self.clusters.iter().any(|c| crate::upstream::grpc::names_cluster(service_config, c))
    }
}

impl Embedder for Canary {
    fn property(&mut self, _context_id: u32, path: &[&[u8]]) -> Result<Vec<u8>, Status> {
        match path {
            [b"xds", b"node", rest @ ..] => self.node.property(rest),
            _ => Err(Status::NotFound),
        }
    }

    fn http_call(&mut self, request: HttpCallRequest) -> Result<(), Status> {
        if self.knows(request.cluster.as_bytes()) { Ok(()) } else { Err(Status::BadArgument) }
    }

    fn grpc_call(&mut self, request: GrpcCallRequest) -> Result<(), Status> {
        if self.knows_grpc(&request.service_config) { Ok(()) } else { Err(Status::ParseFailure) }
    }

    fn grpc_stream(&mut self, request: GrpcStreamRequest) -> Result<(), Status> {
        if self.knows_grpc(&request.service_config) { Ok(()) } else { Err(Status::ParseFailure) }
    }
}

impl Server {
    /// Starts the proxy: returns once every worker listens.
    pub fn start(config: Bootstrap, options: ServerOptions) -> Result<RunningServer, ServerError> {
        let tunables = Tunables::read(&config.runtime).map_err(ServerError::Config)?;
        let mut engine_config = options.engine.clone();
        if let Some(d) = tunables.callback_deadline {
            engine_config.callback_deadline = d;
        }
        if let Some(n) = tunables.memory_limit_bytes {
            engine_config.memory_limit_bytes = n;
        }
        let engine = WasmEngine::new(engine_config).map_err(|e| ServerError::Plugin(e.to_string()))?;
        let mut modules = load_plugins(&engine, &config)?;
        let sinks = Sinks::new();
        for (li, listener) in config.listeners.iter().enumerate() {
            for filter in &listener.filter_chain.filters {
                let NetworkFilter::HttpConnectionManager(hcm) = filter else { continue };
                let mut loggers = Vec::new();
                for log in &hcm.access_logs {
                    let logger = sinks
                        .logger(log)
                        .map_err(|error| ServerError::AccessLog { listener: listener.name.clone(), error })?;
                    loggers.extend(logger.map(Arc::new));
                }
                modules.access_logs.insert(li, loggers);
            }
        }
        let concurrency = options.concurrency.max(1);
        let mut sockets: Vec<Vec<std::net::TcpListener>> = (0..concurrency).map(|_| Vec::new()).collect();
        let mut listeners = Vec::new();
        for l in &config.listeners {
            let (mut addr, bind_error) = resolve(&l.name, &l.address)?;
            for worker_sockets in sockets.iter_mut() {
                let socket = crate::server::listener::bind_reuseport(addr).map_err(&bind_error)?;
                addr = socket.local_addr().map_err(&bind_error)?;
                worker_sockets.push(socket);
            }
            tracing::info!("listener {} on {addr}", l.name);
            listeners.push((l.name.clone(), addr));
        }
        let config = Arc::new(config);
        let modules = Arc::new(modules);
        let (shutdown, shutdown_rx) = watch::channel(false);
        let shutdown = Arc::new(shutdown);
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let mut workers = Vec::new();
        let mut admin = None;
        let store = engine.shared().metrics.store().clone();
        let upstreams = Upstreams::new();
        let names: Vec<String> = config.listeners.iter().map(|l| l.name.clone()).collect();
        let limits = Arc::new(ConnectionLimits::new(&tunables, &names));
        if let Some(a) = &config.admin {
            let (addr, bind_error) = resolve("admin", &a.address)?;
            let state = AdminState::new(
                store.clone(),
                upstreams.clone(),
                config.clone(),
                listeners.clone(),
                options.command_line.clone(),
                concurrency,
                options.logging.clone(),
                shutdown.clone(),
            );
            let (bound, handle) =
                crate::admin::start(addr, Arc::new(state), shutdown_rx.clone()).map_err(bind_error)?;
            tracing::info!("admin on {bound}");
            admin = Some(bound);
            workers.push(handle);
        }

        // Per-worker services run on every worker; singletons on one more thread, Envoy's
        // main thread.
        let (singletons, per_worker): (Vec<usize>, Vec<usize>) =
            (0..config.wasm_services.len()).partition(|&i| config.wasm_services[i].singleton);
        let mut threads: Vec<(String, Vec<std::net::TcpListener>, Vec<usize>)> = sockets
            .into_iter()
            .enumerate()
            .map(|(i, sockets)| (format!("wasmproxy-worker-{i}"), sockets, per_worker.clone()))
            .collect();
        if !singletons.is_empty() {
            threads.push(("wasmproxy-main".into(), Vec::new(), singletons));
        }
        let expected = threads.len();
        for (i, (name, sockets, services)) in threads.into_iter().enumerate() {
            let setup = WorkerSetup {
                config: config.clone(),
                modules: modules.clone(),
                worker: (i < concurrency).then_some(i),
                sockets,
                services,
                shutdown: shutdown_rx.clone(),
                stats: store.clone(),
                upstreams: upstreams.clone(),
                limits: limits.clone(),
                drain_time: options.drain_time,
            };
            let ready = ready_tx.clone();
            let handle = std::thread::Builder::new()
                .name(name.clone())
                .spawn(move || worker::run(setup, ready))
                .map_err(|e| ServerError::Worker(format!("cannot start {name}: {e}")))?;
            workers.push(handle);
        }
        drop(ready_tx);
        let server = RunningServer { listeners, admin, shutdown, workers };
        for _ in 0..expected {
            match ready_rx.recv() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    server.stop();
                    return Err(ServerError::Worker(e));
                }
                Err(_) => {
                    server.stop();
                    return Err(ServerError::Worker("a worker stopped while starting".into()));
                }
            }
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

/// The socket address of a configured listener, and how to report a failure to bind it.
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

/// Compiles every Wasm HTTP filter's and service's module once, and runs its
/// configuration on a throwaway VM (Envoy's canary): a plugin that refuses it stops
/// start-up, by name.
fn load_plugins(engine: &WasmEngine, config: &Bootstrap) -> Result<Modules, ServerError> {
    let mut modules = Modules::default();
    let cluster_names: Vec<String> = config.clusters.iter().map(|c| c.name.clone()).collect();
    for service in &config.wasm_services {
        let module = load_module(engine, &service.plugin, "Wasm service")?;
        canary(&module, &service.plugin, &config.node, &cluster_names, "Wasm service")?;
        modules.services.push(module);
    }
    for (li, listener) in config.listeners.iter().enumerate() {
        for (fi, filter) in listener.filter_chain.filters.iter().enumerate() {
            if let NetworkFilter::Wasm(plugin) = filter {
                let module = load_module(engine, plugin, "Wasm plugin")?;
                canary(&module, plugin, &config.node, &cluster_names, "Wasm plugin")?;
                modules.network.insert((li, fi), module);
            }
            let NetworkFilter::HttpConnectionManager(hcm) = filter else { continue };
            for (fi, f) in hcm.http_filters.iter().enumerate() {
                if let HttpFilter::Wasm(plugin) = f {
                    let module = load_module(engine, plugin, "Wasm plugin")?;
                    canary(&module, plugin, &config.node, &cluster_names, "Wasm plugin")?;
                    modules.filters.insert((li, fi), module);
                }
            }
            for (ai, log) in hcm.access_logs.iter().enumerate() {
                if let AccessLogSink::Wasm(plugin) = &log.sink {
                    let module = load_module(engine, plugin, "Wasm access logger")?;
                    canary(&module, plugin, &config.node, &cluster_names, "Wasm access logger")?;
                    modules.access_log_plugins.insert((li, ai), module);
                }
            }
        }
    }
    Ok(modules)
}

/// Loads a plugin's module; `what` ("Wasm plugin", "Wasm service") names it in errors.
fn load_module(engine: &WasmEngine, plugin: &WasmPlugin, what: &str) -> Result<Arc<PluginModule>, ServerError> {
    let source = match &plugin.vm.code {
        WasmCode::File(path) => ModuleSource::File(path.clone()),
        WasmCode::Inline(bytes) => {
            ModuleSource::Bytes { name: format!("inline code of plugin {:?}", plugin.name), bytes: bytes.clone() }
        }
    };
    PluginModule::load(engine, source).map_err(|e| ServerError::Plugin(format!("{what} {:?}: {e}", plugin.name)))
}

fn canary(
    module: &Arc<PluginModule>,
    plugin: &WasmPlugin,
    node: &Node,
    clusters: &[String],
    what: &str,
) -> Result<(), ServerError> {
    let fail = |e: wasmproxy_host::VmError| ServerError::Plugin(format!("{what} {:?}: {e}", plugin.name));
    let embedder = Box::new(Canary { node: NodeAttributes::new(node), clusters: clusters.to_vec() });
    let mut vm = WasmVm::new(module, vm_config(plugin), embedder).map_err(fail)?;
    vm.create_root_context(Arc::new(plugin_config(plugin))).map_err(fail)?;
    Ok(())
}
