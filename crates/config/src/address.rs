//! `envoy.config.core.v3.Address`: a `socket_address` (TCP); pipes and internal addresses are refused.

use std::net::IpAddr;

use crate::model::SocketAddress;
use crate::reader::{Ctx, Field};

const ADDRESS: &[&str] = &["socket_address", "pipe", "envoy_internal_address"];
const SOCKET_ADDRESS: &[&str] = &["protocol", "address", "port_value", "named_port", "resolver_name", "ipv4_compat"];
const PROTOCOL: &[(&str, i64, Option<()>)] = &[("TCP", 0, Some(())), ("UDP", 1, None)];

/// Whether the address must be an IP address (listeners, admin, STATIC endpoints) or may be a
/// host name (DNS endpoints).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Host {
    Ip,
    Name,
}

/// Reads an `Address`; `None` if it has no usable `socket_address` (the errors are recorded).
pub(crate) fn read_address(ctx: &mut Ctx, field: &Field<'_>, host: Host) -> Option<SocketAddress> {
    let mut msg = field.message(ctx, ADDRESS)?;
    msg.at_most_one(ctx, ADDRESS);
    let address = if msg.has("pipe") || msg.has("envoy_internal_address") {
        None // reported by finish as not supported
    } else {
        msg.required(ctx, "socket_address").and_then(|f| read_socket_address(ctx, &f, host))
    };
    msg.finish(ctx);
    address
}

fn read_socket_address(ctx: &mut Ctx, field: &Field<'_>, host: Host) -> Option<SocketAddress> {
    let mut msg = field.message(ctx, SOCKET_ADDRESS)?;
    let _ = msg.get(ctx, "protocol").map(|f| f.enumeration(ctx, PROTOCOL));
    let address = msg.required(ctx, "address").and_then(|f| {
        let address = f.string(ctx)?;
        if address.is_empty() {
            f.error(ctx, "must not be empty");
            return None;
        }
        if host == Host::Ip && address.parse::<IpAddr>().is_err() {
            f.error(ctx, format!("{address:?} is not an IP address"));
            return None;
        }
        Some(address)
    });
    let port = msg.get(ctx, "port_value").map_or(Some(0), |f| f.port(ctx));
    msg.finish(ctx);
    Some(SocketAddress { address: address?, port: port? })
}
