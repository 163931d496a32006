//! Envoy's TLS inspector: the client's first bytes read without taking them off the socket
//! (`MSG_PEEK`), parsed as a TLS ClientHello by rustls, for the filter chain match to pick
//! by SNI, ALPN and transport protocol. The bytes stay for the chain picked: a TLS
//! handshake, or the TCP proxy passing TLS through.

use std::io;
use std::mem::MaybeUninit;

use rustls::server::Acceptor;
use tokio::io::Interest;
use tokio::net::TcpStream;

/// The largest ClientHello read (Envoy's `max_client_hello_size` default); a longer one is
/// not parsed and the connection closes.
pub const MAX_CLIENT_HELLO: usize = 64 * 1024;

/// The first look's buffer: a ClientHello usually fits (post-quantum key shares included);
/// a longer one doubles it, so a connection that sends little holds little.
const FIRST_LOOK: usize = 4 * 1024;

/// What the client's first bytes are.
#[derive(Debug, PartialEq, Eq)]
pub enum Inspected {
    /// A TLS ClientHello.
    Tls(ClientHello),
    /// Something else (plain text, or a ClientHello rustls cannot parse): `raw_buffer`.
    NotTls,
    /// A ClientHello longer than [`MAX_CLIENT_HELLO`].
    TooLarge,
    /// The client closed before sending a whole ClientHello.
    Closed,
}

/// What a ClientHello asks for.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ClientHello {
    /// SNI, lowercase.
    pub server_name: Option<String>,
    /// ALPN protocols, in the client's order.
    pub alpn: Vec<String>,
}

/// Reads the client's ClientHello, waiting as long as it is incomplete; with the number of
/// bytes it looked at.
pub async fn inspect(tcp: &TcpStream) -> io::Result<(Inspected, usize)> {
    let mut buf = vec![MaybeUninit::<u8>::uninit(); FIRST_LOOK];
    let mut seen = 0;
    let mut waiting_for = 0;
    loop {
        if seen == buf.len() && buf.len() < MAX_CLIENT_HELLO {
            buf.resize((buf.len() * 2).min(MAX_CLIENT_HELLO), MaybeUninit::uninit());
        }
        tcp.ready(Interest::READABLE).await?;
        // Nothing new since the last look: readiness is cleared, to wait for more.
        let peeked = tcp.try_io(Interest::READABLE, || match socket2::SockRef::from(tcp).peek(&mut buf)? {
            n if n == seen && n != 0 => Err(io::ErrorKind::WouldBlock.into()),
            n => Ok(n),
        });
        let n = match peeked {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        };
        if n == 0 {
            return Ok((Inspected::Closed, 0));
        }
        seen = n;
        // SAFETY: `peek` initialized the first `n` bytes.
        let bytes = unsafe { std::slice::from_raw_parts(buf.as_ptr().cast::<u8>(), n) };
        // rustls parses the hello once it is whole, not at every piece of it.
        if n < waiting_for && n < MAX_CLIENT_HELLO {
            continue;
        }
        if let HelloBytes::Incomplete { at_least } = hello_bytes(bytes)
            && n < MAX_CLIENT_HELLO
        {
            waiting_for = at_least;
            continue;
        }
        match parse(bytes) {
            Some(inspected) => return Ok((inspected, n)),
            None if n == MAX_CLIENT_HELLO => return Ok((Inspected::TooLarge, n)),
            None => {}
        }
    }
}

/// Parses the start of a connection; `None` while the ClientHello is incomplete.
pub fn parse(mut bytes: &[u8]) -> Option<Inspected> {
    // A TLS connection starts with a handshake record; anything else is not TLS, at once.
    if bytes.first() != Some(&0x16) {
        return Some(Inspected::NotTls);
    }
    let mut acceptor = Acceptor::default();
    while !bytes.is_empty() {
        match acceptor.read_tls(&mut bytes) {
            Ok(0) => break,
            Ok(_) => {}
            Err(_) => return Some(Inspected::NotTls),
        }
    }
    match acceptor.accept() {
        Ok(None) => None,
        Ok(Some(accepted)) => {
            let hello = accepted.client_hello();
            let alpn = hello.alpn().into_iter().flatten();
            Some(Inspected::Tls(ClientHello {
                server_name: hello.server_name().map(str::to_ascii_lowercase),
                alpn: alpn.map(|p| String::from_utf8_lossy(p).into_owned()).collect(),
            }))
        }
        Err(_) => Some(Inspected::NotTls),
    }
}

/// How far the bytes of a connection's start hold a ClientHello.
#[derive(Debug, PartialEq, Eq)]
pub enum HelloBytes {
    /// Not all of it yet: another look tells nothing more before there are `at_least`
    /// bytes.
    Incomplete { at_least: usize },
    /// All of it: whether it asks for an OCSP staple (the `status_request` extension).
    Complete { asks_ocsp: bool },
    /// Not a ClientHello that reads, or one in more than [`MAX_HELLO_RECORDS`] records
    /// (rustls says what it is).
    Unreadable,
}

/// Looks at the records that start a connection for a whole ClientHello, without
/// parsing more of it than its extensions' types. A hello in more than
/// [`MAX_HELLO_RECORDS`] records is not looked into (`Unreadable`: rustls reads it).
pub fn hello_bytes(records: &[u8]) -> HelloBytes {
    // The handshake message, gathered from its records (most often one).
    let mut message: std::borrow::Cow<'_, [u8]> = std::borrow::Cow::Borrowed(&[]);
    let mut rest = records;
    for _ in 0..MAX_HELLO_RECORDS {
        let needed = message_length(&message).unwrap_or(4);
        if message.len() >= needed {
            break;
        }
        if needed > MAX_CLIENT_HELLO || message.first().is_some_and(|t| *t != 1) {
            return HelloBytes::Unreadable;
        }
        let record_start = records.len() - rest.len();
        let [0x16, _, _, high, low, ..] = *rest else {
            return if rest.len() < 5 && rest.first().is_none_or(|t| *t == 0x16) {
                HelloBytes::Incomplete { at_least: record_start + 5 }
            } else {
                HelloBytes::Unreadable
            };
        };
        let length = usize::from(high) << 8 | usize::from(low);
        if length > MAX_RECORD {
            return HelloBytes::Unreadable;
        }
        let Some(fragment) = rest.get(5..5 + length) else {
            return HelloBytes::Incomplete { at_least: record_start + 5 + length };
        };
        message = match message {
            std::borrow::Cow::Borrowed([]) => std::borrow::Cow::Borrowed(fragment),
            gathered => std::borrow::Cow::Owned([&gathered[..], fragment].concat()),
        };
        rest = &rest[5 + length..];
    }
    if message_length(&message).is_none_or(|needed| message.len() < needed) {
        return HelloBytes::Unreadable;
    }
    match hello_extensions(&message) {
        Some(types) => HelloBytes::Complete { asks_ocsp: types.into_iter().any(|t| t == STATUS_REQUEST) },
        None => HelloBytes::Unreadable,
    }
}

/// The length of a handshake message, its 4-byte header included (`None` before the
/// header is whole).
fn message_length(message: &[u8]) -> Option<usize> {
    let [_, high, middle, low, ..] = *message else { return None };
    Some(4 + (usize::from(high) << 16 | usize::from(middle) << 8 | usize::from(low)))
}

/// The most records a ClientHello is looked for in (rustls's clients send one).
const MAX_HELLO_RECORDS: usize = 16;

/// The longest plaintext record TLS allows.
const MAX_RECORD: usize = 16 * 1024;

/// The `status_request` extension's type.
const STATUS_REQUEST: u16 = 5;

/// The types of a ClientHello message's extensions.
fn hello_extensions(message: &[u8]) -> Option<Vec<u16>> {
    let mut body = match message {
        [1, _, _, _, body @ ..] => body,
        _ => return None,
    };
    // version and random; then the session id, cipher suites and compression methods.
    body = body.get(34..)?;
    for width in [1, 2, 1] {
        let length = match width {
            1 => usize::from(*body.first()?),
            _ => usize::from(u16::from_be_bytes([*body.first()?, *body.get(1)?])),
        };
        body = body.get(width + length..)?;
    }
    let mut types = Vec::new();
    let Some([high, low]) = body.get(..2) else { return Some(types) };
    let mut extensions = body.get(2..2 + (usize::from(*high) << 8 | usize::from(*low)))?;
    while let [t1, t2, l1, l2, rest @ ..] = extensions {
        types.push(u16::from_be_bytes([*t1, *t2]));
        extensions = rest.get(usize::from(u16::from_be_bytes([*l1, *l2]))..)?;
    }
    extensions.is_empty().then_some(types)
}

#[cfg(test)]
pub(crate) mod tests {
    #![allow(clippy::unwrap_used)]

    use std::sync::Arc;

    use rustls::pki_types::ServerName;

    use super::*;

    /// The first flight of a rustls client for `name` offering `alpn`.
    pub(crate) fn client_hello(name: &str, alpn: &[&str]) -> Vec<u8> {
        let roots = rustls::RootCertStore::empty();
        let mut config = rustls::ClientConfig::builder().with_root_certificates(roots).with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
        let name = ServerName::try_from(name.to_string()).unwrap();
        let mut client = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
        let mut out = Vec::new();
        client.write_tls(&mut out).unwrap();
        out
    }

    #[test]
    fn a_client_hello_gives_its_sni_and_alpn() {
        let hello = client_hello("WWW.Example.com", &["h2", "http/1.1"]);
        let want =
            ClientHello { server_name: Some("www.example.com".into()), alpn: vec!["h2".into(), "http/1.1".into()] };
        assert_eq!(parse(&hello), Some(Inspected::Tls(want)));
        // Cut short, it is incomplete; without SNI (an IP address) there is none.
        assert_eq!(parse(&hello[..hello.len() - 1]), None);
        assert_eq!(parse(&hello[..3]), None);
        let by_address = client_hello("127.0.0.1", &[]);
        assert_eq!(parse(&by_address), Some(Inspected::Tls(ClientHello::default())));
    }

    #[test]
    fn a_whole_hello_is_seen_with_its_ocsp_request() {
        let hello = client_hello("a.example", &["h2"]);
        // rustls's client asks for a staple.
        assert_eq!(hello_bytes(&hello), HelloBytes::Complete { asks_ocsp: true });
        for cut in [0, 3, 5, 20, hello.len() - 1] {
            let HelloBytes::Incomplete { at_least } = hello_bytes(&hello[..cut]) else { panic!("cut at {cut}") };
            assert!(at_least > cut && at_least <= hello.len(), "cut at {cut}: {at_least}");
        }
        // The same hello over two records, its status_request renamed to another type.
        let mut message = hello[5..].to_vec();
        let at = message.windows(5).position(|w| w == [0, 5, 0, 5, 1]).unwrap();
        let split = |message: &[u8]| {
            let (a, b) = message.split_at(100);
            let record = |part: &[u8]| [&[0x16, 3, 1, 0, 0][..], part].concat();
            let mut records = [record(a), record(b)].concat();
            records[3..5].copy_from_slice(&100u16.to_be_bytes());
            let second = 5 + 100;
            records[second + 3..second + 5].copy_from_slice(&(b.len() as u16).to_be_bytes());
            records
        };
        assert_eq!(hello_bytes(&split(&message)), HelloBytes::Complete { asks_ocsp: true });
        message[at + 1] = 0x55;
        assert_eq!(hello_bytes(&split(&message)), HelloBytes::Complete { asks_ocsp: false });
        assert_eq!(hello_bytes(&split(&message)[..150]), HelloBytes::Incomplete { at_least: split(&message).len() });
        // In more records than are looked into: left to rustls.
        let pieces: Vec<u8> =
            message.chunks(8).flat_map(|c| [&[0x16, 3, 1, 0, c.len() as u8][..], c].concat()).collect();
        assert_eq!(hello_bytes(&pieces), HelloBytes::Unreadable);
        assert_eq!(hello_bytes(b"GET / HTTP/1.1\r\n"), HelloBytes::Unreadable);
        assert_eq!(hello_bytes(b"\x16\x03\x01\x00\x05\x02\x00\x00\x01\x00"), HelloBytes::Unreadable);
    }

    #[test]
    fn anything_else_is_not_tls() {
        assert_eq!(parse(b"GET / HTTP/1.1\r\n"), Some(Inspected::NotTls));
        assert_eq!(parse(b"\x16\x03\x01\x00\x05garbage"), Some(Inspected::NotTls));
    }

    #[test]
    fn inspecting_leaves_the_bytes_on_the_socket() {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let hello = client_hello("a.example", &["h2"]);
            let (first, rest) = hello.split_at(10);
            let (first, rest) = (first.to_vec(), rest.to_vec());
            // The ClientHello comes in two pieces, the second a little later.
            let client = tokio::spawn(async move {
                use tokio::io::AsyncWriteExt;
                let mut tcp = TcpStream::connect(addr).await.unwrap();
                tcp.write_all(&first).await.unwrap();
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                tcp.write_all(&rest).await.unwrap();
                tcp
            });
            let (server, _) = listener.accept().await.unwrap();
            let (Inspected::Tls(seen), n) = inspect(&server).await.unwrap() else { panic!("not TLS") };
            assert_eq!(n, hello.len());
            assert_eq!(seen.server_name.as_deref(), Some("a.example"));
            let mut all = vec![0; hello.len()];
            use tokio::io::AsyncReadExt;
            let mut server = server;
            server.read_exact(&mut all).await.unwrap();
            assert_eq!(all, hello, "every byte still there to read");
            drop(client.await.unwrap());
            // A ClientHello longer than the first look (7 KiB of ALPN protocols).
            let long: Vec<String> = (0..150).map(|i| format!("protocol-number-{i:024}")).collect();
            let long_refs: Vec<&str> = long.iter().map(String::as_str).collect();
            let hello = client_hello("b.example", &long_refs);
            assert!(hello.len() > FIRST_LOOK, "{} bytes", hello.len());
            let mut client = TcpStream::connect(addr).await.unwrap();
            use tokio::io::AsyncWriteExt;
            client.write_all(&hello).await.unwrap();
            let (server, _) = listener.accept().await.unwrap();
            let (Inspected::Tls(seen), n) = inspect(&server).await.unwrap() else { panic!("not TLS") };
            assert_eq!((seen.alpn.len(), n), (150, hello.len()));
            drop(client);
            // A client that closes without a word.
            let client = TcpStream::connect(addr).await.unwrap();
            let (server, _) = listener.accept().await.unwrap();
            drop(client);
            assert_eq!(inspect(&server).await.unwrap(), (Inspected::Closed, 0));
        });
    }
}
