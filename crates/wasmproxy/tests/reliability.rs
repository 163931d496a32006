//! Plugins that misbehave, under each failure policy: a panic (the Rust SDK's, a trap), an
//! endless loop, memory allocated without end. The binary runs one worker, so every
//! request meets the same VM; each test checks the status, the time bound, that the next
//! request is served as the policy says, and the process's memory afterwards.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::{Running, body, http_get, repo};

/// The probe plugin as the one HTTP filter: it panics, traps (a load out of bounds), loops,
/// allocates without end or hands a hostcall a pointer past its memory when the request
/// carries `x-panic`, `x-trap`, `x-loop`, `x-bomb` or `x-bad-pointer` (keeps 1 MiB for
/// good with `x-leak`, and spends CPU on 2 MiB of randomness with `x-burn`), and adds `x-vm-count` (a counter of the VM, 1 in a fresh VM) to
/// each response.
fn config(name: &str, policy: &str, runtime: &str) -> PathBuf {
    let mut phases = serde_json::json!({"phases": {
        "request_headers": [
            ["if_header", "0", "x-panic", "panic", "boom"],
            ["if_header", "0", "x-trap", "trap"],
            ["if_header", "0", "x-loop", "loop"],
            ["if_header", "0", "x-bomb", "alloc_bomb"],
            ["if_header", "0", "x-bad-pointer", "bad_pointer"],
            ["if_header", "0", "x-leak", "leak", "1048576"],
        ],
        "response_headers": [["vm_counter", "2", "x-vm-count"]],
    }});
    let burn = serde_json::json!(["if_header", "0", "x-burn", "random", "65536"]);
    phases["phases"]["request_headers"].as_array_mut().unwrap().extend(std::iter::repeat_n(burn, 32));
    let filter = common::wasm_filter("probe", &repo().join("plugins/out/probe.wasm"), &phases.to_string(), policy);
    let routes = "              - match: { prefix: / }\n                direct_response: { status: 200, body: { inline_string: \"hello\\n\" } }\n";
    common::write_config(
        &format!("reliability-{name}"),
        &common::bootstrap(runtime, "ingress", "", routes, &filter, ""),
    )
}

/// The binary on `config` with one worker; its listener and admin addresses, and where
/// its stderr goes.
fn serve(config: &std::path::Path) -> (Running, String, String, PathBuf) {
    let log = config.with_file_name("stderr.log");
    let (running, addr, admin) =
        common::serve_with(config, &["--concurrency", "1", "--log-level", "info", "--log-path", log.to_str().unwrap()]);
    (running, addr, admin.unwrap(), log)
}

/// Status line, `x-vm-count` (if any) and body of a GET with these headers.
fn get(addr: &str, headers: &str) -> (u16, Option<u32>, String) {
    let r = http_get(addr, "/", headers);
    let status = r[9..12].parse().unwrap();
    let count = r.lines().find_map(|l| l.strip_prefix("x-vm-count: ")).map(|v| v.trim().parse().unwrap());
    (status, count, body(&r).to_string())
}

fn stat(admin: &str, name: &str) -> u64 {
    let stats = http_get(admin, &format!("/stats?filter=^{name}$"), "");
    body(&stats).lines().find_map(|l| l.strip_prefix(&format!("{name}: "))).map_or(0, |v| v.parse().unwrap())
}

fn rss_kib(running: &Running) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", running.0.id())).unwrap();
    status.lines().find_map(|l| l.strip_prefix("VmRSS:")).unwrap().trim().trim_end_matches(" kB").parse().unwrap()
}

#[test]
fn a_panicking_or_trapping_plugin_under_each_failure_policy() {
    // (policy YAML, what the stream after the failure gets: status and whether the filter ran)
    let cases = [
        ("failure_policy: FAIL_CLOSED", (503, false)),
        ("", (503, false)),
        ("failure_policy: FAIL_OPEN", (200, false)),
    ];
    // (request header, what the log says of the failure)
    let failures = [("x-panic", "trap in proxy_on_request_headers"), ("x-trap", "out of bounds")];
    for (i, (policy, after)) in cases.into_iter().enumerate() {
        for (header, failure) in failures {
            let (running, addr, admin, log) = serve(&config(&format!("fail-{i}-{header}"), policy, ""));
            assert_eq!(get(&addr, ""), (200, Some(1), "hello\n".into()), "{policy}");
            let before = rss_kib(&running);
            // The stream in which the VM fails gets 503 with no body, whatever the policy.
            assert_eq!(get(&addr, &format!("{header}: 1\r\n")), (503, None, String::new()), "{policy} {header}");
            let (status, count, _) = get(&addr, "");
            assert_eq!((status, count.is_some()), after, "{policy} {header}");
            assert_eq!(stat(&admin, "wasm.probe.vm_reload"), 0, "{policy}");
            // Alive, and the failed VM's memory given back (never more than a few MB).
            assert_eq!(stat(&admin, "server.live"), 1, "{policy} {header}");
            assert!(rss_kib(&running) < before + 8 * 1024, "{policy} {header}");
            // The failure with its wasm backtrace, once, with the plugin's name; for a panic,
            // the SDK's message first.
            let text = std::fs::read_to_string(&log).unwrap();
            let line = "Wasm VM \"probe_vm\" (plugins \"probe\") failed: ";
            assert_eq!(text.matches(line).count(), 1, "{text}");
            assert!(text.contains(failure), "{policy} {header}: {text}");
            assert!(text.contains("probe.wasm!"), "no symbolized backtrace: {text}");
            if header == "x-panic" {
                assert!(text.contains("wasm log probe probe_root probe_vm: panicked at"), "{text}");
                assert_eq!(text.matches("boom").count(), 1, "{text}");
                assert!(text.contains("probe.wasm!std") && text.contains("panicking"), "{text}");
            } else {
                assert!(!text.contains("panicked at"), "{text}");
            }
        }
    }
    // The deprecated `fail_open: true`: even the failing stream goes on without the filter.
    let (_running, addr, _, _) = serve(&config("fail-open", "fail_open: true", ""));
    assert_eq!(get(&addr, "x-panic: 1\r\n"), (200, None, "hello\n".into()));
    assert_eq!(get(&addr, ""), (200, None, "hello\n".into()));
}

#[test]
fn a_bad_pointer_gets_an_error_status_under_each_failure_policy() {
    // As in Envoy, a pointer outside the plugin's memory is the hostcall's error
    // (INVALID_MEMORY_ACCESS, 6), not a failure of the VM: the stream and the VM go on.
    for (i, policy) in ["failure_policy: FAIL_CLOSED", "failure_policy: FAIL_OPEN", "failure_policy: FAIL_RELOAD"]
        .into_iter()
        .enumerate()
    {
        let (running, addr, admin, log) = serve(&config(&format!("pointer-{i}"), policy, ""));
        let before = rss_kib(&running);
        assert_eq!(get(&addr, "x-bad-pointer: 1\r\n"), (200, Some(1), "hello\n".into()), "{policy}");
        assert_eq!(get(&addr, "x-bad-pointer: 1\r\n"), (200, Some(2), "hello\n".into()), "{policy}");
        assert_eq!(get(&addr, ""), (200, Some(3), "hello\n".into()), "{policy}");
        let text = std::fs::read_to_string(&log).unwrap();
        assert_eq!(text.matches("bad_pointer => status=6").count(), 2, "{policy}: {text}");
        assert!(!text.contains("failed:"), "{policy}: {text}");
        assert_eq!(stat(&admin, "wasm.probe.vm_reload"), 0, "{policy}");
        assert!(rss_kib(&running) < before + 8 * 1024, "{policy}");
    }
}

#[test]
fn fail_reload_builds_the_vm_again_after_its_backoff() {
    let policy = "failure_policy: FAIL_RELOAD\n                reload_config: { backoff: { base_interval: 0.4s } }";
    let (_running, addr, admin, _) = serve(&config("reload", policy, ""));
    // Past the backoff after start-up, so the first failure is reloaded at once.
    std::thread::sleep(Duration::from_millis(700));
    let created = stat(&admin, "wasm.envoy.wasm.runtime.v8.created");
    assert_eq!(get(&addr, ""), (200, Some(1), "hello\n".into()));
    assert_eq!(get(&addr, ""), (200, Some(2), "hello\n".into()));
    assert_eq!(get(&addr, "x-panic: 1\r\n").0, 503);
    // The next stream gets a fresh VM (its counter starts again).
    assert_eq!(get(&addr, ""), (200, Some(1), "hello\n".into()));
    assert_eq!(stat(&admin, "wasm.probe.vm_reload_success"), 1);
    assert_eq!(stat(&admin, "wasm.envoy.wasm.runtime.v8.created"), created + 1);
    // A second failure within the backoff of that reload: 503 without the plugin.
    assert_eq!(get(&addr, "x-panic: 1\r\n").0, 503);
    assert_eq!(get(&addr, ""), (503, None, String::new()));
    assert_eq!(stat(&admin, "wasm.probe.vm_reload_backoff"), 1);
    // After it (at most 1.5 × base), reloaded again.
    std::thread::sleep(Duration::from_millis(650));
    assert_eq!(get(&addr, ""), (200, Some(1), "hello\n".into()));
    assert_eq!(stat(&admin, "wasm.probe.vm_reload_success"), 2);
    assert_eq!(stat(&admin, "wasm.probe.vm_reload"), 2);
    assert_eq!(stat(&admin, "wasm.envoy.wasm.runtime.v8.active"), 1);
}

#[test]
fn an_endless_loop_is_stopped_and_the_worker_serves_on() {
    // The deadline from `layered_runtime`, 100 ms here (500 ms by default).
    let runtime = "layered_runtime:\n  layers:\n  - name: tunables\n    static_layer:\n      wasmproxy.wasm.callback_deadline_ms: 100\n";
    for (i, policy) in ["failure_policy: FAIL_CLOSED", "failure_policy: FAIL_OPEN", "failure_policy: FAIL_RELOAD"]
        .into_iter()
        .enumerate()
    {
        let (running, addr, admin, log) = serve(&config(&format!("loop-{i}"), policy, runtime));
        let before = rss_kib(&running);
        let started = Instant::now();
        assert_eq!(get(&addr, "x-loop: 1\r\n"), (503, None, String::new()), "{policy}");
        let took = started.elapsed();
        assert!(took < Duration::from_secs(2), "{policy}: the looping stream took {took:?}");
        // The worker goes on: the next request is answered as the policy says.
        let expected = match policy {
            "failure_policy: FAIL_CLOSED" => (503, None, String::new()),
            "failure_policy: FAIL_OPEN" => (200, None, "hello\n".into()),
            _ => (200, Some(1), "hello\n".into()),
        };
        if policy.ends_with("FAIL_RELOAD") {
            std::thread::sleep(Duration::from_millis(1600));
        }
        assert_eq!(get(&addr, ""), expected, "{policy}");
        assert_eq!(stat(&admin, "server.live"), 1);
        assert!(rss_kib(&running) < before + 8 * 1024, "{policy}");
        let text = std::fs::read_to_string(&log).unwrap();
        assert!(text.contains("deadline"), "{policy}: {text}");
    }
}

#[test]
fn a_memory_bomb_is_capped_and_its_memory_given_back() {
    // The default cap is 256 MiB; 64 MiB here, from `layered_runtime`.
    let runtime = "layered_runtime:\n  layers:\n  - name: tunables\n    static_layer:\n      wasmproxy.wasm.memory_limit_bytes: 67108864\n";
    let policies = ["failure_policy: FAIL_CLOSED", "failure_policy: FAIL_OPEN", "failure_policy: FAIL_RELOAD"];
    for (i, policy) in policies.into_iter().enumerate() {
        let (running, addr, admin, _) = serve(&config(&format!("bomb-{i}"), policy, runtime));
        assert_eq!(get(&addr, "").0, 200);
        let before = rss_kib(&running);
        assert_eq!(get(&addr, "x-bomb: 1\r\n"), (503, None, String::new()), "{policy}");
        let after = rss_kib(&running);
        // The VM reached 64 MiB and failed; its memory is released at once.
        assert!(after < before + 24 * 1024, "{policy}: RSS {before} kB before, {after} kB after");
        assert_eq!(stat(&admin, "server.live"), 1);
        if policy.ends_with("FAIL_RELOAD") {
            std::thread::sleep(Duration::from_millis(1600));
            assert_eq!(get(&addr, ""), (200, Some(1), "hello\n".into()));
        } else if policy.ends_with("FAIL_OPEN") {
            assert_eq!(get(&addr, ""), (200, None, "hello\n".into()));
        } else {
            assert_eq!(get(&addr, "").0, 503);
        }
    }
}

/// VM recycling: past `max_streams`, and past the soft memory limit (the plugin leaking
/// 1 MiB a request), new streams go to a fresh VM (its counter starts again at 1); no
/// request fails, and the old VMs go.
#[test]
fn vms_are_recycled_past_their_streams_and_memory() {
    let runtime = "layered_runtime:\n  layers:\n  - name: tunables\n    static_layer:\n      wasmproxy.wasm.recycle.max_streams: 3\n";
    let (_running, addr, admin, log) = serve(&config("recycle-streams", "", runtime));
    let counts: Vec<Option<u32>> = (0..7).map(|_| get(&addr, "").1).collect();
    assert_eq!(counts, [1, 2, 3, 1, 2, 3, 1].map(Some));
    assert_eq!(stat(&admin, "wasm.probe.vm_recycle"), 2);
    assert!(stat(&admin, "wasm.probe.vm_recycle_us") > 0, "the time spent building the fresh VMs");
    assert_eq!(stat(&admin, "wasm.envoy.wasm.runtime.v8.created"), 3);
    assert_eq!(stat(&admin, "wasm.envoy.wasm.runtime.v8.active"), 1, "the old VMs are gone");
    assert!(std::fs::read_to_string(&log).unwrap().contains("recycled (streams)"));

    // 4 MiB for the probe plugin alone (its own key over the one for every plugin).
    let runtime = "layered_runtime:\n  layers:\n  - name: tunables\n    static_layer:\n      wasmproxy.wasm.recycle.max_streams: 1000\n      wasmproxy.wasm.plugin.probe.recycle.memory_bytes: 4194304\n";
    let (_running, addr, admin, log) = serve(&config("recycle-memory", "", runtime));
    let mut counts = Vec::new();
    for _ in 0..8 {
        let (status, count, _) = get(&addr, "x-leak: 1\r\n");
        assert_eq!(status, 200);
        counts.push(count.unwrap());
    }
    // The VM passes 4 MiB after a few leaks; the stream after that starts a fresh one.
    let first_fresh = counts.iter().skip(1).position(|c| *c == 1).expect("recycled") + 1;
    assert!((2..8).contains(&first_fresh), "{counts:?}");
    assert_eq!(counts[..first_fresh], (1..=first_fresh as u32).collect::<Vec<_>>()[..], "{counts:?}");
    assert!(stat(&admin, "wasm.probe.vm_recycle") >= 1);
    assert!(std::fs::read_to_string(&log).unwrap().contains("recycled (memory)"));
}

/// A plugin past its CPU budget (1% of the thread per 10 s here: 100 ms, which some
/// requests for 2 MiB of randomness each spend) is reported; with `action: fail`, its VM
/// is failed and its failure policy (FAIL_CLOSED) answers from then on.
#[test]
fn a_plugin_past_its_cpu_budget_is_reported_or_failed() {
    let layer = "layered_runtime:\n  layers:\n  - name: tunables\n    static_layer:\n";
    let runtime = format!("{layer}      wasmproxy.wasm.cpu_budget.percent: 1\n");
    let (_running, addr, admin, log) = serve(&config("budget-report", "", &runtime));
    let mut sent = 0;
    while stat(&admin, "wasm.probe.cpu_budget_exceeded") == 0 && sent < 200 {
        assert_eq!(get(&addr, "x-burn: 1\r\n").0, 200);
        sent += 1;
    }
    assert_eq!(stat(&admin, "wasm.probe.cpu_budget_exceeded"), 1, "after {sent} requests");
    assert_eq!(get(&addr, "x-burn: 1\r\n").0, 200, "reported only");
    assert!(stat(&admin, "wasm.probe.cpu_ns") >= 100_000_000);
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("over its CPU budget of 1% of its thread (100 ms per 10 s)"), "{text}");

    let runtime = format!(
        "{layer}      wasmproxy.wasm.plugin.probe.cpu_budget.percent: 1\n      wasmproxy.wasm.plugin.probe.cpu_budget.action: fail\n"
    );
    let (_running, addr, admin, log) = serve(&config("budget-fail", "", &runtime));
    let mut statuses = Vec::new();
    while statuses.last() != Some(&503) && statuses.len() < 200 {
        statuses.push(get(&addr, "x-burn: 1\r\n").0);
    }
    // The callback that passed the budget finished its request; the next met the failed VM.
    assert_eq!(statuses[..statuses.len() - 1].iter().filter(|s| **s != 200).count(), 0, "{statuses:?}");
    assert_eq!(statuses.last(), Some(&503), "{statuses:?}");
    assert_eq!(get(&addr, "").0, 503);
    assert_eq!(stat(&admin, "wasm.probe.cpu_budget_exceeded"), 1);
    let page: serde_json::Value = serde_json::from_str(body(&http_get(&admin, "/wasm?format=json", ""))).unwrap();
    assert_eq!(
        (page["vms"][0]["failures"]["cpu_budget"].as_u64(), page["vms"][0]["state"].as_str()),
        (Some(1), Some("failed"))
    );
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("over its CPU budget of 1% of its thread (100 ms per 10 s): its VM is failed"), "{text}");
}

/// The admin's `/wasm` shows the VM's failure: its kind counted, its state, the message.
#[test]
fn the_wasm_page_shows_a_failed_vm() {
    let (_running, addr, admin, _) = serve(&config("wasm-page", "", ""));
    assert_eq!(get(&addr, "").0, 200);
    assert_eq!(get(&addr, "x-trap: 1\r\n").0, 503);
    let page: serde_json::Value = serde_json::from_str(body(&http_get(&admin, "/wasm?format=json", ""))).unwrap();
    let vm = &page["vms"][0];
    assert_eq!((vm["thread"].as_str(), vm["state"].as_str()), (Some("worker_0"), Some("failed")), "{page}");
    assert_eq!(vm["failures"]["trap"], 1, "{page}");
    assert_eq!(vm["streams"], 2, "{page}");
    assert!(vm["last_error"]["message"].as_str().unwrap().contains("out of bounds"), "{page}");
    let text = body(&http_get(&admin, "/wasm", "")).to_string();
    assert!(text.starts_with("worker_0 vm_id=\"probe_vm\" module="), "{text}");
    assert!(
        text.contains("failures=[trap:1 deadline:0 memory_limit:0 cpu_budget:0 other:0]")
            && text.contains("state=failed"),
        "{text}"
    );
    assert!(text.contains("  plugins: probe\n  last error at "), "{text}");
}

/// An upstream that answers every request `slow ok` after `delay`, one connection per
/// request.
fn slow_upstream(delay: Duration) -> u16 {
    use std::io::{BufRead, BufReader, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { return };
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut line = String::new();
                while reader.read_line(&mut line).unwrap_or(0) > 0 && line != "\r\n" {
                    line.clear();
                }
                std::thread::sleep(delay);
                let mut stream = stream;
                let _ = stream.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 8\r\nconnection: close\r\n\r\nslow ok\n");
            });
        }
    });
    port
}

/// A listener in front of the upstream, with the connection manager's `hcm` lines.
fn slow_config(name: &str, upstream: u16, hcm: &str) -> PathBuf {
    let routes = "              - match: { prefix: / }\n                route: { cluster: slow }\n";
    let yaml = common::bootstrap("", "ingress", hcm, routes, "", &common::cluster("slow", upstream));
    common::write_config(&format!("reliability-{name}"), &yaml)
}

#[test]
fn sigterm_and_quitquitquit_drain_what_was_accepted_then_exit_zero() {
    let upstream = slow_upstream(Duration::from_millis(800));
    for how in ["SIGTERM", "/quitquitquit"] {
        let config = slow_config(&format!("drain-{}", how.trim_start_matches('/')), upstream, "");
        let (mut running, addr, admin) = common::serve_with(&config, &["--log-level", "warning"]);
        let admin = admin.unwrap();
        // Two requests in flight when the stop comes.
        let in_flight: Vec<_> = (0..2)
            .map(|_| {
                let addr = addr.clone();
                std::thread::spawn(move || http_get(&addr, "/", ""))
            })
            .collect();
        std::thread::sleep(Duration::from_millis(300));
        let stopped = Instant::now();
        match how {
            "SIGTERM" => sigterm(&running),
            _ => assert_eq!(body(&common::http(&admin, "POST", "/quitquitquit", "", "")), "OK\n"),
        }
        // New connections are refused once the listener is closed.
        std::thread::sleep(Duration::from_millis(100));
        assert!(std::net::TcpStream::connect(&addr).is_err(), "{how}: still accepting");
        for t in in_flight {
            let response = t.join().unwrap();
            assert!(response.starts_with("HTTP/1.1 200") && body(&response) == "slow ok\n", "{how}: {response}");
        }
        let status = exit_within_10_s(&mut running, stopped, how);
        assert!(status.success(), "{how}: {status}");
    }
}

#[test]
fn a_stream_held_past_the_drain_time_is_cut_and_the_process_exits_zero() {
    // The plugin holds every request, and would call out from its access-log phase: when
    // the drain time is over, the held stream is cut with the worker's event loop, and the
    // process still exits 0, after the drain time and not before.
    let plugin = serde_json::json!({
        "returns": {"request_headers": "pause"},
        "phases": {"log": [["http_call", "nowhere", ":method=GET;:path=/;:authority=x", "", "1000"]]},
    });
    let probe = repo().join("plugins/out/probe.wasm");
    let filter = common::wasm_filter("holder", &probe, &plugin.to_string(), "");
    let routes = "              - match: { prefix: / }\n                direct_response: { status: 200 }\n";
    let clusters = common::cluster("nowhere", 1);
    let config = common::write_config("drain-held", &common::bootstrap("", "ingress", "", routes, &filter, &clusters));
    let (mut running, addr, _) = common::serve_with(&config, &["--concurrency", "1", "--drain-time-s", "1"]);
    let mut client = std::net::TcpStream::connect(&addr).unwrap();
    std::io::Write::write_all(&mut client, b"GET / HTTP/1.1\r\nhost: x\r\n\r\n").unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let stopped = Instant::now();
    sigterm(&running);
    let status = exit_within_10_s(&mut running, stopped, "SIGTERM");
    assert!(status.success(), "{status}");
    assert!(stopped.elapsed() >= Duration::from_millis(900), "the drain time was not waited: {:?}", stopped.elapsed());
}

/// Sends SIGTERM to the proxy.
fn sigterm(running: &Running) {
    // SAFETY: a plain kill(2) of the child this test started.
    assert_eq!(unsafe { libc::kill(running.0.id() as libc::pid_t, libc::SIGTERM) }, 0);
}

/// Waits for the proxy to exit, at most 10 s after `since`; its exit status.
fn exit_within_10_s(running: &mut Running, since: Instant, what: &str) -> std::process::ExitStatus {
    loop {
        if let Some(status) = running.0.try_wait().unwrap() {
            return status;
        }
        assert!(since.elapsed() < Duration::from_secs(10), "{what}: still running");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Reads what the server sends until it closes (or 5 s pass); with the time it took.
fn read_until_closed(stream: &mut std::net::TcpStream) -> (String, Duration) {
    use std::io::Read;
    let started = Instant::now();
    stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
    }
    (String::from_utf8_lossy(&out).into_owned(), started.elapsed())
}

#[test]
fn slow_and_idle_clients_are_timed_out_and_others_served() {
    use std::io::Write;
    let upstream = slow_upstream(Duration::from_millis(10));
    let timeouts = "          request_headers_timeout: 0.3s\n          stream_idle_timeout: 0.3s\n          common_http_protocol_options: { idle_timeout: 0.5s }\n";
    let config = slow_config("timeouts", upstream, timeouts);
    let (_running, addr, admin) = common::serve_with(&config, &["--concurrency", "1", "--log-level", "warning"]);
    let admin = admin.unwrap();

    // A body that comes apart from its head (the head is checked before hyper sees it;
    // the body is not held back).
    let mut split = std::net::TcpStream::connect(&addr).unwrap();
    split.write_all(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nConnection: close\r\n\r\n").unwrap();
    std::thread::sleep(Duration::from_millis(50));
    split.write_all(b"12345").unwrap();
    let (text, _) = read_until_closed(&mut split);
    assert!(text.starts_with("HTTP/1.1 200") && text.ends_with("slow ok\n"), "{text:?}");

    // Headers that never end: Envoy's 408, then the connection closes; meanwhile others
    // are served.
    let mut slow_headers = std::net::TcpStream::connect(&addr).unwrap();
    slow_headers.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n").unwrap();
    assert_eq!(body(&http_get(&addr, "/", "")), "slow ok\n");
    let (text, took) = read_until_closed(&mut slow_headers);
    assert!(text.starts_with("HTTP/1.1 408 Request Timeout\r\n"), "{text:?}");
    assert!(text.ends_with("\r\n\r\nrequest header timeout") && took < Duration::from_secs(2), "{text:?} {took:?}");

    // A body that stops coming: 408 `stream timeout`.
    let mut slow_body = std::net::TcpStream::connect(&addr).unwrap();
    slow_body.write_all(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n12345").unwrap();
    let (text, took) = read_until_closed(&mut slow_body);
    assert!(text.starts_with("HTTP/1.1 408 Request Timeout\r\n"), "{text:?}");
    assert!(text.ends_with("stream timeout"), "{text:?}");
    assert!(took < Duration::from_secs(2), "{took:?}");

    // A keep-alive connection left idle is closed after `idle_timeout`.
    let mut idle = std::net::TcpStream::connect(&addr).unwrap();
    idle.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let (text, took) = read_until_closed(&mut idle);
    assert!(text.starts_with("HTTP/1.1 200") && text.ends_with("slow ok\n"), "{text:?}");
    assert!(took > Duration::from_millis(400) && took < Duration::from_secs(2), "{took:?}");

    let stats = body(&http_get(&admin, "/stats?filter=idle_timeout", "")).to_string();
    assert!(stats.contains("http.ingress.downstream_cx_idle_timeout: 1\n"), "{stats}");
    assert!(stats.contains("http.ingress.downstream_rq_idle_timeout: 1\n"), "{stats}");
    let stats = body(&http_get(&admin, "/stats?filter=header_timeout", "")).to_string();
    assert!(stats.contains("http.ingress.downstream_rq_header_timeout: 1\n"), "{stats}");
}

#[test]
fn a_listener_connection_limit_refuses_the_connection_over_it() {
    let runtime = "layered_runtime:\n  layers:\n  - name: limits\n    static_layer:\n      envoy.resource_limits.listener.main.connection_limit: 2\n";
    let (_running, addr, admin, _) = serve(&config("limit", "", runtime));
    let first = std::net::TcpStream::connect(&addr).unwrap();
    let _second = std::net::TcpStream::connect(&addr).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    // The third is closed at once, unanswered.
    let mut third = std::net::TcpStream::connect(&addr).unwrap();
    use std::io::Write;
    let _ = third.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    let (text, _) = read_until_closed(&mut third);
    assert_eq!(text, "");
    assert_eq!(stat(&admin, "listener.127.0.0.1_0.downstream_cx_overflow"), 1);
    // Once one closes, a new connection is served.
    drop(first);
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(get(&addr, ""), (200, Some(1), "hello\n".into()));
}

#[test]
fn a_closed_stderr_does_not_stop_the_proxy() {
    // Whoever started the proxy closed its end of the stderr pipe at once: every line the
    // proxy writes there fails (its addresses, logs), and it serves all the same.
    let routes = "              - match: { prefix: / }\n                direct_response: { status: 200, body: { inline_string: \"hello\\n\" } }\n";
    let config = common::write_config("closed-stderr", &common::bootstrap("", "ingress", "", routes, "", ""));
    let mut child = common::wasmproxy()
        .args(["-c", config.to_str().unwrap(), "--concurrency", "1", "--log-level", "debug"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stderr.take());
    let mut running = Running(child);
    // Its listener, found from the socket table (`ss`): the first of its listening ports.
    let pid = format!("pid={},", running.0.id());
    let started = Instant::now();
    let addr = loop {
        let ss = std::process::Command::new("ss").args(["-Hltnp"]).output().unwrap();
        let text = String::from_utf8_lossy(&ss.stdout).to_string();
        let mut ports: Vec<&str> =
            text.lines().filter(|l| l.contains(&pid)).filter_map(|l| l.split_whitespace().nth(3)).collect();
        ports.sort();
        if ports.len() == 2 || started.elapsed() > Duration::from_secs(10) {
            assert!(running.0.try_wait().unwrap().is_none(), "the proxy exited: {:?}", running.0.try_wait());
            // The listener and the admin: the listener answers "hello".
            break ports
                .into_iter()
                .find(|a| http_get(a, "/", "").ends_with("hello\n"))
                .expect("a listener")
                .to_string();
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    for _ in 0..3 {
        assert_eq!(get(&addr, ""), (200, None, "hello\n".into()));
    }
    assert!(running.0.try_wait().unwrap().is_none(), "the proxy exited: {:?}", running.0.try_wait());
}
