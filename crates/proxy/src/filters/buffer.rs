//! `envoy.filters.http.buffer`, as Envoy 1.40's: a request with a body waits for all of it
//! (at most `max_request_bytes`, else 413) before the filters after this one and the
//! upstream get it, with a `content-length` if it had none. A route's `BufferPerRoute` sets
//! its own limit or turns it off.

use wasmproxy_host::Headers;

use crate::filters::{RouteConfig, StreamRoute};
use crate::http::reply::Verdict;

/// One stream through the filter: the most bytes it waits for, if it buffers at all.
pub struct BufferStream {
    limit: Option<u32>,
}

impl BufferStream {
    /// A stream on `route` through the filter `name` whose own limit is `max`.
    pub fn new(name: &str, max: u32, route: Option<StreamRoute<'_>>) -> BufferStream {
        let limit = route
            .and_then(|r| {
                r.filters.configs(name).find_map(|c| match c {
                    RouteConfig::Buffer(limit) => Some(*limit),
                    _ => None,
                })
            })
            .unwrap_or(Some(max));
        BufferStream { limit }
    }

    /// The request headers: a request with a body waits for it.
    pub fn request_headers(&self, eos: bool) -> Verdict {
        match self.limit {
            Some(limit) if !eos => Verdict::WaitForBody(limit as usize),
            _ => Verdict::Continue,
        }
    }

    /// The whole body is in: the headers say how long it is, unless they did.
    pub fn request_body(&self, headers: &mut Headers, body: &[u8]) -> Verdict {
        if headers.get(b"content-length").is_none() {
            headers.add(b"content-length", body.len().to_string().as_bytes());
        }
        Verdict::Continue
    }
}
