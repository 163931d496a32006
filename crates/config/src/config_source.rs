//! `ConfigSource`: where a dynamic resource comes from: a file (`path_config_source`), the
//! aggregated discovery stream (`ads`, whose gRPC stream is `dynamic_resources.ads_config`)
//! or a gRPC stream of its own (`api_config_source`). REST is not supported, and says so.

use std::time::Duration;

use crate::model::{ApiConfigSource, ConfigSource, FileSource, GrpcService};
use crate::reader::{Ctx, Field};
use crate::services::read_grpc_service;

const CONFIG_SOURCE: &[&str] = &[
    "authorities",
    "path",
    "path_config_source",
    "api_config_source",
    "ads",
    "self",
    "initial_fetch_timeout",
    "resource_api_version",
];
const PATH_CONFIG_SOURCE: &[&str] = &["path", "watched_directory"];
const WATCHED_DIRECTORY: &[&str] = &["path"];
const API_CONFIG_SOURCE: &[&str] = &[
    "api_type",
    "transport_api_version",
    "cluster_names",
    "grpc_services",
    "refresh_delay",
    "request_timeout",
    "rate_limit_settings",
    "set_node_on_first_message_only",
    "config_validators",
];

/// Envoy's `initial_fetch_timeout` when none is given.
const DEFAULT_INITIAL_FETCH_TIMEOUT: Duration = Duration::from_secs(15);

/// A `ConfigSource` that names a file, the ADS stream or a gRPC stream.
pub(crate) fn read_config_source(ctx: &mut Ctx, field: &Field<'_>) -> Option<ConfigSource> {
    let mut msg = field.message(ctx, CONFIG_SOURCE)?;
    msg.at_most_one(ctx, &["path", "path_config_source", "api_config_source", "ads", "self"]);
    resource_api_version(ctx, &mut msg);
    let initial_fetch_timeout =
        msg.get(ctx, "initial_fetch_timeout").and_then(|f| f.duration(ctx)).unwrap_or(DEFAULT_INITIAL_FETCH_TIMEOUT);
    let source = if let Some(f) = msg.get(ctx, "ads") {
        if let Some(ads) = f.message(ctx, &[]) {
            ads.finish(ctx);
        }
        ctx.refs.ads_users.push(f.origin());
        Some(ConfigSource::Ads { initial_fetch_timeout })
    } else if let Some(f) = msg.get(ctx, "api_config_source") {
        read_api_config_source(ctx, &f).map(|api| ConfigSource::Grpc { api, initial_fetch_timeout })
    } else {
        file_source(ctx, &mut msg).map(ConfigSource::File)
    };
    msg.finish(ctx);
    source
}

/// A `ConfigSource` that must name a file (SDS: secrets over xDS are not supported yet).
pub(crate) fn read_file_source(ctx: &mut Ctx, field: &Field<'_>) -> Option<FileSource> {
    let mut msg = field.message(ctx, CONFIG_SOURCE)?;
    msg.at_most_one(ctx, &["path", "path_config_source", "api_config_source", "ads", "self"]);
    resource_api_version(ctx, &mut msg);
    let source = file_source(ctx, &mut msg);
    msg.finish(ctx);
    source
}

/// V2 is gone from Envoy 1.40 too: the enumeration refuses it.
fn resource_api_version(ctx: &mut Ctx, msg: &mut crate::reader::Msg<'_>) {
    if let Some(f) = msg.get(ctx, "resource_api_version") {
        f.enumeration(ctx, &[("AUTO", 0, Some(())), ("V2", 1, None), ("V3", 2, Some(()))]);
    }
}

/// `path_config_source` (`path`, `watched_directory`) or the deprecated `path`. Relative
/// paths are the process's working directory's, as in Envoy.
fn file_source(ctx: &mut Ctx, msg: &mut crate::reader::Msg<'_>) -> Option<FileSource> {
    let mut source = None;
    if let Some(f) = msg.get(ctx, "path") {
        ctx.warn(&f.origin(), "deprecated: use path_config_source");
        source = existing_path(ctx, &f).map(|path| FileSource { path: path.into(), watched_directory: None });
    }
    if let Some(f) = msg.get(ctx, "path_config_source")
        && let Some(mut path_source) = f.message(ctx, PATH_CONFIG_SOURCE)
    {
        let path = path_source.required(ctx, "path").and_then(|f| existing_path(ctx, &f));
        let watched_directory = path_source.get(ctx, "watched_directory").and_then(|f| {
            let mut dir = f.message(ctx, WATCHED_DIRECTORY)?;
            let path = dir.required(ctx, "path").and_then(|f| f.string(ctx));
            dir.finish(ctx);
            path.map(std::path::PathBuf::from)
        });
        path_source.finish(ctx);
        source = path.map(|path| FileSource { path: path.into(), watched_directory });
    }
    if source.is_none() && !msg.has("api_config_source") && !msg.has("ads") && !msg.has("self") {
        ctx.error(&msg.origin().clone(), "a config source needs path_config_source, ads or api_config_source");
    }
    source
}

/// A file the configuration names, which must exist when it is read, as in Envoy (a file
/// that does not exist yet is not waited for).
fn existing_path(ctx: &mut Ctx, field: &Field<'_>) -> Option<String> {
    let path = field.string(ctx)?;
    if !ctx.base_dir.join(&path).exists() {
        field.error(ctx, format!("paths must refer to an existing path in the system: '{path}' does not exist"));
        return None;
    }
    Some(path)
}

/// `ads_config` or `api_config_source`: an `ApiConfigSource` of `api_type` GRPC or
/// DELTA_GRPC with one `grpc_services` entry naming a static cluster by `envoy_grpc`.
pub(crate) fn read_api_config_source(ctx: &mut Ctx, field: &Field<'_>) -> Option<ApiConfigSource> {
    let mut msg = field.message(ctx, API_CONFIG_SOURCE)?;
    let api_type = msg.required(ctx, "api_type").and_then(|f| {
        f.enumeration(
            ctx,
            &[
                ("DEPRECATED_AND_UNAVAILABLE_DO_NOT_USE", 0, None),
                ("REST", 1, None),
                ("GRPC", 2, Some(false)),
                ("DELTA_GRPC", 3, Some(true)),
                ("AGGREGATED_GRPC", 5, None),
                ("AGGREGATED_DELTA_GRPC", 6, None),
            ],
        )
    });
    if let Some(f) = msg.get(ctx, "transport_api_version") {
        f.enumeration(ctx, &[("AUTO", 0, Some(())), ("V2", 1, None), ("V3", 2, Some(()))]);
    }
    let set_node_on_first_message_only =
        msg.get(ctx, "set_node_on_first_message_only").and_then(|f| f.bool_value(ctx)).unwrap_or(false);
    let given = msg.has("grpc_services");
    let services = msg.required(ctx, "grpc_services").map(|f| f.list()).unwrap_or_default();
    let mut target = None;
    match services.as_slice() {
        [] if given => ctx.error(&msg.origin().with_child("grpc_services"), "one gRPC service is required"),
        [] => {}
        [service] => target = read_grpc_service(ctx, service, false),
        [_, extra, ..] => extra.error(ctx, "only one gRPC service is supported (Envoy uses the first)"),
    }
    msg.finish(ctx);
    let GrpcService { cluster, authority, .. } = target?;
    let authority = authority.unwrap_or_default();
    Some(ApiConfigSource { delta: api_type?, cluster, authority, set_node_on_first_message_only })
}
