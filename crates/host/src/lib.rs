//! A Proxy-Wasm host on wasmtime that any Rust proxy can embed.
//!
//! The pieces, from the outside in:
//! - [`WasmEngine`]: one per process. The wasmtime engine (pooling allocator, epoch
//!   interruption, a memory cap per VM), the linker with every import, the on-disk cache
//!   of compiled modules, and the process-wide [`SharedState`] (shared data, queues, metrics).
//!   Under [`Compiler::Tiered`] a module not in the cache gets baseline code at once and
//!   optimized code later ([`WasmEngine::on_optimized`], [`PluginModule::optimized`]).
//! - [`PluginModule`]: a compiled, type-checked module, shared by every thread.
//! - [`WasmVm`]: one instance of a module, owned by one thread. It keeps the Proxy-Wasm
//!   contexts (root contexts per plugin, one context per stream) and offers one method
//!   per `proxy_on_*` callback.
//! - [`Embedder`]: the trait the proxy implements to answer what only it knows
//!   (properties, callouts, timers, where to deliver queue notifications).
//!
//! Stream data (headers, bodies, trailers) is moved into a context before a callback
//! and taken back after it ([`StreamData`]); what the plugin asks the stream to do
//! (continue, send a local reply, close) comes back as [`StreamAction`]s, applied by
//! the proxy after the call returns, as Envoy defers them.

mod embedder;
mod engine;
mod error;
mod headers;
mod imports;
mod inspect;
mod memory;
mod module;
mod plugin;
pub mod shared;
mod state;
mod trace;
mod vm;

pub use embedder::{
    Embedder, GrpcCallRequest, GrpcStreamRequest, HttpCallRequest, HttpCallResponse, LogRecord, QueueNotifier,
    StreamAction,
};
pub use engine::{Compiler, EngineConfig, OptimizedListener, WasmEngine};
pub use error::{LoadError, VmError, VmFailure, VmFailureKind};
pub use headers::Headers;
pub use inspect::{ModuleReport, inspect};
pub use module::{ModuleSource, PluginModule};
pub use plugin::{PluginConfig, VmConfig};
pub use shared::SharedState;
pub use state::{ContextKind, StreamData};
pub use vm::{CallbackTime, WasmVm};
pub use wasmproxy_abi as abi;
