//! `ConfigSource`: where a dynamic resource comes from. Files (`path_config_source`) are
//! read; xDS over gRPC is not supported yet, and says so.

use crate::model::FileSource;
use crate::reader::{Ctx, Field};

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
/// A `ConfigSource` that names a file: `path_config_source` (`path`, `watched_directory`) or
/// the deprecated `path`. Relative paths are the process's working directory's, as in Envoy.
pub(crate) fn read_file_source(ctx: &mut Ctx, field: &Field<'_>) -> Option<FileSource> {
    let mut msg = field.message(ctx, CONFIG_SOURCE)?;
    msg.at_most_one(ctx, &["path", "path_config_source", "api_config_source", "ads", "self"]);
    // V2 is gone from Envoy 1.40 too: the enumeration refuses it.
    if let Some(f) = msg.get(ctx, "resource_api_version") {
        f.enumeration(ctx, &[("AUTO", 0, Some(())), ("V2", 1, None), ("V3", 2, Some(()))]);
    }
    let mut source = None;
    if let Some(f) = msg.get(ctx, "path") {
        ctx.warn(&f.origin(), "deprecated: use path_config_source");
        source = f.string(ctx).map(|path| FileSource { path: path.into(), watched_directory: None });
    }
    if let Some(f) = msg.get(ctx, "path_config_source")
        && let Some(mut path_source) = f.message(ctx, PATH_CONFIG_SOURCE)
    {
        let path = path_source.required(ctx, "path").and_then(|f| f.string(ctx));
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
        ctx.error(&msg.origin().clone(), "a config source needs path_config_source");
    }
    msg.finish(ctx);
    source
}
