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

use crate::http::body::ProxyBody;
use crate::http::exec::LocalExec;
use crate::http::transport::TransportIo;
use crate::limits::MAX_IDLE_UPSTREAM_CONNECTIONS;
use crate::observe::stats::ClusterStats;
use crate::stream_info::TlsInfo;
use crate::tls::session::TlsTransport;
use crate::tls::upstream::UpstreamTlsConfig;
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
    http2: bool,
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
}

impl EndpointPool {
    /// An endpoint with no connection yet.
    pub fn new(
        addr: SocketAddr,
        http2: bool,
        connect_timeout: Duration,
        tls: Option<std::sync::Arc<UpstreamTlsConfig>>,
        breakers: WorkerBreakers,
        stats: Rc<ClusterStats>,
        host: std::sync::Arc<HostStats>,
    ) -> Rc<EndpointPool> {
        Rc::new(EndpointPool {
            addr,
            http2,
            connect_timeout,
            tls,
            breakers,
            stats,
            host,
            idle: RefCell::new(Vec::new()),
            shared: RefCell::new(Vec::new()),
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
    ) -> Result<(http::Response<Incoming>, Connected), SendError> {
        if self.http2 {
            return self.send_h2(request, host).await;
        }
        let mut request = request;
        // An idle connection first; a request it could not start (the peer closed it
        // meanwhile) comes back and goes to the next one, or to a new connection.
        while let Some((mut sender, local)) = self.take_idle(host.as_deref()) {
            self.count_request();
            match sender.try_send_request(request).await {
                Ok(response) => {
                    self.keep_when_ready(sender, local.clone());
                    return Ok((response, local));
                }
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
        self.count_request();
        let response = sender.send_request(request).await.map_err(|e| SendError::Request(e.to_string()))?;
        self.keep_when_ready(sender, local.clone());
        Ok((response, local))
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
    fn count_request(&self) {
        self.stats.rq_total.inc();
        self.host.rq_total.inc();
    }

    /// The idle connection for `host` used last (closed ones met on the way are dropped).
    fn take_idle(&self, host: Option<&str>) -> Option<(http1::SendRequest<ProxyBody>, Connected)> {
        let mut idle = self.idle.borrow_mut();
        loop {
            let i = idle.iter().rposition(|(_, c)| c.host.as_deref() == host)?;
            let (sender, local) = idle.remove(i);
            if !sender.is_closed() && sender.is_ready() {
                return Some((sender, local));
            }
        }
    }

    /// Returns the connection to the idle list once its response has been read.
    fn keep_when_ready(self: &Rc<Self>, mut sender: http1::SendRequest<ProxyBody>, local: Connected) {
        let pool: Weak<EndpointPool> = Rc::downgrade(self);
        tokio::task::spawn_local(async move {
            if sender.ready().await.is_ok()
                && let Some(pool) = pool.upgrade()
            {
                let mut idle = pool.idle.borrow_mut();
                if idle.len() < MAX_IDLE_UPSTREAM_CONNECTIONS {
                    idle.push((sender, local));
                }
            }
        });
    }

    async fn connect_h1(&self, host: Option<Rc<str>>) -> Result<(http1::SendRequest<ProxyBody>, Connected), SendError> {
        let place = self.connection_place()?;
        let (io, local) = self.connect(host).await?;
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
        &self,
        request: http::Request<ProxyBody>,
        host: Option<Rc<str>>,
    ) -> Result<(http::Response<Incoming>, Connected), SendError> {
        let current = {
            let mut shared = self.shared.borrow_mut();
            shared.retain(|(s, _)| !s.is_closed());
            shared.iter().find(|(_, c)| c.host == host).cloned()
        };
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
        self.count_request();
        let response = sender.send_request(request).await.map_err(|e| {
            let refused = std::error::Error::source(&e)
                .and_then(|s| s.downcast_ref::<h2::Error>())
                .is_some_and(|h2| h2.reason() == Some(h2::Reason::REFUSED_STREAM));
            if refused { SendError::Refused(e.to_string()) } else { SendError::Request(e.to_string()) }
        })?;
        Ok((response, local))
    }

    /// A new HTTP/2 connection, its task running.
    async fn connect_h2(&self, host: Option<Rc<str>>) -> Result<(http2::SendRequest<ProxyBody>, Connected), SendError> {
        let place = self.connection_place()?;
        let (io, local) = self.connect(host).await?;
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
    async fn connect(&self, host: Option<Rc<str>>) -> Result<(TokioIo<UpstreamIo>, Connected), SendError> {
        let tcp = self.connect_tcp().await?;
        let local = tcp.local_addr().map_err(|e| SendError::Connect(e.to_string()))?;
        let (io, tls) = match &self.tls {
            None => (Either::Left(tcp), None),
            Some(tls) => {
                let session = self.handshake(tls, tcp, Some(host.as_deref())).await?;
                let info = tls.info(&session);
                (Either::Right(TransportIo(Box::new(session))), Some(info))
            }
        };
        Ok((TokioIo::new(io), Connected { local, tls, host }))
    }

    /// The TLS handshake on a new connection (`http`: for HTTP, with the host of its
    /// first request if the cluster names connections after it; `None` for the TCP
    /// proxy), counted in the cluster's `ssl.*`; a failure is a connection failure.
    pub async fn handshake(
        &self,
        tls: &UpstreamTlsConfig,
        tcp: TcpStream,
        http: Option<Option<&str>>,
    ) -> Result<TlsTransport, SendError> {
        match tls.connect(tcp, self.addr, http.is_some(), http.flatten()).await {
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
