//! `access_log` on the HTTP connection manager: the file, stdout and stderr loggers with
//! Envoy's default format, a text format, or a JSON format; and the Wasm access logger.

use std::path::PathBuf;

use crate::model::{AccessLog, AccessLogFormat, AccessLogSink};
use crate::reader::{AnyValue, Ctx, Field, type_error};
use crate::wasm::read_plugin_config;

const ACCESS_LOG: &[&str] = &["name", "filter", "typed_config"];
const FILE_ACCESS_LOG: &[&str] = &["path", "format", "json_format", "typed_json_format", "log_format"];
const STREAM_ACCESS_LOG: &[&str] = &["log_format"];
const WASM_ACCESS_LOG: &[&str] = &["config"];
const SUBSTITUTION_FORMAT_STRING: &[&str] = &[
    "text_format",
    "json_format",
    "text_format_source",
    "omit_empty_values",
    "content_type",
    "formatters",
    "json_format_options",
];
const DATA_SOURCE: &[&str] =
    &["filename", "inline_bytes", "inline_string", "environment_variable", "watched_directory"];

const FILE_TYPE: &str = "envoy.extensions.access_loggers.file.v3.FileAccessLog";
const STDOUT_TYPE: &str = "envoy.extensions.access_loggers.stream.v3.StdoutAccessLog";
const STDERR_TYPE: &str = "envoy.extensions.access_loggers.stream.v3.StderrAccessLog";
const WASM_TYPE: &str = "envoy.extensions.access_loggers.wasm.v3.WasmAccessLog";

/// Reads the `access_log` list.
pub(crate) fn read_access_logs(ctx: &mut Ctx, field: &Field<'_>) -> Vec<AccessLog> {
    field.list().iter().filter_map(|item| read_access_log(ctx, item)).collect()
}

fn read_access_log(ctx: &mut Ctx, field: &Field<'_>) -> Option<AccessLog> {
    let mut msg = field.message(ctx, ACCESS_LOG)?;
    msg.ignore(ctx, "name");
    let typed = msg.required(ctx, "typed_config");
    let log = typed.as_ref().and_then(|typed| {
        let any = typed.any(ctx)?;
        match any.type_name.as_str() {
            FILE_TYPE => read_file(ctx, &any),
            STDOUT_TYPE | STDERR_TYPE => {
                let mut m = any.message(ctx, STREAM_ACCESS_LOG)?;
                let (format, omit_empty_values) =
                    m.get(ctx, "log_format").map(|f| read_format(ctx, &f)).unwrap_or_default();
                m.finish(ctx);
                let sink = if any.type_name == STDOUT_TYPE { AccessLogSink::Stdout } else { AccessLogSink::Stderr };
                Some(AccessLog { sink, format, omit_empty_values })
            }
            WASM_TYPE => {
                let mut m = any.message(ctx, WASM_ACCESS_LOG)?;
                let plugin = m.required(ctx, "config").map(|f| read_plugin_config(ctx, &f)).unwrap_or_default();
                m.finish(ctx);
                let sink = AccessLogSink::Wasm(Box::new(plugin));
                Some(AccessLog { sink, format: AccessLogFormat::Default, omit_empty_values: false })
            }
            "" => {
                typed.error(ctx, "missing \"@type\"");
                None
            }
            _ => {
                type_error(ctx, typed, &any, "access logger");
                None
            }
        }
    });
    // `filter` is left unread: `finish` reports it as not supported.
    msg.finish(ctx);
    log
}

fn read_file(ctx: &mut Ctx, any: &AnyValue<'_>) -> Option<AccessLog> {
    let mut m = any.message(ctx, FILE_ACCESS_LOG)?;
    let path = m.required(ctx, "path").and_then(|f| {
        let p = f.string(ctx)?;
        if p.is_empty() {
            f.error(ctx, "must not be empty");
        }
        Some(p)
    });
    let (mut format, mut omit_empty_values) = (AccessLogFormat::Default, false);
    if let Some(f) = m.get(ctx, "format") {
        format = f.string(ctx).map_or(format, AccessLogFormat::Text);
        check_format(ctx, &f.origin(), &format);
    }
    if let Some(f) = m.get(ctx, "json_format") {
        format = AccessLogFormat::Json(f.node.to_json());
        check_format(ctx, &f.origin(), &format);
    }
    if let Some(f) = m.get(ctx, "log_format") {
        (format, omit_empty_values) = read_format(ctx, &f);
    }
    m.finish(ctx);
    Some(AccessLog { sink: AccessLogSink::File(PathBuf::from(path?)), format, omit_empty_values })
}

/// A format's command operators must be ones wasmproxy knows, as Envoy refuses the ones
/// it does not.
fn check_format(ctx: &mut Ctx, at: &crate::reader::Origin, format: &AccessLogFormat) {
    fn strings<'a>(v: &'a serde_json::Value, out: &mut Vec<&'a str>) {
        match v {
            serde_json::Value::String(s) => out.push(s),
            serde_json::Value::Object(m) => m.values().for_each(|v| strings(v, out)),
            _ => {}
        }
    }
    let mut formats = Vec::new();
    match format {
        AccessLogFormat::Default => {}
        AccessLogFormat::Text(t) => formats.push(t.as_str()),
        AccessLogFormat::Json(v) => strings(v, &mut formats),
    }
    for f in formats {
        if let Err(e) = crate::format::parse(f) {
            ctx.error(at, format!("log format {f:?}: {e}"));
        }
    }
}

/// A `SubstitutionFormatString`, and its `omit_empty_values`.
fn read_format(ctx: &mut Ctx, field: &Field<'_>) -> (AccessLogFormat, bool) {
    let Some(mut m) = field.message(ctx, SUBSTITUTION_FORMAT_STRING) else { return Default::default() };
    m.at_most_one(ctx, &["text_format", "json_format", "text_format_source"]);
    let mut format = AccessLogFormat::Default;
    if let Some(text) = m.get(ctx, "text_format").and_then(|f| f.string(ctx)) {
        format = AccessLogFormat::Text(text);
    }
    if let Some(f) = m.get(ctx, "json_format") {
        format = AccessLogFormat::Json(f.node.to_json());
    }
    if let Some(f) = m.get(ctx, "text_format_source")
        && let Some(mut source) = f.message(ctx, DATA_SOURCE)
    {
        if let Some(s) = source.get(ctx, "inline_string").and_then(|f| f.string(ctx)) {
            format = AccessLogFormat::Text(s);
        } else if let Some(name) = source.get(ctx, "filename") {
            match name.string(ctx).map(|n| read_format_file(&n).map_err(|e| (n, e))) {
                Some(Ok(text)) => format = AccessLogFormat::Text(text),
                Some(Err((n, e))) => name.error(ctx, format!("cannot read {n}: {e}")),
                None => {}
            }
        }
        source.finish(ctx);
    }
    check_format(ctx, &field.origin(), &format);
    let omit = m.get(ctx, "omit_empty_values").and_then(|f| f.bool(ctx)).unwrap_or(false);
    // `content_type` only matters to local replies formatted with this string.
    m.ignore(ctx, "content_type");
    m.finish(ctx);
    (format, omit)
}

/// The most a format file may hold.
const MAX_FORMAT_FILE: u64 = 1 << 20;

/// A format read from a file: a regular file of at most 1 MiB of UTF-8.
fn read_format_file(path: &str) -> Result<String, String> {
    use std::io::Read;
    let file = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let meta = file.metadata().map_err(|e| e.to_string())?;
    if !meta.is_file() {
        return Err("not a regular file".into());
    }
    if meta.len() > MAX_FORMAT_FILE {
        return Err(format!("larger than {MAX_FORMAT_FILE} bytes"));
    }
    let mut text = String::new();
    file.take(MAX_FORMAT_FILE).read_to_string(&mut text).map_err(|e| e.to_string())?;
    Ok(text)
}
