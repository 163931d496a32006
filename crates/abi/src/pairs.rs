//! The serialized header map ("pairs") codec of the spec.
//!
//! ```text
//! u32le N
//! N × (u32le key_len, u32le value_len)
//! N × (key bytes, 0x00, value bytes, 0x00)
//! ```
//! An empty map is written as nothing at all (length 0), as cpp-host does.

use crate::limits::{PAIRS_MAX_BYTES, PAIRS_MAX_COUNT};

/// Decoded pairs, borrowing from the serialized bytes.
pub type Pairs<'a> = Vec<(&'a [u8], &'a [u8])>;

/// Why a serialized map was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PairsError {
    /// Shorter than its own header or lengths say.
    Truncated,
    /// A key or value is not followed by its NUL byte.
    MissingNul,
    /// More than [`PAIRS_MAX_COUNT`] pairs or [`PAIRS_MAX_BYTES`] bytes.
    TooLarge,
    /// Bytes left over after the last pair.
    TrailingBytes,
}

impl std::fmt::Display for PairsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            PairsError::Truncated => "serialized map is truncated",
            PairsError::MissingNul => "serialized map has a key or value without its NUL terminator",
            PairsError::TooLarge => "serialized map exceeds the host's size limits",
            PairsError::TrailingBytes => "serialized map has trailing bytes",
        })
    }
}

impl std::error::Error for PairsError {}

/// The size `serialize` will produce for these pairs.
pub fn serialized_len<'a, I>(pairs: I) -> usize
where
    I: IntoIterator<Item = (&'a [u8], &'a [u8])>,
{
    let mut n = 0;
    let mut bytes = 4;
    for (k, v) in pairs {
        n += 1;
        bytes += 8 + k.len() + v.len() + 2;
    }
    if n == 0 { 0 } else { bytes }
}

/// Appends the serialized form of `pairs` to `out` (nothing for an empty map).
pub fn serialize_into<'a, I>(pairs: I, out: &mut Vec<u8>)
where
    I: IntoIterator<Item = (&'a [u8], &'a [u8])> + Clone,
{
    let count = pairs.clone().into_iter().count();
    if count == 0 {
        return;
    }
    out.reserve(serialized_len(pairs.clone()));
    out.extend_from_slice(&(count as u32).to_le_bytes());
    for (k, v) in pairs.clone() {
        out.extend_from_slice(&(k.len() as u32).to_le_bytes());
        out.extend_from_slice(&(v.len() as u32).to_le_bytes());
    }
    for (k, v) in pairs {
        out.extend_from_slice(k);
        out.push(0);
        out.extend_from_slice(v);
        out.push(0);
    }
}

/// The serialized form of `pairs`.
pub fn serialize<'a, I>(pairs: I) -> Vec<u8>
where
    I: IntoIterator<Item = (&'a [u8], &'a [u8])> + Clone,
{
    let mut out = Vec::new();
    serialize_into(pairs, &mut out);
    out
}

/// Parses a serialized map; an empty input (or a lone NUL byte, which the spec allows) is an empty map.
pub fn deserialize(bytes: &[u8]) -> Result<Pairs<'_>, PairsError> {
    if bytes.is_empty() || bytes == [0] {
        return Ok(Vec::new());
    }
    if bytes.len() > PAIRS_MAX_BYTES {
        return Err(PairsError::TooLarge);
    }
    let read_u32 = |at: usize| -> Result<usize, PairsError> {
        let b = bytes.get(at..at + 4).ok_or(PairsError::Truncated)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
    };
    let count = read_u32(0)?;
    if count > PAIRS_MAX_COUNT {
        return Err(PairsError::TooLarge);
    }
    let mut sizes_at = 4;
    let mut data_at = 4usize.checked_add(count * 8).ok_or(PairsError::Truncated)?;
    if data_at > bytes.len() {
        return Err(PairsError::Truncated);
    }
    let mut out = Vec::with_capacity(count);
    for _ in 0..count {
        let klen = read_u32(sizes_at)?;
        let vlen = read_u32(sizes_at + 4)?;
        sizes_at += 8;
        let key = take_terminated(bytes, &mut data_at, klen)?;
        let value = take_terminated(bytes, &mut data_at, vlen)?;
        out.push((key, value));
    }
    if data_at != bytes.len() {
        return Err(PairsError::TrailingBytes);
    }
    Ok(out)
}

fn take_terminated<'a>(bytes: &'a [u8], at: &mut usize, len: usize) -> Result<&'a [u8], PairsError> {
    let end = at.checked_add(len).ok_or(PairsError::Truncated)?;
    let field = bytes.get(*at..end).ok_or(PairsError::Truncated)?;
    match bytes.get(end) {
        Some(0) => {}
        Some(_) => return Err(PairsError::MissingNul),
        None => return Err(PairsError::Truncated),
    }
    *at = end + 1;
    Ok(field)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The spec's example map {":method": "GET", ...}, byte for byte (with the errata fixed).
    #[test]
    fn matches_the_byte_layout_of_the_spec() {
        let pairs: Vec<(&[u8], &[u8])> = vec![(b"a", b"1"), (b"bc", b"23")];
        let bytes = serialize(pairs.iter().copied());
        let expected: Vec<u8> = [
            &2u32.to_le_bytes()[..],
            &1u32.to_le_bytes(),
            &1u32.to_le_bytes(),
            &2u32.to_le_bytes(),
            &2u32.to_le_bytes(),
            b"a\x001\x00bc\x0023\x00",
        ]
        .concat();
        assert_eq!(bytes, expected);
        assert_eq!(serialized_len(pairs.iter().copied()), expected.len());
        assert_eq!(deserialize(&bytes).unwrap(), pairs);
    }

    #[test]
    fn empty_map_is_empty_bytes() {
        let none: Vec<(&[u8], &[u8])> = vec![];
        assert!(serialize(none.iter().copied()).is_empty());
        assert!(deserialize(&[]).unwrap().is_empty());
        assert!(deserialize(&[0]).unwrap().is_empty());
        assert!(deserialize(&0u32.to_le_bytes()).unwrap().is_empty());
    }

    #[test]
    fn refuses_inconsistent_input() {
        let good = serialize([(&b"key"[..], &b"value"[..])]);
        for cut in 1..good.len() {
            assert!(deserialize(&good[..cut]).is_err(), "cut at {cut}");
        }
        let mut extra = good.clone();
        extra.push(7);
        assert_eq!(deserialize(&extra), Err(PairsError::TrailingBytes));
        let mut no_nul = good.clone();
        let at = 4 + 8 + 3;
        no_nul[at] = b'x';
        assert_eq!(deserialize(&no_nul), Err(PairsError::MissingNul));
        let mut huge = good;
        huge[0..4].copy_from_slice(&(u32::MAX).to_le_bytes());
        assert_eq!(deserialize(&huge), Err(PairsError::TooLarge));
    }
}
