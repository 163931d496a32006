//! Root-context hostcalls and callbacks (configuration, logs, timers, shared data, queues,
//! metrics, properties, foreign functions, gRPC, proxy_done) with the Rust SDK probe.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use wasmproxy_host::abi::LogLevel;
use wasmproxy_host::shared::MetricValue;
use wasmproxy_host::{Headers, PluginConfig, VmError};

use crate::support::*;

fn configure(commands: serde_json::Value) -> Harness {
    Harness::probe(json!({"configure": commands}))
}

#[test]
fn vm_and_plugin_configuration_reach_the_plugin() {
    let module = load(engine(), "probe.wasm");
    let vm_config = json!({"vm_start": [["get_buffer", "6", "0", "1000"], ["get_buffer", "7", "0", "10"]]}).to_string();
    let plugin_config =
        json!({"configure": [["get_buffer", "7", "0", "14"], ["get_buffer", "6", "0", "3"]]}).to_string();
    let h = Harness::start(
        &module,
        Setup { vm_config: vm_config.clone(), plugin_config: plugin_config.clone(), ..Default::default() },
    );
    let logs = h.take_logs();
    assert_eq!(logs[0], format!("vm_start ctx=1 size={}", vm_config.len()));
    assert_eq!(logs[1], format!("vm_start get_buffer 6 0 1000 => status=0 value={vm_config}"));
    assert_eq!(logs[2], "vm_start get_buffer 7 0 10 => status=1", "no plugin configuration in on_vm_start");
    assert_eq!(logs[3], format!("configure ctx=1 size={}", plugin_config.len()));
    assert_eq!(logs[4], format!("configure get_buffer 7 0 14 => status=0 value={}", &plugin_config[..14]));
    assert_eq!(logs[5], "configure get_buffer 6 0 3 => status=0 value={\"v");
}

#[test]
fn a_false_on_configure_or_on_vm_start_is_an_error_naming_the_plugin() {
    let module = load(engine(), "probe.wasm");
    let mut h = Harness::vm(&module, &Setup::default()).unwrap();
    let bad = PluginConfig { name: "my-plugin".into(), configuration: b"{not json".to_vec(), ..Default::default() };
    let err = h.vm.create_root_context(Arc::new(bad)).unwrap_err();
    assert_eq!(
        err.to_string(),
        "plugin \"my-plugin\": on_configure returned false (the plugin refused its configuration)"
    );
    assert!(h.take_logs().iter().any(|l| l.starts_with("configure: bad json")));

    let mut h =
        Harness::vm(&module, &Setup { vm_config: json!({"vm_start_result": false}).to_string(), ..Default::default() })
            .unwrap();
    let err =
        h.vm.create_root_context(Arc::new(PluginConfig { root_id: "r".into(), ..Default::default() })).unwrap_err();
    assert_eq!(
        err.to_string(),
        "plugin with root_id \"r\": on_vm_start returned false (the plugin refused its configuration)"
    );
}

#[test]
fn log_lines_carry_level_and_envoy_prefix() {
    let module = load(engine(), "probe.wasm");
    let config = json!({"configure": [
        ["log", "0", "t"], ["log", "4", "e"], ["log", "9", "bad level"], ["log_level"],
        ["stdout", "to stdout"], ["stderr", "to stderr"], ["bad_pointer"],
    ]});
    let h = Harness::start(
        &module,
        Setup { plugin_config: config.to_string(), name: "p", root_id: "r", vm_id: "v", ..Default::default() },
    );
    let logs = std::mem::take(&mut h.rec.borrow_mut().logs);
    let find = |m: &str| logs.iter().find(|(_, _, msg)| msg == m).unwrap_or_else(|| panic!("no log {m:?} in {logs:?}"));
    assert_eq!(
        find("t"),
        &(LogLevel::Trace, " r v".into(), "t".into()),
        "root contexts log without the plugin name, as Envoy"
    );
    assert_eq!(find("e").0, LogLevel::Error);
    assert_eq!(find("to stdout").0, LogLevel::Info);
    assert_eq!(find("to stderr").0, LogLevel::Error);
    find("configure log 9 bad level => status=2");
    find("configure log_level => status=0 value=1");
    find("configure bad_pointer => status=6");
    // A stream context's lines carry the plugin's name too.
    let mut h = h;
    let ctx = h.http_stream(GET);
    h.vm.on_request_headers(ctx, false).unwrap();
    let logs = std::mem::take(&mut h.rec.borrow_mut().logs);
    assert_eq!(logs[1], (LogLevel::Info, " p r v".into(), format!("request_headers ctx={ctx} n=4 eos=false")));
}

#[test]
fn wasi_gives_time_randomness_and_only_the_configured_environment() {
    let module = load(engine(), "probe.wasm");
    let config = json!({"configure": [["time"], ["wasi_time"], ["random", "32"], ["random", "70000"], ["env"]]});
    let env = vec![("A".to_string(), "1".to_string()), ("HOME_ISH".to_string(), "x=y".to_string())];
    let h = Harness::start(&module, Setup { plugin_config: config.to_string(), env, ..Default::default() });
    let logs = h.take_logs();
    assert_eq!(
        logs[2..],
        [
            "configure time => status=0 value=recent",
            "configure wasi_time => status=0 value=recent",
            "configure random 32 => status=0 value=ok",
            "configure random 70000 => status=28 value=28",
            "configure env => status=0 value=A=1;HOME_ISH=x=y",
        ]
    );
}

#[test]
fn tick_period_is_set_per_root_context_and_ticks_arrive() {
    let mut h = Harness::probe(json!({"configure": [["set_tick", "100"]], "phases": {"tick": [["set_tick", "0"]]}}));
    assert_eq!(h.rec.borrow().ticks, vec![(1, Some(Duration::from_millis(100)))]);
    h.take_logs();
    h.vm.on_tick(h.root).unwrap();
    assert_eq!(h.take_logs(), vec!["tick ctx=1", "tick set_tick 0 => status=0"]);
    assert_eq!(h.rec.borrow().ticks[1], (1, None));
}

#[test]
fn shared_data_is_keyed_by_vm_id_with_cas() {
    let module = load(engine(), "probe.wasm");
    let phases = |cmds: serde_json::Value| json!({"phases": {"tick": cmds}}).to_string();
    let mut a = Harness::start(
        &module,
        Setup {
            vm_id: "shared-a",
            plugin_config: phases(json!([
                ["get_shared", "k"],
                ["set_shared", "k", "v1", "0"],
                ["get_shared", "k"],
                ["set_shared", "k", "v2", "999999"],
                ["set_shared", "k", "", "0"],
                ["get_shared", "k"],
            ])),
            ..Default::default()
        },
    );
    a.take_logs();
    a.vm.on_tick(a.root).unwrap();
    let logs = a.take_logs();
    assert_eq!(logs[1], "tick get_shared k => status=1");
    assert_eq!(logs[2], "tick set_shared k v1 0 => status=0");
    assert!(logs[3].starts_with("tick get_shared k => status=0 value=v1 cas="), "{}", logs[3]);
    assert_eq!(logs[4], "tick set_shared k v2 999999 => status=8");
    assert_eq!(logs[5], "tick set_shared k  0 => status=0");
    assert!(logs[6].starts_with("tick get_shared k => status=0 value= cas="), "empty value keeps the key: {}", logs[6]);

    // Another VM with the same vm_id sees it (and writes with the right CAS win).
    let cas: u32 = logs[6].rsplit("cas=").next().unwrap().parse().unwrap();
    let mut b = Harness::start(
        &module,
        Setup {
            vm_id: "shared-a",
            plugin_config: phases(json!([["set_shared", "k", "from-b", cas.to_string()], ["get_shared", "k"],])),
            ..Default::default()
        },
    );
    b.take_logs();
    b.vm.on_tick(b.root).unwrap();
    let logs = b.take_logs();
    assert_eq!(logs[1], format!("tick set_shared k from-b {cas} => status=0"));
    assert!(logs[2].starts_with("tick get_shared k => status=0 value=from-b"));
    // A VM with another vm_id does not.
    let mut c = Harness::start(
        &module,
        Setup { vm_id: "shared-c", plugin_config: phases(json!([["get_shared", "k"]])), ..Default::default() },
    );
    c.take_logs();
    c.vm.on_tick(c.root).unwrap();
    assert_eq!(c.take_logs()[1], "tick get_shared k => status=1");
}

#[test]
fn shared_queues_notify_the_registering_root_context() {
    // A fresh engine: its shared state has no queues yet, so this one gets id 1.
    let engine = wasmproxy_host::WasmEngine::new(Default::default()).unwrap();
    let module = load(&engine, "probe.wasm");
    let owner_config = json!({
        "configure": [["register_queue", "jobs"]],
        "phases": {"queue_ready": [["dequeue", "1"], ["dequeue", "1"]]},
    });
    let mut owner = Harness::start(
        &module,
        Setup { vm_id: "queues", plugin_config: owner_config.to_string(), ..Default::default() },
    );
    let logs = owner.take_logs();
    let id: u32 = logs[2].rsplit("value=").next().unwrap().parse().unwrap();
    assert_eq!(logs[2], format!("configure register_queue jobs => status=0 value={id}"));
    assert_eq!(id, 1, "queue ids start at 1 (0 is never a queue)");

    let producer_config = json!({"phases": {"request_headers": [
        ["resolve_queue", "queues", "jobs"], ["resolve_queue", "", "nope"], ["resolve_queue", "other-vm", "jobs"],
        ["enqueue", id.to_string(), "job-1"], ["enqueue", "987654", "x"],
    ]}});
    let mut producer = Harness::start(
        &module,
        Setup { vm_id: "producer", plugin_config: producer_config.to_string(), ..Default::default() },
    );
    let ctx = producer.http_stream(GET);
    producer.take_logs();
    producer.vm.on_request_headers(ctx, false).unwrap();
    assert_eq!(
        producer.take_logs()[1..],
        [
            format!("request_headers resolve_queue queues jobs => status=0 value={id}"),
            "request_headers resolve_queue  nope => status=1".to_string(),
            "request_headers resolve_queue other-vm jobs => status=1".to_string(),
            format!("request_headers enqueue {id} job-1 => status=0"),
            "request_headers enqueue 987654 x => status=1".to_string(),
        ]
    );
    assert!(producer.notifications.lock().unwrap().is_empty(), "the producer did not register");
    let notes = std::mem::take(&mut *owner.notifications.lock().unwrap());
    assert_eq!(notes, vec![(owner.root, id)]);
    owner.vm.on_queue_ready(owner.root, id).unwrap();
    assert_eq!(
        owner.take_logs(),
        vec![
            format!("queue_ready ctx=1 queue={id}"),
            "queue_ready dequeue 1 => status=0 value=job-1".to_string(),
            "queue_ready dequeue 1 => status=7".to_string(),
        ]
    );
}

#[test]
fn metrics_have_envoy_ids_and_rules() {
    let mut h = configure(json!([
        ["define_metric", "counter", "requests"],
        ["define_metric", "gauge", "active"],
        ["define_metric", "histogram", "latency"],
        ["define_metric", "5", "bad"],
        ["define_metric", "counter", "requests_b"],
        ["increment_metric", "requests", "2"],
        ["increment_metric", "requests", "0"],
        ["increment_metric", "requests", "-1"],
        ["record_metric", "requests", "3"],
        ["get_metric", "requests"],
        ["increment_metric", "active", "5"],
        ["increment_metric", "active", "-2"],
        ["get_metric", "active"],
        ["record_metric", "active", "42"],
        ["get_metric", "active"],
        ["record_metric", "latency", "7"],
        ["get_metric", "latency"],
        ["increment_metric", "latency", "1"],
        ["get_metric", "400"],
        ["increment_metric", "400", "1"],
        ["record_metric", "400", "1"],
    ]));
    let logs = h.take_logs();
    let status: Vec<&str> = logs[2..].iter().map(|l| l.split("=> ").nth(1).unwrap()).collect();
    assert_eq!(
        status,
        [
            "status=0 value=4",
            "status=0 value=5",
            "status=0 value=6",
            "status=2",
            "status=0 value=8",
            "status=0",
            "status=2",
            "status=2",
            "status=0",
            "status=0 value=5",
            "status=0",
            "status=0",
            "status=0 value=3",
            "status=0",
            "status=0 value=42",
            "status=0",
            "status=2",
            "status=2",
            "status=1",
            "status=1",
            "status=1",
        ]
    );
    let metrics = &engine().shared().metrics;
    assert_eq!(metrics.value("requests"), Some(MetricValue::Counter(5)));
    // Histogram samples show once the stats are flushed, as in Envoy.
    assert_eq!(metrics.value("latency"), Some(MetricValue::Histogram { count: 0, sum: 0.0 }));
    metrics.store().flush();
    match metrics.value("latency") {
        // 7 falls in circllhist's bin [7, 7.1), whose midpoint stands for it.
        Some(MetricValue::Histogram { count: 1, sum }) => assert!((7.0..7.1).contains(&sum), "{sum}"),
        other => panic!("{other:?}"),
    }
    let _ = &mut h;
}

#[test]
fn properties_host_answers_plugin_names_and_asks_the_embedder_for_the_rest() {
    let module = load(engine(), "probe.wasm");
    let config = json!({"configure": [
        ["get_property", "plugin_name"], ["get_property", "plugin_root_id"], ["get_property", "plugin_vm_id"],
        ["get_property", "source.address"], ["get_property", "response.code"], ["get_property", "no.such"],
        ["set_property", "my_key", "v"], ["get_property", "my_key"],
    ]});
    let h = Harness::start(
        &module,
        Setup { plugin_config: config.to_string(), name: "n1", root_id: "r1", vm_id: "v1", ..Default::default() },
    );
    let hex = |s: &[u8]| s.iter().map(|b| format!("{b:02x}")).collect::<String>();
    assert_eq!(
        h.take_logs()[2..],
        [
            format!("configure get_property plugin_name => status=0 value={}", hex(b"n1")),
            format!("configure get_property plugin_root_id => status=0 value={}", hex(b"r1")),
            format!("configure get_property plugin_vm_id => status=0 value={}", hex(b"v1")),
            format!("configure get_property source.address => status=0 value={}", hex(b"127.0.0.1:4242")),
            format!("configure get_property response.code => status=0 value={}", hex(&200i64.to_le_bytes())),
            "configure get_property no.such => status=1".to_string(),
            "configure set_property my_key v => status=0".to_string(),
            format!("configure get_property my_key => status=0 value={}", hex(b"v")),
        ]
    );
}

#[test]
fn foreign_functions_compress_round_trip_and_unknown_is_not_found() {
    let mut h = configure(json!([
        ["foreign", "compress", "hello hello hello"],
        ["foreign", "echo", "abc"],
        ["foreign", "nope", ""]
    ]));
    let logs = h.take_logs();
    let compressed = logs[2].rsplit("value=").next().unwrap().to_string();
    let bytes: Vec<u8> =
        (0..compressed.len()).step_by(2).map(|i| u8::from_str_radix(&compressed[i..i + 2], 16).unwrap()).collect();
    let mut out = String::new();
    std::io::Read::read_to_string(&mut flate2::read::ZlibDecoder::new(&bytes[..]), &mut out).unwrap();
    assert_eq!(out, "hello hello hello");
    assert_eq!(logs[3], "configure foreign echo abc => status=0 value=616263");
    assert_eq!(logs[4], "configure foreign nope  => status=1");
    // uncompress, and the callback that hands a plugin foreign-function arguments.
    let mut h2 = Harness::probe(
        json!({"phases": {"foreign_function": [["get_buffer", "8", "0", "100"], ["foreign", "uncompress", ""]]}}),
    );
    h2.take_logs();
    h2.vm.on_foreign_function(h2.root, 7, b"args!".to_vec()).unwrap();
    let logs = h2.take_logs();
    assert_eq!(logs[0], "foreign_function ctx=1 function=7 size=5");
    assert_eq!(logs[1], "foreign_function get_buffer 8 0 100 => status=0 value=args!");
    assert_eq!(logs[2], "foreign_function foreign uncompress  => status=3", "empty input is not zlib");
    let _ = &mut h;
}

#[test]
fn effective_context_and_proxy_done() {
    let mut h = Harness::probe(json!({
        "phases": {"tick": [["set_effective_context", "99"], ["done"], ["set_effective_context", "1"], ["done"]]},
        "returns": {"root_done": "pause"},
    }));
    h.take_logs();
    assert!(!h.vm.shutdown_root(h.root).unwrap(), "on_done said not yet");
    assert!(h.vm.has_context(h.root));
    h.vm.on_tick(h.root).unwrap();
    assert_eq!(
        h.take_logs(),
        vec![
            "root_done ctx=1",
            "tick ctx=1",
            "tick set_effective_context 99 => status=2",
            "tick done => status=0",
            "tick set_effective_context 1 => status=0",
            "tick done => status=1",
            "delete ctx=1",
        ]
    );
    assert!(!h.vm.has_context(h.root), "proxy_done deleted the root context");
}

#[test]
fn grpc_streams_and_calls_reach_the_embedder_and_come_back() {
    let mut h = Harness::probe(json!({"phases": {
        "tick": [
            ["grpc_stream", "grpc_cluster", "pkg.Svc", "Watch"],
            ["grpc_send", "6", "m1", "false"], ["grpc_send", "1", "x", "false"], ["grpc_send", "10", "x", "false"],
            ["grpc_call", "grpc_cluster", "pkg.Svc", "Get", "req", "1000"],
            ["grpc_call", "unknown_cluster", "pkg.Svc", "Get", "req", "1000"],
            ["grpc_cancel", "5"], ["grpc_cancel", "5"], ["grpc_close", "0"],
        ],
        "root_grpc_initial_metadata": [["get_header", "4", "k"]],
        "root_grpc_message": [["get_buffer", "5", "0", "100"]],
        "root_grpc_trailing_metadata": [["get_headers", "5"]],
        "root_grpc_close": [["get_status"]],
    }}));
    h.take_logs();
    h.vm.on_tick(h.root).unwrap();
    let logs = h.take_logs();
    assert_eq!(
        logs[1..],
        [
            "tick grpc_stream grpc_cluster pkg.Svc Watch => status=0 value=6",
            "tick grpc_send 6 m1 false => status=0",
            "tick grpc_send 1 x false => status=2",
            "tick grpc_send 10 x false => status=1",
            "tick grpc_call grpc_cluster pkg.Svc Get req 1000 => status=0 value=5",
            "tick grpc_call unknown_cluster pkg.Svc Get req 1000 => status=4",
            "tick grpc_cancel 5 => status=0",
            "tick grpc_cancel 5 => status=1",
            "tick grpc_close 0 => status=2",
        ]
    );
    {
        let rec = h.rec.borrow();
        assert_eq!(rec.grpc_streams[0].service, "pkg.Svc");
        assert_eq!(rec.grpc_streams[0].method, "Watch");
        assert_eq!(rec.grpc_calls[0].message, b"req");
        assert_eq!(rec.grpc_calls[0].timeout, Some(Duration::from_secs(1)));
        assert_eq!(rec.grpc_sent, vec![(6, b"m1".to_vec(), false)]);
        assert_eq!(rec.grpc_cancelled, vec![5]);
    }
    assert_eq!(h.vm.callouts_in_flight(), 1, "the stream: the cancelled call is over");
    h.vm.on_grpc_receive_initial_metadata(6, Headers::from_pairs([("k", "v")])).unwrap();
    h.vm.on_grpc_receive(6, b"reply".to_vec()).unwrap();
    h.vm.on_grpc_receive_trailing_metadata(6, Headers::from_pairs([("grpc-status", "0")])).unwrap();
    h.vm.on_grpc_close(6, 0, "fine").unwrap();
    assert_eq!(
        h.take_logs(),
        vec![
            "root_grpc_initial_metadata ctx=1 token=6 n=1",
            "root_grpc_initial_metadata get_header 4 k => status=0 value=v",
            "root_grpc_message ctx=1 token=6 size=5",
            "root_grpc_message get_buffer 5 0 100 => status=0 value=reply",
            "root_grpc_trailing_metadata ctx=1 token=6 n=1",
            "root_grpc_trailing_metadata get_headers 5 => status=0 value=grpc-status=0",
            "root_grpc_close ctx=1 token=6 status=0",
            "root_grpc_close get_status => status=0 value=0 fine",
        ]
    );
    assert_eq!(h.vm.callouts_in_flight(), 0, "the stream closed: the plugin waits for nothing");
}

#[test]
fn a_unary_grpc_call_is_over_with_its_answer() {
    let mut h = Harness::probe(json!({"phases": {
        "tick": [["grpc_call", "grpc_cluster", "pkg.Svc", "Get", "req", "1000"]],
        "root_grpc_message": [["get_buffer", "5", "0", "100"]],
    }}));
    h.vm.on_tick(h.root).unwrap();
    assert_eq!(h.vm.callouts_in_flight(), 1);
    let logs = h.take_logs();
    let token: u32 = logs
        .iter()
        .find_map(|l| l.strip_prefix("tick grpc_call grpc_cluster pkg.Svc Get req 1000 => status=0 value="))
        .expect("the call's token")
        .parse()
        .unwrap();
    h.vm.on_grpc_receive(token, b"answer".to_vec()).unwrap();
    assert_eq!(h.vm.callouts_in_flight(), 0, "Envoy sends no close after a unary call's answer");
    // Nothing more reaches the plugin for that call.
    h.vm.on_grpc_close(token, 14, "late").unwrap();
    assert_eq!(
        h.take_logs(),
        [
            format!("root_grpc_message ctx=1 token={token} size=6"),
            "root_grpc_message get_buffer 5 0 100 => status=0 value=answer".to_string()
        ]
    );
}

#[test]
fn a_panic_fails_the_vm_once_with_message_and_backtrace() {
    let mut h = Harness::probe(json!({"phases": {"request_headers": [["panic", "boom in the plugin"]]}}));
    let ctx = h.http_stream(GET);
    let err = h.vm.on_request_headers(ctx, false).unwrap_err();
    let VmError::Failed(failure) = &err else { panic!("{err:?}") };
    assert_eq!(failure.kind, wasmproxy_host::VmFailureKind::Trap);
    assert_eq!(failure.callback, "proxy_on_request_headers");
    assert!(failure.message.contains("probe.wasm"), "{}", failure.message);
    assert!(failure.backtrace.contains("proxy_on_request_headers"), "symbolized backtrace: {}", failure.backtrace);
    let logs = std::mem::take(&mut h.rec.borrow_mut().logs);
    let critical: Vec<_> = logs.iter().filter(|l| l.0 == LogLevel::Critical).collect();
    assert_eq!(critical.len(), 1, "{logs:?}");
    assert!(critical[0].2.contains("boom in the plugin"));
    // The VM stays failed, without running the plugin again; the embedder heard once.
    assert!(matches!(h.vm.on_response_headers(ctx, false), Err(VmError::Failed(_))));
    assert!(h.vm.create_context(h.root, wasmproxy_host::ContextKind::Http).is_err());
    assert_eq!(h.rec.borrow().failures.len(), 1);
    assert!(h.take_logs().is_empty());
}

#[test]
fn the_host_keeps_tick_timers_and_runs_the_due_ones() {
    let mut h =
        Harness::probe(json!({"configure": [["set_tick", "50"]], "phases": {"tick": [["log", "2", "ticked"]]}}));
    let start = std::time::Instant::now();
    let due = h.vm.next_tick_due().expect("a timer is set");
    assert!(due > start && due <= start + Duration::from_millis(50), "due one period after set_tick");
    h.take_logs();
    assert_eq!(h.vm.run_due_ticks(start).unwrap(), 0, "not due yet");
    assert!(h.take_logs().is_empty());
    assert_eq!(h.vm.run_due_ticks(due).unwrap(), 1);
    assert_eq!(h.take_logs(), vec!["tick ctx=1", "ticked", "tick log 2 ticked => status=0"]);
    assert!(h.vm.next_tick_due().unwrap() > due, "re-armed after the tick");
    // A plugin that stops its timer in on_tick has no next tick.
    let mut stop = Harness::probe(json!({"configure": [["set_tick", "1"]], "phases": {"tick": [["set_tick", "0"]]}}));
    let due = stop.vm.next_tick_due().unwrap();
    assert_eq!(stop.vm.run_due_ticks(due).unwrap(), 1);
    assert_eq!(stop.vm.next_tick_due(), None);
}

#[test]
fn a_vm_that_fails_in_on_tick_has_no_more_ticks() {
    let mut h =
        Harness::probe(json!({"configure": [["set_tick", "1"]], "phases": {"tick": [["panic", "tick failed"]]}}));
    let due = h.vm.next_tick_due().expect("armed");
    assert!(h.vm.run_due_ticks(due).is_err());
    assert_eq!(h.vm.next_tick_due(), None, "an embedder's tick loop stops instead of spinning");
}
