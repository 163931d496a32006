//! The services filters and providers call: a `GrpcService` (`envoy_grpc`, a cluster) and
//! an `HttpUri` (a URI, a cluster, a timeout).

use std::time::Duration;

use crate::model::{GrpcService, HttpUri};
use crate::reader::{Ctx, Field};

const GRPC_SERVICE: &[&str] = &["envoy_grpc", "google_grpc", "timeout", "initial_metadata", "retry_policy"];
const ENVOY_GRPC: &[&str] =
    &["cluster_name", "authority", "retry_policy", "max_receive_message_length", "skip_envoy_headers"];
const HTTP_URI: &[&str] = &["uri", "cluster", "timeout"];

/// A `GrpcService` with `envoy_grpc`; its `timeout` read if `with_timeout` (refused
/// otherwise: the caller has no use for it).
pub(crate) fn read_grpc_service(ctx: &mut Ctx, field: &Field<'_>, with_timeout: bool) -> Option<GrpcService> {
    let mut msg = field.message(ctx, GRPC_SERVICE)?;
    let target = msg.required(ctx, "envoy_grpc").and_then(|f| {
        let mut grpc = f.message(ctx, ENVOY_GRPC)?;
        let cluster = grpc.required(ctx, "cluster_name").and_then(|f| cluster_ref(ctx, &f));
        let authority = grpc.get(ctx, "authority").and_then(|f| f.string(ctx)).filter(|a| !a.is_empty());
        grpc.finish(ctx);
        Some((cluster?, authority))
    });
    let timeout = match with_timeout {
        true => msg.get(ctx, "timeout").and_then(|f| f.duration(ctx)).filter(|t| !t.is_zero()),
        false => None,
    };
    msg.finish(ctx);
    let (cluster, authority) = target?;
    Some(GrpcService { cluster, authority, timeout })
}

/// An `HttpUri`: `uri` (as written: callers parse it as they need), `cluster`, `timeout`
/// (required; 1 s if it does not read).
pub(crate) fn read_http_uri(ctx: &mut Ctx, field: &Field<'_>) -> Option<HttpUri> {
    let mut msg = field.message(ctx, HTTP_URI)?;
    let uri = msg.required(ctx, "uri").and_then(|f| f.string(ctx));
    let cluster = msg.required(ctx, "cluster").and_then(|f| cluster_ref(ctx, &f));
    let timeout = msg.required(ctx, "timeout").and_then(|f| f.duration(ctx));
    msg.finish(ctx);
    Some(HttpUri { uri: uri?, cluster: cluster?, timeout: timeout.unwrap_or(Duration::from_secs(1)) })
}

/// A cluster a service is reached through, noted for the check that it exists.
pub(crate) fn cluster_ref(ctx: &mut Ctx, field: &Field<'_>) -> Option<String> {
    let name = field.string(ctx)?;
    if name.is_empty() {
        field.error(ctx, "must not be empty");
        return None;
    }
    ctx.refs.static_cluster_refs.push((name.clone(), field.origin()));
    Some(name)
}
