//! Checks across fields: filter order, unique names, cluster references and listener addresses.

use std::net::IpAddr;

use crate::model::SocketAddress;
use crate::reader::{Ctx, Origin};

/// Whether a network filter ends the chain (HTTP connection manager, TCP proxy) or not (Wasm).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Terminal {
    Yes,
    No,
    /// The filter could not be read: no order error is reported for it.
    Unknown,
}

/// The router must be the last HTTP filter, and only the last.
pub(crate) fn check_http_filter_order(ctx: &mut Ctx, list: &Origin, filters: &[(bool, Origin)]) {
    let Some(((last_is_router, last), rest)) = filters.split_last() else {
        ctx.error(list, "at least one HTTP filter, the router (envoy.filters.http.router), is required");
        return;
    };
    for (is_router, origin) in rest {
        if *is_router {
            ctx.error(origin, "the router (envoy.filters.http.router) must be the last HTTP filter");
        }
    }
    if !last_is_router {
        ctx.error(last, "the last HTTP filter must be the router (envoy.filters.http.router)");
    }
}

/// A terminal network filter must be last, and the last must be terminal.
pub(crate) fn check_network_filter_order(ctx: &mut Ctx, list: &Origin, filters: &[(Terminal, Origin)]) {
    let Some(((last_terminal, last), rest)) = filters.split_last() else {
        ctx.error(list, "at least one network filter is required");
        return;
    };
    for (terminal, origin) in rest {
        if *terminal == Terminal::Yes {
            ctx.error(origin, "a terminal filter (http_connection_manager, tcp_proxy) must be the last filter");
        }
    }
    if *last_terminal == Terminal::No {
        ctx.error(last, "the last filter must be a terminal filter (http_connection_manager or tcp_proxy)");
    }
}

/// The checks that need the whole configuration read.
pub(crate) fn check_references(ctx: &mut Ctx) {
    let refs = std::mem::take(&mut ctx.refs);
    duplicates(ctx, "cluster", &refs.clusters);
    duplicates(ctx, "listener", &refs.listeners);
    duplicates(ctx, "secret", &refs.secrets);
    for (name, origin) in &refs.secret_refs {
        if !refs.secrets.iter().any(|(n, _)| n == name) {
            ctx.error(origin, format!("unknown secret {name:?} (not in static_resources.secrets, and no sds_config)"));
        }
    }
    for (name, origin) in &refs.static_cluster_refs {
        if !refs.clusters.iter().any(|(n, _)| n == name) {
            ctx.error(origin, format!("unknown cluster {name:?} (it must be in static_resources.clusters)"));
        }
    }
    if !refs.ads_configured {
        for origin in &refs.ads_users {
            ctx.error(origin, "ads needs dynamic_resources.ads_config");
        }
    }
    for (name, origin) in &refs.cluster_refs {
        if !refs.clusters_from_files && !refs.clusters.iter().any(|(n, _)| n == name) {
            ctx.error(origin, format!("unknown cluster {name:?}"));
        }
    }
    for (name, origin) in &refs.tcp_cluster_refs {
        if !refs.clusters_from_files && !refs.clusters.iter().any(|(n, _)| n == name) {
            ctx.warn(origin, format!("unknown cluster {name:?}: until one comes, connections are closed (no route)"));
        }
    }
    for (i, (address, origin)) in refs.binds.iter().enumerate() {
        if address.port == 0 {
            continue;
        }
        if let Some((first, first_origin)) = refs.binds[..i].iter().find(|(a, _)| conflicts(a, address)) {
            ctx.error(
                origin,
                format!(
                    "{}:{} conflicts with {}:{} at {}",
                    address.address, address.port, first.address, first.port, first_origin.path
                ),
            );
        }
    }
}

fn duplicates(ctx: &mut Ctx, what: &str, names: &[(String, Origin)]) {
    for (i, (name, origin)) in names.iter().enumerate() {
        if let Some((_, first)) = names[..i].iter().find(|(n, _)| n == name) {
            ctx.error(origin, format!("duplicate {what} name {name:?} (first at {})", first.path));
        }
    }
}

/// Two binds on the same port conflict if their addresses are equal or one is a wildcard.
fn conflicts(a: &SocketAddress, b: &SocketAddress) -> bool {
    if a.port != b.port {
        return false;
    }
    let ip = |s: &SocketAddress| s.address.parse::<IpAddr>().ok();
    match (ip(a), ip(b)) {
        (Some(x), Some(y)) => x == y || x.is_unspecified() || y.is_unspecified(),
        _ => a.address == b.address,
    }
}
