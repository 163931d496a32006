//! HTTP/1.1 upgrades (WebSocket and the like) and HTTP/2's extended CONNECT (RFC 8441),
//! made an HTTP/1.1 upgrade upstream: whether a stream may upgrade (the route's
//! `upgrade_configs`, else the connection manager's), and the tunnel once the upstream
//! switched protocols, its bytes through the filters' body callbacks both ways, as in
//! Envoy.

use bytes::Bytes;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::oneshot;
use wasmproxy_config::model::{HttpConnectionManager, RouteAction, Upgrade};
use wasmproxy_host::Headers;

use crate::hcm::route_table::Matched;
use crate::hcm::{ActiveStream, StreamFilters};
use crate::http::direction::Direction;
use crate::http::downstream::TunnelIo;
use crate::limits::TCP_READ_BYTES;

/// An upgrade a client asked for: its type (lower-cased).
pub(super) struct UpgradeRequest {
    pub(super) kind: String,
    /// For HTTP/2's extended CONNECT, the client's stream once the answer is sent.
    pub(super) h2_stream: Option<OnUpgrade>,
    /// Over HTTP/2 (extended CONNECT).
    pub(super) h2: bool,
}

/// The upgrade an HTTP/1.1 request asks for (`connection: upgrade` and `upgrade: <type>`),
/// or an HTTP/2 extended CONNECT (`:protocol`, when the connection manager allows it), as
/// Envoy recognises one.
pub(super) fn requested(parts: &mut http::request::Parts) -> Option<UpgradeRequest> {
    if parts.version == http::Version::HTTP_2 && parts.method == http::Method::CONNECT {
        let kind = parts.extensions.get::<hyper::ext::Protocol>()?.as_str().to_ascii_lowercase();
        let h2_stream = parts.extensions.remove::<OnUpgrade>();
        return Some(UpgradeRequest { kind, h2_stream, h2: true });
    }
    if parts.version != http::Version::HTTP_11 {
        return None;
    }
    let connection = parts.headers.get(http::header::CONNECTION)?.to_str().ok()?;
    if !connection.split(',').any(|token| token.trim().eq_ignore_ascii_case("upgrade")) {
        return None;
    }
    let kind = parts.headers.get(http::header::UPGRADE)?.to_str().ok()?.to_ascii_lowercase();
    Some(UpgradeRequest { kind, h2_stream: None, h2: false })
}

/// An extended CONNECT's headers as an HTTP/1.1 upgrade's, as Envoy's codec gives them to
/// the filters and the upstream: `GET`, `upgrade: <protocol>`, `connection: upgrade`.
pub(super) fn as_http1_upgrade(headers: &mut Headers) {
    let Some(protocol) = headers.get(b":protocol").map(<[u8]>::to_vec) else { return };
    headers.replace(b":method", b"GET");
    headers.remove(b":protocol");
    headers.add(b"upgrade", &protocol);
    headers.add(b"connection", b"upgrade");
}

/// Whether the stream may upgrade to `kind`: the route's `upgrade_configs` decide if they
/// name it, else the connection manager's (Envoy's rule).
pub(super) fn allowed(config: &HttpConnectionManager, route: Option<&Matched<'_>>, kind: &str) -> bool {
    let find = |list: &[Upgrade]| list.iter().find(|u| u.kind == kind).map(|u| u.enabled);
    let on_route = match route.map(|m| m.action) {
        Some(RouteAction::Forward(f)) => find(&f.upgrades),
        _ => None,
    };
    on_route.or_else(|| find(&config.upgrades)).unwrap_or(false)
}

impl ActiveStream {
    /// The tunnel, once both sides switched protocols: bytes from the client through the
    /// request body callbacks to the upstream, bytes from the upstream through the
    /// response body callbacks to the client, until both sides have closed (or one
    /// failed, or nothing moved for the stream idle timeout). Then the stream ends.
    pub(super) async fn tunnel(
        mut self,
        downstream: oneshot::Receiver<Box<dyn TunnelIo>>,
        upstream: OnUpgrade,
        response: Headers,
    ) {
        let hcm = self.filters.hcm.clone();
        hcm.stats.cx_upgrades_total.inc();
        hcm.stats.cx_upgrades_active.inc();
        if let (Ok(down), Ok(up)) = (downstream.await, upstream.await) {
            let idle = hcm.config.stream_idle_timeout;
            // Envoy's HTTP/2 codec hands the client's end of stream to the filters.
            let h2 = self.upgrade.as_ref().is_some_and(|u| u.h2);
            let (received, sent) = relay(&mut self.filters, down, TokioIo::new(up), idle, h2).await;
            let mut info = self.filters.info.borrow_mut();
            info.request_body_size += received;
            info.response_body_size += sent;
        }
        hcm.stats.cx_upgrades_active.dec();
        self.end_now(Some(response));
    }
}

/// Moves bytes both ways through the filters (`client_end`: the client's close goes to
/// them as the request's end); returns the bytes received from the client and those sent
/// to it.
async fn relay<D, U>(
    filters: &mut StreamFilters,
    down: D,
    up: U,
    idle: Option<std::time::Duration>,
    client_end: bool,
) -> (u64, u64)
where
    D: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    U: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let (mut down_read, mut down_write) = tokio::io::split(down);
    let (mut up_read, mut up_write) = tokio::io::split(up);
    let (mut from_client, mut from_upstream) = (vec![0u8; TCP_READ_BYTES], vec![0u8; TCP_READ_BYTES]);
    let (mut client_open, mut upstream_open) = (true, true);
    let (mut received, mut sent) = (0u64, 0u64);
    let filters_count = filters.contexts.len();
    while client_open || upstream_open {
        let quiet = async {
            match idle {
                Some(t) => tokio::time::sleep(t).await,
                None => std::future::pending().await,
            }
        };
        // One side's bytes are read, filtered and written before the next read.
        let (direction, read) = tokio::select! {
            n = down_read.read(&mut from_client), if client_open => (Direction::Request, n),
            n = up_read.read(&mut from_upstream), if upstream_open => (Direction::Response, n),
            () = quiet => return (received, sent),
        };
        let (buffer, writer): (&[u8], &mut (dyn tokio::io::AsyncWrite + Unpin)) = match direction {
            Direction::Request => (&from_client, &mut up_write),
            Direction::Response => (&from_upstream, &mut down_write),
        };
        let n = match read {
            Ok(0) | Err(_) => {
                // A side that closed (or failed) closes the other's writing side.
                match direction {
                    Direction::Request => client_open = false,
                    Direction::Response => upstream_open = false,
                }
                if client_end && direction == Direction::Request {
                    let _ = filters.filter_chunk(direction, filters_count, Bytes::new(), true).await;
                }
                let _ = writer.shutdown().await;
                continue;
            }
            Ok(n) => n,
        };
        let chunk = Bytes::copy_from_slice(&buffer[..n]);
        let out = match filters.filter_chunk(direction, filters_count, chunk, false).await {
            Ok(out) => out.unwrap_or_default(),
            // A filter ended the stream: nothing more can be answered; both sides close.
            Err(_) => return (received, sent),
        };
        match direction {
            Direction::Request => received += n as u64,
            Direction::Response => sent += out.len() as u64,
        }
        if !out.is_empty() && writer.write_all(&out).await.is_err() {
            return (received, sent);
        }
    }
    (received, sent)
}
