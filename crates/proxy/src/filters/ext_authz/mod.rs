//! `envoy.filters.http.ext_authz`, as Envoy 1.40's: each request's headers are sent to an
//! authorization service (HTTP or gRPC) and the stream waits for its answer. Allowed, the
//! request goes on with the headers and query parameters the service changed (and the
//! response gets those it asks for); denied, the client gets the service's status, headers
//! and body; a service that fails or is too slow gets `status_on_error` (403), unless
//! `failure_mode_allow`.

mod grpc;
mod http;
pub mod wire;

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::Arc;

use bytes::Bytes;
use rustc_hash::FxHashMap;
use wasmproxy_config::model::{AuthzService, ExtAuthz, ExtAuthzPerRoute};
use wasmproxy_host::Headers;
use wasmproxy_stats::{Counter, Scope, Store};

use crate::filters::{RouteConfig, StreamRoute};
use crate::http::reply::{LocalReply, Verdict};
use crate::matcher::ValueMatchers;
use crate::stream_info::StreamRef;
use crate::stream_info::response_flags::ResponseFlag;
use crate::tracer::ParentSpan;
use crate::upstream::cluster::Clusters;

/// The filter's configuration with its header matchers compiled, shared by the workers.
pub struct Config {
    config: ExtAuthz,
    /// The request headers sent (`None`: all for gRPC, the defaults for HTTP).
    allowed: Option<ValueMatchers>,
    /// The request headers never sent.
    disallowed: ValueMatchers,
    /// The HTTP service's lists of response headers taken.
    http: Option<http::Lists>,
}

impl Config {
    /// Compiles `config`; `Err` names a regex that does not compile.
    pub fn new(config: &ExtAuthz) -> Result<Config, (String, regex::Error)> {
        let allowed = config.allowed_headers.as_deref().map(ValueMatchers::new).transpose()?;
        let http = match &config.service {
            AuthzService::Http(service) => Some(http::Lists::new(service)?),
            AuthzService::Grpc(_) => None,
        };
        Ok(Config {
            config: config.clone(),
            allowed,
            disallowed: ValueMatchers::new(&config.disallowed_headers)?,
            http,
        })
    }

    /// Whether the request header `name` goes to the service (`defaults`: the names an
    /// HTTP service always gets).
    fn sends(&self, name: &str, defaults: &[&str]) -> bool {
        if self.disallowed.any(name) {
            return false;
        }
        match &self.allowed {
            None => defaults.is_empty() || defaults.contains(&name),
            Some(allowed) => defaults.contains(&name) || allowed.any(name),
        }
    }
}

/// What a check came to, as counted (`ext_authz.[<stat_prefix>.]<outcome>`).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
enum Outcome {
    Ok,
    Denied,
    Error,
    FailureModeAllowed,
}

impl Outcome {
    fn name(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Denied => "denied",
            Outcome::Error => "error",
            Outcome::FailureModeAllowed => "failure_mode_allowed",
        }
    }
}

/// Envoy's counters of the filter that wasmproxy never increments (what they count is
/// refused or does not happen), there so that dashboards find them.
const NEVER_COUNTED: &[&str] = &[
    "filter_state_name_collision",
    "ignored_dynamic_metadata",
    "invalid",
    "omitted_response_headers",
    "request_header_limits_reached",
    "response_header_limits_reached",
    "shadow_denied",
    "shadow_error",
];

/// The filter on a worker.
pub struct ExtAuthzFilter {
    name: String,
    config: Arc<Config>,
    clusters: Rc<Clusters>,
    store: Arc<Store>,
    /// The connection manager's counters, by outcome.
    stats: [Counter; 4],
    disabled: Counter,
    /// `cluster.<route's cluster>.ext_authz.*`, each made when first counted, as Envoy's.
    cluster_stats: RefCell<FxHashMap<(String, Outcome), Counter>>,
}

impl ExtAuthzFilter {
    /// The filter `name` configured by `config`, counting under `http_prefix`.
    pub fn new(
        name: String,
        config: Arc<Config>,
        clusters: Rc<Clusters>,
        store: &Arc<Store>,
        http_prefix: &str,
    ) -> ExtAuthzFilter {
        let scope =
            Scope::new(store, &format!("{http_prefix}ext_authz.{}", stat_infix(&config)), "http.ext_authz.", &[]);
        for name in NEVER_COUNTED {
            scope.counter(name);
        }
        let outcomes = [Outcome::Ok, Outcome::Denied, Outcome::Error, Outcome::FailureModeAllowed];
        ExtAuthzFilter {
            name,
            stats: outcomes.map(|o| scope.counter(o.name())),
            disabled: scope.counter("disabled"),
            config,
            clusters,
            store: store.clone(),
            cluster_stats: RefCell::default(),
        }
    }

    /// Counts `outcome` for the connection manager and the route's `cluster` (if any).
    fn count(&self, outcome: Outcome, cluster: &str) {
        self.stats[outcome as usize].inc();
        if cluster.is_empty() {
            return;
        }
        let mut all = self.cluster_stats.borrow_mut();
        all.entry((cluster.to_string(), outcome))
            .or_insert_with(|| {
                let prefix = format!("cluster.{cluster}.ext_authz.{}", stat_infix(&self.config));
                let tags = [("envoy_cluster_name", cluster)];
                Scope::new(&self.store, &prefix, "cluster.ext_authz.", &tags).counter(outcome.name())
            })
            .inc();
    }
}

/// `<stat_prefix>.` when the filter has one.
fn stat_infix(config: &Config) -> String {
    match config.config.stat_prefix.as_str() {
        "" => String::new(),
        prefix => format!("{prefix}."),
    }
}

/// What the service decided.
enum Decision {
    /// Allowed, with these changes.
    Ok(Changes),
    /// Refused: the client's answer.
    Denied(LocalReply),
    /// The service failed, was too slow, or answered 5xx.
    Error,
}

/// What an allowed request is changed with.
#[derive(Default)]
struct Changes {
    /// Request headers set, added or appended, in order.
    request: Vec<Mutation>,
    /// Request headers removed.
    remove: Vec<String>,
    /// Response headers added once the response comes.
    response: Vec<Mutation>,
    /// Query parameters set.
    query_set: Vec<(String, String)>,
    /// Query parameters removed.
    query_remove: Vec<String>,
}

/// One header change.
struct Mutation {
    name: Vec<u8>,
    value: Vec<u8>,
    action: Action,
}

/// How a header change applies (`HeaderValueOption`'s `append_action`, or its deprecated
/// `append`).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Action {
    /// Another entry.
    Add,
    /// Added only if the header is absent.
    AddIfAbsent,
    /// The header's value replaced (added if absent).
    Set,
    /// The value replaced only if the header is there.
    SetIfPresent,
    /// The deprecated `append: true` of a request header: joined to the value there with a
    /// comma (nothing if absent).
    Join,
}

impl Mutation {
    fn apply(&self, headers: &mut Headers) {
        let present = headers.get(&self.name).is_some();
        match self.action {
            Action::Add => headers.add(&self.name, &self.value),
            Action::AddIfAbsent if !present => headers.add(&self.name, &self.value),
            Action::Set => headers.set(&self.name, &self.value),
            Action::SetIfPresent if present => headers.set(&self.name, &self.value),
            Action::Join if present => {
                let mut joined = headers.get(&self.name).unwrap_or_default().to_vec();
                joined.push(b',');
                joined.extend_from_slice(&self.value);
                headers.replace(&self.name, &joined);
            }
            _ => {}
        }
    }
}

/// Whether a request header may be removed by the service (not a pseudo-header, not
/// `host`).
fn removable(name: &str) -> bool {
    !name.starts_with(':') && !name.eq_ignore_ascii_case("host")
}

/// One stream through the filter.
pub struct ExtAuthzStream {
    filter: Rc<ExtAuthzFilter>,
    info: StreamRef,
    /// No check for this stream (no route, or the route turns checks off).
    skip: bool,
    /// The route's context extensions, least specific first, the more specific winning.
    context_extensions: BTreeMap<String, String>,
    /// Response headers the service asked for.
    response: Vec<Mutation>,
    /// The request body is sent too, at most this long (longer: 413).
    body_limit: Option<u32>,
    /// The stream's span, the check's parent.
    parent: Option<ParentSpan>,
}

impl ExtAuthzStream {
    /// A stream on `route`: no check without a route or on one whose most specific
    /// `ExtAuthzPerRoute` is `disabled`; its check is a span under `parent`.
    pub fn new(
        filter: &Rc<ExtAuthzFilter>,
        info: &StreamRef,
        route: Option<StreamRoute<'_>>,
        parent: Option<&ParentSpan>,
    ) -> ExtAuthzStream {
        let settings: Vec<&ExtAuthzPerRoute> = route
            .map(|r| {
                r.filters
                    .configs(&filter.name)
                    .filter_map(|c| match c {
                        RouteConfig::ExtAuthz(s) => Some(&**s),
                        _ => None,
                    })
                    .collect()
            })
            .unwrap_or_default();
        let mut context_extensions = BTreeMap::new();
        for s in settings.iter().rev() {
            context_extensions.extend(s.context_extensions.iter().cloned());
        }
        let filter_limit = filter.config.config.with_request_body.map(|b| b.max_request_bytes);
        let body_limit = match settings.first() {
            Some(s) if s.disable_request_body_buffering => None,
            Some(s) => s.with_request_body.or(filter_limit),
            None => filter_limit,
        };
        ExtAuthzStream {
            filter: filter.clone(),
            info: info.clone(),
            skip: route.is_none() || settings.first().is_some_and(|s| s.disabled),
            context_extensions,
            response: Vec::new(),
            body_limit,
            parent: parent.cloned(),
        }
    }

    /// The request headers: checked with the service, the stream waiting for its answer
    /// (after the body, if the service gets it).
    pub async fn request_headers(&mut self, headers: &mut Headers, eos: bool) -> Verdict {
        let filter = self.filter.clone();
        let config = &filter.config.config;
        if !crate::random::per_million(config.filter_enabled) {
            filter.disabled.inc();
            if config.deny_at_disable {
                return self.refuse(config.status_on_error, "ext_authz_error");
            }
            return Verdict::Continue;
        }
        if self.skip {
            return Verdict::Continue;
        }
        match self.body_limit {
            Some(limit) if !eos => Verdict::WaitForBody(limit as usize),
            // The call is a few KiB of future: boxed, so that a stream's future does not
            // carry room for it.
            _ => Box::pin(self.check(headers, None)).await,
        }
    }

    /// The whole request body (the request headers waited for it): checked with it.
    pub async fn request_body(&mut self, headers: &mut Headers, body: &Bytes) -> Verdict {
        Box::pin(self.check(headers, Some(body))).await
    }

    /// Asks the service about the request (`body`, if it is sent) and acts on its answer.
    async fn check(&mut self, headers: &mut Headers, body: Option<&Bytes>) -> Verdict {
        let filter = self.filter.clone();
        let config = &filter.config.config;
        let decision = match &config.service {
            AuthzService::Http(service) => {
                let lists = filter.config.http.as_ref().expect("an HTTP service has its lists");
                let parent = self.parent.as_ref();
                http::check(&filter.config, service, lists, &filter.clusters, (headers, body), parent).await
            }
            AuthzService::Grpc(service) => {
                let request = grpc::check_request(&filter.config, headers, body, &self.info, &self.context_extensions);
                grpc::check(service, request, &filter.clusters, self.parent.as_ref()).await
            }
        };
        let cluster = self.info.borrow().cluster_name.clone();
        let count = |outcome| filter.count(outcome, &cluster);
        match decision {
            Decision::Ok(changes) => {
                count(Outcome::Ok);
                self.allow(changes, headers);
                Verdict::Continue
            }
            Decision::Denied(reply) => {
                count(Outcome::Denied);
                if config.charge_cluster_response_stats
                    && let Some(c) = filter.clusters.get(&cluster)
                {
                    c.charge_code(reply.status, crate::upstream::cluster::is_external(headers));
                }
                let mut i = self.info.borrow_mut();
                i.response_flags.set(ResponseFlag::UnauthorizedExternalService);
                i.response_code_details = "ext_authz_denied".into();
                Verdict::LocalReply(reply)
            }
            Decision::Error => {
                count(Outcome::Error);
                if config.failure_mode_allow {
                    count(Outcome::FailureModeAllowed);
                    if config.failure_mode_allow_header_add {
                        headers.replace(b"x-envoy-auth-failure-mode-allowed", b"true");
                    }
                    return Verdict::Continue;
                }
                self.refuse(config.status_on_error, "ext_authz_error")
            }
        }
    }

    /// The response headers: those the service asked for added.
    pub fn response_headers(&mut self, headers: &mut Headers) -> Verdict {
        for m in self.response.drain(..) {
            m.apply(headers);
        }
        Verdict::Continue
    }

    /// An allowed request: the service's changes made (set, added, appended, then removed).
    fn allow(&mut self, changes: Changes, headers: &mut Headers) {
        for m in &changes.request {
            m.apply(headers);
        }
        for name in changes.remove.iter().filter(|n| removable(n)) {
            headers.remove(name.as_bytes());
        }
        if !changes.query_set.is_empty() || !changes.query_remove.is_empty() {
            mutate_query(headers, &changes.query_set, &changes.query_remove);
        }
        self.response = changes.response;
    }

    /// A refusal without the service's answer: `status`, no body, flag `UAEX`.
    fn refuse(&self, status: u16, details: &str) -> Verdict {
        let mut i = self.info.borrow_mut();
        i.response_flags.set(ResponseFlag::UnauthorizedExternalService);
        i.response_code_details = details.to_owned().into();
        Verdict::LocalReply(LocalReply { status, body: Vec::new(), headers: Headers::new(), grpc_status: None })
    }
}

/// The request's headers by lower-case name, in the order first seen, repeated values
/// joined by commas, as Envoy puts them in a check.
fn joined(headers: &Headers) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for (name, value) in headers.iter() {
        let (name, value) = (String::from_utf8_lossy(name), String::from_utf8_lossy(value));
        match out.iter_mut().find(|(n, _)| *n == name) {
            Some((_, joined)) => {
                joined.push(',');
                joined.push_str(&value);
            }
            None => out.push((name.into_owned(), value.into_owned())),
        }
    }
    out
}

/// The query of `:path` with `set` parameters replacing every value of their key and
/// `remove`d keys gone, rebuilt sorted by key as Envoy rebuilds it.
fn mutate_query(headers: &mut Headers, set: &[(String, String)], remove: &[String]) {
    let Some(path) = headers.get(b":path").map(|p| String::from_utf8_lossy(p).into_owned()) else { return };
    let (base, query) = path.split_once('?').unwrap_or((&path, ""));
    let mut params: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        params.entry(k.to_string()).or_default().push(v.to_string());
    }
    for (k, v) in set {
        params.insert(k.clone(), vec![v.clone()]);
    }
    for k in remove {
        params.remove(k);
    }
    let query: Vec<String> =
        params.iter().flat_map(|(k, values)| values.iter().map(move |v| format!("{k}={v}"))).collect();
    let path = if query.is_empty() { base.to_string() } else { format!("{base}?{}", query.join("&")) };
    headers.replace(b":path", path.as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_changes_rebuild_the_query_sorted() {
        let mut h = Headers::from_pairs([(":path", "/a?z=1&b=2&b=3&c")]);
        mutate_query(&mut h, &[("x".into(), "9".into()), ("b".into(), "4".into())], &["c".into()]);
        assert_eq!(h.get(b":path"), Some(&b"/a?b=4&x=9&z=1"[..]));
        mutate_query(&mut h, &[], &["b".into(), "x".into(), "z".into()]);
        assert_eq!(h.get(b":path"), Some(&b"/a"[..]));
    }

    #[test]
    fn mutations_follow_their_action() {
        let mut h = Headers::from_pairs([("a", "1")]);
        let m = |name: &str, value: &str, action| Mutation { name: name.into(), value: value.into(), action };
        m("a", "2", Action::Join).apply(&mut h);
        m("b", "2", Action::Join).apply(&mut h);
        m("a", "3", Action::AddIfAbsent).apply(&mut h);
        m("c", "3", Action::SetIfPresent).apply(&mut h);
        m("d", "4", Action::Add).apply(&mut h);
        m("d", "5", Action::Add).apply(&mut h);
        let all: Vec<_> = h.iter().map(|(k, v)| (k.to_vec(), v.to_vec())).collect();
        let want: Vec<(Vec<u8>, Vec<u8>)> =
            vec![(b"a".to_vec(), b"1,2".to_vec()), (b"d".to_vec(), b"4".to_vec()), (b"d".to_vec(), b"5".to_vec())];
        assert_eq!(all, want);
        assert!(!removable(":path") && !removable("Host") && removable("x-user"));
    }
}
