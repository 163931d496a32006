//! What the proxy knows about one stream, and Envoy's attributes computed from it
//! (`request.*`, `response.*`, `source.*`, `destination.*`, `connection.*`,
//! `upstream.*`, `xds.*`, filter state), encoded as Envoy encodes them.

pub mod filter_state;
pub mod metadata;
pub mod node;
pub mod response_flags;

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use wasmproxy_abi::Status;
use wasmproxy_abi::property::PropertyValue;
use wasmproxy_host::{Headers, StreamData};

use crate::http::direction::Direction;
use crate::stream_info::metadata::{MetadataAttributes, RouteAttributes};
use crate::stream_info::response_flags::ResponseFlags;
pub use crate::tls::certificate::TlsInfo;

/// The connection a stream arrived on.
#[derive(Debug, Clone)]
pub struct ConnectionInfo {
    /// Envoy's `connection.id`: unique per process.
    pub id: u64,
    /// The client's address.
    pub peer: SocketAddr,
    /// The address the client connected to.
    pub local: SocketAddr,
    /// The listener's `traffic_direction` (`xds.listener_direction`).
    pub listener_direction: i64,
    /// The filter chain's name (`xds.filter_chain_name`).
    pub filter_chain_name: Rc<str>,
    /// SNI as the TLS inspector read it (`connection.requested_server_name`).
    pub requested_server_name: Option<Box<str>>,
    /// The listener's `metadata` (`xds.listener_metadata`).
    pub listener_metadata: Arc<MetadataAttributes>,
    /// Set by the first request, which tells the protocol.
    pub protocol_known: std::cell::Cell<bool>,
    /// Whether the first request came over HTTP/2.
    pub http2: std::cell::Cell<bool>,
    /// The socket's activity and open streams (for `idle_timeout` and
    /// `request_headers_timeout`).
    pub activity: Rc<crate::http::downstream::Activity>,
    /// The TLS session, once its handshake is done (none on a plain connection).
    pub tls: std::cell::OnceCell<TlsInfo>,
}

/// A `*_certificate` property or `sha256_peer_certificate_digest` of a TLS connection, as
/// Envoy answers it: the subject always (empty without a certificate); the first DNS or
/// URI name and the digest only when there is one.
fn certificate_property(tls: &TlsInfo, field: &[u8]) -> Result<Vec<u8>, Status> {
    let local = || tls.local.as_deref().ok_or(Status::NotFound);
    let peer = || tls.peer.as_deref().ok_or(Status::NotFound);
    let first = |names: &[String]| names.first().cloned().ok_or(Status::NotFound);
    let value = match field {
        b"subject_local_certificate" => tls.local.as_ref().map(|c| c.subject.clone()).unwrap_or_default(),
        b"subject_peer_certificate" => tls.peer.as_ref().map(|c| c.subject.clone()).unwrap_or_default(),
        b"dns_san_local_certificate" => first(&local()?.dns_sans)?,
        b"dns_san_peer_certificate" => first(&peer()?.dns_sans)?,
        b"uri_san_local_certificate" => first(&local()?.uri_sans)?,
        b"uri_san_peer_certificate" => first(&peer()?.uri_sans)?,
        b"sha256_peer_certificate_digest" => peer()?.sha256.clone(),
        _ => return Err(Status::NotFound),
    };
    Ok(PropertyValue::from(value.as_str()).encode())
}

/// One stream, shared by the HTTP connection manager and the plugins' property lookups.
#[derive(Debug)]
pub struct StreamInfo {
    /// The connection.
    pub connection: Rc<ConnectionInfo>,
    /// `HTTP/1.0`, `HTTP/1.1` or `HTTP/2`.
    pub protocol: &'static str,
    /// When the request started.
    pub start: SystemTime,
    started: Instant,
    /// Request body bytes.
    pub request_body_size: u64,
    /// Set once the response headers are known (in a headers callback, the headers the
    /// context holds win).
    pub response_headers: Option<Headers>,
    /// Response body bytes.
    pub response_body_size: u64,
    /// Envoy's response code details (`via_upstream`, `direct_response`, ...).
    pub response_code_details: std::borrow::Cow<'static, str>,
    /// The endpoint the request went to.
    pub upstream: Option<SocketAddr>,
    /// The local address of the upstream connection.
    pub upstream_local: Option<SocketAddr>,
    /// What the upstream connection's TLS handshake settled (`upstream.tls_version`, ...).
    pub upstream_tls: Option<Arc<TlsInfo>>,
    /// Why the upstream connection failed (Envoy's transport failure reason).
    pub upstream_failure: Option<String>,
    /// The client, as the connection manager found it (`x-forwarded-for` or the peer):
    /// `source.address`.
    pub downstream_remote: SocketAddr,
    /// Envoy's response flags (`NR`, `UF`, `UT`, ...).
    pub response_flags: ResponseFlags,
    /// Drawn when the stream starts: which of a route's weighted clusters it takes (the
    /// same each time the route is picked, as Envoy's stream id).
    pub random: u64,
    /// The hash of the route's `hash_policy` for this request, for a hashing load
    /// balancer (none: a random host).
    pub lb_hash: Option<u64>,
    /// The route's `auto_host_rewrite`: the upstream request's host is the endpoint's
    /// hostname.
    pub auto_host_rewrite: bool,
    /// The route's `priority: HIGH`: its cluster's `HIGH` circuit breakers apply.
    pub high_priority: bool,
    /// When the request's last byte came in, from the start.
    pub request_done: Option<std::time::Duration>,
    /// When the upstream's response headers came in, from the start.
    pub upstream_responded: Option<std::time::Duration>,
    /// The matched route (none if none matched).
    pub route: Option<Arc<RouteAttributes>>,
    /// The cluster of the matched route (or the TCP proxy's).
    pub cluster_name: String,
    /// That cluster's `metadata`, once it is known to exist.
    pub cluster_metadata: Option<Arc<MetadataAttributes>>,
    /// Set when the stream is complete.
    pub duration: Option<std::time::Duration>,
    /// Filter state by key: what `proxy_set_property` writes (Envoy's `wasm.<path>`
    /// objects) and `set_envoy_filter_state` creates; `None` for an object that exists but
    /// cannot be read back.
    pub filter_state: HashMap<Vec<u8>, Option<Vec<u8>>>,
    /// Property names declared by the `declare_property` foreign function.
    pub declared: std::collections::HashSet<Vec<u8>>,
}

/// A stream's info, shared on one worker.
pub type StreamRef = Rc<RefCell<StreamInfo>>;

impl StreamInfo {
    /// The stream is reset after its response started: an HTTP/1 connection closes at
    /// once, since hyper may be waiting to write to a client that reads nothing (HTTP/2
    /// resets the stream alone, by its body).
    pub fn reset_downstream(&self) {
        if self.protocol != "HTTP/2" {
            self.connection.activity.reset();
        }
    }

    /// A new stream on a connection.
    pub fn new(connection: Rc<ConnectionInfo>, protocol: &'static str) -> StreamInfo {
        let downstream_remote = connection.peer;
        StreamInfo {
            downstream_remote,
            connection,
            protocol,
            start: SystemTime::now(),
            started: Instant::now(),
            request_body_size: 0,
            response_headers: None,
            response_body_size: 0,
            response_code_details: std::borrow::Cow::Borrowed(""),
            upstream: None,
            upstream_local: None,
            upstream_tls: None,
            upstream_failure: None,
            response_flags: ResponseFlags::default(),
            random: crate::random::next_u64(),
            lb_hash: None,
            auto_host_rewrite: false,
            high_priority: false,
            request_done: None,
            upstream_responded: None,
            route: None,
            cluster_name: String::new(),
            cluster_metadata: None,
            duration: None,
            filter_state: HashMap::new(),
            declared: Default::default(),
        }
    }

    /// The stream's duration, or the time since it started if it is not complete.
    pub fn elapsed(&self) -> std::time::Duration {
        self.duration.unwrap_or_else(|| self.started.elapsed())
    }

    /// The time since the stream started.
    pub fn since_start(&self) -> std::time::Duration {
        self.started.elapsed()
    }

    /// Counts body bytes (`request.size`, `response.size`).
    pub fn count_body(&mut self, direction: Direction, bytes: usize) {
        match direction {
            Direction::Request => self.request_body_size += bytes as u64,
            Direction::Response => self.response_body_size += bytes as u64,
        }
    }

    /// The request's last byte is in.
    pub fn note_request_done(&mut self) {
        self.request_done = Some(self.started.elapsed());
    }

    /// Marks the stream complete (for `request.duration`).
    pub fn complete(&mut self) {
        self.duration = Some(self.started.elapsed());
    }

    /// Envoy's value for an attribute path, encoded; NOT_FOUND for what is not known.
    /// `data` is what the asking context holds now: the request headers are readable
    /// exactly when it holds them (the request-headers phase, a pause in it, the
    /// access-log phase), as in Envoy.
    pub fn property(&self, path: &[&[u8]], data: Option<&StreamData>) -> Result<Vec<u8>, Status> {
        let text = |s: &str| Ok(PropertyValue::from(s));
        let value: Result<PropertyValue, Status> = match path {
            [b"request", field, rest @ ..] => {
                return self.request(field, rest, data.and_then(|d| d.request_headers.as_ref()));
            }
            [b"response", field, rest @ ..] => {
                let held = data.and_then(|d| d.response_headers.as_ref());
                return self.response(field, rest, held.or(self.response_headers.as_ref()));
            }
            [b"source", b"address"] => text(&self.downstream_remote.to_string()),
            [b"source", b"port"] => Ok(PropertyValue::Int(self.downstream_remote.port().into())),
            [b"destination", b"address"] => text(&self.connection.local.to_string()),
            [b"destination", b"port"] => Ok(PropertyValue::Int(self.connection.local.port().into())),
            [b"connection", b"id"] => Ok(PropertyValue::Uint(self.connection.id)),
            [b"connection", b"mtls"] => {
                Ok(PropertyValue::Bool(self.connection.tls.get().is_some_and(|t| t.peer.is_some())))
            }
            [b"connection", field] if field.ends_with(b"_certificate") || field.ends_with(b"_digest") => {
                return certificate_property(self.connection.tls.get().ok_or(Status::NotFound)?, field);
            }
            [b"upstream", b"tls_version"] => text(self.upstream_tls.as_ref().ok_or(Status::NotFound)?.version),
            [b"upstream", field] if field.ends_with(b"_certificate") || field.ends_with(b"_digest") => {
                return certificate_property(self.upstream_tls.as_ref().ok_or(Status::NotFound)?, field);
            }
            // As in Envoy, only the TLS inspector (a listener filter) records it.
            [b"connection", b"requested_server_name"] => {
                text(self.connection.requested_server_name.as_deref().unwrap_or(""))
            }
            [b"connection", b"tls_version"] => text(self.connection.tls.get().ok_or(Status::NotFound)?.version),
            [b"upstream", b"address"] => {
                self.upstream.map(|u| PropertyValue::from(u.to_string())).ok_or(Status::NotFound)
            }
            [b"upstream", b"port"] => {
                self.upstream.map(|u| PropertyValue::Int(u.port().into())).ok_or(Status::NotFound)
            }
            [b"xds", b"listener_direction"] => Ok(PropertyValue::Int(self.connection.listener_direction)),
            [b"xds", b"filter_chain_name"] => text(&self.connection.filter_chain_name),
            [b"xds", b"listener_metadata", rest @ ..] => return self.connection.listener_metadata.property(rest),
            // Dynamic metadata (no filter of wasmproxy's sets any) reads as an empty message.
            [b"metadata"] => text(""),
            [b"xds", b"route_name"] => text(&self.route.as_ref().ok_or(Status::NotFound)?.name),
            [b"xds", b"route_metadata", rest @ ..] => {
                return self.route.as_ref().ok_or(Status::NotFound)?.metadata.property(rest);
            }
            [b"xds", b"virtual_host_name"] => text(&self.route.as_ref().ok_or(Status::NotFound)?.virtual_host_name),
            [b"xds", b"virtual_host_metadata", rest @ ..] => {
                return self.route.as_ref().ok_or(Status::NotFound)?.virtual_host_metadata.property(rest);
            }
            [b"xds", b"cluster_name"] if !self.cluster_name.is_empty() => text(&self.cluster_name),
            [b"xds", b"cluster_metadata", rest @ ..] => {
                return self.cluster_metadata.as_ref().ok_or(Status::NotFound)?.property(rest);
            }
            [b"xds", b"upstream_host_metadata"] if self.upstream.is_some() => text(""),
            // Envoy cannot serialize the filter-state map as a whole.
            [b"filter_state"] => Err(Status::SerializationFailure),
            [b"filter_state", key] => return self.filter_state.get(*key).cloned().flatten().ok_or(Status::NotFound),
            [name] => return self.filter_state.get(&filter_state_key(name)).cloned().flatten().ok_or(Status::NotFound),
            _ => Err(Status::NotFound),
        };
        value.map(|v| v.encode())
    }

    fn request(&self, field: &[u8], rest: &[&[u8]], headers: Option<&Headers>) -> Result<Vec<u8>, Status> {
        match field {
            b"protocol" | b"time" | b"duration" | b"size" | b"total_size" => {}
            _ if headers.is_none() => return Err(Status::NotFound),
            _ => {}
        }
        let empty = Headers::new();
        let h = headers.unwrap_or(&empty);
        let header = |name: &[u8]| h.get(name).map(|v| PropertyValue::Bytes(v.to_vec())).ok_or(Status::NotFound);
        let full_path = h.get(b":path").unwrap_or_default();
        let (path, query) = match full_path.iter().position(|b| *b == b'?') {
            Some(i) => (&full_path[..i], &full_path[i + 1..]),
            None => (full_path, &b""[..]),
        };
        let value = match (field, rest) {
            (b"headers", []) => PropertyValue::Map(header_map(h)),
            (b"headers", [name]) => return joined_header(h, name),
            (b"path", []) => header(b":path")?,
            (b"url_path", []) => PropertyValue::Bytes(path.to_vec()),
            (b"query", []) => PropertyValue::Bytes(query.to_vec()),
            (b"host", []) => header(b":authority")?,
            (b"scheme", []) => header(b":scheme")?,
            (b"method", []) => header(b":method")?,
            (b"referer", []) => header(b"referer")?,
            (b"useragent", []) => header(b"user-agent")?,
            (b"id", []) => header(b"x-request-id")?,
            (b"protocol", []) => PropertyValue::from(self.protocol),
            (b"time", []) => PropertyValue::Nanos(nanos(self.start)),
            (b"duration", []) => PropertyValue::Nanos(self.duration.ok_or(Status::NotFound)?.as_nanos() as i64),
            (b"size", []) => PropertyValue::Int(self.request_body_size as i64),
            (b"total_size", []) => PropertyValue::Int((self.request_body_size + h.byte_size() as u64) as i64),
            _ => return Err(Status::NotFound),
        };
        Ok(value.encode())
    }

    fn response(&self, field: &[u8], rest: &[&[u8]], headers: Option<&Headers>) -> Result<Vec<u8>, Status> {
        let h = headers.ok_or(Status::NotFound)?;
        let value = match (field, rest) {
            (b"code", []) => {
                let code = h.get(b":status").and_then(|s| std::str::from_utf8(s).ok()?.parse::<i64>().ok());
                PropertyValue::Int(code.ok_or(Status::NotFound)?)
            }
            (b"code_details", []) => PropertyValue::from(&*self.response_code_details),
            (b"grpc_status", []) => PropertyValue::Int(grpc_status(h)),
            (b"flags", []) => PropertyValue::Int(self.response_flags.bits() as i64),
            (b"headers", []) => PropertyValue::Map(header_map(h)),
            (b"headers", [name]) => return joined_header(h, name),
            (b"size", []) => PropertyValue::Int(self.response_body_size as i64),
            (b"total_size", []) => PropertyValue::Int((self.response_body_size + h.byte_size() as u64) as i64),
            _ => return Err(Status::NotFound),
        };
        Ok(value.encode())
    }
}

/// `response.grpc_status`: the `grpc-status` header if the response has one, else Envoy's
/// mapping of the HTTP status (`Grpc::Utility::httpToGrpcStatus`).
fn grpc_status(h: &Headers) -> i64 {
    let number = |name: &[u8]| h.get(name).and_then(|v| std::str::from_utf8(v).ok()?.parse::<i64>().ok());
    if let Some(status) = number(b"grpc-status") {
        return status;
    }
    let status = number(b":status").and_then(|s| u16::try_from(s).ok()).unwrap_or(0);
    i64::from(crate::http::reply::grpc_status_of_http(status))
}

/// Envoy's filter-state key for a property a plugin sets: `wasm.<path>`.
pub fn filter_state_key(path: &[u8]) -> Vec<u8> {
    let mut key = b"wasm.".to_vec();
    key.extend_from_slice(path);
    key
}

/// A header map as Envoy serializes it for `request.headers`: one entry per name, values
/// of repeated names joined with `,`.
fn header_map(h: &Headers) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut out: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
    for (k, v) in h.iter() {
        match out.iter_mut().find(|(name, _)| name == k) {
            Some((_, joined)) => {
                joined.push(b',');
                joined.extend_from_slice(v);
            }
            None => out.push((k.to_vec(), v.to_vec())),
        }
    }
    out
}

fn joined_header(h: &Headers, name: &[u8]) -> Result<Vec<u8>, Status> {
    header_map(h).into_iter().find(|(k, _)| k == name).map(|(_, v)| v).ok_or(Status::NotFound)
}

fn nanos(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as i64).unwrap_or(0)
}
