//! A TLS session over a TCP connection (rustls), either side: the handshake, then a
//! [`Transport`] whose reads and writes go through the session. Like plain TCP, every
//! operation is non-blocking: ciphertext moves with `try_read`/`try_write` on the socket,
//! and what the session could not send yet goes out on the next write, flush or wait for
//! writability.

use std::cell::RefCell;
use std::io::{self, IoSlice, Read, Write};
use std::net::Shutdown;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, Connection, ServerConfig, ServerConnection};
use tokio::net::TcpStream;

use crate::http::transport::Transport;

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
    /// Boxed: it is large, and the futures that make and move a transport stay small.
    session: RefCell<Box<Connection>>,
    /// Plaintext read ahead by [`Transport::peek`], handed out before anything else.
    peeked: RefCell<Vec<u8>>,
}

impl TlsTransport {
    /// Runs the server side of the handshake on `tcp`.
    pub async fn accept(tcp: TcpStream, config: Arc<ServerConfig>) -> Result<TlsTransport, HandshakeError> {
        TlsTransport::handshake(tcp, Box::new(ServerConnection::new(config)?.into())).await
    }

    /// Runs the server side of the handshake on `tcp` with the settings `choose` picks
    /// from the client's hello (with what it tells of them).
    pub async fn accept_choosing<T>(
        tcp: TcpStream,
        choose: impl FnOnce(&rustls::server::ClientHello<'_>) -> (Arc<ServerConfig>, T),
    ) -> Result<(TlsTransport, T), HandshakeError> {
        let mut acceptor = rustls::server::Acceptor::default();
        let accepted = loop {
            tcp.readable().await?;
            match acceptor.read_tls(&mut TryReader(&tcp)) {
                Ok(0) => return Err(io::Error::from(io::ErrorKind::UnexpectedEof).into()),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e.into()),
            }
            match acceptor.accept() {
                Ok(Some(accepted)) => break accepted,
                Ok(None) => {}
                Err((e, mut alert)) => {
                    if sends_alert(&e) {
                        let _ = alert.write(&mut TryWriter(&tcp));
                    }
                    return Err(e.into());
                }
            }
        };
        let (config, chosen) = choose(&accepted.client_hello());
        let session = accepted.into_connection(config).map_err(|(e, mut alert)| {
            let _ = alert.write(&mut TryWriter(&tcp));
            e
        })?;
        Ok((TlsTransport::handshake(tcp, Box::new(session.into())).await?, chosen))
    }

    /// Runs the client side of the handshake on `tcp`, to `name` (sent as SNI if it is a
    /// DNS name and the configuration sends SNI).
    pub async fn connect(
        tcp: TcpStream,
        config: Arc<ClientConfig>,
        name: ServerName<'static>,
    ) -> Result<TlsTransport, HandshakeError> {
        TlsTransport::handshake(tcp, Box::new(ClientConnection::new(config, name)?.into())).await
    }

    async fn handshake(tcp: TcpStream, mut session: Box<Connection>) -> Result<TlsTransport, HandshakeError> {
        loop {
            while session.wants_write() {
                tcp.writable().await?;
                match session.write_tls(&mut TryWriter(&tcp)) {
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) => return Err(e.into()),
                }
            }
            if !session.is_handshaking() {
                break;
            }
            tcp.readable().await?;
            match session.read_tls(&mut TryReader(&tcp)) {
                Ok(0) => return Err(io::Error::from(io::ErrorKind::UnexpectedEof).into()),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e.into()),
            }
            if let Err(e) = session.process_new_packets() {
                // The alert rustls queued for the peer, sent if the socket takes it now.
                if sends_alert(&e) {
                    let _ = session.write_tls(&mut TryWriter(&tcp));
                }
                return Err(e.into());
            }
        }
        Ok(TlsTransport { tcp, session: RefCell::new(session), peeked: RefCell::default() })
    }

    /// The cipher suite agreed, as BoringSSL names it.
    pub fn cipher(&self) -> &'static str {
        self.session.borrow().negotiated_cipher_suite().map_or("unknown", |s| crate::tls::pem::cipher_name(s.suite()))
    }

    /// The key exchange group agreed (`X25519`, `P-256`), as BoringSSL names it.
    pub fn curve(&self) -> &'static str {
        self.session
            .borrow()
            .negotiated_key_exchange_group()
            .map_or("unknown", |g| crate::tls::pem::curve_name(g.name()))
    }

    /// Whether the handshake resumed an earlier session.
    pub fn resumed(&self) -> bool {
        self.session.borrow().handshake_kind() == Some(rustls::HandshakeKind::Resumed)
    }

    /// The certificate the peer presented (its first), if any.
    pub fn peer_certificate(&self) -> Option<rustls::pki_types::CertificateDer<'static>> {
        self.session.borrow().peer_certificates()?.first().cloned()
    }

    /// The TLS version, as Envoy names it (`TLSv1.2`, `TLSv1.3`).
    pub fn version(&self) -> Option<&'static str> {
        match self.session.borrow().protocol_version()? {
            rustls::ProtocolVersion::TLSv1_2 => Some("TLSv1.2"),
            rustls::ProtocolVersion::TLSv1_3 => Some("TLSv1.3"),
            _ => None,
        }
    }

    /// Plaintext from the session: what it holds, else what the socket has brought.
    fn read_session(&self, buf: &mut [u8]) -> io::Result<usize> {
        let mut session = self.session.borrow_mut();
        loop {
            match session.reader().read(buf) {
                Ok(n) => return Ok(n),
                // The client closed without `close_notify`: the end all the same.
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(0),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
            // At the socket's end (0 bytes) the reader, read again, says which end it was.
            session.read_tls(&mut TryReader(&self.tcp))?;
            let processed = session.process_new_packets();
            // Whatever the session has to say (an alert, a key update) goes if it can.
            let _ = flush_now(&mut session, &self.tcp);
            if let Err(e) = processed {
                return Err(io::Error::new(io::ErrorKind::InvalidData, e));
            }
        }
    }
}

impl Transport for TlsTransport {
    fn negotiated_http2(&self) -> Option<bool> {
        self.session.borrow().alpn_protocol().map(|p| p == b"h2")
    }

    fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if !self.peeked.borrow().is_empty() {
            return Poll::Ready(Ok(()));
        }
        match self.session.borrow_mut().process_new_packets() {
            Ok(state) if state.plaintext_bytes_to_read() > 0 || state.peer_has_closed() => Poll::Ready(Ok(())),
            Ok(_) => self.tcp.poll_read_ready(cx),
            Err(e) => Poll::Ready(Err(io::Error::new(io::ErrorKind::InvalidData, e))),
        }
    }

    fn try_read(&self, buf: &mut [u8]) -> io::Result<usize> {
        let mut peeked = self.peeked.borrow_mut();
        if !peeked.is_empty() {
            let n = peeked.len().min(buf.len());
            buf[..n].copy_from_slice(&peeked[..n]);
            peeked.drain(..n);
            return Ok(n);
        }
        drop(peeked);
        self.read_session(buf)
    }

    fn try_read_buf(&self, buf: &mut Vec<u8>) -> io::Result<usize> {
        let before = buf.len();
        buf.resize(buf.capacity().max(before + 1), 0);
        let read = self.try_read(&mut buf[before..]);
        buf.truncate(before + *read.as_ref().unwrap_or(&0));
        read
    }

    fn poll_write_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.poll_flush(cx)
    }

    fn try_write(&self, data: &[u8]) -> io::Result<usize> {
        self.try_write_vectored(&[IoSlice::new(data)])
    }

    fn try_write_vectored(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        let mut session = self.session.borrow_mut();
        // What the session holds goes first, so its buffer stays bounded.
        flush_now(&mut session, &self.tcp)?;
        let n = session.writer().write_vectored(bufs)?;
        match flush_now(&mut session, &self.tcp) {
            Ok(()) => {}
            // Taken into the session: it goes with the next flush.
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
        if n == 0 && bufs.iter().any(|b| !b.is_empty()) {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        Ok(n)
    }

    fn poll_flush(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            match flush_now(&mut self.session.borrow_mut(), &self.tcp) {
                Ok(()) => return Poll::Ready(Ok(())),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => ready!(self.tcp.poll_write_ready(cx))?,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }

    fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        if how != Shutdown::Read {
            let mut session = self.session.borrow_mut();
            session.send_close_notify();
            let _ = flush_now(&mut session, &self.tcp);
        }
        Transport::shutdown(&self.tcp, how)
    }

    async fn peek<'a>(&'a self, buf: &'a mut [u8]) -> io::Result<usize> {
        loop {
            {
                let peeked = self.peeked.borrow();
                if !peeked.is_empty() {
                    let n = peeked.len().min(buf.len());
                    buf[..n].copy_from_slice(&peeked[..n]);
                    return Ok(n);
                }
            }
            std::future::poll_fn(|cx| self.poll_read_ready(cx)).await?;
            match self.read_session(buf) {
                Ok(n) => {
                    self.peeked.borrow_mut().extend_from_slice(&buf[..n]);
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
        }
    }
}

/// Sends what the session has ready to send, as far as the socket takes it now
/// (`WouldBlock` if something is left).
fn flush_now(session: &mut Connection, tcp: &TcpStream) -> io::Result<()> {
    while session.wants_write() {
        session.write_tls(&mut TryWriter(tcp))?;
    }
    Ok(())
}

/// The socket as `io::Read`, without waiting.
struct TryReader<'a>(&'a TcpStream);

impl Read for TryReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.try_read(buf)
    }
}

/// The socket as `io::Write`, without waiting.
struct TryWriter<'a>(&'a TcpStream);

impl Write for TryWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.try_write(buf)
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        self.0.try_write_vectored(bufs)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::io::{Read, Write};

    use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};

    use super::*;

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

    /// A blocking rustls client on its own thread: sends `request`, returns all it reads.
    fn client(
        addr: std::net::SocketAddr,
        cert: CertificateDer<'static>,
        request: &'static [u8],
    ) -> std::thread::JoinHandle<Vec<u8>> {
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
            let _ = tls.read_to_end(&mut answer);
            answer
        })
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

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
    }

    #[test]
    fn a_session_reads_peeks_writes_and_closes() {
        let (cert, key) = certificate();
        let config = server_config(&cert, &key);
        runtime().block_on(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let client = client(listener.local_addr().unwrap(), cert, b"GET / HTTP/1.1\r\nhost: x\r\n\r\n");
            let (tcp, _) = listener.accept().await.unwrap();
            let tls = TlsTransport::accept(tcp, config).await.unwrap();
            assert_eq!(tls.version(), Some("TLSv1.3"));
            assert_eq!(tls.negotiated_http2(), Some(true));
            let name = match &**tls.session.borrow() {
                Connection::Server(server) => server.server_name().map(str::to_string),
                Connection::Client(_) => panic!("a client session"),
            };
            assert_eq!(name.as_deref(), Some("localhost"));
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
            assert_eq!(got.len(), answer.len(), "the whole answer, then close_notify");
        });
    }

    #[test]
    fn plain_http_on_a_tls_port_fails_the_handshake_and_closes() {
        let (cert, key) = certificate();
        let config = server_config(&cert, &key);
        runtime().block_on(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let client = std::thread::spawn(move || {
                let mut tcp = std::net::TcpStream::connect(addr).unwrap();
                tcp.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n").unwrap();
                let mut answer = Vec::new();
                let _ = tcp.read_to_end(&mut answer);
                answer
            });
            let (tcp, _) = listener.accept().await.unwrap();
            let Err(HandshakeError::Tls(e)) = TlsTransport::accept(tcp, config).await else { panic!("accepted") };
            assert!(matches!(e, rustls::Error::InvalidMessage(_)), "{e:?}");
            let got = tokio::task::spawn_blocking(move || client.join().unwrap()).await.unwrap();
            assert_eq!(got, b"", "closed without an answer, as Envoy does");
        });
    }
}
