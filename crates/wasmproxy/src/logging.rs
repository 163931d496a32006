//! Process logs as Envoy writes them: `--log-level`, `--component-log-level`,
//! `--log-format` (spdlog's flags: Envoy's default is `[%Y-%m-%d %T.%e][%t][%l][%n] [%g:%#] %v`),
//! `--log-path`, and levels changed at run time through admin `/logging`.
//!
//! wasmproxy has three loggers: `wasmproxy` (the proxy's own logs), `wasm` (plugins' logs,
//! `wasm log <root_id> <vm_id>: ...`) and `wasmtime` (the Wasm runtime's). Envoy's
//! component names (`upstream`, `http`, `connection`, ...) are accepted as `wasmproxy`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};

use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, MakeWriter};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::{EnvFilter, reload};
use wasmproxy_proxy::{LogControl, LogControlError};

/// Envoy's default `--log-format`.
pub const DEFAULT_FORMAT: &str = "[%Y-%m-%d %T.%e][%t][%l][%n] [%g:%#] %v";

/// The loggers, in `/logging` order.
const LOGGERS: [&str; 3] = ["wasm", "wasmproxy", "wasmtime"];

/// Envoy component names that are part of the `wasmproxy` logger here.
const ENVOY_COMPONENTS: &[&str] = &[
    "admin",
    "client",
    "config",
    "connection",
    "conn_handler",
    "dns",
    "filter",
    "grpc",
    "hc",
    "http",
    "http2",
    "init",
    "main",
    "misc",
    "pool",
    "router",
    "runtime",
    "upstream",
];

/// The process's log settings from the command line.
pub struct LogSettings {
    /// `--log-level`.
    pub level: String,
    /// `--component-log-level` pairs.
    pub components: Vec<(String, String)>,
    /// `--log-format`.
    pub format: String,
    /// `--log-path`.
    pub path: Option<std::path::PathBuf>,
}

/// The loggers' levels, changed at run time by rebuilding the filter.
pub struct Levels {
    levels: Mutex<BTreeMap<&'static str, &'static str>>,
    handle: reload::Handle<EnvFilter, tracing_subscriber::Registry>,
}

/// Envoy's level name → the `tracing` directive and the name `/logging` shows.
fn level(name: &str) -> Option<&'static str> {
    Some(match name {
        "trace" => "trace",
        "debug" => "debug",
        "info" => "info",
        "warning" | "warn" => "warning",
        "error" | "err" => "error",
        "critical" => "critical",
        "off" => "off",
        _ => return None,
    })
}

fn directive(level: &str) -> &'static str {
    match level {
        "trace" => "trace",
        "debug" => "debug",
        "info" => "info",
        "warning" => "warn",
        "error" | "critical" => "error",
        _ => "off",
    }
}

fn logger(name: &str) -> Option<&'static str> {
    if let Some(l) = LOGGERS.iter().find(|l| **l == name) {
        return Some(l);
    }
    ENVOY_COMPONENTS.contains(&name).then_some("wasmproxy")
}

impl Levels {
    fn filter(levels: &BTreeMap<&'static str, &'static str>) -> EnvFilter {
        // Other crates (hyper, ...) follow the proxy's level; the runtime's own logs go
        // to `wasmtime` (cranelift's too). The longest matching target wins in EnvFilter,
        // so `wasm=` does not catch `wasmproxy*` or `wasmtime*`.
        // rustls warns of each peer's odd handshake (an address sent as SNI, ...), which
        // Envoy logs at debug: its warnings show at debug and trace only.
        let get = |l: &str| directive(levels.get(l).copied().unwrap_or("info"));
        let tls = match get("wasmproxy") {
            level @ ("trace" | "debug" | "off") => level,
            _ => "error",
        };
        let directives = format!(
            "{p},wasm={w},wasmproxy={p},wasmtime={r},cranelift={r},rustls={tls}",
            p = get("wasmproxy"),
            w = get("wasm"),
            r = get("wasmtime")
        );
        EnvFilter::try_new(directives).unwrap_or_else(|_| EnvFilter::new("info"))
    }

    fn apply(&self, levels: &BTreeMap<&'static str, &'static str>) {
        let _ = self.handle.reload(Levels::filter(levels));
    }
}

impl LogControl for Levels {
    fn levels(&self) -> Vec<(String, String)> {
        let levels = self.levels.lock().unwrap_or_else(|e| e.into_inner());
        LOGGERS.iter().map(|l| (l.to_string(), levels.get(l).copied().unwrap_or("info").to_string())).collect()
    }

    fn set(&self, name: Option<&str>, new_level: &str) -> Result<(), LogControlError> {
        let new_level = level(new_level).ok_or(LogControlError::UnknownLevel)?;
        let mut levels = self.levels.lock().unwrap_or_else(|e| e.into_inner());
        match name {
            None => {
                for l in LOGGERS {
                    levels.insert(l, new_level);
                }
                tracing::info!("change all log levels: level='{new_level}'");
            }
            Some(name) => {
                let l = logger(name).ok_or(LogControlError::UnknownLogger)?;
                levels.insert(l, new_level);
                tracing::info!("change log level: name='{name}' level='{new_level}'");
            }
        }
        self.apply(&levels);
        Ok(())
    }
}

/// Installs the process logger; returns the handle admin `/logging` changes levels with.
pub fn init(settings: &LogSettings) -> Result<Arc<Levels>, String> {
    let base = level(&settings.level).ok_or_else(|| {
        format!("--log-level {:?}: expected one of trace, debug, info, warning, error, critical, off", settings.level)
    })?;
    let mut levels: BTreeMap<&'static str, &'static str> = LOGGERS.iter().map(|l| (*l, base)).collect();
    // The runtime's own logs are noisy below warning; they follow an explicit setting only.
    if matches!(base, "trace" | "debug" | "info") {
        levels.insert("wasmtime", "warning");
    }
    for (component, l) in &settings.components {
        let name =
            logger(component).ok_or_else(|| format!("--component-log-level: unknown component {component:?}"))?;
        let l = level(l).ok_or_else(|| format!("--component-log-level {component}:{l}: unknown level"))?;
        levels.insert(name, l);
    }
    let pattern = Pattern::parse(&settings.format);
    let writer = match &settings.path {
        Some(path) => {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|e| format!("--log-path {}: {e}", path.display()))?;
            LogWriter::File(Arc::new(Mutex::new(file)))
        }
        None => LogWriter::Stderr,
    };
    let (filter, handle) = reload::Layer::new(Levels::filter(&levels));
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    tracing_subscriber::registry()
        .with(filter)
        .with(tracing_subscriber::fmt::layer().event_format(pattern).with_writer(writer))
        .try_init()
        .map_err(|e| format!("cannot install the logger: {e}"))?;
    Ok(Arc::new(Levels { levels: Mutex::new(levels), handle }))
}

/// Where log lines go.
#[derive(Clone)]
enum LogWriter {
    Stderr,
    File(Arc<Mutex<std::fs::File>>),
}

/// One line at a time, written whole.
enum LineWriter {
    Stderr(std::io::Stderr),
    File(Arc<Mutex<std::fs::File>>),
}

impl std::io::Write for LineWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            LineWriter::Stderr(s) => s.write(buf),
            LineWriter::File(f) => f.lock().unwrap_or_else(|e| e.into_inner()).write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            LineWriter::Stderr(s) => s.flush(),
            LineWriter::File(f) => f.lock().unwrap_or_else(|e| e.into_inner()).flush(),
        }
    }
}

impl<'a> MakeWriter<'a> for LogWriter {
    type Writer = LineWriter;

    fn make_writer(&'a self) -> LineWriter {
        match self {
            LogWriter::Stderr => LineWriter::Stderr(std::io::stderr()),
            LogWriter::File(f) => LineWriter::File(f.clone()),
        }
    }
}

/// A parsed `--log-format`.
#[derive(Debug, Clone, PartialEq)]
pub struct Pattern(Vec<Piece>);

#[derive(Debug, Clone, PartialEq)]
enum Piece {
    Text(String),
    /// A spdlog flag character (`Y`, `m`, `T`, `v`, ...).
    Flag(char),
}

impl Pattern {
    /// Splits a spdlog pattern into text and flags (`%%` is a literal `%`).
    pub fn parse(format: &str) -> Pattern {
        let mut pieces = Vec::new();
        let mut text = String::new();
        let mut chars = format.chars();
        while let Some(c) = chars.next() {
            if c != '%' {
                text.push(c);
                continue;
            }
            match chars.next() {
                Some('%') => text.push('%'),
                Some(flag) => {
                    if !text.is_empty() {
                        pieces.push(Piece::Text(std::mem::take(&mut text)));
                    }
                    pieces.push(Piece::Flag(flag));
                }
                None => text.push('%'),
            }
        }
        if !text.is_empty() {
            pieces.push(Piece::Text(text));
        }
        Pattern(pieces)
    }

    /// One line for an event (without the newline).
    fn render(&self, line: &Line<'_>) -> String {
        let mut out = String::new();
        let t = wasmproxy_proxy::clock::Utc::now();
        for piece in &self.0 {
            match piece {
                Piece::Text(s) => out.push_str(s),
                Piece::Flag(f) => {
                    if let Some(field) = t.field(if *f == 'X' { 'T' } else { *f }) {
                        out.push_str(&field);
                        continue;
                    }
                    let _ = match f {
                        'e' => write!(out, "{:03}", t.millis),
                        'F' => write!(out, "{:09}", t.nanos),
                        't' => write!(out, "{}", thread_id()),
                        'P' => write!(out, "{}", std::process::id()),
                        'l' => write!(out, "{}", line.level),
                        'L' => write!(out, "{}", &line.level[..1]),
                        'n' => write!(out, "{}", line.logger),
                        'g' | 's' => write!(out, "{}", line.file),
                        '#' => write!(out, "{}", line.line),
                        'v' | '_' | 'j' => write!(out, "{}", line.message),
                        other => write!(out, "%{other}"),
                    };
                }
            }
        }
        out
    }
}

/// What a line is made of.
struct Line<'a> {
    level: &'static str,
    logger: &'static str,
    file: &'a str,
    line: u32,
    message: String,
}

fn thread_id() -> i64 {
    // SAFETY: gettid has no preconditions and cannot fail.
    unsafe { libc::syscall(libc::SYS_gettid) }
}

/// Envoy's logger name for a `tracing` target.
fn logger_name(target: &str) -> &'static str {
    if target == "wasm" {
        return "wasm";
    }
    if target.starts_with("wasmtime") || target.starts_with("cranelift") {
        return "wasmtime";
    }
    // The data plane's modules (`wasmproxy_proxy::<area>::<module>`), as Envoy's loggers.
    let mut path = target.split("::").skip(1);
    match (path.next().unwrap_or(""), path.next().unwrap_or("")) {
        ("admin", _) => "admin",
        ("hcm" | "wasm", _) => "http",
        ("upstream", _) => "upstream",
        ("tcp", _) | ("server", "worker" | "listener") => "connection",
        _ => "main",
    }
}

/// Collects the message, and whether a plugin logged at critical (`critical = true`).
#[derive(Default)]
struct Fields {
    message: String,
    rest: String,
    critical: bool,
}

impl tracing::field::Visit for Fields {
    fn record_bool(&mut self, field: &tracing::field::Field, value: bool) {
        if field.name() == "critical" {
            self.critical = value;
        } else {
            let _ = write!(self.rest, " {}={value}", field.name());
        }
    }

    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        if field.name() == "message" {
            self.message.push_str(value);
        } else {
            let _ = write!(self.rest, " {}={value}", field.name());
        }
    }

    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.message, "{value:?}");
        } else {
            let _ = write!(self.rest, " {}={value:?}", field.name());
        }
    }
}

impl<S, N> FormatEvent<S, N> for Pattern
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(&self, _ctx: &FmtContext<'_, S, N>, mut writer: Writer<'_>, event: &Event<'_>) -> std::fmt::Result {
        let meta = event.metadata();
        let mut fields = Fields::default();
        event.record(&mut fields);
        let level = match *meta.level() {
            Level::TRACE => "trace",
            Level::DEBUG => "debug",
            Level::INFO => "info",
            Level::WARN => "warning",
            Level::ERROR if fields.critical => "critical",
            Level::ERROR => "error",
        };
        let line = Line {
            level,
            logger: logger_name(meta.target()),
            file: meta.file().unwrap_or("?"),
            line: meta.line().unwrap_or(0),
            message: fields.message + &fields.rest,
        };
        writeln!(writer, "{}", self.render(&line))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envoy_default_format_parses_into_flags() {
        let p = Pattern::parse(DEFAULT_FORMAT);
        assert_eq!(p.0[0], Piece::Text("[".into()));
        assert_eq!(p.0[1], Piece::Flag('Y'));
        assert_eq!(Pattern::parse("%v 100%%").0, [Piece::Flag('v'), Piece::Text(" 100%".into())]);
        let line = Line { level: "info", logger: "wasm", file: "f.rs", line: 3, message: "hi".into() };
        assert_eq!(Pattern::parse("[%l][%n] [%g:%#] %v").render(&line), "[info][wasm] [f.rs:3] hi");
    }

    #[test]
    fn envoy_level_and_component_names_are_known() {
        assert_eq!(level("warning"), Some("warning"));
        assert_eq!(level("bogus"), None);
        assert_eq!(logger("upstream"), Some("wasmproxy"));
        assert_eq!(logger("wasm"), Some("wasm"));
        assert_eq!(logger("nope"), None);
        assert_eq!(logger_name("wasmproxy_proxy::upstream::pool"), "upstream");
        assert_eq!(logger_name("wasmproxy_proxy::hcm::pump"), "http");
        assert_eq!(logger_name("wasmproxy_proxy::wasm::instance"), "http");
        assert_eq!(logger_name("wasmproxy_proxy::server::worker"), "connection");
        assert_eq!(logger_name("wasmproxy_proxy::server"), "main");
        assert_eq!(logger_name("wasmproxy_proxy::admin"), "admin");
    }

    #[test]
    fn rustls_warnings_show_only_at_debug_and_trace() {
        let with = |level: &'static str| {
            let levels = LOGGERS.iter().map(|l| (*l, level)).collect();
            Levels::filter(&levels).to_string()
        };
        assert!(with("info").contains("rustls=error"), "{}", with("info"));
        assert!(with("warning").contains("rustls=error"));
        assert!(with("debug").contains("rustls=debug"));
        assert!(with("off").contains("rustls=off"));
    }
}
