//! `wasmproxy -c FILE`: load an Envoy configuration and serve it (or only validate it).

use std::path::PathBuf;

use wasmproxy_proxy::{Server, ServerOptions};

use crate::logging::{self, LogSettings};

/// Envoy's flags that wasmproxy reads.
pub struct ServeOptions {
    config: PathBuf,
    concurrency: Option<usize>,
    log_level: String,
    component_log_level: Vec<(String, String)>,
    log_format: String,
    log_path: Option<PathBuf>,
    validate_only: bool,
    wasm_cache_dir: Option<PathBuf>,
    drain_time_s: u64,
}

impl ServeOptions {
    pub fn parse(mut args: impl Iterator<Item = String>) -> Result<ServeOptions, String> {
        let mut config = None;
        let mut o = ServeOptions {
            config: PathBuf::new(),
            concurrency: None,
            log_level: "info".into(),
            component_log_level: Vec::new(),
            log_format: logging::DEFAULT_FORMAT.into(),
            log_path: None,
            validate_only: false,
            wasm_cache_dir: default_cache_dir(),
            drain_time_s: 30,
        };
        while let Some(arg) = args.next() {
            let mut value = |name: &str| args.next().ok_or(format!("{name} needs a value"));
            match arg.as_str() {
                "-c" | "--config-path" => config = Some(PathBuf::from(value(&arg)?)),
                "--concurrency" => {
                    let v = value(&arg)?;
                    o.concurrency = Some(v.parse().map_err(|_| format!("--concurrency {v:?} is not a number"))?);
                }
                "-l" | "--log-level" => o.log_level = value(&arg)?,
                "--component-log-level" => {
                    // Envoy's `component:level,component:level`; `wasm` is the plugins' logs.
                    for pair in value(&arg)?.split(',') {
                        let (component, level) = pair
                            .split_once(':')
                            .ok_or(format!("--component-log-level {pair:?}: expected COMPONENT:LEVEL"))?;
                        o.component_log_level.push((component.trim().to_string(), level.trim().to_string()));
                    }
                }
                "--log-format" => o.log_format = value(&arg)?,
                // Envoy's flag; here it bounds the drain after SIGTERM or /quitquitquit.
                "--drain-time-s" => {
                    let v = value(&arg)?;
                    o.drain_time_s =
                        v.parse().map_err(|_| format!("--drain-time-s {v:?} is not a number of seconds"))?;
                }
                "--log-path" => o.log_path = Some(PathBuf::from(value(&arg)?)),
                // wasmproxy's own: where compiled plugins are kept, so a restart skips compiling.
                "--wasm-cache-dir" => o.wasm_cache_dir = Some(PathBuf::from(value(&arg)?)),
                "--no-wasm-cache" => o.wasm_cache_dir = None,
                "--mode" => match value(&arg)?.as_str() {
                    "serve" => o.validate_only = false,
                    "validate" => o.validate_only = true,
                    other => return Err(format!("--mode {other:?}: expected serve or validate")),
                },
                other => return Err(format!("unknown option {other}")),
            }
        }
        o.config = config.ok_or("-c CONFIG is required")?;
        Ok(o)
    }
}

impl ServeOptions {
    /// The options as admin `/server_info` shows them (Envoy's `command_line_options`
    /// names, for the options wasmproxy has).
    fn command_line(&self, concurrency: usize) -> serde_json::Value {
        let components: Vec<String> = self.component_log_level.iter().map(|(c, l)| format!("{c}:{l}")).collect();
        serde_json::json!({
            "concurrency": concurrency,
            "config_path": self.config.display().to_string(),
            "log_level": self.log_level,
            "component_log_level": components.join(","),
            "log_format": self.log_format,
            "log_path": self.log_path.as_ref().map(|p| p.display().to_string()).unwrap_or_default(),
            "mode": if self.validate_only { "Validate" } else { "Serve" },
            "drain_time": format!("{}s", self.drain_time_s),
            "wasm_cache_dir": self.wasm_cache_dir.as_ref().map(|p| p.display().to_string()).unwrap_or_default(),
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
    let (config, warnings) = wasmproxy_config::load_file_with_warnings(&o.config)
        .map_err(|errors| anyhow::anyhow!("configuration {} is not valid:\n{errors}", o.config.display()))?;
    for warning in &warnings {
        note!("wasmproxy: warning: {warning}");
    }
    if o.validate_only {
        // As Envoy's validation does, the plugins' files are read (not compiled).
        for plugin in config.wasm_plugins() {
            if let wasmproxy_config::model::WasmCode::File(path) = &plugin.vm.code
                && let Err(e) = std::fs::File::open(path)
            {
                anyhow::bail!("Wasm plugin {:?}: Invalid path: {} ({e})", plugin.name, path.display());
            }
        }
        println!("configuration '{}' OK", o.config.display());
        return Ok(());
    }
    let mut options = ServerOptions::default();
    if let Some(n) = o.concurrency {
        options.concurrency = n;
    }
    options.engine.cache_dir = o.wasm_cache_dir.clone();
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
    crate::signals::stop_on_termination(signals, server.stopper());
    server.wait();
    tracing::info!("exiting");
    Ok(())
}

/// Where compiled plugins are kept by default: `$XDG_CACHE_HOME/wasmproxy`, else
/// `$HOME/.cache/wasmproxy` (none if neither is set).
fn default_cache_dir() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").filter(|h| !h.is_empty()).map(|h| PathBuf::from(h).join(".cache")))?;
    Some(base.join("wasmproxy"))
}
