//! Load balancing and upstream health scenarios: active health checks, priorities and
//! panic, outlier detection, and the hashing balancers, over the recording upstream's
//! four addresses (127.0.0.1 to 127.0.0.4, one port; 127.0.0.3 is the one that fails).

use serde_json::json;
use wasmproxy_conformance::client::Request;

use crate::scenario::{CATCH_ALL, Scenario};

/// Every load balancing scenario.
pub fn scenarios() -> Vec<Scenario> {
    vec![health_checks(), outlier_detection(), hashing(), weights(), protocol_options()]
}

/// A cluster `name` with `settings` (YAML at the cluster's indentation) and endpoints,
/// each `(address, priority)`, one locality per priority.
fn cluster(name: &str, settings: &str, endpoints: &[(&str, u32)]) -> String {
    let mut out = format!("  - name: {name}\n    type: STATIC\n    connect_timeout: 1s\n{settings}");
    out.push_str(&format!("    load_assignment:\n      cluster_name: {name}\n      endpoints:\n"));
    for (address, priority) in endpoints {
        out.push_str(&format!(
            "      - priority: {priority}\n        lb_endpoints:\n        - endpoint: {{ address: {{ socket_address: {{ address: {address}, port_value: @UPSTREAM_PORT@ }} }} }}\n"
        ));
    }
    out
}

/// Routes `/<name>/...` to the cluster `<name>`, the path rewritten to `/<rest>`.
fn routes(names: &[&str]) -> String {
    let mut out = String::new();
    for name in names {
        out.push_str(&format!(
            "              - match: {{ prefix: /{name}/ }}\n                route: {{ cluster: {name}, prefix_rewrite: / }}\n"
        ));
    }
    out + CATCH_ALL
}

/// A probe that logs the flags and details of each answer.
fn probe() -> String {
    crate::scenario::probe(
        "probe",
        json!({"phases": {"log": [["get_property", "response.flags"], ["get_property", "response.code_details"]]}}),
    )
}

/// Active health checks (HTTP, TCP with payloads, gRPC) settle each host before the
/// cluster serves: a failing priority 0 sends every request to priority 1, a cluster whose
/// only host fails is in panic and uses it anyway, a checked host that fails is skipped.
fn health_checks() -> Scenario {
    let check = |kind: &str| {
        format!(
            "    health_checks:\n    - {{ timeout: 1s, interval: 1s, unhealthy_threshold: 1, healthy_threshold: 1, {kind} }}\n"
        )
    };
    let http = check("http_health_check: { path: /health/bad-on-3 }");
    // GET /health/bad-on-3, expecting its 200 status line.
    let tcp = check(&format!(
        "tcp_health_check: {{ send: {{ text: {} }}, receive: [{{ text: {} }}] }}",
        hex("GET /health/bad-on-3 HTTP/1.1\r\nhost: check\r\n\r\n"),
        hex("HTTP/1.1 200")
    ));
    let grpc = check("grpc_health_check: { service_name: upstream }");
    let http2 = "    typed_extension_protocol_options:\n      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:\n        \"@type\": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions\n        explicit_http_config: { http2_protocol_options: {} }\n";
    let config = crate::scenario::bootstrap("", &probe()).replacen(
        CATCH_ALL,
        &routes(&["failover", "panicked", "tcp", "grpc_checked"]),
        1,
    ) + &cluster("failover", &http, &[("127.0.0.3", 0), ("127.0.0.2", 1)])
        + &cluster("panicked", &http, &[("127.0.0.3", 0)])
        + &cluster("tcp", &tcp, &[("127.0.0.3", 0), ("127.0.0.4", 0)])
        + &cluster("grpc_checked", &format!("{http2}{grpc}"), &[("127.0.0.3", 0), ("127.0.0.2", 0)]);
    let scenario = crate::scenarios::s(
        "health_checks",
        "HTTP, TCP and gRPC health checks: priority failover, panic, an unhealthy host skipped",
        config,
        vec![
            Request::get("/failover/a"),
            Request::get("/failover/b"),
            Request::get("/panicked/a"),
            Request::get("/tcp/a"),
            Request::get("/tcp/b"),
            Request::get("/grpc_checked/a"),
            Request::get("/grpc_checked/b"),
        ],
    );
    Scenario {
        stats: &[
            r"^cluster\.(failover|panicked|tcp|grpc_checked)\.(health_check\.(healthy|degraded|verify_cluster|passive_failure)|membership_(healthy|total|degraded|excluded)|lb_healthy_panic):",
        ],
        ..scenario
    }
}

/// Outlier detection: consecutive 5xx and consecutive gateway failures eject the host
/// (its cluster never in panic answers `no healthy upstream`, flag UH); one ejection more
/// than `max_ejection_percent` allows is counted as an overflow and leaves the host in.
fn outlier_detection() -> Scenario {
    let never_panic = "    common_lb_config: { healthy_panic_threshold: {} }\n";
    let consecutive =
        format!("{never_panic}    outlier_detection: {{ consecutive_5xx: 2, max_ejection_percent: 100 }}\n");
    let gateway = format!(
        "{never_panic}    outlier_detection: {{ consecutive_5xx: 100, consecutive_gateway_failure: 2, \
         enforcing_consecutive_gateway_failure: 100, max_ejection_percent: 100 }}\n"
    );
    let overflow = "    outlier_detection: { consecutive_5xx: 1 }\n";
    let config = crate::scenario::bootstrap("", &probe()).replacen(
        CATCH_ALL,
        &routes(&["consecutive", "gateway", "overflow"]),
        1,
    ) + &cluster("consecutive", &consecutive, &[("127.0.0.3", 0)])
        + &cluster("gateway", &gateway, &[("127.0.0.2", 0)])
        + &cluster("overflow", overflow, &[("127.0.0.3", 0)]);
    let scenario = crate::scenarios::s(
        "outlier_detection",
        "outlier detection: consecutive 5xx and gateway failures eject (UH after), max_ejection_percent overflow",
        config,
        vec![
            Request::get("/consecutive/fail-on-3/a"),
            Request::get("/consecutive/fail-on-3/b"),
            Request::get("/consecutive/fail-on-3/c").after_pause(300),
            Request::get("/gateway/status/500"),
            Request::get("/gateway/status/502"),
            Request::get("/gateway/status/504"),
            Request::get("/gateway/u").after_pause(300),
            Request::get("/overflow/fail-on-3/a"),
            Request::get("/overflow/fail-on-3/b").after_pause(300),
        ],
    );
    Scenario { stats: &[r"^cluster\.(consecutive|gateway|overflow)\.outlier_detection\."], ..scenario }
}

/// `RING_HASH` and `MAGLEV` with header, query parameter and source IP hash policies over
/// four hosts: each key goes to the same host as through Envoy (the same ring and table).
fn hashing() -> Scenario {
    let hosts = [("127.0.0.1", 0), ("127.0.0.2", 0), ("127.0.0.3", 0), ("127.0.0.4", 0)];
    let routes = r#"              - match: { prefix: /ring/ }
                route:
                  cluster: ring
                  prefix_rewrite: /
                  hash_policy: [{ header: { header_name: x-user } }, { query_parameter: { name: u } }]
              - match: { prefix: /maglev/ }
                route:
                  cluster: maglev
                  prefix_rewrite: /
                  hash_policy: [{ header: { header_name: x-user }, terminal: true }, { connection_properties: { source_ip: true } }]
"#;
    let config = crate::scenario::bootstrap("", "").replacen(CATCH_ALL, &format!("{routes}{CATCH_ALL}"), 1)
        + &cluster("ring", "    lb_policy: RING_HASH\n    ring_hash_lb_config: { minimum_ring_size: 64 }\n", &hosts)
        + &cluster("maglev", "    lb_policy: MAGLEV\n    maglev_lb_config: { table_size: 251 }\n", &hosts);
    let mut requests = Vec::new();
    for user in ["alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi"] {
        requests.push(Request::get("/ring/u").header("x-user", user));
        requests.push(Request::get("/maglev/u").header("x-user", user));
    }
    for u in ["1", "2", "3", "4"] {
        requests.push(Request::get(&format!("/ring/u?u={u}")));
    }
    requests.push(Request::get("/maglev/by-source-ip"));
    requests.push(Request::get("/maglev/by-source-ip-again"));
    crate::scenarios::s(
        "hash_balancing",
        "RING_HASH and MAGLEV with header, query parameter and source IP hash policies: the same host for each key",
        config,
        requests,
    )
}

/// `text` in hex, as a health check `Payload` gives it.
fn hex(text: &str) -> String {
    text.bytes().map(|b| format!("{b:02x}")).collect()
}

/// Weighted round robin (endpoint weights 1 and 3) and locality weighted round robin
/// (locality weights 1 and 2, `locality_weighted_lb_config`): over whole cycles each host
/// takes its exact share, wherever the balancer starts (as Envoy's, it starts at random).
fn weights() -> Scenario {
    let endpoint = |address: &str| {
        format!(
            "        - endpoint: {{ address: {{ socket_address: {{ address: {address}, port_value: @UPSTREAM_PORT@ }} }} }}\n"
        )
    };
    let weighted = format!(
        "  - name: weighted\n    type: STATIC\n    connect_timeout: 1s\n    load_assignment:\n      cluster_name: weighted\n      endpoints:\n      - lb_endpoints:\n{}          load_balancing_weight: 1\n{}          load_balancing_weight: 3\n",
        endpoint("127.0.0.2"),
        endpoint("127.0.0.4"),
    );
    let localities = format!(
        "  - name: localities\n    type: STATIC\n    connect_timeout: 1s\n    common_lb_config: {{ locality_weighted_lb_config: {{}} }}\n    load_assignment:\n      cluster_name: localities\n      endpoints:\n      - locality: {{ region: r, zone: a }}\n        load_balancing_weight: 1\n        lb_endpoints:\n{}      - locality: {{ region: r, zone: b }}\n        load_balancing_weight: 2\n        lb_endpoints:\n{}",
        endpoint("127.0.0.2"),
        endpoint("127.0.0.4"),
    );
    let config = crate::scenario::bootstrap("", "").replacen(CATCH_ALL, &routes(&["weighted", "localities"]), 1)
        + &weighted
        + &localities;
    let mut requests = vec![Request::get("/weighted/w"); 8];
    requests.extend(vec![Request::get("/localities/l"); 6]);
    crate::scenarios::s(
        "weighted_balancing",
        "weighted round robin by endpoint weight and by locality weight: each host's share over whole cycles",
        config,
        requests,
    )
}

/// `HttpProtocolOptions`: `use_downstream_protocol_config` (HTTP/1.1 in, HTTP/1.1 out; HTTP/2
/// in, HTTP/2 out), `auto_config` over TLS (the upstream picks HTTP/2 by ALPN),
/// `common_http_protocol_options.max_requests_per_connection` (a connection per request)
/// and `idle_timeout` (an idle connection closed).
fn protocol_options() -> Scenario {
    let options = |body: &str| {
        format!(
            "    typed_extension_protocol_options:\n      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:\n        \
             \"@type\": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions\n{body}"
        )
    };
    let downstream =
        options("        use_downstream_protocol_config: { http_protocol_options: {}, http2_protocol_options: {} }\n");
    let auto = options("        auto_config: { http_protocol_options: {}, http2_protocol_options: {} }\n")
        + "    transport_socket:\n      name: envoy.transport_sockets.tls\n      typed_config:\n        \
           \"@type\": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext\n        sni: localhost\n";
    let one_each = options(
        "        common_http_protocol_options: { max_requests_per_connection: 1 }\n        explicit_http_config: { http_protocol_options: {} }\n",
    );
    let idle = options(
        "        common_http_protocol_options: { idle_timeout: 0.2s }\n        explicit_http_config: { http_protocol_options: {} }\n",
    );
    let config =
        crate::scenario::bootstrap("", "").replacen(CATCH_ALL, &routes(&["downstream", "auto", "one_each", "idle"]), 1)
            + &cluster("downstream", &downstream, &[("127.0.0.2", 0)])
            + &cluster("auto", &auto, &[("127.0.0.2", 0)])
            + &cluster("one_each", &one_each, &[("127.0.0.2", 0)])
            + &cluster("idle", &idle, &[("127.0.0.2", 0)]);
    let scenario = crate::scenarios::s(
        "upstream_protocol_options",
        "use_downstream_protocol_config, auto_config by ALPN, max_requests_per_connection, idle_timeout",
        config,
        vec![
            Request::get("/downstream/one"),
            Request::get("/downstream/two").h2(),
            Request::get("/auto/a"),
            Request::get("/one_each/a"),
            Request::get("/one_each/b"),
            Request::get("/one_each/c"),
            Request::get("/idle/a"),
            Request::get("/downstream/after-idle").after_pause(1000),
        ],
    );
    // Envoy counts an `auto_config` connection twice in `upstream_cx_total` (its mixed
    // pool's connection, then its HTTP/2 client's); wasmproxy once: not compared there.
    Scenario {
        stats: &[
            r"^cluster\.(one_each|idle|downstream)\.upstream_cx_total:",
            r"^cluster\.(one_each|idle|downstream|auto)\.upstream_cx_(http1_total|http2_total|max_requests|idle_timeout|destroy):",
        ],
        ..scenario
    }
}
