//! The route table: virtual hosts by domain (exact, `*.suffix`, `prefix.*`, `*`, in
//! Envoy's order, the port part of the host), then the first route whose path, headers
//! and query parameters match.

use std::sync::Arc;

use crate::matcher::{HeaderMatchers, value_matches, whole_regex};
use regex::Regex;
use wasmproxy_config::model::{
    CorsPolicy, Decorator, FilterOverride, HeaderMutations, PathMatch, QueryParameterMatcher, RetryPolicy, RouteAction,
    RouteConfig, ValueMatch,
};
use wasmproxy_host::Headers;

use crate::filters::cors::Policy;
use crate::filters::ratelimit::RoutePolicies;
use crate::filters::{RouteFilter, RouteFilters};
use crate::hcm::hash_policy::HashPolicies;
use crate::http::reply::is_grpc_request;
use crate::stream_info::metadata::{MetadataAttributes, RouteAttributes};

/// A route that matched a request.
pub struct Matched<'a> {
    /// What to do.
    pub action: &'a RouteAction,
    /// How much of the path the route matched (what `prefix_rewrite` replaces).
    pub matched_len: usize,
    /// The route's name, metadata and virtual host, as plugins read them.
    pub attributes: &'a Arc<RouteAttributes>,
    /// The headers it adds and removes, level by level in the order they apply.
    pub headers: &'a HeaderLevels,
    /// Its retry policy (else its virtual host's).
    pub retry_policy: Option<&'a Arc<RetrySetting>>,
    /// What it configures for the filters: `typed_per_filter_config` entries (its own,
    /// its virtual host's, its route configuration's) and the deprecated CORS policies.
    pub filters: &'a Arc<RouteFilters>,
    /// `weighted_clusters`, each with the header mutations that apply with it.
    pub weighted: &'a [Weighted],
    /// `regex_rewrite` and `host_rewrite_path_regex`, compiled.
    pub rewrites: &'a Rewrites,
    /// Its virtual host's `include_request_attempt_count` and
    /// `include_attempt_count_in_response`.
    pub attempt_count: (bool, bool),
    /// `hash_policy`, compiled.
    pub hash_policy: &'a HashPolicies,
    /// `decorator`: the name of the stream's span.
    pub decorator: Option<&'a Decorator>,
}

/// A retry policy with its header matchers compiled.
pub struct RetrySetting {
    /// The policy.
    pub policy: RetryPolicy,
    /// `retriable_headers`.
    pub answers: HeaderMatchers,
    /// `retriable_request_headers`.
    pub requests: HeaderMatchers,
}

/// A route's regex rewrites, compiled: the regex and the substitution.
#[derive(Default)]
pub struct Rewrites {
    /// `regex_rewrite`, on the path without its query.
    pub path: Option<(Regex, String)>,
    /// `host_rewrite_path_regex`: the path without its query, rewritten, is the host.
    pub host: Option<(Regex, String)>,
}

/// One of a route's weighted clusters.
pub struct Weighted {
    /// The cluster.
    pub name: String,
    /// Its weight.
    pub weight: u32,
    /// Its header mutations and the route's, in the order they apply.
    pub headers: HeaderLevels,
    /// `host_rewrite_literal`.
    pub host_rewrite_literal: Option<String>,
}

impl Matched<'_> {
    /// The cluster the stream goes to (`random` is the stream's draw), with the header
    /// mutations and the host rewrite that go with it; `None` when no cluster is named
    /// (no `cluster_header` in the request).
    pub fn cluster<'m>(&'m self, headers: &Headers, random: u64) -> Option<ClusterChoice<'m>> {
        let RouteAction::Forward(f) = self.action else { return None };
        if !self.weighted.is_empty() {
            let total: u64 = self.weighted.iter().map(|w| u64::from(w.weight)).sum();
            let mut point = random % total.max(1);
            let chosen = self.weighted.iter().find(|w| {
                let inside = point < u64::from(w.weight);
                point = point.saturating_sub(u64::from(w.weight));
                inside
            })?;
            let (host_rewrite_literal, keeps_original_host) = match &chosen.host_rewrite_literal {
                Some(host) => (Some(host.as_str()), false),
                None => (f.host_rewrite_literal.as_deref(), true),
            };
            return Some(ClusterChoice {
                name: std::borrow::Cow::Borrowed(&chosen.name),
                headers: &chosen.headers,
                host_rewrite_literal,
                keeps_original_host,
            });
        }
        let name = match &f.cluster_header {
            Some(header) => {
                std::borrow::Cow::Owned(String::from_utf8_lossy(headers.get(header.as_bytes())?).into_owned())
            }
            None => std::borrow::Cow::Borrowed(f.cluster.as_str()),
        };
        Some(ClusterChoice {
            name,
            headers: self.headers,
            host_rewrite_literal: f.host_rewrite_literal.as_deref(),
            keeps_original_host: true,
        })
    }
}

/// The cluster a stream goes to, and what goes with it.
pub struct ClusterChoice<'a> {
    /// The cluster's name.
    pub name: std::borrow::Cow<'a, str>,
    /// The header mutations that apply.
    pub headers: &'a HeaderLevels,
    /// The host rewrite that applies.
    pub host_rewrite_literal: Option<&'a str>,
    /// The host replaced is kept in `x-envoy-original-host` (the route's rewrite does
    /// that, a weighted cluster's does not, as in Envoy).
    pub keeps_original_host: bool,
}

/// The header mutations of a route, its virtual host and its route configuration, in the
/// order Envoy applies them: the most specific first (so the route configuration's win),
/// or last with `most_specific_header_mutations_wins`. Levels without any are left out.
pub type HeaderLevels = Arc<[Arc<HeaderMutations>]>;

/// A compiled `route_config`.
pub struct RouteTable {
    vhosts: Vec<VirtualHost>,
    internal_only_headers: Vec<String>,
}

struct VirtualHost {
    exact: Vec<String>,
    suffixes: Vec<String>,
    prefixes: Vec<String>,
    any: bool,
    routes: Vec<Route>,
}

struct Route {
    attributes: Arc<RouteAttributes>,
    path: CompiledPath,
    case_sensitive: bool,
    headers: HeaderMatchers,
    query: Vec<(QueryParameterMatcher, Option<Regex>)>,
    grpc: bool,
    action: RouteAction,
    mutations: HeaderLevels,
    retry_policy: Option<Arc<RetrySetting>>,
    filters: Arc<RouteFilters>,
    weighted: Vec<Weighted>,
    rewrites: Rewrites,
    attempt_count: (bool, bool),
    hash_policy: HashPolicies,
    decorator: Option<Decorator>,
}

enum CompiledPath {
    Prefix(String),
    Exact(String),
    Regex(Regex),
}

/// Why a route table could not be built.
#[derive(Debug, thiserror::Error)]
#[error("route {route}: invalid regex {regex:?}: {message}")]
pub struct RouteError {
    route: String,
    regex: String,
    message: String,
}

fn whole(re: &str, route: &str) -> Result<Regex, RouteError> {
    whole_regex(re).map_err(|e| RouteError { route: route.into(), regex: re.into(), message: e.to_string() })
}

fn value_regex(v: &ValueMatch, route: &str) -> Result<Option<Regex>, RouteError> {
    match v {
        ValueMatch::Regex(re) => whole(re, route).map(Some),
        _ => Ok(None),
    }
}

impl RouteTable {
    /// A table with no route.
    pub fn empty() -> Self {
        RouteTable { vhosts: Vec::new(), internal_only_headers: Vec::new() }
    }

    /// Compiles the regexes and sorts the domains.
    pub fn new(config: &RouteConfig) -> Result<Self, RouteError> {
        let global = Arc::new(config.headers.clone());
        let level_error = |level: &str| {
            let level = level.to_string();
            move |(regex, e): (String, regex::Error)| RouteError { route: level.clone(), regex, message: e.to_string() }
        };
        let config_filters = compile_filters(&config.filter_overrides).map_err(level_error(&config.name))?;
        let mut vhosts = Vec::new();
        for vh in &config.virtual_hosts {
            let mut v = VirtualHost::with_domains(&vh.domains);
            let mut shared_filters = compile_filters(&vh.filter_overrides).map_err(level_error(&vh.name))?;
            shared_filters.extend(config_filters.iter().cloned());
            let scope = VhostScope {
                config,
                vhost: vh,
                global: &global,
                headers: Arc::new(vh.headers.clone()),
                metadata: Arc::new(MetadataAttributes::new(&vh.metadata)),
                shared_filters,
                cors: compile_cors(vh.cors.as_deref()).map_err(level_error(&vh.name))?,
                rate_limits: compile_rate_limits(&vh.rate_limits).map_err(level_error(&vh.name))?,
            };
            for r in &vh.routes {
                v.routes.push(Route::compile(r, &scope)?);
            }
            vhosts.push(v);
        }
        Ok(RouteTable { vhosts, internal_only_headers: config.internal_only_headers.clone() })
    }

    /// `internal_only_headers`: removed from requests that are not internal.
    pub fn internal_only_headers(&self) -> &[String] {
        &self.internal_only_headers
    }

    /// The route for these request headers, if any matches.
    pub fn find(&self, headers: &Headers) -> Option<Matched<'_>> {
        // Envoy's route matcher answers nothing for a request without `x-forwarded-proto`
        // (the connection manager always adds it; only a filter can take it away).
        headers.get(b"x-forwarded-proto")?;
        let mut authority = String::from_utf8_lossy(headers.get(b":authority").unwrap_or_default());
        if authority.bytes().any(|b| b.is_ascii_uppercase()) {
            authority = authority.to_ascii_lowercase().into();
        }
        // As Envoy without `ignore_port_in_host_matching`: the port is part of the host.
        let vhost = self.vhost(&authority)?;
        let full_path = String::from_utf8_lossy(headers.get(b":path").unwrap_or_default());
        let (path, query) = full_path.split_once('?').unwrap_or((&full_path, ""));
        let route = vhost.routes.iter().find(|r| r.matches(path, query, headers))?;
        let matched_len = match &route.path {
            CompiledPath::Prefix(p) | CompiledPath::Exact(p) => p.len(),
            CompiledPath::Regex(_) => 0,
        };
        Some(Matched {
            action: &route.action,
            matched_len,
            attributes: &route.attributes,
            headers: &route.mutations,
            retry_policy: route.retry_policy.as_ref(),
            filters: &route.filters,
            weighted: &route.weighted,
            rewrites: &route.rewrites,
            attempt_count: route.attempt_count,
            hash_policy: &route.hash_policy,
            decorator: route.decorator.as_ref(),
        })
    }

    fn vhost(&self, host: &str) -> Option<&VirtualHost> {
        if let Some(v) = self.vhosts.iter().find(|v| v.exact.iter().any(|d| d == host)) {
            return Some(v);
        }
        let longest = |pick: &dyn Fn(&VirtualHost) -> Option<usize>| {
            self.vhosts.iter().filter_map(|v| pick(v).map(|len| (len, v))).max_by_key(|(len, _)| *len).map(|(_, v)| v)
        };
        let suffix = longest(&|v: &VirtualHost| {
            v.suffixes.iter().filter(|s| host.len() > s.len() && host.ends_with(s.as_str())).map(|s| s.len()).max()
        });
        if suffix.is_some() {
            return suffix;
        }
        let prefix = longest(&|v: &VirtualHost| {
            v.prefixes.iter().filter(|p| host.len() > p.len() && host.starts_with(p.as_str())).map(|p| p.len()).max()
        });
        prefix.or_else(|| self.vhosts.iter().find(|v| v.any))
    }
}

/// What a virtual host's routes share while they are compiled.
struct VhostScope<'a> {
    config: &'a RouteConfig,
    vhost: &'a wasmproxy_config::model::VirtualHost,
    global: &'a Arc<HeaderMutations>,
    headers: Arc<HeaderMutations>,
    metadata: Arc<MetadataAttributes>,
    /// The virtual host's filter configurations, then the route configuration's, compiled
    /// once (a rate limiter's bucket is shared by the routes of its level).
    shared_filters: Vec<Arc<RouteFilter>>,
    /// The virtual host's deprecated CORS policy.
    cors: Option<Arc<Policy>>,
    /// The virtual host's `rate_limits`.
    rate_limits: Arc<[crate::filters::ratelimit::Policy]>,
}

/// Compiles `typed_per_filter_config` entries.
fn compile_filters(overrides: &[FilterOverride]) -> Result<Vec<Arc<RouteFilter>>, (String, regex::Error)> {
    overrides.iter().map(|o| RouteFilter::compile(o).map(Arc::new)).collect()
}

fn compile_rate_limits(
    policies: &[wasmproxy_config::model::RateLimitPolicy],
) -> Result<Arc<[crate::filters::ratelimit::Policy]>, (String, regex::Error)> {
    policies.iter().map(crate::filters::ratelimit::Policy::new).collect()
}

fn compile_cors(policy: Option<&CorsPolicy>) -> Result<Option<Arc<Policy>>, (String, regex::Error)> {
    policy.map(|p| Policy::new(p).map(Arc::new)).transpose()
}

impl VhostScope<'_> {
    /// What route `r` (with its deprecated `cors`) configures for the filters, with what
    /// it inherits.
    fn filters(
        &self,
        r: &wasmproxy_config::model::Route,
        forward: Option<&wasmproxy_config::model::ForwardAction>,
    ) -> Result<Arc<RouteFilters>, (String, regex::Error)> {
        let mut entries = compile_filters(&r.filter_overrides)?;
        entries.extend(self.shared_filters.iter().cloned());
        let cors = forward.and_then(|f| f.cors.as_deref());
        let legacy_cors = compile_cors(cors)?.into_iter().chain(self.cors.clone()).collect();
        let rate_limits = RoutePolicies {
            route: compile_rate_limits(forward.map_or(&[][..], |f| &f.rate_limits))?,
            vhost: self.rate_limits.clone(),
            include_vhost: forward.is_some_and(|f| f.include_vh_rate_limits),
        };
        Ok(Arc::new(RouteFilters { entries, legacy_cors, rate_limits }))
    }

    /// Header mutation levels in the order they apply (most specific first, unless
    /// `most_specific_header_mutations_wins`), the empty ones left out.
    fn ordered(&self, mut levels: Vec<Arc<HeaderMutations>>) -> HeaderLevels {
        if self.config.most_specific_header_mutations_wins {
            levels.reverse();
        }
        levels.into_iter().filter(|l| !l.is_empty()).collect()
    }
}

impl VirtualHost {
    /// A virtual host with no route yet, its domains sorted by kind.
    fn with_domains(domains: &[String]) -> VirtualHost {
        let mut v = VirtualHost { exact: vec![], suffixes: vec![], prefixes: vec![], any: false, routes: vec![] };
        for d in domains {
            let d = d.to_ascii_lowercase();
            if d == "*" {
                v.any = true;
            } else if let Some(suffix) = d.strip_prefix('*') {
                v.suffixes.push(suffix.to_string());
            } else if let Some(prefix) = d.strip_suffix('*') {
                v.prefixes.push(prefix.to_string());
            } else {
                v.exact.push(d);
            }
        }
        v
    }
}

impl Route {
    /// A route, its regexes compiled and what it inherits from its virtual host and route
    /// configuration resolved.
    fn compile(r: &wasmproxy_config::model::Route, scope: &VhostScope<'_>) -> Result<Route, RouteError> {
        let vh = scope.vhost;
        let name = if r.name.is_empty() { vh.name.clone() } else { r.name.clone() };
        let path = match &r.matcher.path {
            PathMatch::Prefix(p) => CompiledPath::Prefix(p.clone()),
            PathMatch::Exact(p) => CompiledPath::Exact(p.clone()),
            PathMatch::Regex(re) => CompiledPath::Regex(whole(re, &name)?),
        };
        let matchers_of = |list: &[wasmproxy_config::model::HeaderMatcher]| {
            HeaderMatchers::new(list).map_err(|(regex, e)| RouteError {
                route: name.clone(),
                regex,
                message: e.to_string(),
            })
        };
        let headers = matchers_of(&r.matcher.headers)?;
        let query = r.matcher.query_parameters.iter().map(|q| Ok((q.clone(), value_regex(&q.value, &name)?)));
        let attributes = RouteAttributes {
            name: r.name.clone(),
            metadata: MetadataAttributes::new(&r.metadata),
            virtual_host_name: vh.name.clone(),
            virtual_host_metadata: scope.metadata.clone(),
        };
        let route_levels = vec![Arc::new(r.headers.clone()), scope.headers.clone(), scope.global.clone()];
        let forward = match &r.action {
            RouteAction::Forward(f) => Some(f),
            _ => None,
        };
        let weighted = forward.map_or(&[][..], |f| &f.weighted_clusters).iter().map(|w| Weighted {
            name: w.name.clone(),
            weight: w.weight,
            headers: scope.ordered([vec![Arc::new(w.headers.clone())], route_levels.clone()].concat()),
            host_rewrite_literal: w.host_rewrite_literal.clone(),
        });
        let retry_policy = forward.and_then(|f| f.retry_policy.as_ref()).or(vh.retry_policy.as_ref());
        let filters = scope.filters(r, forward).map_err(|(regex, e)| RouteError {
            route: name.clone(),
            regex,
            message: e.to_string(),
        })?;
        let compile = |rewrite: &Option<wasmproxy_config::model::RegexRewrite>| {
            rewrite
                .as_ref()
                .map(|rw| {
                    let error = |e: regex::Error| RouteError {
                        route: name.clone(),
                        regex: rw.pattern.clone(),
                        message: e.to_string(),
                    };
                    Ok((Regex::new(&rw.pattern).map_err(error)?, rw.substitution.clone()))
                })
                .transpose()
        };
        let rewrites = match forward {
            Some(f) => Rewrites { path: compile(&f.regex_rewrite)?, host: compile(&f.host_rewrite_path_regex)? },
            None => Rewrites::default(),
        };
        let hash_policy = HashPolicies::new(forward.map_or(&[][..], |f| &f.hash_policy))
            .map_err(|(regex, e)| RouteError { route: name.clone(), regex, message: e.to_string() })?;
        Ok(Route {
            hash_policy,
            decorator: r.decorator.clone(),
            attempt_count: (vh.include_request_attempt_count, vh.include_attempt_count_in_response),
            rewrites,
            weighted: weighted.collect(),
            filters,
            retry_policy: retry_policy
                .map(|p| {
                    Ok::<_, RouteError>(Arc::new(RetrySetting {
                        policy: p.clone(),
                        answers: matchers_of(&p.retriable_headers)?,
                        requests: matchers_of(&p.retriable_request_headers)?,
                    }))
                })
                .transpose()?,
            mutations: scope.ordered(route_levels),
            attributes: Arc::new(attributes),
            path,
            case_sensitive: r.matcher.case_sensitive,
            headers,
            query: query.collect::<Result<_, RouteError>>()?,
            grpc: r.matcher.grpc,
            action: r.action.clone(),
        })
    }

    fn matches(&self, path: &str, query: &str, headers: &Headers) -> bool {
        let path_ok = match &self.path {
            CompiledPath::Prefix(p) if self.case_sensitive => path.starts_with(p.as_str()),
            CompiledPath::Prefix(p) => path.len() >= p.len() && path[..p.len()].eq_ignore_ascii_case(p),
            CompiledPath::Exact(p) if self.case_sensitive => path == p,
            CompiledPath::Exact(p) => path.eq_ignore_ascii_case(p),
            CompiledPath::Regex(re) => re.is_match(path),
        };
        path_ok
            && (!self.grpc || is_grpc_request(headers))
            && self.headers.all(headers)
            && self.query.iter().all(|(m, re)| {
                let value = query_value(query, &m.name);
                value_matches(&m.value, re.as_ref(), value.as_deref())
            })
    }
}

fn query_value(query: &str, name: &str) -> Option<String> {
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == name).then(|| v.to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasmproxy_config::model::{HeaderMatcher, Route as RouteCfg, RouteMatch, VirtualHost as VhCfg};

    fn direct(status: u16) -> RouteAction {
        RouteAction::DirectResponse { status, body: None }
    }

    fn route(path: PathMatch, status: u16) -> RouteCfg {
        RouteCfg {
            name: String::new(),
            matcher: RouteMatch { path, case_sensitive: true, headers: vec![], query_parameters: vec![], grpc: false },
            action: direct(status),
            metadata: Default::default(),
            headers: Default::default(),
            filter_overrides: vec![],
            decorator: None,
        }
    }

    fn table() -> RouteTable {
        let vh = |name: &str, domains: &[&str], routes: Vec<RouteCfg>| VhCfg {
            name: name.into(),
            domains: domains.iter().map(|d| d.to_string()).collect(),
            routes,
            metadata: Default::default(),
            headers: Default::default(),
            retry_policy: None,
            filter_overrides: vec![],
            cors: None,
            include_request_attempt_count: false,
            include_attempt_count_in_response: false,
            rate_limits: vec![],
        };
        let mut with_header = route(PathMatch::Prefix("/".into()), 201);
        with_header.matcher.headers.push(HeaderMatcher {
            name: "x-env".into(),
            value: ValueMatch::Exact { value: "canary".into(), ignore_case: true },
            invert: false,
        });
        let mut with_query = route(PathMatch::Prefix("/q".into()), 202);
        with_query
            .matcher
            .query_parameters
            .push(QueryParameterMatcher { name: "debug".into(), value: ValueMatch::Present });
        RouteTable::new(&RouteConfig {
            name: "r".into(),
            virtual_hosts: vec![
                vh("exact", &["api.example.com"], vec![route(PathMatch::Exact("/v1".into()), 200)]),
                vh(
                    "suffix",
                    &["*.example.com"],
                    vec![with_header, with_query, route(PathMatch::Regex("/r/[0-9]+".into()), 203)],
                ),
                vh("prefix", &["shop.*"], vec![route(PathMatch::Prefix("/".into()), 204)]),
                vh("any", &["*"], vec![route(PathMatch::Prefix("/".into()), 404)]),
            ],
            ..Default::default()
        })
        .unwrap()
    }

    fn status(t: &RouteTable, host: &str, path: &str, extra: &[(&str, &str)]) -> Option<u16> {
        let mut h = Headers::from_pairs([(":authority", host), (":path", path), ("x-forwarded-proto", "http")]);
        for (k, v) in extra {
            h.add(k.as_bytes(), v.as_bytes());
        }
        t.find(&h).map(|m| match m.action {
            RouteAction::DirectResponse { status, .. } => *status,
            _ => 0,
        })
    }

    #[test]
    fn domains_and_paths_match_in_envoys_order() {
        let t = table();
        assert_eq!(status(&t, "api.example.com", "/v1", &[]), Some(200));
        assert_eq!(
            status(&t, "api.example.com:8080", "/v1", &[]),
            Some(404),
            "the port is part of the host, as in Envoy"
        );
        assert_eq!(status(&t, "api.example.com", "/v2", &[]), None, "the vhost matched; no route");
        assert_eq!(status(&t, "www.example.com", "/x", &[("x-env", "CANARY")]), Some(201));
        assert_eq!(status(&t, "www.example.com", "/q?a=1&debug", &[]), Some(202));
        assert_eq!(status(&t, "www.example.com", "/q?a=1", &[]), None);
        assert_eq!(status(&t, "www.example.com", "/r/42", &[]), Some(203));
        assert_eq!(status(&t, "www.example.com", "/r/42x", &[]), None, "regex matches the whole path");
        assert_eq!(status(&t, "shop.local", "/", &[]), Some(204));
        assert_eq!(status(&t, "other", "/", &[]), Some(404));
    }
}
