//! The connection manager's `tracing`: sampling, custom tags, and the Zipkin or
//! OpenTelemetry provider spans are reported to.

use crate::model::{CustomTag, OtelExport, OtelProvider, Tracing, TracingProvider, ZipkinProvider};
use crate::reader::{Ctx, Field, Msg, type_error};
use crate::services::{cluster_ref, read_grpc_service, read_http_uri};

const TRACING: &[&str] = &[
    "client_sampling",
    "random_sampling",
    "overall_sampling",
    "verbose",
    "max_path_tag_length",
    "custom_tags",
    "provider",
    "spawn_upstream_span",
    "operation",
    "upstream_operation",
    "no_context_propagation",
];
const PERCENT: &[&str] = &["value"];
const CUSTOM_TAG: &[&str] = &["tag", "literal", "environment", "request_header", "metadata", "value"];
const LITERAL: &[&str] = &["value"];
const ENVIRONMENT: &[&str] = &["name", "default_value"];
const REQUEST_HEADER: &[&str] = &["name", "default_value"];
const PROVIDER: &[&str] = &["name", "typed_config"];
const ZIPKIN: &[&str] = &[
    "collector_cluster",
    "collector_endpoint",
    "trace_id_128bit",
    "shared_span_context",
    "collector_endpoint_version",
    "collector_hostname",
    "split_spans_for_request",
    "trace_context_option",
    "collector_service",
];
const OPENTELEMETRY: &[&str] = &[
    "grpc_service",
    "http_service",
    "service_name",
    "resource_detectors",
    "sampler",
    "max_cache_size",
    "set_telemetry_sdk_resource_attributes",
    "set_service_name_resource_attribute",
    "set_instrumentation_scope",
];
const HTTP_SERVICE: &[&str] = &["http_uri", "request_headers_to_add", "retry_policy"];

const ZIPKIN_TYPE: &str = "envoy.config.trace.v3.ZipkinConfig";
const OPENTELEMETRY_TYPE: &str = "envoy.config.trace.v3.OpenTelemetryConfig";
/// Whether a collector endpoint version is JSON v2 (`None`: one Envoy refuses).
const ENDPOINT_VERSION: &[(&str, i64, Option<Option<bool>>)] = &[
    ("DEPRECATED_AND_UNAVAILABLE_DO_NOT_USE", 0, Some(None)),
    ("HTTP_JSON", 1, Some(Some(true))),
    ("HTTP_PROTO", 2, Some(Some(false))),
    ("GRPC", 3, Some(None)),
];
const TRACE_CONTEXT: &[(&str, i64, Option<bool>)] =
    &[("USE_B3", 0, Some(false)), ("USE_B3_WITH_W3C_PROPAGATION", 1, Some(true))];

/// `tracing`.
pub(crate) fn read_tracing(ctx: &mut Ctx, field: &Field<'_>) -> Option<Tracing> {
    let mut msg = field.message(ctx, TRACING)?;
    let percent = |ctx: &mut Ctx, msg: &mut Msg<'_>, name: &str| {
        msg.get(ctx, name).and_then(|f| read_percent(ctx, &f)).unwrap_or(10_000)
    };
    let client_sampling = percent(ctx, &mut msg, "client_sampling");
    let random_sampling = percent(ctx, &mut msg, "random_sampling");
    let overall_sampling = percent(ctx, &mut msg, "overall_sampling");
    if let Some(f) = msg.get(ctx, "verbose")
        && f.bool(ctx) == Some(true)
    {
        f.error(ctx, "not supported by wasmproxy (no timing events on spans)");
    }
    let max_path_tag_length = msg
        .get(ctx, "max_path_tag_length")
        .and_then(|f| f.unsigned(ctx, u64::from(u32::MAX)))
        .map_or(256, |n| n as usize);
    let tags = msg.get(ctx, "custom_tags").map(|f| f.list()).unwrap_or_default();
    let custom_tags = tags.iter().filter_map(|t| read_custom_tag(ctx, t)).collect();
    let provider = msg.get(ctx, "provider").and_then(|f| read_provider(ctx, &f));
    let spawn_upstream_span = msg.get(ctx, "spawn_upstream_span").and_then(|f| f.bool_value(ctx)).unwrap_or(false);
    let no_context_propagation = msg.get(ctx, "no_context_propagation").and_then(|f| f.bool(ctx)).unwrap_or(false);
    msg.finish(ctx);
    Some(Tracing {
        client_sampling,
        random_sampling,
        overall_sampling,
        max_path_tag_length,
        custom_tags,
        provider,
        spawn_upstream_span,
        no_context_propagation,
    })
}

/// A `Percent`, in ten-thousandths (Envoy's precision for sampling).
fn read_percent(ctx: &mut Ctx, field: &Field<'_>) -> Option<u32> {
    let mut msg = field.message(ctx, PERCENT)?;
    let value = msg.get(ctx, "value").and_then(|f| {
        let v = f.number(ctx)?;
        if !(0.0..=100.0).contains(&v) {
            f.error(ctx, "must be between 0 and 100");
            return None;
        }
        Some(v)
    });
    msg.finish(ctx);
    Some((value.unwrap_or(0.0) * 100.0).round() as u32)
}

/// A `CustomTag`: a literal, an environment variable (read now, as Envoy reads it at
/// load), or a request header.
fn read_custom_tag(ctx: &mut Ctx, field: &Field<'_>) -> Option<CustomTag> {
    let mut msg = field.message(ctx, CUSTOM_TAG)?;
    let tag = msg.required(ctx, "tag").and_then(|f| f.string(ctx)).unwrap_or_default();
    msg.at_most_one(ctx, &["literal", "environment", "request_header", "metadata", "value"]);
    let value = if let Some(f) = msg.get(ctx, "literal") {
        f.message(ctx, LITERAL).map(|mut m| {
            let value = m.get(ctx, "value").and_then(|f| f.string(ctx)).unwrap_or_default();
            m.finish(ctx);
            CustomTag::Literal { tag: tag.clone(), value }
        })
    } else if let Some(f) = msg.get(ctx, "environment") {
        f.message(ctx, ENVIRONMENT).map(|mut m| {
            let name = m.required(ctx, "name").and_then(|f| f.string(ctx)).unwrap_or_default();
            let default = m.get(ctx, "default_value").and_then(|f| f.string(ctx)).unwrap_or_default();
            m.finish(ctx);
            let value = std::env::var(&name).ok().filter(|v| !v.is_empty()).unwrap_or(default);
            CustomTag::Literal { tag: tag.clone(), value }
        })
    } else if let Some(f) = msg.get(ctx, "request_header") {
        f.message(ctx, REQUEST_HEADER).map(|mut m| {
            let name = m.required(ctx, "name").and_then(|f| f.string(ctx)).unwrap_or_default().to_ascii_lowercase();
            let default = m.get(ctx, "default_value").and_then(|f| f.string(ctx)).unwrap_or_default();
            m.finish(ctx);
            CustomTag::RequestHeader { tag: tag.clone(), name, default }
        })
    } else {
        if !msg.has("metadata") && !msg.has("value") {
            ctx.error(msg.origin(), "one of literal, environment or request_header is required");
        }
        None
    };
    msg.finish(ctx);
    if tag.is_empty() {
        return None;
    }
    value
}

/// `provider`: Zipkin or OpenTelemetry.
fn read_provider(ctx: &mut Ctx, field: &Field<'_>) -> Option<TracingProvider> {
    let mut msg = field.message(ctx, PROVIDER)?;
    msg.ignore(ctx, "name");
    let provider = msg.required(ctx, "typed_config").and_then(|typed| {
        let any = typed.any(ctx)?;
        match any.type_name.as_str() {
            ZIPKIN_TYPE => any.message(ctx, ZIPKIN).and_then(|m| read_zipkin(ctx, m)).map(TracingProvider::Zipkin),
            OPENTELEMETRY_TYPE => any
                .message(ctx, OPENTELEMETRY)
                .and_then(|m| read_opentelemetry(ctx, m))
                .map(|o| TracingProvider::OpenTelemetry(Box::new(o))),
            _ => {
                type_error(ctx, &typed, &any, "tracer");
                None
            }
        }
    });
    msg.finish(ctx);
    provider
}

fn read_zipkin(ctx: &mut Ctx, mut msg: Msg<'_>) -> Option<ZipkinProvider> {
    let cluster = msg.required(ctx, "collector_cluster").and_then(|f| cluster_ref(ctx, &f));
    let endpoint = msg.required(ctx, "collector_endpoint").and_then(|f| f.string(ctx));
    let trace_id_128bit = msg.get(ctx, "trace_id_128bit").and_then(|f| f.bool(ctx)).unwrap_or(false);
    let shared_span_context = msg.get(ctx, "shared_span_context").and_then(|f| f.bool_value(ctx)).unwrap_or(true);
    let version = msg.get(ctx, "collector_endpoint_version");
    // Only HTTP_JSON is served; Envoy refuses the default (JSON v1) and gRPC.
    match version.as_ref().map(|f| (f, f.enumeration(ctx, ENDPOINT_VERSION))) {
        Some((_, Some(Some(true))) | (_, None)) => {}
        Some((f, Some(Some(false)))) => f.error(ctx, "HTTP_PROTO is not supported by wasmproxy (use HTTP_JSON)"),
        Some((f, Some(None))) => f.error(ctx, "must be HTTP_JSON (Envoy refuses the others)"),
        None => ctx.error(
            &msg.origin().with_child("collector_endpoint_version"),
            "required: HTTP_JSON (Envoy refuses the default, the deprecated JSON v1)",
        ),
    }
    let collector_hostname = msg.get(ctx, "collector_hostname").and_then(|f| f.string(ctx)).filter(|h| !h.is_empty());
    let split_spans_for_request = msg.get(ctx, "split_spans_for_request").and_then(|f| f.bool(ctx)).unwrap_or(false);
    let w3c = msg.get(ctx, "trace_context_option").and_then(|f| f.enumeration(ctx, TRACE_CONTEXT)).unwrap_or(false);
    msg.finish(ctx);
    Some(ZipkinProvider {
        cluster: cluster?,
        endpoint: endpoint?,
        trace_id_128bit,
        shared_span_context,
        collector_hostname,
        split_spans_for_request,
        w3c,
    })
}

fn read_opentelemetry(ctx: &mut Ctx, mut msg: Msg<'_>) -> Option<OtelProvider> {
    msg.at_most_one(ctx, &["grpc_service", "http_service"]);
    let export = if let Some(f) = msg.get(ctx, "grpc_service") {
        read_grpc_service(ctx, &f, true).map(OtelExport::Grpc)
    } else if let Some(f) = msg.get(ctx, "http_service") {
        read_http_export(ctx, &f)
    } else {
        ctx.error(msg.origin(), "one of grpc_service or http_service is required by wasmproxy");
        None
    };
    let service_name = msg
        .get(ctx, "service_name")
        .and_then(|f| f.string(ctx))
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown_service:envoy".into());
    let max_cache_size =
        msg.get(ctx, "max_cache_size").and_then(|f| f.unsigned(ctx, u64::from(u32::MAX))).map_or(1024, |n| n as usize);
    let flag = |ctx: &mut Ctx, msg: &mut Msg<'_>, name: &str| {
        msg.get(ctx, name).and_then(|f| f.bool_value(ctx)).unwrap_or(true)
    };
    let sdk_attributes = flag(ctx, &mut msg, "set_telemetry_sdk_resource_attributes");
    let service_name_attribute = flag(ctx, &mut msg, "set_service_name_resource_attribute");
    let scope = flag(ctx, &mut msg, "set_instrumentation_scope");
    msg.finish(ctx);
    Some(OtelProvider { export: export?, service_name, max_cache_size, sdk_attributes, service_name_attribute, scope })
}

/// `http_service`: the URI gives the host and the path.
fn read_http_export(ctx: &mut Ctx, field: &Field<'_>) -> Option<OtelExport> {
    let mut msg = field.message(ctx, HTTP_SERVICE)?;
    let uri = msg.required(ctx, "http_uri").and_then(|f| {
        let uri = read_http_uri(ctx, &f)?;
        match uri.uri.parse::<http::Uri>() {
            Ok(parsed) if parsed.authority().is_some() => Some(uri),
            _ => {
                ctx.error(&f.origin().with_child("uri"), format!("{:?} is not an absolute URI", uri.uri));
                None
            }
        }
    });
    let mut headers = Vec::new();
    for field in msg.get(ctx, "request_headers_to_add").map(|f| f.list()).unwrap_or_default() {
        let Some(header) = crate::header_mutation::read_header_value_option(ctx, &field) else { continue };
        // Reports belong to no request: only text can be sent.
        if header.value.iter().any(|p| !matches!(p, crate::format::Piece::Text(_))) {
            field.error(ctx, "only literal values are supported by wasmproxy here (no request to format from)");
            continue;
        }
        headers.push(header);
    }
    msg.finish(ctx);
    Some(OtelExport::Http { uri: uri?, headers })
}
