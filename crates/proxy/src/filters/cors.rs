//! `envoy.filters.http.cors`, as Envoy 1.40's: the route's policies (typed per filter, most
//! specific first, else the deprecated `cors` of the route and its virtual host) decide;
//! a preflight from an allowed origin is answered here, and the responses to allowed
//! origins get the CORS headers.

use std::rc::Rc;
use std::sync::Arc;

use wasmproxy_config::model::CorsPolicy;
use wasmproxy_host::Headers;
use wasmproxy_stats::{Counter, Scope, Store};

use crate::filters::{RouteConfig, StreamRoute};
use crate::http::reply::Verdict;
use crate::matcher::ValueMatchers;
use crate::stream_info::StreamRef;

/// The filter's name in Envoy: per-route policies under another name fall back to it.
const CANONICAL_NAME: &str = "envoy.filters.http.cors";

/// The filter on a worker: its name and stats.
pub struct CorsFilter {
    name: String,
    origin_valid: Counter,
    origin_invalid: Counter,
}

impl CorsFilter {
    /// The filter `name`, counting under `http_prefix` (`http.<stat_prefix>.`).
    pub fn new(name: String, store: &Arc<Store>, http_prefix: &str) -> CorsFilter {
        let scope = Scope::new(store, &format!("{http_prefix}cors."), "http.cors.", &[]);
        CorsFilter {
            name,
            origin_valid: scope.counter("origin_valid"),
            origin_invalid: scope.counter("origin_invalid"),
        }
    }
}

/// A CORS policy with its origin matchers compiled.
pub struct Policy {
    config: CorsPolicy,
    origins: ValueMatchers,
}

impl Policy {
    /// Compiles `config`; `Err` names a regex that does not compile.
    pub fn new(config: &CorsPolicy) -> Result<Policy, (String, regex::Error)> {
        Ok(Policy { config: config.clone(), origins: ValueMatchers::new(&config.allow_origin)? })
    }

    /// `filter_enabled` drawn for this call (unset: on).
    fn enabled(&self) -> bool {
        crate::random::per_million(self.config.filter_enabled.unwrap_or(1_000_000))
    }

    /// `shadow_enabled` drawn for this call (unset: off).
    fn shadow_enabled(&self) -> bool {
        crate::random::per_million(self.config.shadow_enabled.unwrap_or(0))
    }

    /// Whether one of its origin matchers takes `origin` (or `*`, which takes any).
    fn allows(&self, origin: &str) -> bool {
        self.origins.any("*") || self.origins.any(origin)
    }
}

/// One stream through the filter.
pub struct CorsStream {
    filter: Rc<CorsFilter>,
    info: StreamRef,
    /// The route's policies, most specific first (none: the filter does nothing).
    policies: Vec<Arc<Policy>>,
    /// The request's origin, if allowed: its responses get the CORS headers.
    latched_origin: Option<String>,
}

impl CorsStream {
    /// A stream on `route`: a redirect or a direct response has no policies, as in Envoy.
    pub fn new(filter: &Rc<CorsFilter>, info: &StreamRef, route: Option<StreamRoute<'_>>) -> CorsStream {
        let policies = match route {
            Some(route) if route.forwards => {
                let typed = |name: &str| -> Vec<Arc<Policy>> {
                    route
                        .filters
                        .configs(name)
                        .filter_map(|c| match c {
                            RouteConfig::Cors(p) => Some(p.clone()),
                            _ => None,
                        })
                        .collect()
                };
                let mut policies = typed(&filter.name);
                if policies.is_empty() && filter.name != CANONICAL_NAME {
                    policies = typed(CANONICAL_NAME);
                }
                if policies.is_empty() { route.filters.legacy_cors.clone() } else { policies }
            }
            _ => Vec::new(),
        };
        CorsStream { filter: filter.clone(), info: info.clone(), policies, latched_origin: None }
    }

    fn first_text(&self, pick: impl Fn(&CorsPolicy) -> &str) -> &str {
        self.policies.iter().map(|p| pick(&p.config)).find(|t| !t.is_empty()).unwrap_or("")
    }

    fn first_flag(&self, pick: impl Fn(&CorsPolicy) -> Option<bool>, default: bool) -> bool {
        self.policies.iter().find_map(|p| pick(&p.config)).unwrap_or(default)
    }

    fn enabled(&self) -> bool {
        self.policies.first().is_some_and(|p| p.enabled())
    }

    fn shadow_enabled(&self) -> bool {
        self.policies.first().is_some_and(|p| p.shadow_enabled())
    }

    /// Whether the first policy with origin matchers allows `origin`.
    fn origin_allowed(&self, origin: &str) -> bool {
        self.policies.iter().find(|p| !p.origins.is_empty()).is_some_and(|p| p.allows(origin))
    }

    /// The request headers: the origin checked and counted; a preflight answered (or, from
    /// an origin not allowed, passed on unless `forward_not_matching_preflights` is false).
    pub fn request_headers(&mut self, headers: &Headers) -> Verdict {
        // Drawn in Envoy's order: enabled first, then shadow only if not enabled.
        if self.policies.is_empty() || (!self.enabled() && !self.shadow_enabled()) {
            return Verdict::Continue;
        }
        let Some(origin) = headers.get(b"origin").filter(|o| !o.is_empty()) else { return Verdict::Continue };
        let origin = String::from_utf8_lossy(origin).into_owned();
        let allowed = self.origin_allowed(&origin);
        if allowed {
            self.filter.origin_valid.inc();
        } else {
            self.filter.origin_invalid.inc();
        }
        if self.shadow_enabled() && !self.enabled() {
            return Verdict::Continue;
        }
        let is_preflight = headers.get(b":method") == Some(b"OPTIONS")
            && headers.get(b"access-control-request-method").is_some_and(|m| !m.is_empty());
        if allowed {
            self.latched_origin = Some(origin.clone());
        }
        if !is_preflight || (!allowed && self.first_flag(|p| p.forward_not_matching_preflights, true)) {
            return Verdict::Continue;
        }
        Verdict::Respond(self.preflight_answer(headers, allowed.then_some(origin.as_str())))
    }

    /// The answer to a preflight, its headers in Envoy's order.
    fn preflight_answer(&mut self, request: &Headers, origin: Option<&str>) -> Headers {
        let mut answer = Headers::from_pairs([(":status", "200")]);
        if let Some(origin) = origin {
            answer.add(b"access-control-allow-origin", origin.as_bytes());
        }
        if self.first_flag(|p| p.allow_credentials, false) {
            answer.add(b"access-control-allow-credentials", b"true");
        }
        let echo = |configured: &str, asked: &[u8]| -> Vec<u8> {
            if configured == "*" {
                request.get(asked).unwrap_or_default().to_vec()
            } else {
                configured.as_bytes().to_vec()
            }
        };
        let methods = self.first_text(|p| &p.allow_methods);
        if !methods.is_empty() {
            answer.add(b"access-control-allow-methods", &echo(methods, b"access-control-request-method"));
        }
        let allow_headers = self.first_text(|p| &p.allow_headers);
        if !allow_headers.is_empty() {
            answer.add(b"access-control-allow-headers", &echo(allow_headers, b"access-control-request-headers"));
        }
        let max_age = self.first_text(|p| &p.max_age);
        if !max_age.is_empty() {
            answer.add(b"access-control-max-age", max_age.as_bytes());
        }
        if self.first_flag(|p| p.allow_private_network_access, false)
            && request.get(b"access-control-request-private-network") == Some(b"true")
        {
            answer.add(b"access-control-allow-private-network", b"true");
        }
        self.info.borrow_mut().response_code_details = "cors_response".into();
        answer
    }

    /// The response headers of an allowed origin's request get the CORS headers
    /// (replacing the upstream's).
    pub fn response_headers(&mut self, headers: &mut Headers) -> Verdict {
        let Some(origin) = &self.latched_origin else { return Verdict::Continue };
        headers.replace(b"access-control-allow-origin", origin.as_bytes());
        if self.first_flag(|p| p.allow_credentials, false) {
            headers.replace(b"access-control-allow-credentials", b"true");
        }
        let expose = self.first_text(|p| &p.expose_headers);
        if !expose.is_empty() {
            headers.replace(b"access-control-expose-headers", expose.as_bytes());
        }
        Verdict::Continue
    }
}
