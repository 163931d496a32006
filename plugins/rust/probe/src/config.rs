//! The probe's JSON configuration: which commands run in which phase, and what each phase returns.

use serde::Deserialize;
use std::collections::BTreeMap;

/// One command: its name, then its arguments (all strings).
pub type Command = Vec<String>;

/// Which kind of per-stream context the root creates (the SDK needs to know).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    #[default]
    Http,
    Stream,
}

/// What a phase returns to the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Return {
    Continue,
    Pause,
    /// Body callbacks: pause until the end of the stream, continue then (the usual way a
    /// plugin buffers a whole body); other callbacks: pause.
    #[serde(rename = "pause_until_end")]
    PauseUntilEnd,
}

/// The VM or plugin configuration; every field is optional.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Config {
    /// `http` (default) or `stream`: the kind of context created for new streams.
    pub kind: Kind,
    pub vm_start: Option<Vec<Command>>,
    pub vm_start_result: Option<bool>,
    pub configure: Vec<Command>,
    pub configure_result: Option<bool>,
    pub phases: BTreeMap<String, Vec<Command>>,
    pub returns: BTreeMap<String, Return>,
}

impl Config {
    /// Parses a configuration buffer; empty (or all-whitespace) means the defaults.
    pub fn parse(bytes: &[u8]) -> Result<Config, serde_json::Error> {
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(Config::default());
        }
        serde_json::from_slice(bytes)
    }

    /// The commands to run in `phase` (none if not configured).
    pub fn commands(&self, phase: &str) -> &[Command] {
        self.phases.get(phase).map_or(&[], Vec::as_slice)
    }

    /// What `phase` returns (continue unless configured).
    pub fn returns(&self, phase: &str) -> Return {
        self.returns.get(phase).copied().unwrap_or(Return::Continue)
    }
}
