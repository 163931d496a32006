//! `envoy.filters.http.local_ratelimit`: a token bucket shared by the workers, and buckets
//! for the descriptors routes' `rate_limits` make, in the filter's configuration or a
//! route's. The filter's own `rate_limits` and buckets per connection are refused.

use crate::header_mutation::read_header_value_option;
use crate::model::{HeaderToAdd, LocalDescriptor, LocalRateLimit, TokenBucket, VhRateLimits};
use crate::reader::{Ctx, Field, Msg};
use crate::runtime::read_runtime_fraction;

pub(crate) const LOCAL_RATE_LIMIT_TYPE: &str = "envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit";

pub(crate) const LOCAL_RATE_LIMIT: &[&str] = &[
    "stat_prefix",
    "status",
    "token_bucket",
    "filter_enabled",
    "filter_enforced",
    "request_headers_to_add_when_not_enforced",
    "response_headers_to_add",
    "descriptors",
    "stage",
    "local_rate_limit_per_downstream_connection",
    "local_cluster_rate_limit",
    "enable_x_ratelimit_headers",
    "vh_rate_limits",
    "always_consume_default_token_bucket",
    "rate_limited_as_resource_exhausted",
    "rate_limits",
    "max_dynamic_descriptors",
];
const TOKEN_BUCKET: &[&str] = &["max_tokens", "tokens_per_fill", "fill_interval"];
const HTTP_STATUS: &[&str] = &["code"];
const X_RATELIMIT: &[(&str, i64, Option<bool>)] = &[("OFF", 0, Some(false)), ("DRAFT_VERSION_03", 1, Some(true))];
const VH_RATE_LIMITS: &[(&str, i64, Option<VhRateLimits>)] = &[
    ("OVERRIDE", 0, Some(VhRateLimits::Override)),
    ("INCLUDE", 1, Some(VhRateLimits::Include)),
    ("IGNORE", 2, Some(VhRateLimits::Ignore)),
];
const DESCRIPTOR: &[&str] = &["entries", "token_bucket", "shadow_mode"];
const ENTRY: &[&str] = &["key", "value"];
const DEFAULT_FILL_TIMER: &str = "local rate limit token bucket fill timer must be >= 50ms";
const DESCRIPTOR_FILL_TIMER: &str = "local rate limit descriptor token bucket fill timer must be >= 50ms";

/// A `LocalRateLimit` (opened with [`LOCAL_RATE_LIMIT`]); `per_route` ones must have a
/// token bucket, as in Envoy.
pub(crate) fn read_local_rate_limit(ctx: &mut Ctx, mut msg: Msg<'_>, per_route: bool) -> Option<LocalRateLimit> {
    let stat_prefix = msg.required(ctx, "stat_prefix").and_then(|f| f.string(ctx)).unwrap_or_default();
    if stat_prefix.is_empty() && msg.has("stat_prefix") {
        ctx.error(&msg.origin().with_child("stat_prefix"), "must not be empty");
    }
    let status = msg.get(ctx, "status").and_then(|f| read_http_status(ctx, &f)).unwrap_or(429);
    let token_bucket = msg.get(ctx, "token_bucket").and_then(|f| read_token_bucket(ctx, &f, DEFAULT_FILL_TIMER));
    if per_route && token_bucket.is_none() && !msg.has("token_bucket") {
        ctx.error(msg.origin(), "local rate limit token bucket must be set for per filter configs");
    }
    let filter_enabled = msg.get(ctx, "filter_enabled").map_or(0, |f| read_runtime_fraction(ctx, &f));
    let filter_enforced = msg.get(ctx, "filter_enforced").map_or(0, |f| read_runtime_fraction(ctx, &f));
    let response_headers_to_add = header_options(ctx, &mut msg, "response_headers_to_add");
    let request_headers_when_not_enforced = header_options(ctx, &mut msg, "request_headers_to_add_when_not_enforced");
    let x_ratelimit_headers =
        msg.get(ctx, "enable_x_ratelimit_headers").and_then(|f| f.enumeration(ctx, X_RATELIMIT)).unwrap_or(false);
    let grpc_resource_exhausted =
        msg.get(ctx, "rate_limited_as_resource_exhausted").and_then(|f| f.bool(ctx)).unwrap_or(false);
    if let Some(f) = msg.get(ctx, "local_rate_limit_per_downstream_connection")
        && f.bool(ctx) == Some(true)
    {
        f.error(ctx, "not supported by wasmproxy (only one bucket for every connection)");
    }
    let descriptors = read_descriptors(ctx, &mut msg);
    let stage = msg.get(ctx, "stage").and_then(|f| f.unsigned(ctx, 10)).unwrap_or(0) as u32;
    let vh_rate_limits = msg
        .get(ctx, "vh_rate_limits")
        .and_then(|f| f.enumeration(ctx, VH_RATE_LIMITS))
        .unwrap_or(VhRateLimits::Override);
    let always_consume_default =
        msg.get(ctx, "always_consume_default_token_bucket").and_then(|f| f.bool_value(ctx)).unwrap_or(true);
    let max_dynamic_descriptors = msg
        .get(ctx, "max_dynamic_descriptors")
        .and_then(|f| f.unsigned(ctx, u64::from(u32::MAX)))
        .map_or(20, |n| n.max(1) as u32);
    msg.finish(ctx);
    Some(LocalRateLimit {
        stat_prefix,
        status,
        token_bucket,
        filter_enabled,
        filter_enforced,
        response_headers_to_add,
        request_headers_when_not_enforced,
        x_ratelimit_headers,
        grpc_resource_exhausted,
        descriptors,
        stage,
        vh_rate_limits,
        always_consume_default,
        max_dynamic_descriptors,
    })
}

/// `descriptors`: each an entry list (an empty value matches any) and its bucket; no two
/// alike.
fn read_descriptors(ctx: &mut Ctx, msg: &mut Msg<'_>) -> Vec<LocalDescriptor> {
    let mut descriptors: Vec<LocalDescriptor> = Vec::new();
    for field in msg.get(ctx, "descriptors").map(|f| f.list()).unwrap_or_default() {
        let Some(mut d) = field.message(ctx, DESCRIPTOR) else { continue };
        let mut entries = Vec::new();
        for e in d.required(ctx, "entries").map(|f| f.list()).unwrap_or_default() {
            let Some(mut m) = e.message(ctx, ENTRY) else { continue };
            let key = m.required(ctx, "key").and_then(|f| f.string(ctx));
            let value = m.get(ctx, "value").and_then(|f| f.string(ctx)).unwrap_or_default();
            m.finish(ctx);
            entries.extend(key.map(|k| (k, value)));
        }
        let bucket = d.required(ctx, "token_bucket").and_then(|f| read_token_bucket(ctx, &f, DESCRIPTOR_FILL_TIMER));
        let origin = d.origin().clone();
        d.finish(ctx);
        if entries.is_empty() {
            ctx.error(&origin.with_child("entries"), "at least one entry is required");
            continue;
        }
        let Some(token_bucket) = bucket else { continue };
        if descriptors.iter().any(|other| other.entries == entries) {
            let text: Vec<String> = entries.iter().map(|(k, v)| format!("{k}={v}")).collect();
            ctx.error(&origin, format!("duplicate descriptor in the local rate descriptor: {}", text.join(", ")));
            continue;
        }
        descriptors.push(LocalDescriptor { entries, token_bucket });
    }
    descriptors
}

fn header_options(ctx: &mut Ctx, msg: &mut Msg<'_>, name: &str) -> Vec<HeaderToAdd> {
    let list = msg.get(ctx, name).map(|f| f.list()).unwrap_or_default();
    if list.len() > 10 {
        ctx.error(&msg.origin().with_child(name), "at most 10 headers");
    }
    list.iter().filter_map(|h| read_header_value_option(ctx, h)).collect()
}

/// A `TokenBucket`: at least one token, filled every 50 ms or more slowly (`too_fast`
/// otherwise).
fn read_token_bucket(ctx: &mut Ctx, field: &Field<'_>, too_fast: &str) -> Option<TokenBucket> {
    let mut msg = field.message(ctx, TOKEN_BUCKET)?;
    let max_tokens = msg.required(ctx, "max_tokens").and_then(|f| f.unsigned(ctx, u64::from(u32::MAX)));
    let tokens_per_fill = msg.get(ctx, "tokens_per_fill").and_then(|f| f.unsigned(ctx, u64::from(u32::MAX)));
    let fill_interval = msg.required(ctx, "fill_interval").and_then(|f| f.duration(ctx));
    let origin = msg.origin().clone();
    msg.finish(ctx);
    let (max_tokens, fill_interval) = (max_tokens? as u32, fill_interval?);
    if max_tokens == 0 {
        ctx.error(&origin.with_child("max_tokens"), "must be greater than 0");
    }
    if tokens_per_fill == Some(0) {
        ctx.error(&origin.with_child("tokens_per_fill"), "must be greater than 0");
    }
    if fill_interval.is_zero() {
        ctx.error(&origin.with_child("fill_interval"), "must be greater than 0s");
    } else if fill_interval < std::time::Duration::from_millis(50) {
        ctx.error(&origin.with_child("fill_interval"), too_fast);
    }
    Some(TokenBucket { max_tokens, tokens_per_fill: tokens_per_fill.map_or(1, |t| t as u32), fill_interval })
}

/// An `HttpStatus`: a code below 400 is 429, as Envoy's filter takes it.
fn read_http_status(ctx: &mut Ctx, field: &Field<'_>) -> Option<u16> {
    let mut msg = field.message(ctx, HTTP_STATUS)?;
    let code = msg.required(ctx, "code").and_then(|f| f.unsigned(ctx, 599));
    let origin = msg.origin().clone();
    msg.finish(ctx);
    let code = code? as u16;
    if code < 100 {
        ctx.error(&origin.with_child("code"), "must be a defined HTTP status code");
        return None;
    }
    Some(if code < 400 { 429 } else { code })
}
