//! The admin listener, enough for now: `/ready`, `/stats`, `/stats/prometheus` with the
//! plugins' metrics under Envoy's names (`wasmcustom.<name>` in `/stats`; the prefix
//! dropped in Prometheus output, as Envoy prints it). The admin issue completes the rest.

use std::convert::Infallible;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::sync::watch;
use wasmproxy_host::SharedState;
use wasmproxy_host::shared::MetricValue;

/// Starts the admin listener on its own thread; returns the bound address.
pub fn start(
    address: SocketAddr,
    shared: Arc<SharedState>,
    mut shutdown: watch::Receiver<bool>,
) -> std::io::Result<(SocketAddr, std::thread::JoinHandle<()>)> {
    let listener = std::net::TcpListener::bind(address)?;
    listener.set_nonblocking(true)?;
    let bound = listener.local_addr()?;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let handle = std::thread::Builder::new().name("wasmproxy-admin".into()).spawn(move || {
        runtime.block_on(async move {
            let Ok(listener) = tokio::net::TcpListener::from_std(listener) else { return };
            loop {
                tokio::select! {
                    accepted = listener.accept() => {
                        let Ok((stream, _)) = accepted else { continue };
                        let shared = shared.clone();
                        tokio::spawn(async move {
                            let service = service_fn(move |req| {
                                let shared = shared.clone();
                                async move { Ok::<_, Infallible>(answer(req.uri(), &shared)) }
                            });
                            let _ = hyper::server::conn::http1::Builder::new()
                                .serve_connection(TokioIo::new(stream), service)
                                .await;
                        });
                    }
                    _ = shutdown.changed() => return,
                }
            }
        });
    })?;
    Ok((bound, handle))
}

const PATHS: &str = "admin commands are:\n  /ready: print server state, return 200 if LIVE, otherwise return 503\n  /stats: print server stats\n  /stats/prometheus: print server stats in prometheus format\n";

fn answer(uri: &http::Uri, shared: &SharedState) -> Response<Full<Bytes>> {
    match uri.path() {
        "/ready" => text(StatusCode::OK, "LIVE\n".into()),
        "/stats" => text(StatusCode::OK, stats_text(shared)),
        "/stats/prometheus" => text(StatusCode::OK, prometheus_text(shared)),
        _ => text(StatusCode::NOT_FOUND, format!("invalid path. {PATHS}")),
    }
}

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("text/plain; charset=UTF-8"));
    r
}

/// Envoy's `/stats` text: `name: value`, histograms as `P0(...)` summaries are left to the
/// admin issue (count and sum shown).
fn stats_text(shared: &SharedState) -> String {
    let mut out = String::from("server.live: 1\n");
    for (name, value) in shared.metrics.snapshot() {
        match value {
            MetricValue::Counter(v) | MetricValue::Gauge(v) => {
                let _ = writeln!(out, "wasmcustom.{name}: {v}");
            }
            MetricValue::Histogram { count, sum, .. } => {
                let _ = writeln!(out, "wasmcustom.{name}: count={count} sum={sum}");
            }
        }
    }
    out
}

/// Prometheus text exposition, as Envoy prints plugin metrics (no `wasmcustom` prefix,
/// `{}` labels).
fn prometheus_text(shared: &SharedState) -> String {
    let mut out = String::from("# TYPE envoy_server_live gauge\nenvoy_server_live{} 1\n");
    for (name, value) in shared.metrics.snapshot() {
        let name = prometheus_name(&name);
        match value {
            MetricValue::Counter(v) => {
                let _ = write!(out, "# TYPE {name} counter\n{name}{{}} {v}\n");
            }
            MetricValue::Gauge(v) => {
                let _ = write!(out, "# TYPE {name} gauge\n{name}{{}} {v}\n");
            }
            MetricValue::Histogram { count, sum, buckets } => {
                let _ = writeln!(out, "# TYPE {name} histogram");
                for (bound, n) in wasmproxy_host::shared::DEFAULT_HISTOGRAM_BUCKETS.iter().zip(&buckets) {
                    let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {n}");
                }
                let _ = write!(
                    out,
                    "{name}_bucket{{le=\"+Inf\"}} {count}\n{name}_sum{{}} {sum}\n{name}_count{{}} {count}\n"
                );
            }
        }
    }
    out
}

/// Prometheus allows `[a-zA-Z_:][a-zA-Z0-9_:]*`; Envoy turns anything else into `_`.
fn prometheus_name(name: &str) -> String {
    name.chars()
        .enumerate()
        .map(
            |(i, c)| {
                if c.is_ascii_alphabetic() || c == '_' || c == ':' || (i > 0 && c.is_ascii_digit()) { c } else { '_' }
            },
        )
        .collect()
}
