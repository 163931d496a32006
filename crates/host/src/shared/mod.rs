//! Process-wide state shared by every VM: shared data, shared queues, metrics.

mod data;
mod metrics;
mod queues;

use std::sync::Arc;

pub use data::SharedData;
pub use metrics::{Metric, MetricValue, Metrics};
pub use queues::SharedQueues;

/// Everything VMs on different threads share, keyed by `vm_id` where Envoy keys it so.
#[derive(Default)]
pub struct SharedState {
    /// Key/value store with compare-and-swap.
    pub data: SharedData,
    /// Named message queues.
    pub queues: SharedQueues,
    /// Plugin-defined metrics.
    pub metrics: Metrics,
}

impl SharedState {
    /// A new, empty state.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }
}

/// Locks a mutex, going on with the data if another thread panicked while holding it.
pub(crate) fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}
