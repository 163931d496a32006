//! The HTTP connection manager: one request through the filters (Wasm and native), the
//! route, the upstream (or a direct response), and back through the filters in reverse
//! order; its span, when it traces.

pub mod connection;
pub mod forwarding;
mod hash_policy;
mod header_mutation;
mod mirror;
mod path;
mod pump;
mod retry;
pub mod route_table;
mod router;
pub mod upgrade;

use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::{HeaderValue, Response};
use http_body_util::Either;
use hyper::body::{Body as _, Incoming};
use hyper::upgrade::OnUpgrade;
use tokio::time::Instant as TokioInstant;
use wasmproxy_config::model::{FilterOptions, HttpConnectionManager};
use wasmproxy_host::Headers;

use crate::filters::{ChainFilter, RouteFilters, StreamFilter, StreamRoute};
use crate::hcm::forwarding::{LocalNode, Peer, finish_response, prepare_request};
use crate::hcm::path::PathVerdict;
use crate::hcm::route_table::{Matched, RouteTable};
use crate::hcm::router::{Downstream, Target, note_route};
use crate::hcm::upgrade::UpgradeRequest;
use crate::http::body::{ProxyBody, ended_on_headers, whole, whole_without_length};
use crate::http::convert;
use crate::http::direction::Direction;
use crate::http::downstream::TunnelHandoff;
use crate::http::reply::{LocalReply, StreamReset, Verdict, is_grpc_request, local_reply_headers, make_grpc_reply};
use crate::limits::BUFFER_LIMIT_BYTES;
use crate::observe::stats::HttpStats;
use crate::stream_info::response_flags::ResponseFlag;
use crate::stream_info::{ConnectionInfo, StreamInfo, StreamRef};
use crate::tracer::{ParentSpan, StreamTrace, Tracer};
use crate::upstream::cluster::Clusters;
use crate::wasm::access_logger::StreamLoggers;

/// One HTTP stream through the connection manager, from its request head to its end:
/// the request headers, the filters' contexts, and the steps it goes through (decode: the
/// request through the filters and the route; encode: the response back through them;
/// finish: the access-log phase). If the client goes away before the response is decided,
/// hyper drops the request's future and this with it: the stream then ends as in Envoy,
/// with the `DC` flag, every filter's `on_log`, `on_done` and delete, the access logs and
/// the stats.
struct ActiveStream {
    filters: StreamFilters,
    request_headers: Headers,
    /// The route table the stream started with, whatever RDS brings meanwhile.
    routes: Arc<RouteTable>,
    /// The upgrade the client asked for, if any.
    upgrade: Option<UpgradeRequest>,
    /// The response is not decided yet (dropped now, the client went away).
    deciding: bool,
}

/// A stream's filter contexts in configuration order (`None` for a filter skipped or
/// failed), with the connection manager and the stream info they run for.
struct StreamFilters {
    hcm: Rc<Hcm>,
    info: StreamRef,
    contexts: Vec<Option<StreamFilter>>,
    /// The filters the stream's route turned off (none if empty): never called.
    disabled: Vec<bool>,
    /// The route the native filters read their configuration from (what it configures for
    /// filters, and whether it forwards); none if no route matched.
    route: Option<(Arc<RouteFilters>, bool)>,
    /// The filter that turned the end of a body into trailers of its own, until the
    /// trailers go.
    opened: Option<usize>,
    /// The stream's tracing, if its connection manager traces and the stream has a span.
    trace: Option<StreamTrace>,
    /// The stream's span as its filters' calls see it.
    parent_span: Option<ParentSpan>,
}

impl Drop for ActiveStream {
    fn drop(&mut self) {
        if !self.deciding || crate::teardown::stopped() {
            return;
        }
        self.filters.hcm.client_gone(&self.filters.info);
        self.end_now(None);
    }
}

/// Where a connection manager's routes come from.
pub enum Routes {
    /// `route_config`, inline: compiled once with the listener.
    Inline(Arc<RouteTable>),
    /// `rds`: the worker's current route configuration of this name.
    Rds {
        /// `route_config_name`.
        name: String,
        /// The worker's route configurations from RDS files, by name.
        tables: Rc<RouteTables>,
    },
}

/// A worker's route configurations from RDS files, by name: replaced as a whole when a
/// file changes.
pub type RouteTables = std::cell::RefCell<rustc_hash::FxHashMap<String, Arc<RouteTable>>>;

impl Routes {
    /// The route table a new stream takes. A route configuration RDS has not brought (yet)
    /// routes nothing: every request gets 404, as in Envoy.
    pub fn current(&self) -> Arc<RouteTable> {
        thread_local! {
            static EMPTY: Arc<RouteTable> = Arc::new(RouteTable::empty());
        }
        match self {
            Routes::Inline(table) => table.clone(),
            Routes::Rds { name, tables } => {
                tables.borrow().get(name).cloned().unwrap_or_else(|| EMPTY.with(Arc::clone))
            }
        }
    }
}

/// One listener's HTTP connection manager on one worker.
pub struct Hcm {
    /// The configuration.
    pub config: HttpConnectionManager,
    /// Its routes.
    pub routes: Routes,
    /// The filters, in order (the router is implicit, last).
    pub filters: Vec<ChainFilter>,
    /// This worker's clusters.
    pub clusters: Rc<Clusters>,
    /// Its stats (`http.<stat_prefix>.*`).
    pub stats: HttpStats,
    /// Its access loggers.
    pub logs: StreamLoggers,
    /// A discovered filter has no configuration (none from ECDS, no default): every
    /// request gets 500, as from Envoy's missing-configuration filter.
    pub missing_filter_config: bool,
    /// The most body bytes the filters may hold back in one direction of a stream (the
    /// listener's `per_connection_buffer_limit_bytes`; `usize::MAX` for none); over it,
    /// 413 for requests, 500 for responses, as in Envoy.
    pub buffer_limit: usize,
    /// The node's names, for `add_user_agent`.
    pub node: Rc<LocalNode>,
    /// Its tracing (`tracing`), if any.
    pub tracer: Option<Tracer>,
    /// Each filter's name and whether it is off unless a route turns it on.
    pub filter_options: Vec<FilterOptions>,
}

/// How a request ended up, once the response headers are known.
enum Processed {
    /// A response held whole (local replies, direct responses, upstream errors).
    Whole(Headers, Bytes),
    /// An upstream response whose body streams through the filters, until the route's
    /// deadline if it has a timeout.
    Streaming(Headers, UpstreamBody),
    /// A reply the proxy makes (a plugin's local reply, a failure). Made while the request
    /// was decoded, it goes back through the response callbacks of the first `encoders`
    /// filters, as in Envoy; made in the response phase, through none.
    Reply { headers: Headers, body: Bytes, encoders: usize, grpc_status: Option<u32> },
    /// The upstream switched protocols: the tunnel starts once the `101` is sent.
    Upgraded(Headers, OnUpgrade),
    /// Reset the stream.
    Reset,
}

/// A reply to a gRPC request made a gRPC one (trailers-only, `grpc-status` from the
/// plugin's or from the HTTP status), in whichever phase it was made, as in Envoy.
fn as_grpc(request: &Headers, processed: Processed) -> Processed {
    match processed {
        Processed::Reply { mut headers, mut body, encoders, grpc_status } if is_grpc_request(request) => {
            make_grpc_reply(&mut headers, &mut body, grpc_status);
            Processed::Reply { headers, body, encoders, grpc_status }
        }
        other => other,
    }
}

/// Which filters a stream's route turns off (by its most specific `typed_per_filter_config`
/// entry for the filter, else the filter's own `disabled`); empty when none is.
fn disabled_filters(options: &[FilterOptions], route: Option<&Matched<'_>>) -> Vec<bool> {
    let entries = route.map_or(&[][..], |m| &m.filters.entries[..]);
    if entries.is_empty() && !options.iter().any(|o| o.disabled) {
        return Vec::new();
    }
    options.iter().map(|o| entries.iter().find(|f| f.name == o.name).map_or(o.disabled, |f| f.disabled)).collect()
}

/// What a matched route configures for the filters, and whether it forwards.
fn filter_route(matched: Option<&Matched<'_>>) -> Option<(Arc<RouteFilters>, bool)> {
    matched.map(|m| (m.filters.clone(), matches!(m.action, wasmproxy_config::model::RouteAction::Forward(_))))
}

/// The body of the response being built, before the response callbacks run.
enum ResponseBody {
    Whole(Bytes),
    Streaming(UpstreamBody),
    /// None: the upstream switched protocols.
    Upgraded(OnUpgrade),
    /// Read whole for a filter that waited for it, with its trailers (the filters from the
    /// waiting one on have seen both).
    Held(Bytes, Option<Headers>),
}

/// An upstream response body still to stream.
struct UpstreamBody {
    body: Incoming,
    /// The cluster, when the request was sent, and whether it counts as external (for
    /// `upstream_rq_time`).
    cluster: Rc<crate::upstream::cluster::Cluster>,
    sent: Instant,
    external: bool,
    /// The route timeout's end, if it has one.
    deadline: Option<TokioInstant>,
    /// From an HTTP/1.1 upstream (see [`Hcm::pump`]).
    http1: bool,
    /// Its place in the cluster's `max_requests`, until the body is done.
    place: Option<crate::upstream::cluster::InFlight>,
}

/// A request body read before its headers went through every filter (a filter waited for
/// it): the bytes the filters up to `through` passed on, whether it ended, its trailers.
#[derive(Default)]
struct HeldBody {
    body: Bytes,
    /// The filters before this one have seen it.
    through: usize,
    ended: bool,
    trailers: Option<Headers>,
}

impl Hcm {
    /// Handles one request: the stream is opened now, and the future answers it (hyper's
    /// request is not kept in it, nor anything else the stream does not need).
    pub fn handle(
        self: Rc<Self>,
        request: http::Request<Incoming>,
        connection: Rc<ConnectionInfo>,
    ) -> impl Future<Output = Result<Response<ProxyBody>, StreamReset>> + 'static {
        let (mut parts, mut incoming) = request.into_parts();
        let upgrade = upgrade::requested(&mut parts);
        let http2 = parts.version == http::Version::HTTP_2;
        let scheme = if connection.tls.get().is_some() { "https" } else { "http" };
        let peer = Peer { address: connection.peer, scheme };
        let info = self.open_stream(&parts, connection);
        let mut headers = convert::request_headers(&parts, scheme);
        // hyper's head points into the connection's read buffer: dropped now, hyper reads
        // the next bytes into the same buffer instead of allocating another.
        let version = parts.version;
        drop(parts);
        if upgrade.as_ref().is_some_and(|u| u.h2_stream.is_some()) {
            upgrade::as_http1_upgrade(&mut headers);
        }
        let routes = self.routes.current();
        let forwarding = &self.config.forwarding;
        let internal_only = routes.internal_only_headers();
        let remote = prepare_request(forwarding, internal_only, &self.node, &mut headers, &peer, upgrade.is_some());
        info.borrow_mut().downstream_remote = remote;
        let filters = StreamFilters {
            hcm: self,
            info,
            contexts: Vec::new(),
            disabled: Vec::new(),
            route: None,
            opened: None,
            trace: None,
            parent_span: None,
        };
        let mut stream = ActiveStream { filters, request_headers: headers, routes, upgrade, deciding: true };
        async move {
            let processed = stream.process(&mut incoming).await;
            stream.deciding = false;
            let unread = !http2 && !incoming.is_end_stream();
            stream.filters.info.borrow().connection.activity.request_unread.set(unread);
            let mut response = match processed {
                Processed::Whole(headers, body) | Processed::Reply { headers, body, .. } => {
                    // Answered before the request's end, as Envoy does: the rest of the
                    // request is not read, so an HTTP/1 connection cannot serve another.
                    stream.respond_whole(headers, body, unread)
                }
                Processed::Streaming(headers, upstream) => stream.respond_streaming(headers, upstream),
                Processed::Upgraded(headers, upstream) => stream.respond_upgraded(headers, upstream),
                Processed::Reset => {
                    stream.end_now(None);
                    return Err(StreamReset);
                }
            };
            // An HTTP/1.0 connection closes after its response, which says so, as Envoy's
            // codec writes it.
            if version == http::Version::HTTP_10 {
                response.headers_mut().insert(http::header::CONNECTION, HeaderValue::from_static("close"));
            }
            Ok(response)
        }
    }

    /// A new stream on `connection`: counted, and its info made.
    fn open_stream(&self, parts: &http::request::Parts, connection: Rc<ConnectionInfo>) -> StreamRef {
        let protocol = match parts.version {
            http::Version::HTTP_10 => "HTTP/1.0",
            http::Version::HTTP_2 => "HTTP/2",
            _ => "HTTP/1.1",
        };
        let http2 = parts.version == http::Version::HTTP_2;
        self.stats.request_started(http2);
        connection.activity.stream_opened();
        if !http2 && (parts.version != http::Version::HTTP_11 || convert::asks_to_close(&parts.headers)) {
            connection.activity.closing.set(true);
        }
        if !connection.protocol_known.replace(true) {
            self.stats.connection_protocol(http2);
            connection.http2.set(http2);
        }
        Rc::new(std::cell::RefCell::new(StreamInfo::new(connection, protocol)))
    }

    /// The client closed the connection or reset the stream before the response was
    /// decided: Envoy's `DC` flag and its reset counts.
    fn client_gone(&self, info: &StreamRef) {
        let mut i = info.borrow_mut();
        if i.response_flags.has(ResponseFlag::DownstreamConnectionTermination) {
            // Seen already (a body that broke, then the stream dropped).
            return;
        }
        i.response_flags.set(ResponseFlag::DownstreamConnectionTermination);
        i.response_code_details = "downstream_remote_disconnect".into();
        self.stats.client_gone(i.connection.http2.get());
    }

    /// A reply the proxy makes: while decoding it goes back through the first `encoders`
    /// filters; in the response phase, through none.
    fn reply(&self, reply: LocalReply, encoders: usize, direction: Direction) -> Processed {
        let headers = local_reply_headers(reply.status, &reply.headers, &reply.body);
        let body = Bytes::from(reply.body);
        let encoders = if direction == Direction::Request { encoders } else { 0 };
        Processed::Reply { headers, body, encoders, grpc_status: reply.grpc_status }
    }

    /// The most body bytes held for a stream in one direction: the connection's buffer
    /// limit, or Envoy's default where it has none.
    fn held_limit(&self) -> usize {
        match self.buffer_limit {
            usize::MAX => BUFFER_LIMIT_BYTES,
            n => n,
        }
    }

    /// Envoy sets `server` (and `via`, and `x-request-id` if asked to) in the response
    /// headers after the filters ran: the access-log phase (and `response.total_size`
    /// there, from the headers `finish` lends it) sees them, the filters do not.
    fn finish_response(&self, request: &Headers, headers: &mut Headers) {
        finish_response(&self.config.forwarding, &self.config.server_name, request, headers);
    }

    /// The response for hyper. `local`: the proxy made it (a direct response, a local
    /// reply, an upstream failure), so a `connection: close` it carries is kept, and its
    /// `date` goes before `server`, where Envoy writes it.
    fn build_response(
        &self,
        headers: &Headers,
        length: Option<usize>,
        body: ProxyBody,
        local: bool,
    ) -> Response<ProxyBody> {
        let mut map = convert::response_header_map(headers, local);
        // A body held whole has a known length; a streamed one keeps the upstream's
        // content-length, if the filters left it.
        if let Some(len) = length {
            map.insert(http::header::CONTENT_LENGTH, HeaderValue::from(len));
        }
        let mut response = Response::new(body);
        *response.status_mut() = convert::status(headers);
        *response.headers_mut() = map;
        response
    }
}

// === impl ActiveStream: the steps of one stream ===

impl ActiveStream {
    /// Decodes the request and encodes the response headers (and a body held whole):
    /// how the stream is to be answered.
    async fn process(&mut self, incoming: &mut Incoming) -> Processed {
        let (mut response_headers, response, encoders) = match self.decode(incoming).await {
            Err(reply @ Processed::Reply { .. }) => match as_grpc(&self.request_headers, reply) {
                Processed::Reply { headers: h, body, encoders, .. } => (h, ResponseBody::Whole(body), encoders),
                other => return other,
            },
            // A local answer (a direct response, an upstream failure) to a gRPC request is
            // a gRPC one, as in Envoy.
            Ok((mut h, ResponseBody::Whole(mut body))) if is_grpc_request(&self.request_headers) => {
                make_grpc_reply(&mut h, &mut body, None);
                (h, ResponseBody::Whole(body), self.filters.contexts.len())
            }
            Ok((h, body)) => (h, body, self.filters.contexts.len()),
            Err(end) => return end,
        };
        let response_ended = match &response {
            ResponseBody::Whole(body) => body.is_empty(),
            ResponseBody::Streaming(upstream) => upstream.body.is_end_stream(),
            ResponseBody::Upgraded(_) | ResponseBody::Held(..) => false,
        };
        // The headers through the filters; one that waits for the whole response gets it
        // (read through the filters before it), then the headers go on from it.
        let mut response = response;
        let mut remaining = encoders;
        loop {
            match self.filters.encode_headers(&mut response_headers, response_ended, remaining).await {
                Ok(None) => break,
                Ok(Some((waiting, limit))) => {
                    let held =
                        self.filters.wait_for_response(&mut response_headers, response, (waiting, remaining), limit);
                    match held.await {
                        Ok(held) => response = held,
                        Err(end) => return as_grpc(&self.request_headers, end),
                    }
                    remaining = waiting;
                }
                Err(end) => return as_grpc(&self.request_headers, end),
            }
        }
        // The stream info gets the headers once final, for the body and access-log phases.
        self.filters.info.borrow_mut().response_headers = Some(response_headers.clone());
        match response {
            ResponseBody::Streaming(upstream) => Processed::Streaming(response_headers, upstream),
            // As Envoy's codec, an empty body chunk before the tunnel's bytes.
            ResponseBody::Upgraded(upstream) => {
                match self.filters.filter_chunk(Direction::Response, encoders, Bytes::new(), false).await {
                    Ok(_) => Processed::Upgraded(response_headers, upstream),
                    Err(end) => end,
                }
            }
            // A body held whole goes through the body callbacks once.
            ResponseBody::Whole(body) if body.is_empty() => Processed::Whole(response_headers, body),
            ResponseBody::Whole(body) => {
                match self.filters.filter_chunk(Direction::Response, encoders, body, true).await {
                    Ok(body) => Processed::Whole(response_headers, body.unwrap_or_default()),
                    Err(end) => as_grpc(&self.request_headers, end),
                }
            }
            // Its trailers go through the filters after the waiting one, then no further: a
            // response held whole goes with its length (as Envoy's HTTP/1.1 codec drops them).
            ResponseBody::Held(body, trailers) => {
                let filters = &mut self.filters;
                let passed = async {
                    let body = filters.filter_chunk(Direction::Response, remaining, body, trailers.is_none()).await?;
                    if let Some(t) = trailers {
                        filters.filter_trailers_through(Direction::Response, (0..remaining).rev(), t).await?;
                    }
                    Ok(body.unwrap_or_default())
                };
                match passed.await {
                    Ok(body) => Processed::Whole(response_headers, body),
                    Err(end) => as_grpc(&self.request_headers, end),
                }
            }
        }
    }

    /// What the connection manager answers before any filter, as Envoy does: HTTP/1.0
    /// it does not take, a path it rejects or redirects, a filter without its
    /// configuration, an upgrade not allowed.
    fn refuse_early(&mut self, hcm: &Rc<Hcm>, info: &StreamRef, routes: &RouteTable) -> Option<Processed> {
        if info.borrow().protocol == "HTTP/1.0" {
            // As Envoy: refused before any filter, unless the connection manager takes it.
            if !hcm.config.accept_http_10 {
                info.borrow_mut().response_code_details = "low_version".into();
                let reply = LocalReply {
                    status: 426,
                    body: b"Upgrade Required".to_vec(),
                    headers: Headers::new(),
                    grpc_status: None,
                };
                return Some(hcm.reply(reply, 0, Direction::Request));
            }
            if let Some(host) = &hcm.config.default_host_for_http_10
                && self.request_headers.get(b":authority").is_none_or(|a| a.is_empty())
            {
                self.request_headers.replace(b":authority", host.as_bytes());
            }
        }
        let port = info.borrow().connection.local.port();
        match path::handle(&hcm.config.paths, port, &mut self.request_headers) {
            PathVerdict::Go => {}
            PathVerdict::Reject => {
                info.borrow_mut().response_code_details = "path_normalization_failed".into();
                let reply = LocalReply { status: 400, body: Vec::new(), headers: Headers::new(), grpc_status: None };
                return Some(hcm.reply(reply, 0, Direction::Request));
            }
            PathVerdict::Redirect(location) => {
                // Envoy's details for the redirect too.
                info.borrow_mut().response_code_details = "path_normalization_failed".into();
                let mut headers = Headers::new();
                headers.add(b"location", &location);
                let reply = LocalReply { status: 307, body: Vec::new(), headers, grpc_status: None };
                return Some(hcm.reply(reply, 0, Direction::Request));
            }
        }
        if hcm.missing_filter_config {
            let mut i = info.borrow_mut();
            i.response_flags.set(ResponseFlag::NoFilterConfigFound);
            i.response_code_details = "filter_config_not_found".into();
            drop(i);
            let reply = LocalReply { status: 500, body: Vec::new(), headers: Headers::new(), grpc_status: None };
            return Some(hcm.reply(reply, 0, Direction::Request));
        }
        if let Some(kind) = self.upgrade.as_ref().map(|u| u.kind.as_str())
            && !upgrade::allowed(&hcm.config, routes.find(&self.request_headers).as_ref(), kind)
        {
            // As Envoy: refused before any filter, and the connection closes.
            info.borrow_mut().response_code_details = "upgrade_failed".into();
            let h2 = self.upgrade.as_ref().is_some_and(|u| u.h2_stream.is_some());
            let headers = if h2 { Headers::new() } else { Headers::from_pairs([("connection", "close")]) };
            let reply = LocalReply { status: 403, body: Vec::new(), headers, grpc_status: None };
            let mut refused = hcm.reply(reply, 0, Direction::Request);
            // Envoy's HTTP/2 codec sends the empty answer without a length.
            if let (true, Processed::Reply { headers, .. }) = (h2, &mut refused) {
                headers.remove(b"content-length");
            }
            return Some(refused);
        }
        None
    }

    /// The request side: request headers through the filters, the route, the request body
    /// through the filters to the upstream; done once the response headers are known.
    async fn decode(&mut self, incoming: &mut Incoming) -> Result<(Headers, ResponseBody), Processed> {
        let (hcm, info) = (self.filters.hcm.clone(), self.filters.info.clone());
        let request_ended = incoming.is_end_stream();
        let routes = self.routes.clone();
        if let Some(end) = self.refuse_early(&hcm, &info, &routes) {
            return Err(end);
        }
        // Envoy picks the route as soon as tracing or a plugin asks for it (`xds.route_name`);
        // the router picks it again from the headers the filters leave.
        let wanted = hcm.tracer.is_some() || !hcm.filters.is_empty();
        let matched = if wanted { routes.find(&self.request_headers) } else { None };
        if let Some(tracer) = &hcm.tracer {
            // As Envoy: the stream's span starts once the route is known, before any filter.
            let decorator = matched.as_ref().and_then(|m| m.decorator);
            self.filters.trace = tracer.start(&mut self.request_headers, decorator);
            self.filters.parent_span = self.filters.trace.as_ref().and_then(|t| tracer.parent(t));
        }
        if !hcm.filters.is_empty() {
            // The filters the route turns off are decided here, once, as Envoy builds the
            // stream's chain.
            note_route(matched.as_ref(), &self.request_headers, &hcm.clusters, &info);
            self.filters.disabled = disabled_filters(&hcm.filter_options, matched.as_ref());
            if hcm.filters.iter().any(ChainFilter::reads_route) {
                self.filters.route = filter_route(matched.as_ref());
            }
        }
        // An upgrading request goes on after its headers (its bytes come once the upstream
        // switched), and, as from Envoy's HTTP/1 codec, the filters get an empty body chunk.
        let upgrading = self.upgrade.is_some();
        let http1 = info.borrow().protocol != "HTTP/2";
        let held = self.decode_headers_and_held_body(incoming, http1, request_ended && !upgrading, &routes).await?;
        if upgrading
            && self.upgrade.as_ref().is_some_and(|u| u.h2_stream.is_none())
            && let Err(end) =
                self.filters.filter_chunk(Direction::Request, hcm.filters.len(), Bytes::new(), false).await
        {
            return Err(end);
        }
        // The router picks the target; the request body then streams through the filters
        // (to the upstream, or drained for a local answer) while the upstream answers.
        match hcm.route(&routes, &mut self.request_headers, &info) {
            // As in Envoy, the local answer goes at once: the filters never see a request
            // body still to come (an HTTP/1.1 connection then closes, see `handle`).
            Target::Local(h, body) => {
                if request_ended || held.as_ref().is_some_and(|h| h.ended) {
                    info.borrow_mut().note_request_done();
                }
                Ok((h, ResponseBody::Whole(body)))
            }
            Target::Upstream(target) => {
                let downstream = Downstream { incoming, http1, ended: request_ended, held };
                self.forward(downstream, target).await
            }
        }
    }

    /// The request headers through the filters; a filter that waits for the request body
    /// gets it (read through the filters before it, from an `http1` client or not), then the
    /// headers go on. The body so read, through every filter, is what this returns (none if
    /// no filter waited).
    async fn decode_headers_and_held_body(
        &mut self,
        incoming: &mut Incoming,
        http1: bool,
        ended: bool,
        routes: &RouteTable,
    ) -> Result<Option<HeldBody>, Processed> {
        let mut held: Option<HeldBody> = None;
        let mut from = 0;
        while let Some((i, limit)) = self.filters.decode_headers(from, &mut self.request_headers, ended, routes).await?
        {
            let body = held.get_or_insert_with(|| HeldBody { ended: incoming.is_end_stream(), ..HeldBody::default() });
            self.filters.gather_request_body(body, i, incoming, http1, limit).await?;
            if let Some(stream) = self.filters.contexts[i].as_mut() {
                let verdict = stream.request_body(&mut self.request_headers, &body.body).await;
                if let Some(end) = self.filters.apply(verdict, i, Direction::Request) {
                    return Err(end);
                }
            }
            body.through = i + 1;
            from = i + 1;
        }
        if let Some(body) = held.as_mut() {
            self.filters.release_held_body(body).await?;
        }
        Ok(held)
    }

    /// A response held whole: the stream ends as the response is handed to hyper.
    /// `unread`: the request body was not read, so the connection closes after it.
    fn respond_whole(&mut self, mut response_headers: Headers, body: Bytes, unread: bool) -> Response<ProxyBody> {
        let hcm = self.filters.hcm.clone();
        self.finish_response(&hcm, &mut response_headers);
        self.filters.info.borrow_mut().response_body_size = body.len() as u64;
        let http2 = self.filters.info.borrow().protocol == "HTTP/2";
        // A plugin that removed the length gets none (chunked on HTTP/1.1), as in Envoy; a
        // gRPC answer without a body ends on its headers (trailers-only), and so does an
        // empty HTTP/2 answer without a length.
        let has_length = response_headers.get(b"content-length").is_some();
        let unsized_h2 = http2 && body.is_empty() && !has_length;
        let mut response =
            if unsized_h2 || (body.is_empty() && !has_length && response_headers.get(b"grpc-status").is_some()) {
                hcm.build_response(&response_headers, None, ended_on_headers(http2), true)
            } else if has_length || body.is_empty() {
                hcm.build_response(&response_headers, Some(body.len()), whole(body), true)
            } else {
                hcm.build_response(&response_headers, None, whole_without_length(body), true)
            };
        let connection = self.filters.info.borrow().connection.clone();
        self.end_now(Some(response_headers));
        if unread {
            response.headers_mut().insert(http::header::CONNECTION, HeaderValue::from_static("close"));
        }
        if convert::asks_to_close(response.headers()) {
            connection.activity.closing.set(true);
        }
        response
    }

    /// An upstream response whose body streams through the filters on a task of its own;
    /// the stream ends with the body (or the route's deadline, or a reset).
    fn respond_streaming(mut self, mut response_headers: Headers, upstream: UpstreamBody) -> Response<ProxyBody> {
        let hcm = self.filters.hcm.clone();
        self.finish_response(&hcm, &mut response_headers);
        let (tx, mut body) = crate::http::body::channel();
        let ended = upstream.body.is_end_stream();
        let http2 = self.filters.info.borrow().protocol == "HTTP/2";
        if ended && http2 {
            body = body.ended_on_headers();
        }
        // As Envoy's HTTP/1.1 codec: a response that ends on its headers (an HTTP/2
        // upstream's trailers-only gRPC answer, say) says `content-length: 0`.
        let status = convert::status(&response_headers).as_u16();
        let bodiless =
            status < 200 || status == 204 || status == 304 || self.request_headers.get(b":method") == Some(b"HEAD");
        let length = (ended && !http2 && !bodiless && response_headers.get(b"content-length").is_none()).then_some(0);
        let response = hcm.build_response(&response_headers, length, Either::Right(body), false);
        let mut stream = self;
        tokio::task::spawn_local(async move {
            let UpstreamBody { body: mut upstream_body, deadline, http1, cluster, sent, external, place } = upstream;
            // The response headers are gone already: a failure here can only reset the
            // stream, by aborting the body.
            let abort = tx.clone();
            let pump = stream.filters.pump(Direction::Response, &mut upstream_body, http1, Some(tx));
            // Past the route's deadline the body is cut: the client sees a reset.
            let late = match deadline {
                Some(d) => tokio::time::timeout_at(d, pump).await.is_err(),
                None => {
                    // A failure in the body is handled by `pump` (it aborts the body).
                    let _ = pump.await;
                    false
                }
            };
            if late {
                abort.abort();
                let mut info = stream.filters.info.borrow_mut();
                info.response_flags.set(ResponseFlag::UpstreamRequestTimeout);
                cluster.timed_out_responding(info.upstream, false);
                info.reset_downstream();
            } else {
                cluster.stats().response_time(sent.elapsed(), external);
            }
            drop(place);
            stream.end_now(Some(response_headers));
        });
        response
    }

    /// The upstream switched protocols: the `101` goes to the client (with its
    /// `connection` and `upgrade`), and the tunnel runs on a task of its own once the
    /// client's connection is handed over; the connection waits for it before it closes.
    fn respond_upgraded(mut self, mut response_headers: Headers, upstream: OnUpgrade) -> Response<ProxyBody> {
        let hcm = self.filters.hcm.clone();
        self.finish_response(&hcm, &mut response_headers);
        if let Some(stream) = self.upgrade.as_mut().and_then(|u| u.h2_stream.take()) {
            return self.respond_connected(response_headers, upstream, stream);
        }
        let mut response = Response::new(whole(Bytes::new()));
        *response.status_mut() = http::StatusCode::SWITCHING_PROTOCOLS;
        *response.headers_mut() = convert::upgrade_response_header_map(&response_headers);
        // hyper stops after the `101` (this connection does not serve upgrades itself) and
        // the connection code hands the connection over.
        let connection = self.filters.info.borrow().connection.clone();
        let (io, downstream) = tokio::sync::oneshot::channel();
        let (done, closed) = tokio::sync::oneshot::channel::<()>();
        connection.activity.tunnel.replace(Some(TunnelHandoff { io, closed }));
        tokio::task::spawn_local(async move {
            self.tunnel(downstream, upstream, response_headers).await;
            drop(done);
        });
        response
    }

    /// An HTTP/2 extended CONNECT the upstream switched protocols for: the client gets
    /// `200` (without `connection` and `upgrade`, as Envoy's codec answers it; the filters
    /// saw the `101`), and the tunnel runs over the stream once hyper hands it over.
    fn respond_connected(
        self,
        response_headers: Headers,
        upstream: OnUpgrade,
        stream: OnUpgrade,
    ) -> Response<ProxyBody> {
        // The filters and the access log saw the upstream's `101`.
        let mut sent = response_headers.clone();
        sent.remove(b"connection");
        sent.remove(b"upgrade");
        let mut response = Response::new(whole(Bytes::new()));
        *response.headers_mut() = convert::upgrade_response_header_map(&sent);
        let (io, downstream) = tokio::sync::oneshot::channel::<Box<dyn crate::http::downstream::TunnelIo>>();
        tokio::task::spawn_local(async move {
            if let Ok(upgraded) = stream.await {
                let _ = io.send(Box::new(hyper_util::rt::TokioIo::new(upgraded)));
            }
        });
        tokio::task::spawn_local(self.tunnel(downstream, upstream, response_headers));
        response
    }

    /// The headers Envoy's connection manager sets on a response once the filters ran
    /// (see [`Hcm::finish_response`]), and the span's decorator.
    fn finish_response(&mut self, hcm: &Hcm, headers: &mut Headers) {
        hcm.finish_response(&self.request_headers, headers);
        if let (Some(tracer), Some(trace)) = (&hcm.tracer, self.filters.trace.as_mut()) {
            tracer.respond(trace, headers);
        }
    }

    /// The stream is complete: the access-log phase with the request headers and these
    /// response headers (none if it was reset).
    fn end_now(&mut self, response: Option<Headers>) {
        self.deciding = false;
        self.filters.info.borrow_mut().complete();
        let request = std::mem::take(&mut self.request_headers);
        self.filters.finish(Some(request), response);
    }
}

// === impl StreamFilters: the filters' callbacks and what they decide ===

impl StreamFilters {
    /// Request headers, filter by filter from the `from`th; each sees the headers the
    /// previous one left. `Ok(Some((i, limit)))` when filter `i` waits for the request body
    /// (at most `limit` bytes); `Err` ends the stream.
    async fn decode_headers(
        &mut self,
        from: usize,
        headers: &mut Headers,
        ended: bool,
        routes: &RouteTable,
    ) -> Result<Option<(usize, usize)>, Processed> {
        let hcm = self.hcm.clone();
        // As in Envoy, where a Wasm filter that changes the request headers clears the route
        // cache: a native filter after one reads the route found again.
        let mut wasm_ran = false;
        for (i, filter) in hcm.filters.iter().enumerate().skip(from) {
            if self.disabled.get(i) == Some(&true) {
                self.contexts.push(None);
                continue;
            }
            if wasm_ran && filter.reads_route() {
                self.route = filter_route(routes.find(headers).as_ref());
                wasm_ran = false;
            }
            wasm_ran |= filter.is_wasm();
            let Ok(stream) = filter.start_stream(&self.info, self.stream_route(), self.parent_span.as_ref()) else {
                // The VM failed before this stream (and, under FAIL_RELOAD, could not be
                // reloaded yet): FAIL_OPEN skips the filter, the others answer 503.
                self.contexts.push(None);
                if !filter.fails_open() {
                    return Err(hcm.reply(LocalReply::failure(), i, Direction::Request));
                }
                continue;
            };
            // The stream is kept before its first callback, so that it ends properly if
            // the client goes away while a plugin holds it.
            self.contexts.push(Some(stream));
            let Some(stream) = self.contexts[i].as_mut() else { continue };
            let verdict = stream.request_headers(headers, ended).await;
            if let Verdict::WaitForBody(limit) = verdict {
                return Ok(Some((i, limit)));
            }
            if let Some(end) = self.apply(verdict, i, Direction::Request) {
                return Err(end);
            }
        }
        Ok(None)
    }

    /// The route as the filters starting now read it.
    fn stream_route(&self) -> Option<StreamRoute<'_>> {
        self.route.as_ref().map(|(filters, forwards)| StreamRoute { filters, forwards: *forwards })
    }

    /// Response headers through the first `encoders` filters, in reverse order; each
    /// callback reads the headers it holds. `Ok(Some((i, limit)))` when filter `i` waits for
    /// the whole response (at most `limit` bytes); `Err` ends the stream.
    async fn encode_headers(
        &mut self,
        headers: &mut Headers,
        ended: bool,
        encoders: usize,
    ) -> Result<Option<(usize, usize)>, Processed> {
        for i in Direction::Response.order(encoders) {
            let Some(s) = self.contexts[i].as_mut() else { continue };
            let verdict = s.response_headers(headers, ended).await;
            if let Verdict::WaitForBody(limit) = verdict {
                return Ok(Some((i, limit.min(self.hcm.held_limit()))));
            }
            if let Some(end) = self.apply(verdict, i, Direction::Response) {
                return Err(end);
            }
        }
        Ok(None)
    }

    /// A filter's verdict: `Some` ends the stream (a reply or a reset). A reply made while
    /// decoding the request goes back through the response callbacks of the filters up to
    /// the one that made it (a failed one excluded); while encoding the response, it goes
    /// straight to the client, as in Envoy.
    fn apply(&mut self, verdict: Verdict, i: usize, direction: Direction) -> Option<Processed> {
        match verdict {
            // Waiting for a body is taken care of by `decode_headers` and `encode_headers`.
            Verdict::Continue | Verdict::WaitForBody(_) => None,
            Verdict::Reset => Some(Processed::Reset),
            Verdict::LocalReply(r) => Some(self.hcm.reply(r, i + 1, direction)),
            Verdict::Respond(headers) => {
                let encoders = if direction == Direction::Request { i + 1 } else { 0 };
                Some(Processed::Reply { headers, body: Bytes::new(), encoders, grpc_status: None })
            }
            // The VM failed in this stream's callback: Envoy answers the stream 503 (details
            // `wasm_fail_stream`) whatever the policy, except the deprecated `fail_open`,
            // which goes on without the filter; the policy decides for later streams.
            Verdict::Failed => {
                self.contexts[i] = None;
                if self.hcm.filters.get(i).is_some_and(ChainFilter::fails_open_in_stream) {
                    return None;
                }
                Some(self.hcm.reply(LocalReply::failure(), i, direction))
            }
        }
    }

    /// The access-log phase, once. As in Envoy: a filter the stream never reached gets a
    /// context for it; every filter logs, then the access logs write, then each filter is
    /// done and deleted.
    fn finish(&mut self, request: Option<Headers>, response: Option<Headers>) {
        let (mut request, mut response) = (request, response);
        let hcm = &self.hcm;
        self.info.borrow().connection.activity.stream_closed();
        let code = response.as_ref().map(convert::status).map(|s| s.as_u16());
        hcm.stats.request_ended(code, self.info.borrow().elapsed());
        let contexts = std::mem::take(&mut self.contexts);
        let reached = contexts.len();
        let mut ended = Vec::with_capacity(hcm.filters.len());
        for (i, stream) in contexts.into_iter().enumerate().chain((reached..hcm.filters.len()).map(|i| (i, None))) {
            let stream = match stream {
                Some(s) => s,
                None if i >= reached && self.disabled.get(i) != Some(&true) && hcm.filters[i].is_wasm() => {
                    match hcm.filters[i].start_stream(&self.info, None, None) {
                        Ok(s) => s,
                        Err(_) => continue,
                    }
                }
                None => continue,
            };
            stream.log(&mut request, &mut response);
            ended.push(stream);
        }
        hcm.logs.log(&self.info, &mut request, &mut response);
        for stream in ended {
            stream.end();
        }
        if let (Some(tracer), Some(trace)) = (&hcm.tracer, self.trace.take()) {
            tracer.finish(trace, &self.info.borrow(), request.as_ref(), response.as_ref());
        }
    }
}
