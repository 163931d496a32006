//! The OpenTelemetry provider, as Envoy's: W3C `traceparent` and `tracestate` read and
//! written, spans named `ingress` or `egress <host>`, exported as OTLP over gRPC or HTTP
//! every 5 spans or 5 seconds by each worker.

use std::rc::Rc;

use bytes::Bytes;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Status, span, status};
use prost::Message;
use wasmproxy_config::model::{OtelExport, OtelProvider};
use wasmproxy_host::Headers;
use wasmproxy_stats::{Counter, Scope, Store};

use crate::tracer::span::{Span, parse_id};
use crate::tracer::{Batch, Sender, SpanRole};
use crate::upstream::cluster::Clusters;

/// The OTLP trace service's export method.
const EXPORT_PATH: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";

/// What wasmproxy calls itself in the spans' resource and scope.
const SDK_NAME: &str = "wasmproxy";

/// Reads `traceparent` (`00-<32 hex>-<16 hex>-<2 hex>`): the trace id, the parent span id
/// and whether it is sampled; `None` if malformed (or an all-zero id).
pub fn parse_traceparent(value: &[u8]) -> Option<((u64, u64), u64, bool)> {
    if value.len() != 55 {
        return None;
    }
    let parts: Vec<&[u8]> = value.split(|b| *b == b'-').filter(|p| !p.is_empty()).collect();
    let [version, trace, span, flags] = parts.as_slice() else { return None };
    if version.len() != 2 || trace.len() != 32 || span.len() != 16 || flags.len() != 2 {
        return None;
    }
    let hex = |p: &[u8]| p.iter().all(u8::is_ascii_hexdigit);
    if !(hex(version) && hex(trace) && hex(span) && hex(flags)) {
        return None;
    }
    let trace = (parse_id(&trace[..16])?, parse_id(&trace[16..])?);
    let span = parse_id(span)?;
    if trace == (0, 0) || span == 0 {
        return None;
    }
    let flags = u8::from_str_radix(std::str::from_utf8(flags).ok()?, 16).ok()?;
    Some((trace, span, flags & 1 == 1))
}

/// Writes the span's `traceparent`.
pub fn inject_traceparent(span: &Span, headers: &mut Headers) {
    let (high, low) = span.trace;
    let value = format!("00-{high:016x}{low:016x}-{:016x}-{}", span.id, if span.sampled { "01" } else { "00" });
    headers.replace(b"traceparent", value.as_bytes());
}

/// Tells the upstream the span's context: `traceparent`, and `tracestate` (even empty, as
/// Envoy does).
pub fn inject(span: &Span, headers: &mut Headers) {
    inject_traceparent(span, headers);
    headers.replace(b"tracestate", span.trace_state.as_bytes());
}

/// The span a request starts with (`None`: a malformed `traceparent`, no tracing): a new
/// trace sampled by the connection manager's decision, or the caller's, sampled as it says.
pub fn start(headers: &Headers, traced: bool, role: SpanRole) -> Option<Span> {
    let name = if role.egress {
        format!("egress {}", String::from_utf8_lossy(headers.get(b":authority").unwrap_or_default()))
    } else {
        "ingress".to_string()
    };
    let id = crate::random::next_u64();
    let span = match headers.get(b"traceparent") {
        None => {
            let mut span =
                Span::new((crate::random::next_u64(), crate::random::next_u64()), id, None, name, role.client);
            span.sampled = traced;
            span
        }
        Some(value) => {
            let (trace, parent, sampled) = parse_traceparent(value)?;
            let mut span = Span::new(trace, id, Some(parent), name, role.client);
            span.sampled = sampled;
            span.trace_state = headers
                .iter()
                .filter(|(k, _)| *k == b"tracestate")
                .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
                .collect::<Vec<_>>()
                .join(",");
            span
        }
    };
    Some(span)
}

/// The span of the upstream request made for `parent`: a client span.
pub fn child(parent: &Span, name: String) -> Span {
    let mut span = Span::new(parent.trace, crate::random::next_u64(), Some(parent.id), name, true);
    span.sampled = parent.sampled;
    span.trace_state = parent.trace_state.clone();
    span
}

/// The exporter's counters (`tracing.opentelemetry.*`).
struct ExportStats {
    spans_sent: Counter,
    timer_flushed: Counter,
    spans_dropped: Counter,
}

/// One worker's spans on their way to the collector.
pub struct Exporter {
    config: OtelProvider,
    clusters: Rc<Clusters>,
    waiting: Batch<opentelemetry_proto::tonic::trace::v1::Span>,
    stats: ExportStats,
}

impl Exporter {
    /// An exporter for `config`, sending through `clusters`.
    pub fn new(config: &OtelProvider, clusters: Rc<Clusters>, store: &std::sync::Arc<Store>) -> Exporter {
        let scope = Scope::new(store, "tracing.opentelemetry.", "tracing.opentelemetry.", &[]);
        Exporter {
            config: config.clone(),
            clusters,
            waiting: Batch::new(),
            stats: ExportStats {
                spans_sent: scope.counter("spans_sent"),
                timer_flushed: scope.counter("timer_flushed"),
                spans_dropped: scope.counter("spans_dropped"),
            },
        }
    }

    /// Takes a finished, sampled span; past `max_cache_size` waiting, the span is
    /// dropped, as in Envoy.
    pub fn report(self: &Rc<Self>, span: &Span) {
        self.waiting.start_timer(self);
        if self.waiting.len() >= self.config.max_cache_size {
            self.stats.spans_dropped.inc();
            self.flush();
            return;
        }
        if self.waiting.push(otlp_span(span)) {
            self.flush();
        }
    }

    /// The resource spans are of: the service's name and the SDK's.
    fn resource(&self) -> Resource {
        let mut attributes = Vec::new();
        if self.config.service_name_attribute {
            attributes.push(string_attribute("service.name", &self.config.service_name));
        }
        if self.config.sdk_attributes {
            attributes.push(string_attribute("telemetry.sdk.language", "rust"));
            attributes.push(string_attribute("telemetry.sdk.name", SDK_NAME));
            attributes.push(string_attribute("telemetry.sdk.version", env!("CARGO_PKG_VERSION")));
        }
        Resource { attributes, ..Default::default() }
    }
}

impl Sender for Exporter {
    fn timer_flushed(&self) {
        self.stats.timer_flushed.inc();
    }

    /// Sends what is waiting, in one export.
    fn flush(self: &Rc<Self>) {
        let spans = self.waiting.take();
        if spans.is_empty() {
            return;
        }
        let (cluster_name, mut headers, timeout, grpc) = match &self.config.export {
            OtelExport::Grpc(service) => {
                let headers = Headers::from_pairs([
                    (":method", "POST"),
                    (":path", EXPORT_PATH),
                    (":authority", service.authority()),
                    (":scheme", "http"),
                    ("content-type", "application/grpc"),
                    ("te", "trailers"),
                ]);
                (&service.cluster, headers, service.timeout, true)
            }
            OtelExport::Http { uri, headers: extra } => {
                // Checked absolute when read.
                let parsed = uri.uri.parse::<http::Uri>().unwrap_or_default();
                let host = parsed.authority().map_or("", |a| a.as_str());
                let path = parsed.path_and_query().map_or("/", |p| p.as_str());
                let mut headers = Headers::from_pairs([
                    (":method", "POST"),
                    (":path", path),
                    (":authority", host),
                    (":scheme", "http"),
                    ("content-type", "application/x-protobuf"),
                ]);
                for h in extra {
                    headers.replace(h.name.as_bytes(), crate::tracer::literal(&h.value).as_bytes());
                }
                (&uri.cluster, headers, Some(uri.timeout), false)
            }
        };
        let Some(cluster) = self.clusters.get(cluster_name) else {
            tracing::debug!("OpenTelemetry export: no cluster {cluster_name}");
            return;
        };
        headers
            .replace(b"user-agent", format!("OTel-OTLP-Exporter-{SDK_NAME}/{}", env!("CARGO_PKG_VERSION")).as_bytes());
        crate::tracer::internal_request(&mut headers);
        self.stats.spans_sent.add(spans.len() as u64);
        let scope = self.config.scope.then(|| InstrumentationScope {
            name: SDK_NAME.into(),
            version: env!("CARGO_PKG_VERSION").into(),
            ..Default::default()
        });
        let request = ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(self.resource()),
                scope_spans: vec![ScopeSpans { scope, spans, ..Default::default() }],
                ..Default::default()
            }],
        };
        let message = request.encode_to_vec();
        let body = if grpc { crate::upstream::grpc::frame(&message) } else { Bytes::from(message) };
        tokio::task::spawn_local(async move {
            if let Err(e) = cluster.send(&headers, body, timeout, true).await {
                tracing::debug!("OpenTelemetry export failed: {e:?}");
            }
        });
    }
}

fn string_attribute(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue { value: Some(any_value::Value::StringValue(value.into())) }),
        ..Default::default()
    }
}

/// A span as OTLP has it: ids as big-endian bytes, tags as string attributes, the status
/// from the HTTP or gRPC status as Envoy sets it.
fn otlp_span(s: &Span) -> opentelemetry_proto::tonic::trace::v1::Span {
    let (high, low) = s.trace;
    let trace_id = [high.to_be_bytes(), low.to_be_bytes()].concat();
    let kind = if s.client { span::SpanKind::Client } else { span::SpanKind::Server };
    let start = s.start_nanos();
    let mut status = None;
    for (key, value) in &s.tags {
        let error = match key.as_str() {
            "http.status_code" => value.parse::<u16>().ok().map(|c| c >= 500 || (c >= 400 && s.client)),
            "grpc.status_code" => Some(match value.parse::<u32>() {
                Ok(0) => false,
                Ok(c) if s.client => c != 0,
                Ok(c) => matches!(c, 2 | 4 | 12 | 13 | 14 | 15),
                Err(_) => false,
            }),
            _ => None,
        };
        if let Some(error) = error {
            let code = if error { status::StatusCode::Error } else { status::StatusCode::Unset };
            if key == "grpc.status_code" || error {
                status = Some(Status { code: code as i32, ..Default::default() });
            }
        }
    }
    opentelemetry_proto::tonic::trace::v1::Span {
        trace_id,
        span_id: s.id.to_be_bytes().to_vec(),
        trace_state: s.trace_state.clone(),
        parent_span_id: s.parent.map(|p| p.to_be_bytes().to_vec()).unwrap_or_default(),
        name: s.name.clone(),
        kind: kind as i32,
        start_time_unix_nano: start,
        end_time_unix_nano: start + s.duration.as_nanos() as u64,
        attributes: s.tags.iter().filter(|(k, _)| !k.is_empty()).map(|(k, v)| string_attribute(k, v)).collect(),
        status,
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparent_is_read_as_envoy_reads_it() {
        let ok = b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
        assert_eq!(
            parse_traceparent(ok),
            Some(((0x0af7_6519_16cd_43dd, 0x8448_eb21_1c80_319c), 0xb7ad_6b71_6920_3331, true))
        );
        assert_eq!(
            parse_traceparent(b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00").map(|t| t.2),
            Some(false)
        );
        assert_eq!(parse_traceparent(b"00-00000000000000000000000000000000-b7ad6b7169203331-01"), None);
        assert_eq!(parse_traceparent(b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b716920333x-01"), None);
        assert_eq!(parse_traceparent(b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-1"), None);
    }
}
