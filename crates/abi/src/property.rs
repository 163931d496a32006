//! Property paths and Envoy's binary encoding of property values.

/// Splits a property path as the SDKs send it: segments separated by NUL, a trailing NUL tolerated.
pub fn split_path(path: &[u8]) -> Vec<&[u8]> {
    let path = path.strip_suffix(&[0]).unwrap_or(path);
    if path.is_empty() {
        return Vec::new();
    }
    path.split(|b| *b == 0).collect()
}

/// A property value, typed as Envoy types it before encoding.
#[derive(Debug, Clone, PartialEq)]
pub enum PropertyValue {
    /// Strings and bytes: raw.
    Bytes(Vec<u8>),
    /// int64: 8 bytes little-endian.
    Int(i64),
    /// uint64: 8 bytes little-endian.
    Uint(u64),
    /// double: 8 bytes little-endian.
    Double(f64),
    /// bool: one byte.
    Bool(bool),
    /// Timestamps and durations: int64 nanoseconds, little-endian.
    Nanos(i64),
    /// Maps (and lists, with the element as the key and an empty value): the pairs encoding,
    /// values already encoded; an empty one is a zero count.
    Map(Vec<(Vec<u8>, Vec<u8>)>),
}

impl PropertyValue {
    /// Envoy's encoding (`serializeValue`).
    pub fn encode(&self) -> Vec<u8> {
        match self {
            PropertyValue::Bytes(b) => b.clone(),
            PropertyValue::Int(v) | PropertyValue::Nanos(v) => v.to_le_bytes().to_vec(),
            PropertyValue::Uint(v) => v.to_le_bytes().to_vec(),
            PropertyValue::Double(v) => v.to_le_bytes().to_vec(),
            PropertyValue::Bool(v) => vec![u8::from(*v)],
            // Unlike a header map, an empty map or list property still carries its count.
            PropertyValue::Map(pairs) if pairs.is_empty() => 0u32.to_le_bytes().to_vec(),
            PropertyValue::Map(pairs) => {
                crate::pairs::serialize(pairs.iter().map(|(k, v)| (k.as_slice(), v.as_slice())))
            }
        }
    }
}

impl From<&str> for PropertyValue {
    fn from(s: &str) -> Self {
        PropertyValue::Bytes(s.as_bytes().to_vec())
    }
}

impl From<String> for PropertyValue {
    fn from(s: String) -> Self {
        PropertyValue::Bytes(s.into_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_split_on_nul() {
        assert_eq!(split_path(b"request\0headers\0x-a"), vec![&b"request"[..], b"headers", b"x-a"]);
        assert_eq!(split_path(b"plugin_name\0"), vec![&b"plugin_name"[..]]);
        assert!(split_path(b"").is_empty());
    }

    #[test]
    fn values_encode_as_envoy() {
        assert_eq!(PropertyValue::Int(200).encode(), 200i64.to_le_bytes());
        assert_eq!(PropertyValue::Bool(true).encode(), vec![1]);
        assert_eq!(PropertyValue::from("abc").encode(), b"abc");
        let map = PropertyValue::Map(vec![(b"k".to_vec(), b"v".to_vec())]);
        assert_eq!(crate::pairs::deserialize(&map.encode()).unwrap(), vec![(&b"k"[..], &b"v"[..])]);
    }
}
