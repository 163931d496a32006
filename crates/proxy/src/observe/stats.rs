//! The proxy's own stats, under Envoy's names and with Envoy's tags: the HTTP connection
//! manager's (`http.<stat_prefix>.*`), the TCP proxy's (`tcp.<stat_prefix>.*`), listeners'
//! (`listener.<address>.*`), clusters'
//! (`cluster.<name>.*`), the server's (`server.*`), the Wasm runtime's (`wasm.*`) and the
//! configuration files' subscriptions (`listener_manager.lds.*`, ...).
//! Each worker takes handles once; recording is a relaxed add on the thread's own cell.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use wasmproxy_config::ResourceFileError;
use wasmproxy_config::model::{StatsConfig, StatsTagValue};
use wasmproxy_stats::store::Unit;
use wasmproxy_stats::{Counter, Gauge, Histogram, Scope, StatName, Store, TagRule, TagRules, TagValue, TextReadout};

use crate::tls::ocsp::Stapling;
use crate::tls::session::{HandshakeFailure, TlsTransport};

/// A response code's class (1..=5), or `None` outside 100..=599.
fn class(code: u16) -> Option<usize> {
    (100..600).contains(&code).then(|| usize::from(code / 100))
}

fn millis(d: Duration) -> u64 {
    d.as_millis().min(u128::from(u64::MAX)) as u64
}

/// `downstream_rq_1xx` ... `_5xx` and `downstream_rq_completed` in one scope.
struct CodeClasses {
    xx: [Counter; 5],
    completed: Counter,
}

impl CodeClasses {
    fn new(scope: &Scope, stem: &str) -> CodeClasses {
        let xx = [1, 2, 3, 4, 5].map(|c| {
            let digit = c.to_string();
            scope.store().counter(scope.tagged_name(
                &format!("{stem}_{c}xx"),
                &format!("{stem}_xx"),
                ("envoy_response_code_class", &digit),
            ))
        });
        CodeClasses { xx, completed: scope.counter(&format!("{stem}_completed")) }
    }

    fn charge(&self, code: Option<u16>) {
        let Some(code) = code else { return };
        if let Some(c) = class(code) {
            self.xx[c - 1].inc();
        }
        self.completed.inc();
    }
}

/// Envoy's stats of one subscription, here a watched file (`listener_manager.lds.`,
/// `cluster_manager.cds.`, `http.<prefix>.rds.<name>.`, `cluster.<name>.` for EDS):
/// `update_attempt`, `update_success`, `update_rejected`, `update_failure`, and the accepted
/// `version_info` as `version_text` and as `version` (its xxHash64, as Envoy shows it).
pub struct SubscriptionStats {
    attempt: Counter,
    success: Counter,
    rejected: Counter,
    failure: Counter,
    version: Gauge,
    version_text: TextReadout,
}

impl SubscriptionStats {
    /// The stats under `prefix` (which ends with `.`), shown at 0 from now on.
    pub fn new(store: &Store, prefix: &str) -> SubscriptionStats {
        let c = |name: &str| store.counter(StatName::plain(format!("{prefix}{name}")));
        SubscriptionStats {
            attempt: c("update_attempt"),
            success: c("update_success"),
            rejected: c("update_rejected"),
            failure: c("update_failure"),
            version: store.gauge(StatName::plain(format!("{prefix}version"))),
            version_text: store.text_readout(StatName::plain(format!("{prefix}version_text"))),
        }
    }

    /// Stats kept nowhere, for a subscription that is not configured (Envoy shows none).
    pub fn detached() -> SubscriptionStats {
        SubscriptionStats {
            attempt: Counter::detached("update_attempt"),
            success: Counter::detached("update_success"),
            rejected: Counter::detached("update_rejected"),
            failure: Counter::detached("update_failure"),
            version: Gauge::detached("version"),
            version_text: TextReadout::detached("version_text"),
        }
    }

    /// A changed file is being read.
    pub fn attempted(&self) {
        self.attempt.inc();
    }

    /// Its resources were taken: this `version_info` is served.
    pub fn accepted(&self, version_info: &str) {
        self.success.inc();
        self.version.set(twox_hash::XxHash64::oneshot(0, version_info.as_bytes()));
        self.version_text.set(version_info);
    }

    /// Its resources were refused (they do not make a configuration that can serve).
    pub fn rejected(&self) {
        self.rejected.inc();
    }

    /// The stream the updates come on failed (`update_failure`, and, as Envoy counts it,
    /// an attempt).
    pub fn failed(&self) {
        self.attempt.inc();
        self.failure.inc();
    }

    /// A file that was not taken: unreadable (`update_failure`) or refused (`update_rejected`).
    pub fn not_taken(&self, error: &ResourceFileError) {
        match error {
            ResourceFileError::Unreadable(_) => self.failure.inc(),
            ResourceFileError::Refused(_) => self.rejected.inc(),
        }
    }
}

/// The stats store's tag rules for the bootstrap's `stats_config` (its regexes were checked
/// when the configuration was read).
pub fn tag_rules(config: &StatsConfig) -> TagRules {
    let custom = config
        .stats_tags
        .iter()
        .filter_map(|t| {
            let value = match &t.value {
                StatsTagValue::Regex(re) => TagValue::Regex(regex::Regex::new(re).ok()?),
                StatsTagValue::Fixed(v) => TagValue::Fixed(v.clone()),
            };
            Some(TagRule { name: t.tag_name.clone(), value })
        })
        .collect();
    TagRules { custom, defaults: config.use_all_default_tags }
}

/// A listener address as Envoy writes it in stat names, from the configured address (a
/// listener on port 0 is `127.0.0.1_0` whatever port it got): `127.0.0.1_10000`,
/// `[__1]_10000`.
pub fn address_stat_name(ip: &str, port: u16) -> String {
    let host = if ip.contains(':') { format!("[{ip}]") } else { ip.to_string() };
    format!("{host}:{port}").replace(':', "_")
}

/// One HTTP connection manager's stats (`http.<stat_prefix>.`), with the per-listener ones
/// (`listener.<address>.http.<stat_prefix>.downstream_rq_*`).
pub struct HttpStats {
    cx_total: Counter,
    cx_ssl_total: Counter,
    cx_active: Gauge,
    cx_destroy: Counter,
    cx_destroy_active_rq: Counter,
    cx_destroy_remote_active_rq: Counter,
    rq_rx_reset: Counter,
    cx_http1_total: Counter,
    cx_http2_total: Counter,
    cx_http1_active: Gauge,
    cx_http2_active: Gauge,
    cx_length: Histogram,
    rq_total: Counter,
    rq_active: Gauge,
    rq_http1_total: Counter,
    rq_http2_total: Counter,
    rq_time: Histogram,
    rq_too_large: Counter,
    codes: CodeClasses,
    listener_codes: CodeClasses,
    /// Connections closed by `idle_timeout`.
    pub cx_idle_timeout: Counter,
    /// Streams ended by `stream_idle_timeout`.
    pub rq_idle_timeout: Counter,
    /// Requests whose headers took longer than `request_headers_timeout`.
    pub rq_header_timeout: Counter,
    /// The router's.
    pub no_route: Counter,
    /// The router's.
    pub no_cluster: Counter,
    /// The router's: direct responses and redirects.
    pub rq_direct_response: Counter,
    /// The router's: requests that reached it.
    pub router_rq_total: Counter,
    /// Connections upgraded (WebSocket, ...).
    pub cx_upgrades_total: Counter,
    /// Upgraded connections open.
    pub cx_upgrades_active: Gauge,
}

impl HttpStats {
    /// The stats of the HCM with `stat_prefix` on the listener whose address is named
    /// `address` in stats (see [`address_stat_name`]).
    pub fn new(store: &Arc<Store>, stat_prefix: &str, address: &str) -> HttpStats {
        let tag = [("envoy_http_conn_manager_prefix", stat_prefix)];
        let http = Scope::new(store, &format!("http.{stat_prefix}."), "http.", &tag);
        let on_listener = Scope::new(
            store,
            &format!("listener.{address}.http.{stat_prefix}."),
            "listener.http.",
            &[("envoy_http_conn_manager_prefix", stat_prefix), ("envoy_listener_address", address)],
        );
        HttpStats {
            cx_upgrades_total: http.counter("downstream_cx_upgrades_total"),
            cx_upgrades_active: http.gauge("downstream_cx_upgrades_active"),
            cx_total: http.counter("downstream_cx_total"),
            cx_ssl_total: http.counter("downstream_cx_ssl_total"),
            cx_active: http.gauge("downstream_cx_active"),
            cx_destroy: http.counter("downstream_cx_destroy"),
            cx_destroy_active_rq: http.counter("downstream_cx_destroy_active_rq"),
            cx_destroy_remote_active_rq: http.counter("downstream_cx_destroy_remote_active_rq"),
            rq_rx_reset: http.counter("downstream_rq_rx_reset"),
            cx_http1_total: http.counter("downstream_cx_http1_total"),
            cx_http2_total: http.counter("downstream_cx_http2_total"),
            cx_http1_active: http.gauge("downstream_cx_http1_active"),
            cx_http2_active: http.gauge("downstream_cx_http2_active"),
            cx_length: http.histogram("downstream_cx_length_ms", Unit::Milliseconds),
            rq_total: http.counter("downstream_rq_total"),
            rq_active: http.gauge("downstream_rq_active"),
            rq_http1_total: http.counter("downstream_rq_http1_total"),
            rq_http2_total: http.counter("downstream_rq_http2_total"),
            rq_time: http.histogram("downstream_rq_time", Unit::Milliseconds),
            rq_too_large: http.counter("downstream_rq_too_large"),
            codes: CodeClasses::new(&http, "downstream_rq"),
            listener_codes: CodeClasses::new(&on_listener, "downstream_rq"),
            cx_idle_timeout: http.counter("downstream_cx_idle_timeout"),
            rq_idle_timeout: http.counter("downstream_rq_idle_timeout"),
            rq_header_timeout: http.counter("downstream_rq_header_timeout"),
            no_route: http.counter("no_route"),
            no_cluster: http.counter("no_cluster"),
            rq_direct_response: http.counter("rq_direct_response"),
            router_rq_total: http.counter("rq_total"),
        }
    }

    /// A connection was accepted.
    pub fn connection_opened(&self, tls: bool) {
        self.cx_total.inc();
        self.cx_active.inc();
        if tls {
            self.cx_ssl_total.inc();
        }
    }

    /// The connection's protocol became known (its first request).
    pub fn connection_protocol(&self, http2: bool) {
        if http2 {
            self.cx_http2_total.inc();
            self.cx_http2_active.inc();
        } else {
            self.cx_http1_total.inc();
            self.cx_http1_active.inc();
        }
    }

    /// A connection ended after `lasted`; `http2` is its protocol if it had a request.
    pub fn connection_closed(&self, lasted: Duration, http2: Option<bool>) {
        self.cx_active.dec();
        self.cx_destroy.inc();
        match http2 {
            Some(true) => self.cx_http2_active.dec(),
            Some(false) => self.cx_http1_active.dec(),
            None => {}
        }
        self.cx_length.record(millis(lasted));
    }

    /// A request started.
    pub fn request_started(&self, http2: bool) {
        self.rq_total.inc();
        self.rq_active.inc();
        if http2 { self.rq_http2_total.inc() } else { self.rq_http1_total.inc() }
    }

    /// The client went away before the response was decided: a stream reset by the client.
    /// An HTTP/1.1 connection (one stream) also counts as closed by the client with an
    /// active request, as in Envoy.
    pub fn client_gone(&self, http2: bool) {
        self.rq_rx_reset.inc();
        if !http2 {
            self.cx_destroy_active_rq.inc();
            self.cx_destroy_remote_active_rq.inc();
        }
    }

    /// A request ended (`code` if a response was sent) after `lasted`.
    pub fn request_ended(&self, code: Option<u16>, lasted: Duration) {
        self.rq_active.dec();
        self.codes.charge(code);
        self.listener_codes.charge(code);
        self.rq_time.record(millis(lasted));
        if code == Some(413) {
            self.rq_too_large.inc();
        }
    }
}

/// A TCP proxy's stats (`tcp.<stat_prefix>.`, tagged `envoy_tcp_prefix`), all of
/// Envoy's. The ones wasmproxy never has cause to count stay at 0: its relay reads only what
/// it has written on (no watermark pauses, nothing buffered past a read, nothing left to
/// flush), and it has no idle or duration limits, drain or overload closes, delayed routes
/// or early data.
pub struct TcpProxyStats {
    /// Connections served.
    pub cx_total: Counter,
    /// Connections whose cluster does not exist.
    pub no_route: Counter,
    /// Bytes read from the client.
    pub rx_bytes_total: Counter,
    /// Bytes written to the client.
    pub tx_bytes_total: Counter,
    /// Connections closed for `idle_timeout`.
    pub idle_timeout: Counter,
    _zero: (Vec<Counter>, Vec<Gauge>),
}

impl TcpProxyStats {
    /// The stats of the TCP proxy with `stat_prefix`, shown at 0 from now on.
    pub fn new(store: &Arc<Store>, stat_prefix: &str) -> TcpProxyStats {
        let tcp = Scope::new(store, &format!("tcp.{stat_prefix}."), "tcp.", &[("envoy_tcp_prefix", stat_prefix)]);
        let zero_counters = [
            "downstream_cx_drain_close",
            "downstream_cx_overload_close",
            "downstream_flow_control_paused_reading_total",
            "downstream_flow_control_resumed_reading_total",
            "early_data_received_count_total",
            "max_downstream_connection_duration",
            "route_delayed_total",
            "upstream_flush_total",
        ];
        let zero_gauges =
            ["downstream_cx_rx_bytes_buffered", "downstream_cx_tx_bytes_buffered", "upstream_flush_active"];
        TcpProxyStats {
            cx_total: tcp.counter("downstream_cx_total"),
            no_route: tcp.counter("downstream_cx_no_route"),
            rx_bytes_total: tcp.counter("downstream_cx_rx_bytes_total"),
            tx_bytes_total: tcp.counter("downstream_cx_tx_bytes_total"),
            idle_timeout: tcp.counter("idle_timeout"),
            _zero: (
                zero_counters.iter().map(|n| tcp.counter(n)).collect(),
                zero_gauges.iter().map(|n| tcp.gauge(n)).collect(),
            ),
        }
    }
}

/// A listener's stats (`listener.<address>.`), with this worker's
/// (`listener.<address>.worker_<i>.`).
pub struct ListenerStats {
    /// Connections refused by the listener's connection limit.
    pub cx_overflow: Counter,
    /// Connections refused by the process-wide connection limit.
    pub global_cx_overflow: Counter,
    /// Connections no filter chain matched (closed).
    pub no_filter_chain_match: Counter,
    /// Connections whose listener filters took longer than `listener_filters_timeout`.
    pub pre_cx_timeout: Counter,
    /// Connections the client closed while the listener filters read them.
    pub listener_filter_remote_close: Counter,
    /// TLS handshakes longer than the chain's `transport_socket_connect_timeout`.
    pub transport_socket_connect_timeout: Counter,
    cx_total: Counter,
    cx_active: Gauge,
    cx_destroy: Counter,
    cx_length: Histogram,
    worker_cx_total: Counter,
    worker_cx_active: Gauge,
    /// `ssl.*`, for a listener that terminates TLS.
    ssl: Option<SslStats>,
}

/// `ssl.*` of a TLS listener (`listener.<address>.`) or cluster (`cluster.<name>.`).
pub struct SslStats {
    scope: Scope,
    handshake: Counter,
    connection_error: Counter,
    no_certificate: Counter,
    fail_verify_error: Counter,
    fail_verify_san: Counter,
    fail_verify_no_cert: Counter,
    session_reused: Counter,
    ocsp_staple_requests: Counter,
    ocsp_staple_responses: Counter,
    ocsp_staple_omitted: Counter,
    ocsp_staple_failed: Counter,
    /// `ssl.<kind>.<name>` (`ciphers`, `curves`, `versions`), made on first use and kept:
    /// the names are few.
    named: std::sync::Mutex<Vec<(&'static str, &'static str, Counter)>>,
}

impl SslStats {
    /// The stats under `scope`, shown at 0 from now on.
    fn new(scope: Scope) -> SslStats {
        SslStats {
            handshake: scope.counter("ssl.handshake"),
            connection_error: scope.counter("ssl.connection_error"),
            no_certificate: scope.counter("ssl.no_certificate"),
            fail_verify_error: scope.counter("ssl.fail_verify_error"),
            fail_verify_san: scope.counter("ssl.fail_verify_san"),
            fail_verify_no_cert: scope.counter("ssl.fail_verify_no_cert"),
            session_reused: scope.counter("ssl.session_reused"),
            ocsp_staple_requests: scope.counter("ssl.ocsp_staple_requests"),
            ocsp_staple_responses: scope.counter("ssl.ocsp_staple_responses"),
            ocsp_staple_omitted: scope.counter("ssl.ocsp_staple_omitted"),
            ocsp_staple_failed: scope.counter("ssl.ocsp_staple_failed"),
            named: Default::default(),
            scope,
        }
    }

    /// A handshake succeeded: on `session`'s version, cipher suite and curve;
    /// `peer_certificate`: the peer sent one.
    pub fn handshake(&self, session: &TlsTransport, peer_certificate: bool) {
        self.handshake.inc();
        if session.resumed() {
            self.session_reused.inc();
        }
        self.count("ciphers", session.cipher());
        self.count("curves", session.curve());
        let version = session.version().unwrap_or("unknown");
        if !peer_certificate {
            self.no_certificate.inc();
        }
        self.count("versions", version);
    }

    /// Counts one in `ssl.<kind>.<name>`.
    fn count(&self, kind: &'static str, name: &'static str) {
        let mut named = self.named.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        match named.iter().find(|(k, n, _)| *k == kind && *n == name) {
            Some((.., counter)) => counter.inc(),
            None => {
                let counter = self.scope.counter(&format!("ssl.{kind}.{name}"));
                counter.inc();
                named.push((kind, name, counter));
            }
        }
    }

    /// What a handshake did about OCSP, counted as Envoy counts it when it picks the
    /// certificate (before the handshake succeeds or fails).
    pub fn stapling(&self, stapling: Stapling) {
        let counter = match stapling {
            Stapling::NotAsked => return,
            Stapling::Stapled => &self.ocsp_staple_responses,
            Stapling::Omitted => &self.ocsp_staple_omitted,
            Stapling::Refused => &self.ocsp_staple_failed,
        };
        self.ocsp_staple_requests.inc();
        counter.inc();
    }

    /// A handshake failed (the connection closes). As in Envoy, `connection_error` does
    /// not count failed certificate checks.
    pub fn failed(&self, why: HandshakeFailure) {
        match why {
            HandshakeFailure::Verify => self.fail_verify_error.inc(),
            HandshakeFailure::VerifySan => self.fail_verify_san.inc(),
            HandshakeFailure::NoCertificate => self.fail_verify_no_cert.inc(),
            HandshakeFailure::Other => self.connection_error.inc(),
        }
    }
}

impl ListenerStats {
    /// The stats of the listener whose address is named `address` in stats, on worker
    /// `worker` (with its `ssl.*` ones if it terminates `tls`).
    pub fn new(store: &Arc<Store>, address: &str, worker: usize, tls: bool) -> ListenerStats {
        let listener =
            Scope::new(store, &format!("listener.{address}."), "listener.", &[("envoy_listener_address", address)]);
        let id = worker.to_string();
        let on_worker = Scope::new(
            store,
            &format!("listener.{address}.worker_{worker}."),
            "listener.worker.",
            &[("envoy_worker_id", &id), ("envoy_listener_address", address)],
        );
        ListenerStats {
            cx_overflow: listener.counter("downstream_cx_overflow"),
            global_cx_overflow: listener.counter("downstream_global_cx_overflow"),
            no_filter_chain_match: listener.counter("no_filter_chain_match"),
            pre_cx_timeout: listener.counter("downstream_pre_cx_timeout"),
            listener_filter_remote_close: listener.counter("downstream_listener_filter_remote_close"),
            transport_socket_connect_timeout: listener.counter("downstream_cx_transport_socket_connect_timeout"),
            cx_total: listener.counter("downstream_cx_total"),
            cx_active: listener.gauge("downstream_cx_active"),
            cx_destroy: listener.counter("downstream_cx_destroy"),
            cx_length: listener.histogram("downstream_cx_length_ms", Unit::Milliseconds),
            worker_cx_total: on_worker.counter("downstream_cx_total"),
            worker_cx_active: on_worker.gauge("downstream_cx_active"),
            ssl: tls.then(|| SslStats::new(listener)),
        }
    }

    /// `ssl.*`, for a listener with a TLS chain.
    pub fn ssl(&self) -> Option<&SslStats> {
        self.ssl.as_ref()
    }

    /// A connection was accepted.
    pub fn connection_opened(&self) {
        self.cx_total.inc();
        self.cx_active.inc();
        self.worker_cx_total.inc();
        self.worker_cx_active.inc();
    }

    /// A connection ended after `lasted`.
    pub fn connection_closed(&self, lasted: Duration) {
        self.cx_active.dec();
        self.worker_cx_active.dec();
        self.cx_destroy.inc();
        self.cx_length.record(millis(lasted));
    }
}

/// An SDS secret's `sds.<name>.*`: its subscription's stats, with the update's time and
/// duration as Envoy keeps them.
pub struct SdsStats {
    /// `update_attempt`, `update_success`, ..., `version`, `version_text`.
    pub subscription: SubscriptionStats,
    update_time: Gauge,
    update_duration: Histogram,
    _init_fetch_timeout: Counter,
    _key_rotation_failed: Counter,
}

impl SdsStats {
    /// The stats of the secret `name`, shown at 0 from now on.
    pub fn new(store: &Store, name: &str) -> SdsStats {
        let prefix = format!("sds.{name}.");
        let name = |stat: &str| StatName::plain(format!("{prefix}{stat}"));
        SdsStats {
            subscription: SubscriptionStats::new(store, &prefix),
            update_time: store.gauge(name("update_time")),
            update_duration: store.histogram(name("update_duration"), Unit::Milliseconds),
            _init_fetch_timeout: store.counter(name("init_fetch_timeout")),
            _key_rotation_failed: store.counter(name("key_rotation_failed")),
        }
    }

    /// The secret's `version_info` was taken, after `took`.
    pub fn accepted(&self, version_info: &str, took: Duration) {
        self.subscription.accepted(version_info);
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        self.update_time.set(now.as_millis() as u64);
        self.update_duration.record(millis(took));
    }
}

/// The TLS inspector's `tls_inspector.*`, shared by every listener that has one.
pub struct InspectorStats {
    tls_found: Counter,
    tls_not_found: Counter,
    sni_found: Counter,
    sni_not_found: Counter,
    alpn_found: Counter,
    alpn_not_found: Counter,
    /// ClientHellos too large to read (the connection closes).
    pub client_hello_too_large: Counter,
    bytes_processed: Histogram,
}

impl InspectorStats {
    /// The stats, shown at 0 from now on.
    pub fn new(store: &Store) -> InspectorStats {
        let c = |name: &str| store.counter(StatName::plain(format!("tls_inspector.{name}")));
        InspectorStats {
            tls_found: c("tls_found"),
            tls_not_found: c("tls_not_found"),
            sni_found: c("sni_found"),
            sni_not_found: c("sni_not_found"),
            alpn_found: c("alpn_found"),
            alpn_not_found: c("alpn_not_found"),
            client_hello_too_large: c("client_hello_too_large"),
            bytes_processed: store.histogram(StatName::plain("tls_inspector.bytes_processed"), Unit::Bytes),
        }
    }

    /// A connection's first `bytes` were read: TLS (with or without SNI and ALPN) or not.
    pub fn inspected(&self, bytes: usize, tls: Option<(bool, bool)>) {
        self.bytes_processed.record(bytes as u64);
        let Some((sni, alpn)) = tls else {
            self.tls_not_found.inc();
            return;
        };
        self.tls_found.inc();
        if sni { &self.sni_found } else { &self.sni_not_found }.inc();
        if alpn { &self.alpn_found } else { &self.alpn_not_found }.inc();
    }
}

/// One cluster's stats (`cluster.<name>.`), on one worker. As in Envoy, the router's
/// per-code counters and the request-time histograms appear once first used (they are
/// looked up once per worker and kept).
pub struct ClusterStats {
    /// `cluster.<name>.`, then its `external.` and `internal.` scopes.
    scopes: [Scope; 3],
    /// New connections.
    pub cx_total: Counter,
    /// Open connections.
    pub cx_active: Gauge,
    /// New HTTP/1.1 connections.
    pub cx_http1_total: Counter,
    /// New HTTP/2 connections.
    pub cx_http2_total: Counter,
    /// Connections that could not be made.
    pub cx_connect_fail: Counter,
    /// Connections that ended.
    pub cx_destroy: Counter,
    /// Time to connect.
    pub cx_connect_ms: Histogram,
    /// How long connections lasted.
    pub cx_length_ms: Histogram,
    /// Requests that found no endpoint.
    pub cx_none_healthy: Counter,
    /// Requests sent on a connection.
    pub rq_total: Counter,
    /// Requests that waited for a new connection.
    pub rq_pending_total: Counter,
    /// Requests that waited for a connection that then failed.
    pub rq_pending_failure_eject: Counter,
    /// Requests refused by the `max_pending_requests` circuit breaker.
    pub rq_pending_overflow: Counter,
    /// Requests refused by the `max_requests` circuit breaker.
    pub rq_active_overflow: Counter,
    /// Connections not made: the `max_connections` circuit breaker was open.
    pub cx_overflow: Counter,
    /// Requests past the route's timeout.
    pub rq_timeout: Counter,
    /// Tries past the retry policy's per-try timeout.
    pub rq_per_try_timeout: Counter,
    /// Retries made.
    pub rq_retry: Counter,
    /// Requests retried whose last answer was not one to retry.
    pub rq_retry_success: Counter,
    /// Requests that would have been retried again but had no retry left.
    pub rq_retry_limit_exceeded: Counter,
    /// Retries not made: the cluster's retry budget was used up.
    pub rq_retry_overflow: Counter,
    /// Back-offs waited before retries.
    pub rq_retry_backoff_exponential: Counter,
    /// Retries given up because the request body was too large to keep.
    pub retry_or_shadow_abandoned: Counter,
    /// Per (code, external): the code's, class's and completed counters, in the cluster's
    /// scope and in `external.` or `internal.`.
    codes: RefCell<HashMap<(u16, bool), [Counter; 6]>>,
    /// `upstream_rq_time`, then `external.upstream_rq_time`.
    times: [std::cell::OnceCell<Histogram>; 2],
    /// Endpoints.
    pub membership_total: Gauge,
    /// Healthy endpoints (all: wasmproxy has no health checking).
    pub membership_healthy: Gauge,
    /// Degraded endpoints.
    pub membership_degraded: Gauge,
    /// Endpoints left out of load balancing (waiting for their first health check, ...).
    pub membership_excluded: Gauge,
    /// Changes to the endpoint set.
    pub membership_change: Counter,
    /// Hosts picked from a priority in panic (too few healthy hosts).
    pub lb_healthy_panic: Counter,
    /// Connections closed for `idle_timeout`.
    pub cx_idle_timeout: Counter,
    /// Connections that carried `max_requests_per_connection`.
    pub cx_max_requests: Counter,
    /// `ssl.*`, for a cluster with TLS.
    pub ssl: Option<SslStats>,
}

impl ClusterStats {
    /// `cluster.<name>.`.
    pub fn scope(&self) -> &Scope {
        &self.scopes[0]
    }

    /// The stats of the cluster `name` (with `ssl.*` if it has `tls`).
    pub fn new(store: &Arc<Store>, name: &str, tls: bool) -> ClusterStats {
        let tags = [("envoy_cluster_name", name)];
        let scope = Scope::new(store, &format!("cluster.{name}."), "cluster.", &tags);
        let external = Scope::new(store, &format!("cluster.{name}.external."), "cluster.external.", &tags);
        let internal = Scope::new(store, &format!("cluster.{name}.internal."), "cluster.internal.", &tags);
        ClusterStats {
            cx_total: scope.counter("upstream_cx_total"),
            cx_active: scope.gauge("upstream_cx_active"),
            cx_http1_total: scope.counter("upstream_cx_http1_total"),
            cx_http2_total: scope.counter("upstream_cx_http2_total"),
            cx_connect_fail: scope.counter("upstream_cx_connect_fail"),
            cx_destroy: scope.counter("upstream_cx_destroy"),
            cx_connect_ms: scope.histogram("upstream_cx_connect_ms", Unit::Milliseconds),
            cx_length_ms: scope.histogram("upstream_cx_length_ms", Unit::Milliseconds),
            cx_none_healthy: scope.counter("upstream_cx_none_healthy"),
            rq_total: scope.counter("upstream_rq_total"),
            rq_pending_total: scope.counter("upstream_rq_pending_total"),
            rq_pending_failure_eject: scope.counter("upstream_rq_pending_failure_eject"),
            rq_pending_overflow: scope.counter("upstream_rq_pending_overflow"),
            rq_active_overflow: scope.counter("upstream_rq_active_overflow"),
            cx_overflow: scope.counter("upstream_cx_overflow"),
            rq_timeout: scope.counter("upstream_rq_timeout"),
            rq_per_try_timeout: scope.counter("upstream_rq_per_try_timeout"),
            rq_retry: scope.counter("upstream_rq_retry"),
            rq_retry_success: scope.counter("upstream_rq_retry_success"),
            rq_retry_limit_exceeded: scope.counter("upstream_rq_retry_limit_exceeded"),
            rq_retry_overflow: scope.counter("upstream_rq_retry_overflow"),
            rq_retry_backoff_exponential: scope.counter("upstream_rq_retry_backoff_exponential"),
            retry_or_shadow_abandoned: scope.counter("retry_or_shadow_abandoned"),
            codes: RefCell::default(),
            times: Default::default(),
            membership_total: scope.gauge("membership_total"),
            membership_healthy: scope.gauge("membership_healthy"),
            membership_degraded: scope.gauge("membership_degraded"),
            membership_excluded: scope.gauge("membership_excluded"),
            membership_change: scope.counter("membership_change"),
            lb_healthy_panic: scope.counter("lb_healthy_panic"),
            cx_idle_timeout: scope.counter("upstream_cx_idle_timeout"),
            cx_max_requests: scope.counter("upstream_cx_max_requests"),
            ssl: tls.then(|| SslStats::new(scope.clone())),
            scopes: [scope, external, internal],
        }
    }

    /// A response code the router answered with, from the upstream or its own (503 for a
    /// failed connection, 504 for a timeout): `upstream_rq_<code>`, `upstream_rq_<class>xx`,
    /// `upstream_rq_completed`, and the same under `external.` for requests not marked
    /// internal (`internal.` for those that are).
    pub fn charge(&self, code: u16, external: bool) {
        let mut codes = self.codes.borrow_mut();
        let counters = codes.entry((code, external)).or_insert_with(|| {
            let digits = code.to_string();
            let class = (code / 100).to_string();
            let origin = if external { 1 } else { 2 };
            let named = |i: usize, suffix: &str, extracted: &str, tag: Option<(&str, &str)>| {
                let scope = &self.scopes[i];
                let name = match tag {
                    Some(tag) => scope.tagged_name(suffix, extracted, tag),
                    None => scope.name(suffix),
                };
                scope.store().counter(name)
            };
            let set = |i: usize| {
                [
                    named(i, &format!("upstream_rq_{code}"), "upstream_rq", Some(("envoy_response_code", &digits))),
                    named(
                        i,
                        &format!("upstream_rq_{class}xx"),
                        "upstream_rq_xx",
                        Some(("envoy_response_code_class", &class)),
                    ),
                    named(i, "upstream_rq_completed", "upstream_rq_completed", None),
                ]
            };
            let [a, b, c] = set(0);
            let [d, e, f] = set(origin);
            [a, b, c, d, e, f]
        });
        for c in counters.iter() {
            c.inc();
        }
    }

    /// A response ended `took` after its request was sent.
    pub fn response_time(&self, took: Duration, external: bool) {
        let histogram = |i: usize| {
            self.times[i].get_or_init(|| self.scopes[i].histogram("upstream_rq_time", Unit::Milliseconds)).clone()
        };
        histogram(0).record(millis(took));
        if external {
            histogram(1).record(millis(took));
        }
    }
}
