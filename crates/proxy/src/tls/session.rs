//! A TLS session over a TCP connection, either side: the handshake, then a [`Transport`]
//! whose reads and writes go through the session (`records.rs`: rustls's unbuffered API,
//! so an idle TLS connection holds no buffer). Like plain TCP, every operation is
//! non-blocking: ciphertext moves with `try_read`/`try_write` on the socket, and what could
//! not be sent yet goes out on the next write, flush or wait for writability.

use std::cell::{Cell, RefCell};
use std::io::{self, IoSlice, Read, Write};
use std::net::Shutdown;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use rustls::client::UnbufferedClientConnection;
use rustls::pki_types::ServerName;
use rustls::server::UnbufferedServerConnection;
use rustls::{ClientConfig, CommonState, ServerConfig};
use tokio::net::TcpStream;

use crate::http::transport::{Transport, read_draining};
use crate::tls::inspector::{HelloBytes, hello_bytes};
use crate::tls::records::{Machine, SCRATCH_JOIN, Session, WRITE_LIMIT};

/// Why a TLS handshake failed.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    /// The client broke the protocol, or offered nothing this listener accepts (its alert
    /// sent, unless the client was not speaking TLS at all).
    #[error("TLS handshake: {0}")]
    Tls(#[from] rustls::Error),
    /// The client closed, or the socket failed, before the handshake was done.
    #[error("TLS handshake: {0}")]
    Io(#[from] io::Error),
    /// The chain refused the client's hello: no certificate it may serve (the OCSP staple
    /// policy).
    #[error("TLS handshake: no certificate may be served (no current OCSP response to staple)")]
    Rejected,
}

/// What a failed handshake counts as in Envoy's `ssl.*` stats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandshakeFailure {
    /// The peer's certificate does not lead to a trusted CA (or is expired, or malformed):
    /// `fail_verify_error`.
    Verify,
    /// The peer's certificate has none of the subject alternative names asked for:
    /// `fail_verify_san`.
    VerifySan,
    /// A client certificate was required and none came: `fail_verify_no_cert`.
    NoCertificate,
    /// Anything else (only `connection_error`).
    Other,
}

impl HandshakeError {
    /// What the failure counts as.
    pub fn failure(&self) -> HandshakeFailure {
        match self {
            HandshakeError::Tls(rustls::Error::InvalidCertificate(rustls::CertificateError::NotValidForName)) => {
                HandshakeFailure::VerifySan
            }
            HandshakeError::Tls(rustls::Error::InvalidCertificate(_)) => HandshakeFailure::Verify,
            HandshakeError::Tls(rustls::Error::NoCertificatesPresented) => HandshakeFailure::NoCertificate,
            _ => HandshakeFailure::Other,
        }
    }
}

/// Whether a failed handshake tells the peer why: as BoringSSL in Envoy, not a peer that
/// is not speaking TLS at all.
fn sends_alert(error: &rustls::Error) -> bool {
    !matches!(error, rustls::Error::InvalidMessage(rustls::InvalidMessage::InvalidContentType))
}

/// A connection's TLS session over its socket: the server side of a downstream
/// connection, or the client side of an upstream one.
pub struct TlsTransport {
    tcp: TcpStream,
    /// rustls's state machine and the bytes around it.
    session: RefCell<Session>,
    /// Records written are held for the next flush ([`Transport::hold_writes`]).
    holding: Cell<bool>,
}

impl TlsTransport {
    /// Runs the server side of the handshake on `tcp` with the settings `choose` gives for
    /// a client that does or does not ask for an OCSP staple (none: the handshake is
    /// refused). The hello is read whole first, for that; the session then starts from the
    /// same bytes.
    pub async fn accept(
        tcp: TcpStream,
        choose: impl FnOnce(bool) -> Option<Arc<ServerConfig>>,
    ) -> Result<TlsTransport, Refused> {
        let mut read = Vec::new();
        let asks_ocsp = match read_whole_hello(&tcp, &mut read).await {
            Ok(asks_ocsp) => asks_ocsp,
            Err(error) => return Err(Refused { error: error.into(), socket: tcp }),
        };
        let Some(config) = choose(asks_ocsp) else { return Err(rejected(tcp)) };
        TlsTransport::start(tcp, config, read).await
    }

    /// Runs the server side of the handshake on `tcp` with the settings `choose` picks
    /// from the client's hello and whether it asks for an OCSP staple (with what it tells
    /// of them; none: the handshake is refused). rustls's `Acceptor` reads the hello; the
    /// session then starts from the same bytes.
    pub async fn accept_choosing<T>(
        tcp: TcpStream,
        choose: impl FnOnce(&rustls::server::ClientHello<'_>, bool) -> Option<(Arc<ServerConfig>, T)>,
    ) -> Result<(TlsTransport, T), Refused> {
        let mut read = Vec::new();
        let accepted = match read_hello(&tcp, &mut read).await {
            Ok(accepted) => accepted,
            Err(error) => return Err(Refused { error, socket: tcp }),
        };
        let asks_ocsp = hello_bytes(&read) == HelloBytes::Complete { asks_ocsp: true };
        let chosen = choose(&accepted.client_hello(), asks_ocsp);
        drop(accepted);
        let Some((config, chosen)) = chosen else { return Err(rejected(tcp)) };
        Ok((TlsTransport::start(tcp, config, read).await?, chosen))
    }

    /// The server side of the handshake, from the bytes of the client's already `read`.
    async fn start(tcp: TcpStream, config: Arc<ServerConfig>, read: Vec<u8>) -> Result<TlsTransport, Refused> {
        match UnbufferedServerConnection::new(config) {
            Ok(server) => TlsTransport::handshake(tcp, Session::new(Machine::Server(server), read)).await,
            Err(e) => Err(Refused { error: e.into(), socket: tcp }),
        }
    }

    /// Runs the client side of the handshake on `tcp`, to `name` (sent as SNI if it is a
    /// DNS name and the configuration sends SNI).
    pub async fn connect(
        tcp: TcpStream,
        config: Arc<ClientConfig>,
        name: ServerName<'static>,
    ) -> Result<TlsTransport, HandshakeError> {
        let machine = Machine::Client(UnbufferedClientConnection::new(config, name)?);
        TlsTransport::handshake(tcp, Session::new(machine, Vec::new())).await.map_err(|refused| refused.error)
    }

    async fn handshake(tcp: TcpStream, mut session: Session) -> Result<TlsTransport, Refused> {
        match shake_hands(&tcp, &mut session).await {
            Ok(()) => {
                session.release();
                Ok(TlsTransport { tcp, session: RefCell::new(session), holding: Cell::new(false) })
            }
            Err(error) => Err(Refused { error, socket: tcp }),
        }
    }

    /// Runs `send` on the session until the socket takes all it sends, waiting for the
    /// socket to be writable while it takes nothing.
    fn poll_sending(
        &self,
        cx: &mut Context<'_>,
        send: impl Fn(&mut Session, &TcpStream) -> io::Result<()>,
    ) -> Poll<io::Result<()>> {
        loop {
            let sent = send(&mut self.session.borrow_mut(), &self.tcp);
            match sent {
                Ok(()) => return Poll::Ready(Ok(())),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => ready!(self.tcp.poll_write_ready(cx))?,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }

    /// What the session agreed, read from rustls's state.
    fn common<R>(&self, read: impl FnOnce(&CommonState) -> R) -> R {
        read(self.session.borrow().machine.common())
    }

    /// The cipher suite agreed, as BoringSSL names it.
    pub fn cipher(&self) -> &'static str {
        self.common(|c| c.negotiated_cipher_suite().map_or("unknown", |s| crate::tls::pem::cipher_name(s.suite())))
    }

    /// The key exchange group agreed (`X25519`, `P-256`), as BoringSSL names it.
    pub fn curve(&self) -> &'static str {
        self.common(|c| c.negotiated_key_exchange_group().map_or("unknown", |g| crate::tls::pem::curve_name(g.name())))
    }

    /// Whether the handshake resumed an earlier session.
    pub fn resumed(&self) -> bool {
        self.common(|c| c.handshake_kind() == Some(rustls::HandshakeKind::Resumed))
    }

    /// The certificate the peer presented (its first), if any.
    pub fn peer_certificate(&self) -> Option<rustls::pki_types::CertificateDer<'static>> {
        self.common(|c| c.peer_certificates()?.first().cloned())
    }

    /// The TLS version, as Envoy names it (`TLSv1.2`, `TLSv1.3`).
    pub fn version(&self) -> Option<&'static str> {
        self.common(|c| match c.protocol_version()? {
            rustls::ProtocolVersion::TLSv1_2 => Some("TLSv1.2"),
            rustls::ProtocolVersion::TLSv1_3 => Some("TLSv1.3"),
            _ => None,
        })
    }
}

/// A handshake that failed, with its socket: the caller counts the failure before the
/// connection closes, as Envoy does.
#[derive(Debug)]
pub struct Refused {
    /// Why.
    pub error: HandshakeError,
    /// The connection, closed when this is dropped.
    pub socket: TcpStream,
}

impl From<Refused> for HandshakeError {
    fn from(refused: Refused) -> HandshakeError {
        refused.error
    }
}

/// A handshake refused on the client's hello: a `handshake_failure` alert, as BoringSSL
/// sends when Envoy's certificate selection refuses one.
fn rejected(tcp: TcpStream) -> Refused {
    const HANDSHAKE_FAILURE: [u8; 7] = [0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x28];
    let _ = TryWriter(&tcp).write(&HANDSHAKE_FAILURE);
    Refused { error: HandshakeError::Rejected, socket: tcp }
}

/// Reads the client's first bytes into `read` until they hold its whole hello (or
/// something rustls will refuse); whether the hello asks for an OCSP staple.
async fn read_whole_hello(tcp: &TcpStream, read: &mut Vec<u8>) -> io::Result<bool> {
    let mut buf = [0u8; 4096];
    let mut waiting_for = 0;
    loop {
        if read.len() >= waiting_for {
            match hello_bytes(read) {
                HelloBytes::Complete { asks_ocsp } => return Ok(asks_ocsp),
                HelloBytes::Unreadable => return Ok(false),
                HelloBytes::Incomplete { at_least } => waiting_for = at_least,
            }
        }
        tcp.readable().await?;
        match read_draining(tcp, buf.len(), || tcp.try_read(&mut buf)) {
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => read.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
}

/// Reads the client's hello with rustls's `Acceptor`, keeping the bytes it read in `read`;
/// a hello that does not parse is answered with its alert (unless it was not TLS at all).
async fn read_hello(tcp: &TcpStream, read: &mut Vec<u8>) -> Result<rustls::server::Accepted, HandshakeError> {
    let mut acceptor = rustls::server::Acceptor::default();
    loop {
        tcp.readable().await?;
        match acceptor.read_tls(&mut KeepingReader(tcp, read)) {
            Ok(0) => return Err(io::Error::from(io::ErrorKind::UnexpectedEof).into()),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e.into()),
        }
        match acceptor.accept() {
            Ok(Some(accepted)) => return Ok(accepted),
            Ok(None) => {}
            Err((e, mut alert)) => {
                if sends_alert(&e) {
                    let _ = alert.write(&mut TryWriter(tcp));
                }
                return Err(e.into());
            }
        }
    }
}

/// Runs a handshake to its end: records out as the socket takes them, in as they come.
async fn shake_hands(tcp: &TcpStream, session: &mut Session) -> Result<(), HandshakeError> {
    loop {
        session.outgoing_room();
        let driven = session.drive_kept(None);
        if let Err(e) = &driven {
            // The alert for the peer, sent if the socket takes it now.
            if sends_alert(e) {
                let mut incoming = std::mem::take(&mut session.incoming);
                session.queue_alert(&mut incoming);
                let _ = session.flush(tcp);
            }
        }
        driven?;
        // Sent as the socket takes it; the buffer goes back to the thread (also when the
        // turn made no record).
        loop {
            match session.flush(tcp) {
                Ok(()) => break,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => tcp.writable().await?,
                Err(e) => return Err(e.into()),
            }
        }
        if !session.machine.common().is_handshaking() {
            return Ok(());
        }
        tcp.readable().await?;
        match session.read_socket(tcp) {
            Ok(0) => return Err(io::Error::from(io::ErrorKind::UnexpectedEof).into()),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e.into()),
        }
    }
}

impl Transport for TlsTransport {
    fn negotiated_http2(&self) -> Option<bool> {
        self.common(|c| c.alpn_protocol().map(|p| p == b"h2"))
    }

    fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut session = self.session.borrow_mut();
        if !session.unread().is_empty() || session.ended {
            return Poll::Ready(Ok(()));
        }
        let ready = self.tcp.poll_read_ready(cx);
        if ready.is_pending() {
            session.release();
        }
        ready
    }

    fn try_read(&self, buf: &mut [u8]) -> io::Result<usize> {
        let mut session = self.session.borrow_mut();
        session.fill(&self.tcp)?;
        let unread = session.unread();
        let n = unread.len().min(buf.len());
        buf[..n].copy_from_slice(&unread[..n]);
        session.consume(n);
        Ok(n)
    }

    fn try_read_buf(&self, buf: &mut Vec<u8>) -> io::Result<usize> {
        let mut session = self.session.borrow_mut();
        session.fill(&self.tcp)?;
        let n = session.unread().len().min(buf.capacity().saturating_sub(buf.len()).max(1));
        buf.extend_from_slice(&session.unread()[..n]);
        session.consume(n);
        Ok(n)
    }

    fn poll_write_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.poll_flush(cx)
    }

    fn try_write(&self, data: &[u8]) -> io::Result<usize> {
        self.try_write_vectored(&[IoSlice::new(data)])
    }

    fn try_write_vectored(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        let mut session = self.session.borrow_mut();
        let total: usize = bufs.iter().map(|b| b.len()).sum();
        let first = bufs.iter().find(|b| !b.is_empty());
        match first {
            None => session.flush(&self.tcp).map(|()| 0),
            Some(first) if first.len() >= total.min(WRITE_LIMIT) => {
                session.write(&self.tcp, &first[..first.len().min(WRITE_LIMIT)], self.holding.get())
            }
            // One record for several small slices (a head and its body), as a buffered
            // writer makes.
            Some(_) => {
                let mut joined = SCRATCH_JOIN.take();
                joined.clear();
                for b in bufs {
                    let room = WRITE_LIMIT - joined.len();
                    joined.extend_from_slice(&b[..b.len().min(room)]);
                }
                let written = session.write(&self.tcp, &joined, self.holding.get());
                SCRATCH_JOIN.set(joined);
                written
            }
        }
    }

    fn poll_flush(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.holding.get() && self.session.borrow().owed() < WRITE_LIMIT {
            return Poll::Ready(Ok(()));
        }
        self.poll_sending(cx, Session::flush)
    }

    fn hold_writes(&self, hold: bool) {
        self.holding.set(hold);
    }

    fn holds_writes(&self) -> bool {
        self.session.borrow().owes()
    }

    fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        if how != Shutdown::Read {
            let _ = self.session.borrow_mut().close(&self.tcp);
        }
        Transport::shutdown(&self.tcp, how)
    }

    fn poll_shutdown_write(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_sending(cx, Session::close))?;
        Poll::Ready(Transport::shutdown(&self.tcp, Shutdown::Write))
    }

    async fn peek<'a>(&'a self, buf: &'a mut [u8]) -> io::Result<usize> {
        loop {
            std::future::poll_fn(|cx| self.poll_read_ready(cx)).await?;
            let mut session = self.session.borrow_mut();
            match session.fill(&self.tcp) {
                Ok(()) => {
                    let unread = session.unread();
                    let n = unread.len().min(buf.len());
                    buf[..n].copy_from_slice(&unread[..n]);
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
        }
    }
}

/// The socket as `io::Read`, without waiting, keeping a copy of what it read.
struct KeepingReader<'a>(&'a TcpStream, &'a mut Vec<u8>);

impl Read for KeepingReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let asked = buf.len();
        let n = read_draining(self.0, asked, || self.0.try_read(buf))?;
        self.1.extend_from_slice(&buf[..n]);
        Ok(n)
    }
}

/// The socket as `io::Write`, without waiting.
struct TryWriter<'a>(&'a TcpStream);

impl Write for TryWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.try_write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::future::Future;
    use std::io::{Read, Write};
    use std::pin::Pin;

    use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};

    use super::*;
    use crate::http::transport::Coalesced;

    /// A self-signed certificate for `localhost`, and its key.
    fn certificate() -> (CertificateDer<'static>, PrivateKeyDer<'static>) {
        let made = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
        let key = PrivatePkcs8KeyDer::from(made.signing_key.serialize_der());
        (made.cert.der().clone(), key.into())
    }

    fn server_config(cert: &CertificateDer<'static>, key: &PrivateKeyDer<'static>) -> Arc<ServerConfig> {
        let mut config = ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(vec![cert.clone()], key.clone_key())
            .unwrap();
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Arc::new(config)
    }

    /// A blocking rustls client on its own thread: sends `request`, returns all it reads
    /// (an error if the end came without `close_notify`).
    fn client(
        addr: std::net::SocketAddr,
        cert: CertificateDer<'static>,
        request: &'static [u8],
    ) -> std::thread::JoinHandle<io::Result<Vec<u8>>> {
        std::thread::spawn(move || {
            let mut roots = rustls::RootCertStore::empty();
            roots.add(cert).unwrap();
            let mut config = rustls::ClientConfig::builder().with_root_certificates(roots).with_no_client_auth();
            config.alpn_protocols = vec![b"h2".to_vec()];
            let name = ServerName::try_from("localhost").unwrap();
            let session = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
            let mut tls = rustls::StreamOwned::new(session, std::net::TcpStream::connect(addr).unwrap());
            tls.write_all(request).unwrap();
            let mut answer = Vec::new();
            tls.read_to_end(&mut answer).map(|_| answer)
        })
    }

    /// A session accepted from [`client`], which sends `request`: the server's transport
    /// and the client's thread.
    async fn accepted(request: &'static [u8]) -> (TlsTransport, std::thread::JoinHandle<io::Result<Vec<u8>>>) {
        let (cert, key) = certificate();
        let config = server_config(&cert, &key);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = client(listener.local_addr().unwrap(), cert, request);
        let (tcp, _) = listener.accept().await.unwrap();
        (TlsTransport::accept(tcp, |_| Some(config)).await.unwrap(), client)
    }

    /// Reads through the transport until `want` bytes are in (or the end).
    async fn read_some(t: &impl Transport, want: usize) -> Vec<u8> {
        let mut got = Vec::new();
        while got.len() < want {
            std::future::poll_fn(|cx| t.poll_read_ready(cx)).await.unwrap();
            let mut buf = [0u8; 7];
            match t.try_read(&mut buf) {
                Ok(0) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => panic!("{e}"),
            }
        }
        got
    }

    /// A client that sends `bytes` to `addr`, `piece` bytes at a time (a packet each, a
    /// moment apart), then reads until the server closes: what it read.
    fn raw_client(addr: std::net::SocketAddr, bytes: Vec<u8>, piece: usize) -> std::thread::JoinHandle<Vec<u8>> {
        std::thread::spawn(move || {
            let mut tcp = std::net::TcpStream::connect(addr).unwrap();
            tcp.set_nodelay(true).unwrap();
            for (i, piece) in bytes.chunks(piece).enumerate() {
                if i > 0 {
                    std::thread::sleep(std::time::Duration::from_millis(2));
                }
                tcp.write_all(piece).unwrap();
            }
            let mut answer = Vec::new();
            let _ = tcp.read_to_end(&mut answer);
            answer
        })
    }

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
    }

    #[test]
    fn a_session_reads_peeks_writes_and_closes() {
        runtime().block_on(async move {
            let (tls, client) = accepted(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n").await;
            assert_eq!(tls.version(), Some("TLSv1.3"));
            assert_eq!(tls.negotiated_http2(), Some(true));
            // Peeked bytes stay to be read; reads in small pieces get the whole request.
            let mut first = [0u8; 3];
            let n = tls.peek(&mut first).await.unwrap();
            assert_eq!(&first[..n], &b"GET"[..n]);
            assert_eq!(read_some(&tls, 27).await, b"GET / HTTP/1.1\r\nhost: x\r\n\r\n");
            // A long answer, more than a socket buffer's worth, written as the socket takes it.
            let answer = vec![b'x'; 4 << 20];
            let mut sent = 0;
            while sent < answer.len() {
                std::future::poll_fn(|cx| tls.poll_write_ready(cx)).await.unwrap();
                match tls.try_write(&answer[sent..]) {
                    Ok(n) => sent += n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) => panic!("{e}"),
                }
            }
            std::future::poll_fn(|cx| tls.poll_flush(cx)).await.unwrap();
            tls.shutdown(Shutdown::Write).unwrap();
            let got = tokio::task::spawn_blocking(move || client.join().unwrap()).await.unwrap();
            assert_eq!(got.unwrap().len(), answer.len(), "the whole answer, then close_notify");
        });
    }

    #[test]
    fn a_turns_writes_are_held_then_leave_together_and_a_close_is_clean() {
        runtime().block_on(async move {
            let (tls, client) = accepted(b"GET / HTTP/1.1\r\n\r\n").await;
            read_some(&tls, 18).await;
            let waker = std::task::Waker::noop();
            let mut cx = Context::from_waker(waker);
            // A connection that writes a head, waits (for its body, from another task),
            // writes the body, and waits: both go out after the second wait.
            let mut turn = std::pin::pin!(async {
                tls.try_write(b"HTTP/1.1 200 OK\r\n").unwrap();
                std::future::poll_fn(|cx| tls.poll_flush(cx)).await.unwrap();
                assert!(tls.session.borrow().owed() > 0, "held while the turn runs");
                let mut waited = false;
                std::future::poll_fn(|_| {
                    if std::mem::replace(&mut waited, true) { Poll::Ready(()) } else { Poll::Pending }
                })
                .await;
                tls.try_write(b"content-length: 2\r\n\r\nok").unwrap();
                std::future::pending::<()>().await
            });
            let mut coalesced = Coalesced::new(&mut turn, &tls);
            assert!(Pin::new(&mut coalesced).poll(&mut cx).is_pending());
            assert!(tls.session.borrow().owed() > 0, "the head held for the tasks woken meanwhile");
            assert!(Pin::new(&mut coalesced).poll(&mut cx).is_pending());
            assert_eq!(tls.session.borrow().owed(), 0, "sent once the turn is over");
            // More than the bound held in one turn goes out as it is written.
            tls.hold_writes(true);
            let long = vec![b'x'; WRITE_LIMIT];
            assert_eq!(tls.try_write(&long).unwrap(), WRITE_LIMIT);
            assert!(tls.session.borrow().owed() > WRITE_LIMIT, "records, with their headers and tags");
            tls.try_write(b"!").unwrap();
            assert!(tls.session.borrow().owed() < WRITE_LIMIT, "the bound sent what was held first");
            // The close sends what is held, then `close_notify`; the session keeps no buffer.
            std::future::poll_fn(|cx| tls.poll_shutdown_write(cx)).await.unwrap();
            tls.hold_writes(false);
            assert_eq!(tls.session.borrow().outgoing.capacity(), 0);
            let got = tokio::task::spawn_blocking(move || client.join().unwrap()).await.unwrap();
            let got = got.expect("a clean close: close_notify came");
            let head = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
            assert_eq!(&got[..head.len()], head);
            assert_eq!(got.len(), head.len() + long.len() + 1);
        });
    }

    #[test]
    fn a_large_request_is_read_whole_and_an_idle_session_holds_no_buffer() {
        // Records split across socket reads: a megabyte of varied bytes.
        let body: &'static [u8] = (0..1u32 << 20).map(|i| (i % 251) as u8).collect::<Vec<_>>().leak();
        runtime().block_on(async move {
            let (tls, client) = accepted(body).await;
            assert_eq!(read_some(&tls, body.len()).await, body);
            // Everything read: the transport waits for the socket, holding no buffer.
            let mut buf = [0u8; 16];
            assert_eq!(tls.try_read(&mut buf).unwrap_err().kind(), io::ErrorKind::WouldBlock);
            let waker = std::task::Waker::noop();
            assert!(tls.poll_read_ready(&mut Context::from_waker(waker)).is_pending());
            {
                let session = tls.session.borrow();
                let held = session.incoming.capacity() + session.outgoing.capacity() + session.plaintext.capacity();
                assert_eq!(held, 0, "an idle session's buffers are given back");
            }
            tls.try_write(b"done").unwrap();
            std::future::poll_fn(|cx| tls.poll_flush(cx)).await.unwrap();
            assert_eq!(tls.session.borrow().outgoing.capacity(), 0);
            tls.shutdown(Shutdown::Write).unwrap();
            let got = tokio::task::spawn_blocking(move || client.join().unwrap()).await.unwrap();
            assert_eq!(got.unwrap(), b"done");
        });
    }

    #[test]
    fn a_hello_in_pieces_is_read_whole_and_one_refused_gets_a_handshake_failure_alert() {
        let (cert, key) = certificate();
        let config = server_config(&cert, &key);
        runtime().block_on(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            // rustls's client hello (which asks for a staple), sent 50 bytes at a time.
            let hello = crate::tls::inspector::tests::client_hello("localhost", &[]);
            let client = raw_client(addr, hello, 50);
            let (tcp, _) = listener.accept().await.unwrap();
            let mut asked = None;
            let refused = TlsTransport::accept(tcp, |asks_ocsp| {
                asked = Some(asks_ocsp);
                drop(config);
                None
            });
            let Err(Refused { error: HandshakeError::Rejected, socket }) = refused.await else { panic!("accepted") };
            drop(socket);
            assert_eq!(asked, Some(true));
            let answer = tokio::task::spawn_blocking(move || client.join().unwrap()).await.unwrap();
            assert_eq!(
                answer,
                [0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x28],
                "a fatal handshake_failure alert, then close"
            );
        });
    }

    #[test]
    fn plain_http_on_a_tls_port_fails_the_handshake_and_closes() {
        let (cert, key) = certificate();
        let config = server_config(&cert, &key);
        runtime().block_on(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let request = b"GET / HTTP/1.1\r\nhost: x\r\n\r\n".to_vec();
            let client = raw_client(addr, request.clone(), request.len());
            let (tcp, _) = listener.accept().await.unwrap();
            let Err(Refused { error: HandshakeError::Tls(e), socket }) =
                TlsTransport::accept(tcp, |_| Some(config)).await
            else {
                panic!("accepted")
            };
            drop(socket);
            assert!(matches!(e, rustls::Error::InvalidMessage(_)), "{e:?}");
            let got = tokio::task::spawn_blocking(move || client.join().unwrap()).await.unwrap();
            assert_eq!(got, b"", "closed without an answer, as Envoy does");
        });
    }
}
