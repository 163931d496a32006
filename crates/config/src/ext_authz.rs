//! `envoy.filters.http.ext_authz`: an authorization service (HTTP or gRPC) asked about each
//! request (and its body, if asked) before it goes on, and `ExtAuthzPerRoute`. Metadata
//! contexts and header mutation rules are refused.

use crate::buffer::read_max_request_bytes;
use crate::matcher::read_string_matcher;
use crate::model::{AuthzService, BodySettings, ExtAuthz, ExtAuthzPerRoute, HttpAuthzService, ValueMatch};
use crate::reader::{Ctx, Field, Msg};
use crate::runtime::{read_feature_flag, read_runtime_fraction};
use crate::services::{read_grpc_service, read_http_uri};

pub(crate) const EXT_AUTHZ_TYPE: &str = "envoy.extensions.filters.http.ext_authz.v3.ExtAuthz";
pub(crate) const EXT_AUTHZ_PER_ROUTE_TYPE: &str = "envoy.extensions.filters.http.ext_authz.v3.ExtAuthzPerRoute";

pub(crate) const EXT_AUTHZ: &[&str] = &[
    "grpc_service",
    "http_service",
    "transport_api_version",
    "failure_mode_allow",
    "failure_mode_allow_header_add",
    "with_request_body",
    "clear_route_cache",
    "status_on_error",
    "validate_mutations",
    "metadata_context_namespaces",
    "typed_metadata_context_namespaces",
    "route_metadata_context_namespaces",
    "route_typed_metadata_context_namespaces",
    "filter_enabled",
    "filter_enabled_metadata",
    "deny_at_disable",
    "include_peer_certificate",
    "stat_prefix",
    "bootstrap_metadata_labels_key",
    "allowed_headers",
    "disallowed_headers",
    "include_tls_session",
    "charge_cluster_response_stats",
    "encode_raw_headers",
    "decoder_header_mutation_rules",
    "enable_dynamic_metadata_ingestion",
    "filter_metadata",
    "emit_filter_state_stats",
    "max_denied_response_body_bytes",
    "enforce_response_header_limits",
    "shadow_mode",
    "emit_client_span",
];
pub(crate) const EXT_AUTHZ_PER_ROUTE: &[&str] = &["disabled", "check_settings"];
const CHECK_SETTINGS: &[&str] = &[
    "context_extensions",
    "disable_request_body_buffering",
    "with_request_body",
    "grpc_service",
    "http_service",
    "emit_client_span",
];
const HTTP_SERVICE: &[&str] =
    &["server_uri", "path_prefix", "authorization_request", "authorization_response", "retry_policy", "path_override"];
const AUTHORIZATION_REQUEST: &[&str] = &["allowed_headers", "headers_to_add"];
const AUTHORIZATION_RESPONSE: &[&str] = &[
    "allowed_upstream_headers",
    "allowed_upstream_headers_to_append",
    "allowed_client_headers",
    "allowed_client_headers_on_success",
    "dynamic_metadata_from_headers",
];
const LIST_STRING_MATCHER: &[&str] = &["patterns"];
const BUFFER_SETTINGS: &[&str] = &["max_request_bytes", "allow_partial_message", "pack_as_bytes"];
const HEADER_VALUE: &[&str] = &["key", "value", "raw_value"];
const API_VERSION: &[(&str, i64, Option<bool>)] =
    &[("AUTO", 0, Some(true)), ("V2", 1, Some(false)), ("V3", 2, Some(true))];

/// The gRPC service's timeout when it gives none, as Envoy's.
const DEFAULT_TIMEOUT: std::time::Duration = std::time::Duration::from_millis(200);

/// An `ExtAuthz` (opened with [`EXT_AUTHZ`]): one of `grpc_service` and `http_service`.
pub(crate) fn read_ext_authz(ctx: &mut Ctx, mut msg: Msg<'_>) -> Option<ExtAuthz> {
    msg.at_most_one(ctx, &["grpc_service", "http_service"]);
    let service = if let Some(f) = msg.get(ctx, "grpc_service") {
        read_grpc_service(ctx, &f, true).map(|mut s| {
            s.timeout = Some(s.timeout.unwrap_or(DEFAULT_TIMEOUT));
            AuthzService::Grpc(s)
        })
    } else if let Some(f) = msg.get(ctx, "http_service") {
        read_http_service(ctx, &f).map(|s| AuthzService::Http(Box::new(s)))
    } else {
        ctx.error(msg.origin(), "one of grpc_service or http_service is required");
        None
    };
    if let Some(f) = msg.get(ctx, "transport_api_version")
        && f.enumeration(ctx, API_VERSION) == Some(false)
    {
        f.error(ctx, "V2 is not supported (use V3)");
    }
    let flag = |ctx: &mut Ctx, msg: &mut Msg<'_>, name: &str| msg.get(ctx, name).and_then(|f| f.bool(ctx));
    let failure_mode_allow = flag(ctx, &mut msg, "failure_mode_allow").unwrap_or(false);
    let failure_mode_allow_header_add = flag(ctx, &mut msg, "failure_mode_allow_header_add").unwrap_or(false);
    // wasmproxy's router finds the route from the headers the filters leave: the route is
    // always found again after the service changed them.
    let clear_route_cache = flag(ctx, &mut msg, "clear_route_cache").unwrap_or(false);
    // Any status outside 100..=511 is Envoy's 403.
    let status_on_error = msg
        .get(ctx, "status_on_error")
        .and_then(|f| f.http_status(ctx))
        .filter(|code| (100..=511).contains(code))
        .unwrap_or(403);
    let filter_enabled = msg.get(ctx, "filter_enabled").map_or(1_000_000, |f| read_runtime_fraction(ctx, &f));
    let deny_at_disable = msg.get(ctx, "deny_at_disable").and_then(|f| read_feature_flag(ctx, &f)).unwrap_or(false);
    let stat_prefix = msg.get(ctx, "stat_prefix").and_then(|f| f.string(ctx)).unwrap_or_default();
    let allowed_headers = msg.get(ctx, "allowed_headers").map(|f| read_list_string_matcher(ctx, &f));
    let disallowed_headers = msg.get(ctx, "disallowed_headers").map(|f| read_list_string_matcher(ctx, &f));
    let charge_cluster_response_stats =
        msg.get(ctx, "charge_cluster_response_stats").and_then(|f| f.bool_value(ctx)).unwrap_or(true);
    let with_request_body = msg.get(ctx, "with_request_body").and_then(|f| read_buffer_settings(ctx, &f));
    let max_denied_response_body_bytes =
        msg.get(ctx, "max_denied_response_body_bytes").and_then(|f| f.unsigned(ctx, u64::from(u32::MAX))).unwrap_or(0);
    for name in ["include_peer_certificate", "include_tls_session", "encode_raw_headers", "validate_mutations"] {
        if flag(ctx, &mut msg, name) == Some(true) {
            ctx.error(&msg.origin().with_child(name), "not supported by wasmproxy (only false)");
        }
    }
    // Dynamic metadata the service returns has nowhere to go in wasmproxy: only off reads.
    if let Some(f) = msg.get(ctx, "enable_dynamic_metadata_ingestion")
        && f.bool_value(ctx) != Some(false)
    {
        f.error(ctx, "not supported by wasmproxy (only false: dynamic metadata from the service is not kept)");
    }
    let origin = msg.origin().clone();
    msg.finish(ctx);
    let mut service = service?;
    // The deprecated `authorization_request.allowed_headers` and `allowed_headers` are one
    // setting.
    let mut allowed_headers = allowed_headers;
    if let AuthzService::Http(http) = &mut service
        && let Some(legacy) = http.legacy_allowed_headers.take()
    {
        if allowed_headers.is_some() {
            ctx.error(&origin.with_child("allowed_headers"), "Invalid duplicate configuration for allowed_headers.");
        }
        allowed_headers = Some(legacy);
    }
    Some(ExtAuthz {
        service,
        failure_mode_allow,
        failure_mode_allow_header_add,
        clear_route_cache,
        status_on_error,
        filter_enabled,
        deny_at_disable,
        stat_prefix,
        allowed_headers,
        disallowed_headers: disallowed_headers.unwrap_or_default(),
        charge_cluster_response_stats,
        max_denied_response_body_bytes: max_denied_response_body_bytes as usize,
        with_request_body,
    })
}

/// `with_request_body`: the most body bytes sent, and whether as bytes (gRPC).
fn read_buffer_settings(ctx: &mut Ctx, field: &Field<'_>) -> Option<BodySettings> {
    let mut msg = field.message(ctx, BUFFER_SETTINGS)?;
    let max = read_max_request_bytes(ctx, &mut msg);
    if let Some(f) = msg.get(ctx, "allow_partial_message")
        && f.bool(ctx) == Some(true)
    {
        f.error(ctx, "not supported by wasmproxy (only false: the whole body, or 413)");
    }
    let pack_as_bytes = msg.get(ctx, "pack_as_bytes").and_then(|f| f.bool(ctx)).unwrap_or(false);
    msg.finish(ctx);
    Some(BodySettings { max_request_bytes: max?, pack_as_bytes })
}

/// An `ExtAuthzPerRoute` (opened with [`EXT_AUTHZ_PER_ROUTE`]): `disabled`, or
/// `check_settings` with context extensions.
pub(crate) fn read_ext_authz_per_route(ctx: &mut Ctx, mut msg: Msg<'_>) -> Option<ExtAuthzPerRoute> {
    msg.at_most_one(ctx, &["disabled", "check_settings"]);
    let disabled = msg.get(ctx, "disabled").and_then(|f| f.bool(ctx));
    let settings = msg.get(ctx, "check_settings");
    if disabled.is_none() && settings.is_none() {
        ctx.error(msg.origin(), "one of disabled or check_settings is required");
    }
    if disabled == Some(false) {
        ctx.error(&msg.origin().with_child("disabled"), "must be true (or give check_settings)");
    }
    let mut context_extensions = Vec::new();
    let (mut with_request_body, mut disable_request_body_buffering) = (None, false);
    if let Some(f) = settings
        && let Some(mut s) = f.message(ctx, CHECK_SETTINGS)
    {
        for (key, value) in s.get(ctx, "context_extensions").map(|f| f.map_entries(ctx)).unwrap_or_default() {
            if let Some(value) = value.string(ctx) {
                context_extensions.push((key, value));
            }
        }
        s.at_most_one(ctx, &["disable_request_body_buffering", "with_request_body"]);
        disable_request_body_buffering =
            s.get(ctx, "disable_request_body_buffering").and_then(|f| f.bool(ctx)).unwrap_or(false);
        with_request_body =
            s.get(ctx, "with_request_body").and_then(|f| read_buffer_settings(ctx, &f)).map(|b| b.max_request_bytes);
        s.finish(ctx);
    }
    msg.finish(ctx);
    Some(ExtAuthzPerRoute {
        disabled: disabled.unwrap_or(false),
        context_extensions,
        with_request_body,
        disable_request_body_buffering,
    })
}

/// `http_service`: the server, the path prefix, the headers sent and taken back.
fn read_http_service(ctx: &mut Ctx, field: &Field<'_>) -> Option<HttpAuthzService> {
    let mut msg = field.message(ctx, HTTP_SERVICE)?;
    let server = msg.required(ctx, "server_uri").and_then(|f| read_http_uri(ctx, &f));
    let path_prefix = msg.get(ctx, "path_prefix").and_then(|f| f.string(ctx)).unwrap_or_default();
    if !path_prefix.is_empty() && !path_prefix.starts_with('/') {
        ctx.error(&msg.origin().with_child("path_prefix"), "must start with /");
    }
    let (mut legacy_allowed_headers, mut headers_to_add) = (None, Vec::new());
    if let Some(f) = msg.get(ctx, "authorization_request")
        && let Some(mut request) = f.message(ctx, AUTHORIZATION_REQUEST)
    {
        legacy_allowed_headers = request.get(ctx, "allowed_headers").map(|f| read_list_string_matcher(ctx, &f));
        for header in request.get(ctx, "headers_to_add").map(|f| f.list()).unwrap_or_default() {
            if let Some(pair) = read_header_value(ctx, &header) {
                headers_to_add.push(pair);
            }
        }
        request.finish(ctx);
    }
    let mut service = HttpAuthzService {
        server: server?,
        path_prefix,
        headers_to_add,
        legacy_allowed_headers,
        allowed_upstream_headers: Vec::new(),
        allowed_upstream_headers_to_append: Vec::new(),
        allowed_client_headers: Vec::new(),
        allowed_client_headers_on_success: Vec::new(),
    };
    if let Some(f) = msg.get(ctx, "authorization_response")
        && let Some(mut response) = f.message(ctx, AUTHORIZATION_RESPONSE)
    {
        let mut list = |ctx: &mut Ctx, name: &str| {
            response.get(ctx, name).map(|f| read_list_string_matcher(ctx, &f)).unwrap_or_default()
        };
        service.allowed_upstream_headers = list(ctx, "allowed_upstream_headers");
        service.allowed_upstream_headers_to_append = list(ctx, "allowed_upstream_headers_to_append");
        service.allowed_client_headers = list(ctx, "allowed_client_headers");
        service.allowed_client_headers_on_success = list(ctx, "allowed_client_headers_on_success");
        response.finish(ctx);
    }
    msg.finish(ctx);
    Some(service)
}

/// A `ListStringMatcher`'s patterns.
fn read_list_string_matcher(ctx: &mut Ctx, field: &Field<'_>) -> Vec<ValueMatch> {
    let Some(mut msg) = field.message(ctx, LIST_STRING_MATCHER) else { return Vec::new() };
    let patterns = msg.get(ctx, "patterns").map(|f| f.list()).unwrap_or_default();
    let matchers = patterns.iter().filter_map(|p| read_string_matcher(ctx, p)).collect();
    msg.finish(ctx);
    matchers
}

/// A `HeaderValue` to add to the check request: a literal key and value.
fn read_header_value(ctx: &mut Ctx, field: &Field<'_>) -> Option<(String, String)> {
    let mut msg = field.message(ctx, HEADER_VALUE)?;
    let key = msg.required(ctx, "key").and_then(|f| f.string(ctx)).map(|k| k.to_ascii_lowercase());
    let value = msg.get(ctx, "value").and_then(|f| {
        let value = f.string(ctx)?;
        if value.contains('%') {
            f.error(ctx, "substitution formats are not supported by wasmproxy here (a literal value only)");
            return None;
        }
        Some(value)
    });
    msg.finish(ctx);
    let key = key?;
    if key.is_empty() {
        ctx.error(&field.origin().with_child("key"), "must not be empty");
        return None;
    }
    Some((key, value.unwrap_or_default()))
}
