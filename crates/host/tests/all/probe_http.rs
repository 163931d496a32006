//! HTTP stream callbacks and the hostcalls plugins use on a stream, with the Rust SDK probe.

use serde_json::json;
use wasmproxy_host::abi::{FilterDataStatus, FilterHeadersStatus, FilterStatus, StreamType};
use wasmproxy_host::{Headers, HttpCallResponse, StreamAction};

use crate::support::*;

#[test]
fn a_stream_goes_through_every_http_callback_in_order() {
    let mut h = Harness::probe(json!({}));
    assert_eq!(h.take_logs(), vec!["vm_start ctx=1 size=0", "configure ctx=1 size=2"]);
    let ctx = h.http_stream(GET);
    assert_eq!(h.vm.on_request_headers(ctx, false).unwrap(), FilterHeadersStatus::Continue);
    h.vm.stream(ctx).unwrap().request_body = Some(b"hello".to_vec());
    assert_eq!(h.vm.on_request_body(ctx, false).unwrap(), FilterDataStatus::Continue);
    h.vm.stream(ctx).unwrap().request_trailers = Some(Headers::from_pairs([("grpc-status", "0")]));
    assert_eq!(h.vm.on_request_trailers(ctx).unwrap(), FilterStatus::Continue);
    h.vm.stream(ctx).unwrap().response_headers = Some(Headers::from_pairs([(":status", "200"), ("server", "up")]));
    assert_eq!(h.vm.on_response_headers(ctx, false).unwrap(), FilterHeadersStatus::Continue);
    h.vm.stream(ctx).unwrap().response_body = Some(b"world!".to_vec());
    assert_eq!(h.vm.on_response_body(ctx, true).unwrap(), FilterDataStatus::Continue);
    h.vm.stream(ctx).unwrap().response_trailers = Some(Headers::new());
    assert_eq!(h.vm.on_response_trailers(ctx).unwrap(), FilterStatus::Continue);
    h.vm.finish_stream(ctx).unwrap();
    assert_eq!(
        h.take_logs(),
        vec![
            "create_http_context ctx=2 root=1",
            "request_headers ctx=2 n=4 eos=false",
            "request_body ctx=2 size=5 eos=false",
            "request_trailers ctx=2 n=1",
            "response_headers ctx=2 n=2 eos=false",
            "response_body ctx=2 size=6 eos=true",
            "response_trailers ctx=2 n=0",
            "done ctx=2",
            "log ctx=2",
            "delete ctx=2",
        ]
    );
    assert!(!h.vm.has_context(ctx));
    assert_eq!(h.vm.context_count(), 1);
}

#[test]
fn context_ids_are_allocated_per_vm_and_not_reused_while_live() {
    let mut h = Harness::probe(json!({}));
    let a = h.http_stream(GET);
    let b = h.http_stream(GET);
    assert_eq!((h.root, a, b), (1, 2, 3));
    h.vm.finish_stream(a).unwrap();
    let c = h.http_stream(GET);
    assert_eq!(c, 4, "ids keep counting up");
}

#[test]
fn header_map_hostcalls_read_and_change_request_headers() {
    let mut h = Harness::probe(json!({"phases": {"request_headers": [
        ["get_header", "0", "X-User"],
        ["get_header", "0", "missing"],
        ["header_size", "0"],
        ["add_header", "0", "X-Added", "1"],
        ["add_header", "0", "x-added", "2"],
        ["replace_header", "0", "x-user", "bob"],
        ["remove_header", "0", "missing-is-fine"],
        ["get_headers", "0"],
        ["get_header", "0", "x-added"],
    ]}}));
    let ctx = h.http_stream(GET);
    h.take_logs();
    h.vm.on_request_headers(ctx, true).unwrap();
    let logs = h.take_logs();
    assert_eq!(
        logs[1..],
        [
            "request_headers get_header 0 X-User => status=0 value=alice",
            "request_headers get_header 0 missing => status=1",
            "request_headers header_size 0 => status=0 value=53",
            "request_headers add_header 0 X-Added 1 => status=0",
            "request_headers add_header 0 x-added 2 => status=0",
            "request_headers replace_header 0 x-user bob => status=0",
            "request_headers remove_header 0 missing-is-fine => status=0",
            // Replacing moves the header to the end, as Envoy's `setCopy` does.
            "request_headers get_headers 0 => status=0 value=:method=GET;:path=/hello;:authority=example.com;x-added=1;x-added=2;x-user=bob",
            "request_headers get_header 0 x-added => status=0 value=1",
        ]
    );
    let headers = h.vm.stream(ctx).unwrap().request_headers.take().unwrap();
    assert_eq!(headers.get(b"x-user"), Some(&b"bob"[..]));
    assert_eq!(headers.len(), 6);
}

#[test]
fn maps_not_available_in_this_phase_answer_as_envoy() {
    let mut h = Harness::probe(json!({"phases": {"request_headers": [
        ["get_header", "2", ":status"],
        ["get_headers", "2"],
        ["add_header", "2", "x", "y"],
        ["replace_header", "3", "x", "y"],
        ["remove_header", "1", "x"],
        ["header_size", "2"],
        ["set_headers", "2", "a=b"],
        ["get_header", "6", "x"],
        ["get_header", "9", "x"],
        ["get_headers", "9"],
    ]}}));
    let ctx = h.http_stream(GET);
    h.take_logs();
    h.vm.on_request_headers(ctx, false).unwrap();
    assert_eq!(
        h.take_logs()[1..],
        [
            "request_headers get_header 2 :status => status=2",
            "request_headers get_headers 2 => status=0 value=<empty>",
            "request_headers add_header 2 x y => status=2",
            "request_headers replace_header 3 x y => status=2",
            "request_headers remove_header 1 x => status=2",
            "request_headers header_size 2 => status=2",
            "request_headers set_headers 2 a=b => status=2",
            "request_headers get_header 6 x => status=2",
            "request_headers get_header 9 x => status=2",
            "request_headers get_headers 9 => status=0 value=<empty>",
        ]
    );
}

#[test]
fn set_header_map_pairs_replaces_the_whole_map() {
    let mut h = Harness::probe(json!({"phases": {"response_headers": [["set_headers", "2", ":status=404;x-new=1"]]}}));
    let ctx = h.http_stream(GET);
    h.vm.stream(ctx).unwrap().response_headers = Some(Headers::from_pairs([(":status", "200"), ("server", "x")]));
    h.vm.on_response_headers(ctx, true).unwrap();
    let got = h.vm.stream(ctx).unwrap().response_headers.take().unwrap();
    assert_eq!(got, Headers::from_pairs([(":status", "404"), ("x-new", "1")]));
}

#[test]
fn body_buffer_hostcalls_follow_envoy_rules() {
    let mut h = Harness::probe(json!({"phases": {"request_body": [
        ["get_buffer", "0", "0", "100"],
        ["get_buffer", "0", "2", "2"],
        ["get_buffer", "0", "50", "10"],
        ["buffer_status", "0"],
        ["set_buffer", "0", "0", "5", "HELLO"],
        ["set_buffer", "0", "100", "0", "!"],
        ["set_buffer", "0", "0", "0", ">>"],
        ["set_buffer", "0", "3", "1", "x"],
        ["get_buffer", "0", "0", "100"],
        ["get_buffer", "1", "0", "100"],
        ["set_buffer", "1", "0", "0", "x"],
        ["get_buffer", "4", "0", "10"],
        ["set_buffer", "4", "0", "0", "x"],
        ["get_buffer", "7", "0", "10"],
        ["set_buffer", "6", "0", "0", "x"],
        ["get_buffer", "9", "0", "10"],
        ["buffer_status", "9"],
    ]}, "returns": {"request_body": "pause"}}));
    let ctx = h.http_stream(GET);
    h.vm.stream(ctx).unwrap().request_body = Some(b"hello world".to_vec());
    h.take_logs();
    assert_eq!(h.vm.on_request_body(ctx, false).unwrap(), FilterDataStatus::StopIterationAndBuffer);
    assert_eq!(
        h.take_logs()[1..],
        [
            "request_body get_buffer 0 0 100 => status=0 value=hello world",
            "request_body get_buffer 0 2 2 => status=0 value=ll",
            "request_body get_buffer 0 50 10 => status=0 value=",
            "request_body buffer_status 0 => status=0 value=11,0",
            "request_body set_buffer 0 0 5 HELLO => status=0",
            "request_body set_buffer 0 100 0 ! => status=0",
            "request_body set_buffer 0 0 0 >> => status=0",
            "request_body set_buffer 0 3 1 x => status=2",
            "request_body get_buffer 0 0 100 => status=0 value=>>HELLO world!",
            "request_body get_buffer 1 0 100 => status=0 value=",
            "request_body set_buffer 1 0 0 x => status=2",
            "request_body get_buffer 4 0 10 => status=1",
            "request_body set_buffer 4 0 0 x => status=1",
            "request_body get_buffer 7 0 10 => status=1",
            "request_body set_buffer 6 0 0 x => status=2",
            "request_body get_buffer 9 0 10 => status=2",
            "request_body buffer_status 9 => status=1",
        ]
    );
    assert_eq!(h.vm.stream(ctx).unwrap().request_body.as_deref(), Some(&b">>HELLO world!"[..]));
}

#[test]
fn trailers_can_be_added_at_the_end_of_a_body() {
    let mut h = Harness::probe(json!({"phases": {"response_body": [["add_header", "3", "x-checksum", "abc"]]}}));
    let ctx = h.http_stream(GET);
    h.vm.stream(ctx).unwrap().response_body = Some(b"part".to_vec());
    h.vm.on_response_body(ctx, false).unwrap();
    assert!(h.take_logs().iter().any(|l| l.ends_with("add_header 3 x-checksum abc => status=2")), "not before the end");
    h.vm.on_response_body(ctx, true).unwrap();
    assert!(h.take_logs().iter().any(|l| l.ends_with("add_header 3 x-checksum abc => status=0")));
    let trailers = h.vm.stream(ctx).unwrap().response_trailers.take().unwrap();
    assert_eq!(trailers, Headers::from_pairs([("x-checksum", "abc")]));
}

#[test]
fn pause_then_resume_from_an_http_call_response() {
    let mut h = Harness::probe(json!({
        "phases": {
            "request_headers": [["http_call", "upstream", ":method=GET;:path=/auth;:authority=auth", "ping", "500"]],
            "http_call_response": [
                ["call_response"],
                ["add_header", "0", "x-auth", "ok"],
                ["continue", "0"],
            ],
        },
        "returns": {"request_headers": "pause"}
    }));
    let ctx = h.http_stream(GET);
    h.take_logs();
    assert_eq!(h.vm.on_request_headers(ctx, false).unwrap(), FilterHeadersStatus::StopAllIterationAndWatermark);
    assert_eq!(
        h.take_logs()[1],
        "request_headers http_call upstream :method=GET;:path=/auth;:authority=auth ping 500 => status=0 value=4"
    );
    let call = h.rec.borrow_mut().http_calls.pop().unwrap();
    assert_eq!(
        (call.token, call.root_context_id, call.cluster.as_str()),
        (4, h.root, "upstream"),
        "Envoy's first token"
    );
    assert_eq!(call.headers.get(b":path"), Some(&b"/auth"[..]));
    assert_eq!(call.body, b"ping");
    assert_eq!(call.timeout, Some(std::time::Duration::from_millis(500)));
    assert!(h.vm.take_actions().is_empty());

    let response = HttpCallResponse {
        headers: Headers::from_pairs([(":status", "200"), ("x-a", "b")]),
        body: b"pong".to_vec(),
        trailers: Headers::from_pairs([("t", "1")]),
    };
    h.vm.on_http_call_response(call.token, Some(response)).unwrap();
    assert_eq!(
        h.take_logs(),
        vec![
            "http_call_response ctx=2 token=4 headers=2 body=4 trailers=1",
            "http_call_response call_response => status=0 value=headers=:status=200;x-a=b body=pong trailers=t=1",
            "http_call_response add_header 0 x-auth ok => status=0",
            "http_call_response continue 0 => status=0",
        ]
    );
    assert_eq!(h.vm.take_actions(), vec![(ctx, StreamAction::Continue(StreamType::HttpRequest))]);
    let headers = h.vm.stream(ctx).unwrap().request_headers.take().unwrap();
    assert_eq!(headers.get(b"x-auth"), Some(&b"ok"[..]));
    // A second delivery of the same token is ignored.
    h.vm.on_http_call_response(call.token, None).unwrap();
    assert!(h.take_logs().is_empty());
}

#[test]
fn http_call_failures_and_bad_arguments() {
    let mut h = Harness::probe(json!({"phases": {
        "request_headers": [
            ["http_call", "nowhere", ":method=GET;:path=/;:authority=a", "", "0"],
            ["http_call", "upstream", ":method=GET;:path=/;host=a", "", "0"],
            ["http_call", "upstream", ":method=GET;:path=/;:authority=a", "", "0"],
            ["http_call", "upstream", ":method=GET;:path=/;:authority=a", "", "0"],
        ],
        "http_call_response": [["get_status"], ["call_response"]],
    }}));
    let ctx = h.http_stream(GET);
    h.take_logs();
    h.vm.on_request_headers(ctx, false).unwrap();
    let logs = h.take_logs();
    assert!(logs[1].ends_with("=> status=2"), "{}", logs[1]);
    assert!(logs[2].ends_with("=> status=2"), "host is not :authority: {}", logs[2]);
    assert!(logs[3].ends_with("=> status=0 value=4"), "{}", logs[3]);
    assert!(logs[4].ends_with("=> status=0 value=8"), "tokens step by 4: {}", logs[4]);
    assert_eq!(h.rec.borrow().http_calls[0].timeout, None);
    h.vm.on_http_call_response(4, None).unwrap();
    assert_eq!(
        h.take_logs(),
        vec![
            "http_call_response ctx=2 token=4 headers=0 body=0 trailers=0",
            "http_call_response get_status => status=0 value=11 reset",
            "http_call_response call_response => status=0 value=headers= body= trailers=",
        ]
    );
}

#[test]
fn local_response_is_deferred_and_stops_the_filter() {
    let mut h = Harness::probe(json!({"phases": {"request_headers": [
        ["send_local_response", "403", "denied", "x-why=policy;x-two=2"],
    ]}}));
    let ctx = h.http_stream(GET);
    assert_eq!(h.vm.on_request_headers(ctx, false).unwrap(), FilterHeadersStatus::StopIteration);
    assert_eq!(
        h.vm.take_actions(),
        vec![(
            ctx,
            StreamAction::SendLocalResponse {
                status: 403,
                details: "probe".into(),
                body: b"denied".to_vec(),
                headers: Headers::from_pairs([("x-why", "policy"), ("x-two", "2")]),
                grpc_status: None,
            }
        )]
    );
}

#[test]
fn continue_and_close_produce_actions_with_envoy_statuses() {
    let mut h = Harness::probe(json!({"phases": {"response_headers": [
        ["continue", "1"], ["continue", "3"], ["continue", "7"],
        ["close", "0"], ["close", "9"],
    ]}}));
    let ctx = h.http_stream(GET);
    h.vm.stream(ctx).unwrap().response_headers = Some(Headers::from_pairs([(":status", "200")]));
    h.take_logs();
    h.vm.on_response_headers(ctx, false).unwrap();
    let statuses: Vec<String> =
        h.take_logs()[1..].iter().map(|l| l.rsplit("=> ").next().unwrap().to_string()).collect();
    assert_eq!(statuses, ["status=0", "status=12", "status=2", "status=0", "status=2"]);
    assert_eq!(
        h.vm.take_actions(),
        vec![
            (ctx, StreamAction::Continue(StreamType::HttpResponse)),
            (ctx, StreamAction::Close(StreamType::HttpRequest))
        ]
    );
}

#[test]
fn access_log_phase_reads_final_headers_and_missing_maps_are_not_found() {
    let mut h = Harness::probe(json!({"phases": {"log": [
        ["get_header", "0", ":path"], ["get_header", "2", ":status"], ["get_header", "3", "x"], ["get_header", "1", "x"],
        ["add_header", "0", "x", "y"],
    ]}}));
    let ctx = h.http_stream(GET);
    h.vm.stream(ctx).unwrap().response_headers = Some(Headers::from_pairs([(":status", "201")]));
    h.take_logs();
    h.vm.on_log(ctx).unwrap();
    assert_eq!(
        h.take_logs(),
        vec![
            "log ctx=2",
            "log get_header 0 :path => status=0 value=/hello",
            "log get_header 2 :status => status=0 value=201",
            "log get_header 3 x => status=1",
            "log get_header 1 x => status=1",
            "log add_header 0 x y => status=2",
        ]
    );
}

#[test]
fn allow_on_headers_stop_iteration_keeps_stop_iteration() {
    let module = load(engine(), "probe.wasm");
    let mut h = Harness::vm(&module, &Setup::default()).unwrap();
    let config = wasmproxy_host::PluginConfig {
        configuration: json!({"returns": {"request_headers": "pause"}}).to_string().into_bytes(),
        allow_on_headers_stop_iteration: true,
        ..Default::default()
    };
    h.root = h.vm.create_root_context(std::sync::Arc::new(config)).unwrap();
    let ctx = h.http_stream(GET);
    assert_eq!(h.vm.on_request_headers(ctx, false).unwrap(), FilterHeadersStatus::StopIteration);
}
