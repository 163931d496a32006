//! A cluster's circuit breakers, shared by every worker: how many connections, requests
//! waiting for a connection, requests and retries it may have at once (Envoy's
//! `circuit_breakers` thresholds of one priority).

use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use wasmproxy_config::model::CircuitBreakers;

/// What a breaker counts.
#[derive(Debug, Clone, Copy)]
pub enum Resource {
    /// Open connections.
    Connections,
    /// Requests waiting for a new connection.
    Pending,
    /// Requests sent and not finished.
    Requests,
    /// Retries waiting or in flight.
    Retries,
}

/// The counts and their limits.
#[derive(Debug)]
pub struct Breakers {
    limits: CircuitBreakers,
    counts: [AtomicUsize; 4],
}

impl Breakers {
    /// No resource in use.
    pub fn new(limits: CircuitBreakers) -> Arc<Breakers> {
        Arc::new(Breakers { limits, counts: Default::default() })
    }

    /// A worker's handle on them (places taken through it count the handle, not the
    /// shared breakers, as their owner: no atomic reference count per request).
    pub fn on_worker(self: &Arc<Self>) -> WorkerBreakers {
        Rc::new(self.clone())
    }
}

/// A worker's handle on a cluster's breakers.
pub type WorkerBreakers = Rc<Arc<Breakers>>;

/// A place for one more `resource` in `breakers`, if the limit allows it; given back when
/// dropped.
pub fn take(breakers: &WorkerBreakers, resource: Resource) -> Option<Taken> {
    {
        let limits = &breakers.limits;
        let limit = match resource {
            Resource::Connections => limits.max_connections,
            Resource::Pending => limits.max_pending_requests,
            Resource::Requests => limits.max_requests,
            Resource::Retries => limits.max_retries,
        } as usize;
        let count = &breakers.counts[resource as usize];
        let taken = Taken(breakers.clone(), resource);
        (count.fetch_add(1, Ordering::Relaxed) < limit).then_some(taken)
    }
}

/// One place taken in a breaker.
#[derive(Debug)]
pub struct Taken(WorkerBreakers, Resource);

impl Drop for Taken {
    fn drop(&mut self) {
        self.0.counts[self.1 as usize].fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_breaker_opens_at_its_limit_and_closes_when_a_place_is_given_back() {
        let limits = CircuitBreakers { max_retries: 2, ..CircuitBreakers::default() };
        let b = Breakers::new(limits).on_worker();
        let first = take(&b, Resource::Retries).expect("room");
        let _second = take(&b, Resource::Retries).expect("room");
        assert!(take(&b, Resource::Retries).is_none(), "the third is over the limit");
        drop(first);
        assert!(take(&b, Resource::Retries).is_some(), "a place was given back");
    }
}
