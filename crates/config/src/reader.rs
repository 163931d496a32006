//! Path-tracking readers over the tree: proto message fields, typed scalars, lists and `Any`, errors by path.

use std::path::PathBuf;
use std::time::Duration;

use crate::error::ConfigError;
use crate::model::SocketAddress;
use crate::tree::{Entry, Node, Pos, Value};

/// The state of one load: errors, warnings, where relative files resolve, what to cross-check.
pub(crate) struct Ctx {
    pub errors: Vec<ConfigError>,
    pub warnings: Vec<ConfigError>,
    pub base_dir: PathBuf,
    pub refs: Refs,
}

impl Ctx {
    pub fn new(base_dir: PathBuf) -> Self {
        Ctx { errors: Vec::new(), warnings: Vec::new(), base_dir, refs: Refs::default() }
    }

    pub fn error(&mut self, at: &Origin, message: impl Into<String>) {
        self.errors.push(at.to_error(message));
    }

    pub fn warn(&mut self, at: &Origin, message: impl Into<String>) {
        self.warnings.push(at.to_error(message));
    }
}

/// Where something is: its field path and, for YAML, its position.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Origin {
    pub path: String,
    pub pos: Option<Pos>,
}

impl Origin {
    /// The origin of a child field (same position).
    pub fn with_child(&self, name: &str) -> Origin {
        Origin { path: child(&self.path, name), pos: self.pos }
    }

    fn to_error(&self, message: impl Into<String>) -> ConfigError {
        ConfigError {
            path: self.path.clone(),
            line: self.pos.map(|p| p.line),
            column: self.pos.map(|p| p.column),
            message: message.into(),
        }
    }
}

/// `parent.name`.
pub(crate) fn child(path: &str, name: &str) -> String {
    if path.is_empty() { name.to_owned() } else { format!("{path}.{name}") }
}

/// The proto JSON name of a field: `stat_prefix` → `statPrefix`.
fn camel(snake: &str) -> String {
    let mut out = String::with_capacity(snake.len());
    let mut upper = false;
    for c in snake.chars() {
        if c == '_' {
            upper = true;
        } else if upper {
            out.extend(c.to_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    out
}

static EMPTY_MAP: Node = Node { value: Value::Map(Vec::new()), pos: None };

/// A value found at a path.
#[derive(Debug, Clone)]
pub(crate) struct Field<'a> {
    pub node: &'a Node,
    pub path: String,
}

impl<'a> Field<'a> {
    pub fn new(node: &'a Node, path: impl Into<String>) -> Self {
        Field { node, path: path.into() }
    }

    pub fn origin(&self) -> Origin {
        Origin { path: self.path.clone(), pos: self.node.pos }
    }

    pub fn error(&self, ctx: &mut Ctx, message: impl Into<String>) {
        ctx.error(&self.origin(), message);
    }

    fn scalar(&self, ctx: &mut Ctx, expected: &str) -> Option<(&'a str, bool)> {
        match &self.node.value {
            Value::Scalar { text, quoted } => Some((text, *quoted)),
            _ => {
                self.error(ctx, format!("expected {expected}, found {}", self.node.kind()));
                None
            }
        }
    }

    /// A string (any scalar is taken as written).
    pub fn string(&self, ctx: &mut Ctx) -> Option<String> {
        self.scalar(ctx, "a string").map(|(text, _)| text.to_owned())
    }

    /// A boolean: an unquoted `true` or `false`.
    pub fn bool(&self, ctx: &mut Ctx) -> Option<bool> {
        let (text, quoted) = self.scalar(ctx, "true or false")?;
        match (text, quoted) {
            ("true" | "True" | "TRUE", false) => Some(true),
            ("false" | "False" | "FALSE", false) => Some(false),
            _ => {
                self.error(ctx, format!("expected true or false, found {text:?}"));
                None
            }
        }
    }

    /// A `google.protobuf.BoolValue`: a boolean, or `{value: <bool>}`.
    pub fn bool_value(&self, ctx: &mut Ctx) -> Option<bool> {
        if self.node.as_map().is_none() {
            return self.bool(ctx);
        }
        let mut msg = self.message(ctx, &["value"])?;
        let value = msg.get(ctx, "value").and_then(|f| f.bool(ctx));
        msg.finish(ctx);
        Some(value.unwrap_or(false))
    }

    /// A `type.v3.HttpStatus`: its `code` (up to 999), if given.
    pub fn http_status(&self, ctx: &mut Ctx) -> Option<u16> {
        let mut msg = self.message(ctx, &["code"])?;
        let code = msg.get(ctx, "code").and_then(|f| f.unsigned(ctx, 999));
        msg.finish(ctx);
        code.map(|c| c as u16)
    }

    /// An unsigned integer up to `max`: a number or a numeric string.
    pub fn unsigned(&self, ctx: &mut Ctx, max: u64) -> Option<u64> {
        let (text, _) = self.scalar(ctx, "a number")?;
        let value = text.parse::<u64>().ok().or_else(|| {
            // Proto JSON also takes integral numbers written with a fraction or an exponent.
            let f = text.parse::<f64>().ok()?;
            (f.fract() == 0.0 && (0.0..=u64::MAX as f64).contains(&f)).then_some(f as u64)
        });
        match value {
            Some(v) if v <= max => Some(v),
            Some(_) => {
                self.error(ctx, format!("{text} is out of range (0 to {max})"));
                None
            }
            None => {
                self.error(ctx, format!("expected a non-negative integer, found {text:?}"));
                None
            }
        }
    }

    /// A number (a double): a number or a numeric string.
    pub fn number(&self, ctx: &mut Ctx) -> Option<f64> {
        let (text, _) = self.scalar(ctx, "a number")?;
        match text.parse::<f64>() {
            Ok(v) if v.is_finite() => Some(v),
            _ => {
                self.error(ctx, format!("expected a number, found {text:?}"));
                None
            }
        }
    }

    /// A port: 0 to 65535.
    pub fn port(&self, ctx: &mut Ctx) -> Option<u16> {
        self.unsigned(ctx, u16::MAX.into()).and_then(|v| u16::try_from(v).ok())
    }

    /// A `google.protobuf.Duration`: `"1.5s"` (proto JSON), or `{seconds, nanos}`. Never negative.
    pub fn duration(&self, ctx: &mut Ctx) -> Option<Duration> {
        if self.node.as_map().is_some() {
            let mut msg = self.message(ctx, &["seconds", "nanos"])?;
            let seconds = msg.get(ctx, "seconds").and_then(|f| f.unsigned(ctx, 315_576_000_000));
            let nanos = msg.get(ctx, "nanos").and_then(|f| f.unsigned(ctx, 999_999_999));
            msg.finish(ctx);
            return Some(Duration::new(seconds.unwrap_or(0), nanos.unwrap_or(0) as u32));
        }
        let (text, _) = self.scalar(ctx, "a duration")?;
        match parse_duration(text) {
            Ok(d) => Some(d),
            Err(why) => {
                self.error(ctx, format!("invalid duration {text:?}: {why}"));
                None
            }
        }
    }

    /// An enum value, by name (any case) or by number. Values Envoy has and wasmproxy does not
    /// are listed with `None`.
    pub fn enumeration<T: Copy>(&self, ctx: &mut Ctx, table: &[(&str, i64, Option<T>)]) -> Option<T> {
        let (text, _) = self.scalar(ctx, "an enum value")?;
        let number = text.parse::<i64>().ok();
        let found = table.iter().find(|(name, n, _)| name.eq_ignore_ascii_case(text) || number == Some(*n));
        let supported = || table.iter().filter(|e| e.2.is_some()).map(|e| e.0).collect::<Vec<_>>().join(", ");
        match found {
            Some((_, _, Some(value))) => Some(*value),
            Some((name, _, None)) => {
                self.error(ctx, format!("{name} is not supported by wasmproxy (supported: {})", supported()));
                None
            }
            None => {
                self.error(ctx, format!("unknown value {text:?} (expected one of: {})", supported()));
                None
            }
        }
    }

    /// The items of a repeated field. A single value that is not a list is a list of one, as
    /// Envoy accepts (`listeners:` followed directly by a mapping).
    pub fn list(&self) -> Vec<Field<'a>> {
        match &self.node.value {
            Value::Seq(items) => {
                items.iter().enumerate().map(|(i, n)| Field::new(n, format!("{}[{i}]", self.path))).collect()
            }
            Value::Null => Vec::new(),
            _ => vec![Field::new(self.node, format!("{}[0]", self.path))],
        }
    }

    /// The entries of a `map<string, V>` field.
    pub fn map_entries(&self, ctx: &mut Ctx) -> Vec<(String, Field<'a>)> {
        match self.node.as_map() {
            Some(entries) => {
                entries.iter().map(|e| (e.key.clone(), Field::new(&e.value, child(&self.path, &e.key)))).collect()
            }
            None => {
                self.error(ctx, format!("expected a mapping, found {}", self.node.kind()));
                Vec::new()
            }
        }
    }

    /// Opens this value as a message with the given Envoy proto fields (snake_case).
    pub fn message(&self, ctx: &mut Ctx, fields: &'static [&'static str]) -> Option<Msg<'a>> {
        match self.node.as_map() {
            Some(entries) => Some(Msg { origin: self.origin(), entries, taken: vec![false; entries.len()], fields }),
            None => {
                self.error(ctx, format!("expected a mapping, found {}", self.node.kind()));
                None
            }
        }
    }

    /// Reads a `google.protobuf.Any`: its type (the part of the type URL after the last `/`) and
    /// the mapping that holds the message. A `udpa.type.v1.TypedStruct` or
    /// `xds.type.v3.TypedStruct` is unwrapped: its `type_url` is the type, its `value` the message.
    /// An empty mapping is an empty `Any` (type "").
    pub fn any(&self, ctx: &mut Ctx) -> Option<AnyValue<'a>> {
        let Some(entries) = self.node.as_map() else {
            self.error(ctx, format!("expected a mapping with \"@type\", found {}", self.node.kind()));
            return None;
        };
        if entries.is_empty() {
            return Some(AnyValue {
                type_name: String::new(),
                type_url: String::new(),
                body: self.clone(),
                typed_struct: false,
            });
        }
        let Some(type_entry) = entries.iter().find(|e| e.key == "@type") else {
            self.error(ctx, "missing \"@type\"");
            return None;
        };
        let type_field = Field::new(&type_entry.value, child(&self.path, "@type"));
        let (name, url) = type_name(ctx, &type_field)?;
        if name != "udpa.type.v1.TypedStruct" && name != "xds.type.v3.TypedStruct" {
            return Some(AnyValue { type_name: name, type_url: url, body: self.clone(), typed_struct: false });
        }
        let mut msg = self.message(ctx, &["type_url", "value"])?;
        msg.take_type_key();
        let inner = msg.required(ctx, "type_url").and_then(|f| type_name(ctx, &f));
        let body = match msg.get(ctx, "value") {
            Some(value) if value.node.as_map().is_some() => value,
            Some(value) => {
                value.error(ctx, format!("expected a mapping, found {}", value.node.kind()));
                return None;
            }
            None => Field::new(&EMPTY_MAP, child(&self.path, "value")),
        };
        msg.finish(ctx);
        let (type_name, type_url) = inner?;
        Some(AnyValue { type_name, type_url, body, typed_struct: true })
    }
}

/// `type.googleapis.com/envoy.x.y.Z` → `envoy.x.y.Z`, and the URL as written.
fn type_name(ctx: &mut Ctx, field: &Field<'_>) -> Option<(String, String)> {
    let url = field.string(ctx)?;
    match url.rsplit_once('/') {
        Some((_, name)) if !name.is_empty() => Some((name.to_owned(), url.clone())),
        _ => {
            field.error(ctx, format!("invalid type URL {url:?} (expected type.googleapis.com/<type>)"));
            None
        }
    }
}

/// The contents of an `Any`.
#[derive(Debug, Clone)]
pub(crate) struct AnyValue<'a> {
    /// The full proto type name, e.g. `envoy.extensions.filters.http.wasm.v3.Wasm`; "" when empty.
    pub type_name: String,
    /// The type URL as written (a `TypedStruct`'s own `type_url` when it came wrapped in one).
    pub type_url: String,
    /// The mapping with the message's fields.
    pub body: Field<'a>,
    /// It came wrapped in a `TypedStruct` (so the body has no `"@type"` key).
    typed_struct: bool,
}

impl<'a> AnyValue<'a> {
    /// Whether it came wrapped in a `TypedStruct`.
    pub fn wrapped_in_typed_struct(&self) -> bool {
        self.typed_struct
    }

    /// Opens the message inside with the given Envoy proto fields.
    pub fn message(&self, ctx: &mut Ctx, fields: &'static [&'static str]) -> Option<Msg<'a>> {
        let mut msg = self.body.message(ctx, fields)?;
        if !self.typed_struct {
            msg.take_type_key();
        }
        Some(msg)
    }
}

/// A proto message being read: fields are taken by name (either spelling); `finish` reports every
/// key left over, as "not supported by wasmproxy" when Envoy has the field, else "unknown field".
pub(crate) struct Msg<'a> {
    origin: Origin,
    entries: &'a [Entry],
    taken: Vec<bool>,
    fields: &'static [&'static str],
}

impl<'a> Msg<'a> {
    pub fn origin(&self) -> &Origin {
        &self.origin
    }

    fn take_type_key(&mut self) {
        for (entry, taken) in self.entries.iter().zip(&mut self.taken) {
            if entry.key == "@type" {
                *taken = true;
            }
        }
    }

    fn matches(entry: &Entry, name: &str, camel_name: &str) -> bool {
        entry.key == name || entry.key == camel_name
    }

    /// Whether the field is present (and not null).
    pub fn has(&self, name: &str) -> bool {
        let camel_name = camel(name);
        self.entries.iter().any(|e| Self::matches(e, name, &camel_name) && e.value.value != Value::Null)
    }

    /// Takes a field by its snake_case name (the camelCase spelling is accepted too). A null
    /// value is the same as an absent field.
    pub fn get(&mut self, ctx: &mut Ctx, name: &str) -> Option<Field<'a>> {
        debug_assert!(self.fields.contains(&name), "{name} is not a field of {}", self.origin.path);
        let camel_name = camel(name);
        let mut found: Option<&'a Entry> = None;
        for (entry, taken) in self.entries.iter().zip(&mut self.taken) {
            if !Self::matches(entry, name, &camel_name) {
                continue;
            }
            *taken = true;
            match found {
                None => found = Some(entry),
                Some(first) if first.key != entry.key => {
                    let origin = Origin { path: child(&self.origin.path, name), pos: entry.key_pos };
                    ctx.error(&origin, format!("given twice, as {:?} and {:?}", first.key, entry.key));
                }
                Some(_) => {} // the same key twice is reported by the duplicate-key check
            }
        }
        let entry = found?;
        if entry.value.value == Value::Null {
            return None;
        }
        Some(Field::new(&entry.value, child(&self.origin.path, name)))
    }

    /// Takes a field that must be present.
    pub fn required(&mut self, ctx: &mut Ctx, name: &str) -> Option<Field<'a>> {
        let field = self.get(ctx, name);
        if field.is_none() {
            ctx.error(&self.origin, format!("missing required field {name:?}"));
        }
        field
    }

    /// Records an error if more than one of the given fields (a proto `oneof`) is present; those
    /// fields are then not reported again by `finish`.
    pub fn at_most_one(&mut self, ctx: &mut Ctx, names: &[&str]) {
        let present: Vec<&str> = names.iter().copied().filter(|n| self.has(n)).collect();
        if present.len() > 1 {
            ctx.error(&self.origin, format!("only one of {} may be given", present.join(", ")));
            for (entry, taken) in self.entries.iter().zip(&mut self.taken) {
                if present.iter().any(|n| Self::matches(entry, n, &camel(n))) {
                    *taken = true;
                }
            }
        }
    }

    /// Accepts a field and ignores it (each such field is listed in docs/CONFIG.md).
    pub fn ignore(&mut self, ctx: &mut Ctx, name: &str) {
        let _ = self.get(ctx, name);
    }

    /// Accepts a field, ignores it and records a warning.
    pub fn ignore_with_warning(&mut self, ctx: &mut Ctx, name: &str, warning: &str) {
        if let Some(field) = self.get(ctx, name) {
            ctx.warn(&field.origin(), warning);
        }
    }

    /// Reports every field that was not taken.
    pub fn finish(self, ctx: &mut Ctx) {
        for (entry, taken) in self.entries.iter().zip(self.taken) {
            if taken {
                continue;
            }
            let known = self.fields.iter().find(|f| **f == entry.key || camel(f) == entry.key);
            let (name, message) = match known {
                Some(name) => (*name, "not supported by wasmproxy"),
                None => (entry.key.as_str(), "unknown field"),
            };
            ctx.error(&Origin { path: child(&self.origin.path, name), pos: entry.key_pos }, message);
        }
    }
}

/// Parses a proto JSON duration: `"15s"`, `"0.25s"`, `"1.000000001s"`.
pub(crate) fn parse_duration(text: &str) -> Result<Duration, &'static str> {
    let number = text.strip_suffix('s').ok_or("expected a number of seconds such as \"1.5s\"")?;
    if number.starts_with('-') {
        return Err("must not be negative");
    }
    let (seconds, fraction) = number.split_once('.').unwrap_or((number, ""));
    let digits = |t: &str| t.bytes().all(|b| b.is_ascii_digit());
    if seconds.is_empty() || !digits(seconds) || !digits(fraction) || (number.contains('.') && fraction.is_empty()) {
        return Err("expected a number of seconds such as \"1.5s\"");
    }
    if fraction.len() > 9 {
        return Err("at most 9 fractional digits");
    }
    let seconds: u64 = seconds.parse().map_err(|_| "too large")?;
    if seconds > 315_576_000_000 {
        return Err("too large");
    }
    let nanos =
        if fraction.is_empty() { 0 } else { format!("{fraction:0<9}").parse::<u32>().map_err(|_| "too large")? };
    Ok(Duration::new(seconds, nanos))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("15s"), Ok(Duration::from_secs(15)));
        assert_eq!(parse_duration("0.25s"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("1.000000001s"), Ok(Duration::new(1, 1)));
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
        assert!(parse_duration("15").is_err());
        assert!(parse_duration("1.s").is_err());
        assert!(parse_duration(".5s").is_err());
        assert!(parse_duration("-1s").is_err());
        assert!(parse_duration("1ms").is_err());
        assert!(parse_duration("1.0000000001s").is_err());
    }

    #[test]
    fn camel_names() {
        assert_eq!(camel("stat_prefix"), "statPrefix");
        assert_eq!(camel("http2_protocol_options"), "http2ProtocolOptions");
        assert_eq!(camel("proxy_100_continue"), "proxy100Continue");
        assert_eq!(camel("name"), "name");
    }
}

/// What the readers saw that must be checked against the rest of the configuration.
#[derive(Debug, Default)]
pub(crate) struct Refs {
    /// Cluster names, where defined.
    pub clusters: Vec<(String, Origin)>,
    /// Cluster names used by routes.
    pub cluster_refs: Vec<(String, Origin)>,
    /// Cluster names used by TCP proxies (which Envoy does not check: a connection to a
    /// cluster still missing is closed, counted as no route).
    pub tcp_cluster_refs: Vec<(String, Origin)>,
    /// Listener names.
    pub listeners: Vec<(String, Origin)>,
    /// Addresses bound by listeners and the admin listener.
    pub binds: Vec<(SocketAddress, Origin)>,
    /// Clusters also come from a CDS file: a name no static cluster has is not an error
    /// yet (a request to a cluster that is still missing gets 503, as in Envoy).
    pub clusters_from_files: bool,
    /// Static secret names, where defined.
    pub secrets: Vec<(String, Origin)>,
    /// Static secret names used by TLS contexts.
    pub secret_refs: Vec<(String, Origin)>,
    /// Cluster names that must be static clusters (the ADS stream's).
    pub static_cluster_refs: Vec<(String, Origin)>,
    /// Config sources that name the ADS stream.
    pub ads_users: Vec<Origin>,
    /// Whether the ADS stream exists (the bootstrap has `ads_config`; resources read from
    /// it or from files are not checked).
    pub ads_configured: bool,
}

/// "<what> type X is not supported by wasmproxy", at the `@type` (or the `TypedStruct`'s `type_url`).
pub(crate) fn type_error(ctx: &mut Ctx, typed: &Field<'_>, any: &AnyValue<'_>, what: &str) {
    let key = if any.wrapped_in_typed_struct() { "type_url" } else { "@type" };
    let at = typed
        .node
        .as_map()
        .and_then(|entries| entries.iter().find(|e| e.key == key))
        .map_or_else(|| typed.origin(), |e| Origin { path: format!("{}.{key}", typed.path), pos: e.value.pos });
    ctx.error(&at, format!("{what} type {} is not supported by wasmproxy", any.type_name));
}
