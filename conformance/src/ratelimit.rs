//! `envoy.filters.http.ratelimit` between two plugins, against the rate limit service the
//! recording upstream plays (`wasmproxy_conformance::ratelimit_service`): the descriptors
//! routes and virtual hosts make, what the service's answers do, and the stats.

use wasmproxy_conformance::client::Request;

use crate::native_filters::{between_probes, native};
use crate::scenario::{CATCH_ALL, CODE_FLAGS_LOG, Scenario};

pub(crate) const RATE_LIMIT: &str = "envoy.extensions.filters.http.ratelimit.v3.RateLimit";

/// Every rate limit scenario.
pub fn scenarios() -> Vec<Scenario> {
    vec![ratelimit(), ratelimit_failure_mode_deny()]
}

/// The bootstrap: the filter (`body`) between two probes; a virtual host with a generic key;
/// routes with descriptors of each action, one including its virtual host's, one of another
/// stage.
fn config(body: &str) -> String {
    let vhost = r#"              domains: ["*"]
              rate_limits: [{ actions: [{ generic_key: { descriptor_value: vhost } }] }]
"#;
    let routes = format!(
        r#"              - match: {{ prefix: /limited }}
                route:
                  cluster: upstream
                  rate_limits:
                  - actions: [{{ request_headers: {{ header_name: x-decision, descriptor_key: decision }} }}, {{ destination_cluster: {{}} }}, {{ source_cluster: {{}} }}]
                  - actions: [{{ remote_address: {{}} }}, {{ request_headers: {{ header_name: x-maybe, descriptor_key: maybe, skip_if_absent: true }} }}]
                  - actions: [{{ header_value_match: {{ descriptor_value: matched, headers: [{{ name: x-match, present_match: true }}] }} }}]
                  - actions: [{{ header_value_match: {{ descriptor_key: unmatched, descriptor_value: "no x-match", expect_match: false, headers: [{{ name: x-match, present_match: true }}] }} }}]
              - match: {{ prefix: /both }}
                route: {{ cluster: upstream, include_vh_rate_limits: true, rate_limits: [{{ actions: [{{ generic_key: {{ descriptor_key: k, descriptor_value: both }} }}] }}] }}
              - match: {{ prefix: /stage1 }}
                route: {{ cluster: upstream, rate_limits: [{{ stage: 1, actions: [{{ generic_key: {{ descriptor_value: stage1 }} }}] }}] }}
              - match: {{ prefix: /direct-limited }}
                direct_response: {{ status: 200 }}
{CATCH_ALL}"#
    );
    let chain = between_probes(&native("envoy.filters.http.ratelimit", RATE_LIMIT, body));
    crate::scenario::bootstrap_hcm("node: { id: conformance, cluster: front }\n", CODE_FLAGS_LOG, &chain)
        .replacen("              domains: [\"*\"]\n", vhost, 1)
        .replacen(CATCH_ALL, &routes, 1)
}

/// A service that answers OK, over the limit, fails or is too slow (allowed on failure).
fn ratelimit() -> Scenario {
    let body = r#"              domain: conformance
              timeout: 0.25s
              rate_limit_service: { transport_api_version: V3, grpc_service: { envoy_grpc: { cluster_name: grpc } } }
"#;
    let scenario = crate::scenarios::s(
        "ratelimit",
        "envoy.filters.http.ratelimit between two plugins: descriptors of each action, OK, over the limit, a failed and a slow service",
        config(body),
        vec![
            Request::get("/limited/1").header("x-decision", "fine").header("x-maybe", "here"),
            Request::get("/limited/1").header("x-decision", "over").header("x-match", "1"),
            Request::get("/limited/1"),
            Request::get("/limited/1").header("x-decision", "fail"),
            Request::get("/limited/1").header("x-decision", "slow"),
            Request::get("/both/1"),
            Request::get("/stage1/1"),
            Request::get("/other"),
            Request::get("/direct-limited"),
            Request::post("/limited/grpc", "")
                .header("content-type", "application/grpc")
                .header("te", "trailers")
                .header("x-decision", "over"),
        ],
    );
    Scenario { stats: &[r"^cluster\.upstream\.ratelimit\.", r"^http\.ingress\.ratelimit"], ..scenario }
}

/// A service that cannot be reached, with `failure_mode_deny`, another status for over the
/// limit and no `x-envoy-ratelimited`.
fn ratelimit_failure_mode_deny() -> Scenario {
    let body = r#"              domain: conformance
              failure_mode_deny: true
              rate_limited_status: { code: 503 }
              disable_x_envoy_ratelimited_header: true
              rate_limited_as_resource_exhausted: true
              rate_limit_service: { transport_api_version: V3, grpc_service: { envoy_grpc: { cluster_name: closed } } }
"#;
    let scenario = crate::scenarios::s(
        "ratelimit_failure_mode_deny",
        "envoy.filters.http.ratelimit whose service is down, with failure_mode_deny: refused with 500 and RLSE",
        config(body),
        vec![Request::get("/limited/1").header("x-decision", "fine"), Request::get("/stage1/1")],
    );
    Scenario { stats: &[r"^cluster\.upstream\.ratelimit\."], ..scenario }
}
