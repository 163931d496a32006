//! Listeners: address, listener filters, filter chains (when each applies, its TLS, its
//! network filters: HTTP connection manager, Wasm, TCP proxy).

use crate::access_log::read_access_logs;
use crate::address::{Host, read_address};
use crate::chain_match::{check_distinct, read_filter_chain_match, read_listener_filters};
use crate::hcm::{HCM_TYPE, read_config_discovery, read_hcm};
use crate::metadata::read_metadata;
use crate::model::{DEFAULT_BUFFER_LIMIT_BYTES, FilterChain, FilterKind, Listener, NetworkFilter, TcpProxy};
use crate::reader::{Ctx, Field, Msg, type_error};
use crate::tls::read_transport_socket;
use crate::validate::{Terminal, check_network_filter_order};
use crate::wasm::read_wasm_filter;

const LISTENER: &[&str] = &[
    "name",
    "address",
    "additional_addresses",
    "stat_prefix",
    "filter_chains",
    "filter_chain_matcher",
    "use_original_dst",
    "default_filter_chain",
    "per_connection_buffer_limit_bytes",
    "metadata",
    "deprecated_v1",
    "drain_type",
    "listener_filters",
    "listener_filters_timeout",
    "continue_on_listener_filters_timeout",
    "transparent",
    "freebind",
    "socket_options",
    "tcp_fast_open_queue_length",
    "traffic_direction",
    "udp_listener_config",
    "api_listener",
    "connection_balance_config",
    "reuse_port",
    "enable_reuse_port",
    "access_log",
    "tcp_backlog_size",
    "max_connections_to_accept_per_socket_event",
    "bind_to_port",
    "internal_listener",
    "enable_mptcp",
    "ignore_global_conn_limit",
    "bypass_overload_manager",
];
const FILTER_CHAIN: &[&str] = &[
    "filter_chain_match",
    "filters",
    "use_proxy_proto",
    "metadata",
    "transport_socket",
    "transport_socket_connect_timeout",
    "name",
];
const FILTER: &[&str] = &["name", "typed_config", "config_discovery"];
const TCP_PROXY: &[&str] = &[
    "stat_prefix",
    "cluster",
    "weighted_clusters",
    "on_demand",
    "metadata_match",
    "idle_timeout",
    "downstream_idle_timeout",
    "upstream_idle_timeout",
    "access_log",
    "max_connect_attempts",
    "backoff_options",
    "hash_policy",
    "tunneling_config",
    "max_downstream_connection_duration",
    "access_log_flush_interval",
    "flush_access_log_on_connected",
    "access_log_options",
];

/// Envoy's `tcp_proxy.idle_timeout` when it is not set.
const DEFAULT_TCP_IDLE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3600);

const NETWORK_WASM_TYPE: &str = "envoy.extensions.filters.network.wasm.v3.Wasm";
const TCP_PROXY_TYPE: &str = "envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy";

/// Reads `static_resources.listeners[index]`.
pub(crate) fn read_listener(ctx: &mut Ctx, field: &Field<'_>, index: usize) -> Option<Listener> {
    let mut msg = field.message(ctx, LISTENER)?;
    let name = msg.get(ctx, "name").and_then(|f| f.string(ctx)).unwrap_or_else(|| format!("listener_{index}"));
    ctx.refs.listeners.push((name.clone(), msg.origin().with_child("name")));
    let address = msg.required(ctx, "address").and_then(|f| {
        let address = read_address(ctx, &f, Host::Ip)?;
        ctx.refs.binds.push((address.clone(), f.origin()));
        Some(address)
    });
    let listener_filters = read_listener_filters(ctx, &mut msg);
    let chains = msg.get(ctx, "filter_chains").map(|f| f.list()).unwrap_or_default();
    let filter_chains: Vec<Option<FilterChain>> = chains.iter().map(|chain| read_filter_chain(ctx, chain)).collect();
    let default_filter_chain = msg.get(ctx, "default_filter_chain").map(|f| read_filter_chain(ctx, &f));
    if chains.is_empty() && default_filter_chain.is_none() {
        ctx.error(msg.origin(), "a filter chain is required (filter_chains or default_filter_chain)");
    }
    let matches: Vec<_> =
        filter_chains.iter().zip(&chains).filter_map(|(c, f)| Some((&c.as_ref()?.matching, f.origin()))).collect();
    check_distinct(ctx, &matches);
    let traffic_direction = msg
        .get(ctx, "traffic_direction")
        .and_then(|f| {
            f.enumeration(ctx, &[("UNSPECIFIED", 0, Some(0)), ("INBOUND", 1, Some(1)), ("OUTBOUND", 2, Some(2))])
        })
        .unwrap_or(0);
    let buffer_limit_bytes = msg
        .get(ctx, "per_connection_buffer_limit_bytes")
        .and_then(|f| f.unsigned(ctx, u32::MAX.into()))
        .map_or(DEFAULT_BUFFER_LIMIT_BYTES, |v| v as u32);
    let metadata = msg.get(ctx, "metadata").map(|f| read_metadata(ctx, &f)).unwrap_or_default();
    msg.finish(ctx);
    Some(Listener {
        name,
        address: address?,
        filter_chains: filter_chains.into_iter().collect::<Option<_>>()?,
        default_filter_chain: default_filter_chain.map_or(Some(None), |c| c.map(Some))?,
        listener_filters,
        traffic_direction,
        buffer_limit_bytes,
        metadata,
    })
}

fn read_filter_chain(ctx: &mut Ctx, field: &Field<'_>) -> Option<FilterChain> {
    let mut msg = field.message(ctx, FILTER_CHAIN)?;
    let name = msg.get(ctx, "name").and_then(|f| f.string(ctx)).unwrap_or_default();
    let matching = msg.get(ctx, "filter_chain_match").map(|f| read_filter_chain_match(ctx, &f)).unwrap_or_default();
    let filters_field = msg.get(ctx, "filters");
    let mut filters = Vec::new();
    let mut order = Vec::new();
    let mut wasm_origins = Vec::new();
    for item in filters_field.as_ref().map(|f| f.list()).unwrap_or_default() {
        let (terminal, filter) = read_network_filter(ctx, &item);
        order.push((terminal, item.origin()));
        if matches!(filter, Some(NetworkFilter::Wasm(_) | NetworkFilter::Discovered(_))) {
            wasm_origins.push(item.origin());
        }
        filters.extend(filter);
    }
    if matches!(filters.last(), Some(NetworkFilter::HttpConnectionManager(_))) {
        for origin in wasm_origins {
            ctx.error(&origin, "a Wasm network filter before http_connection_manager is not supported by wasmproxy (it runs before tcp_proxy)");
        }
    }
    let list_origin = filters_field.map_or_else(|| msg.origin().with_child("filters"), |f| f.origin());
    check_network_filter_order(ctx, &list_origin, &order);
    let tls = match msg.get(ctx, "transport_socket") {
        Some(f) => Some(read_transport_socket(ctx, &f)?),
        None => None,
    };
    let handshake_timeout =
        msg.get(ctx, "transport_socket_connect_timeout").and_then(|f| f.duration(ctx)).filter(|d| !d.is_zero());
    msg.finish(ctx);
    Some(FilterChain { name, matching, filters, tls, handshake_timeout })
}

/// Reads one network filter: whether it is terminal (known even when its config has errors) and
/// the filter. The `@type` decides the kind; the name is informational, but for a filter
/// configured by ECDS, whose name is the resource asked for.
fn read_network_filter(ctx: &mut Ctx, field: &Field<'_>) -> (Terminal, Option<NetworkFilter>) {
    let Some(mut msg) = field.message(ctx, FILTER) else { return (Terminal::Unknown, None) };
    let name = msg.get(ctx, "name").and_then(|f| f.string(ctx)).unwrap_or_default();
    let result = match msg.get(ctx, "typed_config") {
        Some(typed) => match typed.any(ctx) {
            Some(any) if any.type_name == HCM_TYPE => {
                (Terminal::Yes, Some(NetworkFilter::HttpConnectionManager(Box::new(read_hcm(ctx, &any)))))
            }
            Some(any) if any.type_name == NETWORK_WASM_TYPE => {
                (Terminal::No, Some(NetworkFilter::Wasm(read_wasm_filter(ctx, &any))))
            }
            Some(any) if any.type_name == TCP_PROXY_TYPE => {
                let tcp_proxy = any.message(ctx, TCP_PROXY).map(|m| read_tcp_proxy(ctx, m));
                (Terminal::Yes, tcp_proxy.map(NetworkFilter::TcpProxy))
            }
            Some(any) if any.type_name.is_empty() => {
                typed.error(ctx, "missing \"@type\"");
                (Terminal::Unknown, None)
            }
            Some(any) => {
                type_error(ctx, &typed, &any, "network filter");
                (Terminal::Unknown, None)
            }
            None => (Terminal::Unknown, None),
        },
        None if msg.has("config_discovery") => {
            let discovery = msg.get(ctx, "config_discovery");
            let filter = discovery.and_then(|f| read_config_discovery(ctx, &f, &name, FilterKind::Network));
            (Terminal::No, filter.map(|d| NetworkFilter::Discovered(Box::new(d))))
        }
        None => {
            ctx.error(msg.origin(), "missing required field \"typed_config\"");
            (Terminal::Unknown, None)
        }
    };
    msg.finish(ctx);
    result
}

fn read_tcp_proxy(ctx: &mut Ctx, mut msg: Msg<'_>) -> TcpProxy {
    let stat_prefix = msg.required(ctx, "stat_prefix").and_then(|f| f.string(ctx)).unwrap_or_default();
    let specifiers = ["cluster", "weighted_clusters"];
    msg.at_most_one(ctx, &specifiers);
    let mut cluster = String::new();
    if let Some(f) = msg.get(ctx, "cluster") {
        if let Some(name) = f.string(ctx) {
            ctx.refs.tcp_cluster_refs.push((name.clone(), f.origin()));
            cluster = name;
        }
    } else if !msg.has("weighted_clusters") {
        ctx.error(msg.origin(), "missing required field \"cluster\"");
    }
    let access_logs = msg.get(ctx, "access_log").map(|f| read_access_logs(ctx, &f)).unwrap_or_default();
    let idle_timeout = match msg.get(ctx, "idle_timeout").map(|f| f.duration(ctx)) {
        None => Some(DEFAULT_TCP_IDLE_TIMEOUT),
        Some(d) => d.filter(|d| !d.is_zero()),
    };
    msg.finish(ctx);
    TcpProxy { stat_prefix, cluster, access_logs, idle_timeout }
}
