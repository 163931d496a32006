//! Listeners on a worker: sockets (one per worker on the same address, `SO_REUSEPORT`),
//! the accept loop, and what serves a listener's connections now. A listener whose
//! configuration changes keeps its socket: new connections get the new version while the
//! old version's connections drain.

use std::cell::RefCell;
use std::net::{SocketAddr, TcpListener};
use std::rc::Rc;
use std::sync::Arc;

use socket2::{Domain, Protocol, Socket, Type};

use crate::hcm::Hcm;
use crate::hcm::connection::serve_http;
use crate::http::tls::TlsTransport;
use crate::limits::LISTEN_BACKLOG;
use crate::observe::stats::ListenerStats;
use crate::server::drain::{Drain, Retirement};
use crate::server::tunables::{ConnectionLimits, ListenerLimit, Overflow};
use crate::stream_info::metadata::MetadataAttributes;
use crate::stream_info::{ConnectionInfo, TlsInfo};
use crate::tcp::TcpChain;

/// Binds `addr` with `SO_REUSEPORT` (and `SO_REUSEADDR`) so every worker can have its own
/// socket on the same port; the kernel spreads connections over them.
pub fn bind_reuseport(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    if addr.is_ipv6() {
        socket.set_only_v6(false)?;
    }
    socket.set_nonblocking(true)?;
    socket.set_tcp_nodelay(true)?;
    socket.bind(&addr.into())?;
    socket.listen(LISTEN_BACKLOG)?;
    Ok(socket.into())
}

/// What serves a listener's connections.
pub enum Terminal {
    /// The HTTP connection manager.
    Http(Rc<Hcm>),
    /// The TCP proxy with its Wasm network filters.
    Tcp(Rc<TcpChain>),
}

/// One version of a listener on one worker: how its connections are served.
pub struct Served {
    /// What serves them.
    pub terminal: Terminal,
    /// What its connections tell plugins: `xds.listener_direction`, `xds.filter_chain_name`.
    pub listener_direction: i64,
    /// `xds.filter_chain_name`.
    pub filter_chain_name: Rc<str>,
    /// `xds.listener_metadata`.
    pub listener_metadata: Arc<MetadataAttributes>,
    /// `listener.<address>.*`.
    pub stats: ListenerStats,
    /// TLS on its connections (`transport_socket`).
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Its connection count and limit.
    pub limit: ListenerLimit,
    /// Set once this version is replaced or removed.
    pub retirement: Retirement,
}

/// The version new connections get; swapped when the listener's configuration changes.
pub type Current = Rc<RefCell<Rc<Served>>>;

/// Connection ids, unique in the process (Envoy's `connection.id`).
static NEXT_CONNECTION_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// Accepts connections until the server stops (or the task is aborted, when the listener
/// is removed or moves to another address): the socket closes with the loop.
pub async fn accept_loop(
    listener: tokio::net::TcpListener,
    current: Current,
    limits: Arc<ConnectionLimits>,
    drain: Drain,
) {
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = drain.stopping() => return,
        };
        let (stream, peer) = match accepted {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!("accept failed: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                continue;
            }
        };
        let served = current.borrow().clone();
        // Over a connection limit, the connection is closed at once (Envoy's overflow).
        match limits.admit(&served.limit) {
            Ok(()) => {}
            Err(Overflow::Listener) => {
                served.stats.cx_overflow.inc();
                continue;
            }
            Err(Overflow::Global) => {
                served.stats.global_cx_overflow.inc();
                continue;
            }
        }
        let _ = stream.set_nodelay(true);
        let local = stream.local_addr().unwrap_or(peer);
        let id = NEXT_CONNECTION_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let connection = Rc::new(ConnectionInfo {
            id,
            peer,
            local,
            listener_direction: served.listener_direction,
            filter_chain_name: served.filter_chain_name.clone(),
            listener_metadata: served.listener_metadata.clone(),
            protocol_known: Default::default(),
            http2: Default::default(),
            activity: Default::default(),
            tls: Default::default(),
        });
        drain.opened();
        tokio::task::spawn_local(serve(stream, connection, served, limits.clone(), drain.clone()));
    }
}

/// A TLS handshake on an accepted connection: the session, its outcome counted in the
/// listener's `ssl.*` stats (a failure closes the connection).
async fn handshake(
    tls: Arc<rustls::ServerConfig>,
    stream: tokio::net::TcpStream,
    connection: Rc<ConnectionInfo>,
    stats: &ListenerStats,
) -> Option<TlsTransport> {
    match TlsTransport::accept(stream, tls).await {
        Ok(session) => {
            let info = TlsInfo { version: session.version().unwrap_or("unknown") };
            stats.tls_handshake(info.version);
            let _ = connection.tls.set(info);
            Some(session)
        }
        Err(e) => {
            stats.tls_connection_error();
            tracing::debug!("connection {} closed: {e}", connection.id);
            None
        }
    }
}

/// Serves one connection until it ends, or its listener version's drain time is over.
async fn serve(
    stream: tokio::net::TcpStream,
    connection: Rc<ConnectionInfo>,
    served: Rc<Served>,
    limits: Arc<ConnectionLimits>,
    drain: Drain,
) {
    let accepted = std::time::Instant::now();
    served.stats.connection_opened();
    // Finish what was accepted, take nothing new: the server stops, or this version of
    // the listener was replaced.
    let stopping = async {
        tokio::select! {
            _ = drain.stopping() => {}
            _ = served.retirement.started() => {}
        }
    };
    // Boxed, at the size the terminal needs: a future holding it in place would carry
    // room for both kinds, and async blocks that move a future keep a copy of its room.
    let serving: std::pin::Pin<Box<dyn std::future::Future<Output = ()> + '_>> = match (&served.terminal, &served.tls) {
        (Terminal::Tcp(chain), _) => Box::pin(chain.serve(stream, connection)),
        (Terminal::Http(hcm), None) => {
            Box::pin(serve_http(hcm.clone(), std::future::ready(Some(stream)), connection, false, stopping))
        }
        (Terminal::Http(hcm), Some(tls)) => {
            let handshake = handshake(tls.clone(), stream, connection.clone(), &served.stats);
            Box::pin(serve_http(hcm.clone(), handshake, connection, true, stopping))
        }
    };
    tokio::select! {
        _ = serving => {}
        _ = served.retirement.over() => tracing::debug!("drain time over: a connection of a replaced listener closed"),
    }
    served.stats.connection_closed(accepted.elapsed());
    limits.release(&served.limit);
    drain.closed();
}
