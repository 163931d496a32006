//! A cluster's `health_checks` (HTTP, TCP and gRPC) and `outlier_detection`.

use std::time::Duration;

use crate::format::Piece;
use crate::header_mutation::read_header_value_option;
use crate::model::{HealthCheck, HealthCheckKind, HttpHealthCheck, OutlierDetection};
use crate::reader::{Ctx, Field, Msg};

const HEALTH_CHECK: &[&str] = &[
    "timeout",
    "interval",
    "initial_jitter",
    "interval_jitter",
    "interval_jitter_percent",
    "unhealthy_threshold",
    "healthy_threshold",
    "alt_port",
    "reuse_connection",
    "http_health_check",
    "tcp_health_check",
    "grpc_health_check",
    "custom_health_check",
    "no_traffic_interval",
    "no_traffic_healthy_interval",
    "unhealthy_interval",
    "unhealthy_edge_interval",
    "healthy_edge_interval",
    "event_log_path",
    "event_logger",
    "event_service",
    "always_log_health_check_failures",
    "always_log_health_check_success",
    "tls_options",
    "transport_socket_match_criteria",
];
const HTTP_HEALTH_CHECK: &[&str] = &[
    "host",
    "path",
    "send",
    "receive",
    "response_buffer_size",
    "request_headers_to_add",
    "request_headers_to_remove",
    "expected_statuses",
    "retriable_statuses",
    "codec_client_type",
    "service_name_matcher",
    "method",
];
const TCP_HEALTH_CHECK: &[&str] = &["send", "receive", "proxy_protocol_config"];
const PAYLOAD: &[&str] = &["text", "binary"];
const GRPC_HEALTH_CHECK: &[&str] = &["service_name", "authority", "initial_metadata"];
const INT64_RANGE: &[&str] = &["start", "end"];
const CODEC: &[(&str, i64, Option<bool>)] = &[("HTTP1", 0, Some(false)), ("HTTP2", 1, Some(true)), ("HTTP3", 2, None)];
const METHODS: &[&str] = &["GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "TRACE", "PATCH"];
const OUTLIER_DETECTION: &[&str] = &[
    "consecutive_5xx",
    "interval",
    "base_ejection_time",
    "max_ejection_percent",
    "enforcing_consecutive_5xx",
    "enforcing_success_rate",
    "success_rate_minimum_hosts",
    "success_rate_request_volume",
    "success_rate_stdev_factor",
    "consecutive_gateway_failure",
    "enforcing_consecutive_gateway_failure",
    "split_external_local_origin_errors",
    "consecutive_local_origin_failure",
    "enforcing_consecutive_local_origin_failure",
    "enforcing_local_origin_success_rate",
    "failure_percentage_threshold",
    "enforcing_failure_percentage",
    "enforcing_failure_percentage_local_origin",
    "failure_percentage_minimum_hosts",
    "failure_percentage_request_volume",
    "max_ejection_time",
    "max_ejection_time_jitter",
    "successful_active_health_check_uneject_host",
    "monitors",
    "always_eject_one_host",
    "detect_degraded_hosts",
];
/// Envoy's default `no_traffic_interval`.
const NO_TRAFFIC_INTERVAL: Duration = Duration::from_secs(60);

/// `health_checks`: at most one entry (wasmproxy runs one checker per cluster).
pub(crate) fn read_health_checks(ctx: &mut Ctx, field: &Field<'_>) -> Vec<HealthCheck> {
    let items = field.list();
    if items.len() > 1 {
        field.error(ctx, "more than one health check per cluster is not supported by wasmproxy");
    }
    items.iter().filter_map(|item| read_health_check(ctx, item)).collect()
}

fn read_health_check(ctx: &mut Ctx, field: &Field<'_>) -> Option<HealthCheck> {
    let mut msg = field.message(ctx, HEALTH_CHECK)?;
    let timeout = msg.required(ctx, "timeout").and_then(|f| positive_duration(ctx, &f));
    let interval = msg.required(ctx, "interval").and_then(|f| positive_duration(ctx, &f));
    let unhealthy_threshold =
        msg.required(ctx, "unhealthy_threshold").and_then(|f| f.unsigned(ctx, u64::from(u32::MAX)));
    let healthy_threshold = msg.required(ctx, "healthy_threshold").and_then(|f| f.unsigned(ctx, u64::from(u32::MAX)));
    let duration =
        |ctx: &mut Ctx, msg: &mut Msg<'_>, name: &str| msg.get(ctx, name).and_then(|f| positive_duration(ctx, &f));
    let initial_jitter = msg.get(ctx, "initial_jitter").and_then(|f| f.duration(ctx)).unwrap_or_default();
    let interval_jitter = msg.get(ctx, "interval_jitter").and_then(|f| f.duration(ctx)).unwrap_or_default();
    let interval_jitter_percent =
        msg.get(ctx, "interval_jitter_percent").and_then(|f| f.unsigned(ctx, u64::from(u32::MAX))).unwrap_or(0) as u32;
    let reuse_connection = msg.get(ctx, "reuse_connection").and_then(|f| f.bool_value(ctx)).unwrap_or(true);
    let no_traffic_interval = duration(ctx, &mut msg, "no_traffic_interval").unwrap_or(NO_TRAFFIC_INTERVAL);
    let no_traffic_healthy_interval = duration(ctx, &mut msg, "no_traffic_healthy_interval");
    let unhealthy_interval = duration(ctx, &mut msg, "unhealthy_interval");
    let unhealthy_edge_interval = duration(ctx, &mut msg, "unhealthy_edge_interval");
    let healthy_edge_interval = duration(ctx, &mut msg, "healthy_edge_interval");
    let always_log_failures =
        msg.get(ctx, "always_log_health_check_failures").and_then(|f| f.bool(ctx)).unwrap_or(false);
    msg.at_most_one(ctx, &["http_health_check", "tcp_health_check", "grpc_health_check", "custom_health_check"]);
    let kind = if let Some(f) = msg.get(ctx, "http_health_check") {
        read_http(ctx, &f).map(HealthCheckKind::Http)
    } else if let Some(f) = msg.get(ctx, "tcp_health_check") {
        read_tcp(ctx, &f)
    } else if let Some(f) = msg.get(ctx, "grpc_health_check") {
        read_grpc(ctx, &f)
    } else {
        if !msg.has("custom_health_check") {
            ctx.error(
                msg.origin(),
                "a health check needs one of http_health_check, tcp_health_check, grpc_health_check",
            );
        }
        None
    };
    msg.finish(ctx);
    Some(HealthCheck {
        timeout: timeout?,
        interval: interval?,
        initial_jitter,
        interval_jitter,
        interval_jitter_percent,
        unhealthy_threshold: unhealthy_threshold? as u32,
        healthy_threshold: healthy_threshold? as u32,
        reuse_connection,
        no_traffic_interval,
        no_traffic_healthy_interval,
        unhealthy_interval,
        unhealthy_edge_interval,
        healthy_edge_interval,
        always_log_failures,
        kind: kind?,
    })
}

fn read_http(ctx: &mut Ctx, field: &Field<'_>) -> Option<HttpHealthCheck> {
    let mut msg = field.message(ctx, HTTP_HEALTH_CHECK)?;
    let host = msg.get(ctx, "host").and_then(|f| f.string(ctx)).unwrap_or_default();
    let path = msg.required(ctx, "path").and_then(|f| {
        let path = f.string(ctx)?;
        if path.is_empty() {
            f.error(ctx, "must not be empty");
            return None;
        }
        Some(path)
    });
    let method = match msg.get(ctx, "method") {
        Some(f) => f.string(ctx).and_then(|m| {
            let m = if m == "METHOD_UNSPECIFIED" { "GET".to_string() } else { m };
            if m == "CONNECT" || !METHODS.contains(&m.as_str()) {
                f.error(ctx, format!("{m} is not a method a health check can use"));
                return None;
            }
            Some(m)
        }),
        None => Some("GET".to_string()),
    };
    let mut headers_to_add = Vec::new();
    for item in msg.get(ctx, "request_headers_to_add").map(|f| f.list()).unwrap_or_default() {
        let Some(header) = read_header_value_option(ctx, &item) else { continue };
        if header.value.iter().any(|p| matches!(p, Piece::Op(..))) {
            item.error(ctx, "substitution formats in health check headers are not supported by wasmproxy");
            continue;
        }
        headers_to_add.push(header);
    }
    let headers_to_remove = msg
        .get(ctx, "request_headers_to_remove")
        .map(|f| f.list())
        .unwrap_or_default()
        .iter()
        .filter_map(|f| f.string(ctx).map(|n| n.to_ascii_lowercase()))
        .collect();
    let expected_statuses = msg.get(ctx, "expected_statuses").map(|f| read_ranges(ctx, &f)).unwrap_or_default();
    let expected_statuses = if expected_statuses.is_empty() { vec![(200, 201)] } else { expected_statuses };
    let retriable_statuses = msg.get(ctx, "retriable_statuses").map(|f| read_ranges(ctx, &f)).unwrap_or_default();
    let http2 = msg.get(ctx, "codec_client_type").and_then(|f| f.enumeration(ctx, CODEC)).unwrap_or(false);
    msg.finish(ctx);
    Some(HttpHealthCheck {
        host,
        path: path?,
        method: method?,
        headers_to_add,
        headers_to_remove,
        expected_statuses,
        retriable_statuses,
        http2,
    })
}

/// `expected_statuses` / `retriable_statuses`: `[start, end)` ranges within 100..=599.
fn read_ranges(ctx: &mut Ctx, field: &Field<'_>) -> Vec<(u16, u16)> {
    let mut ranges = Vec::new();
    for item in field.list() {
        let Some(mut m) = item.message(ctx, INT64_RANGE) else { continue };
        let start = m.get(ctx, "start").and_then(|f| f.unsigned(ctx, 1000)).unwrap_or(0);
        let end = m.get(ctx, "end").and_then(|f| f.unsigned(ctx, 1000)).unwrap_or(0);
        m.finish(ctx);
        if !(100..600).contains(&start) || !(101..=600).contains(&end) || start >= end {
            item.error(ctx, format!("[{start}, {end}) is not a range of HTTP status codes"));
            continue;
        }
        ranges.push((start as u16, end as u16));
    }
    ranges
}

fn read_tcp(ctx: &mut Ctx, field: &Field<'_>) -> Option<HealthCheckKind> {
    let mut msg = field.message(ctx, TCP_HEALTH_CHECK)?;
    let send = msg.get(ctx, "send").and_then(|f| read_payload(ctx, &f)).unwrap_or_default();
    let receive = msg
        .get(ctx, "receive")
        .map(|f| f.list())
        .unwrap_or_default()
        .iter()
        .filter_map(|f| read_payload(ctx, f))
        .collect();
    msg.finish(ctx);
    Some(HealthCheckKind::Tcp { send, receive })
}

/// A `Payload`: `text` in hex, or `binary` in base64.
fn read_payload(ctx: &mut Ctx, field: &Field<'_>) -> Option<Vec<u8>> {
    let mut msg = field.message(ctx, PAYLOAD)?;
    msg.at_most_one(ctx, PAYLOAD);
    let bytes = if let Some(f) = msg.get(ctx, "text") {
        f.string(ctx).and_then(|hex| {
            let decoded = (hex.len() % 2 == 0)
                .then(|| (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok()).collect())
                .flatten();
            if decoded.is_none() {
                f.error(ctx, format!("{hex:?} is not hex"));
            }
            decoded
        })
    } else if let Some(f) = msg.get(ctx, "binary") {
        f.string(ctx).and_then(|text| {
            let decoded = crate::base64::decode(&text);
            if decoded.is_none() {
                f.error(ctx, "not base64");
            }
            decoded
        })
    } else {
        Some(Vec::new())
    };
    msg.finish(ctx);
    bytes
}

fn read_grpc(ctx: &mut Ctx, field: &Field<'_>) -> Option<HealthCheckKind> {
    let mut msg = field.message(ctx, GRPC_HEALTH_CHECK)?;
    let service_name = msg.get(ctx, "service_name").and_then(|f| f.string(ctx)).unwrap_or_default();
    let authority = msg.get(ctx, "authority").and_then(|f| f.string(ctx)).unwrap_or_default();
    let mut metadata = Vec::new();
    for item in msg.get(ctx, "initial_metadata").map(|f| f.list()).unwrap_or_default() {
        let Some(header) = read_header_value_option(ctx, &item) else { continue };
        let text: Option<String> =
            header.value.iter().map(|p| if let Piece::Text(t) = p { Some(t.as_str()) } else { None }).collect();
        match text {
            Some(value) => metadata.push((header.name, value)),
            None => item.error(ctx, "substitution formats in gRPC metadata are not supported by wasmproxy"),
        }
    }
    msg.finish(ctx);
    Some(HealthCheckKind::Grpc { service_name, authority, metadata })
}

/// A duration greater than zero.
fn positive_duration(ctx: &mut Ctx, field: &Field<'_>) -> Option<Duration> {
    let d = field.duration(ctx)?;
    if d.is_zero() {
        field.error(ctx, "must be greater than 0s");
        return None;
    }
    Some(d)
}

/// `outlier_detection`.
pub(crate) fn read_outlier_detection(ctx: &mut Ctx, field: &Field<'_>) -> Option<OutlierDetection> {
    let mut msg = field.message(ctx, OUTLIER_DETECTION)?;
    let mut od = OutlierDetection::default();
    let count = |ctx: &mut Ctx, msg: &mut Msg<'_>, name: &str, into: &mut u32, max: u64| {
        if let Some(v) = msg.get(ctx, name).and_then(|f| f.unsigned(ctx, max)) {
            *into = v as u32;
        }
    };
    let any = u64::from(u32::MAX);
    count(ctx, &mut msg, "consecutive_5xx", &mut od.consecutive_5xx, any);
    count(ctx, &mut msg, "consecutive_gateway_failure", &mut od.consecutive_gateway_failure, any);
    count(ctx, &mut msg, "consecutive_local_origin_failure", &mut od.consecutive_local_origin_failure, any);
    count(ctx, &mut msg, "max_ejection_percent", &mut od.max_ejection_percent, 100);
    count(ctx, &mut msg, "enforcing_consecutive_5xx", &mut od.enforcing_consecutive_5xx, 100);
    count(ctx, &mut msg, "enforcing_consecutive_gateway_failure", &mut od.enforcing_consecutive_gateway_failure, 100);
    count(
        ctx,
        &mut msg,
        "enforcing_consecutive_local_origin_failure",
        &mut od.enforcing_consecutive_local_origin_failure,
        100,
    );
    count(ctx, &mut msg, "enforcing_success_rate", &mut od.enforcing_success_rate, 100);
    count(ctx, &mut msg, "enforcing_local_origin_success_rate", &mut od.enforcing_local_origin_success_rate, 100);
    count(ctx, &mut msg, "success_rate_minimum_hosts", &mut od.success_rate_minimum_hosts, any);
    count(ctx, &mut msg, "success_rate_request_volume", &mut od.success_rate_request_volume, any);
    count(ctx, &mut msg, "success_rate_stdev_factor", &mut od.success_rate_stdev_factor, any);
    count(ctx, &mut msg, "failure_percentage_threshold", &mut od.failure_percentage_threshold, 100);
    count(ctx, &mut msg, "enforcing_failure_percentage", &mut od.enforcing_failure_percentage, 100);
    count(
        ctx,
        &mut msg,
        "enforcing_failure_percentage_local_origin",
        &mut od.enforcing_failure_percentage_local_origin,
        100,
    );
    count(ctx, &mut msg, "failure_percentage_minimum_hosts", &mut od.failure_percentage_minimum_hosts, any);
    count(ctx, &mut msg, "failure_percentage_request_volume", &mut od.failure_percentage_request_volume, any);
    let time = |ctx: &mut Ctx, msg: &mut Msg<'_>, name: &str, into: &mut Duration, zero: bool| {
        if let Some(f) = msg.get(ctx, name)
            && let Some(d) = if zero { f.duration(ctx) } else { positive_duration(ctx, &f) }
        {
            *into = d;
        }
    };
    time(ctx, &mut msg, "interval", &mut od.interval, false);
    time(ctx, &mut msg, "base_ejection_time", &mut od.base_ejection_time, false);
    let max_given = msg.has("max_ejection_time");
    time(ctx, &mut msg, "max_ejection_time", &mut od.max_ejection_time, false);
    if !max_given {
        od.max_ejection_time = od.max_ejection_time.max(od.base_ejection_time);
    }
    time(ctx, &mut msg, "max_ejection_time_jitter", &mut od.max_ejection_time_jitter, true);
    if od.base_ejection_time > od.max_ejection_time {
        // Envoy's message, at start-up.
        ctx.error(msg.origin(), "base_ejection_time must not be larger than max_ejection_time");
    }
    let flag = |ctx: &mut Ctx, msg: &mut Msg<'_>, name: &str| msg.get(ctx, name).and_then(|f| f.bool_value(ctx));
    od.split_external_local_origin_errors = flag(ctx, &mut msg, "split_external_local_origin_errors").unwrap_or(false);
    od.uneject_on_health_check_success =
        flag(ctx, &mut msg, "successful_active_health_check_uneject_host").unwrap_or(true);
    od.always_eject_one_host = flag(ctx, &mut msg, "always_eject_one_host").unwrap_or(false);
    msg.finish(ctx);
    Some(od)
}
