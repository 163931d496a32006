//! Connections to one upstream endpoint on one worker: HTTP/1.1 keep-alive connections,
//! each carrying one request at a time and reused once its response is read, or one
//! multiplexed HTTP/2 connection (opened again when it closes); over TLS when the cluster
//! has it.

use std::cell::RefCell;
use std::net::SocketAddr;
use std::rc::{Rc, Weak};
use std::time::{Duration, Instant};

use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio_util::either::Either;
use wasmproxy_config::model::{ConnectionOptions, ProtocolChoice};

use crate::http::body::ProxyBody;
use crate::http::exec::LocalExec;
use crate::http::transport::{Transport, TransportIo};
use crate::limits::MAX_IDLE_UPSTREAM_CONNECTIONS;
use crate::observe::stats::ClusterStats;
use crate::stream_info::TlsInfo;
use crate::tls::session::TlsTransport;
use crate::tls::upstream::{Alpn, UpstreamTlsConfig};
use crate::upstream::breakers::{Resource, Taken, WorkerBreakers, take};
use crate::upstream::registry::HostStats;

/// Why a request to an endpoint got no response.
#[derive(Debug)]
pub enum SendError {
    /// No connection could be made (refused, unreachable, or over `connect_timeout`).
    Connect(String),
    /// The connection failed before the response headers.
    Request(String),
    /// The upstream refused the stream (HTTP/2 `REFUSED_STREAM`): it did not start it.
    Refused(String),
    /// A circuit breaker was open (`max_pending_requests`, `max_connections`).
    Overflow,
}

/// One endpoint's connections.
pub struct EndpointPool {
    addr: SocketAddr,
    /// The cluster's protocol settings and connection limits.
    protocol: Protocol,
    connect_timeout: Duration,
    /// The cluster's TLS.
    tls: Option<std::sync::Arc<UpstreamTlsConfig>>,
    /// The cluster's circuit breakers.
    breakers: WorkerBreakers,
    stats: Rc<ClusterStats>,
    host: std::sync::Arc<HostStats>,
    /// HTTP/1.1 connections with no request on them, with what they are.
    idle: RefCell<Vec<(http1::SendRequest<ProxyBody>, Connected)>>,
    /// The HTTP/2 connection shared by every request (one per host, for a cluster that
    /// names its connections after their requests' hosts), with what it is.
    shared: RefCell<Vec<(http2::SendRequest<ProxyBody>, Connected)>>,
    /// Whether the task closing idle connections runs.
    sweeping: std::cell::Cell<bool>,
}

/// A cluster's HTTP protocol settings, as its pools use them.
#[derive(Clone, Copy)]
pub struct Protocol {
    /// HTTP/2 (`explicit_http_config`).
    pub http2: bool,
    /// How each request's protocol is chosen.
    pub choice: ProtocolChoice,
    /// `idle_timeout`, `max_requests_per_connection`.
    pub connections: ConnectionOptions,
}

impl EndpointPool {
    /// An endpoint with no connection yet.
    pub fn new(
        addr: SocketAddr,
        protocol: Protocol,
        connect_timeout: Duration,
        tls: Option<std::sync::Arc<UpstreamTlsConfig>>,
        breakers: WorkerBreakers,
        stats: Rc<ClusterStats>,
        host: std::sync::Arc<HostStats>,
    ) -> Rc<EndpointPool> {
        Rc::new(EndpointPool {
            addr,
            protocol,
            connect_timeout,
            tls,
            breakers,
            stats,
            host,
            idle: RefCell::new(Vec::new()),
            shared: RefCell::new(Vec::new()),
            sweeping: std::cell::Cell::new(false),
        })
    }

    /// The endpoint's figures (admin `/clusters`).
    pub fn host(&self) -> &std::sync::Arc<HostStats> {
        &self.host
    }

    /// The endpoint's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Sends a request and returns its response once the headers are in, with the
    /// connection it went on. HTTP/1.1 requests carry an origin-form target
    /// and a `host` header; HTTP/2 ones an absolute URI whose authority is the
    /// `:authority` to send. `host` names a new connection's TLS server (see
    /// [`UpstreamTlsConfig::per_host`]); only connections made for it are reused for it.
    pub async fn send(
        self: &Rc<Self>,
        request: http::Request<ProxyBody>,
        host: Option<Rc<str>>,
    ) -> Result<Sent, SendError> {
        let http2 = match self.protocol.choice {
            ProtocolChoice::Explicit => self.protocol.http2,
            ProtocolChoice::Downstream => request.version() == http::Version::HTTP_2,
            // By ALPN: a connection open already, else a new one says.
            ProtocolChoice::Alpn => {
                let open_h2 = self.shared.borrow().iter().any(|(s, c)| c.host == host && !s.is_closed());
                let open_h1 = self.idle.borrow().iter().any(|(_, c)| c.host == host);
                match (open_h2, open_h1) {
                    (true, _) => true,
                    (false, true) => false,
                    (false, false) => return Box::pin(self.send_new_by_alpn(request, host)).await,
                }
            }
        };
        if http2 {
            return self.send_h2(request, host).await;
        }
        self.send_h1(origin_form(request), host).await
    }

    /// A request on a new connection whose protocol ALPN decides.
    async fn send_new_by_alpn(
        self: &Rc<Self>,
        request: http::Request<ProxyBody>,
        host: Option<Rc<str>>,
    ) -> Result<Sent, SendError> {
        let _pending = self.pending()?;
        let place = self.connection_place()?;
        let connected = self.connect(host.clone(), Alpn::Either).await;
        let (io, local) = connected.inspect_err(|_| self.stats.rq_pending_failure_eject.inc())?;
        let negotiated = match io.inner() {
            Either::Right(tls) => tls.0.negotiated_http2(),
            Either::Left(_) => None,
        };
        if negotiated == Some(true) {
            let (sender, local) = self.handshake_h2(io, local, place).await?;
            self.shared.borrow_mut().push((sender, local));
            return self.send_h2(request, host).await;
        }
        let (mut sender, local) = self.handshake_h1(io, local, place).await?;
        self.count_request(&local);
        let response =
            sender.send_request(origin_form(request)).await.map_err(|e| SendError::Request(e.to_string()))?;
        Ok(self.sent_h1(response, sender, local))
    }

    /// A request over HTTP/1.1: on an idle connection, else a new one.
    async fn send_h1(
        self: &Rc<Self>,
        request: http::Request<ProxyBody>,
        host: Option<Rc<str>>,
    ) -> Result<Sent, SendError> {
        let mut request = request;
        // An idle connection first; a request it could not start (the peer closed it
        // meanwhile) comes back and goes to the next one, or to a new connection.
        while let Some((mut sender, local)) = self.take_idle(host.as_deref()) {
            self.count_request(&local);
            match sender.try_send_request(request).await {
                Ok(response) => return Ok(self.sent_h1(response, sender, local)),
                Err(mut e) => match e.take_message() {
                    Some(unsent) => request = unsent,
                    None => return Err(SendError::Request(e.into_error().to_string())),
                },
            }
        }
        let _pending = self.pending()?;
        // Boxed: a new connection's handshakes are large and rare; a request that reuses one
        // (and the client connection waiting on it) should not carry their size.
        let (mut sender, local) =
            Box::pin(self.connect_h1(host)).await.inspect_err(|_| self.stats.rq_pending_failure_eject.inc())?;
        self.count_request(&local);
        let response = sender.send_request(request).await.map_err(|e| SendError::Request(e.to_string()))?;
        Ok(self.sent_h1(response, sender, local))
    }

    /// A request waits for a new connection: counted, within `max_pending_requests`.
    fn pending(&self) -> Result<Taken, SendError> {
        let Some(place) = take(&self.breakers, Resource::Pending) else {
            self.stats.rq_pending_overflow.inc();
            return Err(SendError::Overflow);
        };
        self.stats.rq_pending_total.inc();
        Ok(place)
    }

    /// A request goes out on a connection.
    fn count_request(&self, on: &Connected) {
        self.stats.rq_total.inc();
        self.host.rq_total.inc();
        on.requests.set(on.requests.get() + 1);
        on.last_used.set(Instant::now());
    }

    /// Whether a connection carried its `max_requests_per_connection` and takes no more
    /// (`upstream_cx_max_requests`).
    fn spent(&self, on: &Connected) -> bool {
        let spent = self.protocol.connections.max_requests.is_some_and(|max| on.requests.get() >= max);
        if spent {
            self.stats.cx_max_requests.inc();
        }
        spent
    }

    /// Starts closing connections idle for `idle_timeout` (checked every quarter of it),
    /// once, while the pool lives.
    fn sweep_idle(self: &Rc<Self>) {
        let Some(timeout) = self.protocol.connections.idle_timeout else { return };
        if self.sweeping.replace(true) {
            return;
        }
        let pool = Rc::downgrade(self);
        tokio::task::spawn_local(async move {
            let every = (timeout / 4).max(Duration::from_millis(10));
            loop {
                tokio::time::sleep(every).await;
                let Some(pool) = pool.upgrade() else { return };
                let stale = |c: &Connected| c.last_used.get().elapsed() >= timeout;
                let mut closed = 0;
                pool.idle.borrow_mut().retain(|(_, c)| {
                    closed += usize::from(stale(c));
                    !stale(c)
                });
                // An HTTP/2 connection dropped here still finishes the streams it carries.
                pool.shared.borrow_mut().retain(|(s, c)| {
                    let going = stale(c) && !s.is_closed();
                    closed += usize::from(going);
                    !going
                });
                pool.stats.cx_idle_timeout.add(closed as u64);
            }
        });
    }

    /// The idle connection for `host` returned last. Closed ones met on the way are
    /// dropped; one not ready yet (its response's end not read by its task) stays.
    fn take_idle(&self, host: Option<&str>) -> Option<(http1::SendRequest<ProxyBody>, Connected)> {
        let mut idle = self.idle.borrow_mut();
        for i in (0..idle.len()).rev() {
            let (sender, local) = &idle[i];
            if local.host.as_deref() != host {
                continue;
            }
            if sender.is_closed() {
                idle.remove(i);
            } else if sender.is_ready() {
                return Some(idle.remove(i));
            }
        }
        None
    }

    /// An HTTP/1.1 request is on its way: its connection comes back to the pool with the
    /// response, unless it carried its `max_requests_per_connection` (it closes once the
    /// response is read).
    fn sent_h1(
        self: &Rc<Self>,
        response: http::Response<Incoming>,
        sender: http1::SendRequest<ProxyBody>,
        local: Connected,
    ) -> Sent {
        let reuse = (!self.spent(&local))
            .then(|| Reuse { pool: Rc::downgrade(self), connection: Some((sender, local.clone())) });
        Sent { response, connected: local, reuse }
    }

    /// Puts a connection whose request is done on the idle list, the last to be taken next.
    fn keep(self: &Rc<Self>, sender: http1::SendRequest<ProxyBody>, local: Connected) {
        if sender.is_closed() {
            return;
        }
        self.sweep_idle();
        local.last_used.set(Instant::now());
        let mut idle = self.idle.borrow_mut();
        if idle.len() < MAX_IDLE_UPSTREAM_CONNECTIONS {
            idle.push((sender, local));
        }
    }

    async fn connect_h1(&self, host: Option<Rc<str>>) -> Result<(http1::SendRequest<ProxyBody>, Connected), SendError> {
        let place = self.connection_place()?;
        let (io, local) = self.connect(host, Alpn::Http1).await?;
        self.handshake_h1(io, local, place).await
    }

    /// HTTP/1.1 on a new connection, its task running.
    async fn handshake_h1(
        &self,
        io: TokioIo<UpstreamIo>,
        local: Connected,
        place: Taken,
    ) -> Result<(http1::SendRequest<ProxyBody>, Connected), SendError> {
        let (sender, connection) = http1::handshake(io).await.map_err(|e| SendError::Connect(e.to_string()))?;
        self.stats.cx_http1_total.inc();
        // A `101` hands the connection over to the stream that asked for it.
        self.run(connection.with_upgrades(), "HTTP/1.1", place);
        Ok((sender, local))
    }

    /// Runs a new connection's task, counted open (and holding its place in
    /// `max_connections`) until it ends.
    fn run(
        &self,
        connection: impl std::future::Future<Output = hyper::Result<()>> + 'static,
        protocol: &'static str,
        place: Taken,
    ) {
        let open = OpenConnection::new(&self.stats, &self.host).holding(place);
        tokio::task::spawn_local(async move {
            if let Err(e) = connection.await {
                tracing::debug!("upstream {protocol} connection ended: {e}");
            }
            drop(open);
        });
    }

    async fn send_h2(
        self: &Rc<Self>,
        request: http::Request<ProxyBody>,
        host: Option<Rc<str>>,
    ) -> Result<Sent, SendError> {
        let current = {
            let mut shared = self.shared.borrow_mut();
            shared.retain(|(s, _)| !s.is_closed());
            shared.iter().find(|(_, c)| c.host == host).cloned()
        };
        self.sweep_idle();
        let (mut sender, local) = match current {
            Some(s) => s,
            None => {
                let _pending = self.pending()?;
                // Boxed, as for HTTP/1.1.
                let connected = Box::pin(self.connect_h2(host)).await;
                let (sender, local) = connected.inspect_err(|_| self.stats.rq_pending_failure_eject.inc())?;
                self.shared.borrow_mut().push((sender.clone(), local.clone()));
                (sender, local)
            }
        };
        sender.ready().await.map_err(|e| SendError::Request(e.to_string()))?;
        self.count_request(&local);
        if self.spent(&local) {
            // No new stream goes on it; the ones it carries finish.
            self.shared.borrow_mut().retain(|(_, c)| !Rc::ptr_eq(&c.requests, &local.requests));
        }
        let response = sender.send_request(request).await.map_err(|e| {
            let refused = std::error::Error::source(&e)
                .and_then(|s| s.downcast_ref::<h2::Error>())
                .is_some_and(|h2| h2.reason() == Some(h2::Reason::REFUSED_STREAM));
            if refused { SendError::Refused(e.to_string()) } else { SendError::Request(e.to_string()) }
        })?;
        // The connection stays shared; nothing brings it back.
        Ok(Sent { response, connected: local, reuse: None })
    }

    /// A new HTTP/2 connection, its task running.
    async fn connect_h2(&self, host: Option<Rc<str>>) -> Result<(http2::SendRequest<ProxyBody>, Connected), SendError> {
        let place = self.connection_place()?;
        let (io, local) = self.connect(host, Alpn::Http2).await?;
        self.handshake_h2(io, local, place).await
    }

    /// HTTP/2 on a new connection, its task running.
    async fn handshake_h2(
        &self,
        io: TokioIo<UpstreamIo>,
        local: Connected,
        place: Taken,
    ) -> Result<(http2::SendRequest<ProxyBody>, Connected), SendError> {
        let (sender, connection) =
            http2::Builder::new(LocalExec).handshake(io).await.map_err(|e| SendError::Connect(e.to_string()))?;
        self.stats.cx_http2_total.inc();
        self.run(connection, "HTTP/2", place);
        Ok((sender, local))
    }

    /// A place for one more connection in `max_connections`. Over it, the request fails
    /// (`upstream_cx_overflow`), where Envoy would queue it until a connection frees.
    pub fn connection_place(&self) -> Result<Taken, SendError> {
        take(&self.breakers, Resource::Connections).ok_or_else(|| {
            self.stats.cx_overflow.inc();
            SendError::Overflow
        })
    }

    /// A new connection for HTTP (TLS, if the cluster has it, for `host`), with what it is.
    async fn connect(&self, host: Option<Rc<str>>, alpn: Alpn) -> Result<(TokioIo<UpstreamIo>, Connected), SendError> {
        let tcp = self.connect_tcp().await?;
        let local = tcp.local_addr().map_err(|e| SendError::Connect(e.to_string()))?;
        let (io, tls) = match &self.tls {
            None => (Either::Left(tcp), None),
            Some(tls) => {
                let session = self.handshake(tls, tcp, Some((alpn, host.as_deref()))).await?;
                let info = tls.info(&session);
                (Either::Right(TransportIo(Box::new(session))), Some(info))
            }
        };
        let (requests, last_used) = (Rc::new(std::cell::Cell::new(0)), Rc::new(std::cell::Cell::new(Instant::now())));
        Ok((TokioIo::new(io), Connected { local, tls, host, requests, last_used }))
    }

    /// The TLS handshake on a new connection (`http`: for HTTP, with the host of its
    /// first request if the cluster names connections after it; `None` for the TCP
    /// proxy), counted in the cluster's `ssl.*`; a failure is a connection failure.
    pub async fn handshake(
        &self,
        tls: &UpstreamTlsConfig,
        tcp: TcpStream,
        http: Option<(Alpn, Option<&str>)>,
    ) -> Result<TlsTransport, SendError> {
        match tls.connect(tcp, self.addr, http.map(|(alpn, _)| alpn), http.and_then(|(_, host)| host)).await {
            Ok(session) => {
                if let Some(ssl) = &self.stats.ssl {
                    ssl.handshake(&session, true);
                }
                Ok(session)
            }
            Err(e) => {
                if let Some(ssl) = &self.stats.ssl {
                    ssl.failed(e.failure());
                }
                self.stats.cx_connect_fail.inc();
                self.host.cx_connect_fail.inc();
                self.stats.cx_destroy.inc();
                Err(SendError::Connect(e.to_string()))
            }
        }
    }

    /// A new TCP connection to the endpoint, within `connect_timeout` (counted in the
    /// cluster's `upstream_cx_*` stats).
    pub async fn connect_tcp(&self) -> Result<TcpStream, SendError> {
        let started = Instant::now();
        self.stats.cx_total.inc();
        self.host.cx_total.inc();
        let connected = tokio::time::timeout(self.connect_timeout, TcpStream::connect(self.addr))
            .await
            .map_err(|_| SendError::Connect("connect timeout".into()))
            .and_then(|r| r.map_err(|e| SendError::Connect(e.to_string())));
        let stream = connected.inspect_err(|_| {
            self.stats.cx_connect_fail.inc();
            self.host.cx_connect_fail.inc();
            self.stats.cx_destroy.inc();
        })?;
        self.stats.cx_connect_ms.record(started.elapsed().as_millis() as u64);
        let _ = stream.set_nodelay(true);
        Ok(stream)
    }
}

/// What a request went out on: the connection's local address, and its TLS.
#[derive(Clone)]
pub struct Connected {
    /// The local address (`upstream.local_address`).
    pub local: SocketAddr,
    /// What its TLS handshake settled (`upstream.tls_version`, ...).
    pub tls: Option<std::sync::Arc<TlsInfo>>,
    /// The host it was made for, when its cluster names connections after their hosts.
    pub host: Option<Rc<str>>,
    /// The requests it carried.
    requests: Rc<std::cell::Cell<u32>>,
    /// When it last took or finished a request (for `idle_timeout`).
    last_used: Rc<std::cell::Cell<Instant>>,
}

/// A request sent: its response (once the headers are in), the connection it went on, and,
/// for HTTP/1.1, that connection's way back to the pool.
pub struct Sent {
    /// The response, its body still to read.
    pub response: http::Response<Incoming>,
    /// What the request went out on.
    pub connected: Connected,
    /// The HTTP/1.1 connection's way back to the pool (none over HTTP/2, or for a
    /// connection that takes no more requests).
    pub reuse: Option<Reuse>,
}

/// An HTTP/1.1 connection carrying a request: dropped once the request is done (its
/// response read, or given up), it goes back to its pool's idle list, where it is taken
/// again once its task has read the response's end. Held by the request, not by a task
/// waiting on the connection.
pub struct Reuse {
    pool: Weak<EndpointPool>,
    connection: Option<(http1::SendRequest<ProxyBody>, Connected)>,
}

impl Drop for Reuse {
    fn drop(&mut self) {
        if let (Some(pool), Some((sender, local))) = (self.pool.upgrade(), self.connection.take()) {
            pool.keep(sender, local);
        }
    }
}

/// A request for an absolute URI made an HTTP/1.1 request: its path as the target, its
/// authority as `host`.
fn origin_form(request: http::Request<ProxyBody>) -> http::Request<ProxyBody> {
    let (mut parts, body) = request.into_parts();
    if let Some(authority) = parts.uri.authority().cloned() {
        if !parts.headers.contains_key(http::header::HOST)
            && let Ok(host) = http::HeaderValue::from_str(authority.as_str())
        {
            parts.headers.insert(http::header::HOST, host);
        }
        let target = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        if let Ok(uri) = target.parse() {
            parts.uri = uri;
        }
    }
    parts.version = http::Version::HTTP_11;
    http::Request::from_parts(parts, body)
}

/// A connection's bytes for hyper: plain TCP, or TLS over it.
type UpstreamIo = Either<TcpStream, TransportIo<TlsTransport>>;

/// An open upstream connection, counted in `upstream_cx_active` until dropped.
pub struct OpenConnection {
    stats: Rc<ClusterStats>,
    host: std::sync::Arc<HostStats>,
    opened: Instant,
    /// Its place in the cluster's `max_connections`.
    place: Option<Taken>,
}

impl OpenConnection {
    /// Counts a connection open.
    pub fn new(stats: &Rc<ClusterStats>, host: &std::sync::Arc<HostStats>) -> OpenConnection {
        stats.cx_active.inc();
        host.cx_active.inc();
        OpenConnection { stats: stats.clone(), host: host.clone(), opened: Instant::now(), place: None }
    }

    /// The same, holding its place in `max_connections` until it closes.
    pub fn holding(mut self, place: Taken) -> OpenConnection {
        self.place = Some(place);
        self
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.stats.cx_active.dec();
        self.host.cx_active.dec();
        self.stats.cx_destroy.inc();
        self.stats.cx_length_ms.record(self.opened.elapsed().as_millis() as u64);
    }
}
