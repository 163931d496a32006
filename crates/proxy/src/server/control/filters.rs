//! Filters configured by ECDS: each given its configuration (or default), and each
//! module by URL its bytes, before a listener is served.

use std::collections::BTreeSet;

use wasmproxy_config::model::{
    DiscoveredFilter, FilterKind, HttpFilter, Listener, NetworkFilter, WasmCode, WasmPlugin,
};

use super::Control;

impl Control {
    /// A listener as it is served: each discovered filter given its configuration from
    /// ECDS, else its default (one with neither stays discovered: its requests get 500, as
    /// Envoy's missing-configuration filter answers them), and each module by URL its bytes.
    pub(super) fn resolve(&self, listener: &Listener) -> Listener {
        let mut listener = self.resolve_filters(listener);
        let chains = listener.filter_chains.iter_mut().chain(listener.default_filter_chain.iter_mut());
        for plugin in chains.flat_map(|c| c.filters.iter_mut()).flat_map(plugins_of) {
            if let WasmCode::Remote(remote) = &plugin.vm.code
                && let Some(bytes) = self.modules.peek(&remote.sha256)
            {
                plugin.vm.code = WasmCode::Inline(bytes.to_vec());
            }
        }
        listener
    }

    /// A listener with each discovered filter given its configuration from ECDS, else its
    /// default.
    pub(super) fn resolve_filters(&self, listener: &Listener) -> Listener {
        let mut listener = listener.clone();
        let chains = listener.filter_chains.iter_mut().chain(listener.default_filter_chain.iter_mut());
        for f in chains.flat_map(|c| c.filters.iter_mut()) {
            match f {
                NetworkFilter::Discovered(d) => {
                    if let Some(plugin) = self.discovered_config(d, FilterKind::Network) {
                        *f = NetworkFilter::Wasm(plugin);
                    }
                }
                NetworkFilter::HttpConnectionManager(hcm) => {
                    for filter in &mut hcm.http_filters {
                        if let HttpFilter::Discovered(d) = filter
                            && let Some(plugin) = self.discovered_config(d, FilterKind::Http)
                        {
                            *filter = HttpFilter::Wasm(Box::new(plugin));
                        }
                    }
                }
                _ => {}
            }
        }
        listener
    }

    /// A discovered filter's configuration: from ECDS, else its default.
    pub(super) fn discovered_config(&self, filter: &DiscoveredFilter, kind: FilterKind) -> Option<WasmPlugin> {
        let found = self.ecds.iter().find(|e| e.name == filter.name && e.kind == kind);
        found.map(|e| e.plugin.clone()).or_else(|| filter.default.clone())
    }

    /// The kinds of the filters that take the ECDS resource of that name (those
    /// configured, and the last versions of warming listeners).
    pub(super) fn discovering_kinds(&self, name: &str) -> BTreeSet<FilterKind> {
        let listeners = self.configured_listeners().into_iter().chain(self.all_listeners());
        let filters: Vec<(String, FilterKind)> = listeners
            .flat_map(|l| discovered_filters(&l).into_iter().map(|(d, k)| (d.name.clone(), k)).collect::<Vec<_>>())
            .collect();
        filters.into_iter().filter(|(n, _)| n == name).map(|(_, k)| k).collect()
    }
}

/// The Wasm plugins of a network filter (its HTTP filters' and access loggers' too).
fn plugins_of(filter: &mut NetworkFilter) -> Vec<&mut WasmPlugin> {
    use wasmproxy_config::model::AccessLogSink;
    match filter {
        NetworkFilter::Wasm(plugin) => vec![plugin],
        NetworkFilter::HttpConnectionManager(hcm) => {
            let hcm = &mut **hcm;
            let filters = hcm.http_filters.iter_mut().filter_map(|f| match f {
                HttpFilter::Wasm(plugin) => Some(&mut **plugin),
                _ => None,
            });
            let logs = hcm.access_logs.iter_mut().filter_map(|l| match &mut l.sink {
                AccessLogSink::Wasm(plugin) => Some(&mut **plugin),
                _ => None,
            });
            filters.chain(logs).collect()
        }
        // Resolved before this: one left has no configuration.
        NetworkFilter::Discovered(_) => Vec::new(),
        NetworkFilter::TcpProxy(proxy) => proxy
            .access_logs
            .iter_mut()
            .filter_map(|l| match &mut l.sink {
                AccessLogSink::Wasm(plugin) => Some(&mut **plugin),
                _ => None,
            })
            .collect(),
    }
}

/// The filters a listener takes by ECDS, with the kind of each.
pub(super) fn discovered_filters(listener: &Listener) -> Vec<(&DiscoveredFilter, FilterKind)> {
    let mut found = Vec::new();
    for filter in listener.chains().flat_map(|c| &c.filters) {
        match filter {
            NetworkFilter::Discovered(d) => found.push((&**d, FilterKind::Network)),
            NetworkFilter::HttpConnectionManager(hcm) => {
                let http = hcm.http_filters.iter().filter_map(|f| match f {
                    HttpFilter::Discovered(d) => Some((&**d, FilterKind::Http)),
                    _ => None,
                });
                found.extend(http);
            }
            _ => {}
        }
    }
    found
}
