//! `plugin-info` and `plugin-run`: load a plugin with the host library and show what it does.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use wasmproxy_host::abi::{FilterDataStatus, FilterHeadersStatus};
use wasmproxy_host::{
    ContextKind, Embedder, EngineConfig, Headers, LogRecord, ModuleSource, PluginConfig, PluginModule, VmConfig,
    WasmEngine, WasmVm,
};

/// The options of `plugin-run`.
#[derive(Default)]
pub struct RunOptions {
    plugin: PathBuf,
    plugin_config: PluginConfig,
    vm_config: VmConfig,
    request_headers: Vec<(String, String)>,
    request_body: Option<String>,
    response_headers: Vec<(String, String)>,
    response_body: Option<String>,
}

impl RunOptions {
    pub fn parse(mut args: impl Iterator<Item = String>) -> Result<RunOptions, String> {
        let mut o = RunOptions::default();
        let mut plugin = None;
        while let Some(arg) = args.next() {
            let mut value = |name: &str| args.next().ok_or(format!("{name} needs a value"));
            match arg.as_str() {
                "--configuration" => o.plugin_config.configuration = value(&arg)?.into_bytes(),
                "--configuration-file" => {
                    let file = value(&arg)?;
                    o.plugin_config.configuration =
                        std::fs::read(&file).map_err(|e| format!("cannot read {file}: {e}"))?;
                }
                "--vm-configuration" => o.vm_config.configuration = value(&arg)?.into_bytes(),
                "--name" => o.plugin_config.name = value(&arg)?,
                "--root-id" => o.plugin_config.root_id = value(&arg)?,
                "--vm-id" => o.vm_config.vm_id = value(&arg)?,
                "--request-header" => o.request_headers.push(split_pair(&value(&arg)?, ':', "header")?),
                "--response-header" => o.response_headers.push(split_pair(&value(&arg)?, ':', "header")?),
                "--request-body" => o.request_body = Some(value(&arg)?),
                "--response-body" => o.response_body = Some(value(&arg)?),
                "--env" => o.vm_config.environment.push(split_pair(&value(&arg)?, '=', "--env")?),
                flag if flag.starts_with("--") => return Err(format!("unknown option {flag}")),
                file if plugin.is_none() => plugin = Some(PathBuf::from(file)),
                extra => return Err(format!("unexpected argument {extra:?}")),
            }
        }
        o.plugin = plugin.ok_or("plugin-run needs a .wasm file")?;
        Ok(o)
    }
}

/// Prints plugin logs as Envoy does: `[level] wasm log<prefix>: message`.
struct PrintLogs;

impl Embedder for PrintLogs {
    fn log(&mut self, r: &LogRecord<'_>) {
        println!("[{}] wasm log{}: {}", r.level.name(), r.prefix, r.message);
    }
    fn log_level(&self) -> wasmproxy_host::abi::LogLevel {
        wasmproxy_host::abi::LogLevel::Trace
    }
}

fn load(file: &Path) -> anyhow::Result<(WasmEngine, Arc<PluginModule>)> {
    let engine = WasmEngine::new(EngineConfig { pooling_instances: None, ..Default::default() })?;
    let module = PluginModule::load(&engine, ModuleSource::File(file.to_path_buf()))?;
    Ok((engine, module))
}

/// `plugin-info`: what the module is (see [`wasmproxy_host::inspect`]), and whether it
/// loads (why not, if it does not).
pub fn info(file: &Path) -> anyhow::Result<()> {
    let engine = WasmEngine::new(EngineConfig { pooling_instances: None, ..Default::default() })?;
    let bytes = std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
    let name = file.display().to_string();
    let r = wasmproxy_host::inspect(&engine, &name, &bytes)?;
    let abi = r.abi.map_or("none (it exports no proxy_abi_version_*: not a plugin)".to_string(), |a| a.to_string());
    println!("{name}: Proxy-Wasm ABI {abi}, sha256 {}, {} bytes", r.sha256, bytes.len());
    println!("written in: {}", r.sdk.as_deref().unwrap_or("not recognized"));
    if !r.producers.is_empty() {
        println!("producers: {}", r.producers.join(", "));
    }
    println!("memory: {}", memory_text(r.memory));
    let names = if r.names { "function names" } else { "function indexes only (no name section)" };
    let lines = if r.dwarf { ", files and lines (DWARF)" } else { "" };
    println!("trap backtraces show: {names}{lines}");
    println!("exports: {}", r.exports.join(" "));
    println!("imports: {}", r.imports.join(" "));
    if r.missing.is_empty() {
        println!("every import is provided by wasmproxy");
    } else {
        println!("not provided by wasmproxy: {}", r.missing.join(" "));
    }
    match PluginModule::load(&engine, ModuleSource::Bytes { name, bytes }) {
        Ok(_) => println!("loads: yes"),
        Err(e) => println!("loads: no: {e}"),
    }
    Ok(())
}

/// A linear memory's sizes, readable.
fn memory_text(memory: Option<(u64, Option<u64>)>) -> String {
    let size = |bytes: u64| match bytes {
        b if b >= 1 << 30 => format!("{} GiB", b >> 30),
        b if b >= 1 << 20 => format!("{} MiB", b >> 20),
        b => format!("{} KiB", b >> 10),
    };
    match memory {
        None => "none".to_string(),
        Some((initial, None)) => format!("{} at start, no maximum", size(initial)),
        Some((initial, Some(max))) => format!("{} at start, at most {}", size(initial), size(max)),
    }
}

fn print_headers(title: &str, headers: &Headers) {
    println!("{title}:");
    for (k, v) in headers.iter() {
        println!("  {}: {}", String::from_utf8_lossy(k), String::from_utf8_lossy(v));
    }
}

pub fn run(o: RunOptions) -> anyhow::Result<()> {
    let (_engine, module) = load(&o.plugin)?;
    let mut vm = WasmVm::new(&module, o.vm_config, Box::new(PrintLogs))?;
    let root = vm.create_root_context(Arc::new(o.plugin_config))?;
    let ctx = vm.create_context(root, ContextKind::Http)?;

    let mut request =
        Headers::from_pairs([(":method", "GET"), (":path", "/"), (":authority", "localhost"), (":scheme", "http")]);
    for (k, v) in &o.request_headers {
        request.replace(k.as_bytes(), v.as_bytes());
    }
    let mut response = Headers::from_pairs([(":status", "200")]);
    for (k, v) in &o.response_headers {
        response.replace(k.as_bytes(), v.as_bytes());
    }

    vm.stream(ctx).context("stream")?.request_headers = Some(request);
    let status = vm.on_request_headers(ctx, o.request_body.is_none())?;
    report_headers("on_request_headers", status);
    if let Some(body) = o.request_body {
        vm.stream(ctx).context("stream")?.request_body = Some(body.into_bytes());
        report_body("on_request_body", vm.on_request_body(ctx, true)?);
    }
    let stream = vm.stream(ctx).context("stream")?;
    if let Some(h) = stream.request_headers.as_ref() {
        print_headers("request headers sent upstream", h);
    }
    vm.stream(ctx).context("stream")?.response_headers = Some(response);
    report_headers("on_response_headers", vm.on_response_headers(ctx, o.response_body.is_none())?);
    if let Some(body) = o.response_body {
        vm.stream(ctx).context("stream")?.response_body = Some(body.into_bytes());
        report_body("on_response_body", vm.on_response_body(ctx, true)?);
    }
    if let Some(h) = vm.stream(ctx).context("stream")?.response_headers.as_ref() {
        print_headers("response headers sent downstream", h);
    }
    for (_, action) in vm.take_actions() {
        println!("the plugin asked: {action:?}");
    }
    vm.finish_stream(ctx)?;
    Ok(())
}

fn report_headers(callback: &str, status: FilterHeadersStatus) {
    if status.is_stop() {
        println!("{callback}: the plugin paused the stream ({status:?})");
    }
}

fn report_body(callback: &str, status: FilterDataStatus) {
    if status.is_stop() {
        println!("{callback}: the plugin paused the stream ({status:?})");
    }
}

/// Splits `NAME: VALUE` (or `NAME=VALUE` with `sep` '=').
fn split_pair(arg: &str, sep: char, what: &str) -> Result<(String, String), String> {
    match arg.split_once(sep) {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_string(), v.trim_start().to_string())),
        _ => Err(format!("{what} {arg:?} is not NAME{sep}VALUE")),
    }
}
