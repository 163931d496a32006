//! Modules by URL: which the configuration needs, fetched on the xDS thread, and an
//! update refused until its module is cached (`nack_on_code_cache_miss`).

use tokio::sync::mpsc;
use wasmproxy_config::model::{Listener, RemoteCode, WasmCode};

use super::Control;
use crate::limits::MAX_PREFETCHED_MODULES;
use crate::xds::Fetch;

impl Control {
    /// The modules by URL a listener's plugins need (once ECDS configurations are in).
    pub(super) fn remote_codes(&self, listener: &Listener) -> Vec<RemoteCode> {
        let with_ecds = self.resolve_filters(listener);
        let plugins = with_ecds.wasm_plugins().into_iter().map(|p| &p.vm.code);
        plugins.filter_map(|c| if let WasmCode::Remote(r) = c { Some((**r).clone()) } else { None }).collect()
    }

    /// A module the listener waits for: `Some(false)` while it is fetched, `Some(true)` if
    /// it could not be (the listener is not served: its last version, if any, is).
    pub(super) fn missing_code(&self, listener: &Listener) -> Option<bool> {
        let codes = self.remote_codes(listener);
        let missing = codes.iter().filter(|c| self.modules.peek(&c.sha256).is_none());
        missing.map(|c| self.failed.contains_key(&c.sha256)).reduce(|a, b| a || b)
    }

    /// Asks for each module by URL that is needed and neither here, on disk, being fetched
    /// nor failed.
    pub(super) fn fetch_missing_modules(&mut self) {
        let codes: Vec<RemoteCode> = self.configured_listeners().iter().flat_map(|l| self.remote_codes(l)).collect();
        for code in codes {
            self.fetch_code(code);
        }
        // Those of the listeners configured, and of the last versions still serving.
        let listeners = self.configured_listeners().into_iter().chain(self.applied.iter().cloned());
        let used: Vec<String> = listeners.flat_map(|l| self.remote_codes(&l)).map(|c| c.sha256).collect();
        // A module fetched for an update that was refused stays until one takes it.
        self.prefetched.retain(|sha| !used.contains(sha));
        let kept: Vec<&str> = used.iter().chain(&self.prefetched).map(String::as_str).collect();
        self.modules.retain(&kept);
    }

    /// Asks for a module unless it is here, on disk, being fetched or failed.
    pub(super) fn fetch_code(&mut self, code: RemoteCode) {
        let sha = &code.sha256;
        if self.fetching.contains(sha) || self.failed.contains_key(sha) || self.modules.get(sha).is_some() {
            return;
        }
        self.modules.missed();
        let cluster = code.cluster.as_ref().map(|name| (name, self.cluster_config(name)));
        let (Some(fetcher), None | Some((_, Some(_)))) = (&self.fetcher, &cluster) else {
            let why = format!("no cluster {:?} to fetch it through", code.cluster.clone().unwrap_or_default());
            tracing::error!("wasm: {}: {why}", code.uri);
            self.failed.insert(sha.clone(), why);
            return;
        };
        let through = cluster.as_ref().map_or(String::new(), |(name, _)| format!(" through {name}"));
        tracing::info!("wasm: fetching {}{through}", code.uri);
        self.fetching.insert(sha.clone());
        let _ = fetcher.send(Fetch { code: code.clone(), cluster: cluster.and_then(|(_, c)| c) });
    }

    /// Why the configuration taken must be refused: a plugin with
    /// `nack_on_code_cache_miss` whose module is not here yet. Each such module is fetched
    /// (and kept, so that the update pushed again is taken).
    pub(super) fn uncached_code(&mut self) -> Option<String> {
        let codes: Vec<RemoteCode> = self.configured_listeners().iter().flat_map(|l| self.remote_codes(l)).collect();
        let missing: Vec<RemoteCode> =
            codes.into_iter().filter(|c| c.nack_on_cache_miss && self.modules.get(&c.sha256).is_none()).collect();
        let first = missing.first().map(|c| c.uri.clone())?;
        for code in missing {
            if self.prefetched.len() >= MAX_PREFETCHED_MODULES {
                self.prefetched.pop_first();
            }
            self.prefetched.insert(code.sha256.clone());
            self.fetch_code(code);
        }
        Some(format!("{first}: the module is not cached yet (nack_on_code_cache_miss); it is being fetched"))
    }

    /// The configuration of the cluster of that name: as served, else as configured.
    pub(super) fn cluster_config(&self, name: &str) -> Option<wasmproxy_config::model::Cluster> {
        let served = self.served.as_ref().and_then(|s| s.clusters.iter().find(|c| c.config.name == name));
        served.map(|c| c.config.clone()).or_else(|| self.all_clusters().into_iter().find(|c| c.name == name))
    }

    /// A module by URL came (or could not): the listeners that waited for it are served
    /// (or, if it could not, are not, and say why).
    pub fn fetched(&mut self, sha256: &str, result: Result<Vec<u8>, String>) {
        self.fetching.remove(sha256);
        match self.modules.fetched(sha256, result) {
            Ok(()) => tracing::info!("wasm: module {sha256} fetched"),
            Err(e) => {
                tracing::error!(
                    "wasm: module {sha256} could not be fetched: {e}; the listeners using it are not served"
                );
                self.failed.insert(sha256.to_string(), e);
            }
        }
        self.track_warming();
        match self.apply(self.all_listeners(), self.all_clusters()) {
            Ok(()) => self.publish(),
            Err(e) => tracing::warn!("wasm: {e}"),
        }
        self.check_ready();
    }

    /// Whether a listener's plugin has its module by URL.
    pub fn uses_remote_code(&self) -> bool {
        self.configured_listeners().iter().any(|l| !self.remote_codes(l).is_empty())
    }

    /// Where modules by URL are fetched (the xDS thread); the ones needed now are asked for.
    pub fn fetch_with(&mut self, fetcher: mpsc::UnboundedSender<Fetch>) {
        self.fetcher = Some(fetcher);
        self.track_warming();
    }
}
