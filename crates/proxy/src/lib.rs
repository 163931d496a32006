//! The data plane: worker threads, listeners, the HTTP connection manager, routes,
//! clusters and the Wasm HTTP filter, driven by a [`wasmproxy_config::Bootstrap`].
//!
//! Each worker is a thread with its own single-threaded tokio runtime, its own
//! `SO_REUSEPORT` listener sockets, its own upstream clients and its own instance of
//! every plugin VM: nothing is locked per request.

mod access_log;
mod admin;
mod body;
pub mod clock;
mod cluster;
mod convert;
mod downstream_io;
mod exec;
mod grpc;
mod hcm;
mod listener;
mod pool;
mod proto;
pub mod request_head;
mod routing;
mod server;
mod stats;
mod stream_info;
mod tcp;
pub mod tunables;
mod wasm_filter;
mod worker;
mod xds;

pub use admin::{LogControl, LogControlError};
pub use server::{RunningServer, Server, ServerError, ServerOptions, Stopper};
