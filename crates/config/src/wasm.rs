//! The Wasm `PluginConfig` of the Wasm HTTP and network filters and of the `envoy.bootstrap.wasm` service.

use std::time::Duration;

use crate::base64;
use crate::model::{FailurePolicy, OCI_SCHEME, RemoteCode, WasmCode, WasmPlugin, WasmService, WasmVm};
use crate::reader::{AnyValue, Ctx, Field};
use crate::struct_value::{encode_struct, message_field, string_field, struct_fields};

/// `envoy.extensions.filters.http.wasm.v3.Wasm` and `...network.wasm.v3.Wasm`.
const WASM_FILTER: &[&str] = &["config"];
const WASM_SERVICE: &[&str] = &["config", "singleton"];
const PLUGIN_CONFIG: &[&str] = &[
    "name",
    "root_id",
    "vm_config",
    "configuration",
    "fail_open",
    "failure_policy",
    "reload_config",
    "capability_restriction_config",
    "allow_on_headers_stop_iteration",
];
const VM_CONFIG: &[&str] = &[
    "vm_id",
    "runtime",
    "code",
    "configuration",
    "allow_precompiled",
    "nack_on_code_cache_miss",
    "environment_variables",
];
const ASYNC_DATA_SOURCE: &[&str] = &["local", "remote"];
/// `envoy.config.core.v3.DataSource`.
pub(crate) const DATA_SOURCE: &[&str] =
    &["filename", "inline_bytes", "inline_string", "environment_variable", "watched_directory"];
const ENVIRONMENT_VARIABLES: &[&str] = &["host_env_keys", "key_values"];
const RELOAD_CONFIG: &[&str] = &["backoff"];
const BACKOFF_STRATEGY: &[&str] = &["base_interval", "max_interval"];
const VALUE: &[&str] = &["value"];

/// The runtimes Envoy knows; wasmproxy runs every one of them on wasmtime.
const RUNTIMES: &[&str] =
    &["envoy.wasm.runtime.v8", "envoy.wasm.runtime.wasmtime", "envoy.wasm.runtime.wamr", "envoy.wasm.runtime.null"];

/// `UNSPECIFIED` is `None` (FAIL_CLOSED, but it does not conflict with `fail_open`).
const FAILURE_POLICY: &[(&str, i64, Option<Option<FailurePolicy>>)] = &[
    ("UNSPECIFIED", 0, Some(None)),
    ("FAIL_RELOAD", 1, Some(Some(FailurePolicy::FailReload))),
    ("FAIL_CLOSED", 2, Some(Some(FailurePolicy::FailClosed))),
    ("FAIL_OPEN", 3, Some(Some(FailurePolicy::FailOpen))),
];

/// Reads the `Wasm` message of the HTTP or network Wasm filter.
pub(crate) fn read_wasm_filter(ctx: &mut Ctx, any: &AnyValue<'_>) -> WasmPlugin {
    let Some(mut msg) = any.message(ctx, WASM_FILTER) else { return WasmPlugin::default() };
    let plugin = msg.required(ctx, "config").map(|f| read_plugin_config(ctx, &f)).unwrap_or_default();
    msg.finish(ctx);
    plugin
}

/// Reads an `envoy.extensions.wasm.v3.WasmService` (bootstrap extension `envoy.bootstrap.wasm`).
pub(crate) fn read_wasm_service(ctx: &mut Ctx, any: &AnyValue<'_>) -> WasmService {
    let Some(mut msg) = any.message(ctx, WASM_SERVICE) else {
        return WasmService { plugin: WasmPlugin::default(), singleton: false };
    };
    let plugin = msg.required(ctx, "config").map(|f| read_plugin_config(ctx, &f)).unwrap_or_default();
    let singleton = msg.get(ctx, "singleton").and_then(|f| f.bool(ctx)).unwrap_or(false);
    msg.finish(ctx);
    WasmService { plugin, singleton }
}

pub(crate) fn read_plugin_config(ctx: &mut Ctx, field: &Field<'_>) -> WasmPlugin {
    let Some(mut msg) = field.message(ctx, PLUGIN_CONFIG) else { return WasmPlugin::default() };
    let mut plugin = WasmPlugin {
        name: msg.get(ctx, "name").and_then(|f| f.string(ctx)).unwrap_or_default(),
        root_id: msg.get(ctx, "root_id").and_then(|f| f.string(ctx)).unwrap_or_default(),
        ..WasmPlugin::default()
    };
    if let Some(vm) = msg.required(ctx, "vm_config") {
        plugin.vm = read_vm_config(ctx, &vm);
    }
    if let Some(configuration) = msg.get(ctx, "configuration") {
        plugin.configuration = read_configuration(ctx, &configuration);
    }

    let policy = msg.get(ctx, "failure_policy").and_then(|f| f.enumeration(ctx, FAILURE_POLICY)).flatten();
    plugin.failure_policy = policy.unwrap_or_default();
    if let Some(fail_open) = msg.get(ctx, "fail_open")
        && fail_open.bool(ctx) == Some(true)
    {
        // As in Envoy, a `fail_open: false` cannot be told from an absent one, so only `true` conflicts.
        if policy.is_some() {
            fail_open.error(ctx, "cannot be set together with failure_policy (fail_open is deprecated)");
        } else {
            ctx.warn(&fail_open.origin(), "deprecated: use failure_policy: FAIL_OPEN");
            plugin.failure_policy = FailurePolicy::FailOpen;
            plugin.legacy_fail_open = true;
        }
    }

    let reload_field = msg.get(ctx, "reload_config");
    let reload = reload_field.as_ref().map(|f| read_reload_config(ctx, f));
    if plugin.failure_policy == FailurePolicy::FailReload {
        plugin.reload_backoff = Some(reload.unwrap_or((Duration::from_secs(1), Duration::from_secs(10))));
    } else if let Some(f) = reload_field {
        ctx.warn(&f.origin(), "ignored: reload_config only applies with failure_policy: FAIL_RELOAD");
    }
    plugin.allow_on_headers_stop_iteration =
        msg.get(ctx, "allow_on_headers_stop_iteration").and_then(|f| f.bool_value(ctx)).unwrap_or(false);
    msg.finish(ctx);
    plugin
}

/// `reload_config.backoff`: (base interval, max interval), defaults 1 s and 10 × base.
fn read_reload_config(ctx: &mut Ctx, field: &Field<'_>) -> (Duration, Duration) {
    let mut base = Duration::from_secs(1);
    let mut max = None;
    if let Some(mut msg) = field.message(ctx, RELOAD_CONFIG) {
        if let Some(backoff) = msg.get(ctx, "backoff")
            && let Some(mut backoff_msg) = backoff.message(ctx, BACKOFF_STRATEGY)
        {
            if let Some(f) = backoff_msg.get(ctx, "base_interval")
                && let Some(d) = f.duration(ctx)
            {
                if d < Duration::from_millis(1) {
                    f.error(ctx, "must be at least 1ms");
                }
                base = d;
            }
            if let Some(f) = backoff_msg.get(ctx, "max_interval")
                && let Some(d) = f.duration(ctx)
            {
                if d < base {
                    f.error(ctx, "must not be less than base_interval");
                }
                max = Some(d);
            }
            backoff_msg.finish(ctx);
        }
        msg.finish(ctx);
    }
    (base, max.unwrap_or(base * 10))
}

fn read_vm_config(ctx: &mut Ctx, field: &Field<'_>) -> WasmVm {
    let Some(mut msg) = field.message(ctx, VM_CONFIG) else { return WasmVm::default() };
    let mut vm =
        WasmVm { vm_id: msg.get(ctx, "vm_id").and_then(|f| f.string(ctx)).unwrap_or_default(), ..WasmVm::default() };
    if let Some(runtime) = msg.get(ctx, "runtime")
        && let Some(name) = runtime.string(ctx)
    {
        if !RUNTIMES.contains(&name.as_str()) {
            runtime.error(ctx, format!("unknown Wasm runtime {name:?} (expected one of: {})", RUNTIMES.join(", ")));
        }
        vm.runtime = name;
    }
    if let Some(code) = msg.required(ctx, "code") {
        vm.code = read_code(ctx, &code);
    }
    if let Some(configuration) = msg.get(ctx, "configuration") {
        vm.configuration = read_configuration(ctx, &configuration);
    }
    if let Some(environment) = msg.get(ctx, "environment_variables") {
        vm.environment = read_environment(ctx, &environment, &vm.runtime);
    }
    // Precompiled code is a V8 feature: it changes nothing wasmproxy does.
    msg.ignore(ctx, "allow_precompiled");
    // For remote code: refuse an update whose module is not cached yet (it is fetched
    // meanwhile), rather than warm the listener until it is.
    if let Some(nack) = msg.get(ctx, "nack_on_code_cache_miss").and_then(|f| f.bool_value(ctx))
        && let WasmCode::Remote(remote) = &mut vm.code
    {
        remote.nack_on_cache_miss = nack;
    }
    msg.finish(ctx);
    vm
}

/// `vm_config.code`: `local` (a `DataSource`) or `remote`.
fn read_code(ctx: &mut Ctx, field: &Field<'_>) -> WasmCode {
    let Some(mut msg) = field.message(ctx, ASYNC_DATA_SOURCE) else { return WasmCode::default() };
    msg.at_most_one(ctx, &["local", "remote"]);
    let code = if let Some(remote) = msg.get(ctx, "remote") {
        read_remote(ctx, &remote).map(|r| WasmCode::Remote(Box::new(r)))
    } else {
        msg.required(ctx, "local").and_then(|local| read_data_source(ctx, &local)).map(|code| match code {
            DataSource::File(name) => WasmCode::File(ctx.base_dir.join(name)),
            DataSource::Inline(bytes) => WasmCode::Inline(bytes),
        })
    };
    msg.finish(ctx);
    code.unwrap_or_default()
}

const REMOTE_DATA_SOURCE: &[&str] = &["http_uri", "sha256", "retry_policy"];
const HTTP_URI: &[&str] = &["uri", "cluster", "timeout"];
const RETRY_POLICY: &[&str] = &[
    "retry_back_off",
    "num_retries",
    "retry_on",
    "retry_priority",
    "retry_host_predicate",
    "host_selection_retry_max_attempts",
];

/// `remote`: `http_uri` (`uri`, `cluster`, `timeout`), `sha256` (required: 64 hex digits)
/// and `retry_policy` (`num_retries`, `retry_back_off`).
fn read_remote(ctx: &mut Ctx, field: &Field<'_>) -> Option<RemoteCode> {
    let mut msg = field.message(ctx, REMOTE_DATA_SOURCE)?;
    let http_uri = msg.required(ctx, "http_uri").and_then(|f| {
        let mut uri = f.message(ctx, HTTP_URI)?;
        // The URI if valid, and whether it names a registry.
        let text = uri.required(ctx, "uri").and_then(|f| {
            let text = f.string(ctx)?;
            if let Some(reference) = text.strip_prefix(OCI_SCHEME) {
                if let Err(why) = check_oci_reference(reference) {
                    f.error(ctx, format!("{text:?} is not an OCI image reference: {why}"));
                    return Some((None, true));
                }
                return Some((Some(text), true));
            }
            match text.parse::<http::Uri>() {
                Ok(parsed) if matches!(parsed.scheme_str(), Some("http" | "https")) && parsed.authority().is_some() => {
                    Some((Some(text), false))
                }
                _ => {
                    f.error(ctx, format!("{text:?} is not an absolute http://, https:// or oci:// URI"));
                    Some((None, false))
                }
            }
        });
        let from_registry = text.as_ref().is_some_and(|(_, oci)| *oci);
        let text = text.and_then(|(text, _)| text);
        // A registry is reached by the name in the reference (and any host it sends the
        // client on to): no cluster stands for it.
        let cluster = match uri.get(ctx, "cluster") {
            Some(f) if from_registry => {
                f.error(ctx, "an oci:// module is pulled from the registry its reference names: remove the cluster");
                None
            }
            None if from_registry => Some(None),
            _ => uri.required(ctx, "cluster").and_then(|f| {
                let name = f.string(ctx)?;
                ctx.refs.cluster_refs.push((name.clone(), f.origin()));
                Some(Some(name))
            }),
        };
        let timeout = uri.required(ctx, "timeout").and_then(|f| f.duration(ctx));
        uri.finish(ctx);
        Some((text?, cluster?, timeout?))
    });
    let sha256 = msg.required(ctx, "sha256").and_then(|f| {
        let text = f.string(ctx)?.to_ascii_lowercase();
        if text.len() != 64 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
            f.error(ctx, "must be a sha256 in hex (64 digits)");
            return None;
        }
        Some(text)
    });
    let (mut retries, mut base_interval, mut max_interval) = (1, std::time::Duration::from_secs(1), None);
    if let Some(f) = msg.get(ctx, "retry_policy")
        && let Some(mut policy) = f.message(ctx, RETRY_POLICY)
    {
        if let Some(n) = policy.get(ctx, "num_retries").and_then(|f| f.unsigned(ctx, u64::from(u32::MAX))) {
            retries = n as u32;
        }
        if let Some(backoff) = policy.get(ctx, "retry_back_off")
            && let Some(mut strategy) = backoff.message(ctx, BACKOFF_STRATEGY)
        {
            if let Some(d) = strategy.required(ctx, "base_interval").and_then(|f| f.duration(ctx)) {
                base_interval = d;
            }
            max_interval = strategy.get(ctx, "max_interval").and_then(|f| f.duration(ctx));
            strategy.finish(ctx);
        }
        policy.finish(ctx);
    }
    msg.finish(ctx);
    let (uri, cluster, timeout) = http_uri?;
    let max_interval = max_interval.unwrap_or(base_interval * 10).max(base_interval);
    Some(RemoteCode {
        uri,
        cluster,
        timeout,
        sha256: sha256?,
        retries,
        base_interval,
        max_interval,
        nack_on_cache_miss: false,
    })
}

/// Checks `registry/repository[:tag][@sha256:digest]`, as the distribution spec names an
/// image (the registry is not optional: there is no default one).
fn check_oci_reference(reference: &str) -> Result<(), String> {
    let (name, digest) = match reference.split_once('@') {
        Some((name, digest)) => (name, Some(digest)),
        None => (reference, None),
    };
    if let Some(digest) = digest {
        let hex = digest.strip_prefix("sha256:").ok_or("the digest is not a sha256:")?;
        if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()) {
            return Err("the digest is not 64 lowercase hex digits".into());
        }
    }
    let (registry, path) = name.split_once('/').ok_or("no registry/repository")?;
    // Docker's rule, which oci-client follows: a first component without a dot or a port
    // (and not `localhost`) is a Docker Hub namespace, not a registry.
    let named = registry.contains(['.', ':']) || registry == "localhost";
    if !named || registry.parse::<http::uri::Authority>().is_err() {
        return Err(format!("{registry:?} is not a registry's host[:port] (a name with a dot or a port)"));
    }
    let (repository, tag) = match path.rsplit_once(':') {
        Some((repository, tag)) => (repository, Some(tag)),
        None => (path, None),
    };
    if let Some(tag) = tag {
        let valid = |b: u8| b.is_ascii_alphanumeric() || b"._-".contains(&b);
        if tag.is_empty() || tag.len() > 128 || !tag.bytes().all(valid) || tag.starts_with(['.', '-']) {
            return Err(format!("{tag:?} is not a tag"));
        }
    }
    let component = |c: &str| {
        !c.is_empty()
            && c.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
            && c.starts_with(|c: char| c.is_ascii_alphanumeric())
            && c.ends_with(|c: char| c.is_ascii_alphanumeric())
    };
    if !repository.split('/').all(component) {
        return Err(format!("{repository:?} is not a repository (lowercase letters, digits, . _ - and /)"));
    }
    Ok(())
}

/// What a `DataSource` holds.
pub(crate) enum DataSource {
    File(String),
    Inline(Vec<u8>),
}

/// Reads a `DataSource`: exactly one of `filename`, `inline_bytes` (base64), `inline_string`.
pub(crate) fn read_data_source(ctx: &mut Ctx, field: &Field<'_>) -> Option<DataSource> {
    let mut msg = field.message(ctx, DATA_SOURCE)?;
    let mut found = Vec::new();
    if let Some(f) = msg.get(ctx, "filename") {
        found.push(f.string(ctx).map(DataSource::File));
    }
    if let Some(f) = msg.get(ctx, "inline_bytes") {
        found.push(read_base64(ctx, &f).map(DataSource::Inline));
    }
    if let Some(f) = msg.get(ctx, "inline_string") {
        found.push(f.string(ctx).map(|s| DataSource::Inline(s.into_bytes())));
    }
    let unsupported = msg.has("environment_variable") || msg.has("watched_directory");
    let origin = msg.origin().clone();
    msg.finish(ctx);
    match found.len() {
        0 if !unsupported => {
            ctx.error(&origin, "one of filename, inline_bytes or inline_string is required");
            None
        }
        0 => None,
        1 => found.pop().flatten(),
        _ => {
            ctx.error(&origin, "only one of filename, inline_bytes or inline_string may be given");
            None
        }
    }
}

/// A proto JSON `bytes` value (base64).
pub(crate) fn read_base64(ctx: &mut Ctx, field: &Field<'_>) -> Option<Vec<u8>> {
    let text = field.string(ctx)?;
    let bytes = base64::decode(&text);
    if bytes.is_none() {
        field.error(ctx, "invalid base64");
    }
    bytes
}

/// A plugin or VM `configuration` (an `Any`), as Envoy hands it to the plugin: StringValue and
/// BytesValue contents as they are, any other message in protobuf wire format (a Struct as a
/// serialized `google.protobuf.Struct`, a `TypedStruct` as a serialized `TypedStruct`), an
/// empty `Any` as nothing.
fn read_configuration(ctx: &mut Ctx, field: &Field<'_>) -> Vec<u8> {
    let Some(any) = field.any(ctx) else { return Vec::new() };
    if any.wrapped_in_typed_struct() {
        // Envoy does not look inside: the plugin gets the TypedStruct itself, whatever its
        // `type_url` names: type_url (1), value (2).
        let mut out = Vec::new();
        string_field(&mut out, 1, &any.type_url);
        message_field(&mut out, 2, &struct_bytes(ctx, &any.body));
        return out;
    }
    match any.type_name.as_str() {
        "" => Vec::new(),
        "google.protobuf.StringValue" | "google.protobuf.BytesValue" => {
            let Some(mut msg) = any.message(ctx, VALUE) else { return Vec::new() };
            let value = msg.get(ctx, "value");
            let bytes = match value {
                Some(f) if any.type_name.ends_with("StringValue") => f.string(ctx).map(String::into_bytes),
                Some(f) => read_base64(ctx, &f),
                None => Some(Vec::new()),
            };
            msg.finish(ctx);
            bytes.unwrap_or_default()
        }
        "google.protobuf.Struct" => {
            let Some(mut msg) = any.message(ctx, VALUE) else { return Vec::new() };
            let bytes = msg.get(ctx, "value").map(|value| struct_bytes(ctx, &value)).unwrap_or_default();
            msg.finish(ctx);
            bytes
        }
        other => {
            any.body.error(
                ctx,
                format!(
                    "configuration type {other} is not supported by wasmproxy \
                     (use google.protobuf.StringValue, google.protobuf.BytesValue or google.protobuf.Struct)"
                ),
            );
            Vec::new()
        }
    }
}

/// A mapping as a serialized `google.protobuf.Struct`.
fn struct_bytes(ctx: &mut Ctx, field: &Field<'_>) -> Vec<u8> {
    struct_fields(ctx, field).map(|fields| encode_struct(&fields)).unwrap_or_default()
}

/// `environment_variables`: `key_values` in order, then each `host_env_keys` entry that is set in
/// wasmproxy's own environment. A key given twice is an error, as in Envoy.
fn read_environment(ctx: &mut Ctx, field: &Field<'_>, runtime: &str) -> Vec<(String, String)> {
    let Some(mut msg) = field.message(ctx, ENVIRONMENT_VARIABLES) else { return Vec::new() };
    let mut environment = Vec::new();
    if let Some(key_values) = msg.get(ctx, "key_values") {
        if runtime == "envoy.wasm.runtime.null" {
            key_values.error(ctx, "must not be set for the null runtime");
        }
        for (key, value) in key_values.map_entries(ctx) {
            if let Some(value) = value.string(ctx) {
                environment.push((key, value));
            }
        }
    }
    let mut keys: Vec<String> = environment.iter().map(|(k, _)| k.clone()).collect();
    if let Some(host_keys) = msg.get(ctx, "host_env_keys") {
        for item in host_keys.list() {
            let Some(key) = item.string(ctx) else { continue };
            if keys.contains(&key) {
                item.error(ctx, format!("key {key:?} is duplicated: all environment variable keys must be unique"));
                continue;
            }
            keys.push(key.clone());
            if let Some(value) = std::env::var_os(&key) {
                environment.push((key, value.to_string_lossy().into_owned()));
            }
        }
    }
    msg.finish(ctx);
    environment
}
