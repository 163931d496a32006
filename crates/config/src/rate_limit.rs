//! Global rate limiting: the `rate_limits` of virtual hosts and routes (the descriptors
//! their actions make) and the `envoy.filters.http.ratelimit` filter that sends them to a
//! rate limit service (`envoy.service.ratelimit.v3`).

use std::time::Duration;

use crate::matcher::read_header_matcher;
use crate::model::{GrpcService, RateLimitAction, RateLimitFilter, RateLimitPolicy, RequestType};
use crate::reader::{Ctx, Field, Msg};
use crate::services::read_grpc_service;

pub(crate) const RATE_LIMIT_TYPE: &str = "envoy.extensions.filters.http.ratelimit.v3.RateLimit";
pub(crate) const RATE_LIMIT: &[&str] = &[
    "domain",
    "stage",
    "request_type",
    "timeout",
    "failure_mode_deny",
    "rate_limited_as_resource_exhausted",
    "rate_limit_service",
    "enable_x_ratelimit_headers",
    "disable_x_envoy_ratelimited_header",
    "rate_limited_status",
    "response_headers_to_add",
    "status_on_error",
    "stat_prefix",
    "filter_enabled",
    "filter_enforced",
    "failure_mode_deny_percent",
    "rate_limits",
];
const SERVICE: &[&str] = &["grpc_service", "transport_api_version"];
const POLICY: &[&str] = &["stage", "disable_key", "actions", "limit", "hits_addend", "apply_on_stream_done"];
const ACTION: &[&str] = &[
    "source_cluster",
    "destination_cluster",
    "request_headers",
    "query_parameters",
    "remote_address",
    "generic_key",
    "header_value_match",
    "dynamic_metadata",
    "metadata",
    "extension",
    "masked_remote_address",
    "query_parameter_value_match",
];
const REQUEST_HEADERS: &[&str] = &["header_name", "descriptor_key", "skip_if_absent"];
const GENERIC_KEY: &[&str] = &["descriptor_value", "descriptor_key"];
const HEADER_VALUE_MATCH: &[&str] = &["descriptor_key", "descriptor_value", "expect_match", "headers"];
const API_VERSION: &[(&str, i64, Option<bool>)] =
    &[("AUTO", 0, Some(true)), ("V2", 1, Some(false)), ("V3", 2, Some(true))];
const X_RATELIMIT: &[(&str, i64, Option<bool>)] = &[("OFF", 0, Some(false)), ("DRAFT_VERSION_03", 1, Some(true))];

/// The `rate_limits` of `msg` (a virtual host or a route action).
pub(crate) fn read_rate_limits(ctx: &mut Ctx, msg: &mut Msg<'_>) -> Vec<RateLimitPolicy> {
    let items = msg.get(ctx, "rate_limits").map(|f| f.list()).unwrap_or_default();
    items.iter().filter_map(|item| read_policy(ctx, item)).collect()
}

/// One `RateLimit` policy: its stage and the actions that make its descriptor.
fn read_policy(ctx: &mut Ctx, field: &Field<'_>) -> Option<RateLimitPolicy> {
    let mut msg = field.message(ctx, POLICY)?;
    let stage = msg.get(ctx, "stage").and_then(|f| f.unsigned(ctx, 10)).unwrap_or(0) as u32;
    msg.ignore_with_warning(ctx, "disable_key", "wasmproxy does not look runtime keys up: the policy always applies");
    let actions = msg.required(ctx, "actions").map(|f| f.list()).unwrap_or_default();
    let actions: Vec<RateLimitAction> = actions.iter().filter_map(|a| read_action(ctx, a)).collect();
    let origin = msg.origin().clone();
    msg.finish(ctx);
    if actions.is_empty() {
        ctx.error(&origin.with_child("actions"), "at least one action is required");
        return None;
    }
    Some(RateLimitPolicy { stage, actions })
}

/// One `RateLimit.Action`.
fn read_action(ctx: &mut Ctx, field: &Field<'_>) -> Option<RateLimitAction> {
    let mut msg = field.message(ctx, ACTION)?;
    msg.at_most_one(ctx, ACTION);
    let empty = |ctx: &mut Ctx, f: Field<'_>| f.message(ctx, &[]).map(|m| m.finish(ctx));
    let action = if let Some(f) = msg.get(ctx, "source_cluster") {
        empty(ctx, f).map(|()| RateLimitAction::SourceCluster)
    } else if let Some(f) = msg.get(ctx, "destination_cluster") {
        empty(ctx, f).map(|()| RateLimitAction::DestinationCluster)
    } else if let Some(f) = msg.get(ctx, "remote_address") {
        empty(ctx, f).map(|()| RateLimitAction::RemoteAddress)
    } else if let Some(f) = msg.get(ctx, "request_headers") {
        f.message(ctx, REQUEST_HEADERS).and_then(|mut m| {
            let header = m.required(ctx, "header_name").and_then(|f| f.string(ctx)).map(|h| h.to_ascii_lowercase());
            let key = m.required(ctx, "descriptor_key").and_then(|f| f.string(ctx));
            let skip_if_absent = m.get(ctx, "skip_if_absent").and_then(|f| f.bool(ctx)).unwrap_or(false);
            m.finish(ctx);
            Some(RateLimitAction::RequestHeaders { header: header?, key: key?, skip_if_absent })
        })
    } else if let Some(f) = msg.get(ctx, "generic_key") {
        f.message(ctx, GENERIC_KEY).and_then(|mut m| {
            let value = m.required(ctx, "descriptor_value").and_then(|f| f.string(ctx));
            let key = m.get(ctx, "descriptor_key").and_then(|f| f.string(ctx)).filter(|k| !k.is_empty());
            m.finish(ctx);
            Some(RateLimitAction::GenericKey { key: key.unwrap_or_else(|| "generic_key".into()), value: value? })
        })
    } else if let Some(f) = msg.get(ctx, "header_value_match") {
        f.message(ctx, HEADER_VALUE_MATCH).and_then(|mut m| {
            let key = m.get(ctx, "descriptor_key").and_then(|f| f.string(ctx)).filter(|k| !k.is_empty());
            let value = m.required(ctx, "descriptor_value").and_then(|f| f.string(ctx));
            let expect_match = m.get(ctx, "expect_match").and_then(|f| f.bool_value(ctx)).unwrap_or(true);
            let headers = m.required(ctx, "headers").map(|f| f.list()).unwrap_or_default();
            let headers = headers.iter().filter_map(|h| read_header_matcher(ctx, h)).collect();
            m.finish(ctx);
            Some(RateLimitAction::HeaderValueMatch {
                key: key.unwrap_or_else(|| "header_match".into()),
                value: value?,
                expect_match,
                headers,
            })
        })
    } else {
        if !ACTION.iter().any(|n| msg.has(n)) {
            ctx.error(msg.origin(), "an action is required");
        }
        None
    };
    msg.finish(ctx);
    action
}

/// The `ratelimit` filter's `RateLimit` (opened with [`RATE_LIMIT`]).
pub(crate) fn read_rate_limit_filter(ctx: &mut Ctx, mut msg: Msg<'_>) -> Option<RateLimitFilter> {
    let domain = msg.required(ctx, "domain").and_then(|f| f.string(ctx));
    let stage = msg.get(ctx, "stage").and_then(|f| f.unsigned(ctx, 10)).unwrap_or(0) as u32;
    let request_type = match msg.get(ctx, "request_type") {
        None => RequestType::Both,
        Some(f) => match f.string(ctx).as_deref() {
            None | Some("" | "both") => RequestType::Both,
            Some("internal") => RequestType::Internal,
            Some("external") => RequestType::External,
            Some(other) => {
                f.error(ctx, format!("{other:?} is not one of internal, external, both"));
                RequestType::Both
            }
        },
    };
    let timeout = msg.get(ctx, "timeout").and_then(|f| f.duration(ctx)).unwrap_or(Duration::from_millis(20));
    let flag =
        |ctx: &mut Ctx, msg: &mut Msg<'_>, name: &str| msg.get(ctx, name).and_then(|f| f.bool(ctx)).unwrap_or(false);
    let failure_mode_deny = flag(ctx, &mut msg, "failure_mode_deny");
    let resource_exhausted = flag(ctx, &mut msg, "rate_limited_as_resource_exhausted");
    let disable_x_envoy_ratelimited_header = flag(ctx, &mut msg, "disable_x_envoy_ratelimited_header");
    let service = msg.required(ctx, "rate_limit_service").and_then(|f| read_service(ctx, &f));
    if let Some(f) = msg.get(ctx, "enable_x_ratelimit_headers")
        && f.enumeration(ctx, X_RATELIMIT) == Some(true)
    {
        f.error(ctx, "not supported by wasmproxy (only OFF)");
    }
    // Below 400 Envoy answers 429.
    let rate_limited_status =
        msg.get(ctx, "rate_limited_status").and_then(|f| f.http_status(ctx)).filter(|s| *s >= 400).unwrap_or(429);
    let status_on_error = msg.get(ctx, "status_on_error").and_then(|f| f.http_status(ctx)).filter(|s| *s >= 400);
    msg.finish(ctx);
    Some(RateLimitFilter {
        domain: domain?,
        stage,
        request_type,
        timeout,
        failure_mode_deny,
        resource_exhausted,
        service: service?,
        disable_x_envoy_ratelimited_header,
        rate_limited_status,
        status_on_error: status_on_error.unwrap_or(500),
    })
}

/// `rate_limit_service`: a gRPC service, `V3`.
fn read_service(ctx: &mut Ctx, field: &Field<'_>) -> Option<GrpcService> {
    let mut msg = field.message(ctx, SERVICE)?;
    let service = msg.required(ctx, "grpc_service").and_then(|f| read_grpc_service(ctx, &f, false));
    if let Some(f) = msg.get(ctx, "transport_api_version")
        && f.enumeration(ctx, API_VERSION) == Some(false)
    {
        f.error(ctx, "V2 is not supported (use V3)");
    }
    msg.finish(ctx);
    service
}
