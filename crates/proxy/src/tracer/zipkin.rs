//! The Zipkin provider, as Envoy's: B3 headers (and W3C `traceparent` if asked) read and
//! written, spans named after the host and shared with the caller's, reported as JSON v2 to
//! the collector every 5 spans or 5 seconds by each worker.

use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;
use serde_json::{Map, Value, json};
use wasmproxy_config::model::ZipkinProvider;
use wasmproxy_host::Headers;
use wasmproxy_stats::{Counter, Scope, Store};

use crate::tracer::span::{Span, parse_id, parse_trace_id};
use crate::tracer::{Batch, Sender, SpanRole};
use crate::upstream::cluster::Clusters;

/// How long a report may take.
const REPORT_TIMEOUT: Duration = Duration::from_secs(5);

/// What an incoming request says about its trace.
struct Extracted {
    /// The caller's span: trace id, span id, parent id.
    context: Option<((u64, u64), u64, Option<u64>)>,
    /// The caller's sampling decision, if it made one.
    sampled: Option<bool>,
}

/// Reads B3 (single `b3` or `x-b3-*` headers), then `traceparent` if `w3c`; `Err` for a
/// malformed B3 context, which turns tracing off for the request, as in Envoy.
fn extract(headers: &Headers, w3c: bool) -> Result<Extracted, ()> {
    if let Some(b3) = headers.get(b"b3") {
        return extract_single(b3);
    }
    let sampled = headers.get(b"x-b3-sampled").map(|s| s == b"1" || s == b"true");
    if let (Some(trace), Some(span)) = (headers.get(b"x-b3-traceid"), headers.get(b"x-b3-spanid")) {
        let trace = parse_trace_id(trace).ok_or(())?;
        let span = parse_id(span).ok_or(())?;
        let parent = match headers.get(b"x-b3-parentspanid").filter(|p| !p.is_empty()) {
            Some(p) => Some(parse_id(p).ok_or(())?),
            None => None,
        };
        return Ok(Extracted { context: Some((trace, span, parent)), sampled });
    }
    if w3c
        && let Some((trace, span, flag)) = headers.get(b"traceparent").and_then(crate::tracer::otel::parse_traceparent)
    {
        return Ok(Extracted { context: Some((trace, span, None)), sampled: Some(flag) });
    }
    Ok(Extracted { context: None, sampled })
}

/// The single `b3` header: `0`, `1`, `d`, or `trace-span[-flag[-parent]]`.
fn extract_single(b3: &[u8]) -> Result<Extracted, ()> {
    let flag = |f: &[u8]| match f {
        b"0" => Ok(Some(false)),
        b"1" | b"d" => Ok(Some(true)),
        _ => Err(()),
    };
    if b3.len() == 1 {
        return Ok(Extracted { context: None, sampled: flag(b3)? });
    }
    if b3.len() < 33 || b3.len() > 68 {
        return Err(());
    }
    let parts: Vec<&[u8]> = b3.split(|b| *b == b'-').collect();
    let trace = parse_trace_id(parts[0]).filter(|_| matches!(parts[0].len(), 16 | 32)).ok_or(())?;
    let span = parts.get(1).filter(|s| s.len() == 16).and_then(|s| parse_id(s)).ok_or(())?;
    let sampled = match parts.get(2) {
        Some(f) => flag(f)?,
        None => None,
    };
    let parent = match parts.get(3) {
        Some(p) if p.len() == 16 => Some(parse_id(p).ok_or(())?),
        Some(_) => return Err(()),
        None => None,
    };
    if parts.len() > 4 {
        return Err(());
    }
    Ok(Extracted { context: Some((trace, span, parent)), sampled })
}

/// The span a request starts with, named after its `:authority` (`None`: a malformed
/// context, no tracing); `role` says whether it is the server's or a client's.
pub fn start(config: &ZipkinProvider, headers: &Headers, traced: bool, role: SpanRole) -> Option<Span> {
    let extracted = extract(headers, config.w3c).ok()?;
    let sampled = extracted.sampled.unwrap_or(traced);
    let name = String::from_utf8_lossy(headers.get(b":authority").unwrap_or_default()).into_owned();
    let mut span = match extracted.context {
        None => {
            let low = crate::random::next_u64();
            let high = if config.trace_id_128bit { crate::random::next_u64() } else { 0 };
            Span::new((high, low), low, None, name, role.client)
        }
        Some(context) => joined(config, context, name, role.client),
    };
    span.sampled = sampled;
    Some(span)
}

/// A span in the trace `context` (trace, span, parent): a client span, or a server one
/// without a shared context, is a new child; a server span shares its caller's id.
fn joined(config: &ZipkinProvider, context: ((u64, u64), u64, Option<u64>), name: String, client: bool) -> Span {
    let (trace, id, parent) = context;
    if client || !config.shared_span_context {
        Span::new(trace, crate::random::next_u64(), Some(id), name, client)
    } else {
        Span::new(trace, id, parent.filter(|p| *p != 0), name, client)
    }
}

/// The span of the upstream request made for `parent`.
pub fn child(config: &ZipkinProvider, parent: &Span, name: String, client: bool) -> Span {
    let mut span = joined(config, (parent.trace, parent.id, parent.parent), name, client);
    span.sampled = parent.sampled;
    span
}

/// Tells the upstream the span's context: B3 headers (and `traceparent` if `w3c`).
pub fn inject(w3c: bool, span: &Span, headers: &mut Headers) {
    headers.replace(b"x-b3-traceid", span.trace_hex().as_bytes());
    headers.replace(b"x-b3-spanid", format!("{:016x}", span.id).as_bytes());
    match span.parent {
        Some(parent) => headers.replace(b"x-b3-parentspanid", format!("{parent:016x}").as_bytes()),
        None => headers.remove(b"x-b3-parentspanid"),
    }
    headers.replace(b"x-b3-sampled", if span.sampled { b"1" } else { b"0" });
    if w3c {
        crate::tracer::otel::inject_traceparent(span, headers);
    }
}

/// The collector's counters (`tracing.zipkin.*`).
struct ReportStats {
    spans_sent: Counter,
    timer_flushed: Counter,
    reports_skipped_no_cluster: Counter,
    reports_sent: Counter,
    reports_dropped: Counter,
    reports_failed: Counter,
}

/// One worker's spans on their way to the collector.
pub struct Reporter {
    config: ZipkinProvider,
    clusters: Rc<Clusters>,
    /// `node.cluster`, the spans' service name.
    service: String,
    /// This machine's address, the spans' local endpoint.
    local: std::net::IpAddr,
    waiting: Batch<Value>,
    stats: ReportStats,
}

impl Reporter {
    /// A reporter for `config`, sending through `clusters`.
    pub fn new(
        config: &ZipkinProvider,
        clusters: Rc<Clusters>,
        service: &str,
        store: &std::sync::Arc<Store>,
    ) -> Reporter {
        let scope = Scope::new(store, "tracing.zipkin.", "tracing.zipkin.", &[]);
        Reporter {
            config: config.clone(),
            clusters,
            service: service.to_string(),
            local: crate::stream_info::node::local_address(),
            waiting: Batch::new(),
            stats: ReportStats {
                spans_sent: scope.counter("spans_sent"),
                timer_flushed: scope.counter("timer_flushed"),
                reports_skipped_no_cluster: scope.counter("reports_skipped_no_cluster"),
                reports_sent: scope.counter("reports_sent"),
                reports_dropped: scope.counter("reports_dropped"),
                reports_failed: scope.counter("reports_failed"),
            },
        }
    }

    /// Takes a finished, sampled span.
    pub fn report(self: &Rc<Self>, span: &Span) {
        self.waiting.start_timer(self);
        if self.waiting.push(self.json(span)) {
            self.flush();
        }
    }

    /// A span as Zipkin's JSON v2 has it, as Envoy writes it.
    fn json(&self, span: &Span) -> Value {
        let server = !span.client;
        let mut object = Map::new();
        object.insert("traceId".into(), json!(span.trace_hex()));
        object.insert("id".into(), json!(format!("{:016x}", span.id)));
        if let Some(parent) = span.parent {
            object.insert("parentId".into(), json!(format!("{parent:016x}")));
        }
        if !span.name.is_empty() {
            object.insert("name".into(), json!(span.name));
        }
        object.insert("kind".into(), json!(if server { "SERVER" } else { "CLIENT" }));
        let start = span.start_micros();
        let duration = span.duration.as_micros() as u64;
        object.insert("timestamp".into(), json!(start));
        object.insert("duration".into(), json!(duration));
        let mut endpoint = Map::new();
        if !self.service.is_empty() {
            endpoint.insert("serviceName".into(), json!(self.service));
        }
        let family = if self.local.is_ipv4() { "ipv4" } else { "ipv6" };
        endpoint.insert(family.into(), json!(self.local.to_string()));
        endpoint.insert("port".into(), json!(0));
        object.insert("localEndpoint".into(), Value::Object(endpoint));
        let tags: Map<String, Value> = span
            .tags
            .iter()
            .filter(|(k, v)| !k.is_empty() && !v.is_empty())
            .map(|(k, v)| (k.clone(), json!(v)))
            .collect();
        if !tags.is_empty() {
            object.insert("tags".into(), Value::Object(tags));
        }
        let end = if server { "ss" } else { "cr" };
        object.insert("annotations".into(), json!([{ "timestamp": start + duration, "value": end }]));
        if server && self.config.shared_span_context {
            object.insert("shared".into(), json!(true));
        }
        Value::Object(object)
    }
}

impl Sender for Reporter {
    fn timer_flushed(&self) {
        self.stats.timer_flushed.inc();
    }

    /// Sends what is waiting, in one report.
    fn flush(self: &Rc<Self>) {
        let spans = self.waiting.take();
        if spans.is_empty() {
            return;
        }
        let Some(cluster) = self.clusters.get(&self.config.cluster) else {
            self.stats.reports_skipped_no_cluster.inc();
            return;
        };
        self.stats.spans_sent.add(spans.len() as u64);
        let host = self.config.collector_hostname.as_deref().unwrap_or(&self.config.cluster);
        let mut headers = Headers::from_pairs([
            (":method", "POST"),
            (":path", self.config.endpoint.as_str()),
            (":authority", host),
            (":scheme", "http"),
            ("content-type", "application/json"),
        ]);
        crate::tracer::internal_request(&mut headers);
        let body = Bytes::from(Value::Array(spans).to_string());
        let me = self.clone();
        tokio::task::spawn_local(async move {
            match cluster.send(&headers, body, Some(REPORT_TIMEOUT), true).await {
                Ok(answer) if answer.headers.get(b":status") == Some(b"202") => me.stats.reports_sent.inc(),
                Ok(_) => me.stats.reports_dropped.inc(),
                Err(e) => {
                    tracing::debug!("zipkin report failed: {e:?}");
                    me.stats.reports_failed.inc();
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn b3_contexts_are_read_as_envoy_reads_them() {
        let h = Headers::from_pairs([
            ("x-b3-traceid", "0000000000000001"),
            ("x-b3-spanid", "0000000000000002"),
            ("x-b3-sampled", "1"),
        ]);
        let e = extract(&h, false).unwrap();
        assert_eq!(e.context, Some(((0, 1), 2, None)));
        assert_eq!(e.sampled, Some(true));
        let h = Headers::from_pairs([("b3", "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1-05e3ac9a4f6e3b90")]);
        let e = extract(&h, false).unwrap();
        assert_eq!(
            e.context,
            Some(((0x80f1_98ee_5634_3ba8, 0x64fe_8b2a_57d3_eff7), 0xe457_b5a2_e4d8_6bd1, Some(0x05e3_ac9a_4f6e_3b90)))
        );
        assert!(extract(&Headers::from_pairs([("x-b3-traceid", "xyz"), ("x-b3-spanid", "1")]), false).is_err());
        assert!(extract(&Headers::from_pairs([("b3", "1234")]), false).is_err());
        let e = extract(&Headers::from_pairs([("x-b3-sampled", "0")]), false).unwrap();
        assert_eq!((e.context, e.sampled), (None, Some(false)));
    }
}
