//! Picking a connection's filter chain as Envoy picks it: criterion by criterion
//! (destination port, destination IP, server name, transport protocol, application
//! protocols, direct source IP, source type, source IP, source port), keeping at each step
//! only the chains with the most specific value that matches. Nothing is retried at an
//! earlier step: a chain left behind there is not picked even if later steps rule out the
//! rest (the connection then gets the default chain, if any).

use std::net::{IpAddr, SocketAddr};

use wasmproxy_config::model::{CidrRange, FilterChainMatch, SourceType};

/// What is known of a connection when its chain is picked.
pub struct Connection<'a> {
    /// The address the client connected to.
    pub local: SocketAddr,
    /// The client's address.
    pub peer: SocketAddr,
    /// SNI, from the TLS inspector.
    pub server_name: Option<&'a str>,
    /// `tls` or `raw_buffer`.
    pub transport_protocol: &'a str,
    /// ALPN offered by the client, in its order.
    pub application_protocols: &'a [String],
}

/// The index of the chain `connection` gets, if one matches.
pub fn pick<M: std::borrow::Borrow<FilterChainMatch>>(chains: &[M], connection: &Connection<'_>) -> Option<usize> {
    // The usual listener: one chain for every connection.
    if let [only] = chains
        && *only.borrow() == FilterChainMatch::default()
    {
        return Some(0);
    }
    let local_ip = connection.local.ip().to_canonical();
    let peer_ip = connection.peer.ip().to_canonical();
    let is_local = peer_ip.is_loopback() || peer_ip == local_ip;
    let mut candidates: Vec<usize> = (0..chains.len()).collect();
    let mut narrow = |rank: &dyn Fn(&FilterChainMatch) -> Option<u32>| {
        let best = candidates.iter().filter_map(|&i| rank(chains[i].borrow())).max();
        candidates.retain(|&i| best.is_some() && rank(chains[i].borrow()) == best);
    };
    narrow(&|m| exact_or_any(m.destination_port.map(|p| p == connection.local.port())));
    narrow(&|m| longest_prefix(&m.prefix_ranges, local_ip));
    narrow(&|m| server_name_rank(&m.server_names, connection.server_name));
    narrow(&|m| {
        exact_or_any((!m.transport_protocol.is_empty()).then(|| m.transport_protocol == connection.transport_protocol))
    });
    narrow(&|m| alpn_rank(&m.application_protocols, connection.application_protocols));
    // Without a listener filter that rewrites the source, the direct source is the source.
    narrow(&|m| longest_prefix(&m.direct_source_prefix_ranges, peer_ip));
    narrow(&|m| match m.source_type {
        SourceType::Any => Some(0),
        SourceType::SameIpOrLoopback => is_local.then_some(1),
        SourceType::External => (!is_local).then_some(1),
    });
    narrow(&|m| longest_prefix(&m.source_prefix_ranges, peer_ip));
    narrow(&|m| exact_or_any((!m.source_ports.is_empty()).then(|| m.source_ports.contains(&connection.peer.port()))));
    candidates.first().copied()
}

/// A criterion with one value: unset matches anything (rank 0), set must match (rank 1).
fn exact_or_any(matched: Option<bool>) -> Option<u32> {
    match matched {
        None => Some(0),
        Some(true) => Some(1),
        Some(false) => None,
    }
}

/// The longest of `ranges` holding `ip` (no ranges: any address, as a /0).
fn longest_prefix(ranges: &[CidrRange], ip: IpAddr) -> Option<u32> {
    if ranges.is_empty() {
        return Some(0);
    }
    ranges.iter().filter(|r| r.contains(ip)).map(|r| u32::from(r.prefix_len)).max()
}

/// An exact server name first, then the wildcard with the longest suffix, then a chain
/// without server names.
fn server_name_rank(names: &[String], sni: Option<&str>) -> Option<u32> {
    if names.is_empty() {
        return Some(0);
    }
    let sni = sni?;
    names
        .iter()
        .filter_map(|name| match name.strip_prefix('*') {
            // `*.example.com` covers `www.example.com` (one label or more before it).
            Some(suffix) => (sni.len() > suffix.len() && sni.ends_with(suffix)).then(|| suffix.len() as u32 + 1),
            None => (name == sni).then_some(u32::MAX),
        })
        .max()
}

/// The first protocol the client offers that some chain names; a chain naming none matches
/// only when no chain names any.
fn alpn_rank(names: &[String], offered: &[String]) -> Option<u32> {
    if names.is_empty() {
        return Some(0);
    }
    let first = offered.iter().position(|p| names.contains(p))?;
    Some((offered.len() - first) as u32)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn connection<'a>(sni: Option<&'a str>, transport: &'a str, alpn: &'a [String]) -> Connection<'a> {
        Connection {
            local: "10.0.0.1:443".parse().unwrap(),
            peer: "192.168.1.7:50000".parse().unwrap(),
            server_name: sni,
            transport_protocol: transport,
            application_protocols: alpn,
        }
    }

    fn names(list: &[&str]) -> FilterChainMatch {
        FilterChainMatch { server_names: list.iter().map(|s| s.to_string()).collect(), ..Default::default() }
    }

    #[test]
    fn server_names_exact_then_longest_wildcard_then_none() {
        let chains = [names(&["*.com"]), names(&["*.example.com"]), names(&["www.example.com"]), names(&[])];
        let refs: Vec<&FilterChainMatch> = chains.iter().collect();
        let pick_for = |sni| pick(&refs, &connection(sni, "tls", &[]));
        assert_eq!(pick_for(Some("www.example.com")), Some(2));
        assert_eq!(pick_for(Some("api.example.com")), Some(1));
        assert_eq!(pick_for(Some("a.b.example.com")), Some(1));
        assert_eq!(pick_for(Some("example.com")), Some(0), "*.example.com needs a label before it");
        assert_eq!(pick_for(Some("example.org")), Some(3));
        assert_eq!(pick_for(None), Some(3));
        assert_eq!(pick(&refs[..3], &connection(Some("example.org"), "tls", &[])), None);
    }

    #[test]
    fn no_backtracking_past_a_more_specific_criterion() {
        // The port matches chain 0 exactly, so chain 1 (any port) is never considered, even
        // though chain 0 wants a server name this connection lacks.
        let chains = [
            FilterChainMatch {
                destination_port: Some(443),
                server_names: vec!["a.example".into()],
                ..Default::default()
            },
            FilterChainMatch::default(),
        ];
        let refs: Vec<&FilterChainMatch> = chains.iter().collect();
        assert_eq!(pick(&refs, &connection(Some("a.example"), "tls", &[])), Some(0));
        assert_eq!(pick(&refs, &connection(Some("b.example"), "tls", &[])), None);
    }

    #[test]
    fn transport_alpn_and_addresses() {
        let tls_h2 = FilterChainMatch {
            transport_protocol: "tls".into(),
            application_protocols: vec!["h2".into()],
            ..Default::default()
        };
        let tls_h1 = FilterChainMatch {
            transport_protocol: "tls".into(),
            application_protocols: vec!["http/1.1".into()],
            ..Default::default()
        };
        let plain = FilterChainMatch::default();
        let refs = [&tls_h2, &tls_h1, &plain];
        let alpn = |list: &[&str]| list.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(pick(&refs, &connection(None, "tls", &alpn(&["h2", "http/1.1"]))), Some(0));
        assert_eq!(pick(&refs, &connection(None, "tls", &alpn(&["http/1.1", "h2"]))), Some(1));
        assert_eq!(pick(&refs, &connection(None, "tls", &alpn(&["h3"]))), None, "tls chains only, none offers h3");
        assert_eq!(pick(&refs, &connection(None, "raw_buffer", &[])), Some(2));

        let range = |a: &str, len| CidrRange::new(a.parse().unwrap(), len).unwrap();
        let wide = FilterChainMatch { source_prefix_ranges: vec![range("192.168.0.0", 16)], ..Default::default() };
        let narrow = FilterChainMatch { source_prefix_ranges: vec![range("192.168.1.0", 24)], ..Default::default() };
        let external = FilterChainMatch { source_type: SourceType::External, ..Default::default() };
        assert_eq!(pick(&[&wide, &narrow], &connection(None, "raw_buffer", &[])), Some(1));
        assert_eq!(pick(&[&plain, &external], &connection(None, "raw_buffer", &[])), Some(1));
        let local = FilterChainMatch { source_type: SourceType::SameIpOrLoopback, ..Default::default() };
        assert_eq!(pick(&[&local], &connection(None, "raw_buffer", &[])), None);
        let to = FilterChainMatch { prefix_ranges: vec![range("10.0.0.0", 8)], ..Default::default() };
        let elsewhere = FilterChainMatch { prefix_ranges: vec![range("10.1.0.0", 16)], ..Default::default() };
        assert_eq!(pick(&[&elsewhere, &to], &connection(None, "raw_buffer", &[])), Some(1));
    }
}
