//! HTTP as the data plane handles it: bodies, conversions between hyper's types and
//! Proxy-Wasm header maps, request-head checks, the downstream connection and the
//! transport under it, and the replies and verdicts filters deal in.

pub(crate) mod body;
pub(crate) mod convert;
pub(crate) mod direction;
pub(crate) mod downstream;
pub(crate) mod exec;
pub(crate) mod reply;
pub mod request_head;
pub(crate) mod transport;
