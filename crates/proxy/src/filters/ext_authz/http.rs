//! The HTTP authorization service: the request's method, path (after `path_prefix`) and
//! allowed headers sent with no body; 200 allows, 5xx (or no answer) is an error, anything
//! else denies with the service's answer.

use std::net::SocketAddr;

use bytes::Bytes;
use wasmproxy_config::model::HttpAuthzService;
use wasmproxy_host::Headers;

use super::{Action, Changes, Config, Decision, Mutation};
use crate::http::reply::LocalReply;
use crate::matcher::ValueMatchers;
use crate::stream_info::response_flags::ResponseFlags;
use crate::tracer::{CallSpan, ParentSpan};
use crate::upstream::cluster::{Clusters, Picked, UpstreamResponse};
use crate::upstream::error::{UpstreamError, upstream_error_reply};

/// The request headers an HTTP service always gets.
const DEFAULT_HEADERS: &[&str] = &["authorization", ":method", ":path", ":authority"];
/// What a denial always passes on when the service's headers are filtered.
const ALWAYS_TO_CLIENT: &[&str] = &[":status", "content-length", "www-authenticate", "location"];
/// The header naming the request headers an allowing service wants removed.
const HEADERS_TO_REMOVE: &[u8] = b"x-envoy-auth-headers-to-remove";

/// The service's `authorization_response` lists, compiled.
pub struct Lists {
    upstream: ValueMatchers,
    upstream_append: ValueMatchers,
    client: ValueMatchers,
    client_on_success: ValueMatchers,
}

impl Lists {
    /// Compiles the lists of `service`.
    pub fn new(service: &HttpAuthzService) -> Result<Lists, (String, regex::Error)> {
        Ok(Lists {
            upstream: ValueMatchers::new(&service.allowed_upstream_headers)?,
            upstream_append: ValueMatchers::new(&service.allowed_upstream_headers_to_append)?,
            client: ValueMatchers::new(&service.allowed_client_headers)?,
            client_on_success: ValueMatchers::new(&service.allowed_client_headers_on_success)?,
        })
    }
}

/// Asks `service` about the request `headers` (and `body`); under `parent`, the call is a
/// span as Envoy's async HTTP client makes it, tagged with the check's outcome.
pub(super) async fn check(
    config: &Config,
    service: &HttpAuthzService,
    lists: &Lists,
    clusters: &Clusters,
    (headers, body): (&Headers, Option<&Bytes>),
    parent: Option<&ParentSpan>,
) -> Decision {
    let name = &service.server.cluster;
    let Some(cluster) = clusters.get(name) else { return Decision::Error };
    let mut request = Headers::new();
    for (name, value) in super::joined(headers) {
        if !config.sends(&name, DEFAULT_HEADERS) || name == "content-length" || name == "x-envoy-auth-partial-body" {
            continue;
        }
        match name.as_str() {
            ":path" => request.add(b":path", format!("{}{value}", service.path_prefix).as_bytes()),
            _ => request.add(name.as_bytes(), value.as_bytes()),
        }
    }
    if request.get(b":scheme").is_none() {
        request.add(b":scheme", b"http");
    }
    for (name, value) in &service.headers_to_add {
        request.replace(name.as_bytes(), value.as_bytes());
    }
    // The body, if sent, whole; Envoy's async client goes through its router: an internal
    // request, with the time it may take.
    if body.is_some() {
        request.add(b"x-envoy-auth-partial-body", b"false");
    }
    let body = body.cloned().unwrap_or_default();
    request.add(b"content-length", body.len().to_string().as_bytes());
    request.add(b"x-envoy-internal", b"true");
    let timeout = service.server.timeout;
    request.add(b"x-envoy-expected-rq-timeout-ms", timeout.as_millis().to_string().as_bytes());
    let span = parent.map(|p| p.child(format!("async {name} egress")));
    if let Some(span) = &span {
        span.inject(&mut request);
    }
    let started = std::time::Instant::now();
    let picked = Picked::default();
    let sent = cluster.send_noting(&request, body, Some(timeout), &picked).await;
    if let Some(span) = span {
        end_span(span, name, picked.get(), &sent);
    }
    let response = match sent {
        Ok(r) => r,
        Err(e) => {
            tracing::debug!("ext_authz: the HTTP service failed: {e:?}");
            return Decision::Error;
        }
    };
    let mut answer = response.headers;
    answer.add(b"x-envoy-upstream-service-time", started.elapsed().as_millis().to_string().as_bytes());
    let status = crate::http::convert::status(&answer).as_u16();
    if status >= 500 {
        return Decision::Error;
    }
    if status != 200 {
        return Decision::Denied(denial(config, lists, status, &answer, response.body.to_vec()));
    }
    let mut changes = Changes::default();
    if let Some(list) = answer.get(HEADERS_TO_REMOVE) {
        let list = String::from_utf8_lossy(list);
        changes.remove = list.split(',').map(|n| n.trim().to_ascii_lowercase()).filter(|n| !n.is_empty()).collect();
    }
    for (name, value) in answer.iter().filter(|(n, _)| *n != HEADERS_TO_REMOVE) {
        let text = String::from_utf8_lossy(name);
        let mutation = |action| Mutation { name: name.to_vec(), value: value.to_vec(), action };
        if lists.upstream.any(&text) {
            changes.request.push(mutation(Action::Set));
        }
        if lists.upstream_append.any(&text) {
            changes.request.push(mutation(Action::Add));
        }
        if lists.client_on_success.any(&text) {
            changes.response.push(mutation(Action::Add));
        }
    }
    // Envoy sets before it adds.
    changes.request.sort_by_key(|m| m.action != Action::Set);
    Decision::Ok(changes)
}

/// A denial's answer: the service's status and body, and its headers (all of them, or
/// those `allowed_client_headers` picks and the few always passed).
fn denial(config: &Config, lists: &Lists, status: u16, answer: &Headers, mut body: Vec<u8>) -> LocalReply {
    let mut headers = Headers::new();
    for (name, value) in answer.iter() {
        let text = String::from_utf8_lossy(name);
        let passed = match lists.client.is_empty() {
            true => text != ":authority",
            false => ALWAYS_TO_CLIENT.contains(&text.as_ref()) || lists.client.any(&text),
        };
        if passed && !text.starts_with(':') && text != "content-length" {
            headers.add(name, value);
        }
    }
    let limit = config.config.max_denied_response_body_bytes;
    if limit > 0 {
        body.truncate(limit);
    }
    LocalReply { status, body, headers, grpc_status: None }
}

/// Ends the check's span with the tags ext_authz and Envoy's async client give it: the
/// outcome, then the call's (a failed call: the status and flag of the reply Envoy's router
/// makes for it).
fn end_span(
    mut span: CallSpan,
    cluster: &str,
    upstream: Option<SocketAddr>,
    sent: &Result<UpstreamResponse, UpstreamError>,
) {
    let (status, flag) = match sent {
        Ok(r) => (crate::http::convert::status(&r.headers).as_u16(), None),
        // The reply Envoy's router makes for the failure.
        Err(e) => (crate::http::convert::status(&upstream_error_reply(e, false).0).as_u16(), e.response_flag()),
    };
    let reason = http::StatusCode::from_u16(status).ok().and_then(|s| s.canonical_reason());
    span.tag("ext_authz_http_status", reason.unwrap_or("Unknown"));
    span.tag("ext_authz_status", if status == 200 { "ext_authz_ok" } else { "ext_authz_unauthorized" });
    let mut flags = ResponseFlags::default();
    if let Some(flag) = flag {
        flags.set(flag);
    }
    span.http_result(cluster, upstream, Some(status), &flags.short_string());
    span.finish();
}
