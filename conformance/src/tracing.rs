//! Tracing beside Wasm plugins: the sampling decision in `x-request-id`, spans named by
//! decorators, the context told to the upstream, and the spans the collector (the
//! recording upstream) receives from the Zipkin and OpenTelemetry providers.

use serde_json::json;
use wasmproxy_conformance::client::Request;

use crate::scenario::{CATCH_ALL, Scenario};

/// Every tracing scenario.
pub fn scenarios() -> Vec<Scenario> {
    vec![
        zipkin(),
        zipkin_upstream_spans(),
        opentelemetry_grpc(),
        opentelemetry_http(),
        sampling(),
        filter_calls_zipkin(),
        filter_calls_opentelemetry(),
    ]
}

/// The node spans name their service and zone after.
const NODE: &str = "node: { id: node-1, cluster: front-proxy, locality: { zone: zone-a } }\n";

/// A probe that logs the request headers it sees (the trace digit of `x-request-id`, the
/// decorator's header).
fn probe() -> String {
    crate::scenario::wasm_filter(
        "seen",
        "probe.wasm",
        &json!({"phases": {"request_headers": [["get_header", "0", "x-request-id"], ["get_header", "0", "x-envoy-decorator-operation"]]}})
            .to_string(),
        "",
    )
}

/// Routes with and without decorators, and a failing one.
fn routes() -> String {
    format!(
        r#"              - match: {{ prefix: /decorated }}
                route: {{ cluster: upstream }}
                decorator: {{ operation: routeOne }}
              - match: {{ prefix: /quiet }}
                route: {{ cluster: upstream }}
                decorator: {{ operation: routeQuiet, propagate: false }}
              - match: {{ prefix: /direct }}
                direct_response: {{ status: 200, body: {{ inline_string: direct }} }}
{CATCH_ALL}"#
    )
}

/// A cluster named `name` to the recording upstream (over HTTP/2 if `http2`).
fn collector(name: &str, http2: bool) -> String {
    let h2 = if http2 {
        "    typed_extension_protocol_options:\n      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:\n        \"@type\": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions\n        explicit_http_config: { http2_protocol_options: {} }\n"
    } else {
        ""
    };
    format!(
        "  - name: {name}\n    type: STATIC\n    connect_timeout: 1s\n{h2}    load_assignment:\n      cluster_name: {name}\n      endpoints:\n      - lb_endpoints:\n        - endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: @UPSTREAM_PORT@ }} }} }}\n"
    )
}

/// A bootstrap with `tracing` (YAML at the connection manager's indentation), the probe,
/// the routes, and the collector cluster.
fn traced(tracing: &str, collector_cluster: &str) -> String {
    crate::scenario::bootstrap_hcm(NODE, tracing, &probe()).replacen(CATCH_ALL, &routes(), 1) + collector_cluster
}

/// `tracing` with the Zipkin provider reporting to the cluster `zipkin`: `before` and
/// `after` the provider at `tracing`'s indentation, `provider_fields` at the provider's.
fn zipkin_tracing(before: &str, provider_fields: &str, after: &str) -> String {
    format!(
        r#"          tracing:
{before}            provider:
              name: envoy.tracers.zipkin
              typed_config:
                "@type": type.googleapis.com/envoy.config.trace.v3.ZipkinConfig
                collector_cluster: zipkin
                collector_endpoint: /api/v2/spans
                collector_endpoint_version: HTTP_JSON
{provider_fields}{after}"#
    )
}

/// The requests every provider's scenario sends, then a wait for the workers' 5 s flush.
fn requests() -> Vec<Request> {
    vec![
        Request::get("/decorated/one"),
        Request::get("/quiet/two"),
        Request::get("/plain/three").header("user-agent", "conformance"),
        Request::get("/status/503"),
        Request::get("/direct"),
        Request::get("/plain/caller").header("x-envoy-decorator-operation", "fromCaller"),
        Request::admin("/ready").after_pause(5600),
    ]
}

/// The Zipkin provider (JSON v2): a server span per request, named by the host, the route's
/// decorator or the caller's; B3 headers to the upstream; a caller's B3 context shared (its
/// span id kept), a caller's `x-b3-sampled: 0` obeyed, malformed B3 turning tracing off.
fn zipkin() -> Scenario {
    let tracing = zipkin_tracing(
        "",
        "",
        "            custom_tags: [{ tag: team, literal: { value: edge } }, { tag: client, request_header: { name: x-client, default_value: none } }]\n",
    );
    let mut requests = requests();
    requests.splice(
        5..5,
        [
            Request::get("/plain/joined")
                .header("x-b3-traceid", "463ac35c9f6413ad48485a3953bb6124")
                .header("x-b3-spanid", "a2fb4a1d1a96d312")
                .header("x-b3-sampled", "1")
                .header("x-client", "joined"),
            Request::get("/plain/unsampled").header("x-b3-sampled", "0"),
            Request::get("/plain/broken").header("x-b3-traceid", "not hex").header("x-b3-spanid", "a2fb4a1d1a96d312"),
        ],
    );
    let scenario = crate::scenarios::s(
        "tracing_zipkin",
        "tracing with the Zipkin provider: spans, names, tags, B3 to the upstream, callers' contexts",
        traced(&tracing, &collector("zipkin", false)),
        requests,
    );
    Scenario {
        stats: &[r"^http\.ingress\.tracing\.", r"^tracing\.zipkin\.(spans_sent|reports_sent|reports_dropped)"],
        ..scenario
    }
}

/// Zipkin with a span for each upstream request (the router's `start_child_span`), no
/// shared context, 128-bit trace ids, on an egress (`OUTBOUND`) listener: client spans,
/// the decorator sent upstream.
fn zipkin_upstream_spans() -> Scenario {
    let tracing =
        zipkin_tracing("", "                shared_span_context: false\n                trace_id_128bit: true\n", "");
    let config = traced(&tracing, &collector("zipkin", false))
        .replacen(
            "              \"@type\": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router\n",
            "              \"@type\": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router\n              start_child_span: true\n",
            1,
        )
        .replacen("  - name: main\n", "  - name: main\n    traffic_direction: OUTBOUND\n", 1);
    let mut requests = requests();
    requests.insert(
        0,
        Request::get("/decorated/joined")
            .header("x-b3-traceid", "48485a3953bb6124")
            .header("x-b3-spanid", "a2fb4a1d1a96d312"),
    );
    let scenario = crate::scenarios::s(
        "tracing_zipkin_upstream_spans",
        "Zipkin with start_child_span on an egress listener, 128-bit ids, no shared context",
        config,
        requests,
    );
    Scenario { stats: &[r"^http\.ingress\.tracing\.", r"^tracing\.zipkin\.(spans_sent|reports_sent)"], ..scenario }
}

/// The OpenTelemetry provider, exporting OTLP over gRPC (HTTP/2 to the collector):
/// `ingress` spans renamed by decorators, W3C `traceparent` and `tracestate` to the
/// upstream, a caller's `traceparent` joined (sampled or not), a malformed one ignored.
fn opentelemetry_grpc() -> Scenario {
    let tracing = r#"          tracing:
            spawn_upstream_span: true
            provider:
              name: envoy.tracers.opentelemetry
              typed_config:
                "@type": type.googleapis.com/envoy.config.trace.v3.OpenTelemetryConfig
                grpc_service: { envoy_grpc: { cluster_name: otel }, timeout: 1s }
                service_name: front-proxy
"#;
    let mut requests = requests();
    requests.splice(
        5..5,
        [
            Request::get("/plain/joined")
                .header("traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
                .header("tracestate", "vendor=value"),
            Request::get("/plain/unsampled")
                .header("traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00"),
            Request::get("/plain/broken").header("traceparent", "00-xyz-b7ad6b7169203331-01"),
        ],
    );
    let scenario = crate::scenarios::s(
        "tracing_opentelemetry_grpc",
        "tracing with the OpenTelemetry provider over gRPC: spans and upstream spans, names, attributes, traceparent",
        traced(tracing, &collector("otel", true)),
        requests,
    );
    Scenario {
        stats: &[r"^http\.ingress\.tracing\.", r"^tracing\.opentelemetry\.(spans_sent|spans_dropped)"],
        ..scenario
    }
}

/// OpenTelemetry exporting OTLP over HTTP (protobuf), with a header of its own, on an
/// egress listener: `egress <host>` client spans.
fn opentelemetry_http() -> Scenario {
    let tracing = r#"          tracing:
            provider:
              name: envoy.tracers.opentelemetry
              typed_config:
                "@type": type.googleapis.com/envoy.config.trace.v3.OpenTelemetryConfig
                http_service:
                  http_uri: { uri: "http://collector.test/v1/traces", cluster: otel, timeout: 1s }
                  request_headers_to_add: [{ header: { key: x-collector-key, value: secret } }]
"#;
    let config = traced(tracing, &collector("otel", false)).replacen(
        "  - name: main\n",
        "  - name: main\n    traffic_direction: OUTBOUND\n",
        1,
    );
    let scenario = crate::scenarios::s(
        "tracing_opentelemetry_http",
        "OpenTelemetry over HTTP on an egress listener: client spans named egress <host>, the default service name",
        config,
        requests(),
    );
    Scenario { stats: &[r"^http\.ingress\.tracing\.", r"^tracing\.opentelemetry\.spans_sent"], ..scenario }
}

/// The sampling decision with nothing sampled at random: a client's `x-client-trace-id`
/// forces a trace, `x-envoy-force-trace` from outside is taken off, a caller's id that
/// says "sampled" is kept (trusted), `overall_sampling` caps everything.
fn sampling() -> Scenario {
    let tracing = zipkin_tracing("            random_sampling: { value: 0 }\n", "", "");
    let config = traced(&tracing, &collector("zipkin", false));
    let scenario = crate::scenarios::s(
        "tracing_sampling",
        "random_sampling 0: x-client-trace-id forces a trace, x-envoy-force-trace from outside does not, a sampled id is kept",
        config,
        vec![
            Request::get("/plain/random"),
            Request::get("/plain/client").header("x-client-trace-id", "client-1"),
            Request::get("/plain/forced").header("x-envoy-force-trace", "true"),
            Request::get("/plain/sampled-id").header("x-request-id", "00000000-0000-9000-8000-000000000000"),
            Request::get("/plain/bad-id").header("x-request-id", "not-a-uuid"),
            Request::admin("/ready").after_pause(5600),
        ],
    );
    Scenario { stats: &[r"^http\.ingress\.tracing\.", r"^tracing\.zipkin\.spans_sent"], ..scenario }
}

/// A chain of an HTTP `ext_authz`, a gRPC `ext_authz` and the global `ratelimit` filter
/// after the probe, traced with `tracing`: routes for requests with `x-only-grpc` turn the
/// HTTP check off; the virtual host's descriptor is `x-decision`.
fn filter_calls(tracing: &str, collector_cluster: &str) -> String {
    let native = crate::native_filters::native;
    let http = native(
        "envoy.filters.http.ext_authz",
        crate::ext_authz::EXT_AUTHZ,
        "              http_service:\n                server_uri: { uri: \"http://authz.test\", cluster: upstream, timeout: 0.25s }\n                path_prefix: /authz\n",
    );
    let grpc = native(
        "authz-grpc",
        crate::ext_authz::EXT_AUTHZ,
        "              grpc_service: { envoy_grpc: { cluster_name: grpc }, timeout: 0.25s }\n",
    );
    let limit = native(
        "envoy.filters.http.ratelimit",
        crate::ratelimit::RATE_LIMIT,
        "              domain: conformance\n              timeout: 0.25s\n              rate_limit_service: { transport_api_version: V3, grpc_service: { envoy_grpc: { cluster_name: grpc } } }\n",
    );
    let routes = format!(
        r#"              - match: {{ prefix: /, headers: [{{ name: x-only-grpc, present_match: true }}] }}
                route: {{ cluster: upstream }}
                typed_per_filter_config:
                  envoy.filters.http.ext_authz: {{ {}, disabled: true }}
{CATCH_ALL}"#,
        crate::ext_authz::PER_ROUTE
    );
    let vhost = "              domains: [\"*\"]\n              rate_limits: [{ actions: [{ request_headers: { header_name: x-decision, descriptor_key: decision } }] }]\n";
    crate::scenario::bootstrap_hcm(NODE, tracing, &[probe(), http, grpc, limit].concat())
        .replacen("              domains: [\"*\"]\n", vhost, 1)
        .replacen(CATCH_ALL, &routes, 1)
        + collector_cluster
}

/// The requests of the filter-call scenarios: each outcome of each call (allowed, denied,
/// over the limit, failed, timed out, garbage), then an unsampled request whose calls still
/// carry its context.
fn filter_call_requests() -> Vec<Request> {
    vec![
        Request::get("/allow/1").header("x-decision", "fine"),
        Request::get("/allow/2").header("x-decision", "over"),
        Request::get("/deny/1"),
        Request::get("/allow/3").header("x-decision", "fail"),
        Request::get("/fail/1"),
        Request::get("/slow/1"),
        Request::get("/fail/2").header("x-only-grpc", "1"),
        Request::get("/garbage/1").header("x-only-grpc", "1"),
        Request::get("/deny/2").header("x-only-grpc", "1"),
        Request::get("/allow/4").header("x-decision", "fine").header("x-b3-sampled", "0"),
        Request::admin("/ready").after_pause(5600),
    ]
}

/// The spans of the calls filters make, with Zipkin: an HTTP authorization check
/// (`async <cluster> egress`, its outcome, the async client's tags), gRPC checks and rate
/// limit queries (`async <service>.<method> egress`, the gRPC status), each a client child
/// of the stream's span, its context sent with the call.
fn filter_calls_zipkin() -> Scenario {
    let scenario = crate::scenarios::s(
        "tracing_filter_calls_zipkin",
        "Zipkin spans of ext_authz (HTTP and gRPC) and ratelimit calls: names, tags for each outcome, B3 sent to the services",
        filter_calls(&zipkin_tracing("", "", ""), &collector("zipkin", false)),
        filter_call_requests(),
    );
    Scenario { stats: &[r"^tracing\.zipkin\.(spans_sent|reports_sent)"], ..scenario }
}

/// The same calls traced by OpenTelemetry (OTLP over gRPC): client spans with their
/// status, `traceparent` sent to the services.
fn filter_calls_opentelemetry() -> Scenario {
    let tracing = r#"          tracing:
            provider:
              name: envoy.tracers.opentelemetry
              typed_config:
                "@type": type.googleapis.com/envoy.config.trace.v3.OpenTelemetryConfig
                grpc_service: { envoy_grpc: { cluster_name: otel }, timeout: 1s }
"#;
    let mut requests = filter_call_requests();
    requests[9] = Request::get("/allow/4")
        .header("x-decision", "fine")
        .header("traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00");
    let scenario = crate::scenarios::s(
        "tracing_filter_calls_opentelemetry",
        "OpenTelemetry spans of ext_authz (HTTP and gRPC) and ratelimit calls, traceparent sent to the services",
        filter_calls(tracing, &collector("otel", true)),
        requests,
    );
    Scenario { stats: &[r"^tracing\.opentelemetry\.spans_sent"], ..scenario }
}
