//! The upstream both proxies share: a small hyper server answering every request with
//! the same 128-byte body (and echoing request bodies of POSTs, for the body scenario;
//! 16 KiB of text on [`TEXT_PATH`], for compression;
//! 503 for one request in ten on [`FAILING_PATH`], for the retry scenario; a gRPC call's
//! message back with its status in trailers, for the gRPC bridge),
//! over TLS with the run's certificate when the proxy starts a handshake.

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::{BodyExt, Either, Full};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};

/// The path one first try in ten of which is answered 503.
pub const FAILING_PATH: &str = "/one-in-ten-fails";

/// The path answered with 16 KiB of text (`content-type: text/plain`), for compression.
pub const TEXT_PATH: &str = "/text-16k";

/// Requests to [`FAILING_PATH`] so far.
static SEEN: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Starts the upstream on its own runtime thread; returns its address.
pub fn start() -> std::io::Result<SocketAddr> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    listener.set_nonblocking(true)?;
    let addr = listener.local_addr()?;
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build()?;
    std::thread::spawn(move || {
        runtime.block_on(async move {
            let Ok(listener) = tokio::net::TcpListener::from_std(listener) else { return };
            while let Ok((stream, _)) = listener.accept().await {
                let _ = stream.set_nodelay(true);
                tokio::spawn(async move {
                    let mut first = [0u8; 1];
                    let tls = matches!(stream.peek(&mut first).await, Ok(1) if first[0] == 0x16);
                    match wasmproxy_conformance::certs::UPSTREAM.get().filter(|_| tls) {
                        Some(config) => {
                            let acceptor = tokio_rustls::TlsAcceptor::from(config.clone());
                            if let Ok(tls) = acceptor.accept(stream).await {
                                serve(TokioIo::new(tls)).await;
                            }
                        }
                        None => serve(TokioIo::new(stream)).await,
                    }
                });
            }
        });
    });
    Ok(addr)
}

/// 16 KiB of text that compresses as prose does (not as one repeated byte).
static TEXT: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    let words = ["proxy", "wasm", "filter", "stream", "header", "body", "route", "cluster", "envoy", "plugin"];
    let mut text = String::with_capacity(16 * 1024);
    let mut seed = 7u32;
    while text.len() < 16 * 1024 {
        seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12_345);
        text.push_str(words[(seed >> 16) as usize % words.len()]);
        text.push(if seed.is_multiple_of(7) { '\n' } else { ' ' });
    }
    text.truncate(16 * 1024);
    text
});

/// A unary gRPC answer: the request's message back, then `grpc-status: 0` in trailers.
fn grpc_answer(message: Bytes) -> http::Response<Either<Full<Bytes>, GrpcBody>> {
    let mut trailers = http::HeaderMap::new();
    trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
    let mut response =
        http::Response::new(Either::Right(GrpcBody { message: Some(message), trailers: Some(trailers) }));
    response.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/grpc"));
    response
}

/// A gRPC answer's body: its message, then its trailers.
struct GrpcBody {
    message: Option<Bytes>,
    trailers: Option<http::HeaderMap>,
}

impl hyper::body::Body for GrpcBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Infallible>>> {
        let frame = match self.message.take() {
            Some(message) => Some(hyper::body::Frame::data(message)),
            None => self.trailers.take().map(hyper::body::Frame::trailers),
        };
        std::task::Poll::Ready(frame.map(Ok))
    }
}

/// Serves one connection (HTTP/1.1, or HTTP/2 by its preface).
async fn serve<I>(io: I)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let service = service_fn(|req: http::Request<hyper::body::Incoming>| async move {
        let post = req.method() == http::Method::POST;
        // One first try in ten fails; a retry (a later try) never does.
        let first_try = req.headers().get("x-envoy-attempt-count").is_none_or(|n| n == "1");
        let req_path = req.uri().path().to_string();
        let failing = req_path == FAILING_PATH && first_try;
        let grpc = req.headers().get(http::header::CONTENT_TYPE).is_some_and(|t| t == "application/grpc");
        let body = req.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
        if grpc {
            return Ok::<_, Infallible>(grpc_answer(body));
        }
        let text = req_path == TEXT_PATH;
        let answer = if post {
            body
        } else if text {
            Bytes::from_static(TEXT.as_bytes())
        } else {
            Bytes::from_static(&[b'x'; 128])
        };
        let mut response = http::Response::new(Either::Left(Full::new(answer)));
        if text {
            response.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("text/plain"));
        }
        if failing && SEEN.fetch_add(1, std::sync::atomic::Ordering::Relaxed).is_multiple_of(10) {
            *response.status_mut() = http::StatusCode::SERVICE_UNAVAILABLE;
        }
        Ok::<_, Infallible>(response)
    });
    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new()).serve_connection(io, service).await;
}
