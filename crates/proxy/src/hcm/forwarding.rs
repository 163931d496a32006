//! What Envoy's connection manager does to every request before the filters (the client
//! address it trusts, `x-forwarded-for`, internal and edge requests, Envoy's own headers
//! taken from untrusted requests, `x-forwarded-proto`, the user agent, `via`,
//! `x-request-id`) and to every response after them (`server`, `via`, `x-request-id`).

use std::net::{IpAddr, SocketAddr};
use std::sync::OnceLock;

use wasmproxy_config::model::{Forwarding, ServerHeader};
use wasmproxy_host::Headers;

use crate::random::request_id;

/// The connection's own headers, not passed on (the first two are, for an upgrade).
const HOP_BY_HOP: &[&str] = &["connection", "upgrade", "keep-alive", "proxy-connection"];

/// Envoy's headers an untrusted request may not bring (Envoy's `cleanInternalHeaders`).
const UNTRUSTED: &[&str] = &[
    "x-envoy-internal",
    "x-envoy-retriable-status-codes",
    "x-envoy-retriable-header-names",
    "x-envoy-retry-on",
    "x-envoy-retry-grpc-on",
    "x-envoy-max-retries",
    "x-envoy-upstream-alt-stat-name",
    "x-envoy-upstream-rq-timeout-ms",
    "x-envoy-upstream-rq-per-try-timeout-ms",
    "x-envoy-upstream-rq-timeout-alt-response",
    "x-envoy-expected-rq-timeout-ms",
    "x-envoy-force-trace",
    "x-envoy-ip-tags",
    "x-envoy-original-url",
    "x-envoy-hedge-on-per-try-timeout",
];
/// And the ones an edge request may not bring either.
const EDGE_UNTRUSTED: &[&str] =
    &["x-envoy-decorator-operation", "x-envoy-downstream-service-cluster", "x-envoy-downstream-service-node"];

/// The node's names, for `add_user_agent`.
#[derive(Debug, Clone, Default)]
pub struct LocalNode {
    /// `node.cluster` (or `--service-cluster`).
    pub cluster: String,
    /// `node.id` (or `--service-node`).
    pub id: String,
    /// `node.locality.zone`.
    pub zone: String,
}

/// The connection a request came on, as far as its headers are concerned.
pub struct Peer<'a> {
    /// The peer's address.
    pub address: SocketAddr,
    /// `https` or `http`.
    pub scheme: &'a str,
}

/// Prepares a request's headers as Envoy's connection manager does, and returns the
/// client's address as it trusts it (`source.address`). `upgrade`: the request asks to
/// upgrade, so its `connection` and `upgrade` go on to the upstream.
pub fn prepare_request(
    config: &Forwarding,
    internal_only: &[String],
    node: &LocalNode,
    headers: &mut Headers,
    peer: &Peer<'_>,
    upgrade: bool,
) -> SocketAddr {
    let hop_by_hop = &HOP_BY_HOP[if upgrade { 2 } else { 0 }..];
    headers.remove_if(|name| hop_by_hop.iter().any(|h| h.as_bytes() == name));
    join_forwarded_for(headers);
    let hops = config.xff_num_trusted_hops;
    let (remote, allow_trusted) = if config.use_remote_address {
        let allow_trusted = headers.get(b"x-forwarded-for").is_none();
        let trusted = hops.checked_sub(1).and_then(|skip| last_forwarded_for(headers, skip).0);
        if !config.skip_xff_append {
            // A client on this machine is named by the machine's address, as in Envoy.
            let ip = if peer.address.ip().is_loopback() { local_address() } else { peer.address.ip() };
            append(headers, b"x-forwarded-for", &ip.to_string(), ",");
        }
        if hops == 0 || headers.get(b"x-forwarded-proto").is_none() {
            headers.replace(b"x-forwarded-proto", peer.scheme.as_bytes());
        }
        (Some(trusted.unwrap_or(peer.address)), allow_trusted)
    } else {
        last_forwarded_for(headers, hops)
    };
    if headers.get(b"x-forwarded-proto").is_none() {
        headers.add(b"x-forwarded-proto", peer.scheme.as_bytes());
    }
    let internal = allow_trusted && remote.is_some_and(|r| config.internal_ranges.iter().any(|c| c.contains(r.ip())));
    let remote = remote.unwrap_or(peer.address);
    let edge = !internal && config.use_remote_address;
    if internal {
        headers.replace(b"x-envoy-internal", b"true");
    } else {
        let edge_only = if edge { EDGE_UNTRUSTED } else { &[] };
        headers.remove_if(|name| {
            let envoys =
                name.starts_with(b"x-envoy-") && UNTRUSTED.iter().chain(edge_only).any(|h| h.as_bytes() == name);
            envoys || internal_only.iter().any(|h| h.as_bytes() == name)
        });
    }
    if config.add_user_agent {
        headers.replace(b"x-envoy-downstream-service-cluster", node.cluster.as_bytes());
        if headers.get(b"user-agent").is_none_or(<[u8]>::is_empty) {
            headers.replace(b"user-agent", node.cluster.as_bytes());
        }
        if !node.id.is_empty() {
            headers.replace(b"x-envoy-downstream-service-node", node.id.as_bytes());
        }
    }
    if !config.via.is_empty() {
        append(headers, b"via", &config.via, ", ");
    }
    if edge {
        headers.replace(b"x-envoy-external-address", remote.ip().to_string().as_bytes());
    }
    if config.generate_request_id {
        let present = headers.get(b"x-request-id").is_some();
        if !present || (edge && !config.preserve_external_request_id) {
            headers.replace(b"x-request-id", &request_id());
        }
    }
    remote
}

/// A response's headers after the filters: `server` as configured, then `x-request-id`
/// (with `always_set_request_id_in_response`, or for a request with `x-envoy-force-trace`)
/// and `via`.
pub fn finish_response(config: &Forwarding, server_name: &str, request: &Headers, response: &mut Headers) {
    match config.server_header {
        ServerHeader::Overwrite => response.replace(b"server", server_name.as_bytes()),
        ServerHeader::AppendIfAbsent if response.get(b"server").is_none() => {
            response.add(b"server", server_name.as_bytes());
        }
        ServerHeader::AppendIfAbsent | ServerHeader::PassThrough => {}
    }
    if (config.always_set_request_id_in_response || request.get(b"x-envoy-force-trace").is_some())
        && let Some(id) = request.get(b"x-request-id")
    {
        let id = id.to_vec();
        response.replace(b"x-request-id", &id);
    }
    if !config.via.is_empty() {
        append(response, b"via", &config.via, ", ");
    }
}

/// Several `x-forwarded-for` lines are one list, as Envoy's header map keeps them.
fn join_forwarded_for(headers: &mut Headers) {
    let values: Vec<&[u8]> = headers.iter().filter(|(k, _)| *k == b"x-forwarded-for").map(|(_, v)| v).collect();
    if values.len() > 1 {
        let joined = values.join(&b","[..]);
        headers.replace(b"x-forwarded-for", &joined);
    }
}

/// The address `skip` entries from the end of `x-forwarded-for`, and whether it is the
/// only one there (then, as in Envoy, it may make the request internal).
fn last_forwarded_for(headers: &Headers, skip: u32) -> (Option<SocketAddr>, bool) {
    let Some(value) = headers.get(b"x-forwarded-for") else { return (None, false) };
    let Ok(mut list) = std::str::from_utf8(value) else { return (None, false) };
    for _ in 0..skip {
        match list.rfind(',') {
            Some(comma) => list = &list[..comma],
            None => return (None, false),
        }
    }
    let (entry, single) = match list.rfind(',') {
        Some(comma) => (&list[comma + 1..], false),
        None => (list, skip == 0),
    };
    match entry.trim().parse::<IpAddr>() {
        Ok(ip) => (Some(SocketAddr::new(ip, 0)), single),
        Err(_) => (None, false),
    }
}

/// `value` after the header's value (joined by `separator`), or as a new header.
pub(super) fn append(headers: &mut Headers, name: &[u8], value: &str, separator: &str) {
    match headers.get(name) {
        Some(old) if !old.is_empty() => {
            let mut joined = old.to_vec();
            joined.extend_from_slice(separator.as_bytes());
            joined.extend_from_slice(value.as_bytes());
            headers.replace(name, &joined);
        }
        _ => headers.replace(name, value.as_bytes()),
    }
}

/// The machine's address Envoy puts in `x-forwarded-for` for a client on this machine,
/// found once.
fn local_address() -> IpAddr {
    static ADDRESS: OnceLock<IpAddr> = OnceLock::new();
    *ADDRESS.get_or_init(crate::stream_info::node::local_address)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_forwarded_for_address_is_read_as_envoy_reads_it() {
        let h = |v: &str| Headers::from_pairs([("x-forwarded-for", v)]);
        let ip = |s: &str| Some(SocketAddr::new(s.parse().unwrap(), 0));
        assert_eq!(last_forwarded_for(&h("10.0.0.1"), 0), (ip("10.0.0.1"), true));
        assert_eq!(last_forwarded_for(&h("1.2.3.4, 10.0.0.1"), 0), (ip("10.0.0.1"), false));
        assert_eq!(last_forwarded_for(&h("1.2.3.4, 10.0.0.1"), 1), (ip("1.2.3.4"), false));
        assert_eq!(last_forwarded_for(&h("10.0.0.1"), 1), (None, false));
        assert_eq!(last_forwarded_for(&h("nonsense"), 0), (None, false));
        assert_eq!(last_forwarded_for(&h(" ::1 "), 0), (ip("::1"), true));
        assert_eq!(last_forwarded_for(&Headers::new(), 0), (None, false));
    }
}
