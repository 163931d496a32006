//! Each endpoint's health, shared by every worker's copy of a cluster: what the control
//! plane reports, what active health checks found and whether outlier detection ejected
//! it, as Envoy's host health flags; and the requests in flight to it.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use wasmproxy_config::model::{self, EdsHealth};

use wasmproxy_stats::Scope;

use crate::upstream::outlier::{Detector, HostOutlier, Monitored, Outcome};

/// Envoy's host health flags (`Host::HealthFlag`), in the order `/clusters` names them.
pub mod flag {
    /// Active health checks found the host unhealthy (or have not checked it yet).
    pub const FAILED_ACTIVE_HC: u32 = 0x1;
    /// Outlier detection ejected the host.
    pub const FAILED_OUTLIER_CHECK: u32 = 0x2;
    /// The control plane reports it `UNHEALTHY`, `DRAINING` or `TIMEOUT`.
    pub const FAILED_EDS_HEALTH: u32 = 0x4;
    /// Active health checks found it degraded (`x-envoy-degraded`).
    pub const DEGRADED_ACTIVE_HC: u32 = 0x8;
    /// The control plane reports it `DEGRADED`.
    pub const DEGRADED_EDS_HEALTH: u32 = 0x10;
    /// Not checked yet (with `ignore_new_hosts_until_first_hc`, which wasmproxy refuses:
    /// never set here, cleared as Envoy clears it).
    pub const PENDING_ACTIVE_HC: u32 = 0x40;
    /// Its health check answered `x-envoy-immediate-health-check-fail`.
    pub const EXCLUDED_VIA_IMMEDIATE_HC_FAIL: u32 = 0x80;
    /// Its last health check timed out.
    pub const ACTIVE_HC_TIMEOUT: u32 = 0x100;

    /// Each flag with its `/clusters` name.
    pub const NAMES: [(u32, &str); 8] = [
        (FAILED_ACTIVE_HC, "/failed_active_hc"),
        (FAILED_OUTLIER_CHECK, "/failed_outlier_check"),
        (FAILED_EDS_HEALTH, "/failed_eds_health"),
        (DEGRADED_ACTIVE_HC, "/degraded_active_hc"),
        (DEGRADED_EDS_HEALTH, "/degraded_eds_health"),
        (PENDING_ACTIVE_HC, "/pending_active_hc"),
        (EXCLUDED_VIA_IMMEDIATE_HC_FAIL, "/excluded_via_immediate_hc_fail"),
        (ACTIVE_HC_TIMEOUT, "/active_hc_timeout"),
    ];
}

/// A host's health as the load balancer sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    /// Used.
    Healthy,
    /// Used when too few hosts are healthy.
    Degraded,
    /// Used only in panic.
    Unhealthy,
}

/// One endpoint's health and load, shared by every worker.
pub struct HostHealth {
    flags: AtomicU32,
    /// Requests in flight to it from every worker (`LEAST_REQUEST`).
    pub active_requests: AtomicU32,
    /// Outlier detection's counts.
    pub outlier: HostOutlier,
}

impl HostHealth {
    fn new(flags: u32) -> HostHealth {
        HostHealth { flags: AtomicU32::new(flags), active_requests: AtomicU32::new(0), outlier: HostOutlier::default() }
    }

    /// Its flags now.
    pub fn flags(&self) -> u32 {
        self.flags.load(Ordering::Relaxed)
    }

    /// Whether it has `flag`.
    pub fn has(&self, flag: u32) -> bool {
        self.flags() & flag != 0
    }

    /// Its health, from its flags.
    pub fn health(&self) -> Health {
        let flags = self.flags();
        if flags & (flag::FAILED_ACTIVE_HC | flag::FAILED_OUTLIER_CHECK | flag::FAILED_EDS_HEALTH) != 0 {
            Health::Unhealthy
        } else if flags & (flag::DEGRADED_ACTIVE_HC | flag::DEGRADED_EDS_HEALTH) != 0 {
            Health::Degraded
        } else {
            Health::Healthy
        }
    }

    /// Its flags as `/clusters` shows them: `healthy`, or each flag's name.
    pub fn flags_text(&self) -> String {
        let flags = self.flags();
        if flags == 0 {
            return "healthy".into();
        }
        flag::NAMES.iter().filter(|(f, _)| flags & f != 0).map(|(_, name)| *name).collect()
    }
}

/// One cluster's hosts' health, shared by every worker's copy of the cluster.
pub struct ClusterHealth {
    hosts: Mutex<HashMap<SocketAddr, Arc<HostHealth>>>,
    /// How many hosts there are (read on every answer by outlier detection, lock-free).
    count: AtomicUsize,
    /// Changes whenever a host's health does: workers rebuild their load balancers.
    generation: AtomicU64,
    /// Whether active health checks run (new hosts wait for their first check).
    checked: bool,
    /// Whether a worker's copy runs the health checks and outlier detection's timer.
    runner: AtomicBool,
    /// Whether the first round of health checks is done (the cluster is warm).
    first_round: tokio::sync::watch::Sender<bool>,
    /// Outlier detection, once the first copy of the cluster made its stats.
    detector: std::sync::OnceLock<Option<Detector>>,
    outlier: Option<model::OutlierDetection>,
}

impl ClusterHealth {
    /// No host yet.
    pub fn new(config: &model::Cluster) -> Arc<ClusterHealth> {
        let checked = !config.health_checks.is_empty();
        Arc::new(ClusterHealth {
            hosts: Mutex::default(),
            count: AtomicUsize::new(0),
            generation: AtomicU64::new(0),
            checked,
            runner: AtomicBool::new(false),
            first_round: tokio::sync::watch::Sender::new(!checked),
            detector: std::sync::OnceLock::new(),
            outlier: config.outlier_detection.clone(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<SocketAddr, Arc<HostHealth>>> {
        self.hosts.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The host at `addr` (a new one failed until checked, if health checks run), with the
    /// control plane's `reported` health.
    pub fn host(&self, addr: SocketAddr, reported: EdsHealth) -> Arc<HostHealth> {
        // As Envoy's (without `ignore_new_hosts_until_first_hc`): unhealthy until its first
        // check, and counted meanwhile.
        let initial = if self.checked { flag::FAILED_ACTIVE_HC } else { 0 };
        let host = {
            let mut hosts = self.lock();
            let host = hosts.entry(addr).or_insert_with(|| Arc::new(HostHealth::new(initial))).clone();
            self.count.store(hosts.len(), Ordering::Relaxed);
            host
        };
        self.set(&host, flag::FAILED_EDS_HEALTH, reported == EdsHealth::Unhealthy);
        self.set(&host, flag::DEGRADED_EDS_HEALTH, reported == EdsHealth::Degraded);
        host
    }

    /// Makes the outlier detector (if the cluster has one) with its stats in `scope`.
    pub fn start_detector(&self, scope: &Scope) {
        self.detector.get_or_init(|| self.outlier.as_ref().map(|o| Detector::new(o, scope)));
    }

    /// The outlier detector, if the cluster has one.
    pub fn detector(&self) -> Option<&Detector> {
        self.detector.get().and_then(Option::as_ref)
    }

    /// Counts what became of a request to `host` toward outlier detection.
    pub fn report(&self, host: &HostHealth, outcome: Outcome) {
        if let Some(d) = self.detector() {
            d.report(&Watched(self, host), outcome, self.count.load(Ordering::Relaxed));
        }
    }

    /// A health check passed: an ejected host comes back, if so configured.
    pub fn health_check_passed(&self, host: &HostHealth) {
        if let Some(d) = self.detector()
            && host.has(flag::FAILED_OUTLIER_CHECK)
        {
            d.health_check_passed(&Watched(self, host));
        }
    }

    /// Outlier detection's interval tick over every host.
    pub fn outlier_tick(&self) {
        let Some(d) = self.detector() else { return };
        let hosts: Vec<Arc<HostHealth>> = self.lock().values().cloned().collect();
        let watched: Vec<Watched<'_>> = hosts.iter().map(|h| Watched(self, h)).collect();
        let monitored: Vec<&dyn Monitored> = watched.iter().map(|w| w as &dyn Monitored).collect();
        d.tick(&monitored);
    }

    /// Forgets the hosts not in `current`.
    pub fn retain(&self, current: &[SocketAddr]) {
        let mut hosts = self.lock();
        hosts.retain(|addr, _| current.contains(addr));
        self.count.store(hosts.len(), Ordering::Relaxed);
    }

    /// Sets or clears `flag` on `host`; whether that changed it.
    pub fn set(&self, host: &HostHealth, flag: u32, on: bool) -> bool {
        let old = if on {
            host.flags.fetch_or(flag, Ordering::Relaxed)
        } else {
            host.flags.fetch_and(!flag, Ordering::Relaxed)
        };
        let changed = (old & flag != 0) != on;
        if changed {
            self.generation.fetch_add(1, Ordering::Release);
        }
        changed
    }

    /// Changes whenever a host's health does.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Takes the job of running the checks and timers, if no copy runs them; the
    /// [`RunnerGuard`] gives it back.
    pub fn claim_runner(self: &Arc<Self>) -> Option<RunnerGuard> {
        (!self.runner.swap(true, Ordering::AcqRel)).then(|| RunnerGuard(self.clone()))
    }

    /// Whether a copy runs the checks and timers.
    pub fn has_runner(&self) -> bool {
        self.runner.load(Ordering::Relaxed)
    }

    /// The first round of health checks is done.
    pub fn first_round_done(&self) {
        self.first_round.send_replace(true);
    }

    /// Waits until the first round of health checks is done.
    pub async fn warmed(&self) {
        let mut done = self.first_round.subscribe();
        let _ = done.wait_for(|d| *d).await;
    }
}

/// The job of running a cluster's checks and timers, given back when dropped.
pub struct RunnerGuard(Arc<ClusterHealth>);

impl Drop for RunnerGuard {
    fn drop(&mut self) {
        self.0.runner.store(false, Ordering::Release);
    }
}

/// A host as outlier detection sees it: its counts, and its flag in its cluster.
struct Watched<'a>(&'a ClusterHealth, &'a HostHealth);

impl Monitored for Watched<'_> {
    fn outlier(&self) -> &HostOutlier {
        &self.1.outlier
    }

    fn set_ejected(&self, ejected: bool) {
        self.0.set(self.1, flag::FAILED_OUTLIER_CHECK, ejected);
    }
}

/// A request in flight to a host, counted until dropped (`LEAST_REQUEST`, `rq_active`).
pub struct ActiveRequest(Arc<HostHealth>);

impl ActiveRequest {
    /// Counts one more request to `host`.
    pub fn start(host: &Arc<HostHealth>) -> ActiveRequest {
        host.active_requests.fetch_add(1, Ordering::Relaxed);
        ActiveRequest(host.clone())
    }
}

impl Drop for ActiveRequest {
    fn drop(&mut self) {
        self.0.active_requests.fetch_sub(1, Ordering::Relaxed);
    }
}
