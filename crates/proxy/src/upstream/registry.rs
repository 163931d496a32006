//! Every cluster's current endpoints with their health and figures, shared by every
//! worker, for admin `/clusters` (Envoy keeps these per host, outside `/stats`).

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use wasmproxy_config::model::Endpoint;
use wasmproxy_stats::{Counter, Gauge};

use crate::upstream::health::{ClusterHealth, HostHealth};

/// One endpoint's figures for admin `/clusters`, shared by every worker (Envoy keeps these
/// per host, outside `/stats`).
pub struct HostStats {
    /// Connections made.
    pub cx_total: Counter,
    /// Connections open.
    pub cx_active: Gauge,
    /// Connections that could not be made.
    pub cx_connect_fail: Counter,
    /// Requests sent.
    pub rq_total: Counter,
    /// Requests answered below 500.
    pub rq_success: Counter,
    /// Requests that failed or were answered 5xx.
    pub rq_error: Counter,
    /// Requests past their route's timeout.
    pub rq_timeout: Counter,
}

impl HostStats {
    fn new() -> HostStats {
        HostStats {
            cx_total: Counter::detached("cx_total"),
            cx_active: Gauge::detached("cx_active"),
            cx_connect_fail: Counter::detached("cx_connect_fail"),
            rq_total: Counter::detached("rq_total"),
            rq_success: Counter::detached("rq_success"),
            rq_error: Counter::detached("rq_error"),
            rq_timeout: Counter::detached("rq_timeout"),
        }
    }

    /// The figures in `/clusters` order.
    pub fn figures(&self) -> [(&'static str, u64); 7] {
        [
            ("cx_active", self.cx_active.value()),
            ("cx_connect_fail", self.cx_connect_fail.value()),
            ("cx_total", self.cx_total.value()),
            ("rq_error", self.rq_error.value()),
            ("rq_success", self.rq_success.value()),
            ("rq_timeout", self.rq_timeout.value()),
            ("rq_total", self.rq_total.value()),
        ]
    }
}

/// An endpoint as `/clusters` shows it: its address, health and settings.
#[derive(Clone)]
pub struct MemberInfo {
    /// Its address.
    pub addr: SocketAddr,
    /// Its health flags and requests in flight.
    pub health: Arc<HostHealth>,
    /// Its configuration (weight, priority, locality, hostname).
    pub spec: Endpoint,
}

/// An endpoint and its figures.
pub type Member = (MemberInfo, Arc<HostStats>);

/// Every cluster's current endpoints and their figures, for admin `/clusters`.
#[derive(Default)]
pub struct Upstreams {
    clusters: Mutex<BTreeMap<String, ClusterMembers>>,
}

/// One cluster's endpoints, in order, and the figures of every endpoint it ever had.
#[derive(Default)]
struct ClusterMembers {
    current: Vec<MemberInfo>,
    health: Option<Arc<ClusterHealth>>,
    hosts: HashMap<SocketAddr, Arc<HostStats>>,
}

impl Upstreams {
    /// An empty registry.
    pub fn new() -> Arc<Upstreams> {
        Arc::new(Upstreams::default())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, ClusterMembers>> {
        self.clusters.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The figures of `cluster`'s endpoint `addr`.
    pub fn host(&self, cluster: &str, addr: SocketAddr) -> Arc<HostStats> {
        self.lock()
            .entry(cluster.to_string())
            .or_default()
            .hosts
            .entry(addr)
            .or_insert_with(|| Arc::new(HostStats::new()))
            .clone()
    }

    /// `cluster`'s endpoints are now `members`.
    pub fn set_members(&self, cluster: &str, health: &Arc<ClusterHealth>, members: Vec<MemberInfo>) {
        let mut clusters = self.lock();
        let entry = clusters.entry(cluster.to_string()).or_default();
        entry.current = members;
        entry.health = Some(health.clone());
    }

    /// `cluster` is gone (its figures with it).
    pub fn remove(&self, cluster: &str) {
        self.lock().remove(cluster);
    }

    /// Every cluster (by name) with its hosts' health and its current endpoints and
    /// their figures.
    pub fn members(&self) -> Vec<(String, Option<Arc<ClusterHealth>>, Vec<Member>)> {
        self.lock()
            .iter()
            .map(|(name, m)| {
                let hosts = m
                    .current
                    .iter()
                    .map(|a| (a.clone(), m.hosts.get(&a.addr).cloned().unwrap_or_else(|| Arc::new(HostStats::new()))))
                    .collect();
                (name.clone(), m.health.clone(), hosts)
            })
            .collect()
    }
}
