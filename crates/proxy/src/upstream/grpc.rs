//! Plugins' gRPC callouts (`proxy_grpc_call`, `proxy_grpc_stream`) over a cluster's
//! HTTP/2 connections: gRPC's framing, metadata and status, delivered to the plugin as
//! Envoy's async gRPC client delivers them.

use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use http_body_util::BodyExt;
use hyper::body::{Body as _, Incoming};
use wasmproxy_host::Headers;

use crate::http::reply::grpc_status_of_http;
use crate::limits::MAX_CALLOUT_BODY_BYTES;
use crate::upstream::cluster::{Cluster, Clusters};
use crate::upstream::error::UpstreamError;

/// gRPC status codes the proxy itself produces.
pub mod code {
    /// OK.
    pub const OK: u32 = 0;
    /// UNKNOWN.
    pub const UNKNOWN: u32 = 2;
    /// DEADLINE_EXCEEDED.
    pub const DEADLINE_EXCEEDED: u32 = 4;
    /// INTERNAL.
    pub const INTERNAL: u32 = 13;
    /// UNAVAILABLE.
    pub const UNAVAILABLE: u32 = 14;
}

/// The cluster and `:authority` a callout's `upstream` argument names: a serialized
/// `GrpcService` with `envoy_grpc { cluster_name, authority }`, or, as Envoy accepts when
/// the bytes are not such a message, a plain cluster name.
pub fn target(clusters: &Clusters, service_config: &[u8]) -> Option<(std::rc::Rc<Cluster>, String)> {
    let (cluster, authority) = match envoy_grpc(service_config) {
        Some(parsed) => parsed,
        None => (String::from_utf8(service_config.to_vec()).ok()?, String::new()),
    };
    let found = clusters.get(&cluster)?;
    let authority = if authority.is_empty() { cluster } else { authority };
    Some((found, authority))
}

/// Whether a callout's `upstream` argument is a `GrpcService` naming `cluster`.
pub fn names_cluster(service_config: &[u8], cluster: &str) -> bool {
    envoy_grpc(service_config).is_some_and(|(name, _)| name == cluster)
}

/// `GrpcService.envoy_grpc` (field 1) → `EnvoyGrpc.cluster_name` (1) and `authority` (2).
fn envoy_grpc(bytes: &[u8]) -> Option<(String, String)> {
    let fields = crate::proto::length_delimited_fields(bytes)?;
    let inner = fields.iter().find(|(n, _)| *n == 1)?.1;
    let inner = crate::proto::length_delimited_fields(inner)?;
    let text = |n: u64| inner.iter().find(|(f, _)| *f == n).map(|(_, v)| String::from_utf8_lossy(v).into_owned());
    Some((text(1)?, text(2).unwrap_or_default()))
}

/// The request headers of a call: Envoy's async client's, the plugin's metadata, then
/// the router's.
pub fn request_headers(
    authority: &str,
    service: &str,
    method: &str,
    metadata: &Headers,
    timeout: Option<Duration>,
) -> Headers {
    let mut h = Headers::new();
    h.add(b":method", b"POST");
    h.add(b":path", format!("/{service}/{method}").as_bytes());
    h.add(b":authority", authority.as_bytes());
    h.add(b":scheme", b"http");
    h.add(b"content-type", b"application/grpc");
    h.add(b"te", b"trailers");
    if let Some(t) = timeout {
        h.add(b"grpc-timeout", format!("{}m", t.as_millis()).as_bytes());
    }
    for (k, v) in metadata.iter() {
        h.add(k, v);
    }
    // Envoy's router marks callouts internal and announces their timeout.
    h.add(b"x-envoy-internal", b"true");
    if let Some(t) = timeout {
        h.add(b"x-envoy-expected-rq-timeout-ms", t.as_millis().to_string().as_bytes());
    }
    h
}

/// One message in gRPC's length-prefixed framing (not compressed).
pub fn frame(message: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(5 + message.len());
    out.extend_from_slice(&[0]);
    out.extend_from_slice(&(message.len() as u32).to_be_bytes());
    out.extend_from_slice(message);
    out.freeze()
}

/// Messages taken from a byte stream as they complete.
#[derive(Default)]
pub struct Deframer {
    pending: BytesMut,
}

impl Deframer {
    /// Adds bytes; returns the messages now complete, or an error for a compressed or
    /// oversized message.
    pub fn push(&mut self, data: &[u8]) -> Result<Vec<Vec<u8>>, String> {
        self.pending.extend_from_slice(data);
        let mut out = Vec::new();
        while self.pending.len() >= 5 {
            if self.pending[0] != 0 {
                return Err("compressed gRPC messages are not supported".into());
            }
            let len = u32::from_be_bytes([self.pending[1], self.pending[2], self.pending[3], self.pending[4]]) as usize;
            if len > MAX_CALLOUT_BODY_BYTES {
                return Err(format!("a gRPC message of {len} bytes is over the limit"));
            }
            if self.pending.len() < 5 + len {
                break;
            }
            self.pending.advance(5);
            out.push(self.pending.split_to(len).to_vec());
        }
        Ok(out)
    }

    /// Whether a message is cut short.
    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }
}

/// The status a response ends with: `grpc-status` and `grpc-message` from the trailers
/// (or the headers of a trailers-only answer), else Envoy's mapping of the HTTP status.
pub fn status(headers: &Headers, trailers: Option<&Headers>) -> (u32, String) {
    // Envoy 1.40 tells plugins where the status came from: `{via_upstream}` after the
    // upstream's `grpc-message`.
    let from = |h: &Headers| {
        let code = std::str::from_utf8(h.get(b"grpc-status")?).ok()?.trim().parse::<u32>().ok()?;
        let message = h.get(b"grpc-message").map(|m| String::from_utf8_lossy(m).into_owned()).unwrap_or_default();
        Some((code, format!("{message}{{via_upstream}}")))
    };
    if let Some(found) = trailers.and_then(from).or_else(|| from(headers)) {
        return found;
    }
    match headers.get(b":status") {
        Some(b"200") => (code::UNKNOWN, "missing grpc-status".into()),
        Some(s) => {
            let status = std::str::from_utf8(s).ok().and_then(|s| s.parse().ok()).unwrap_or(0);
            (grpc_status_of_http(status), format!("HTTP status {}", String::from_utf8_lossy(s)))
        }
        None => (code::INTERNAL, "no response status".into()),
    }
}

/// The status for a call that got no response.
pub fn failure_status(e: &UpstreamError) -> (u32, String) {
    match e {
        UpstreamError::Timeout | UpstreamError::PerTryTimeout => {
            (code::DEADLINE_EXCEEDED, "upstream request timeout".into())
        }
        UpstreamError::NoHealthyUpstream => (code::UNAVAILABLE, "no healthy upstream".into()),
        UpstreamError::ConnectionFailure(_)
        | UpstreamError::Disconnected(_)
        | UpstreamError::Refused(_)
        | UpstreamError::Overflow => (code::UNAVAILABLE, "upstream connect error".into()),
        UpstreamError::ResponseTooLarge => (code::INTERNAL, "response too large".into()),
    }
}

/// What a response's body yields: messages as they complete, then the trailers.
pub enum Received {
    /// A whole message.
    Message(Vec<u8>),
    /// The trailers (the end).
    Trailers(Headers),
}

/// Reads a response body into messages and trailers, calling `each` as they come.
pub async fn read_body(body: &mut Incoming, mut each: impl FnMut(Received)) -> Result<(), String> {
    let mut deframer = Deframer::default();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| e.to_string())?;
        match frame.into_data() {
            Ok(data) => {
                for message in deframer.push(&data)? {
                    each(Received::Message(message));
                }
            }
            Err(frame) => {
                if let Ok(trailers) = frame.into_trailers() {
                    each(Received::Trailers(crate::http::convert::plain_headers(&trailers)));
                }
            }
        }
    }
    if !deframer.is_empty() {
        return Err("the response ended inside a gRPC message".into());
    }
    Ok(())
}

/// What a callout hands back to the VM that made it.
pub enum Event {
    /// The response headers of a stream.
    InitialMetadata(Headers),
    /// A message.
    Message(Vec<u8>),
    /// The trailers of a stream.
    TrailingMetadata(Headers),
    /// The end, with its status (for a unary call: only on failure).
    Close(u32, String),
}

/// Where a callout's events go.
pub type Sink = std::rc::Rc<dyn Fn(Event)>;

/// A unary call: one message out, one back (`Event::Message`), or `Event::Close` with
/// the failure, as Envoy's async client reports a unary call.
pub async fn unary(
    cluster: std::rc::Rc<Cluster>,
    headers: Headers,
    message: Vec<u8>,
    timeout: Option<Duration>,
    sink: Sink,
) {
    match call(cluster, headers, message, timeout).await {
        Ok(message) => sink(Event::Message(message)),
        Err((code, text)) => sink(Event::Close(code, text)),
    }
}

/// A unary call: the answer's one message, or the call's status code and message.
pub async fn call(
    cluster: std::rc::Rc<Cluster>,
    headers: Headers,
    message: Vec<u8>,
    timeout: Option<Duration>,
) -> Result<Vec<u8>, (u32, String)> {
    // Envoy's gRPC client sends no `content-length`.
    let response = cluster.send(&headers, frame(&message), timeout, false).await.map_err(|e| failure_status(&e))?;
    let trailers = (!response.trailers.is_empty()).then_some(&response.trailers);
    let (code, text) = status(&response.headers, trailers);
    if code != code::OK {
        return Err((code, text));
    }
    let mut deframer = Deframer::default();
    match deframer.push(&response.body) {
        Ok(mut messages) if messages.len() == 1 && deframer.is_empty() => Ok(messages.remove(0)),
        Ok(messages) => Err((code::INTERNAL, format!("{} messages in a unary response", messages.len()))),
        Err(e) => Err((code::INTERNAL, e)),
    }
}

/// A unary call a filter makes to its service (`service`'s cluster and authority,
/// `/<service_name>/<method>`), saying where it comes from (`x-forwarded-for`), as Envoy's
/// filters' clients do, with what `inject` adds to its headers (a span's context): the
/// answer decoded, or the call's status and why (OK for an answer that does not decode:
/// the call itself succeeded, as Envoy's span of it says).
pub async fn call_service<R: prost::Message + Default>(
    clusters: &Clusters,
    service: &wasmproxy_config::model::GrpcService,
    (service_name, method): (&str, &str),
    message: Vec<u8>,
    timeout: Option<Duration>,
    inject: impl FnOnce(&mut Headers),
) -> Result<R, (u32, String)> {
    let Some(cluster) = clusters.get(&service.cluster) else {
        return Err((code::UNAVAILABLE, format!("no cluster {}", service.cluster)));
    };
    let mut headers = request_headers(service.authority(), service_name, method, &Headers::new(), timeout);
    headers.add(b"x-forwarded-for", crate::stream_info::node::local_address().to_string().as_bytes());
    inject(&mut headers);
    let answer = call(cluster, headers, message, timeout).await?;
    R::decode(answer.as_slice()).map_err(|e| (code::OK, format!("the answer does not decode: {e}")))
}

/// A stream: messages go out as the plugin sends them (`None` half-closes); the
/// response's headers, messages, trailers and status come back as events.
pub async fn stream(
    cluster: std::rc::Rc<Cluster>,
    headers: Headers,
    mut outgoing: tokio::sync::mpsc::UnboundedReceiver<Option<Vec<u8>>>,
    sink: Sink,
) {
    let (tx, body) = crate::http::body::channel();
    let forward = async move {
        while let Some(Some(message)) = outgoing.recv().await {
            if tx.send(Ok(hyper::body::Frame::data(frame(&message)))).await.is_err() {
                break;
            }
        }
        // Dropping the sender ends the request body: the half-close.
    };
    let exchange = async {
        let started = std::time::Instant::now();
        let (mut response_headers, mut body) =
            match cluster.start(&headers, http_body_util::Either::Right(body), false, None).await {
                Ok(started) => (started.headers, started.body),
                Err(e) => {
                    let (code, text) = failure_status(&e);
                    sink(Event::Close(code, text));
                    return;
                }
            };
        // Through Envoy's router, as every callout.
        let ms = started.elapsed().as_millis().to_string();
        response_headers.add(b"x-envoy-upstream-service-time", ms.as_bytes());
        // A trailers-only answer is just the status.
        if !(body.is_end_stream() && response_headers.get(b"grpc-status").is_some()) {
            sink(Event::InitialMetadata(response_headers.clone()));
        }
        let mut trailers = None;
        let read = read_body(&mut body, |r| match r {
            Received::Message(m) => sink(Event::Message(m)),
            Received::Trailers(t) => {
                sink(Event::TrailingMetadata(t.clone()));
                trailers = Some(t);
            }
        })
        .await;
        let (code, text) = match read {
            Ok(()) => status(&response_headers, trailers.as_ref()),
            Err(e) => (code::INTERNAL, e),
        };
        sink(Event::Close(code, text));
    };
    // The stream is over when the response is; the plugin's side may still be open.
    tokio::select! {
        () = exchange => {}
        () = async { forward.await; std::future::pending::<()>().await } => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_service_or_plain_cluster_name() {
        // GrpcService { envoy_grpc { cluster_name: "grpc_backend", authority: "svc.local" } }
        let mut inner = vec![0x0a, 12];
        inner.extend_from_slice(b"grpc_backend");
        inner.extend_from_slice(&[0x12, 9]);
        inner.extend_from_slice(b"svc.local");
        let mut service = vec![0x0a, inner.len() as u8];
        service.extend_from_slice(&inner);
        assert_eq!(envoy_grpc(&service), Some(("grpc_backend".into(), "svc.local".into())));
        assert_eq!(envoy_grpc(b"grpc_backend"), None, "a cluster name is not a GrpcService");
    }

    #[test]
    fn messages_are_framed_and_reassembled_across_chunks() {
        let mut stream = frame(b"one").to_vec();
        stream.extend_from_slice(&frame(b"second"));
        let mut d = Deframer::default();
        assert_eq!(d.push(&stream[..6]).unwrap(), Vec::<Vec<u8>>::new());
        assert_eq!(d.push(&stream[6..]).unwrap(), vec![b"one".to_vec(), b"second".to_vec()]);
        assert!(d.is_empty());
        assert!(Deframer::default().push(&[1, 0, 0, 0, 0]).is_err(), "compressed");
    }

    #[test]
    fn status_from_trailers_headers_or_http() {
        let ok = Headers::from_pairs([(":status", "200")]);
        let trailers = Headers::from_pairs([("grpc-status", "5"), ("grpc-message", "not here")]);
        assert_eq!(status(&ok, Some(&trailers)), (5, "not here{via_upstream}".into()));
        let only = Headers::from_pairs([(":status", "200"), ("grpc-status", "12")]);
        assert_eq!(status(&only, None), (12, "{via_upstream}".into()));
        assert_eq!(status(&Headers::from_pairs([(":status", "503")]), None).0, code::UNAVAILABLE);
    }
}
