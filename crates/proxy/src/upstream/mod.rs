//! Upstreams: clusters and their endpoints, connection pools, the gRPC client for
//! plugins' callouts, and why an upstream request failed.

pub mod breakers;
pub mod cluster;
pub mod error;
pub mod grpc;
pub mod pool;
