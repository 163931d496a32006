//! The Proxy-Wasm vocabulary: status codes, enums, the pairs codec, property encodings, limits.
//!
//! Nothing here knows about wasmtime, sockets or threads; it is what a host and a
//! guest agree on, as written in the Proxy-Wasm spec (ABI 0.1.0, 0.2.0, 0.2.1) and as
//! Envoy implements it.

mod enums;
pub mod limits;
pub mod pairs;
pub mod property;
pub mod wasi;

pub use enums::*;
