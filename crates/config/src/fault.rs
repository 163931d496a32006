//! `envoy.filters.http.fault`: delays and aborts injected into a share of requests (or as
//! their headers ask), in the filter's configuration or a route's. Response rate limits and
//! filter metadata are refused.

use crate::matcher::read_header_matcher;
use crate::model::{AbortKind, Fault, FaultAbort, FaultDelay, Percent};
use crate::reader::{Ctx, Field, Msg};
use crate::runtime::read_fractional_percent;

pub(crate) const FAULT_TYPE: &str = "envoy.extensions.filters.http.fault.v3.HTTPFault";

pub(crate) const FAULT: &[&str] = &[
    "delay",
    "abort",
    "upstream_cluster",
    "headers",
    "downstream_nodes",
    "max_active_faults",
    "response_rate_limit",
    "delay_percent_runtime",
    "abort_percent_runtime",
    "delay_duration_runtime",
    "abort_http_status_runtime",
    "max_active_faults_runtime",
    "response_rate_limit_percent_runtime",
    "abort_grpc_status_runtime",
    "disable_downstream_cluster_stats",
    "filter_metadata",
];
const RUNTIME_KEYS: &[&str] = &[
    "delay_percent_runtime",
    "abort_percent_runtime",
    "delay_duration_runtime",
    "abort_http_status_runtime",
    "max_active_faults_runtime",
    "abort_grpc_status_runtime",
];
const DELAY: &[&str] = &["fixed_delay", "header_delay", "percentage", "type"];
const ABORT: &[&str] = &["http_status", "grpc_status", "header_abort", "percentage"];
const NONE: Percent = Percent { numerator: 0, denominator: 100 };

/// An `HTTPFault` (opened with [`FAULT`]).
pub(crate) fn read_fault(ctx: &mut Ctx, mut msg: Msg<'_>) -> Option<Fault> {
    let delay = msg.get(ctx, "delay").and_then(|f| read_delay(ctx, &f));
    let abort = msg.get(ctx, "abort").and_then(|f| read_abort(ctx, &f));
    let upstream_cluster = msg.get(ctx, "upstream_cluster").and_then(|f| f.string(ctx)).unwrap_or_default();
    let headers = msg.get(ctx, "headers").map(|f| f.list()).unwrap_or_default();
    let headers = headers.iter().filter_map(|h| read_header_matcher(ctx, h)).collect();
    let nodes = msg.get(ctx, "downstream_nodes").map(|f| f.list()).unwrap_or_default();
    let downstream_nodes = nodes.iter().filter_map(|n| n.string(ctx)).collect();
    let max_active_faults = msg.get(ctx, "max_active_faults").and_then(|f| f.unsigned(ctx, u64::from(u32::MAX)));
    let disable_downstream_cluster_stats =
        msg.get(ctx, "disable_downstream_cluster_stats").and_then(|f| f.bool(ctx)).unwrap_or(false);
    for key in RUNTIME_KEYS {
        msg.ignore_with_warning(ctx, key, "wasmproxy does not look runtime keys up: the configured values apply");
    }
    msg.finish(ctx);
    Some(Fault {
        delay,
        abort,
        upstream_cluster,
        headers,
        downstream_nodes,
        max_active_faults,
        disable_downstream_cluster_stats,
    })
}

/// `delay`: `fixed_delay` or `header_delay`, and the share of requests.
fn read_delay(ctx: &mut Ctx, field: &Field<'_>) -> Option<FaultDelay> {
    let mut msg = field.message(ctx, DELAY)?;
    msg.at_most_one(ctx, &["fixed_delay", "header_delay"]);
    let fixed = if let Some(f) = msg.get(ctx, "fixed_delay") {
        Some(f.duration(ctx)?)
    } else if let Some(f) = msg.get(ctx, "header_delay") {
        f.message(ctx, &[]).map(|m| m.finish(ctx))?;
        None
    } else {
        ctx.error(msg.origin(), "one of fixed_delay or header_delay is required");
        return None;
    };
    let percentage = percentage(ctx, &mut msg);
    msg.finish(ctx);
    Some(FaultDelay { fixed, percentage })
}

/// `abort`: an HTTP status, a gRPC status or `header_abort`, and the share of requests.
fn read_abort(ctx: &mut Ctx, field: &Field<'_>) -> Option<FaultAbort> {
    let mut msg = field.message(ctx, ABORT)?;
    msg.at_most_one(ctx, &["http_status", "grpc_status", "header_abort"]);
    let kind = if let Some(f) = msg.get(ctx, "http_status") {
        let status = f.unsigned(ctx, 999)?;
        if !(200..600).contains(&status) {
            f.error(ctx, "must be at least 200 and below 600");
            return None;
        }
        AbortKind::Http(status as u16)
    } else if let Some(f) = msg.get(ctx, "grpc_status") {
        AbortKind::Grpc(f.unsigned(ctx, u64::from(u32::MAX))? as u32)
    } else if let Some(f) = msg.get(ctx, "header_abort") {
        f.message(ctx, &[]).map(|m| m.finish(ctx))?;
        AbortKind::Header
    } else {
        ctx.error(msg.origin(), "one of http_status, grpc_status or header_abort is required");
        return None;
    };
    let percentage = percentage(ctx, &mut msg);
    msg.finish(ctx);
    Some(FaultAbort { kind, percentage })
}

fn percentage(ctx: &mut Ctx, msg: &mut Msg<'_>) -> Percent {
    msg.get(ctx, "percentage").and_then(|f| read_fractional_percent(ctx, &f)).unwrap_or(NONE)
}
