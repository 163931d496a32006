//! The authorization service the recording upstream plays for `ext_authz`: HTTP checks
//! (paths under [`HTTP_PREFIX`]) and gRPC ones (`envoy.service.auth.v3.Authorization/Check`),
//! each deciding by the path of the request it is asked about. gRPC checks are written
//! down decoded, made comparable (ports, times and stream ids replaced).

use std::collections::BTreeMap;

use bytes::Bytes;
use prost::Message;

/// The prefix HTTP checks come with (the filter's `path_prefix` in the scenarios).
pub const HTTP_PREFIX: &str = "/authz";
/// The gRPC method of checks.
pub const CHECK_PATH: &str = "/envoy.service.auth.v3.Authorization/Check";

/// How the service answers a check about a path: by the path's first segment.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Answer {
    /// Allowed, with headers to pass on (`/allow...`).
    Allow,
    /// Refused, with the service's status, headers and body (`/deny...`).
    Deny,
    /// Refused with nothing but the refusal (`/bare-deny...`; gRPC: no denied response).
    BareDeny,
    /// An HTTP 302 to `/login` (`/redirect...`).
    Redirect,
    /// A failure: HTTP 503 or gRPC UNAVAILABLE (`/fail...`).
    Fail,
    /// An answer after 1 s, past the filter's timeout (`/slow...`).
    Slow,
    /// Bytes that are not a `CheckResponse` (`/garbage...`, gRPC).
    Garbage,
}

fn answer_for(path: &str) -> Answer {
    let first = path.trim_start_matches('/').split(['/', '?']).next().unwrap_or_default();
    match first {
        f if f.starts_with("allow") => Answer::Allow,
        f if f.starts_with("bare-deny") => Answer::BareDeny,
        f if f.starts_with("deny") => Answer::Deny,
        f if f.starts_with("redirect") => Answer::Redirect,
        f if f.starts_with("fail") => Answer::Fail,
        f if f.starts_with("slow") => Answer::Slow,
        f if f.starts_with("garbage") => Answer::Garbage,
        _ => Answer::Allow,
    }
}

/// The HTTP service's answer to a check of `path` (already under [`HTTP_PREFIX`]).
pub async fn http_answer(path: &str) -> http::Response<Bytes> {
    let asked = path.strip_prefix(HTTP_PREFIX).unwrap_or(path);
    let builder = http::Response::builder();
    let response = match answer_for(asked) {
        Answer::Allow | Answer::Garbage => builder
            .status(200)
            .header("x-current-user", "alice")
            .header("x-append", "appended")
            .header("x-client-ok", "yes")
            .header("x-not-allowed", "no")
            .header("x-envoy-auth-headers-to-remove", "x-remove-me, x-remove-too")
            .body(Bytes::from_static(b"allowed")),
        Answer::Deny => builder
            .status(403)
            .header("x-authz-reason", "nope")
            .header("www-authenticate", "Bearer")
            .header("x-hidden", "hidden")
            .header("content-type", "text/html")
            .body(Bytes::from_static(b"denied by authz")),
        Answer::BareDeny => builder.status(401).body(Bytes::new()),
        Answer::Redirect => builder.status(302).header("location", "/login").body(Bytes::new()),
        Answer::Fail => builder.status(503).body(Bytes::from_static(b"service down")),
        Answer::Slow => {
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            builder.status(200).body(Bytes::new())
        }
    };
    response.unwrap_or_else(|_| http::Response::new(Bytes::new()))
}

/// A gRPC check (the request body, framed): what it asks, written down, and the answer's
/// message (or its failure status), after waiting if the path says so.
pub async fn grpc_check(body: &[u8]) -> (String, Result<Vec<u8>, u32>) {
    let request = CheckRequest::decode(body.get(5..).unwrap_or_default()).unwrap_or_default();
    let attributes = request.attributes.unwrap_or_default();
    let http = attributes.request.as_ref().and_then(|r| r.http.clone()).unwrap_or_default();
    let mut text = describe(&attributes, &http);
    let response = match answer_for(&http.path) {
        Answer::Allow | Answer::Redirect => allow(),
        Answer::Deny => deny(true),
        Answer::BareDeny => deny(false),
        Answer::Fail => return (text, Err(14)),
        Answer::Slow => {
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            allow()
        }
        Answer::Garbage => return (text, Ok(vec![0xff, 0xff, 0xff])),
    };
    text.push_str(&format!("authz answer: code {}\n", response.status.as_ref().map_or(0, |s| s.code)));
    (text, Ok(response.encode_to_vec()))
}

/// A check request's attributes, one line each, comparable between proxies.
fn describe(attributes: &AttributeContext, http: &HttpRequest) -> String {
    let address = |peer: &Option<Peer>| {
        let socket = peer.as_ref().and_then(|p| p.address.as_ref()).and_then(|a| a.socket_address.as_ref());
        socket.map_or("none".to_string(), |s| {
            format!("{} port {}", s.address, if s.port_value > 0 { "set" } else { "0" })
        })
    };
    let time = attributes.request.as_ref().and_then(|r| r.time.as_ref()).map_or("none", |_| "set");
    let mut out = format!(
        "authz check: {} {} host {} scheme {} protocol {} size {} id {}\n",
        http.method,
        http.path,
        http.host,
        http.scheme,
        http.protocol,
        http.size,
        if http.id.is_empty() { "empty" } else { "set" }
    );
    out.push_str(&format!(
        "authz source {} service {:?}, destination {}, time {time}, metadata {}\n",
        address(&attributes.source),
        attributes.source.as_ref().map_or("", |p| p.service.as_str()),
        address(&attributes.destination),
        if attributes.metadata_context.is_some() { "set" } else { "none" },
    ));
    for (name, value) in &http.headers {
        let line = crate::normalize::header_line(crate::normalize::UPSTREAM, name, value.as_bytes());
        out.push_str(&format!("authz header {line}\n"));
    }
    if !http.body.is_empty() || !http.raw_body.is_empty() {
        out.push_str(&format!("authz body {:?} raw body {:?}\n", http.body, String::from_utf8_lossy(&http.raw_body)));
    }
    for (key, value) in &attributes.context_extensions {
        out.push_str(&format!("authz context {key}={value}\n"));
    }
    out
}

fn header(key: &str, value: &str, append_action: i32, append: Option<bool>) -> HeaderValueOption {
    HeaderValueOption {
        header: Some(HeaderValue { key: key.into(), value: value.into() }),
        append: append.map(|value| BoolValue { value }),
        append_action,
    }
}

fn allow() -> CheckResponse {
    CheckResponse {
        status: Some(RpcStatus { code: 0 }),
        denied_response: None,
        ok_response: Some(OkHttpResponse {
            headers: vec![
                header("x-current-user", "alice", 0, None),
                header("x-replace", "new", 2, None),
                header("x-if-absent", "added", 1, None),
                header("x-legacy-append", "more", 0, Some(true)),
                header("x-legacy-set", "set", 0, Some(false)),
            ],
            headers_to_remove: vec!["x-remove-me".into(), ":path".into(), "host".into()],
            response_headers_to_add: vec![header("x-client-ok", "yes", 0, None)],
            query_parameters_to_set: vec![QueryParameter { key: "added".into(), value: "1".into() }],
            query_parameters_to_remove: vec!["drop".into()],
        }),
    }
}

fn deny(with_response: bool) -> CheckResponse {
    CheckResponse {
        status: Some(RpcStatus { code: 7 }),
        denied_response: with_response.then(|| DeniedHttpResponse {
            status: Some(HttpStatus { code: 401 }),
            headers: vec![header("www-authenticate", "Bearer", 0, None), header("x-authz-reason", "nope", 0, None)],
            body: "denied by authz".into(),
        }),
        ok_response: None,
    }
}

// `envoy.service.auth.v3`'s messages, the fields the service reads and writes.

#[derive(Clone, PartialEq, prost::Message)]
struct CheckRequest {
    #[prost(message, optional, tag = "1")]
    attributes: Option<AttributeContext>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct AttributeContext {
    #[prost(message, optional, tag = "1")]
    source: Option<Peer>,
    #[prost(message, optional, tag = "2")]
    destination: Option<Peer>,
    #[prost(message, optional, tag = "4")]
    request: Option<AttributeRequest>,
    #[prost(btree_map = "string, string", tag = "10")]
    context_extensions: BTreeMap<String, String>,
    #[prost(bytes = "vec", optional, tag = "11")]
    metadata_context: Option<Vec<u8>>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct Peer {
    #[prost(message, optional, tag = "1")]
    address: Option<PeerAddress>,
    #[prost(string, tag = "2")]
    service: String,
}

#[derive(Clone, PartialEq, prost::Message)]
struct PeerAddress {
    #[prost(message, optional, tag = "1")]
    socket_address: Option<PeerSocket>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct PeerSocket {
    #[prost(string, tag = "2")]
    address: String,
    #[prost(uint32, tag = "3")]
    port_value: u32,
}

#[derive(Clone, PartialEq, prost::Message)]
struct AttributeRequest {
    #[prost(bytes = "vec", optional, tag = "1")]
    time: Option<Vec<u8>>,
    #[prost(message, optional, tag = "2")]
    http: Option<HttpRequest>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct HttpRequest {
    #[prost(string, tag = "1")]
    id: String,
    #[prost(string, tag = "2")]
    method: String,
    #[prost(btree_map = "string, string", tag = "3")]
    headers: BTreeMap<String, String>,
    #[prost(string, tag = "4")]
    path: String,
    #[prost(string, tag = "5")]
    host: String,
    #[prost(string, tag = "6")]
    scheme: String,
    #[prost(int64, tag = "9")]
    size: i64,
    #[prost(string, tag = "10")]
    protocol: String,
    #[prost(string, tag = "11")]
    body: String,
    #[prost(bytes = "vec", tag = "12")]
    raw_body: Vec<u8>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct CheckResponse {
    #[prost(message, optional, tag = "1")]
    status: Option<RpcStatus>,
    #[prost(message, optional, tag = "2")]
    denied_response: Option<DeniedHttpResponse>,
    #[prost(message, optional, tag = "3")]
    ok_response: Option<OkHttpResponse>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct RpcStatus {
    #[prost(int32, tag = "1")]
    code: i32,
}

#[derive(Clone, PartialEq, prost::Message)]
struct DeniedHttpResponse {
    #[prost(message, optional, tag = "1")]
    status: Option<HttpStatus>,
    #[prost(message, repeated, tag = "2")]
    headers: Vec<HeaderValueOption>,
    #[prost(string, tag = "3")]
    body: String,
}

#[derive(Clone, PartialEq, prost::Message)]
struct HttpStatus {
    #[prost(int32, tag = "1")]
    code: i32,
}

#[derive(Clone, PartialEq, prost::Message)]
struct OkHttpResponse {
    #[prost(message, repeated, tag = "2")]
    headers: Vec<HeaderValueOption>,
    #[prost(string, repeated, tag = "5")]
    headers_to_remove: Vec<String>,
    #[prost(message, repeated, tag = "6")]
    response_headers_to_add: Vec<HeaderValueOption>,
    #[prost(message, repeated, tag = "7")]
    query_parameters_to_set: Vec<QueryParameter>,
    #[prost(string, repeated, tag = "8")]
    query_parameters_to_remove: Vec<String>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct QueryParameter {
    #[prost(string, tag = "1")]
    key: String,
    #[prost(string, tag = "2")]
    value: String,
}

#[derive(Clone, PartialEq, prost::Message)]
struct HeaderValueOption {
    #[prost(message, optional, tag = "1")]
    header: Option<HeaderValue>,
    #[prost(message, optional, tag = "2")]
    append: Option<BoolValue>,
    #[prost(int32, tag = "3")]
    append_action: i32,
}

/// `config.core.v3.HeaderValue` (shared with the rate limit service).
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct HeaderValue {
    #[prost(string, tag = "1")]
    pub(crate) key: String,
    #[prost(string, tag = "2")]
    pub(crate) value: String,
}

#[derive(Clone, PartialEq, prost::Message)]
struct BoolValue {
    #[prost(bool, tag = "1")]
    value: bool,
}
