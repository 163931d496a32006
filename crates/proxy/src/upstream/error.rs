//! Why an upstream request got no response, and Envoy's local reply for each.

use bytes::Bytes;
use wasmproxy_host::Headers;

use crate::http::reply::reply_headers;

/// Why an upstream request got no response; each maps to Envoy's local reply.
#[derive(Debug)]
pub enum UpstreamError {
    /// The cluster has no endpoint.
    NoHealthyUpstream,
    /// No connection could be made.
    ConnectionFailure(String),
    /// The connection ended before the response headers.
    Disconnected(String),
    /// The route's timeout passed.
    Timeout,
    /// The response body is over the limit of what is read into memory.
    ResponseTooLarge,
}

/// Envoy's transport failure reason for a connection that could not be made
/// (`delayed_connect_error:_Connection_refused`: the OS error, spaces made `_`).
pub fn connect_failure_reason(error: &str) -> String {
    let error = error.split(" (os error").next().unwrap_or(error);
    format!("delayed_connect_error:_{}", error.replace(' ', "_"))
}

/// Envoy's local replies for upstream failures: the headers and the body.
pub fn upstream_error_reply(e: &UpstreamError) -> (Headers, Bytes) {
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
