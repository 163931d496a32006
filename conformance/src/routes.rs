//! Routing scenarios: what a route configuration, its virtual hosts and routes do to
//! requests and responses besides choosing the upstream.

use serde_json::json;
use wasmproxy_conformance::client::Request;

use crate::scenario::{CATCH_ALL, Scenario, probe_config};

/// Every routing scenario.
pub fn scenarios() -> Vec<Scenario> {
    vec![
        header_mutations(),
        websocket(),
        websocket_over_http2(),
        grpc_match(),
        retries(),
        filters_per_route(),
        cluster_specifiers(),
        rewrites(),
        circuit_breakers(),
        mirrors(),
        auto_host_rewrite(),
        retriable_headers(),
    ]
}

/// `retry_on: retriable-headers` with `retriable_headers` (an answer with `x-upstream: yes`
/// is tried again) and `retriable_request_headers` (only requests with `x-retry-me`).
fn retriable_headers() -> Scenario {
    let routes = r#"              - match: { prefix: /by-header }
                route:
                  cluster: upstream
                  retry_policy:
                    retry_on: retriable-headers
                    num_retries: 2
                    retriable_headers: [{ name: x-upstream, string_match: { exact: "yes" } }]
                    retriable_request_headers: [{ name: x-retry-me, present_match: true }]
"#;
    let counted = "              domains: [\"*\"]\n              include_attempt_count_in_response: true\n";
    let config = crate::scenario::bootstrap("", "").replacen("              domains: [\"*\"]\n", counted, 1).replacen(
        CATCH_ALL,
        &format!("{routes}{CATCH_ALL}"),
        1,
    );
    let scenario = crate::scenarios::s(
        "retriable_headers",
        "retry_on retriable-headers: answers with a matching header tried again, only for matching requests",
        config,
        vec![Request::get("/by-header/retried").header("x-retry-me", "1"), Request::get("/by-header/not-retried")],
    );
    Scenario { stats: &[r"^cluster\.upstream\.upstream_rq_retry(_success|_limit_exceeded)?:"], ..scenario }
}

/// `auto_host_rewrite`: the host becomes the endpoint's `hostname`, or the name a
/// `STRICT_DNS` cluster resolved; an endpoint without either leaves it.
fn auto_host_rewrite() -> Scenario {
    let routes = r#"              - match: { prefix: /named }
                route: { cluster: named, auto_host_rewrite: true }
              - match: { prefix: /dns }
                route: { cluster: dns, auto_host_rewrite: true }
              - match: { prefix: /plain }
                route: { cluster: upstream, auto_host_rewrite: true }
"#;
    let clusters = r#"  - name: named
    type: STATIC
    load_assignment:
      cluster_name: named
      endpoints:
      - lb_endpoints:
        - endpoint: { address: { socket_address: { address: 127.0.0.1, port_value: @UPSTREAM_PORT@ } }, hostname: backend.named.test }
  - name: dns
    type: STRICT_DNS
    dns_lookup_family: V4_ONLY
    load_assignment:
      cluster_name: dns
      endpoints:
      - lb_endpoints:
        - endpoint: { address: { socket_address: { address: localhost, port_value: @UPSTREAM_PORT@ } } }
"#;
    let config = crate::scenario::bootstrap("", "").replacen(CATCH_ALL, &format!("{routes}{CATCH_ALL}"), 1) + clusters;
    crate::scenarios::s(
        "auto_host_rewrite",
        "auto_host_rewrite: the endpoint's hostname, a STRICT_DNS cluster's resolved name, or no change",
        config,
        vec![Request::get("/named"), Request::get("/dns"), Request::get("/plain")],
    )
}

/// `request_mirror_policies`: a copy of each request (and its body) to the mirror cluster
/// (named, or by a request header; an unknown one skipped; a 0% fraction never), its
/// host suffixed `-shadow` unless turned off; the client sees only the main answer.
fn mirrors() -> Scenario {
    let routes = r#"              - match: { prefix: /mirrored }
                route:
                  cluster: upstream
                  request_mirror_policies: [{ cluster: mirror }, { cluster: mirror, disable_shadow_host_suffix_append: true, runtime_fraction: { default_value: { numerator: 100 } } }]
              - match: { prefix: /by-header }
                route:
                  cluster: upstream
                  request_mirror_policies: [{ cluster_header: x-mirror-cluster }]
              - match: { prefix: /never }
                route:
                  cluster: upstream
                  request_mirror_policies: [{ cluster: mirror, runtime_fraction: { default_value: { numerator: 0 } } }]
"#;
    let mirror = r#"  - name: mirror
    type: STATIC
    connect_timeout: 1s
    load_assignment:
      cluster_name: mirror
      endpoints:
      - lb_endpoints:
        - endpoint: { address: { socket_address: { address: 127.0.0.2, port_value: @UPSTREAM_PORT@ } } }
"#;
    let config = crate::scenario::bootstrap("", "").replacen(CATCH_ALL, &format!("{routes}{CATCH_ALL}"), 1) + mirror;
    let scenario = crate::scenarios::s(
        "request_mirror",
        "request_mirror_policies: copies (with the body) to a named cluster and one named by a header, -shadow hosts",
        config,
        vec![
            Request::get("/mirrored/get"),
            Request::post("/mirrored/post", "the body").after_pause(100),
            Request::get("/by-header/named").header("x-mirror-cluster", "mirror").after_pause(100),
            Request::get("/by-header/unknown").header("x-mirror-cluster", "nosuch").after_pause(100),
            Request::get("/never").after_pause(100),
            Request::get("/u").after_pause(300),
        ],
    );
    Scenario { stats: &[r"^cluster\.mirror\.upstream_rq_(total|completed|2xx)"], ..scenario }
}

/// Clusters whose circuit breakers are open from the start (`max_requests: 0`,
/// `max_pending_requests: 0`): 503 `overflow`, flag `UO`, the overflow stats, except for a
/// `priority: HIGH` route, whose own thresholds allow it; and a
/// virtual host that numbers the tries both ways (`include_request_attempt_count`,
/// `include_attempt_count_in_response`) with a retry.
fn circuit_breakers() -> Scenario {
    let routes = r#"              - match: { prefix: /high }
                route: { cluster: no_requests, priority: HIGH }
              - match: { prefix: /no-requests }
                route: { cluster: no_requests }
              - match: { prefix: /no-pending }
                route: { cluster: no_pending }
              - match: { prefix: /flaky/ }
                route: { cluster: upstream, retry_policy: { retry_on: 5xx } }
              - match: { prefix: / }
                name: upstream_route
"#;
    let cluster = |name: &str, threshold: &str| {
        format!(
            r#"  - name: {name}
    type: STATIC
    connect_timeout: 1s
    circuit_breakers: {{ thresholds: [{{ priority: DEFAULT, {threshold}: 0 }}, {{ priority: HIGH, max_requests: 5 }}] }}
    load_assignment:
      cluster_name: {name}
      endpoints:
      - lb_endpoints:
        - endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: @UPSTREAM_PORT@ }} }} }}
"#
        )
    };
    let probe = crate::scenario::probe(
        "probe",
        json!({"phases": {"log": [["get_property", "response.flags"], ["get_property", "response.code_details"]]}}),
    );
    let counted = "              domains: [\"*\"]\n              include_request_attempt_count: true\n              include_attempt_count_in_response: true\n";
    let config = crate::scenario::bootstrap("", &probe)
        .replacen("              domains: [\"*\"]\n", counted, 1)
        .replacen(CATCH_ALL, routes, 1)
        + &cluster("no_requests", "max_requests")
        + &cluster("no_pending", "max_pending_requests");
    let scenario = crate::scenarios::s(
        "circuit_breakers",
        "circuit_breakers max_requests and max_pending_requests at 0: 503 overflow (UO) and the overflow stats; \
         x-envoy-attempt-count to the upstream and in the response",
        config,
        vec![
            Request::get("/no-requests"),
            Request::get("/no-pending"),
            Request::get("/flaky/1/x"),
            Request::get("/u"),
            Request::get("/high"),
        ],
    );
    Scenario {
        stats: &[
            r"cluster\.(no_requests|no_pending)\.upstream_(rq_pending_overflow|rq_active_overflow|cx_overflow|rq_503):",
        ],
        ..scenario
    }
}

/// `regex_rewrite` (capture groups, the query kept), `host_rewrite_header` (present,
/// absent), `host_rewrite_path_regex`: what the upstream receives.
fn rewrites() -> Scenario {
    let routes = r#"              - match: { prefix: /regex/ }
                route:
                  cluster: upstream
                  regex_rewrite: { pattern: { regex: "^/regex/([a-z]+)/([a-z]+)$" }, substitution: '/\2/\1/$' }
              - match: { prefix: /by-host-header }
                route: { cluster: upstream, host_rewrite_header: X-Host }
              - match: { prefix: /host/ }
                route:
                  cluster: upstream
                  host_rewrite_path_regex: { pattern: { regex: "^/host/([a-z.]+)/.*$" }, substitution: '\1' }
              - match: { prefix: / }
                name: upstream_route
"#;
    let config = crate::scenario::bootstrap("", "").replacen(CATCH_ALL, routes, 1);
    crate::scenarios::s(
        "route_rewrites",
        "regex_rewrite, host_rewrite_header, host_rewrite_path_regex",
        config,
        vec![
            Request::get("/regex/abc/def?x=1"),
            Request::get("/regex/abc/123"),
            Request::get("/by-host-header").header("x-host", "from-header.test"),
            Request::get("/by-host-header"),
            Request::get("/host/path.test/rest?q"),
        ],
    )
}

/// The cluster named by `weighted_clusters` (one weight 0, with its own headers and host
/// rewrite applied before the route's), by `cluster_header` (present, absent, naming no
/// cluster), with `cluster_not_found_response_code`; plugins read `xds.cluster_name`.
fn cluster_specifiers() -> Scenario {
    let routes = r#"              - match: { prefix: /weighted }
                request_headers_to_add: [{ header: { key: x-level, value: route }, append_action: OVERWRITE_IF_EXISTS_OR_ADD }]
                route:
                  weighted_clusters:
                    clusters:
                    - name: upstream
                      weight: 3
                      host_rewrite_literal: weighted.test
                      request_headers_to_add: [{ header: { key: x-level, value: weighted }, append_action: OVERWRITE_IF_EXISTS_OR_ADD }, { header: { key: x-weighted, value: "%UPSTREAM_CLUSTER%" } }]
                    - name: closed
                      weight: 0
              - match: { prefix: /by-header-404 }
                route: { cluster_header: x-cluster, cluster_not_found_response_code: NOT_FOUND }
              - match: { prefix: /by-header }
                route: { cluster_header: X-Cluster }
              - match: { prefix: / }
                name: upstream_route
"#;
    let probe =
        crate::scenario::probe("probe", json!({"phases": {"request_headers": [["get_property", "xds.cluster_name"]]}}));
    let config = crate::scenario::bootstrap("", &probe).replacen(CATCH_ALL, routes, 1);
    crate::scenarios::s(
        "route_cluster_specifiers",
        "weighted_clusters (weights, per-cluster headers and host rewrite), cluster_header, cluster_not_found_response_code",
        config,
        vec![
            Request::get("/weighted"),
            Request::get("/by-header").header("x-cluster", "upstream"),
            Request::get("/by-header"),
            Request::get("/by-header").header("x-cluster", "nowhere"),
            Request::get("/by-header-404").header("x-cluster", "nowhere"),
        ],
    )
}

/// `typed_per_filter_config` with `envoy.config.route.v3.FilterConfig`: a Wasm filter off
/// for one route, another off for the virtual host, a third `disabled` in `http_filters`
/// (nothing can turn a Wasm filter back on in Envoy 1.40: it has no per-route
/// configuration). A filter that is off gets no context at all.
fn filters_per_route() -> Scenario {
    let probe = |name: &str, filter: &str, extra: &str| {
        crate::scenario::wasm_filter(name, "probe.wasm", &json!({"phases": {}}).to_string(), "").replacen(
            "          - name: envoy.filters.http.wasm\n",
            &format!("          - name: {filter}\n{extra}"),
            1,
        )
    };
    let filters = [
        probe("first", "filter_a", ""),
        probe("second", "filter_b", ""),
        probe("third", "filter_c", "            disabled: true\n"),
    ]
    .concat();
    let off = |name: &str, disabled: bool| {
        format!(
            "{{ {name}: {{ \"@type\": type.googleapis.com/envoy.config.route.v3.FilterConfig, disabled: {disabled} }} }}"
        )
    };
    let vhost =
        format!("              domains: [\"*\"]\n              typed_per_filter_config: {}\n", off("filter_b", true));
    let routes = format!(
        r#"              - match: {{ prefix: /off-a }}
                route: {{ cluster: upstream }}
                typed_per_filter_config: {}
              - match: {{ prefix: / }}
                name: upstream_route
"#,
        off("filter_a", true),
    );
    let config = crate::scenario::bootstrap("", &filters)
        .replacen("              domains: [\"*\"]\n", &vhost, 1)
        .replacen(CATCH_ALL, &routes, 1);
    crate::scenarios::s(
        "filters_per_route",
        "typed_per_filter_config FilterConfig disabled on routes and virtual hosts, http_filters disabled",
        config,
        vec![Request::get("/off-a"), Request::get("/other"), Request::get("/direct")],
    )
}

/// `retry_policy` on a virtual host and on routes: an upstream that fails twice then
/// answers, one that keeps failing, a status the policy does not retry, a connection
/// refused, retriable status codes, per-try timeouts, a body sent again; what the client,
/// the upstream (every try) and a plugin (`response.flags`, details) see, and the
/// cluster's retry stats.
fn retries() -> Scenario {
    let vhost = r#"              domains: ["*"]
              retry_policy: { retry_on: gateway-error, num_retries: 2, retry_back_off: { base_interval: 0.005s } }
"#;
    let routes = r#"              - match: { prefix: /flaky/2/ }
                route:
                  cluster: upstream
                  retry_policy: { retry_on: "5xx,reset", num_retries: 3, retry_back_off: { base_interval: 0.005s } }
              - match: { prefix: /codes/ }
                route:
                  cluster: upstream
                  prefix_rewrite: /status/
                  retry_policy: { retry_on: retriable-status-codes, retriable_status_codes: [418] }
              - match: { prefix: /slow }
                route:
                  cluster: upstream
                  prefix_rewrite: /sleep
                  timeout: 2s
                  retry_policy: { retry_on: 5xx, num_retries: 1, per_try_timeout: 0.1s }
              - match: { prefix: /refused }
                route:
                  cluster: closed
                  retry_policy: { retry_on: connect-failure, num_retries: 1 }
              - match: { prefix: / }
                name: upstream_route
"#;
    let probe = crate::scenario::probe(
        "probe",
        json!({"phases": {"log": [["get_property", "response.flags"], ["get_property", "response.code_details"]]}}),
    );
    let config = crate::scenario::bootstrap("", &probe)
        .replacen("              domains: [\"*\"]\n", vhost, 1)
        .replacen(CATCH_ALL, routes, 1);
    let scenario = crate::scenarios::s(
        "route_retries",
        "retry_policy: retries on 5xx, gateway errors, connection failures, retriable status codes and per-try \
         timeouts; the retry limit (URX), the body sent again, the cluster's retry stats",
        config,
        vec![
            Request::get("/flaky/2/a"),
            Request::get("/flaky/5/b"),
            Request::get("/status/500"),
            Request::post("/flaky/1/with-body", "the body, twice"),
            Request::get("/codes/418"),
            Request::get("/slow"),
            Request::get("/refused"),
        ],
    );
    Scenario {
        stats: &[
            r"cluster\.(upstream|closed)\.upstream_rq_(retry|retry_success|retry_limit_exceeded|retry_overflow|per_try_timeout|timeout|total):",
            r"cluster\.(upstream|closed)\.upstream_rq_(200|503|504|418|500):",
        ],
        ..scenario
    }
}

/// `match.grpc`: a route only gRPC requests take (`content-type: application/grpc`, or
/// `application/grpc+proto`); others fall to the next route.
fn grpc_match() -> Scenario {
    let routes = r#"              - match: { prefix: /pkg.Echo/, grpc: {} }
                route: { cluster: grpc }
              - match: { prefix: /pkg.Echo/ }
                direct_response: { status: 200, body: { inline_string: "not grpc" } }
              - match: { prefix: / }
                name: upstream_route
"#;
    let config = crate::scenario::bootstrap("", "").replacen(CATCH_ALL, routes, 1);
    crate::scenarios::s(
        "route_match_grpc",
        "match.grpc: gRPC requests (over HTTP/1.1 and HTTP/2, application/grpc+proto) take the route, others not",
        config,
        vec![
            crate::scenarios::grpc("/pkg.Echo/Say").h2(),
            crate::scenarios::grpc("/pkg.Echo/Say"),
            Request::post("/pkg.Echo/Say", "\0\0\0\0\0").header("content-type", "application/grpc+proto").h2(),
            Request::post("/pkg.Echo/Say", "\0\0\0\0\0").header("content-type", "application/grpc-web").h2(),
            Request::get("/pkg.Echo/Say"),
        ],
    )
}

/// WebSocket over HTTP/1.1: enabled on the connection manager, disabled on one route and
/// enabled on another for a type the connection manager does not allow; a plugin sees the
/// request, the `101` and the bytes through its body callbacks, which pass both ways;
/// refused upgrades; a plain request on the same listener. (An upstream that answers an
/// upgrade with anything but `101` is left out: Envoy then drops the body and its headers.)
fn websocket() -> Scenario {
    let hcm = r#"          upgrade_configs:
          - upgrade_type: websocket
          - upgrade_type: spdy/3.1
            enabled: false
"#;
    let routes = r#"              - match: { prefix: /no-ws }
                route: { cluster: upstream, upgrade_configs: [{ upgrade_type: WebSocket, enabled: false }] }
              - match: { prefix: /custom }
                route: { cluster: upstream, upgrade_configs: [{ upgrade_type: custom-proto }] }
              - match: { prefix: / }
                name: upstream_route
"#;
    let filters = crate::scenario::probe(
        "probe",
        json!({"phases": {
            "request_headers": [["get_header", "0", "upgrade"], ["get_header", "0", "connection"]],
            "response_headers": [["get_headers", "2"]],
            "log": [["get_property", "response.code"]],
        }}),
    );
    let config = crate::scenario::bootstrap_hcm("", hcm, &filters).replacen(CATCH_ALL, routes, 1);
    let scenario = crate::scenarios::s(
        "websocket_upgrades",
        "HTTP/1.1 upgrades: upgrade_configs on the connection manager and on routes, bytes both ways",
        config,
        vec![
            Request::upgrade("/ws", "websocket", &["hello", "second message"]),
            Request::upgrade("/no-ws", "websocket", &["never"]),
            Request::upgrade("/custom", "custom-proto", &["custom"]),
            Request::upgrade("/ws", "custom-proto", &["refused"]),
            Request::upgrade("/ws", "spdy/3.1", &["refused"]),
            Request::get("/plain"),
        ],
    );
    Scenario { stats: &[r"http\.ingress\.downstream_cx_upgrades_(total|active):"], ..scenario }
}

/// WebSocket over HTTP/2 (extended CONNECT, `allow_connect`) to an HTTP/1.1 upstream: the
/// plugin sees the CONNECT with `:protocol`, the upstream an upgrade, the client a `200`
/// and the bytes both ways; a route that turns WebSocket off refuses it.
fn websocket_over_http2() -> Scenario {
    let hcm = "          upgrade_configs: [{ upgrade_type: websocket }]\n          http2_protocol_options: { allow_connect: true }\n";
    let routes = r#"              - match: { prefix: /no-ws }
                route: { cluster: upstream, upgrade_configs: [{ upgrade_type: websocket, enabled: false }] }
              - match: { prefix: / }
                name: upstream_route
"#;
    let filters = crate::scenario::probe(
        "probe",
        json!({"phases": {
            "request_headers": [["get_headers", "0"]],
            "response_headers": [["get_headers", "2"]],
            "log": [["get_property", "response.code"]],
        }}),
    );
    let config = crate::scenario::bootstrap_hcm("", hcm, &filters).replacen(CATCH_ALL, routes, 1);
    let scenario = crate::scenarios::s(
        "websocket_over_http2",
        "extended CONNECT (RFC 8441) with allow_connect to an HTTP/1.1 upstream: upgrade there, 200 here, bytes both ways",
        config,
        vec![
            Request::upgrade("/ws", "websocket", &["hello", "second message"]).h2(),
            Request::upgrade("/no-ws", "websocket", &["never"]).h2(),
            Request::get("/plain").h2(),
        ],
    );
    Scenario { stats: &[r"http\.ingress\.downstream_cx_upgrades_(total|active):"], ..scenario }
}

/// Headers added and removed at the three levels, with each append action, formats and
/// `%%`, on an upstream answer, a direct response and an upstream failure; the probe shows
/// that the filters see the response's additions and not the request's (the router makes
/// those after them).
fn header_mutations() -> Scenario {
    let global = r#"            request_headers_to_add:
            - header: { key: x-global, value: "global sees %REQ(x-client)%" }
            - header: { key: x-level, value: global }
              append_action: OVERWRITE_IF_EXISTS_OR_ADD
            response_headers_to_add:
            - header: { key: x-resp-level, value: global }
              append_action: OVERWRITE_IF_EXISTS_OR_ADD
            - header: { key: x-downstream, value: "%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT% %PROTOCOL% %RESPONSE_CODE% %RESP(x-resp-level)%" }
            response_headers_to_remove: [x-remove-globally]
            virtual_hosts:
"#;
    let vhost = r#"              domains: ["*"]
              request_headers_to_add:
              - header: { key: x-level, value: vhost }
                append_action: OVERWRITE_IF_EXISTS_OR_ADD
              - header: { key: x-client, value: added-if-absent }
                append_action: ADD_IF_ABSENT
              - header: { key: x-empty, value: "%REQ(x-nothing)%" }
              - header: { key: x-kept-empty, value: "%REQ(x-nothing)%" }
                keep_empty_value: true
              request_headers_to_remove: [x-secret]
              response_headers_to_add:
              - header: { key: x-resp-level, value: vhost }
                append_action: OVERWRITE_IF_EXISTS_OR_ADD
              - header: { key: x-percent, value: "100%%" }
              - header: { key: x-upstream, value: from-vhost }
                append: false
              response_headers_to_remove: [x-upstream]
"#;
    let route = r#"              - match: { prefix: / }
                name: upstream_route
                request_headers_to_add:
                - header: { key: x-level, value: route }
                - header: { key: x-only-if-there, value: overwritten }
                  append_action: OVERWRITE_IF_EXISTS
                - header: { key: x-absent-stays-absent, value: overwritten }
                  append_action: OVERWRITE_IF_EXISTS
                - header: { key: x-client, value: appended }
                response_headers_to_add:
                - header: { key: x-route, value: "%ROUTE_NAME% %UPSTREAM_CLUSTER%" }
                - header: { key: x-upstream, value: from-route }
"#;
    let config = probe_config(json!({
        "request_headers": [["get_header", "0", "x-level"], ["get_header", "0", "x-client"]],
        "response_headers": [["get_headers", "2"]],
    }))
    .replacen("            virtual_hosts:\n", global, 1)
    .replacen("              domains: [\"*\"]\n", vhost, 1)
    .replacen(CATCH_ALL, route, 1);
    Scenario {
        stats: &[],
        ..crate::scenarios::s(
            "route_header_mutations",
            "request and response headers added and removed by the route configuration, virtual host and route: \
             order, append actions, formats, on upstream answers, direct responses and failures",
            config,
            vec![
                Request::get("/u")
                    .header("x-client", "c1")
                    .header("x-secret", "s")
                    .header("x-only-if-there", "original")
                    .header("x-remove-globally", "kept on the request"),
                Request::get("/u2"),
                Request::get("/direct"),
                Request::get("/closed"),
                Request::get("/redirect"),
            ],
        )
    }
}
