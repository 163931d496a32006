//! The scenarios: every hostcall group and callback the proxy supports, the statuses of
//! the awkward cases, pauses and local replies, failures, properties, SDK plugins in Rust,
//! Go and AssemblyScript, and the examples.

use std::path::Path;

use serde_json::json;

use crate::client::Request;
use crate::scenario::{Scenario, bootstrap, network_wasm_filter, probe, probe_config, wasm_filter};
use wasmproxy_conformance::h2_frames::{
    self as h2, CONTINUATION, DATA, END_HEADERS, END_STREAM, HEADERS, PADDED, PING, SETTINGS, WINDOW_UPDATE, frame,
    literal,
};

pub(crate) fn s(name: &'static str, about: &'static str, config: String, requests: Vec<Request>) -> Scenario {
    Scenario {
        name,
        about,
        config,
        requests,
        deliberate: None,
        known: None,
        stats: &[],
        prometheus: &[],
        files: Vec::new(),
    }
}

/// A `bootstrap_extensions` entry: a Wasm service running the probe with this configuration.
fn service(name: &str, singleton: bool, configuration: serde_json::Value) -> String {
    let quoted = configuration.to_string().replace('\'', "''");
    format!(
        r#"- name: envoy.bootstrap.wasm
  typed_config:
    "@type": type.googleapis.com/envoy.extensions.wasm.v3.WasmService
    singleton: {singleton}
    config:
      name: {name}
      root_id: {name}_root
      vm_config:
        vm_id: {name}_vm
        runtime: envoy.wasm.runtime.v8
        code: {{ local: {{ filename: "@PLUGINS@/probe.wasm" }} }}
      configuration:
        "@type": type.googleapis.com/google.protobuf.StringValue
        value: '{quoted}'
"#
    )
}

/// An `http_call` to the upstream cluster (GET `path`, authority `auth`, 1 s).
fn call(path: &str) -> serde_json::Value {
    json!(["http_call", "upstream", format!(":method=GET;:path={path};:authority=auth"), "", "1000"])
}

/// Every scenario, in report order.
pub fn all(root: &Path) -> Vec<Scenario> {
    let mut v = Vec::new();
    v.extend(headers());
    v.extend(bodies());
    v.extend(local_replies());
    v.extend(callouts());
    v.extend(shared_state());
    v.extend(properties());
    v.extend(lifecycle());
    v.extend(foreign_functions());
    v.extend(failures());
    v.extend(chains_and_sdks());
    v.extend(routing());
    v.extend(crate::routes::scenarios());
    v.extend(crate::balancing::scenarios());
    v.extend(crate::native_filters::scenarios());
    v.extend(crate::ext_authz::scenarios());
    v.extend(crate::rbac::scenarios());
    v.extend(crate::fault::scenarios());
    v.extend(crate::buffer::scenarios());
    v.extend(crate::ratelimit::scenarios());
    v.extend(crate::tracing::scenarios());
    v.extend(crate::connection_manager::scenarios());
    v.extend(tcp());
    v.extend(examples(root));
    v.extend(admin_and_logs());
    v.extend(bad_requests());
    v.extend(crate::dynamic::scenarios());
    v.extend(crate::xds::scenarios());
    v.extend(crate::tls::scenarios());
    v
}

/// Requests that are not well formed, or that could smuggle a second request past a proxy
/// that reads their length differently from the upstream, each on a connection of its own.
fn bad_requests() -> Vec<Scenario> {
    let raw = |head: &str| Request::raw(&format!("{head}\r\n"));
    let http10 = |head: &str| Request::raw(&format!("{head}\r\n\r\n"));
    vec![
        Scenario {
            stats: &[r"http\.ingress\.downstream_rq_(total|http1_total|4xx|2xx):"],
            deliberate: Some(
                "hyper answers an HTTP/1.0 request in HTTP/1.0, so the 426's status line says HTTP/1.0 where \
                 Envoy's says HTTP/1.1; the status, headers, body, stats and what the filters see are Envoy's",
            ),
            ..s(
                "http10_refused",
                "HTTP/1.0 requests on a connection manager that does not take them (Envoy's default): 426, \
                 before any filter",
                probe_config(json!({"request_headers": [["get_property", "request.protocol"]]})),
                vec![http10("GET /direct HTTP/1.0"), http10("GET / HTTP/1.0\r\nhost: conformance.test"), raw("GET /direct HTTP/1.1\r\nhost: x\r\n")],
            )
        },
        s(
            "http10_accepted",
            "HTTP/1.0 taken (http_protocol_options.accept_http_10), a request without a host getting \
             default_host_for_http_10",
            probe_config(json!({"request_headers": [["get_property", "request.protocol"], ["get_property", "request.host"]]})).replacen(
                "          stat_prefix: ingress\n",
                "          stat_prefix: ingress\n          http_protocol_options: { accept_http_10: true, default_host_for_http_10: default.test }\n",
                1,
            ),
            vec![http10("GET /no-host HTTP/1.0"), http10("GET /with-host HTTP/1.0\r\nhost: conformance.test")],
        ),
        s(
            "request_smuggling_shapes",
            "Content-Length with Transfer-Encoding, bad and conflicting lengths, other codings, bad chunks, \
         folded and malformed headers, bad request lines",
            bootstrap("", ""),
            vec![
                raw(
                    "POST /a HTTP/1.1\r\nhost: conformance.test\r\ncontent-length: 5\r\ntransfer-encoding: chunked\r\n\r\n0\r\n",
                ),
                raw("POST /b HTTP/1.1\r\nhost: conformance.test\r\ncontent-length: -1\r\n"),
                raw("POST /c HTTP/1.1\r\nhost: conformance.test\r\ncontent-length: abc\r\n"),
                raw("POST /d HTTP/1.1\r\nhost: conformance.test\r\ncontent-length: 3\r\ncontent-length: 4\r\n\r\nabcd"),
                raw("POST /e HTTP/1.1\r\nhost: conformance.test\r\ncontent-length: 3\r\ncontent-length: 3\r\n\r\nabc"),
                raw("POST /f HTTP/1.1\r\nhost: conformance.test\r\ntransfer-encoding: gzip\r\n"),
                raw(
                    "POST /g HTTP/1.1\r\nhost: conformance.test\r\ntransfer-encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n",
                ),
                raw("GET /i HTTP/1.1\r\nhost : conformance.test\r\n"),
                raw("GET /j HTTP/1.1\r\nhost: conformance.test\r\nx@a: 1\r\n"),
                raw("GET /k HTTP/1.1 junk\r\nhost: conformance.test\r\n"),
                raw("GET /l HTTP/1.1\r\nhost: conformance.test\r\ntransfer-encoding: chunked, chunked\r\n\r\n0\r\n"),
            ],
        ),
        s(
            "direct_response_before_the_body",
            "a direct response to a request with a body: answered at headers (the body unread, the HTTP/1.1 \
             connection closed); a chunked request's transfer-encoding is not shown to plugins",
            probe_config(json!({})),
            vec![
                Request::raw("POST /direct HTTP/1.1\r\nhost: conformance.test\r\ncontent-length: 10\r\n\r\nhello"),
                Request::raw(
                    "POST /direct HTTP/1.1\r\nhost: conformance.test\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n",
                ),
                Request::raw("POST /direct HTTP/1.1\r\nhost: conformance.test\r\ncontent-length: 5\r\n\r\nhello"),
                Request::raw(
                    "POST /echo HTTP/1.1\r\nhost: conformance.test\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
                ),
                Request::post("/direct", "hello").h2(),
            ],
        ),
        s(
            "http2_protocol_errors",
            "HTTP/2 connection and stream errors both proxies answer alike (GOAWAY or RST_STREAM, and the code)",
            bootstrap("", ""),
            h2_cases(&[
                ("DATA on an idle stream", frame(DATA, END_STREAM, 1, b"x")),
                ("a frame over the largest frame size", frame(DATA, 0, 1, &[b'x'; 20000])),
                ("CONTINUATION without HEADERS", frame(CONTINUATION, END_HEADERS, 1, &h2::get())),
                (
                    "padding longer than the frame",
                    frame(HEADERS, END_STREAM | END_HEADERS | PADDED, 1, &[&[0xff], &h2::get()[..]].concat()),
                ),
                (
                    "a body shorter than its content-length",
                    [
                        frame(
                            HEADERS,
                            END_HEADERS,
                            1,
                            &[&[0x83, 0x86, 0x84][..], &h2::authority(), &literal("content-length", "10")].concat(),
                        ),
                        frame(DATA, END_STREAM, 1, b"abc"),
                    ]
                    .concat(),
                ),
            ]),
        ),
        Scenario {
            deliberate: Some(
                "where Envoy 1.40 closes the connection without a word, wasmproxy first sends the GOAWAY with the \
                 error code RFC 9113 names for the fault, so the client learns what it did wrong and which streams \
                 were not processed; and a client that opens stream 3 and then stream 1 gets PROTOCOL_ERROR (RFC \
                 9113 §5.1.1), where Envoy answers stream 3 and ignores stream 1",
            ),
            ..s(
                "http2_protocol_errors_goaway",
                "HTTP/2 connection errors Envoy answers by closing the connection",
                bootstrap("", ""),
                h2_cases(&[
                    ("a client stream with an even id", h2::request(2, &h2::get())),
                    ("a header name in upper case", h2::request(1, &[h2::get(), literal("X-Upper", "1")].concat())),
                    ("a window update of 0 on the connection", frame(WINDOW_UPDATE, 0, 0, &[0; 4])),
                    (
                        "a window update of 0 on a stream",
                        [frame(HEADERS, END_HEADERS, 1, &h2::get()), frame(WINDOW_UPDATE, 0, 1, &[0; 4])].concat(),
                    ),
                    ("SETTINGS_ENABLE_PUSH of 2", frame(SETTINGS, 0, 0, &[0, 2, 0, 0, 0, 2])),
                    ("PING on a stream", frame(PING, 0, 1, b"12345678")),
                    ("stream ids going down", [h2::request(3, &h2::get()), h2::request(1, &h2::get())].concat()),
                ]),
            )
        },
        Scenario {
            deliberate: Some(
                "a malformed request is a stream error (RFC 9113 §8.1.1): wasmproxy resets that stream with \
                 PROTOCOL_ERROR and serves the connection's other streams; Envoy 1.40 (with its default \
                 `stream_error_on_invalid_http_message: false`) closes the whole connection, other clients' \
                 streams on it included",
            ),
            ..s(
                "http2_malformed_request_headers",
                "HTTP/2 requests with malformed headers, each followed by a good request on the same connection",
                bootstrap("", ""),
                h2_cases(
                    &[
                        (
                            "a pseudo-header after a regular one",
                            [0x82, 0x86]
                                .into_iter()
                                .chain(literal("x-a", "1"))
                                .chain([0x84])
                                .chain(h2::authority())
                                .collect(),
                        ),
                        ("no :path", [0x82, 0x86].into_iter().chain(h2::authority()).collect()),
                        ("a connection-specific header", [h2::get(), literal("connection", "keep-alive")].concat()),
                    ]
                    .map(|(what, block)| (what, [h2::request(1, &block), h2::request(3, &h2::get())].concat())),
                ),
            )
        },
        Scenario {
            deliberate: Some(
                "a header block HPACK cannot decode ends the connection with GOAWAY COMPRESSION_ERROR on both; \
                 Envoy's GOAWAY names stream 1 as the last one it processed, wasmproxy's names 0: stream 1 never \
                 started, and a client may retry what a GOAWAY leaves unprocessed (RFC 9113, section 6.8)",
            ),
            ..s(
                "http2_bad_hpack",
                "an HTTP/2 header block HPACK cannot decode",
                bootstrap("", ""),
                h2_cases(&[("a bad HPACK block", h2::request(1, &[0xff; 5]))]),
            )
        },
        Scenario {
            deliberate: Some(
                "Envoy 1.40 joins a header folded over two lines (obsolete line folding) and forwards the request; \
             wasmproxy answers 400, which RFC 9112 allows: a folded header is a smuggling vector, and no client \
             sends one any more",
            ),
            ..s(
                "request_folded_header",
                "a header folded over two lines",
                bootstrap("", ""),
                vec![raw("GET /h HTTP/1.1\r\nhost: conformance.test\r\nx-a: 1\r\n  folded\r\n")],
            )
        },
    ]
}

fn headers() -> Vec<Scenario> {
    let read = json!({"request_headers": [
        ["get_headers", "0"], ["get_header", "0", ":path"], ["get_header", "0", "x-a"],
        ["get_header", "0", "x-missing"], ["header_size", "0"],
    ]});
    vec![
        s(
            "request_headers_read",
            "request header map pairs, one value, a missing header (NOT_FOUND), the size",
            probe_config(read.clone()),
            vec![Request::get("/read?q=1").header("x-a", "1").header("x-a", "2")],
        ),
        s(
            "request_headers_read_http2",
            "the same over HTTP/2",
            probe_config(read),
            vec![Request::get("/read?q=1").header("x-a", "1").h2()],
        ),
        s(
            "request_headers_pseudo_order_http2",
            "HTTP/2 pseudo-headers as the client ordered them (curl's order, a browser's, a gRPC client's)",
            probe_config(json!({"request_headers": [["get_headers", "0"]]})),
            [
                ("curl", [":method", ":path", ":scheme", ":authority"]),
                ("a browser", [":method", ":authority", ":scheme", ":path"]),
                ("a gRPC client", [":method", ":scheme", ":path", ":authority"]),
            ]
            .into_iter()
            .map(|(client, order)| {
                let value = |name: &str| match name {
                    ":method" => "GET",
                    ":path" => "/order",
                    ":scheme" => "http",
                    _ => "conformance.test",
                };
                let block: Vec<u8> = order.iter().flat_map(|name| literal(name, value(name))).collect();
                Request::h2_frames(client, h2::request(1, &block))
            })
            .collect(),
        ),
        s(
            "request_headers_change",
            "add, replace and remove request headers; the upstream sees the result",
            probe_config(json!({"request_headers": [
                ["add_header", "0", "x-added", "new"], ["replace_header", "0", "x-a", "replaced"],
                ["remove_header", "0", "x-b"], ["replace_header", "0", "x-created", "by-replace"],
                ["get_headers", "0"],
            ]})),
            vec![Request::get("/change").header("x-a", "1").header("x-b", "2")],
        ),
        s(
            "request_headers_set_all",
            "replacing the whole request header map",
            probe_config(json!({"request_headers": [
                ["set_headers", "0", ":method=GET;:path=/replaced;:authority=conformance.test;:scheme=http;x-only=1"],
                ["get_headers", "0"],
            ]})),
            vec![Request::get("/original").header("x-gone", "1")],
        ),
        s(
            "response_headers_change",
            "read, add, replace and remove response headers",
            probe_config(json!({"response_headers": [
                ["get_headers", "2"], ["add_header", "2", "x-added", "1"],
                ["replace_header", "2", "x-upstream", "replaced"], ["remove_header", "2", "content-type"],
                // The map's size would count `x-envoy-upstream-service-time`, whose digits
                // depend on timing (9 ms or 10 ms): it goes first.
                ["remove_header", "2", "x-envoy-upstream-service-time"], ["header_size", "2"],
            ]})),
            vec![Request::get("/response")],
        ),
        s(
            "maps_not_available_in_phase",
            "maps and buffers a phase does not have: their statuses",
            probe_config(json!({
                "request_headers": [
                    ["get_headers", "2"], ["get_header", "2", ":status"], ["get_headers", "1"],
                    ["get_buffer", "0", "0", "10"], ["add_header", "2", "x-no", "1"],
                ],
                "response_headers": [
                    ["get_header", "0", ":path"], ["get_headers", "3"], ["get_buffer", "1", "0", "10"],
                ],
            })),
            vec![Request::get("/phases")],
        ),
        s(
            "headers_in_the_log_phase",
            "on_log reads the final request and response headers",
            probe_config(json!({"log": [
                ["get_header", "0", ":path"], ["get_header", "0", "x-a"], ["get_header", "2", ":status"],
                ["get_header", "2", "x-upstream"], ["get_headers", "3"],
            ]})),
            vec![Request::get("/logged").header("x-a", "1")],
        ),
    ]
}

fn bodies() -> Vec<Scenario> {
    vec![
        s(
            "request_body_read",
            "the request body: status, whole, a slice, past its end",
            probe_config(json!({"request_body": [
                ["buffer_status", "0"], ["get_buffer", "0", "0", "100"], ["get_buffer", "0", "3", "4"],
                ["get_buffer", "0", "100", "5"],
            ]})),
            vec![Request::post("/upload", "hello body")],
        ),
        s(
            "request_body_rewrite",
            "a plugin replaces the request body; the upstream receives the new one",
            probe_config(json!({
                "request_headers": [["remove_header", "0", "content-length"]],
                "request_body": [["set_buffer", "0", "0", "1000", "rewritten request"]],
            })),
            vec![Request::post("/echo", "original request")],
        ),
        s(
            "response_body_rewrite",
            "a plugin prepends and appends to the response body",
            probe_config(json!({
                "response_headers": [["remove_header", "2", "content-length"]],
                "response_body": [
                    ["set_buffer", "1", "0", "0", "[prefix] "], ["set_buffer", "1", "100000", "0", " [suffix]"],
                    ["get_buffer", "1", "0", "100"],
                ],
            })),
            vec![Request::get("/body")],
        ),
        s(
            "response_body_in_chunks",
            "a response body that arrives in three chunks: one callback each",
            probe_config(json!({"response_body": [["buffer_status", "1"], ["get_buffer", "1", "0", "100"]]})),
            vec![Request::get("/chunks")],
        ),
        s(
            "response_body_held_until_the_end",
            "a plugin that holds the body until its end sees it grow, then whole",
            bootstrap(
                "",
                &probe(
                    "probe",
                    json!({"phases": {"response_body": [["get_buffer", "1", "0", "100"]]},
                           "returns": {"response_body": "pause_until_end"}}),
                ),
            ),
            vec![Request::get("/chunks")],
        ),
        s(
            "response_trailers",
            "the response trailers callback and map",
            probe_config(json!({"response_trailers": [
                ["get_headers", "3"], ["add_header", "3", "x-added-trailer", "1"],
            ]})),
            vec![Request::get("/trailers").h2()],
        ),
        s(
            "large_response_body",
            "a 64 KiB body passes a plugin that reads its size",
            probe_config(json!({"response_body": [["buffer_status", "1"]]})),
            vec![Request::get("/big")],
        ),
    ]
}

/// A unary gRPC request (over HTTP/1.1 unless made `.h2()`): POST, `application/grpc`, an
/// empty message.
pub(crate) fn grpc(path: &str) -> Request {
    Request::post(path, "\0\0\0\0\0").header("content-type", "application/grpc").header("te", "trailers")
}

/// Two probes: the second answers with a local reply carrying `headers`, the first logs
/// the reply's headers as its response-header callback sees them.
fn local_reply_seen(headers: &str) -> String {
    [
        probe("a", json!({"phases": {"response_headers": [["get_headers", "2"]]}})),
        probe("b", json!({"phases": {"request_headers": [["send_local_response", "403", "nope", headers]]}})),
    ]
    .concat()
}

fn local_replies() -> Vec<Scenario> {
    let reply = |phase: &str| json!({ phase: [["send_local_response", "403", "denied", "x-why=policy"]] });
    let add = |name: &str| json!([["add_header", "2", name, "1"]]);
    vec![
        s(
            "local_reply_from_request_headers",
            "send_local_response in on_request_headers",
            probe_config(reply("request_headers")),
            vec![Request::get("/deny")],
        ),
        s(
            "local_reply_from_request_body",
            "send_local_response in on_request_body",
            probe_config(reply("request_body")),
            vec![Request::post("/deny", "some body")],
        ),
        s(
            "local_reply_from_response_headers",
            "send_local_response in on_response_headers replaces the upstream's answer",
            probe_config(reply("response_headers")),
            vec![Request::get("/deny")],
        ),
        s(
            "local_reply_from_response_body",
            "send_local_response in on_response_body",
            probe_config(reply("response_body")),
            vec![Request::get("/deny")],
        ),
        s(
            "local_reply_empty_body_and_headers",
            "a local reply without a body, with two headers",
            probe_config(
                json!({"request_headers": [["send_local_response", "401", "", "www-authenticate=Basic;x-b=2"]]}),
            ),
            vec![Request::get("/auth")],
        ),
        s(
            "local_reply_header_order",
            "a local reply's headers in order, to the client and to an earlier filter: the plugin's own, then \
             content-length and content-type",
            bootstrap("", &local_reply_seen("x-b=1;x-c=2")),
            vec![Request::get("/order")],
        ),
        s(
            "local_reply_with_its_own_content_type",
            "a local reply whose plugin sets content-type",
            bootstrap("", &local_reply_seen("content-type=application/json;x-b=1")),
            vec![Request::get("/typed")],
        ),
        s(
            "direct_response_length_removed",
            "a plugin removes content-length from a direct response: sent without a length (HTTP/1.1 chunked)",
            probe_config(json!({"response_headers": [["remove_header", "2", "content-length"]]})),
            vec![Request::get("/direct"), Request::get("/direct").h2()],
        ),
        s(
            "grpc_local_reply_in_the_response_phase",
            "a plugin answers a gRPC request itself when the upstream's response headers come",
            bootstrap(
                "",
                &probe(
                    "p",
                    json!({"phases": {"response_headers": [["send_local_response", "403", "denied late", "x-why=policy", ""]]}}),
                ),
            ),
            vec![grpc("/pkg.Svc/Call"), grpc("/pkg.Svc/Call").h2()],
        ),
        s(
            "grpc_local_reply_from_a_plugin",
            "a plugin refuses a gRPC request, with a gRPC status and without one: a trailers-only gRPC answer",
            bootstrap(
                "",
                &[
                    probe("a", json!({"phases": {"response_headers": [["get_headers", "2"]]}})),
                    probe(
                        "b",
                        json!({"phases": {"request_headers": [["send_local_response", "403", "denied: 100%", "x-why=policy", "16"]]}}),
                    ),
                ]
                .concat(),
            ),
            vec![grpc("/pkg.Svc/Call"), grpc("/pkg.Svc/Call").h2()],
        ),
        s(
            "grpc_local_reply_status_from_http",
            "a plugin's local reply to a gRPC request without a gRPC status: derived from the HTTP status",
            probe_config(json!({"request_headers": [["send_local_response", "403", "denied", ""]]})),
            vec![grpc("/pkg.Svc/Call").h2()],
        ),
        s(
            "grpc_proxy_answers",
            "the proxy's own answers to gRPC requests: no healthy upstream, an upstream timeout, a direct response",
            bootstrap("", ""),
            vec![grpc("/closed").h2(), grpc("/timeout").h2(), grpc("/direct").h2(), grpc("/closed")],
        ),
        s(
            "grpc_upstream_trailers_only",
            "an upstream gRPC error answered trailers-only (HEADERS ending the stream) passes through as it is",
            bootstrap("", ""),
            vec![Request::h2_frames(
                "a gRPC call to a method the upstream lacks",
                h2::request(
                    1,
                    &[
                        literal(":method", "POST"),
                        literal(":scheme", "http"),
                        literal(":path", "/pkg.Nope/Call"),
                        literal(":authority", "conformance.test"),
                        literal("content-type", "application/grpc"),
                        literal("te", "trailers"),
                    ]
                    .concat(),
                ),
            )],
        ),
        s(
            "local_reply_through_earlier_filters",
            "a reply made in the request phase goes back through the filter that made it and the ones before it",
            bootstrap(
                "",
                &[
                    probe("a", json!({"phases": {"response_headers": add("x-a")}})),
                    probe(
                        "b",
                        json!({"phases": {"request_headers": [["send_local_response", "403", "nope", "x-b=1"]],
                                          "response_headers": add("x-bb")}}),
                    ),
                    probe("c", json!({"phases": {"response_headers": add("x-c")}})),
                ]
                .concat(),
            ),
            vec![Request::get("/chain")],
        ),
        s(
            "close_stream",
            "proxy_close_stream in on_request_headers resets the stream",
            probe_config(json!({"request_headers": [["close", "0"]]})),
            vec![Request::get("/close")],
        ),
    ]
}

fn callouts() -> Vec<Scenario> {
    let paused = |call: serde_json::Value, on_response: serde_json::Value| {
        bootstrap(
            "",
            &probe(
                "probe",
                json!({"phases": {"request_headers": [call], "http_call_response": on_response},
                       "returns": {"request_headers": "pause"}}),
            ),
        )
    };
    vec![
        s(
            "http_call_then_resume",
            "pause, call the upstream, add a header from the answer, resume",
            paused(
                call("/status/200"),
                json!([["call_response"], ["add_header", "0", "x-auth", "checked"], ["continue", "0"]]),
            ),
            vec![Request::get("/protected")],
        ),
        s(
            "http_call_then_reject",
            "pause, call, answer the client with a local reply",
            paused(call("/status/403"), json!([["call_response"], ["send_local_response", "403", "rejected", ""]])),
            vec![Request::get("/protected")],
        ),
        s(
            "http_call_with_body",
            "a POST callout with a body, read back by the echo path",
            paused(
                json!(["http_call", "upstream", ":method=POST;:path=/echo;:authority=auth;x-c=1", "call body", "1000"]),
                json!([["call_response"], ["continue", "0"]]),
            ),
            vec![Request::get("/with-body")],
        ),
        s(
            "http_call_unknown_cluster",
            "http_call to a cluster that does not exist",
            probe_config(json!({"request_headers": [
                ["http_call", "nowhere", ":method=GET;:path=/;:authority=x", "", "1000"],
            ]})),
            vec![Request::get("/unknown")],
        ),
        s(
            "http_call_missing_pseudo_headers",
            "http_call without :authority, and without :path",
            probe_config(json!({"request_headers": [
                ["http_call", "upstream", ":method=GET;:path=/", "", "1000"],
                ["http_call", "upstream", ":method=GET;:authority=x", "", "1000"],
            ]})),
            vec![Request::get("/missing")],
        ),
        s(
            "http_call_timeout",
            "a callout slower than its timeout: the response callback with nothing",
            paused(
                call("/sleep").as_array().map_or(json!([]), |a| {
                    let mut a = a.clone();
                    a[4] = json!("100");
                    json!(a)
                }),
                json!([["call_response"], ["continue", "0"]]),
            ),
            vec![Request::get("/slow-call")],
        ),
        s(
            "http_call_connection_failure",
            "a callout to a cluster nobody listens on",
            paused(
                json!(["http_call", "closed", ":method=GET;:path=/;:authority=x", "", "1000"]),
                json!([["call_response"], ["continue", "0"]]),
            ),
            vec![Request::get("/refused-call")],
        ),
    ]
}

fn shared_state() -> Vec<Scenario> {
    vec![
        s(
            "shared_data_cas",
            "shared data: NOT_FOUND, set, get with cas, a stale cas (CAS_MISMATCH), the right cas",
            probe_config(json!({"request_headers": [
                ["get_shared", "k"], ["set_shared", "k", "v1", "0"], ["get_shared", "k"],
                ["set_shared", "k", "v2", "12345"], ["get_shared", "k"],
            ]})),
            vec![Request::get("/shared"), Request::get("/shared")],
        ),
        s(
            "shared_queue",
            "register, resolve, enqueue, dequeue, an empty queue, an unknown queue",
            probe_config(json!({"request_headers": [
                ["register_queue", "q"], ["resolve_queue", "probe_vm", "q"], ["resolve_queue", "other_vm", "nope"],
                ["dequeue", "1"], ["enqueue", "1", "m1"], ["dequeue", "1"], ["dequeue", "1"], ["enqueue", "99", "x"],
            ]})),
            vec![Request::get("/queue")],
        ),
        s(
            "metrics_counter_and_gauge",
            "define, increment, record and read metrics; the admin shows them",
            probe_config(json!({"request_headers": [
                ["define_metric", "counter", "requests_seen"], ["increment_metric", "requests_seen", "1"],
                ["get_metric", "requests_seen"], ["define_metric", "gauge", "level"],
                ["record_metric", "level", "7"], ["increment_metric", "level", "-2"], ["get_metric", "level"],
            ]})),
            vec![Request::get("/m"), Request::get("/m")],
        ),
        s(
            "metrics_histogram",
            "a histogram: defined and recorded; admin `/stats` shows its quantiles after a stats flush",
            bootstrap(
                "stats_flush_interval: 1s\n",
                &probe(
                    "probe",
                    json!({"phases": {"request_headers": [
                        ["define_metric", "histogram", "sizes"], ["record_metric", "sizes", "10"],
                        ["record_metric", "sizes", "10"], ["record_metric", "sizes", "1234"],
                        ["get_metric", "sizes"], ["increment_metric", "sizes", "1"],
                    ]}}),
                ),
            ),
            vec![Request::get("/h")],
        ),
    ]
}

/// Admin stats under Envoy's names, access logs, the Wasm access logger.
fn admin_and_logs() -> Vec<Scenario> {
    // One of each outcome: a direct response, upstream answers over HTTP/1.1 and HTTP/2, a
    // redirect, a route timeout (504), a connection refused (503), a POST with a body.
    let requests = || {
        vec![
            Request::get("/direct"),
            Request::get("/u1"),
            Request::get("/u2").h2(),
            Request::get("/redirect"),
            Request::get("/timeout"),
            Request::get("/closed"),
            Request::post("/u3", "0123456789"),
        ]
    };
    let access_log = r#"          access_log:
          - name: envoy.access_loggers.stderr
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.access_loggers.stream.v3.StderrAccessLog
              log_format:
                text_format_source:
                  inline_string: "access log: %REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL% %RESPONSE_CODE% %RESPONSE_FLAGS% %BYTES_RECEIVED% %BYTES_SENT% %UPSTREAM_CLUSTER% %ROUTE_NAME% %RESPONSE_CODE_DETAILS% %REQ(X-MISSING)% %REQ(:AUTHORITY):9% %RESP(CONTENT-TYPE)% %RESP(LOCATION)%\n"
          - name: envoy.access_loggers.stderr
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.access_loggers.stream.v3.StderrAccessLog
              log_format:
                json_format:
                  access_log: true
                  code: "%RESPONSE_CODE%"
                  flags: "%RESPONSE_FLAGS%"
                  sent: "%BYTES_SENT%"
                  received: "%BYTES_RECEIVED%"
                  missing: "%REQ(X-MISSING)%"
                  mixed: "%REQ(:METHOD)% to %UPSTREAM_CLUSTER%"
                  nested: { route: "%ROUTE_NAME%", protocol: "%PROTOCOL%" }
"#;
    let logger = r#"          - name: envoy.access_loggers.wasm
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.access_loggers.wasm.v3.WasmAccessLog
              config:
                name: logger
                root_id: logger_root
                vm_config:
                  vm_id: logger_vm
                  runtime: envoy.wasm.runtime.v8
                  code: { local: { filename: "@PLUGINS@/probe.wasm" } }
                configuration:
                  "@type": type.googleapis.com/google.protobuf.StringValue
                  value: '{"phases": {"root_log": [["get_header", "0", ":path"], ["get_header", "2", ":status"], ["get_header", "0", "x-missing"], ["get_property", "response.code"], ["get_property", "request.path"], ["get_property", "response.code_details"], ["get_property", "xds.route_name"]]}}'
"#;
    vec![
        Scenario {
            stats: &[
                r"^http\.ingress\.downstream_rq_(total|active|completed|[1-5]xx|http1_total|http2_total):",
                r"^http\.ingress\.(no_route|no_cluster|rq_direct_response|rq_total):",
                r"^http\.ingress\.downstream_cx_(total|active|http1_total|http2_total):",
                r"^listener\.127\.0\.0\.1_\d+\.(downstream_cx_total|downstream_cx_active):",
                r"^listener\.127\.0\.0\.1_\d+\.http\.ingress\.downstream_rq_(completed|[1-5]xx):",
                r"^cluster\.(upstream|closed)\.(external\.)?upstream_rq_(total|completed|timeout|pending_total|\d+|[1-5]xx):",
                r"^cluster\.(upstream|closed)\.(upstream_cx_connect_fail|upstream_cx_total|membership_total|membership_healthy):",
                r"^server\.(live|concurrency|state):",
                r"^wasmcustom\.",
            ],
            ..s(
                "stats_envoy_names",
                "admin `/stats` lines of the connection manager, listener, clusters and server after one request of each outcome",
                bootstrap(
                    "",
                    &probe(
                        "probe",
                        json!({"phases": {"request_headers": [
                            ["define_metric", "counter", "seen"], ["increment_metric", "seen", "1"],
                        ]}}),
                    ),
                ),
                requests(),
            )
        },
        Scenario {
            prometheus: &[
                r"custom_header_value_counts",
                r"^envoy_cluster_upstream_rq_total\{",
                r"^envoy_server_live\{",
            ],
            ..s(
                "stats_tags_prometheus",
                "stats_config.stats_tags (regexes cutting tags out of a plugin metric's name, a fixed value) as Prometheus labels",
                bootstrap(
                    "stats_config:\n  stats_tags:\n  - { tag_name: value, regex: '(_value=([a-zA-Z]+))' }\n  - { tag_name: reporter, regex: '(_reporter=([a-zA-Z]+))' }\n  - { tag_name: region, fixed_value: eu }\n",
                    &probe(
                        "probe",
                        json!({"phases": {"request_headers": [
                            ["define_metric", "counter", "custom_header_value_counts_value=foo_reporter=wasmgosdk"],
                            ["increment_metric", "custom_header_value_counts_value=foo_reporter=wasmgosdk", "1"],
                            ["if_header", "0", "x-bar", "define_metric", "counter", "custom_header_value_counts_value=bar_reporter=wasmgosdk"],
                            ["if_header", "0", "x-bar", "increment_metric", "custom_header_value_counts_value=bar_reporter=wasmgosdk", "2"],
                        ]}}),
                    ),
                ),
                vec![Request::get("/t1"), Request::get("/t2"), Request::get("/t3").header("x-bar", "1")],
            )
        },
        Scenario {
            prometheus: &[r"istio_requests_total"],
            ..s(
                "stats_tags_istio",
                "Istio's form of tags in a plugin metric's name (key=.=value;.; segments) with Istio's stats_tags regexes, as Prometheus labels",
                bootstrap(
                    "stats_config:\n  stats_tags:\n  - { tag_name: reporter, regex: '(reporter=\\.=(.*?);\\.;)' }\n  - { tag_name: source_app, regex: '(source_app=\\.=(.*?);\\.;)' }\n",
                    &istio_metric_probe(),
                ),
                vec![Request::get("/t1"), Request::get("/t2").header("x-bar", "1")],
            )
        },
        Scenario {
            prometheus: &[r"istio_requests_total"],
            deliberate: Some(
                "without stats_tags rules, Envoy prints a plugin metric's key=.=value;.; segments as part of its \
                 Prometheus name (made of underscores); wasmproxy makes them labels, as the rules Istio configures \
                 would, so that plugin metrics carry labels with no configuration (use_all_default_tags: false turns \
                 it off)",
            ),
            ..s(
                "plugin_metric_labels",
                "a plugin metric's key=.=value;.; segments without stats_tags rules",
                bootstrap("", &istio_metric_probe()),
                vec![Request::get("/t1"), Request::get("/t2").header("x-bar", "1")],
            )
        },
        Scenario {
            prometheus: &[r"upstream_rq_total", r"server_live", r"http_ingress_downstream_rq_2xx", r"custom_counter"],
            ..s(
                "stats_without_default_tags",
                "stats_config.use_all_default_tags: false: Envoy's own stats keep their full names, without tags",
                bootstrap(
                    "stats_config: { use_all_default_tags: false }\n",
                    &probe(
                        "probe",
                        json!({"phases": {"request_headers": [
                            ["define_metric", "counter", "custom_counter"], ["increment_metric", "custom_counter", "1"],
                        ]}}),
                    ),
                ),
                vec![Request::get("/t1")],
            )
        },
        s(
            "access_logs",
            "stderr access loggers with a text format and a JSON format, one request of each outcome",
            crate::scenario::bootstrap_hcm("", access_log, ""),
            requests(),
        ),
        s(
            "wasm_access_logger",
            "envoy.access_loggers.wasm: the plugin's root context reads headers and properties in on_log",
            crate::scenario::bootstrap_hcm("", &format!("          access_log:\n{logger}"), ""),
            requests(),
        ),
    ]
}

fn properties() -> Vec<Scenario> {
    let node = "node:\n  id: node-1\n  cluster: cluster-a\n  metadata: { team: edge, replicas: 3 }\n  locality: { region: eu, zone: eu-1 }\n";
    vec![
        s(
            "properties_request",
            "request.* attributes with Envoy's encodings",
            probe_config(json!({"request_headers": get(&[
                "request.path", "request.url_path", "request.host", "request.scheme", "request.method",
                "request.headers.x-a", "request.referer", "request.useragent", "request.protocol", "request.query",
                "request.nope",
            ])})),
            vec![Request::get("/p?x=1&y=2").header("x-a", "1").header("referer", "r").header("user-agent", "ua")],
        ),
        s(
            "properties_empty_path",
            "a property lookup with an empty path",
            probe_config(json!({"request_headers": get(&[""])})),
            vec![Request::get("/empty")],
        ),
        s(
            "properties_request_http2",
            "request.protocol and scheme over HTTP/2",
            probe_config(json!({"request_headers": get(&["request.protocol", "request.scheme"])})),
            vec![Request::get("/p2").h2()],
        ),
        s(
            "properties_response_and_sizes",
            "response.* and request sizes in the log phase",
            probe_config(json!({
                // `response.total_size` counts the response headers, and with them the
                // timing-dependent digits of `x-envoy-upstream-service-time`: the header goes.
                "response_headers": [["remove_header", "2", "x-envoy-upstream-service-time"]],
                "log": get(&[
                    "response.code", "response.code_details", "response.flags", "response.size",
                    "response.total_size", "response.headers.x-upstream", "request.size", "request.total_size",
                    "response.grpc_status",
                ]),
            })),
            vec![Request::post("/sizes", "0123456789")],
        ),
        s(
            "properties_response_flags",
            "response.flags in the log phase, Envoy's bits: none, UT, UF, NR",
            probe_config(json!({"log": get(&["response.flags", "response.code_details"])})).replacen(
                "              - match: { prefix: / }\n",
                "              - match: { prefix: /u }\n",
                1,
            ),
            vec![Request::get("/direct"), Request::get("/timeout"), Request::get("/closed"), Request::get("/nowhere")],
        ),
        s(
            "properties_connection_and_upstream",
            "connection.*, upstream.* attributes",
            probe_config(json!({
                "request_headers": get(&["connection.mtls", "connection.requested_server_name", "connection.tls_version", "upstream.address"]),
                "response_headers": get(&["upstream.address", "upstream.port", "xds.cluster_name"]),
            })),
            vec![Request::get("/conn")],
        ),
        s(
            "properties_plugin",
            "plugin_name, plugin_root_id, plugin_vm_id",
            probe_config(json!({"request_headers": get(&["plugin_name", "plugin_root_id", "plugin_vm_id"])})),
            vec![Request::get("/plugin")],
        ),
        s(
            "properties_xds",
            "xds.* attributes: node fields, route, cluster, listener direction, filter chain",
            bootstrap(
                node,
                &probe(
                    "probe",
                    json!({"phases": {"request_headers": get(&[
                        "xds.node.id", "xds.node.cluster", "xds.node.metadata.team",
                        "xds.node.metadata.replicas", "xds.node.locality", "xds.node.locality.zone",
                        "xds.route_name", "xds.cluster_name", "xds.listener_direction", "xds.filter_chain_name",
                        "xds.listener_metadata", "xds.route_metadata", "node", "xds.node.nope",
                    ])}}),
                ),
            ),
            vec![Request::get("/xds"), Request::get("/direct")],
        ),
        Scenario {
            deliberate: Some(
                "a Struct read as a whole map lists its keys in the order of the configuration; Envoy lists them \
                 in protobuf's map order, which depends on hashing and is not specified",
            ),
            ..s(
                "properties_xds_node_metadata_map",
                "xds.node.metadata as one map",
                bootstrap(node, &probe("probe", json!({"phases": {"request_headers": get(&["xds.node.metadata"])}}))),
                vec![Request::get("/node")],
            )
        },
        Scenario {
            deliberate: Some(
                "`xds.node` as a whole carries the proxy's own user agent: Envoy's says `envoy` with a build-version \
                 message, wasmproxy's says `wasmproxy` and its version",
            ),
            ..s(
                "properties_xds_node_whole",
                "xds.node as one serialized message",
                bootstrap(node, &probe("probe", json!({"phases": {"request_headers": get(&["xds.node"])}}))),
                vec![Request::get("/node")],
            )
        },
        s(
            "properties_metadata",
            "listener, virtual host, route and cluster metadata: whole, by namespace, by key, typed, null",
            with_metadata(probe_config(json!({"request_headers": get(&[
                "xds.route_metadata", "xds.route_metadata.filter_metadata", "xds.route_metadata.filter_metadata.acme.owner",
                "xds.route_metadata.typed_filter_metadata", "xds.route_metadata.typed_filter_metadata.tacme.k",
                "xds.route_metadata.filter_metadata.nope", "xds.route_metadata.nope", "route_metadata",
                "xds.virtual_host_name", "xds.virtual_host_metadata", "xds.virtual_host_metadata.filter_metadata.acme.vh",
                "xds.listener_metadata", "xds.listener_metadata.filter_metadata.acme.side",
                "xds.cluster_metadata.filter_metadata.acme.tier", "xds.cluster_metadata.filter_metadata.acme.scalars",
                "xds.cluster_metadata.filter_metadata.acme.scalars.3", "xds.cluster_metadata.filter_metadata.acme.nested.deep",
                "xds.cluster_metadata.filter_metadata.acme.nothing", "xds.cluster_metadata.filter_metadata.acme.with_null",
                "cluster_metadata",
            ])}))),
            vec![Request::get("/meta"), Request::get("/direct")],
        ),
        s(
            "properties_metadata_tcp",
            "a network filter reads its TCP proxy cluster's metadata",
            with_metadata(tcp_proxy(json!({
                "kind": "stream",
                "phases": {
                    "new_connection": get(&["xds.cluster_metadata.filter_metadata.acme.tier", "xds.listener_metadata"]),
                    "downstream_data": get(&["xds.cluster_metadata.filter_metadata.acme.tier", "xds.cluster_name"]),
                },
            }))),
            vec![Request::raw("GET /through-tcp HTTP/1.1\r\nhost: tcp.test\r\n\r\n")],
        ),
        s(
            "struct_configuration_bytes",
            "a google.protobuf.Struct VM configuration reaches the plugin in protobuf wire format, Envoy's YAML scalars and all",
            probe_config(json!({"request_headers": []})).replacen(
                "                vm_config:\n",
                "                vm_config:\n                  configuration:\n                    \"@type\": type.googleapis.com/google.protobuf.Struct\n                    value: { a: { b: [1, 2.5, \"3\", 010, 0x10, 3000000000, yes, Off, ~, x, { c: -7 }] } }\n",
                1,
            ),
            vec![Request::get("/struct")],
        ),
        s(
            "properties_filter_state",
            "set_property, read back, an unknown name, the filter_state map",
            probe_config(json!({
                "request_headers": [["set_property", "my_key", "my_value"], ["get_property", "my_key"],
                                    ["get_property", "unknown_name"], ["get_property", "filter_state"], ["get_property", "metadata"]],
                "response_headers": [["get_property", "my_key"]],
                "log": [["get_property", "my_key"]],
            })),
            vec![Request::get("/state")],
        ),
    ]
}

/// Metadata on the listener, its virtual host, the upstream route and the upstream cluster
/// (single-key maps where a scenario reads a whole map: Envoy orders map keys by hash).
fn with_metadata(config: String) -> String {
    let listener = "  - name: main\n";
    let vhost = "            - name: all\n";
    let route = "                name: upstream_route\n";
    let cluster = "  - name: upstream\n";
    for piece in [listener, vhost, route, cluster] {
        assert!(config.contains(piece), "{piece:?} not in the configuration");
    }
    config
        .replacen(listener, "  - name: main\n    metadata: { filter_metadata: { acme: { side: edge } } }\n", 1)
        .replacen(vhost, "            - name: all\n              metadata: { filter_metadata: { acme: { vh: one } } }\n", 1)
        .replacen(
            route,
            "                name: upstream_route\n                metadata:\n                  filter_metadata: { acme: { owner: team-a } }\n                  typed_filter_metadata:\n                    tacme: { \"@type\": type.googleapis.com/google.protobuf.Struct, value: { k: v } }\n",
            1,
        )
        .replacen(
            cluster,
            "  - name: upstream\n    metadata:\n      filter_metadata:\n        acme:\n          tier: gold\n          scalars: [1, two, true, 2.5, 010, 0x10, 3000000000, yes]\n          nested: { deep: x }\n          with_null: [1, null]\n",
            1,
        )
}

/// The probe reading each of these properties.
fn get(paths: &[&str]) -> Vec<serde_json::Value> {
    paths.iter().map(|p| json!(["get_property", p])).collect()
}

/// `SetEnvoyFilterStateArguments { path: key, value }` in protobuf wire format, as hex.
fn filter_state_args(key: &str, value: &str) -> String {
    let field = |number: u8, bytes: &[u8]| [&[number << 3 | 2, bytes.len() as u8][..], bytes].concat();
    let message = [field(1, key.as_bytes()), field(2, value.as_bytes())].concat();
    message.iter().map(|b| format!("{b:02x}")).collect()
}

/// The probe setting `key` to `value` through `set_envoy_filter_state`.
fn set_filter_state(key: &str, value: &str) -> serde_json::Value {
    json!(["foreign_hex", "set_envoy_filter_state", filter_state_args(key, value)])
}

fn foreign_functions() -> Vec<Scenario> {
    // DeclarePropertyArguments { name: "my_prop", readonly: true } and
    // SetEnvoyFilterStateArguments { path: "wasm.my_prop", value: "v" }, as protobuf.
    let declare = "0a076d795f70726f701001";
    let set_state = "0a0c7761736d2e6d795f70726f70120176";
    let objects = [
        ("envoy.tcp_proxy.cluster", "other"),
        ("envoy.network.upstream_server_name", "sni.test"),
        ("envoy.upstream.dynamic_host", "h.test"),
        ("envoy.upstream.dynamic_port", " 8080"),
        ("envoy.upstream.dynamic_port", "-1"),
        ("envoy.upstream.dynamic_port", "4294967296"),
        ("envoy.string", "plain"),
        ("envoy.hashable_string", "hs"),
        ("envoy.network.ip", "::1"),
        ("envoy.network.ip", "10.0.0.1:80"),
        ("envoy.network.application_protocols", "h2,http/1.1"),
        ("envoy.network.upstream_subject_alt_names", "a,b"),
        ("my.key", "v"),
        ("wasm.x", "y"),
        ("", "x"),
    ];
    let mut commands: Vec<serde_json::Value> = objects.iter().map(|(k, v)| set_filter_state(k, v)).collect();
    for (key, _) in &objects[..objects.len() - 1] {
        commands.push(json!(["get_property", format!("filter_state/{key}")]));
    }
    commands.push(json!(["foreign_hex", "set_envoy_filter_state", "ff"]));
    commands.push(set_filter_state("envoy.tcp_proxy.cluster", "again"));
    commands.push(json!(["set_property", "mine", "v1"]));
    commands.push(json!(["get_property", "filter_state/wasm.mine"]));
    commands.push(json!(["get_property", "upstream_filter_state/envoy.tcp_proxy.cluster"]));
    let envoy_objects = s(
        "set_envoy_filter_state_objects",
        "set_envoy_filter_state: the keys Envoy has factories for, values they refuse, read back through filter_state",
        probe_config(json!({
            "request_headers": commands,
            "response_headers": [["get_property", "filter_state/envoy.tcp_proxy.cluster"]],
        })),
        vec![Request::get("/objects")],
    );
    vec![
        s(
            "foreign_functions",
            "compress, uncompress, declare_property, set_envoy_filter_state, clear_route_cache, an unknown name",
            probe_config(json!({
                "request_headers": [
                    ["foreign", "compress", "hello hello hello hello"],
                    ["foreign", "uncompress", "not zlib"],
                    ["foreign", "clear_route_cache", ""],
                    ["foreign", "no_such_function", "x"],
                    ["foreign_hex", "declare_property", declare],
                    ["foreign_hex", "declare_property", declare],
                    ["set_property", "my_prop", "first"],
                    ["get_property", "my_prop"],
                    ["set_property", "my_prop", "second"],
                    ["get_property", "my_prop"],
                    ["foreign_hex", "set_envoy_filter_state", set_state],
                ],
            })),
            vec![Request::get("/foreign")],
        ),
        envoy_objects,
    ]
}

fn lifecycle() -> Vec<Scenario> {
    vec![
        s(
            "configuration_buffers",
            "on_vm_start and on_configure read their configuration buffers",
            bootstrap(
                "",
                &wasm_filter(
                    "probe",
                    "probe.wasm",
                    &json!({"configure": [["get_buffer", "7", "0", "1000"], ["get_buffer", "6", "0", "10"]],
                            "vm_start": [["get_buffer", "6", "0", "1000"]]})
                    .to_string(),
                    "",
                ),
            ),
            vec![Request::get("/config")],
        ),
        s(
            "wasm_services_start",
            "a singleton and a per-worker Wasm service run on_vm_start and on_configure, read their configuration and the node",
            bootstrap(
                &format!(
                    "node: {{ id: node-7 }}\nbootstrap_extensions:\n{}{}",
                    service(
                        "single",
                        true,
                        json!({"configure": [["get_buffer", "7", "0", "1000"], ["get_property", "xds.node.id"], ["register_queue", "q"]]})
                    ),
                    service("each", false, json!({"configure": [["get_property", "plugin_name"], ["log_level"]]})),
                ),
                "",
            ),
            vec![Request::get("/direct")],
        ),
        Scenario {
            deliberate: Some(
                "a per-worker Wasm service (singleton: false) is configured once per worker; Envoy configures it \
                 three times with one worker: a canary check, a copy on its main thread (which then ticks and calls \
                 out like the worker's, doubling the work) and the worker's",
            ),
            ..s(
                "wasm_service_per_worker_copies",
                "how many copies of a per-worker Wasm service were configured, counted in shared data",
                bootstrap(
                    &format!(
                        "bootstrap_extensions:\n{}",
                        service("each", false, json!({"configure": [["cas_increment", "configured", "0", "x"]]})),
                    ),
                    &wasm_filter(
                        "each",
                        "probe.wasm",
                        &json!({"phases": {"request_headers": [["get_shared", "configured"]]}}).to_string(),
                        "",
                    ),
                ),
                vec![Request::get("/copies")],
            )
        },
        s(
            "grpc_callouts",
            "a unary gRPC call, a stream with two messages, a call to a missing method: every gRPC callback and its data",
            bootstrap(
                &format!(
                    "bootstrap_extensions:\n{}",
                    service(
                        "grpc_client",
                        true,
                        json!({
                            "configure": [
                                ["grpc_call", "grpc", "pkg.Echo", "Say", "hello", "1000"],
                                ["grpc_stream", "grpc", "pkg.Echo", "Stream"],
                                ["grpc_send", "6", "one", "false"], ["grpc_send", "6", "two", "true"],
                                ["grpc_call", "grpc", "pkg.Echo", "Missing", "x", "1000"],
                                ["grpc_call", "nowhere", "pkg.Echo", "Say", "x", "1000"],
                            ],
                            "phases": {
                                "root_grpc_initial_metadata": [["get_headers", "4"]],
                                "root_grpc_message": [["get_buffer", "5", "0", "100"]],
                                "root_grpc_trailing_metadata": [["get_headers", "5"]],
                                "root_grpc_close": [["get_status"]],
                            },
                        }),
                    )
                ),
                "",
            ),
            vec![Request::get("/direct")],
        ),
        s(
            "configure_false_stops_start_up",
            "on_configure returning false: neither proxy starts",
            bootstrap("", &probe("probe", json!({"configure_result": false}))),
            vec![],
        ),
        s(
            "log_levels",
            "plugin logs at each level with the wasm component at info; the level the plugin sees",
            probe_config(json!({"request_headers": [
                ["log", "0", "trace line"], ["log", "1", "debug line"], ["log", "2", "info line"],
                ["log", "3", "warn line"], ["log", "4", "error line"], ["log", "5", "critical line"], ["log_level"],
            ]})),
            vec![Request::get("/logs")],
        ),
        s(
            "time_random_and_wasi",
            "the clock, WASI random bytes and time",
            probe_config(json!({"request_headers": [["time"], ["wasi_time"], ["random", "16"], ["random", "70000"]]})),
            vec![Request::get("/time")],
        ),
        s(
            "context_lifecycle",
            "create, headers, body, log, done and delete in order for two requests",
            probe_config(json!({})),
            vec![Request::post("/one", "a"), Request::get("/two")],
        ),
    ]
}

/// The probe's phases for the failure scenarios: it panics when the request has `x-panic`,
/// and adds its VM's counter to each response (1 in a fresh VM).
fn panic_on_header() -> String {
    json!({"phases": {
        "request_headers": [["if_header", "0", "x-panic", "panic", "boom"]],
        "response_headers": [["vm_counter", "2", "x-vm-count"]],
    }})
    .to_string()
}

/// The probe of [`panic_on_header`] under FAIL_RELOAD with this backoff base.
fn fail_reload(base: &str) -> String {
    let policy = format!(
        "failure_policy: FAIL_RELOAD\n                reload_config: {{ backoff: {{ base_interval: {base} }} }}"
    );
    bootstrap("", &wasm_filter("probe", "probe.wasm", &panic_on_header(), &policy))
}

fn failures() -> Vec<Scenario> {
    vec![
        s(
            "trap_fail_closed",
            "a panic in on_request_headers: 503 now and for the requests after",
            probe_config(json!({"request_headers": [["panic", "boom"]]})),
            vec![Request::get("/a"), Request::get("/b")],
        ),
        s(
            "trap_fail_open",
            "the same with FAIL_OPEN: requests pass without the plugin",
            bootstrap(
                "",
                &wasm_filter(
                    "probe",
                    "probe.wasm",
                    &json!({"phases": {"request_headers": [["panic", "boom"]]}}).to_string(),
                    "failure_policy: FAIL_OPEN",
                ),
            ),
            vec![Request::get("/a"), Request::get("/b")],
        ),
        s(
            "trap_legacy_fail_open",
            "the deprecated fail_open: true: even the request that panics passes, without the plugin",
            bootstrap("", &wasm_filter("probe", "probe.wasm", &panic_on_header(), "fail_open: true")),
            vec![Request::get("/a"), Request::get("/b").header("x-panic", "1"), Request::get("/c")],
        ),
        Scenario {
            stats: &[r"^wasm\.probe\.vm_reload_(success|failure|backoff):"],
            ..s(
                "trap_fail_reload_in_backoff",
                "FAIL_RELOAD with a long backoff: after the panic, 503 without the plugin (vm_reload_backoff)",
                fail_reload("60s"),
                vec![
                    Request::get("/a"),
                    Request::get("/b").header("x-panic", "1"),
                    Request::get("/c"),
                    Request::get("/d"),
                ],
            )
        },
        Scenario {
            stats: &[r"^wasm\.probe\.vm_reload_(success|failure|backoff):"],
            ..s(
                "trap_fail_reload_reloads",
                "FAIL_RELOAD with a 10 ms backoff: the next request gets a new VM (its counter starts again)",
                fail_reload("0.01s"),
                vec![Request::get("/a"), Request::get("/b").header("x-panic", "1"), Request::get("/c")],
            )
        },
        Scenario {
            deliberate: Some(
                "Envoy 1.40 dies (SIGFPE) when it reloads a VM with a 1 ms base_interval: its jitter divides by half \
                 the base in whole milliseconds, 0; wasmproxy reloads the VM and answers",
            ),
            ..s(
                "trap_fail_reload_1ms",
                "FAIL_RELOAD with a 1 ms backoff",
                fail_reload("0.001s"),
                vec![Request::get("/a"), Request::get("/b").header("x-panic", "1"), Request::get("/c")],
            )
        },
        s(
            "bad_pointer",
            "a hostcall with a pointer past the end of memory",
            probe_config(json!({"request_headers": [["bad_pointer"]]})),
            vec![Request::get("/ptr")],
        ),
        Scenario {
            stats: &[
                r"^http\.ingress\.downstream_(cx_destroy(_remote)?_active_rq|rq_active|rq_[1-5]xx|rq_rx_reset|rq_completed):",
            ],
            ..s(
                "client_gone_mid_body",
                "the client goes away in the middle of a request body to the upstream (HTTP/1.1: closes; HTTP/2: \
                 RST_STREAM CANCEL)",
                probe_config(json!({})),
                vec![
                    Request::raw("POST /echo HTTP/1.1\r\nhost: conformance.test\r\ncontent-length: 10\r\n\r\nhello")
                        .give_up_after(300),
                    Request::h2_frames("a body cut by RST_STREAM CANCEL", {
                        let path = [&[0x04, 5][..], b"/echo"].concat();
                        let block =
                            [&[0x83, 0x86][..], &path, &h2::authority(), &literal("content-length", "10")].concat();
                        [
                            frame(HEADERS, END_HEADERS, 1, &block),
                            frame(DATA, 0, 1, b"hello"),
                            frame(h2::RST_STREAM, 0, 1, &8u32.to_be_bytes()),
                        ]
                        .concat()
                    }),
                ],
            )
        },
        s(
            "buffer_limit_request",
            "a plugin holding the request body past the listener's buffer limit (1 KiB): 413; under it, passed",
            with_buffer_limit(1024, json!({"request_body": "pause_until_end"})),
            vec![Request::post("/echo", &"a".repeat(4096)), Request::post("/echo", &"b".repeat(512))],
        ),
        Scenario {
            stats: &[
                r"^http\.ingress\.downstream_(cx_destroy(_remote)?_active_rq|rq_active|rq_total|rq_[1-5]xx|rq_rx_reset|rq_completed):",
            ],
            ..s(
                "client_gone_while_held",
                "the client goes away while a plugin holds the request: the stream ends (log, done, delete)",
                bootstrap("", &probe("probe", json!({"returns": {"request_headers": "pause"}}))),
                vec![Request::get("/held").give_up_after(300), Request::get("/held").h2().give_up_after(300)],
            )
        },
        s(
            "buffer_limit_response",
            "a plugin holding the response body past the listener's buffer limit (16 KiB)",
            with_buffer_limit(16384, json!({"response_body": "pause_until_end"})),
            vec![Request::get("/big"), Request::get("/small")],
        ),
    ]
}

/// The probe holding bodies as `returns` says, on a listener with this
/// `per_connection_buffer_limit_bytes`.
fn with_buffer_limit(bytes: u32, returns: serde_json::Value) -> String {
    bootstrap("", &probe("probe", json!({ "returns": returns })))
        .replace("  - name: main\n", &format!("  - name: main\n    per_connection_buffer_limit_bytes: {bytes}\n"))
}

fn chains_and_sdks() -> Vec<Scenario> {
    // The AssemblyScript SDK answers only the root ids its plugin registers.
    let header_filter = |file: &str, tag: &str| {
        let filter = wasm_filter(
            tag,
            file,
            &format!(
                r#"{{"request_header": "x-user", "response_headers": [["x-from", "{tag}"], ["x-greeting", "hi"]]}}"#
            ),
            "",
        );
        match tag {
            "as" => filter.replace("root_id: as_root", "root_id: as_header_filter"),
            _ => filter,
        }
    };
    vec![
        s(
            "filters_in_order",
            "the second filter sees the first's request change; responses go in reverse",
            bootstrap(
                "",
                &[
                    probe(
                        "first",
                        json!({"phases": {"request_headers": [["add_header", "0", "x-first", "1"]],
                                          "response_headers": [["get_header", "2", "x-second"]]}}),
                    ),
                    probe(
                        "second",
                        json!({"phases": {"request_headers": [["get_header", "0", "x-first"]],
                                          "response_headers": [["add_header", "2", "x-second", "2"]]}}),
                    ),
                ]
                .concat(),
            ),
            vec![Request::get("/order")],
        ),
        s(
            "header_filter_rust_sdk",
            "the Rust SDK header filter",
            bootstrap("", &header_filter("header_filter.wasm", "rust")),
            vec![Request::get("/r").header("x-user", "alice"), Request::get("/r")],
        ),
        s(
            "header_filter_go",
            "the Go header filter",
            bootstrap("", &header_filter("go_header_filter.wasm", "go")),
            vec![Request::get("/g").header("x-user", "bob"), Request::get("/g")],
        ),
        s(
            "header_filter_assemblyscript_sdk",
            "the AssemblyScript SDK header filter",
            bootstrap("", &header_filter("as_header_filter.wasm", "as")),
            vec![Request::get("/as").header("x-user", "carol")],
        ),
        s(
            "three_sdks_in_one_chain",
            "Rust, Go and AssemblyScript filters in one chain",
            bootstrap(
                "",
                &[
                    header_filter("header_filter.wasm", "rust"),
                    header_filter("go_header_filter.wasm", "go"),
                    header_filter("as_header_filter.wasm", "as"),
                ]
                .concat(),
            ),
            vec![Request::get("/chain").header("x-user", "dave")],
        ),
    ]
}

fn routing() -> Vec<Scenario> {
    vec![
        s(
            "routes_without_plugins",
            "direct response, redirect, prefix rewrite, the upstream",
            bootstrap("", ""),
            vec![
                Request::get("/direct"),
                Request::get("/redirect"),
                Request::get("/rewrite/x?y=1"),
                Request::get("/status/201"),
                Request::post("/echo", "echoed"),
            ],
        ),
        s(
            "upstream_failures",
            "connection refused (503) and route timeout (504)",
            bootstrap("", ""),
            vec![Request::get("/closed"), Request::get("/timeout")],
        ),
        s(
            "http2_client",
            "HTTP/2 to the proxy, HTTP/1.1 to the upstream",
            bootstrap("", ""),
            vec![Request::get("/direct").h2(), Request::get("/h2?x=1").h2(), Request::post("/echo", "h2 body").h2()],
        ),
        s(
            "direct_response_with_a_plugin",
            "a plugin on a direct-response route: every callback still runs",
            probe_config(json!({
                "request_headers": [["get_header", "0", ":path"]],
                "response_headers": [["get_headers", "2"]],
                "response_body": [["get_buffer", "1", "0", "100"]],
            })),
            vec![Request::get("/direct")],
        ),
    ]
}

/// A listener with the probe as a Wasm network filter before `tcp_proxy` to the upstream.
pub(crate) fn tcp_proxy(probe: serde_json::Value) -> String {
    bootstrap("", "").replacen(
        "    filter_chains:\n    - filters:\n",
        &format!(
            r#"    filter_chains:
    - filters:
{}      - name: envoy.filters.network.tcp_proxy
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
          stat_prefix: tcp
          cluster: upstream
  - name: http_unused
    address: {{ socket_address: {{ address: 127.0.0.1, port_value: 0 }} }}
    filter_chains:
    - filters:
"#,
            network_wasm_filter("net", "probe.wasm", &probe.to_string())
        ),
        1,
    )
}

/// [`tcp_proxy`] with a text and a JSON access log on the TCP proxy.
fn tcp_proxy_logged(probe: serde_json::Value) -> String {
    let logs = r#"          cluster: upstream
          access_log:
          - name: envoy.access_loggers.stderr
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.access_loggers.stream.v3.StderrAccessLog
              log_format:
                text_format_source:
                  inline_string: "access log: tcp %PROTOCOL% %RESPONSE_CODE% %RESPONSE_FLAGS% %BYTES_RECEIVED% %BYTES_SENT% %UPSTREAM_CLUSTER% %ROUTE_NAME% %RESPONSE_CODE_DETAILS% %REQ(:PATH)% %RESP(X-UPSTREAM)% %UPSTREAM_TRANSPORT_FAILURE_REASON% %REQUESTED_SERVER_NAME%\n"
          - name: envoy.access_loggers.stderr
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.access_loggers.stream.v3.StderrAccessLog
              log_format:
                json_format: { access_log: true, code: "%RESPONSE_CODE%", flags: "%RESPONSE_FLAGS%", cluster: "%UPSTREAM_CLUSTER%", received: "%BYTES_RECEIVED%" }
"#;
    tcp_proxy(probe).replacen("          cluster: upstream\n", logs, 1)
}

/// [`tcp_proxy`] with a Wasm access logger on the TCP proxy (apart from the stderr ones:
/// Envoy writes those from another thread, in no fixed order with plugin logs).
fn tcp_proxy_wasm_logged(probe: serde_json::Value) -> String {
    let logs = r#"          cluster: upstream
          access_log:
          - name: envoy.access_loggers.wasm
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.access_loggers.wasm.v3.WasmAccessLog
              config:
                name: logger
                root_id: logger_root
                vm_config:
                  vm_id: logger_vm
                  code: { local: { filename: "@PLUGINS@/probe.wasm" } }
                configuration:
                  "@type": type.googleapis.com/google.protobuf.StringValue
                  value: '{"phases": {"root_log": [["get_header", "0", ":path"], ["get_property", "xds.cluster_name"], ["get_property", "response.code"], ["get_property", "upstream.address"]]}}'
"#;
    tcp_proxy(probe).replacen("          cluster: upstream\n", logs, 1)
}

fn tcp() -> Vec<Scenario> {
    let request = "GET /through-tcp HTTP/1.1\r\nhost: tcp.test\r\n\r\n";
    // A client that sends nothing: where the upstream is refused, the proxy closes a
    // connection with nothing unread (with bytes unread, a close becomes a reset or not
    // depending on timing).
    let silent = "";
    let picks_closed = || json!({"kind": "stream", "phases": {"new_connection": [set_filter_state("envoy.tcp_proxy.cluster", "closed")]}});
    vec![
        Scenario {
            stats: &[r"^tcp\."],
            ..s(
                "tcp_proxy_stats",
                "the TCP proxy's stats (tcp.<stat_prefix>.*): a connection served, its bytes both ways",
                tcp_proxy(json!({"kind": "stream", "phases": {}})),
                vec![Request::raw(request)],
            )
        },
        Scenario {
            stats: &[r"^tcp\."],
            ..s(
                "tcp_proxy_idle_timeout",
                "idle_timeout 1s: a connection through which nothing moves is closed by the proxy (tcp.*.idle_timeout), \
                 with the access log's flags",
                tcp_proxy_logged(json!({"kind": "stream", "phases": {}})).replacen(
                    "          cluster: upstream\n",
                    "          cluster: upstream\n          idle_timeout: 1s\n",
                    1,
                ),
                vec![Request::raw_held_open(request).give_up_after(5000)],
            )
        },
        Scenario {
            stats: &[r"^tcp\."],
            ..s(
                "tcp_proxy_unknown_cluster",
                "a TCP proxy naming a cluster the configuration lacks loads; its connections are closed, counted \
                 as no route, logged NC",
                tcp_proxy_logged(json!({"kind": "stream", "phases": {}})).replacen(
                    "          cluster: upstream\n",
                    "          cluster: nosuch\n",
                    1,
                ),
                vec![Request::raw(silent)],
            )
        },
        Scenario {
            stats: &[r"^tcp\."],
            ..s(
                "tcp_proxy_stats_no_cluster",
                "the TCP proxy's stats for a connection whose cluster does not exist (downstream_cx_no_route)",
                tcp_proxy(
                    json!({"kind": "stream", "phases": {"new_connection": [set_filter_state("envoy.tcp_proxy.cluster", "nosuch")]}}),
                ),
                vec![Request::raw(silent)],
            )
        },
        s(
            "tcp_network_filter_reads_and_rewrites",
            "a network filter sees the connection, both directions' bytes and both closes, and rewrites bytes",
            tcp_proxy(json!({
                "kind": "stream",
                "phases": {
                    "new_connection": [["get_property", "upstream.address"], ["get_property", "xds.cluster_name"]],
                    "downstream_data": [["buffer_status", "2"], ["get_buffer", "2", "0", "14"],
                                        ["set_buffer", "2", "0", "3", "GET"]],
                    "upstream_data": [["buffer_status", "3"], ["get_buffer", "3", "0", "15"]],
                    "downstream_close": [["get_buffer", "2", "0", "10"]],
                    "upstream_close": [],
                },
            })),
            vec![Request::raw(request)],
        ),
        s(
            "tcp_network_filter_pauses_for_a_callout",
            "a network filter holds the client's bytes, calls out, and lets them go from the answer",
            tcp_proxy(json!({
                "kind": "stream",
                "phases": {
                    "downstream_data": [["buffer_status", "2"],
                                        ["http_call", "upstream", ":method=GET;:path=/status/200;:authority=auth", "", "1000"]],
                    "http_call_response": [["call_response"], ["continue", "2"]],
                },
                "returns": {"downstream_data": "pause"},
            })),
            vec![Request::raw(request)],
        ),
        s(
            "tcp_cluster_from_filter_state",
            "a network filter picks the TCP proxy's cluster per connection (envoy.tcp_proxy.cluster)",
            tcp_proxy(json!({
                "kind": "stream",
                "phases": {
                    "new_connection": [set_filter_state("envoy.tcp_proxy.cluster", "grpc")],
                    "downstream_data": get(&["xds.cluster_name", "filter_state/envoy.tcp_proxy.cluster"]),
                },
            })),
            vec![Request::raw(request)],
        ),
        s(
            "tcp_cluster_from_filter_state_unreachable",
            "a network filter picks a cluster nobody listens on: the connection closes without an answer",
            tcp_proxy(picks_closed()),
            vec![Request::raw(silent)],
        ),
        s(
            "tcp_access_logs",
            "a TCP proxy's text and JSON access logs",
            tcp_proxy_logged(json!({"kind": "stream", "phases": {}})),
            vec![Request::raw(request)],
        ),
        s(
            "tcp_access_logs_upstream_refused",
            "a TCP proxy's access logs for a connection whose upstream refused it",
            tcp_proxy_logged(picks_closed()),
            vec![Request::raw(silent)],
        ),
        s(
            "tcp_wasm_access_logger",
            "a TCP proxy's Wasm access logger, for a connection served",
            tcp_proxy_wasm_logged(json!({"kind": "stream", "phases": {}})),
            vec![Request::raw(request)],
        ),
        s(
            "tcp_wasm_access_logger_upstream_refused",
            "a TCP proxy's Wasm access logger, for a connection whose upstream refused it",
            tcp_proxy_wasm_logged(picks_closed()),
            vec![Request::raw(silent)],
        ),
        s(
            "tcp_network_filter_closes",
            "a network filter closes the connection on the first bytes",
            tcp_proxy(json!({"kind": "stream", "phases": {"downstream_data": [["close", "2"]]}})),
            vec![Request::raw(request)],
        ),
    ]
}

/// The examples in `examples/`, as they are, with their ports set to 0 and their plugin
/// files given by absolute path.
fn examples(root: &Path) -> Vec<Scenario> {
    let example = |dir: &str, plugin: &str| {
        let path = root.join("examples").join(dir).join("envoy.yaml");
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        let text = regex::Regex::new(r"port_value: \d+")
            .map(|re| re.replace_all(&text, "port_value: 0").into_owned())
            .unwrap_or_default();
        // The example names its plugin relative to the repository's root, where it runs.
        let relative = format!("examples/{dir}/{plugin}");
        let text = text.replace(&relative, &root.join(&relative).display().to_string());
        // The harness finds a proxy started by its admin listener.
        match text.contains("\nadmin:") || text.starts_with("admin:") {
            true => text,
            false => {
                format!("admin:\n  address: {{ socket_address: {{ address: 127.0.0.1, port_value: 0 }} }}\n{text}")
            }
        }
    };
    vec![
        s(
            "example_talk_demo",
            "examples/talk_demo as it is",
            example("talk_demo", "talk_demo.wasm"),
            vec![Request::get("/").header("hello", "world"), Request::get("/"), Request::get("/").header("hello", "x")],
        ),
        s(
            "example_header_filter",
            "examples/header_filter as it is",
            example("header_filter", "header_filter.wasm"),
            vec![Request::get("/").header("x-user", "alice")],
        ),
        s(
            "wasm_filename_relative_to_cwd",
            "a relative code.local.filename: the working directory's, not the configuration file's",
            probe_config(json!({})).replace("@PLUGINS@/probe.wasm", "@PLUGINS_FROM_CWD@/probe.wasm"),
            vec![Request::get("/")],
        ),
    ]
}

/// One raw HTTP/2 connection per case.
fn h2_cases<const N: usize>(cases: &[(&str, Vec<u8>); N]) -> Vec<Request> {
    cases.iter().map(|(what, frames)| Request::h2_frames(what, frames.clone())).collect()
}

/// A probe counting requests in metrics named as Istio's stats plugin names them: tags
/// as `key=.=value;.;` segments before the metric's own name.
fn istio_metric_probe() -> String {
    let web = "reporter=.=destination;.;source_app=.=web;.;istio_requests_total";
    let api = "reporter=.=destination;.;source_app=.=api.v1;.;istio_requests_total";
    probe(
        "probe",
        json!({"phases": {"request_headers": [
            ["define_metric", "counter", web],
            ["increment_metric", web, "1"],
            ["if_header", "0", "x-bar", "define_metric", "counter", api],
            ["if_header", "0", "x-bar", "increment_metric", api, "2"],
        ]}}),
    )
}
