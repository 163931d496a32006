//! `envoy.filters.http.health_check`, as Envoy 1.40's: a request its `headers` match is a
//! health check. Unless passed through, this proxy answers it: 503 if the admin made it fail
//! (`/healthcheck/fail`) or a cluster of `cluster_min_healthy_percentages` has too few
//! healthy endpoints, else 200. Its response says which cluster answered.

use std::rc::Rc;
use std::sync::Arc;

use wasmproxy_config::model::HealthCheckFilter;
use wasmproxy_host::Headers;
use wasmproxy_stats::{Counter, Scope};

use crate::filters::WorkerContext;
use crate::http::reply::{LocalReply, Verdict};
use crate::limits::BUFFER_LIMIT_BYTES;
use crate::matcher::HeaderMatchers;
use crate::stream_info::StreamRef;
use crate::stream_info::response_flags::ResponseFlag;
use crate::upstream::cluster::Clusters;

/// The filter's configuration with its header matchers compiled.
pub struct Config {
    config: HealthCheckFilter,
    headers: HeaderMatchers,
}

impl Config {
    /// Compiles `config`; `Err` names a regex that does not compile.
    pub fn new(config: &HealthCheckFilter) -> Result<Config, (String, regex::Error)> {
        Ok(Config { config: config.clone(), headers: HeaderMatchers::new(&config.headers)? })
    }
}

/// The filter on a worker.
pub struct HealthCheck {
    config: Arc<Config>,
    clusters: Rc<Clusters>,
    local_cluster: String,
    stats: Stats,
}

/// `http.<stat_prefix>.health_check.*`.
struct Stats {
    request_total: Counter,
    ok: Counter,
    failed: Counter,
    failed_cluster_not_found: Counter,
    failed_cluster_empty: Counter,
    failed_cluster_unhealthy: Counter,
}

impl HealthCheck {
    /// The filter configured by `config` on the worker `cx` describes.
    pub fn new(config: Arc<Config>, cx: &WorkerContext<'_>) -> HealthCheck {
        let scope = Scope::new(cx.store, &format!("{}health_check.", cx.http_prefix), "http.health_check.", &[]);
        // Envoy's counters of cached answers and degraded ones, which wasmproxy does not
        // make (`cache_time` is refused): there at 0.
        scope.counter("cached_response");
        scope.counter("degraded");
        let stats = Stats {
            request_total: scope.counter("request_total"),
            ok: scope.counter("ok"),
            failed: scope.counter("failed"),
            failed_cluster_not_found: scope.counter("failed_cluster_not_found"),
            failed_cluster_empty: scope.counter("failed_cluster_empty"),
            failed_cluster_unhealthy: scope.counter("failed_cluster_unhealthy"),
        };
        HealthCheck { config, clusters: cx.clusters.clone(), local_cluster: cx.local_cluster.to_string(), stats }
    }

    /// This proxy's answer to a health check: its status and details.
    fn answer(&self) -> (u16, &'static str) {
        if crate::server_health::failing() {
            return (503, "health_check_failed");
        }
        if self.config.config.clusters.is_empty() {
            return (200, "health_check_ok");
        }
        for (name, percent) in &self.config.config.clusters {
            let Some(cluster) = self.clusters.get(name) else { return (503, "health_check_failed_cluster_not_found") };
            let (total, healthy) = cluster.membership();
            if total == 0 {
                if *percent == 0.0 {
                    continue;
                }
                return (503, "health_check_failed_cluster_empty");
            }
            if 100 * healthy < total * percent.trunc() as u64 {
                return (503, "health_check_failed_cluster_unhealthy");
            }
        }
        (200, "health_check_ok_cluster_healthy")
    }
}

/// One stream through the filter.
pub struct HealthCheckStream {
    filter: Rc<HealthCheck>,
    info: StreamRef,
    /// The request is a health check.
    check: bool,
}

impl HealthCheckStream {
    /// A stream through `filter`.
    pub fn new(filter: &Rc<HealthCheck>, info: &StreamRef) -> HealthCheckStream {
        HealthCheckStream { filter: filter.clone(), info: info.clone(), check: false }
    }

    /// The request headers: a health check this proxy answers is answered at the request's
    /// end (its body read and dropped).
    pub fn request_headers(&mut self, headers: &Headers, eos: bool) -> Verdict {
        let config = &self.filter.config;
        if !config.headers.all(headers) {
            return Verdict::Continue;
        }
        self.check = true;
        if config.config.pass_through && !crate::server_health::failing() {
            return Verdict::Continue;
        }
        if !eos {
            return Verdict::WaitForBody(BUFFER_LIMIT_BYTES);
        }
        self.respond()
    }

    /// The body of a health check this proxy answers: dropped, and the check answered.
    pub fn request_body(&mut self) -> Verdict {
        self.respond()
    }

    fn respond(&self) -> Verdict {
        let (status, details) = self.filter.answer();
        let stats = &self.filter.stats;
        stats.request_total.inc();
        match details {
            "health_check_failed" => stats.failed.inc(),
            "health_check_failed_cluster_not_found" => stats.failed_cluster_not_found.inc(),
            "health_check_failed_cluster_empty" => stats.failed_cluster_empty.inc(),
            "health_check_failed_cluster_unhealthy" => stats.failed_cluster_unhealthy.inc(),
            _ => stats.ok.inc(),
        }
        let mut i = self.info.borrow_mut();
        i.response_code_details = details.into();
        if status != 200 {
            i.response_flags.set(ResponseFlag::FailedLocalHealthCheck);
        }
        Verdict::LocalReply(LocalReply { status, body: Vec::new(), headers: Headers::new(), grpc_status: None })
    }

    /// The response headers: any says when this proxy fails health checks, a health
    /// check's which cluster answered it (each set anew, last, as Envoy sets them).
    pub fn response_headers(&self, headers: &mut Headers) -> Verdict {
        if crate::server_health::failing() {
            headers.set(b"x-envoy-immediate-health-check-fail", b"true");
        }
        if self.check {
            headers.set(b"x-envoy-upstream-healthchecked-cluster", self.filter.local_cluster.as_bytes());
        }
        Verdict::Continue
    }
}
