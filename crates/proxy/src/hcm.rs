//! The HTTP connection manager: one request through the Wasm filters, the route, the
//! upstream (or a direct response), and back through the filters in reverse order.

use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use tokio::time::Instant as TokioInstant;

use bytes::Bytes;
use http::{HeaderValue, Response};
use http_body_util::{BodyExt, Either};
use hyper::body::{Body as _, Frame, Incoming};
use wasmproxy_abi::StreamType;
use wasmproxy_config::model::{FailurePolicy, HttpConnectionManager, RedirectAction, RouteAction};
use wasmproxy_host::Headers;

use crate::access_log::{AccessLogger, Record};
use crate::body::{Aborted, BodySender, ProxyBody, whole};
use crate::cluster::{Clusters, UpstreamError};
use crate::convert;
use crate::routing::{Matched, RouteTable};
use crate::stats::HttpStats;
use crate::stream_info::{ConnectionInfo, StreamInfo, StreamRef};
use crate::wasm_filter::{DataVerdict, FilterSlot, FilterStream, LocalReply, Verdict};

/// A stream between its request head and the response (or reset) its filters decide on.
/// If the client goes away meanwhile, hyper drops the request's future and this with it:
/// the stream then ends as in Envoy, with the `DC` flag, every filter's `on_log`, `on_done`
/// and delete, the access logs and the stats.
struct OpenStream {
    hcm: Rc<Hcm>,
    info: StreamRef,
    streams: Vec<Option<FilterStream>>,
    headers: Headers,
    open: bool,
}

impl OpenStream {
    /// The filters' streams and the request headers, for the stream's normal end.
    fn close(&mut self) -> (Vec<Option<FilterStream>>, Headers) {
        self.open = false;
        (std::mem::take(&mut self.streams), std::mem::take(&mut self.headers))
    }
}

impl Drop for OpenStream {
    fn drop(&mut self) {
        if !self.open || crate::worker::stopped() {
            return;
        }
        self.hcm.client_gone(&self.info);
        self.info.borrow_mut().complete();
        let (streams, headers) = self.close();
        self.hcm.finish(&self.info, streams, Some(headers), None);
    }
}

/// One listener's HTTP connection manager on one worker.
pub struct Hcm {
    /// The configuration.
    pub config: HttpConnectionManager,
    /// The compiled routes.
    pub routes: RouteTable,
    /// The Wasm filters, in order (the router is implicit, last).
    pub filters: Vec<FilterSlot>,
    /// This worker's clusters.
    pub clusters: Rc<Clusters>,
    /// Its stats (`http.<stat_prefix>.*`).
    pub stats: HttpStats,
    /// Its access loggers (file, stdout, stderr).
    pub access_logs: Vec<Arc<AccessLogger>>,
    /// Its Wasm access loggers: each plugin's root context sees every finished request
    /// in `on_log`.
    pub wasm_loggers: Vec<FilterSlot>,
    /// The most body bytes the filters may hold back in one direction of a stream (the
    /// listener's `per_connection_buffer_limit_bytes`; `usize::MAX` for none); over it,
    /// 413 for requests, 500 for responses, as in Envoy.
    pub buffer_limit: usize,
}

/// The size of chunk a TCP proxy reads at most at once: Envoy's default buffer limit.
pub const BUFFER_LIMIT_BYTES: usize = wasmproxy_config::DEFAULT_BUFFER_LIMIT_BYTES as usize;

/// The most read whole for an `http_call` response.
pub const MAX_CALLOUT_BODY_BYTES: usize = 16 << 20;

/// The stream is reset instead of answered (a plugin's `close_stream`): hyper closes the
/// HTTP/1.1 connection, or resets the HTTP/2 stream.
#[derive(Debug)]
pub struct StreamReset;

impl std::fmt::Display for StreamReset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the stream was reset")
    }
}

impl std::error::Error for StreamReset {}

/// How a request ended up, once the response headers are known.
enum Processed {
    /// A response held whole (local replies, direct responses, upstream errors).
    Whole(Headers, Bytes),
    /// An upstream response whose body streams through the filters, until the route's
    /// deadline if it has a timeout.
    Streaming(Headers, UpstreamBody),
    /// A reply made while the request was decoded (a plugin's local reply, a failure); it
    /// goes back through the response callbacks of the first `encoders` filters, as in Envoy.
    Reply { headers: Headers, body: Bytes, encoders: usize },
    /// Reset the stream.
    Reset,
}

/// The body of the response being built, before the response callbacks run.
enum ResponseBody {
    Whole(Bytes),
    Streaming(UpstreamBody),
}

/// An upstream response body still to stream.
struct UpstreamBody {
    body: Incoming,
    /// The cluster, when the request was sent, and whether it counts as external (for
    /// `upstream_rq_time`).
    cluster: Rc<crate::cluster::Cluster>,
    sent: Instant,
    external: bool,
    /// The route timeout's end, if it has one.
    deadline: Option<TokioInstant>,
    /// From an HTTP/1.1 upstream (see [`Hcm::pump`]).
    http1: bool,
}

/// Where the router sends a request.
enum Target {
    Local(Headers, Bytes),
    Upstream { cluster: Rc<crate::cluster::Cluster>, timeout: Option<std::time::Duration> },
}

impl Hcm {
    /// Handles one request.
    pub async fn handle(
        self: Rc<Self>,
        request: http::Request<Incoming>,
        connection: Rc<ConnectionInfo>,
    ) -> Result<Response<ProxyBody>, StreamReset> {
        let (parts, mut incoming) = request.into_parts();
        let protocol = match parts.version {
            http::Version::HTTP_10 => "HTTP/1.0",
            http::Version::HTTP_2 => "HTTP/2",
            _ => "HTTP/1.1",
        };
        let http2 = parts.version == http::Version::HTTP_2;
        self.stats.request_started(http2);
        connection.activity.stream_opened();
        if !connection.protocol_known.replace(true) {
            self.stats.connection_protocol(http2);
            connection.http2.set(http2);
        }
        let info: StreamRef = Rc::new(std::cell::RefCell::new(StreamInfo::new(connection, protocol)));
        let mut headers = convert::request_headers(&parts, "http");
        if headers.get(b"x-forwarded-proto").is_none() {
            headers.add(b"x-forwarded-proto", b"http");
        }
        if headers.get(b"x-request-id").is_none() {
            headers.add(b"x-request-id", request_id().as_bytes());
        }
        let mut open = OpenStream { hcm: self.clone(), info: info.clone(), streams: Vec::new(), headers, open: true };
        let processed = self.process(&mut open.headers, &mut incoming, &mut open.streams, &info).await;
        let (streams, headers) = open.close();
        match processed {
            Processed::Whole(mut response_headers, response_body)
            | Processed::Reply { headers: mut response_headers, body: response_body, .. } => {
                self.set_server(&mut response_headers);
                {
                    let mut i = info.borrow_mut();
                    i.response_body_size = response_body.len() as u64;
                    i.complete();
                }
                let mut response =
                    self.build_response(&response_headers, Some(response_body.len()), whole(response_body), true);
                self.finish(&info, streams, Some(headers), Some(response_headers));
                if !http2 && !incoming.is_end_stream() {
                    // Answered before the request's end, as Envoy does: the rest of the
                    // request is not read, so the connection cannot serve another.
                    response.headers_mut().insert(http::header::CONNECTION, HeaderValue::from_static("close"));
                }
                Ok(response)
            }
            Processed::Streaming(
                mut response_headers,
                UpstreamBody { body: upstream_body, deadline, http1, cluster, sent, external },
            ) => {
                self.set_server(&mut response_headers);
                let (tx, body) = crate::body::channel();
                let this = self.clone();
                let response = self.build_response(&response_headers, None, Either::Right(body), false);
                tokio::task::spawn_local(async move {
                    let mut upstream_body = upstream_body;
                    let mut streams = streams;
                    // The response headers are gone already: a failure here can only reset
                    // the stream, by aborting the body.
                    let abort = tx.clone();
                    let pump =
                        this.pump(StreamType::HttpResponse, &mut upstream_body, http1, &mut streams, Some(tx), &info);
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
                        let _ = abort.send(Err(Aborted)).await;
                    } else {
                        cluster.stats().response_time(sent.elapsed(), external);
                    }
                    info.borrow_mut().complete();
                    this.finish(&info, streams, Some(headers), Some(response_headers));
                });
                Ok(response)
            }
            Processed::Reset => {
                info.borrow_mut().complete();
                self.finish(&info, streams, Some(headers), None);
                Err(StreamReset)
            }
        }
    }

    /// The client closed the connection or reset the stream before the response was
    /// decided: Envoy's `DC` flag and its reset counts.
    fn client_gone(&self, info: &StreamRef) {
        let mut i = info.borrow_mut();
        if i.response_flags.contains(&"DC") {
            // Seen already (a body that broke, then the stream dropped).
            return;
        }
        i.response_flags.push("DC");
        i.response_code_details = "downstream_remote_disconnect".into();
        self.stats.client_gone(i.connection.http2.get());
    }

    async fn process(
        &self,
        headers: &mut Headers,
        incoming: &mut Incoming,
        streams: &mut Vec<Option<FilterStream>>,
        info: &StreamRef,
    ) -> Processed {
        let (mut response_headers, response, encoders) = match self.decode(headers, incoming, streams, info).await {
            Ok((h, body)) => (h, body, streams.len()),
            Err(Processed::Reply { headers, body, encoders }) => (headers, ResponseBody::Whole(body), encoders),
            Err(end) => return end,
        };
        // Response headers, in reverse order.
        let response_ended = match &response {
            ResponseBody::Whole(body) => body.is_empty(),
            ResponseBody::Streaming(upstream) => upstream.body.is_end_stream(),
        };
        // Each filter's callback reads the headers it holds; the stream info gets them once
        // they are final, for the body and access-log phases.
        for i in (0..encoders).rev() {
            let Some(s) = streams[i].as_mut() else { continue };
            let verdict = s.response_headers(&mut response_headers, response_ended).await;
            if let Some(end) = self.apply(verdict, i, &mut streams[i], false) {
                return end;
            }
        }
        info.borrow_mut().response_headers = Some(response_headers.clone());
        match response {
            ResponseBody::Streaming(upstream) => Processed::Streaming(response_headers, upstream),
            ResponseBody::Whole(mut body) => {
                // A body held whole goes through the body callbacks once.
                if !body.is_empty() {
                    for i in (0..encoders).rev() {
                        let Some(s) = streams[i].as_mut() else { continue };
                        let verdict = match s
                            .data(StreamType::HttpResponse, std::mem::take(&mut body), true, self.buffer_limit)
                            .await
                        {
                            DataVerdict::Pass(bytes) => {
                                body = bytes;
                                Verdict::Continue
                            }
                            // At the end of the stream a plugin is waited for, never held.
                            DataVerdict::Held => Verdict::Continue,
                            DataVerdict::Done(v) => v,
                        };
                        if let Some(end) = self.apply(verdict, i, &mut streams[i], false) {
                            return end;
                        }
                    }
                }
                Processed::Whole(response_headers, body)
            }
        }
    }

    /// The request side: request headers through the filters, the route, the request body
    /// through the filters to the upstream; done once the response headers are known.
    async fn decode(
        &self,
        headers: &mut Headers,
        incoming: &mut Incoming,
        streams: &mut Vec<Option<FilterStream>>,
        info: &StreamRef,
    ) -> Result<(Headers, ResponseBody), Processed> {
        let request_ended = incoming.is_end_stream();
        let downstream_http1 = info.borrow().protocol != "HTTP/2";
        if !self.filters.is_empty() {
            // Envoy picks the route as soon as a plugin asks for it (`xds.route_name`); the
            // router picks it again from the headers the filters leave.
            note_route(self.routes.find(headers).as_ref(), info);
        }
        // Request headers, filter by filter; each sees the headers the previous one left.
        for (i, filter) in self.filters.iter().enumerate() {
            let stream = match filter.start_stream(info) {
                Ok(s) => s,
                Err(_) => {
                    // The VM failed before this stream (and, under FAIL_RELOAD, could not
                    // be reloaded yet): FAIL_OPEN skips the filter, the others answer 503.
                    streams.push(None);
                    if filter.failure_policy != FailurePolicy::FailOpen {
                        return Err(self.reply(failure_reply(), i, true));
                    }
                    continue;
                }
            };
            // The stream is kept before its first callback, so that it ends properly if
            // the client goes away while a plugin holds it.
            streams.push(Some(stream));
            let Some(stream) = streams[i].as_mut() else { continue };
            let verdict = stream.request_headers(headers, request_ended).await;
            if let Some(end) = self.apply(verdict, i, &mut streams[i], true) {
                return Err(end);
            }
        }
        // The router picks the target; the request body then streams through the filters
        // (to the upstream, or drained for a local answer) while the upstream answers.
        let started = Instant::now();
        let (response_headers, response) = match self.route(headers, info) {
            // As in Envoy, the local answer goes at once: the filters never see a request
            // body still to come (an HTTP/1.1 connection then closes, see `handle`).
            Target::Local(h, body) => {
                if request_ended {
                    info.borrow_mut().note_request_done();
                }
                (h, ResponseBody::Whole(body))
            }
            Target::Upstream { cluster, timeout } => {
                let upstream_headers = &*headers;
                let (tx, body) = if request_ended {
                    (None, whole(Bytes::new()))
                } else {
                    let (tx, body) = crate::body::channel();
                    (Some(tx), Either::Right(body))
                };
                // Envoy's route timeout runs from the end of the request to the end of the
                // response: the deadline is set once the request body is through.
                let (ended_tx, ended_rx) = tokio::sync::oneshot::channel::<TokioInstant>();
                let send = async {
                    let start = cluster.start(upstream_headers, body, request_ended, Some(info));
                    tokio::pin!(start);
                    let Some(t) = timeout else { return (start.await, None) };
                    let ended = tokio::select! {
                        r = &mut start => return (r, None),
                        ended = ended_rx => ended.unwrap_or_else(|_| TokioInstant::now()),
                    };
                    let deadline = ended + t;
                    let r = tokio::time::timeout_at(deadline, start).await.unwrap_or(Err(UpstreamError::Timeout));
                    (r, Some(deadline))
                };
                let pump = async {
                    let pumped =
                        self.pump(StreamType::HttpRequest, incoming, downstream_http1, streams, tx, info).await;
                    info.borrow_mut().note_request_done();
                    let _ = ended_tx.send(TokioInstant::now());
                    pumped
                };
                let ((sent, deadline), pumped) = tokio::join!(send, pump);
                pumped?;
                let external = crate::cluster::is_external(headers);
                if matches!(sent, Err(UpstreamError::Timeout)) {
                    cluster.timed_out(external, info.borrow().upstream);
                }
                match sent {
                    Ok((mut h, body)) => {
                        info.borrow_mut().response_code_details = "via_upstream".into();
                        let ms = started.elapsed().as_millis().to_string();
                        h.replace(b"x-envoy-upstream-service-time", ms.as_bytes());
                        let http1 = !cluster.http2();
                        let sent = started;
                        (h, ResponseBody::Streaming(UpstreamBody { body, deadline, http1, cluster, sent, external }))
                    }
                    Err(e) => {
                        note_upstream_error(info, &e);
                        let (h, text) = upstream_error_reply(&e);
                        (h, ResponseBody::Whole(text))
                    }
                }
            }
        };
        Ok((response_headers, response))
    }

    /// A filter's verdict: `Some` ends the stream (a reply or a reset). While `decoding` the request, a reply goes back through the response callbacks of
    /// the filters up to the one that made it (a failed one excluded); while encoding the
    /// response, it goes straight to the client, as in Envoy.
    fn apply(
        &self,
        verdict: Verdict,
        i: usize,
        stream: &mut Option<FilterStream>,
        decoding: bool,
    ) -> Option<Processed> {
        match verdict {
            Verdict::Continue => None,
            Verdict::Reset => Some(Processed::Reset),
            Verdict::LocalReply(r) => Some(self.reply(r, i + 1, decoding)),
            // The VM failed in this stream's callback: Envoy answers the stream 503 (details
            // `wasm_fail_stream`) whatever the policy, except the deprecated `fail_open`,
            // which goes on without the filter; the policy decides for later streams.
            Verdict::Failed => {
                *stream = None;
                if self.filters.get(i).is_some_and(|f| f.reload.0.legacy_fail_open) {
                    return None;
                }
                Some(self.reply(failure_reply(), i, decoding))
            }
        }
    }

    /// A reply the proxy makes, to go back through the first `encoders` filters while decoding.
    fn reply(&self, reply: LocalReply, encoders: usize, decoding: bool) -> Processed {
        let mut headers = reply_headers(reply.status, &reply.body);
        for (k, v) in reply.headers.iter() {
            headers.add(k, v);
        }
        let body = Bytes::from(reply.body);
        if decoding { Processed::Reply { headers, body, encoders } } else { Processed::Whole(headers, body) }
    }

    /// The route's target (or the local answer: no route, direct response, redirect).
    /// For the upstream, the request headers are changed in place (rewrites, Envoy's
    /// `x-envoy-*` headers), as Envoy's router does: the access-log phase sees them.
    fn route(&self, headers: &mut Headers, info: &StreamRef) -> Target {
        let matched = self.routes.find(headers);
        note_route(matched.as_ref(), info);
        self.stats.router_rq_total.inc();
        let Some(m) = matched else {
            self.stats.no_route.inc();
            let mut i = info.borrow_mut();
            i.response_code_details = "route_not_found".into();
            i.response_flags.push("NR");
            drop(i);
            return Target::Local(status_headers(404), Bytes::new());
        };
        match m.action {
            RouteAction::DirectResponse { status, body } => {
                self.stats.rq_direct_response.inc();
                info.borrow_mut().response_code_details = "direct_response".into();
                let body = Bytes::from(body.clone().unwrap_or_default());
                Target::Local(reply_headers(*status, &body), body)
            }
            RouteAction::Redirect(r) => {
                self.stats.rq_direct_response.inc();
                info.borrow_mut().response_code_details = "direct_response".into();
                Target::Local(redirect(r, headers), Bytes::new())
            }
            RouteAction::Forward(f) => {
                let Some(cluster) = self.clusters.get(&f.cluster) else {
                    self.stats.no_cluster.inc();
                    let mut i = info.borrow_mut();
                    i.response_flags.push("NC");
                    i.response_code_details = "cluster_not_found".into();
                    return Target::Local(status_headers(503), Bytes::new());
                };
                let (matched_len, timeout) = (m.matched_len, f.timeout);
                if let Some(prefix) = &f.prefix_rewrite {
                    let original = headers.get(b":path").unwrap_or_default().to_vec();
                    rewrite_prefix(headers, matched_len, prefix);
                    headers.replace(b"x-envoy-original-path", &original);
                }
                if let Some(host) = &f.host_rewrite_literal {
                    headers.replace(b":authority", host.as_bytes());
                }
                // Envoy's router tells the upstream how long it will wait.
                if let Some(t) = timeout {
                    headers.replace(b"x-envoy-expected-rq-timeout-ms", t.as_millis().to_string().as_bytes());
                }
                Target::Upstream { cluster, timeout }
            }
        }
    }

    /// Streams a body through the filters chunk by chunk (requests in filter order,
    /// responses in reverse), then trailers, into `tx` (or nowhere). From an `http1` peer
    /// the end comes as an empty last chunk, as Envoy's codec delivers it. `Err` ends the stream;
    /// the body being sent is then aborted, so the peer sees a reset, not a short body.
    async fn pump(
        &self,
        direction: StreamType,
        source: &mut Incoming,
        http1: bool,
        streams: &mut [Option<FilterStream>],
        tx: Option<BodySender>,
        info: &StreamRef,
    ) -> Result<(), Processed> {
        let abort = tx.clone();
        let result = self.pump_frames(direction, source, http1, streams, tx, info).await;
        if result.is_err()
            && let Some(tx) = abort
        {
            let _ = tx.send(Err(Aborted)).await;
        }
        result
    }

    async fn pump_frames(
        &self,
        direction: StreamType,
        source: &mut Incoming,
        http1: bool,
        streams: &mut [Option<FilterStream>],
        mut tx: Option<BodySender>,
        info: &StreamRef,
    ) -> Result<(), Processed> {
        if source.is_end_stream() {
            return Ok(());
        }
        let request = direction == StreamType::HttpRequest;
        let order: Vec<usize> = if request { (0..streams.len()).collect() } else { (0..streams.len()).rev().collect() };
        // A frame read ahead while gathering data, handled next.
        let mut pending = None;
        loop {
            let next = match pending.take() {
                Some(frame) => frame,
                None => match self.config.stream_idle_timeout {
                    Some(t) => match tokio::time::timeout(t, source.frame()).await {
                        Ok(next) => next,
                        Err(_) => return Err(self.stream_idle(info, request, streams.len())),
                    },
                    None => source.frame().await,
                },
            };
            let (chunk, eos, trailers) = match next {
                None => (Bytes::new(), true, None),
                // A request body that cannot be read: a client that went away mid-body is
                // a reset stream (`DC`); a bad chunk gets 400 from Envoy's codec if it
                // still can. A response body that breaks resets the stream.
                Some(Err(e)) if request => match body_failure(&e, http1) {
                    BodyFailure::ClientGone => {
                        self.client_gone(info);
                        return Err(Processed::Reset);
                    }
                    BodyFailure::Malformed if http1 => {
                        let headers = Headers::from_pairs([("connection", "close")]);
                        let reply = LocalReply { status: 400, body: b"Bad Request".to_vec(), headers };
                        return Err(self.reply(reply, streams.len(), true));
                    }
                    // HTTP/2 resets the stream itself (e.g. a body longer than its length).
                    BodyFailure::Malformed => return Err(Processed::Reset),
                },
                Some(Err(_)) => return Err(Processed::Reset),
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => {
                        // What has arrived goes to the plugins as one chunk, as Envoy reads
                        // it from the socket.
                        let (data, ahead) = gather_ready(source, data).await;
                        pending = ahead;
                        // Envoy's HTTP/1.1 codec delivers the data, then the end of the
                        // stream as an empty chunk; HTTP/2 ends with the last DATA frame.
                        let eos = !http1 && pending.is_none() && source.is_end_stream();
                        (data, eos, None)
                    }
                    Err(frame) => match frame.into_trailers() {
                        // Data held back by a filter is released at the end, before trailers.
                        Ok(t) => (Bytes::new(), true, Some(t)),
                        Err(_) => continue,
                    },
                },
            };
            {
                let mut i = info.borrow_mut();
                if request {
                    i.request_body_size += chunk.len() as u64;
                } else {
                    i.response_body_size += chunk.len() as u64;
                }
            }
            let mut out = Some(chunk);
            for &i in &order {
                let Some(chunk) = out.take() else { break };
                let Some(stream) = streams[i].as_mut() else {
                    out = Some(chunk);
                    continue;
                };
                match stream.data(direction, chunk, eos, self.buffer_limit).await {
                    DataVerdict::Pass(bytes) => out = Some(bytes),
                    DataVerdict::Held => {}
                    DataVerdict::Done(verdict) => {
                        if let Some(end) = self.apply(verdict, i, &mut streams[i], request) {
                            return Err(end);
                        }
                        out = Some(Bytes::new());
                    }
                }
            }
            if let Some(bytes) = out.filter(|b| !b.is_empty())
                && let Some(sender) = &tx
                && sender.send(Ok(Frame::data(bytes))).await.is_err()
            {
                // The other side went away; keep reading so the filters see the end.
                tx = None;
            }
            if let Some(trailers) = trailers {
                let mut t = convert::plain_headers(&trailers);
                for &i in &order {
                    let Some(stream) = streams[i].as_mut() else { continue };
                    let verdict = stream.trailers(direction, &mut t).await;
                    if let Some(end) = self.apply(verdict, i, &mut streams[i], request) {
                        return Err(end);
                    }
                }
                if let Some(sender) = &tx {
                    let _ = sender.send(Ok(Frame::trailers(convert::header_map(&t)))).await;
                }
            }
            if eos {
                return Ok(());
            }
        }
    }

    /// `stream_idle_timeout` passed with no body bytes from the peer: Envoy answers 408
    /// `stream timeout` if the response has not started (flag `SI`), else resets.
    fn stream_idle(&self, info: &StreamRef, request: bool, encoders: usize) -> Processed {
        self.stats.rq_idle_timeout.inc();
        let mut i = info.borrow_mut();
        i.response_flags.push("SI");
        i.response_code_details = "stream_idle_timeout".into();
        if !request {
            return Processed::Reset;
        }
        let reply = LocalReply { status: 408, body: b"stream timeout".to_vec(), headers: Headers::new() };
        self.reply(reply, encoders, true)
    }

    fn finish(
        &self,
        info: &StreamRef,
        streams: Vec<Option<FilterStream>>,
        request: Option<Headers>,
        response: Option<Headers>,
    ) {
        let (mut request, mut response) = (request, response);
        info.borrow().connection.activity.stream_closed();
        let code = response.as_ref().map(convert::status).map(|s| s.as_u16());
        self.stats.request_ended(code, info.borrow().elapsed());
        // As in Envoy: a filter the stream never reached gets a context for the access-log
        // phase; every filter logs, then each is done and deleted.
        let reached = streams.len();
        let mut ended = Vec::with_capacity(self.filters.len());
        for (i, stream) in streams.into_iter().enumerate().chain((reached..self.filters.len()).map(|i| (i, None))) {
            let stream = match stream {
                Some(s) => s,
                None if i >= reached => match self.filters[i].start_stream(info) {
                    Ok(s) => s,
                    Err(_) => continue,
                },
                None => continue,
            };
            stream.log(&mut request, &mut response);
            ended.push(stream);
        }
        for logger in &self.wasm_loggers {
            logger.log_request(info, &mut request, &mut response);
        }
        if !self.access_logs.is_empty() {
            let info = info.borrow();
            let record = Record { request: request.as_ref(), response: response.as_ref(), info: &info };
            for logger in &self.access_logs {
                logger.log(&record);
            }
        }
        for stream in ended {
            stream.end();
        }
    }

    /// Envoy sets `server` in the response headers after the filters ran: the
    /// access-log phase (and `response.total_size` there, from the headers `finish` lends
    /// it) sees it, the filters do not.
    fn set_server(&self, headers: &mut Headers) {
        headers.replace(b"server", self.config.server_name.as_bytes());
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

/// Why a request body could not be read.
enum BodyFailure {
    /// The client closed the connection or reset the stream mid-body.
    ClientGone,
    /// The body broke the protocol (a bad chunk, more than its length).
    Malformed,
}

fn body_failure(e: &hyper::Error, http1: bool) -> BodyFailure {
    if e.is_incomplete_message() {
        return BodyFailure::ClientGone;
    }
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            let broken = matches!(io.kind(), std::io::ErrorKind::InvalidData | std::io::ErrorKind::InvalidInput);
            return if broken { BodyFailure::Malformed } else { BodyFailure::ClientGone };
        }
        if let Some(h2) = s.downcast_ref::<h2::Error>() {
            return if h2.is_remote() || h2.is_io() { BodyFailure::ClientGone } else { BodyFailure::Malformed };
        }
        source = s.source();
    }
    if http1 { BodyFailure::Malformed } else { BodyFailure::ClientGone }
}

/// What a failed plugin's stream gets.
fn failure_reply() -> LocalReply {
    LocalReply { status: 503, body: Vec::new(), headers: Headers::new() }
}

fn status_headers(status: u16) -> Headers {
    Headers::from_pairs([(":status", status.to_string())])
}

/// The headers of a reply the proxy makes itself, as Envoy makes them: the status, then
/// the length and `text/plain` if there is a body.
pub(crate) fn reply_headers(status: u16, body: &[u8]) -> Headers {
    let mut h = status_headers(status);
    if !body.is_empty() {
        h.add(b"content-length", body.len().to_string().as_bytes());
        h.add(b"content-type", b"text/plain");
    }
    h
}

/// Envoy's local replies for upstream failures: the headers and the body.
pub(crate) fn upstream_error_reply(e: &UpstreamError) -> (Headers, Bytes) {
    let (status, text) = match e {
        UpstreamError::NoHealthyUpstream => (503, "no healthy upstream"),
        UpstreamError::ConnectionFailure(reason) => {
            tracing::debug!("upstream connection failure: {reason}");
            (503, "upstream connect error or disconnect/reset before headers. reset reason: remote connection failure")
        }
        UpstreamError::Disconnected(reason) => {
            tracing::debug!("upstream connection ended before the response: {reason}");
            (503, "upstream connect error or disconnect/reset before headers. reset reason: connection termination")
        }
        UpstreamError::Timeout => (504, "upstream request timeout"),
        UpstreamError::ResponseTooLarge => (500, "Internal Server Error"),
    };
    (reply_headers(status, text.as_bytes()), Bytes::from_static(text.as_bytes()))
}

/// Envoy's response flag and details for an upstream failure, for access logs and
/// `response.code_details`.
fn note_upstream_error(info: &StreamRef, e: &UpstreamError) {
    let mut i = info.borrow_mut();
    let (flag, details) = match e {
        UpstreamError::NoHealthyUpstream => ("UH", "no_healthy_upstream".to_string()),
        UpstreamError::Timeout => ("UT", "response_timeout".to_string()),
        UpstreamError::ConnectionFailure(reason) => {
            // Envoy: `delayed_connect_error: Connection refused`, spaces made `_` in details.
            let reason = reason.split(" (os error").next().unwrap_or(reason);
            let reason = format!("delayed_connect_error:_{}", reason.replace(' ', "_"));
            let details = format!("upstream_reset_before_response_started{{remote_connection_failure|{reason}}}");
            i.upstream_failure = Some(reason);
            ("UF", details)
        }
        UpstreamError::Disconnected(_) => {
            ("UC", "upstream_reset_before_response_started{connection_termination}".to_string())
        }
        UpstreamError::ResponseTooLarge => ("", "response_payload_too_large".to_string()),
    };
    if !flag.is_empty() {
        i.response_flags.push(flag);
    }
    i.response_code_details = details;
}

/// `prefix_rewrite`: the part of the path the route matched is replaced.
fn rewrite_prefix(headers: &mut Headers, matched: usize, prefix: &str) {
    let path = convert::text(headers, b":path");
    let rest = path.get(matched..).unwrap_or_default();
    let new_path = format!("{prefix}{rest}");
    headers.replace(b":path", new_path.as_bytes());
}

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

fn request_id() -> String {
    use std::cell::Cell;
    use std::hash::{BuildHasher, Hasher};
    thread_local! {
        // SplitMix64, seeded once per thread from the standard library's random keys.
        static STATE: Cell<u64> = Cell::new(std::collections::hash_map::RandomState::new().build_hasher().finish());
    }
    let next = |s: &Cell<u64>| {
        let x = s.get().wrapping_add(0x9e37_79b9_7f4a_7c15);
        s.set(x);
        let z = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        let z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    };
    let (a, b) = STATE.with(|s| (next(s), next(s)));
    let mut bytes = [0u8; 16];
    bytes[..8].copy_from_slice(&a.to_be_bytes());
    bytes[8..].copy_from_slice(&b.to_be_bytes());
    // Version 4 (random), RFC 4122 variant.
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(36);
    for (i, byte) in bytes.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            out.push('-');
        }
        out.push(HEX[usize::from(byte >> 4)] as char);
        out.push(HEX[usize::from(byte & 0xf)] as char);
    }
    out
}

/// The most data gathered into one chunk for the body callbacks.
const MAX_GATHER_BYTES: usize = 1 << 20;

type NextFrame = Option<Result<Frame<Bytes>, hyper::Error>>;

/// `first` and the data frames that are ready now (up to [`MAX_GATHER_BYTES`]), as one
/// chunk; a frame that is ready but not data (trailers, the end, an error) is returned for
/// the caller to handle next. The connection's task is let run once between reads, so the
/// bytes already in the socket are read.
async fn gather_ready(source: &mut Incoming, first: Bytes) -> (Bytes, Option<NextFrame>) {
    let mut gathered: Option<bytes::BytesMut> = None;
    let mut ahead = None;
    let mut yielded = false;
    while gathered.as_ref().map_or(first.len(), |g| g.len()) < MAX_GATHER_BYTES && !source.is_end_stream() {
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        match std::pin::Pin::new(&mut *source).poll_frame(&mut cx) {
            std::task::Poll::Pending if yielded => break,
            std::task::Poll::Pending => {
                tokio::task::yield_now().await;
                yielded = true;
            }
            std::task::Poll::Ready(Some(Ok(frame))) => {
                yielded = false;
                match frame.into_data() {
                    Ok(data) => {
                        gathered.get_or_insert_with(|| bytes::BytesMut::from(&first[..])).extend_from_slice(&data)
                    }
                    Err(frame) => {
                        ahead = Some(Some(Ok(frame)));
                        break;
                    }
                }
            }
            std::task::Poll::Ready(other) => {
                ahead = Some(other);
                break;
            }
        }
    }
    (gathered.map_or(first, bytes::BytesMut::freeze), ahead)
}

/// Records the matched route (or none) in the stream info, for `xds.route_name` and
/// `xds.cluster_name`.
fn note_route(matched: Option<&Matched<'_>>, info: &StreamRef) {
    let mut i = info.borrow_mut();
    i.route_matched = matched.is_some();
    i.route_name = matched.map(|m| m.name.to_string()).unwrap_or_default();
    i.cluster_name = match matched.map(|m| m.action) {
        Some(RouteAction::Forward(f)) => f.cluster.clone(),
        _ => String::new(),
    };
}

#[cfg(test)]
mod tests {
    #[test]
    fn request_ids_are_random_version_4_uuids() {
        let (a, b) = (super::request_id(), super::request_id());
        assert_ne!(a, b);
        for id in [a, b] {
            let groups: Vec<&str> = id.split('-').collect();
            assert_eq!(groups.iter().map(|g| g.len()).collect::<Vec<_>>(), [8, 4, 4, 4, 12], "{id}");
            assert!(id.bytes().all(|c| c == b'-' || c.is_ascii_hexdigit() && !c.is_ascii_uppercase()), "{id}");
            assert!(groups[2].starts_with('4') && "89ab".contains(&groups[3][..1]), "{id}");
        }
    }
}
