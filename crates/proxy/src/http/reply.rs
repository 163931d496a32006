//! What a filter can decide for a stream, and the replies the proxy makes itself, as
//! Envoy shapes them.

use bytes::Bytes;
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
    /// The gRPC status a plugin gave (`proxy_send_local_response`'s last argument): what
    /// a gRPC request's answer carries instead of one derived from `status`.
    pub grpc_status: Option<u32>,
}

impl LocalReply {
    /// What a failed plugin's stream gets: 503, no body.
    pub fn failure() -> LocalReply {
        LocalReply { status: 503, body: Vec::new(), headers: Headers::new(), grpc_status: None }
    }
}

/// What a filter decided for the stream.
pub enum Verdict {
    /// Go on.
    Continue,
    /// Answer the client with this reply.
    LocalReply(LocalReply),
    /// Answer the client with these headers and no body, as they are (a native filter's
    /// answer: no length or type added, not made a gRPC one).
    Respond(Headers),
    /// Reset the stream.
    Reset,
    /// The VM failed: apply the plugin's failure policy.
    Failed,
    /// (Headers only.) The filter goes on once the body is in (its `request_body` or
    /// `response_body` callback gets it): at most this many bytes, more is answered 413
    /// (a request) or 500 (a response).
    WaitForBody(usize),
}

/// What a filter did with a chunk of a streamed body.
pub enum DataVerdict {
    /// Pass these bytes on (what the filter held back so far, with the chunk, as it left them).
    Pass(bytes::Bytes),
    /// Pass these bytes on; the body does not end with them after all: the filter ends it
    /// with trailers of its own (its trailers callback adds them).
    PassOpen(bytes::Bytes),
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

/// Whether a request is gRPC, as Envoy tells (`content-type: application/grpc`, alone or
/// followed by `+` or `;`).
pub fn is_grpc_request(headers: &Headers) -> bool {
    headers.get(b"content-type").is_some_and(|t| {
        t.strip_prefix(b"application/grpc").is_some_and(|rest| rest.is_empty() || rest[0] == b'+' || rest[0] == b';')
    })
}

/// Envoy's (and gRPC's) mapping of an HTTP status to a gRPC status
/// (`Grpc::Utility::httpToGrpcStatus`).
pub fn grpc_status_of_http(status: u16) -> u32 {
    match status {
        400 => 13,             // INTERNAL
        401 => 16,             // UNAUTHENTICATED
        403 => 7,              // PERMISSION_DENIED
        404 => 12,             // UNIMPLEMENTED
        429 | 502..=504 => 14, // UNAVAILABLE
        _ => 2,                // UNKNOWN
    }
}

/// Turns a local reply to a gRPC request into a gRPC one, as Envoy does: HTTP 200,
/// `content-type: application/grpc`, the gRPC status (the one given, else derived from the
/// HTTP status) and the body as `grpc-message`, no body (trailers-only).
pub fn make_grpc_reply(headers: &mut Headers, body: &mut Bytes, grpc_status: Option<u32>) {
    let status = crate::http::convert::status(headers).as_u16();
    let grpc = grpc_status.unwrap_or_else(|| grpc_status_of_http(status));
    headers.replace(b":status", b"200");
    headers.remove(b"content-length");
    headers.replace(b"content-type", b"application/grpc");
    headers.replace(b"grpc-status", grpc.to_string().as_bytes());
    if !body.is_empty() {
        headers.replace(b"grpc-message", percent_encode_grpc(body).as_bytes());
    }
    *body = Bytes::new();
}

/// gRPC's percent-encoding of `grpc-message`: printable ASCII but `%` as it is, the rest
/// `%XX`.
fn percent_encode_grpc(text: &[u8]) -> String {
    let mut out = String::with_capacity(text.len());
    for &b in text {
        if (0x20..=0x7e).contains(&b) && b != b'%' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

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

/// The headers of a local reply carrying a plugin's `extra` headers, in Envoy's order: the
/// status, the plugin's headers, then the length and, unless the plugin gave one,
/// `content-type: text/plain`, if there is a body.
pub fn local_reply_headers(status: u16, extra: &Headers, body: &[u8]) -> Headers {
    let mut h = status_headers(status);
    for (k, v) in extra.iter() {
        h.add(k, v);
    }
    if !body.is_empty() {
        h.replace(b"content-length", body.len().to_string().as_bytes());
        if h.get(b"content-type").is_none() {
            h.add(b"content-type", b"text/plain");
        }
    }
    h
}
