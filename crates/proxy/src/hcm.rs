//! The HTTP connection manager: one request through the Wasm filters, the route, the
//! upstream (or a direct response), and back through the filters in reverse order.

use std::convert::Infallible;
use std::rc::Rc;
use std::time::Instant;

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use wasmproxy_config::model::{FailurePolicy, HttpConnectionManager, RedirectAction, RouteAction};
use wasmproxy_host::Headers;

use crate::cluster::{Clusters, UpstreamError};
use crate::convert;
use crate::routing::RouteTable;
use crate::stream_info::{ConnectionInfo, StreamInfo, StreamRef};
use crate::wasm_filter::{FilterSlot, FilterStream, LocalReply, Verdict};

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
}

type Body = Full<Bytes>;

/// The most body bytes read into memory for one request or response.
pub const MAX_BODY_BYTES: usize = 16 << 20;

enum Outcome {
    Respond(Headers, Bytes),
    Reset,
}

impl Hcm {
    /// Handles one request.
    pub async fn handle(
        self: Rc<Self>,
        request: http::Request<Incoming>,
        connection: Rc<ConnectionInfo>,
    ) -> Result<Response<Body>, Infallible> {
        let (parts, body) = request.into_parts();
        let protocol = match parts.version {
            http::Version::HTTP_10 => "HTTP/1.0",
            http::Version::HTTP_2 => "HTTP/2",
            _ => "HTTP/1.1",
        };
        let info: StreamRef = Rc::new(std::cell::RefCell::new(StreamInfo::new(connection, protocol)));
        let mut headers = convert::request_headers(&parts, "http");
        if headers.get(b"x-request-id").is_none() {
            headers.add(b"x-request-id", request_id().as_bytes());
        }
        if headers.get(b"x-forwarded-proto").is_none() {
            headers.add(b"x-forwarded-proto", b"http");
        }
        // Bodies are read whole (streaming chunk by chunk is still to come), so they are
        // capped: over the cap, Envoy's answer for a body over its buffer limit.
        let mut body = match http_body_util::Limited::new(body, MAX_BODY_BYTES).collect().await {
            Ok(b) => b.to_bytes(),
            Err(e) if e.is::<http_body_util::LengthLimitError>() => {
                return Ok(plain(StatusCode::PAYLOAD_TOO_LARGE, "Payload Too Large"));
            }
            Err(_) => return Ok(plain(StatusCode::BAD_REQUEST, "")),
        };
        info.borrow_mut().request_body_size = body.len() as u64;
        let mut streams: Vec<Option<FilterStream>> = Vec::new();
        let outcome = self.process(&mut headers, &mut body, &mut streams, &info).await;
        let (response_headers, response_body) = match outcome {
            Outcome::Respond(h, b) => (h, b),
            Outcome::Reset => {
                info.borrow_mut().complete();
                self.finish(&info, streams, Some(headers), None);
                return Ok(plain(StatusCode::SERVICE_UNAVAILABLE, ""));
            }
        };
        {
            let mut i = info.borrow_mut();
            i.response_headers = Some(response_headers.clone());
            i.response_body_size = response_body.len() as u64;
            i.complete();
        }
        self.finish(&info, streams, Some(headers), Some(response_headers.clone()));
        Ok(self.build_response(response_headers, response_body))
    }

    async fn process(
        &self,
        headers: &mut Headers,
        body: &mut Bytes,
        streams: &mut Vec<Option<FilterStream>>,
        info: &StreamRef,
    ) -> Outcome {
        // Request direction, filter by filter; each sees the headers the previous one left.
        for filter in &self.filters {
            info.borrow_mut().request_headers = headers.clone();
            let mut stream = match filter.start_stream(info) {
                Ok(s) => s,
                Err(_) => match self.on_failure(filter) {
                    Some(reply) => return reply,
                    None => {
                        streams.push(None);
                        continue;
                    }
                },
            };
            info.borrow_mut().request_headers_visible = true;
            let mut verdict = stream.request_headers(headers, body.is_empty()).await;
            info.borrow_mut().request_headers_visible = false;
            if matches!(verdict, Verdict::Continue) && !body.is_empty() {
                verdict = stream.request_body(body).await;
            }
            streams.push(Some(stream));
            match verdict {
                Verdict::Continue => {}
                Verdict::LocalReply(r) => return self.local_reply(r),
                Verdict::Reset => return Outcome::Reset,
                Verdict::Failed => match self.on_failure(filter) {
                    Some(reply) => return reply,
                    None => {
                        if let Some(s) = streams.last_mut() {
                            *s = None;
                        }
                    }
                },
            }
        }
        // The router.
        info.borrow_mut().request_headers = headers.clone();
        let started = Instant::now();
        let matched = self.routes.find(headers);
        if let Some(m) = &matched {
            let mut i = info.borrow_mut();
            i.route_name = m.name.to_string();
            if let RouteAction::Forward(f) = m.action {
                i.cluster_name = f.cluster.clone();
            }
        }
        let (mut response_headers, mut response_body) = match matched.map(|m| (m.action, m.matched_len)) {
            None => {
                info.borrow_mut().response_code_details = "route_not_found".into();
                (status_headers(404), Bytes::new())
            }
            Some((RouteAction::DirectResponse { status, body }, _)) => {
                info.borrow_mut().response_code_details = "direct_response".into();
                let body = Bytes::from(body.clone().unwrap_or_default());
                let mut h = status_headers(*status);
                if !body.is_empty() {
                    h.add(b"content-type", b"text/plain");
                }
                (h, body)
            }
            Some((RouteAction::Redirect(r), _)) => {
                info.borrow_mut().response_code_details = "direct_response".into();
                (redirect(r, headers), Bytes::new())
            }
            Some((RouteAction::Forward(f), matched)) => {
                let Some(cluster) = self.clusters.get(&f.cluster) else {
                    return self.local_reply(LocalReply {
                        status: 503,
                        body: b"no healthy upstream".to_vec(),
                        headers: Headers::new(),
                    });
                };
                let mut upstream_headers = headers.clone();
                if let Some(prefix) = &f.prefix_rewrite {
                    rewrite_prefix(&mut upstream_headers, matched, prefix);
                }
                if let Some(host) = &f.host_rewrite_literal {
                    upstream_headers.replace(b":authority", host.as_bytes());
                }
                match cluster.send(&upstream_headers, body.clone(), f.timeout, Some(info)).await {
                    Ok(r) => {
                        info.borrow_mut().response_code_details = "via_upstream".into();
                        let mut h = r.headers;
                        let ms = started.elapsed().as_millis().to_string();
                        h.replace(b"x-envoy-upstream-service-time", ms.as_bytes());
                        (h, r.body)
                    }
                    Err(e) => {
                        let (status, text) = upstream_error_reply(&e);
                        let mut h = status_headers(status);
                        h.add(b"content-type", b"text/plain");
                        (h, Bytes::from(text))
                    }
                }
            }
        };
        // Response direction, in reverse order.
        for (filter, stream) in self.filters.iter().zip(streams.iter_mut()).rev() {
            let Some(stream) = stream else { continue };
            info.borrow_mut().response_headers = Some(response_headers.clone());
            let mut verdict = stream.response_headers(&mut response_headers, response_body.is_empty()).await;
            if matches!(verdict, Verdict::Continue) && !response_body.is_empty() {
                verdict = stream.response_body(&mut response_body).await;
            }
            match verdict {
                Verdict::Continue => {}
                Verdict::LocalReply(r) => return self.local_reply(r),
                Verdict::Reset => return Outcome::Reset,
                Verdict::Failed => {
                    if let Some(reply) = self.on_failure(filter) {
                        return reply;
                    }
                }
            }
        }
        Outcome::Respond(response_headers, response_body)
    }

    /// Envoy's failure policy: FAIL_CLOSED answers 503 (details `wasm_fail_stream`);
    /// FAIL_OPEN (and, until reloading lands, FAIL_RELOAD) skips the filter.
    fn on_failure(&self, filter: &FilterSlot) -> Option<Outcome> {
        match filter.failure_policy {
            FailurePolicy::FailClosed => {
                Some(self.local_reply(LocalReply { status: 503, body: Vec::new(), headers: Headers::new() }))
            }
            FailurePolicy::FailOpen | FailurePolicy::FailReload => None,
        }
    }

    fn local_reply(&self, r: LocalReply) -> Outcome {
        let mut h = status_headers(r.status);
        if !r.body.is_empty() {
            h.add(b"content-type", b"text/plain");
        }
        for (k, v) in r.headers.iter() {
            h.add(k, v);
        }
        Outcome::Respond(h, Bytes::from(r.body))
    }

    fn finish(
        &self,
        info: &StreamRef,
        streams: Vec<Option<FilterStream>>,
        request: Option<Headers>,
        response: Option<Headers>,
    ) {
        // The access-log phase sees the final request headers again.
        if let Some(h) = &request {
            let mut i = info.borrow_mut();
            i.request_headers = h.clone();
            i.request_headers_visible = true;
        }
        for stream in streams.into_iter().flatten() {
            stream.finish(request.clone(), response.clone());
        }
    }

    fn build_response(&self, headers: Headers, body: Bytes) -> Response<Body> {
        let mut map = convert::header_map(&headers);
        map.insert(
            http::header::SERVER,
            HeaderValue::from_str(&self.config.server_name).unwrap_or(HeaderValue::from_static("envoy")),
        );
        map.remove(http::header::TRANSFER_ENCODING);
        map.remove(http::header::CONNECTION);
        map.insert(http::header::CONTENT_LENGTH, HeaderValue::from(body.len()));
        let mut response = Response::new(Full::new(body));
        *response.status_mut() = convert::status(&headers);
        *response.headers_mut() = map;
        response
    }
}

fn status_headers(status: u16) -> Headers {
    Headers::from_pairs([(":status", status.to_string())])
}

fn plain(status: StatusCode, text: &'static str) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from_static(text.as_bytes())));
    *r.status_mut() = status;
    r
}

/// Envoy's local replies for upstream failures.
fn upstream_error_reply(e: &UpstreamError) -> (u16, &'static str) {
    match e {
        UpstreamError::NoHealthyUpstream => (503, "no healthy upstream"),
        UpstreamError::ConnectionFailure(reason) => {
            tracing::debug!("upstream connection failure: {reason}");
            (503, "upstream connect error or disconnect/reset before headers. reset reason: connection failure")
        }
        UpstreamError::Timeout => (504, "upstream request timeout"),
        UpstreamError::ResponseTooLarge => (500, "Internal Server Error"),
    }
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
    use std::hash::{BuildHasher, Hasher};
    let mut out = String::with_capacity(36);
    for part in 0..2 {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u8(part);
        out.push_str(&format!("{:016x}", h.finish()));
    }
    format!("{}-{}-4{}-a{}-{}", &out[0..8], &out[8..12], &out[13..16], &out[17..20], &out[20..32])
}
