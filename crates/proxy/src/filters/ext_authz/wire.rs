//! The messages of `envoy.service.auth.v3.Authorization/Check` the filter sends and reads,
//! in protobuf wire format (the fields Envoy's filter fills in and acts on).

use std::collections::BTreeMap;

/// `CheckRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct CheckRequest {
    /// What is known of the request.
    #[prost(message, optional, tag = "1")]
    pub attributes: Option<AttributeContext>,
}

/// `AttributeContext`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct AttributeContext {
    /// The downstream peer.
    #[prost(message, optional, tag = "1")]
    pub source: Option<Peer>,
    /// This proxy's side of the connection.
    #[prost(message, optional, tag = "2")]
    pub destination: Option<Peer>,
    /// The request.
    #[prost(message, optional, tag = "4")]
    pub request: Option<Request>,
    /// The route's `context_extensions`.
    #[prost(btree_map = "string, string", tag = "10")]
    pub context_extensions: BTreeMap<String, String>,
    /// `config.core.v3.Metadata` (empty: no namespaces are configured).
    #[prost(message, optional, tag = "11")]
    pub metadata_context: Option<Metadata>,
}

/// `config.core.v3.Metadata`, empty.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Metadata {}

/// `AttributeContext.Peer`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Peer {
    /// Its socket address.
    #[prost(message, optional, tag = "1")]
    pub address: Option<Address>,
    /// `x-envoy-downstream-service-cluster`, for the source.
    #[prost(string, tag = "2")]
    pub service: String,
}

/// `config.core.v3.Address` with a `socket_address`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Address {
    /// The socket address.
    #[prost(message, optional, tag = "1")]
    pub socket_address: Option<SocketAddress>,
}

/// `config.core.v3.SocketAddress` (TCP).
#[derive(Clone, PartialEq, prost::Message)]
pub struct SocketAddress {
    /// The IP address.
    #[prost(string, tag = "2")]
    pub address: String,
    /// The port.
    #[prost(uint32, tag = "3")]
    pub port_value: u32,
}

/// `AttributeContext.Request`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Request {
    /// When the stream started.
    #[prost(message, optional, tag = "1")]
    pub time: Option<Timestamp>,
    /// The HTTP request.
    #[prost(message, optional, tag = "2")]
    pub http: Option<HttpRequest>,
}

/// `google.protobuf.Timestamp`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Timestamp {
    /// Seconds since the epoch.
    #[prost(int64, tag = "1")]
    pub seconds: i64,
    /// Nanoseconds within the second.
    #[prost(int32, tag = "2")]
    pub nanos: i32,
}

/// `AttributeContext.HttpRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct HttpRequest {
    /// The stream's id.
    #[prost(string, tag = "1")]
    pub id: String,
    /// `:method`.
    #[prost(string, tag = "2")]
    pub method: String,
    /// The headers sent (lower-case names, repeated values joined by commas).
    #[prost(btree_map = "string, string", tag = "3")]
    pub headers: BTreeMap<String, String>,
    /// `:path`, with its query.
    #[prost(string, tag = "4")]
    pub path: String,
    /// `:authority`.
    #[prost(string, tag = "5")]
    pub host: String,
    /// `:scheme`.
    #[prost(string, tag = "6")]
    pub scheme: String,
    /// The body bytes received so far.
    #[prost(int64, tag = "9")]
    pub size: i64,
    /// `HTTP/1.0`, `HTTP/1.1` or `HTTP/2`.
    #[prost(string, tag = "10")]
    pub protocol: String,
    /// The body, as text (`with_request_body`).
    #[prost(string, tag = "11")]
    pub body: String,
    /// The body, as bytes (`pack_as_bytes`).
    #[prost(bytes = "vec", tag = "12")]
    pub raw_body: Vec<u8>,
}

/// `CheckResponse`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct CheckResponse {
    /// OK or not.
    #[prost(message, optional, tag = "1")]
    pub status: Option<RpcStatus>,
    /// What a refused request is answered with.
    #[prost(message, optional, tag = "2")]
    pub denied_response: Option<DeniedHttpResponse>,
    /// What an allowed request is changed with.
    #[prost(message, optional, tag = "3")]
    pub ok_response: Option<OkHttpResponse>,
}

/// `google.rpc.Status`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct RpcStatus {
    /// The gRPC status code (0: OK).
    #[prost(int32, tag = "1")]
    pub code: i32,
}

/// `DeniedHttpResponse`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct DeniedHttpResponse {
    /// `type.v3.HttpStatus` (403 when unset or 0).
    #[prost(message, optional, tag = "1")]
    pub status: Option<HttpStatus>,
    /// Headers of the answer.
    #[prost(message, repeated, tag = "2")]
    pub headers: Vec<HeaderValueOption>,
    /// Its body.
    #[prost(string, tag = "3")]
    pub body: String,
}

/// `type.v3.HttpStatus`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct HttpStatus {
    /// The status code.
    #[prost(int32, tag = "1")]
    pub code: i32,
}

/// `OkHttpResponse`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct OkHttpResponse {
    /// Request headers to set, add or append.
    #[prost(message, repeated, tag = "2")]
    pub headers: Vec<HeaderValueOption>,
    /// Request headers to remove.
    #[prost(string, repeated, tag = "5")]
    pub headers_to_remove: Vec<String>,
    /// Headers to add to the response.
    #[prost(message, repeated, tag = "6")]
    pub response_headers_to_add: Vec<HeaderValueOption>,
    /// Query parameters to set.
    #[prost(message, repeated, tag = "7")]
    pub query_parameters_to_set: Vec<QueryParameter>,
    /// Query parameters to remove.
    #[prost(string, repeated, tag = "8")]
    pub query_parameters_to_remove: Vec<String>,
}

/// `config.core.v3.QueryParameter`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct QueryParameter {
    /// The key.
    #[prost(string, tag = "1")]
    pub key: String,
    /// The value.
    #[prost(string, tag = "2")]
    pub value: String,
}

/// `config.core.v3.HeaderValueOption`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct HeaderValueOption {
    /// The header.
    #[prost(message, optional, tag = "1")]
    pub header: Option<HeaderValue>,
    /// The deprecated `append` (`google.protobuf.BoolValue`).
    #[prost(message, optional, tag = "2")]
    pub append: Option<BoolValue>,
    /// `append_action`.
    #[prost(int32, tag = "3")]
    pub append_action: i32,
}

/// `config.core.v3.HeaderValue`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct HeaderValue {
    /// The name.
    #[prost(string, tag = "1")]
    pub key: String,
    /// The value, as text.
    #[prost(string, tag = "2")]
    pub value: String,
    /// The value, as bytes (wins when set).
    #[prost(bytes = "vec", tag = "3")]
    pub raw_value: Vec<u8>,
}

impl HeaderValue {
    /// The value.
    pub fn bytes(&self) -> Vec<u8> {
        if self.raw_value.is_empty() { self.value.as_bytes().to_vec() } else { self.raw_value.clone() }
    }

    /// The value, as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.bytes()).into_owned()
    }
}

/// `google.protobuf.BoolValue`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct BoolValue {
    /// The value.
    #[prost(bool, tag = "1")]
    pub value: bool,
}
