//! `envoy.filters.http.ext_authz` between two plugins, against the authorization service
//! the recording upstream plays (`wasmproxy_conformance::authz`): what it is asked (the
//! HTTP check request, the gRPC `CheckRequest`), what the plugins, the client and the
//! upstream see for each of its answers, and the stats.

use wasmproxy_conformance::client::Request;

use crate::native_filters::{between_probes, native};
use crate::scenario::{CATCH_ALL, CODE_FLAGS_LOG, Scenario};

pub(crate) const EXT_AUTHZ: &str = "envoy.extensions.filters.http.ext_authz.v3.ExtAuthz";
pub(crate) const PER_ROUTE: &str =
    "\"@type\": type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthzPerRoute";

/// The stats compared.
const STATS: &[&str] = &[
    r"^http\.ingress\.ext_authz\.",
    r"^cluster\.[a-z]+\.ext_authz\.",
    r"^cluster\.upstream\.upstream_rq_([0-9]{3}|[0-9]xx):",
];

/// Every ext_authz scenario.
pub fn scenarios() -> Vec<Scenario> {
    vec![http_service(), grpc_service(), failure_modes()]
}

/// The routes: `/public` with checks off, `/ctx` with context extensions (its virtual
/// host's and its own), then the rest.
fn routes() -> String {
    format!(
        r#"              - match: {{ prefix: /public }}
                route: {{ cluster: upstream }}
                typed_per_filter_config:
                  envoy.filters.http.ext_authz: {{ {PER_ROUTE}, disabled: true }}
              - match: {{ prefix: /ctx }}
                route: {{ cluster: upstream }}
                typed_per_filter_config:
                  envoy.filters.http.ext_authz: {{ {PER_ROUTE}, check_settings: {{ context_extensions: {{ route: ctx, shared: route }} }} }}
{CATCH_ALL}"#
    )
}

/// The bootstrap: `filters` between two probes, the routes above, the virtual host's own
/// context extensions.
fn config(filters: &str) -> String {
    let vhost = format!(
        r#"              domains: ["*"]
              typed_per_filter_config:
                envoy.filters.http.ext_authz: {{ {PER_ROUTE}, check_settings: {{ context_extensions: {{ vhost: all, shared: vhost }} }} }}
"#
    );
    let chain = between_probes(filters);
    crate::scenario::bootstrap_hcm("", CODE_FLAGS_LOG, &chain)
        .replacen("              domains: [\"*\"]\n", &vhost, 1)
        .replacen(CATCH_ALL, &routes(), 1)
}

/// The requests every scenario sends: one for each of the service's answers.
fn requests() -> Vec<Request> {
    vec![
        Request::get("/allow/1?drop=1&keep=2")
            .header("x-user", "bob")
            .header("x-user", "carol")
            .header("authorization", "Bearer token")
            .header("x-remove-me", "1")
            .header("x-remove-too", "2")
            .header("x-replace", "old")
            .header("x-legacy-append", "first")
            .header("x-other", "not sent"),
        Request::post("/allow/post", ""),
        Request::post("/allow/body", "small body"),
        Request::post("/allow/big", "a body longer than the service takes"),
        Request::get("/deny/1").header("x-user", "mallory"),
        Request::get("/bare-deny/1"),
        Request::get("/redirect/1"),
        Request::get("/fail/1"),
        Request::get("/slow/1"),
        Request::get("/garbage/1"),
        Request::get("/ctx/1"),
        Request::get("/public/1"),
        Request::get("/direct"),
        Request::post("/deny/grpc", "").header("content-type", "application/grpc").header("te", "trailers"),
    ]
}

/// An HTTP service: the headers it is sent (the defaults, `allowed_headers`, one added),
/// the path under `path_prefix`, and what each answer does: headers set and appended
/// upstream, removed, added to the response; a denial's status, body and the headers
/// `allowed_client_headers` lets through; 5xx and a timeout as errors (403).
fn http_service() -> Scenario {
    let body = r#"              http_service:
                server_uri: { uri: "http://authz.test", cluster: upstream, timeout: 0.25s }
                path_prefix: /authz
                authorization_request:
                  headers_to_add: [{ key: x-authz-static, value: "yes" }]
                authorization_response:
                  allowed_upstream_headers: { patterns: [{ exact: x-current-user }] }
                  allowed_upstream_headers_to_append: { patterns: [{ exact: x-append }] }
                  allowed_client_headers: { patterns: [{ exact: x-authz-reason }] }
                  allowed_client_headers_on_success: { patterns: [{ exact: x-client-ok }] }
              allowed_headers: { patterns: [{ exact: x-user }, { prefix: x-remove }] }
              with_request_body: { max_request_bytes: 20 }
"#;
    let filter = native("envoy.filters.http.ext_authz", EXT_AUTHZ, body);
    let scenario = crate::scenarios::s(
        "ext_authz_http",
        "envoy.filters.http.ext_authz with an HTTP service between two plugins: allowed, denied, redirected, failed, too slow, turned off by a route",
        config(&filter),
        requests(),
    );
    Scenario { stats: STATS, ..scenario }
}

/// A gRPC service: the `CheckRequest` (attributes, headers, context extensions merged from
/// the virtual host and the route), an allowing answer's header actions, removals and
/// query changes, denials with and without a response, UNAVAILABLE, a timeout and an
/// answer that does not decode as errors.
fn grpc_service() -> Scenario {
    let body = r#"              transport_api_version: V3
              grpc_service: { envoy_grpc: { cluster_name: grpc }, timeout: 0.25s }
              with_request_body: { max_request_bytes: 20, pack_as_bytes: true }
"#;
    let filter = native("envoy.filters.http.ext_authz", EXT_AUTHZ, body);
    let scenario = crate::scenarios::s(
        "ext_authz_grpc",
        "envoy.filters.http.ext_authz with a gRPC service between two plugins: the CheckRequest, header and query changes, denials, errors",
        config(&filter),
        requests(),
    );
    Scenario { stats: STATS, ..scenario }
}

/// Services that cannot be reached: one allowing on failure (marking the request), one
/// refusing with `status_on_error`, turned off by a route; each counting under its own
/// `stat_prefix`.
fn failure_modes() -> Scenario {
    let open = r#"              grpc_service: { envoy_grpc: { cluster_name: closed }, timeout: 0.25s }
              failure_mode_allow: true
              failure_mode_allow_header_add: true
              stat_prefix: open
"#;
    let closed = r#"              http_service:
                server_uri: { uri: "http://closed.test", cluster: closed, timeout: 0.25s }
              status_on_error: { code: 503 }
              stat_prefix: closed
"#;
    let filters =
        [native("authz-open", EXT_AUTHZ, open), native("envoy.filters.http.ext_authz", EXT_AUTHZ, closed)].concat();
    let scenario = crate::scenarios::s(
        "ext_authz_failure_modes",
        "two ext_authz filters whose services are down: failure_mode_allow with its header, status_on_error, a route turning one off",
        config(&filters),
        vec![Request::get("/public/1"), Request::get("/strict/1")],
    );
    Scenario { stats: STATS, ..scenario }
}
