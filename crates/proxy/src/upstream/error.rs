//! Why an upstream request got no response, and Envoy's local reply for each.

use bytes::Bytes;
use wasmproxy_host::Headers;

use crate::http::reply::{local_reply_headers, reply_headers};
use crate::stream_info::response_flags::ResponseFlag;

/// Why an upstream request got no response; each maps to Envoy's local reply.
#[derive(Debug)]
pub enum UpstreamError {
    /// The cluster has no endpoint.
    NoHealthyUpstream,
    /// No connection could be made.
    ConnectionFailure(String),
    /// The connection ended before the response headers.
    Disconnected(String),
    /// The upstream refused the stream (HTTP/2 `REFUSED_STREAM`).
    Refused(String),
    /// A circuit breaker of the cluster was open.
    Overflow,
    /// The route's timeout passed.
    Timeout,
    /// The retry policy's `per_try_timeout` passed on the last try.
    PerTryTimeout,
    /// The response body is over the limit of what is read into memory.
    ResponseTooLarge,
}

impl UpstreamError {
    /// The response flag Envoy sets for it.
    pub fn response_flag(&self) -> Option<ResponseFlag> {
        Some(match self {
            UpstreamError::NoHealthyUpstream => ResponseFlag::NoHealthyUpstream,
            UpstreamError::Timeout | UpstreamError::PerTryTimeout => ResponseFlag::UpstreamRequestTimeout,
            UpstreamError::Overflow => ResponseFlag::UpstreamOverflow,
            UpstreamError::Refused(_) => ResponseFlag::UpstreamRemoteReset,
            UpstreamError::ConnectionFailure(_) => ResponseFlag::UpstreamConnectionFailure,
            UpstreamError::Disconnected(_) => ResponseFlag::UpstreamConnectionTermination,
            UpstreamError::ResponseTooLarge => return None,
        })
    }
}

/// Envoy's transport failure reason for a connection that could not be made
/// (`delayed_connect_error:_Connection_refused`: the OS error, spaces made `_`).
pub fn connect_failure_reason(error: &str) -> String {
    let error = error.split(" (os error").next().unwrap_or(error);
    format!("delayed_connect_error:_{}", error.replace(' ', "_"))
}

/// How Envoy's reply to a stream reset before the response starts begins.
const RESET_TEXT: &str = "upstream connect error or disconnect/reset before headers. ";

/// Envoy's local replies for upstream failures: the headers and the body (`retried`: the
/// failure was a retry's, which the text says, as Envoy's does).
pub fn upstream_error_reply(e: &UpstreamError, retried: bool) -> (Headers, Bytes) {
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
        UpstreamError::Refused(reason) => {
            tracing::debug!("upstream refused the stream: {reason}");
            (
                503,
                "upstream connect error or disconnect/reset before headers. reset reason: remote refused stream reset",
            )
        }
        UpstreamError::Overflow => {
            (503, "upstream connect error or disconnect/reset before headers. reset reason: overflow")
        }
        UpstreamError::Timeout | UpstreamError::PerTryTimeout => (504, "upstream request timeout"),
        UpstreamError::ResponseTooLarge => (500, "Internal Server Error"),
    };
    let text = match text.strip_prefix(RESET_TEXT) {
        Some(reason) if retried => format!("{RESET_TEXT}retried and the latest {reason}"),
        _ => text.to_string(),
    };
    if matches!(e, UpstreamError::Overflow) {
        // As Envoy's router says of a request its circuit breakers dropped.
        let overloaded = Headers::from_pairs([("x-envoy-overloaded", "true")]);
        return (local_reply_headers(status, &overloaded, text.as_bytes()), Bytes::from(text));
    }
    (reply_headers(status, text.as_bytes()), Bytes::from(text))
}
