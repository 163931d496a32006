//! `xds.node`: the bootstrap's `node` as plugins read it, the whole message in protobuf wire
//! format and each field by path, as Envoy's attribute lookup answers them.

use wasmproxy_abi::Status;
use wasmproxy_abi::property::PropertyValue;
use wasmproxy_config::model::{Locality, Node, StructValue};

/// What `node.user_agent_name` says: the software, as Envoy says `envoy`.
const USER_AGENT_NAME: &str = "wasmproxy";

/// The node, ready to answer `xds.node` lookups from any context (root contexts included).
#[derive(Debug, Default)]
pub struct NodeAttributes {
    node: Node,
    serialized: Vec<u8>,
}

impl NodeAttributes {
    /// The attributes of a configured node.
    pub fn new(node: &Node) -> NodeAttributes {
        NodeAttributes { node: node.clone(), serialized: encode_node(node) }
    }

    /// The value at `xds.node.<rest>`; NOT_FOUND for a field `Node` does not have.
    pub fn property(&self, rest: &[&[u8]]) -> Result<Vec<u8>, Status> {
        let n = &self.node;
        let text = |s: &str| Ok(s.as_bytes().to_vec());
        match rest {
            [] => Ok(self.serialized.clone()),
            [b"id"] => text(&n.id),
            [b"cluster"] => text(&n.cluster),
            [b"metadata", path @ ..] => struct_property(&n.metadata, path),
            [b"locality"] => Ok(encode_locality(&n.locality)),
            [b"locality", b"region"] => text(&n.locality.region),
            [b"locality", b"zone"] => text(&n.locality.zone),
            [b"locality", b"sub_zone"] => text(&n.locality.sub_zone),
            [b"user_agent_name"] => text(USER_AGENT_NAME),
            [b"user_agent_version"] => text(env!("CARGO_PKG_VERSION")),
            // Unset messages read as their (empty) default; unset lists and maps as empty ones.
            [b"user_agent_build_version"] => Ok(Vec::new()),
            [b"extensions" | b"client_features" | b"listening_addresses" | b"dynamic_parameters"] => {
                Ok(PropertyValue::Map(Vec::new()).encode())
            }
            _ => Err(Status::NotFound),
        }
    }
}

/// A Struct field by path: the whole struct as a map, or one value (walking nested structs and
/// list indices).
fn struct_property(fields: &[(String, StructValue)], path: &[&[u8]]) -> Result<Vec<u8>, Status> {
    let Some((first, rest)) = path.split_first() else { return Ok(struct_map(fields)) };
    let value = fields.iter().find(|(k, _)| k.as_bytes() == *first).map(|(_, v)| v).ok_or(Status::NotFound)?;
    value_property(value, rest)
}

fn value_property(value: &StructValue, path: &[&[u8]]) -> Result<Vec<u8>, Status> {
    match (value, path) {
        (_, []) => Ok(encode_value(value)),
        (StructValue::Struct(fields), _) => struct_property(fields, path),
        (StructValue::List(items), [index, rest @ ..]) => {
            let i: usize = std::str::from_utf8(index).ok().and_then(|s| s.parse().ok()).ok_or(Status::NotFound)?;
            value_property(items.get(i).ok_or(Status::NotFound)?, rest)
        }
        _ => Err(Status::NotFound),
    }
}

/// A Struct as Envoy serializes a map attribute: the pairs encoding, values encoded recursively.
fn struct_map(fields: &[(String, StructValue)]) -> Vec<u8> {
    PropertyValue::Map(fields.iter().map(|(k, v)| (k.as_bytes().to_vec(), encode_value(v))).collect()).encode()
}

/// One Struct value as an attribute: strings raw, numbers as 8-byte doubles, booleans one byte,
/// lists as pairs with the element as the key, structs as maps, null as nothing.
fn encode_value(value: &StructValue) -> Vec<u8> {
    match value {
        StructValue::Null => Vec::new(),
        StructValue::Number(n) => PropertyValue::Double(*n).encode(),
        StructValue::String(s) => s.as_bytes().to_vec(),
        StructValue::Bool(b) => PropertyValue::Bool(*b).encode(),
        StructValue::List(items) => {
            PropertyValue::Map(items.iter().map(|v| (encode_value(v), Vec::new())).collect()).encode()
        }
        StructValue::Struct(fields) => struct_map(fields),
    }
}

/// `envoy.config.core.v3.Node` in protobuf wire format: id (1), cluster (2), metadata (3),
/// locality (4), user_agent_name (6), user_agent_version (7).
fn encode_node(node: &Node) -> Vec<u8> {
    let mut out = Vec::new();
    string_field(&mut out, 1, &node.id);
    string_field(&mut out, 2, &node.cluster);
    if !node.metadata.is_empty() {
        message_field(&mut out, 3, &encode_struct(&node.metadata));
    }
    let locality = encode_locality(&node.locality);
    if !locality.is_empty() {
        message_field(&mut out, 4, &locality);
    }
    string_field(&mut out, 6, USER_AGENT_NAME);
    string_field(&mut out, 7, env!("CARGO_PKG_VERSION"));
    out
}

/// `envoy.config.core.v3.Locality`: region (1), zone (2), sub_zone (3).
fn encode_locality(locality: &Locality) -> Vec<u8> {
    let mut out = Vec::new();
    string_field(&mut out, 1, &locality.region);
    string_field(&mut out, 2, &locality.zone);
    string_field(&mut out, 3, &locality.sub_zone);
    out
}

/// `google.protobuf.Struct`: map entries (field 1) of key (1) and Value (2), keys sorted as
/// protobuf's deterministic serialization writes them.
fn encode_struct(fields: &[(String, StructValue)]) -> Vec<u8> {
    let mut sorted: Vec<&(String, StructValue)> = fields.iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(&b.0));
    let mut out = Vec::new();
    for (key, value) in sorted {
        let mut entry = Vec::new();
        string_field(&mut entry, 1, key);
        message_field(&mut entry, 2, &encode_struct_value(value));
        message_field(&mut out, 1, &entry);
    }
    out
}

/// `google.protobuf.Value`: null (1), number (2), string (3), bool (4), struct (5), list (6).
fn encode_struct_value(value: &StructValue) -> Vec<u8> {
    let mut out = Vec::new();
    match value {
        StructValue::Null => out.extend_from_slice(&[1 << 3, 0]),
        StructValue::Number(n) => {
            out.push((2 << 3) | 1);
            out.extend_from_slice(&n.to_le_bytes());
        }
        StructValue::String(s) => message_field(&mut out, 3, s.as_bytes()),
        StructValue::Bool(b) => out.extend_from_slice(&[4 << 3, u8::from(*b)]),
        StructValue::Struct(fields) => message_field(&mut out, 5, &encode_struct(fields)),
        StructValue::List(items) => {
            let mut list = Vec::new();
            for item in items {
                message_field(&mut list, 1, &encode_struct_value(item));
            }
            message_field(&mut out, 6, &list);
        }
    }
    out
}

/// A string field, left out when empty (proto3).
fn string_field(out: &mut Vec<u8>, number: u32, value: &str) {
    if !value.is_empty() {
        message_field(out, number, value.as_bytes());
    }
}

/// A length-delimited field.
fn message_field(out: &mut Vec<u8>, number: u32, bytes: &[u8]) {
    varint(out, u64::from(number << 3 | 2));
    varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node() -> Node {
        Node {
            id: "node-1".into(),
            cluster: "cluster-a".into(),
            metadata: vec![("team".into(), StructValue::String("edge".into())), ("n".into(), StructValue::Number(3.0))],
            locality: Locality { region: "eu".into(), zone: "eu-1".into(), sub_zone: String::new() },
        }
    }

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    /// The bytes Envoy 1.40 gave for the same node (id, cluster, metadata, locality), up to
    /// where Envoy's own user agent fields begin.
    #[test]
    fn node_encodes_as_envoy() {
        let attrs = NodeAttributes::new(&node());
        let envoy = "0a066e6f64652d311209636c75737465722d611a200a0e0a016e12091100000000000008400a0e0a047465616d12061a0465646765220a0a026575120465752d31";
        assert!(hex(&attrs.property(&[]).unwrap()).starts_with(envoy));
        assert_eq!(hex(&attrs.property(&[b"locality"]).unwrap()), "0a026575120465752d31");
        assert_eq!(attrs.property(&[b"locality", b"sub_zone"]).unwrap(), b"");
        assert_eq!(hex(&attrs.property(&[b"client_features"]).unwrap()), "00000000");
        assert_eq!(attrs.property(&[b"nope"]), Err(Status::NotFound));
    }

    /// Envoy 1.40: `xds.node.metadata` is a map with values encoded by type.
    #[test]
    fn metadata_reads_as_a_map_and_by_key() {
        let attrs = NodeAttributes::new(&node());
        assert_eq!(
            hex(&attrs.property(&[b"metadata"]).unwrap()),
            "02000000040000000400000001000000080000007465616d0065646765006e00000000000000084000"
        );
        assert_eq!(attrs.property(&[b"metadata", b"team"]).unwrap(), b"edge");
        assert_eq!(hex(&attrs.property(&[b"metadata", b"n"]).unwrap()), "0000000000000840");
        assert_eq!(attrs.property(&[b"metadata", b"missing"]), Err(Status::NotFound));
    }
}
