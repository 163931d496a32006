//! The inline `route_config` of the HTTP connection manager: virtual hosts, matches and actions.

use std::collections::HashMap;
use std::time::Duration;

use crate::cors::{CORS_POLICY, read_cors_policy};
use crate::filter_override::read_filter_overrides;
use crate::header_mutation::read_header_mutations;
use crate::matcher::{read_header_matcher, read_query_parameter_matcher, read_regex};
use crate::metadata::read_metadata;
use crate::mirror::read_mirror_policies;
use crate::model::{
    CorsPolicy, Decorator, ForwardAction, HashKey, HashPolicy, PathMatch, RedirectAction, RegexRewrite, Route,
    RouteAction, RouteConfig, RouteMatch, VirtualHost, WeightedCluster,
};
use crate::rate_limit::read_rate_limits;
use crate::reader::{Ctx, Field, Msg};
use crate::retry::read_retry_policy;
use crate::wasm::{DataSource, read_data_source};

const ROUTE_CONFIGURATION: &[&str] = &[
    "name",
    "virtual_hosts",
    "vhds",
    "internal_only_headers",
    "response_headers_to_add",
    "response_headers_to_remove",
    "request_headers_to_add",
    "request_headers_to_remove",
    "most_specific_header_mutations_wins",
    "validate_clusters",
    "max_direct_response_body_size_bytes",
    "cluster_specifier_plugins",
    "request_mirror_policies",
    "ignore_port_in_host_matching",
    "ignore_path_parameters_in_path_matching",
    "typed_per_filter_config",
    "metadata",
];
const VIRTUAL_HOST: &[&str] = &[
    "name",
    "domains",
    "routes",
    "matcher",
    "require_tls",
    "virtual_clusters",
    "rate_limits",
    "request_headers_to_add",
    "request_headers_to_remove",
    "response_headers_to_add",
    "response_headers_to_remove",
    "cors",
    "typed_per_filter_config",
    "include_request_attempt_count",
    "include_attempt_count_in_response",
    "retry_policy",
    "retry_policy_typed_config",
    "hedge_policy",
    "include_is_timeout_retry_header",
    "per_request_buffer_limit_bytes",
    "request_mirror_policies",
    "metadata",
];
const ROUTE: &[&str] = &[
    "name",
    "match",
    "route",
    "redirect",
    "direct_response",
    "filter_action",
    "non_forwarding_action",
    "metadata",
    "decorator",
    "typed_per_filter_config",
    "request_headers_to_add",
    "request_headers_to_remove",
    "response_headers_to_add",
    "response_headers_to_remove",
    "tracing",
    "per_request_buffer_limit_bytes",
    "stat_prefix",
];
const ROUTE_MATCH: &[&str] = &[
    "prefix",
    "path",
    "safe_regex",
    "connect_matcher",
    "path_separated_prefix",
    "path_match_policy",
    "case_sensitive",
    "runtime_fraction",
    "headers",
    "query_parameters",
    "grpc",
    "tls_context",
    "dynamic_metadata",
];
const ROUTE_ACTION: &[&str] = &[
    "cluster",
    "cluster_header",
    "weighted_clusters",
    "cluster_specifier_plugin",
    "inline_cluster_specifier_plugin",
    "cluster_not_found_response_code",
    "metadata_match",
    "prefix_rewrite",
    "regex_rewrite",
    "path_rewrite_policy",
    "host_rewrite_literal",
    "auto_host_rewrite",
    "host_rewrite_header",
    "host_rewrite_path_regex",
    "append_x_forwarded_host",
    "timeout",
    "idle_timeout",
    "early_data_policy",
    "retry_policy",
    "retry_policy_typed_config",
    "request_mirror_policies",
    "priority",
    "rate_limits",
    "include_vh_rate_limits",
    "hash_policy",
    "cors",
    "max_grpc_timeout",
    "grpc_timeout_offset",
    "upgrade_configs",
    "internal_redirect_policy",
    "internal_redirect_action",
    "max_internal_redirects",
    "hedge_policy",
    "max_stream_duration",
];
const ROUTE_UPGRADE_CONFIG: &[&str] = &["upgrade_type", "enabled", "connect_config"];
const REGEX_MATCH_AND_SUBSTITUTE: &[&str] = &["pattern", "substitution"];
const WEIGHTED_CLUSTERS: &[&str] =
    &["clusters", "total_weight", "runtime_key_prefix", "header_name", "random_value_specifier"];
const CLUSTER_WEIGHT: &[&str] = &[
    "name",
    "cluster_header",
    "weight",
    "metadata_match",
    "request_headers_to_add",
    "request_headers_to_remove",
    "response_headers_to_add",
    "response_headers_to_remove",
    "typed_per_filter_config",
    "host_rewrite_literal",
];
const DIRECT_RESPONSE: &[&str] = &["status", "body"];
const REDIRECT: &[&str] = &[
    "https_redirect",
    "scheme_redirect",
    "host_redirect",
    "port_redirect",
    "path_redirect",
    "prefix_rewrite",
    "regex_rewrite",
    "response_code",
    "strip_query",
];
const RESPONSE_CODE: &[(&str, i64, Option<u16>)] = &[
    ("MOVED_PERMANENTLY", 0, Some(301)),
    ("FOUND", 1, Some(302)),
    ("SEE_OTHER", 2, Some(303)),
    ("TEMPORARY_REDIRECT", 3, Some(307)),
    ("PERMANENT_REDIRECT", 4, Some(308)),
];

/// Envoy's default `max_direct_response_body_size_bytes`.
const MAX_DIRECT_RESPONSE_BODY: usize = 4096;
/// Envoy's default route timeout.
const DEFAULT_ROUTE_TIMEOUT: Duration = Duration::from_secs(15);

pub(crate) fn read_route_config(ctx: &mut Ctx, field: &Field<'_>) -> RouteConfig {
    let Some(mut msg) = field.message(ctx, ROUTE_CONFIGURATION) else { return RouteConfig::default() };
    let name = msg.get(ctx, "name").and_then(|f| f.string(ctx)).unwrap_or_default();
    let mut virtual_hosts = Vec::new();
    let mut names: HashMap<String, String> = HashMap::new();
    let mut domains: HashMap<String, String> = HashMap::new();
    for item in msg.get(ctx, "virtual_hosts").map(|f| f.list()).unwrap_or_default() {
        let Some(vhost) = read_virtual_host(ctx, &item) else { continue };
        if let Some(first) = names.insert(vhost.name.clone(), item.path.clone()) {
            item.error(ctx, format!("duplicate virtual host name {:?} (first at {first})", vhost.name));
        }
        for domain in &vhost.domains {
            if let Some(first) = domains.insert(domain.to_ascii_lowercase(), item.path.clone()) {
                item.error(ctx, format!("domain {domain:?} is already used by {first}"));
            }
        }
        virtual_hosts.push(vhost);
    }
    let headers = read_header_mutations(ctx, &mut msg);
    let most_specific_header_mutations_wins =
        msg.get(ctx, "most_specific_header_mutations_wins").and_then(|f| f.bool(ctx)).unwrap_or(false);
    let internal_only = msg.get(ctx, "internal_only_headers").map(|f| f.list()).unwrap_or_default();
    let internal_only_headers =
        internal_only.iter().filter_map(|h| h.string(ctx)).map(|h| h.to_ascii_lowercase()).collect();
    let filter_overrides = read_filter_overrides(ctx, &mut msg);
    msg.finish(ctx);
    RouteConfig {
        name,
        virtual_hosts,
        headers,
        most_specific_header_mutations_wins,
        internal_only_headers,
        filter_overrides,
    }
}

fn read_virtual_host(ctx: &mut Ctx, field: &Field<'_>) -> Option<VirtualHost> {
    let mut msg = field.message(ctx, VIRTUAL_HOST)?;
    let name = msg.required(ctx, "name").and_then(|f| f.string(ctx)).unwrap_or_default();
    let domains: Vec<String> =
        msg.get(ctx, "domains").map(|f| f.list()).unwrap_or_default().iter().filter_map(|d| d.string(ctx)).collect();
    if domains.is_empty() {
        ctx.error(msg.origin(), "at least one domain is required");
    }
    let routes = msg.get(ctx, "routes").map(|f| f.list()).unwrap_or_default();
    let routes = routes.iter().filter_map(|r| read_route(ctx, r)).collect();
    let metadata = msg.get(ctx, "metadata").map(|f| read_metadata(ctx, &f)).unwrap_or_default();
    let headers = read_header_mutations(ctx, &mut msg);
    let retry_policy = msg.get(ctx, "retry_policy").and_then(|f| read_retry_policy(ctx, &f));
    let filter_overrides = read_filter_overrides(ctx, &mut msg);
    let cors = read_legacy_cors(ctx, &mut msg);
    let rate_limits = read_rate_limits(ctx, &mut msg);
    let mut flag = |name: &str| msg.get(ctx, name).and_then(|f| f.bool(ctx)).unwrap_or(false);
    let include_request_attempt_count = flag("include_request_attempt_count");
    let include_attempt_count_in_response = flag("include_attempt_count_in_response");
    msg.finish(ctx);
    Some(VirtualHost {
        name,
        domains,
        routes,
        metadata,
        headers,
        retry_policy,
        filter_overrides,
        cors,
        include_request_attempt_count,
        include_attempt_count_in_response,
        rate_limits,
    })
}

fn read_route(ctx: &mut Ctx, field: &Field<'_>) -> Option<Route> {
    let mut msg = field.message(ctx, ROUTE)?;
    let name = msg.get(ctx, "name").and_then(|f| f.string(ctx)).unwrap_or_default();
    let matcher = msg.required(ctx, "match").and_then(|f| read_route_match(ctx, &f));
    msg.at_most_one(ctx, &["route", "redirect", "direct_response", "filter_action", "non_forwarding_action"]);
    let action = if let Some(f) = msg.get(ctx, "route") {
        Some(RouteAction::Forward(read_forward(ctx, &f)))
    } else if let Some(f) = msg.get(ctx, "redirect") {
        Some(RouteAction::Redirect(read_redirect(ctx, &f)))
    } else if let Some(f) = msg.get(ctx, "direct_response") {
        read_direct_response(ctx, &f)
    } else {
        if !msg.has("filter_action") && !msg.has("non_forwarding_action") {
            ctx.error(msg.origin(), "one of route, redirect or direct_response is required");
        }
        None
    };
    let metadata = msg.get(ctx, "metadata").map(|f| read_metadata(ctx, &f)).unwrap_or_default();
    let headers = read_header_mutations(ctx, &mut msg);
    let filter_overrides = read_filter_overrides(ctx, &mut msg);
    let decorator = msg.get(ctx, "decorator").and_then(|f| read_decorator(ctx, &f));
    msg.finish(ctx);
    Some(Route { name, matcher: matcher?, action: action?, metadata, headers, filter_overrides, decorator })
}

/// The deprecated `cors` of a virtual host or a route action.
fn read_legacy_cors(ctx: &mut Ctx, msg: &mut Msg<'_>) -> Option<Box<CorsPolicy>> {
    let policy = msg.get(ctx, "cors")?.message(ctx, CORS_POLICY)?;
    Some(Box::new(read_cors_policy(ctx, policy)))
}

fn read_route_match(ctx: &mut Ctx, field: &Field<'_>) -> Option<RouteMatch> {
    let mut msg = field.message(ctx, ROUTE_MATCH)?;
    let specifiers = ["prefix", "path", "safe_regex", "connect_matcher", "path_separated_prefix", "path_match_policy"];
    msg.at_most_one(ctx, &specifiers);
    let path = if let Some(f) = msg.get(ctx, "prefix") {
        f.string(ctx).map(PathMatch::Prefix)
    } else if let Some(f) = msg.get(ctx, "path") {
        f.string(ctx).map(PathMatch::Exact)
    } else if let Some(f) = msg.get(ctx, "safe_regex") {
        read_regex(ctx, &f).map(PathMatch::Regex)
    } else {
        if !specifiers.iter().any(|s| msg.has(s)) {
            ctx.error(msg.origin(), "one of prefix, path or safe_regex is required");
        }
        None
    };
    let case_sensitive = msg.get(ctx, "case_sensitive").and_then(|f| f.bool_value(ctx)).unwrap_or(true);
    let headers = msg.get(ctx, "headers").map(|f| f.list()).unwrap_or_default();
    let headers = headers.iter().filter_map(|h| read_header_matcher(ctx, h)).collect();
    let params = msg.get(ctx, "query_parameters").map(|f| f.list()).unwrap_or_default();
    let query_parameters = params.iter().filter_map(|q| read_query_parameter_matcher(ctx, q)).collect();
    // `GrpcRouteMatchOptions` has no field.
    let grpc = msg.get(ctx, "grpc").and_then(|f| f.message(ctx, &[])).map(|m| m.finish(ctx)).is_some();
    msg.finish(ctx);
    Some(RouteMatch { path: path?, case_sensitive, headers, query_parameters, grpc })
}

fn read_forward(ctx: &mut Ctx, field: &Field<'_>) -> ForwardAction {
    let mut action = ForwardAction { timeout: None, ..ForwardAction::default() };
    let Some(mut msg) = field.message(ctx, ROUTE_ACTION) else { return action };
    let specifiers = [
        "cluster",
        "cluster_header",
        "weighted_clusters",
        "cluster_specifier_plugin",
        "inline_cluster_specifier_plugin",
    ];
    msg.at_most_one(ctx, &specifiers);
    if let Some(f) = msg.get(ctx, "cluster") {
        if let Some(cluster) = f.string(ctx) {
            ctx.refs.cluster_refs.push((cluster.clone(), f.origin()));
            action.cluster = cluster;
        }
    } else if let Some(f) = msg.get(ctx, "cluster_header") {
        action.cluster_header = f.string(ctx).map(|h| h.to_ascii_lowercase()).filter(|h| {
            let ok = !h.is_empty() && !h.starts_with(':');
            if !ok {
                f.error(ctx, "must name a header (not a pseudo-header)");
            }
            ok
        });
    } else if let Some(f) = msg.get(ctx, "weighted_clusters") {
        action.weighted_clusters = read_weighted_clusters(ctx, &f);
    } else if !specifiers.iter().any(|s| msg.has(s)) {
        ctx.error(msg.origin(), "missing required field \"cluster\"");
    }
    if let Some(status) = msg.get(ctx, "cluster_not_found_response_code").and_then(|f| {
        f.enumeration(
            ctx,
            &[
                ("SERVICE_UNAVAILABLE", 0, Some(503)),
                ("NOT_FOUND", 1, Some(404)),
                ("INTERNAL_SERVER_ERROR", 2, Some(500)),
            ],
        )
    }) {
        action.cluster_not_found_status = status;
    }
    msg.at_most_one(ctx, &["prefix_rewrite", "regex_rewrite", "path_rewrite_policy"]);
    msg.at_most_one(
        ctx,
        &["host_rewrite_literal", "auto_host_rewrite", "host_rewrite_header", "host_rewrite_path_regex"],
    );
    action.prefix_rewrite = msg.get(ctx, "prefix_rewrite").and_then(|f| f.string(ctx));
    action.regex_rewrite = msg.get(ctx, "regex_rewrite").and_then(|f| read_regex_rewrite(ctx, &f));
    action.host_rewrite_literal = msg.get(ctx, "host_rewrite_literal").and_then(|f| f.string(ctx));
    action.auto_host_rewrite = msg.get(ctx, "auto_host_rewrite").and_then(|f| f.bool_value(ctx)).unwrap_or(false);
    action.host_rewrite_header =
        msg.get(ctx, "host_rewrite_header").and_then(|f| f.string(ctx)).map(|h| h.to_ascii_lowercase());
    action.host_rewrite_path_regex = msg.get(ctx, "host_rewrite_path_regex").and_then(|f| read_regex_rewrite(ctx, &f));
    let timeout = msg.get(ctx, "timeout").and_then(|f| f.duration(ctx)).unwrap_or(DEFAULT_ROUTE_TIMEOUT);
    action.timeout = (!timeout.is_zero()).then_some(timeout);
    action.upgrades = crate::upgrade::read_upgrades(ctx, &mut msg, ROUTE_UPGRADE_CONFIG);
    action.retry_policy = msg.get(ctx, "retry_policy").and_then(|f| read_retry_policy(ctx, &f));
    action.hash_policy = msg.get(ctx, "hash_policy").map(|f| read_hash_policy(ctx, &f)).unwrap_or_default();
    action.high_priority = msg
        .get(ctx, "priority")
        .and_then(|f| f.enumeration(ctx, &[("DEFAULT", 0, Some(false)), ("HIGH", 1, Some(true))]))
        .unwrap_or(false);
    action.mirrors = msg.get(ctx, "request_mirror_policies").map(|f| read_mirror_policies(ctx, &f)).unwrap_or_default();
    action.cors = read_legacy_cors(ctx, &mut msg);
    action.rate_limits = read_rate_limits(ctx, &mut msg);
    action.include_vh_rate_limits =
        msg.get(ctx, "include_vh_rate_limits").and_then(|f| f.bool_value(ctx)).unwrap_or(false);
    msg.finish(ctx);
    action
}

const HASH_POLICY: &[&str] =
    &["header", "cookie", "connection_properties", "query_parameter", "filter_state", "terminal"];
const HASH_HEADER: &[&str] = &["header_name", "regex_rewrite"];
const HASH_COOKIE: &[&str] = &["name", "ttl", "path", "attributes"];
const HASH_CONNECTION: &[&str] = &["source_ip"];
const HASH_QUERY: &[&str] = &["name"];

/// `hash_policy`: each entry one of `header`, `cookie` (without `ttl`),
/// `connection_properties` or `query_parameter`.
fn read_hash_policy(ctx: &mut Ctx, field: &Field<'_>) -> Vec<HashPolicy> {
    let mut policies = Vec::new();
    for item in field.list() {
        let Some(mut msg) = item.message(ctx, HASH_POLICY) else { continue };
        msg.at_most_one(ctx, &["header", "cookie", "connection_properties", "query_parameter", "filter_state"]);
        let terminal = msg.get(ctx, "terminal").and_then(|f| f.bool(ctx)).unwrap_or(false);
        let key = if let Some(f) = msg.get(ctx, "header") {
            f.message(ctx, HASH_HEADER).and_then(|mut m| {
                let name = m.required(ctx, "header_name").and_then(|f| header_name(ctx, &f));
                let rewrite = m.get(ctx, "regex_rewrite").and_then(|f| read_regex_rewrite(ctx, &f));
                m.finish(ctx);
                Some(HashKey::Header { name: name?, rewrite })
            })
        } else if let Some(f) = msg.get(ctx, "cookie") {
            f.message(ctx, HASH_COOKIE).and_then(|mut m| {
                let name = m.required(ctx, "name").and_then(|f| f.string(ctx)).filter(|n| !n.is_empty());
                m.finish(ctx);
                Some(HashKey::Cookie(name?))
            })
        } else if let Some(f) = msg.get(ctx, "connection_properties") {
            f.message(ctx, HASH_CONNECTION).and_then(|mut m| {
                let source_ip = m.get(ctx, "source_ip").and_then(|f| f.bool(ctx)).unwrap_or(false);
                m.finish(ctx);
                // Envoy: without `source_ip` the entry never yields a hash.
                source_ip.then_some(HashKey::SourceIp)
            })
        } else if let Some(f) = msg.get(ctx, "query_parameter") {
            f.message(ctx, HASH_QUERY).and_then(|mut m| {
                let name = m.required(ctx, "name").and_then(|f| f.string(ctx)).filter(|n| !n.is_empty());
                m.finish(ctx);
                Some(HashKey::QueryParameter(name?))
            })
        } else {
            if !msg.has("filter_state") {
                ctx.error(
                    msg.origin(),
                    "a hash policy needs one of header, cookie, connection_properties, query_parameter",
                );
            }
            None
        };
        msg.finish(ctx);
        policies.extend(key.map(|key| HashPolicy { key, terminal }));
    }
    policies
}

/// A header name, lowercased; it must not be empty.
fn header_name(ctx: &mut Ctx, field: &Field<'_>) -> Option<String> {
    let name = field.string(ctx)?;
    if name.is_empty() {
        field.error(ctx, "must not be empty");
        return None;
    }
    Some(name.to_ascii_lowercase())
}

/// A `RegexMatchAndSubstitute`, its regex checked and its substitution made the regex
/// crate's (`\N` → `${N}`, `$` escaped).
fn read_regex_rewrite(ctx: &mut Ctx, field: &Field<'_>) -> Option<RegexRewrite> {
    let mut msg = field.message(ctx, REGEX_MATCH_AND_SUBSTITUTE)?;
    let pattern = msg.required(ctx, "pattern").and_then(|f| read_regex(ctx, &f));
    let substitution = msg.required(ctx, "substitution").and_then(|f| f.string(ctx));
    msg.finish(ctx);
    let (substitution, mut rust) = (substitution?, String::new());
    let mut chars = substitution.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '$' => rust.push_str("$$"),
            '\\' if chars.peek().is_some_and(char::is_ascii_digit) => {
                let n = chars.next().unwrap_or('0');
                rust.push_str(&format!("${{{n}}}"));
            }
            '\\' if chars.peek() == Some(&'\\') => {
                chars.next();
                rust.push('\\');
            }
            other => rust.push(other),
        }
    }
    Some(RegexRewrite { pattern: pattern?, substitution: rust })
}

/// `weighted_clusters`: at least one cluster, weights adding up to more than 0.
fn read_weighted_clusters(ctx: &mut Ctx, field: &Field<'_>) -> Vec<WeightedCluster> {
    let Some(mut msg) = field.message(ctx, WEIGHTED_CLUSTERS) else { return Vec::new() };
    let mut clusters = Vec::new();
    for item in msg.required(ctx, "clusters").map(|f| f.list()).unwrap_or_default() {
        let Some(mut c) = item.message(ctx, CLUSTER_WEIGHT) else { continue };
        let name = c.required(ctx, "name").and_then(|f| {
            let name = f.string(ctx)?;
            ctx.refs.cluster_refs.push((name.clone(), f.origin()));
            Some(name)
        });
        let weight = c.get(ctx, "weight").and_then(|f| f.unsigned(ctx, u64::from(u32::MAX))).unwrap_or(0) as u32;
        let headers = read_header_mutations(ctx, &mut c);
        let host_rewrite_literal = c.get(ctx, "host_rewrite_literal").and_then(|f| f.string(ctx));
        c.finish(ctx);
        if let Some(name) = name {
            clusters.push(WeightedCluster { name, weight, headers, host_rewrite_literal });
        }
    }
    // `total_weight` is deprecated; Envoy checks it against the sum when given.
    if let Some(f) = msg.get(ctx, "total_weight")
        && let Some(total) = f.unsigned(ctx, u64::from(u32::MAX))
    {
        let sum: u64 = clusters.iter().map(|c| u64::from(c.weight)).sum();
        if total != sum {
            f.error(ctx, format!("the sum of the weights ({sum}) is not {total}"));
        }
    }
    let origin = msg.origin().clone();
    msg.finish(ctx);
    if clusters.is_empty() {
        ctx.error(&origin.with_child("clusters"), "at least one cluster is required");
    } else if clusters.iter().all(|c| c.weight == 0) {
        ctx.error(&origin.with_child("clusters"), "the weights add up to 0");
    }
    clusters
}

fn read_direct_response(ctx: &mut Ctx, field: &Field<'_>) -> Option<RouteAction> {
    let mut msg = field.message(ctx, DIRECT_RESPONSE)?;
    let status = msg.required(ctx, "status").and_then(|f| {
        let status = f.unsigned(ctx, u64::from(u32::MAX))?;
        if !(200..600).contains(&status) {
            f.error(ctx, format!("{status} is not an HTTP status from 200 to 599"));
            return None;
        }
        u16::try_from(status).ok()
    });
    let body = match msg.get(ctx, "body") {
        None => Some(None),
        Some(f) => match read_data_source(ctx, &f)? {
            DataSource::Inline(bytes) if bytes.len() > MAX_DIRECT_RESPONSE_BODY => {
                f.error(ctx, format!("the body is {} bytes; the maximum is {MAX_DIRECT_RESPONSE_BODY}", bytes.len()));
                None
            }
            DataSource::Inline(bytes) => Some(Some(bytes)),
            DataSource::File(_) => {
                ctx.error(&f.origin().with_child("filename"), "not supported by wasmproxy");
                None
            }
        },
    };
    msg.finish(ctx);
    Some(RouteAction::DirectResponse { status: status?, body: body? })
}

fn read_redirect(ctx: &mut Ctx, field: &Field<'_>) -> RedirectAction {
    let mut redirect = RedirectAction { status: 301, ..RedirectAction::default() };
    let Some(mut msg) = field.message(ctx, REDIRECT) else { return redirect };
    msg.at_most_one(ctx, &["https_redirect", "scheme_redirect"]);
    msg.at_most_one(ctx, &["path_redirect", "prefix_rewrite", "regex_rewrite"]);
    if msg.get(ctx, "https_redirect").and_then(|f| f.bool(ctx)) == Some(true) {
        redirect.scheme = Some("https".into());
    }
    if let Some(scheme) = msg.get(ctx, "scheme_redirect").and_then(|f| f.string(ctx)) {
        redirect.scheme = Some(scheme);
    }
    redirect.host = msg.get(ctx, "host_redirect").and_then(|f| f.string(ctx)).filter(|h| !h.is_empty());
    redirect.port = msg.get(ctx, "port_redirect").and_then(|f| f.port(ctx)).filter(|p| *p != 0);
    redirect.path = msg.get(ctx, "path_redirect").and_then(|f| f.string(ctx));
    redirect.prefix_rewrite = msg.get(ctx, "prefix_rewrite").and_then(|f| f.string(ctx));
    if let Some(status) = msg.get(ctx, "response_code").and_then(|f| f.enumeration(ctx, RESPONSE_CODE)) {
        redirect.status = status;
    }
    redirect.strip_query = msg.get(ctx, "strip_query").and_then(|f| f.bool(ctx)).unwrap_or(false);
    msg.finish(ctx);
    redirect
}

const DECORATOR: &[&str] = &["operation", "propagate"];

/// A route's `decorator`: the operation its trace spans are named after.
fn read_decorator(ctx: &mut Ctx, field: &Field<'_>) -> Option<Decorator> {
    let mut msg = field.message(ctx, DECORATOR)?;
    let operation = msg.required(ctx, "operation").and_then(|f| {
        let op = f.string(ctx)?;
        if op.is_empty() {
            f.error(ctx, "must not be empty");
            return None;
        }
        Some(op)
    });
    let propagate = msg.get(ctx, "propagate").and_then(|f| f.bool_value(ctx)).unwrap_or(true);
    msg.finish(ctx);
    Some(Decorator { operation: operation?, propagate })
}
