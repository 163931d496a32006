//! Shared data: a key/value store per `vm_id` with Envoy's compare-and-swap rules.

use std::collections::HashMap;
use std::sync::Mutex;

use wasmproxy_abi::Status;

use super::lock;

/// key → (value, cas).
type Store = HashMap<Vec<u8>, (Vec<u8>, u32)>;

#[derive(Default)]
struct Inner {
    /// vm_id → its store.
    maps: HashMap<String, Store>,
    /// How many live VMs use each vm_id; a vm_id's data goes when its last VM does.
    vm_refs: HashMap<String, usize>,
    next_cas: u32,
    /// Bytes held, keys and values (at most `SHARED_DATA_MAX_BYTES`).
    bytes: usize,
}

/// The store behind `proxy_get_shared_data` / `proxy_set_shared_data`.
#[derive(Default)]
pub struct SharedData {
    inner: Mutex<Inner>,
}

impl SharedData {
    /// The value and its CAS, or NOT_FOUND.
    pub fn get(&self, vm_id: &str, key: &[u8]) -> Result<(Vec<u8>, u32), Status> {
        let inner = lock(&self.inner);
        inner.maps.get(vm_id).and_then(|m| m.get(key)).cloned().ok_or(Status::NotFound)
    }

    /// Stores `value`. A non-zero `cas` must equal the key's current CAS (CAS_MISMATCH
    /// otherwise); it is ignored for a key that does not exist. Every write gets a new CAS.
    pub fn set(&self, vm_id: &str, key: &[u8], value: &[u8], cas: u32) -> Status {
        let mut inner = lock(&self.inner);
        let Inner { maps, next_cas: counter, bytes, .. } = &mut *inner;
        let map = maps.entry(vm_id.to_string()).or_default();
        let old = map.get(key).map_or(0, |(v, _)| key.len() + v.len());
        let held = *bytes - old + key.len() + value.len();
        if held > wasmproxy_abi::limits::SHARED_DATA_MAX_BYTES && held > *bytes {
            return Status::InternalFailure;
        }
        match map.get_mut(key) {
            // A refused write takes no CAS (Envoy numbers only the writes that happen).
            Some(entry) if cas != 0 && cas != entry.1 => return Status::CasMismatch,
            Some(entry) => *entry = (value.to_vec(), next_cas(counter)),
            None => {
                map.insert(key.to_vec(), (value.to_vec(), next_cas(counter)));
            }
        }
        *bytes = held;
        Status::Ok
    }

    /// A VM with this vm_id started.
    pub fn attach(&self, vm_id: &str) {
        *lock(&self.inner).vm_refs.entry(vm_id.to_string()).or_default() += 1;
    }

    /// A VM with this vm_id went away; the last one takes the vm_id's data with it.
    pub fn detach(&self, vm_id: &str) {
        let mut inner = lock(&self.inner);
        let gone = match inner.vm_refs.get_mut(vm_id) {
            Some(n) => {
                *n -= 1;
                *n == 0
            }
            None => false,
        };
        if gone {
            inner.vm_refs.remove(vm_id);
            if let Some(map) = inner.maps.remove(vm_id) {
                let freed: usize = map.iter().map(|(k, (v, _))| k.len() + v.len()).sum();
                inner.bytes -= freed.min(inner.bytes);
            }
        }
    }
}

fn next_cas(counter: &mut u32) -> u32 {
    *counter = counter.wrapping_add(1);
    if *counter == 0 {
        *counter = 1;
    }
    *counter
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cas_rules_match_envoy() {
        let d = SharedData::default();
        assert_eq!(d.get("vm", b"k"), Err(Status::NotFound));
        assert_eq!(d.set("vm", b"k", b"1", 12345), Status::Ok, "cas ignored for a new key");
        let (v, cas) = d.get("vm", b"k").unwrap();
        assert_eq!(v, b"1");
        assert_eq!(d.set("vm", b"k", b"2", cas + 1), Status::CasMismatch);
        assert_eq!(d.set("vm", b"k", b"2", cas), Status::Ok);
        let (_, cas2) = d.get("vm", b"k").unwrap();
        assert_ne!(cas, cas2);
        assert_eq!(d.set("vm", b"k", b"3", 0), Status::Ok, "cas 0 always writes");
        assert_eq!(d.get("other", b"k"), Err(Status::NotFound), "keyed by vm_id");
    }

    #[test]
    fn data_goes_with_the_last_vm() {
        let d = SharedData::default();
        d.attach("vm");
        d.attach("vm");
        d.set("vm", b"k", b"v", 0);
        d.detach("vm");
        assert!(d.get("vm", b"k").is_ok());
        d.detach("vm");
        assert_eq!(d.get("vm", b"k"), Err(Status::NotFound));
    }
}
