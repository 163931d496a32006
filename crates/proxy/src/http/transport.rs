//! The byte stream under a connection: plain TCP, or TLS over it (`tls/session.rs`).
//! Every operation is non-blocking and takes `&self`, so a downstream connection's
//! watchers can still answer on the stream (a 408) while hyper holds the connection, and
//! the TCP proxy can read and write both ways at once.

use std::future::Future;
use std::io::{self, IoSlice};
use std::net::Shutdown;
use std::task::{Context, Poll};

use tokio::net::TcpStream;

/// A connection's bytes, whatever carries them.
pub trait Transport: 'static {
    /// Ready to read: bytes, the end, or an error wait there.
    fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>>;

    /// Reads what is there into `buf` (0 at the end; `WouldBlock` if nothing yet). A read
    /// that takes all there was clears the readiness, so the next poll waits.
    fn try_read(&self, buf: &mut [u8]) -> io::Result<usize>;

    /// [`Transport::try_read`] into the spare room of `buf`.
    fn try_read_buf(&self, buf: &mut Vec<u8>) -> io::Result<usize>;

    /// Ready to write.
    fn poll_write_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>>;

    /// Writes what fits now (`WouldBlock` if nothing does).
    fn try_write(&self, data: &[u8]) -> io::Result<usize>;

    /// [`Transport::try_write`] from several slices.
    fn try_write_vectored(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize>;

    /// Sends what was written and is still held (TLS records); plain TCP holds nothing.
    fn poll_flush(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>>;

    /// Closes the writing side, or both.
    fn shutdown(&self, how: Shutdown) -> io::Result<()>;

    /// Closes the writing side once all that was written is sent (TLS: with
    /// `close_notify`, in one packet with the last records and the FIN).
    fn poll_shutdown_write(&self, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(self.shutdown(Shutdown::Write))
    }

    /// While `hold`, what is written waits (up to a bound) for a flush that is not held,
    /// so one turn's writes leave together: a response, its `close_notify` and the FIN in
    /// one packet. Plain TCP sends each write at once.
    fn hold_writes(&self, _hold: bool) {}

    /// Whether written bytes wait for a flush.
    fn holds_writes(&self) -> bool {
        false
    }

    /// Whether the client and the listener agreed on HTTP/2 (`Some(false)`: on another
    /// protocol) before any byte of HTTP, as TLS's ALPN does; `None` if nothing was agreed.
    fn negotiated_http2(&self) -> Option<bool> {
        None
    }

    /// The first bytes the client sent, left to be read (waits for some; 0 if it closed).
    fn peek<'a>(&'a self, buf: &'a mut [u8]) -> impl Future<Output = io::Result<usize>> + 'a;
}

impl Transport for TcpStream {
    fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        TcpStream::poll_read_ready(self, cx)
    }

    fn try_read(&self, buf: &mut [u8]) -> io::Result<usize> {
        let asked = buf.len();
        read_draining(self, asked, || TcpStream::try_read(self, buf))
    }

    fn try_read_buf(&self, buf: &mut Vec<u8>) -> io::Result<usize> {
        let asked = buf.capacity() - buf.len();
        read_draining(self, asked, || TcpStream::try_read_buf(self, buf))
    }

    fn poll_write_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        TcpStream::poll_write_ready(self, cx)
    }

    fn try_write(&self, data: &[u8]) -> io::Result<usize> {
        TcpStream::try_write(self, data)
    }

    fn try_write_vectored(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        TcpStream::try_write_vectored(self, bufs)
    }

    fn poll_flush(&self, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        socket2::SockRef::from(self).shutdown(how)
    }

    fn peek<'a>(&'a self, buf: &'a mut [u8]) -> impl Future<Output = io::Result<usize>> + 'a {
        TcpStream::peek(self, buf)
    }
}

/// Reads with `read` (of up to `asked` bytes) as tokio's own sockets do: a read that
/// returns less than it was offered drained the socket, so the socket's readiness is
/// cleared then (the readiness seen before the read: an event that came meanwhile is
/// kept), and the next poll waits for the kernel instead of making a read that would only
/// return EAGAIN (hyper polls again after each request, to see a client close early).
pub(crate) fn read_draining(
    socket: &TcpStream,
    asked: usize,
    read: impl FnOnce() -> io::Result<usize>,
) -> io::Result<usize> {
    let mut got = None;
    let cleared = socket.try_io(tokio::io::Interest::READABLE, || {
        let n = read()?;
        got = Some(n);
        if n > 0 && n < asked { Err(io::ErrorKind::WouldBlock.into()) } else { Ok(()) }
    });
    match (got, cleared) {
        (Some(n), _) => Ok(n),
        (None, Err(e)) => Err(e),
        (None, Ok(())) => Err(io::ErrorKind::WouldBlock.into()),
    }
}

/// `inner` polled with `socket`'s writes held ([`Transport::hold_writes`]) and flushed
/// after it waits, so what one turn writes leaves together; done once `inner` is done and
/// what it wrote is sent (or the socket failed). Writes held when `inner` first waits
/// wait once more, for the tasks woken meanwhile: a response's body, which another task
/// passes on, then leaves with its head.
pub struct Coalesced<'a, F: Future, T> {
    inner: &'a mut F,
    socket: &'a T,
    /// `inner`'s output, while its last writes wait for the socket.
    output: Option<F::Output>,
    /// The held writes waited once already.
    waited: bool,
}

impl<'a, F: Future, T> Coalesced<'a, F, T> {
    pub fn new(inner: &'a mut F, socket: &'a T) -> Self {
        Coalesced { inner, socket, output: None, waited: false }
    }

    /// The future polled (done already if its last writes wait for the socket).
    pub fn inner(&mut self) -> &mut F {
        self.inner
    }
}

// The output is only stored, never pinned.
impl<F: Future, T> Unpin for Coalesced<'_, F, T> {}

impl<F: Future + Unpin, T: Transport> Future for Coalesced<'_, F, T> {
    type Output = F::Output;

    fn poll(mut self: std::pin::Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = &mut *self;
        let output = match this.output.take() {
            Some(output) => output,
            None => {
                this.socket.hold_writes(true);
                let polled = std::pin::Pin::new(&mut *this.inner).poll(cx);
                this.socket.hold_writes(false);
                match polled {
                    Poll::Ready(output) => output,
                    Poll::Pending if this.socket.holds_writes() && !this.waited => {
                        // Polled again once the tasks woken before it have run.
                        this.waited = true;
                        cx.waker().wake_by_ref();
                        return Poll::Pending;
                    }
                    Poll::Pending => {
                        this.waited = false;
                        // Waits for the socket to take the rest, if it is full.
                        let _ = this.socket.poll_flush(cx);
                        return Poll::Pending;
                    }
                }
            }
        };
        match this.socket.poll_flush(cx) {
            Poll::Pending => {
                this.output = Some(output);
                Poll::Pending
            }
            Poll::Ready(_) => Poll::Ready(output),
        }
    }
}

/// A [`Transport`] as tokio's `AsyncRead` and `AsyncWrite` (for hyper's client), boxed
/// (a TLS session is large; whatever holds this stays small).
pub struct TransportIo<T>(pub Box<T>);

impl<T: Transport> tokio::io::AsyncRead for TransportIo<T> {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            std::task::ready!(self.0.poll_read_ready(cx))?;
            match self.0.try_read(buf.initialize_unfilled()) {
                Ok(n) => {
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

impl<T: Transport> tokio::io::AsyncWrite for TransportIo<T> {
    fn poll_write(self: std::pin::Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        self.poll_write_vectored(cx, &[IoSlice::new(data)])
    }

    fn poll_write_vectored(
        self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        loop {
            std::task::ready!(self.0.poll_write_ready(cx))?;
            match self.0.try_write_vectored(bufs) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                written => return Poll::Ready(written),
            }
        }
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: std::pin::Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.0.poll_flush(cx)
    }

    fn poll_shutdown(self: std::pin::Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.0.poll_shutdown_write(cx)
    }
}
