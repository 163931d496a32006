//! A span as wasmproxy keeps it until it is reported: ids, name, kind, times and tags.

use std::time::{Duration, Instant, SystemTime};

/// One span.
pub struct Span {
    /// The trace id: its high half (0 for a 64-bit id) and its low half.
    pub trace: (u64, u64),
    /// The span's id.
    pub id: u64,
    /// Its parent's id, if it has one.
    pub parent: Option<u64>,
    /// Whether it is reported.
    pub sampled: bool,
    /// Its name (operation).
    pub name: String,
    /// A client span (an upstream request; else a server one).
    pub client: bool,
    /// When it started.
    pub start: SystemTime,
    started: Instant,
    /// How long it lasted (set when it ends).
    pub duration: Duration,
    /// Its tags, in the order first set.
    pub tags: Vec<(String, String)>,
    /// W3C `tracestate` it carries on.
    pub trace_state: String,
}

impl Span {
    /// A span starting now.
    pub fn new(trace: (u64, u64), id: u64, parent: Option<u64>, name: String, client: bool) -> Span {
        Span {
            trace,
            id,
            parent,
            sampled: false,
            name,
            client,
            start: SystemTime::now(),
            started: Instant::now(),
            duration: Duration::ZERO,
            tags: Vec::new(),
            trace_state: String::new(),
        }
    }

    /// Sets a tag: a value already there is replaced where it stands.
    pub fn tag(&mut self, key: &str, value: impl Into<String>) {
        let value = value.into();
        match self.tags.iter_mut().find(|(k, _)| k == key) {
            Some((_, v)) => *v = value,
            None => self.tags.push((key.to_string(), value)),
        }
    }

    /// The span ends now.
    pub fn end(&mut self) {
        self.duration = self.started.elapsed();
    }

    /// When it started, in microseconds since the epoch.
    pub fn start_micros(&self) -> u64 {
        self.start.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_micros() as u64)
    }

    /// When it started, in nanoseconds since the epoch.
    pub fn start_nanos(&self) -> u64 {
        self.start.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
    }

    /// The trace id in hex: 32 digits if it has a high half, else 16.
    pub fn trace_hex(&self) -> String {
        match self.trace {
            (0, low) => format!("{low:016x}"),
            (high, low) => format!("{high:016x}{low:016x}"),
        }
    }
}

/// Parses 16 hex digits (or fewer) as a 64-bit id; `None` if they are not hex.
pub fn parse_id(text: &[u8]) -> Option<u64> {
    if text.is_empty() || text.len() > 16 {
        return None;
    }
    u64::from_str_radix(std::str::from_utf8(text).ok()?, 16).ok()
}

/// Parses a trace id of 32 hex digits (high and low halves) or up to 16 (low only).
pub fn parse_trace_id(text: &[u8]) -> Option<(u64, u64)> {
    if text.len() == 32 { Some((parse_id(&text[..16])?, parse_id(&text[16..])?)) } else { Some((0, parse_id(text)?)) }
}
