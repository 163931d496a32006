//! The main thread's hold on the configuration: the static resources, the dynamic ones last
//! accepted from the LDS and CDS files, the sockets bound for each listener and every
//! worker's inbox. A new configuration is built and checked here once, then handed to
//! every worker; one that fails is rejected whole, and the last good one keeps serving.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::sync::mpsc;
use wasmproxy_config::ResourceFileError;
use wasmproxy_config::model::{
    Bootstrap, Cluster, DynamicResources, FileSource, Listener, ResourceFile, SocketAddress,
};
use wasmproxy_stats::{Counter, Gauge, StatName, Store};

use crate::admin::{Accepted, LiveView};
use crate::observe::stats::SubscriptionStats;
use crate::server::ServerError;
use crate::server::listener::bind_reuseport;
use crate::server::referenced::ReferencedFiles;
use crate::server::snapshot::{Builder, Snapshot};
use crate::server::worker::WorkerMessage;
use crate::tls::certificate::ContextCertificates;

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
    /// The snapshot the workers serve.
    served: Option<Arc<Snapshot>>,
    inboxes: Vec<mpsc::UnboundedSender<WorkerMessage>>,
    /// Threads that serve listeners (the first `listener_threads` inboxes).
    listener_threads: usize,
    view: Arc<RwLock<LiveView>>,
    stats: ManagerStats,
}

impl Control {
    /// Control over the workers behind `inboxes` (the first `listener_threads` serve listeners).
    pub fn new(
        builder: Builder,
        bootstrap: Arc<Bootstrap>,
        inboxes: Vec<mpsc::UnboundedSender<WorkerMessage>>,
        listener_threads: usize,
        store: &Arc<Store>,
    ) -> Control {
        let stats = ManagerStats::new(store, &bootstrap.dynamic_resources);
        Control {
            builder,
            bootstrap,
            listeners: None,
            clusters: None,
            last_lds_text: None,
            last_cds_text: None,
            bound: Vec::new(),
            files: ReferencedFiles::new(store.clone()),
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
        if let Some(source) = self.bootstrap.dynamic_resources.cds.clone() {
            self.try_file::<Cluster>(&source, false);
        }
        if let Some(source) = self.bootstrap.dynamic_resources.lds.clone() {
            self.try_file::<Listener>(&source, false);
        }
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
        Ok(())
    }

    /// A dynamic resource file may have changed: each whose text changed is read, checked
    /// and applied (clusters first, so that listeners may route to new ones; then the RDS
    /// and EDS files they refer to).
    pub fn reload(&mut self) {
        if let Some(source) = self.bootstrap.dynamic_resources.cds.clone()
            && self.try_file::<Cluster>(&source, true)
        {
            self.publish();
        }
        if let Some(source) = self.bootstrap.dynamic_resources.lds.clone()
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

    /// Every file the configuration is read from now, for the watcher.
    pub fn sources(&self) -> Vec<FileSource> {
        let dynamic = &self.bootstrap.dynamic_resources;
        let mut sources: Vec<FileSource> = [&dynamic.lds, &dynamic.cds].into_iter().flatten().cloned().collect();
        sources.extend(self.files.sources());
        sources.extend(self.builder.secret_sources());
        sources
    }

    /// Reads an LDS or CDS file if it changed and, if `apply`, serves it (counting the
    /// success: at start, [`Control::start`] does); true if it was taken.
    fn try_file<R: DynamicResource>(&mut self, source: &FileSource, apply: bool) -> bool {
        let path = source.path.display();
        let (_, last, stats) = R::parts(self);
        if !changed(&source.path, last) {
            return false;
        }
        stats.attempted();
        let clusters: Vec<String> = self.all_clusters().iter().map(|c| c.name.clone()).collect();
        let file = match R::load(&source.path, &clusters) {
            Ok(file) => file,
            Err(error) => {
                R::parts(self).2.not_taken(&error);
                tracing::warn!("{}: {path} rejected:\n{error}", R::API);
                return false;
            }
        };
        if let Some(clash) = R::clash(self, &file) {
            R::parts(self).2.rejected();
            tracing::warn!("{}: {path} rejected: {clash}", R::API);
            return false;
        }
        let previous = R::parts(self).0.replace(file);
        if !apply {
            return true;
        }
        if let Err(e) = self.apply(self.all_listeners(), self.all_clusters()) {
            let (taken, _, stats) = R::parts(self);
            *taken = previous;
            stats.rejected();
            tracing::warn!("{}: {path} rejected: {e}", R::API);
            return false;
        }
        let (taken, _, stats) = R::parts(self);
        let version = taken.as_ref().map(|f| f.version_info.clone()).unwrap_or_default();
        stats.accepted(&version);
        tracing::info!("{}: {path} accepted (version {version:?})", R::API);
        true
    }

    fn version(&self, listeners: bool) -> String {
        let v = if listeners {
            self.listeners.as_ref().map(|f| &f.version_info)
        } else {
            self.clusters.as_ref().map(|f| &f.version_info)
        };
        v.cloned().unwrap_or_default()
    }

    fn all_listeners(&self) -> Vec<Listener> {
        let dynamic = self.listeners.iter().flat_map(|f| f.resources.iter());
        self.bootstrap.listeners.iter().chain(dynamic).cloned().collect()
    }

    fn all_clusters(&self) -> Vec<Cluster> {
        let dynamic = self.clusters.iter().flat_map(|f| f.resources.iter());
        let mut all: Vec<Cluster> = self.bootstrap.clusters.clone();
        // A dynamic cluster never replaces a static one of the same name (Envoy refuses it).
        all.extend(dynamic.filter(|c| !self.bootstrap.clusters.iter().any(|s| s.name == c.name)).cloned());
        all
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
        let clusters = files.with_endpoints(clusters);
        let snapshot = Arc::new(self.builder.build(&listeners, &clusters, &files.route_configs())?);
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
        self.count_changes(&snapshot);
        self.bound = bound;
        self.served = Some(snapshot);
        Ok(())
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
    fn count_changes(&self, next: &Snapshot) {
        let s = &self.stats;
        let (old_listeners, old_clusters) = match &self.served {
            Some(old) => (old.listeners.as_slice(), old.clusters.as_slice()),
            None => (&[][..], &[][..]),
        };
        for l in &next.listeners {
            match old_listeners.iter().find(|o| o.config.name == l.config.name) {
                None => s.listener_added.inc(),
                Some(o) if o.config != l.config => s.listener_modified.inc(),
                Some(_) => {}
            }
        }
        let gone = old_listeners.iter().filter(|o| !next.listeners.iter().any(|l| l.config.name == o.config.name));
        s.listener_removed.add(gone.count() as u64);
        s.listeners_active.set(next.listeners.len() as u64);
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

/// What the LDS and CDS files hold, and where [`Control`] keeps each.
trait DynamicResource: Sized {
    /// "lds" or "cds", in logs.
    const API: &'static str;
    /// Reads the file; a listener may route to the `clusters` named.
    fn load(path: &Path, clusters: &[String]) -> Result<ResourceFile<Self>, ResourceFileError>;
    /// The file last taken, the text last tried, and the subscription's stats.
    fn parts(control: &mut Control) -> (&mut Option<ResourceFile<Self>>, &mut Option<String>, &SubscriptionStats);
    /// Why a file that reads well cannot be taken, if it cannot.
    fn clash(control: &Control, file: &ResourceFile<Self>) -> Option<String>;
}

impl DynamicResource for Listener {
    const API: &'static str = "lds";

    fn load(path: &Path, clusters: &[String]) -> Result<ResourceFile<Self>, ResourceFileError> {
        wasmproxy_config::load_listener_file(path, Path::new(""), clusters)
    }

    fn parts(control: &mut Control) -> (&mut Option<ResourceFile<Self>>, &mut Option<String>, &SubscriptionStats) {
        (&mut control.listeners, &mut control.last_lds_text, &control.stats.lds)
    }

    fn clash(control: &Control, file: &ResourceFile<Self>) -> Option<String> {
        let clash = file.resources.iter().find(|l| control.bootstrap.listeners.iter().any(|s| s.name == l.name))?;
        Some(format!("listener {:?} is a static listener", clash.name))
    }
}

impl DynamicResource for Cluster {
    const API: &'static str = "cds";

    fn load(path: &Path, _clusters: &[String]) -> Result<ResourceFile<Self>, ResourceFileError> {
        wasmproxy_config::load_cluster_file(path, Path::new(""))
    }

    fn parts(control: &mut Control) -> (&mut Option<ResourceFile<Self>>, &mut Option<String>, &SubscriptionStats) {
        (&mut control.clusters, &mut control.last_cds_text, &control.stats.cds)
    }

    /// A dynamic cluster named as a static one is left out (see `all_clusters`), not refused.
    fn clash(_control: &Control, _file: &ResourceFile<Self>) -> Option<String> {
        None
    }
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
