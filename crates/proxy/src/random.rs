//! Random numbers the data plane draws: request ids, load-balancer picks, reload backoff,
//! runtime fractions.

use std::cell::Cell;
use std::hash::{BuildHasher, Hasher};

thread_local! {
    // SplitMix64, seeded once per thread from the standard library's random keys.
    static STATE: Cell<u64> = Cell::new(std::collections::hash_map::RandomState::new().build_hasher().finish());
}

/// The next 64 random bits of this thread's generator.
pub fn next_u64() -> u64 {
    STATE.with(|s| {
        let x = s.get().wrapping_add(0x9e37_79b9_7f4a_7c15);
        s.set(x);
        let z = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        let z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    })
}

/// A number in [0, 1).
pub fn unit() -> f64 {
    (next_u64() >> 11) as f64 / (1u64 << 53) as f64
}

/// A draw that comes out true `per_million` times in a million (always from a million up),
/// as a runtime fractional percent.
pub fn per_million(per_million: u32) -> bool {
    per_million >= 1_000_000 || (per_million > 0 && next_u64() % 1_000_000 < u64::from(per_million))
}

/// An index in [0, n) (0 when `n` is 0).
pub fn index(n: usize) -> usize {
    (next_u64() % n.max(1) as u64) as usize
}

/// A random (version 4) UUID, as Envoy makes `x-request-id`.
pub fn request_id() -> [u8; 36] {
    let mut bytes = [0u8; 16];
    bytes[..8].copy_from_slice(&next_u64().to_be_bytes());
    bytes[8..].copy_from_slice(&next_u64().to_be_bytes());
    // Version 4 (random), RFC 4122 variant.
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = [b'-'; 36];
    let mut at = 0;
    for (i, byte) in bytes.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            at += 1;
        }
        out[at] = HEX[usize::from(byte >> 4)];
        out[at + 1] = HEX[usize::from(byte & 0xf)];
        at += 2;
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn request_ids_are_random_version_4_uuids() {
        let ids = [super::request_id(), super::request_id()];
        let [a, b] = ids.map(|id| String::from_utf8(id.to_vec()).unwrap());
        assert_ne!(a, b);
        for id in [a, b] {
            let groups: Vec<&str> = id.split('-').collect();
            assert_eq!(groups.iter().map(|g| g.len()).collect::<Vec<_>>(), [8, 4, 4, 4, 12], "{id}");
            assert!(id.bytes().all(|c| c == b'-' || c.is_ascii_hexdigit() && !c.is_ascii_uppercase()), "{id}");
            assert!(groups[2].starts_with('4') && "89ab".contains(&groups[3][..1]), "{id}");
        }
    }

    #[test]
    fn draws_stay_in_range() {
        for n in [1, 2, 7] {
            assert!((0..1000).all(|_| super::index(n) < n));
        }
        assert_eq!(super::index(0), 0);
        assert!((0..1000).map(|_| super::unit()).all(|u| (0.0..1.0).contains(&u)));
    }
}
