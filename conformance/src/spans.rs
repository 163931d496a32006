//! The trace collector the recording upstream plays: Zipkin JSON v2 reports and OTLP
//! exports (gRPC or HTTP), each span written down on its own, made comparable: random ids
//! and times replaced, how the ids relate kept.

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value;
use prost::Message;
use serde_json::Value;

/// The path Zipkin reports are posted to in the scenarios.
pub const ZIPKIN_PATH: &str = "/api/v2/spans";
/// OTLP's gRPC export method.
pub const OTLP_GRPC_PATH: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";
/// The path OTLP/HTTP exports are posted to in the scenarios.
pub const OTLP_HTTP_PATH: &str = "/v1/traces";

/// The spans of a report to `path`, one line each (`None`: not a collector's path).
pub fn collected(path: &str, body: &[u8]) -> Option<Vec<String>> {
    match path {
        ZIPKIN_PATH => Some(zipkin(body)),
        OTLP_GRPC_PATH => Some(otlp(body.get(5..).unwrap_or_default())),
        OTLP_HTTP_PATH => Some(otlp(body)),
        _ => None,
    }
}

/// A value made comparable: request ids keep their trace digit, the rest as it is.
fn value_text(key: &str, value: &str) -> String {
    match key {
        "guid:x-request-id" if value.len() == 36 => format!("<uuid, trace digit {}>", &value[14..15]),
        _ => value.to_string(),
    }
}

/// Zipkin JSON v2 spans.
fn zipkin(body: &[u8]) -> Vec<String> {
    let Ok(Value::Array(spans)) = serde_json::from_slice::<Value>(body) else {
        return vec![format!("zipkin report that is not a JSON array: {}", String::from_utf8_lossy(body))];
    };
    spans.iter().map(zipkin_span).collect()
}

fn zipkin_span(span: &Value) -> String {
    let text = |key: &str| span.get(key).and_then(Value::as_str).unwrap_or_default().to_string();
    let trace = text("traceId");
    let id = text("id");
    let mut fields = vec![
        format!("trace id of {} digits", trace.len()),
        if trace.ends_with(&id) && !id.is_empty() { "id = the trace's low half".into() } else { "id".into() },
    ];
    if span.get("parentId").is_some() {
        fields.push("parent".into());
    }
    for key in ["name", "kind"] {
        fields.push(format!("{key}={}", text(key)));
    }
    for key in ["timestamp", "duration"] {
        fields
            .push(format!("{key}={}", if span.get(key).is_some_and(Value::is_u64) { "<number>" } else { "<missing>" }));
    }
    if let Some(endpoint) = span.get("localEndpoint") {
        fields.push(format!("localEndpoint={endpoint}"));
    }
    let mut tags: Vec<String> = span
        .get("tags")
        .and_then(Value::as_object)
        .map(|t| t.iter().map(|(k, v)| format!("{k}={}", value_text(k, v.as_str().unwrap_or_default()))).collect())
        .unwrap_or_default();
    tags.sort();
    fields.push(format!("tags=[{}]", tags.join(", ")));
    let annotations: Vec<String> = span
        .get("annotations")
        .and_then(Value::as_array)
        .map(|a| a.iter().map(|x| x.get("value").and_then(Value::as_str).unwrap_or_default().to_string()).collect())
        .unwrap_or_default();
    fields.push(format!("annotations=[{}]", annotations.join(", ")));
    if let Some(shared) = span.get("shared") {
        fields.push(format!("shared={shared}"));
    }
    format!("zipkin span: {}", fields.join("; "))
}

/// OTLP spans, with their resource and scope.
fn otlp(body: &[u8]) -> Vec<String> {
    let Ok(request) = ExportTraceServiceRequest::decode(body) else {
        return vec![format!("OTLP export that does not decode ({} bytes)", body.len())];
    };
    let mut lines = Vec::new();
    for resource_spans in &request.resource_spans {
        let mut resource: Vec<String> = resource_spans
            .resource
            .iter()
            .flat_map(|r| &r.attributes)
            .map(|a| {
                let value = if a.key.starts_with("telemetry.sdk.") {
                    "<the proxy's>".into()
                } else {
                    any_text(a.value.as_ref())
                };
                format!("{}={value}", a.key)
            })
            .collect();
        resource.sort();
        for scope_spans in &resource_spans.scope_spans {
            let scope = if scope_spans.scope.is_some() { "a scope" } else { "no scope" };
            for span in &scope_spans.spans {
                let mut attributes: Vec<String> = span
                    .attributes
                    .iter()
                    .map(|a| format!("{}={}", a.key, value_text(&a.key, &any_text(a.value.as_ref()))))
                    .collect();
                attributes.sort();
                lines.push(format!(
                    "otlp span: resource=[{}]; {scope}; trace id of {} bytes; id of {} bytes; parent of {} bytes; name={}; kind={}; \
                     times={}; status={:?}; trace_state={:?}; attributes=[{}]",
                    resource.join(", "),
                    span.trace_id.len(),
                    span.span_id.len(),
                    span.parent_span_id.len(),
                    span.name,
                    span.kind,
                    if span.end_time_unix_nano >= span.start_time_unix_nano && span.start_time_unix_nano > 0 { "ordered" } else { "wrong" },
                    span.status.as_ref().map(|s| s.code),
                    span.trace_state,
                    attributes.join(", ")
                ));
            }
        }
    }
    lines
}

fn any_text(value: Option<&opentelemetry_proto::tonic::common::v1::AnyValue>) -> String {
    match value.and_then(|v| v.value.as_ref()) {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}
