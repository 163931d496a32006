//! Clusters, per worker: endpoints (resolved again on `dns_refresh_rate` for DNS
//! clusters), load balancing, and each endpoint's connections.

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::rc::{Rc, Weak};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use wasmproxy_config::model::{self, Discovery, DnsLookupFamily, ProtocolChoice};
use wasmproxy_host::Headers;
use wasmproxy_stats::Store;

use crate::http::body::{ProxyBody, whole};
use crate::http::convert;
use crate::limits::MAX_CALLOUT_BODY_BYTES;
use crate::observe::stats::ClusterStats;
use crate::stream_info::StreamRef;
use crate::stream_info::metadata::MetadataAttributes;
use crate::tls::upstream::{ClusterSecrets, UpstreamTlsConfig};
use crate::upstream::balancer::{Balancer, HostView};
use crate::upstream::breakers::{Breakers, Resource, Taken, WorkerBreakers, take};
use crate::upstream::error::UpstreamError;
use crate::upstream::health::{ActiveRequest, ClusterHealth, Health, HostHealth, flag};
use crate::upstream::outlier::Outcome;
use crate::upstream::pool::{EndpointPool, OpenConnection, Protocol, Reuse, SendError, Sent};
use crate::upstream::registry::{MemberInfo, Upstreams};

/// Every cluster of one worker, by name: replaced as a whole when the configuration
/// changes, while requests already sent keep the cluster they started on.
pub struct Clusters {
    by_name: RefCell<HashMap<String, Rc<Cluster>>>,
    store: Arc<Store>,
    upstreams: Arc<Upstreams>,
    /// Whether this copy counts endpoint changes (one copy per process does).
    primary: bool,
}

/// A cluster as a configuration snapshot hands it to the workers: its configuration, and
/// its TLS settings read once (on the main thread, where a bad file rejects the update).
pub struct ClusterSnapshot {
    /// The cluster as configured.
    pub config: model::Cluster,
    /// `transport_socket`, ready for handshakes.
    pub tls: Option<Arc<UpstreamTlsConfig>>,
    /// Its circuit breakers (`DEFAULT`, `HIGH`), shared by every worker.
    pub breakers: [Arc<Breakers>; 2],
    /// Its hosts' health, shared by every worker.
    pub health: Arc<ClusterHealth>,
}

impl ClusterSnapshot {
    /// Reads the cluster's TLS settings, with the secrets `secrets` gives; the error names
    /// the cluster and the field.
    pub fn new(config: &model::Cluster, secrets: &mut dyn ClusterSecrets) -> Result<ClusterSnapshot, String> {
        let tls = match &config.tls {
            Some(tls) => Some(Arc::new(
                UpstreamTlsConfig::new(tls, &config.upstream_http, secrets)
                    .map_err(|e| format!("cluster {}: transport_socket: {e}", config.name))?,
            )),
            None => None,
        };
        Ok(ClusterSnapshot {
            config: config.clone(),
            tls,
            breakers: [Breakers::new(config.circuit_breakers), Breakers::new(config.high_circuit_breakers)],
            health: ClusterHealth::new(config),
        })
    }
}

/// A connection for the TCP proxy: plain, or TLS over it.
pub enum RawUpstream {
    /// Plain TCP.
    Plain(tokio::net::TcpStream),
    /// TLS (the cluster's `transport_socket`).
    Tls(Box<crate::tls::session::TlsTransport>),
}

/// One cluster on one worker.
pub struct Cluster {
    config: model::Cluster,
    tls: Option<Arc<UpstreamTlsConfig>>,
    /// Its circuit breakers (`DEFAULT`, `HIGH`), shared by every worker.
    breakers: [WorkerBreakers; 2],
    metadata: Arc<MetadataAttributes>,
    /// The endpoints, replaced as a whole when DNS answers differently.
    endpoints: RefCell<Rc<[Member]>>,
    /// Its hosts' health, shared by every worker.
    health: Arc<ClusterHealth>,
    /// The load balancer, with the health generation it was built for (none: to build).
    balancer: RefCell<Option<(u64, Balancer)>>,
    /// Itself, for the health checks' task.
    me: Weak<Cluster>,
    stats: Rc<ClusterStats>,
    /// Whether this copy counts `membership_change` (one copy per process does).
    primary: bool,
    upstreams: Arc<Upstreams>,
}

/// One endpoint of a cluster on a worker: its connections, its health, its settings.
#[derive(Clone)]
struct Member {
    /// Connections of `DEFAULT` priority routes.
    pool: Rc<EndpointPool>,
    /// Connections of `HIGH` priority routes.
    high: Rc<EndpointPool>,
    health: Arc<HostHealth>,
    spec: Rc<model::Endpoint>,
}

/// Picks a retry makes to find an endpoint not tried yet.
const PREVIOUS_HOST_PICKS: u32 = 3;

/// Where a call of the proxy's own went: the endpoint, once picked.
pub type Picked = std::cell::Cell<Option<SocketAddr>>;

/// A response from an upstream, read whole.
pub struct UpstreamResponse {
    /// Status and headers, `:status` first.
    pub headers: Headers,
    /// The body.
    pub body: Bytes,
    /// Trailers, if any.
    pub trailers: Headers,
}

impl Clusters {
    /// No clusters yet (see [`Clusters::update`]). The `primary` copy (one per process: the
    /// first worker's) counts endpoint changes.
    pub fn new(store: &Arc<Store>, upstreams: &Arc<Upstreams>, primary: bool) -> Clusters {
        Clusters { by_name: RefCell::default(), store: store.clone(), upstreams: upstreams.clone(), primary }
    }

    /// Takes the clusters of a new configuration, with their endpoints resolved (DNS
    /// clusters keep resolving). A cluster whose configuration is unchanged keeps its
    /// connections, and so does one whose only change is its list of IP endpoints (EDS,
    /// STATIC) for the endpoints still in it; a changed one starts afresh; a removed one
    /// goes (its idle connections close) once the requests still on it end.
    pub async fn update(&self, snapshots: &[Arc<ClusterSnapshot>]) {
        let mut next = HashMap::new();
        for snapshot in snapshots {
            let c = &snapshot.config;
            let old = self.by_name.borrow().get(&c.name).cloned();
            let cluster = match old {
                // Its `config` keeps the endpoints it started with: the live ones are
                // compared by `set_endpoints`, which changes nothing if they are the same.
                Some(old) if old.same_but_endpoints(c) => {
                    old.set_endpoints(&resolve(c).await);
                    old
                }
                Some(old) if old.config == *c => old,
                _ => {
                    let stats = Rc::new(ClusterStats::new(&self.store, &c.name, c.tls.is_some()));
                    Cluster::start_cluster(snapshot, stats, self.upstreams.clone(), self.primary).await
                }
            };
            next.insert(c.name.clone(), cluster);
        }
        let old = self.by_name.replace(next);
        if self.primary {
            for name in old.keys().filter(|n| !self.by_name.borrow().contains_key(*n)) {
                self.upstreams.remove(name);
            }
        }
    }

    /// The cluster of that name.
    pub fn get(&self, name: &str) -> Option<Rc<Cluster>> {
        self.by_name.borrow().get(name).cloned()
    }
}

impl Cluster {
    /// Resolves the endpoints and, for DNS clusters, keeps resolving them every
    /// `dns_refresh_rate` for as long as the cluster lives. A host that does not resolve
    /// leaves the cluster without it (503 `no healthy upstream`) until it does, as in Envoy.
    async fn start_cluster(
        snapshot: &ClusterSnapshot,
        stats: Rc<ClusterStats>,
        upstreams: Arc<Upstreams>,
        primary: bool,
    ) -> Rc<Cluster> {
        let c = &snapshot.config;
        let addrs = resolve(c).await;
        let endpoints = RefCell::new(Rc::from([]));
        let metadata = Arc::new(MetadataAttributes::new(&c.metadata));
        snapshot.health.start_detector(stats.scope());
        let cluster = Rc::new_cyclic(|me| Cluster {
            config: c.clone(),
            tls: snapshot.tls.clone(),
            breakers: snapshot.breakers.each_ref().map(|b| b.on_worker()),
            metadata,
            endpoints,
            health: snapshot.health.clone(),
            balancer: RefCell::new(None),
            me: me.clone(),
            stats,
            primary,
            upstreams,
        });
        cluster.set_endpoints(&addrs);
        if matches!(c.discovery, Discovery::StrictDns | Discovery::LogicalDns) {
            let weak = Rc::downgrade(&cluster);
            tokio::task::spawn_local(refresh_dns(weak, c.dns_refresh_rate));
        }
        cluster.keep_runner();
        // As Envoy's initialization, the cluster is ready once every host had a check.
        if let Some(check) = c.health_checks.first() {
            let limit = check.initial_jitter + check.timeout + c.connect_timeout;
            let _ = tokio::time::timeout(limit, cluster.health.warmed()).await;
        }
        cluster
    }

    /// Runs the health checks and outlier detection's timer here if no copy of the
    /// cluster runs them (the copy that did may have gone).
    fn keep_runner(&self) {
        let needed = !self.config.health_checks.is_empty() || self.config.outlier_detection.is_some();
        if !needed || self.health.has_runner() {
            return;
        }
        if let Some(guard) = self.health.claim_runner() {
            tokio::task::spawn_local(crate::upstream::runner::run(self.me.clone(), guard));
        }
    }

    /// What the health checks' task needs of the cluster.
    pub(crate) fn runner_parts(&self) -> crate::upstream::runner::Parts {
        crate::upstream::runner::Parts {
            config: self.config.clone(),
            tls: self.tls.clone(),
            health: self.health.clone(),
            traffic: self.stats.cx_total.clone(),
            scope: self.stats.scope().clone(),
        }
    }

    /// The endpoints the health checks go to.
    pub(crate) fn check_targets(&self) -> Vec<crate::upstream::health_check::Target> {
        self.endpoints
            .borrow()
            .iter()
            .map(|m| {
                let addr = m.pool.addr();
                let port = m.spec.health_check_port.unwrap_or(addr.port());
                crate::upstream::health_check::Target {
                    addr,
                    check_addr: SocketAddr::new(addr.ip(), port),
                    hostname: m.spec.health_check_hostname.clone(),
                    health: m.health.clone(),
                }
            })
            .collect()
    }

    /// The cluster's `metadata` (`xds.cluster_metadata`).
    pub fn metadata(&self) -> &Arc<MetadataAttributes> {
        &self.metadata
    }

    /// Whether `other` differs from this cluster's configuration in its IP endpoints only.
    fn same_but_endpoints(&self, other: &model::Cluster) -> bool {
        matches!(other.discovery, Discovery::Static | Discovery::Eds)
            && model::Cluster { endpoints: Vec::new(), ..self.config.clone() }
                == model::Cluster { endpoints: Vec::new(), ..other.clone() }
    }

    /// A pool of connections to `addr` for the priority `priority` (0 `DEFAULT`, 1 `HIGH`).
    fn new_pool(&self, addr: SocketAddr, priority: usize) -> Rc<EndpointPool> {
        let c = &self.config;
        EndpointPool::new(
            addr,
            Protocol { http2: c.http2, choice: c.protocol_choice, connections: c.connections },
            c.connect_timeout,
            self.tls.clone(),
            self.breakers[priority].clone(),
            self.stats.clone(),
            self.upstreams.host(&c.name, addr),
        )
    }

    /// Takes a new endpoint list, keeping the connections of addresses still in it.
    fn set_endpoints(&self, resolved: &[(SocketAddr, model::Endpoint)]) {
        let old = self.endpoints.borrow().clone();
        let members: Vec<Member> = resolved
            .iter()
            .map(|(addr, spec)| {
                // A pool per priority, as Envoy's: each counts in its priority's breakers.
                let pools = match old.iter().find(|m| m.pool.addr() == *addr) {
                    Some(m) => (m.pool.clone(), m.high.clone()),
                    None => (self.new_pool(*addr, 0), self.new_pool(*addr, 1)),
                };
                let health = self.health.host(*addr, spec.health_status);
                Member { pool: pools.0, high: pools.1, health, spec: Rc::new(spec.clone()) }
            })
            .collect();
        let changed =
            members.len() != old.len() || members.iter().zip(old.iter()).any(|(a, b)| !Rc::ptr_eq(&a.pool, &b.pool));
        // The gauges are process-wide: every worker sets the same figure.
        self.stats.membership_total.set(members.len() as u64);
        if self.primary {
            if changed {
                self.stats.membership_change.inc();
            }
            let addrs: Vec<SocketAddr> = resolved.iter().map(|(a, _)| *a).collect();
            self.health.retain(&addrs);
            let shown = members
                .iter()
                .map(|m| MemberInfo {
                    addr: m.pool.addr(),
                    health: m.health.clone(),
                    spec: m.spec.clone().as_ref().clone(),
                })
                .collect();
            self.upstreams.set_members(&self.config.name, &self.health, shown);
        }
        *self.endpoints.borrow_mut() = Rc::from(members);
        *self.balancer.borrow_mut() = None;
    }

    /// A request passed the route's timeout (or, `per_try`, its last try's) before its
    /// response headers: Envoy's router counts `upstream_rq_timeout` (for the route's) and
    /// charges 504.
    pub fn timed_out(&self, external: bool, endpoint: Option<SocketAddr>, per_try: bool) {
        self.stats.charge(504, external);
        self.timed_out_responding(endpoint, per_try);
    }

    /// The route's timeout passed while the response streamed (its headers gone, so no
    /// 504 is counted, as in Envoy).
    pub fn timed_out_responding(&self, endpoint: Option<SocketAddr>, per_try: bool) {
        if !per_try {
            self.stats.rq_timeout.inc();
        }
        if let Some(m) = endpoint.and_then(|a| self.endpoints.borrow().iter().find(|m| m.pool.addr() == a).cloned()) {
            m.pool.host().rq_timeout.inc();
            m.pool.host().rq_error.inc();
            self.health.report(&m.health, Outcome::Timeout);
        }
    }

    /// The cluster's stats (shared by every worker's copy of the cluster).
    pub fn stats(&self) -> &ClusterStats {
        &self.stats
    }

    /// A connection to one endpoint for `tcp_proxy` (TLS if the cluster has it), noted in
    /// the stream's info.
    pub async fn connect_tcp(&self, info: Option<&StreamRef>) -> Result<(RawUpstream, OpenConnection), UpstreamError> {
        let endpoint = self.pick(None)?.pool;
        if let Some(info) = info {
            info.borrow_mut().upstream = Some(endpoint.addr());
        }
        let failure = |e: SendError| match e {
            SendError::Connect(e) | SendError::Request(e) | SendError::Refused(e) => {
                UpstreamError::ConnectionFailure(e)
            }
            SendError::Overflow => UpstreamError::Overflow,
        };
        let place = endpoint.connection_place().map_err(failure)?;
        let tcp = endpoint.connect_tcp().await.map_err(failure)?;
        let stream = match &self.tls {
            None => RawUpstream::Plain(tcp),
            Some(tls) => {
                let session = endpoint.handshake(tls, tcp, None).await.map_err(failure)?;
                if let Some(info) = info {
                    info.borrow_mut().upstream_tls = Some(tls.info(&session));
                }
                RawUpstream::Tls(Box::new(session))
            }
        };
        Ok((stream, OpenConnection::new(&self.stats, endpoint.host()).holding(place)))
    }

    /// Whether a request (of the stream `info`, if any) goes to the endpoints over HTTP/2,
    /// as far as the cluster knows before a connection's ALPN says.
    pub fn http2(&self, info: Option<&StreamRef>) -> bool {
        match self.config.protocol_choice {
            ProtocolChoice::Explicit => self.config.http2,
            ProtocolChoice::Downstream => info.is_some_and(|i| i.borrow().protocol == "HTTP/2"),
            ProtocolChoice::Alpn => false,
        }
    }

    /// A retry may start if fewer than `max_retries` (of its route's priority) are in
    /// progress in the cluster across workers; it holds its place until the guard goes.
    pub fn retry_budget(&self, high_priority: bool) -> Option<Taken> {
        take(&self.breakers[usize::from(high_priority)], Resource::Retries)
    }

    /// The next endpoint, one not in `avoid` if one of `attempts` more picks finds it.
    fn pick_avoiding(&self, hash: Option<u64>, avoid: &[SocketAddr], attempts: u32) -> Result<Member, UpstreamError> {
        let mut endpoint = self.pick(hash)?;
        for attempt in 0..attempts {
            if !avoid.contains(&endpoint.pool.addr()) {
                break;
            }
            // A hashing balancer moves on from the same hash, as Envoy's does on a retry.
            endpoint = self.pick(hash.map(|h| h ^ u64::from(attempt + 1).wrapping_neg()))?;
        }
        Ok(endpoint)
    }

    /// The next endpoint by the load balancer (`upstream_cx_none_healthy` counts a
    /// cluster without any); `hash` is the request's for a hashing balancer.
    fn pick(&self, hash: Option<u64>) -> Result<Member, UpstreamError> {
        self.keep_runner();
        let endpoints = self.endpoints.borrow();
        let generation = self.health.generation();
        let mut balancer = self.balancer.borrow_mut();
        if balancer.as_ref().is_none_or(|(g, _)| *g != generation) {
            *balancer = Some((generation, self.build_balancer(&endpoints)));
        }
        let Some((_, balancer)) = balancer.as_mut() else { return Err(UpstreamError::NoHealthyUpstream) };
        let active = |i: usize| endpoints[i].health.active_requests.load(std::sync::atomic::Ordering::Relaxed);
        let Some(picked) = balancer.pick(hash, &active) else {
            self.stats.cx_none_healthy.inc();
            return Err(UpstreamError::NoHealthyUpstream);
        };
        if picked.panic {
            self.stats.lb_healthy_panic.inc();
        }
        Ok(endpoints[picked.index].clone())
    }

    /// A load balancer over the endpoints as their health is now; the membership gauges.
    fn build_balancer(&self, endpoints: &[Member]) -> Balancer {
        let views: Vec<HostView<'_>> = endpoints
            .iter()
            .map(|m| HostView {
                weight: m.spec.weight,
                priority: m.spec.priority,
                locality: &m.spec.locality,
                locality_weight: m.spec.locality_weight,
                health: m.health.health(),
                excluded: m.health.has(flag::PENDING_ACTIVE_HC | flag::EXCLUDED_VIA_IMMEDIATE_HC_FAIL),
                hash_key: if self.config.common_lb.hash_by_hostname {
                    m.spec.hostname.clone()
                } else {
                    m.pool.addr().to_string()
                },
            })
            .collect();
        let count = |h: Health| views.iter().filter(|v| v.health == h && !v.excluded).count() as u64;
        self.stats.membership_healthy.set(count(Health::Healthy));
        self.stats.membership_degraded.set(count(Health::Degraded));
        self.stats.membership_excluded.set(views.iter().filter(|v| v.excluded).count() as u64);
        Balancer::new(self.config.lb_policy, &self.config.common_lb, &views)
    }

    /// Sends a request (headers with pseudo-headers) with a whole body, with
    /// `content-length` or not, and reads the whole response (for plugins' callouts).
    pub async fn send(
        &self,
        headers: &Headers,
        body: Bytes,
        timeout: Option<Duration>,
        content_length: bool,
    ) -> Result<UpstreamResponse, UpstreamError> {
        self.send_with_limit(headers, body, timeout, content_length, MAX_CALLOUT_BODY_BYTES).await
    }

    /// [`Cluster::send`], noting the endpoint it goes to in `picked` once one is picked
    /// (for a span's tags).
    pub async fn send_noting(
        &self,
        headers: &Headers,
        body: Bytes,
        timeout: Option<Duration>,
        picked: &Picked,
    ) -> Result<UpstreamResponse, UpstreamError> {
        self.exchange(headers, body, timeout, true, (MAX_CALLOUT_BODY_BYTES, picked)).await
    }

    /// [`Cluster::send`], with a response body of at most `limit` bytes.
    pub async fn send_with_limit(
        &self,
        headers: &Headers,
        body: Bytes,
        timeout: Option<Duration>,
        content_length: bool,
        limit: usize,
    ) -> Result<UpstreamResponse, UpstreamError> {
        self.exchange(headers, body, timeout, content_length, (limit, &Picked::default())).await
    }

    /// Sends a request with a whole body and reads the whole response, of at most `limit`
    /// bytes, noting the endpoint in `picked`.
    async fn exchange(
        &self,
        headers: &Headers,
        body: Bytes,
        timeout: Option<Duration>,
        content_length: bool,
        (limit, picked): (usize, &Picked),
    ) -> Result<UpstreamResponse, UpstreamError> {
        // Without a length the body goes as a stream, or hyper would announce its size.
        let body = if content_length {
            whole(body)
        } else {
            let (tx, streamed) = crate::http::body::channel();
            let _ = tx.try_send(Ok(hyper::body::Frame::data(body)));
            http_body_util::Either::Right(streamed)
        };
        let exchange = async {
            let started = self.start_avoiding(headers, body, content_length, (None, Some(picked)), &[]).await;
            self.charge(&started, is_external(headers));
            let Started { headers, body, .. } = started?;
            let collected = http_body_util::Limited::new(body, limit).collect().await.map_err(|e| {
                if e.is::<http_body_util::LengthLimitError>() {
                    UpstreamError::ResponseTooLarge
                } else {
                    UpstreamError::ConnectionFailure(e.to_string())
                }
            })?;
            let trailers = collected.trailers().map(convert::plain_headers).unwrap_or_default();
            Ok(UpstreamResponse { headers, body: collected.to_bytes(), trailers })
        };
        let (sent, external) = (std::time::Instant::now(), is_external(headers));
        let result = match timeout {
            Some(t) => tokio::time::timeout(t, exchange).await.unwrap_or_else(|_| {
                self.timed_out(external, None, false);
                Err(UpstreamError::Timeout)
            }),
            None => exchange.await,
        };
        if result.is_ok() {
            self.stats.response_time(sent.elapsed(), external);
        }
        result
    }

    /// The host a request's new connection is named after (`auto_sni`,
    /// `auto_san_validation`): `override_auto_sni_header`'s value if the request has one,
    /// else its `:authority` without the port; none for other clusters.
    fn connection_host(&self, headers: &Headers) -> Option<Rc<str>> {
        if !self.tls.as_ref().is_some_and(|t| t.per_host()) {
            return None;
        }
        let overridden = self.config.upstream_http.override_auto_sni_header.as_ref();
        let value = overridden.and_then(|h| headers.get(h.as_bytes())).filter(|v| !v.is_empty());
        let value = value.or_else(|| headers.get(b":authority"))?;
        let text = std::str::from_utf8(value).ok()?;
        let host = match text.parse::<http::uri::Authority>() {
            Ok(authority) => authority.host().trim_start_matches('[').trim_end_matches(']').to_string(),
            Err(_) => text.to_string(),
        };
        (!host.is_empty()).then(|| Rc::from(host))
    }

    /// Sends a request to one endpoint (noting it in the stream's info) and returns once the
    /// response headers are in; the body streams. `whole_body` sets `content-length` from
    /// the body (a body the proxy holds whole is always sent with its true length).
    pub async fn start(
        &self,
        headers: &Headers,
        body: ProxyBody,
        whole_body: bool,
        info: Option<&StreamRef>,
    ) -> Result<Started, UpstreamError> {
        let started = self.start_avoiding(headers, body, whole_body, (info, None), &[]).await;
        self.charge(&started, is_external(headers));
        started
    }

    /// How many endpoints the cluster has, and how many of them are healthy or degraded.
    pub fn membership(&self) -> (u64, u64) {
        let endpoints = self.endpoints.borrow();
        let up = endpoints.iter().filter(|m| m.health.health() != Health::Unhealthy).count();
        (endpoints.len() as u64, up as u64)
    }

    /// Charges a response code the proxy answered with for this cluster (an authorization
    /// service's denial, as Envoy charges it).
    pub fn charge_code(&self, code: u16, external: bool) {
        self.stats.charge(code, external);
    }

    /// The router charges the answer it passes on: its code, or 503 when the upstream
    /// failed (a timeout is charged by [`Cluster::timed_out`]).
    pub fn charge(&self, started: &Result<Started, UpstreamError>, external: bool) {
        match started {
            Ok(s) => self.stats.charge(convert::status(&s.headers).as_u16(), external),
            Err(
                UpstreamError::ConnectionFailure(_)
                | UpstreamError::Disconnected(_)
                | UpstreamError::Refused(_)
                | UpstreamError::Overflow,
            ) => self.stats.charge(503, external),
            Err(_) => {}
        }
    }

    /// [`Cluster::start`] on an endpoint not in `avoid`, if the load balancer finds one
    /// in a few picks (a retry's `previous_hosts`); the answer is not charged (the router
    /// charges the one it passes on). The endpoint is noted in the stream's `info` (or in
    /// `picked`, for a call of the proxy's own).
    pub async fn start_avoiding(
        &self,
        headers: &Headers,
        body: ProxyBody,
        whole_body: bool,
        (info, picked): (Option<&StreamRef>, Option<&Picked>),
        avoid: &[SocketAddr],
    ) -> Result<Started, UpstreamError> {
        let hash = info.and_then(|i| i.borrow().lb_hash);
        let member =
            if avoid.is_empty() { self.pick(hash)? } else { self.pick_avoiding(hash, avoid, PREVIOUS_HOST_PICKS)? };
        let high = info.is_some_and(|i| i.borrow().high_priority);
        let endpoint = if high { &member.high } else { &member.pool };
        // Over `max_requests`: Envoy's overflow, before anything is sent.
        let Some(place) = take(&self.breakers[usize::from(high)], Resource::Requests) else {
            self.stats.rq_active_overflow.inc();
            return Err(UpstreamError::Overflow);
        };
        if let Some(info) = info {
            info.borrow_mut().upstream = Some(endpoint.addr());
        }
        if let Some(picked) = picked {
            picked.set(Some(endpoint.addr()));
        }
        let request = self.upstream_request(headers, body, whole_body, info, &member)?;
        let load = ActiveRequest::start(&member.health);
        let response = endpoint.send(request, self.connection_host(headers)).await.map_err(|e| match e {
            SendError::Connect(e) => UpstreamError::ConnectionFailure(e),
            SendError::Request(e) => UpstreamError::Disconnected(e),
            SendError::Refused(e) => UpstreamError::Refused(e),
            SendError::Overflow => UpstreamError::Overflow,
        });
        let status = response.as_ref().ok().map(|s| s.response.status().as_u16());
        self.account(&member, status, response.as_ref().err());
        let Sent { response, connected, reuse } = response?;
        if let Some(info) = info {
            let mut i = info.borrow_mut();
            i.upstream_local = Some(connected.local);
            i.upstream_tls = connected.tls;
            i.upstream_responded = Some(i.since_start());
        }
        let (mut parts, body) = response.into_parts();
        let upgrade = (parts.status == http::StatusCode::SWITCHING_PROTOCOLS)
            .then(|| parts.extensions.remove::<hyper::upgrade::OnUpgrade>())
            .flatten();
        Ok(Started {
            headers: convert::response_headers(parts.status, &parts.headers),
            http2: parts.version == http::Version::HTTP_2,
            body,
            upgrade,
            request: InFlight { _place: place, _load: load, _reuse: reuse },
        })
    }
}

impl Cluster {
    /// The request as it goes to `member`: HTTP/1.1's form (an origin-form target and
    /// `host`) or HTTP/2's (the authority in the URI, which becomes `:authority`: the
    /// endpoint's address if the request has none usable); the host rewritten for
    /// `auto_host_rewrite`; `content-length` from a whole body.
    fn upstream_request(
        &self,
        headers: &Headers,
        body: ProxyBody,
        whole_body: bool,
        info: Option<&StreamRef>,
        member: &Member,
    ) -> Result<http::Request<ProxyBody>, UpstreamError> {
        let endpoint = &member.pool;
        let path = convert::text(headers, b":path");
        let path = if path.is_empty() { "/".to_string() } else { path };
        let rewritten = info.filter(|i| i.borrow().auto_host_rewrite).and_then(|_| self.hostname(member));
        let authority =
            rewritten.as_deref().map_or_else(|| headers.get(b":authority").unwrap_or_default(), str::as_bytes);
        let mut map = convert::header_map(headers);
        map.remove(http::header::TRANSFER_ENCODING);
        // As Envoy's rewrites: the old host goes along.
        if rewritten.is_some()
            && let Some(old) = headers.get(b":authority").and_then(|h| http::HeaderValue::from_bytes(h).ok())
        {
            map.insert("x-envoy-original-host", old);
        }
        // The request in HTTP/2's form (an absolute URI) when it may go over HTTP/2: the
        // pool makes it HTTP/1.1's if its connection is.
        let http2 = self.http2(info) || self.config.protocol_choice == ProtocolChoice::Alpn;
        let uri = if http2 {
            map.remove(http::header::HOST);
            let authority = std::str::from_utf8(authority)
                .ok()
                .filter(|a| !a.is_empty() && a.parse::<http::uri::Authority>().is_ok())
                .map_or_else(|| endpoint.addr().to_string(), str::to_string);
            format!("http://{authority}{path}")
        } else {
            if let Ok(host) = http::HeaderValue::from_bytes(authority) {
                map.insert(http::header::HOST, host);
            }
            path
        };
        let uri: http::Uri = uri.parse().map_err(|e| UpstreamError::ConnectionFailure(format!("bad path: {e}")))?;
        if whole_body {
            let len = hyper::body::Body::size_hint(&body).exact().unwrap_or(0);
            if len > 0 || map.contains_key(http::header::CONTENT_LENGTH) {
                map.insert(http::header::CONTENT_LENGTH, http::HeaderValue::from(len));
            }
        }
        let method = convert::method(headers);
        // As Envoy's HTTP/1 codec: a request without a body says so, unless its method
        // never has one.
        if !http2
            && hyper::body::Body::is_end_stream(&body)
            && method != http::Method::GET
            && method != http::Method::HEAD
            && !map.contains_key(http::header::CONTENT_LENGTH)
        {
            map.insert(http::header::CONTENT_LENGTH, http::HeaderValue::from_static("0"));
        }
        let version = if http2 { http::Version::HTTP_2 } else { http::Version::HTTP_11 };
        let mut request = http::Request::builder()
            .method(method)
            .version(version)
            .uri(uri)
            .body(body)
            .map_err(|e| UpstreamError::ConnectionFailure(e.to_string()))?;
        *request.headers_mut() = map;
        Ok(request)
    }

    /// An endpoint's hostname for `auto_host_rewrite`: its `hostname`, else the name a DNS
    /// cluster resolved (none for an address).
    fn hostname(&self, member: &Member) -> Option<String> {
        let spec = &member.spec;
        let dns = matches!(self.config.discovery, Discovery::StrictDns | Discovery::LogicalDns);
        let name = if spec.hostname.is_empty() && dns { &spec.address.address } else { &spec.hostname };
        (!name.is_empty()).then(|| name.clone())
    }

    /// Counts an endpoint's answer (`status`) or failure in its figures and toward
    /// outlier detection.
    fn account(&self, member: &Member, status: Option<u16>, failure: Option<&UpstreamError>) {
        if status.is_some_and(|s| s < 500) {
            member.pool.host().rq_success.inc()
        } else {
            member.pool.host().rq_error.inc()
        }
        match (status, failure) {
            (Some(code), _) => self.health.report(&member.health, Outcome::Code(code)),
            (None, Some(UpstreamError::Overflow) | None) => {}
            (None, Some(_)) => self.health.report(&member.health, Outcome::ConnectFailed),
        }
    }
}

/// An upstream's answer as it starts: its headers, its body to stream and, when it
/// switched protocols (`101`), its connection to take over.
pub struct Started {
    /// The response headers.
    pub headers: Headers,
    /// Whether it came over HTTP/2.
    pub http2: bool,
    /// The response body.
    pub body: Incoming,
    /// The upgraded connection, once hyper hands it over.
    pub upgrade: Option<hyper::upgrade::OnUpgrade>,
    /// Its place in the cluster's `max_requests` and among its endpoint's requests in
    /// flight, held until the response is done.
    pub request: InFlight,
}

/// A request in flight: it holds a place in its cluster's `max_requests` and counts
/// toward its endpoint's requests (least request, `rq_active`) until dropped; then its
/// HTTP/1.1 connection goes back to the pool.
pub struct InFlight {
    _place: Taken,
    _load: ActiveRequest,
    _reuse: Option<Reuse>,
}

/// Whether the router counts a request as external (Envoy: not `x-envoy-internal: true`;
/// plugins' callouts are internal).
pub fn is_external(headers: &Headers) -> bool {
    headers.get(b"x-envoy-internal") != Some(b"true")
}

/// The cluster's endpoints now: each host resolved (each address with its endpoint's
/// settings), filtered by `dns_lookup_family`; a LOGICAL_DNS cluster uses the first. A host
/// that does not resolve is logged and left out.
async fn resolve(c: &model::Cluster) -> Vec<(SocketAddr, model::Endpoint)> {
    let mut addrs = Vec::new();
    for e in &c.endpoints {
        let a = &e.address;
        let found: Vec<SocketAddr> = match tokio::net::lookup_host((a.address.as_str(), a.port)).await {
            Ok(found) => found.collect(),
            Err(err) => {
                tracing::warn!("cluster {}: cannot resolve {}:{}: {err}", c.name, a.address, a.port);
                continue;
            }
        };
        let family = |v6: bool| found.iter().copied().filter(move |a| a.is_ipv6() == v6);
        let preferred =
            |v6: bool| if family(v6).next().is_some() { family(v6).collect() } else { family(!v6).collect() };
        let chosen: Vec<SocketAddr> = match c.dns_lookup_family {
            DnsLookupFamily::V4Only => family(false).collect(),
            DnsLookupFamily::V6Only => family(true).collect(),
            DnsLookupFamily::Auto => preferred(true),
            DnsLookupFamily::V4Preferred => preferred(false),
            DnsLookupFamily::All => found.clone(),
        };
        let take = if c.discovery == Discovery::LogicalDns { 1 } else { usize::MAX };
        addrs.extend(chosen.into_iter().take(take).map(|addr| (addr, e.clone())));
    }
    addrs
}

/// Resolves a DNS cluster's hosts again every `rate` until the cluster is gone; a failed
/// refresh that resolves nothing keeps the addresses it had.
async fn refresh_dns(cluster: Weak<Cluster>, rate: Duration) {
    loop {
        tokio::time::sleep(rate).await;
        let Some(c) = cluster.upgrade() else { return };
        let config = c.config.clone();
        drop(c);
        let addrs = resolve(&config).await;
        let Some(c) = cluster.upgrade() else { return };
        if !addrs.is_empty() || config.endpoints.is_empty() {
            c.set_endpoints(&addrs);
        }
    }
}
