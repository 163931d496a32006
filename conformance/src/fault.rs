//! `envoy.filters.http.fault` between two plugins: delays and aborts asked by headers, fixed
//! ones from a route's own configuration, gRPC aborts, and the conditions that pick the
//! requests (headers, the route's cluster, the downstream node); the stats.

use wasmproxy_conformance::client::Request;

use crate::native_filters::{between_probes, native};
use crate::scenario::{CATCH_ALL, CODE_FLAGS_LOG, Scenario};

const FAULT: &str = "\"@type\": type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault";

/// Every fault scenario.
pub fn scenarios() -> Vec<Scenario> {
    vec![fault()]
}

/// The filter asks the headers (only for requests with `x-fault`); routes with their own
/// faults: a fixed delay then a 418, a gRPC abort, one for another cluster only, one for a
/// downstream node only.
fn fault() -> Scenario {
    let body = r#"              delay: { header_delay: {}, percentage: { numerator: 100 } }
              abort: { header_abort: {}, percentage: { numerator: 100 } }
              headers: [{ name: x-fault, present_match: true }]
              max_active_faults: 10
"#;
    let route = |prefix: &str, fault: &str| {
        format!(
            "              - match: {{ prefix: {prefix} }}\n                route: {{ cluster: upstream }}\n                typed_per_filter_config:\n                  envoy.filters.http.fault: {{ {FAULT}, {fault} }}\n"
        )
    };
    let routes = [
        route("/fixed", "delay: { fixed_delay: 0.05s, percentage: { numerator: 100 } }, abort: { http_status: 418, percentage: { numerator: 1000000, denominator: MILLION } }"),
        route("/grpc-abort", "abort: { grpc_status: 14, percentage: { numerator: 100 } }, upstream_cluster: upstream"),
        route("/other-cluster", "abort: { http_status: 500, percentage: { numerator: 100 } }, upstream_cluster: grpc"),
        route("/node", "abort: { http_status: 429, percentage: { numerator: 100 } }, downstream_nodes: [n1]"),
        route("/never", "abort: { http_status: 500 }"),
    ]
    .concat();
    let chain =
        between_probes(&native("envoy.filters.http.fault", "envoy.extensions.filters.http.fault.v3.HTTPFault", body));
    let config = crate::scenario::bootstrap_hcm("", CODE_FLAGS_LOG, &chain).replacen(
        CATCH_ALL,
        &format!("{routes}{CATCH_ALL}"),
        1,
    );
    let faulty = |path: &str| Request::get(path).header("x-fault", "1");
    let scenario = crate::scenarios::s(
        "fault",
        "envoy.filters.http.fault between two plugins: header-driven and fixed delays and aborts, gRPC aborts, the requests faults apply to",
        config,
        vec![
            faulty("/a").header("x-envoy-fault-abort-request", "503"),
            faulty("/b").header("x-envoy-fault-delay-request", "50"),
            faulty("/c")
                .header("x-envoy-fault-abort-request", "503")
                .header("x-envoy-fault-abort-request-percentage", "0"),
            faulty("/d").header("x-envoy-fault-abort-request", "700"),
            Request::get("/e").header("x-envoy-fault-abort-request", "503"),
            faulty("/f")
                .header("x-envoy-fault-abort-request", "404")
                .header("x-envoy-downstream-service-cluster", "dc1"),
            Request::post("/pkg.Echo/Say", "")
                .header("content-type", "application/grpc")
                .header("te", "trailers")
                .header("x-fault", "1")
                .header("x-envoy-fault-abort-grpc-request", "14"),
            Request::get("/fixed/1"),
            Request::get("/grpc-abort/1"),
            Request::get("/other-cluster/1"),
            Request::get("/node/1").header("x-envoy-downstream-service-node", "n1"),
            Request::get("/node/1").header("x-envoy-downstream-service-node", "n2"),
            Request::get("/never/1"),
        ],
    );
    Scenario { stats: &[r"^http\.ingress\.fault\."], ..scenario }
}
