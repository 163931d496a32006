//! `xds.listener_metadata`, `xds.virtual_host_metadata`, `xds.route_metadata` and
//! `xds.cluster_metadata`: a configuration's `metadata` as plugins read it, the whole message
//! in protobuf wire format and each part by path, as Envoy's attribute lookup answers them.

use std::sync::Arc;

use wasmproxy_abi::Status;
use wasmproxy_abi::property::PropertyValue;
use wasmproxy_config::model::{Metadata, StructValue};
use wasmproxy_config::struct_value::{encode_struct, message_field, string_field};

/// The type URL of the `Any`s in `typed_filter_metadata`.
const STRUCT_TYPE_URL: &str = "type.googleapis.com/google.protobuf.Struct";

/// One `metadata`, ready to answer lookups; built once per configuration.
#[derive(Debug, Default)]
pub struct MetadataAttributes {
    metadata: Metadata,
    serialized: Vec<u8>,
}

impl MetadataAttributes {
    /// The attributes of a configured `metadata`.
    pub fn new(metadata: &Metadata) -> MetadataAttributes {
        MetadataAttributes { metadata: metadata.clone(), serialized: encode_metadata(metadata) }
    }

    /// The value at `<attribute>.<rest>`: the message, `filter_metadata` or
    /// `typed_filter_metadata` (maps by namespace), or a namespace's Struct and its values.
    pub fn property(&self, rest: &[&[u8]]) -> Result<Vec<u8>, Status> {
        match rest {
            [] => Ok(self.serialized.clone()),
            [b"filter_metadata", path @ ..] => namespaces(&self.metadata.filter_metadata, path),
            [b"typed_filter_metadata", path @ ..] => namespaces(&self.metadata.typed_filter_metadata, path),
            _ => Err(Status::NotFound),
        }
    }
}

/// What plugins read of the route a stream matched: `xds.route_name`, `xds.route_metadata`,
/// `xds.virtual_host_name`, `xds.virtual_host_metadata`.
#[derive(Debug, Default)]
pub struct RouteAttributes {
    /// The route's `name` (may be empty).
    pub name: String,
    /// The route's `metadata`.
    pub metadata: MetadataAttributes,
    /// Its virtual host's `name`.
    pub virtual_host_name: String,
    /// Its virtual host's `metadata`.
    pub virtual_host_metadata: Arc<MetadataAttributes>,
}

type Namespaces = [(String, Vec<(String, StructValue)>)];

fn namespaces(all: &Namespaces, path: &[&[u8]]) -> Result<Vec<u8>, Status> {
    let Some((first, rest)) = path.split_first() else {
        let pairs = all.iter().map(|(ns, fields)| Ok((ns.as_bytes().to_vec(), struct_map(fields)?)));
        return Ok(PropertyValue::Map(pairs.collect::<Result<_, Status>>()?).encode());
    };
    let (_, fields) = all.iter().find(|(ns, _)| ns.as_bytes() == *first).ok_or(Status::NotFound)?;
    struct_property(fields, rest)
}

/// A Struct field by path: the whole struct as a map, or one value (walking nested structs and
/// list indices).
pub fn struct_property(fields: &[(String, StructValue)], path: &[&[u8]]) -> Result<Vec<u8>, Status> {
    let Some((first, rest)) = path.split_first() else { return struct_map(fields) };
    let value = fields.iter().find(|(k, _)| k.as_bytes() == *first).map(|(_, v)| v).ok_or(Status::NotFound)?;
    value_property(value, rest)
}

fn value_property(value: &StructValue, path: &[&[u8]]) -> Result<Vec<u8>, Status> {
    match (value, path) {
        (_, []) => encode_value(value),
        (StructValue::Struct(fields), _) => struct_property(fields, path),
        (StructValue::List(items), [index, rest @ ..]) => {
            let i: usize = std::str::from_utf8(index).ok().and_then(|s| s.parse().ok()).ok_or(Status::NotFound)?;
            value_property(items.get(i).ok_or(Status::NotFound)?, rest)
        }
        _ => Err(Status::NotFound),
    }
}

/// A Struct as Envoy serializes a map attribute: the pairs encoding, values encoded recursively.
fn struct_map(fields: &[(String, StructValue)]) -> Result<Vec<u8>, Status> {
    let pairs = fields.iter().map(|(k, v)| Ok((k.as_bytes().to_vec(), encode_value(v)?)));
    Ok(PropertyValue::Map(pairs.collect::<Result<_, Status>>()?).encode())
}

/// One Struct value as an attribute: strings raw, numbers as 8-byte doubles, booleans one byte,
/// lists as pairs with the element as the key, structs as maps. Envoy cannot serialize a null
/// (SERIALIZATION_FAILURE), nor anything holding one.
fn encode_value(value: &StructValue) -> Result<Vec<u8>, Status> {
    Ok(match value {
        StructValue::Null => return Err(Status::SerializationFailure),
        StructValue::Number(n) => PropertyValue::Double(*n).encode(),
        StructValue::String(s) => s.as_bytes().to_vec(),
        StructValue::Bool(b) => PropertyValue::Bool(*b).encode(),
        StructValue::List(items) => {
            let pairs = items.iter().map(|v| Ok((encode_value(v)?, Vec::new())));
            PropertyValue::Map(pairs.collect::<Result<_, Status>>()?).encode()
        }
        StructValue::Struct(fields) => struct_map(fields)?,
    })
}

/// `envoy.config.core.v3.Metadata`: filter_metadata (1) entries of namespace and Struct,
/// typed_filter_metadata (2) entries of namespace and an `Any` holding the Struct; namespaces
/// sorted, as protobuf's deterministic serialization writes map keys.
fn encode_metadata(metadata: &Metadata) -> Vec<u8> {
    let mut out = Vec::new();
    let entry = |key: &str, value: &[u8]| {
        let mut entry = Vec::new();
        string_field(&mut entry, 1, key);
        message_field(&mut entry, 2, value);
        entry
    };
    for (ns, fields) in sorted(&metadata.filter_metadata) {
        message_field(&mut out, 1, &entry(ns, &encode_struct(fields)));
    }
    for (ns, fields) in sorted(&metadata.typed_filter_metadata) {
        let mut any = Vec::new();
        string_field(&mut any, 1, STRUCT_TYPE_URL);
        message_field(&mut any, 2, &encode_struct(fields));
        message_field(&mut out, 2, &entry(ns, &any));
    }
    out
}

fn sorted(all: &Namespaces) -> Vec<&(String, Vec<(String, StructValue)>)> {
    let mut sorted: Vec<_> = all.iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(&b.0));
    sorted
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    fn string(s: &str) -> StructValue {
        StructValue::String(s.into())
    }

    /// A route's `metadata` with one namespace in each map, and what Envoy 1.40 answered for it.
    #[test]
    fn route_metadata_reads_as_in_envoy() {
        let metadata = Metadata {
            filter_metadata: vec![(
                "acme".into(),
                vec![(
                    "limits".into(),
                    StructValue::List(vec![StructValue::Number(1.0), string("two"), StructValue::Bool(true)]),
                )],
            )],
            typed_filter_metadata: vec![("tacme".into(), vec![("k".into(), string("v"))])],
        };
        let attrs = MetadataAttributes::new(&metadata);
        assert_eq!(
            hex(&attrs.property(&[]).unwrap()),
            "0a2c0a0461636d6512240a220a066c696d697473121832160a0911000000000000f03f0a051a0374776f0a022001\
             12410a057461636d6512380a2a747970652e676f6f676c65617069732e636f6d2f676f6f676c652e70726f746f6275662e537472756374120a0a080a016b12031a0176"
        );
        assert_eq!(
            hex(&attrs.property(&[b"filter_metadata", b"acme", b"limits"]).unwrap()),
            "03000000080000000000000003000000000000000100000000000000000000000000f03f000074776f0000010000"
        );
        assert_eq!(attrs.property(&[b"filter_metadata", b"acme", b"limits", b"1"]).unwrap(), b"two");
        assert_eq!(
            hex(&attrs.property(&[b"typed_filter_metadata"]).unwrap()),
            "0100000005000000100000007461636d65000100000001000000010000006b00760000"
        );
        assert_eq!(attrs.property(&[b"typed_filter_metadata", b"tacme", b"k"]).unwrap(), b"v");
        assert_eq!(attrs.property(&[b"filter_metadata", b"nope"]), Err(Status::NotFound));
        assert_eq!(attrs.property(&[b"nope"]), Err(Status::NotFound));
        assert_eq!(MetadataAttributes::new(&Metadata::default()).property(&[]).unwrap(), b"");
    }

    #[test]
    fn a_null_cannot_be_serialized() {
        let fields = vec![("n".to_string(), StructValue::Null)];
        assert_eq!(struct_property(&fields, &[b"n"]), Err(Status::SerializationFailure));
        assert_eq!(struct_property(&fields, &[]), Err(Status::SerializationFailure));
    }
}
