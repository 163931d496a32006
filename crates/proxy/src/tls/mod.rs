//! TLS with rustls: the downstream session a filter chain terminates, and the TLS
//! inspector that reads a ClientHello before a filter chain is picked.

pub(crate) mod downstream;
pub(crate) mod inspector;
