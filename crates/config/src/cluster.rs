//! Clusters: discovery type, timeouts, load balancing, endpoints and the upstream HTTP protocol.

use std::time::Duration;

use crate::address::Host;
use crate::config_source::read_config_source;
use crate::endpoint::read_load_assignment;
use crate::health::{read_health_checks, read_outlier_detection};
use crate::load_balancing::read_lb_settings;
use crate::metadata::read_metadata;
use crate::model::{
    CircuitBreakers, Cluster, ConnectionOptions, Discovery, DnsLookupFamily, EdsSource, LbPolicy, ProtocolChoice,
    UpstreamHttpOptions,
};
use crate::reader::{Ctx, Field, Msg, type_error};
use crate::tls::read_upstream_transport_socket;

const CIRCUIT_BREAKERS: &[&str] = &["thresholds", "per_host_thresholds"];
const THRESHOLDS: &[&str] = &[
    "priority",
    "max_connections",
    "max_pending_requests",
    "max_requests",
    "max_retries",
    "retry_budget",
    "track_remaining",
    "max_connection_pools",
];
const PRIORITY: &[(&str, i64, Option<u8>)] = &[("DEFAULT", 0, Some(0)), ("HIGH", 1, Some(1))];
const CLUSTER: &[&str] = &[
    "transport_socket_matches",
    "name",
    "alt_stat_name",
    "type",
    "cluster_type",
    "eds_cluster_config",
    "connect_timeout",
    "per_connection_buffer_limit_bytes",
    "lb_policy",
    "load_assignment",
    "health_checks",
    "max_requests_per_connection",
    "circuit_breakers",
    "upstream_http_protocol_options",
    "common_http_protocol_options",
    "http_protocol_options",
    "http2_protocol_options",
    "typed_extension_protocol_options",
    "dns_refresh_rate",
    "dns_jitter",
    "dns_failure_refresh_rate",
    "respect_dns_ttl",
    "dns_lookup_family",
    "dns_resolvers",
    "use_tcp_for_dns_lookups",
    "dns_resolution_config",
    "typed_dns_resolver_config",
    "wait_for_warm_on_init",
    "outlier_detection",
    "cleanup_interval",
    "upstream_bind_config",
    "lb_subset_config",
    "ring_hash_lb_config",
    "maglev_lb_config",
    "original_dst_lb_config",
    "least_request_lb_config",
    "round_robin_lb_config",
    "common_lb_config",
    "transport_socket",
    "metadata",
    "protocol_selection",
    "upstream_connection_options",
    "close_connections_on_host_health_failure",
    "ignore_health_on_host_removal",
    "filters",
    "load_balancing_policy",
    "lrs_server",
    "lrs_report_endpoint_metrics",
    "track_timeout_budgets",
    "upstream_config",
    "track_cluster_stats",
    "preconnect_policy",
    "connection_pool_per_downstream_connection",
];
/// `envoy.extensions.upstreams.http.v3.HttpProtocolOptions`.
const UPSTREAM_HTTP_PROTOCOL_OPTIONS: &[&str] = &[
    "common_http_protocol_options",
    "upstream_http_protocol_options",
    "explicit_http_config",
    "use_downstream_protocol_config",
    "auto_config",
    "http_filters",
    "header_validation_config",
];
const EXPLICIT_HTTP_CONFIG: &[&str] = &["http_protocol_options", "http2_protocol_options", "http3_protocol_options"];
/// `envoy.config.core.v3.Http1ProtocolOptions`.
pub(crate) const HTTP1_PROTOCOL_OPTIONS: &[&str] = &[
    "allow_absolute_url",
    "accept_http_10",
    "default_host_for_http_10",
    "header_key_format",
    "enable_trailers",
    "allow_chunked_length",
    "override_stream_error_on_invalid_http_message",
    "send_fully_qualified_url",
    "use_balsa_parser",
    "allow_custom_methods",
];
pub(crate) const HTTP2_PROTOCOL_OPTIONS: &[&str] = &[
    "hpack_table_size",
    "max_concurrent_streams",
    "initial_stream_window_size",
    "initial_connection_window_size",
    "allow_connect",
    "allow_metadata",
    "max_outbound_frames",
    "max_outbound_control_frames",
    "max_consecutive_inbound_frames_with_empty_payload",
    "max_inbound_priority_frames_per_stream",
    "max_inbound_window_update_frames_per_data_frame_sent",
    "stream_error_on_invalid_http_messaging",
    "override_stream_error_on_invalid_http_message",
    "custom_settings_parameters",
    "connection_keepalive",
    "use_oghttp2_codec",
    "max_metadata_size",
];

const DISCOVERY: &[(&str, i64, Option<Discovery>)] = &[
    ("STATIC", 0, Some(Discovery::Static)),
    ("STRICT_DNS", 1, Some(Discovery::StrictDns)),
    ("LOGICAL_DNS", 2, Some(Discovery::LogicalDns)),
    ("EDS", 3, Some(Discovery::Eds)),
    ("ORIGINAL_DST", 4, None),
];
const LB_POLICY: &[(&str, i64, Option<LbPolicy>)] = &[
    ("ROUND_ROBIN", 0, Some(LbPolicy::RoundRobin)),
    ("LEAST_REQUEST", 1, Some(LbPolicy::LeastRequest)),
    ("RING_HASH", 2, Some(LbPolicy::RingHash)),
    ("RANDOM", 3, Some(LbPolicy::Random)),
    ("MAGLEV", 5, Some(LbPolicy::Maglev)),
    ("CLUSTER_PROVIDED", 6, None),
    ("LOAD_BALANCING_POLICY_CONFIG", 7, None),
];
const DNS_LOOKUP_FAMILY: &[(&str, i64, Option<DnsLookupFamily>)] = &[
    ("AUTO", 0, Some(DnsLookupFamily::Auto)),
    ("V4_ONLY", 1, Some(DnsLookupFamily::V4Only)),
    ("V6_ONLY", 2, Some(DnsLookupFamily::V6Only)),
    ("V4_PREFERRED", 3, Some(DnsLookupFamily::V4Preferred)),
    ("ALL", 4, Some(DnsLookupFamily::All)),
];
/// Envoy's default `dns_refresh_rate`.
const DEFAULT_DNS_REFRESH_RATE: Duration = Duration::from_secs(5);

const HTTP_PROTOCOL_OPTIONS_TYPE: &str = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions";
/// Envoy's default `connect_timeout`.
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Reads `static_resources.clusters[i]`.
/// `circuit_breakers`: the thresholds of the `DEFAULT` and `HIGH` priorities.
fn read_circuit_breakers(ctx: &mut Ctx, field: &Field<'_>) -> [CircuitBreakers; 2] {
    let mut breakers = [CircuitBreakers::default(); 2];
    let Some(mut msg) = field.message(ctx, CIRCUIT_BREAKERS) else { return breakers };
    let mut seen = Vec::new();
    for item in msg.get(ctx, "thresholds").map(|f| f.list()).unwrap_or_default() {
        let Some(mut t) = item.message(ctx, THRESHOLDS) else { continue };
        let priority = t.get(ctx, "priority").and_then(|f| f.enumeration(ctx, PRIORITY)).unwrap_or(0);
        if seen.contains(&priority) {
            item.error(ctx, "a priority has one thresholds entry");
        }
        seen.push(priority);
        let mut read = |t: &mut crate::reader::Msg<'_>, name: &str, into: &mut u32| {
            if let Some(v) = t.get(ctx, name).and_then(|f| f.unsigned(ctx, u64::from(u32::MAX))) {
                *into = v as u32;
            }
        };
        let these = &mut breakers[usize::from(priority)];
        read(&mut t, "max_connections", &mut these.max_connections);
        read(&mut t, "max_pending_requests", &mut these.max_pending_requests);
        read(&mut t, "max_requests", &mut these.max_requests);
        read(&mut t, "max_retries", &mut these.max_retries);
        t.finish(ctx);
    }
    msg.finish(ctx);
    breakers
}

pub(crate) fn read_cluster(ctx: &mut Ctx, field: &Field<'_>) -> Option<Cluster> {
    let mut msg = field.message(ctx, CLUSTER)?;
    let name = msg.required(ctx, "name").and_then(|f| {
        let name = f.string(ctx)?;
        if name.is_empty() {
            f.error(ctx, "must not be empty");
            return None;
        }
        ctx.refs.clusters.push((name.clone(), f.origin()));
        Some(name)
    });
    msg.at_most_one(ctx, &["type", "cluster_type"]);
    let discovery = msg.get(ctx, "type").and_then(|f| f.enumeration(ctx, DISCOVERY)).unwrap_or_default();
    let connect_timeout = match msg.get(ctx, "connect_timeout") {
        Some(f) => f.duration(ctx).filter(|d| {
            if d.is_zero() {
                f.error(ctx, "must be greater than 0s");
            }
            !d.is_zero()
        }),
        None => Some(DEFAULT_CONNECT_TIMEOUT),
    };
    let lb_policy = msg.get(ctx, "lb_policy").and_then(|f| f.enumeration(ctx, LB_POLICY)).unwrap_or_default();

    let eds = read_eds_of(ctx, &mut msg, discovery, name.as_deref().unwrap_or_default());
    let host = if matches!(discovery, Discovery::Static | Discovery::Eds) { Host::Ip } else { Host::Name };
    let assignment = msg.get(ctx, "load_assignment");
    let endpoints = assignment.as_ref().map(|f| read_load_assignment(ctx, f, host)).unwrap_or_default();
    if discovery == Discovery::LogicalDns && endpoints.len() != 1 {
        let at = assignment.map_or_else(|| msg.origin().clone(), |f| f.origin());
        ctx.error(&at, "a LOGICAL_DNS cluster needs exactly one endpoint");
    }

    let dns_lookup_family =
        msg.get(ctx, "dns_lookup_family").and_then(|f| f.enumeration(ctx, DNS_LOOKUP_FAMILY)).unwrap_or_default();
    // Envoy: at least 1 ms.
    let dns_refresh_rate = match msg.get(ctx, "dns_refresh_rate") {
        Some(f) => f.duration(ctx).filter(|d| {
            if *d < Duration::from_millis(1) {
                f.error(ctx, "must be at least 1ms");
            }
            *d >= Duration::from_millis(1)
        }),
        None => Some(DEFAULT_DNS_REFRESH_RATE),
    };

    let typed_options = msg.get(ctx, "typed_extension_protocol_options");
    let ProtocolOptions { http2, choice: protocol_choice, upstream_http, connections } =
        read_protocol_options(ctx, &mut msg, typed_options.as_ref());
    let metadata = msg.get(ctx, "metadata").map(|f| read_metadata(ctx, &f)).unwrap_or_default();
    let tls = msg.get(ctx, "transport_socket").map(|f| read_upstream_transport_socket(ctx, &f));
    if protocol_choice == ProtocolChoice::Alpn && tls.is_none() {
        // As Envoy: the protocol is agreed by ALPN, which only TLS has.
        let at = typed_options.as_ref().map_or_else(|| msg.origin().clone(), |f| f.origin());
        ctx.error(&at, "ALPN (auto_config) configured for a cluster without a TLS transport_socket");
    }
    let [circuit_breakers, high_circuit_breakers] =
        msg.get(ctx, "circuit_breakers").map(|f| read_circuit_breakers(ctx, &f)).unwrap_or_default();
    let common_lb = read_lb_settings(ctx, &mut msg);
    let health_checks = msg.get(ctx, "health_checks").map(|f| read_health_checks(ctx, &f)).unwrap_or_default();
    let outlier_detection = msg.get(ctx, "outlier_detection").and_then(|f| read_outlier_detection(ctx, &f));
    msg.finish(ctx);
    Some(Cluster {
        name: name?,
        discovery,
        connect_timeout: connect_timeout?,
        lb_policy,
        endpoints,
        dns_refresh_rate: dns_refresh_rate?,
        dns_lookup_family,
        eds,
        http2,
        metadata,
        tls: tls.map_or(Some(None), |t| t.map(Some))?,
        upstream_http,
        circuit_breakers,
        high_circuit_breakers,
        protocol_choice,
        connections: connections.unwrap_or_default(),
        common_lb,
        health_checks,
        outlier_detection,
    })
}

const EDS_CLUSTER_CONFIG: &[&str] = &["eds_config", "service_name"];

/// `eds_cluster_config`, which an EDS cluster needs and no other takes.
fn read_eds_of(ctx: &mut Ctx, msg: &mut crate::reader::Msg<'_>, discovery: Discovery, name: &str) -> Option<EdsSource> {
    match msg.get(ctx, "eds_cluster_config") {
        Some(f) if discovery == Discovery::Eds => read_eds(ctx, &f, name),
        Some(f) => {
            f.error(ctx, "only an EDS cluster takes eds_cluster_config");
            None
        }
        None if discovery == Discovery::Eds => {
            ctx.error(msg.origin(), "an EDS cluster needs eds_cluster_config");
            None
        }
        None => None,
    }
}

/// `eds_cluster_config`: the endpoints of `service_name` (else the cluster's name), from a file or ADS.
fn read_eds(ctx: &mut Ctx, field: &Field<'_>, cluster: &str) -> Option<EdsSource> {
    let mut msg = field.message(ctx, EDS_CLUSTER_CONFIG)?;
    let service_name = msg.get(ctx, "service_name").and_then(|f| f.string(ctx)).filter(|s| !s.is_empty());
    let source = msg.required(ctx, "eds_config").and_then(|f| read_config_source(ctx, &f));
    msg.finish(ctx);
    Some(EdsSource { service_name: service_name.unwrap_or_else(|| cluster.to_string()), source: source? })
}

/// The upstream protocol: `typed_extension_protocol_options`, and the older
/// `http2_protocol_options` and `max_requests_per_connection` (deprecated: warnings).
fn read_protocol_options(ctx: &mut Ctx, msg: &mut Msg<'_>, typed: Option<&Field<'_>>) -> ProtocolOptions {
    let mut options = typed.map(|f| read_typed_protocol_options(ctx, f)).unwrap_or_default();
    let mut connections = options.connections.unwrap_or_default();
    if let Some(f) = msg.get(ctx, "max_requests_per_connection") {
        ctx.warn(&f.origin(), "deprecated: use common_http_protocol_options.max_requests_per_connection");
        if let Some(n) = f.unsigned(ctx, u64::from(u32::MAX)) {
            connections.max_requests = (n > 0).then_some(n as u32);
        }
    }
    options.connections = Some(connections);
    if let Some(f) = msg.get(ctx, "http2_protocol_options") {
        if typed.is_some() {
            f.error(ctx, "cannot be used together with typed_extension_protocol_options");
        } else {
            ctx.warn(&f.origin(), "deprecated: use typed_extension_protocol_options");
        }
        empty_message(ctx, &f, HTTP2_PROTOCOL_OPTIONS);
        options.http2 = true;
    }
    options
}

/// What `typed_extension_protocol_options` says of the upstream HTTP protocol.
#[derive(Default)]
struct ProtocolOptions {
    http2: bool,
    choice: ProtocolChoice,
    upstream_http: UpstreamHttpOptions,
    connections: Option<ConnectionOptions>,
}

const AUTO_CONFIG: &[&str] =
    &["http_protocol_options", "http2_protocol_options", "http3_protocol_options", "alternate_protocols_cache_options"];
const USE_DOWNSTREAM: &[&str] = &["http_protocol_options", "http2_protocol_options", "http3_protocol_options"];
const COMMON_HTTP_PROTOCOL_OPTIONS: &[&str] = &[
    "idle_timeout",
    "max_connection_duration",
    "max_headers_count",
    "max_response_headers_kb",
    "max_stream_duration",
    "headers_with_underscores_action",
    "max_requests_per_connection",
];

/// `typed_extension_protocol_options`: the upstream's protocol (explicit, by ALPN or as the
/// client's), `upstream_http_protocol_options` and `common_http_protocol_options`.
fn read_typed_protocol_options(ctx: &mut Ctx, field: &Field<'_>) -> ProtocolOptions {
    let mut options = ProtocolOptions::default();
    for (_, value) in field.map_entries(ctx) {
        let Some(any) = value.any(ctx) else { continue };
        if any.type_name != HTTP_PROTOCOL_OPTIONS_TYPE {
            type_error(ctx, &value, &any, "protocol options");
            continue;
        }
        let Some(mut msg) = any.message(ctx, UPSTREAM_HTTP_PROTOCOL_OPTIONS) else { continue };
        msg.at_most_one(ctx, &["explicit_http_config", "use_downstream_protocol_config", "auto_config"]);
        if let Some(explicit) = msg.get(ctx, "explicit_http_config")
            && let Some(mut explicit_msg) = explicit.message(ctx, EXPLICIT_HTTP_CONFIG)
        {
            explicit_msg.at_most_one(ctx, EXPLICIT_HTTP_CONFIG);
            if let Some(f) = explicit_msg.get(ctx, "http2_protocol_options") {
                empty_message(ctx, &f, HTTP2_PROTOCOL_OPTIONS);
                options.http2 = true;
            } else if let Some(f) = explicit_msg.get(ctx, "http_protocol_options") {
                empty_message(ctx, &f, HTTP1_PROTOCOL_OPTIONS);
            }
            explicit_msg.finish(ctx);
        }
        for (name, fields, choice) in [
            ("auto_config", AUTO_CONFIG, ProtocolChoice::Alpn),
            ("use_downstream_protocol_config", USE_DOWNSTREAM, ProtocolChoice::Downstream),
        ] {
            if let Some(f) = msg.get(ctx, name)
                && let Some(mut m) = f.message(ctx, fields)
            {
                if let Some(f) = m.get(ctx, "http_protocol_options") {
                    empty_message(ctx, &f, HTTP1_PROTOCOL_OPTIONS);
                }
                if let Some(f) = m.get(ctx, "http2_protocol_options") {
                    empty_message(ctx, &f, HTTP2_PROTOCOL_OPTIONS);
                }
                m.finish(ctx);
                options.choice = choice;
            }
        }
        if let Some(f) = msg.get(ctx, "upstream_http_protocol_options") {
            options.upstream_http = read_upstream_http_options(ctx, &f);
        }
        if let Some(f) = msg.get(ctx, "common_http_protocol_options") {
            options.connections = Some(read_connection_options(ctx, &f));
        }
        msg.finish(ctx);
    }
    options
}

/// `common_http_protocol_options`: `idle_timeout` and `max_requests_per_connection`.
fn read_connection_options(ctx: &mut Ctx, field: &Field<'_>) -> ConnectionOptions {
    let mut options = ConnectionOptions::default();
    let Some(mut msg) = field.message(ctx, COMMON_HTTP_PROTOCOL_OPTIONS) else { return options };
    if let Some(d) = msg.get(ctx, "idle_timeout").and_then(|f| f.duration(ctx)) {
        options.idle_timeout = (!d.is_zero()).then_some(d);
    }
    if let Some(n) = msg.get(ctx, "max_requests_per_connection").and_then(|f| f.unsigned(ctx, u64::from(u32::MAX))) {
        options.max_requests = (n > 0).then_some(n as u32);
    }
    msg.finish(ctx);
    options
}

const UPSTREAM_HTTP_OPTIONS: &[&str] = &["auto_sni", "auto_san_validation", "override_auto_sni_header"];

/// `upstream_http_protocol_options`.
fn read_upstream_http_options(ctx: &mut Ctx, field: &Field<'_>) -> UpstreamHttpOptions {
    let mut options = UpstreamHttpOptions::default();
    let Some(mut msg) = field.message(ctx, UPSTREAM_HTTP_OPTIONS) else { return options };
    options.auto_sni = msg.get(ctx, "auto_sni").and_then(|f| f.bool(ctx)).unwrap_or(false);
    options.auto_san_validation = msg.get(ctx, "auto_san_validation").and_then(|f| f.bool(ctx)).unwrap_or(false);
    if let Some(f) = msg.get(ctx, "override_auto_sni_header")
        && let Some(name) = f.string(ctx).filter(|n| !n.is_empty())
    {
        // Envoy: a valid header name (lowercase, as HTTP/2 sends it; a pseudo-header too).
        let valid = name
            .strip_prefix(':')
            .unwrap_or(&name)
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_.".contains(&b));
        if !valid || name == ":" {
            f.error(ctx, "must be a lowercase header name");
        } else {
            options.override_auto_sni_header = Some(name);
        }
    }
    msg.finish(ctx);
    options
}

/// A message of which wasmproxy supports no field: only `{}` is accepted.
fn empty_message(ctx: &mut Ctx, field: &Field<'_>, fields: &'static [&'static str]) {
    if let Some(msg) = field.message(ctx, fields) {
        msg.finish(ctx);
    }
}
