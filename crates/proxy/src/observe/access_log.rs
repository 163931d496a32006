//! HTTP access logs: Envoy's command operators (`%REQ(:PATH)%`, `%RESPONSE_CODE%`,
//! `%DURATION%`, ...) in its default format, a text format or a JSON format, written to a
//! file, stdout or stderr by one writer thread per destination, so a worker never waits on
//! the disk.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use serde_json::Value;
use wasmproxy_config::format::{Op, Piece};
use wasmproxy_config::model::{AccessLog, AccessLogFormat, AccessLogSink};
use wasmproxy_host::Headers;

use crate::clock::Utc;
use crate::stream_info::StreamInfo;

/// Envoy 1.40's default access-log format.
pub const DEFAULT_FORMAT: &str = "[%START_TIME%] \"%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%\" \
%RESPONSE_CODE% %RESPONSE_FLAGS% %BYTES_RECEIVED% %BYTES_SENT% %DURATION% %RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)% \
\"%REQ(X-FORWARDED-FOR)%\" \"%REQ(USER-AGENT)%\" \"%REQ(X-REQUEST-ID)%\" \"%REQ(:AUTHORITY)%\" \"%UPSTREAM_HOST%\"\n";

/// What one finished request offers the formatters.
pub struct Record<'a> {
    /// The request headers, as the access-log phase sees them.
    pub request: Option<&'a Headers>,
    /// The response headers, if a response was sent.
    pub response: Option<&'a Headers>,
    /// The stream.
    pub info: &'a StreamInfo,
    /// The response code is settled (it is not while the router adds a route's response
    /// headers: Envoy's `%RESPONSE_CODE%` is 0 there).
    pub response_code_set: bool,
}

/// A command operator's value.
enum Out {
    Missing,
    Text(String),
    Number(u64),
}

/// A format that could not be compiled.
#[derive(Debug, thiserror::Error)]
#[error("access log format {format:?}: {message}")]
pub struct FormatError {
    format: String,
    message: String,
}

fn parse(format: &str) -> Result<Vec<Piece>, FormatError> {
    wasmproxy_config::format::parse(format).map_err(|message| FormatError { format: format.to_string(), message })
}

/// `%REQ(A?B)%`: the first value of A, else of B, as Envoy's formatter takes it.
fn header_value(headers: Option<&Headers>, main: &str, alt: &Option<String>) -> Out {
    let Some(h) = headers else { return Out::Missing };
    let first = |name: &str| h.get(name.as_bytes()).map(|v| String::from_utf8_lossy(v).into_owned());
    match first(main).or_else(|| alt.as_deref().and_then(first)) {
        Some(v) => Out::Text(v),
        None => Out::Missing,
    }
}

fn millis(d: std::time::Duration) -> u64 {
    d.as_millis().min(u128::from(u64::MAX)) as u64
}

fn evaluate(op: &Op, r: &Record<'_>) -> Out {
    let info = r.info;
    let text = |s: &str| if s.is_empty() { Out::Missing } else { Out::Text(s.to_string()) };
    match op {
        Op::RequestHeader(a, b) => header_value(r.request, a, b),
        Op::ResponseHeader(a, b) => header_value(r.response, a, b),
        Op::StartTime(format) => {
            let t = Utc::at(info.start);
            Out::Text(match format {
                None => t.iso8601_millis(),
                Some(f) => strftime(&t, f),
            })
        }
        Op::ResponseCode if !r.response_code_set => Out::Number(0),
        Op::ResponseCode => {
            let code =
                r.response.and_then(|h| h.get(b":status")).and_then(|s| std::str::from_utf8(s).ok()?.parse().ok());
            Out::Number(code.unwrap_or(0))
        }
        Op::ResponseFlags => Out::Text(info.response_flags.short_string()),
        Op::ResponseCodeDetails => text(&info.response_code_details),
        Op::BytesReceived => Out::Number(info.request_body_size),
        Op::BytesSent => Out::Number(info.response_body_size),
        Op::Duration => info.duration.map_or(Out::Missing, |d| Out::Number(millis(d))),
        Op::RequestDuration => info.request_done.map_or(Out::Missing, |d| Out::Number(millis(d))),
        Op::ResponseDuration => info.upstream_responded.map_or(Out::Missing, |d| Out::Number(millis(d))),
        // A TCP connection has no protocol.
        Op::Protocol if info.protocol.is_empty() => Out::Missing,
        Op::Protocol => Out::Text(info.protocol.to_string()),
        Op::UpstreamHost => info.upstream.map_or(Out::Missing, |a| Out::Text(a.to_string())),
        Op::UpstreamCluster => text(&info.cluster_name),
        Op::UpstreamLocalAddress => info.upstream_local.map_or(Out::Missing, |a| Out::Text(a.to_string())),
        Op::UpstreamTransportFailureReason => info.upstream_failure.as_deref().map_or(Out::Missing, text),
        Op::DownstreamRemoteAddress { port } => {
            let a = info.downstream_remote;
            Out::Text(if *port { a.to_string() } else { a.ip().to_string() })
        }
        Op::DownstreamDirectRemoteAddress { port } => {
            let a = info.connection.peer;
            Out::Text(if *port { a.to_string() } else { a.ip().to_string() })
        }
        Op::DownstreamLocalAddress { port } => {
            let a = info.connection.local;
            Out::Text(if *port { a.to_string() } else { a.ip().to_string() })
        }
        Op::RouteName => text(info.route.as_ref().map_or("", |r| r.name.as_str())),
        Op::ConnectionId => Out::Number(info.connection.id),
        Op::Hostname => Out::Text(hostname()),
        Op::RequestedServerName => text(info.connection.requested_server_name.as_deref().unwrap_or("")),
    }
}

/// The machine's name, read once.
fn hostname() -> String {
    static NAME: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    NAME.get_or_init(|| {
        std::fs::read_to_string("/proc/sys/kernel/hostname").map(|h| h.trim().to_string()).unwrap_or_default()
    })
    .clone()
}

/// `START_TIME(...)`: strftime's common flags, plus Envoy's `%s` (epoch seconds), `%Nf`
/// (N fractional digits) and `%EnS` (seconds with n fractional digits), in UTC.
fn strftime(t: &Utc, format: &str) -> String {
    let mut out = String::new();
    let mut chars = format.chars().peekable();
    let fraction = |digits: usize| format!("{:09}", t.nanos)[..digits.min(9)].to_string();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let Some(flag) = chars.next() else {
            out.push('%');
            break;
        };
        if let Some(field) = t.field(flag) {
            out.push_str(&field);
            continue;
        }
        let _ = match flag {
            's' => write!(out, "{}", t.unix),
            'F' => write!(out, "{:04}-{:02}-{:02}", t.year, t.month, t.day),
            'z' => write!(out, "+0000"),
            'Z' => write!(out, "UTC"),
            'f' => write!(out, "{}", fraction(9)),
            '%' => write!(out, "%"),
            d @ '1'..='9' if chars.peek() == Some(&'f') => {
                chars.next();
                write!(out, "{}", fraction(d as usize - '0' as usize))
            }
            'E' => {
                let digits: String = std::iter::from_fn(|| chars.next_if(|c| c.is_ascii_digit())).collect();
                if chars.next_if_eq(&'S').is_some() {
                    let n: usize = digits.parse().unwrap_or(0);
                    if n == 0 { write!(out, "{:02}", t.second) } else { write!(out, "{:02}.{}", t.second, fraction(n)) }
                } else {
                    write!(out, "%E{digits}")
                }
            }
            other => write!(out, "%{other}"),
        };
    }
    out
}

/// A compiled format.
#[derive(Debug)]
enum Compiled {
    Text(Vec<Piece>),
    /// The template, with each string value compiled.
    Json(JsonNode),
}

#[derive(Debug)]
enum JsonNode {
    Literal(Value),
    Format(Vec<Piece>),
    Object(Vec<(String, JsonNode)>),
}

fn compile_json(v: &Value) -> Result<JsonNode, FormatError> {
    Ok(match v {
        Value::String(s) => JsonNode::Format(parse(s)?),
        Value::Object(m) => {
            JsonNode::Object(m.iter().map(|(k, v)| Ok((k.clone(), compile_json(v)?))).collect::<Result<_, _>>()?)
        }
        other => JsonNode::Literal(other.clone()),
    })
}

impl Compiled {
    fn new(format: &AccessLogFormat) -> Result<Compiled, FormatError> {
        Ok(match format {
            AccessLogFormat::Default => Compiled::Text(parse(DEFAULT_FORMAT)?),
            AccessLogFormat::Text(t) => Compiled::Text(parse(t)?),
            AccessLogFormat::Json(v) if v.is_object() => Compiled::Json(compile_json(v)?),
            AccessLogFormat::Json(_) => {
                return Err(FormatError { format: "json_format".into(), message: "must be an object".into() });
            }
        })
    }

    fn render(&self, r: &Record<'_>, omit_empty: bool) -> String {
        match self {
            Compiled::Text(pieces) => render_text(pieces, r, omit_empty),
            Compiled::Json(node) => {
                let mut line = render_json(node, r, omit_empty).map_or_else(|| "{}".into(), |v| v.to_string());
                line.push('\n');
                line
            }
        }
    }
}

fn truncate(mut s: String, max: Option<usize>) -> String {
    if let Some(n) = max
        && s.len() > n
    {
        let mut cut = n;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
    }
    s
}

/// A header value's format, evaluated: a missing value is empty, as Envoy's header
/// formatter makes it.
pub fn header_value_text(pieces: &[Piece], r: &Record<'_>) -> String {
    render_text(pieces, r, true)
}

fn render_text(pieces: &[Piece], r: &Record<'_>, omit_empty: bool) -> String {
    let mut out = String::new();
    for piece in pieces {
        match piece {
            Piece::Text(t) => out.push_str(t),
            Piece::Op(op, max) => match evaluate(op, r) {
                Out::Missing if omit_empty => {}
                Out::Missing => out.push('-'),
                Out::Text(t) => out.push_str(&truncate(t, *max)),
                Out::Number(n) => out.push_str(&truncate(n.to_string(), *max)),
            },
        }
    }
    out
}

/// A JSON value: a lone operator keeps its type (numbers stay numbers, a missing value is
/// `null`, or left out with `omit_empty_values`); anything else is a string.
fn render_json(node: &JsonNode, r: &Record<'_>, omit_empty: bool) -> Option<Value> {
    match node {
        JsonNode::Literal(v) => Some(v.clone()),
        JsonNode::Format(pieces) => match pieces.as_slice() {
            [Piece::Op(op, max)] => match evaluate(op, r) {
                Out::Missing if omit_empty => None,
                Out::Missing => Some(Value::Null),
                Out::Number(n) if max.is_none() => Some(Value::from(n)),
                Out::Number(n) => Some(Value::String(truncate(n.to_string(), *max))),
                Out::Text(t) => Some(Value::String(truncate(t, *max))),
            },
            _ => Some(Value::String(render_text(pieces, r, omit_empty))),
        },
        JsonNode::Object(fields) => {
            let map: serde_json::Map<String, Value> =
                fields.iter().filter_map(|(k, v)| render_json(v, r, omit_empty).map(|v| (k.clone(), v))).collect();
            Some(Value::Object(map))
        }
    }
}

/// One access logger of an HTTP connection manager (the Wasm logger is the filter
/// machinery's: it runs a plugin).
#[derive(Debug)]
pub struct AccessLogger {
    format: Compiled,
    omit_empty: bool,
    sink: mpsc::Sender<String>,
}

impl AccessLogger {
    /// Writes the line for a finished request.
    pub fn log(&self, r: &Record<'_>) {
        let _ = self.sink.send(self.format.render(r, self.omit_empty));
    }
}

/// The destinations: one writer thread each, shared by every logger that writes there.
#[derive(Default)]
pub struct Sinks {
    open: Mutex<HashMap<PathBuf, mpsc::Sender<String>>>,
}

/// Why an access logger could not start.
#[derive(Debug, thiserror::Error)]
pub enum AccessLogError {
    /// The format does not compile.
    #[error(transparent)]
    Format(#[from] FormatError),
    /// The file cannot be opened.
    #[error("access log {path}: {error}")]
    Open {
        /// The file.
        path: PathBuf,
        /// Why.
        error: std::io::Error,
    },
}

impl Sinks {
    /// An empty set.
    pub fn new() -> Arc<Sinks> {
        Arc::new(Sinks::default())
    }

    /// The logger for `config` (`None` for the Wasm logger).
    pub fn logger(&self, config: &AccessLog) -> Result<Option<AccessLogger>, AccessLogError> {
        let path = match &config.sink {
            AccessLogSink::File(p) => p.clone(),
            AccessLogSink::Stdout => PathBuf::from("/dev/stdout"),
            AccessLogSink::Stderr => PathBuf::from("/dev/stderr"),
            AccessLogSink::Wasm(_) => return Ok(None),
        };
        let format = Compiled::new(&config.format)?;
        let sink = self.sink(&path)?;
        Ok(Some(AccessLogger { format, omit_empty: config.omit_empty_values, sink }))
    }

    fn sink(&self, path: &Path) -> Result<mpsc::Sender<String>, AccessLogError> {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(tx) = open.get(path) {
            return Ok(tx.clone());
        }
        let mut out: Box<dyn std::io::Write + Send> = match path.to_str() {
            Some("/dev/stdout") => Box::new(std::io::stdout()),
            Some("/dev/stderr") => Box::new(std::io::stderr()),
            _ => Box::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map_err(|error| AccessLogError::Open { path: path.to_path_buf(), error })?,
            ),
        };
        let (tx, rx) = mpsc::channel::<String>();
        let name = format!("access-log-{}", path.file_name().and_then(|n| n.to_str()).unwrap_or("out"));
        std::thread::Builder::new()
            .name(name)
            .spawn(move || {
                // Lines that came together are written together; the file is flushed
                // whenever no more are waiting.
                while let Ok(first) = rx.recv() {
                    let mut batch = first;
                    while let Ok(more) = rx.try_recv() {
                        batch.push_str(&more);
                        if batch.len() > 64 * 1024 {
                            break;
                        }
                    }
                    if out.write_all(batch.as_bytes()).and_then(|()| out.flush()).is_err() {
                        tracing::warn!("cannot write an access log line");
                    }
                }
            })
            .map_err(|error| AccessLogError::Open { path: path.to_path_buf(), error })?;
        open.insert(path.to_path_buf(), tx.clone());
        Ok(tx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_format_parses() {
        assert!(parse(DEFAULT_FORMAT).is_ok());
    }

    #[test]
    fn start_time_formats_like_envoy() {
        let t = Utc::at(std::time::UNIX_EPOCH + std::time::Duration::from_millis(1_795_691_968_506));
        assert_eq!(strftime(&t, "%s"), "1795691968");
        assert_eq!(strftime(&t, "%Y-%m-%dT%H:%M:%E3SZ"), "2026-11-26T11:19:28.506Z");
        assert_eq!(strftime(&t, "%3f|%T"), "506|11:19:28");
    }
}
