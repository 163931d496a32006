//! The gRPC authorization service (`envoy.service.auth.v3.Authorization/Check`): the
//! request's attributes sent, the `CheckResponse` read into a decision.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::UNIX_EPOCH;

use bytes::Bytes;
use prost::Message;
use wasmproxy_config::model::GrpcService;
use wasmproxy_host::Headers;

use super::wire::{
    Address, AttributeContext, CheckRequest, CheckResponse, HeaderValueOption, HttpRequest, Metadata, Peer, Request,
    SocketAddress, Timestamp,
};
use super::{Action, Changes, Config, Decision, Mutation};
use crate::http::reply::LocalReply;
use crate::stream_info::StreamRef;
use crate::tracer::{CallSpan, ParentSpan};
use crate::upstream::cluster::Clusters;
use crate::upstream::grpc::call_service;

/// The `CheckRequest` for a stream whose request `headers` are these.
pub(super) fn check_request(
    config: &Config,
    headers: &Headers,
    body: Option<&Bytes>,
    info: &StreamRef,
    context_extensions: &BTreeMap<String, String>,
) -> CheckRequest {
    let i = info.borrow();
    let text = |name: &[u8]| String::from_utf8_lossy(headers.get(name).unwrap_or_default()).into_owned();
    let since = i.start.duration_since(UNIX_EPOCH).unwrap_or_default();
    let mut sent: BTreeMap<String, String> =
        super::joined(headers).into_iter().filter(|(n, _)| config.sends(n, &[])).collect();
    let pack_as_bytes = config.config.with_request_body.is_some_and(|b| b.pack_as_bytes);
    if body.is_some() {
        sent.insert("x-envoy-auth-partial-body".into(), "false".into());
    }
    let http = HttpRequest {
        id: i.random.to_string(),
        method: text(b":method"),
        headers: sent,
        path: text(b":path"),
        host: text(b":authority"),
        scheme: text(b":scheme"),
        size: body.map_or(0, |b| b.len() as i64),
        protocol: i.protocol.to_string(),
        body: body.filter(|_| !pack_as_bytes).map(|b| String::from_utf8_lossy(b).into_owned()).unwrap_or_default(),
        raw_body: body.filter(|_| pack_as_bytes).map(|b| b.to_vec()).unwrap_or_default(),
    };
    let peer = |address: SocketAddr, service: String| Peer {
        address: Some(Address {
            socket_address: Some(SocketAddress {
                address: address.ip().to_string(),
                port_value: u32::from(address.port()),
            }),
        }),
        service,
    };
    CheckRequest {
        attributes: Some(AttributeContext {
            source: Some(peer(i.connection.peer, text(b"x-envoy-downstream-service-cluster"))),
            destination: Some(peer(i.connection.local, String::new())),
            request: Some(Request {
                time: Some(Timestamp { seconds: since.as_secs() as i64, nanos: since.subsec_nanos() as i32 }),
                http: Some(http),
            }),
            context_extensions: context_extensions.clone(),
            metadata_context: Some(Metadata {}),
        }),
    }
}

/// Sends `request` to `service` and reads its answer; under `parent`, the call is a span
/// tagged with its status and the check's (`ext_authz_status`).
pub(super) async fn check(
    service: &GrpcService,
    request: CheckRequest,
    clusters: &Clusters,
    parent: Option<&ParentSpan>,
) -> Decision {
    let method = ("envoy.service.auth.v3.Authorization", "Check");
    let span = parent.map(|p| p.grpc_child(service, method));
    let inject = CallSpan::injector(span.as_ref());
    let answer = call_service(clusters, service, method, request.encode_to_vec(), service.timeout, inject).await;
    let status = answer.as_ref().err().map_or(0, |(status, _)| *status);
    let decoded = answer.is_ok();
    let decision = match answer {
        Ok(response) => decide(response),
        Err((status, e)) => {
            tracing::debug!("ext_authz: the gRPC service failed: status {status}: {e}");
            Decision::Error
        }
    };
    if let Some(mut span) = span {
        span.grpc_status(status);
        if decoded {
            let ok = matches!(decision, Decision::Ok(_));
            span.tag("ext_authz_status", if ok { "ext_authz_ok" } else { "ext_authz_unauthorized" });
        }
        span.finish();
    }
    decision
}

/// A `CheckResponse` as a decision: OK allows with `ok_response`'s changes; any other
/// status denies with `denied_response` (403 unless it says).
fn decide(response: CheckResponse) -> Decision {
    if response.status.as_ref().is_none_or(|s| s.code == 0) {
        let ok = response.ok_response.unwrap_or_default();
        return Decision::Ok(Changes {
            request: ok.headers.iter().filter_map(|o| mutation(o, true)).collect(),
            remove: ok.headers_to_remove.iter().map(|n| n.to_ascii_lowercase()).collect(),
            response: ok.response_headers_to_add.iter().filter_map(|o| mutation(o, false)).collect(),
            query_set: ok.query_parameters_to_set.into_iter().map(|p| (p.key, p.value)).collect(),
            query_remove: ok.query_parameters_to_remove,
        });
    }
    let denied = response.denied_response.unwrap_or_default();
    let status = denied.status.map_or(0, |s| s.code);
    let status = if (100..=999).contains(&status) { status as u16 } else { 403 };
    // The service's headers replace any of the same name, then repeat as given.
    let mut headers = Headers::new();
    for m in denied.headers.iter().filter_map(|o| mutation(o, false)) {
        headers.add(&m.name, &m.value);
    }
    Decision::Denied(LocalReply { status, body: denied.body.into_bytes(), headers, grpc_status: None })
}

/// A `HeaderValueOption` as a change (`request`: of the request headers, where the
/// deprecated `append: true` joins values).
fn mutation(option: &HeaderValueOption, request: bool) -> Option<Mutation> {
    let header = option.header.as_ref()?;
    if header.key.is_empty() {
        return None;
    }
    let value = header.bytes();
    let action = match (&option.append, option.append_action) {
        (Some(append), _) if append.value && request => Action::Join,
        (Some(append), _) if append.value => Action::Add,
        (Some(_), _) => Action::Set,
        (None, 1) => Action::AddIfAbsent,
        (None, 2) => Action::Set,
        (None, 3) => Action::SetIfPresent,
        (None, _) => Action::Add,
    };
    Some(Mutation { name: header.key.to_ascii_lowercase().into_bytes(), value, action })
}
