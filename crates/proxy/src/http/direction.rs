//! The two directions of an HTTP stream, and everything that differs between them: the
//! order the filters see it in, where its body and trailers sit in a plugin's stream
//! data, the callbacks that deliver them, and what is answered when a filter holds too much.

use wasmproxy_abi::{FilterStatus, StreamType};
use wasmproxy_host::{Headers, StreamData, VmError, WasmVm};

/// The request (decoded, in filter order) or the response (encoded, in reverse).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// From the client to the upstream.
    Request,
    /// From the upstream to the client.
    Response,
}

impl Direction {
    /// The Proxy-Wasm stream type (what `proxy_continue_stream` names).
    pub fn stream_type(self) -> StreamType {
        match self {
            Direction::Request => StreamType::HttpRequest,
            Direction::Response => StreamType::HttpResponse,
        }
    }

    /// The indices of `n` filters in the order this direction passes them.
    pub fn order(self, n: usize) -> impl Iterator<Item = usize> {
        (0..n).map(move |i| if self == Direction::Request { i } else { n - 1 - i })
    }

    /// 0 for the request, 1 for the response: an index into per-direction pairs.
    pub fn index(self) -> usize {
        usize::from(self == Direction::Response)
    }

    /// Where a plugin's stream data keeps this direction's body.
    pub fn body(self, data: &mut StreamData) -> &mut Option<Vec<u8>> {
        match self {
            Direction::Request => &mut data.request_body,
            Direction::Response => &mut data.response_body,
        }
    }

    /// Where a plugin's stream data keeps this direction's trailers.
    pub fn trailers(self, data: &mut StreamData) -> &mut Option<Headers> {
        match self {
            Direction::Request => &mut data.request_trailers,
            Direction::Response => &mut data.response_trailers,
        }
    }

    /// The body callback; true if the plugin stopped.
    pub fn on_body(self, vm: &mut WasmVm, ctx: u32, eos: bool) -> Result<bool, VmError> {
        let status = match self {
            Direction::Request => vm.on_request_body(ctx, eos),
            Direction::Response => vm.on_response_body(ctx, eos),
        };
        status.map(|s| s.is_stop())
    }

    /// The trailers callback; true if the plugin stopped.
    pub fn on_trailers(self, vm: &mut WasmVm, ctx: u32) -> Result<bool, VmError> {
        let status = match self {
            Direction::Request => vm.on_request_trailers(ctx),
            Direction::Response => vm.on_response_trailers(ctx),
        };
        status.map(|s| s == FilterStatus::StopIteration)
    }

    /// Envoy's answer when a filter holds more of this body than the buffer limit: 413 for
    /// a request, 500 for a response.
    pub fn over_limit(self) -> (u16, &'static str) {
        match self {
            Direction::Request => (413, "Payload Too Large"),
            Direction::Response => (500, "Internal Server Error"),
        }
    }
}
