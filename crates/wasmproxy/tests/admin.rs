//! The admin port, stats, access logs and process logs as an Envoy user meets them: the
//! binary on a config with an upstream of the test's own, a closed port, a Wasm filter and
//! access loggers; every admin endpoint through a real HTTP client; `/stats/prometheus`
//! read by the reference Prometheus parser (Python's `prometheus_client`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{body, http, http_get, repo, serve_with};

/// An HTTP/1.1 upstream on its own threads: every request gets `200 ok`, keep-alive.
fn upstream() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { return };
            std::thread::spawn(move || serve_upstream(stream));
        }
    });
    port
}

fn serve_upstream(stream: TcpStream) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut writer = stream;
    loop {
        let mut length = 0usize;
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        loop {
            let mut header = String::new();
            if reader.read_line(&mut header).unwrap_or(0) == 0 {
                return;
            }
            if header == "\r\n" {
                break;
            }
            if let Some((k, v)) = header.split_once(':')
                && k.eq_ignore_ascii_case("content-length")
            {
                length = v.trim().parse().unwrap_or(0);
            }
        }
        let mut body = vec![0; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        if writer.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\nok\n").is_err() {
            return;
        }
    }
}

/// A directory of its own for one test.
fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("wasmproxy-admin-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The config: the talk demo's plugin before the router, routes to a direct response, the
/// upstream and a closed port, access logs in Envoy's default format and as JSON.
fn config(dir: &Path, upstream: u16) -> PathBuf {
    let plugin = repo().join("examples/talk_demo/talk_demo.wasm");
    let access_logs = format!(
        r#"          access_log:
          - name: envoy.access_loggers.file
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog
              path: {dir}/access.log
          - name: envoy.access_loggers.file
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog
              path: {dir}/access.json
              log_format:
                json_format:
                  code: "%RESPONSE_CODE%"
                  flags: "%RESPONSE_FLAGS%"
                  path: "%REQ(:PATH)%"
                  upstream: "%UPSTREAM_HOST%"
                  start: "%START_TIME(%s)%"
"#,
        dir = dir.display()
    );
    let routes = r#"              - match: { prefix: /direct }
                direct_response: { status: 200, body: { inline_string: "direct\n" } }
              - match: { prefix: /dead }
                route: { cluster: dead }
              - match: { prefix: /only/ }
                route: { cluster: backend }
"#;
    let filter = common::wasm_filter("talk_demo", &plugin, "x-demo=yes", "");
    let clusters = common::cluster("backend", upstream) + &common::cluster("dead", 1);
    let yaml =
        common::bootstrap("stats_flush_interval: 0.2s\n", "ingress_http", &access_logs, routes, &filter, &clusters);
    let path = dir.join("envoy.yaml");
    std::fs::write(&path, yaml).unwrap();
    path
}

/// One request of each outcome: a direct response, the upstream (GET and POST), a route
/// miss, a refused connection.
fn send_requests(addr: &str) {
    assert!(http_get(addr, "/direct", "hello: x\r\n").starts_with("HTTP/1.1 200"));
    let upstream = http_get(addr, "/only/a", "");
    assert!(upstream.starts_with("HTTP/1.1 200") && body(&upstream) == "ok\n", "{upstream}");
    assert!(http(addr, "POST", "/only/b", "", "0123456789").starts_with("HTTP/1.1 200"));
    assert!(http_get(addr, "/nowhere", "").starts_with("HTTP/1.1 404"));
    assert!(http_get(addr, "/dead", "").starts_with("HTTP/1.1 503"));
}

/// Polls `path` on the admin port until `ready` holds (at most 5 s); returns the last body.
fn admin_until(admin: &str, path: &str, ready: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let text = body(&http_get(admin, path, "")).to_string();
        if ready(&text) || Instant::now() > deadline {
            return text;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn stats_carry_envoys_names_and_values() {
    let dir = temp_dir("stats");
    let (_running, addr, admin) = serve_with(&config(&dir, upstream()), &["--log-level", "warning"]);
    let admin = admin.unwrap();
    send_requests(&addr);
    // The histograms show once a flush (every 0.2 s here) has taken the samples.
    let stats = admin_until(&admin, "/stats", |t| t.contains("http.ingress_http.downstream_rq_time: P0("));
    for line in [
        "http.ingress_http.downstream_rq_total: 5",
        "http.ingress_http.downstream_rq_2xx: 3",
        "http.ingress_http.downstream_rq_4xx: 1",
        "http.ingress_http.downstream_rq_5xx: 1",
        "http.ingress_http.downstream_rq_active: 0",
        "http.ingress_http.downstream_cx_total: 5",
        "http.ingress_http.no_route: 1",
        "http.ingress_http.rq_direct_response: 1",
        "listener.127.0.0.1_0.downstream_cx_total: 5",
        "cluster.backend.upstream_rq_total: 2",
        "cluster.backend.upstream_rq_200: 2",
        "cluster.backend.upstream_rq_2xx: 2",
        "cluster.backend.membership_total: 1",
        "cluster.dead.upstream_cx_connect_fail: 1",
        "cluster.dead.upstream_rq_503: 1",
        "server.live: 1",
        "server.concurrency: 2",
        "wasm.envoy.wasm.runtime.v8.active: 2",
    ] {
        assert!(stats.lines().any(|l| l == line), "missing {line:?} in\n{stats}");
    }
    assert!(stats.contains("\ncluster.backend.upstream_rq_time: P0("), "{stats}");
    let uptime = stats.lines().find_map(|l| l.strip_prefix("server.uptime: ")).unwrap();
    assert!(uptime.parse::<u64>().is_ok(), "{uptime}");
    let allocated: u64 =
        stats.lines().find_map(|l| l.strip_prefix("server.memory_allocated: ")).unwrap().parse().unwrap();
    // Glibc's count of bytes in use: a running proxy holds some hundreds of KiB (less
    // than a MiB when its plugin comes from the compile cache instead of the compiler).
    assert!(allocated > 1 << 16, "{allocated}");
    // Counters and gauges by name, then histograms.
    let names: Vec<&str> = stats.lines().filter(|l| !l.contains(": P0(") && !l.contains("No recorded")).collect();
    assert!(names.windows(2).all(|w| w[0] <= w[1]), "not sorted");

    // Filters, types and JSON.
    let filtered = body(&http_get(&admin, "/stats?filter=%5Ecluster%5C.dead%5C.&type=Counters", "")).to_string();
    assert!(filtered.lines().all(|l| l.starts_with("cluster.dead.")), "{filtered}");
    assert!(!filtered.contains("membership_total"), "a gauge in {filtered}");
    let used = body(&http_get(&admin, "/stats?usedonly&filter=upstream_rq_", "")).to_string();
    assert!(!used.contains(": 0\n"), "{used}");
    let json: serde_json::Value =
        serde_json::from_str(body(&http_get(&admin, "/stats?format=json&filter=ingress_http", ""))).unwrap();
    let entries = json["stats"].as_array().unwrap();
    assert!(entries.iter().any(|e| e["name"] == "http.ingress_http.downstream_rq_total" && e["value"] == 5));
    let histograms = &entries.last().unwrap()["histograms"];
    assert_eq!(histograms["supported_quantiles"][9], 100);
    assert!(histograms["computed_quantiles"][0]["values"][0]["cumulative"].is_number(), "{histograms}");
    let bad = http_get(&admin, "/stats?filter=(", "");
    assert!(bad.starts_with("HTTP/1.1 400") && bad.contains("Invalid re2 regex"), "{bad}");
}

#[test]
fn prometheus_output_parses_with_the_reference_parser() {
    let dir = temp_dir("prometheus");
    let (_running, addr, admin) = serve_with(&config(&dir, upstream()), &["--log-level", "warning"]);
    let admin = admin.unwrap();
    send_requests(&addr);
    let text = admin_until(&admin, "/stats/prometheus", |t| {
        t.contains("envoy_http_downstream_rq_time_count{envoy_http_conn_manager_prefix=\"ingress_http\"} 5")
    });
    let file = dir.join("metrics.txt");
    std::fs::write(&file, &text).unwrap();
    // Every sample, as the parser reads it: `type name{labels} value`, one per line (the
    // parser names a counter's sample `<name>_total`, as OpenMetrics does).
    let script = "import sys\n\
        from prometheus_client.parser import text_string_to_metric_families\n\
        for family in text_string_to_metric_families(open(sys.argv[1]).read()):\n\
        \x20   for s in family.samples:\n\
        \x20       labels = ','.join(f'{k}={v}' for k, v in sorted(s.labels.items()))\n\
        \x20       print(f'{family.type} {s.name}{{{labels}}} {s.value}')\n";
    let out = std::process::Command::new("python3").arg("-c").arg(script).arg(&file).output().unwrap();
    assert!(
        out.status.success(),
        "prometheus_client refused the output (scripts/setup.sh installs it): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let parsed = String::from_utf8(out.stdout).unwrap();
    for sample in [
        "counter envoy_http_downstream_rq_total{envoy_http_conn_manager_prefix=ingress_http} 5.0",
        "counter envoy_http_downstream_rq_xx_total{envoy_http_conn_manager_prefix=ingress_http,envoy_response_code_class=2} 3.0",
        "counter envoy_cluster_upstream_rq_total{envoy_cluster_name=backend,envoy_response_code=200} 2.0",
        "counter envoy_listener_downstream_cx_total{envoy_listener_address=127.0.0.1_0} 5.0",
        "gauge envoy_server_live{} 1.0",
        "counter hello_header_counter_total{} 1.0",
        "histogram envoy_http_downstream_rq_time_count{envoy_http_conn_manager_prefix=ingress_http} 5.0",
        "histogram envoy_http_downstream_rq_time_bucket{envoy_http_conn_manager_prefix=ingress_http,le=+Inf} 5.0",
    ] {
        assert!(parsed.lines().any(|l| l == sample), "missing {sample:?} in\n{parsed}");
    }
}

#[test]
fn access_logs_are_written_in_envoys_formats() {
    let dir = temp_dir("access");
    let upstream = upstream();
    let (running, addr, admin) = serve_with(&config(&dir, upstream), &["--log-level", "warning"]);
    send_requests(&addr);
    // Lines are written by a thread of their own, as they come.
    let deadline = Instant::now() + Duration::from_secs(5);
    let read = |name: &str| std::fs::read_to_string(dir.join(name)).unwrap_or_default();
    while (read("access.log").lines().count() < 5 || read("access.json").lines().count() < 5)
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(20));
    }
    let lines: Vec<String> = read("access.log").lines().map(str::to_string).collect();
    assert_eq!(lines.len(), 5, "{lines:?}");
    // `[START_TIME] "METHOD PATH PROTOCOL" CODE FLAGS RECEIVED SENT DURATION SERVICE_TIME
    // "XFF" "UA" "REQUEST_ID" "AUTHORITY" "UPSTREAM_HOST"`
    let shape = regex::Regex::new(
        r#"^\[\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z\] "(\S+) (\S+) HTTP/1\.1" (\d{3}) (\S+) (\d+) (\d+) \d+ (\S+) "-" "-" "[0-9a-f-]{36}" "example\.com" "(\S+)"$"#,
    )
    .unwrap();
    // By path: a request proxied to the upstream is logged once its response has ended,
    // which may be after the client has sent the next request to the other worker.
    let mut fields: Vec<Vec<String>> = lines
        .iter()
        .map(|l| {
            let c = shape.captures(l).unwrap_or_else(|| panic!("not Envoy's default format: {l}"));
            (1..=8).map(|i| c[i].to_string()).collect()
        })
        .collect();
    fields.sort_by(|a, b| a[1].cmp(&b[1]));
    let backend = format!("127.0.0.1:{upstream}");
    let expected = [
        ["GET", "/dead", "503", "UF", "0", "98", "-", "127.0.0.1:1"],
        ["GET", "/direct", "200", "-", "0", "7", "-", "-"],
        ["GET", "/nowhere", "404", "NR", "0", "0", "-", "-"],
        ["GET", "/only/a", "200", "-", "0", "3", "*", backend.as_str()],
        ["POST", "/only/b", "200", "-", "10", "3", "*", backend.as_str()],
    ];
    for (got, want) in fields.iter().zip(expected) {
        for (g, w) in got.iter().zip(want) {
            assert!(w == "*" && g.parse::<u64>().is_ok() || g == w, "{got:?} vs {want:?}");
        }
    }
    let json: Vec<serde_json::Value> = read("access.json").lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let by_path = |path: &str| json.iter().find(|j| j["path"] == path).unwrap_or_else(|| panic!("{path}: {json:?}"));
    assert_eq!(by_path("/direct")["code"], 200);
    assert_eq!(by_path("/direct")["upstream"], serde_json::Value::Null);
    assert_eq!(by_path("/dead")["flags"], "UF");
    assert!(by_path("/dead")["start"].as_str().unwrap().parse::<u64>().unwrap() > 1_700_000_000);
    drop((running, admin));
}

/// `/wasm`: each worker's VM of the plugin, what it runs and what it did.
#[test]
fn the_wasm_page_shows_each_workers_vm() {
    let dir = temp_dir("wasm");
    let upstream = upstream();
    let (running, addr, admin) = serve_with(&config(&dir, upstream), &["--log-level", "warning"]);
    let admin = admin.unwrap();
    // A VM that has served nothing yet shows its memory after its plugins started.
    let idle: serde_json::Value = serde_json::from_str(body(&http_get(&admin, "/wasm?format=json", ""))).unwrap();
    for vm in idle["vms"].as_array().unwrap() {
        assert!(vm["memory_bytes"].as_u64().unwrap() >= 65536, "{vm}");
    }
    send_requests(&addr);
    let page: serde_json::Value = serde_json::from_str(body(&http_get(&admin, "/wasm?format=json", ""))).unwrap();
    let vms = page["vms"].as_array().unwrap();
    assert_eq!(vms.len(), 2, "one VM per worker: {page}");
    for (i, vm) in vms.iter().enumerate() {
        assert_eq!(vm["thread"], format!("worker_{i}"));
        assert!(vm["module"].as_str().unwrap().ends_with("talk_demo.wasm"), "{vm}");
        assert_eq!(vm["sha256"].as_str().unwrap().len(), 64);
        assert_eq!((vm["code"].as_str(), vm["state"].as_str()), (Some("optimized"), Some("running")));
        assert_eq!(vm["plugins"], serde_json::json!(["talk_demo"]));
        assert!(vm["memory_bytes"].as_u64().unwrap() >= 65536, "{vm}");
        assert_eq!(vm["callouts_in_flight"], 0, "{vm}");
        assert_eq!(
            vm["failures"],
            serde_json::json!({"trap": 0, "deadline": 0, "memory_limit": 0, "cpu_budget": 0, "other": 0})
        );
    }
    let streams: u64 = vms.iter().map(|v| v["streams"].as_u64().unwrap()).sum();
    let calls: u64 = vms.iter().map(|v| v["calls"].as_u64().unwrap()).sum();
    assert_eq!(streams, 5, "{page}");
    assert!(calls > streams, "{page}");
    // Each callback's count, CPU time and histogram; the VM's calls are theirs.
    let mut request_headers = 0;
    for vm in vms {
        let callbacks = vm["callbacks"].as_object().unwrap();
        let counted: u64 = callbacks.values().map(|c| c["calls"].as_u64().unwrap()).sum();
        assert_eq!(counted, vm["calls"].as_u64().unwrap(), "{vm}");
        for (name, c) in callbacks {
            let in_bins: u64 = c["histogram_ns"].as_array().unwrap().iter().map(|b| b[1].as_u64().unwrap()).sum();
            assert_eq!(in_bins, c["calls"].as_u64().unwrap(), "{name}: {c}");
            assert!(c["cpu_ns"].as_u64().unwrap() > 0 && c["p50_ns"].as_u64() <= c["max_ns"].as_u64(), "{name}: {c}");
        }
        request_headers += callbacks.get("on_request_headers").map_or(0, |c| c["calls"].as_u64().unwrap());
    }
    assert_eq!(request_headers, 5, "{page}");
    let text = body(&http_get(&admin, "/wasm", "")).to_string();
    assert_eq!(text.lines().filter(|l| l.starts_with("worker_")).count(), 2, "{text}");
    assert!(text.contains("  plugins: talk_demo\n"), "{text}");
    assert!(text.contains("  on_request_headers: calls="), "{text}");
    // The same per plugin, for Prometheus.
    let stats = body(&http_get(&admin, "/stats?filter=talk_demo.cpu_ns", "")).to_string();
    let cpu_ns: u64 = stats.trim().strip_prefix("wasm.talk_demo.cpu_ns: ").unwrap().parse().unwrap();
    assert!(cpu_ns > 0, "{stats}");
    let prometheus = body(&http_get(&admin, "/stats/prometheus", "")).to_string();
    let wanted = "envoy_wasm_callback_calls{callback=\"on_request_headers\",plugin=\"talk_demo\"} 5\n";
    assert!(prometheus.contains(wanted), "{prometheus}");
    assert!(prometheus.contains("envoy_wasm_callback_cpu_ns{callback=\"on_request_headers\",plugin=\"talk_demo\"} "));
    assert!(prometheus.contains("envoy_wasm_cpu_ns{plugin=\"talk_demo\"} "), "{prometheus}");
    drop(running);
}

/// `/wasm?format=html` in a real browser (Debian's chromium, headless): the page reads
/// `/wasm?format=json` and shows each worker's VM, its plugin and its callbacks.
#[test]
fn the_wasm_page_renders_in_a_browser() {
    let dir = temp_dir("wasm-html");
    let upstream = upstream();
    let (running, addr, admin) = serve_with(&config(&dir, upstream), &["--log-level", "warning"]);
    let admin = admin.unwrap();
    send_requests(&addr);
    let page = http_get(&admin, "/wasm?format=html", "");
    assert!(page.contains("content-type: text/html; charset=UTF-8"), "{page}");
    let profile = dir.join("chromium-profile");
    let out = std::process::Command::new("/usr/bin/chromium")
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run"])
        .args(["--disable-background-networking", "--disable-component-update", "--disable-sync"])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(["--virtual-time-budget=3000", "--dump-dom"])
        .arg(format!("http://{admin}/wasm?format=html"))
        .output()
        .expect("chromium (scripts/setup.sh installs it)");
    let dom = String::from_utf8_lossy(&out.stdout).into_owned();
    drop(running);
    assert!(dom.contains("<p id=\"status\">2 VM(s), at "), "{dom}\n{}", String::from_utf8_lossy(&out.stderr));
    for thread in ["worker_0", "worker_1"] {
        assert!(dom.contains(&format!("<section class=\"vm running\" data-thread=\"{thread}\">")), "{dom}");
        assert!(dom.contains(&format!("<h2>{thread} · talk_demo · vm_id ")), "{dom}");
    }
    assert!(dom.contains("<b>failures: </b>none"), "{dom}");
    assert!(dom.contains("<tr data-callback=\"on_request_headers\"><td>on_request_headers</td>"), "{dom}");
    assert!(dom.contains("<div class=\"bars\"><div title=\"from "), "{dom}");
}

#[test]
fn admin_endpoints_answer_as_envoys_do() {
    let dir = temp_dir("endpoints");
    let upstream = upstream();
    let (mut running, addr, admin) = serve_with(&config(&dir, upstream), &["--log-level", "warning"]);
    let admin = admin.unwrap();
    send_requests(&addr);

    let help = http_get(&admin, "/help", "");
    assert!(body(&help).starts_with("admin commands are:\n  /: Admin home page\n"), "{help}");
    let missing = http_get(&admin, "/nope", "");
    assert!(missing.starts_with("HTTP/1.1 404") && body(&missing).starts_with("invalid path. admin commands are:\n"));
    assert!(http_get(&admin, "/", "").contains("text/html"));
    assert_eq!(body(&http_get(&admin, "/ready", "")), "LIVE\n");

    let info: serde_json::Value = serde_json::from_str(body(&http_get(&admin, "/server_info", ""))).unwrap();
    assert_eq!(info["state"], "LIVE");
    assert_eq!(info["command_line_options"]["concurrency"], 2);
    assert_eq!(info["command_line_options"]["log_level"], "warning");
    assert!(info["version"].as_str().unwrap().starts_with("wasmproxy/"));

    let dump: serde_json::Value = serde_json::from_str(body(&http_get(&admin, "/config_dump", ""))).unwrap();
    let configs = dump["configs"].as_array().unwrap();
    assert_eq!(configs[0]["@type"], "type.googleapis.com/envoy.admin.v3.BootstrapConfigDump");
    assert_eq!(configs[0]["bootstrap"]["stats_flush_interval"], "0.2s");
    assert_eq!(configs[1]["static_clusters"][1]["cluster"]["name"], "dead");
    assert_eq!(configs[2]["static_listeners"][0]["name"], "main");
    assert_eq!(configs[3]["static_route_configs"][0]["route_config"]["virtual_hosts"][0]["name"], "all");

    let clusters = body(&http_get(&admin, "/clusters", "")).to_string();
    for line in [
        format!("backend::127.0.0.1:{upstream}::rq_total::2"),
        format!("backend::127.0.0.1:{upstream}::rq_success::2"),
        "dead::127.0.0.1:1::cx_connect_fail::1".to_string(),
        "dead::127.0.0.1:1::rq_error::1".to_string(),
        format!("backend::127.0.0.1:{upstream}::health_flags::healthy"),
    ] {
        assert!(clusters.lines().any(|l| l == line), "missing {line:?} in\n{clusters}");
    }
    let clusters: serde_json::Value =
        serde_json::from_str(body(&http_get(&admin, "/clusters?format=json", ""))).unwrap();
    assert_eq!(clusters["cluster_statuses"][0]["name"], "backend");
    assert_eq!(body(&http_get(&admin, "/listeners", "")), format!("main::{addr}\n"));
    let listeners: serde_json::Value =
        serde_json::from_str(body(&http_get(&admin, "/listeners?format=json", ""))).unwrap();
    assert_eq!(listeners["listener_statuses"][0]["local_address"]["socket_address"]["address"], "127.0.0.1");

    // Paths that change state want POST.
    let refused = http_get(&admin, "/logging?level=debug", "");
    assert!(refused.starts_with("HTTP/1.1 405") && body(&refused) == "Method GET not allowed, POST required.");
    let levels = http(&admin, "POST", "/logging?wasm=debug", "", "");
    assert!(body(&levels).starts_with("active loggers:\n  wasm: debug\n  wasmproxy: warning\n"), "{levels}");
    let all = http(&admin, "POST", "/logging?level=error", "", "");
    assert!(body(&all).contains("  wasm: error\n  wasmproxy: error\n"), "{all}");
    let bad = http(&admin, "POST", "/logging?level=loud", "", "");
    assert!(bad.starts_with("HTTP/1.1 400") && body(&bad).starts_with("error: unknown logger level\n"), "{bad}");
    let unknown = http(&admin, "POST", "/logging?nosuch=debug", "", "");
    assert!(body(&unknown).starts_with("error: unknown logger name\n"), "{unknown}");

    let reset = http(&admin, "POST", "/reset_counters", "", "");
    assert_eq!(body(&reset), "OK\n");
    assert!(
        body(&http_get(&admin, "/stats?filter=downstream_rq_total", ""))
            .contains("http.ingress_http.downstream_rq_total: 0\n")
    );

    // `/quitquitquit`: OK, then the process exits 0.
    assert_eq!(body(&http(&admin, "POST", "/quitquitquit", "", "")), "OK\n");
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = running.0.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "still running 10 s after /quitquitquit");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status}");
}

#[test]
fn process_logs_take_envoys_format_and_path() {
    let dir = temp_dir("logs");
    let log = dir.join("wasmproxy.log");
    let config = config(&dir, upstream());
    let (running, addr, _) =
        serve_with(&config, &["--log-level", "info", "--log-format", "%l|%n|%v", "--log-path", log.to_str().unwrap()]);
    assert!(http_get(&addr, "/direct", "").starts_with("HTTP/1.1 200"));
    drop(running);
    let text = std::fs::read_to_string(&log).unwrap();
    // The plugin's `on_configure` log line, as Envoy prints it with this format.
    assert!(text.lines().any(|l| l.starts_with("info|wasm|wasm log talk_demo_root talk_demo_vm: ")), "{text}");
    assert!(text.lines().any(|l| l.starts_with("info|main|listener main on 127.0.0.1:")), "{text}");

    // A level Envoy does not know is refused by name.
    let out = common::wasmproxy().args(["-c", "missing.yaml", "--log-level", "bogus"]).output().unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("--log-level \"bogus\""), "{out:?}");
}
