//! TLS with rustls: the session over a TCP connection, either side (`session.rs`), and
//! the bytes around rustls's state machine (`records.rs`); a filter chain's server
//! settings (`downstream.rs`); a cluster's client settings and how it checks the
//! upstream's certificate (`upstream.rs`); PEM files and versions both read (`pem.rs`);
//! TLS 1.3's key schedule on a faster HKDF (`hkdf.rs`); what a certificate says
//! (`certificate.rs`); the TLS inspector that reads a ClientHello before a filter chain is
//! picked (`inspector.rs`); session tickets sealed with configured keys (`tickets.rs`); how
//! a chain checks client certificates, against validation contexts that may change
//! (`validation.rs`); OCSP responses stapled to handshakes (`ocsp.rs`).

pub(crate) mod certificate;
pub(crate) mod downstream;
pub(crate) mod hkdf;
pub(crate) mod inspector;
pub(crate) mod ocsp;
pub(crate) mod pem;
pub(crate) mod records;
pub(crate) mod session;
pub(crate) mod tickets;
pub(crate) mod upstream;
pub(crate) mod validation;
