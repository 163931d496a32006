//! What a spec's plugin talks to: the client, the upstream and each callout service, the
//! services answering as the case scripts them and writing down what they receive.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};

use super::spec::{Answer, HeaderList, Protocol, Request};

/// What a service received in one request.
#[derive(Debug, Clone, Default)]
pub struct Received {
    /// The method.
    pub method: String,
    /// The path and query.
    pub path: String,
    /// The headers, in order, with `:authority` first when the request had one.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
    /// gRPC: the request's messages.
    pub messages: Vec<Vec<u8>>,
    /// The trailers.
    pub trailers: Vec<(String, String)>,
    /// The spec declared no answer for it (it got a 500).
    pub unscripted: bool,
}

/// A scripted service on a loopback port.
pub struct Service {
    /// Where it listens.
    pub addr: SocketAddr,
    script: Arc<Mutex<Script>>,
}

/// A service's answers for the current case and what it has received during it.
#[derive(Default)]
struct Script {
    protocol: Option<Protocol>,
    answers: VecDeque<Answer>,
    /// Answers every request when set (the upstream), instead of `answers`.
    always: Option<Answer>,
    received: Vec<Received>,
}

impl Service {
    /// Starts a service speaking `protocol` (gRPC framing for its messages) on a free
    /// loopback port, serving HTTP/1.1 and HTTP/2 by prior knowledge.
    pub async fn start(protocol: Protocol) -> std::io::Result<Service> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let script = Arc::new(Mutex::new(Script { protocol: Some(protocol), ..Script::default() }));
        let shared = script.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let script = shared.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req| answer(req, script.clone()));
                    // An answer carries the headers the spec gives it, no `date`.
                    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                    builder.http1().auto_date_header(false);
                    builder.http2().auto_date_header(false);
                    let _ = builder.serve_connection(TokioIo::new(stream), service).await;
                });
            }
        });
        Ok(Service { addr, script })
    }

    /// The answers for the next case (one per call, in order), forgetting what it
    /// received before.
    pub fn script(&self, answers: &[Answer]) {
        let mut s = lock(&self.script);
        s.answers = answers.iter().cloned().collect();
        s.received.clear();
    }

    /// One answer for every request of the next case, forgetting what it received before.
    pub fn always(&self, answer: Answer) {
        let mut s = lock(&self.script);
        s.always = Some(answer);
        s.received.clear();
    }

    /// What it has received since the case began.
    pub fn received(&self) -> Vec<Received> {
        lock(&self.script).received.clone()
    }
}

fn lock(script: &Mutex<Script>) -> std::sync::MutexGuard<'_, Script> {
    script.lock().unwrap_or_else(|e| e.into_inner())
}

/// Writes the request down and answers with the script's next answer (or never, for a
/// `timeout` answer: the caller's timeout ends the call).
async fn answer(
    req: http::Request<Incoming>,
    script: Arc<Mutex<Script>>,
) -> Result<http::Response<Frames>, Infallible> {
    let (parts, body) = req.into_parts();
    let collected = body.collect().await.ok();
    let trailers = collected.as_ref().and_then(|c| c.trailers().cloned()).unwrap_or_default();
    let body = collected.map(|c| c.to_bytes().to_vec()).unwrap_or_default();
    let mut headers: Vec<(String, String)> =
        parts.uri.authority().map(|a| (":authority".to_string(), a.to_string())).into_iter().collect();
    headers.extend(pairs(&parts.headers));
    let mut received = Received {
        method: parts.method.to_string(),
        path: parts.uri.path_and_query().map_or("/".into(), |p| p.to_string()),
        headers,
        trailers: pairs(&trailers),
        ..Received::default()
    };
    let (protocol, next) = {
        let mut s = lock(&script);
        let next = s.always.clone().or_else(|| s.answers.pop_front());
        (s.protocol.unwrap_or_default(), next)
    };
    if protocol == Protocol::Grpc {
        received.messages = grpc_messages(&body);
    }
    received.body = body;
    received.unscripted = next.is_none();
    lock(&script).received.push(received);
    let Some(next) = next else {
        let text = "plugin-test: the spec declares no answer for this call\n";
        return Ok(respond(500, &HeaderList::default(), vec![Frame::data(Bytes::from(text))]));
    };
    if next.timeout {
        std::future::pending::<()>().await;
    }
    Ok(match protocol {
        Protocol::Http => {
            let mut frames = vec![Frame::data(Bytes::from(next.body.map(|b| b.0).unwrap_or_default()))];
            if !next.trailers.0.is_empty() {
                frames.push(Frame::trailers(header_map(&next.trailers)));
            }
            respond(next.status.unwrap_or(200), &next.headers, frames)
        }
        Protocol::Grpc => grpc_answer(next),
    })
}

/// A gRPC answer: the messages, then `grpc-status` (and `grpc-message`) in the trailers.
fn grpc_answer(next: Answer) -> http::Response<Frames> {
    let mut frames: Vec<Frame<Bytes>> = next.messages.iter().map(|m| Frame::data(grpc_frame(m.0.as_bytes()))).collect();
    let mut trailers = header_map(&next.trailers);
    trailers.insert("grpc-status", http::HeaderValue::from(next.grpc_status.unwrap_or(0)));
    if let Some(message) = next.grpc_message.as_deref().and_then(|m| http::HeaderValue::try_from(m).ok()) {
        trailers.insert("grpc-message", message);
    }
    frames.push(Frame::trailers(trailers));
    let mut headers = next.headers.clone();
    headers.0.insert(0, ("content-type".into(), "application/grpc".into()));
    respond(next.status.unwrap_or(200), &headers, frames)
}

fn respond(status: u16, headers: &HeaderList, frames: Vec<Frame<Bytes>>) -> http::Response<Frames> {
    let mut response = http::Response::new(Frames(frames.into()));
    *response.status_mut() = http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::OK);
    *response.headers_mut() = header_map(headers);
    response
}

/// A message in gRPC's framing: not compressed, its length, the bytes.
fn grpc_frame(message: &[u8]) -> Bytes {
    let mut framed = vec![0u8];
    framed.extend_from_slice(&(message.len() as u32).to_be_bytes());
    framed.extend_from_slice(message);
    framed.into()
}

/// The messages of a gRPC body (a partial last frame is dropped).
fn grpc_messages(mut body: &[u8]) -> Vec<Vec<u8>> {
    let mut messages = Vec::new();
    while body.len() >= 5 {
        let len = u32::from_be_bytes([body[1], body[2], body[3], body[4]]) as usize;
        let Some(message) = body.get(5..5 + len) else { break };
        messages.push(message.to_vec());
        body = &body[5 + len..];
    }
    messages
}

fn header_map(headers: &HeaderList) -> http::HeaderMap {
    let mut map = http::HeaderMap::new();
    for (k, v) in &headers.0 {
        if let (Ok(k), Ok(v)) = (http::HeaderName::try_from(k.as_str()), http::HeaderValue::try_from(v.as_str())) {
            map.append(k, v);
        }
    }
    map
}

fn pairs(headers: &http::HeaderMap) -> Vec<(String, String)> {
    headers.iter().map(|(k, v)| (k.to_string(), String::from_utf8_lossy(v.as_bytes()).into_owned())).collect()
}

/// A body of frames given in advance.
pub struct Frames(VecDeque<Frame<Bytes>>);

impl hyper::body::Body for Frames {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        std::task::Poll::Ready(self.0.pop_front().map(Ok))
    }

    fn is_end_stream(&self) -> bool {
        self.0.is_empty()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        // One piece of data and nothing after: its length is known (`content-length`).
        match self.0.front() {
            None => hyper::body::SizeHint::with_exact(0),
            Some(f) if self.0.len() == 1 => f
                .data_ref()
                .map_or_else(hyper::body::SizeHint::default, |d| hyper::body::SizeHint::with_exact(d.len() as u64)),
            _ => hyper::body::SizeHint::default(),
        }
    }
}

/// What the client got.
#[derive(Debug, Clone, Default)]
pub struct Reply {
    /// The status.
    pub status: u16,
    /// The headers, in order.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
    /// Why no whole answer came, if none did.
    pub error: Option<String>,
}

/// How long a case's request may take.
const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(30);

/// Sends the request to `listener` on a connection of its own, reads the whole answer,
/// then closes the connection.
pub async fn exchange(listener: SocketAddr, r: &Request) -> Reply {
    match tokio::time::timeout(EXCHANGE_TIMEOUT, send(listener, r)).await {
        Ok(Ok(reply)) => reply,
        Ok(Err(e)) => Reply { error: Some(e), ..Reply::default() },
        Err(_) => Reply { error: Some(format!("no whole answer in {EXCHANGE_TIMEOUT:?}")), ..Reply::default() },
    }
}

async fn send(listener: SocketAddr, r: &Request) -> Result<Reply, String> {
    let stream = tokio::net::TcpStream::connect(listener).await.map_err(|e| format!("cannot connect: {e}"))?;
    let io = TokioIo::new(stream);
    let request = build(r)?;
    let response = if r.http2 {
        let (mut sender, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
            .await
            .map_err(|e| format!("HTTP/2 handshake: {e}"))?;
        tokio::spawn(conn);
        sender.send_request(request).await
    } else {
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(io).await.map_err(|e| format!("HTTP/1.1 handshake: {e}"))?;
        tokio::spawn(conn);
        sender.send_request(request).await
    };
    let response = response.map_err(|e| format!("no answer: {e}"))?;
    let status = response.status().as_u16();
    let headers = pairs(response.headers());
    let body = response.into_body().collect().await.map_err(|e| format!("the body broke off: {e}"))?;
    Ok(Reply { status, headers, body: body.to_bytes().to_vec(), error: None })
}

fn build(r: &Request) -> Result<http::Request<Frames>, String> {
    let mut frames: VecDeque<Frame<Bytes>> = match (&r.body, r.chunks.is_empty()) {
        (Some(body), _) => [Frame::data(Bytes::from(body.0.clone()))].into(),
        (None, false) => r.chunks.iter().map(|c| Frame::data(Bytes::from(c.0.clone()))).collect(),
        (None, true) => VecDeque::new(),
    };
    if !r.trailers.0.is_empty() {
        frames.push_back(Frame::trailers(header_map(&r.trailers)));
    }
    let mut builder = http::Request::builder().method(r.method.as_str());
    let has_host = r.headers.0.iter().any(|(k, _)| k.eq_ignore_ascii_case("host") || k == ":authority");
    let authority = r.headers.0.iter().find(|(k, _)| k.eq_ignore_ascii_case("host") || k == ":authority");
    let authority = authority.map_or("plugin.test", |(_, v)| v.as_str());
    builder = if r.http2 {
        builder.uri(format!("http://{authority}{}", r.path)).version(http::Version::HTTP_2)
    } else {
        builder.uri(r.path.as_str())
    };
    if !has_host && !r.http2 {
        builder = builder.header("host", authority);
    }
    for (k, v) in &r.headers.0 {
        if k == ":authority" || (r.http2 && k.eq_ignore_ascii_case("host")) {
            continue;
        }
        builder = builder.header(k.as_str(), v.as_str());
    }
    builder.body(Frames(frames)).map_err(|e| format!("request: {e}"))
}
