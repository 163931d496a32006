//! HTTP as the data plane handles it: bodies, conversions between hyper's types and
//! Proxy-Wasm header maps, request-head checks, the downstream socket, and the replies
//! and verdicts filters deal in.

pub mod body;
pub mod convert;
pub mod downstream;
pub mod exec;
pub mod reply;
pub mod request_head;
