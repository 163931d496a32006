//! One downstream HTTP connection: hyper's HTTP/1.1 or HTTP/2 server over the tracked
//! transport (plain TCP today), each request handed to the connection manager, with the connection's idle and
//! request-headers timers and its part in a drain. An HTTP/1.1 connection that has waited
//! a while for its next request holds no hyper connection and no buffer, only its socket:
//! hyper hands the socket back and a fresh hyper connection starts when bytes arrive.

use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;

use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use hyper_util::server::conn::auto;
use wasmproxy_config::model::CodecType;

use crate::hcm::Hcm;
use crate::http::downstream::{TrackedIo, answer_header_timeout, headers_late, idle_for};
use crate::http::exec::LocalExec;
use crate::http::transport::{Coalesced, Transport};
use crate::limits::{MAX_REQUEST_HEADERS_BYTES, MAX_REQUEST_HEADERS_COUNT, PARK_IDLE_AFTER, PARKED_CONNECTION_BYTES};
use crate::stream_info::ConnectionInfo;

/// What ends a connection from outside hyper.
enum End {
    /// The listener drains: finish what was accepted, take nothing new.
    Stopping,
    /// `idle_timeout` (Envoy's default: 1 hour): no stream and no bytes for that long.
    Idle,
    /// `request_headers_timeout` (Envoy's default: none): a request's headers took too long.
    HeadersLate,
    /// The HTTP/1 stream was reset (its response cut): the connection closes.
    StreamReset,
}

/// The protocol the client speaks, from its first bytes.
enum Protocol {
    Http1,
    Http2,
    /// The first bytes begin HTTP/2's preface but stop short: hyper's own detection decides.
    Undecided,
}

/// Serves one HTTP connection (HTTP/1.1, or HTTP/2 with prior knowledge or by ALPN, as
/// the codec type allows) until it ends. The connection counts from its accept: its
/// `transport` is made first (a TLS handshake; `None` if it fails), unless the listener
/// stops meanwhile.
pub async fn serve_http<T: Transport>(
    hcm: Rc<Hcm>,
    transport: impl Future<Output = Option<T>>,
    connection: Rc<ConnectionInfo>,
    tls: bool,
    stopping: impl Future<Output = ()>,
) {
    let accepted = std::time::Instant::now();
    hcm.stats.connection_opened(tls);
    let mut stopping = std::pin::pin!(stopping);
    let stream = tokio::select! {
        stream = transport => stream,
        () = stopping.as_mut() => None,
    };
    if let Some(stream) = stream {
        serve_connection(&hcm, stream, &connection, stopping).await;
    }
    let http2 = connection.protocol_known.get().then(|| connection.http2.get());
    hcm.stats.connection_closed(accepted.elapsed(), http2);
}

/// [`serve_http`] once the transport is ready.
async fn serve_connection<T: Transport>(
    hcm: &Rc<Hcm>,
    stream: T,
    connection: &Rc<ConnectionInfo>,
    mut stopping: Pin<&mut impl Future<Output = ()>>,
) {
    let socket = Rc::new(stream);
    let activity = connection.activity.clone();
    let io = TrackedIo::new(socket.clone(), activity.clone(), Rc::from(hcm.config.server_name.as_str()));
    let end = async {
        let idle = async {
            match hcm.config.idle_timeout {
                Some(t) => idle_for(t, &activity).await,
                None => std::future::pending().await,
            }
        };
        let headers = async {
            match hcm.config.request_headers_timeout {
                Some(t) => headers_late(t, &activity).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = stopping.as_mut() => End::Stopping,
            () = idle => End::Idle,
            () = headers => End::HeadersLate,
            () = activity.reset_asked() => End::StreamReset,
        }
    };
    let mut end = std::pin::pin!(end);
    let protocol = match hcm.config.codec_type {
        CodecType::Http1 => Some(Protocol::Http1),
        CodecType::Http2 => Some(Protocol::Http2),
        CodecType::Auto => match socket.negotiated_http2() {
            Some(true) => Some(Protocol::Http2),
            Some(false) => Some(Protocol::Http1),
            None => tokio::select! {
                p = sniff(&*socket) => p,
                e = end.as_mut() => ended_while_waiting(hcm, e),
            },
        },
    };
    let result = match protocol {
        Some(Protocol::Http1) => serve_http1(hcm, connection, io, &socket, end).await.map_err(Into::into),
        // Boxed: an HTTP/2 connection's state is large, and only it needs it.
        Some(p) => Box::pin(serve_hyper_auto(hcm, connection, io, &socket, matches!(p, Protocol::Http2), end)).await,
        None => Ok(()),
    };
    if let Err(e) = result {
        tracing::debug!("connection ended: {e}");
    }
}

/// The protocol, from the first bytes (peeked, left for hyper); none if the client
/// closed first.
async fn sniff(socket: &impl Transport) -> Option<Protocol> {
    const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    let mut first = [0u8; PREFACE.len()];
    let n = socket.peek(&mut first).await.ok().filter(|n| *n > 0)?;
    Some(if !PREFACE.starts_with(&first[..n.min(PREFACE.len())]) {
        Protocol::Http1
    } else if n == PREFACE.len() {
        Protocol::Http2
    } else {
        Protocol::Undecided
    })
}

/// A connection that ends while no hyper connection runs: counted; nothing to answer.
fn ended_while_waiting(hcm: &Hcm, end: End) -> Option<Protocol> {
    if matches!(end, End::Idle) {
        hcm.stats.cx_idle_timeout.inc();
    }
    None
}

/// HTTP/2 (or a protocol hyper's detection decides): one hyper connection for the
/// connection's life.
async fn serve_hyper_auto<T: Transport>(
    hcm: &Rc<Hcm>,
    connection: &Rc<ConnectionInfo>,
    io: TrackedIo<T>,
    socket: &T,
    http2_only: bool,
    end: Pin<&mut impl Future<Output = End>>,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let mut builder = auto::Builder::new(LocalExec);
    // Envoy's defaults: request headers up to 60 KiB (else 431), at most 100 of them.
    builder.http1().max_buf_size(MAX_REQUEST_HEADERS_BYTES).max_headers(MAX_REQUEST_HEADERS_COUNT);
    builder.http2().max_header_list_size(MAX_REQUEST_HEADERS_BYTES as u32);
    if hcm.config.allow_connect {
        builder.http2().enable_connect_protocol();
    }
    if http2_only {
        builder = builder.http2_only();
    }
    // Each stream's future boxed: it is several KiB, and hyper moves it whole into the
    // stream's task (HTTP/1.1's connection keeps its one in place, unboxed).
    let service = {
        let (hcm, connection) = (hcm.clone(), connection.clone());
        service_fn(move |req| Box::pin(hcm.clone().handle(req, connection.clone())))
    };
    let conn = builder.serve_connection(TokioIo::new(io), service);
    tokio::pin!(conn);
    // One for the connection's life: hyper done, its last writes may still wait.
    let mut conn = Coalesced::new(&mut conn, socket);
    tokio::select! {
        r = &mut conn => r,
        e = end => {
            if ends_hyper(hcm, socket, e) {
                conn.inner().as_mut().graceful_shutdown();
            }
            conn.await
        }
    }
}

/// Acts on `end` while hyper serves: counts it, answers 408 if the headers were late.
/// Returns whether hyper should shut down gracefully (else the socket was closed).
fn ends_hyper(hcm: &Hcm, socket: &impl Transport, end: End) -> bool {
    match end {
        End::Stopping => true,
        End::Idle => {
            hcm.stats.cx_idle_timeout.inc();
            true
        }
        End::HeadersLate => {
            // No stream exists yet: Envoy's 408 goes straight to the socket, which closes.
            hcm.stats.rq_header_timeout.inc();
            answer_header_timeout(socket, &hcm.config.server_name);
            false
        }
        End::StreamReset => {
            // What hyper holds for the client goes with it, as Envoy closes without
            // flushing a reset stream's connection.
            let _ = socket.shutdown(std::net::Shutdown::Both);
            false
        }
    }
}

/// HTTP/1.1: a hyper connection while requests come, given up once the connection has
/// started no exchange for [`PARK_IDLE_AFTER`] and waits with nothing owed (so between one
/// and two periods after its last request); a fresh one when bytes arrive.
async fn serve_http1<T: Transport>(
    hcm: &Rc<Hcm>,
    connection: &Rc<ConnectionInfo>,
    mut io: TrackedIo<T>,
    socket: &T,
    mut end: Pin<&mut impl Future<Output = End>>,
) -> Result<(), hyper::Error> {
    loop {
        // Parked: the socket alone waits for bytes (unless a head hyper read ahead waits).
        if !io.head_ready() {
            tokio::select! {
                r = std::future::poll_fn(|cx| socket.poll_read_ready(cx)) => if r.is_err() { return Ok(()) },
                e = end.as_mut() => {
                    ended_while_waiting(hcm, e);
                    return Ok(());
                }
            }
        }
        match serve_until_idle(hcm, connection, io, socket, end.as_mut()).await? {
            Some(parked) => io = parked,
            None => return Ok(()),
        }
    }
}

/// Runs one hyper connection until the connection ends (`None`) or has waited long
/// enough between requests to give hyper up (the socket back, with any bytes hyper read
/// ahead put back in front).
async fn serve_until_idle<T: Transport>(
    hcm: &Rc<Hcm>,
    connection: &Rc<ConnectionInfo>,
    io: TrackedIo<T>,
    socket: &T,
    mut end: Pin<&mut impl Future<Output = End>>,
) -> Result<Option<TrackedIo<T>>, hyper::Error> {
    let activity = &connection.activity;
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder.max_buf_size(MAX_REQUEST_HEADERS_BYTES).max_headers(MAX_REQUEST_HEADERS_COUNT);
    let service = {
        let (hcm, connection) = (hcm.clone(), connection.clone());
        service_fn(move |req| hcm.clone().handle(req, connection.clone()))
    };
    let mut conn = Box::new(builder.serve_connection(TokioIo::new(io), service));
    let idle = tokio::time::sleep(PARK_IDLE_AFTER);
    tokio::pin!(idle);
    // Streams opened when the idle timer was last set: a connection that opened none for
    // a whole period and waits with nothing owed is idle.
    let mut seen = activity.streams_opened.get();
    let mut ended = false;
    // One for the connection's life: hyper done, its last writes may still wait.
    let mut coalesced = Coalesced::new(&mut *conn, socket);
    let result = loop {
        tokio::select! {
            r = &mut coalesced => break r,
            () = idle.as_mut(), if !activity.parking.get() && !ended => {
                if activity.streams_opened.get() == seen && activity.between_requests() {
                    // hyper stops (at once when idle; else after the response it writes),
                    // flushes, and leaves the socket open.
                    activity.parking.set(true);
                    Pin::new(coalesced.inner()).graceful_shutdown();
                } else {
                    seen = activity.streams_opened.get();
                    idle.as_mut().reset(tokio::time::Instant::now() + PARK_IDLE_AFTER);
                }
            }
            e = end.as_mut(), if !ended => {
                ended = true;
                activity.parking.set(false);
                if ends_hyper(hcm, socket, e) {
                    Pin::new(coalesced.inner()).graceful_shutdown();
                }
            }
        }
    };
    let parked = activity.parking.replace(false);
    result?;
    // A stream switched protocols: hyper stopped after the `101`, and the connection (with
    // any bytes hyper read past the request) goes to the stream's tunnel.
    let handoff = activity.tunnel.take();
    if let Some(handoff) = handoff {
        let parts = conn.into_parts();
        let mut io = parts.io.into_inner();
        io.resume(&parts.read_buf);
        let _ = handoff.io.send(Box::new(io));
        let _ = handoff.closed.await;
        return Ok(None);
    }
    if !parked || !activity.between_requests() {
        // Done for good: hyper shut the socket (stopped for parking but not idle after
        // all, it left it open; it closes with the connection).
        return Ok(None);
    }
    let parts = conn.into_parts();
    let mut io = parts.io.into_inner();
    io.resume(&parts.read_buf);
    crate::memory::note_freed(PARKED_CONNECTION_BYTES);
    Ok(Some(io))
}
