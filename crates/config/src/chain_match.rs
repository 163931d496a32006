//! How a listener picks a filter chain: each chain's `filter_chain_match`, the check Envoy
//! makes that no two chains match the same connection, and the `listener_filters` that read
//! what matching needs (the TLS inspector).

use std::net::IpAddr;

use crate::model::{CidrRange, FilterChainMatch, ListenerFilters, SourceType};
use crate::reader::{Ctx, Field, Msg, Origin, type_error};

const FILTER_CHAIN_MATCH: &[&str] = &[
    "destination_port",
    "prefix_ranges",
    "address_suffix",
    "suffix_len",
    "direct_source_prefix_ranges",
    "source_type",
    "source_prefix_ranges",
    "source_ports",
    "server_names",
    "transport_protocol",
    "application_protocols",
];
const CIDR_RANGE: &[&str] = &["address_prefix", "prefix_len"];
const SOURCE_TYPE: &[(&str, i64, Option<SourceType>)] = &[
    ("ANY", 0, Some(SourceType::Any)),
    ("SAME_IP_OR_LOOPBACK", 1, Some(SourceType::SameIpOrLoopback)),
    ("EXTERNAL", 2, Some(SourceType::External)),
];
const LISTENER_FILTER: &[&str] = &["name", "typed_config", "config_discovery", "filter_disabled"];
const TLS_INSPECTOR: &[&str] = &[
    "enable_ja3_fingerprinting",
    "enable_ja4_fingerprinting",
    "initial_read_buffer_size",
    "max_client_hello_size",
    "close_connection_on_client_hello_parsing_errors",
];

const TLS_INSPECTOR_TYPE: &str = "envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector";

/// Reads a chain's `filter_chain_match`.
pub(crate) fn read_filter_chain_match(ctx: &mut Ctx, field: &Field<'_>) -> FilterChainMatch {
    let Some(mut msg) = field.message(ctx, FILTER_CHAIN_MATCH) else { return FilterChainMatch::default() };
    let destination_port = msg.get(ctx, "destination_port").and_then(|f| port_of_a_match(ctx, &f));
    let mut ranges = |msg: &mut Msg<'_>, name: &str| -> Vec<CidrRange> {
        let list = msg.get(ctx, name).map(|f| f.list()).unwrap_or_default();
        list.iter().filter_map(|f| read_cidr_range(ctx, f)).collect()
    };
    let prefix_ranges = ranges(&mut msg, "prefix_ranges");
    let direct_source_prefix_ranges = ranges(&mut msg, "direct_source_prefix_ranges");
    let source_prefix_ranges = ranges(&mut msg, "source_prefix_ranges");
    let source_type = msg.get(ctx, "source_type").and_then(|f| f.enumeration(ctx, SOURCE_TYPE)).unwrap_or_default();
    let source_ports = msg.get(ctx, "source_ports").map(|f| f.list()).unwrap_or_default();
    let source_ports = source_ports.iter().filter_map(|f| port_of_a_match(ctx, f)).collect();
    let server_names = msg.get(ctx, "server_names").map(|f| f.list()).unwrap_or_default();
    let server_names = server_names.iter().filter_map(|f| read_server_name(ctx, f)).collect();
    let transport_protocol = msg.get(ctx, "transport_protocol").and_then(|f| f.string(ctx)).unwrap_or_default();
    let application_protocols = msg.get(ctx, "application_protocols").map(|f| f.list()).unwrap_or_default();
    let application_protocols = application_protocols.iter().filter_map(|f| f.string(ctx)).collect();
    msg.finish(ctx);
    FilterChainMatch {
        destination_port,
        prefix_ranges,
        server_names,
        transport_protocol,
        application_protocols,
        direct_source_prefix_ranges,
        source_type,
        source_prefix_ranges,
        source_ports,
    }
}

/// A port to match: 1 to 65535.
fn port_of_a_match(ctx: &mut Ctx, field: &Field<'_>) -> Option<u16> {
    match field.port(ctx)? {
        0 => {
            field.error(ctx, "must be 1 to 65535");
            None
        }
        port => Some(port),
    }
}

pub(crate) fn read_cidr_range(ctx: &mut Ctx, field: &Field<'_>) -> Option<CidrRange> {
    let mut msg = field.message(ctx, CIDR_RANGE)?;
    let address = msg.required(ctx, "address_prefix").and_then(|f| {
        let text = f.string(ctx)?;
        let parsed = text.parse::<IpAddr>().ok();
        if parsed.is_none() {
            f.error(ctx, format!("{text:?} is not an IP address"));
        }
        parsed
    });
    let prefix_len = msg.get(ctx, "prefix_len").map_or(Some(0), |f| f.unsigned(ctx, 128));
    let origin = msg.origin().clone();
    msg.finish(ctx);
    let (address, prefix_len) = (address?, prefix_len? as u8);
    let range = CidrRange::new(address, prefix_len);
    if range.is_none() {
        ctx.error(&origin.with_child("prefix_len"), format!("{prefix_len} is longer than the address {address}"));
    }
    range
}

/// A server name: exact, or a wildcard of whole labels (`*.example.com`); lowercased, as
/// SNI is compared.
fn read_server_name(ctx: &mut Ctx, field: &Field<'_>) -> Option<String> {
    let name = field.string(ctx)?.to_ascii_lowercase();
    let wildcard_ok = name.strip_prefix("*.").is_some_and(|rest| !rest.is_empty() && !rest.contains('*'));
    if name.contains('*') && !wildcard_ok {
        field.error(ctx, format!("{name:?}: partial wildcards are not supported (only \"*.\" before whole labels)"));
        return None;
    }
    Some(name)
}

/// Refuses a listener where two chains match the same connection, as Envoy does: for each
/// criterion their values overlap (an empty criterion is "any", which overlaps only with
/// itself, as the more specific value wins).
pub(crate) fn check_distinct(ctx: &mut Ctx, chains: &[(&FilterChainMatch, Origin)]) {
    for (i, (later, origin)) in chains.iter().enumerate() {
        if let Some((_, first)) = chains[..i].iter().find(|(earlier, _)| overlap(earlier, later)) {
            ctx.error(
                origin,
                format!(
                    "its filter_chain_match has the same matching rules as {} (Envoy refuses a listener whose chains \
                     match the same connections)",
                    first.path
                ),
            );
        }
    }
}

fn overlap(a: &FilterChainMatch, b: &FilterChainMatch) -> bool {
    fn any_common<T: PartialEq>(a: &[T], b: &[T]) -> bool {
        (a.is_empty() && b.is_empty()) || a.iter().any(|x| b.contains(x))
    }
    a.destination_port == b.destination_port
        && any_common(&a.prefix_ranges, &b.prefix_ranges)
        && any_common(&a.server_names, &b.server_names)
        && a.transport_protocol == b.transport_protocol
        && any_common(&a.application_protocols, &b.application_protocols)
        && any_common(&a.direct_source_prefix_ranges, &b.direct_source_prefix_ranges)
        && a.source_type == b.source_type
        && any_common(&a.source_prefix_ranges, &b.source_prefix_ranges)
        && any_common(&a.source_ports, &b.source_ports)
}

/// Reads `listener_filters` (the TLS inspector is the one wasmproxy has) with
/// `listener_filters_timeout` and `continue_on_listener_filters_timeout`.
pub(crate) fn read_listener_filters(ctx: &mut Ctx, listener: &mut Msg<'_>) -> ListenerFilters {
    let mut filters = ListenerFilters::default();
    for item in listener.get(ctx, "listener_filters").map(|f| f.list()).unwrap_or_default() {
        let Some(mut msg) = item.message(ctx, LISTENER_FILTER) else { continue };
        let name = msg.get(ctx, "name").and_then(|f| f.string(ctx)).unwrap_or_default();
        match msg.get(ctx, "typed_config") {
            Some(typed) => match typed.any(ctx) {
                Some(any) if any.type_name == TLS_INSPECTOR_TYPE => {
                    if let Some(inspector) = any.message(ctx, TLS_INSPECTOR) {
                        inspector.finish(ctx);
                    }
                    filters.tls_inspector = true;
                }
                Some(any) => type_error(ctx, &typed, &any, "listener filter"),
                None => {}
            },
            None if msg.has("config_discovery") => {}
            None => ctx.error(msg.origin(), format!("listener filter {name:?} without typed_config")),
        }
        msg.finish(ctx);
    }
    if let Some(f) = listener.get(ctx, "listener_filters_timeout")
        && let Some(timeout) = f.duration(ctx)
    {
        filters.timeout = timeout;
    }
    if let Some(f) = listener.get(ctx, "continue_on_listener_filters_timeout") {
        filters.continue_on_timeout = f.bool(ctx).unwrap_or(false);
    }
    filters
}
