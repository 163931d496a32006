//! Outlier detection as Envoy's: each answer an endpoint gives counts toward its
//! consecutive 5xx / gateway failure / local origin failure runs and its success rate;
//! an endpoint past a threshold is ejected (within `max_ejection_percent`) for a time
//! that grows with each ejection, and taken back on the interval's tick.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use wasmproxy_config::model::OutlierDetection;
use wasmproxy_stats::{Counter, Gauge, Scope};

/// What became of a request to an endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The endpoint answered with this status.
    Code(u16),
    /// No connection could be made, or it was reset before the answer.
    ConnectFailed,
    /// No answer in time.
    Timeout,
}

/// The kinds of ejection, for their stats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Consecutive5xx,
    ConsecutiveGatewayFailure,
    ConsecutiveLocalOriginFailure,
    SuccessRate,
    LocalOriginSuccessRate,
    FailurePercentage,
    LocalOriginFailurePercentage,
}

impl Kind {
    const ALL: [Kind; 7] = [
        Kind::Consecutive5xx,
        Kind::ConsecutiveGatewayFailure,
        Kind::ConsecutiveLocalOriginFailure,
        Kind::SuccessRate,
        Kind::LocalOriginSuccessRate,
        Kind::FailurePercentage,
        Kind::LocalOriginFailurePercentage,
    ];

    fn name(self) -> &'static str {
        match self {
            Kind::Consecutive5xx => "consecutive_5xx",
            Kind::ConsecutiveGatewayFailure => "consecutive_gateway_failure",
            Kind::ConsecutiveLocalOriginFailure => "consecutive_local_origin_failure",
            Kind::SuccessRate => "success_rate",
            Kind::LocalOriginSuccessRate => "local_origin_success_rate",
            Kind::FailurePercentage => "failure_percentage",
            Kind::LocalOriginFailurePercentage => "local_origin_failure_percentage",
        }
    }

    /// Its `enforcing_*` percentage.
    fn enforcing(self, c: &OutlierDetection) -> u32 {
        match self {
            Kind::Consecutive5xx => c.enforcing_consecutive_5xx,
            Kind::ConsecutiveGatewayFailure => c.enforcing_consecutive_gateway_failure,
            Kind::ConsecutiveLocalOriginFailure => c.enforcing_consecutive_local_origin_failure,
            Kind::SuccessRate => c.enforcing_success_rate,
            Kind::LocalOriginSuccessRate => c.enforcing_local_origin_success_rate,
            Kind::FailurePercentage => c.enforcing_failure_percentage,
            Kind::LocalOriginFailurePercentage => c.enforcing_failure_percentage_local_origin,
        }
    }
}

/// One endpoint's counts, shared by every worker.
#[derive(Default)]
pub struct HostOutlier {
    consecutive_5xx: AtomicU32,
    consecutive_gateway: AtomicU32,
    consecutive_local: AtomicU32,
    /// This interval's (successes, total) of answers from the endpoint, then of the
    /// proxy's own attempts to reach it (with split errors).
    external: [AtomicU64; 2],
    local: [AtomicU64; 2],
    ejection: Mutex<Ejection>,
}

/// An endpoint's ejection history.
#[derive(Default)]
struct Ejection {
    /// When it was ejected (while it is), with the time it stays out.
    ejected: Option<(Instant, Duration)>,
    /// Grows with each ejection, shrinks each interval it stays in.
    backoff: u32,
    last_unejected: Option<Instant>,
    /// The success rates shown by `/clusters` (-1 when not computed).
    success_rate: Option<f64>,
    local_success_rate: Option<f64>,
}

impl HostOutlier {
    /// The success rates `/clusters` shows (external, local origin).
    pub fn success_rates(&self) -> (Option<f64>, Option<f64>) {
        let e = self.ejection.lock().unwrap_or_else(|e| e.into_inner());
        (e.success_rate, e.local_success_rate)
    }

    fn take_interval(bucket: &[AtomicU64; 2]) -> (u64, u64) {
        (bucket[0].swap(0, Ordering::Relaxed), bucket[1].swap(0, Ordering::Relaxed))
    }
}

/// `cluster.<name>.outlier_detection.*`.
struct OutlierStats {
    active: Gauge,
    total: Counter,
    enforced_total: Counter,
    overflow: Counter,
    consecutive_5xx: Counter,
    success_rate: Counter,
    detected: [Counter; 7],
    enforced: [Counter; 7],
}

/// A cluster's outlier detector.
pub struct Detector {
    config: OutlierDetection,
    stats: OutlierStats,
    /// The success rate average and ejection threshold of the last interval (external,
    /// then local origin), for `/clusters`.
    averages: Mutex<[Option<(f64, f64)>; 2]>,
}

/// An endpoint the detector looks at: its counts, and whether it is ejected.
pub trait Monitored {
    /// Its counts.
    fn outlier(&self) -> &HostOutlier;
    /// Marks it ejected or not (its `FAILED_OUTLIER_CHECK` flag).
    fn set_ejected(&self, ejected: bool);
}

impl Detector {
    /// A detector whose stats are in `scope` (`cluster.<name>.`).
    pub fn new(config: &OutlierDetection, scope: &Scope) -> Detector {
        let counter = |name: String| scope.counter(&format!("outlier_detection.{name}"));
        let stats = OutlierStats {
            active: scope.gauge("outlier_detection.ejections_active"),
            total: counter("ejections_total".into()),
            enforced_total: counter("ejections_enforced_total".into()),
            overflow: counter("ejections_overflow".into()),
            consecutive_5xx: counter("ejections_consecutive_5xx".into()),
            success_rate: counter("ejections_success_rate".into()),
            detected: Kind::ALL.map(|k| counter(format!("ejections_detected_{}", k.name()))),
            enforced: Kind::ALL.map(|k| counter(format!("ejections_enforced_{}", k.name()))),
        };
        // Envoy's counter for `detect_degraded_hosts`, which wasmproxy refuses: always 0.
        let _ = counter("ejections_detected_degradation".into());
        Detector { config: config.clone(), stats, averages: Mutex::new([None, None]) }
    }

    /// The last interval's success rate averages and thresholds (external, local origin).
    pub fn averages(&self) -> [Option<(f64, f64)>; 2] {
        *self.averages.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Counts `outcome` for `host`, ejecting it if a run reaches its threshold; `hosts`
    /// is how many the cluster has.
    pub fn report(&self, host: &dyn Monitored, outcome: Outcome, hosts: usize) {
        let c = &self.config;
        let o = host.outlier();
        let code = match (outcome, c.split_external_local_origin_errors) {
            (Outcome::Code(code), _) => code,
            (Outcome::ConnectFailed, false) => 503,
            (Outcome::Timeout, false) => 504,
            (Outcome::ConnectFailed | Outcome::Timeout, true) => {
                o.local[1].fetch_add(1, Ordering::Relaxed);
                if o.consecutive_local.fetch_add(1, Ordering::Relaxed) + 1 == c.consecutive_local_origin_failure {
                    self.detected(host, Kind::ConsecutiveLocalOriginFailure, hosts);
                }
                return;
            }
        };
        if c.split_external_local_origin_errors {
            // The connection worked: a local origin success.
            o.local[0].fetch_add(1, Ordering::Relaxed);
            o.local[1].fetch_add(1, Ordering::Relaxed);
            o.consecutive_local.store(0, Ordering::Relaxed);
        }
        o.external[1].fetch_add(1, Ordering::Relaxed);
        if (500..600).contains(&code) {
            if (502..505).contains(&code) {
                if o.consecutive_gateway.fetch_add(1, Ordering::Relaxed) + 1 == c.consecutive_gateway_failure {
                    self.detected(host, Kind::ConsecutiveGatewayFailure, hosts);
                }
            } else {
                o.consecutive_gateway.store(0, Ordering::Relaxed);
            }
            if o.consecutive_5xx.fetch_add(1, Ordering::Relaxed) + 1 == c.consecutive_5xx {
                self.detected(host, Kind::Consecutive5xx, hosts);
            }
        } else {
            o.external[0].fetch_add(1, Ordering::Relaxed);
            o.consecutive_5xx.store(0, Ordering::Relaxed);
            o.consecutive_gateway.store(0, Ordering::Relaxed);
        }
    }

    /// A consecutive run reached its threshold: counted, the host ejected if it may be,
    /// and the run started again.
    fn detected(&self, host: &dyn Monitored, kind: Kind, hosts: usize) {
        let o = host.outlier();
        if o.ejection.lock().unwrap_or_else(|e| e.into_inner()).ejected.is_some() {
            return;
        }
        self.stats.detected[kind as usize].inc();
        if kind == Kind::Consecutive5xx {
            self.stats.consecutive_5xx.inc();
        }
        self.eject(host, kind, hosts);
        let run = match kind {
            Kind::Consecutive5xx => &o.consecutive_5xx,
            Kind::ConsecutiveGatewayFailure => &o.consecutive_gateway,
            _ => &o.consecutive_local,
        };
        run.store(0, Ordering::Relaxed);
    }

    /// Ejects `host` if `max_ejection_percent` allows one more and `kind` is enforced.
    fn eject(&self, host: &dyn Monitored, kind: Kind, hosts: usize) {
        let c = &self.config;
        let active = self.stats.active.value();
        let share = 100.0 * (active + 1) as f64 / hosts.max(1) as f64;
        let allowed = share <= f64::from(c.max_ejection_percent.min(100)) || (c.always_eject_one_host && active == 0);
        if !allowed {
            self.stats.overflow.inc();
            return;
        }
        if matches!(kind, Kind::Consecutive5xx | Kind::SuccessRate) {
            self.stats.total.inc();
        }
        if crate::random::index(100) as u32 >= kind.enforcing(c) {
            return;
        }
        let mut e = host.outlier().ejection.lock().unwrap_or_else(|e| e.into_inner());
        if e.ejected.is_some() {
            return;
        }
        let base = c.base_ejection_time;
        if base.saturating_mul(e.backoff) < c.max_ejection_time + base {
            e.backoff += 1;
        }
        let jitter_ms = c.max_ejection_time_jitter.as_millis() as usize;
        let jitter = Duration::from_millis(crate::random::index(jitter_ms + 1) as u64);
        let time = base.saturating_mul(e.backoff).min(c.max_ejection_time) + jitter;
        e.ejected = Some((Instant::now(), time));
        drop(e);
        self.stats.active.inc();
        self.stats.enforced_total.inc();
        self.stats.enforced[kind as usize].inc();
        host.set_ejected(true);
    }

    /// Takes `host` back (a successful active health check, with
    /// `successful_active_health_check_uneject_host`).
    pub fn health_check_passed(&self, host: &dyn Monitored) {
        if self.config.uneject_on_health_check_success {
            self.uneject(host, Instant::now());
        }
    }

    fn uneject(&self, host: &dyn Monitored, now: Instant) {
        let o = host.outlier();
        let mut e = o.ejection.lock().unwrap_or_else(|e| e.into_inner());
        if e.ejected.take().is_none() {
            return;
        }
        e.last_unejected = Some(now);
        drop(e);
        o.consecutive_5xx.store(0, Ordering::Relaxed);
        o.consecutive_gateway.store(0, Ordering::Relaxed);
        o.consecutive_local.store(0, Ordering::Relaxed);
        self.stats.active.dec();
        host.set_ejected(false);
    }

    /// How often [`Detector::tick`] runs.
    pub fn interval(&self) -> Duration {
        self.config.interval
    }

    /// The interval's tick: hosts whose time is up come back, the interval's success
    /// rates are judged, and the back-off of hosts that stayed in shrinks.
    pub fn tick(&self, hosts: &[&dyn Monitored]) {
        let now = Instant::now();
        let mut rates: [Vec<(usize, u64, u64)>; 2] = [Vec::new(), Vec::new()];
        for (i, host) in hosts.iter().enumerate() {
            let due = {
                let mut e = host.outlier().ejection.lock().unwrap_or_else(|e| e.into_inner());
                (e.success_rate, e.local_success_rate) = (None, None);
                e.ejected.is_some_and(|(at, time)| now.duration_since(at) >= time)
            };
            if due {
                self.uneject(*host, now);
            }
            let o = host.outlier();
            let (external, local) = (HostOutlier::take_interval(&o.external), HostOutlier::take_interval(&o.local));
            rates[0].push((i, external.0, external.1));
            rates[1].push((i, local.0, local.1));
        }
        let [external, local] = rates;
        let averages = [
            self.judge(hosts, &external, Kind::SuccessRate, Kind::FailurePercentage),
            self.judge(hosts, &local, Kind::LocalOriginSuccessRate, Kind::LocalOriginFailurePercentage),
        ];
        *self.averages.lock().unwrap_or_else(|e| e.into_inner()) = averages;
        for host in hosts {
            let mut e = host.outlier().ejection.lock().unwrap_or_else(|e| e.into_inner());
            let stayed =
                e.ejected.is_none() && e.last_unejected.is_some_and(|t| now.duration_since(t) >= self.config.interval);
            if stayed && e.backoff > 0 {
                e.backoff -= 1;
            }
        }
    }

    /// Success rate and failure percentage ejections over one interval's counts
    /// (`(host, successes, total)`); the success rate average and threshold, if computed.
    fn judge(
        &self,
        hosts: &[&dyn Monitored],
        counts: &[(usize, u64, u64)],
        rate_kind: Kind,
        percentage_kind: Kind,
    ) -> Option<(f64, f64)> {
        let c = &self.config;
        let n = hosts.len() as u64;
        if n < u64::from(c.success_rate_minimum_hosts) && n < u64::from(c.failure_percentage_minimum_hosts) {
            return None;
        }
        let (sr_volume, fp_volume) =
            (u64::from(c.success_rate_request_volume), u64::from(c.failure_percentage_request_volume));
        let (mut by_rate, mut by_percentage) = (Vec::new(), Vec::new());
        for &(i, success, total) in counts {
            let ejected = hosts[i].outlier().ejection.lock().unwrap_or_else(|e| e.into_inner()).ejected.is_some();
            if ejected || total == 0 {
                continue;
            }
            let rate = success as f64 * 100.0 / total as f64;
            if total >= sr_volume.min(fp_volume) {
                let mut e = hosts[i].outlier().ejection.lock().unwrap_or_else(|e| e.into_inner());
                if rate_kind == Kind::SuccessRate {
                    e.success_rate = Some(rate);
                } else {
                    e.local_success_rate = Some(rate);
                }
            }
            if total >= sr_volume {
                by_rate.push((i, rate));
            }
            if total >= fp_volume {
                by_percentage.push((i, rate));
            }
        }
        let mut average = None;
        if !by_rate.is_empty() && by_rate.len() as u64 >= u64::from(c.success_rate_minimum_hosts) {
            let mean = by_rate.iter().map(|(_, r)| r).sum::<f64>() / by_rate.len() as f64;
            let variance = by_rate.iter().map(|(_, r)| (r - mean).powi(2)).sum::<f64>() / by_rate.len() as f64;
            let threshold = mean - f64::from(c.success_rate_stdev_factor) / 1000.0 * variance.sqrt();
            average = Some((mean, threshold));
            for &(i, rate) in &by_rate {
                if rate < threshold {
                    if rate_kind == Kind::SuccessRate {
                        self.stats.success_rate.inc();
                    }
                    self.stats.detected[rate_kind as usize].inc();
                    self.eject(hosts[i], rate_kind, hosts.len());
                }
            }
        }
        if !by_percentage.is_empty() && by_percentage.len() as u64 >= u64::from(c.failure_percentage_minimum_hosts) {
            for &(i, rate) in &by_percentage {
                if 100.0 - rate >= f64::from(c.failure_percentage_threshold) {
                    self.stats.detected[percentage_kind as usize].inc();
                    self.eject(hosts[i], percentage_kind, hosts.len());
                }
            }
        }
        average
    }
}
