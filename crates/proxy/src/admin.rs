//! The admin listener (`admin.address`), on its own thread, answering as Envoy 1.40's admin
//! does: `/stats` (text, JSON, Prometheus; `filter`, `usedonly`, `type`,
//! `histogram_buckets`), `/server_info`, `/config_dump`, `/certs`, `/clusters`, `/listeners`,
//! `/logging`, `/ready`, `/quitquitquit`, `/reset_counters`, `/help`. Paths that change
//! state want POST (405 otherwise); an unknown path gets 404 and the list of paths. The
//! same thread flushes the stats every `stats_flush_interval`.

use std::convert::Infallible;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Instant;

use bytes::Bytes;
use http::{Method, Response, StatusCode};
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::sync::watch;
use wasmproxy_config::model::Bootstrap;
use wasmproxy_stats::render::{self, BucketMode, Kind, Selection};
use wasmproxy_stats::{Gauge, StatName, Store};

use crate::tls::certificate::{CertificateDetails, ContextCertificates};
use crate::upstream::registry::Upstreams;
use crate::wasm::status::WasmBoard;

/// Process log levels, changed at run time through `/logging` (the binary owns the logger).
pub trait LogControl: Send + Sync {
    /// Every logger with its level, in a stable order.
    fn levels(&self) -> Vec<(String, String)>;
    /// Sets one logger's level (Envoy's names: trace, debug, info, warning, error,
    /// critical, off); `None` sets every logger.
    fn set(&self, logger: Option<&str>, level: &str) -> Result<(), LogControlError>;
}

/// Why a `/logging` change was refused.
#[derive(Debug, PartialEq, Eq)]
pub enum LogControlError {
    /// Not one of Envoy's level names.
    UnknownLevel,
    /// No logger of that name.
    UnknownLogger,
}

/// What admin shows of the configuration now: the bound listeners and the dynamic resources.
#[derive(Default)]
pub struct LiveView {
    /// Every listener's name and bound address (port 0 resolved).
    pub listeners: Vec<(String, SocketAddr)>,
    /// The listeners from the LDS file, with the version and time they came with.
    pub dynamic_listeners: Option<Accepted>,
    /// The clusters from the CDS file.
    pub dynamic_clusters: Option<Accepted>,
    /// The route configurations from xDS, each as it came (one document each).
    pub dynamic_routes: Vec<Accepted>,
    /// The filter configurations from ECDS, each as it came (one document each).
    pub dynamic_filters: Vec<Accepted>,
    /// Every TLS context served: each filter chain's, then each cluster's (`/certs`).
    pub tls_contexts: Vec<Arc<dyn ContextCertificates>>,
}

/// A dynamic resource file as last accepted.
#[derive(Clone)]
pub struct Accepted {
    /// Its `version_info`.
    pub version_info: String,
    /// When it was accepted.
    pub last_updated: std::time::SystemTime,
    /// Each resource as given.
    pub documents: Vec<serde_json::Value>,
}

/// What the admin listener answers from.
pub struct AdminState {
    /// The process's stats.
    pub store: Arc<Store>,
    /// Every cluster's endpoints and their figures.
    pub upstreams: Arc<Upstreams>,
    /// The configuration.
    pub config: Arc<Bootstrap>,
    /// The bound listeners and the dynamic resources now, kept by the main thread.
    pub live: Arc<RwLock<LiveView>>,
    /// The command line, as `/server_info` shows it (`command_line_options`).
    pub command_line: Value,
    /// Run-time log levels, if the binary gave them.
    pub logging: Option<Arc<dyn LogControl>>,
    /// Sending true stops the server (`/quitquitquit`).
    pub quit: Arc<watch::Sender<bool>>,
    /// The plugin VMs of every thread (`/wasm`).
    pub wasm: Arc<WasmBoard>,
    started: Instant,
    uptime: Gauge,
    memory_allocated: Gauge,
    memory_heap_size: Gauge,
}

impl AdminState {
    /// The admin's view of a server starting now; registers the `server.*` stats.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        store: Arc<Store>,
        upstreams: Arc<Upstreams>,
        config: Arc<Bootstrap>,
        live: Arc<RwLock<LiveView>>,
        command_line: Value,
        concurrency: usize,
        logging: Option<Arc<dyn LogControl>>,
        quit: Arc<watch::Sender<bool>>,
        wasm: Arc<WasmBoard>,
    ) -> AdminState {
        let gauge = |name: &str| store.gauge(StatName::plain(format!("server.{name}")));
        gauge("live").set(1);
        gauge("state").set(0);
        gauge("concurrency").set(concurrency as u64);
        let state = AdminState {
            uptime: gauge("uptime"),
            memory_allocated: gauge("memory_allocated"),
            memory_heap_size: gauge("memory_heap_size"),
            store,
            upstreams,
            config,
            live,
            command_line,
            logging,
            quit,
            wasm,
            started: Instant::now(),
        };
        state.refresh_memory();
        state
    }

    /// Envoy's stats flush: histograms move their samples to the interval and cumulative
    /// figures; `server.uptime` and the memory gauges are refreshed.
    pub fn flush(&self) {
        self.store.flush();
        self.uptime.set(self.started.elapsed().as_secs());
        self.refresh_memory();
    }

    /// What is served now.
    fn live(&self) -> std::sync::RwLockReadGuard<'_, LiveView> {
        self.live.read().unwrap_or_else(|e| e.into_inner())
    }

    fn refresh_memory(&self) {
        if let Some((allocated, heap)) = malloc_figures() {
            self.memory_allocated.set(allocated);
            self.memory_heap_size.set(heap);
        }
    }
}

/// Bytes allocated with malloc and the heap's size, from glibc's `mallinfo2`.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn malloc_figures() -> Option<(u64, u64)> {
    // SAFETY: mallinfo2 only reads the allocator's counters and returns them by value.
    let info = unsafe { libc::mallinfo2() };
    let allocated = (info.uordblks + info.hblkhd) as u64;
    Some((allocated, (info.arena + info.hblkhd) as u64))
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn malloc_figures() -> Option<(u64, u64)> {
    None
}

/// Starts the admin listener on its own thread; returns the bound address.
pub fn start(
    address: SocketAddr,
    state: Arc<AdminState>,
    mut shutdown: watch::Receiver<bool>,
) -> std::io::Result<(SocketAddr, std::thread::JoinHandle<()>)> {
    let listener = std::net::TcpListener::bind(address)?;
    listener.set_nonblocking(true)?;
    let bound = listener.local_addr()?;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let handle = std::thread::Builder::new().name("wasmproxy-admin".into()).spawn(move || {
        runtime.block_on(async move {
            let Ok(listener) = tokio::net::TcpListener::from_std(listener) else { return };
            let period = state.config.stats_flush_interval;
            let mut flush = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
            loop {
                tokio::select! {
                    accepted = listener.accept() => {
                        let Ok((stream, _)) = accepted else { continue };
                        let state = state.clone();
                        tokio::spawn(async move {
                            let service = service_fn(move |req| {
                                let state = state.clone();
                                async move { Ok::<_, Infallible>(answer(&req, &state)) }
                            });
                            let _ = hyper::server::conn::http1::Builder::new()
                                .serve_connection(TokioIo::new(stream), service)
                                .await;
                        });
                    }
                    _ = flush.tick() => state.flush(),
                    _ = shutdown.changed() => return,
                }
            }
        });
    })?;
    Ok((bound, handle))
}

/// An admin path: its name, whether it changes state (POST only), help text, parameters.
struct Endpoint {
    path: &'static str,
    mutates: bool,
    help: &'static str,
    params: &'static [(&'static str, &'static str)],
}

const ENDPOINTS: &[Endpoint] = &[
    Endpoint { path: "/", mutates: false, help: "Admin home page", params: &[] },
    Endpoint { path: "/certs", mutates: false, help: "print certs on machine", params: &[] },
    Endpoint {
        path: "/clusters",
        mutates: false,
        help: "upstream cluster status",
        params: &[("format", "File format to use; One of (text, json)")],
    },
    Endpoint { path: "/config_dump", mutates: false, help: "dump current configs", params: &[] },
    Endpoint { path: "/healthcheck/fail", mutates: true, help: "cause the server to fail health checks", params: &[] },
    Endpoint { path: "/healthcheck/ok", mutates: true, help: "cause the server to pass health checks", params: &[] },
    Endpoint { path: "/help", mutates: false, help: "print out list of admin commands", params: &[] },
    Endpoint {
        path: "/listeners",
        mutates: false,
        help: "print listener info",
        params: &[("format", "File format to use; One of (text, json)")],
    },
    Endpoint {
        path: "/logging",
        mutates: true,
        help: "query/change logging levels",
        params: &[
            (
                "paths",
                "Change multiple logging levels by setting to <logger_name1>:<desired_level1>,<logger_name2>:<desired_level2>.",
            ),
            (
                "level",
                "desired logging level, this will change all loggers's level; One of (, trace, debug, info, warning, error, critical, off)",
            ),
        ],
    },
    Endpoint { path: "/quitquitquit", mutates: true, help: "exit the server", params: &[] },
    Endpoint {
        path: "/ready",
        mutates: false,
        help: "print server state, return 200 if LIVE, otherwise return 503",
        params: &[],
    },
    Endpoint { path: "/reset_counters", mutates: true, help: "reset all counters to zero", params: &[] },
    Endpoint { path: "/server_info", mutates: false, help: "print server version/status information", params: &[] },
    Endpoint {
        path: "/stats",
        mutates: false,
        help: "print server stats",
        params: &[
            ("usedonly", "Only include stats that have been written by system since restart"),
            ("filter", "Regular expression (Google re2) for filtering stats"),
            ("invert_filter", "Invert the filter regex"),
            ("format", "Format to use; One of (text, json, prometheus)"),
            ("type", "Stat types to include.; One of (All, Counters, Histograms, Gauges, TextReadouts)"),
            ("histogram_buckets", "Histogram bucket display mode; One of (cumulative, disjoint, summary)"),
        ],
    },
    Endpoint {
        path: "/stats/prometheus",
        mutates: false,
        help: "print server stats in prometheus format",
        params: &[
            ("usedonly", "Only include stats that have been written by system since restart"),
            ("filter", "Regular expression (Google re2) for filtering stats"),
            ("invert_filter", "Invert the filter regex"),
        ],
    },
    Endpoint {
        path: "/wasm",
        mutates: false,
        help: "print the plugin VMs of each thread: module, plugins, memory, callbacks and their CPU time, failures (wasmproxy's own)",
        params: &[("format", "File format to use; One of (text, json, html)")],
    },
];

fn help_text() -> String {
    let mut out = String::from("admin commands are:\n");
    for e in ENDPOINTS {
        let post = if e.mutates { " (POST)" } else { "" };
        let _ = writeln!(out, "  {}{post}: {}", e.path, e.help);
        for (name, help) in e.params {
            let _ = writeln!(out, "      {name}: {help}");
        }
    }
    out
}

/// An admin answer: status, content type, body.
struct Answer(StatusCode, &'static str, String);

const TEXT: &str = "text/plain; charset=UTF-8";
const JSON: &str = "application/json";

fn answer<B>(req: &http::Request<B>, state: &AdminState) -> Response<Full<Bytes>> {
    let path = req.uri().path();
    let query = parse_query(req.uri().query().unwrap_or(""));
    let Answer(status, content_type, body) = match ENDPOINTS.iter().find(|e| e.path == path) {
        None => Answer(StatusCode::NOT_FOUND, TEXT, format!("invalid path. {}", help_text())),
        Some(e) if e.mutates && req.method() != Method::POST => {
            tracing::error!("admin path {path:?} mutates state, method={} rather than POST", req.method());
            Answer(StatusCode::METHOD_NOT_ALLOWED, TEXT, format!("Method {} not allowed, POST required.", req.method()))
        }
        Some(e) => route(e.path, &query, state),
    };
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static(content_type));
    h.insert(http::header::CACHE_CONTROL, http::HeaderValue::from_static("no-cache, max-age=0"));
    h.insert("x-content-type-options", http::HeaderValue::from_static("nosniff"));
    r
}

fn route(path: &str, query: &[(String, String)], state: &AdminState) -> Answer {
    let ok = |body: String| Answer(StatusCode::OK, TEXT, body);
    match path {
        "/" => Answer(StatusCode::OK, "text/html; charset=UTF-8", home_page()),
        "/help" => ok(help_text()),
        "/ready" => ok("LIVE\n".into()),
        "/stats" => stats(query, state, false),
        "/stats/prometheus" => stats(query, state, true),
        "/server_info" => Answer(StatusCode::OK, JSON, pretty(&server_info(state))),
        "/config_dump" => Answer(StatusCode::OK, JSON, pretty(&config_dump(state))),
        "/certs" => Answer(StatusCode::OK, JSON, pretty(&certs(state))),
        "/clusters" if param(query, "format") == Some("json") => {
            Answer(StatusCode::OK, JSON, pretty(&clusters_json(state)))
        }
        "/clusters" => ok(clusters_text(state)),
        "/listeners" if param(query, "format") == Some("json") => {
            let statuses: Vec<Value> = state
                .live()
                .listeners
                .iter()
                .map(|(name, a)| json!({"name": name, "local_address": socket_address(a)}))
                .collect();
            Answer(StatusCode::OK, JSON, pretty(&json!({ "listener_statuses": statuses })))
        }
        "/listeners" => ok(state.live().listeners.iter().map(|(name, a)| format!("{name}::{a}\n")).collect()),
        "/logging" => logging(query, state),
        "/wasm" if param(query, "format") == Some("json") => Answer(StatusCode::OK, JSON, pretty(&state.wasm.json())),
        "/wasm" if param(query, "format") == Some("html") => {
            Answer(StatusCode::OK, "text/html; charset=UTF-8", crate::wasm::status::PAGE.to_string())
        }
        "/wasm" => ok(state.wasm.text()),
        "/reset_counters" => {
            for c in state.store.snapshot().counters {
                c.reset();
            }
            ok("OK\n".into())
        }
        "/healthcheck/fail" => {
            crate::server_health::set_failing(true);
            ok("OK\n".into())
        }
        "/healthcheck/ok" => {
            crate::server_health::set_failing(false);
            ok("OK\n".into())
        }
        "/quitquitquit" => {
            tracing::info!("shutting down server instance");
            let _ = state.quit.send(true);
            ok("OK\n".into())
        }
        _ => Answer(StatusCode::NOT_FOUND, TEXT, format!("invalid path. {}", help_text())),
    }
}

fn param<'a>(query: &'a [(String, String)], name: &str) -> Option<&'a str> {
    query.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

fn stats(query: &[(String, String)], state: &AdminState, prometheus: bool) -> Answer {
    let bad = |message: String| Answer(StatusCode::BAD_REQUEST, TEXT, message);
    let mut sel = Selection::default();
    let mut format = if prometheus { "prometheus" } else { "text" };
    for (k, v) in query {
        match k.as_str() {
            "usedonly" => sel.used_only = true,
            "invert_filter" => sel.invert = true,
            "filter" if !v.is_empty() => match regex::Regex::new(v) {
                Ok(re) => sel.filter = Some(re),
                Err(e) => return bad(format!("Invalid re2 regex: {e}")),
            },
            "format" if !prometheus => format = v.as_str(),
            "type" => {
                sel.kind = match v.as_str() {
                    "All" => None,
                    "Counters" => Some(Kind::Counters),
                    "Gauges" => Some(Kind::Gauges),
                    "Histograms" => Some(Kind::Histograms),
                    "TextReadouts" => Some(Kind::TextReadouts),
                    _ => return bad("usage: /stats?type=(All|Counters|Gauges|Histograms|TextReadouts)\n".into()),
                }
            }
            "histogram_buckets" => {
                sel.buckets = match v.as_str() {
                    "summary" | "unset" => BucketMode::Summary,
                    "cumulative" => BucketMode::Cumulative,
                    "disjoint" => BucketMode::Disjoint,
                    _ => return bad("usage: /stats?histogram_buckets=(cumulative|disjoint|summary)\n".into()),
                }
            }
            _ => {}
        }
    }
    let snapshot = state.store.snapshot();
    match format {
        "text" => Answer(StatusCode::OK, TEXT, render::text(&snapshot, &sel)),
        "json" => Answer(StatusCode::OK, JSON, render::json(&snapshot, &sel)),
        "prometheus" => Answer(StatusCode::OK, TEXT, render::prometheus(&snapshot, &sel)),
        _ => bad("usage: /stats?format=(json|prometheus|text)\n\n".into()),
    }
}

fn logging(query: &[(String, String)], state: &AdminState) -> Answer {
    let Some(control) = &state.logging else {
        return Answer(StatusCode::NOT_FOUND, TEXT, "run-time log levels are not available in this process\n".into());
    };
    let mut result = Ok(());
    for (k, v) in query {
        result = match k.as_str() {
            "level" => control.set(None, v),
            "paths" => v.split(',').filter(|p| !p.is_empty()).try_for_each(|pair| match pair.split_once(':') {
                Some((name, level)) => control.set(Some(name), level),
                None => Err(LogControlError::UnknownLevel),
            }),
            name => control.set(Some(name), v),
        };
        if result.is_err() {
            break;
        }
    }
    let mut body = String::new();
    let status = match result {
        Ok(()) => StatusCode::OK,
        Err(e) => {
            let what = if e == LogControlError::UnknownLevel { "level" } else { "name" };
            let _ = write!(
                body,
                "error: unknown logger {what}\n\n\
                 usage: /logging?<name>=<level> (change single level)\n\
                 usage: /logging?paths=name1:level1,name2:level2,... (change multiple levels)\n\
                 usage: /logging?level=<level> (change all levels)\n\
                 levels: trace debug info warning error critical off \n"
            );
            StatusCode::BAD_REQUEST
        }
    };
    body.push_str("active loggers:\n");
    for (name, level) in control.levels() {
        let _ = writeln!(body, "  {name}: {level}");
    }
    body.push('\n');
    Answer(status, TEXT, body)
}

fn server_info(state: &AdminState) -> Value {
    let uptime = format!("{}s", state.started.elapsed().as_secs());
    let l = &state.config.node.locality;
    // As protobuf's JSON shows a message: empty fields left out.
    let locality: serde_json::Map<String, Value> =
        [("region", &l.region), ("zone", &l.zone), ("sub_zone", &l.sub_zone)]
            .into_iter()
            .filter(|(_, v)| !v.is_empty())
            .map(|(k, v)| (k.to_string(), json!(v)))
            .collect();
    let mut info = json!({
        "version": format!("wasmproxy/{}", env!("CARGO_PKG_VERSION")),
        "state": "LIVE",
        "uptime_current_epoch": uptime,
        "uptime_all_epochs": uptime,
        "hot_restart_version": "disabled",
        "command_line_options": state.command_line,
        "node": {
            "id": state.config.node.id,
            "cluster": state.config.node.cluster,
            "user_agent_name": "wasmproxy",
        },
    });
    if !locality.is_empty() {
        info["node"]["locality"] = Value::Object(locality);
    }
    info
}

/// Envoy's `ConfigDump` envelope around the configuration as loaded: the bootstrap, then
/// the clusters, listeners and route configurations (static and dynamic), then the filter
/// configurations from ECDS.
fn config_dump(state: &AdminState) -> Value {
    let doc = &state.config.document;
    let statics = |kind: &str| doc["static_resources"][kind].as_array().cloned().unwrap_or_default();
    let clusters: Vec<Value> = statics("clusters").into_iter().map(|c| json!({ "cluster": c })).collect();
    let listeners: Vec<Value> =
        statics("listeners").into_iter().map(|l| json!({"name": l["name"], "active_state": {"listener": l}})).collect();
    let mut routes = Vec::new();
    for l in statics("listeners") {
        for chain in l["filter_chains"].as_array().into_iter().flatten() {
            for f in chain["filters"].as_array().into_iter().flatten() {
                let route_config = &f["typed_config"]["route_config"];
                if !route_config.is_null() {
                    routes.push(json!({ "route_config": route_config }));
                }
            }
        }
    }
    const PREFIX: &str = "type.googleapis.com/envoy.admin.v3.";
    let mut cluster_dump = json!({"@type": format!("{PREFIX}ClustersConfigDump"), "static_clusters": clusters});
    let mut listener_dump = json!({"@type": format!("{PREFIX}ListenersConfigDump"), "static_listeners": listeners});
    let live = state.live();
    // The dynamic resources as Envoy dumps them: each with the version and time it came with.
    if let Some(accepted) = &live.dynamic_clusters {
        let (version, updated) = (&accepted.version_info, rfc3339(accepted.last_updated));
        let dynamic: Vec<Value> = accepted
            .documents
            .iter()
            .map(|c| json!({"version_info": version, "cluster": c, "last_updated": updated}))
            .collect();
        cluster_dump["version_info"] = json!(version);
        cluster_dump["dynamic_active_clusters"] = json!(dynamic);
    }
    if let Some(accepted) = &live.dynamic_listeners {
        let (version, updated) = (&accepted.version_info, rfc3339(accepted.last_updated));
        let dynamic: Vec<Value> = accepted
            .documents
            .iter()
            .map(|l| {
                let state = json!({"version_info": version, "listener": l, "last_updated": updated});
                json!({"name": l["name"], "active_state": state})
            })
            .collect();
        listener_dump["version_info"] = json!(version);
        listener_dump["dynamic_listeners"] = json!(dynamic);
    }
    let each = |list: &[Accepted], key: &str| -> Vec<Value> {
        let documents = list.iter().flat_map(|a| a.documents.iter().map(move |d| (a, d)));
        documents
            .map(|(a, d)| json!({"version_info": a.version_info, key: d, "last_updated": rfc3339(a.last_updated)}))
            .collect()
    };
    let mut route_dump = json!({"@type": format!("{PREFIX}RoutesConfigDump"), "static_route_configs": routes});
    if !live.dynamic_routes.is_empty() {
        route_dump["dynamic_route_configs"] = json!(each(&live.dynamic_routes, "route_config"));
    }
    let mut configs = vec![
        json!({"@type": format!("{PREFIX}BootstrapConfigDump"), "bootstrap": doc}),
        cluster_dump,
        listener_dump,
        route_dump,
    ];
    if !live.dynamic_filters.is_empty() {
        let filters = each(&live.dynamic_filters, "ecds_filter");
        configs.push(json!({"@type": format!("{PREFIX}EcdsConfigDump"), "ecds_filters": filters}));
    }
    json!({ "configs": configs })
}

/// A time as protobuf's JSON writes a `Timestamp` (`2026-12-04T15:04:05.123Z`).
fn rfc3339(t: std::time::SystemTime) -> String {
    crate::clock::Utc::at(t).iso8601_millis()
}

/// Envoy's `/certs`: per TLS context, its CA and its certificate (an empty list for
/// what it has none of).
fn certs(state: &AdminState) -> Value {
    let now = crate::clock::Utc::now().unix;
    let shown = |d: Option<CertificateDetails>| d.map(|d| d.json(now)).into_iter().collect::<Vec<_>>();
    let certificates: Vec<Value> = state
        .live()
        .tls_contexts
        .iter()
        .map(|c| {
            let chain: Vec<Value> = c.certificate_chain().iter().map(|d| d.json(now)).collect();
            json!({"ca_cert": shown(c.ca_certificate()), "cert_chain": chain})
        })
        .collect();
    json!({ "certificates": certificates })
}

fn clusters_text(state: &AdminState) -> String {
    let mut out = String::new();
    for (name, health, hosts) in state.upstreams.members() {
        let _ = writeln!(out, "{name}::observability_name::{name}");
        if let Some(detector) = health.as_ref().and_then(|h| h.detector()) {
            let [external, local] = detector.averages();
            for (what, figures) in [("success_rate", external), ("local_origin_success_rate", local)] {
                let (average, threshold) = figures.unwrap_or((-1.0, -1.0));
                let _ = writeln!(out, "{name}::outlier::{what}_average::{average}");
                let _ = writeln!(out, "{name}::outlier::{what}_ejection_threshold::{threshold}");
            }
        }
        let _ = writeln!(out, "{name}::added_via_api::false");
        for (member, host) in hosts {
            let addr = member.addr;
            for (stat, value) in host_figures(&member, &host) {
                let _ = writeln!(out, "{name}::{addr}::{stat}::{value}");
            }
            let spec = &member.spec;
            let (success, local) = member.health.outlier.success_rates();
            let fields = [
                ("hostname", spec.hostname.clone()),
                ("health_flags", member.health.flags_text()),
                ("weight", spec.weight.to_string()),
                ("region", spec.locality.region.clone()),
                ("zone", spec.locality.zone.clone()),
                ("sub_zone", spec.locality.sub_zone.clone()),
                ("canary", "false".into()),
                ("priority", spec.priority.to_string()),
                ("success_rate", success.unwrap_or(-1.0).to_string()),
                ("local_origin_success_rate", local.unwrap_or(-1.0).to_string()),
            ];
            for (field, value) in fields {
                let _ = writeln!(out, "{name}::{addr}::{field}::{value}");
            }
        }
    }
    out
}

fn clusters_json(state: &AdminState) -> Value {
    let statuses: Vec<Value> = state
        .upstreams
        .members()
        .into_iter()
        .map(|(name, _, hosts)| {
            let hosts: Vec<Value> = hosts
                .into_iter()
                .map(|(member, host)| {
                    let stats: Vec<Value> = host_figures(&member, &host)
                        .into_iter()
                        .map(|(stat, value)| {
                            if stat.ends_with("_active") {
                                json!({"name": stat, "type": "GAUGE", "value": value.to_string()})
                            } else {
                                json!({"name": stat, "value": value.to_string()})
                            }
                        })
                        .collect();
                    json!({
                        "address": socket_address(&member.addr),
                        "stats": stats,
                        "health_status": health_status_json(&member),
                        "weight": member.spec.weight,
                        "priority": member.spec.priority,
                        "hostname": member.spec.hostname,
                        "locality": {
                            "region": member.spec.locality.region,
                            "zone": member.spec.locality.zone,
                            "sub_zone": member.spec.locality.sub_zone,
                        },
                    })
                })
                .collect();
            json!({"name": name, "host_statuses": hosts})
        })
        .collect();
    json!({ "cluster_statuses": statuses })
}

/// A host's figures in `/clusters` order (by name), its requests in flight among them.
fn host_figures(
    member: &crate::upstream::registry::MemberInfo,
    host: &crate::upstream::registry::HostStats,
) -> Vec<(&'static str, u64)> {
    let active = member.health.active_requests.load(std::sync::atomic::Ordering::Relaxed);
    let mut figures = host.figures().to_vec();
    figures.push(("rq_active", u64::from(active)));
    figures.sort();
    figures
}

/// A host's `health_status` as Envoy's JSON `/clusters` shows it.
fn health_status_json(member: &crate::upstream::registry::MemberInfo) -> Value {
    use crate::upstream::health::flag;
    use wasmproxy_config::model::EdsHealth;
    let h = &member.health;
    let eds = match member.spec.health_status {
        EdsHealth::Unhealthy => "UNHEALTHY",
        EdsHealth::Degraded => "DEGRADED",
        EdsHealth::Unknown | EdsHealth::Healthy => "HEALTHY",
    };
    let mut status = serde_json::Map::new();
    status.insert("eds_health_status".into(), json!(eds));
    for (f, key) in [
        (flag::FAILED_ACTIVE_HC, "failed_active_health_check"),
        (flag::FAILED_OUTLIER_CHECK, "failed_outlier_check"),
        (flag::DEGRADED_ACTIVE_HC, "failed_active_degraded_check"),
        (flag::PENDING_ACTIVE_HC, "pending_active_hc"),
        (flag::EXCLUDED_VIA_IMMEDIATE_HC_FAIL, "excluded_via_immediate_hc_fail"),
        (flag::ACTIVE_HC_TIMEOUT, "active_hc_timeout"),
    ] {
        if h.has(f) {
            status.insert(key.into(), json!(true));
        }
    }
    Value::Object(status)
}

fn socket_address(a: &SocketAddr) -> Value {
    json!({"socket_address": {"address": a.ip().to_string(), "port_value": a.port()}})
}

/// JSON indented by one space, as Envoy prints protobuf JSON.
fn pretty(v: &Value) -> String {
    use serde::Serialize;
    let mut out = Vec::new();
    let mut ser = serde_json::Serializer::with_formatter(&mut out, serde_json::ser::PrettyFormatter::with_indent(b" "));
    if v.serialize(&mut ser).is_err() {
        return "{}".into();
    }
    String::from_utf8(out).unwrap_or_default()
}

fn home_page() -> String {
    let mut out = String::from("<!DOCTYPE html>\n<html><head><title>wasmproxy admin</title></head><body>\n<ul>\n");
    for e in ENDPOINTS.iter().filter(|e| !e.mutates && e.path != "/") {
        let _ = writeln!(out, "<li><a href=\"{0}\">{0}</a>: {1}</li>", e.path, e.help);
    }
    out.push_str("</ul>\n</body></html>\n");
    out
}

/// `a=1&b=%5E` → pairs, percent-decoded (`+` is a space).
fn parse_query(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                match u8::from_str_radix(std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("zz"), 16) {
                    Ok(b) => {
                        out.push(b);
                        i += 3;
                        continue;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b'+' => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_are_percent_decoded() {
        assert_eq!(
            parse_query("filter=%5Ecluster%5C.&usedonly&x=a+b"),
            [("filter".into(), "^cluster\\.".into()), ("usedonly".into(), String::new()), ("x".into(), "a b".into())]
        );
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%4"), "%4");
    }

    #[test]
    fn help_lists_post_paths_and_parameters() {
        let help = help_text();
        assert!(help.starts_with("admin commands are:\n  /: Admin home page\n"));
        assert!(help.contains("  /quitquitquit (POST): exit the server\n"));
        assert!(help.contains("      usedonly: Only include stats"));
    }
}
