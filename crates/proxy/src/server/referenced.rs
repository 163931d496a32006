//! The RDS and EDS files (not ADS) the listeners and clusters refer to: each read when first referred
//! to and again when its text changes, keeping what it last held that was readable; a file
//! no listener or cluster refers to any more is forgotten.

use std::path::PathBuf;
use std::sync::Arc;

use wasmproxy_stats::Store;

use wasmproxy_config::model::{
    Cluster, FileSource, Listener, LoadAssignment, NetworkFilter, ResourceFile, RouteConfig,
};
use wasmproxy_config::{ResourceFileError, ResourceSource, load_endpoints, load_routes};

use crate::observe::stats::SubscriptionStats;

/// One referenced file.
#[derive(Clone)]
struct FileState<T> {
    source: FileSource,
    /// The text last tried, so that a notice with nothing new is skipped.
    last_text: Option<String>,
    /// What it held when last readable.
    accepted: Option<ResourceFile<T>>,
}

/// The RDS and EDS files in use.
#[derive(Clone)]
pub struct ReferencedFiles {
    routes: Vec<FileState<RouteConfig>>,
    endpoints: Vec<FileState<LoadAssignment>>,
    store: Arc<Store>,
}

/// Who reads a file, by the prefix of its update stats (Envoy's
/// `http.<stat_prefix>.rds.<route_config_name>.` and `cluster.<name>.`).
struct Subscriber<'a> {
    source: &'a FileSource,
    stats_prefix: String,
}

impl ReferencedFiles {
    /// No files yet; their update stats go to `store`.
    pub fn new(store: Arc<Store>) -> ReferencedFiles {
        ReferencedFiles { routes: Vec::new(), endpoints: Vec::new(), store }
    }

    /// Reads the files `listeners` and `clusters` refer to that are new or whose text
    /// changed, and forgets the others; true if what they hold changed.
    pub fn refresh(&mut self, listeners: &[Listener], clusters: &[Cluster]) -> bool {
        let rds: Vec<Subscriber<'_>> = listeners
            .iter()
            .flat_map(|l| l.chains().flat_map(|c| &c.filters))
            .filter_map(|f| match f {
                NetworkFilter::HttpConnectionManager(hcm) => hcm.rds.as_ref().and_then(|r| {
                    Some(Subscriber {
                        source: r.source.file()?,
                        stats_prefix: format!("http.{}.rds.{}.", hcm.stat_prefix, r.route_config_name),
                    })
                }),
                _ => None,
            })
            .collect();
        let eds: Vec<Subscriber<'_>> = clusters
            .iter()
            .filter_map(|c| {
                let source = c.eds.as_ref()?.source.file()?;
                Some(Subscriber { source, stats_prefix: format!("cluster.{}.", c.name) })
            })
            .collect();
        let routes = refresh(&mut self.routes, &rds, &self.store, |p| load_routes(ResourceSource::File(p)));
        let endpoints = refresh(&mut self.endpoints, &eds, &self.store, |p| load_endpoints(ResourceSource::File(p)));
        routes || endpoints
    }

    /// Every route configuration the RDS files hold (the first of a name wins).
    pub fn route_configs(&self) -> Vec<RouteConfig> {
        let mut configs: Vec<RouteConfig> = Vec::new();
        for config in self.routes.iter().filter_map(|f| f.accepted.as_ref()).flat_map(|a| &a.resources) {
            if !configs.iter().any(|c| c.name == config.name) {
                configs.push(config.clone());
            }
        }
        configs
    }

    /// `clusters` with each file EDS cluster's endpoints from its file (none until it names
    /// them).
    pub fn with_endpoints(&self, mut clusters: Vec<Cluster>) -> Vec<Cluster> {
        for cluster in &mut clusters {
            let Some(eds) = &cluster.eds else { continue };
            let Some(source) = eds.source.file() else { continue };
            let file = self.endpoints.iter().find(|f| f.source.path == source.path);
            let assignment = file
                .and_then(|f| f.accepted.as_ref())
                .and_then(|a| a.resources.iter().find(|l| l.cluster_name == eds.service_name));
            cluster.endpoints = assignment.map(|a| a.endpoints.clone()).unwrap_or_default();
        }
        clusters
    }

    /// The files, for the watcher.
    pub fn sources(&self) -> Vec<FileSource> {
        self.routes.iter().map(|f| f.source.clone()).chain(self.endpoints.iter().map(|f| f.source.clone())).collect()
    }
}

/// Brings `files` to the sources `wanted`: new ones read, changed ones read again (each
/// read counted in its subscribers' update stats), others dropped; true if any file's
/// resources changed.
fn refresh<T: Clone + PartialEq>(
    files: &mut Vec<FileState<T>>,
    wanted: &[Subscriber<'_>],
    store: &Store,
    load: impl Fn(&std::path::Path) -> Result<ResourceFile<T>, ResourceFileError>,
) -> bool {
    let before: Vec<(PathBuf, Option<ResourceFile<T>>)> =
        files.iter().map(|f| (f.source.path.clone(), f.accepted.clone())).collect();
    // Envoy shows a subscription's stats from its start, at 0.
    let stats: Vec<SubscriptionStats> = wanted.iter().map(|w| SubscriptionStats::new(store, &w.stats_prefix)).collect();
    files.retain(|f| wanted.iter().any(|w| w.source.path == f.source.path));
    for w in wanted {
        if !files.iter().any(|f| f.source.path == w.source.path) {
            files.push(FileState { source: w.source.clone(), last_text: None, accepted: None });
        }
    }
    for file in files.iter_mut() {
        let text = std::fs::read_to_string(&file.source.path).unwrap_or_else(|e| format!("\0unreadable: {e}"));
        if file.last_text.as_deref() == Some(text.as_str()) {
            continue;
        }
        file.last_text = Some(text);
        let read = load(&file.source.path);
        for (_, stats) in wanted.iter().zip(&stats).filter(|(w, _)| w.source.path == file.source.path) {
            stats.attempted();
            match &read {
                Ok(read) => stats.accepted(&read.version_info),
                Err(e) => stats.not_taken(e),
            }
        }
        match read {
            Ok(read) => file.accepted = Some(read),
            Err(e) => tracing::warn!("{} rejected:\n{e}", file.source.path.display()),
        }
    }
    let after: Vec<(PathBuf, Option<ResourceFile<T>>)> =
        files.iter().map(|f| (f.source.path.clone(), f.accepted.clone())).collect();
    before != after
}
