//! `wasmproxy -c FILE`: load an Envoy configuration and serve it (or only validate it).

use std::path::PathBuf;

use wasmproxy_proxy::{Server, ServerOptions};

/// Envoy's flags that wasmproxy reads.
pub struct ServeOptions {
    config: PathBuf,
    concurrency: Option<usize>,
    log_level: String,
    component_log_level: Vec<(String, String)>,
    validate_only: bool,
    wasm_cache_dir: Option<PathBuf>,
}

impl ServeOptions {
    pub fn parse(mut args: impl Iterator<Item = String>) -> Result<ServeOptions, String> {
        let mut config = None;
        let mut o = ServeOptions {
            config: PathBuf::new(),
            concurrency: None,
            log_level: "info".into(),
            component_log_level: Vec::new(),
            validate_only: false,
            wasm_cache_dir: None,
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
                // wasmproxy's own: keep compiled plugins on disk, so a restart skips compiling.
                "--wasm-cache-dir" => o.wasm_cache_dir = Some(PathBuf::from(value(&arg)?)),
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

pub fn run(o: ServeOptions) -> anyhow::Result<()> {
    // A plain level applies to wasmproxy and plugin logs; wasmtime's own logs stay at warn.
    // A full filter (with `=`) is taken as written.
    let mut directives = if o.log_level.contains('=') {
        o.log_level.clone()
    } else {
        // EnvFilter matches targets by prefix: `wasm=...` (plugin logs) would also catch
        // `wasmproxy_*` and `wasmtime*`, so those get directives of their own.
        format!("{0},wasmproxy={0},wasmtime=warn,cranelift=warn", o.log_level)
    };
    for (component, level) in &o.component_log_level {
        let target = if component == "wasm" { "wasm" } else { "wasmproxy" };
        directives.push_str(&format!(",{target}={level}"));
    }
    let filter = tracing_subscriber::EnvFilter::try_new(&directives)
        .map_err(|e| anyhow::anyhow!("--log-level {:?}: {e}", o.log_level))?;
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
    let (config, warnings) = wasmproxy_config::load_file_with_warnings(&o.config)
        .map_err(|errors| anyhow::anyhow!("configuration {} is not valid:\n{errors}", o.config.display()))?;
    for warning in &warnings {
        eprintln!("wasmproxy: warning: {warning}");
    }
    if o.validate_only {
        println!("configuration '{}' OK", o.config.display());
        return Ok(());
    }
    let mut options = ServerOptions::default();
    if let Some(n) = o.concurrency {
        options.concurrency = n;
    }
    options.engine.cache_dir = o.wasm_cache_dir;
    let server = Server::start(config, options)?;
    for (name, addr) in &server.listeners {
        eprintln!("wasmproxy: listener {name} on {addr}");
    }
    if let Some(addr) = server.admin {
        eprintln!("wasmproxy: admin on {addr}");
    }
    server.wait();
    Ok(())
}
