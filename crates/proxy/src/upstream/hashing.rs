//! Consistent hashing as Envoy does it, so that a key goes to the same host through
//! wasmproxy as through Envoy: the `RING_HASH` ring (xxHash64 of `<host>_<i>`) and the
//! `MAGLEV` table, and the hash a route's `hash_policy` makes of a request.

use twox_hash::XxHash64;
use wasmproxy_config::model::{CommonLb, LbPolicy};

/// A ring or a Maglev table over a group's hosts (by slot in the group).
pub enum HashTable {
    /// Sorted `(hash, slot)` points: a hash goes to the first point at or after it.
    Ring(Vec<(u64, usize)>),
    /// Maglev's lookup table: a hash goes to `table[hash % len]`.
    Maglev(Vec<usize>),
}

impl HashTable {
    /// A table over `hosts` (each its hash key and weight), in slot order.
    pub fn new(policy: LbPolicy, lb: &CommonLb, hosts: &[(&str, f64)]) -> HashTable {
        match policy {
            LbPolicy::Maglev => HashTable::Maglev(maglev(hosts, lb.maglev_table_size)),
            _ => HashTable::Ring(ring(hosts, lb.minimum_ring_size, lb.maximum_ring_size)),
        }
    }

    /// The slot a hash goes to (none if there are no hosts).
    pub fn find(&self, hash: u64) -> Option<usize> {
        match self {
            HashTable::Ring(points) => {
                if points.is_empty() {
                    return None;
                }
                let at = points.partition_point(|(h, _)| *h < hash);
                Some(points[if at == points.len() { 0 } else { at }].1)
            }
            HashTable::Maglev(table) => table.get((hash % table.len().max(1) as u64) as usize).copied(),
        }
    }
}

/// Each host's weight as a share of the total.
fn normalized(hosts: &[(&str, f64)]) -> Vec<f64> {
    let total: f64 = hosts.iter().map(|(_, w)| *w).sum();
    hosts.iter().map(|(_, w)| if total > 0.0 { *w / total } else { 0.0 }).collect()
}

/// Envoy's ring: scaled so the lightest host gets a whole number of points and the ring
/// holds at least `min` (at most `max`) of them; point `i` of a host hashes `<key>_<i>`.
fn ring(hosts: &[(&str, f64)], min: u64, max: u64) -> Vec<(u64, usize)> {
    let weights = normalized(hosts);
    let lightest = weights.iter().copied().filter(|w| *w > 0.0).fold(f64::INFINITY, f64::min);
    if !lightest.is_finite() {
        return Vec::new();
    }
    let scale = ((lightest * min as f64).ceil() / lightest).min(max as f64);
    let mut points = Vec::with_capacity(scale.ceil() as usize);
    let (mut current, mut target) = (0.0f64, 0.0f64);
    for (slot, ((key, _), weight)) in hosts.iter().zip(&weights).enumerate() {
        target += scale * weight;
        let mut i = 0u64;
        while current < target {
            points.push((XxHash64::oneshot(0, format!("{key}_{i}").as_bytes()), slot));
            i += 1;
            current += 1.0;
        }
    }
    points.sort_by(|a, b| a.0.cmp(&b.0).then_with(|| hosts[a.1].0.cmp(hosts[b.1].0)));
    points
}

/// Envoy's Maglev table: each host walks its own permutation of the table (offset and
/// skip from its key's xxHash64 with seeds 0 and 1), taking free entries in turn, a
/// lighter host less often.
fn maglev(hosts: &[(&str, f64)], size: u64) -> Vec<usize> {
    let weights = normalized(hosts);
    let heaviest = weights.iter().copied().fold(0.0f64, f64::max);
    if heaviest <= 0.0 || size < 2 {
        return Vec::new();
    }
    struct Entry {
        slot: usize,
        offset: u64,
        skip: u64,
        weight: f64,
        target: f64,
        next: u64,
    }
    let mut entries: Vec<Entry> = hosts
        .iter()
        .zip(&weights)
        .enumerate()
        .filter(|(_, (_, w))| **w > 0.0)
        .map(|(slot, ((key, _), w))| Entry {
            slot,
            offset: XxHash64::oneshot(0, key.as_bytes()) % size,
            skip: XxHash64::oneshot(1, key.as_bytes()) % (size - 1) + 1,
            weight: *w,
            target: 0.0,
            next: 0,
        })
        .collect();
    entries.sort_by(|a, b| hosts[a.slot].0.cmp(hosts[b.slot].0));
    let mut table: Vec<Option<usize>> = vec![None; size as usize];
    let mut filled = 0u64;
    let mut iteration = 1u64;
    while filled < size {
        for e in entries.iter_mut() {
            if filled >= size {
                break;
            }
            if (iteration as f64) * e.weight < e.target {
                continue;
            }
            e.target += heaviest;
            let mut c = (e.offset + e.skip * e.next) % size;
            while table[c as usize].is_some() {
                e.next += 1;
                c = (e.offset + e.skip * e.next) % size;
            }
            table[c as usize] = Some(e.slot);
            e.next += 1;
            filled += 1;
        }
        iteration += 1;
    }
    table.into_iter().map(|s| s.unwrap_or(0)).collect()
}

/// Envoy's `HashUtil::xxHash64` (seed 0).
pub fn xx(bytes: &[u8]) -> u64 {
    XxHash64::oneshot(0, bytes)
}

/// Envoy's hash of several values: each hashed with the previous hash as its seed.
pub fn xx_chain<'a>(values: impl Iterator<Item = &'a [u8]>) -> u64 {
    values.fold(0, XxHash64::oneshot)
}
