//! The discovery messages of `envoy.service.discovery.v3` (state of the world and delta) in
//! protobuf wire format. The node goes as the bytes of the `Node` message plugins read
//! (`xds.node`), and each resource as its `Any`, which the configuration reader decodes.

use wasmproxy_config::WireResource;

/// `google.protobuf.Any`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Any {
    /// `type.googleapis.com/<full name>`.
    #[prost(string, tag = "1")]
    pub type_url: String,
    /// The message.
    #[prost(bytes = "vec", tag = "2")]
    pub value: Vec<u8>,
}

/// `google.rpc.Status`: what a NACK says.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Status {
    /// The gRPC status code.
    #[prost(int32, tag = "1")]
    pub code: i32,
    /// Why the update was rejected.
    #[prost(string, tag = "2")]
    pub message: String,
}

/// `DiscoveryRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct DiscoveryRequest {
    /// The version last accepted of this type (empty before the first).
    #[prost(string, tag = "1")]
    pub version_info: String,
    /// `Node`, serialized.
    #[prost(bytes = "vec", tag = "2")]
    pub node: Vec<u8>,
    /// The resources wanted (none: all, for LDS and CDS).
    #[prost(string, repeated, tag = "3")]
    pub resource_names: Vec<String>,
    /// The resource type.
    #[prost(string, tag = "4")]
    pub type_url: String,
    /// The nonce of the response this answers.
    #[prost(string, tag = "5")]
    pub response_nonce: String,
    /// Set on a NACK.
    #[prost(message, optional, tag = "6")]
    pub error_detail: Option<Status>,
}

/// `DiscoveryResponse`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct DiscoveryResponse {
    /// The version of this state of the world.
    #[prost(string, tag = "1")]
    pub version_info: String,
    /// Every resource of the type (LDS, CDS) or those asked for (RDS, EDS).
    #[prost(message, repeated, tag = "2")]
    pub resources: Vec<Any>,
    /// The resource type.
    #[prost(string, tag = "4")]
    pub type_url: String,
    /// What the ACK or NACK names.
    #[prost(string, tag = "5")]
    pub nonce: String,
}

/// `DeltaDiscoveryRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct DeltaDiscoveryRequest {
    /// `Node`, serialized.
    #[prost(bytes = "vec", tag = "1")]
    pub node: Vec<u8>,
    /// The resource type.
    #[prost(string, tag = "2")]
    pub type_url: String,
    /// Names now wanted (`*`: all).
    #[prost(string, repeated, tag = "3")]
    pub resource_names_subscribe: Vec<String>,
    /// Names no longer wanted.
    #[prost(string, repeated, tag = "4")]
    pub resource_names_unsubscribe: Vec<String>,
    /// On a new stream: the version of each resource held.
    #[prost(map = "string, string", tag = "5")]
    pub initial_resource_versions: std::collections::HashMap<String, String>,
    /// The nonce of the response this answers.
    #[prost(string, tag = "6")]
    pub response_nonce: String,
    /// Set on a NACK.
    #[prost(message, optional, tag = "7")]
    pub error_detail: Option<Status>,
}

/// `DeltaDiscoveryResponse`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct DeltaDiscoveryResponse {
    /// The control plane's version of the whole (shown, not used).
    #[prost(string, tag = "1")]
    pub system_version_info: String,
    /// Resources added or changed.
    #[prost(message, repeated, tag = "2")]
    pub resources: Vec<Resource>,
    /// The resource type.
    #[prost(string, tag = "4")]
    pub type_url: String,
    /// What the ACK or NACK names.
    #[prost(string, tag = "5")]
    pub nonce: String,
    /// Names of resources removed.
    #[prost(string, repeated, tag = "6")]
    pub removed_resources: Vec<String>,
}

/// `Resource`: one resource of a delta response (or wrapped in a state-of-the-world one).
#[derive(Clone, PartialEq, prost::Message)]
pub struct Resource {
    /// The resource's version.
    #[prost(string, tag = "1")]
    pub version: String,
    /// The resource (none: a heartbeat or a removal by TTL).
    #[prost(message, optional, tag = "2")]
    pub resource: Option<Any>,
    /// Its name.
    #[prost(string, tag = "3")]
    pub name: String,
}

/// The type URL of `Resource`, which a state-of-the-world response may wrap resources in.
const RESOURCE_TYPE: &str = "type.googleapis.com/envoy.service.discovery.v3.Resource";

/// A response's resources as the reader takes them: `Resource` wrappers opened (a wrapper
/// without a resource, a TTL heartbeat, is left out).
pub fn resources(any: Vec<Any>) -> Result<Vec<WireResource>, String> {
    use prost::Message as _;
    let mut out = Vec::with_capacity(any.len());
    for (i, a) in any.into_iter().enumerate() {
        if a.type_url == RESOURCE_TYPE {
            let wrapper = Resource::decode(a.value.as_slice()).map_err(|e| format!("resources[{i}]: {e}"))?;
            if let Some(inner) = wrapper.resource {
                out.push(WireResource { type_url: inner.type_url, value: inner.value });
            }
        } else {
            out.push(WireResource { type_url: a.type_url, value: a.value });
        }
    }
    Ok(out)
}
