//! `envoy.filters.http.local_ratelimit`, as Envoy 1.40's: a token bucket shared by the
//! workers, refilled continuously (fractions of a token carry over), the route's own
//! configuration replacing the filter's; a refused request gets the configured status,
//! `local_rate_limited` and the `RL` flag.

use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use wasmproxy_config::model::{LocalRateLimit, TokenBucket};
use wasmproxy_host::Headers;
use wasmproxy_stats::{Counter, Scope, Store};

use crate::filters::header_options::apply;
use crate::filters::{RouteConfig, StreamRoute};
use crate::http::reply::{LocalReply, Verdict};
use crate::stream_info::StreamRef;
use crate::stream_info::response_flags::ResponseFlag;

/// gRPC's RESOURCE_EXHAUSTED, for `rate_limited_as_resource_exhausted`.
const RESOURCE_EXHAUSTED: u32 = 8;

/// One configuration's bucket (shared by every worker) and its stats.
pub struct Limiter {
    config: LocalRateLimit,
    bucket: Option<Bucket>,
    stats: OnceLock<LimitStats>,
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
    /// A configuration's limiter, its bucket full.
    pub fn new(config: &LocalRateLimit) -> Limiter {
        Limiter {
            config: config.clone(),
            bucket: config.token_bucket.as_ref().map(Bucket::new),
            stats: OnceLock::new(),
        }
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
}

impl RateLimitFilter {
    /// The filter `name` with the workers' shared `limiter`.
    pub fn new(name: String, limiter: Arc<Limiter>, store: &Arc<Store>) -> RateLimitFilter {
        limiter.stats(store);
        RateLimitFilter { name, limiter, store: store.clone() }
    }
}

/// One stream through the filter.
pub struct RateLimitStream {
    filter: Rc<RateLimitFilter>,
    info: StreamRef,
    /// The route's limiter, else the filter's.
    limiter: Arc<Limiter>,
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
        RateLimitStream { filter: filter.clone(), info: info.clone(), limiter, taken: None }
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
        let Some(bucket) = &limiter.bucket else {
            stats.ok.inc();
            return Verdict::Continue;
        };
        let taken = bucket.take();
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
