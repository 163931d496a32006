//! Active health checks as Envoy's: one session per endpoint checks it every interval
//! (HTTP, TCP or gRPC `grpc.health.v1.Health/Check`), over the cluster's TLS when it has
//! it, and marks it healthy or not by Envoy's rules: the first answer settles a new host,
//! then `healthy_threshold` passes or `unhealthy_threshold` network failures (an
//! unexpected answer fails it at once).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::{http1, http2};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::either::Either;
use wasmproxy_config::model::{HealthCheck, HealthCheckKind, HttpHealthCheck};
use wasmproxy_stats::{Counter, Gauge, Scope};

use crate::http::exec::LocalExec;
use crate::http::transport::TransportIo;
use crate::tls::session::TlsTransport;
use crate::tls::upstream::{Alpn, UpstreamTlsConfig};
use crate::upstream::health::{ClusterHealth, HostHealth, flag};

/// `cluster.<name>.health_check.*`.
pub struct CheckStats {
    attempt: Counter,
    success: Counter,
    failure: Counter,
    network_failure: Counter,
    healthy: Gauge,
    degraded: Gauge,
}

impl CheckStats {
    /// The stats in `scope` (`cluster.<name>.`).
    pub fn new(scope: &Scope) -> CheckStats {
        let counter = |name: &str| scope.counter(&format!("health_check.{name}"));
        // Envoy has these too; wasmproxy never counts them (no passive checks, no
        // `service_name_matcher`), and shows them at 0 as Envoy does.
        let _ = (counter("passive_failure"), counter("verify_cluster"));
        CheckStats {
            attempt: counter("attempt"),
            success: counter("success"),
            failure: counter("failure"),
            network_failure: counter("network_failure"),
            healthy: scope.gauge("health_check.healthy"),
            degraded: scope.gauge("health_check.degraded"),
        }
    }
}

/// Where and as what a session checks its endpoint.
#[derive(Clone)]
pub struct Target {
    /// The endpoint (its health's key).
    pub addr: SocketAddr,
    /// Where the checks go (`health_check_config.port_value` changes the port).
    pub check_addr: SocketAddr,
    /// `health_check_config.hostname`.
    pub hostname: String,
    /// Its health.
    pub health: Arc<HostHealth>,
}

/// What a session needs of its cluster.
pub struct Checker {
    /// The check.
    pub check: HealthCheck,
    /// The cluster's name (the default host of HTTP and gRPC checks).
    pub cluster: String,
    /// The cluster's TLS.
    pub tls: Option<Arc<UpstreamTlsConfig>>,
    /// The shared health.
    pub health: Arc<ClusterHealth>,
    /// Its stats.
    pub stats: CheckStats,
    /// Whether the cluster has had traffic (else checks go every `no_traffic_interval`).
    pub traffic: Box<dyn Fn() -> bool>,
}

/// How a check went.
enum Verdict {
    Healthy {
        degraded: bool,
    },
    /// An answer that is not the expected one (`retriable` counts toward the threshold).
    Failed {
        retriable: bool,
        immediate: bool,
    },
    /// No answer: the connection failed, or the check timed out.
    Network {
        timeout: bool,
    },
}

/// A session's count of passes and failures in a row, and whether no check ran yet.
struct Run {
    first: bool,
    passes: u32,
    failures: u32,
}

/// What kind of failure a check was.
#[derive(Default)]
struct Failure {
    /// No answer (connection failed or closed).
    network: bool,
    /// No answer in time.
    timeout: bool,
    /// A `retriable_statuses` answer.
    retriable: bool,
    /// The answer had `x-envoy-immediate-health-check-fail`.
    immediate: bool,
}

/// Whether the host's state changed with a check, is on its way to change, or not.
#[derive(PartialEq)]
enum Transition {
    Unchanged,
    Pending,
    Changed,
}

/// A connection kept between checks (`reuse_connection`).
enum Connection {
    Http1(http1::SendRequest<Full<Bytes>>),
    Http2(http2::SendRequest<Full<Bytes>>),
    Tcp(Io),
}

type Io = Either<TcpStream, TransportIo<TlsTransport>>;

impl Checker {
    /// Checks `target` until its task is aborted; `checked` is called after the first check.
    pub async fn session(self: std::rc::Rc<Self>, target: Target, checked: impl FnOnce()) {
        let mut checked = Some(checked);
        let check = &self.check;
        if !check.initial_jitter.is_zero() {
            tokio::time::sleep(jitter(Duration::ZERO, check.initial_jitter, 0)).await;
        }
        let mut connection = None;
        let mut run = Run { first: true, passes: 0, failures: 0 };
        loop {
            self.stats.attempt.inc();
            let verdict = match tokio::time::timeout(check.timeout, self.check_once(&target, &mut connection)).await {
                Ok(v) => v,
                Err(_) => Verdict::Network { timeout: true },
            };
            if matches!(verdict, Verdict::Network { .. }) || !check.reuse_connection {
                connection = None;
            }
            let healthy = matches!(verdict, Verdict::Healthy { .. });
            let transition = self.apply(&target, verdict, &mut run);
            if let Some(told) = checked.take() {
                told();
            }
            tokio::time::sleep(self.next_interval(healthy, transition)).await;
        }
    }

    /// Envoy's `handleSuccess` / `setUnhealthy`.
    fn apply(&self, target: &Target, verdict: Verdict, run: &mut Run) -> Transition {
        let transition = match verdict {
            Verdict::Healthy { degraded } => self.passed(&target.health, degraded, run),
            Verdict::Network { timeout } => {
                self.failed(target, Failure { network: true, timeout, ..Failure::default() }, run)
            }
            Verdict::Failed { retriable, immediate } => {
                self.failed(target, Failure { retriable, immediate, ..Failure::default() }, run)
            }
        };
        run.first = false;
        transition
    }

    /// A check passed: a failed host is healthy again after `healthy_threshold` passes (a
    /// new host at its first).
    fn passed(&self, host: &HostHealth, degraded: bool, run: &mut Run) -> Transition {
        let health = &self.health;
        let mut transition = Transition::Unchanged;
        run.failures = 0;
        if host.has(flag::FAILED_ACTIVE_HC) {
            run.passes += 1;
            if run.first || run.passes >= self.check.healthy_threshold {
                health.set(host, flag::ACTIVE_HC_TIMEOUT, false);
                health.set(host, flag::EXCLUDED_VIA_IMMEDIATE_HC_FAIL, false);
                health.set(host, flag::FAILED_ACTIVE_HC, false);
                self.stats.healthy.inc();
                transition = Transition::Changed;
            } else {
                transition = Transition::Pending;
            }
        }
        if health.set(host, flag::PENDING_ACTIVE_HC, false) {
            transition = Transition::Changed;
        }
        if health.set(host, flag::DEGRADED_ACTIVE_HC, degraded) {
            if degraded {
                self.stats.degraded.inc()
            } else {
                self.stats.degraded.dec()
            }
            if transition == Transition::Unchanged {
                transition = Transition::Changed;
            }
        }
        self.stats.success.inc();
        health.health_check_passed(host);
        transition
    }

    /// A check failed: the host is unhealthy at once for an unexpected answer, after
    /// `unhealthy_threshold` network failures (or retriable statuses) in a row.
    fn failed(&self, target: &Target, failure: Failure, run: &mut Run) -> Transition {
        let (health, host) = (&self.health, &*target.health);
        let mut transition = Transition::Unchanged;
        run.passes = 0;
        if !host.has(flag::FAILED_ACTIVE_HC) {
            run.failures += 1;
            if (!failure.network && !failure.retriable) || run.failures >= self.check.unhealthy_threshold {
                health.set(host, flag::FAILED_ACTIVE_HC, true);
                self.stats.healthy.dec();
                transition = Transition::Changed;
            } else {
                transition = Transition::Pending;
            }
        }
        if failure.immediate {
            health.set(host, flag::EXCLUDED_VIA_IMMEDIATE_HC_FAIL, true);
        }
        health.set(host, flag::ACTIVE_HC_TIMEOUT, failure.timeout && host.has(flag::FAILED_ACTIVE_HC));
        if health.set(host, flag::PENDING_ACTIVE_HC, false) {
            transition = Transition::Changed;
        }
        self.stats.failure.inc();
        if failure.network {
            self.stats.network_failure.inc();
        }
        if self.check.always_log_failures || transition != Transition::Unchanged {
            tracing::warn!(
                "cluster {}: health check of {} failed (now {})",
                self.cluster,
                target.addr,
                host.flags_text()
            );
        }
        transition
    }

    /// Envoy's interval after a check.
    fn next_interval(&self, healthy: bool, transition: Transition) -> Duration {
        let c = &self.check;
        let pending = transition == Transition::Pending;
        let base = if (self.traffic)() {
            match (healthy, pending) {
                (false, true) => c.unhealthy_edge_interval.or(c.unhealthy_interval).unwrap_or(c.interval),
                (false, false) => c.unhealthy_interval.unwrap_or(c.interval),
                (true, true) => c.healthy_edge_interval.unwrap_or(c.interval),
                (true, false) => c.interval,
            }
        } else if healthy && !pending {
            c.no_traffic_healthy_interval.unwrap_or(c.no_traffic_interval)
        } else {
            c.no_traffic_interval
        };
        jitter(base, c.interval_jitter, c.interval_jitter_percent).max(Duration::from_millis(1))
    }

    async fn check_once(&self, target: &Target, connection: &mut Option<Connection>) -> Verdict {
        match &self.check.kind {
            HealthCheckKind::Http(http) => self.check_http(target, http, connection).await,
            HealthCheckKind::Grpc { service_name, authority, metadata } => {
                self.check_grpc(target, service_name, authority, metadata, connection).await
            }
            HealthCheckKind::Tcp { send, receive } => self.check_tcp(target, send, receive, connection).await,
        }
    }

    /// A new connection to the target, TLS if the cluster has it.
    async fn connect(&self, target: &Target) -> Option<Io> {
        let tcp = TcpStream::connect(target.check_addr).await.ok()?;
        let _ = tcp.set_nodelay(true);
        match &self.tls {
            None => Some(Either::Left(tcp)),
            Some(tls) => {
                let alpn = if self.http2() { Alpn::Http2 } else { Alpn::Http1 };
                let session = tls.connect(tcp, target.addr, Some(alpn), None).await.ok()?;
                Some(Either::Right(TransportIo(Box::new(session))))
            }
        }
    }

    /// Whether the check speaks HTTP/2 (gRPC always does).
    fn http2(&self) -> bool {
        match &self.check.kind {
            HealthCheckKind::Http(http) => http.http2,
            HealthCheckKind::Grpc { .. } => true,
            HealthCheckKind::Tcp { .. } => false,
        }
    }

    /// The `:authority` of HTTP and gRPC checks: the endpoint's health check hostname,
    /// else the configured one, else the cluster's name.
    fn authority<'a>(&'a self, target: &'a Target, configured: &'a str) -> &'a str {
        [target.hostname.as_str(), configured].into_iter().find(|h| !h.is_empty()).unwrap_or(&self.cluster)
    }

    async fn check_http(
        &self,
        target: &Target,
        http: &HttpHealthCheck,
        connection: &mut Option<Connection>,
    ) -> Verdict {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        let authority = self.authority(target, &http.host);
        let uri = if http.http2 { format!("{scheme}://{authority}{}", http.path) } else { http.path.clone() };
        let mut request = http::Request::builder().method(http.method.as_str()).uri(uri);
        if !http.http2 {
            request = request.header(http::header::HOST, authority);
        }
        let mut request = match request.header(http::header::USER_AGENT, "Envoy/HC").body(Full::new(Bytes::new())) {
            Ok(r) => r,
            Err(_) => return Verdict::Failed { retriable: false, immediate: false },
        };
        let headers = request.headers_mut();
        for add in &http.headers_to_add {
            let value: String = add
                .value
                .iter()
                .map(|p| if let wasmproxy_config::format::Piece::Text(t) = p { t.as_str() } else { "" })
                .collect();
            let (Ok(name), Ok(value)) =
                (http::HeaderName::from_bytes(add.name.as_bytes()), http::HeaderValue::from_str(&value))
            else {
                continue;
            };
            use wasmproxy_config::model::AppendAction;
            match add.action {
                AppendAction::AppendIfExistsOrAdd => {
                    headers.append(name, value);
                }
                AppendAction::AddIfAbsent => {
                    headers.entry(name).or_insert(value);
                }
                AppendAction::OverwriteIfExistsOrAdd => {
                    headers.insert(name, value);
                }
                AppendAction::OverwriteIfExists => {
                    if headers.contains_key(&name) {
                        headers.insert(name, value);
                    }
                }
            }
        }
        for name in &http.headers_to_remove {
            headers.remove(name.as_str());
        }
        let response = match self.send(target, request, http.http2, connection).await {
            Some(r) => r,
            None => return Verdict::Network { timeout: false },
        };
        let status = response.status().as_u16();
        let immediate = response.headers().contains_key("x-envoy-immediate-health-check-fail");
        let degraded = response.headers().contains_key("x-envoy-degraded");
        // The body is read so that the connection can carry the next check.
        if response.into_body().collect().await.is_err() {
            return Verdict::Network { timeout: false };
        }
        let within = |ranges: &[(u16, u16)]| ranges.iter().any(|(start, end)| (*start..*end).contains(&status));
        if within(&http.expected_statuses) {
            Verdict::Healthy { degraded }
        } else {
            Verdict::Failed { retriable: within(&http.retriable_statuses), immediate }
        }
    }

    /// Sends an HTTP request on the kept connection, or a new one.
    async fn send(
        &self,
        target: &Target,
        request: http::Request<Full<Bytes>>,
        http2: bool,
        connection: &mut Option<Connection>,
    ) -> Option<http::Response<hyper::body::Incoming>> {
        let usable = match connection {
            Some(Connection::Http1(s)) => !http2 && s.is_ready(),
            Some(Connection::Http2(s)) => http2 && s.is_ready(),
            _ => false,
        };
        if !usable {
            let io = TokioIo::new(self.connect(target).await?);
            *connection = Some(if http2 {
                let (sender, conn) = http2::Builder::new(LocalExec).handshake(io).await.ok()?;
                tokio::task::spawn_local(conn);
                Connection::Http2(sender)
            } else {
                let (sender, conn) = http1::handshake(io).await.ok()?;
                tokio::task::spawn_local(conn);
                Connection::Http1(sender)
            });
        }
        match connection {
            Some(Connection::Http1(s)) => s.send_request(request).await.ok(),
            Some(Connection::Http2(s)) => s.send_request(request).await.ok(),
            _ => None,
        }
    }

    async fn check_grpc(
        &self,
        target: &Target,
        service: &str,
        authority: &str,
        metadata: &[(String, String)],
        connection: &mut Option<Connection>,
    ) -> Verdict {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        let authority = self.authority(target, authority);
        // HealthCheckRequest { service = 1 }, framed.
        let body = crate::upstream::grpc::frame(&crate::proto::string_field(1, service));
        let mut request = http::Request::builder()
            .method("POST")
            .uri(format!("{scheme}://{authority}/grpc.health.v1.Health/Check"))
            .header(http::header::CONTENT_TYPE, "application/grpc")
            .header(http::header::TE, "trailers")
            .header(http::header::USER_AGENT, "Envoy/HC")
            .header("grpc-timeout", format!("{}m", self.check.timeout.as_millis()));
        for (name, value) in metadata {
            request = request.header(name.as_str(), value.as_str());
        }
        let Ok(request) = request.body(Full::new(body)) else {
            return Verdict::Failed { retriable: false, immediate: false };
        };
        let Some(response) = self.send(target, request, true, connection).await else {
            return Verdict::Network { timeout: false };
        };
        let fail = Verdict::Failed { retriable: false, immediate: false };
        if response.status() != http::StatusCode::OK {
            return fail;
        }
        let header_status = response.headers().get("grpc-status").cloned();
        let Ok(collected) = response.into_body().collect().await else { return Verdict::Network { timeout: false } };
        let status = collected.trailers().and_then(|t| t.get("grpc-status").cloned()).or(header_status);
        if status.as_ref().map(|s| s.as_bytes()) != Some(b"0") {
            return fail;
        }
        let messages = crate::upstream::grpc::Deframer::default().push(&collected.to_bytes()).unwrap_or_default();
        if messages.first().is_some_and(|m| serving(m)) { Verdict::Healthy { degraded: false } } else { fail }
    }

    async fn check_tcp(
        &self,
        target: &Target,
        send: &[u8],
        receive: &[Vec<u8>],
        connection: &mut Option<Connection>,
    ) -> Verdict {
        let mut io = match connection.take() {
            Some(Connection::Tcp(io)) => io,
            _ => match self.connect(target).await {
                Some(io) => io,
                None => return Verdict::Network { timeout: false },
            },
        };
        // Connect only: the connection working is the check.
        if send.is_empty() && receive.is_empty() {
            return Verdict::Healthy { degraded: false };
        }
        if !send.is_empty() && io.write_all(send).await.is_err() {
            return Verdict::Network { timeout: false };
        }
        let mut got = Vec::new();
        let mut buf = [0u8; 1024];
        loop {
            if matches_in_order(&got, receive) {
                *connection = Some(Connection::Tcp(io));
                return Verdict::Healthy { degraded: false };
            }
            match io.read(&mut buf).await {
                Ok(0) | Err(_) => return Verdict::Network { timeout: false },
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    }
}

/// Whether every segment is found in `data`, each after the previous one.
fn matches_in_order(data: &[u8], segments: &[Vec<u8>]) -> bool {
    let mut from = 0;
    for segment in segments {
        match data[from..].windows(segment.len().max(1)).position(|w| w == segment.as_slice()) {
            Some(at) => from += at + segment.len(),
            None => return false,
        }
    }
    true
}

/// Whether a `HealthCheckResponse` says `SERVING` (`status`, field 1, is 1).
fn serving(message: &[u8]) -> bool {
    crate::proto::varint_field(message, 1) == Some(1)
}

/// `base` plus a random share of `jitter` and of `percent` of `base`.
fn jitter(base: Duration, jitter: Duration, percent: u32) -> Duration {
    let mut ms = base.as_millis() as u64;
    let share = u64::from(percent) * ms / 100;
    if share > 0 {
        ms += crate::random::next_u64() % share;
    }
    let jitter_ms = jitter.as_millis() as u64;
    if jitter_ms > 0 {
        ms += crate::random::next_u64() % jitter_ms;
    }
    Duration::from_millis(ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tcp_payloads_match_in_order_anywhere_in_the_answer() {
        let segments = vec![b"pong".to_vec(), b"ok".to_vec()];
        assert!(matches_in_order(b"xxpongyyok", &segments));
        assert!(!matches_in_order(b"okpong", &segments), "out of order");
        assert!(!matches_in_order(b"pon", &segments));
    }

    #[test]
    fn a_grpc_answer_is_serving_only_with_status_1() {
        assert!(serving(&[0x08, 0x01]));
        assert!(!serving(&[0x08, 0x02]), "NOT_SERVING");
        assert!(!serving(&[]), "no status is UNKNOWN");
    }
}
