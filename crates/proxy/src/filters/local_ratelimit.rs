//! `envoy.filters.http.local_ratelimit`, as Envoy 1.40's: a token bucket shared by the
//! workers, refilled continuously (fractions of a token carry over), and a bucket for each
//! configured descriptor the route's `rate_limits` make (one per value seen, for a
//! descriptor with an empty value); the route's own configuration replacing the filter's;
//! a refused request gets the configured status, `local_rate_limited` and the `RL` flag.

use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use wasmproxy_config::model::{LocalRateLimit, TokenBucket};
use wasmproxy_host::Headers;
use wasmproxy_stats::{Counter, Scope, Store};

use crate::filters::header_options::apply;
use crate::filters::ratelimit::{Descriptor, DescriptorInputs, RoutePolicies};
use crate::filters::{RouteConfig, StreamRoute, WorkerContext};
use crate::http::reply::{LocalReply, Verdict};
use crate::stream_info::StreamRef;
use crate::stream_info::response_flags::ResponseFlag;

/// gRPC's RESOURCE_EXHAUSTED, for `rate_limited_as_resource_exhausted`.
const RESOURCE_EXHAUSTED: u32 = 8;

/// One configuration's buckets (shared by every worker) and its stats.
pub struct Limiter {
    config: LocalRateLimit,
    bucket: Option<Bucket>,
    /// The configured descriptors: those without an empty value first (tried first).
    descriptors: Vec<DescriptorBuckets>,
    stats: OnceLock<LimitStats>,
}

/// A configured descriptor's bucket, or (with an empty value) its buckets by the values
/// seen, the most recently used last.
struct DescriptorBuckets {
    entries: Vec<(String, String)>,
    bucket: Option<Arc<Bucket>>,
    token_bucket: TokenBucket,
    seen: Mutex<Vec<(Vec<String>, Arc<Bucket>)>>,
    max_seen: usize,
}

impl DescriptorBuckets {
    /// The bucket for a request's descriptor `d`, if this one matches it: the same keys in
    /// the same order, each value equal (or configured empty).
    fn bucket_for(&self, d: &Descriptor) -> Option<Arc<Bucket>> {
        if d.len() != self.entries.len() {
            return None;
        }
        let matches = self.entries.iter().zip(d).all(|((ck, cv), (k, v))| ck == k && (cv.is_empty() || cv == v));
        if !matches {
            return None;
        }
        if let Some(bucket) = &self.bucket {
            return Some(bucket.clone());
        }
        let values: Vec<String> = d.iter().map(|(_, v)| v.clone()).collect();
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        let bucket = match seen.iter().position(|(v, _)| *v == values) {
            Some(at) => seen.remove(at).1,
            None => Arc::new(Bucket::new(&self.token_bucket)),
        };
        if seen.len() >= self.max_seen {
            seen.remove(0);
        }
        seen.push((values, bucket.clone()));
        Some(bucket)
    }
}

/// `<stat_prefix>.http_local_rate_limit.*` (`shadow_mode` stays 0: it counts descriptors
/// in shadow mode, which wasmproxy refuses).
struct LimitStats {
    enabled: Counter,
    ok: Counter,
    rate_limited: Counter,
    enforced: Counter,
    _shadow_mode: Counter,
}

/// Envoy's atomic token bucket: no timer; the time the bucket was last empty, from which
/// the tokens now are computed (up to the maximum).
struct Bucket {
    max: f64,
    /// Tokens per second.
    rate: f64,
    /// When the bucket held no token, in seconds since [`epoch`], as `f64` bits.
    empty_at: AtomicU64,
}

/// What a request took from the bucket, for the `x-ratelimit-*` headers.
#[derive(Clone, Copy)]
struct Taken {
    allowed: bool,
    limit: u32,
    remaining: u64,
    reset_seconds: u64,
}

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

impl Bucket {
    /// A full bucket.
    fn new(t: &TokenBucket) -> Bucket {
        let rate = (f64::from(t.tokens_per_fill) / t.fill_interval.as_secs_f64()).max(1.0 / (365.0 * 86_400.0));
        let max = f64::from(t.max_tokens);
        let now = epoch().elapsed().as_secs_f64();
        Bucket { max, rate, empty_at: AtomicU64::new((now - max / rate).to_bits()) }
    }

    /// The whole seconds until a bucket holding `available` tokens has one (rounded up).
    fn seconds_to_token(&self, available: f64) -> u64 {
        ((1.0 - available) / self.rate).ceil() as u64
    }

    /// Takes a token if there is a whole one.
    fn take(&self) -> Taken {
        let now = epoch().elapsed().as_secs_f64();
        let mut current = self.empty_at.load(Ordering::Acquire);
        loop {
            let available = ((now - f64::from_bits(current)) * self.rate).min(self.max);
            if available < 1.0 {
                let reset_seconds = self.seconds_to_token(available);
                return Taken { allowed: false, limit: self.max as u32, remaining: 0, reset_seconds };
            }
            let left = available - 1.0;
            let next = (now - left / self.rate).to_bits();
            match self.empty_at.compare_exchange_weak(current, next, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => {
                    let reset_seconds = if left >= 1.0 { 0 } else { self.seconds_to_token(left) };
                    return Taken { allowed: true, limit: self.max as u32, remaining: left as u64, reset_seconds };
                }
                Err(seen) => current = seen,
            }
        }
    }
}

impl Limiter {
    /// A configuration's limiter, its buckets full.
    pub fn new(config: &LocalRateLimit) -> Limiter {
        let mut descriptors: Vec<DescriptorBuckets> = config
            .descriptors
            .iter()
            .map(|d| {
                let wildcard = d.entries.iter().any(|(_, v)| v.is_empty());
                DescriptorBuckets {
                    entries: d.entries.clone(),
                    bucket: (!wildcard).then(|| Arc::new(Bucket::new(&d.token_bucket))),
                    token_bucket: d.token_bucket,
                    seen: Mutex::default(),
                    max_seen: config.max_dynamic_descriptors as usize,
                }
            })
            .collect();
        // Exact descriptors are looked up before those with an empty value, as in Envoy.
        descriptors.sort_by_key(|d| d.bucket.is_none());
        Limiter {
            config: config.clone(),
            bucket: config.token_bucket.as_ref().map(Bucket::new),
            descriptors,
            stats: OnceLock::new(),
        }
    }

    /// The buckets of the configured descriptors the request's `descriptors` match, the
    /// slowest to fill first.
    fn matched(&self, descriptors: &[Descriptor]) -> Vec<Arc<Bucket>> {
        let mut buckets: Vec<Arc<Bucket>> =
            descriptors.iter().filter_map(|d| self.descriptors.iter().find_map(|c| c.bucket_for(d))).collect();
        buckets.sort_by(|a, b| a.rate.total_cmp(&b.rate));
        buckets
    }

    /// Takes tokens for a request: from each matched bucket in turn, then the filter's own
    /// (if none matched, or always); what the bucket that refused, or the first matched
    /// (else the filter's own) says.
    fn take(&self, matched: &[Arc<Bucket>]) -> Option<Taken> {
        let mut report = None;
        for bucket in matched {
            let taken = bucket.take();
            if !taken.allowed {
                return Some(taken);
            }
            report.get_or_insert(taken);
        }
        if (matched.is_empty() || self.config.always_consume_default)
            && let Some(bucket) = &self.bucket
        {
            let taken = bucket.take();
            if !taken.allowed || report.is_none() {
                return Some(taken);
            }
        }
        report
    }

    fn stats(&self, store: &Arc<Store>) -> &LimitStats {
        self.stats.get_or_init(|| {
            let prefix = format!("{}.http_local_rate_limit.", self.config.stat_prefix);
            let scope = Scope::new(store, &prefix, "http_local_rate_limit.", &[]);
            LimitStats {
                enabled: scope.counter("enabled"),
                ok: scope.counter("ok"),
                rate_limited: scope.counter("rate_limited"),
                enforced: scope.counter("enforced"),
                _shadow_mode: scope.counter("shadow_mode"),
            }
        })
    }
}

/// The filter on a worker.
pub struct RateLimitFilter {
    name: String,
    limiter: Arc<Limiter>,
    store: Arc<Store>,
    local_cluster: String,
}

impl RateLimitFilter {
    /// The filter `name` with the workers' shared `limiter`, on the worker `cx` describes.
    pub fn new(name: String, limiter: Arc<Limiter>, cx: &WorkerContext<'_>) -> RateLimitFilter {
        limiter.stats(cx.store);
        RateLimitFilter { name, limiter, store: cx.store.clone(), local_cluster: cx.local_cluster.to_string() }
    }
}

/// One stream through the filter.
pub struct RateLimitStream {
    filter: Rc<RateLimitFilter>,
    info: StreamRef,
    /// The route's limiter, else the filter's.
    limiter: Arc<Limiter>,
    /// The route's `rate_limits`, if the limiter has descriptors.
    policies: Option<RoutePolicies>,
    /// What the request took, if the `x-ratelimit-*` headers are to be added.
    taken: Option<Taken>,
}

impl RateLimitStream {
    /// A stream on `route`, whose most specific configuration (if any) replaces the filter's.
    pub fn new(filter: &Rc<RateLimitFilter>, info: &StreamRef, route: Option<StreamRoute<'_>>) -> RateLimitStream {
        let own = route.and_then(|r| {
            r.filters.configs(&filter.name).find_map(|c| match c {
                RouteConfig::LocalRateLimit(l) => Some(l.clone()),
                _ => None,
            })
        });
        let limiter = own.unwrap_or_else(|| filter.limiter.clone());
        // As Envoy: a route that does not forward (a direct response, a redirect) makes no
        // descriptors.
        let policies =
            route.filter(|r| r.forwards && !limiter.descriptors.is_empty()).map(|r| r.filters.rate_limits.clone());
        RateLimitStream { filter: filter.clone(), info: info.clone(), limiter, policies, taken: None }
    }

    /// The request headers: a token taken, or the request refused (or, not enforced, marked).
    pub fn request_headers(&mut self, headers: &mut Headers) -> Verdict {
        let limiter = self.limiter.clone();
        let config = &limiter.config;
        if !crate::random::per_million(config.filter_enabled) {
            return Verdict::Continue;
        }
        let stats = limiter.stats(&self.filter.store);
        stats.enabled.inc();
        let matched = match &self.policies {
            Some(policies) => limiter.matched(&self.descriptors(policies, headers)),
            None => Vec::new(),
        };
        let Some(taken) = limiter.take(&matched) else {
            stats.ok.inc();
            return Verdict::Continue;
        };
        if config.x_ratelimit_headers {
            self.taken = Some(taken);
        }
        if taken.allowed {
            stats.ok.inc();
            return Verdict::Continue;
        }
        stats.rate_limited.inc();
        if !crate::random::per_million(config.filter_enforced) {
            apply(headers, &[], &config.request_headers_when_not_enforced, &self.info.borrow(), None);
            return Verdict::Continue;
        }
        stats.enforced.inc();
        let mut extra = Headers::new();
        {
            let mut info = self.info.borrow_mut();
            info.response_flags.set(ResponseFlag::RateLimited);
            info.response_code_details = "local_rate_limited".into();
        }
        apply(&mut extra, &[], &config.response_headers_to_add, &self.info.borrow(), Some((headers, false)));
        Verdict::LocalReply(LocalReply {
            status: config.status,
            body: b"local_rate_limited".to_vec(),
            headers: extra,
            grpc_status: config.grpc_resource_exhausted.then_some(RESOURCE_EXHAUSTED),
        })
    }

    /// The descriptors the route's `rate_limits` make for this request.
    fn descriptors(&self, policies: &RoutePolicies, headers: &Headers) -> Vec<Descriptor> {
        let info = self.info.borrow();
        let inputs = DescriptorInputs {
            headers,
            local_cluster: &self.filter.local_cluster,
            route_cluster: &info.cluster_name,
            remote_address: info.downstream_remote.ip().to_string(),
        };
        let config = &self.limiter.config;
        policies.descriptors(config.stage, config.vh_rate_limits, &inputs)
    }

    /// The response headers get the `x-ratelimit-*` headers, when configured.
    pub fn response_headers(&mut self, headers: &mut Headers) -> Verdict {
        if let Some(t) = self.taken {
            headers.add(b"x-ratelimit-limit", t.limit.to_string().as_bytes());
            headers.add(b"x-ratelimit-remaining", t.remaining.to_string().as_bytes());
            headers.add(b"x-ratelimit-reset", t.reset_seconds.to_string().as_bytes());
        }
        Verdict::Continue
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_descriptor_with_an_empty_value_keeps_a_bucket_per_value_up_to_its_maximum() {
        let hour =
            TokenBucket { max_tokens: 1, tokens_per_fill: 1, fill_interval: std::time::Duration::from_secs(3600) };
        let d = DescriptorBuckets {
            entries: vec![("user".into(), String::new())],
            bucket: None,
            token_bucket: hour,
            seen: Mutex::default(),
            max_seen: 2,
        };
        let of = |v: &str| vec![("user".to_string(), v.to_string())];
        assert!(d.bucket_for(&vec![("other".into(), "a".into())]).is_none());
        assert!(d.bucket_for(&of("a")).is_some_and(|b| b.take().allowed));
        assert!(d.bucket_for(&of("a")).is_some_and(|b| !b.take().allowed));
        assert!(d.bucket_for(&of("b")).is_some_and(|b| b.take().allowed));
        // A third value evicts the least recently used (a): it comes back full.
        assert!(d.bucket_for(&of("c")).is_some_and(|b| b.take().allowed));
        assert!(d.bucket_for(&of("a")).is_some_and(|b| b.take().allowed));
    }

    #[test]
    fn a_bucket_starts_full_and_refills_continuously() {
        let bucket = Bucket::new(&TokenBucket {
            max_tokens: 2,
            tokens_per_fill: 2,
            fill_interval: std::time::Duration::from_secs(3600),
        });
        assert!(bucket.take().allowed);
        let second = bucket.take();
        assert!(second.allowed);
        assert_eq!(second.remaining, 0);
        let refused = bucket.take();
        assert!(!refused.allowed);
        // 2 tokens an hour: the next whole token in about half an hour.
        assert_eq!(refused.reset_seconds, 1800);
        // A bucket emptied 30 minutes ago has one token again.
        let half_hour_ago = epoch().elapsed().as_secs_f64() - 1800.5;
        bucket.empty_at.store(half_hour_ago.to_bits(), Ordering::Release);
        assert!(bucket.take().allowed);
        assert!(!bucket.take().allowed);
    }
}
