//! `envoy.filters.http.fault`, as Envoy 1.40's: a request the configuration picks (its
//! route's cluster, its headers, its downstream node) is delayed and/or aborted, each for a
//! share of requests rolled on its own, or as the request's `x-envoy-fault-*` headers ask
//! when the configuration says so. A route's `HTTPFault` replaces the filter's.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use rustc_hash::FxHashMap;
use wasmproxy_config::model::{AbortKind, Fault, Percent};
use wasmproxy_host::Headers;
use wasmproxy_stats::{Counter, Gauge, Scope, Store};

use crate::filters::{RouteConfig, StreamRoute};
use crate::http::reply::{LocalReply, Verdict, is_grpc_request};
use crate::matcher::HeaderMatchers;
use crate::stream_info::StreamRef;
use crate::stream_info::response_flags::ResponseFlag;

/// A fault configuration with its header matchers compiled.
pub struct Config {
    fault: Fault,
    headers: HeaderMatchers,
}

impl Config {
    /// Compiles `fault`; `Err` names a regex that does not compile.
    pub fn new(fault: &Fault) -> Result<Config, (String, regex::Error)> {
        Ok(Config { fault: fault.clone(), headers: HeaderMatchers::new(&fault.headers)? })
    }
}

/// The filter on a worker.
pub struct FaultFilter {
    name: String,
    config: Arc<Config>,
    scope: Scope,
    aborts_injected: Counter,
    delays_injected: Counter,
    faults_overflow: Counter,
    /// Faults in progress, in every worker.
    active_faults: Gauge,
    /// `fault.<downstream cluster>.aborts_injected` / `delays_injected`, made when first counted.
    by_downstream: RefCell<FxHashMap<String, Counter>>,
}

impl FaultFilter {
    /// The filter `name` configured by `config`, counting under `http_prefix`.
    pub fn new(name: String, config: Arc<Config>, store: &Arc<Store>, http_prefix: &str) -> FaultFilter {
        let scope = Scope::new(store, &format!("{http_prefix}fault."), "http.fault.", &[]);
        // Envoy's counter of response rate limits, which wasmproxy refuses: there at 0.
        scope.counter("response_rl_injected");
        FaultFilter {
            name,
            config,
            aborts_injected: scope.counter("aborts_injected"),
            delays_injected: scope.counter("delays_injected"),
            faults_overflow: scope.counter("faults_overflow"),
            active_faults: scope.gauge("active_faults"),
            scope,
            by_downstream: RefCell::default(),
        }
    }

    /// Counts an injected fault (`what`: `aborts_injected` or `delays_injected`), for the
    /// downstream cluster too if the request names one.
    fn count(&self, config: &Fault, what: &str, downstream: Option<&str>) {
        match what {
            "aborts_injected" => self.aborts_injected.inc(),
            _ => self.delays_injected.inc(),
        }
        let Some(cluster) = downstream.filter(|_| !config.disable_downstream_cluster_stats) else { return };
        let name = format!("{cluster}.{what}");
        self.by_downstream.borrow_mut().entry(name).or_insert_with_key(|name| self.scope.counter(name)).inc();
    }
}

/// One stream through the filter.
pub struct FaultStream {
    filter: Rc<FaultFilter>,
    info: StreamRef,
    config: Arc<Config>,
    /// Counted in `active_faults` until the stream ends.
    active: bool,
}

impl Drop for FaultStream {
    fn drop(&mut self) {
        if self.active {
            self.filter.active_faults.dec();
        }
    }
}

impl FaultStream {
    /// A stream on `route`: the route's most specific `HTTPFault`, else the filter's.
    pub fn new(filter: &Rc<FaultFilter>, info: &StreamRef, route: Option<StreamRoute<'_>>) -> FaultStream {
        let config = route
            .and_then(|r| {
                r.filters.configs(&filter.name).find_map(|c| match c {
                    RouteConfig::Fault(f) => Some(f.clone()),
                    _ => None,
                })
            })
            .unwrap_or_else(|| filter.config.clone());
        FaultStream { filter: filter.clone(), info: info.clone(), config, active: false }
    }

    /// The request headers: delayed, then maybe aborted, if the request is picked.
    pub async fn request_headers(&mut self, headers: &Headers) -> Verdict {
        let config = self.config.clone();
        let fault = &config.fault;
        if !self.picked(&config, headers) {
            return Verdict::Continue;
        }
        let downstream = text(headers, b"x-envoy-downstream-service-cluster");
        if let Some(delay) = self.delay(fault, headers) {
            if !self.start_fault(fault) {
                return Verdict::Continue;
            }
            self.filter.count(fault, "delays_injected", downstream.as_deref());
            self.info.borrow_mut().response_flags.set(ResponseFlag::DelayInjected);
            tokio::time::sleep(delay).await;
        }
        let Some((status, grpc_status)) = self.abort(fault, headers) else { return Verdict::Continue };
        if !self.start_fault(fault) {
            return Verdict::Continue;
        }
        self.filter.count(fault, "aborts_injected", downstream.as_deref());
        let mut i = self.info.borrow_mut();
        i.response_flags.set(ResponseFlag::FaultInjected);
        i.response_code_details = "fault_filter_abort".into();
        let grpc_status = grpc_status.filter(|_| is_grpc_request(headers));
        Verdict::LocalReply(LocalReply {
            status,
            body: b"fault filter abort".to_vec(),
            headers: Headers::new(),
            grpc_status,
        })
    }

    /// Whether the request is one faults apply to: its route's cluster, its node, its
    /// headers.
    fn picked(&self, config: &Config, headers: &Headers) -> bool {
        let fault = &config.fault;
        if !fault.upstream_cluster.is_empty() && self.info.borrow().cluster_name != fault.upstream_cluster {
            return false;
        }
        if !fault.downstream_nodes.is_empty() {
            let node = text(headers, b"x-envoy-downstream-service-node");
            if !node.is_some_and(|n| fault.downstream_nodes.contains(&n)) {
                return false;
            }
        }
        config.headers.all(headers)
    }

    /// Counts the stream's fault as active (once); `false` (and `faults_overflow`) if
    /// `max_active_faults` are in progress.
    fn start_fault(&mut self, fault: &Fault) -> bool {
        if self.active {
            return true;
        }
        if fault.max_active_faults.is_some_and(|max| self.filter.active_faults.value() >= max) {
            self.filter.faults_overflow.inc();
            return false;
        }
        self.filter.active_faults.inc();
        self.active = true;
        true
    }

    /// The delay to inject, if this request gets one.
    fn delay(&self, fault: &Fault, headers: &Headers) -> Option<Duration> {
        let delay = fault.delay.as_ref()?;
        let (duration, percentage) = match delay.fixed {
            Some(d) => (d, delay.percentage),
            None => {
                let ms: u64 = number(headers, b"x-envoy-fault-delay-request")?;
                (
                    Duration::from_millis(ms),
                    header_share(headers, b"x-envoy-fault-delay-request-percentage", delay.percentage),
                )
            }
        };
        (!duration.is_zero() && crate::random::per_million(percentage.per_million())).then_some(duration)
    }

    /// The HTTP status (and gRPC status) to abort with, if this request is aborted.
    fn abort(&self, fault: &Fault, headers: &Headers) -> Option<(u16, Option<u32>)> {
        let abort = fault.abort.as_ref()?;
        let (answer, percentage) = match abort.kind {
            AbortKind::Http(status) => ((status, None), abort.percentage),
            AbortKind::Grpc(code) => ((200, Some(code)), abort.percentage),
            AbortKind::Header => {
                let http = number::<u16>(headers, b"x-envoy-fault-abort-request").filter(|s| (200..600).contains(s));
                let answer = match http {
                    Some(status) => (status, None),
                    None => (200, Some(number::<u32>(headers, b"x-envoy-fault-abort-grpc-request")?)),
                };
                (answer, header_share(headers, b"x-envoy-fault-abort-request-percentage", abort.percentage))
            }
        };
        crate::random::per_million(percentage.per_million()).then_some(answer)
    }
}

/// The first value of a header, as text.
fn text(headers: &Headers, name: &[u8]) -> Option<String> {
    headers.get(name).map(|v| String::from_utf8_lossy(v).into_owned())
}

/// The first value of a header, as a number.
fn number<T: std::str::FromStr>(headers: &Headers, name: &[u8]) -> Option<T> {
    text(headers, name)?.trim().parse().ok()
}

/// The share of requests a header asks for: its numerator, at most the configuration's,
/// over the configuration's denominator.
fn header_share(headers: &Headers, name: &[u8], configured: Percent) -> Percent {
    match number::<u32>(headers, name) {
        Some(n) => Percent { numerator: n.min(configured.numerator), ..configured },
        None => configured,
    }
}
