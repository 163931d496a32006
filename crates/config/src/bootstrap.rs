//! The top of the bootstrap: admin, static resources, bootstrap extensions and the runtime layers.

use std::time::Duration;

use crate::address::{Host, read_address};
use crate::cluster::read_cluster;
use crate::config_source::{read_api_config_source, read_config_source};
use crate::listener::read_listener;
use crate::matcher::compile_regex;
use crate::model::{Admin, Bootstrap, DynamicResources, Locality, Node, StatsConfig, StatsTag, StatsTagValue};
use crate::reader::{Ctx, Field, Origin, child, type_error};
use crate::struct_value::struct_fields;
use crate::tls::read_secret;
use crate::tree::Value;
use crate::wasm::read_wasm_service;

const BOOTSTRAP: &[&str] = &[
    "node",
    "node_context_params",
    "static_resources",
    "dynamic_resources",
    "cluster_manager",
    "hds_config",
    "flags_path",
    "stats_sinks",
    "deferred_stat_options",
    "stats_config",
    "stats_flush_interval",
    "stats_flush_on_admin",
    "watchdog",
    "watchdogs",
    "tracing",
    "layered_runtime",
    "admin",
    "overload_manager",
    "enable_dispatcher_stats",
    "header_prefix",
    "stats_server_version_override",
    "use_tcp_for_dns_lookups",
    "dns_resolution_config",
    "typed_dns_resolver_config",
    "bootstrap_extensions",
    "fatal_actions",
    "config_sources",
    "default_config_source",
    "default_socket_interface",
    "certificate_provider_instances",
    "inline_headers",
    "perf_tracing_file_path",
    "default_regex_engine",
    "xds_delegate_extension",
    "xds_config_tracker_extension",
    "listener_manager",
    "application_log_config",
    "grpc_async_client_manager_config",
    "memory_allocator_manager",
];
const STATIC_RESOURCES: &[&str] = &["listeners", "clusters", "secrets"];
const ADMIN: &[&str] =
    &["access_log", "access_log_path", "profile_path", "address", "socket_options", "ignore_global_conn_limit"];
const NODE: &[&str] = &[
    "id",
    "cluster",
    "metadata",
    "dynamic_parameters",
    "locality",
    "user_agent_name",
    "user_agent_version",
    "user_agent_build_version",
    "extensions",
    "client_features",
    "listening_addresses",
];
const LOCALITY: &[&str] = &["region", "zone", "sub_zone"];
const DYNAMIC_RESOURCES: &[&str] =
    &["lds_config", "lds_resources_locator", "cds_config", "cds_resources_locator", "ads_config"];
const TYPED_EXTENSION_CONFIG: &[&str] = &["name", "typed_config"];
const LAYERED_RUNTIME: &[&str] = &["layers"];
const RUNTIME_LAYER: &[&str] = &["name", "static_layer", "disk_layer", "admin_layer", "rtds_layer"];

const WASM_SERVICE_TYPE: &str = "envoy.extensions.wasm.v3.WasmService";

pub(crate) fn read_bootstrap(ctx: &mut Ctx, root: &Field<'_>) -> Bootstrap {
    let mut bootstrap = Bootstrap::default();
    if root.node.value == Value::Null {
        root.error(ctx, "the configuration is empty");
        return bootstrap;
    }
    let Some(mut msg) = root.message(ctx, BOOTSTRAP) else { return bootstrap };
    if let Some(f) = msg.get(ctx, "node") {
        bootstrap.node = read_node(ctx, &f);
    }
    if let Some(f) = msg.get(ctx, "admin") {
        bootstrap.admin = read_admin(ctx, &f);
    }
    if let Some(f) = msg.get(ctx, "dynamic_resources") {
        bootstrap.dynamic_resources = read_dynamic_resources(ctx, &f);
        // Routes may name clusters that CDS brings later: they are checked when it does.
        ctx.refs.clusters_from_files = bootstrap.dynamic_resources.cds.is_some();
        ctx.refs.ads_configured = bootstrap.dynamic_resources.ads.is_some();
    }
    if let Some(f) = msg.get(ctx, "static_resources")
        && let Some(mut resources) = f.message(ctx, STATIC_RESOURCES)
    {
        let listeners = resources.get(ctx, "listeners").map(|f| f.list()).unwrap_or_default();
        for (i, item) in listeners.iter().enumerate() {
            bootstrap.listeners.extend(read_listener(ctx, item, i));
        }
        let clusters = resources.get(ctx, "clusters").map(|f| f.list()).unwrap_or_default();
        for item in &clusters {
            bootstrap.clusters.extend(read_cluster(ctx, item));
        }
        let secrets = resources.get(ctx, "secrets").map(|f| f.list()).unwrap_or_default();
        for item in &secrets {
            if let Some(secret) = read_secret(ctx, item) {
                ctx.refs.secrets.push((secret.name.clone(), item.origin()));
                bootstrap.secrets.push(secret);
            }
        }
        resources.finish(ctx);
    }
    for item in msg.get(ctx, "bootstrap_extensions").map(|f| f.list()).unwrap_or_default() {
        let Some(mut extension) = item.message(ctx, TYPED_EXTENSION_CONFIG) else { continue };
        extension.ignore(ctx, "name");
        if let Some(typed) = extension.required(ctx, "typed_config")
            && let Some(any) = typed.any(ctx)
        {
            if any.type_name == WASM_SERVICE_TYPE {
                bootstrap.wasm_services.push(read_wasm_service(ctx, &any));
            } else {
                type_error(ctx, &typed, &any, "bootstrap extension");
            }
        }
        extension.finish(ctx);
    }
    if let Some(f) = msg.get(ctx, "stats_flush_interval")
        && let Some(d) = f.duration(ctx)
    {
        // Envoy's bounds: at least 1 ms, at most 300 s.
        if d < Duration::from_millis(1) || d > Duration::from_secs(300) {
            f.error(ctx, "must be between 1ms and 300s");
        } else {
            bootstrap.stats_flush_interval = d;
        }
    }
    if let Some(f) = msg.get(ctx, "layered_runtime") {
        bootstrap.runtime = read_layered_runtime(ctx, &f);
    }
    if let Some(f) = msg.get(ctx, "stats_config") {
        bootstrap.stats_config = read_stats_config(ctx, &f);
    }
    msg.finish(ctx);
    bootstrap
}

/// `dynamic_resources`: LDS and CDS from files (`path_config_source`), the ADS stream
/// (`ads_config`) or gRPC streams of their own (`api_config_source`).
fn read_dynamic_resources(ctx: &mut Ctx, field: &Field<'_>) -> DynamicResources {
    let mut dynamic = DynamicResources::default();
    let Some(mut msg) = field.message(ctx, DYNAMIC_RESOURCES) else { return dynamic };
    dynamic.lds = msg.get(ctx, "lds_config").and_then(|f| read_config_source(ctx, &f));
    dynamic.cds = msg.get(ctx, "cds_config").and_then(|f| read_config_source(ctx, &f));
    dynamic.ads = msg.get(ctx, "ads_config").and_then(|f| read_api_config_source(ctx, &f));
    msg.finish(ctx);
    dynamic
}

/// `node`: `id`, `cluster`, `metadata` and `locality`, which plugins read through `xds.node`.
fn read_node(ctx: &mut Ctx, field: &Field<'_>) -> Node {
    let mut node = Node::default();
    let Some(mut msg) = field.message(ctx, NODE) else { return node };
    let string = |msg: &mut crate::reader::Msg<'_>, ctx: &mut Ctx, name: &str| {
        msg.get(ctx, name).and_then(|f| f.string(ctx)).unwrap_or_default()
    };
    node.id = string(&mut msg, ctx, "id");
    node.cluster = string(&mut msg, ctx, "cluster");
    if let Some(f) = msg.get(ctx, "metadata") {
        node.metadata = struct_fields(ctx, &f).unwrap_or_default();
    }
    if let Some(f) = msg.get(ctx, "locality")
        && let Some(mut locality) = f.message(ctx, LOCALITY)
    {
        node.locality = Locality {
            region: string(&mut locality, ctx, "region"),
            zone: string(&mut locality, ctx, "zone"),
            sub_zone: string(&mut locality, ctx, "sub_zone"),
        };
        locality.finish(ctx);
    }
    msg.finish(ctx);
    node
}

const STATS_CONFIG: &[&str] = &["stats_tags", "use_all_default_tags", "stats_matcher", "histogram_bucket_settings"];
const TAG_SPECIFIER: &[&str] = &["tag_name", "regex", "fixed_value"];

/// `stats_config`: `stats_tags` (each a `tag_name` with a `regex` that compiles, or a
/// `fixed_value`; names unique) and `use_all_default_tags`.
fn read_stats_config(ctx: &mut Ctx, field: &Field<'_>) -> StatsConfig {
    let mut config = StatsConfig::default();
    let Some(mut msg) = field.message(ctx, STATS_CONFIG) else { return config };
    let mut names = Vec::new();
    for item in msg.get(ctx, "stats_tags").map(|f| f.list()).unwrap_or_default() {
        let Some(mut tag) = item.message(ctx, TAG_SPECIFIER) else { continue };
        let name = tag.required(ctx, "tag_name").and_then(|f| f.string(ctx)).unwrap_or_default();
        if names.contains(&name) {
            item.error(ctx, format!("tag name {name:?} is given twice"));
        }
        names.push(name.clone());
        tag.at_most_one(ctx, &["regex", "fixed_value"]);
        let value = if let Some(f) = tag.get(ctx, "fixed_value") {
            f.string(ctx).map(StatsTagValue::Fixed)
        } else if let Some(f) = tag.get(ctx, "regex") {
            let text = f.string(ctx).unwrap_or_default();
            match compile_regex(ctx, &f, &text) {
                Some(re) if re.captures_len() > 1 => Some(StatsTagValue::Regex(text)),
                Some(_) => {
                    f.error(ctx, "needs a capture group (the part of the name to cut; a second one is the value)");
                    None
                }
                None => None,
            }
        } else {
            // Envoy has a default regex for its own tag names; wasmproxy extracts those itself.
            ctx.error(tag.origin(), "one of regex or fixed_value is required");
            None
        };
        tag.finish(ctx);
        if let Some(value) = value {
            config.stats_tags.push(StatsTag { tag_name: name, value });
        }
    }
    if let Some(f) = msg.get(ctx, "use_all_default_tags") {
        config.use_all_default_tags = f.bool_value(ctx).unwrap_or(true);
    }
    msg.finish(ctx);
    config
}

fn read_admin(ctx: &mut Ctx, field: &Field<'_>) -> Option<Admin> {
    let mut msg = field.message(ctx, ADMIN)?;
    msg.ignore_with_warning(ctx, "access_log_path", "deprecated and ignored: wasmproxy's admin writes no access log");
    let address = msg.get(ctx, "address").and_then(|f| {
        let address = read_address(ctx, &f, Host::Ip)?;
        ctx.refs.binds.push((address.clone(), f.origin()));
        Some(address)
    });
    msg.finish(ctx);
    address.map(|address| Admin { address })
}

/// `layered_runtime.layers[].static_layer`, flattened to `a.b.c → value`; later layers win.
fn read_layered_runtime(ctx: &mut Ctx, field: &Field<'_>) -> Vec<(String, String)> {
    let mut values: Vec<(String, String)> = Vec::new();
    let Some(mut msg) = field.message(ctx, LAYERED_RUNTIME) else { return values };
    let mut names: Vec<(String, String)> = Vec::new();
    for item in msg.get(ctx, "layers").map(|f| f.list()).unwrap_or_default() {
        let Some(mut layer) = item.message(ctx, RUNTIME_LAYER) else { continue };
        if let Some(f) = layer.required(ctx, "name")
            && let Some(name) = f.string(ctx)
        {
            match names.iter().find(|(n, _)| *n == name) {
                Some((_, first)) => f.error(ctx, format!("duplicate layer name {name:?} (first at {first})")),
                None => names.push((name, f.path.clone())),
            }
        }
        layer.at_most_one(ctx, &["static_layer", "disk_layer", "admin_layer", "rtds_layer"]);
        if let Some(f) = layer.get(ctx, "static_layer") {
            if f.node.as_map().is_some() {
                flatten(ctx, &f, "", &mut values);
            } else {
                f.error(ctx, format!("expected a mapping, found {}", f.node.kind()));
            }
        }
        if let Some(f) = layer.get(ctx, "admin_layer") {
            ctx.warn(&f.origin(), "ignored: wasmproxy's admin cannot change runtime values");
            if let Some(admin) = f.message(ctx, &[]) {
                admin.finish(ctx);
            }
        }
        layer.finish(ctx);
    }
    msg.finish(ctx);
    values
}

fn flatten(ctx: &mut Ctx, field: &Field<'_>, prefix: &str, values: &mut Vec<(String, String)>) {
    match &field.node.value {
        Value::Map(entries) => {
            for entry in entries {
                let key = if prefix.is_empty() { entry.key.clone() } else { format!("{prefix}.{}", entry.key) };
                flatten(ctx, &Field::new(&entry.value, child(&field.path, &entry.key)), &key, values);
            }
        }
        Value::Scalar { text, .. } => match values.iter_mut().find(|(k, _)| k == prefix) {
            Some(existing) => existing.1 = text.clone(),
            None => values.push((prefix.to_owned(), text.clone())),
        },
        Value::Seq(_) | Value::Null => {
            let at = Origin { path: field.path.clone(), pos: field.node.pos };
            ctx.error(&at, format!("runtime values must be scalars, found {}", field.node.kind()));
        }
    }
}
