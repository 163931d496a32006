//! The trait a proxy implements to host plugins, and the values that cross it.

use std::sync::Arc;
use std::time::Duration;

use wasmproxy_abi::{LogLevel, Status, StreamType};

use crate::{Headers, VmFailure};

/// One log line from a plugin (`proxy_log`, or WASI stdout/stderr).
#[derive(Debug)]
pub struct LogRecord<'a> {
    /// The level the plugin asked for (stdout is Info, stderr Error).
    pub level: LogLevel,
    /// The message.
    pub message: &'a str,
    /// Envoy's prefix: `" <plugin name> <root_id> <vm_id>"` for stream contexts and
    /// `" <root_id> <vm_id>"` for root contexts (parts that are empty left out).
    pub prefix: &'a str,
    /// The context that logged.
    pub context_id: u32,
}

/// An outbound HTTP call asked for by `proxy_http_call`.
#[derive(Debug, Clone)]
pub struct HttpCallRequest {
    /// The token the plugin will see in `proxy_on_http_call_response`.
    pub token: u32,
    /// The root context that gets the response.
    pub root_context_id: u32,
    /// The upstream: an Envoy cluster name.
    pub cluster: String,
    /// Request headers, `:method`, `:path` and `:authority` included.
    pub headers: Headers,
    /// Request body (empty for none).
    pub body: Vec<u8>,
    /// Request trailers.
    pub trailers: Headers,
    /// The timeout; `None` for none.
    pub timeout: Option<Duration>,
}

/// What came back from an HTTP call; `None` in [`crate::WasmVm::on_http_call_response`] is a failure.
#[derive(Debug, Clone, Default)]
pub struct HttpCallResponse {
    /// Response headers (`:status` included).
    pub headers: Headers,
    /// Response body.
    pub body: Vec<u8>,
    /// Response trailers.
    pub trailers: Headers,
}

/// A unary gRPC call asked for by `proxy_grpc_call`.
#[derive(Debug, Clone)]
pub struct GrpcCallRequest {
    /// The token of this call.
    pub token: u32,
    /// The root context that gets the callbacks.
    pub root_context_id: u32,
    /// The `upstream` argument: a serialized `GrpcService` or a cluster name.
    pub service_config: Vec<u8>,
    /// The gRPC service name.
    pub service: String,
    /// The method name.
    pub method: String,
    /// Initial metadata.
    pub initial_metadata: Headers,
    /// The request message (serialized protobuf).
    pub message: Vec<u8>,
    /// The timeout; `None` for none.
    pub timeout: Option<Duration>,
}

/// A gRPC stream asked for by `proxy_grpc_stream`.
#[derive(Debug, Clone)]
pub struct GrpcStreamRequest {
    /// The token of this stream.
    pub token: u32,
    /// The root context that gets the callbacks.
    pub root_context_id: u32,
    /// The `upstream` argument: a serialized `GrpcService` or a cluster name.
    pub service_config: Vec<u8>,
    /// The gRPC service name.
    pub service: String,
    /// The method name.
    pub method: String,
    /// Initial metadata.
    pub initial_metadata: Headers,
}

/// Something a plugin asked a stream to do; the proxy applies it after the callback returns.
#[derive(Debug, Clone, PartialEq)]
pub enum StreamAction {
    /// `proxy_continue_stream` (or 0.1.0 `proxy_continue_request/response`).
    Continue(StreamType),
    /// `proxy_close_stream`: reset an HTTP stream (details `wasm_close_stream`) or close a connection.
    Close(StreamType),
    /// `proxy_send_local_response`.
    SendLocalResponse {
        /// The HTTP status.
        status: u32,
        /// Response code details, white space replaced by `_` as Envoy does.
        details: String,
        /// The body.
        body: Vec<u8>,
        /// Headers to add.
        headers: Headers,
        /// The gRPC status, if in 0..=16.
        grpc_status: Option<u32>,
    },
    /// `clear_route_cache` (0.1.0 hostcall or foreign function).
    ClearRouteCache,
}

/// Delivers `proxy_on_queue_ready` to the thread that registered a queue: called with
/// (root context id, queue id) from whichever thread enqueued.
pub type QueueNotifier = Arc<dyn Fn(u32, u32) + Send + Sync>;

/// What the proxy answers for one VM. Every method has a default that answers as a host
/// without that feature would (NOT_FOUND or BAD_ARGUMENT), so an embedder implements only
/// what it supports.
pub trait Embedder: 'static {
    /// A plugin logged a line. The default sends it to `tracing` (target `wasm`) as
    /// `wasm log<prefix>: <message>`.
    fn log(&mut self, record: &LogRecord<'_>) {
        let LogRecord { level, message, prefix, .. } = record;
        match level {
            LogLevel::Trace => tracing::trace!(target: "wasm", "wasm log{prefix}: {message}"),
            LogLevel::Debug => tracing::debug!(target: "wasm", "wasm log{prefix}: {message}"),
            LogLevel::Info => tracing::info!(target: "wasm", "wasm log{prefix}: {message}"),
            LogLevel::Warn => tracing::warn!(target: "wasm", "wasm log{prefix}: {message}"),
            LogLevel::Error => tracing::error!(target: "wasm", "wasm log{prefix}: {message}"),
            // `tracing` has no critical level: the field tells the log format (Envoy's `[critical]`).
            LogLevel::Critical => tracing::error!(target: "wasm", critical = true, "wasm log{prefix}: {message}"),
        }
    }

    /// The level answered to `proxy_get_log_level`.
    fn log_level(&self) -> LogLevel {
        LogLevel::Info
    }

    /// A property the host does not know itself (everything but `plugin_*`), encoded as
    /// Envoy encodes it. `path` is split into segments.
    fn property(&mut self, _context_id: u32, _path: &[&[u8]]) -> Result<Vec<u8>, Status> {
        Err(Status::NotFound)
    }

    /// [`Embedder::property`], with the stream data the context holds right now (its
    /// headers in the phases that have them): an embedder can read `request.*` and
    /// `response.*` from there instead of keeping copies. Defaults to `property`.
    fn property_in_stream(
        &mut self,
        context_id: u32,
        path: &[&[u8]],
        _stream: Option<&crate::StreamData>,
    ) -> Result<Vec<u8>, Status> {
        self.property(context_id, path)
    }

    /// `proxy_set_property`: Envoy stores `wasm.<path>` in the stream's filter state.
    fn set_property(&mut self, _context_id: u32, _path: &[u8], _value: &[u8]) -> Status {
        Status::NotFound
    }

    /// Starts an HTTP call. `Err(BadArgument)` for an unknown cluster, `Err(InternalFailure)`
    /// if it could not be sent. Deliver the answer with [`crate::WasmVm::on_http_call_response`].
    fn http_call(&mut self, _request: HttpCallRequest) -> Result<(), Status> {
        Err(Status::BadArgument)
    }

    /// Starts a unary gRPC call. Envoy answers `ParseFailure` for an unknown cluster.
    fn grpc_call(&mut self, _request: GrpcCallRequest) -> Result<(), Status> {
        Err(Status::ParseFailure)
    }

    /// Opens a gRPC stream.
    fn grpc_stream(&mut self, _request: GrpcStreamRequest) -> Result<(), Status> {
        Err(Status::ParseFailure)
    }

    /// Sends a message on an open gRPC stream.
    fn grpc_send(&mut self, _token: u32, _message: &[u8], _end_of_stream: bool) {}

    /// Cancels a gRPC call or resets a stream.
    fn grpc_cancel(&mut self, _token: u32) {}

    /// Half-closes a gRPC stream (or cancels a call).
    fn grpc_close(&mut self, _token: u32) {}

    /// A root context set its tick period (`None` stops the timer). Call
    /// [`crate::WasmVm::on_tick`] for that root context on each period.
    fn set_tick_period(&mut self, _root_context_id: u32, _period: Option<Duration>) {}

    /// A foreign function the host does not implement itself (it does `compress` and
    /// `uncompress`). `Err(NotFound)` for an unknown name.
    fn foreign_function(&mut self, _context_id: u32, _name: &str, _args: &[u8]) -> Result<Vec<u8>, Status> {
        Err(Status::NotFound)
    }

    /// How to reach this VM's thread when a queue it registered gets a message; `None`
    /// means notifications for this VM are dropped (the plugin can still dequeue).
    fn queue_notifier(&mut self) -> Option<QueueNotifier> {
        None
    }

    /// The VM failed: it runs no more callbacks. Called once, right when it happens.
    fn vm_failed(&mut self, failure: &VmFailure) {
        tracing::error!(target: "wasm", "Wasm VM failed: {failure}\n{}", failure.backtrace);
    }
}
