//! `envoy.filters.http.csrf`, as Envoy 1.40's: a request that changes state (`POST`, `PUT`,
//! `DELETE`, `PATCH`) must come from its own origin (`origin`, else `referer`, against the
//! host) or one of the additional origins; else 403 `Invalid origin`. The route's policy,
//! if any, replaces the filter's.

use std::rc::Rc;
use std::sync::Arc;

use wasmproxy_config::model::CsrfPolicy;
use wasmproxy_host::Headers;
use wasmproxy_stats::{Counter, Scope, Store};

use crate::filters::{RouteConfig, StreamRoute};
use crate::http::reply::{LocalReply, Verdict};
use crate::matcher::ValueMatchers;
use crate::stream_info::StreamRef;

/// A CSRF policy with its additional origins compiled.
pub struct Policy {
    config: CsrfPolicy,
    additional_origins: ValueMatchers,
}

impl Policy {
    /// Compiles `config`; `Err` names a regex that does not compile.
    pub fn new(config: &CsrfPolicy) -> Result<Policy, (String, regex::Error)> {
        Ok(Policy { config: config.clone(), additional_origins: ValueMatchers::new(&config.additional_origins)? })
    }
}

/// The filter on a worker.
pub struct CsrfFilter {
    name: String,
    policy: Arc<Policy>,
    missing_source_origin: Counter,
    request_invalid: Counter,
    request_valid: Counter,
}

impl CsrfFilter {
    /// The filter `name` with its own `policy`, counting under `http_prefix`.
    pub fn new(name: String, policy: Arc<Policy>, store: &Arc<Store>, http_prefix: &str) -> CsrfFilter {
        let scope = Scope::new(store, &format!("{http_prefix}csrf."), "http.csrf.", &[]);
        CsrfFilter {
            name,
            policy,
            missing_source_origin: scope.counter("missing_source_origin"),
            request_invalid: scope.counter("request_invalid"),
            request_valid: scope.counter("request_valid"),
        }
    }

    /// The policy a stream on `route` follows: the route's most specific one, else the
    /// filter's.
    pub fn policy(&self, route: Option<StreamRoute<'_>>) -> Arc<Policy> {
        route
            .and_then(|r| {
                r.filters.configs(&self.name).find_map(|c| match c {
                    RouteConfig::Csrf(p) => Some(p.clone()),
                    _ => None,
                })
            })
            .unwrap_or_else(|| self.policy.clone())
    }

    /// The request headers: checked if they change state; 403 if the origin is not the
    /// host's nor an additional one (unless only in shadow mode).
    pub fn request_headers(&self, policy: &Policy, headers: &Headers, info: &StreamRef) -> Verdict {
        let enabled = crate::random::per_million(policy.config.filter_enabled);
        let shadow = crate::random::per_million(policy.config.shadow_enabled);
        if !enabled && !shadow {
            return Verdict::Continue;
        }
        if !matches!(headers.get(b":method"), Some(b"POST" | b"PUT" | b"DELETE" | b"PATCH")) {
            return Verdict::Continue;
        }
        let source = source_origin(headers);
        let mut valid = true;
        let target =
            host_and_port(&String::from_utf8_lossy(headers.get(b":authority").unwrap_or_default())).to_string();
        if source.is_empty() {
            valid = false;
            self.missing_source_origin.inc();
        } else if source != target && !policy.additional_origins.any(&source) {
            valid = false;
            self.request_invalid.inc();
        }
        if valid {
            self.request_valid.inc();
            return Verdict::Continue;
        }
        if !enabled {
            return Verdict::Continue;
        }
        info.borrow_mut().response_code_details = "csrf_origin_mismatch".into();
        let reply =
            LocalReply { status: 403, body: b"Invalid origin".to_vec(), headers: Headers::new(), grpc_status: None };
        Verdict::LocalReply(reply)
    }
}

/// Where the request says it comes from: `origin`'s host and port, else `referer`'s.
fn source_origin(headers: &Headers) -> String {
    let value =
        |name: &[u8]| headers.get(name).map(|v| String::from_utf8_lossy(v).into_owned()).filter(|v| !v.is_empty());
    match value(b"origin").or_else(|| value(b"referer")) {
        Some(v) => host_and_port(&v).to_string(),
        None => String::new(),
    }
}

/// The host and port of an absolute URL (`scheme://host[:port]/...`); anything else as it
/// is, as Envoy takes it.
fn host_and_port(value: &str) -> &str {
    let Some((scheme, rest)) = value.split_once("://") else { return value };
    if scheme.is_empty() || !scheme.bytes().all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b)) {
        return value;
    }
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let host = &rest[..end];
    if host.is_empty() { value } else { host }
}

/// One stream through the filter: the policy it follows.
pub struct CsrfStream {
    filter: Rc<CsrfFilter>,
    info: StreamRef,
    policy: Arc<Policy>,
}

impl CsrfStream {
    /// A stream on `route`.
    pub fn new(filter: &Rc<CsrfFilter>, info: &StreamRef, route: Option<StreamRoute<'_>>) -> CsrfStream {
        CsrfStream { filter: filter.clone(), info: info.clone(), policy: filter.policy(route) }
    }

    /// The request headers (see [`CsrfFilter::request_headers`]).
    pub fn request_headers(&self, headers: &Headers) -> Verdict {
        self.filter.request_headers(&self.policy, headers, &self.info)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_are_taken_as_host_and_port() {
        assert_eq!(host_and_port("https://example.com"), "example.com");
        assert_eq!(host_and_port("http://example.com:8080/a/b?c"), "example.com:8080");
        assert_eq!(host_and_port("example.com"), "example.com");
        assert_eq!(host_and_port("null"), "null");
        let h = Headers::from_pairs([("referer", "https://shop.test/cart")]);
        assert_eq!(source_origin(&h), "shop.test");
    }
}
