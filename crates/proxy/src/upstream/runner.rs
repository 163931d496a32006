//! The task that runs a cluster's active health checks (a session per endpoint) and
//! outlier detection's interval timer, on one worker for every worker's copy of the
//! cluster, until that copy goes (another copy then takes over).

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::rc::{Rc, Weak};
use std::sync::Arc;
use std::time::{Duration, Instant};

use wasmproxy_config::model;
use wasmproxy_stats::{Counter, Scope};

use crate::tls::upstream::UpstreamTlsConfig;
use crate::upstream::cluster::Cluster;
use crate::upstream::health::{ClusterHealth, RunnerGuard};
use crate::upstream::health_check::{CheckStats, Checker};

/// How often the task looks for endpoints that came or went.
const RECONCILE: Duration = Duration::from_millis(250);

/// What the task needs of its cluster.
pub struct Parts {
    /// The cluster's configuration.
    pub config: model::Cluster,
    /// Its TLS, which health checks use too.
    pub tls: Option<Arc<UpstreamTlsConfig>>,
    /// Its hosts' health.
    pub health: Arc<ClusterHealth>,
    /// `upstream_cx_total`: whether it has had traffic.
    pub traffic: Counter,
    /// `cluster.<name>.`.
    pub scope: Scope,
}

/// Runs the checks and the timer while `cluster` lives; `guard` marks the job taken.
pub async fn run(cluster: Weak<Cluster>, guard: RunnerGuard) {
    let Some(parts) = cluster.upgrade().map(|c| c.runner_parts()) else { return };
    let health = parts.health.clone();
    let traffic = parts.traffic.clone();
    let checker = parts.config.health_checks.first().map(|check| {
        Rc::new(Checker {
            check: check.clone(),
            cluster: parts.config.name.clone(),
            tls: parts.tls.clone(),
            health: health.clone(),
            stats: CheckStats::new(&parts.scope),
            traffic: Box::new(move || traffic.value() > 0),
        })
    });
    let interval = health.detector().map(|d| d.interval());
    let mut next_tick = interval.map(|i| Instant::now() + i);
    let mut sessions: HashMap<SocketAddr, tokio::task::JoinHandle<()>> = HashMap::new();
    let (checked, mut first_checks) = tokio::sync::mpsc::unbounded_channel();
    let mut waiting: Option<HashSet<SocketAddr>> = None;
    while let Some(targets) = cluster.upgrade().map(|c| c.check_targets()) {
        if let Some(checker) = &checker {
            for target in &targets {
                sessions.entry(target.addr).or_insert_with(|| {
                    let (checked, addr) = (checked.clone(), target.addr);
                    tokio::task::spawn_local(checker.clone().session(target.clone(), move || {
                        let _ = checked.send(addr);
                    }))
                });
            }
            sessions.retain(|addr, task| {
                let keep = targets.iter().any(|t| t.addr == *addr);
                if !keep {
                    task.abort();
                }
                keep
            });
            let pending = waiting.get_or_insert_with(|| targets.iter().map(|t| t.addr).collect());
            pending.retain(|a| sessions.contains_key(a));
            if pending.is_empty() {
                health.first_round_done();
            }
        }
        let wake = next_tick.map_or(RECONCILE, |t| t.saturating_duration_since(Instant::now()).min(RECONCILE));
        tokio::select! {
            Some(addr) = first_checks.recv() => {
                if let Some(pending) = &mut waiting {
                    pending.remove(&addr);
                }
            }
            _ = tokio::time::sleep(wake) => {}
        }
        if let (Some(t), Some(every)) = (next_tick, interval)
            && Instant::now() >= t
        {
            health.outlier_tick();
            next_tick = Some(Instant::now() + every);
        }
    }
    for task in sessions.values() {
        task.abort();
    }
    drop(guard);
}
