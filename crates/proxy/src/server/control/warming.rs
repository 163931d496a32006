//! Warming: what a listener waits for (routes, filter configurations, modules) and a
//! cluster (endpoints), how long, and the start-up wait for the first configuration.

use std::collections::HashMap;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use wasmproxy_config::model::{Cluster, Listener, NetworkFilter};

use super::Control;
use super::filters::discovered_filters;
use crate::limits::DESCRIPTORS_IDLE;

impl Control {
    /// Whether a listener waits for xDS (its routes, or a discovered filter's configuration
    /// without `apply_default_config_without_warming`), and how long it may wait (the
    /// shortest `initial_fetch_timeout`; zero: for ever); `None` if it waits for nothing.
    pub(super) fn missing_routes(&self, listener: &Listener) -> Option<Duration> {
        let mut waits: Vec<Duration> = Vec::new();
        for f in listener.chains().flat_map(|c| &c.filters) {
            let NetworkFilter::HttpConnectionManager(hcm) = f else { continue };
            if let Some(rds) = &hcm.rds
                && let Some(limit) = rds.source.initial_fetch_timeout()
                && !self.ads_routes.iter().any(|r| r.name == rds.route_config_name)
            {
                waits.push(limit);
            }
        }
        for (d, kind) in discovered_filters(listener) {
            if !d.apply_default_without_warming
                && !self.ecds.iter().any(|e| e.name == d.name && e.kind == kind)
                && let Some(limit) = d.source.initial_fetch_timeout()
            {
                waits.push(limit);
            }
        }
        // The shortest limit; zero (no limit) only if every one is zero.
        let limited = waits.iter().filter(|w| !w.is_zero()).min().copied();
        if waits.is_empty() { None } else { Some(limited.unwrap_or(Duration::ZERO)) }
    }

    /// Whether a cluster waits for its endpoints from xDS (EDS), and how long it may (zero:
    /// for ever); `None` if it waits for nothing.
    pub(super) fn missing_endpoints(&self, cluster: &Cluster) -> Option<Duration> {
        let eds = cluster.eds.as_ref()?;
        let limit = eds.source.initial_fetch_timeout()?;
        (!self.ads_endpoints.iter().any(|a| a.cluster_name == eds.service_name)).then_some(limit)
    }

    /// Whether a cluster is served: it waits for no endpoints or has waited long enough
    /// (then it serves without, as Envoy's does).
    pub(super) fn cluster_warmed(&self, cluster: &Cluster) -> bool {
        match self.missing_endpoints(cluster) {
            None => true,
            Some(limit) => {
                !limit.is_zero()
                    && self.warming_clusters.get(&cluster.name).is_some_and(|since| since.elapsed() >= limit)
            }
        }
    }

    /// Notes which listeners wait for routes or modules, and which clusters for endpoints,
    /// now (and since when).
    pub(super) fn track_warming(&mut self) {
        self.fetch_missing_modules();
        let listeners = self.configured_listeners();
        let waiting = listeners.iter().filter(|l| self.missing_routes(l).is_some() || self.missing_code(l).is_some());
        let waiting: Vec<String> = waiting.map(|l| l.name.clone()).collect();
        waiting_since(&mut self.warming, waiting);
        let clusters = self.configured_clusters();
        let waiting = clusters.iter().filter(|c| self.missing_endpoints(c).is_some()).map(|c| c.name.clone());
        let waiting: Vec<String> = waiting.collect();
        waiting_since(&mut self.warming_clusters, waiting);
        self.count_warming();
    }

    /// Envoy's gauges of the listeners and clusters that wait.
    pub(super) fn count_warming(&self) {
        let listeners = self.configured_listeners().iter().filter(|l| !self.warmed(l)).count();
        let clusters = self.configured_clusters().iter().filter(|c| !self.cluster_warmed(c)).count();
        self.stats.listeners_warming.set(listeners as u64);
        self.stats.clusters_warming.set(clusters as u64);
    }

    /// Whether a listener is served: its modules are all here, and it waits for no routes
    /// or has waited long enough.
    pub(super) fn warmed(&self, listener: &Listener) -> bool {
        if self.missing_code(listener).is_some() {
            return false;
        }
        match self.missing_routes(listener) {
            None => true,
            Some(limit) => {
                !limit.is_zero() && self.warming.get(&listener.name).is_some_and(|since| since.elapsed() >= limit)
            }
        }
    }

    /// When something waited for next stops waiting: a warming listener or cluster, or the
    /// first answers from ADS.
    pub fn next_deadline(&self) -> Option<Instant> {
        let listeners = self.configured_listeners();
        let warming = listeners.iter().filter_map(|l| Some((self.missing_routes(l)?, self.warming.get(&l.name)?)));
        let clusters = self.configured_clusters();
        let warming_clusters =
            clusters.iter().filter_map(|c| Some((self.missing_endpoints(c)?, self.warming_clusters.get(&c.name)?)));
        let ends = warming
            .chain(warming_clusters)
            .filter(|(limit, since)| !limit.is_zero() && since.elapsed() < *limit)
            .map(|(limit, since)| *since + limit);
        let first = self.initial_fetch_deadline().filter(|_| !self.ready.is_set());
        ends.chain(first).min()
    }

    /// When the wait for the first LDS and CDS answers from ADS ends (`None`: no limit).
    pub(super) fn initial_fetch_deadline(&self) -> Option<Instant> {
        let dynamic = &self.bootstrap.dynamic_resources;
        let limits = [(&dynamic.cds, self.first_clusters), (&dynamic.lds, self.first_listeners)];
        let waits =
            limits.iter().filter(|(_, came)| !came).filter_map(|(source, _)| source.as_ref()?.initial_fetch_timeout());
        let longest = waits.max()?;
        (!longest.is_zero()).then(|| self.started + longest)
    }

    /// Something waited for may have stopped waiting: the configuration is applied again if
    /// a warming listener's wait is over.
    pub fn tick(&mut self) {
        if let Some(at) = self.decoded_at
            && at.elapsed() >= DESCRIPTORS_IDLE
        {
            self.decoded_at = None;
            if wasmproxy_config::release_descriptors() {
                crate::memory::give_back();
            }
        }
        let expired = self.configured_listeners().iter().any(|l| {
            let resolved = self.resolve(l);
            let served = self.served.as_ref().is_some_and(|s| s.listeners.iter().any(|o| o.config == resolved));
            !served && self.missing_routes(l).is_some() && self.warmed(l)
        });
        let expired_clusters = self.configured_clusters().into_iter().any(|c| {
            let waited = self.missing_endpoints(&c).is_some() && self.cluster_warmed(&c);
            let resolved = self.with_ads_endpoints(vec![c]);
            let served = self.served.as_ref().is_some_and(|s| s.clusters.iter().any(|o| o.config == resolved[0]));
            waited && !served
        });
        if expired_clusters {
            tracing::warn!(
                "eds: a cluster's endpoints did not come within initial_fetch_timeout; it serves without them"
            );
        }
        if expired {
            tracing::warn!(
                "rds: a listener's routes did not come within initial_fetch_timeout; it serves without them"
            );
        }
        if expired || expired_clusters {
            self.count_warming();
            match self.apply(self.all_listeners(), self.all_clusters()) {
                Ok(()) => self.publish(),
                Err(e) => tracing::warn!("rds: {e}"),
            }
        }
        if let Some(deadline) = self.initial_fetch_deadline()
            && Instant::now() >= deadline
        {
            self.first_clusters = true;
            self.first_listeners = true;
        }
        self.check_ready();
    }

    /// Tells the waiting start-up that the first configuration is complete: the first
    /// answers from ADS came, no listener waits for its routes and no cluster for its
    /// endpoints (or the waits ended).
    pub(super) fn check_ready(&self) {
        // A listener whose module could not be fetched does not hold start-up.
        let warming = self.configured_listeners().iter().any(|l| !self.warmed(l) && self.missing_code(l) != Some(true));
        let warming_clusters = self.configured_clusters().iter().any(|c| !self.cluster_warmed(c));
        if self.first_clusters && self.first_listeners && !warming && !warming_clusters {
            self.ready.set();
        }
    }

    /// What start-up waits on.
    pub fn ready(&self) -> Arc<Ready> {
        self.ready.clone()
    }
}

/// Whether the first configuration is complete, for start-up to wait on.
/// Keeps, for each name in `waiting`, since when it waits (now, for a new one), and
/// forgets the others.
fn waiting_since(since: &mut HashMap<String, Instant>, waiting: Vec<String>) {
    since.retain(|name, _| waiting.contains(name));
    for name in waiting {
        since.entry(name).or_insert_with(Instant::now);
    }
}

#[derive(Default)]
pub struct Ready {
    done: Mutex<bool>,
    changed: Condvar,
}

impl Ready {
    pub(super) fn set(&self) {
        *self.done.lock().unwrap_or_else(|e| e.into_inner()) = true;
        self.changed.notify_all();
    }

    pub(super) fn is_set(&self) -> bool {
        *self.done.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits until it is complete.
    pub fn wait(&self) {
        let mut done = self.done.lock().unwrap_or_else(|e| e.into_inner());
        while !*done {
            done = self.changed.wait(done).unwrap_or_else(|e| e.into_inner());
        }
    }
}
