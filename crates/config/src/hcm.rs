//! The HTTP connection manager network filter and its HTTP filters (Wasm, the native
//! ones and the router).

use std::time::Duration;

use crate::access_log::read_access_logs;
use crate::buffer::{BUFFER, BUFFER_TYPE, read_buffer};
use crate::compressor::{
    COMPRESSOR, COMPRESSOR_TYPE, DECOMPRESSOR, DECOMPRESSOR_TYPE, read_compressor, read_decompressor,
};
use crate::config_source::read_config_source;
use crate::csrf::{CSRF_POLICY, CSRF_TYPE, read_csrf_policy};
use crate::ext_authz::{EXT_AUTHZ, EXT_AUTHZ_TYPE, read_ext_authz};
use crate::fault::{FAULT, FAULT_TYPE, read_fault};
use crate::header_mutation::{HEADER_MUTATION, HEADER_MUTATION_TYPE, read_header_mutation_filter};
use crate::health_check_filter::{HEALTH_CHECK, HEALTH_CHECK_TYPE, read_health_check_filter};
use crate::local_ratelimit::{LOCAL_RATE_LIMIT, LOCAL_RATE_LIMIT_TYPE, read_local_rate_limit};
use crate::model::{
    CodecType, DiscoveredFilter, EscapedSlashes, ExtensionConfig, FilterKind, FilterOptions, Forwarding,
    HttpConnectionManager, HttpFilter, NativeFilter, PathHandling, RdsSource, RouteConfig, ServerHeader, StripPort,
    UuidRequestId, WasmPlugin,
};
use crate::rate_limit::{RATE_LIMIT, RATE_LIMIT_TYPE, read_rate_limit_filter};
use crate::rbac::{RBAC, RBAC_TYPE, read_rbac};
use crate::reader::{AnyValue, Ctx, Field, Msg, type_error};
use crate::route::read_route_config;
use crate::tracing::read_tracing;
use crate::validate::check_http_filter_order;
use crate::wasm::read_wasm_filter;

const HTTP_CONNECTION_MANAGER: &[&str] = &[
    "codec_type",
    "stat_prefix",
    "rds",
    "route_config",
    "scoped_routes",
    "http_filters",
    "add_user_agent",
    "tracing",
    "common_http_protocol_options",
    "http1_safe_max_connection_duration",
    "http_protocol_options",
    "http2_protocol_options",
    "http3_protocol_options",
    "server_name",
    "server_header_transformation",
    "scheme_header_transformation",
    "max_request_headers_kb",
    "stream_idle_timeout",
    "request_timeout",
    "request_headers_timeout",
    "drain_timeout",
    "delayed_close_timeout",
    "access_log",
    "access_log_flush_interval",
    "flush_access_log_on_new_request",
    "access_log_options",
    "use_remote_address",
    "xff_num_trusted_hops",
    "original_ip_detection_extensions",
    "early_header_mutation_extensions",
    "internal_address_config",
    "skip_xff_append",
    "via",
    "generate_request_id",
    "preserve_external_request_id",
    "always_set_request_id_in_response",
    "forward_client_cert_details",
    "set_current_client_cert_details",
    "proxy_100_continue",
    "represent_ipv4_remote_address_as_ipv4_mapped_ipv6",
    "upgrade_configs",
    "normalize_path",
    "merge_slashes",
    "path_with_escaped_slashes_action",
    "request_id_extension",
    "local_reply_config",
    "strip_matching_host_port",
    "strip_any_host_port",
    "stream_error_on_invalid_http_message",
    "path_normalization_options",
    "strip_trailing_host_dot",
    "proxy_status_config",
    "typed_header_validation_config",
    "append_x_forwarded_port",
    "append_local_overload",
    "add_proxy_protocol_connection_state",
];
/// `envoy.config.core.v3.HttpProtocolOptions`.
const HTTP_PROTOCOL_OPTIONS: &[&str] = &[
    "idle_timeout",
    "max_connection_duration",
    "max_headers_count",
    "max_response_headers_kb",
    "max_stream_duration",
    "headers_with_underscores_action",
    "max_requests_per_connection",
];
const HTTP_FILTER: &[&str] = &["name", "typed_config", "config_discovery", "is_optional", "disabled"];
const ROUTER: &[&str] = &[
    "dynamic_stats",
    "start_child_span",
    "upstream_log",
    "upstream_log_options",
    "suppress_envoy_headers",
    "strict_check_headers",
    "respect_expected_rq_timeout",
    "suppress_grpc_request_failure_code_stats",
    "upstream_http_filters",
];
const HCM_UPGRADE_CONFIG: &[&str] = &["upgrade_type", "filters", "enabled"];
const INTERNAL_ADDRESS_CONFIG: &[&str] = &["unix_sockets", "cidr_ranges"];
const SERVER_HEADER: &[(&str, i64, Option<ServerHeader>)] = &[
    ("OVERWRITE", 0, Some(ServerHeader::Overwrite)),
    ("APPEND_IF_ABSENT", 1, Some(ServerHeader::AppendIfAbsent)),
    ("PASS_THROUGH", 2, Some(ServerHeader::PassThrough)),
];
const CODEC_TYPE: &[(&str, i64, Option<CodecType>)] = &[
    ("AUTO", 0, Some(CodecType::Auto)),
    ("HTTP1", 1, Some(CodecType::Http1)),
    ("HTTP2", 2, Some(CodecType::Http2)),
    ("HTTP3", 3, None),
];

pub(crate) const HCM_TYPE: &str = "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager";
const ROUTER_TYPE: &str = "envoy.extensions.filters.http.router.v3.Router";
const HTTP_WASM_TYPE: &str = "envoy.extensions.filters.http.wasm.v3.Wasm";
const CORS_TYPE: &str = "envoy.extensions.filters.http.cors.v3.Cors";
const GRPC_HTTP1_BRIDGE_TYPE: &str = "envoy.extensions.filters.http.grpc_http1_bridge.v3.Config";
const GRPC_HTTP1_BRIDGE: &[&str] = &["upgrade_protobuf_to_grpc", "ignore_query_parameters"];
/// Router names accepted without a `typed_config` (older configs; Envoy 1.40 refuses them).
const ROUTER_NAMES: &[&str] = &["envoy.filters.http.router", "envoy.router"];

/// Envoy's defaults.
const DEFAULT_STREAM_IDLE_TIMEOUT: Duration = Duration::from_secs(300);
const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(3600);

/// A zero duration means "disabled" for these timeouts.
fn nonzero(d: Duration) -> Option<Duration> {
    (!d.is_zero()).then_some(d)
}

pub(crate) fn read_hcm(ctx: &mut Ctx, any: &AnyValue<'_>) -> HttpConnectionManager {
    let mut hcm = HttpConnectionManager {
        stat_prefix: String::new(),
        codec_type: CodecType::Auto,
        server_name: "envoy".into(),
        route_config: RouteConfig::default(),
        rds: None,
        http_filters: Vec::new(),
        filter_options: Vec::new(),
        request_headers_timeout: None,
        stream_idle_timeout: Some(DEFAULT_STREAM_IDLE_TIMEOUT),
        idle_timeout: Some(DEFAULT_IDLE_TIMEOUT),
        accept_http_10: false,
        allow_connect: false,
        default_host_for_http_10: None,
        access_logs: Vec::new(),
        forwarding: Forwarding::default(),
        paths: PathHandling::default(),
        request_id: UuidRequestId::default(),
        tracing: None,
        start_child_span: false,
        upgrades: Vec::new(),
    };
    let Some(mut msg) = any.message(ctx, HTTP_CONNECTION_MANAGER) else { return hcm };
    if let Some(f) = msg.required(ctx, "stat_prefix") {
        hcm.stat_prefix = f.string(ctx).unwrap_or_default();
        if hcm.stat_prefix.is_empty() {
            f.error(ctx, "must not be empty");
        }
    }
    if let Some(codec) = msg.get(ctx, "codec_type").and_then(|f| f.enumeration(ctx, CODEC_TYPE)) {
        hcm.codec_type = codec;
    }
    if let Some(name) = msg.get(ctx, "server_name").and_then(|f| f.string(ctx)) {
        hcm.server_name = name;
    }
    msg.at_most_one(ctx, &["rds", "route_config", "scoped_routes"]);
    if let Some(f) = msg.get(ctx, "route_config") {
        hcm.route_config = read_route_config(ctx, &f);
    } else if let Some(f) = msg.get(ctx, "rds") {
        hcm.rds = read_rds(ctx, &f);
    } else if !msg.has("scoped_routes") {
        ctx.error(msg.origin(), "missing required field \"route_config\"");
    }

    read_http_filters(ctx, &mut msg, &mut hcm);

    if let Some(f) = msg.get(ctx, "access_log") {
        hcm.access_logs = read_access_logs(ctx, &f);
    }
    hcm.tracing = msg.get(ctx, "tracing").and_then(|f| read_tracing(ctx, &f));
    if let Some(d) = msg.get(ctx, "request_headers_timeout").and_then(|f| f.duration(ctx)) {
        hcm.request_headers_timeout = nonzero(d);
    }
    if let Some(d) = msg.get(ctx, "stream_idle_timeout").and_then(|f| f.duration(ctx)) {
        hcm.stream_idle_timeout = nonzero(d);
    }
    if let Some(f) = msg.get(ctx, "common_http_protocol_options")
        && let Some(mut options) = f.message(ctx, HTTP_PROTOCOL_OPTIONS)
    {
        if let Some(d) = options.get(ctx, "idle_timeout").and_then(|f| f.duration(ctx)) {
            hcm.idle_timeout = nonzero(d);
        }
        options.finish(ctx);
    }
    hcm.forwarding = read_forwarding(ctx, &mut msg);
    hcm.paths = read_path_handling(ctx, &mut msg);
    if let Some(f) = msg.get(ctx, "request_id_extension") {
        hcm.request_id = read_request_id(ctx, &f);
    }
    hcm.upgrades = crate::upgrade::read_upgrades(ctx, &mut msg, HCM_UPGRADE_CONFIG);
    if let Some(f) = msg.get(ctx, "http2_protocol_options")
        && let Some(mut options) = f.message(ctx, crate::cluster::HTTP2_PROTOCOL_OPTIONS)
    {
        hcm.allow_connect = options.get(ctx, "allow_connect").and_then(|f| f.bool(ctx)).unwrap_or(false);
        options.finish(ctx);
    }
    if let Some(f) = msg.get(ctx, "http_protocol_options")
        && let Some(mut options) = f.message(ctx, crate::cluster::HTTP1_PROTOCOL_OPTIONS)
    {
        hcm.accept_http_10 = options.get(ctx, "accept_http_10").and_then(|f| f.bool(ctx)).unwrap_or(false);
        if let Some(host) = options.get(ctx, "default_host_for_http_10").and_then(|f| f.string(ctx)) {
            hcm.default_host_for_http_10 = (!host.is_empty()).then_some(host);
        }
        options.finish(ctx);
    }
    msg.finish(ctx);
    hcm
}

const REQUEST_ID_EXTENSION: &[&str] = &["typed_config"];
const UUID_REQUEST_ID: &[&str] = &["pack_trace_reason", "use_request_id_for_trace_sampling"];
const UUID_REQUEST_ID_TYPE: &str = "envoy.extensions.request_id.uuid.v3.UuidRequestIdConfig";

/// `request_id_extension`: the UUID one (Envoy's only), its settings kept for tracing.
fn read_request_id(ctx: &mut Ctx, field: &Field<'_>) -> UuidRequestId {
    let mut config = UuidRequestId::default();
    let Some(mut msg) = field.message(ctx, REQUEST_ID_EXTENSION) else { return config };
    if let Some(f) = msg.required(ctx, "typed_config")
        && let Some(any) = f.any(ctx)
    {
        if any.type_name != UUID_REQUEST_ID_TYPE {
            type_error(ctx, &f, &any, "request id extension");
        } else if let Some(mut m) = any.message(ctx, UUID_REQUEST_ID) {
            let flag = |ctx: &mut Ctx, m: &mut Msg<'_>, name: &str| m.get(ctx, name).and_then(|f| f.bool_value(ctx));
            config.pack_trace_reason = flag(ctx, &mut m, "pack_trace_reason").unwrap_or(true);
            config.use_for_trace_sampling = flag(ctx, &mut m, "use_request_id_for_trace_sampling").unwrap_or(true);
            m.finish(ctx);
        }
    }
    msg.finish(ctx);
    config
}

const ESCAPED_SLASHES: &[(&str, i64, Option<EscapedSlashes>)] = &[
    ("IMPLEMENTATION_SPECIFIC_DEFAULT", 0, Some(EscapedSlashes::Keep)),
    ("KEEP_UNCHANGED", 1, Some(EscapedSlashes::Keep)),
    ("REJECT_REQUEST", 2, Some(EscapedSlashes::Reject)),
    ("UNESCAPE_AND_REDIRECT", 3, Some(EscapedSlashes::Redirect)),
    ("UNESCAPE_AND_FORWARD", 4, Some(EscapedSlashes::Unescape)),
];

/// `normalize_path`, `merge_slashes`, `path_with_escaped_slashes_action`,
/// `strip_matching_host_port`, `strip_any_host_port`.
fn read_path_handling(ctx: &mut Ctx, msg: &mut Msg<'_>) -> PathHandling {
    let normalize = msg.get(ctx, "normalize_path").and_then(|f| f.bool_value(ctx)).unwrap_or(false);
    let merge_slashes = msg.get(ctx, "merge_slashes").and_then(|f| f.bool(ctx)).unwrap_or(false);
    let escaped_slashes =
        msg.get(ctx, "path_with_escaped_slashes_action").and_then(|f| f.enumeration(ctx, ESCAPED_SLASHES));
    msg.at_most_one(ctx, &["strip_matching_host_port", "strip_any_host_port"]);
    let matching = msg.get(ctx, "strip_matching_host_port").and_then(|f| f.bool(ctx)).unwrap_or(false);
    let any = msg.get(ctx, "strip_any_host_port").and_then(|f| f.bool(ctx)).unwrap_or(false);
    let strip_port = match (matching, any) {
        (_, true) => StripPort::Any,
        (true, false) => StripPort::Matching,
        _ => StripPort::None,
    };
    PathHandling { normalize, merge_slashes, escaped_slashes: escaped_slashes.unwrap_or_default(), strip_port }
}

/// The fields about the client's address and Envoy's request headers.
fn read_forwarding(ctx: &mut Ctx, msg: &mut Msg<'_>) -> Forwarding {
    let mut f = Forwarding::default();
    let flag = |ctx: &mut Ctx, msg: &mut Msg<'_>, name: &str, wrapped: bool| {
        msg.get(ctx, name).and_then(|v| if wrapped { v.bool_value(ctx) } else { v.bool(ctx) })
    };
    f.use_remote_address = flag(ctx, msg, "use_remote_address", true).unwrap_or(false);
    f.skip_xff_append = flag(ctx, msg, "skip_xff_append", false).unwrap_or(false);
    f.generate_request_id = flag(ctx, msg, "generate_request_id", true).unwrap_or(true);
    f.preserve_external_request_id = flag(ctx, msg, "preserve_external_request_id", false).unwrap_or(false);
    f.always_set_request_id_in_response = flag(ctx, msg, "always_set_request_id_in_response", false).unwrap_or(false);
    f.add_user_agent = flag(ctx, msg, "add_user_agent", true).unwrap_or(false);
    if let Some(hops) = msg.get(ctx, "xff_num_trusted_hops").and_then(|v| v.unsigned(ctx, u64::from(u32::MAX))) {
        f.xff_num_trusted_hops = hops as u32;
    }
    if let Some(via) = msg.get(ctx, "via").and_then(|v| v.string(ctx)) {
        f.via = via;
    }
    if let Some(v) = msg.get(ctx, "internal_address_config")
        && let Some(mut config) = v.message(ctx, INTERNAL_ADDRESS_CONFIG)
    {
        // Unix sockets are never internal to wasmproxy: it listens on none.
        config.get(ctx, "unix_sockets").and_then(|v| v.bool(ctx));
        let ranges = config.get(ctx, "cidr_ranges").map(|v| v.list()).unwrap_or_default();
        f.internal_ranges = ranges.iter().filter_map(|r| crate::chain_match::read_cidr_range(ctx, r)).collect();
        config.finish(ctx);
    }
    if let Some(t) = msg.get(ctx, "server_header_transformation").and_then(|v| v.enumeration(ctx, SERVER_HEADER)) {
        f.server_header = t;
    }
    f
}

/// `http_filters`, in order, the router last (and its `start_child_span`).
fn read_http_filters(ctx: &mut Ctx, msg: &mut Msg<'_>, hcm: &mut HttpConnectionManager) {
    let filters_field = msg.get(ctx, "http_filters");
    let mut order = Vec::new();
    for item in filters_field.as_ref().map(|f| f.list()).unwrap_or_default() {
        let (router, filter) = read_http_filter(ctx, &item);
        order.push((router.is_some(), item.origin()));
        hcm.start_child_span |= router == Some(true);
        if let Some((filter, options)) = filter {
            hcm.http_filters.push(filter);
            hcm.filter_options.push(options);
        }
    }
    let list_origin = filters_field.map_or_else(|| msg.origin().with_child("http_filters"), |f| f.origin());
    check_http_filter_order(ctx, &list_origin, &order);
}

/// Reads one entry of `http_filters`: whether it is the router, and then its
/// `start_child_span` (known even when its config has errors, for the order check), and the
/// filter.
fn read_http_filter(ctx: &mut Ctx, field: &Field<'_>) -> (Option<bool>, Option<(HttpFilter, FilterOptions)>) {
    let Some(mut msg) = field.message(ctx, HTTP_FILTER) else { return (None, None) };
    // The type decides what the filter is; routes name it by its name.
    let name = msg.get(ctx, "name").and_then(|f| f.string(ctx)).unwrap_or_default();
    let disabled = msg.get(ctx, "disabled").and_then(|f| f.bool(ctx)).unwrap_or(false);
    let optional = msg.get(ctx, "is_optional").and_then(|f| f.bool(ctx)).unwrap_or(false);
    msg.at_most_one(ctx, &["typed_config", "config_discovery"]);
    let result = match msg.get(ctx, "typed_config") {
        Some(typed) if optional && !supported_http_filter(ctx, &typed) => {
            // As a client of Envoy's API that lacks the filter may: skipped, with a warning.
            ctx.warn(&typed.origin(), format!("optional filter {name:?} is not supported by wasmproxy: skipped"));
            (None, None)
        }
        Some(typed) => read_typed_http_filter(ctx, &typed),
        None if msg.has("config_discovery") => {
            let discovery = msg.get(ctx, "config_discovery");
            let filter = discovery.and_then(|f| read_config_discovery(ctx, &f, &name, FilterKind::Http));
            (None, filter.map(|d| HttpFilter::Discovered(Box::new(d))))
        }
        None if ROUTER_NAMES.contains(&name.as_str()) => {
            ctx.warn(
                msg.origin(),
                format!(
                    "{name} without typed_config is accepted as the router, but Envoy 1.40 refuses it: \
                     add typed_config with \"@type\": type.googleapis.com/{ROUTER_TYPE}"
                ),
            );
            (Some(false), Some(HttpFilter::Router))
        }
        None => {
            ctx.error(msg.origin(), "missing required field \"typed_config\"");
            (None, None)
        }
    };
    msg.finish(ctx);
    if disabled && result.0.is_some() {
        ctx.error(&field.origin().with_child("disabled"), "the router cannot be disabled");
    }
    let (is_router, filter) = result;
    (is_router, filter.map(|f| (f, FilterOptions { name, disabled })))
}

/// Whether a filter's `typed_config` is of a type wasmproxy runs.
fn supported_http_filter(ctx: &Ctx, typed: &Field<'_>) -> bool {
    let mut scratch = Ctx::new(ctx.base_dir.clone());
    typed.any(&mut scratch).is_some_and(|any| {
        [ROUTER_TYPE, HTTP_WASM_TYPE, CORS_TYPE, LOCAL_RATE_LIMIT_TYPE, COMPRESSOR_TYPE, DECOMPRESSOR_TYPE, CSRF_TYPE]
            .contains(&any.type_name.as_str())
    })
}

const EXTENSION_CONFIG_SOURCE: &[&str] =
    &["config_source", "default_config", "apply_default_config_without_warming", "type_urls"];

/// `config_discovery`: the filter's configuration by ECDS, a Wasm filter of that kind
/// (`type_urls` must allow it, and allow nothing else wasmproxy lacks); `default_config` is
/// one too.
pub(crate) fn read_config_discovery(
    ctx: &mut Ctx,
    field: &Field<'_>,
    name: &str,
    kind: FilterKind,
) -> Option<DiscoveredFilter> {
    let mut msg = field.message(ctx, EXTENSION_CONFIG_SOURCE)?;
    if name.is_empty() {
        ctx.error(msg.origin(), "a filter with config_discovery needs a name (the resource asked for)");
    }
    let source = msg.required(ctx, "config_source").and_then(|f| {
        let source = read_config_source(ctx, &f)?;
        if source.file().is_some() {
            f.error(ctx, "ECDS from a file is not supported by wasmproxy (use ads or api_config_source)");
            return None;
        }
        Some(source)
    });
    let default =
        msg.get(ctx, "default_config").and_then(|typed| read_discoverable(ctx, &typed, Some(kind))).map(|(_, p)| p);
    let apply_default_without_warming =
        msg.get(ctx, "apply_default_config_without_warming").and_then(|f| f.bool_value(ctx)).unwrap_or(false);
    if apply_default_without_warming && default.is_none() {
        ctx.error(msg.origin(), "apply_default_config_without_warming needs a default_config");
    }
    let wasm_type = kind.wasm_type();
    for url in msg.required(ctx, "type_urls").map(|f| f.list()).unwrap_or_default() {
        if let Some(text) = url.string(ctx)
            && text.rsplit('/').next() != Some(wasm_type)
        {
            url.error(ctx, format!("{text} is not supported by wasmproxy (only type.googleapis.com/{wasm_type})"));
        }
    }
    msg.finish(ctx);
    Some(DiscoveredFilter { name: name.to_string(), source: source?, default, apply_default_without_warming })
}

/// An ECDS resource (`TypedExtensionConfig`): its name and a Wasm HTTP or network filter.
pub(crate) fn read_extension_config(ctx: &mut Ctx, field: &Field<'_>) -> Option<ExtensionConfig> {
    let mut msg = field.message(ctx, &["name", "typed_config"])?;
    let name = msg.required(ctx, "name").and_then(|f| f.string(ctx));
    let plugin = msg.required(ctx, "typed_config").and_then(|typed| read_discoverable(ctx, &typed, None));
    msg.finish(ctx);
    let (kind, plugin) = plugin?;
    Some(ExtensionConfig { name: name?, kind, plugin })
}

/// A filter configuration ECDS may give: a Wasm filter (of that kind, if given), and
/// nothing else.
fn read_discoverable(ctx: &mut Ctx, typed: &Field<'_>, kind: Option<FilterKind>) -> Option<(FilterKind, WasmPlugin)> {
    let any = typed.any(ctx)?;
    let found = [FilterKind::Http, FilterKind::Network].into_iter().find(|k| any.type_name == k.wasm_type());
    match (found, kind) {
        (Some(found), None) => Some((found, read_wasm_filter(ctx, &any))),
        (Some(found), Some(wanted)) if found == wanted => Some((found, read_wasm_filter(ctx, &any))),
        _ if any.type_name.is_empty() => {
            typed.error(ctx, "missing \"@type\"");
            None
        }
        _ => {
            let expected = match kind {
                Some(kind) => kind.wasm_type().to_string(),
                None => format!("{} or {}", FilterKind::Http.wasm_type(), FilterKind::Network.wasm_type()),
            };
            typed.error(ctx, format!("must be a {expected} (the only filters wasmproxy discovers)"));
            None
        }
    }
}

/// A filter's `typed_config`: whether it is the router, and then its `start_child_span`;
/// the filter.
fn read_typed_http_filter(ctx: &mut Ctx, typed: &Field<'_>) -> (Option<bool>, Option<HttpFilter>) {
    let Some(any) = typed.any(ctx) else { return (None, None) };
    match any.type_name.as_str() {
        ROUTER_TYPE => {
            let mut child_span = false;
            if let Some(mut router) = any.message(ctx, ROUTER) {
                child_span = router.get(ctx, "start_child_span").and_then(|f| f.bool(ctx)).unwrap_or(false);
                router.finish(ctx);
            }
            (Some(child_span), Some(HttpFilter::Router))
        }
        HTTP_WASM_TYPE => (None, Some(HttpFilter::Wasm(Box::new(read_wasm_filter(ctx, &any))))),
        CORS_TYPE => {
            if let Some(cors) = any.message(ctx, &[]) {
                cors.finish(ctx);
            }
            (None, Some(HttpFilter::Native(NativeFilter::Cors)))
        }
        LOCAL_RATE_LIMIT_TYPE => {
            let limit = any.message(ctx, LOCAL_RATE_LIMIT).and_then(|m| read_local_rate_limit(ctx, m, false));
            (None, limit.map(|l| HttpFilter::Native(NativeFilter::LocalRateLimit(Box::new(l)))))
        }
        COMPRESSOR_TYPE => {
            let compressor = any.message(ctx, COMPRESSOR).and_then(|m| read_compressor(ctx, m));
            (None, compressor.map(|c| HttpFilter::Native(NativeFilter::Compressor(Box::new(c)))))
        }
        CSRF_TYPE => {
            let policy = any.message(ctx, CSRF_POLICY).and_then(|m| read_csrf_policy(ctx, m));
            (None, policy.map(|p| HttpFilter::Native(NativeFilter::Csrf(Box::new(p)))))
        }
        EXT_AUTHZ_TYPE => {
            let authz = any.message(ctx, EXT_AUTHZ).and_then(|m| read_ext_authz(ctx, m));
            (None, authz.map(|a| HttpFilter::Native(NativeFilter::ExtAuthz(Box::new(a)))))
        }
        BUFFER_TYPE => {
            let max = any.message(ctx, BUFFER).and_then(|m| read_buffer(ctx, m));
            (None, max.map(|m| HttpFilter::Native(NativeFilter::Buffer(m))))
        }
        HEADER_MUTATION_TYPE => {
            let filter = any.message(ctx, HEADER_MUTATION).map(|m| read_header_mutation_filter(ctx, m));
            (None, filter.map(|f| HttpFilter::Native(NativeFilter::HeaderMutation(Box::new(f)))))
        }
        FAULT_TYPE => {
            let fault = any.message(ctx, FAULT).and_then(|m| read_fault(ctx, m));
            (None, fault.map(|f| HttpFilter::Native(NativeFilter::Fault(Box::new(f)))))
        }
        HEALTH_CHECK_TYPE => {
            let filter = any.message(ctx, HEALTH_CHECK).and_then(|m| read_health_check_filter(ctx, m));
            (None, filter.map(|f| HttpFilter::Native(NativeFilter::HealthCheck(Box::new(f)))))
        }
        RATE_LIMIT_TYPE => {
            let filter = any.message(ctx, RATE_LIMIT).and_then(|m| read_rate_limit_filter(ctx, m));
            (None, filter.map(|f| HttpFilter::Native(NativeFilter::RateLimit(Box::new(f)))))
        }
        RBAC_TYPE => {
            let rbac = any.message(ctx, RBAC).map(|m| read_rbac(ctx, m));
            (None, rbac.map(|r| HttpFilter::Native(NativeFilter::Rbac(Box::new(r)))))
        }
        GRPC_HTTP1_BRIDGE_TYPE => {
            if let Some(mut bridge) = any.message(ctx, GRPC_HTTP1_BRIDGE) {
                for name in GRPC_HTTP1_BRIDGE {
                    if let Some(f) = bridge.get(ctx, name)
                        && f.bool(ctx) == Some(true)
                    {
                        f.error(ctx, "not supported by wasmproxy (only false: gRPC requests are bridged as they are)");
                    }
                }
                bridge.finish(ctx);
            }
            (None, Some(HttpFilter::Native(NativeFilter::GrpcHttp1Bridge)))
        }
        DECOMPRESSOR_TYPE => {
            let decompressor = any.message(ctx, DECOMPRESSOR).and_then(|m| read_decompressor(ctx, m));
            (None, decompressor.map(|d| HttpFilter::Native(NativeFilter::Decompressor(Box::new(d)))))
        }
        "" => {
            typed.error(ctx, "missing \"@type\"");
            (None, None)
        }
        _ => {
            type_error(ctx, typed, &any, "HTTP filter");
            (None, None)
        }
    }
}

const RDS: &[&str] = &["config_source", "route_config_name"];

/// `rds`: a route configuration by name, from a file or ADS.
fn read_rds(ctx: &mut Ctx, field: &Field<'_>) -> Option<RdsSource> {
    let mut msg = field.message(ctx, RDS)?;
    let route_config_name = msg.required(ctx, "route_config_name").and_then(|f| f.string(ctx));
    let source = msg.required(ctx, "config_source").and_then(|f| read_config_source(ctx, &f));
    msg.finish(ctx);
    Some(RdsSource { route_config_name: route_config_name?, source: source? })
}
