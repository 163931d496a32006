//! `xds.node`: the bootstrap's `node` as plugins read it, the whole message in protobuf wire
//! format and each field by path, as Envoy's attribute lookup answers them.

use wasmproxy_abi::Status;
use wasmproxy_abi::property::PropertyValue;
use wasmproxy_config::model::{Locality, Node};
use wasmproxy_config::struct_value::{encode_struct, message_field, string_field};

use crate::stream_info::metadata::struct_property;

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

/// `envoy.config.core.v3.Node` in protobuf wire format: id (1), cluster (2), metadata (3),
/// locality (4), user_agent_name (6), user_agent_version (7).
pub(crate) fn encode_node(node: &Node) -> Vec<u8> {
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

/// The node's local address, as Envoy's local info finds it: the first IPv4 address of an
/// interface that is up and not loopback, else the loopback address.
pub fn local_address() -> std::net::IpAddr {
    let loopback = std::net::IpAddr::from([127, 0, 0, 1]);
    let mut list: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `list` with a list freed below with freeifaddrs.
    if unsafe { libc::getifaddrs(&mut list) } != 0 {
        return loopback;
    }
    let mut found = None;
    let mut next = list;
    while !next.is_null() && found.is_none() {
        // SAFETY: `next` is an element of the list getifaddrs gave, not freed yet.
        let ifa = unsafe { &*next };
        next = ifa.ifa_next;
        let up = ifa.ifa_flags & libc::IFF_UP as u32 != 0;
        // SAFETY: a non-null ifa_addr points to a sockaddr whose family says its type.
        if ifa.ifa_addr.is_null() || !up || i32::from(unsafe { (*ifa.ifa_addr).sa_family }) != libc::AF_INET {
            continue;
        }
        // SAFETY: an AF_INET address is a sockaddr_in.
        let addr = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in) };
        let ip = std::net::Ipv4Addr::from(u32::from_be(addr.sin_addr.s_addr));
        if !ip.is_loopback() {
            found = Some(std::net::IpAddr::V4(ip));
        }
    }
    // SAFETY: `list` came from getifaddrs and is freed once.
    unsafe { libc::freeifaddrs(list) };
    found.unwrap_or(loopback)
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasmproxy_config::model::StructValue;

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
