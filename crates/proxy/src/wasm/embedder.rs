//! The proxy's answers to a plugin VM on one worker: properties, callouts to this
//! worker's clusters, timers, queues, logs and foreign functions.

use rustc_hash::FxHashMap as HashMap;
use std::cell::{OnceCell, RefCell};
use std::rc::{Rc, Weak};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{Notify, mpsc};
use wasmproxy_abi::{LogLevel, Status};
use wasmproxy_host::{
    Embedder, GrpcCallRequest, GrpcStreamRequest, HttpCallRequest, HttpCallResponse, LogRecord, QueueNotifier,
    StreamData,
};

use crate::stream_info::filter_state::envoy_object;
use crate::stream_info::filter_state_key;
use crate::stream_info::node::NodeAttributes;
use crate::upstream::cluster::Clusters;
use crate::upstream::error::UpstreamError;
use crate::upstream::grpc;
use crate::wasm::instance::{PluginInstance, StreamsByContext};

/// What a VM's embedder shares with its instance (and with the embedder of a reloaded VM).
#[derive(Clone)]
pub(super) struct EmbedderParts {
    pub(super) clusters: Rc<Clusters>,
    pub(super) node: Rc<NodeAttributes>,
    pub(super) instance: Rc<OnceCell<Weak<PluginInstance>>>,
    pub(super) ticks: Rc<Notify>,
    pub(super) queue_tx: mpsc::UnboundedSender<(u32, u32)>,
    pub(super) streams: StreamsByContext,
}

impl EmbedderParts {
    pub(super) fn embedder(&self) -> WorkerEmbedder {
        WorkerEmbedder { parts: self.clone(), grpc: Rc::default() }
    }
}

/// The proxy's answers to one VM: callouts to this worker's clusters, timers, queues, logs.
pub(super) struct WorkerEmbedder {
    parts: EmbedderParts,
    /// Open gRPC callouts: the task, and for streams where the plugin's messages go.
    grpc: Rc<RefCell<HashMap<u32, GrpcCallout>>>,
}

/// One gRPC call or stream in flight.
struct GrpcCallout {
    task: tokio::task::AbortHandle,
    outgoing: Option<mpsc::UnboundedSender<Option<Vec<u8>>>>,
}

impl WorkerEmbedder {
    /// Where a callout's events go: this VM's `on_grpc_*` callbacks; the callout is
    /// forgotten once it closes.
    fn grpc_sink(&self, token: u32) -> grpc::Sink {
        let instance = self.parts.instance.get().cloned();
        let calls = self.grpc.clone();
        Rc::new(move |event| {
            // A call or stream is over once it closes; a unary call also with its answer.
            let mut open = calls.borrow_mut();
            let unary = open.get(&token).is_some_and(|c| c.outgoing.is_none());
            if matches!(event, grpc::Event::Close(..)) || unary && matches!(event, grpc::Event::Message(_)) {
                open.remove(&token);
            }
            drop(open);
            let Some(instance) = instance.as_ref().and_then(Weak::upgrade) else { return };
            instance.deliver(|vm| match event {
                grpc::Event::InitialMetadata(h) => vm.on_grpc_receive_initial_metadata(token, h),
                grpc::Event::Message(m) => vm.on_grpc_receive(token, m),
                grpc::Event::TrailingMetadata(h) => vm.on_grpc_receive_trailing_metadata(token, h),
                grpc::Event::Close(code, message) => vm.on_grpc_close(token, code, &message),
            });
        })
    }
}

impl Embedder for WorkerEmbedder {
    fn property_in_stream(
        &mut self,
        context_id: u32,
        path: &[&[u8]],
        data: Option<&StreamData>,
    ) -> Result<Vec<u8>, Status> {
        if let [b"xds", b"node", rest @ ..] = path {
            return self.parts.node.property(rest);
        }
        let streams = self.parts.streams.borrow();
        let stream = streams.get(&context_id).ok_or(Status::NotFound)?;
        stream.borrow().property(path, data)
    }

    fn set_property(&mut self, context_id: u32, path: &[u8], value: &[u8]) -> Status {
        match self.parts.streams.borrow().get(&context_id) {
            Some(stream) => {
                stream.borrow_mut().filter_state.insert(filter_state_key(path), Some(value.to_vec()));
                Status::Ok
            }
            None => Status::NotFound,
        }
    }

    fn log(&mut self, r: &LogRecord<'_>) {
        let (prefix, message) = (r.prefix, r.message);
        match r.level {
            LogLevel::Trace => tracing::trace!(target: "wasm", "wasm log{prefix}: {message}"),
            LogLevel::Debug => tracing::debug!(target: "wasm", "wasm log{prefix}: {message}"),
            LogLevel::Info => tracing::info!(target: "wasm", "wasm log{prefix}: {message}"),
            LogLevel::Warn => tracing::warn!(target: "wasm", "wasm log{prefix}: {message}"),
            LogLevel::Error => tracing::error!(target: "wasm", "wasm log{prefix}: {message}"),
            // `tracing` has no critical level: the field tells the log format (Envoy's `[critical]`).
            LogLevel::Critical => tracing::error!(target: "wasm", critical = true, "wasm log{prefix}: {message}"),
        }
    }

    /// Once per failure: what failed, in which VM and plugins, with the wasm backtrace
    /// (function names from the module's name section).
    fn vm_failed(&mut self, failure: &wasmproxy_host::VmFailure) {
        let (vm_id, plugins) = match self.parts.instance.get().and_then(Weak::upgrade) {
            Some(i) => {
                let names: Vec<String> =
                    i.rebuild.plugins.borrow().iter().flatten().map(|(p, _)| format!("{:?}", p.name)).collect();
                (i.rebuild.vm_config.vm_id.clone(), names.join(", "))
            }
            None => (String::new(), String::new()),
        };
        tracing::error!(target: "wasm", "Wasm VM {vm_id:?} (plugins {plugins}) failed: {failure}\n{}", failure.backtrace);
    }

    fn log_level(&self) -> LogLevel {
        if tracing::enabled!(target: "wasm", tracing::Level::TRACE) {
            LogLevel::Trace
        } else if tracing::enabled!(target: "wasm", tracing::Level::DEBUG) {
            LogLevel::Debug
        } else if tracing::enabled!(target: "wasm", tracing::Level::INFO) {
            LogLevel::Info
        } else if tracing::enabled!(target: "wasm", tracing::Level::WARN) {
            LogLevel::Warn
        } else {
            LogLevel::Error
        }
    }

    fn http_call(&mut self, request: HttpCallRequest) -> Result<(), Status> {
        let cluster = self.parts.clusters.get(&request.cluster).ok_or(Status::BadArgument)?;
        let instance = self.parts.instance.get().cloned();
        tokio::task::spawn_local(async move {
            // Envoy's async client goes through the router: the upstream learns the call is
            // internal and how long it may take, and failures come back as the router's
            // local replies (503, 504), not as no response.
            let mut headers = request.headers;
            headers.add(b"x-envoy-internal", b"true");
            if let Some(t) = request.timeout {
                headers.add(b"x-envoy-expected-rq-timeout-ms", t.as_millis().to_string().as_bytes());
            }
            let started = std::time::Instant::now();
            let result = cluster.send(&headers, Bytes::from(request.body), request.timeout, true).await;
            let response = match result {
                Ok(mut r) => {
                    let ms = started.elapsed().as_millis().to_string();
                    r.headers.add(b"x-envoy-upstream-service-time", ms.as_bytes());
                    Some(HttpCallResponse { headers: r.headers, body: r.body.to_vec(), trailers: r.trailers })
                }
                Err(UpstreamError::ResponseTooLarge) => {
                    tracing::debug!("http_call to {}: the response is too large", request.cluster);
                    None
                }
                Err(e) => {
                    tracing::debug!("http_call to {} failed: {e:?}", request.cluster);
                    let (headers, body) = crate::upstream::error::upstream_error_reply(&e, false);
                    Some(HttpCallResponse { headers, body: body.to_vec(), trailers: wasmproxy_host::Headers::new() })
                }
            };
            if let Some(instance) = instance.and_then(|w| w.upgrade()) {
                instance.deliver(|vm| vm.on_http_call_response(request.token, response));
            }
        });
        Ok(())
    }

    fn grpc_call(&mut self, request: GrpcCallRequest) -> Result<(), Status> {
        let (cluster, authority) =
            grpc::target(&self.parts.clusters, &request.service_config).ok_or(Status::ParseFailure)?;
        let headers = grpc::request_headers(
            &authority,
            &request.service,
            &request.method,
            &request.initial_metadata,
            request.timeout,
        );
        let sink = self.grpc_sink(request.token);
        let task = tokio::task::spawn_local(grpc::unary(cluster, headers, request.message, request.timeout, sink));
        self.grpc.borrow_mut().insert(request.token, GrpcCallout { task: task.abort_handle(), outgoing: None });
        Ok(())
    }

    fn grpc_stream(&mut self, request: GrpcStreamRequest) -> Result<(), Status> {
        let (cluster, authority) =
            grpc::target(&self.parts.clusters, &request.service_config).ok_or(Status::ParseFailure)?;
        let headers =
            grpc::request_headers(&authority, &request.service, &request.method, &request.initial_metadata, None);
        let (tx, rx) = mpsc::unbounded_channel();
        let sink = self.grpc_sink(request.token);
        let task = tokio::task::spawn_local(grpc::stream(cluster, headers, rx, sink));
        self.grpc.borrow_mut().insert(request.token, GrpcCallout { task: task.abort_handle(), outgoing: Some(tx) });
        Ok(())
    }

    fn grpc_send(&mut self, token: u32, message: &[u8], end_of_stream: bool) {
        if let Some(GrpcCallout { outgoing: Some(tx), .. }) = self.grpc.borrow().get(&token) {
            let _ = tx.send(Some(message.to_vec()));
            if end_of_stream {
                let _ = tx.send(None);
            }
        }
    }

    fn grpc_cancel(&mut self, token: u32) {
        if let Some(callout) = self.grpc.borrow_mut().remove(&token) {
            callout.task.abort();
        }
    }

    fn grpc_close(&mut self, token: u32) {
        let mut calls = self.grpc.borrow_mut();
        match calls.get(&token) {
            // A stream is half-closed: the answer still comes.
            Some(GrpcCallout { outgoing: Some(tx), .. }) => {
                let _ = tx.send(None);
            }
            Some(_) => {
                if let Some(call) = calls.remove(&token) {
                    call.task.abort();
                }
            }
            None => {}
        }
    }

    /// Envoy's foreign functions beyond `compress` and `uncompress` (which the host does).
    fn foreign_function(&mut self, context_id: u32, name: &str, args: &[u8]) -> Result<Vec<u8>, Status> {
        let field = |number: u64| -> Result<Vec<u8>, Status> {
            let fields = crate::proto::length_delimited_fields(args).ok_or(Status::BadArgument)?;
            Ok(fields.iter().find(|(n, _)| *n == number).map(|(_, v)| v.to_vec()).unwrap_or_default())
        };
        match name {
            // The router picks the route from the headers the filters leave, so there is
            // no cached route to clear.
            "clear_route_cache" => Ok(Vec::new()),
            // `DeclarePropertyArguments`: a name may be declared once per stream.
            "declare_property" => {
                let property = field(1)?;
                let streams = self.parts.streams.borrow();
                let stream = streams.get(&context_id).ok_or(Status::NotFound)?;
                let mut info = stream.borrow_mut();
                if property.is_empty() || !info.declared.insert(property) {
                    return Err(Status::BadArgument);
                }
                Ok(Vec::new())
            }
            // `SetEnvoyFilterStateArguments { path, value, span }`: `path` must name one of
            // Envoy's filter-state object factories (NOT_FOUND otherwise), whose object is
            // kept under that key. The span is not looked at: state lives with the stream
            // (an HTTP request, or a TCP connection).
            "set_envoy_filter_state" => {
                let (key, value) = (field(1)?, field(2)?);
                let object = envoy_object(&key, &value)?;
                let streams = self.parts.streams.borrow();
                let stream = streams.get(&context_id).ok_or(Status::NotFound)?;
                stream.borrow_mut().filter_state.insert(key, object);
                Ok(Vec::new())
            }
            _ => Err(Status::NotFound),
        }
    }

    fn set_tick_period(&mut self, _root: u32, _period: Option<Duration>) {
        self.parts.ticks.notify_one();
    }

    fn queue_notifier(&mut self) -> Option<QueueNotifier> {
        let tx = self.parts.queue_tx.clone();
        Some(Arc::new(move |root, queue| {
            let _ = tx.send((root, queue));
        }))
    }
}
