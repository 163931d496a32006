//! The HTTP authorization service: the request's method, path (after `path_prefix`) and
//! allowed headers sent with no body; 200 allows, 5xx (or no answer) is an error, anything
//! else denies with the service's answer.

use bytes::Bytes;
use wasmproxy_config::model::HttpAuthzService;
use wasmproxy_host::Headers;

use super::{Action, Changes, Config, Decision, Mutation};
use crate::http::reply::LocalReply;
use crate::matcher::ValueMatchers;
use crate::upstream::cluster::Clusters;

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

/// Asks `service` about the request `headers`.
pub(super) async fn check(
    config: &Config,
    service: &HttpAuthzService,
    lists: &Lists,
    clusters: &Clusters,
    headers: &Headers,
    body: Option<&Bytes>,
) -> Decision {
    let Some(cluster) = clusters.get(&service.server.cluster) else { return Decision::Error };
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
    let started = std::time::Instant::now();
    let response = match cluster.send(&request, body, Some(timeout), true).await {
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
