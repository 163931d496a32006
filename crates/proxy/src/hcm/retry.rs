//! The router's tries: the route's timeout (from the request's end) and the per-try
//! timeout, and the retries a route's (or virtual host's) `retry_policy` and Envoy's
//! request headers allow: which answers and failures are tried again, the back-off in
//! between, endpoints not tried yet, the cluster's retry budget, and the request body kept
//! to send again.

use std::cell::RefCell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Either};
use hyper::body::Frame;
use tokio::sync::oneshot;
use tokio::time::Instant as TokioInstant;
use wasmproxy_config::model::{RetryOn, RetryPolicy};
use wasmproxy_host::Headers;

use crate::hcm::route_table::RetrySetting;
use crate::http::body::{BodySender, ChannelBody, ProxyBody, whole};
use crate::matcher::HeaderMatchers;
use crate::stream_info::StreamRef;
use crate::stream_info::response_flags::ResponseFlag;
use crate::upstream::cluster::{Cluster, Started};
use crate::upstream::error::UpstreamError;

/// The header that tells the upstream how long the router waits.
const EXPECTED_TIMEOUT: &[u8] = b"x-envoy-expected-rq-timeout-ms";
/// The header that numbers the tries (`include_request_attempt_count`).
pub(super) const ATTEMPT_COUNT: &[u8] = b"x-envoy-attempt-count";

/// The route's timeout, which runs from the end of the request.
pub(super) struct Deadline {
    timeout: Option<Duration>,
    ended: Option<oneshot::Receiver<TokioInstant>>,
    at: Option<TokioInstant>,
}

impl Deadline {
    /// `timeout` (none: no deadline), starting when `ended` says the request ended.
    pub(super) fn new(timeout: Option<Duration>, ended: oneshot::Receiver<TokioInstant>) -> Deadline {
        Deadline { timeout, ended: Some(ended), at: None }
    }

    /// When the route's timeout passes (known once the request has ended).
    pub(super) fn at(&self) -> Option<TokioInstant> {
        self.at
    }

    /// Waits for the request's end, once, and sets the deadline from it.
    async fn request_ended(&mut self) {
        if let Some(ended) = self.ended.take() {
            let t = ended.await.unwrap_or_else(|_| TokioInstant::now());
            self.at = self.timeout.map(|d| t + d);
        }
    }
}

/// The retries one request may still make.
pub(super) struct Retries {
    policy: RetryPolicy,
    /// `retriable_headers`, and the header names `x-envoy-retriable-header-names` adds.
    answers: (HeaderMatchers, Vec<String>),
    remaining: u32,
    /// The next back-off's ceiling (Envoy's jittered exponential back-off).
    next_interval: Duration,
    /// The endpoints tried so far (for `previous_hosts`).
    tried: Vec<SocketAddr>,
    /// Retries made.
    made: u32,
    /// The request body as the first try sent it.
    pub(super) replay: Rc<RefCell<Replay>>,
}

impl Retries {
    /// The retries the route's policy allows, with Envoy's request headers
    /// (`x-envoy-retry-on`, `x-envoy-retry-grpc-on` add conditions, `x-envoy-max-retries`
    /// sets the number, `x-envoy-retriable-status-codes` adds codes); none if no condition
    /// is set. Only internal requests still carry those headers here.
    pub(super) fn new(setting: Option<&Arc<RetrySetting>>, request: &Headers) -> Option<Box<Retries>> {
        // Most requests have neither a policy nor Envoy's retry headers.
        if setting.is_none() && !request.iter().any(|(name, _)| name.starts_with(b"x-envoy-retr")) {
            return None;
        }
        // Only a request `retriable_request_headers` matches may be tried again.
        if setting.is_some_and(|s| !s.requests.is_empty() && !s.requests.any(request)) {
            return None;
        }
        let text = |name: &[u8]| request.get(name).and_then(|v| std::str::from_utf8(v).ok());
        let mut policy = setting.map(|s| s.policy.clone()).unwrap_or_default();
        let names = text(b"x-envoy-retriable-header-names").unwrap_or_default().split(',');
        let names = names.map(|n| n.trim().to_ascii_lowercase()).filter(|n| !n.is_empty()).collect();
        let answers = (setting.map(|s| s.answers.clone()).unwrap_or_default(), names);
        for name in [&b"x-envoy-retry-on"[..], b"x-envoy-retry-grpc-on"] {
            // As Envoy, a condition it does not know is skipped.
            for word in text(name).unwrap_or_default().split(',') {
                policy.retry_on.0 |= RetryOn::parse(word).map_or(0, |on| on.0);
            }
        }
        if let Some(n) = text(b"x-envoy-max-retries").and_then(|v| v.trim().parse().ok()) {
            policy.num_retries = n;
        }
        let codes = text(b"x-envoy-retriable-status-codes").unwrap_or_default().split(',');
        policy.retriable_status_codes.extend(codes.filter_map(|c| c.trim().parse::<u16>().ok()));
        if policy.retry_on.0 == 0 {
            return None;
        }
        let (remaining, next_interval) = (policy.num_retries, policy.back_off.0);
        let replay = Rc::default();
        Some(Box::new(Retries { policy, answers, remaining, next_interval, tried: Vec::new(), made: 0, replay }))
    }

    /// Whether a try's answer or failure is one to try again.
    fn retriable(&self, result: &Result<Started, UpstreamError>) -> bool {
        match result {
            Ok(answer) => self.retriable_answer(&answer.headers),
            Err(e) => self.retriable_failure(e),
        }
    }

    /// Whether an answer is one to try again (Envoy's `wouldRetryFromHeaders`).
    fn retriable_answer(&self, h: &Headers) -> bool {
        if h.get(b"x-envoy-overloaded").is_some() {
            return false;
        }
        let on = self.policy.retry_on;
        let status = h.get(b":status").and_then(|s| std::str::from_utf8(s).ok()?.parse::<u16>().ok()).unwrap_or(0);
        let grpc = h.get(b"grpc-status").and_then(|s| std::str::from_utf8(s).ok()?.parse::<u32>().ok());
        let grpc_retriable = |code: u32, bit: u32| grpc == Some(code) && on.any(bit);
        (on.any(RetryOn::FIVE_XX) && (500..600).contains(&status))
            || (on.any(RetryOn::GATEWAY_ERROR) && (502..=504).contains(&status))
            || (on.any(RetryOn::RETRIABLE_4XX) && status == 409)
            || (on.any(RetryOn::RETRIABLE_STATUS_CODES) && self.policy.retriable_status_codes.contains(&status))
            || (on.any(RetryOn::ENVOY_RATELIMITED) && h.get(b"x-envoy-ratelimited").is_some())
            || grpc_retriable(1, RetryOn::GRPC_CANCELLED)
            || grpc_retriable(4, RetryOn::GRPC_DEADLINE_EXCEEDED)
            || grpc_retriable(8, RetryOn::GRPC_RESOURCE_EXHAUSTED)
            || grpc_retriable(13, RetryOn::GRPC_INTERNAL)
            || grpc_retriable(14, RetryOn::GRPC_UNAVAILABLE)
            || (on.any(RetryOn::RETRIABLE_HEADERS)
                && (self.answers.0.any(h) || self.answers.1.iter().any(|n| h.get(n.as_bytes()).is_some())))
    }

    /// Whether a try that got no answer is tried again (Envoy's `wouldRetryFromReset`):
    /// the route's own timeout never is.
    fn retriable_failure(&self, e: &UpstreamError) -> bool {
        let on = self.policy.retry_on;
        let no_answer = RetryOn::FIVE_XX | RetryOn::GATEWAY_ERROR | RetryOn::RESET;
        match e {
            UpstreamError::Timeout
            | UpstreamError::ResponseTooLarge
            | UpstreamError::NoHealthyUpstream
            | UpstreamError::Overflow => false,
            UpstreamError::ConnectionFailure(_) => on.any(no_answer | RetryOn::CONNECT_FAILURE),
            UpstreamError::Refused(_) => on.any(no_answer | RetryOn::REFUSED_STREAM),
            UpstreamError::Disconnected(_) | UpstreamError::PerTryTimeout => on.any(no_answer),
        }
    }

    /// The wait before the next try: a random part of a ceiling that doubles each time,
    /// up to `max_interval` (Envoy's jittered exponential back-off).
    fn back_off(&mut self) -> Duration {
        let ceiling = self.next_interval;
        let max = self.policy.back_off.1;
        self.next_interval = if ceiling > max / 2 { max } else { ceiling * 2 };
        let millis = (ceiling.as_millis() as usize).max(1);
        Duration::from_millis(crate::random::index(millis) as u64).min(max)
    }
}

/// The request body as the first try sent it, kept for the next tries while it fits.
#[derive(Default)]
pub(super) struct Replay {
    frames: Vec<Frame<Bytes>>,
    bytes: usize,
    /// Over the limit (or aborted): no try can send it again.
    lost: bool,
}

impl Replay {
    /// A body to send again, once the request has ended (`None` if it was not kept).
    fn body(&self, http2: bool) -> Option<ProxyBody> {
        if self.lost {
            return None;
        }
        if self.frames.is_empty() {
            return Some(crate::http::body::ended_on_headers(http2));
        }
        if self.frames.iter().all(Frame::is_data) {
            let data: Vec<Bytes> = self.frames.iter().filter_map(|f| f.data_ref().cloned()).collect();
            return Some(whole(Bytes::from(data.concat())));
        }
        let (tx, body) = crate::http::body::channel();
        let frames: Vec<Frame<Bytes>> = self.frames.iter().map(copy_frame).collect();
        tokio::task::spawn_local(async move {
            for frame in frames {
                if tx.send(Ok(frame)).await.is_err() {
                    break;
                }
            }
        });
        Some(Either::Right(body))
    }
}

fn copy_frame(f: &Frame<Bytes>) -> Frame<Bytes> {
    match (f.data_ref(), f.trailers_ref()) {
        (Some(data), _) => Frame::data(data.clone()),
        (None, Some(trailers)) => Frame::trailers(trailers.clone()),
        (None, None) => Frame::data(Bytes::new()),
    }
}

/// Passes the filtered request body on to the first try and keeps a copy (up to `limit`
/// bytes) for the next ones; the whole body is read even once the first try is gone.
pub(super) fn keep_for_retries(mut from: ChannelBody, to: BodySender, replay: Rc<RefCell<Replay>>, limit: usize) {
    tokio::task::spawn_local(async move {
        while let Some(frame) = from.frame().await {
            let Ok(frame) = frame else {
                replay.borrow_mut().lost = true;
                let _ = to.send(Err(crate::http::body::Aborted)).await;
                return;
            };
            {
                let mut kept = replay.borrow_mut();
                kept.bytes += frame.data_ref().map_or(0, Bytes::len);
                if kept.bytes > limit {
                    kept.lost = true;
                    kept.frames.clear();
                } else if !kept.lost {
                    kept.frames.push(copy_frame(&frame));
                }
            }
            let _ = to.send(Ok(frame)).await;
        }
    });
}

/// What the tries need besides the body.
pub(super) struct TryContext<'a> {
    pub(super) cluster: &'a Rc<Cluster>,
    pub(super) headers: &'a Headers,
    pub(super) info: &'a StreamRef,
    /// The first try's body is sent whole (`content-length` from it).
    pub(super) whole_body: bool,
}

/// The first try and the retries the policy allows: the last answer or failure, and
/// how many tries were made. A retry waits for the request's end (its body is sent
/// again whole) and its back-off.
pub(super) async fn send(
    cx: &TryContext<'_>,
    first_body: ProxyBody,
    deadline: &mut Deadline,
    mut retries: Option<Box<Retries>>,
) -> (Result<Started, UpstreamError>, u32) {
    let per_try = retries.as_ref().and_then(|r| r.policy.per_try_timeout);
    let first = one_try(cx, cx.headers, first_body, cx.whole_body, per_try, deadline, &[]).await;
    match retries.as_mut() {
        // The retries are a few KiB of future: boxed, so that a stream's future does not
        // carry room for them.
        Some(r) if r.retriable(&first) => Box::pin(retry(cx, first, deadline, r)).await,
        _ => (first, 1),
    }
}

/// The retries after the first try's `result`.
async fn retry(
    cx: &TryContext<'_>,
    mut result: Result<Started, UpstreamError>,
    deadline: &mut Deadline,
    r: &mut Retries,
) -> (Result<Started, UpstreamError>, u32) {
    let per_try = r.policy.per_try_timeout;
    let stats = cx.cluster.stats();
    loop {
        let tries = r.made + 1;
        if !r.retriable(&result) {
            if r.made > 0 && result.is_ok() {
                stats.rq_retry_success.inc();
            }
            return (result, tries);
        }
        if r.remaining == 0 {
            stats.rq_retry_limit_exceeded.inc();
            cx.info.borrow_mut().response_flags.set(ResponseFlag::UpstreamRetryLimitExceeded);
            return (result, tries);
        }
        let Some(budget) = cx.cluster.retry_budget(cx.info.borrow().high_priority) else {
            stats.rq_retry_overflow.inc();
            return (result, tries);
        };
        // A retry sends the request again whole: it waits for its end, and there is none
        // if the body was not kept (over the buffer limit).
        deadline.request_ended().await;
        let kept = r.replay.borrow().body(cx.cluster.http2(Some(cx.info)));
        let Some(body) = kept else {
            stats.retry_or_shadow_abandoned.inc();
            return (result, tries);
        };
        r.remaining -= 1;
        r.made += 1;
        stats.rq_retry.inc();
        stats.rq_retry_backoff_exponential.inc();
        if let Some(host) = cx.info.borrow().upstream {
            r.tried.push(host);
        }
        // The answer is let go before the wait (its body read, if short, so that its
        // connection serves again, as Envoy's does); past the route's deadline the stream
        // times out.
        if let Ok(answer) = result {
            drain(answer);
        }
        let wait = r.back_off();
        match deadline.at() {
            Some(at) if TokioInstant::now() + wait >= at => {
                tokio::time::sleep_until(at).await;
                return (Err(UpstreamError::Timeout), r.made + 1);
            }
            // No wait at all is no timer (tokio's would wait for its next millisecond).
            _ if wait.is_zero() => {}
            _ => tokio::time::sleep(wait).await,
        }
        let avoid = if r.policy.previous_hosts { r.tried.clone() } else { Vec::new() };
        // A retry is told the time left (or its own per-try timeout), as in Envoy.
        let mut headers = cx.headers.clone();
        let left = deadline.at().map(|at| at.saturating_duration_since(TokioInstant::now()));
        if let Some(expected) = per_try.or(left).filter(|_| headers.get(EXPECTED_TIMEOUT).is_some()) {
            headers.replace(EXPECTED_TIMEOUT, expected.as_millis().to_string().as_bytes());
        }
        if headers.get(ATTEMPT_COUNT).is_some() {
            headers.replace(ATTEMPT_COUNT, (r.made + 1).to_string().as_bytes());
        }
        result = one_try(cx, &headers, body, true, per_try, deadline, &avoid).await;
        drop(budget);
    }
}

/// Reads a retried answer's body (up to [`DRAIN_LIMIT`]) on a task of its own, so that an
/// HTTP/1.1 connection goes back to its pool instead of closing.
fn drain(answer: Started) {
    tokio::task::spawn_local(async move {
        let Started { body, request, .. } = answer;
        let _ = http_body_util::Limited::new(body, DRAIN_LIMIT).collect().await;
        drop(request);
    });
}

/// The most of a retried answer's body read to keep its connection.
const DRAIN_LIMIT: usize = 64 * 1024;

/// One try: the request to an endpoint (one not in `avoid`, if there is one) until its
/// answer's headers, within the route's deadline (once the request has ended) and the
/// per-try timeout (from then, or from the try's start for a retry).
async fn one_try(
    cx: &TryContext<'_>,
    headers: &Headers,
    body: ProxyBody,
    whole_body: bool,
    per_try: Option<Duration>,
    deadline: &mut Deadline,
    avoid: &[SocketAddr],
) -> Result<Started, UpstreamError> {
    let start = cx.cluster.start_avoiding(headers, body, whole_body, (Some(cx.info), None), avoid);
    tokio::pin!(start);
    if deadline.ended.is_some() {
        tokio::select! {
            r = &mut start => return r,
            () = deadline.request_ended() => {}
        }
    }
    let per_try_at = per_try.map(|t| TokioInstant::now() + t);
    let (at, error) = match (deadline.at(), per_try_at) {
        (Some(route), Some(try_at)) if try_at < route => (Some(try_at), UpstreamError::PerTryTimeout),
        (Some(route), _) => (Some(route), UpstreamError::Timeout),
        (None, Some(try_at)) => (Some(try_at), UpstreamError::PerTryTimeout),
        (None, None) => (None, UpstreamError::Timeout),
    };
    let result = match at {
        Some(at) => tokio::time::timeout_at(at, start).await.unwrap_or(Err(error)),
        None => start.await,
    };
    if matches!(result, Err(UpstreamError::PerTryTimeout)) {
        cx.cluster.stats().rq_per_try_timeout.inc();
    }
    result
}
