//! Connections to one upstream endpoint on one worker: HTTP/1.1 keep-alive connections,
//! each carrying one request at a time and reused once its response is read, or one
//! multiplexed HTTP/2 connection (opened again when it closes).

use std::cell::RefCell;
use std::net::SocketAddr;
use std::rc::{Rc, Weak};
use std::time::Duration;

use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::body::ProxyBody;
use crate::exec::LocalExec;

/// Why a request to an endpoint got no response.
#[derive(Debug)]
pub enum SendError {
    /// No connection could be made (refused, unreachable, or over `connect_timeout`).
    Connect(String),
    /// The connection failed before the response headers.
    Request(String),
}

/// One endpoint's connections.
pub struct EndpointPool {
    addr: SocketAddr,
    http2: bool,
    connect_timeout: Duration,
    /// HTTP/1.1 connections with no request on them.
    idle: RefCell<Vec<http1::SendRequest<ProxyBody>>>,
    /// The HTTP/2 connection, shared by every request.
    shared: RefCell<Option<http2::SendRequest<ProxyBody>>>,
}

/// At most this many idle HTTP/1.1 connections are kept per endpoint per worker.
const MAX_IDLE: usize = 128;

impl EndpointPool {
    /// An endpoint with no connection yet.
    pub fn new(addr: SocketAddr, http2: bool, connect_timeout: Duration) -> Rc<EndpointPool> {
        Rc::new(EndpointPool {
            addr,
            http2,
            connect_timeout,
            idle: RefCell::new(Vec::new()),
            shared: RefCell::new(None),
        })
    }

    /// The endpoint's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Sends a request and returns its response once the headers are in. HTTP/1.1
    /// requests carry an origin-form target and a `host` header; HTTP/2 ones an absolute
    /// URI whose authority is the `:authority` to send.
    pub async fn send(
        self: &Rc<Self>,
        request: http::Request<ProxyBody>,
    ) -> Result<http::Response<Incoming>, SendError> {
        if self.http2 {
            return self.send_h2(request).await;
        }
        let mut request = request;
        // An idle connection first; a request it could not start (the peer closed it
        // meanwhile) comes back and goes to the next one, or to a new connection.
        while let Some(mut sender) = self.take_idle() {
            match sender.try_send_request(request).await {
                Ok(response) => {
                    self.keep_when_ready(sender);
                    return Ok(response);
                }
                Err(mut e) => match e.take_message() {
                    Some(unsent) => request = unsent,
                    None => return Err(SendError::Request(e.into_error().to_string())),
                },
            }
        }
        let mut sender = self.connect_h1().await?;
        let response = sender.send_request(request).await.map_err(|e| SendError::Request(e.to_string()))?;
        self.keep_when_ready(sender);
        Ok(response)
    }

    fn take_idle(&self) -> Option<http1::SendRequest<ProxyBody>> {
        let mut idle = self.idle.borrow_mut();
        while let Some(sender) = idle.pop() {
            if !sender.is_closed() && sender.is_ready() {
                return Some(sender);
            }
        }
        None
    }

    /// Returns the connection to the idle list once its response has been read.
    fn keep_when_ready(self: &Rc<Self>, mut sender: http1::SendRequest<ProxyBody>) {
        let pool: Weak<EndpointPool> = Rc::downgrade(self);
        tokio::task::spawn_local(async move {
            if sender.ready().await.is_ok()
                && let Some(pool) = pool.upgrade()
            {
                let mut idle = pool.idle.borrow_mut();
                if idle.len() < MAX_IDLE {
                    idle.push(sender);
                }
            }
        });
    }

    async fn connect_h1(&self) -> Result<http1::SendRequest<ProxyBody>, SendError> {
        let io = self.connect().await?;
        let (sender, connection) = http1::handshake(io).await.map_err(|e| SendError::Connect(e.to_string()))?;
        tokio::task::spawn_local(async move {
            if let Err(e) = connection.await {
                tracing::debug!("upstream connection ended: {e}");
            }
        });
        Ok(sender)
    }

    async fn send_h2(&self, request: http::Request<ProxyBody>) -> Result<http::Response<Incoming>, SendError> {
        let current = self.shared.borrow().clone().filter(|s| !s.is_closed());
        let mut sender = match current {
            Some(s) => s,
            None => {
                let io = self.connect().await?;
                let (sender, connection) = http2::Builder::new(LocalExec)
                    .handshake(io)
                    .await
                    .map_err(|e| SendError::Connect(e.to_string()))?;
                tokio::task::spawn_local(async move {
                    if let Err(e) = connection.await {
                        tracing::debug!("upstream HTTP/2 connection ended: {e}");
                    }
                });
                *self.shared.borrow_mut() = Some(sender.clone());
                sender
            }
        };
        sender.ready().await.map_err(|e| SendError::Request(e.to_string()))?;
        sender.send_request(request).await.map_err(|e| SendError::Request(e.to_string()))
    }

    async fn connect(&self) -> Result<TokioIo<TcpStream>, SendError> {
        self.connect_tcp().await.map(TokioIo::new)
    }

    /// A new TCP connection to the endpoint, within `connect_timeout`.
    pub async fn connect_tcp(&self) -> Result<TcpStream, SendError> {
        let stream = tokio::time::timeout(self.connect_timeout, TcpStream::connect(self.addr))
            .await
            .map_err(|_| SendError::Connect("connect timeout".into()))?
            .map_err(|e| SendError::Connect(e.to_string()))?;
        let _ = stream.set_nodelay(true);
        Ok(stream)
    }
}
