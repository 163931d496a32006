//! One version of the configuration as the workers run it, built and checked once on the
//! main thread (route tables compiled, plugin modules loaded and their configuration run
//! by the canary, access loggers opened) and handed to every worker through its inbox. A
//! worker builds its own state from it and keeps what did not change; a stream keeps what
//! it started with.

use std::sync::Arc;

use wasmproxy_config::model::{
    self, AccessLog, AccessLogSink, FilterChain, FilterOptions, HttpConnectionManager, HttpFilter, Listener,
    NetworkFilter, Node, WasmCode, WasmPlugin,
};
use wasmproxy_host::{ModuleSource, PluginModule, WasmEngine};

use crate::filters::SharedNative;
use crate::hcm::route_table::RouteTable;
use crate::observe::access_log::{AccessLogger, Sinks};
use crate::server::ServerError;
use crate::server::canary;
use crate::server::secrets::Secrets;
use crate::tls::downstream::ServerTls;
use crate::upstream::cluster::ClusterSnapshot;
use crate::wasm::plugin::LoadedPlugin;

/// Everything the workers serve: listeners (static ones first), clusters, and the route
/// configurations from RDS files.
pub struct Snapshot {
    /// The listeners.
    pub listeners: Vec<Arc<ListenerSnapshot>>,
    /// The clusters (an EDS cluster with its endpoints from its file).
    pub clusters: Vec<Arc<ClusterSnapshot>>,
    /// The route configurations from RDS files, compiled, by name.
    pub route_tables: Vec<(String, Arc<RouteTable>)>,
}

/// A listener ready to serve: its configuration and its filter chains.
pub struct ListenerSnapshot {
    /// The listener as configured.
    pub config: Listener,
    /// Its `filter_chains`, in order, then its `default_filter_chain`.
    pub chains: Vec<ChainSnapshot>,
}

impl ListenerSnapshot {
    /// Whether any of its chains takes connections (else it binds and takes none).
    pub fn serves(&self) -> bool {
        self.chains.iter().any(|c| !matches!(c.terminal, TerminalSnapshot::None))
    }

    /// Every plugin its chains run.
    pub fn plugins(&self) -> impl Iterator<Item = &LoadedPlugin> {
        self.chains.iter().flat_map(|c| c.terminal.plugins())
    }
}

/// One filter chain ready to serve: what its terminal filter needs, and its TLS.
pub struct ChainSnapshot {
    /// What serves its connections.
    pub terminal: TerminalSnapshot,
    /// Its TLS settings, certificate read and checked.
    pub tls: Option<Arc<ServerTls>>,
}

/// What serves a listener's connections.
pub enum TerminalSnapshot {
    /// The HTTP connection manager.
    Http(Box<HttpSnapshot>),
    /// The TCP proxy, after its Wasm network filters.
    Tcp(Box<TcpSnapshot>),
    /// Nothing wasmproxy serves: the listener binds, but takes no connection.
    None,
}

impl TerminalSnapshot {
    /// Every plugin it runs: filters and Wasm access loggers.
    pub fn plugins(&self) -> impl Iterator<Item = &LoadedPlugin> {
        let (http, tcp, loggers): (&[HttpFilterSnapshot], &[LoadedPlugin], &[LoadedPlugin]) = match self {
            TerminalSnapshot::Http(http) => (&http.filters, &[], &http.logs.wasm),
            TerminalSnapshot::Tcp(tcp) => (&[], &tcp.filters, &tcp.logs.wasm),
            TerminalSnapshot::None => (&[], &[], &[]),
        };
        let http = http.iter().filter_map(|f| match f {
            HttpFilterSnapshot::Wasm(plugin) => Some(&**plugin),
            HttpFilterSnapshot::Native(_) => None,
        });
        http.chain(tcp).chain(loggers)
    }
}

/// A TCP proxy ready to serve.
pub struct TcpSnapshot {
    /// `tcp_proxy.cluster`.
    pub cluster: String,
    /// `tcp_proxy.stat_prefix`.
    pub stat_prefix: String,
    /// `tcp_proxy.idle_timeout` (none: never).
    pub idle_timeout: Option<std::time::Duration>,
    /// The Wasm network filters, in order.
    pub filters: Vec<LoadedPlugin>,
    /// Where a discovered filter without a configuration (none from ECDS, no default)
    /// stands: after that many of `filters`. Connections are closed there, as by Envoy's
    /// missing-configuration filter.
    pub missing_filter_config: Option<usize>,
    /// Its access loggers.
    pub logs: AccessLogs,
}

/// The access loggers of a connection manager or a TCP proxy.
#[derive(Default)]
pub struct AccessLogs {
    /// File, stdout and stderr access loggers.
    pub writers: Vec<Arc<AccessLogger>>,
    /// Wasm access loggers.
    pub wasm: Vec<LoadedPlugin>,
}

/// An HTTP connection manager ready to serve.
pub struct HttpSnapshot {
    /// Its configuration.
    pub config: HttpConnectionManager,
    /// Its routes.
    pub routes: RouteSnapshot,
    /// The HTTP filters, in order (the router is implicit, last).
    pub filters: Vec<HttpFilterSnapshot>,
    /// Their names and whether each is off unless a route turns it on.
    pub filter_options: Vec<FilterOptions>,
    /// Its access loggers.
    pub logs: AccessLogs,
}

/// An HTTP filter ready to serve.
pub enum HttpFilterSnapshot {
    /// A Wasm plugin, loaded and checked.
    Wasm(Box<LoadedPlugin>),
    /// A native filter, with what the workers share.
    Native(SharedNative),
}

/// Where a connection manager's routes come from.
pub enum RouteSnapshot {
    /// `route_config`, compiled once for every worker.
    Inline(Arc<RouteTable>),
    /// `rds`: the route configuration of this name in the snapshot's `route_tables`.
    Rds(String),
}

/// Builds snapshots on the main thread, remembering what it built so that an unchanged
/// listener is not built again and a plugin configuration is checked once.
pub struct Builder {
    engine: WasmEngine,
    node: Node,
    sinks: Arc<Sinks>,
    listeners: Vec<Arc<ListenerSnapshot>>,
    checked: Vec<LoadedPlugin>,
    /// The Wasm services, checked once at start.
    services: Vec<LoadedPlugin>,
    /// Route configurations from RDS files, compiled (kept while they do not change).
    route_tables: Vec<(model::RouteConfig, Arc<RouteTable>)>,
    /// The clusters of the last snapshot (kept while they do not change).
    clusters: Vec<Arc<ClusterSnapshot>>,
    /// The certificates chains serve, SDS ones among them.
    secrets: Secrets,
}

impl Builder {
    /// A builder loading modules into `engine`; `node` is what canaries read as `xds.node`;
    /// chains' certificates come from `secrets`.
    pub fn new(engine: WasmEngine, node: Node, secrets: Secrets) -> Builder {
        Builder {
            engine,
            node,
            sinks: Sinks::new(),
            listeners: Vec::new(),
            checked: Vec::new(),
            services: Vec::new(),
            route_tables: Vec::new(),
            clusters: Vec::new(),
            secrets,
        }
    }

    /// Reads again the SDS files that changed (see [`Secrets::refresh`]).
    pub fn refresh_secrets(&mut self) {
        self.secrets.refresh();
    }

    /// The SDS files, and the files their certificates are in, to watch.
    pub fn secret_sources(&self) -> Vec<model::FileSource> {
        self.secrets.sources()
    }

    /// A snapshot of `listeners`, `clusters` and the route configurations `routes` (from RDS
    /// files). A listener whose configuration is the same as in the last snapshot is taken
    /// from it as it is.
    pub fn build(
        &mut self,
        listeners: &[Listener],
        clusters: &[model::Cluster],
        routes: &[model::RouteConfig],
    ) -> Result<Snapshot, ServerError> {
        let mut route_tables = Vec::with_capacity(routes.len());
        for config in routes {
            let table = match self.route_tables.iter().find(|(c, _)| c == config) {
                Some((_, table)) => table.clone(),
                None => Arc::new(
                    RouteTable::new(config)
                        .map_err(|e| ServerError::Config(format!("route configuration {:?}: {e}", config.name)))?,
                ),
            };
            route_tables.push((config.clone(), table));
        }
        self.route_tables = route_tables;
        let mut built_clusters = Vec::with_capacity(clusters.len());
        for config in clusters {
            match self.clusters.iter().find(|c| c.config == *config) {
                Some(same) => built_clusters.push(same.clone()),
                None => built_clusters
                    .push(Arc::new(ClusterSnapshot::new(config, &mut self.secrets).map_err(ServerError::Config)?)),
            }
        }
        self.clusters = built_clusters;
        let names: Vec<String> = clusters.iter().map(|c| c.name.clone()).collect();
        let mut built = Vec::with_capacity(listeners.len());
        for config in listeners {
            match self.listeners.iter().find(|l| l.config == *config) {
                Some(same) => built.push(same.clone()),
                None => built.push(Arc::new(self.listener(config, &names)?)),
            }
        }
        self.listeners = built.clone();
        self.secrets.forget_unused();
        // Only the plugins served now stay checked (a configuration that comes back is
        // checked again, as Envoy checks it again).
        let in_use = |c: &LoadedPlugin| built.iter().any(|l| l.plugins().any(|p| p.same_as(c)));
        let services = &self.services;
        self.checked.retain(|c| in_use(c) || services.iter().any(|s| s.same_as(c)));
        Ok(Snapshot {
            listeners: built,
            clusters: self.clusters.clone(),
            route_tables: self.route_tables.iter().map(|(c, t)| (c.name.clone(), t.clone())).collect(),
        })
    }

    /// A Wasm service's plugin, loaded and checked.
    pub fn service(&mut self, service: &model::WasmService, clusters: &[String]) -> Result<LoadedPlugin, ServerError> {
        if matches!(service.plugin.vm.code, WasmCode::Remote(_)) {
            let name = &service.plugin.name;
            return Err(ServerError::Plugin(format!(
                "Wasm service {name:?}: code.remote is not supported for bootstrap extensions yet (use local code)"
            )));
        }
        let loaded = self.load(&service.plugin, clusters, "Wasm service")?;
        self.services.push(loaded.clone());
        Ok(loaded)
    }

    fn listener(&mut self, config: &Listener, clusters: &[String]) -> Result<ListenerSnapshot, ServerError> {
        let mut chains = Vec::new();
        for (i, chain) in config.chains().enumerate() {
            chains.push(self.chain(chain, config, clusters, &config.chain_field(i))?);
        }
        Ok(ListenerSnapshot { config: config.clone(), chains })
    }

    /// One filter chain (`which` of `listener`): its plugins loaded, its routes compiled,
    /// its certificate read.
    fn chain(
        &mut self,
        chain: &FilterChain,
        listener: &Listener,
        clusters: &[String],
        which: &str,
    ) -> Result<ChainSnapshot, ServerError> {
        let fail = |e: String| ServerError::Config(format!("listener {}: {which}: {e}", listener.name));
        let filters = &chain.filters;
        let terminal = if let Some(NetworkFilter::TcpProxy(proxy)) = filters.last() {
            let mut wasm = Vec::new();
            let mut missing_filter_config = None;
            for filter in filters {
                match filter {
                    NetworkFilter::Wasm(plugin) => wasm.push(self.load(plugin, clusters, "Wasm plugin")?),
                    NetworkFilter::Discovered(_) => {
                        missing_filter_config = missing_filter_config.or(Some(wasm.len()));
                    }
                    _ => {}
                }
            }
            let logs = self.access_logs(&proxy.access_logs, &listener.name, clusters)?;
            let (cluster, stat_prefix) = (proxy.cluster.clone(), proxy.stat_prefix.clone());
            TerminalSnapshot::Tcp(Box::new(TcpSnapshot {
                cluster,
                stat_prefix,
                idle_timeout: proxy.idle_timeout,
                filters: wasm,
                missing_filter_config,
                logs,
            }))
        } else if let Some(NetworkFilter::HttpConnectionManager(hcm)) =
            filters.iter().find(|f| matches!(f, NetworkFilter::HttpConnectionManager(_)))
        {
            let routes = match &hcm.rds {
                Some(rds) => RouteSnapshot::Rds(rds.route_config_name.clone()),
                None => RouteSnapshot::Inline(Arc::new(
                    RouteTable::new(&hcm.route_config).map_err(|e| fail(e.to_string()))?,
                )),
            };
            let (mut filters, mut filter_options) = (Vec::new(), Vec::new());
            for (filter, options) in hcm.http_filters.iter().zip(&hcm.filter_options) {
                match filter {
                    HttpFilter::Wasm(plugin) => {
                        filters.push(HttpFilterSnapshot::Wasm(Box::new(self.load(plugin, clusters, "Wasm plugin")?)));
                    }
                    HttpFilter::Native(native) => {
                        let shared = SharedNative::new(&options.name, native).map_err(|(regex, e)| {
                            fail(format!("filter {:?}: invalid regex {regex}: {e}", options.name))
                        })?;
                        filters.push(HttpFilterSnapshot::Native(shared));
                    }
                    HttpFilter::Discovered(_) | HttpFilter::Router => continue,
                }
                filter_options.push(options.clone());
            }
            let logs = self.access_logs(&hcm.access_logs, &listener.name, clusters)?;
            let config = (**hcm).clone();
            TerminalSnapshot::Http(Box::new(HttpSnapshot { config, routes, filters, filter_options, logs }))
        } else {
            TerminalSnapshot::None
        };
        let tls = match &chain.tls {
            None => None,
            Some(tls) => {
                let fail = |e: String| {
                    ServerError::Config(format!("listener {}: {which}.transport_socket: {e}", listener.name))
                };
                Some(Arc::new(self.secrets.server_tls(tls).map_err(fail)?))
            }
        };
        Ok(ChainSnapshot { terminal, tls })
    }

    /// The access loggers of one listener's connection manager or TCP proxy.
    fn access_logs(
        &mut self,
        configs: &[AccessLog],
        listener: &str,
        clusters: &[String],
    ) -> Result<AccessLogs, ServerError> {
        let mut logs = AccessLogs::default();
        for log in configs {
            let logger =
                self.sinks.logger(log).map_err(|error| ServerError::AccessLog { listener: listener.into(), error })?;
            logs.writers.extend(logger.map(Arc::new));
            if let AccessLogSink::Wasm(plugin) = &log.sink {
                logs.wasm.push(self.load(plugin, clusters, "Wasm access logger")?);
            }
        }
        Ok(logs)
    }

    /// Loads a plugin's module (compiled once per process: the host caches it by sha256)
    /// and, the first time this plugin is seen, runs its configuration on the canary;
    /// `what` ("Wasm plugin", "Wasm service") names it in errors.
    fn load(&mut self, plugin: &WasmPlugin, clusters: &[String], what: &str) -> Result<LoadedPlugin, ServerError> {
        let fail = |e: String| ServerError::Plugin(format!("{what} {:?}: {e}", plugin.name));
        let source = match &plugin.vm.code {
            WasmCode::File(path) => ModuleSource::File(path.clone()),
            WasmCode::Inline(bytes) => {
                ModuleSource::Bytes { name: format!("inline code of plugin {:?}", plugin.name), bytes: bytes.clone() }
            }
            // The configuration thread puts a fetched module in place of its URL first.
            WasmCode::Remote(remote) => return Err(fail(format!("{} has not been fetched", remote.uri))),
        };
        let module = PluginModule::load(&self.engine, source).map_err(|e| fail(e.to_string()))?;
        let loaded = LoadedPlugin { plugin: plugin.clone(), module };
        if !self.checked.iter().any(|c| c.same_as(&loaded)) {
            canary::check(&loaded.module, plugin, &self.node, clusters).map_err(|e| fail(e.to_string()))?;
            self.checked.push(loaded.clone());
        }
        Ok(loaded)
    }
}
