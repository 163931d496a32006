//! The requests a scenario sends, and what the client sees of each answer.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

/// One request.
#[derive(Debug, Clone)]
pub struct Request {
    /// The method.
    pub method: &'static str,
    /// Path and query.
    pub path: String,
    /// Headers, in order (`host` defaults to `conformance.test`).
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
    /// HTTP/2 (h2c by prior knowledge) instead of HTTP/1.1.
    pub http2: bool,
    /// Bytes to send over a plain TCP connection instead (for TCP proxy listeners): an
    /// HTTP/1.1 request, whose response is read before the client closes its side.
    pub raw: Option<Vec<u8>>,
    /// With `raw`: the client keeps its side open after the response, and waits for the
    /// proxy to close the connection.
    pub hold_open: bool,
    /// HTTP/2 frames to send as they are after the preface (see [`crate::h2_frames`]):
    /// what comes back is described frame by frame.
    pub h2_frames: Option<Vec<u8>>,
    /// The client closes the connection after this many milliseconds without a whole
    /// answer (10 s if absent), then waits half a second for the proxy to notice.
    pub give_up_ms: Option<u64>,
    /// Before it is sent, this dynamic resource file (name, text) is replaced, as an
    /// operator replaces it (written beside it, then moved into place), and the proxy is
    /// given the time to take it.
    pub update: Option<(&'static str, String)>,
    /// Before the update, the control plane is stopped and, once the proxy has seen it go,
    /// started again on the same port (with nothing but the update's snapshot).
    pub restart_control_plane: bool,
    /// Over TLS (server name `localhost`, trusting the run's certificate), offering this
    /// ALPN protocol (`h2` or `http/1.1`).
    pub tls: Option<&'static str>,
    /// Over TLS, the server name sent (SNI) and checked against the certificate
    /// (`localhost` if absent).
    pub server_name: Option<&'static str>,
    /// Over TLS, the client presents the run's client certificate.
    pub client_cert: bool,
    /// Over TLS, the one key exchange group the client offers (rustls's name, e.g.
    /// `secp384r1`); all of rustls's if absent.
    pub curve: Option<&'static str>,
    /// Over TLS, the client keeps the sessions it is given (one store per listener) and
    /// offers one back; what comes back says whether the handshake resumed it.
    pub resume: bool,
    /// An admin page instead, with `method` (JSON, compared with keys and TLS contexts
    /// sorted).
    pub admin: bool,
    /// An HTTP/1.1 upgrade (`upgrade: <type>`) instead, then, once switched, these
    /// messages one at a time, each waiting for the upstream's echo, then a close.
    pub upgrade: Option<(&'static str, Vec<&'static str>)>,
    /// Sent after this pause, for a change the proxy makes on another thread to land (as
    /// Envoy's main thread ejects a host after the answer that passed the threshold).
    pub pause_ms: u64,
    /// After the update, the harness also waits (up to 15 s) for this line in admin
    /// `/stats`: the update is in use (a listener modified counts once its new plugin is
    /// compiled and on the workers in wasmproxy; Envoy counts it as the update comes and
    /// warms the listener).
    pub applied_when: Option<&'static str>,
    /// The client reads this many bytes of the answer, then nothing for this many
    /// milliseconds (see [`Request::stalled`]).
    pub stall: Option<(usize, u64)>,
}

impl Request {
    /// A GET of `path`.
    pub fn get(path: &str) -> Request {
        Request {
            method: "GET",
            path: path.into(),
            headers: Vec::new(),
            body: Vec::new(),
            http2: false,
            raw: None,
            h2_frames: None,
            hold_open: false,
            give_up_ms: None,
            update: None,
            restart_control_plane: false,
            tls: None,
            resume: false,
            curve: None,
            server_name: None,
            client_cert: false,
            admin: false,
            upgrade: None,
            pause_ms: 0,
            applied_when: None,
            stall: None,
        }
    }

    /// An HTTP/1.1 GET of `path` whose client reads the first `bytes` of the answer, then
    /// nothing for `ms` milliseconds, then reads on: the status line, and whether the proxy
    /// ended the connection meanwhile.
    pub fn stalled(path: &str, bytes: usize, ms: u64) -> Request {
        Request { method: "STALLED", stall: Some((bytes, ms)), ..Request::get(path) }
    }

    /// A POST of `body` to `path`.
    pub fn post(path: &str, body: &str) -> Request {
        Request { method: "POST", body: body.as_bytes().to_vec(), ..Request::get(path) }
    }

    /// With a header.
    pub fn header(mut self, name: &str, value: &str) -> Request {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Raw bytes over TCP.
    pub fn raw(bytes: &str) -> Request {
        Request { method: "TCP", raw: Some(bytes.as_bytes().to_vec()), ..Request::get("") }
    }

    /// Raw bytes over TCP, the connection then kept open until the proxy closes it.
    pub fn raw_held_open(bytes: &str) -> Request {
        Request { hold_open: true, ..Request::raw(bytes) }
    }

    /// Bytes that are not text (a broken TLS record, say), sent as [`Request::raw`] sends.
    pub fn raw_bytes(bytes: &[u8]) -> Request {
        Request { method: "TCP", raw: Some(bytes.to_vec()), ..Request::get("") }
    }

    /// Raw HTTP/2 frames (after the preface and an empty SETTINGS).
    pub fn h2_frames(about: &str, frames: Vec<u8>) -> Request {
        Request { method: "H2", h2_frames: Some(frames), ..Request::get(about) }
    }

    /// Sent `ms` milliseconds after the answer before it.
    pub fn after_pause(mut self, ms: u64) -> Request {
        self.pause_ms = ms;
        self
    }

    /// The client closes the connection if no whole answer came in `ms` milliseconds.
    pub fn give_up_after(mut self, ms: u64) -> Request {
        self.give_up_ms = Some(ms);
        self
    }

    /// After its update, sent once admin `/stats` has the line `stat` too.
    pub fn once_stats_show(mut self, stat: &'static str) -> Request {
        self.applied_when = Some(stat);
        self
    }

    /// Sent once the dynamic resource file `name` has been replaced by `text`.
    pub fn after_update(mut self, name: &'static str, text: String) -> Request {
        self.update = Some((name, text));
        self
    }

    /// Sent once the control plane has gone, come back on the same port, and served
    /// `snapshot` (under the name `XDS`).
    pub fn after_control_plane_restart(mut self, name: &'static str, snapshot: String) -> Request {
        self.restart_control_plane = true;
        self.after_update(name, snapshot)
    }

    /// The same, over TLS, offering `alpn` (`h2` or `http/1.1`).
    pub fn tls(mut self, alpn: &'static str) -> Request {
        self.tls = Some(alpn);
        self
    }

    /// Over TLS, presenting the run's client certificate.
    pub fn client_cert(mut self) -> Request {
        self.client_cert = true;
        self
    }

    /// Over TLS, offering the key exchange group `name` alone.
    pub fn curve(mut self, name: &'static str) -> Request {
        self.curve = Some(name);
        self
    }

    /// Over TLS, offering a session this listener gave an earlier such request.
    pub fn resuming(mut self) -> Request {
        self.resume = true;
        self
    }

    /// Over TLS, sending `name` as the server name.
    pub fn sni(mut self, name: &'static str) -> Request {
        self.server_name = Some(name);
        self
    }

    /// A GET of the admin page `path`.
    pub fn admin(path: &str) -> Request {
        Request { admin: true, ..Request::get(path) }
    }

    /// A POST to the admin page `path` (one that changes things).
    pub fn admin_post(path: &str) -> Request {
        Request { method: "POST", ..Request::admin(path) }
    }

    /// An HTTP/1.1 GET of `path` asking to upgrade to `kind`, then `messages` through the
    /// upgraded connection (see [`Request::upgrade`]).
    pub fn upgrade(path: &str, kind: &'static str, messages: &[&'static str]) -> Request {
        Request { method: "UPGRADE", upgrade: Some((kind, messages.to_vec())), ..Request::get(path) }
    }

    /// The same, over HTTP/2.
    pub fn h2(mut self) -> Request {
        self.http2 = true;
        self
    }
}

/// Response headers left out of the comparison because their presence depends on framing
/// only (HTTP/2 has no `transfer-encoding`; HTTP/1.1 framing is compared through the body).
const FRAMING: &[&str] = &["transfer-encoding", "connection", "keep-alive"];

/// Sends a request and describes the answer: status, headers (sorted, normalized), body,
/// trailers; or how it failed.
pub async fn send(addr: SocketAddr, request: &Request) -> String {
    if let Some(bytes) = &request.raw {
        return raw(addr, bytes, request.hold_open, request.give_up_ms).await;
    }
    if let Some((bytes, ms)) = request.stall {
        return stalled(addr, &request.path, bytes, ms).await;
    }
    if let Some((kind, messages)) = &request.upgrade {
        if request.http2 {
            return extended_connect(addr, request, kind, messages).await;
        }
        return upgrade(addr, request, kind, messages).await;
    }
    if let Some(frames) = request.h2_frames.clone() {
        let seen = tokio::task::spawn_blocking(move || crate::h2_frames::exchange(&addr.to_string(), &frames, ""));
        return match seen.await {
            Ok(Ok(seen)) => format!("frames: {}\n", seen.join(" | ")),
            Ok(Err(e)) => format!("connection failed: {}\n", e.kind()),
            Err(_) => "the client failed\n".into(),
        };
    }
    if let Some(alpn) = request.tls {
        return tokio::time::timeout(Duration::from_secs(10), over_tls(addr, request, alpn))
            .await
            .unwrap_or_else(|_| "no answer in 10 s".into());
    }
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).http2_only(request.http2).build_http();
    let mut builder = http::Request::builder().method(request.method).uri(format!("http://{addr}{}", request.path));
    if !request.headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        builder = builder.header("host", "conformance.test");
    }
    for (k, v) in &request.headers {
        builder = builder.header(k.as_str(), v.as_str());
    }
    let Ok(req) = builder.body(Full::new(Bytes::from(request.body.clone()))) else {
        return "the request could not be built".into();
    };
    let Some(ms) = request.give_up_ms else {
        let exchange = async {
            match client.request(req).await {
                Ok(response) => describe(response).await,
                Err(e) => format!("no response: {}", error_kind(&e)),
            }
        };
        return tokio::time::timeout(Duration::from_secs(10), exchange)
            .await
            .unwrap_or_else(|_| "no answer in 10 s".into());
    };
    // A connection of its own, closed when the client gives up (a pooled one would stay).
    let Ok(socket) = tokio::net::TcpStream::connect(addr).await else {
        return "no response: connection refused".into();
    };
    let io = hyper_util::rt::TokioIo::new(socket);
    // The connection's task is aborted when the client gives up, which closes the socket
    // whatever state the exchange is in.
    let (responded, connection) = if request.http2 {
        let Ok((mut sender, connection)) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io).await else {
            return "no response: handshake failed".into();
        };
        let task = tokio::spawn(connection);
        (Box::pin(async move { sender.send_request(req).await }) as Responded, task.abort_handle())
    } else {
        // HTTP/1.1 in origin form, as the pooled client sends it.
        let mut req = req;
        let Ok(path) = request.path.parse() else { return "a bad path".into() };
        *req.uri_mut() = path;
        let Ok((mut sender, connection)) = hyper::client::conn::http1::handshake(io).await else {
            return "no response: handshake failed".into();
        };
        let task = tokio::spawn(connection);
        (Box::pin(async move { sender.send_request(req).await }) as Responded, task.abort_handle())
    };
    let answer = tokio::time::timeout(Duration::from_millis(ms), async {
        match responded.await {
            Ok(response) => describe(response).await,
            Err(_) => "no response: connection closed or reset".into(),
        }
    })
    .await;
    connection.abort();
    tokio::time::sleep(Duration::from_millis(500)).await;
    answer.unwrap_or_else(|_| format!("the client gave up after {ms} ms\n"))
}

/// The sessions the client keeps for the listener at `addr` (see [`Request::resume`]).
fn sessions_of(addr: SocketAddr) -> std::sync::Arc<dyn rustls::client::ClientSessionStore> {
    type Stores = std::collections::HashMap<SocketAddr, std::sync::Arc<dyn rustls::client::ClientSessionStore>>;
    static STORES: std::sync::LazyLock<std::sync::Mutex<Stores>> = std::sync::LazyLock::new(Default::default);
    let mut stores = STORES.lock().unwrap_or_else(|e| e.into_inner());
    stores.entry(addr).or_insert_with(|| std::sync::Arc::new(rustls::client::ClientSessionMemoryCache::new(8))).clone()
}

/// The server's certificate checked against the run's CA, the OCSP response stapled to it
/// (if any) kept to report.
#[derive(Debug)]
struct StapleSeen {
    webpki: std::sync::Arc<rustls::client::WebPkiServerVerifier>,
    staple: std::sync::Mutex<Vec<u8>>,
}

impl rustls::client::danger::ServerCertVerifier for StapleSeen {
    fn verify_server_cert(
        &self,
        end_entity: &rustls::pki_types::CertificateDer<'_>,
        intermediates: &[rustls::pki_types::CertificateDer<'_>],
        server_name: &rustls::pki_types::ServerName<'_>,
        ocsp_response: &[u8],
        now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        if let Ok(mut staple) = self.staple.lock() {
            *staple = ocsp_response.to_vec();
        }
        self.webpki.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.webpki.supported_verify_schemes()
    }
}

/// One exchange over a TLS connection of its own: the protocol ALPN settled, then the answer.
async fn over_tls(addr: SocketAddr, request: &Request, alpn: &str) -> String {
    let Some(run) = crate::certs::CLIENT.get() else { return "no certificate to trust".into() };
    let mut roots = rustls::RootCertStore::empty();
    if roots.add(run.ca.clone()).is_err() {
        return "the certificate cannot be trusted".into();
    }
    let mut provider = rustls::crypto::aws_lc_rs::default_provider();
    if let Some(curve) = request.curve {
        provider.kx_groups.retain(|g| format!("{:?}", g.name()) == curve);
    }
    let provider = std::sync::Arc::new(provider);
    let Ok(builder) =
        rustls::ClientConfig::builder_with_provider(provider.clone()).with_safe_default_protocol_versions()
    else {
        return "no such curve for the client".into();
    };
    let Ok(webpki) =
        rustls::client::WebPkiServerVerifier::builder_with_provider(std::sync::Arc::new(roots), provider).build()
    else {
        return "the certificate cannot be trusted".into();
    };
    let verifier = std::sync::Arc::new(StapleSeen { webpki, staple: Default::default() });
    let builder = builder.dangerous().with_custom_certificate_verifier(verifier.clone());
    let mut config = match request.client_cert {
        true => match builder.with_client_auth_cert(vec![run.cert.clone()], run.key.clone_key().into()) {
            Ok(config) => config,
            Err(e) => return format!("the client certificate cannot be used: {e}"),
        },
        false => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![alpn.as_bytes().to_vec()];
    if request.resume {
        config.resumption = rustls::client::Resumption::store(sessions_of(addr));
    }
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let Ok(tcp) = tokio::net::TcpStream::connect(addr).await else { return "no response: connection refused".into() };
    let host = request.server_name.unwrap_or("localhost");
    let Ok(name) = rustls::pki_types::ServerName::try_from(host) else { return "a bad name".into() };
    let tls = match connector.connect(name, tcp).await {
        Ok(tls) => tls,
        Err(e) => return format!("TLS handshake failed: {}\n", e.kind()),
    };
    let agreed = tls.get_ref().1.alpn_protocol().map(|p| String::from_utf8_lossy(p).into_owned());
    let mut out = format!("tls: alpn {}\n", agreed.as_deref().unwrap_or("none"));
    let staple = verifier.staple.lock().map(|s| s.clone()).unwrap_or_default();
    if !staple.is_empty() {
        out.push_str(&format!("tls: OCSP response stapled ({} bytes)\n", staple.len()));
    }
    if request.resume {
        let resumed = tls.get_ref().1.handshake_kind() == Some(rustls::HandshakeKind::Resumed);
        out.push_str(if resumed { "tls: session resumed\n" } else { "tls: new session\n" });
    }
    let io = hyper_util::rt::TokioIo::new(tls);
    let mut builder = http::Request::builder().method(request.method);
    let h2 = agreed.as_deref() == Some("h2");
    builder =
        if h2 { builder.uri(format!("https://{host}{}", request.path)) } else { builder.uri(request.path.as_str()) };
    if !h2 {
        builder = builder.header("host", host);
    }
    for (k, v) in &request.headers {
        builder = builder.header(k.as_str(), v.as_str());
    }
    let Ok(req) = builder.body(Full::new(Bytes::from(request.body.clone()))) else {
        return "the request could not be built".into();
    };
    let response = if h2 {
        let Ok((mut sender, connection)) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io).await else {
            return "no response: handshake failed".into();
        };
        tokio::spawn(connection);
        sender.send_request(req).await
    } else {
        let Ok((mut sender, connection)) = hyper::client::conn::http1::handshake(io).await else {
            return "no response: handshake failed".into();
        };
        tokio::spawn(connection);
        sender.send_request(req).await
    };
    match response {
        Ok(response) => out.push_str(&describe(response).await),
        Err(_) => out.push_str("no response: connection closed or reset\n"),
    }
    out
}

/// A response still to come on a connection of the client's own.
type Responded =
    std::pin::Pin<Box<dyn std::future::Future<Output = hyper::Result<http::Response<hyper::body::Incoming>>> + Send>>;

/// Status, headers (sorted, normalized), body and trailers of a response.
async fn describe(response: http::Response<hyper::body::Incoming>) -> String {
    let mut out = format!("status {}\n", response.status().as_u16());
    let mut headers: Vec<String> = response
        .headers()
        .iter()
        .filter(|(k, _)| !FRAMING.contains(&k.as_str()))
        .map(|(k, v)| crate::normalize::header_line(crate::normalize::RESPONSE, k.as_str(), v.as_bytes()))
        .collect();
    headers.sort();
    for h in headers {
        out.push_str(&h);
        out.push('\n');
    }
    let encoding = response.headers().get("content-encoding").map(|v| v.as_bytes().to_vec());
    match response.into_body().collect().await {
        Ok(body) => {
            let trailers = body.trailers().cloned();
            let text = crate::normalize::body_text(encoding.as_deref(), &body.to_bytes());
            out.push_str(&format!("body: {text}\n"));
            for (k, v) in trailers.iter().flatten() {
                out.push_str(&format!("trailer {k}: {}\n", String::from_utf8_lossy(v.as_bytes())));
            }
        }
        Err(_) => out.push_str("body: cut off (stream reset)\n"),
    }
    out
}

/// A failure described without details that differ from run to run.
fn error_kind(e: &hyper_util::client::legacy::Error) -> &'static str {
    if e.is_connect() { "connection refused" } else { "connection closed or reset" }
}

/// Writes bytes on a TCP connection, reads one whole HTTP response (by its
/// `content-length`), then half-closes and reads until the other side closes. (Waiting
/// for the response before closing keeps the order of events the same from run to run.)
async fn raw(addr: SocketAddr, bytes: &[u8], hold_open: bool, give_up_ms: Option<u64>) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await?;
        stream.write_all(bytes).await?;
        let mut out = Vec::new();
        if !read_response(&mut stream, &mut out).await? {
            return Ok(out);
        }
        if !hold_open {
            stream.shutdown().await?;
        }
        stream.read_to_end(&mut out).await?;
        if hold_open {
            out.extend_from_slice(b"\n(the proxy closed the connection)");
        }
        Ok::<_, std::io::Error>(out)
    };
    let wait = Duration::from_millis(give_up_ms.unwrap_or(10_000));
    match tokio::time::timeout(wait, exchange).await {
        Ok(Ok(out)) => format!("received: {}\n", crate::normalize::text(&String::from_utf8_lossy(&out))),
        Ok(Err(e)) => format!("connection failed: {}\n", e.kind()),
        Err(_) if give_up_ms.is_some() => {
            // The connection is closed (dropped with the exchange); the proxy gets time to
            // notice.
            tokio::time::sleep(Duration::from_millis(500)).await;
            format!("the client gave up after {} ms\n", wait.as_millis())
        }
        Err(_) => "no answer in 10 s\n".into(),
    }
}

/// [`Request::stalled`]: the status line, then whether the connection ended while the
/// client read nothing (it reads on for 5 s at most: what was on its way, then the end).
async fn stalled(addr: SocketAddr, path: &str, bytes: usize, ms: u64) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await?;
        let head = format!("GET {path} HTTP/1.1\r\nhost: conformance.test\r\n\r\n");
        stream.write_all(head.as_bytes()).await?;
        let mut first = vec![0u8; bytes];
        stream.read_exact(&mut first).await?;
        let status = String::from_utf8_lossy(first.split(|b| *b == b'\r').next().unwrap_or_default()).into_owned();
        tokio::time::sleep(Duration::from_millis(ms)).await;
        let mut buf = vec![0u8; 1 << 20];
        let read_on = async {
            loop {
                match stream.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
            }
        };
        let after = match tokio::time::timeout(Duration::from_secs(5), read_on).await {
            Ok(()) => "the connection ended",
            Err(_) => "the connection stayed open",
        };
        Ok::<_, std::io::Error>(format!("status: {status}\nafter the client read nothing for {ms} ms: {after}\n"))
    };
    match tokio::time::timeout(Duration::from_secs(10 + ms / 1000), exchange).await {
        Ok(Ok(described)) => described,
        Ok(Err(e)) => format!("connection failed: {}\n", e.kind()),
        Err(_) => "no answer in time\n".into(),
    }
}

/// An upgrade: the request head, the response head; if it switched protocols, each message
/// and the echo it waits for, then its side closed and what else comes until the other
/// side closes. Described as the bytes received, normalised.
async fn upgrade(addr: SocketAddr, request: &Request, kind: &str, messages: &[&str]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await?;
        let mut head = format!(
            "GET {} HTTP/1.1\r\nhost: conformance.test\r\nconnection: upgrade\r\nupgrade: {kind}\r\n",
            request.path
        );
        for (k, v) in &request.headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        head.push_str("\r\n");
        stream.write_all(head.as_bytes()).await?;
        let mut out = Vec::new();
        if !read_response(&mut stream, &mut out).await? {
            return Ok(out);
        }
        if !out.starts_with(b"HTTP/1.1 101") {
            stream.shutdown().await?;
            stream.read_to_end(&mut out).await?;
            return Ok(out);
        }
        let mut buf = [0u8; 4096];
        for message in messages {
            stream.write_all(message.as_bytes()).await?;
            let expected = [&b"echo: "[..], message.as_bytes()].concat();
            let start = out.len();
            while !out[start..].ends_with(&expected) {
                let n = stream.read(&mut buf).await?;
                if n == 0 {
                    return Ok(out);
                }
                out.extend_from_slice(&buf[..n]);
            }
            out.extend_from_slice(b" | ");
        }
        stream.shutdown().await?;
        stream.read_to_end(&mut out).await?;
        Ok::<_, std::io::Error>(out)
    };
    match tokio::time::timeout(Duration::from_secs(10), exchange).await {
        Ok(Ok(out)) => format!("received: {}\n", crate::normalize::text(&String::from_utf8_lossy(&out))),
        Ok(Err(e)) => format!("connection failed: {}\n", e.kind()),
        Err(_) => "no answer in 10 s\n".into(),
    }
}

/// An HTTP/2 extended CONNECT (`:protocol` `kind`, RFC 8441): the response's status and
/// headers; if it succeeded, each message and the echo it waits for over the stream, then
/// its side ended and what comes in the next 300 ms.
async fn extended_connect(addr: SocketAddr, request: &Request, kind: &'static str, messages: &[&str]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let exchange = async {
        let tcp = tokio::net::TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
        let io = hyper_util::rt::TokioIo::new(tcp);
        let (mut sender, connection) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
            .handshake::<_, http_body_util::Empty<Bytes>>(io)
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(connection);
        let mut builder = http::Request::builder()
            .method(http::Method::CONNECT)
            .version(http::Version::HTTP_2)
            .uri(format!("http://conformance.test{}", request.path));
        for (k, v) in &request.headers {
            builder = builder.header(k.as_str(), v.as_str());
        }
        let mut connect = builder.body(http_body_util::Empty::new()).map_err(|e| e.to_string())?;
        connect.extensions_mut().insert(hyper::ext::Protocol::from_static(kind));
        // The proxy must have said it takes extended CONNECT (SETTINGS) first.
        sender.ready().await.map_err(|e| e.to_string())?;
        let mut response = sender.send_request(connect).await.map_err(|_| "refused".to_string())?;
        let mut out = format!("status {}\n", response.status().as_u16());
        let mut headers: Vec<String> = response
            .headers()
            .iter()
            .map(|(k, v)| crate::normalize::header_line(crate::normalize::RESPONSE, k.as_str(), v.as_bytes()))
            .collect();
        headers.sort();
        out.push_str(&headers.join("\n"));
        out.push('\n');
        if !response.status().is_success() {
            return Ok(out);
        }
        let upgraded = hyper::upgrade::on(&mut response).await.map_err(|e| e.to_string())?;
        let mut stream = hyper_util::rt::TokioIo::new(upgraded);
        let mut received = Vec::new();
        let mut buf = [0u8; 4096];
        for message in messages {
            stream.write_all(message.as_bytes()).await.map_err(|e| e.to_string())?;
            let expected = [&b"echo: "[..], message.as_bytes()].concat();
            let start = received.len();
            while !received[start..].ends_with(&expected) {
                let n = stream.read(&mut buf).await.map_err(|e| e.to_string())?;
                if n == 0 {
                    break;
                }
                received.extend_from_slice(&buf[..n]);
            }
            received.extend_from_slice(b" | ");
        }
        // The client's side ends; then what comes for a while (not waiting for the close:
        // Envoy 1.40 leaves the stream open after both sides of the tunnel closed).
        let _ = stream.shutdown().await;
        let _ = tokio::time::timeout(Duration::from_millis(300), stream.read_to_end(&mut received)).await;
        out.push_str(&format!("received: {}\n", String::from_utf8_lossy(&received)));
        Ok::<_, String>(out)
    };
    match tokio::time::timeout(Duration::from_secs(10), exchange).await {
        Ok(Ok(out)) => out,
        Ok(Err(e)) => format!("failed: {e}\n"),
        Err(_) => "no answer in 10 s\n".into(),
    }
}

/// Reads into `out` until it holds a whole HTTP/1.1 response (see [`complete_response`]);
/// false if the other side closed first.
async fn read_response(stream: &mut tokio::net::TcpStream, out: &mut Vec<u8>) -> std::io::Result<bool> {
    use tokio::io::AsyncReadExt;
    let mut buf = [0u8; 4096];
    while !complete_response(out) {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Ok(false);
        }
        out.extend_from_slice(&buf[..n]);
    }
    Ok(true)
}

/// Whether `data` holds an HTTP/1.1 response's head and its `content-length` bytes of body.
fn complete_response(data: &[u8]) -> bool {
    let Some(end) = data.windows(4).position(|w| w == b"\r\n\r\n") else { return false };
    let head = String::from_utf8_lossy(&data[..end]).to_ascii_lowercase();
    let length =
        head.lines().find_map(|l| l.strip_prefix("content-length:")?.trim().parse::<usize>().ok()).unwrap_or(0);
    data.len() >= end + 4 + length
}
