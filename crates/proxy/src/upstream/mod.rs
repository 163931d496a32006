//! Upstreams: clusters and their endpoints, connection pools, the gRPC client for
//! plugins' callouts, and why an upstream request failed.

pub mod balancer;
pub mod breakers;
pub mod cluster;
pub mod error;
pub mod grpc;
pub mod hashing;
pub mod health;
pub mod health_check;
pub mod outlier;
pub mod pool;
pub mod registry;
pub mod runner;
