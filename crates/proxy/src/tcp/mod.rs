//! `envoy.filters.network.tcp_proxy` with Wasm network filters before it: each
//! connection's bytes go through every filter (`on_downstream_data` in order,
//! `on_upstream_data` in reverse) to one endpoint of the cluster and back. Either side
//! may be TLS (the filter chain's, the cluster's): the relay is generic over the transport.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::Rc;
use std::task::Poll;
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes};
use std::net::Shutdown;
use wasmproxy_abi::{PeerType, StreamType};
use wasmproxy_config::model::FailurePolicy;
use wasmproxy_host::StreamAction;
use wasmproxy_stats::Counter;

use crate::http::transport::Transport;
use crate::limits::{BUFFER_LIMIT_BYTES, TCP_READ_BYTES};
use crate::observe::stats::TcpProxyStats;
use crate::stream_info::filter_state::TCP_PROXY_CLUSTER;
use crate::stream_info::response_flags::ResponseFlag;
use crate::stream_info::{ConnectionInfo, StreamInfo, StreamRef};
use crate::upstream::cluster::{Clusters, RawUpstream};
use crate::upstream::error::{UpstreamError, connect_failure_reason};
use crate::wasm::access_logger::StreamLoggers;
use crate::wasm::http_filter::FilterSlot;
use crate::wasm::network_filter::{ConnectionFilter, Opened, TcpVerdict};

/// One listener's TCP proxy on one worker.
pub struct TcpChain {
    /// The Wasm network filters, in order.
    pub filters: Vec<Rc<FilterSlot>>,
    /// After how many of `filters` a discovered filter without a configuration stands.
    pub missing_filter_config: Option<usize>,
    /// `tcp_proxy.cluster`, looked up for each connection.
    pub cluster: String,
    /// `tcp_proxy.idle_timeout`: how long a connection may move no byte (none: forever).
    pub idle_timeout: Option<Duration>,
    /// This worker's clusters.
    pub clusters: Rc<Clusters>,
    /// Its access loggers, which log each connection when it ends.
    pub logs: StreamLoggers,
    /// `tcp.<stat_prefix>.*`.
    pub stats: TcpProxyStats,
}

/// What woke the connection's task.
enum Event {
    Downstream(std::io::Result<usize>),
    Upstream(std::io::Result<usize>),
    Action(usize, StreamAction),
    /// All that waited for one side (bytes going that way) was sent: `true` with the end.
    Sent(StreamType, std::io::Result<bool>),
    /// The idle timer fired (it may have been pushed back since).
    IdleTimer,
}

impl TcpChain {
    /// Serves one client connection until both sides are done or one side fails.
    pub async fn serve<D: Transport>(&self, downstream: D, connection: Rc<ConnectionInfo>) {
        self.stats.cx_total.inc();
        let info: StreamRef = Rc::new(RefCell::new(StreamInfo::new(connection, "")));
        let mut filters: Vec<Option<ConnectionFilter>> = Vec::new();
        let before_missing = self.missing_filter_config.unwrap_or(usize::MAX);
        for slot in self.filters.iter().take(before_missing) {
            match slot.start_connection(&info) {
                Ok(mut f) => match f.new_connection() {
                    Opened::Yes => filters.push(Some(f)),
                    Opened::Failed if f.fail_open => filters.push(None),
                    Opened::Closed | Opened::Failed => {
                        filters.push(Some(f));
                        return self.finish(filters, PeerType::Local, &info);
                    }
                },
                // A failed VM (not reloaded, under FAIL_RELOAD): FAIL_OPEN skips the
                // filter, the others close the connection.
                Err(_) if slot.failure_policy != FailurePolicy::FailOpen => {
                    return self.finish(filters, PeerType::Local, &info);
                }
                Err(_) => filters.push(None),
            }
        }
        if self.missing_filter_config.is_some() {
            // Envoy's missing-configuration filter: `NFCF`, and the connection closes.
            info.borrow_mut().response_flags.set(ResponseFlag::NoFilterConfigFound);
            let _ = downstream.shutdown(Shutdown::Write);
            return self.finish(filters, PeerType::Local, &info);
        }
        // A plugin may have picked the cluster (`envoy.tcp_proxy.cluster`, as Envoy's
        // per-connection cluster). Plugins see it (and the endpoint) once the upstream is
        // being connected.
        let picked = info.borrow().filter_state.get(TCP_PROXY_CLUSTER).cloned().flatten();
        let cluster = picked.map_or_else(|| self.cluster.clone(), |c| String::from_utf8_lossy(&c).into_owned());
        let Some(target) = self.clusters.get(&cluster) else {
            // Envoy: no such cluster (`NC`, and no upstream cluster to log), the
            // connection closes.
            self.stats.no_route.inc();
            info.borrow_mut().response_flags.set(ResponseFlag::NoClusterFound);
            let _ = downstream.shutdown(Shutdown::Write);
            return self.finish(filters, PeerType::Local, &info);
        };
        info.borrow_mut().cluster_name = cluster.clone();
        info.borrow_mut().cluster_metadata = Some(target.metadata().clone());
        let connected = target.connect_tcp(Some(&info)).await;
        let (upstream, _open) = match connected {
            Ok(s) => s,
            Err(e) => {
                tracing::debug!("tcp_proxy to {cluster}: {e:?}");
                note_connect_error(&info, &e);
                let _ = downstream.shutdown(Shutdown::Write);
                return self.finish(filters, PeerType::Local, &info);
            }
        };
        let downstream_closed_by = match upstream {
            RawUpstream::Plain(tcp) => self.relay(&mut filters, &downstream, &tcp, &info).await,
            RawUpstream::Tls(tls) => self.relay(&mut filters, &downstream, &*tls, &info).await,
        };
        self.finish(filters, downstream_closed_by, &info);
    }

    /// The connection is over: every filter hears it (`on_downstream_close`, `on_log`,
    /// `on_done`), then the access loggers log it.
    fn finish(&self, filters: Vec<Option<ConnectionFilter>>, downstream: PeerType, info: &StreamRef) {
        for f in filters.into_iter().flatten() {
            f.finish(downstream);
        }
        info.borrow_mut().complete();
        self.logs.log(info, &mut None, &mut None);
    }

    /// Moves bytes both ways until both sides are done; returns who closed the downstream
    /// connection (the client, if its end came last; else the proxy, after the upstream's).
    /// The two ways move independently, as in Envoy: while one side takes no bytes, the
    /// other way goes on; a side is not read while its last bytes wait to be sent. When
    /// the upstream closes, the filters hear it then (as in Envoy, with the peer unknown).
    async fn relay(
        &self,
        filters: &mut [Option<ConnectionFilter>],
        downstream: &impl Transport,
        upstream: &impl Transport,
        info: &StreamRef,
    ) -> PeerType {
        let (mut down_buf, mut up_buf) = (vec![0u8; TCP_READ_BYTES], vec![0u8; TCP_READ_BYTES]);
        // Whether each side's end was read, and whether it went through to the other side.
        let (mut down_read_done, mut up_read_done) = (false, false);
        let mut ends = Ends { client: false, upstream: false, last: PeerType::Remote };
        // What waits to be sent to each side.
        let (mut to_up, mut to_down) = (Outbound::default(), Outbound::default());
        // When bytes last moved either way: read, or sent (as Envoy counts them).
        let moved = Cell::new(Instant::now());
        let mut idle = IdleTimer::new(self.idle_timeout);
        let tx_bytes = &self.stats.tx_bytes_total;
        while !(ends.client && ends.upstream) {
            let event = tokio::select! {
                n = read(downstream, &mut down_buf), if !down_read_done && to_up.is_empty() => Event::Downstream(n),
                n = read(upstream, &mut up_buf), if !up_read_done && to_down.is_empty() => Event::Upstream(n),
                (direction, sent) = send_either((&mut to_up, upstream), (&mut to_down, downstream), &moved, tx_bytes),
                    if !(to_up.is_empty() && to_down.is_empty()) => Event::Sent(direction, sent),
                (i, action) = next_action(filters) => Event::Action(i, action),
                // A side that takes no byte for the idle timeout (a client that stopped
                // reading) is idle too.
                () = idle.expired(&moved) => Event::IdleTimer,
            };
            if matches!(event, Event::Downstream(Ok(_)) | Event::Upstream(Ok(_))) {
                moved.set(Instant::now());
            }
            let (direction, from, chunk, eos) = match event {
                Event::Downstream(Ok(n)) => {
                    let (chunk, eos) = gather(downstream, &mut down_buf, n).await;
                    info.borrow_mut().request_body_size += chunk.len() as u64;
                    self.stats.rx_bytes_total.add(chunk.len() as u64);
                    down_read_done |= eos;
                    (StreamType::Downstream, 0, chunk, eos)
                }
                Event::Upstream(Ok(n)) => {
                    let (chunk, eos) = gather(upstream, &mut up_buf, n).await;
                    up_read_done |= eos;
                    (StreamType::Upstream, 0, chunk, eos)
                }
                Event::Downstream(Err(_)) => return PeerType::Remote,
                Event::Upstream(Err(_)) => {
                    upstream_closed(filters);
                    return PeerType::Local;
                }
                Event::Sent(direction, sent) if ends.sent(direction, &sent) => continue,
                Event::Sent(..) => return PeerType::Local,
                Event::Action(_, StreamAction::Close(_)) => return PeerType::Local,
                // A filter lets go of what it held: it goes on from the next filter.
                Event::Action(i, StreamAction::Continue(direction)) => {
                    let Some(Some(f)) = filters.get_mut(i) else { continue };
                    if !f.holds(direction) {
                        continue;
                    }
                    let (held, eos) = f.release(direction);
                    let from = if direction == StreamType::Downstream { i + 1 } else { filters.len() - i };
                    (direction, from, held, eos)
                }
                Event::Action(..) => continue,
                Event::IdleTimer => {
                    // Envoy closes both sides, with no response flag.
                    self.stats.idle_timeout.inc();
                    return PeerType::Local;
                }
            };
            let Ok(out) = through(filters, direction, from, chunk, eos) else { return PeerType::Local };
            // Held by a filter: nothing goes on yet, the end neither.
            let Some(out) = out else { continue };
            let sent = if direction == StreamType::Downstream {
                to_up.push(out, eos);
                to_up.send_now(upstream, &moved, None).await
            } else {
                info.borrow_mut().response_body_size += out.len() as u64;
                to_down.push(out, eos);
                // The upstream's end was read: it closed, whether or not the client still
                // takes its last bytes.
                if eos {
                    upstream_closed(filters);
                }
                to_down.send_now(downstream, &moved, Some(tx_bytes)).await
            };
            if let Some(sent) = sent
                && !ends.sent(direction, &sent)
            {
                return PeerType::Local;
            }
        }
        ends.last
    }
}

/// Which sides' ends went through to the other, and who closed the client's connection.
struct Ends {
    /// The client's end reached the upstream.
    client: bool,
    /// The upstream's end reached the client.
    upstream: bool,
    /// The client, if its end went through last; else the proxy.
    last: PeerType,
}

impl Ends {
    /// Notes what a send in `direction` gave; `false` if it failed (the connection is to
    /// close).
    fn sent(&mut self, direction: StreamType, sent: &std::io::Result<bool>) -> bool {
        match sent {
            Ok(true) if direction == StreamType::Downstream => (self.client, self.last) = (true, PeerType::Remote),
            Ok(true) => (self.upstream, self.last) = (true, PeerType::Local),
            Ok(false) => {}
            Err(_) => return false,
        }
        true
    }
}

/// Sends what waits for the upstream or the client, whichever takes it: the direction of
/// the bytes sent, and how it went.
async fn send_either(
    (to_up, upstream): (&mut Outbound, &impl Transport),
    (to_down, downstream): (&mut Outbound, &impl Transport),
    moved: &Cell<Instant>,
    tx_bytes: &Counter,
) -> (StreamType, std::io::Result<bool>) {
    let (up_waits, down_waits) = (!to_up.is_empty(), !to_down.is_empty());
    let mut up = std::pin::pin!(to_up.send(upstream, moved, None));
    let mut down = std::pin::pin!(to_down.send(downstream, moved, Some(tx_bytes)));
    std::future::poll_fn(|cx| {
        if up_waits && let Poll::Ready(sent) = up.as_mut().poll(cx) {
            return Poll::Ready((StreamType::Downstream, sent));
        }
        if down_waits && let Poll::Ready(sent) = down.as_mut().poll(cx) {
            return Poll::Ready((StreamType::Upstream, sent));
        }
        Poll::Pending
    })
    .await
}

/// Bytes on their way to one side, then maybe its end.
#[derive(Default)]
struct Outbound {
    /// Not sent yet, in order.
    chunks: VecDeque<Bytes>,
    /// Written but maybe still held (TLS records): a flush is due.
    unflushed: bool,
    /// The end is to follow the bytes.
    end: bool,
}

impl Outbound {
    /// Nothing waits: no byte, no flush, no end.
    fn is_empty(&self) -> bool {
        self.chunks.is_empty() && !self.unflushed && !self.end
    }

    /// Queues `bytes`, and the end after them if `eos`.
    fn push(&mut self, bytes: Bytes, eos: bool) {
        if !bytes.is_empty() {
            self.chunks.push_back(bytes);
        }
        self.end |= eos;
    }

    /// [`Outbound::send`] as far as it goes without waiting: `None` if the side takes no
    /// more now (the rest is sent when the relay next waits).
    async fn send_now(
        &mut self,
        to: &impl Transport,
        moved: &Cell<Instant>,
        counter: Option<&Counter>,
    ) -> Option<std::io::Result<bool>> {
        let mut send = std::pin::pin!(self.send(to, moved, counter));
        match std::future::poll_fn(|cx| Poll::Ready(send.as_mut().poll(cx))).await {
            Poll::Ready(sent) => Some(sent),
            Poll::Pending => None,
        }
    }

    /// Sends all that waits (out of the TLS session too), then the end if it came: `true`
    /// once the end went. `moved` is set and `counter` (if any) counts whenever bytes go,
    /// before the end, so a peer that saw the close finds its bytes counted. Cancel-safe:
    /// what was sent is off the queue.
    async fn send(
        &mut self,
        to: &impl Transport,
        moved: &Cell<Instant>,
        counter: Option<&Counter>,
    ) -> std::io::Result<bool> {
        std::future::poll_fn(|cx| {
            while let Some(front) = self.chunks.front_mut() {
                std::task::ready!(to.poll_write_ready(cx))?;
                match to.try_write(front) {
                    Ok(n) => {
                        front.advance(n);
                        if front.is_empty() {
                            self.chunks.pop_front();
                        }
                        self.unflushed = true;
                        moved.set(Instant::now());
                        if let Some(counter) = counter {
                            counter.add(n as u64);
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(e) => return Poll::Ready(Err(e)),
                }
            }
            if self.unflushed {
                std::task::ready!(to.poll_flush(cx))?;
                self.unflushed = false;
            }
            if !self.end {
                return Poll::Ready(Ok(false));
            }
            // TLS: the `close_notify` waits for room like the bytes, then the FIN.
            std::task::ready!(to.poll_shutdown_write(cx))?;
            self.end = false;
            Poll::Ready(Ok(true))
        })
        .await
    }
}

/// `idle_timeout` on one connection: one timer, moved only when it fires (not each time
/// bytes move).
struct IdleTimer {
    /// The timeout (none: never).
    timeout: Option<Duration>,
    /// Fires at the timeout after some earlier bytes, maybe not the last.
    sleep: std::pin::Pin<Box<tokio::time::Sleep>>,
}

impl IdleTimer {
    fn new(timeout: Option<Duration>) -> IdleTimer {
        let sleep = Box::pin(tokio::time::sleep(timeout.unwrap_or_default()));
        IdleTimer { timeout, sleep }
    }

    /// Once the timeout has passed since bytes last `moved` (never without a timeout).
    async fn expired(&mut self, moved: &Cell<Instant>) {
        let Some(timeout) = self.timeout else { return std::future::pending().await };
        loop {
            self.sleep.as_mut().await;
            let due = moved.get() + timeout;
            if Instant::now() >= due {
                return;
            }
            self.sleep.as_mut().reset(tokio::time::Instant::from_std(due));
        }
    }
}

/// Runs bytes through the filters of one direction, from position `from` (client bytes in
/// filter order, upstream bytes in reverse); `Ok(None)` if a filter holds them, `Err` if
/// the connection is to close.
fn through(
    filters: &mut [Option<ConnectionFilter>],
    direction: StreamType,
    from: usize,
    mut chunk: Bytes,
    eos: bool,
) -> Result<Option<Bytes>, ()> {
    let n = filters.len();
    // The filters still to run: client bytes from `from` on, upstream bytes from the
    // `from`-th last back to the first.
    let (first, end) = if direction == StreamType::Downstream { (from.min(n), n) } else { (0, n - from.min(n)) };
    for k in 0..end - first {
        let i = if direction == StreamType::Downstream { first + k } else { end - 1 - k };
        let Some(f) = filters[i].as_mut() else { continue };
        match f.data(direction, &chunk, eos) {
            TcpVerdict::Pass(bytes) => chunk = bytes,
            TcpVerdict::Held => return Ok(None),
            // A failed filter is skipped from now on under FAIL_OPEN.
            TcpVerdict::Failed if f.fail_open => filters[i] = None,
            TcpVerdict::Close | TcpVerdict::Failed => return Err(()),
        }
    }
    Ok(Some(chunk))
}

/// What the transport has to read, once there is something (0: the peer's end).
async fn read(from: &impl Transport, buf: &mut [u8]) -> std::io::Result<usize> {
    std::future::poll_fn(|cx| {
        loop {
            std::task::ready!(from.poll_read_ready(cx))?;
            match from.try_read(buf) {
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                read => return Poll::Ready(read),
            }
        }
    })
    .await
}

/// The next thing any filter asks for (from a callout's answer, a timer, ...).
async fn next_action(filters: &mut [Option<ConnectionFilter>]) -> (usize, StreamAction) {
    std::future::poll_fn(|cx| {
        for (i, f) in filters.iter_mut().enumerate() {
            if let Some(f) = f
                && let Poll::Ready(Some(action)) = f.poll_action(cx)
            {
                return Poll::Ready((i, action));
            }
        }
        Poll::Pending
    })
    .await
}

/// The `n` bytes just read into `buf` and whatever else is already there, as one chunk,
/// and whether the peer's end came with them (Envoy reads until the socket would block).
/// The worker's other tasks run once before giving up, so an end right behind the data is
/// seen. `buf` is reused for the further reads (no buffer is allocated per chunk).
async fn gather(from: &impl Transport, buf: &mut [u8], n: usize) -> (Bytes, bool) {
    if n == 0 {
        return (Bytes::new(), true);
    }
    let mut chunk = buf[..n].to_vec();
    let mut yielded = false;
    loop {
        match from.try_read(buf) {
            Ok(0) => return (chunk.into(), true),
            Ok(n) => {
                chunk.extend_from_slice(&buf[..n]);
                yielded = false;
                if chunk.len() >= BUFFER_LIMIT_BYTES {
                    return (chunk.into(), false);
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock && !yielded => {
                tokio::task::yield_now().await;
                yielded = true;
            }
            Err(_) => return (chunk.into(), false),
        }
    }
}

fn upstream_closed(filters: &mut [Option<ConnectionFilter>]) {
    for f in filters.iter_mut().flatten() {
        f.upstream_closed(PeerType::Unknown);
    }
}

/// Envoy's response flags and transport failure reason for an upstream the TCP proxy
/// could not connect to (`URX`: its one connect attempt is used up).
fn note_connect_error(info: &StreamRef, e: &UpstreamError) {
    let mut i = info.borrow_mut();
    match e {
        UpstreamError::ConnectionFailure(error) => {
            i.upstream_failure = Some(connect_failure_reason(error));
            i.response_flags.set(ResponseFlag::UpstreamConnectionFailure);
            i.response_flags.set(ResponseFlag::UpstreamRetryLimitExceeded);
        }
        UpstreamError::NoHealthyUpstream => i.response_flags.set(ResponseFlag::NoHealthyUpstream),
        UpstreamError::Overflow => i.response_flags.set(ResponseFlag::UpstreamOverflow),
        _ => {}
    }
}
