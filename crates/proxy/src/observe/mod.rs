//! What the data plane reports: Envoy's stats under Envoy's names, and access logs.

pub mod access_log;
pub mod stats;
