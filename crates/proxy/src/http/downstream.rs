//! The downstream socket of an HTTP connection: its timers, as the HTTP connection
//! manager configures them, the checks of each request head, and Envoy's shape for the
//! answers hyper makes on its own. The timers:
//! `idle_timeout` (no stream and no bytes for that long: the connection is closed) and
//! `request_headers_timeout` (from the first byte of a request's headers to their end: 408
//! `request header timeout`, then the connection is closed). The socket notes when bytes
//! move and when a request's headers start; the watchers read that.

use std::cell::Cell;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

use crate::http::transport::Transport;
use crate::limits::MAX_HELD_HEAD_BYTES;

/// What the socket saw, shared with the watchers.
#[derive(Debug, Default)]
pub struct Activity {
    /// When bytes last moved either way.
    last: Cell<Option<Instant>>,
    /// When the headers of the request being read began (none while a stream is open or
    /// the connection waits between requests).
    headers_began: Cell<Option<Instant>>,
    /// Streams open on the connection.
    pub open_streams: Cell<usize>,
    /// Streams opened so far.
    pub streams_opened: Cell<u64>,
    /// A request or an answer asked for the connection to close (HTTP/1.1 `connection:
    /// close`, or a request of another HTTP/1 version): hyper closes it after the answer.
    pub closing: Cell<bool>,
    /// The client speaks HTTP/2 (its first bytes were the connection preface): the
    /// request-headers timer does not apply.
    http2: Cell<bool>,
    first_read: Cell<bool>,
    /// A checked request head went to hyper, which has not opened its stream yet.
    head_released: Cell<bool>,
    /// The last request's body was not read to its end (HTTP/1.1: the connection cannot
    /// wait for another request without hyper).
    pub request_unread: Cell<bool>,
    /// Bytes of the next request head are held (not yet handed to hyper).
    head_held: Cell<bool>,
    /// hyper is giving the socket back (the connection parks): its shutdown leaves the
    /// socket open.
    pub parking: Cell<bool>,
    /// A stream switched protocols: the connection goes to its tunnel once hyper is done.
    pub tunnel: std::cell::RefCell<Option<TunnelHandoff>>,
    /// An HTTP/1 stream was reset: the connection closes at once, even while hyper waits
    /// to write to a client that reads nothing.
    reset: Cell<bool>,
    /// Who waits for [`Activity::reset`].
    reset_waiter: std::cell::RefCell<Option<std::task::Waker>>,
}

/// A client connection as an upgraded stream's tunnel takes it over.
pub trait TunnelIo: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin {}

impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin> TunnelIo for T {}

/// How a connection is handed to a tunnel, and how it learns the tunnel is over.
pub struct TunnelHandoff {
    /// Where the connection goes.
    pub io: tokio::sync::oneshot::Sender<Box<dyn TunnelIo>>,
    /// Closed when the tunnel ends.
    pub closed: tokio::sync::oneshot::Receiver<()>,
}

impl std::fmt::Debug for TunnelHandoff {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TunnelHandoff")
    }
}

impl Activity {
    /// A stream opened (its headers are complete).
    pub fn stream_opened(&self) {
        self.open_streams.set(self.open_streams.get() + 1);
        self.streams_opened.set(self.streams_opened.get() + 1);
        self.headers_began.set(None);
        self.head_released.set(false);
    }

    /// Closes the connection under its HTTP/1 stream, which is reset (its response cut).
    pub fn reset(&self) {
        self.reset.set(true);
        if let Some(waiter) = self.reset_waiter.take() {
            waiter.wake();
        }
    }

    /// Once a stream asked for the connection to close ([`Activity::reset`]).
    pub async fn reset_asked(&self) {
        std::future::poll_fn(|cx| {
            if self.reset.get() {
                return std::task::Poll::Ready(());
            }
            *self.reset_waiter.borrow_mut() = Some(cx.waker().clone());
            std::task::Poll::Pending
        })
        .await
    }

    /// A stream ended.
    pub fn stream_closed(&self) {
        self.open_streams.set(self.open_streams.get().saturating_sub(1));
    }

    /// Whether the connection waits for a request with nothing owed: no stream open, the
    /// last request read to its end, nothing of the next one held, and no close asked for.
    pub fn between_requests(&self) -> bool {
        !self.closing.get()
            && !self.head_held.get()
            && !self.head_released.get()
            && self.open_streams.get() == 0
            && !self.request_unread.get()
    }

    fn read(&self, bytes: &[u8]) {
        let now = Instant::now();
        self.last.set(Some(now));
        if !self.first_read.replace(true) && bytes.starts_with(b"PRI ") {
            self.http2.set(true);
        }
        if self.open_streams.get() == 0 && self.headers_began.get().is_none() && !self.http2.get() {
            self.headers_began.set(Some(now));
        }
    }
}

/// A connection's transport that notes its activity. It reads and writes through
/// readiness and `try_read`/`try_write`, so the watchers can still reach the transport
/// (to answer 408).
/// While a request head is awaited on an HTTP/1.1 connection, the bytes are held until
/// the head is whole and checked as Envoy's codec checks it (`request_head`); a refused
/// head gets Envoy's 400 or 501 and the connection closes.
pub struct TrackedIo<T> {
    socket: Rc<T>,
    activity: Rc<Activity>,
    server: Rc<str>,
    /// Bytes of a request head not checked yet.
    held: Vec<u8>,
    /// Checked bytes not handed to hyper yet.
    out: Vec<u8>,
    /// A head was refused: hyper sees the end of the stream.
    refused: bool,
}

impl<T: Transport> TrackedIo<T> {
    /// Wraps `socket`; `server` names the proxy in the answers it makes itself.
    pub fn new(socket: Rc<T>, activity: Rc<Activity>, server: Rc<str>) -> TrackedIo<T> {
        activity.last.set(Some(Instant::now()));
        TrackedIo { socket, activity, server, held: Vec::new(), out: Vec::new(), refused: false }
    }

    /// Takes back bytes hyper read but did not use (a pipelined request's start) when
    /// hyper hands the socket back: they are the next head's first bytes.
    pub fn resume(&mut self, unread: &[u8]) {
        if unread.is_empty() {
            // The connection parks: no buffer kept while it waits (a busy one keeps its
            // buffers from one request to the next).
            self.held = Vec::new();
            self.out = Vec::new();
        } else {
            self.held.extend_from_slice(unread);
            self.check_held();
        }
        self.note_held();
    }

    /// Whether a checked head waits to go to hyper (bytes hyper had read ahead, given
    /// back when it went idle): hyper must start without waiting for the socket.
    pub fn head_ready(&self) -> bool {
        !self.out.is_empty()
    }

    /// Notes whether bytes of a head are held.
    fn note_held(&mut self) {
        self.activity.head_held.set(!self.held.is_empty() || !self.out.is_empty());
    }

    /// Whether a request head is awaited: HTTP/1.1, no stream open, and none released to
    /// hyper that it has not dispatched yet.
    fn awaiting_head(&self) -> bool {
        !self.activity.http2.get() && self.activity.open_streams.get() == 0 && !self.activity.head_released.get()
    }

    /// Held bytes that make a whole head: checked, then handed on or refused.
    fn check_held(&mut self) {
        let end = match crate::http::request_head::head_end(&self.held) {
            Some(end) => end,
            None if self.held.len() > MAX_HELD_HEAD_BYTES => self.held.len(),
            None => return,
        };
        if let Err(refusal) = crate::http::request_head::check(&self.held[..end]) {
            let response = crate::http::request_head::error_response(
                refusal.status,
                refusal.reason,
                &self.server,
                &crate::clock::Utc::now().http_date(),
            );
            let _ = self.socket.try_write(&response);
            let _ = self.socket.shutdown(std::net::Shutdown::Both);
            self.refused = true;
            self.held.clear();
            return;
        }
        self.activity.head_released.set(true);
        if self.out.is_empty() {
            std::mem::swap(&mut self.out, &mut self.held);
        } else {
            self.out.append(&mut self.held);
        }
    }
}

impl<T: Transport> AsyncRead for TrackedIo<T> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let read = self.read_into(cx, buf);
        self.note_held();
        read
    }
}

impl<T: Transport> TrackedIo<T> {
    fn read_into(&mut self, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let this = self;
        loop {
            if this.refused {
                return Poll::Ready(Ok(()));
            }
            if !this.out.is_empty() {
                let n = this.out.len().min(buf.remaining());
                buf.put_slice(&this.out[..n]);
                if n == this.out.len() {
                    // Keep the allocation for the next head.
                    this.out.clear();
                    std::mem::swap(&mut this.out, &mut this.held);
                } else {
                    this.out.drain(..n);
                }
                return Poll::Ready(Ok(()));
            }
            ready!(this.socket.poll_read_ready(cx))?;
            if !this.awaiting_head() && this.held.is_empty() {
                // A body (or HTTP/2): straight into hyper's buffer.
                let unfilled = buf.initialize_unfilled();
                match this.socket.try_read(unfilled) {
                    Ok(n) => {
                        if n > 0 {
                            this.activity.read(&unfilled[..n]);
                        }
                        buf.advance(n);
                        return Poll::Ready(Ok(()));
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                    Err(e) => return Poll::Ready(Err(e)),
                }
            }
            // A head: into the held bytes (their spare room, not zeroed first).
            let before = this.held.len();
            this.held.reserve(8 * 1024);
            match this.socket.try_read_buf(&mut this.held) {
                Ok(0) => {
                    // The end: whatever was held goes to hyper, which sees it cut short.
                    this.out.append(&mut this.held);
                    if this.out.is_empty() {
                        return Poll::Ready(Ok(()));
                    }
                }
                Ok(_) => {
                    this.activity.read(&this.held[before..]);
                    this.check_held();
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

impl<T: Transport> TrackedIo<T> {
    /// Writes with `write` once the transport is writable, noting the activity.
    fn poll_write_with(
        &self,
        cx: &mut Context<'_>,
        write: impl Fn(&T) -> std::io::Result<usize>,
    ) -> Poll<std::io::Result<usize>> {
        loop {
            ready!(self.socket.poll_write_ready(cx))?;
            match write(&self.socket) {
                Ok(n) => {
                    if n > 0 {
                        self.activity.last.set(Some(Instant::now()));
                    }
                    return Poll::Ready(Ok(n));
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

impl<T: Transport> AsyncWrite for TrackedIo<T> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<std::io::Result<usize>> {
        // An error answer hyper makes on its own (a request it cannot parse) takes Envoy's
        // shape: the reason phrase as a body.
        if !self.activity.http2.get()
            && crate::http::request_head::may_be_an_error_answer(data)
            && let Some((status, reason)) = crate::http::request_head::hypers_own_error(data)
        {
            let response = crate::http::request_head::error_response(
                status,
                reason,
                &self.server,
                &crate::clock::Utc::now().http_date(),
            );
            return match ready!(self.poll_write_with(cx, |s| s.try_write(&response))) {
                Ok(_) => Poll::Ready(Ok(data.len())),
                Err(e) => Poll::Ready(Err(e)),
            };
        }
        self.poll_write_with(cx, |s| s.try_write(data))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        // hyper writes its own error answers in one short run of slices.
        let total: usize = bufs.iter().map(|b| b.len()).sum();
        if !self.activity.http2.get()
            && total <= 512
            && bufs.first().is_some_and(|b| crate::http::request_head::may_be_an_error_answer(b))
        {
            let joined: Vec<u8> = bufs.iter().flat_map(|b| b.iter().copied()).collect();
            if crate::http::request_head::hypers_own_error(&joined).is_some() {
                return self.poll_write(cx, &joined);
            }
        }
        self.poll_write_with(cx, |s| s.try_write_vectored(bufs))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.socket.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        if self.activity.parking.get() {
            return Poll::Ready(Ok(()));
        }
        self.socket.poll_shutdown_write(cx)
    }
}

/// Resolves once the connection has had no open stream and no bytes moving for `timeout`.
pub async fn idle_for(timeout: std::time::Duration, activity: &Activity) {
    loop {
        let due = activity.last.get().unwrap_or_else(Instant::now) + timeout;
        if Instant::now() >= due {
            if activity.open_streams.get() == 0 {
                return;
            }
            // A stream is open (e.g. a long response): look again a period later.
            tokio::time::sleep(timeout).await;
            continue;
        }
        tokio::time::sleep_until(due).await;
    }
}

/// Resolves once a request's headers have been coming in for longer than `timeout`.
pub async fn headers_late(timeout: std::time::Duration, activity: &Activity) {
    loop {
        match activity.headers_began.get() {
            Some(began) if Instant::now() >= began + timeout => return,
            Some(began) => tokio::time::sleep_until(began + timeout).await,
            // Nothing to time yet: look again a period later (a request's first byte
            // starts the timer; it may be up to one period late).
            None => tokio::time::sleep(timeout / 4).await,
        }
    }
}

/// Envoy's answer when the headers time out, written straight to the transport (no
/// stream exists yet), before the connection is closed.
pub fn answer_header_timeout(socket: &impl Transport, server: &str) {
    let body = "request header timeout";
    let date = crate::clock::Utc::now().http_date();
    let response = format!(
        "HTTP/1.1 408 Request Timeout\r\ncontent-length: {}\r\ncontent-type: text/plain\r\ndate: {date}\r\nserver: {server}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = socket.try_write(response.as_bytes());
    let _ = socket.shutdown(std::net::Shutdown::Both);
}

/// Now as a `date` header value, made once a second per thread.
pub fn http_date() -> http::HeaderValue {
    thread_local! {
        static CACHED: std::cell::RefCell<(i64, http::HeaderValue)> =
            const { std::cell::RefCell::new((i64::MIN, http::HeaderValue::from_static(""))) };
    }
    let second = crate::clock::Utc::now().unix;
    CACHED.with(|c| {
        let mut c = c.borrow_mut();
        if c.0 != second {
            let text = crate::clock::Utc::now().http_date();
            *c = (second, http::HeaderValue::from_str(&text).unwrap_or_else(|_| http::HeaderValue::from_static("")));
        }
        c.1.clone()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_timer_starts_with_a_requests_first_byte() {
        let a = Activity::default();
        a.read(b"GET / HTTP/1.1\r\n");
        let began = a.headers_began.get().expect("started");
        a.read(b"Host: x\r\n");
        assert_eq!(a.headers_began.get(), Some(began));
        a.stream_opened();
        assert_eq!(a.headers_began.get(), None);
        a.read(b"body bytes");
        assert_eq!(a.headers_began.get(), None, "a body is not headers");
        a.stream_closed();
        let h2 = Activity::default();
        h2.read(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
        assert_eq!(h2.headers_began.get(), None);
    }
}
