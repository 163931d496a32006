//! Request mirroring (`request_mirror_policies`): a copy of the request as it goes
//! upstream, its host suffixed `-shadow`, sent to each mirror cluster once the request's
//! body is in, its answer read and dropped. A mirror never holds up or fails the request.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;
use wasmproxy_config::model::MirrorPolicy;
use wasmproxy_host::Headers;

use crate::http::body::{BodySender, ChannelBody};
use crate::upstream::cluster::{Cluster, Clusters};

/// A copy of the request to one mirror cluster.
pub(super) struct Shadow {
    cluster: Rc<Cluster>,
    suffix: bool,
}

/// The mirrors of this request: each policy's cluster (named, or by its header), drawn by
/// its fraction; a cluster that does not exist is skipped.
pub(super) fn shadows(policies: &[MirrorPolicy], headers: &Headers, clusters: &Clusters) -> Vec<Shadow> {
    policies
        .iter()
        .filter(|p| crate::random::per_million(p.per_million))
        .filter_map(|p| {
            let name = match &p.cluster_header {
                Some(h) => std::str::from_utf8(headers.get(h.as_bytes())?).ok()?.to_string(),
                None => p.cluster.clone(),
            };
            Some(Shadow { cluster: clusters.get(&name)?, suffix: p.host_suffix })
        })
        .collect()
}

/// Sends each shadow `headers` with `body` (whole, `content-length` kept as the request
/// had it), in the background, within `timeout`.
pub(super) fn send(shadows: Vec<Shadow>, headers: &Headers, body: Bytes, timeout: Option<Duration>) {
    let with_length = headers.get(b"content-length").is_some() || body.is_empty();
    for shadow in shadows {
        let mut copy = headers.clone();
        // Envoy sends the copy through its async client, as an internal request from here.
        copy.replace(b"x-envoy-internal", b"true");
        let local = crate::stream_info::node::local_address().to_string();
        crate::hcm::forwarding::append(&mut copy, b"x-forwarded-for", &local, ",");
        if shadow.suffix
            && let Some(host) = headers.get(b":authority")
        {
            copy.replace(b":authority", &shadow_host(host));
        }
        let body = body.clone();
        tokio::task::spawn_local(async move {
            if let Err(e) = shadow.cluster.send(&copy, body, timeout, with_length).await {
                tracing::debug!("mirrored request failed: {e:?}");
            }
        });
    }
}

/// Passes the request body on to the upstream and keeps a copy (up to `limit` bytes):
/// once it is whole, the shadows go with it; past the limit they are dropped.
pub(super) fn tee(mut from: ChannelBody, to: BodySender, limit: usize, then: impl FnOnce(Bytes) + 'static) {
    tokio::task::spawn_local(async move {
        let kept = RefCell::new(Some(BytesMut::new()));
        while let Some(frame) = from.frame().await {
            let Ok(frame) = frame else {
                let _ = to.send(Err(crate::http::body::Aborted)).await;
                return;
            };
            if let Some(data) = frame.data_ref() {
                let mut kept = kept.borrow_mut();
                if kept.as_ref().is_some_and(|k| k.len() + data.len() > limit) {
                    *kept = None;
                }
                if let Some(k) = kept.as_mut() {
                    k.extend_from_slice(data);
                }
            }
            let _ = to.send(Ok(frame)).await;
        }
        if let Some(body) = kept.into_inner() {
            then(body.freeze());
        }
    });
}

/// Envoy's shadow host: `-shadow` after the host, before its port.
fn shadow_host(host: &[u8]) -> Vec<u8> {
    match crate::hcm::path::split_port(host) {
        (name, Some(port)) => [name, b"-shadow:", port].concat(),
        (name, None) => [name, b"-shadow"].concat(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shadow_suffix_goes_before_the_port() {
        assert_eq!(shadow_host(b"example.com"), b"example.com-shadow");
        assert_eq!(shadow_host(b"example.com:8080"), b"example.com-shadow:8080");
        assert_eq!(shadow_host(b"[::1]:80"), b"[::1]-shadow:80");
    }
}
