//! The main thread's hold on the configuration: the static resources, the dynamic ones last
//! accepted from the LDS and CDS files or from ADS (with the routes and endpoints ADS
//! brought), the sockets bound for each listener and every worker's inbox. A new
//! configuration is built and checked here once, then handed to every worker; one that
//! fails is rejected whole, and the last good one keeps serving.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use wasmproxy_config::model::{
    Bootstrap, Cluster, ConfigSource, DynamicResources, ExtensionConfig, FileSource, Listener, LoadAssignment,
    NetworkFilter, ResourceFile, RouteConfig, SocketAddress,
};
use wasmproxy_config::{ResourceFileError, ResourceSource};
use wasmproxy_stats::{Counter, Gauge, StatName, Store};

use crate::admin::{Accepted, LiveView};
use crate::observe::stats::SubscriptionStats;
use crate::server::ServerError;
use crate::server::listener::bind_reuseport;
use crate::server::referenced::ReferencedFiles;
use crate::server::snapshot::{Builder, Snapshot};
use crate::server::worker::WorkerMessage;
use crate::tls::certificate::ContextCertificates;
use crate::wasm::remote::RemoteModules;
use crate::xds::{Fetch, Kind, Reply, StreamKey, Subscriptions, Update, Wanted};

mod filters;
mod modules;
mod resources;
mod warming;

use filters::discovered_filters;
use resources::{DynamicResource, NamedResource, Outcome};
pub use warming::Ready;

/// How long a worker may take to take a new configuration before the update is reported
/// as failed (it still takes it when it can).
const WORKER_APPLY_TIMEOUT: Duration = Duration::from_secs(30);

/// A listener's sockets on the workers.
struct Bound {
    name: String,
    configured: SocketAddress,
    address: SocketAddr,
    /// Whether it takes connections (a listener without a terminal filter wasmproxy serves does not).
    serves: bool,
}

/// Envoy's listener and cluster manager stats.
struct ManagerStats {
    listener_added: Counter,
    listener_modified: Counter,
    listener_removed: Counter,
    listeners_active: Gauge,
    cluster_added: Counter,
    cluster_modified: Counter,
    cluster_removed: Counter,
    clusters_active: Gauge,
    listeners_warming: Gauge,
    clusters_warming: Gauge,
    lds: SubscriptionStats,
    cds: SubscriptionStats,
}

impl ManagerStats {
    /// The stats; those of LDS and CDS only when they are configured, as in Envoy.
    fn new(store: &Store, dynamic: &DynamicResources) -> ManagerStats {
        let subscription = |configured: bool, prefix: &str| {
            if configured { SubscriptionStats::new(store, prefix) } else { SubscriptionStats::detached() }
        };
        let c = |name: &str| store.counter(StatName::plain(name));
        let g = |name: &str| store.gauge(StatName::plain(name));
        ManagerStats {
            listener_added: c("listener_manager.listener_added"),
            listener_modified: c("listener_manager.listener_modified"),
            listener_removed: c("listener_manager.listener_removed"),
            listeners_active: g("listener_manager.total_listeners_active"),
            cluster_added: c("cluster_manager.cluster_added"),
            cluster_modified: c("cluster_manager.cluster_modified"),
            cluster_removed: c("cluster_manager.cluster_removed"),
            clusters_active: g("cluster_manager.active_clusters"),
            listeners_warming: g("listener_manager.total_listeners_warming"),
            clusters_warming: g("cluster_manager.warming_clusters"),
            lds: subscription(dynamic.lds.is_some(), "listener_manager.lds."),
            cds: subscription(dynamic.cds.is_some(), "cluster_manager.cds."),
        }
    }
}

/// The configuration the workers serve, and how to change it.
pub struct Control {
    builder: Builder,
    bootstrap: Arc<Bootstrap>,
    /// The LDS and CDS files' resources last accepted.
    listeners: Option<ResourceFile<Listener>>,
    clusters: Option<ResourceFile<Cluster>>,
    /// The text of each file last tried, so that a change notice with nothing new is skipped.
    last_lds_text: Option<String>,
    last_cds_text: Option<String>,
    bound: Vec<Bound>,
    /// The RDS and EDS files the listeners and clusters refer to.
    files: ReferencedFiles,
    /// The route configurations and endpoints last accepted from ADS.
    ads_routes: Vec<RouteConfig>,
    ads_endpoints: Vec<LoadAssignment>,
    /// The filter configurations last accepted from ECDS.
    ecds: Vec<ExtensionConfig>,
    /// What admin shows of the route and filter configurations from xDS, by name.
    shown_routes: BTreeMap<String, Accepted>,
    shown_filters: BTreeMap<String, Accepted>,
    /// The listeners served, as configured (before ECDS configurations are put in).
    applied: Vec<Listener>,
    /// Modules by URL: those fetched, those being fetched, those that could not be.
    modules: RemoteModules,
    fetching: BTreeSet<String>,
    failed: BTreeMap<String, String>,
    /// Modules fetched for updates refused until they are here (`nack_on_code_cache_miss`).
    prefetched: BTreeSet<String>,
    /// Where fetches are asked for (the xDS thread).
    fetcher: Option<mpsc::UnboundedSender<Fetch>>,
    /// When the last xDS resources were read (their descriptors are let go a while after).
    decoded_at: Option<Instant>,
    /// The route configurations and endpoints asked for from ADS so far (Envoy counts an
    /// update attempt when a subscription starts).
    subscribed: Wanted,
    /// Listeners waiting for their routes from ADS, since when.
    warming: HashMap<String, Instant>,
    /// Clusters waiting for their endpoints from xDS, since when.
    warming_clusters: HashMap<String, Instant>,
    /// Whether the first CDS and LDS answers from ADS came (or their wait ended).
    first_clusters: bool,
    first_listeners: bool,
    started: Instant,
    ready: Arc<Ready>,
    store: Arc<Store>,
    /// The snapshot the workers serve.
    served: Option<Arc<Snapshot>>,
    inboxes: Vec<mpsc::UnboundedSender<WorkerMessage>>,
    /// Threads that serve listeners (the first `listener_threads` inboxes).
    listener_threads: usize,
    view: Arc<RwLock<LiveView>>,
    stats: ManagerStats,
}

impl Control {
    /// Control over the workers behind `inboxes` (the first `listener_threads` serve
    /// listeners); modules fetched by URL are kept under `cache_dir`.
    pub fn new(
        builder: Builder,
        bootstrap: Arc<Bootstrap>,
        inboxes: Vec<mpsc::UnboundedSender<WorkerMessage>>,
        listener_threads: usize,
        store: &Arc<Store>,
        cache_dir: Option<std::path::PathBuf>,
    ) -> Control {
        let stats = ManagerStats::new(store, &bootstrap.dynamic_resources);
        let by_ads =
            |source: &Option<ConfigSource>| source.as_ref().is_some_and(|s| s.initial_fetch_timeout().is_some());
        let first_clusters = !by_ads(&bootstrap.dynamic_resources.cds);
        let first_listeners = !by_ads(&bootstrap.dynamic_resources.lds);
        // As Envoy, a subscription to ADS counts an attempt when it starts.
        if !first_clusters {
            stats.cds.attempted();
        }
        if !first_listeners {
            stats.lds.attempted();
        }
        Control {
            builder,
            bootstrap,
            listeners: None,
            clusters: None,
            last_lds_text: None,
            last_cds_text: None,
            bound: Vec::new(),
            files: ReferencedFiles::new(store.clone()),
            ads_routes: Vec::new(),
            ads_endpoints: Vec::new(),
            ecds: Vec::new(),
            shown_routes: BTreeMap::new(),
            shown_filters: BTreeMap::new(),
            applied: Vec::new(),
            modules: RemoteModules::new(cache_dir, store),
            fetching: BTreeSet::new(),
            prefetched: BTreeSet::new(),
            failed: BTreeMap::new(),
            fetcher: None,
            decoded_at: None,
            subscribed: Wanted::default(),
            warming: HashMap::new(),
            warming_clusters: HashMap::new(),
            first_clusters,
            first_listeners,
            started: Instant::now(),
            ready: Arc::default(),
            store: store.clone(),
            served: None,
            inboxes,
            listener_threads,
            view: Arc::default(),
            stats,
        }
    }

    /// What admin shows.
    pub fn view(&self) -> Arc<RwLock<LiveView>> {
        self.view.clone()
    }

    /// Each listener's name and bound address.
    pub fn bound(&self) -> Vec<(String, SocketAddr)> {
        self.bound.iter().map(|b| (b.name.clone(), b.address)).collect()
    }

    /// The first configuration: the static resources and what the files hold now. A file
    /// that is refused is left out (as Envoy leaves out a rejected update), so the static
    /// resources still start; a static resource that fails stops start-up.
    pub fn start(&mut self) -> Result<(), ServerError> {
        if let Some(source) = self.file_source(false) {
            self.try_file::<Cluster>(&source, false);
        }
        if let Some(source) = self.file_source(true) {
            self.try_file::<Listener>(&source, false);
        }
        self.track_warming();
        match self.apply(self.all_listeners(), self.all_clusters()) {
            Ok(()) => {
                if self.listeners.is_some() {
                    self.stats.lds.accepted(&self.version(true));
                }
                if self.clusters.is_some() {
                    self.stats.cds.accepted(&self.version(false));
                }
            }
            Err(e) if self.listeners.is_some() || self.clusters.is_some() => {
                tracing::warn!("dynamic resources rejected at start: {e}");
                if self.listeners.take().is_some() {
                    self.stats.lds.rejected();
                }
                if self.clusters.take().is_some() {
                    self.stats.cds.rejected();
                }
                self.apply(self.all_listeners(), self.all_clusters())?;
            }
            Err(e) => return Err(e),
        }
        self.publish();
        self.count_new_subscriptions();
        self.check_ready();
        Ok(())
    }

    /// Counts the start of each RDS and EDS subscription to xDS that is new (an attempt,
    /// as Envoy counts one).
    fn count_new_subscriptions(&mut self) {
        let wanted = all_names(&self.wanted());
        for name in wanted.routes.difference(&self.subscribed.routes) {
            self.rds_stats(name).iter().for_each(SubscriptionStats::attempted);
        }
        for name in wanted.endpoints.difference(&self.subscribed.endpoints) {
            self.eds_stats(std::slice::from_ref(name)).iter().for_each(SubscriptionStats::attempted);
        }
        for name in wanted.extensions.difference(&self.subscribed.extensions) {
            ExtensionConfig::stats(self, std::slice::from_ref(name)).iter().for_each(SubscriptionStats::attempted);
        }
        self.subscribed = wanted;
    }

    /// A dynamic resource file may have changed: each whose text changed is read, checked
    /// and applied (clusters first, so that listeners may route to new ones; then the RDS
    /// and EDS files they refer to).
    pub fn reload(&mut self) {
        if let Some(source) = self.file_source(false)
            && self.try_file::<Cluster>(&source, true)
        {
            self.publish();
        }
        if let Some(source) = self.file_source(true)
            && self.try_file::<Listener>(&source, true)
        {
            self.publish();
        }
        self.builder.refresh_secrets();
        let mut files = self.files.clone();
        if files.refresh(&self.all_listeners(), &self.all_clusters()) {
            match self.apply_with(self.all_listeners(), self.all_clusters(), &files) {
                Ok(()) => {
                    self.files = files;
                    self.publish();
                }
                Err(e) => tracing::warn!("rds/eds: update rejected: {e}"),
            }
        }
    }

    /// The LDS (`listeners`) or CDS file, if it is one.
    fn file_source(&self, listeners: bool) -> Option<FileSource> {
        let dynamic = &self.bootstrap.dynamic_resources;
        let source = if listeners { &dynamic.lds } else { &dynamic.cds };
        source.as_ref()?.file().cloned()
    }

    /// Every file the configuration is read from now, for the watcher.
    pub fn sources(&self) -> Vec<FileSource> {
        let mut sources: Vec<FileSource> =
            [self.file_source(true), self.file_source(false)].into_iter().flatten().collect();
        sources.extend(self.files.sources());
        sources.extend(self.builder.secret_sources());
        sources
    }

    /// Reads an LDS or CDS file if it changed and, if `apply`, serves it (counting the
    /// success: at start, [`Control::start`] does); true if it was taken.
    fn try_file<R: DynamicResource>(&mut self, source: &FileSource, apply: bool) -> bool {
        let (_, last, stats) = R::parts(self);
        if !changed(&source.path, last) {
            return false;
        }
        stats.attempted();
        // A module that could not be fetched is tried again when its plugin comes again.
        self.failed.clear();
        // Warming clusters count, as Envoy checks routes against active and warming ones.
        let clusters: Vec<String> = self.configured_clusters().iter().map(|c| c.name.clone()).collect();
        let read = R::load(ResourceSource::File(&source.path), &clusters);
        self.take(read, &source.path.display().to_string(), apply).is_ok()
    }

    /// Takes LDS or CDS resources read from `from` and, if `apply`, serves them (the
    /// last ones stay if they do not serve); `Err` says why they were not taken.
    fn take<R: DynamicResource>(
        &mut self,
        read: Result<ResourceFile<R>, ResourceFileError>,
        from: &str,
        apply: bool,
    ) -> Result<(), String> {
        let file = match read {
            Ok(file) => file,
            Err(error) => {
                R::parts(self).2.not_taken(&error);
                tracing::warn!("{}: {from} rejected:\n{error}", R::API);
                return Err(error.to_string());
            }
        };
        if let Some(clash) = R::clash(self, &file) {
            R::parts(self).2.rejected();
            tracing::warn!("{}: {from} rejected: {clash}", R::API);
            return Err(clash);
        }
        let previous = R::parts(self).0.replace(file);
        if !apply {
            return Ok(());
        }
        if let Some(why) = self.uncached_code() {
            let (taken, _, stats) = R::parts(self);
            *taken = previous;
            stats.rejected();
            tracing::warn!("{}: {from} rejected: {why}", R::API);
            return Err(why);
        }
        self.track_warming();
        if let Err(e) = self.apply(self.all_listeners(), self.all_clusters()) {
            let (taken, _, stats) = R::parts(self);
            *taken = previous;
            stats.rejected();
            tracing::warn!("{}: {from} rejected: {e}", R::API);
            self.track_warming();
            return Err(e.to_string());
        }
        let (taken, _, stats) = R::parts(self);
        let version = taken.as_ref().map(|f| f.version_info.clone()).unwrap_or_default();
        stats.accepted(&version);
        tracing::info!("{}: {from} accepted (version {version:?})", R::API);
        Ok(())
    }

    /// A response from ADS: read, checked and applied as a file's resources are; the
    /// answer says whether it was taken and what routes and endpoints are wanted now.
    pub fn xds_update(&mut self, update: Update) {
        let source = ResourceSource::Wire { version_info: &update.version_info, resources: &update.resources };
        if matches!(update.kind, Kind::Listener | Kind::Extension) {
            // A module that could not be fetched is tried again when its plugin comes again.
            self.failed.clear();
        }
        self.decoded_at = Some(Instant::now());
        let result = match update.kind {
            Kind::Cluster => {
                self.stats.cds.attempted();
                let read = Cluster::load(source, &[]);
                let taken = self.take(read, "ads", true);
                self.first_clusters = true;
                taken
            }
            Kind::Listener => {
                self.stats.lds.attempted();
                let clusters: Vec<String> = self.configured_clusters().iter().map(|c| c.name.clone()).collect();
                let read = Listener::load(source, &clusters);
                let taken = self.take(read, "ads", true);
                self.first_listeners = true;
                taken
            }
            Kind::Route => self.xds_named::<RouteConfig>(source, &update.version_info),
            Kind::Endpoint => self.xds_named::<LoadAssignment>(source, &update.version_info),
            Kind::Extension => self.xds_named::<ExtensionConfig>(source, &update.version_info),
        };
        self.count_new_subscriptions();
        let wanted = self.wanted();
        // What nothing refers to any more is forgotten.
        let names = all_names(&wanted);
        self.ads_routes.retain(|r| names.routes.contains(&r.name));
        self.ads_endpoints.retain(|e| names.endpoints.contains(&e.cluster_name));
        self.ecds.retain(|e| names.extensions.contains(&e.name));
        self.shown_routes.retain(|name, _| names.routes.contains(name));
        self.shown_filters.retain(|name, _| names.extensions.contains(name));
        self.publish();
        let _ = update.reply.send(Reply { result, wanted });
        self.check_ready();
    }

    /// Route configurations or endpoints from ADS: each replaces the one of its name.
    fn xds_named<R: NamedResource>(&mut self, source: ResourceSource<'_>, version: &str) -> Result<(), String> {
        let read = R::load(source);
        let names: Vec<String> = match &read {
            Ok(file) => file.resources.iter().map(|r| r.name().to_string()).collect(),
            Err(_) => R::wanted(&all_names(&self.wanted())).iter().cloned().collect(),
        };
        let stats = R::stats(self, &names);
        stats.iter().for_each(SubscriptionStats::attempted);
        let file = read.inspect_err(|e| stats.iter().for_each(|s| s.not_taken(e))).map_err(|e| e.to_string())?;
        if let Some(why) = file.resources.iter().find_map(|r| R::refused(self, r)) {
            stats.iter().for_each(SubscriptionStats::rejected);
            names.iter().for_each(|n| R::counted(self, n, Outcome::Refused));
            return Err(why);
        }
        let documents = file.documents.clone();
        let mut taken = R::held(self).clone();
        for resource in file.resources {
            taken.retain(|r| r.name() != resource.name());
            taken.push(resource);
        }
        let previous = std::mem::replace(R::held(self), taken);
        if let Some(why) = self.uncached_code() {
            *R::held(self) = previous;
            stats.iter().for_each(SubscriptionStats::rejected);
            names.iter().for_each(|n| R::counted(self, n, Outcome::NotApplied));
            return Err(why);
        }
        self.track_warming();
        if let Err(e) = self.apply(self.all_listeners(), self.all_clusters()) {
            *R::held(self) = previous;
            self.track_warming();
            stats.iter().for_each(SubscriptionStats::rejected);
            names.iter().for_each(|n| R::counted(self, n, Outcome::NotApplied));
            return Err(e.to_string());
        }
        stats.iter().for_each(|s| s.accepted(version));
        names.iter().for_each(|n| R::counted(self, n, Outcome::Applied));
        let now = std::time::SystemTime::now();
        for (name, document) in names.iter().zip(documents) {
            let accepted = Accepted { version_info: version.to_string(), last_updated: now, documents: vec![document] };
            if let Some(shown) = R::shown(self) {
                shown.insert(name.clone(), accepted);
            }
        }
        Ok(())
    }

    /// A stream to a control plane failed: every subscription on it counts an update
    /// failure (and an attempt), as in Envoy.
    pub fn xds_disconnected(&mut self, stream: &StreamKey) {
        let wanted = self.wanted().remove(stream).unwrap_or_default();
        if wanted.clusters {
            self.stats.cds.failed();
        }
        if wanted.listeners {
            self.stats.lds.failed();
        }
        for name in &wanted.routes {
            self.rds_stats(name).iter().for_each(SubscriptionStats::failed);
        }
        for name in &wanted.endpoints {
            self.eds_stats(std::slice::from_ref(name)).iter().for_each(SubscriptionStats::failed);
        }
        for name in &wanted.extensions {
            ExtensionConfig::stats(self, std::slice::from_ref(name)).iter().for_each(SubscriptionStats::failed);
        }
    }

    /// The update stats of an RDS subscription: `http.<stat_prefix>.rds.<name>.` of each
    /// connection manager that names it.
    fn rds_stats(&self, name: &str) -> Vec<SubscriptionStats> {
        let listeners = self.configured_listeners();
        let prefixes: BTreeSet<String> = listeners
            .iter()
            .flat_map(|l| l.chains().flat_map(|c| &c.filters))
            .filter_map(|f| match f {
                NetworkFilter::HttpConnectionManager(hcm) => hcm.rds.as_ref().and_then(|r| {
                    let xds = r.source.initial_fetch_timeout().is_some() && r.route_config_name == name;
                    xds.then(|| format!("http.{}.rds.{name}.", hcm.stat_prefix))
                }),
                _ => None,
            })
            .collect();
        prefixes.iter().map(|p| SubscriptionStats::new(&self.store, p)).collect()
    }

    /// The update stats of an EDS subscription: `cluster.<name>.` of each cluster that names it.
    fn eds_stats(&self, services: &[String]) -> Vec<SubscriptionStats> {
        // The clusters configured and the last versions of those warming: each version
        // subscribes on its own, as Envoy's warming cluster does beside the active one.
        let subscribed: BTreeSet<String> = self
            .configured_clusters()
            .iter()
            .chain(&self.all_clusters())
            .filter(|c| {
                c.eds
                    .as_ref()
                    .is_some_and(|e| e.source.initial_fetch_timeout().is_some() && services.contains(&e.service_name))
            })
            .map(|c| c.name.clone())
            .collect();
        // A cluster counts once a response, though it holds its last version's endpoints
        // and its new one's: by then the new one replaced the last, as in Envoy.
        subscribed.iter().map(|name| SubscriptionStats::new(&self.store, &format!("cluster.{name}."))).collect()
    }

    /// What the configuration wants from each stream to a control plane.
    pub fn wanted(&self) -> Subscriptions {
        let mut wanted = Subscriptions::new();
        let dynamic = &self.bootstrap.dynamic_resources;
        if let Some(key) = dynamic.cds.as_ref().and_then(|s| StreamKey::of(s, Kind::Cluster)) {
            wanted.entry(key).or_default().clusters = true;
        }
        if let Some(key) = dynamic.lds.as_ref().and_then(|s| StreamKey::of(s, Kind::Listener)) {
            wanted.entry(key).or_default().listeners = true;
        }
        // The listeners configured, and the last versions of those still warming, which
        // keep their routes until the new ones serve.
        for l in self.configured_listeners().iter().chain(&self.all_listeners()) {
            for f in l.chains().flat_map(|c| &c.filters) {
                let NetworkFilter::HttpConnectionManager(hcm) = f else { continue };
                if let Some(rds) = &hcm.rds
                    && let Some(key) = StreamKey::of(&rds.source, Kind::Route)
                {
                    wanted.entry(key).or_default().routes.insert(rds.route_config_name.clone());
                }
            }
            for (d, _) in discovered_filters(l) {
                if let Some(key) = StreamKey::of(&d.source, Kind::Extension) {
                    wanted.entry(key).or_default().extensions.insert(d.name.clone());
                }
            }
        }
        // The clusters configured, and the last versions of those still warming.
        for c in self.configured_clusters().iter().chain(&self.all_clusters()) {
            if let Some(eds) = &c.eds
                && let Some(key) = StreamKey::of(&eds.source, Kind::Endpoint)
            {
                wanted.entry(key).or_default().endpoints.insert(eds.service_name.clone());
            }
        }
        wanted
    }

    fn version(&self, listeners: bool) -> String {
        let v = if listeners {
            self.listeners.as_ref().map(|f| &f.version_info)
        } else {
            self.clusters.as_ref().map(|f| &f.version_info)
        };
        v.cloned().unwrap_or_default()
    }

    /// Every listener configured, served or still waiting for its routes.
    fn configured_listeners(&self) -> Vec<Listener> {
        let dynamic = self.listeners.iter().flat_map(|f| f.resources.iter());
        self.bootstrap.listeners.iter().chain(dynamic).cloned().collect()
    }

    /// The listeners served: those not waiting for their routes; while a changed listener
    /// waits, its last version keeps serving, as Envoy keeps a listener until the new one
    /// warms.
    fn all_listeners(&self) -> Vec<Listener> {
        // As configured (ECDS configurations and modules not put in yet), so that the last
        // version is resolved, compared and counted as it was.
        let served = |name: &str| self.applied.iter().find(|l| l.name == name).cloned();
        let configured = self.configured_listeners().into_iter();
        configured.filter_map(|l| if self.warmed(&l) { Some(l) } else { served(&l.name) }).collect()
    }

    /// Every cluster configured, served or still waiting for its endpoints.
    fn configured_clusters(&self) -> Vec<Cluster> {
        let dynamic = self.clusters.iter().flat_map(|f| f.resources.iter());
        let mut all: Vec<Cluster> = self.bootstrap.clusters.clone();
        // A dynamic cluster never replaces a static one of the same name (Envoy refuses it).
        all.extend(dynamic.filter(|c| !self.bootstrap.clusters.iter().any(|s| s.name == c.name)).cloned());
        all
    }

    /// The clusters served: static ones (start-up waits for their endpoints), and dynamic
    /// ones not waiting for theirs; while a changed cluster waits, its last version keeps
    /// serving, and a new one is not there yet (its requests get 503, as in Envoy).
    fn all_clusters(&self) -> Vec<Cluster> {
        let served = |name: &str| {
            let snapshot = self.served.as_ref()?;
            snapshot.clusters.iter().find(|c| c.config.name == name).map(|c| c.config.clone())
        };
        let is_static = |c: &Cluster| self.bootstrap.clusters.iter().any(|s| s.name == c.name);
        let configured = self.configured_clusters().into_iter();
        configured
            .filter_map(|c| if is_static(&c) || self.cluster_warmed(&c) { Some(c) } else { served(&c.name) })
            .collect()
    }

    /// Builds a snapshot of `listeners` and `clusters` with what the RDS and EDS files they
    /// refer to hold, binds the sockets it needs, and hands it to every worker; done once
    /// each has taken it.
    fn apply(&mut self, listeners: Vec<Listener>, clusters: Vec<Cluster>) -> Result<(), ServerError> {
        let mut files = self.files.clone();
        files.refresh(&listeners, &clusters);
        self.apply_with(listeners, clusters, &files)?;
        self.files = files;
        Ok(())
    }

    /// [`Control::apply`] with these RDS and EDS files.
    fn apply_with(
        &mut self,
        listeners: Vec<Listener>,
        clusters: Vec<Cluster>,
        files: &ReferencedFiles,
    ) -> Result<(), ServerError> {
        // Every listener configured, warming ones too.
        self.check_grpc_sources(&self.configured_listeners(), &clusters)?;
        let configured = listeners;
        let listeners: Vec<Listener> = configured.iter().map(|l| self.resolve(l)).collect();
        let clusters = self.with_ads_endpoints(files.with_endpoints(clusters));
        let mut routes = files.route_configs();
        routes.extend(
            self.ads_routes.iter().filter(|r| !routes.iter().any(|f| f.name == r.name)).cloned().collect::<Vec<_>>(),
        );
        let snapshot = Arc::new(self.builder.build(&listeners, &clusters, &routes)?);
        let (bound, mut sockets) = self.bind(&snapshot)?;
        let mut waiting = Vec::new();
        for (i, inbox) in self.inboxes.iter().enumerate() {
            let (done, result) = std::sync::mpsc::channel();
            let sockets = if i < self.listener_threads { std::mem::take(&mut sockets[i]) } else { Vec::new() };
            let message = WorkerMessage::Configure { snapshot: snapshot.clone(), sockets, done };
            if inbox.send(message).is_err() {
                return Err(ServerError::Worker("a worker has stopped".into()));
            }
            waiting.push(result);
        }
        for result in waiting {
            match result.recv_timeout(WORKER_APPLY_TIMEOUT) {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Err(ServerError::Worker(e)),
                Err(_) => return Err(ServerError::Worker("a worker did not take the configuration in time".into())),
            }
        }
        self.count_changes(&snapshot, &configured);
        self.applied = configured;
        self.bound = bound;
        self.served = Some(snapshot);
        Ok(())
    }

    /// Every `api_config_source` must name a static cluster, as in Envoy, and `ads` needs
    /// the ADS stream (a resource from a file may name it without one).
    fn check_grpc_sources(&self, listeners: &[Listener], clusters: &[Cluster]) -> Result<(), ServerError> {
        let rds = listeners.iter().flat_map(|l| l.chains().flat_map(|c| &c.filters)).filter_map(|f| match f {
            NetworkFilter::HttpConnectionManager(hcm) => hcm.rds.as_ref().map(|r| (&r.source, "rds.config_source")),
            _ => None,
        });
        let eds = clusters.iter().filter_map(|c| c.eds.as_ref().map(|e| (&e.source, "eds_config")));
        for (source, field) in rds.chain(eds) {
            if matches!(source, ConfigSource::Ads { .. }) && self.bootstrap.dynamic_resources.ads.is_none() {
                return Err(ServerError::Config(format!("{field}.ads: needs dynamic_resources.ads_config")));
            }
            if let ConfigSource::Grpc { api, .. } = source
                && !self.bootstrap.clusters.iter().any(|c| c.name == api.cluster)
            {
                return Err(ServerError::Config(format!(
                    "{field}.api_config_source: unknown cluster {:?} (it must be in static_resources.clusters)",
                    api.cluster
                )));
            }
        }
        Ok(())
    }

    /// `clusters` with each xDS EDS cluster's endpoints (none until they come).
    fn with_ads_endpoints(&self, mut clusters: Vec<Cluster>) -> Vec<Cluster> {
        for cluster in &mut clusters {
            let Some(eds) = &cluster.eds else { continue };
            if eds.source.initial_fetch_timeout().is_none() {
                continue;
            }
            let assignment = self.ads_endpoints.iter().find(|a| a.cluster_name == eds.service_name);
            cluster.endpoints = assignment.map(|a| a.endpoints.clone()).unwrap_or_default();
        }
        clusters
    }

    /// Every listener's bound address, and for each listener thread the new sockets it
    /// needs: for a listener that is new, moved, or changed between taking connections
    /// and not; others keep the sockets their workers hold.
    #[allow(clippy::type_complexity)]
    fn bind(
        &self,
        snapshot: &Snapshot,
    ) -> Result<(Vec<Bound>, Vec<Vec<(String, std::net::TcpListener)>>), ServerError> {
        let mut bound = Vec::new();
        let mut sockets: Vec<Vec<_>> = (0..self.listener_threads).map(|_| Vec::new()).collect();
        for l in &snapshot.listeners {
            let config = &l.config;
            let serves = l.serves();
            let kept = self
                .bound
                .iter()
                .find(|b| b.name == config.name && b.configured == config.address && b.serves == serves);
            if let Some(kept) = kept {
                bound.push(Bound {
                    name: kept.name.clone(),
                    configured: kept.configured.clone(),
                    address: kept.address,
                    serves,
                });
                continue;
            }
            let (mut addr, bind_error) = super::resolve(&config.name, &config.address)?;
            for worker in sockets.iter_mut() {
                let socket = bind_reuseport(addr).map_err(&bind_error)?;
                addr = socket.local_addr().map_err(&bind_error)?;
                worker.push((config.name.clone(), socket));
            }
            tracing::info!("listener {} on {addr}", config.name);
            bound.push(Bound { name: config.name.clone(), configured: config.address.clone(), address: addr, serves });
        }
        Ok((bound, sockets))
    }

    /// Envoy's listener and cluster manager counts for the change from what is served now.
    /// Listeners are compared as configured (a filter configuration from ECDS does not
    /// modify its listener, as in Envoy).
    fn count_changes(&self, next: &Snapshot, listeners: &[Listener]) {
        let s = &self.stats;
        let old_clusters = match &self.served {
            Some(old) => old.clusters.as_slice(),
            None => &[][..],
        };
        for l in listeners {
            match self.applied.iter().find(|o| o.name == l.name) {
                None => s.listener_added.inc(),
                Some(o) if o != l => s.listener_modified.inc(),
                Some(_) => {}
            }
        }
        let gone = self.applied.iter().filter(|o| !listeners.iter().any(|l| l.name == o.name));
        s.listener_removed.add(gone.count() as u64);
        s.listeners_active.set(listeners.len() as u64);
        for c in &next.clusters {
            match old_clusters.iter().find(|o| o.config.name == c.config.name) {
                None => s.cluster_added.inc(),
                Some(o) if o.config != c.config => s.cluster_modified.inc(),
                Some(_) => {}
            }
        }
        let gone = old_clusters.iter().filter(|o| !next.clusters.iter().any(|c| c.config.name == o.config.name));
        s.cluster_removed.add(gone.count() as u64);
        s.clusters_active.set(next.clusters.len() as u64);
    }

    /// Tells admin what is served now.
    fn publish(&self) {
        let mut view = self.view.write().unwrap_or_else(|e| e.into_inner());
        view.listeners = self.bound();
        show(&mut view.dynamic_listeners, &self.listeners);
        show(&mut view.dynamic_clusters, &self.clusters);
        view.dynamic_routes = self.shown_routes.values().cloned().collect();
        view.dynamic_filters = self.shown_filters.values().cloned().collect();
        view.tls_contexts = self.served.iter().flat_map(|s| tls_contexts(s)).collect();
    }
}

/// Every TLS context of a snapshot: each filter chain's, then each cluster's.
fn tls_contexts(snapshot: &Snapshot) -> Vec<Arc<dyn ContextCertificates>> {
    let chains = snapshot.listeners.iter().flat_map(|l| l.chains.iter().filter_map(|c| c.tls.clone()));
    let clusters = snapshot.clusters.iter().filter_map(|c| c.tls.clone());
    chains
        .map(|t| t as Arc<dyn ContextCertificates>)
        .chain(clusters.map(|t| t as Arc<dyn ContextCertificates>))
        .collect()
}

/// What admin shows of an accepted file; it keeps its time until what the file holds changes.
fn show<T>(shown: &mut Option<Accepted>, file: &Option<ResourceFile<T>>) {
    let Some(f) = file else { return };
    if shown.as_ref().is_some_and(|a| a.version_info == f.version_info && a.documents == f.documents) {
        return;
    }
    *shown = Some(Accepted {
        version_info: f.version_info.clone(),
        last_updated: std::time::SystemTime::now(),
        documents: f.documents.clone(),
    });
}

/// Whether the file's text differs from what was last tried (which it then becomes); an
/// unreadable file counts as changed once, so that its error is reported once.
fn changed(path: &Path, last: &mut Option<String>) -> bool {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| format!("\0unreadable: {e}"));
    if last.as_deref() == Some(text.as_str()) {
        return false;
    }
    *last = Some(text);
    true
}

/// Every route configuration and endpoint name wanted, whichever stream brings it.
fn all_names(wanted: &Subscriptions) -> Wanted {
    let mut all = Wanted::default();
    for w in wanted.values() {
        all.routes.extend(w.routes.iter().cloned());
        all.endpoints.extend(w.endpoints.iter().cloned());
        all.extensions.extend(w.extensions.iter().cloned());
    }
    all
}
