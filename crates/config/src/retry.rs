//! `retry_policy` of a virtual host or a route: when the router tries again, how often,
//! how long each try may take, how long it waits in between, and where the next try goes.

use crate::model::{RetryOn, RetryPolicy};
use crate::reader::{Ctx, Field};

const RETRY_POLICY: &[&str] = &[
    "retry_on",
    "num_retries",
    "per_try_timeout",
    "per_try_idle_timeout",
    "retry_priority",
    "retry_host_predicate",
    "retry_options_predicates",
    "host_selection_retry_max_attempts",
    "retriable_status_codes",
    "retry_back_off",
    "rate_limited_retry_back_off",
    "retriable_headers",
    "retriable_request_headers",
];
const RETRY_BACK_OFF: &[&str] = &["base_interval", "max_interval"];
const HOST_PREDICATE: &[&str] = &["name", "typed_config"];
const PREVIOUS_HOSTS: &str = "envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate";

/// Reads a `RetryPolicy`.
pub(crate) fn read_retry_policy(ctx: &mut Ctx, field: &Field<'_>) -> Option<RetryPolicy> {
    let mut msg = field.message(ctx, RETRY_POLICY)?;
    let mut policy = RetryPolicy::default();
    if let Some(f) = msg.get(ctx, "retry_on")
        && let Some(text) = f.string(ctx)
    {
        match RetryOn::parse(&text) {
            Ok(on) => policy.retry_on = on,
            Err(unknown) => f.error(ctx, format!("{unknown:?} is not a retry condition wasmproxy knows")),
        }
    }
    if let Some(n) = msg.get(ctx, "num_retries").and_then(|f| f.unsigned(ctx, u64::from(u32::MAX))) {
        policy.num_retries = n as u32;
    }
    if let Some(d) = msg.get(ctx, "per_try_timeout").and_then(|f| f.duration(ctx)) {
        policy.per_try_timeout = (!d.is_zero()).then_some(d);
    }
    let codes = msg.get(ctx, "retriable_status_codes").map(|f| f.list()).unwrap_or_default();
    for code in codes {
        if let Some(c) = code.unsigned(ctx, 599) {
            policy.retriable_status_codes.push(c as u16);
        }
    }
    if let Some(f) = msg.get(ctx, "retry_back_off")
        && let Some(mut back_off) = f.message(ctx, RETRY_BACK_OFF)
    {
        let base = back_off.required(ctx, "base_interval").and_then(|f| f.duration(ctx));
        let max = back_off.get(ctx, "max_interval").and_then(|f| f.duration(ctx));
        let origin = back_off.origin().clone();
        back_off.finish(ctx);
        if let Some(base) = base {
            if base.is_zero() {
                ctx.error(&origin.with_child("base_interval"), "must be greater than 0s");
            }
            let max = max.unwrap_or(base * 10);
            if max < base {
                ctx.error(&origin.with_child("max_interval"), "must not be less than base_interval");
            }
            policy.back_off = (base, max);
        }
    }
    if let Some(f) = msg.get(ctx, "retry_host_predicate") {
        for item in f.list() {
            read_host_predicate(ctx, &item);
            policy.previous_hosts = true;
        }
    }
    if let Some(n) =
        msg.get(ctx, "host_selection_retry_max_attempts").and_then(|f| f.unsigned(ctx, u64::from(u32::MAX)))
    {
        policy.host_selection_retry_max_attempts = n as u32;
    }
    let matchers = |ctx: &mut Ctx, msg: &mut crate::reader::Msg<'_>, name: &str| {
        let items = msg.get(ctx, name).map(|f| f.list()).unwrap_or_default();
        items.iter().filter_map(|item| crate::matcher::read_header_matcher(ctx, item)).collect::<Vec<_>>()
    };
    policy.retriable_headers = matchers(ctx, &mut msg, "retriable_headers");
    policy.retriable_request_headers = matchers(ctx, &mut msg, "retriable_request_headers");
    msg.finish(ctx);
    Some(policy)
}

/// A `retry_host_predicate` entry: only `previous_hosts` (the next try goes to another
/// endpoint, if there is one).
fn read_host_predicate(ctx: &mut Ctx, field: &Field<'_>) {
    let Some(mut msg) = field.message(ctx, HOST_PREDICATE) else { return };
    msg.ignore(ctx, "name");
    if let Some(f) = msg.required(ctx, "typed_config")
        && let Some(any) = f.any(ctx)
    {
        if any.type_name == PREVIOUS_HOSTS {
            if let Some(inner) = any.message(ctx, &[]) {
                inner.finish(ctx);
            }
        } else {
            f.error(ctx, format!("retry host predicate {} is not supported by wasmproxy", any.type_name));
        }
    }
    msg.finish(ctx);
}

impl RetryOn {
    /// `retry_on` (or `x-envoy-retry-on`): conditions separated by commas; the unknown
    /// one if any.
    pub fn parse(text: &str) -> Result<RetryOn, String> {
        let mut on = RetryOn::default();
        for word in text.split(',').map(str::trim).filter(|w| !w.is_empty()) {
            let bit = match word {
                "5xx" => RetryOn::FIVE_XX,
                "gateway-error" => RetryOn::GATEWAY_ERROR,
                "reset" => RetryOn::RESET,
                "connect-failure" => RetryOn::CONNECT_FAILURE,
                "retriable-4xx" => RetryOn::RETRIABLE_4XX,
                "refused-stream" => RetryOn::REFUSED_STREAM,
                "retriable-status-codes" => RetryOn::RETRIABLE_STATUS_CODES,
                "envoy-ratelimited" => RetryOn::ENVOY_RATELIMITED,
                "cancelled" => RetryOn::GRPC_CANCELLED,
                "deadline-exceeded" => RetryOn::GRPC_DEADLINE_EXCEEDED,
                "internal" => RetryOn::GRPC_INTERNAL,
                "resource-exhausted" => RetryOn::GRPC_RESOURCE_EXHAUSTED,
                "retriable-headers" => RetryOn::RETRIABLE_HEADERS,
                "unavailable" => RetryOn::GRPC_UNAVAILABLE,
                other => return Err(other.to_string()),
            };
            on.0 |= bit;
        }
        Ok(on)
    }
}
