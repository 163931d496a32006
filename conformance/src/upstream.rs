//! The recording upstream both proxies send to: it writes down every request it gets
//! (method, path, headers, body, trailers) and answers by path, the same way every time.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};

type Body = http_body_util::combinators::BoxBody<Bytes, Infallible>;

/// A body of these bytes.
fn full(bytes: Bytes) -> Body {
    Full::new(bytes).boxed()
}

/// The upstream and what it has received.
#[derive(Clone)]
pub struct Upstream {
    /// Where it listens.
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<String>>>,
}

impl Upstream {
    /// Starts it on a free loopback port of 127.0.0.1, and on the same port of 127.0.0.2
    /// to 127.0.0.4 (a cluster's other endpoints); HTTP/1.1, and HTTP/2 by prior
    /// knowledge; over TLS with the run's server certificate when the client starts a
    /// handshake.
    pub async fn start() -> std::io::Result<Upstream> {
        // Another process may hold the port on one of the other addresses: try again.
        let mut tries = 0;
        loop {
            let first = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
            let addr = first.local_addr()?;
            let mut listeners = vec![first];
            for ip in OTHER_ENDPOINTS {
                match tokio::net::TcpListener::bind((ip, addr.port())).await {
                    Ok(l) => listeners.push(l),
                    Err(_) if tries < 10 => break,
                    Err(e) => return Err(e),
                }
            }
            tries += 1;
            if listeners.len() < 1 + OTHER_ENDPOINTS.len() {
                continue;
            }
            let upstream = Upstream { addr, seen: Arc::default() };
            for listener in listeners {
                tokio::spawn(accept(listener, upstream.seen.clone()));
            }
            return Ok(upstream);
        }
    }

    /// What it received since the last call, one text block per request.
    pub fn take(&self) -> Vec<String> {
        FLAKY_SEEN.lock().unwrap_or_else(|e| e.into_inner()).clear();
        std::mem::take(&mut *self.seen.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

/// The upstream's other addresses (on its port), each an endpoint of its own.
pub const OTHER_ENDPOINTS: [&str; 3] = ["127.0.0.2", "127.0.0.3", "127.0.0.4"];

/// Accepts connections on one of the upstream's addresses.
async fn accept(listener: tokio::net::TcpListener, seen: Arc<Mutex<Vec<String>>>) {
    while let Ok((stream, _)) = listener.accept().await {
        let seen = seen.clone();
        let at = stream.local_addr().map(|a| a.ip().to_string()).unwrap_or_default();
        tokio::spawn(async move {
            // A TLS client (its first byte a handshake record) gets the run's server
            // certificate; its requests are written down with what it offered.
            let mut first = [0u8; 1];
            let tls = matches!(stream.peek(&mut first).await, Ok(1) if first[0] == 0x16);
            match crate::certs::UPSTREAM.get().filter(|_| tls) {
                Some(config) => {
                    let Ok(tls) = tokio_rustls::TlsAcceptor::from(config.clone()).accept(stream).await else {
                        return;
                    };
                    let (_, session) = tls.get_ref();
                    let alpn = session.alpn_protocol().map(|p| String::from_utf8_lossy(p).into_owned());
                    let note = format!(
                        "tls: sni {} alpn {}\n",
                        session.server_name().unwrap_or("none"),
                        alpn.as_deref().unwrap_or("none")
                    );
                    serve(TokioIo::new(tls), seen, note, at).await;
                }
                None => serve(TokioIo::new(stream), seen, String::new(), at).await,
            }
        });
    }
}

/// Serves one connection (HTTP/1.1, or HTTP/2 by its preface) reached at the address
/// `at`; `note` starts the record of each of its requests.
async fn serve<I>(io: I, seen: Arc<Mutex<Vec<String>>>, note: String, at: String)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let service = service_fn(move |req| answer(req, seen.clone(), note.clone(), at.clone()));
    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
        .serve_connection_with_upgrades(io, service)
        .await;
}

async fn answer(
    req: http::Request<Incoming>,
    seen: Arc<Mutex<Vec<String>>>,
    note: String,
    at: String,
) -> Result<http::Response<Body>, Infallible> {
    let (mut parts, body) = req.into_parts();
    let path = parts.uri.path().to_string();
    // Health checks come when their timers say: answered, never written down.
    if let Some(check) = health_answer(&path, &at) {
        return Ok(check);
    }
    // Requests to the other endpoints are written down with where they went.
    let note = if at == "127.0.0.1" { note } else { format!("{note}at {at}\n") };
    let upgrade = parts.extensions.remove::<hyper::upgrade::OnUpgrade>();
    let collected = body.collect().await.ok();
    let trailers = collected.as_ref().and_then(|c| c.trailers().cloned());
    let body = collected.map(|c| c.to_bytes()).unwrap_or_default();
    // Spans reported to the collector: each written down on its own (reports batch them as
    // each proxy's timers say).
    if let Some(spans) = crate::spans::collected(&path, &body) {
        seen.lock().unwrap_or_else(|e| e.into_inner()).extend(spans.into_iter().map(|s| s + "\n"));
        return Ok(collector_answer(&path));
    }
    let mut record = format!(
        "{note}{} {} {:?}\n",
        parts.method,
        parts.uri.path_and_query().map_or("", |p| p.as_str()),
        parts.version
    );
    if let Some(a) = parts.uri.authority() {
        record.push_str(&format!(":authority: {a}\n"));
    }
    let mut headers: Vec<String> = parts
        .headers
        .iter()
        .map(|(k, v)| crate::normalize::header_line(crate::normalize::UPSTREAM, k.as_str(), v.as_bytes()))
        .collect();
    headers.sort();
    for h in headers {
        record.push_str(&h);
        record.push('\n');
    }
    let encoding = parts.headers.get("content-encoding").map(|v| v.as_bytes());
    // A check's body is written down decoded, below.
    if path != crate::authz::CHECK_PATH && path != crate::ratelimit_service::PATH {
        record.push_str(&format!("body: {}\n", crate::normalize::body_text(encoding, &body)));
    }
    for (k, v) in trailers.iter().flatten() {
        record.push_str(&format!("trailer {k}: {}\n", String::from_utf8_lossy(v.as_bytes())));
    }
    // A gRPC authorization or rate limit check: written down decoded, answered as it asks.
    let check = match path.as_str() {
        crate::authz::CHECK_PATH => Some(crate::authz::grpc_check(&body).await),
        crate::ratelimit_service::PATH => Some(crate::ratelimit_service::should_rate_limit(&body).await),
        _ => None,
    };
    let check = check.map(|(text, answer)| {
        record.push_str(&text);
        answer
    });
    seen.lock().unwrap_or_else(|e| e.into_inner()).push(record);
    if let Some(answer) = check {
        return Ok(grpc_unary_answer(answer));
    }
    if path.starts_with(&format!("{}/", crate::authz::HTTP_PREFIX)) {
        let (parts, body) = crate::authz::http_answer(&path).await.into_parts();
        return Ok(http::Response::from_parts(parts, full(body)));
    }
    if let Some(kind) = parts.headers.get(http::header::UPGRADE)
        && let Some(upgrade) = upgrade
    {
        return Ok(accept_upgrade(kind.clone(), upgrade));
    }
    if parts.headers.get("content-type").is_some_and(|v| v.as_bytes().starts_with(b"application/grpc")) {
        return Ok(grpc_respond(&path, &body));
    }
    if path.starts_with("/fail-on-3/") && at == "127.0.0.3" {
        return Ok(respond("/status/503", &body).await);
    }
    let mut response = respond(&path, &body).await;
    // `x-respond-header: name=value` (repeatable): a header the answer carries (replacing).
    for wanted in parts.headers.get_all("x-respond-header") {
        if let Some((name, value)) = wanted.to_str().ok().and_then(|w| w.split_once('='))
            && let (Ok(name), Ok(value)) =
                (http::HeaderName::try_from(name.trim()), http::HeaderValue::try_from(value.trim()))
        {
            response.headers_mut().insert(name, value);
        }
    }
    Ok(response)
}

/// What a trace collector answers: Zipkin's 202, OTLP's empty success (over gRPC, a
/// gRPC OK).
fn collector_answer(path: &str) -> http::Response<Body> {
    let builder = http::Response::builder();
    let response = match path {
        crate::spans::ZIPKIN_PATH => builder.status(202).body(Full::new(Bytes::new()).boxed()),
        crate::spans::OTLP_GRPC_PATH => {
            let (tx, body) = FrameBody::channel();
            let mut trailers = http::HeaderMap::new();
            trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
            tokio::spawn(async move {
                let _ = tx.send(Frame::data(Bytes::from_static(&[0, 0, 0, 0, 0]))).await;
                let _ = tx.send(Frame::trailers(trailers)).await;
            });
            builder.header("content-type", "application/grpc").body(body.boxed())
        }
        _ => builder.header("content-type", "application/x-protobuf").body(Full::new(Bytes::new()).boxed()),
    };
    response.unwrap_or_else(|_| http::Response::new(Full::new(Bytes::new()).boxed()))
}

/// Switches protocols (`101`, the client's `upgrade`), then echoes each chunk the client
/// sends back as `echo: <chunk>`, and closes once the client has closed its side.
fn accept_upgrade(kind: http::HeaderValue, upgrade: hyper::upgrade::OnUpgrade) -> http::Response<Body> {
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let Ok(upgraded) = upgrade.await else { return };
        let mut io = TokioIo::new(upgraded);
        let mut buf = [0u8; 4096];
        while let Ok(n) = io.read(&mut buf).await {
            if n == 0 || io.write_all(&[b"echo: ", &buf[..n]].concat()).await.is_err() {
                break;
            }
        }
        let _ = io.shutdown().await;
    });
    http::Response::builder()
        .status(http::StatusCode::SWITCHING_PROTOCOLS)
        .header(http::header::CONNECTION, "upgrade")
        .header(http::header::UPGRADE, kind)
        .body(Full::new(Bytes::new()).boxed())
        .unwrap_or_default()
}

/// The answer to a health check: `/health/ok` is 200 everywhere, `/health/bad-on-3`
/// 503 at 127.0.0.3, and `grpc.health.v1.Health/Check` is `SERVING` except at
/// 127.0.0.3 (`NOT_SERVING`).
fn health_answer(path: &str, at: &str) -> Option<http::Response<Body>> {
    let bad = at == "127.0.0.3";
    let response = match path {
        "/health/ok" => http::Response::builder().status(200).body(full(Bytes::from("ok"))),
        "/health/bad-on-3" => http::Response::builder().status(if bad { 503 } else { 200 }).body(full(Bytes::new())),
        "/grpc.health.v1.Health/Check" => {
            // HealthCheckResponse { status: SERVING (1) or NOT_SERVING (2) }, framed.
            let message = Bytes::from(vec![0, 0, 0, 0, 2, 0x08, if bad { 2 } else { 1 }]);
            let (tx, frames) = FrameBody::channel();
            let mut trailers = http::HeaderMap::new();
            trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
            tokio::spawn(async move {
                let _ = tx.send(Frame::data(message)).await;
                let _ = tx.send(Frame::trailers(trailers)).await;
            });
            http::Response::builder().header("content-type", "application/grpc").body(frames.boxed())
        }
        _ => return None,
    };
    Some(response.unwrap_or_else(|_| http::Response::new(full(Bytes::new()))))
}

/// Requests seen per `/flaky/` path since the last [`Upstream::take`].
static FLAKY_SEEN: std::sync::LazyLock<Mutex<std::collections::HashMap<String, u32>>> =
    std::sync::LazyLock::new(Mutex::default);

/// Answers by path: `/status/N` with status N, `/flaky/<n>/...` with 503 for its first n
/// requests then 200, `/chunks` in three chunks 50 ms apart,
/// `/trailers` with response trailers, `/sleep` after 300 ms, `/big` with 64 KiB,
/// `/endless` with a 1 GiB body sent as fast as it is taken, `/text/<n>`
/// with n bytes of text, `/echo` with the request body, `/modules/<build>/<file>` with a test plugin (see [`module`]);
/// anything else with a small fixed body.
async fn respond(path: &str, request_body: &Bytes) -> http::Response<Body> {
    let builder = http::Response::builder().header("x-upstream", "yes").header("content-type", "text/plain");
    let response = match path {
        "/chunks" => {
            let (tx, body) = FrameBody::channel();
            tokio::spawn(async move {
                for chunk in ["one,", "two,", "three"] {
                    let _ = tx.send(Frame::data(Bytes::from(chunk))).await;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            });
            builder.body(body.boxed())
        }
        "/trailers" => {
            let (tx, body) = FrameBody::channel();
            let mut trailers = http::HeaderMap::new();
            trailers.insert("x-trailer", http::HeaderValue::from_static("end"));
            tokio::spawn(async move {
                let _ = tx.send(Frame::data(Bytes::from("with trailers"))).await;
                let _ = tx.send(Frame::trailers(trailers)).await;
            });
            builder.body(body.boxed())
        }
        "/sleep" => {
            tokio::time::sleep(Duration::from_millis(300)).await;
            builder.body(full(Bytes::from("slept")))
        }
        "/big" => builder.body(full(Bytes::from(vec![b'b'; 64 * 1024]))),
        "/endless" => {
            const CHUNK: usize = 64 * 1024;
            let (tx, body) = FrameBody::channel();
            tokio::spawn(async move {
                let chunk = Bytes::from(vec![b'e'; CHUNK]);
                for _ in 0..(1 << 30) / CHUNK {
                    if tx.send(Frame::data(chunk.clone())).await.is_err() {
                        return;
                    }
                }
            });
            builder.header("content-length", (1usize << 30).to_string()).body(body.boxed())
        }
        // `/text/<n>`: n bytes of text that compresses well.
        p if p.starts_with("/text/") => {
            let n: usize = p["/text/".len()..].split('/').next().and_then(|n| n.parse().ok()).unwrap_or(0);
            let text: Vec<u8> = b"wasmproxy and envoy compress alike. ".iter().copied().cycle().take(n).collect();
            builder.body(full(Bytes::from(text)))
        }
        "/echo" => builder.body(full(request_body.clone())),
        p if p.starts_with("/modules/") => match p["/modules/".len()..].split_once('/') {
            Some((build, file)) if build.parse::<u8>().is_ok() => match module(file, build.parse().unwrap_or(0)) {
                Some(bytes) => builder.header("content-type", "application/wasm").body(full(Bytes::from(bytes))),
                None => builder.status(404).body(full(Bytes::from("no such module"))),
            },
            _ => builder.status(404).body(full(Bytes::from("no such module"))),
        },
        p if p.starts_with("/flaky/") => {
            // `/flaky/<n>/...`: 503 for the first n requests to the path, then 200.
            let failures: u32 = p["/flaky/".len()..].split('/').next().and_then(|n| n.parse().ok()).unwrap_or(0);
            let seen = {
                let mut counts = FLAKY_SEEN.lock().unwrap_or_else(|e| e.into_inner());
                let count = counts.entry(p.to_string()).or_insert(0);
                *count += 1;
                *count
            };
            let status = if seen <= failures { 503 } else { 200 };
            builder.status(status).body(full(Bytes::from(format!("try {seen}: {status}"))))
        }
        p if p.starts_with("/status/") => {
            let status: u16 = p["/status/".len()..].parse().unwrap_or(200);
            builder.status(status).body(full(Bytes::from(format!("status {status}"))))
        }
        _ => builder.body(full(Bytes::from("upstream body"))),
    };
    response.unwrap_or_else(|_| http::Response::new(full(Bytes::new())))
}

/// Build `build` of the test plugin `file` (from `plugins/out`): the file with a custom
/// section more, naming the build and this run (so another sha256 for each, and none a
/// proxy has cached from an earlier run), the same plugin.
pub fn module(file: &str, build: u8) -> Option<Vec<u8>> {
    if file.contains('/') || file.starts_with('.') {
        return None;
    }
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugins/out").join(file);
    let mut bytes = std::fs::read(path).ok()?;
    // A custom section (id 0) of 6 bytes: an empty name, the build, the process id.
    bytes.extend_from_slice(&[0, 6, 0, build]);
    bytes.extend_from_slice(&std::process::id().to_le_bytes());
    Some(bytes)
}

/// The sha256 of bytes, in lowercase hex.
pub fn hex_sha256(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// A gRPC answer: `/pkg.Echo/Say` and `/pkg.Echo/Stream` answer each message of the
/// request with `re:<message>` and end with status 0 and a message (`/pkg.Echo/Fail`: with
/// INTERNAL, after the answers); other methods get a trailers-only UNIMPLEMENTED.
fn grpc_respond(path: &str, body: &Bytes) -> http::Response<Body> {
    let builder = http::Response::builder().header("content-type", "application/grpc");
    if !matches!(path, "/pkg.Echo/Say" | "/pkg.Echo/Stream" | "/pkg.Echo/Fail") {
        let response = builder.header("grpc-status", "12").header("grpc-message", "no such method");
        return response
            .body(Full::new(Bytes::new()).boxed())
            .unwrap_or_else(|_| http::Response::new(Full::new(Bytes::new()).boxed()));
    }
    let mut out = Vec::new();
    let mut rest = &body[..];
    while rest.len() >= 5 {
        let len = u32::from_be_bytes([rest[1], rest[2], rest[3], rest[4]]) as usize;
        let Some(message) = rest.get(5..5 + len) else { break };
        let reply = [b"re:".as_slice(), message].concat();
        out.push(0);
        out.extend_from_slice(&(reply.len() as u32).to_be_bytes());
        out.extend_from_slice(&reply);
        rest = &rest[5 + len..];
    }
    let (tx, frames) = FrameBody::channel();
    let mut trailers = http::HeaderMap::new();
    let (status, message) = if path == "/pkg.Echo/Fail" { ("13", "failed late") } else { ("0", "all done") };
    trailers.insert("grpc-status", http::HeaderValue::from_static(status));
    trailers.insert("grpc-message", http::HeaderValue::from_static(message));
    tokio::spawn(async move {
        let _ = tx.send(Frame::data(Bytes::from(out))).await;
        let _ = tx.send(Frame::trailers(trailers)).await;
    });
    builder.body(frames.boxed()).unwrap_or_else(|_| http::Response::new(Full::new(Bytes::new()).boxed()))
}

/// A unary gRPC answer: the message then status 0, or a trailers-only failure.
fn grpc_unary_answer(answer: Result<Vec<u8>, u32>) -> http::Response<Body> {
    let builder = http::Response::builder().header("content-type", "application/grpc");
    let response = match answer {
        Err(code) => builder.header("grpc-status", code.to_string()).body(full(Bytes::new())),
        Ok(message) => {
            let mut framed = vec![0];
            framed.extend_from_slice(&(message.len() as u32).to_be_bytes());
            framed.extend_from_slice(&message);
            let (tx, frames) = FrameBody::channel();
            let mut trailers = http::HeaderMap::new();
            trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
            tokio::spawn(async move {
                let _ = tx.send(Frame::data(Bytes::from(framed))).await;
                let _ = tx.send(Frame::trailers(trailers)).await;
            });
            builder.body(frames.boxed())
        }
    };
    response.unwrap_or_else(|_| http::Response::new(full(Bytes::new())))
}

/// A body whose frames come through a channel.
struct FrameBody(tokio::sync::mpsc::Receiver<Frame<Bytes>>);

impl FrameBody {
    fn channel() -> (tokio::sync::mpsc::Sender<Frame<Bytes>>, FrameBody) {
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        (tx, FrameBody(rx))
    }
}

impl hyper::body::Body for FrameBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0.poll_recv(cx).map(|f| f.map(Ok))
    }
}
