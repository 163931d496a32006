//! Envoy-style statistics for wasmproxy and its plugins.
//!
//! - [`histogram`]: circllhist's log-linear bins (two significant decimal digits), and the
//!   quantiles, bucket counts and sums Envoy computes from them.
//! - [`store`]: the registry: counters, gauges and histograms by name, each with Envoy's
//!   tag-extracted name and tags; counters and histograms keep one cell per thread, so the
//!   request path takes no shared lock, and reads fold the cells.
//! - [`tags`]: the tag extraction `stats_config` adds (`stats_tags`, `use_all_default_tags`).
//! - [`render`]: admin `/stats` as Envoy prints it (text, JSON, Prometheus).

pub mod histogram;
pub mod render;
pub mod store;
pub mod tags;

pub use store::{Counter, Gauge, Histogram, Scope, StatName, Store, TextReadout};
pub use tags::{TagRule, TagRules, TagValue};
