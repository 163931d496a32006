//! The data each VM's store carries: contexts, stream data, callout bookkeeping.

use rustc_hash::{FxHashMap as HashMap, FxHashSet as HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use wasmproxy_abi::{AbiVersion, BufferType, MapType, Status};
use wasmtime::{Memory, ResourceLimiter, TypedFunc};

use crate::embedder::{Embedder, HttpCallResponse, StreamAction};
use crate::headers::Headers;
use crate::plugin::{PluginConfig, VmConfig};
use crate::shared::{Metric, SharedState};

/// What a context is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContextKind {
    /// A root context: one per plugin per VM.
    Root,
    /// An HTTP stream.
    Http,
    /// A TCP connection (network filter).
    Tcp,
}

/// The data of one stream that a plugin can see and change, moved in by the proxy before
/// a callback and taken back after it. `None` means "not available in this phase", which
/// plugins see as Envoy's status for that case.
#[derive(Debug, Default)]
pub struct StreamData {
    /// Request headers (pseudo-headers `:method`, `:path`, `:authority`, `:scheme` first).
    pub request_headers: Option<Headers>,
    /// Request trailers.
    pub request_trailers: Option<Headers>,
    /// Response headers (`:status` first).
    pub response_headers: Option<Headers>,
    /// Response trailers.
    pub response_trailers: Option<Headers>,
    /// The request body seen so far (buffered while the plugin pauses).
    pub request_body: Option<Vec<u8>>,
    /// The response body seen so far.
    pub response_body: Option<Vec<u8>>,
    /// TCP bytes from downstream.
    pub downstream_data: Option<Vec<u8>>,
    /// TCP bytes from upstream.
    pub upstream_data: Option<Vec<u8>>,
    /// The current body callback carries the end of the stream (trailers may then be added).
    pub end_of_stream: bool,
    /// `proxy_on_log` is running: maps that are gone answer NOT_FOUND, not BAD_ARGUMENT.
    pub access_log_phase: bool,
}

pub(crate) struct ContextData {
    pub(crate) kind: ContextKind,
    pub(crate) root: u32,
    pub(crate) plugin: Arc<PluginConfig>,
    pub(crate) log_prefix: Arc<str>,
    pub(crate) stream: StreamData,
    /// Set when the current callback sent a local reply (it then stops the filter).
    pub(crate) local_response_sent: bool,
}

/// Data valid only while one callback runs (the callout being delivered, the configuration
/// being applied).
#[derive(Default)]
pub(crate) struct CallData {
    pub(crate) configuring: Option<Arc<PluginConfig>>,
    pub(crate) http_call_response: Option<HttpCallResponse>,
    pub(crate) grpc_initial_metadata: Option<Headers>,
    pub(crate) grpc_trailing_metadata: Option<Headers>,
    pub(crate) grpc_message: Option<Vec<u8>>,
    pub(crate) foreign_args: Option<Vec<u8>>,
    pub(crate) status: (u32, String),
}

pub(crate) struct GrpcStreamState {
    pub(crate) root: u32,
    pub(crate) local_closed: bool,
    pub(crate) remote_closed: bool,
}

/// Caps one VM's memory and records that the cap was hit.
pub(crate) struct VmLimits {
    pub(crate) memory_limit: usize,
    pub(crate) memory_limit_hit: bool,
}

impl ResourceLimiter for VmLimits {
    fn memory_growing(&mut self, current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        if desired > self.memory_limit {
            self.memory_limit_hit = true;
            wasmtime::bail!(
                "memory limit exceeded: the plugin asked to grow its memory from {current} to {desired} bytes, over the cap of {} bytes",
                self.memory_limit
            );
        }
        Ok(true)
    }

    fn table_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        Ok(desired <= 1_000_000)
    }
}

/// Callout token kinds live in the low 2 bits, as in cpp-host, so tokens never collide.
pub(crate) const CALLOUT_INCREMENT: u32 = 4;
pub(crate) const HTTP_CALL_KIND: u32 = 0;
pub(crate) const GRPC_CALL_KIND: u32 = 1;
pub(crate) const GRPC_STREAM_KIND: u32 = 2;

/// The store data of one VM.
pub struct VmState {
    pub(crate) limits: VmLimits,
    pub(crate) memory: Option<Memory>,
    pub(crate) alloc: Option<TypedFunc<i32, i32>>,
    /// Which export `alloc` is (`malloc` or `proxy_on_memory_allocate`), for trace logs.
    pub(crate) alloc_export: &'static str,
    /// Every call between host and VM is logged (the level was trace when the VM was made).
    pub(crate) traced: bool,
    /// Start-up or guest allocation: only logging and WASI may be called.
    pub(crate) restricted: bool,
    pub(crate) abi: AbiVersion,
    pub(crate) vm: Arc<VmConfig>,
    pub(crate) contexts: HashMap<u32, ContextData>,
    pub(crate) next_context_id: u32,
    pub(crate) effective: u32,
    pub(crate) call: CallData,
    pub(crate) actions: Vec<(u32, StreamAction)>,
    pub(crate) embedder: Box<dyn Embedder>,
    pub(crate) shared: Arc<SharedState>,
    pub(crate) metrics: HashMap<u32, Metric>,
    pub(crate) next_metric_id: [u32; 3],
    pub(crate) next_callout: [u32; 3],
    /// Live callouts: token → root context that gets the answer.
    pub(crate) http_calls: HashMap<u32, u32>,
    pub(crate) grpc_calls: HashMap<u32, u32>,
    pub(crate) grpc_streams: HashMap<u32, GrpcStreamState>,
    /// Root contexts whose `on_done` returned false, waiting for `proxy_done`.
    pub(crate) pending_done: HashSet<u32>,
    /// Root contexts that called `proxy_done`: deleted once the callback returns.
    pub(crate) done_roots: Vec<u32>,
    pub(crate) exit_code: Option<i32>,
    pub(crate) scratch: Vec<u8>,
    /// Tick timers by root context: (period, when the next tick is due).
    pub(crate) timers: HashMap<u32, (Duration, Instant)>,
}

impl VmState {
    pub(crate) fn new(
        abi: AbiVersion,
        vm: Arc<VmConfig>,
        embedder: Box<dyn Embedder>,
        shared: Arc<SharedState>,
        memory_limit: usize,
    ) -> Self {
        VmState {
            limits: VmLimits { memory_limit, memory_limit_hit: false },
            memory: None,
            alloc: None,
            alloc_export: "",
            traced: false,
            restricted: true,
            abi,
            vm,
            contexts: HashMap::default(),
            next_context_id: 1,
            effective: 0,
            call: CallData::default(),
            actions: Vec::new(),
            embedder,
            shared,
            metrics: HashMap::default(),
            // As in Envoy, the first id of each kind is its kind plus one increment (4, 5, 6).
            next_metric_id: [4, 5, 6],
            next_callout: [
                HTTP_CALL_KIND + CALLOUT_INCREMENT,
                GRPC_CALL_KIND + CALLOUT_INCREMENT,
                GRPC_STREAM_KIND + CALLOUT_INCREMENT,
            ],
            http_calls: HashMap::default(),
            grpc_calls: HashMap::default(),
            grpc_streams: HashMap::default(),
            pending_done: HashSet::default(),
            done_roots: Vec::new(),
            exit_code: None,
            scratch: Vec::new(),
            timers: HashMap::default(),
        }
    }

    /// A fresh context id: the smallest unused one from the counter on, never 0.
    pub(crate) fn alloc_context_id(&mut self) -> u32 {
        loop {
            let id = self.next_context_id;
            self.next_context_id = self.next_context_id.wrapping_add(1).max(1);
            if !self.contexts.contains_key(&id) {
                return id;
            }
        }
    }

    pub(crate) fn next_callout_token(&mut self, kind: u32) -> u32 {
        let slot = &mut self.next_callout[kind as usize];
        let token = *slot;
        *slot = slot.wrapping_add(CALLOUT_INCREMENT);
        token
    }

    /// Gives back a token the embedder refused, so the next call gets it (as Envoy, which
    /// checks the cluster before taking a token).
    pub(crate) fn release_callout_token(&mut self, kind: u32, token: u32) {
        self.next_callout[kind as usize] = token;
    }

    /// The context hostcalls act on: the one `proxy_set_effective_context` chose, else the callee.
    pub(crate) fn effective_context(&mut self) -> Option<&mut ContextData> {
        self.contexts.get_mut(&self.effective)
    }

    /// The root context of the effective context (callouts are issued on it, as in cpp-host).
    pub(crate) fn effective_root(&self) -> u32 {
        self.contexts.get(&self.effective).map(|c| c.root).unwrap_or(self.effective)
    }

    /// A header map for reading. `Err` is the status for "not available now".
    pub(crate) fn map_for_read(&mut self, map: u32) -> Result<Option<&Headers>, Status> {
        let Some(map) = MapType::from_u32(map) else {
            return Ok(None);
        };
        match map {
            MapType::GrpcReceiveInitialMetadata => return Ok(self.call.grpc_initial_metadata.as_ref()),
            MapType::GrpcReceiveTrailingMetadata => return Ok(self.call.grpc_trailing_metadata.as_ref()),
            MapType::HttpCallResponseHeaders => return Ok(self.call.http_call_response.as_ref().map(|r| &r.headers)),
            MapType::HttpCallResponseTrailers => {
                return Ok(self.call.http_call_response.as_ref().map(|r| &r.trailers).filter(|t| !t.is_empty()));
            }
            _ => {}
        }
        let Some(ctx) = self.contexts.get(&self.effective) else {
            return Ok(None);
        };
        let s = &ctx.stream;
        Ok(match map {
            MapType::HttpRequestHeaders => s.request_headers.as_ref(),
            MapType::HttpRequestTrailers if s.access_log_phase => None,
            MapType::HttpRequestTrailers => s.request_trailers.as_ref(),
            MapType::HttpResponseHeaders => s.response_headers.as_ref(),
            MapType::HttpResponseTrailers => s.response_trailers.as_ref(),
            _ => None,
        })
    }

    /// A header map for changing (Envoy's `getMap`): only the stream's own four maps, and
    /// trailers are created when asked for at the end of a buffered body.
    pub(crate) fn map_for_write(&mut self, map: u32) -> Option<&mut Headers> {
        let map = MapType::from_u32(map)?;
        let ctx = self.contexts.get_mut(&self.effective)?;
        let s = &mut ctx.stream;
        if s.access_log_phase {
            return None;
        }
        match map {
            MapType::HttpRequestHeaders => s.request_headers.as_mut(),
            MapType::HttpRequestTrailers => {
                if s.request_trailers.is_none() && s.request_body.is_some() && s.end_of_stream {
                    s.request_trailers = Some(Headers::new());
                }
                s.request_trailers.as_mut()
            }
            MapType::HttpResponseHeaders => s.response_headers.as_mut(),
            MapType::HttpResponseTrailers => {
                if s.response_trailers.is_none() && s.response_body.is_some() && s.end_of_stream {
                    s.response_trailers = Some(Headers::new());
                }
                s.response_trailers.as_mut()
            }
            _ => None,
        }
    }

    /// A buffer for reading: `Err(NotFound)` where Envoy has none; stream buffers that are
    /// not there read as empty, as in Envoy.
    pub(crate) fn buffer_for_read(&self, buffer: u32) -> Result<&[u8], Status> {
        let buffer = BufferType::from_u32(buffer).ok_or(Status::NotFound)?;
        let stream = self.contexts.get(&self.effective).map(|c| &c.stream);
        fn body(b: Option<&Vec<u8>>) -> Result<&[u8], Status> {
            Ok(b.map(|v| v.as_slice()).unwrap_or(&[]))
        }
        match buffer {
            BufferType::HttpRequestBody => body(stream.and_then(|s| s.request_body.as_ref())),
            BufferType::HttpResponseBody => body(stream.and_then(|s| s.response_body.as_ref())),
            BufferType::DownstreamData => body(stream.and_then(|s| s.downstream_data.as_ref())),
            BufferType::UpstreamData => body(stream.and_then(|s| s.upstream_data.as_ref())),
            BufferType::HttpCallResponseBody => {
                self.call.http_call_response.as_ref().map(|r| r.body.as_slice()).ok_or(Status::NotFound)
            }
            BufferType::GrpcReceiveBuffer => body(self.call.grpc_message.as_ref()),
            BufferType::VmConfiguration => Ok(&self.vm.configuration),
            BufferType::PluginConfiguration => {
                self.call.configuring.as_ref().map(|p| p.configuration.as_slice()).ok_or(Status::NotFound)
            }
            BufferType::ForeignFunctionArguments => body(self.call.foreign_args.as_ref()),
        }
    }

    /// A buffer for changing: only the stream's bodies and data while they are there.
    pub(crate) fn buffer_for_write(&mut self, buffer: u32) -> Option<&mut Vec<u8>> {
        let buffer = BufferType::from_u32(buffer)?;
        let s = &mut self.contexts.get_mut(&self.effective)?.stream;
        match buffer {
            BufferType::HttpRequestBody => s.request_body.as_mut(),
            BufferType::HttpResponseBody => s.response_body.as_mut(),
            BufferType::DownstreamData => s.downstream_data.as_mut(),
            BufferType::UpstreamData => s.upstream_data.as_mut(),
            _ => None,
        }
    }
}
