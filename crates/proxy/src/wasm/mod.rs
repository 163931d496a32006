//! Plugins on a worker: their VMs, the embedder that answers them, and the glue that runs
//! them as HTTP filters, network filters, access loggers and services.

pub mod access_logger;
pub mod budget;
pub mod embedder;
pub mod http_filter;
pub mod instance;
pub mod meter;
pub mod network_filter;
pub mod oci;
pub mod plugin;
pub mod plugin_settings;
pub mod recycle;
pub mod registry;
pub mod remote;
pub mod status;
