//! `envoy.filters.http.grpc_http1_bridge`: a gRPC call from an HTTP/1 client (which cannot
//! read trailers) answered whole, the call's status and message moved from the trailers into
//! the headers, 503 for a status other than OK, with the body's length.

use bytes::Bytes;
use wasmproxy_host::Headers;

use crate::http::reply::{Verdict, is_grpc_request};
use crate::stream_info::StreamRef;

/// One stream through the bridge.
pub struct BridgeStream {
    info: StreamRef,
    /// A gRPC request from an HTTP/1 client: its response is answered whole.
    bridging: bool,
}

impl BridgeStream {
    /// A stream of the connection `info` tells the protocol of.
    pub fn new(info: &StreamRef) -> BridgeStream {
        BridgeStream { info: info.clone(), bridging: false }
    }

    /// The request headers: a gRPC request over HTTP/1 is bridged.
    pub fn request_headers(&mut self, headers: &Headers) -> Verdict {
        let http1 = self.info.borrow().protocol != "HTTP/2";
        self.bridging = http1 && headers.get(b":path").is_some() && is_grpc_request(headers);
        Verdict::Continue
    }

    /// The response headers: a bridged response with a body waits for all of it (as much as
    /// the connection's buffer allows).
    pub fn response_headers(&mut self, eos: bool) -> Verdict {
        if self.bridging && !eos { Verdict::WaitForBody(usize::MAX) } else { Verdict::Continue }
    }

    /// The whole response: the trailers' `grpc-status` (503 unless it is 0) and
    /// `grpc-message` go into the headers, with the body's length.
    pub fn response_body(&mut self, headers: &mut Headers, body: &Bytes, trailers: Option<&Headers>) -> Verdict {
        let Some(trailers) = trailers else { return Verdict::Continue };
        if let Some(status) = trailers.get(b"grpc-status") {
            if status != b"0" {
                headers.replace(b":status", b"503");
            }
            headers.replace(b"grpc-status", status);
        }
        if let Some(message) = trailers.get(b"grpc-message") {
            headers.replace(b"grpc-message", message);
        }
        headers.replace(b"content-length", body.len().to_string().as_bytes());
        Verdict::Continue
    }
}
