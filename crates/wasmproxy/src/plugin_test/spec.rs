//! A `plugin-test` spec (YAML): the plugin, how it is configured, the services it calls, and
//! the cases run through it, each with what it expects. `docs/PLUGIN_AUTHORS.md` describes it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// A whole spec.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Spec {
    /// The module, relative to the spec's directory.
    pub plugin: PathBuf,
    /// `PluginConfig.name` (the module's file stem if absent).
    #[serde(default)]
    pub name: Option<String>,
    /// `PluginConfig.root_id`.
    #[serde(default)]
    pub root_id: String,
    /// `VmConfig.vm_id`.
    #[serde(default)]
    pub vm_id: String,
    /// The plugin configuration: text as it is, anything else as JSON.
    #[serde(default)]
    pub configuration: Option<Configuration>,
    /// The VM configuration, as `configuration`.
    #[serde(default)]
    pub vm_configuration: Option<Configuration>,
    /// `VmConfig.environment_variables.key_values`.
    #[serde(default)]
    pub environment: BTreeMap<String, Text>,
    /// `PluginConfig.failure_policy` (`FAIL_CLOSED` if absent).
    #[serde(default)]
    pub failure_policy: Option<String>,
    /// The plugins' log level (`info`): Envoy's names, `trace` to `critical`.
    #[serde(default)]
    pub log_level: Option<String>,
    /// The clusters the plugin calls (`http_call`, gRPC), by name: each a service the
    /// cases script.
    #[serde(default)]
    pub callouts: BTreeMap<String, Callout>,
    /// The cases, run in order on one proxy (the plugin's state carries over).
    pub cases: Vec<Case>,
}

/// A plugin or VM configuration.
pub struct Configuration(pub String);

impl<'de> Deserialize<'de> for Configuration {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(Configuration(match serde_json::Value::deserialize(d)? {
            serde_json::Value::String(s) => s,
            other => other.to_string(),
        }))
    }
}

/// A scalar read as text (YAML's `200` or `true` are text where text is expected).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Text(pub String);

impl<'de> Deserialize<'de> for Text {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match serde_json::Value::deserialize(d)? {
            serde_json::Value::String(s) => Ok(Text(s)),
            serde_json::Value::Number(n) => Ok(Text(n.to_string())),
            serde_json::Value::Bool(b) => Ok(Text(b.to_string())),
            other => Err(serde::de::Error::custom(format!("expected text, got {other}"))),
        }
    }
}

/// Headers: a mapping (names in alphabetical order; a list value repeats the header) or a
/// list of `[name, value]` pairs (in order).
#[derive(Default, Clone, Debug)]
pub struct HeaderList(pub Vec<(String, String)>);

impl<'de> Deserialize<'de> for HeaderList {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let text = |v: serde_json::Value| Text::deserialize(v).map(|t| t.0).map_err(D::Error::custom);
        let mut pairs = Vec::new();
        match serde_json::Value::deserialize(d)? {
            serde_json::Value::Object(map) => {
                for (name, value) in map {
                    match value {
                        serde_json::Value::Array(values) => {
                            for v in values {
                                pairs.push((name.clone(), text(v)?));
                            }
                        }
                        v => pairs.push((name, text(v)?)),
                    }
                }
            }
            serde_json::Value::Array(items) => {
                for item in items {
                    let pair = <[serde_json::Value; 2]>::deserialize(item)
                        .map_err(|_| D::Error::custom("each header in a list is a [name, value] pair"))?;
                    let [name, value] = pair;
                    pairs.push((text(name)?, text(value)?));
                }
            }
            serde_json::Value::Null => {}
            other => return Err(D::Error::custom(format!("expected headers (a mapping or a list), got {other}"))),
        }
        Ok(HeaderList(pairs))
    }
}

/// A service the plugin calls.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Callout {
    /// `http` (HTTP/1.1, for `http_call`) or `grpc` (HTTP/2, for gRPC calls and streams).
    #[serde(default)]
    pub protocol: Protocol,
}

/// How a callout cluster is reached.
#[derive(Deserialize, Default, Clone, Copy, PartialEq, Eq, Debug)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// HTTP/1.1.
    #[default]
    Http,
    /// gRPC over HTTP/2.
    Grpc,
}

/// One case: what happens, then what is expected.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Case {
    /// Its name in reports.
    pub name: String,
    /// Ticks delivered to the plugin's root context before the request.
    #[serde(default)]
    pub ticks: u32,
    /// Queue messages delivered before the request (after the ticks).
    #[serde(default)]
    pub queue: Vec<QueueMessage>,
    /// The request sent (none: the case only ticks or delivers queue messages).
    #[serde(default)]
    pub request: Option<Request>,
    /// What the upstream answers (200 with an empty body if absent).
    #[serde(default)]
    pub upstream: Option<Answer>,
    /// What each callout cluster answers, call by call.
    #[serde(default)]
    pub calls: BTreeMap<String, Vec<Answer>>,
    /// What is expected.
    #[serde(default)]
    pub expect: Expect,
}

/// A message put on a shared queue, as another plugin would.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueueMessage {
    /// The queue's name.
    pub queue: String,
    /// The message.
    pub message: Text,
    /// The VM id the queue was registered under (the spec's `vm_id` if absent).
    #[serde(default)]
    pub vm_id: Option<String>,
}

/// The client's request.
#[derive(Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Request {
    /// The method (`GET`).
    pub method: String,
    /// The path and query (`/`).
    pub path: String,
    /// Headers (`host: plugin.test` unless given).
    pub headers: HeaderList,
    /// The body, in one piece.
    pub body: Option<Text>,
    /// The body, in pieces sent one after another (instead of `body`).
    pub chunks: Vec<Text>,
    /// Trailers (HTTP/2 only).
    pub trailers: HeaderList,
    /// HTTP/2 (by prior knowledge) instead of HTTP/1.1.
    pub http2: bool,
}

impl Default for Request {
    fn default() -> Self {
        Request {
            method: "GET".into(),
            path: "/".into(),
            headers: HeaderList::default(),
            body: None,
            chunks: Vec::new(),
            trailers: HeaderList::default(),
            http2: false,
        }
    }
}

/// An answer from the upstream or a callout service.
#[derive(Deserialize, Default, Clone)]
#[serde(default, deny_unknown_fields)]
pub struct Answer {
    /// The HTTP status (200).
    pub status: Option<u16>,
    /// Headers.
    pub headers: HeaderList,
    /// The body (HTTP).
    pub body: Option<Text>,
    /// Trailers (HTTP).
    pub trailers: HeaderList,
    /// Never answered: the caller's timeout decides.
    pub timeout: bool,
    /// gRPC: the response messages.
    pub messages: Vec<Text>,
    /// gRPC: the status (0).
    pub grpc_status: Option<u32>,
    /// gRPC: the status message.
    pub grpc_message: Option<String>,
}

/// What a case expects. Each field left out is not checked.
#[derive(Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct Expect {
    /// The status the client gets.
    pub status: Option<u16>,
    /// Response headers the client gets: each with this value (several values joined with
    /// `,`), or absent when `null`.
    pub headers: BTreeMap<String, Option<Text>>,
    /// The body the client gets, exactly.
    pub body: Option<Text>,
    /// What reaches the upstream.
    pub upstream: Option<UpstreamExpect>,
    /// The calls each callout cluster receives, in order (their number too).
    pub calls: BTreeMap<String, Vec<CallExpect>>,
    /// Lines the plugin logs during the case, in this order, each found as a part of one
    /// line (`[level] message` too: `[warn] denied`).
    pub logs: Vec<String>,
    /// Text no line the plugin logs during the case contains.
    pub logs_absent: Vec<String>,
    /// The plugin's metrics after the case, by the name it defined them with.
    pub metrics: BTreeMap<String, i64>,
    /// The plugin's shared data after the case (`null`: no such key).
    pub shared_data: BTreeMap<String, Option<Text>>,
}

/// What the upstream receives.
#[derive(Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct UpstreamExpect {
    /// Whether the request reaches it at all (`true`).
    pub reached: bool,
    /// The method.
    pub method: Option<String>,
    /// The path and query.
    pub path: Option<String>,
    /// Headers, as `Expect::headers`.
    pub headers: BTreeMap<String, Option<Text>>,
    /// The body.
    pub body: Option<Text>,
    /// Trailers, as headers.
    pub trailers: BTreeMap<String, Option<Text>>,
}

impl Default for UpstreamExpect {
    fn default() -> Self {
        UpstreamExpect {
            reached: true,
            method: None,
            path: None,
            headers: BTreeMap::new(),
            body: None,
            trailers: BTreeMap::new(),
        }
    }
}

/// What a callout service receives in one call.
#[derive(Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct CallExpect {
    /// The method.
    pub method: Option<String>,
    /// The path (for gRPC, `/package.Service/Method`).
    pub path: Option<String>,
    /// Headers (for gRPC, the initial metadata), as `Expect::headers`.
    pub headers: BTreeMap<String, Option<Text>>,
    /// The body (HTTP).
    pub body: Option<Text>,
    /// The request messages (gRPC).
    pub messages: Option<Vec<Text>>,
}

impl Spec {
    /// Reads and checks a spec file; the plugin path becomes relative to the working
    /// directory. Errors name the file and the field.
    pub fn read(file: &Path) -> Result<Spec, String> {
        let text = std::fs::read_to_string(file).map_err(|e| format!("cannot read {}: {e}", file.display()))?;
        let json = wasmproxy_config::yaml_to_json(&text).map_err(|e| format!("{}: {e}", file.display()))?;
        let mut spec: Spec = serde_path_to_error::deserialize(json).map_err(|e| {
            let path = e.path().to_string();
            let at = if path == "." { String::new() } else { format!("{path}: ") };
            format!("{}: {at}{}", file.display(), e.into_inner())
        })?;
        spec.check().map_err(|e| format!("{}: {e}", file.display()))?;
        spec.plugin = file.parent().unwrap_or(Path::new("")).join(&spec.plugin);
        Ok(spec)
    }

    /// `PluginConfig.name`.
    pub fn plugin_name(&self) -> String {
        self.name
            .clone()
            .unwrap_or_else(|| self.plugin.file_stem().map_or("plugin".into(), |s| s.to_string_lossy().into_owned()))
    }

    /// What serde cannot tell: answers that fit their cluster's protocol, calls to clusters
    /// the spec declares, one way to give a body.
    fn check(&self) -> Result<(), String> {
        if self.cases.is_empty() {
            return Err("cases: a spec has at least one case".into());
        }
        if let Some(policy) = &self.failure_policy
            && !["FAIL_CLOSED", "FAIL_OPEN", "FAIL_RELOAD"].contains(&policy.as_str())
        {
            return Err(format!("failure_policy: {policy:?} is not FAIL_CLOSED, FAIL_OPEN or FAIL_RELOAD"));
        }
        for name in self.callouts.keys() {
            if name == UPSTREAM_CLUSTER {
                return Err(format!("callouts.{name}: the name is the upstream's cluster"));
            }
        }
        for (i, case) in self.cases.iter().enumerate() {
            let at = format!("cases[{i}] ({:?})", case.name);
            if let Some(r) = &case.request {
                if r.body.is_some() && !r.chunks.is_empty() {
                    return Err(format!("{at}.request: body and chunks are two ways of giving the body: give one"));
                }
                if !r.trailers.0.is_empty() && !r.http2 {
                    return Err(format!("{at}.request.trailers: request trailers need http2: true"));
                }
            }
            if let Some(a) = &case.upstream {
                a.check(Protocol::Http).map_err(|e| format!("{at}.upstream: {e}"))?;
            }
            for (cluster, answers) in &case.calls {
                let callout = self
                    .callouts
                    .get(cluster)
                    .ok_or_else(|| format!("{at}.calls.{cluster}: no callout of that name (see callouts)"))?;
                for (j, a) in answers.iter().enumerate() {
                    a.check(callout.protocol).map_err(|e| format!("{at}.calls.{cluster}[{j}]: {e}"))?;
                }
            }
            for cluster in case.expect.calls.keys() {
                if !self.callouts.contains_key(cluster) {
                    return Err(format!("{at}.expect.calls.{cluster}: no callout of that name (see callouts)"));
                }
            }
        }
        Ok(())
    }
}

/// The cluster the route sends requests to.
pub const UPSTREAM_CLUSTER: &str = "upstream";

impl Answer {
    /// Its fields fit the protocol.
    fn check(&self, protocol: Protocol) -> Result<(), String> {
        let grpc = !self.messages.is_empty() || self.grpc_status.is_some() || self.grpc_message.is_some();
        match protocol {
            Protocol::Http if grpc => Err("messages, grpc_status and grpc_message are for gRPC callouts".into()),
            Protocol::Grpc if self.body.is_some() => {
                Err("a gRPC answer has messages (and grpc_status, grpc_message), not a body".into())
            }
            _ => Ok(()),
        }
    }
}
