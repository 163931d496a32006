//! What a filter can decide for a stream, and the replies the proxy makes itself, as
//! Envoy shapes them.

use wasmproxy_host::Headers;

/// A reply the proxy makes itself (a plugin's local response, or a failure).
#[derive(Debug, Clone)]
pub struct LocalReply {
    /// HTTP status.
    pub status: u16,
    /// Body.
    pub body: Vec<u8>,
    /// Extra headers.
    pub headers: Headers,
}

impl LocalReply {
    /// What a failed plugin's stream gets: 503, no body.
    pub fn failure() -> LocalReply {
        LocalReply { status: 503, body: Vec::new(), headers: Headers::new() }
    }
}

/// What a filter decided for the stream.
pub enum Verdict {
    /// Go on.
    Continue,
    /// Answer the client with this reply.
    LocalReply(LocalReply),
    /// Reset the stream.
    Reset,
    /// The VM failed: apply the plugin's failure policy.
    Failed,
}

/// What a filter did with a chunk of a streamed body.
pub enum DataVerdict {
    /// Pass these bytes on (what the filter held back so far, with the chunk, as it left them).
    Pass(bytes::Bytes),
    /// The filter holds the data for now.
    Held,
    /// Anything else (local reply, reset, failure).
    Done(Verdict),
}

/// The stream is reset instead of answered (a plugin's `close_stream`): hyper closes the
/// HTTP/1.1 connection, or resets the HTTP/2 stream.
#[derive(Debug, thiserror::Error)]
#[error("the stream was reset")]
pub struct StreamReset;

/// Headers with only `:status`.
pub fn status_headers(status: u16) -> Headers {
    Headers::from_pairs([(":status", status.to_string())])
}

/// The headers of a reply the proxy makes itself, as Envoy makes them: the status, then
/// the length and `text/plain` if there is a body.
pub fn reply_headers(status: u16, body: &[u8]) -> Headers {
    let mut h = status_headers(status);
    if !body.is_empty() {
        h.add(b"content-length", body.len().to_string().as_bytes());
        h.add(b"content-type", b"text/plain");
    }
    h
}
