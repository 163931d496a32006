//! `wasmproxy -c FILE`: load an Envoy configuration and serve it (or only validate it).

use std::path::PathBuf;

use wasmproxy_host::Compiler;
use wasmproxy_proxy::{Server, ServerOptions};

use crate::logging::{self, LogSettings};

/// Envoy's flags that wasmproxy reads.
pub struct ServeOptions {
    /// `-c`: the bootstrap file.
    config: Option<PathBuf>,
    /// `--config-yaml`: the bootstrap as text.
    config_yaml: Option<String>,
    concurrency: Option<usize>,
    log_level: String,
    component_log_level: Vec<(String, String)>,
    log_format: String,
    log_path: Option<PathBuf>,
    mode: Mode,
    wasm_cache_dir: Option<PathBuf>,
    wasm_compiler: Compiler,
    drain_time_s: u64,
    /// `--service-cluster`, `--service-node`, `--service-zone`: override `node.cluster`,
    /// `node.id` and `node.locality.zone`, as in Envoy.
    service_cluster: Option<String>,
    service_node: Option<String>,
    service_zone: Option<String>,
    /// `--admin-address-path`: where the admin address is written once it listens.
    admin_address_path: Option<PathBuf>,
    /// `--base-id`, and `--base-id-path`, where it is written (Envoy's identifier of the
    /// resources a hot restart shares; wasmproxy has none, but writes it as Envoy does).
    base_id: u32,
    base_id_path: Option<PathBuf>,
    /// Envoy's flags taken without effect here, for the warning that names them.
    without_effect: Vec<String>,
}

/// `--mode`.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Serve,
    /// Check the configuration (and read the plugin files), then exit.
    Validate,
    /// Start everything (listeners bound, plugins loaded), then exit.
    InitOnly,
}

/// Envoy 1.40's flags that change nothing in wasmproxy (hot restart, core dumps, mutex
/// tracing, ...): taken, and named in a warning. The `bool` says whether one takes a value.
const WITHOUT_EFFECT: &[(&str, bool)] = &[
    ("--enable-core-dump", false),
    ("--cpuset-threads", false),
    ("--enable-mutex-tracing", false),
    ("--hot-restart-version", false),
    ("--enable-fine-grain-logging", false),
    ("--log-format-escaped", false),
    ("--log-stacktrace-single-entry", false),
    ("--skip-deprecated-logs", false),
    ("--ignore-unknown-dynamic-fields", false),
    ("--allow-unknown-static-fields", false),
    ("--allow-unknown-fields", false),
    ("--skip-hot-restart-parent-stats", false),
    ("--skip-hot-restart-on-no-parent", false),
    ("--use-dynamic-base-id", false),
    ("--stats-tag", true),
    ("--socket-mode", true),
    ("--socket-path", true),
    ("--disable-extensions", true),
    ("--parent-shutdown-time-s", true),
    ("--drain-strategy", true),
    ("--restart-epoch", true),
    ("--local-address-ip-version", true),
    ("--file-flush-min-size-kb", true),
];

impl ServeOptions {
    pub fn parse(mut args: impl Iterator<Item = String>) -> Result<ServeOptions, String> {
        let mut o = ServeOptions {
            config: None,
            config_yaml: None,
            concurrency: None,
            log_level: "info".into(),
            component_log_level: Vec::new(),
            log_format: logging::DEFAULT_FORMAT.into(),
            log_path: None,
            mode: Mode::Serve,
            wasm_cache_dir: default_cache_dir(),
            wasm_compiler: Compiler::Tiered,
            drain_time_s: 30,
            service_cluster: None,
            service_node: None,
            service_zone: None,
            admin_address_path: None,
            base_id: 0,
            base_id_path: None,
            without_effect: Vec::new(),
        };
        while let Some(arg) = args.next() {
            // Envoy's `--flag=value` form too.
            let (flag, inline) = match arg.split_once('=') {
                Some((f, v)) if f.starts_with("--") => (f.to_string(), Some(v.to_string())),
                _ => (arg.clone(), None),
            };
            let mut value = || inline.clone().or_else(|| args.next()).ok_or(format!("{flag} needs a value"));
            if flag == "--" || flag == "--ignore_rest" {
                break;
            }
            if let Some((_, takes_value)) = WITHOUT_EFFECT.iter().find(|(f, _)| *f == flag) {
                if *takes_value {
                    value()?;
                }
                o.without_effect.push(flag);
                continue;
            }
            o.read_flag(&flag, &mut value)?;
        }
        if o.config.is_none() && o.config_yaml.is_none() {
            return Err("-c CONFIG (or --config-yaml) is required".into());
        }
        Ok(o)
    }

    /// Reads one of the flags that mean something here, its value from `value`.
    fn read_flag(&mut self, flag: &str, value: &mut dyn FnMut() -> Result<String, String>) -> Result<(), String> {
        let number = |v: String, what: &str| v.parse::<u64>().map_err(|_| format!("{flag} {v:?} is not {what}"));
        match flag {
            "-c" | "--config-path" => self.config = Some(PathBuf::from(value()?)),
            "--config-yaml" => self.config_yaml = Some(value()?),
            "--concurrency" => self.concurrency = Some(number(value()?, "a number")? as usize),
            "-l" | "--log-level" => self.log_level = value()?,
            "--component-log-level" => {
                // Envoy's `component:level,component:level`; `wasm` is the plugins' logs.
                for pair in value()?.split(',') {
                    let (component, level) =
                        pair.split_once(':').ok_or(format!("{flag} {pair:?}: expected COMPONENT:LEVEL"))?;
                    self.component_log_level.push((component.trim().to_string(), level.trim().to_string()));
                }
            }
            "--log-format" => self.log_format = value()?,
            // Envoy's flag; here it bounds the drain after SIGTERM or /quitquitquit.
            "--drain-time-s" => self.drain_time_s = number(value()?, "a number of seconds")?,
            "--log-path" => self.log_path = Some(PathBuf::from(value()?)),
            // wasmproxy's own: where compiled plugins are kept, so a restart skips compiling.
            "--wasm-cache-dir" => self.wasm_cache_dir = Some(PathBuf::from(value()?)),
            "--no-wasm-cache" => self.wasm_cache_dir = None,
            // wasmproxy's own: start on baseline code while optimizing, or optimize first.
            "--wasm-compiler" => {
                self.wasm_compiler = match value()?.as_str() {
                    "tiered" => Compiler::Tiered,
                    "optimizing" => Compiler::Optimizing,
                    other => return Err(format!("--wasm-compiler {other:?}: expected tiered or optimizing")),
                }
            }
            "--mode" => {
                self.mode = match value()?.as_str() {
                    "serve" => Mode::Serve,
                    "validate" => Mode::Validate,
                    "init_only" => Mode::InitOnly,
                    other => return Err(format!("--mode {other:?}: expected serve, validate or init_only")),
                }
            }
            "--service-cluster" => self.service_cluster = Some(value()?),
            "--service-node" => self.service_node = Some(value()?),
            "--service-zone" => self.service_zone = Some(value()?),
            "--admin-address-path" => self.admin_address_path = Some(PathBuf::from(value()?)),
            "--base-id" => {
                let v = number(value()?, "a number")?;
                self.base_id = u32::try_from(v).map_err(|_| format!("{flag} {v} is out of range"))?;
            }
            "--base-id-path" => self.base_id_path = Some(PathBuf::from(value()?)),
            // There is no hot restart to disable.
            "--disable-hot-restart" => {}
            // Unknown fields are always refused.
            "--reject-unknown-dynamic-fields" => {}
            // Access logs are written as they come, so within any flush interval.
            "--file-flush-interval-msec" => {
                number(value()?, "a number")?;
            }
            other => return Err(format!("unknown option {other}")),
        }
        Ok(())
    }
}

impl ServeOptions {
    /// As in Envoy, the command line's names for this node win over the bootstrap's.
    fn name_the_node(&self, node: &mut wasmproxy_config::model::Node) {
        for (flag, field) in [(&self.service_cluster, &mut node.cluster), (&self.service_node, &mut node.id)] {
            if let Some(value) = flag {
                value.clone_into(field);
            }
        }
        if let Some(zone) = &self.service_zone {
            zone.clone_into(&mut node.locality.zone);
        }
    }

    /// The options as admin `/server_info` shows them (Envoy's `command_line_options`
    /// names, for the options wasmproxy has).
    fn command_line(&self, concurrency: usize) -> serde_json::Value {
        let components: Vec<String> = self.component_log_level.iter().map(|(c, l)| format!("{c}:{l}")).collect();
        serde_json::json!({
            "concurrency": concurrency,
            "config_path": self.config.as_ref().map(|p| p.display().to_string()).unwrap_or_default(),
            "config_yaml": self.config_yaml.clone().unwrap_or_default(),
            "service_cluster": self.service_cluster.clone().unwrap_or_default(),
            "service_node": self.service_node.clone().unwrap_or_default(),
            "service_zone": self.service_zone.clone().unwrap_or_default(),
            "base_id": self.base_id,
            "log_level": self.log_level,
            "component_log_level": components.join(","),
            "log_format": self.log_format,
            "log_path": self.log_path.as_ref().map(|p| p.display().to_string()).unwrap_or_default(),
            "mode": match self.mode {
                Mode::Serve => "Serve",
                Mode::Validate => "Validate",
                Mode::InitOnly => "InitOnly",
            },
            "drain_time": format!("{}s", self.drain_time_s),
            "wasm_cache_dir": self.wasm_cache_dir.as_ref().map(|p| p.display().to_string()).unwrap_or_default(),
            "wasm_compiler": match self.wasm_compiler {
                Compiler::Tiered => "tiered",
                Compiler::Optimizing => "optimizing",
            },
        })
    }
}

pub fn run(o: ServeOptions) -> anyhow::Result<()> {
    // Before any thread starts, so every thread inherits the mask and the signal thread
    // alone takes SIGTERM and SIGINT.
    let signals = crate::signals::block_termination();
    let settings = LogSettings {
        level: o.log_level.clone(),
        components: o.component_log_level.clone(),
        format: o.log_format.clone(),
        path: o.log_path.clone(),
    };
    let levels = logging::init(&settings).map_err(|e| anyhow::anyhow!(e))?;
    let (mut config, warnings) = load_config(&o)?;
    for warning in &warnings {
        note!("wasmproxy: warning: {warning}");
    }
    if !o.without_effect.is_empty() {
        note!(
            "wasmproxy: warning: Envoy options without effect here (no hot restart, ...): {}",
            o.without_effect.join(", ")
        );
    }
    o.name_the_node(&mut config.node);
    let shown = o.config.as_ref().map_or("--config-yaml".to_string(), |p| p.display().to_string());
    if o.mode == Mode::Validate {
        // As Envoy's validation does, the plugins' files are read (not compiled).
        for plugin in config.wasm_plugins() {
            if let wasmproxy_config::model::WasmCode::File(path) = &plugin.vm.code
                && let Err(e) = std::fs::File::open(path)
            {
                anyhow::bail!("Wasm plugin {:?}: Invalid path: {} ({e})", plugin.name, path.display());
            }
        }
        // And, as Envoy's, the certificates, keys and CAs.
        wasmproxy_proxy::check_tls(&config).map_err(|e| anyhow::anyhow!("{e}"))?;
        println!("configuration '{shown}' OK");
        return Ok(());
    }
    let mut options = ServerOptions::default();
    if let Some(n) = o.concurrency {
        options.concurrency = n;
    }
    options.engine.cache_dir = o.wasm_cache_dir.clone();
    options.engine.compiler = o.wasm_compiler;
    options.command_line = o.command_line(options.concurrency);
    options.logging = Some(levels);
    options.drain_time = std::time::Duration::from_secs(o.drain_time_s);
    let server = Server::start(config, options)?;
    for (name, addr) in &server.listeners {
        note!("wasmproxy: listener {name} on {addr}");
    }
    if let Some(addr) = server.admin {
        note!("wasmproxy: admin on {addr}");
    }
    write_addresses(&o, server.admin)?;
    if o.mode == Mode::InitOnly {
        // Everything started: listeners bound, plugins loaded and configured.
        server.stop();
        return Ok(());
    }
    crate::signals::stop_on_termination(signals, server.stopper());
    server.wait();
    tracing::info!("exiting");
    Ok(())
}

/// Writes what `--admin-address-path` and `--base-id-path` ask for, once the server runs.
fn write_addresses(o: &ServeOptions, admin: Option<std::net::SocketAddr>) -> anyhow::Result<()> {
    let write = |flag: &str, path: &std::path::Path, text: String| {
        std::fs::write(path, text).map_err(|e| anyhow::anyhow!("{flag} {}: {e}", path.display()))
    };
    if let (Some(path), Some(addr)) = (&o.admin_address_path, admin) {
        write("--admin-address-path", path, addr.to_string())?;
    }
    if let Some(path) = &o.base_id_path {
        write("--base-id-path", path, o.base_id.to_string())?;
    }
    Ok(())
}

/// The bootstrap from `-c`, from `--config-yaml`, or from both: the YAML merged into the
/// file as Envoy merges it (messages field by field, lists appended, values replaced).
fn load_config(o: &ServeOptions) -> anyhow::Result<(wasmproxy_config::Bootstrap, Vec<wasmproxy_config::ConfigError>)> {
    let invalid = |what: &str, errors: wasmproxy_config::ConfigErrors| {
        anyhow::anyhow!("configuration {what} is not valid:\n{errors}")
    };
    let here = std::path::Path::new("");
    match (&o.config, &o.config_yaml) {
        (Some(path), None) => {
            wasmproxy_config::load_file_with_warnings(path).map_err(|e| invalid(&path.display().to_string(), e))
        }
        (None, Some(yaml)) => {
            wasmproxy_config::load_str_with_warnings(yaml, here).map_err(|e| invalid("--config-yaml", e))
        }
        (Some(path), Some(yaml)) => {
            let file = wasmproxy_config::load_file(path).map_err(|e| invalid(&path.display().to_string(), e))?;
            let extra = wasmproxy_config::load_str(yaml, here).map_err(|e| invalid("--config-yaml", e))?;
            let mut merged = file.document;
            merge(&mut merged, extra.document);
            wasmproxy_config::load_str_with_warnings(&merged.to_string(), here)
                .map_err(|e| invalid(&format!("{} with --config-yaml", path.display()), e))
        }
        (None, None) => anyhow::bail!("-c CONFIG (or --config-yaml) is required"),
    }
}

/// Protobuf's merge on JSON: objects field by field, lists appended, the rest replaced.
fn merge(into: &mut serde_json::Value, from: serde_json::Value) {
    use serde_json::Value;
    match (into, from) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in b {
                match a.get_mut(&k) {
                    Some(slot) => merge(slot, v),
                    None => {
                        a.insert(k, v);
                    }
                }
            }
        }
        (Value::Array(a), Value::Array(b)) => a.extend(b),
        (slot, v) => *slot = v,
    }
}

/// Where compiled plugins are kept by default: `$XDG_CACHE_HOME/wasmproxy`, else
/// `$HOME/.cache/wasmproxy` (none if neither is set).
pub(crate) fn default_cache_dir() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").filter(|h| !h.is_empty()).map(|h| PathBuf::from(h).join(".cache")))?;
    Some(base.join("wasmproxy"))
}
