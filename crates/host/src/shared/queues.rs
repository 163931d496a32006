//! Shared queues: named per `vm_id`, readable by any VM, notifying the registrant.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use wasmproxy_abi::Status;

use super::lock;
use crate::QueueNotifier;

struct Queue {
    messages: VecDeque<Vec<u8>>,
    /// Bytes waiting (at most `SHARED_QUEUE_MAX_BYTES`).
    bytes: usize,
    /// Who registered it most recently: (notifier of its thread, root context id).
    owner: Option<(QueueNotifier, u32)>,
}

#[derive(Default)]
struct Inner {
    by_name: HashMap<(String, Vec<u8>), u32>,
    queues: HashMap<u32, Queue>,
    next_id: u32,
    /// Bytes waiting in every queue (at most `SHARED_QUEUES_MAX_BYTES`).
    bytes: usize,
}

/// The queues behind `proxy_*_shared_queue`.
#[derive(Default)]
pub struct SharedQueues {
    inner: Mutex<Inner>,
}

impl SharedQueues {
    /// Registers (or re-registers) `name` under `vm_id`; the latest registrant gets the notifications.
    /// INTERNAL_FAILURE once the process has `SHARED_QUEUES_MAX` queues.
    pub fn register(&self, vm_id: &str, name: &[u8], owner: Option<(QueueNotifier, u32)>) -> Result<u32, Status> {
        let mut inner = lock(&self.inner);
        let key = (vm_id.to_string(), name.to_vec());
        let id = match inner.by_name.get(&key) {
            Some(id) => *id,
            None if inner.queues.len() >= wasmproxy_abi::limits::SHARED_QUEUES_MAX => {
                return Err(Status::InternalFailure);
            }
            None => {
                inner.next_id += 1;
                let id = inner.next_id;
                inner.by_name.insert(key, id);
                inner.queues.insert(id, Queue { messages: VecDeque::new(), bytes: 0, owner: None });
                id
            }
        };
        if let Some(q) = inner.queues.get_mut(&id) {
            q.owner = owner;
        }
        Ok(id)
    }

    /// The id of `name` under `vm_id`, or NOT_FOUND.
    pub fn resolve(&self, vm_id: &str, name: &[u8]) -> Result<u32, Status> {
        lock(&self.inner).by_name.get(&(vm_id.to_string(), name.to_vec())).copied().ok_or(Status::NotFound)
    }

    /// Appends a message and tells the registrant (outside the lock). NOT_FOUND for an unknown
    /// id, INTERNAL_FAILURE past `SHARED_QUEUE_MAX_BYTES` waiting.
    pub fn enqueue(&self, id: u32, message: &[u8]) -> Status {
        let notify = {
            let mut inner = lock(&self.inner);
            let total = inner.bytes + message.len();
            let Some(q) = inner.queues.get_mut(&id) else {
                return Status::NotFound;
            };
            // A queue nobody reads cannot grow the process without end.
            if q.bytes + message.len() > wasmproxy_abi::limits::SHARED_QUEUE_MAX_BYTES
                || total > wasmproxy_abi::limits::SHARED_QUEUES_MAX_BYTES
            {
                return Status::InternalFailure;
            }
            q.bytes += message.len();
            q.messages.push_back(message.to_vec());
            let owner = q.owner.clone();
            inner.bytes = total;
            owner
        };
        if let Some((notifier, root_context_id)) = notify {
            notifier(root_context_id, id);
        }
        Status::Ok
    }

    /// How many messages wait in the queue (0 for an unknown id).
    pub fn waiting(&self, id: u32) -> usize {
        lock(&self.inner).queues.get(&id).map_or(0, |q| q.messages.len())
    }

    /// Takes the oldest message: EMPTY if none, NOT_FOUND for an unknown id.
    pub fn dequeue(&self, id: u32) -> Result<Vec<u8>, Status> {
        let mut inner = lock(&self.inner);
        let q = inner.queues.get_mut(&id).ok_or(Status::NotFound)?;
        let message = q.messages.pop_front().ok_or(Status::Empty)?;
        q.bytes -= message.len();
        inner.bytes -= message.len();
        Ok(message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[test]
    fn register_resolve_enqueue_dequeue() {
        let q = SharedQueues::default();
        let seen = Arc::new(AtomicU32::new(0));
        let s = seen.clone();
        let id = q
            .register("vm", b"q", Some((Arc::new(move |root, id| s.store(root * 100 + id, Ordering::SeqCst)), 7)))
            .unwrap();
        assert_ne!(id, 0);
        assert_eq!(q.resolve("vm", b"q"), Ok(id));
        assert_eq!(q.resolve("other", b"q"), Err(Status::NotFound));
        assert_eq!(q.dequeue(id), Err(Status::Empty));
        assert_eq!(q.enqueue(id, b"m1"), Status::Ok);
        assert_eq!(seen.load(Ordering::SeqCst), 700 + id);
        assert_eq!(q.dequeue(id), Ok(b"m1".to_vec()));
        assert_eq!(q.enqueue(999, b"x"), Status::NotFound);
        assert_eq!(q.register("vm", b"q", None), Ok(id), "same name, same id");
    }

    #[test]
    fn a_queue_nobody_reads_stops_growing_at_its_limit() {
        let q = SharedQueues::default();
        let id = q.register("vm", b"q", None).unwrap();
        let block = vec![0u8; 1 << 20];
        for _ in 0..64 {
            assert_eq!(q.enqueue(id, &block), Status::Ok);
        }
        assert_eq!(q.enqueue(id, b"x"), Status::InternalFailure);
        assert_eq!(q.dequeue(id).map(|m| m.len()), Ok(1 << 20));
        assert_eq!(q.enqueue(id, b"x"), Status::Ok, "room again once read");
    }
}
