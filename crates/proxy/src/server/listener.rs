//! Listeners on a worker: sockets (one per worker on the same address, `SO_REUSEPORT`),
//! the accept loop, and what serves a listener's connections now. A listener whose
//! configuration changes keeps its socket: new connections get the new version while the
//! old version's connections drain.

use std::cell::RefCell;
use std::net::{SocketAddr, TcpListener};
use std::rc::Rc;
use std::sync::Arc;

use socket2::{Domain, Protocol, Socket, Type};
use wasmproxy_config::model::{FilterChainMatch, ListenerFilters};

use crate::hcm::Hcm;
use crate::hcm::connection::serve_http;
use crate::limits::LISTEN_BACKLOG;
use crate::observe::stats::{InspectorStats, ListenerStats};
use crate::server::chain_match;
use crate::server::drain::{Drain, Retirement};
use crate::server::tunables::{ConnectionLimits, ListenerLimit, Overflow};
use crate::stream_info::metadata::MetadataAttributes;
use crate::stream_info::{ConnectionInfo, TlsInfo};
use crate::tcp::TcpChain;
use crate::tls::downstream::ServerTls;
use crate::tls::inspector::{ClientHello, Inspected, inspect};
use crate::tls::session::{Refused, TlsTransport};

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
    /// Its filter chains, then its default chain.
    pub chains: Vec<ServedChain>,
    /// Each of `filter_chains`' `filter_chain_match`, in order.
    pub matches: Vec<FilterChainMatch>,
    /// Its listener filters.
    pub listener_filters: ListenerFilters,
    /// `tls_inspector.*`, for a listener with the TLS inspector.
    pub inspector: Option<InspectorStats>,
    /// What its connections tell plugins: `xds.listener_direction`.
    pub listener_direction: i64,
    /// `xds.listener_metadata`.
    pub listener_metadata: Arc<MetadataAttributes>,
    /// `listener.<address>.*`.
    pub stats: ListenerStats,
    /// Its connection count and limit.
    pub limit: ListenerLimit,
    /// Set once this version is replaced or removed.
    pub retirement: Retirement,
}

/// One filter chain on one worker.
pub struct ServedChain {
    /// What serves its connections (none: they are closed).
    pub terminal: Option<Terminal>,
    /// TLS on its connections (`transport_socket`).
    pub tls: Option<Arc<ServerTls>>,
    /// `transport_socket_connect_timeout`.
    pub handshake_timeout: Option<std::time::Duration>,
    /// Its name (`xds.filter_chain_name`).
    pub name: Rc<str>,
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
    // Where connections arrive, unless the listener takes any address: asked of each
    // socket then.
    let bound = listener.local_addr().ok().filter(|a| !a.ip().is_unspecified());
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
        drain.opened();
        tokio::task::spawn_local(serve(stream, (peer, bound), served, limits.clone(), drain.clone()));
    }
}

/// A TLS handshake on an accepted connection: the session, its outcome counted in the
/// listener's `ssl.*` stats (a failure closes the connection).
async fn handshake(
    chain: &ServedChain,
    tls: &ServerTls,
    stream: tokio::net::TcpStream,
    connection: Rc<ConnectionInfo>,
    stats: &ListenerStats,
) -> Option<TlsTransport> {
    let accept = tls.accept(stream, |stapling| {
        if let Some(ssl) = stats.ssl() {
            ssl.stapling(stapling);
        }
    });
    let accepted = match chain.handshake_timeout {
        None => accept.await,
        Some(limit) => match tokio::time::timeout(limit, accept).await {
            Ok(accepted) => accepted,
            Err(_) => {
                stats.transport_socket_connect_timeout.inc();
                tracing::debug!("connection {} closed: TLS handshake longer than {limit:?}", connection.id);
                return None;
            }
        },
    };
    match accepted {
        Ok((session, local)) => {
            let info = TlsInfo::new(&session, Some(local));
            if let Some(ssl) = stats.ssl() {
                ssl.handshake(&session, info.peer.is_some());
            }
            let _ = connection.tls.set(info);
            Some(session)
        }
        // Counted before the socket closes (with `Refused`), as Envoy counts it.
        Err(Refused { error, socket }) => {
            if let Some(ssl) = stats.ssl() {
                ssl.failed(error.failure());
            }
            tracing::debug!("connection {} closed: {error}", connection.id);
            drop(socket);
            None
        }
    }
}

/// A connection with its chain picked.
struct Picked<'s> {
    stream: tokio::net::TcpStream,
    /// The address the client connected to.
    local: SocketAddr,
    chain: &'s ServedChain,
    /// SNI, as the TLS inspector read it.
    server_name: Option<String>,
}

/// The chain a connection gets: the listener filters read what they need (within
/// `listener_filters_timeout`), then the chains' `filter_chain_match` pick. `None`: the
/// connection closes (counted).
async fn pick_chain(
    mut stream: tokio::net::TcpStream,
    peer: SocketAddr,
    bound: Option<SocketAddr>,
    served: &Served,
) -> Option<Picked<'_>> {
    let mut hello = ClientHello::default();
    let mut transport_protocol = "raw_buffer";
    if let Some(stats) = &served.inspector {
        let filters = &served.listener_filters;
        let inspected = match filters.timeout.is_zero() {
            true => Ok(inspect(&stream).await),
            false => tokio::time::timeout(filters.timeout, inspect(&stream)).await,
        };
        match inspected {
            Ok(Ok((Inspected::Tls(seen), bytes))) => {
                stats.inspected(bytes, Some((seen.server_name.is_some(), !seen.alpn.is_empty())));
                transport_protocol = "tls";
                hello = seen;
            }
            Ok(Ok((Inspected::NotTls, bytes))) => stats.inspected(bytes, None),
            Ok(Ok((Inspected::TooLarge, _))) => {
                stats.client_hello_too_large.inc();
                return None;
            }
            Ok(Ok((Inspected::Closed, _)) | Err(_)) => {
                served.stats.listener_filter_remote_close.inc();
                return None;
            }
            Err(_elapsed) => {
                served.stats.pre_cx_timeout.inc();
                if !filters.continue_on_timeout {
                    return None;
                }
                // The inspector waited for more with the socket's readiness cleared: the
                // socket is registered again, so what it holds is seen as readable.
                stream = tokio::net::TcpStream::from_std(stream.into_std().ok()?).ok()?;
            }
        }
    }
    let local = match bound {
        Some(bound) => bound,
        None => stream.local_addr().ok()?,
    };
    let facts = chain_match::Connection {
        local,
        peer,
        server_name: hello.server_name.as_deref(),
        transport_protocol,
        application_protocols: &hello.alpn,
    };
    // A chain that matches, else the default chain (after the others, if there is one).
    let index = chain_match::pick(&served.matches, &facts).unwrap_or(served.matches.len());
    match served.chains.get(index) {
        Some(chain) if chain.terminal.is_some() => {
            Some(Picked { stream, local, chain, server_name: hello.server_name })
        }
        _ => {
            served.stats.no_filter_chain_match.inc();
            None
        }
    }
}

/// Serves one connection until it ends, or its listener version's drain time is over.
/// `(peer, bound)`: the client's address, and the address the listener is bound to if it
/// is one.
async fn serve(
    stream: tokio::net::TcpStream,
    (peer, bound): (SocketAddr, Option<SocketAddr>),
    served: Rc<Served>,
    limits: Arc<ConnectionLimits>,
    drain: Drain,
) {
    // As in Envoy, a connection counts in the listener's `downstream_cx_*` once it has a
    // chain.
    let mut opened = None;
    let serving = async {
        // Boxed: the connection's task keeps no room for the picking once it is done.
        if let Some(picked) = Box::pin(pick_chain(stream, peer, bound, &served)).await {
            served.stats.connection_opened();
            opened = Some(std::time::Instant::now());
            serve_on_chain(picked, peer, &served, &drain).await;
        }
    };
    tokio::select! {
        _ = serving => {}
        _ = served.retirement.over() => tracing::debug!("drain time over: a connection of a replaced listener closed"),
    }
    if let Some(opened) = opened {
        served.stats.connection_closed(opened.elapsed());
    }
    limits.release(&served.limit);
    drain.closed();
}

/// Serves one connection on its chain until it ends.
async fn serve_on_chain(picked: Picked<'_>, peer: SocketAddr, served: &Served, drain: &Drain) {
    let Picked { stream, local, chain, server_name } = picked;
    let connection = Rc::new(ConnectionInfo {
        id: NEXT_CONNECTION_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        peer,
        local,
        listener_direction: served.listener_direction,
        filter_chain_name: chain.name.clone(),
        requested_server_name: server_name.map(String::into_boxed_str),
        listener_metadata: served.listener_metadata.clone(),
        protocol_known: Default::default(),
        http2: Default::default(),
        activity: Default::default(),
        tls: Default::default(),
    });
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
    let serving: std::pin::Pin<Box<dyn std::future::Future<Output = ()> + '_>> = match (&chain.terminal, &chain.tls) {
        (None, _) => return,
        (Some(Terminal::Tcp(tcp)), None) => Box::pin(tcp.serve(stream, connection)),
        (Some(Terminal::Tcp(tcp)), Some(tls)) => Box::pin(async move {
            // The handshake boxed: its room is given back once it is done.
            let handshake = Box::pin(handshake(chain, tls, stream, connection.clone(), &served.stats));
            if let Some(session) = handshake.await {
                tcp.serve(session, connection).await;
            }
        }),
        (Some(Terminal::Http(hcm)), None) => {
            Box::pin(serve_http(hcm.clone(), std::future::ready(Some(stream)), connection, false, stopping))
        }
        (Some(Terminal::Http(hcm)), Some(tls)) => {
            // The handshake boxed: its room is given back once it is done.
            let handshake = Box::pin(handshake(chain, tls, stream, connection.clone(), &served.stats));
            Box::pin(serve_http(hcm.clone(), handshake, connection, true, stopping))
        }
    };
    serving.await
}
