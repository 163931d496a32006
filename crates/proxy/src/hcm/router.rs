//! The router: the route a request takes (an upstream, or a local answer: no route, a
//! direct response, a redirect), the rewrites Envoy's router makes, and the exchange with
//! the upstream while the request body streams through the filters.

use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Either;
use hyper::body::Incoming;
use tokio::time::Instant as TokioInstant;
use wasmproxy_config::model::{ForwardAction, RedirectAction, RouteAction};
use wasmproxy_host::Headers;

use crate::hcm::header_mutation::{mutate_local_reply, mutate_request, mutate_response};
use crate::hcm::mirror::{self, Shadow};
use crate::hcm::retry::{self, ATTEMPT_COUNT, Deadline, Retries, TryContext, keep_for_retries};
use crate::hcm::route_table::{ClusterChoice, HeaderLevels, Matched, RouteTable};
use crate::hcm::{ActiveStream, Hcm, HeldBody, Processed, ResponseBody, UpstreamBody};
use crate::http::body::{BodySender, ProxyBody};
use crate::http::convert;
use crate::http::direction::Direction;
use crate::http::reply::{reply_headers, status_headers};
use crate::stream_info::StreamRef;
use crate::stream_info::response_flags::ResponseFlag;
use crate::upstream::cluster::{Cluster, Clusters, Started};
use crate::upstream::error::{UpstreamError, connect_failure_reason, upstream_error_reply};

/// Where the router sends a request.
pub(super) enum Target {
    Local(Headers, Bytes),
    Upstream(UpstreamTarget),
}

/// Where and how a request goes upstream.
pub(super) struct UpstreamTarget {
    cluster: Rc<Cluster>,
    /// The route's timeout.
    timeout: Option<Duration>,
    /// The header mutations that apply.
    mutations: HeaderLevels,
    /// The retries it may make.
    retries: Option<Box<Retries>>,
    /// The response says how many tries were made (`include_attempt_count_in_response`).
    attempt_count_in_response: bool,
    /// Where copies of the request go (`request_mirror_policies`).
    shadows: Vec<Shadow>,
}

/// The downstream side of a request being forwarded: its body still to read, whether the
/// client speaks HTTP/1 (whose codec ends a body with an empty chunk), and whether the
/// request had ended with its headers.
pub(super) struct Downstream<'a> {
    pub(super) incoming: &'a mut Incoming,
    pub(super) http1: bool,
    pub(super) ended: bool,
    /// The whole body, read already because a filter waited for it (then `incoming` has
    /// nothing left).
    pub(super) held: Option<HeldBody>,
}

impl Hcm {
    /// The route's target (or the local answer: no route, direct response, redirect).
    /// For the upstream, the request headers are changed in place (rewrites, Envoy's
    /// `x-envoy-*` headers), as Envoy's router does: the access-log phase sees them.
    pub(super) fn route(&self, routes: &RouteTable, headers: &mut Headers, info: &StreamRef) -> Target {
        let matched = routes.find(headers);
        note_route(matched.as_ref(), headers, &self.clusters, info);
        self.stats.router_rq_total.inc();
        let Some(m) = matched else {
            self.stats.no_route.inc();
            let mut i = info.borrow_mut();
            i.response_code_details = "route_not_found".into();
            i.response_flags.set(ResponseFlag::NoRouteFound);
            drop(i);
            return Target::Local(status_headers(404), Bytes::new());
        };
        match m.action {
            RouteAction::DirectResponse { status, body } => {
                self.stats.rq_direct_response.inc();
                info.borrow_mut().response_code_details = "direct_response".into();
                let body = Bytes::from(body.clone().unwrap_or_default());
                let mut response = reply_headers(*status, &body);
                mutate_local_reply(m.headers, &mut response, &body, headers, &info.borrow());
                Target::Local(response, body)
            }
            RouteAction::Redirect(r) => {
                self.stats.rq_direct_response.inc();
                info.borrow_mut().response_code_details = "direct_response".into();
                let mut response = redirect(r, headers);
                mutate_local_reply(m.headers, &mut response, &[], headers, &info.borrow());
                Target::Local(response, Bytes::new())
            }
            RouteAction::Forward(f) => {
                let random = info.borrow().random;
                let choice = m.cluster(headers, random);
                let Some((cluster, choice)) = choice.and_then(|c| Some((self.clusters.get(&c.name)?, c))) else {
                    self.stats.no_cluster.inc();
                    let mut i = info.borrow_mut();
                    i.response_flags.set(ResponseFlag::NoClusterFound);
                    i.response_code_details = "cluster_not_found".into();
                    return Target::Local(status_headers(f.cluster_not_found_status), Bytes::new());
                };
                let retries = Retries::new(m.retry_policy, headers);
                let timeout = timeout_from_headers(f.timeout, headers);
                // As Envoy's route entry: the headers first, then the rewrites.
                mutate_request(choice.headers, headers, &info.borrow());
                rewrite(&m, f, &choice, headers);
                {
                    let mut i = info.borrow_mut();
                    i.auto_host_rewrite = f.auto_host_rewrite;
                    i.high_priority = f.high_priority;
                }
                if !m.hash_policy.is_empty() {
                    let client = info.borrow().downstream_remote;
                    info.borrow_mut().lb_hash = m.hash_policy.hash(headers, client);
                }
                // Envoy's router tells the upstream how long it will wait (for one try).
                let per_try = m.retry_policy.and_then(|p| p.policy.per_try_timeout);
                let expected = match (per_try, timeout) {
                    (Some(p), Some(t)) => Some(p.min(t)),
                    (p, t) => p.or(t),
                };
                if let Some(t) = expected {
                    headers.replace(
                        b"x-envoy-expected-rq-timeout-ms",
                        itoa::Buffer::new().format(t.as_millis()).as_bytes(),
                    );
                }
                if m.attempt_count.0 {
                    headers.replace(ATTEMPT_COUNT, b"1");
                }
                let attempt_count_in_response = m.attempt_count.1;
                let mutations = choice.headers.clone();
                let shadows = mirror::shadows(&f.mirrors, headers, &self.clusters);
                Target::Upstream(UpstreamTarget {
                    cluster,
                    timeout,
                    mutations,
                    retries,
                    attempt_count_in_response,
                    shadows,
                })
            }
        }
    }
}

impl ActiveStream {
    /// Where the filtered request body goes (none if the request ended with its headers)
    /// and the body the first try sends: a copy kept for retries (up to the buffer limit),
    /// and one for mirrors, which go once it is whole (at once without a body).
    fn body_paths(
        &self,
        request: &Downstream<'_>,
        cluster: &Cluster,
        retries: Option<&Retries>,
        shadows: Vec<Shadow>,
        timeout: Option<Duration>,
    ) -> (Option<BodySender>, ProxyBody) {
        let limit = self.filters.hcm.held_limit();
        // A request that may be retried keeps its body (up to the buffer limit) as the
        // first try sends it.
        let (tx, body) = if request.ended {
            // As Envoy: an HTTP/2 request ends on its headers, without a length.
            (None, crate::http::body::ended_on_headers(cluster.http2(Some(&self.filters.info))))
        } else if let Some(replay) = retries.map(|r| r.replay.clone()) {
            let (filtered, kept) = crate::http::body::channel();
            let (to_upstream, body) = crate::http::body::channel();
            keep_for_retries(kept, to_upstream, replay, limit);
            (Some(filtered), Either::Right(body))
        } else {
            let (tx, body) = crate::http::body::channel();
            (Some(tx), Either::Right(body))
        };
        let tx = match (tx, shadows.is_empty()) {
            (tx, true) => tx,
            (None, false) => {
                mirror::send(shadows, &self.request_headers, Bytes::new(), timeout);
                None
            }
            (Some(tx), false) => {
                let (filtered, copied) = crate::http::body::channel();
                let headers = self.request_headers.clone();
                mirror::tee(copied, tx, limit, move |body| mirror::send(shadows, &headers, body, timeout));
                Some(filtered)
            }
        };
        (tx, body)
    }

    /// Sends the request to `cluster` while its body streams through the filters, until
    /// the response headers are in (or the upstream failed: Envoy's local reply). Envoy's
    /// route timeout runs from the end of the request to the end of the response: the
    /// deadline is set once the request body is through.
    pub(super) async fn forward(
        &mut self,
        request: Downstream<'_>,
        target: UpstreamTarget,
    ) -> Result<(Headers, ResponseBody), Processed> {
        let UpstreamTarget { cluster, timeout, mutations, retries, attempt_count_in_response, shadows } = target;
        if let (Some(tracer), Some(trace)) = (&self.filters.hcm.tracer, self.filters.trace.as_mut()) {
            let cluster_name = self.filters.info.borrow().cluster_name.clone();
            tracer.inject(trace, &mut self.request_headers, &cluster_name);
        }
        let started = Instant::now();
        let (tx, body) = self.body_paths(&request, &cluster, retries.as_deref(), shadows, timeout);
        let info = self.filters.info.clone();
        let (headers, filters) = (&self.request_headers, &mut self.filters);
        let (ended_tx, ended_rx) = tokio::sync::oneshot::channel::<TokioInstant>();
        // The request's end: noted, and the route's deadline starts.
        let ended = || {
            info.borrow_mut().note_request_done();
            let _ = ended_tx.send(TokioInstant::now());
        };
        let send = async {
            let cx = TryContext { cluster: &cluster, headers, info: &info, whole_body: request.ended };
            let mut deadline = Deadline::new(timeout, ended_rx);
            let (r, tries) = retry::send(&cx, body, &mut deadline, retries).await;
            (r, tries, deadline.at())
        };
        let (sent, tries, deadline) = if request.ended && request.held.is_none() {
            // Nothing to stream: the request ended with its headers.
            ended();
            send.await
        } else {
            let held = request.held;
            let pump = async {
                let pumped = match held {
                    Some(held) => send_held(held, tx).await,
                    None => filters.pump(Direction::Request, request.incoming, request.http1, tx).await,
                };
                ended();
                pumped
            };
            // Boxed: a request with a body pays for the room both need, the rest do not. A
            // body that fails (a filter's local reply, the client gone, the stream idle) ends
            // the wait for the answer: the upstream request is dropped, as Envoy resets it,
            // even when the upstream reads nothing and would never see the body's abort.
            Box::pin(async {
                tokio::pin!(send, pump);
                tokio::select! {
                    sent = &mut send => pump.await.map(|()| sent),
                    pumped = &mut pump => match pumped {
                        Ok(()) => Ok(send.await),
                        Err(failed) => Err(failed),
                    },
                }
            })
            .await?
        };
        let external = crate::upstream::cluster::is_external(headers);
        match &sent {
            Err(UpstreamError::Timeout) => cluster.timed_out(external, info.borrow().upstream, false),
            Err(UpstreamError::PerTryTimeout) => cluster.timed_out(external, info.borrow().upstream, true),
            other => cluster.charge(other, external),
        }
        // The route's response headers go on the upstream's answer and on the router's own
        // (a failure, a timeout), as in Envoy.
        Ok(match sent {
            Ok(Started { headers: mut h, http2, body, upgrade, request: place }) => {
                info.borrow_mut().response_code_details = "via_upstream".into();
                if let Some(switched) = upgrade.filter(|_| self.upgrade.is_some()) {
                    // Envoy's router gives an upgraded stream, whose request has not ended,
                    // no `x-envoy-upstream-service-time`.
                    mutate_response(&mutations, &mut h, headers, &info.borrow());
                    count_tries(&mut h, tries, attempt_count_in_response);
                    return Ok((h, ResponseBody::Upgraded(switched)));
                }
                let ms = started.elapsed().as_millis();
                h.replace(b"x-envoy-upstream-service-time", itoa::Buffer::new().format(ms).as_bytes());
                mutate_response(&mutations, &mut h, headers, &info.borrow());
                count_tries(&mut h, tries, attempt_count_in_response);
                let http1 = !http2;
                let sent = started;
                let place = Some(place);
                (h, ResponseBody::Streaming(UpstreamBody { body, deadline, http1, cluster, sent, external, place }))
            }
            Err(e) => {
                note_upstream_error(&info, &e);
                let (mut h, text) = upstream_error_reply(&e, tries > 1);
                mutate_local_reply(&mutations, &mut h, &text, headers, &info.borrow());
                count_tries(&mut h, tries, attempt_count_in_response);
                (h, ResponseBody::Whole(text))
            }
        })
    }
}

/// Envoy's response flag and details for an upstream failure, for access logs and
/// `response.code_details`.
fn note_upstream_error(info: &StreamRef, e: &UpstreamError) {
    let mut i = info.borrow_mut();
    let details: std::borrow::Cow<'static, str> = match e {
        UpstreamError::NoHealthyUpstream => "no_healthy_upstream".into(),
        UpstreamError::Timeout => "response_timeout".into(),
        UpstreamError::PerTryTimeout => "upstream_per_try_timeout".into(),
        UpstreamError::Overflow => "upstream_reset_before_response_started{overflow}".into(),
        UpstreamError::Refused(_) => "upstream_reset_before_response_started{remote_refused_stream_reset}".into(),
        UpstreamError::ConnectionFailure(error) => {
            let reason = connect_failure_reason(error);
            let details = format!("upstream_reset_before_response_started{{remote_connection_failure|{reason}}}");
            i.upstream_failure = Some(reason);
            details.into()
        }
        UpstreamError::Disconnected(_) => "upstream_reset_before_response_started{connection_termination}".into(),
        UpstreamError::ResponseTooLarge => "response_payload_too_large".into(),
    };
    let flag = e.response_flag();
    if let Some(flag) = flag {
        i.response_flags.set(flag);
    }
    i.response_code_details = details;
}

/// Envoy's router headers of a request (only an internal one still has them): the route's
/// timeout replaced by `x-envoy-upstream-rq-timeout-ms` (0: none); it and the retry
/// headers are taken off the request, as Envoy's router takes them.
fn timeout_from_headers(route: Option<Duration>, headers: &mut Headers) -> Option<Duration> {
    let mut timeout = route;
    if let Some(value) = headers.get(b"x-envoy-upstream-rq-timeout-ms") {
        if let Some(ms) = std::str::from_utf8(value).ok().and_then(|v| v.parse::<u64>().ok()) {
            timeout = (ms > 0).then(|| Duration::from_millis(ms));
        }
        headers.remove(b"x-envoy-upstream-rq-timeout-ms");
    }
    headers.remove_if(|name| name.starts_with(b"x-envoy-") && CONSUMED_BY_ROUTER.iter().any(|h| h.as_bytes() == name));
    timeout
}

/// The request headers Envoy's router reads and removes.
const CONSUMED_BY_ROUTER: &[&str] = &[
    "x-envoy-upstream-rq-per-try-timeout-ms",
    "x-envoy-retry-on",
    "x-envoy-retry-grpc-on",
    "x-envoy-max-retries",
    "x-envoy-retriable-status-codes",
    "x-envoy-retriable-header-names",
    "x-envoy-upstream-alt-stat-name",
    "x-envoy-upstream-rq-timeout-alt-response",
    "x-envoy-hedge-on-per-try-timeout",
];

/// `include_attempt_count_in_response`: the tries made, as Envoy's router says them.
fn count_tries(response: &mut Headers, tries: u32, wanted: bool) {
    if wanted {
        response.replace(ATTEMPT_COUNT, tries.to_string().as_bytes());
    }
}

/// The route's rewrites, as Envoy's route entry makes them after its header mutations:
/// the host (literal, from a header, or from the path) as the path was, then the path
/// (`prefix_rewrite` or `regex_rewrite`); what they replace is kept in
/// `x-envoy-original-path` and `x-envoy-original-host`.
fn rewrite(m: &Matched<'_>, f: &ForwardAction, choice: &ClusterChoice<'_>, headers: &mut Headers) {
    let matched_len = m.matched_len;
    let original_path = headers.get(b":path").unwrap_or_default().to_vec();
    let new_host = match (choice.host_rewrite_literal, &f.host_rewrite_header, &m.rewrites.host) {
        (Some(host), _, _) => Some(host.to_string()),
        (None, Some(header), _) => {
            headers.get(header.as_bytes()).filter(|v| !v.is_empty()).map(|v| String::from_utf8_lossy(v).into_owned())
        }
        (None, None, Some((re, substitution))) => {
            let path = String::from_utf8_lossy(&original_path);
            let just_path = path.split(['?', '#']).next().unwrap_or_default();
            Some(re.replace_all(just_path, substitution.as_str()).into_owned())
        }
        _ => None,
    };
    if let Some(prefix) = &f.prefix_rewrite {
        rewrite_prefix(headers, matched_len, prefix);
        headers.replace(b"x-envoy-original-path", &original_path);
    } else if let Some((re, substitution)) = &m.rewrites.path {
        let path = String::from_utf8_lossy(&original_path).into_owned();
        let (just_path, query) = path.split_once('?').map_or((path.as_str(), None), |(p, q)| (p, Some(q)));
        let mut rewritten = re.replace_all(just_path, substitution.as_str()).into_owned();
        if let Some(q) = query {
            rewritten = format!("{rewritten}?{q}");
        }
        headers.replace(b":path", rewritten.as_bytes());
        headers.replace(b"x-envoy-original-path", &original_path);
    }
    if let Some(host) = new_host {
        // As Envoy's router, the host replaced is kept.
        let original = headers.get(b":authority").unwrap_or_default().to_vec();
        if !original.is_empty() && choice.keeps_original_host {
            headers.replace(b"x-envoy-original-host", &original);
        }
        headers.replace(b":authority", host.as_bytes());
    }
}

/// `prefix_rewrite`: the part of the path the route matched is replaced.
fn rewrite_prefix(headers: &mut Headers, matched: usize, prefix: &str) {
    let path = convert::text(headers, b":path");
    let rest = path.get(matched..).unwrap_or_default();
    let new_path = format!("{prefix}{rest}");
    headers.replace(b":path", new_path.as_bytes());
}

/// A redirect's response headers: the status and `location`.
fn redirect(r: &RedirectAction, request: &Headers) -> Headers {
    let scheme = r.scheme.clone().unwrap_or_else(|| convert::text(request, b":scheme"));
    let authority = convert::text(request, b":authority");
    let mut host = r.host.clone().unwrap_or_else(|| authority.split(':').next().unwrap_or_default().to_string());
    if let Some(port) = r.port {
        host = format!("{host}:{port}");
    } else if r.host.is_none() && r.scheme.is_none() {
        host = authority.clone();
    }
    // Envoy: the request's query string is kept (unless `strip_query`), except that a
    // `path_redirect` with a query string of its own replaces it.
    let full = convert::text(request, b":path");
    let (path, query) =
        full.split_once('?').map(|(p, q)| (p.to_string(), Some(q.to_string()))).unwrap_or((full.clone(), None));
    let redirect_has_query = r.path.as_deref().is_some_and(|p| p.contains('?'));
    let mut path = r.path.clone().unwrap_or(path);
    if let Some(q) = query.filter(|_| !r.strip_query && !redirect_has_query) {
        path = format!("{path}?{q}");
    }
    let mut h = status_headers(r.status);
    h.add(b"location", format!("{scheme}://{host}{path}").as_bytes());
    h
}

/// Records the matched route (or none) in the stream info, for `xds.route_*`,
/// Sends a request body a filter waited for (and its trailers) upstream: all of it, read
/// already.
async fn send_held(held: HeldBody, tx: Option<BodySender>) -> Result<(), Processed> {
    let Some(tx) = tx else { return Ok(()) };
    if !held.body.is_empty() {
        let _ = tx.send(Ok(hyper::body::Frame::data(held.body))).await;
    }
    if let Some(t) = held.trailers {
        let _ = tx.send(Ok(hyper::body::Frame::trailers(convert::header_map(&t)))).await;
    }
    Ok(())
}

/// `xds.virtual_host_*` and `xds.cluster_*`.
pub(super) fn note_route(matched: Option<&Matched<'_>>, headers: &Headers, clusters: &Clusters, info: &StreamRef) {
    let mut i = info.borrow_mut();
    i.route = matched.map(|m| m.attributes.clone());
    let random = i.random;
    // Known only for a cluster that exists, as Envoy's (its cluster info).
    let cluster = matched.and_then(|m| m.cluster(headers, random)).and_then(|c| Some((clusters.get(&c.name)?, c.name)));
    i.cluster_name = cluster.as_ref().map(|(_, name)| name.to_string()).unwrap_or_default();
    i.cluster_metadata = cluster.map(|(c, _)| c.metadata().clone());
}
