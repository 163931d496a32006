//! Shared queues: named per `vm_id`, readable by any VM, notifying the registrant.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use wasmproxy_abi::Status;

use super::lock;
use crate::QueueNotifier;

struct Queue {
    messages: VecDeque<Vec<u8>>,
    /// Who registered it most recently: (notifier of its thread, root context id).
    owner: Option<(QueueNotifier, u32)>,
}

#[derive(Default)]
struct Inner {
    by_name: HashMap<(String, Vec<u8>), u32>,
    queues: HashMap<u32, Queue>,
    next_id: u32,
}

/// The queues behind `proxy_*_shared_queue`.
#[derive(Default)]
pub struct SharedQueues {
    inner: Mutex<Inner>,
}

impl SharedQueues {
    /// Registers (or re-registers) `name` under `vm_id`; the latest registrant gets the notifications.
    pub fn register(&self, vm_id: &str, name: &[u8], owner: Option<(QueueNotifier, u32)>) -> u32 {
        let mut inner = lock(&self.inner);
        let key = (vm_id.to_string(), name.to_vec());
        let id = match inner.by_name.get(&key) {
            Some(id) => *id,
            None => {
                inner.next_id += 1;
                let id = inner.next_id;
                inner.by_name.insert(key, id);
                inner.queues.insert(id, Queue { messages: VecDeque::new(), owner: None });
                id
            }
        };
        if let Some(q) = inner.queues.get_mut(&id) {
            q.owner = owner;
        }
        id
    }

    /// The id of `name` under `vm_id`, or NOT_FOUND.
    pub fn resolve(&self, vm_id: &str, name: &[u8]) -> Result<u32, Status> {
        lock(&self.inner).by_name.get(&(vm_id.to_string(), name.to_vec())).copied().ok_or(Status::NotFound)
    }

    /// Appends a message and tells the registrant (outside the lock). NOT_FOUND for an unknown id.
    pub fn enqueue(&self, id: u32, message: &[u8]) -> Status {
        let notify = {
            let mut inner = lock(&self.inner);
            let Some(q) = inner.queues.get_mut(&id) else {
                return Status::NotFound;
            };
            q.messages.push_back(message.to_vec());
            q.owner.clone()
        };
        if let Some((notifier, root_context_id)) = notify {
            notifier(root_context_id, id);
        }
        Status::Ok
    }

    /// Takes the oldest message: EMPTY if none, NOT_FOUND for an unknown id.
    pub fn dequeue(&self, id: u32) -> Result<Vec<u8>, Status> {
        let mut inner = lock(&self.inner);
        let q = inner.queues.get_mut(&id).ok_or(Status::NotFound)?;
        q.messages.pop_front().ok_or(Status::Empty)
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
        let id =
            q.register("vm", b"q", Some((Arc::new(move |root, id| s.store(root * 100 + id, Ordering::SeqCst)), 7)));
        assert_ne!(id, 0);
        assert_eq!(q.resolve("vm", b"q"), Ok(id));
        assert_eq!(q.resolve("other", b"q"), Err(Status::NotFound));
        assert_eq!(q.dequeue(id), Err(Status::Empty));
        assert_eq!(q.enqueue(id, b"m1"), Status::Ok);
        assert_eq!(seen.load(Ordering::SeqCst), 700 + id);
        assert_eq!(q.dequeue(id), Ok(b"m1".to_vec()));
        assert_eq!(q.enqueue(999, b"x"), Status::NotFound);
        assert_eq!(q.register("vm", b"q", None), id, "same name, same id");
    }
}
