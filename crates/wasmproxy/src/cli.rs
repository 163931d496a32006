//! Command-line parsing.

use std::path::PathBuf;

pub const USAGE: &str = "\
usage:
  wasmproxy -c CONFIG.yaml [--config-yaml YAML] [--concurrency N] [--log-level LEVEL]
            [--component-log-level wasm:LEVEL,...] [--log-format FORMAT] [--log-path FILE]
            [--mode serve|validate|init_only] [--drain-time-s N] [--service-cluster NAME]
            [--service-node NAME] [--service-zone NAME] [--admin-address-path FILE]
            [--base-id N] [--base-id-path FILE] [--wasm-cache-dir DIR | --no-wasm-cache]
            [--wasm-compiler tiered|optimizing]
            (and every other flag of Envoy 1.40, taken with a warning: docs/CONFIG.md)
  wasmproxy plugin-info PLUGIN.wasm
  wasmproxy plugin-run PLUGIN.wasm [options]
  wasmproxy plugin-test SPEC.yaml... [--envoy ENVOY] [--junit FILE]

Levels are Envoy's: trace, debug, info, warning, error, critical, off. --log-format takes
Envoy's (spdlog's) flags; the default is '[%Y-%m-%d %T.%e][%t][%l][%n] [%g:%#] %v', in UTC.

Compiled plugins are kept on disk (by the module's sha256 and the engine's settings), so
a restart loads them instead of compiling them: in $XDG_CACHE_HOME/wasmproxy (else
~/.cache/wasmproxy), in DIR with --wasm-cache-dir, nowhere with --no-wasm-cache. A plugin
not in the cache starts on baseline code (fast to compile, slower to run) while optimized
code is compiled in the background; its VMs then move to it, new streams starting in new
VMs (--wasm-compiler tiered, the default). --wasm-compiler optimizing compiles optimized
code before serving, as Envoy's start waits for its plugins.

plugin-run sends one HTTP exchange through the plugin (request headers and body, then
response headers and body) and prints what the plugin logged and changed.
  --configuration TEXT         plugin configuration (buffer 7)
  --configuration-file FILE    plugin configuration read from a file
  --vm-configuration TEXT      VM configuration (buffer 6)
  --name NAME --root-id ID --vm-id ID   as in Envoy's PluginConfig / VmConfig
  --request-header 'NAME: VALUE'        (repeatable; default GET / on localhost)
  --request-body TEXT
  --response-header 'NAME: VALUE'       (repeatable; default :status 200)
  --response-body TEXT
  --env NAME=VALUE             an environment variable the plugin may read (repeatable)

plugin-info prints what a module is: its ABI version and sha256, the language and SDK it was
written with (when its names tell), its memory, what its trap backtraces will show (function
names; files and lines with DWARF), its exports and imports, the imports wasmproxy does not
provide, and whether it loads.

plugin-test runs a plugin through the cases of a spec (YAML: docs/PLUGIN_AUTHORS.md) on the
proxy, in this process: its configuration, the requests, what the upstream and each
callout service answer, ticks and queue messages, and what each case expects (status,
headers, bodies, what the upstream and the services receive, log lines, metrics, shared
data). It prints each failure as a difference and exits 1 if any case failed.
  --envoy ENVOY                also run the cases on Envoy (that binary) and report where
                               the two proxies disagree
  --junit FILE                 write the results as JUnit XML";

/// What to do.
pub enum Command {
    /// Serve (or only validate) an Envoy configuration.
    Serve(Box<crate::serve::ServeOptions>),
    /// Print what a module is (see `plugin_run::info`).
    PluginInfo(PathBuf),
    /// Run one exchange through a plugin.
    PluginRun(Box<crate::plugin_run::RunOptions>),
    /// Run a plugin through the cases of specs.
    PluginTest(crate::plugin_test::TestOptions),
    /// Print the usage.
    Help,
    /// Print the version.
    Version,
}

impl Command {
    pub fn parse(mut args: impl Iterator<Item = String>) -> Result<Command, String> {
        let Some(first) = args.next() else { return Ok(Command::Help) };
        match first.as_str() {
            "-h" | "--help" | "help" => Ok(Command::Help),
            "--version" => Ok(Command::Version),
            "plugin-info" => {
                let file = args.next().ok_or("plugin-info needs a .wasm file")?;
                match args.next() {
                    Some(extra) => Err(format!("unexpected argument {extra:?}")),
                    None => Ok(Command::PluginInfo(file.into())),
                }
            }
            flag if flag.starts_with('-') => {
                let all: Vec<String> = std::iter::once(first).chain(args).collect();
                // As in Envoy, `--version` or `--help` anywhere wins.
                if all.iter().any(|a| a == "--version") {
                    return Ok(Command::Version);
                }
                if all.iter().any(|a| a == "-h" || a == "--help") {
                    return Ok(Command::Help);
                }
                crate::serve::ServeOptions::parse(all.into_iter()).map(|o| Command::Serve(Box::new(o)))
            }
            "plugin-run" => crate::plugin_run::RunOptions::parse(args).map(|o| Command::PluginRun(Box::new(o))),
            "plugin-test" => crate::plugin_test::TestOptions::parse(args).map(Command::PluginTest),
            other => Err(format!("unknown command {other:?}")),
        }
    }

    /// Runs it: false if it ran and found failures (a plugin test that failed).
    pub fn run(self) -> anyhow::Result<bool> {
        match self {
            Command::Help => println!("{USAGE}"),
            Command::Version => println!("wasmproxy {}", env!("CARGO_PKG_VERSION")),
            Command::Serve(options) => crate::serve::run(*options)?,
            Command::PluginInfo(file) => crate::plugin_run::info(&file)?,
            Command::PluginRun(options) => crate::plugin_run::run(*options)?,
            Command::PluginTest(options) => return crate::plugin_test::run(options),
        }
        Ok(true)
    }
}
