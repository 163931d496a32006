//! Tracing as Envoy's connection manager does it: the sampling decision packed into
//! `x-request-id`, a span per stream (and one per upstream request if asked), named by
//! the route's decorator, its context told to the upstream, its tags set at the end, and
//! the spans reported by the Zipkin or OpenTelemetry provider.

pub mod otel;
pub mod span;
pub mod zipkin;

use std::cell::{Cell, RefCell};
use std::rc::{Rc, Weak};
use std::time::Duration;

use wasmproxy_config::format::Piece;
use wasmproxy_config::model::{
    CustomTag, Decorator, GrpcService, HttpConnectionManager, Tracing, TracingProvider, UuidRequestId,
};
use wasmproxy_host::Headers;
use wasmproxy_stats::{Counter, Scope, Store};

use crate::stream_info::StreamInfo;
use crate::tracer::span::Span;
use crate::upstream::cluster::Clusters;

/// Spans a worker keeps before it sends them (Envoy's `min_flush_spans`).
pub const MIN_FLUSH_SPANS: usize = 5;

/// How often a worker sends the spans it keeps (Envoy's `flush_interval_ms`).
pub const FLUSH_INTERVAL: Duration = Duration::from_secs(5);

/// The header a route's decorator travels in.
const DECORATOR_HEADER: &[u8] = b"x-envoy-decorator-operation";

/// Where a provider sends spans, one per worker and provider configuration.
pub enum Driver {
    /// Zipkin.
    Zipkin(Rc<zipkin::Reporter>),
    /// OpenTelemetry.
    Otel(Rc<otel::Exporter>),
}

impl Driver {
    /// The driver for `provider`, sending through `clusters`; `service`: `node.cluster`.
    pub fn new(
        provider: &TracingProvider,
        clusters: Rc<Clusters>,
        service: &str,
        store: &std::sync::Arc<Store>,
    ) -> Driver {
        match provider {
            TracingProvider::Zipkin(z) => Driver::Zipkin(Rc::new(zipkin::Reporter::new(z, clusters, service, store))),
            TracingProvider::OpenTelemetry(o) => Driver::Otel(Rc::new(otel::Exporter::new(o, clusters, store))),
        }
    }

    /// Takes a finished span: sent only if sampled.
    fn report(&self, span: &Span) {
        if !span.sampled {
            return;
        }
        match self {
            Driver::Zipkin(r) => r.report(span),
            Driver::Otel(e) => e.report(span),
        }
    }
}

/// Why a request is traced, as `x-request-id` carries it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reason {
    NotTraceable,
    Sampling,
    ServiceForced,
    ClientForced,
}

impl Reason {
    /// The UUID's version digit that says it.
    fn digit(self) -> u8 {
        match self {
            Reason::NotTraceable => b'4',
            Reason::Sampling => b'9',
            Reason::ServiceForced => b'a',
            Reason::ClientForced => b'b',
        }
    }
}

/// `http.<stat_prefix>.tracing.*`.
struct TracingStats {
    random_sampling: Counter,
    service_forced: Counter,
    client_enabled: Counter,
    not_traceable: Counter,
    _health_check: Counter,
}

/// Whether a span is a client's (else a server's), and whether its listener is an
/// egress one (`traffic_direction: OUTBOUND`).
#[derive(Clone, Copy)]
pub struct SpanRole {
    /// A client span.
    pub client: bool,
    /// On an egress listener.
    pub egress: bool,
}

/// A stream's span as the calls its filters make see it (an authorization check, a rate
/// limit query): their spans are its children, as Envoy's async clients make them.
#[derive(Clone)]
pub struct ParentSpan {
    trace: (u64, u64),
    id: u64,
    sampled: bool,
    trace_state: String,
    /// Zipkin's `w3c` setting (`traceparent` too); `None`: OpenTelemetry.
    zipkin_w3c: Option<bool>,
    driver: Rc<Driver>,
}

/// The span of one call a filter makes: a client span, sampled as its parent.
pub struct CallSpan {
    span: Span,
    zipkin_w3c: Option<bool>,
    driver: Rc<Driver>,
}

impl ParentSpan {
    /// A child span for a call named `name`, starting now.
    pub fn child(&self, name: String) -> CallSpan {
        let mut span = Span::new(self.trace, crate::random::next_u64(), Some(self.id), name, true);
        span.sampled = self.sampled;
        span.trace_state = self.trace_state.clone();
        CallSpan { span, zipkin_w3c: self.zipkin_w3c, driver: self.driver.clone() }
    }
}

impl ParentSpan {
    /// The span of a unary gRPC call to `service`'s `service_name`/`method`, with the tags
    /// Envoy's async gRPC client starts it with.
    pub fn grpc_child(&self, service: &GrpcService, (service_name, method): (&str, &str)) -> CallSpan {
        let mut span = self.child(format!("async {service_name}.{method} egress"));
        span.tag("upstream_cluster", service.cluster.as_str());
        span.tag("upstream_address", service.authority());
        span.tag("component", "proxy");
        span
    }
}

impl CallSpan {
    /// What a call's headers get from its span, if it has one (a context to inject, for
    /// [`crate::upstream::grpc::call_service`]).
    pub fn injector(span: Option<&CallSpan>) -> impl FnOnce(&mut Headers) + '_ {
        move |headers| {
            if let Some(span) = span {
                span.inject(headers);
            }
        }
    }

    /// A gRPC call's end: its status (and `error` if not OK).
    pub fn grpc_status(&mut self, status: u32) {
        self.span.tag("grpc.status_code", status.to_string());
        if status != 0 {
            self.span.tag("error", "true");
        }
    }

    /// Tells the service the span's context, as the stream's upstream is told its.
    pub fn inject(&self, headers: &mut Headers) {
        match self.zipkin_w3c {
            Some(w3c) => zipkin::inject(w3c, &self.span, headers),
            None => otel::inject(&self.span, headers),
        }
    }

    /// Sets a tag.
    pub fn tag(&mut self, key: &str, value: impl Into<String>) {
        self.span.tag(key, value);
    }

    /// The tags of an HTTP call's end, as Envoy's async client sets them: the cluster, the
    /// endpoint (if one was picked), the status (none: no response) and flags.
    pub fn http_result(
        &mut self,
        cluster: &str,
        upstream: Option<std::net::SocketAddr>,
        code: Option<u16>,
        flags: &str,
    ) {
        let span = &mut self.span;
        span.tag("http.protocol", "HTTP/1.1");
        if let Some(upstream) = upstream {
            span.tag("upstream_address", upstream.to_string());
            span.tag("peer.address", upstream.to_string());
        }
        span.tag("component", "proxy");
        span.tag("upstream_cluster", cluster);
        span.tag("upstream_cluster.name", cluster);
        span.tag("http.status_code", code.unwrap_or(0).to_string());
        span.tag("response_flags", flags);
        if code.is_none_or(|c| c >= 500) {
            span.tag("error", "true");
        }
    }

    /// The span ends and goes to the provider (if sampled).
    pub fn finish(mut self) {
        self.span.end();
        self.driver.report(&self.span);
    }
}

/// One connection manager's tracing on one worker.
pub struct Tracer {
    config: Tracing,
    request_id: UuidRequestId,
    /// On an egress listener.
    egress: bool,
    /// The router's `start_child_span`.
    start_child_span: bool,
    /// `node.id` and `node.locality.zone`, tags of every server span.
    node: (String, String),
    driver: Option<Rc<Driver>>,
    stats: TracingStats,
}

/// A stream's tracing: its span, the upstream request's, and the decorator's operation
/// still to tell the client.
pub struct StreamTrace {
    span: Span,
    child: Option<Span>,
    decorated: Option<String>,
}

impl Tracer {
    /// The tracing of the connection manager `hcm` (none without `tracing`), on an
    /// `egress` listener or not, its spans going to `driver` (none: counted, never
    /// reported); `node`: `node.id` and its zone.
    pub fn new(
        hcm: &HttpConnectionManager,
        egress: bool,
        node: (String, String),
        driver: Option<Rc<Driver>>,
        store: &std::sync::Arc<Store>,
    ) -> Option<Tracer> {
        let config = hcm.tracing.as_ref()?;
        let prefix = format!("http.{}.tracing.", hcm.stat_prefix);
        let scope = Scope::new(store, &prefix, "http.tracing.", &[]);
        Some(Tracer {
            config: config.clone(),
            request_id: hcm.request_id,
            egress,
            start_child_span: hcm.start_child_span,
            node,
            driver,
            stats: TracingStats {
                random_sampling: scope.counter("random_sampling"),
                service_forced: scope.counter("service_forced"),
                client_enabled: scope.counter("client_enabled"),
                not_traceable: scope.counter("not_traceable"),
                _health_check: scope.counter("health_check"),
            },
        })
    }

    /// What the calls of a stream's filters make their spans from.
    pub fn parent(&self, trace: &StreamTrace) -> Option<ParentSpan> {
        let driver = self.driver.clone()?;
        let zipkin_w3c = match &self.config.provider {
            Some(TracingProvider::Zipkin(z)) => Some(z.w3c),
            _ => None,
        };
        let span = &trace.span;
        Some(ParentSpan {
            trace: span.trace,
            id: span.id,
            sampled: span.sampled,
            trace_state: span.trace_state.clone(),
            zipkin_w3c,
            driver,
        })
    }

    /// Whether the upstream request gets a span of its own.
    fn spawns_upstream(&self) -> bool {
        self.config.spawn_upstream_span || self.start_child_span
    }

    /// A request's headers arrived: the sampling decision (packed into `x-request-id`,
    /// counted), then its span, named by the route's `decorator` or the caller's
    /// `x-envoy-decorator-operation` (`None`: no provider, or a malformed context).
    pub fn start(&self, headers: &mut Headers, decorator: Option<&Decorator>) -> Option<StreamTrace> {
        let reason = self.decide(headers);
        match reason {
            Reason::Sampling => self.stats.random_sampling.inc(),
            Reason::ServiceForced => self.stats.service_forced.inc(),
            Reason::ClientForced => self.stats.client_enabled.inc(),
            Reason::NotTraceable => self.stats.not_traceable.inc(),
        }
        let traced = reason != Reason::NotTraceable;
        let driver = self.driver.as_ref()?;
        let spawn = self.config.spawn_upstream_span
            || matches!(&self.config.provider, Some(TracingProvider::Zipkin(z)) if z.split_spans_for_request);
        let role = SpanRole { client: self.egress && !spawn, egress: self.egress };
        let mut span = match (&**driver, &self.config.provider) {
            (Driver::Zipkin(_), Some(TracingProvider::Zipkin(z))) => zipkin::start(z, headers, traced, role)?,
            (Driver::Otel(_), _) => otel::start(headers, traced, role)?,
            _ => return None,
        };
        // Zipkin drops empty tags; OpenTelemetry keeps these two even empty.
        span.tag("node_id", self.node.0.clone());
        span.tag("zone", self.node.1.clone());
        let mut decorated = None;
        if let Some(d) = decorator.filter(|d| !d.operation.is_empty()) {
            span.name = d.operation.clone();
            decorated = d.propagate.then(|| d.operation.clone());
        }
        if self.egress {
            if let Some(op) = &decorated {
                headers.replace(DECORATOR_HEADER, op.as_bytes());
            }
            decorated = None;
        } else if let Some(op) = headers.get(DECORATOR_HEADER).map(<[u8]>::to_vec) {
            if !op.is_empty() {
                span.name = String::from_utf8_lossy(&op).into_owned();
                decorated = None;
            }
            headers.remove(DECORATOR_HEADER);
        }
        Some(StreamTrace { span, child: None, decorated })
    }

    /// Envoy's decision, from `x-request-id`: a reason it carries already, else a client's
    /// `x-client-trace-id` (drawn against `client_sampling`), `x-envoy-force-trace`, or the
    /// id drawn against `random_sampling`; then capped by `overall_sampling`.
    fn decide(&self, headers: &mut Headers) -> Reason {
        if !self.request_id.use_for_trace_sampling {
            return Reason::Sampling;
        }
        let Some(id) = headers.get(b"x-request-id").map(<[u8]>::to_vec) else { return Reason::NotTraceable };
        let Some(draw) =
            id.get(..8).and_then(|h| std::str::from_utf8(h).ok()).and_then(|h| u64::from_str_radix(h, 16).ok())
        else {
            return Reason::NotTraceable;
        };
        let draw = (draw % 10_000) as u32;
        let mut reason = match id.get(14).filter(|_| id.len() == 36) {
            Some(b'9') => Reason::Sampling,
            Some(b'a') => Reason::ServiceForced,
            Some(b'b') => Reason::ClientForced,
            _ => Reason::NotTraceable,
        };
        if reason == Reason::NotTraceable {
            let client_draw = (crate::random::next_u64() % 10_000) as u32;
            if headers.get(b"x-client-trace-id").is_some() && client_draw < self.config.client_sampling {
                reason = Reason::ClientForced;
            } else if headers.get(b"x-envoy-force-trace").is_some() {
                reason = Reason::ServiceForced;
            } else if draw < self.config.random_sampling {
                reason = Reason::Sampling;
            }
        }
        if reason != Reason::NotTraceable && draw >= self.config.overall_sampling {
            reason = Reason::NotTraceable;
        }
        if self.request_id.pack_trace_reason && id.len() == 36 && id[14] != reason.digit() {
            let mut packed = id;
            packed[14] = reason.digit();
            headers.replace(b"x-request-id", &packed);
        }
        reason
    }

    /// The request goes upstream to `cluster`: the upstream request's span if asked, and
    /// the context told to the upstream (unless `no_context_propagation`).
    pub fn inject(&self, trace: &mut StreamTrace, headers: &mut Headers, cluster: &str) {
        if self.spawns_upstream() && trace.child.is_none() {
            let name = format!("router {cluster} egress");
            let client = self.config.spawn_upstream_span || self.egress;
            trace.child = Some(match &self.config.provider {
                Some(TracingProvider::Zipkin(z)) => zipkin::child(z, &trace.span, name, client),
                _ => otel::child(&trace.span, name),
            });
        }
        if self.config.no_context_propagation {
            return;
        }
        let span = trace.child.as_ref().unwrap_or(&trace.span);
        match &self.config.provider {
            Some(TracingProvider::Zipkin(z)) => zipkin::inject(z.w3c, span, headers),
            _ => otel::inject(span, headers),
        }
    }

    /// The response headers, before they go: an ingress span's decorator is told to the
    /// client; an egress span takes the upstream's name for itself.
    pub fn respond(&self, trace: &mut StreamTrace, headers: &mut Headers) {
        if let Some(op) = &trace.decorated {
            headers.replace(DECORATOR_HEADER, op.as_bytes());
        } else if self.egress
            && let Some(op) = headers.get(DECORATOR_HEADER).map(<[u8]>::to_vec)
        {
            if !op.is_empty() {
                trace.span.name = String::from_utf8_lossy(&op).into_owned();
            }
            headers.remove(DECORATOR_HEADER);
        }
    }

    /// The stream ended: the spans get their tags, end, and go to the provider (the
    /// upstream request's first).
    pub fn finish(
        &self,
        mut trace: StreamTrace,
        info: &StreamInfo,
        request: Option<&Headers>,
        response: Option<&Headers>,
    ) {
        let Some(driver) = &self.driver else { return };
        let code =
            response.and_then(|r| r.get(b":status")).and_then(|s| std::str::from_utf8(s).ok()?.parse::<u16>().ok());
        if let Some(mut child) = trace.child.take() {
            child.tag("http.protocol", if info.protocol == "HTTP/2" { "HTTP/2" } else { "HTTP/1.1" });
            if let Some(upstream) = info.upstream {
                child.tag("upstream_address", upstream.to_string());
                child.tag("peer.address", upstream.to_string());
            }
            self.common_tags(&mut child, info, code, request);
            child.end();
            driver.report(&child);
        }
        let span = &mut trace.span;
        if let Some(request) = request {
            self.request_tags(span, request, info);
        }
        span.tag("request_size", info.request_body_size.to_string());
        span.tag("response_size", info.response_body_size.to_string());
        self.common_tags(span, info, code, request);
        if let Some(status) = response.and_then(|r| r.get(b"grpc-status")) {
            let status = String::from_utf8_lossy(status).into_owned();
            if matches!(status.as_str(), "2" | "4" | "8" | "12" | "13" | "14" | "15") {
                span.tag("error", "true");
            }
            span.tag("grpc.status_code", status);
            if let Some(message) = response.and_then(|r| r.get(b"grpc-message")) {
                span.tag("grpc.message", String::from_utf8_lossy(message).into_owned());
            }
        }
        span.end();
        driver.report(span);
    }

    /// What the request says: its id, URL, method, client.
    fn request_tags(&self, span: &mut Span, request: &Headers, info: &StreamInfo) {
        let text = |name: &[u8]| request.get(name).map(|v| String::from_utf8_lossy(v).into_owned());
        if let Some(id) = text(b"x-request-id") {
            span.tag("guid:x-request-id", id);
        }
        let path = text(b"x-envoy-original-path").or_else(|| text(b":path")).unwrap_or_default();
        let url = if path.is_empty() {
            String::new()
        } else {
            let cut = path.char_indices().nth(self.config.max_path_tag_length).map_or(path.len(), |(i, _)| i);
            format!(
                "{}://{}{}",
                text(b":scheme").unwrap_or_default(),
                text(b":authority").unwrap_or_default(),
                &path[..cut]
            )
        };
        span.tag("http.url", url);
        span.tag("http.method", text(b":method").unwrap_or_default());
        span.tag("downstream_cluster", text(b"x-envoy-downstream-service-cluster").unwrap_or_else(|| "-".into()));
        span.tag("user_agent", text(b"user-agent").unwrap_or_else(|| "-".into()));
        span.tag("http.protocol", info.protocol);
        span.tag("peer.address", info.connection.peer.ip().to_string());
        if let Some(id) = text(b"x-client-trace-id") {
            span.tag("guid:x-client-trace-id", id);
        }
        if crate::http::reply::is_grpc_request(request) {
            for (tag, header) in [
                ("grpc.path", &b":path"[..]),
                ("grpc.authority", b":authority"),
                ("grpc.content_type", b"content-type"),
                ("grpc.timeout", b"grpc-timeout"),
            ] {
                if let Some(value) = text(header) {
                    span.tag(tag, value);
                }
            }
        }
    }

    /// The tags every span gets: the cluster, the status, the flags, custom tags.
    fn common_tags(&self, span: &mut Span, info: &StreamInfo, code: Option<u16>, request: Option<&Headers>) {
        span.tag("component", "proxy");
        if !info.cluster_name.is_empty() {
            span.tag("upstream_cluster", info.cluster_name.clone());
            span.tag("upstream_cluster.name", info.cluster_name.clone());
        }
        span.tag("http.status_code", code.unwrap_or(0).to_string());
        span.tag("response_flags", info.response_flags.short_string());
        if code.is_none_or(|c| c >= 500) {
            span.tag("error", "true");
        }
        for tag in &self.config.custom_tags {
            match tag {
                CustomTag::Literal { tag, value } => span.tag(tag, value.clone()),
                CustomTag::RequestHeader { tag, name, default } => {
                    let value =
                        request.and_then(|r| r.get(name.as_bytes())).map(|v| String::from_utf8_lossy(v).into_owned());
                    span.tag(tag, value.unwrap_or_else(|| default.clone()));
                }
            }
        }
    }
}

/// What sends a worker's spans to its provider's collector.
pub trait Sender: 'static {
    /// Sends what is waiting, in one report.
    fn flush(self: &Rc<Self>);
    /// Counts a flush of the timer's.
    fn timer_flushed(&self);
}

/// The spans a worker keeps until it sends them: every [`MIN_FLUSH_SPANS`], and what is
/// waiting every [`FLUSH_INTERVAL`] (the timer starts with the first span).
pub struct Batch<T> {
    waiting: RefCell<Vec<T>>,
    timer: Cell<bool>,
}

impl<T> Batch<T> {
    /// An empty batch, its timer not started.
    pub fn new() -> Batch<T> {
        Batch { waiting: RefCell::new(Vec::new()), timer: Cell::new(false) }
    }

    /// Starts the timer that flushes `sender` while it lives, the first time.
    pub fn start_timer<S: Sender>(&self, sender: &Rc<S>) {
        if self.timer.replace(true) {
            return;
        }
        let weak: Weak<S> = Rc::downgrade(sender);
        tokio::task::spawn_local(async move {
            loop {
                tokio::time::sleep(FLUSH_INTERVAL).await;
                let Some(sender) = weak.upgrade() else { return };
                sender.timer_flushed();
                sender.flush();
            }
        });
    }

    /// How many wait.
    pub fn len(&self) -> usize {
        self.waiting.borrow().len()
    }

    /// Keeps `item`; true when a batch is full.
    pub fn push(&self, item: T) -> bool {
        let mut waiting = self.waiting.borrow_mut();
        waiting.push(item);
        waiting.len() >= MIN_FLUSH_SPANS
    }

    /// Takes what waits.
    pub fn take(&self) -> Vec<T> {
        std::mem::take(&mut *self.waiting.borrow_mut())
    }
}

/// A report sent as Envoy's async client sends it: an internal request from this machine.
pub fn internal_request(headers: &mut Headers) {
    headers.replace(b"x-envoy-internal", b"true");
    headers.replace(b"x-forwarded-for", crate::stream_info::node::local_address().to_string().as_bytes());
}

/// A header value made only of text (the configuration allows no other).
pub fn literal(pieces: &[Piece]) -> String {
    pieces
        .iter()
        .filter_map(|p| match p {
            Piece::Text(t) => Some(t.as_str()),
            Piece::Op(..) => None,
        })
        .collect()
}
