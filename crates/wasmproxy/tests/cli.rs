//! The binary as a user runs it: `-c envoy.yaml` serving real requests, `--mode validate`,
//! and `plugin-run` on the README's example.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{example_on_port_zero, http_get, repo, serve, wasmproxy};

#[test]
fn serves_the_example_config_with_its_plugin() {
    let config = example_on_port_zero("header_filter");
    let (_running, addr, _) = serve(&config);
    let response = http_get(&addr, "/", "x-user: alice\r\n");
    assert!(response.starts_with("HTTP/1.1 200 OK\r\n"), "{response}");
    let lower = response.to_ascii_lowercase();
    for expected in
        ["x-wasm-filter: rust", "x-greeting: hello from wasmproxy", "x-request-header: alice", "server: envoy"]
    {
        assert!(lower.contains(expected), "missing {expected:?} in {response}");
    }
    assert!(response.ends_with("hello from wasmproxy\n"), "{response}");
}

#[test]
fn the_talk_demo_counts_hello_requests_on_the_admin_port() {
    let config = example_on_port_zero("talk_demo");
    let (_running, addr, admin) = serve(&config);
    let admin = admin.expect("the admin address was printed");
    let response = http_get(&addr, "/", "hello: world\r\n");
    assert!(response.starts_with("HTTP/1.1 200 OK\r\n"), "{response}");
    assert!(response.contains("x-wasm-demo: hello from a plugin\r\n"), "{response}");
    assert!(response.contains("x-powered-by: proxy-wasm\r\n"), "{response}");
    assert!(response.ends_with("hello world\n"), "{response}");
    http_get(&addr, "/", "");
    http_get(&addr, "/", "hello: again\r\n");
    let prometheus = http_get(&admin, "/stats/prometheus", "");
    assert!(prometheus.contains("# TYPE hello_header_counter counter\nhello_header_counter{} 2\n"), "{prometheus}");
    let stats = http_get(&admin, "/stats", "");
    assert!(stats.contains("wasmcustom.hello_header_counter: 2\n"), "{stats}");
    assert!(http_get(&admin, "/ready", "").ends_with("\r\n\r\nLIVE\n"));
    assert!(http_get(&admin, "/nope", "").starts_with("HTTP/1.1 404"));
}

#[test]
fn a_first_start_serves_on_baseline_code_and_moves_to_optimized_code() {
    let config = example_on_port_zero("talk_demo");
    let cache = config.with_file_name("empty-cache");
    let _ = std::fs::remove_dir_all(&cache);
    let args = ["--log-level", "warning", "--wasm-compiler", "tiered", "--wasm-cache-dir", cache.to_str().unwrap()];
    let (_running, addr, admin) = common::serve_with(&config, &args);
    let admin = admin.expect("the admin address was printed");
    let created = || {
        let stats = http_get(&admin, "/stats?filter=runtime.v8.created", "");
        stats.lines().find_map(|l| l.strip_prefix("wasm.envoy.wasm.runtime.v8.created: ")?.parse::<u64>().ok())
    };
    // Each worker's VM moves once (two workers): the plugin answers throughout, and its
    // counter (the host keeps metrics) counts every request across the move.
    let (mut sent, started) = (0, std::time::Instant::now());
    while created() != Some(4) && started.elapsed() < std::time::Duration::from_secs(120) {
        let response = http_get(&addr, "/", "hello: world\r\n");
        assert!(response.contains("x-wasm-demo: hello from a plugin\r\n"), "{response}");
        sent += 1;
    }
    assert_eq!(created(), Some(4));
    let prometheus = http_get(&admin, "/stats/prometheus", "");
    assert!(prometheus.contains(&format!("hello_header_counter{{}} {sent}\n")), "{sent}: {prometheus}");
    assert_eq!(std::fs::read_dir(&cache).unwrap().count(), 1, "the optimized code is cached");
}

#[test]
fn validate_mode_says_ok_or_names_what_is_wrong() {
    for name in ["header_filter", "talk_demo", "dynamic_config"] {
        let example = repo().join("examples").join(name).join("envoy.yaml");
        // From the repository's root, where the examples' relative plugin paths lead.
        let out = wasmproxy()
            .current_dir(repo())
            .args(["--mode", "validate", "-c", example.to_str().unwrap()])
            .output()
            .unwrap();
        assert!(out.status.success(), "{name}: {}", String::from_utf8_lossy(&out.stderr));
        assert_eq!(String::from_utf8_lossy(&out.stdout), format!("configuration '{}' OK\n", example.display()));
    }

    let bad = std::env::temp_dir().join(format!("wasmproxy-bad-{}.yaml", std::process::id()));
    std::fs::write(
        &bad,
        "static_resources:\n  listeners: []\n  clusters:\n  - name: c\n    type: STATIC\n    bogus_field: 1\n",
    )
    .unwrap();
    let out = wasmproxy().args(["--mode", "validate", "-c", bad.to_str().unwrap()]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("static_resources.clusters[0].bogus_field"), "{stderr}");
    let _ = std::fs::remove_file(bad);
}

#[test]
fn a_relative_plugin_path_is_the_working_directorys_and_validate_reads_it() {
    // The configuration elsewhere; the plugin named relative to the repository's root.
    let dir = std::env::temp_dir().join(format!("wasmproxy-relative-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let yaml = std::fs::read_to_string(repo().join("examples/header_filter/envoy.yaml")).unwrap();
    let config = dir.join("envoy.yaml");
    std::fs::write(&config, yaml).unwrap();
    let validate = |cwd: &std::path::Path| {
        wasmproxy().current_dir(cwd).args(["--mode", "validate", "-c", config.to_str().unwrap()]).output().unwrap()
    };
    let at_root = validate(&repo());
    assert!(at_root.status.success(), "{}", String::from_utf8_lossy(&at_root.stderr));
    // From the configuration's own directory the path leads nowhere: Envoy's answer.
    let beside = validate(&dir);
    assert_eq!(beside.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&beside.stderr);
    assert!(stderr.contains("Invalid path: examples/header_filter/header_filter.wasm"), "{stderr}");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn envoys_command_line_is_taken_whole() {
    let example = repo().join("examples/header_filter/envoy.yaml");
    let dir = std::env::temp_dir().join(format!("wasmproxy-flags-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (admin_file, base_id_file) = (dir.join("admin.txt"), dir.join("base-id.txt"));
    // The example with an admin port merged in from --config-yaml, every port 0; started
    // whole (`init_only`), then the process exits.
    let config = dir.join("envoy.yaml");
    let yaml = std::fs::read_to_string(&example).unwrap().replace("port_value: 10000", "port_value: 0");
    std::fs::write(&config, yaml).unwrap();
    let out = wasmproxy()
        .current_dir(repo())
        .args(["-c", config.to_str().unwrap(), "--mode", "init_only", "--disable-hot-restart"])
        .args(["--config-yaml", "admin: { address: { socket_address: { address: 127.0.0.1, port_value: 0 } } }"])
        .args(["--base-id", "7", "--base-id-path", base_id_file.to_str().unwrap()])
        .args(["--admin-address-path", admin_file.to_str().unwrap()])
        .args(["--file-flush-interval-msec=100", "--parent-shutdown-time-s", "5", "--enable-core-dump"])
        .args(["--service-cluster", "c1", "--service-node", "n1", "--service-zone", "z1"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("without effect here (no hot restart, ...): --parent-shutdown-time-s, --enable-core-dump"),
        "{stderr}"
    );
    assert_eq!(std::fs::read_to_string(&base_id_file).unwrap(), "7");
    let admin = std::fs::read_to_string(&admin_file).unwrap();
    assert!(admin.starts_with("127.0.0.1:") && !admin.ends_with(":0"), "{admin}");
    // --config-yaml alone is a whole bootstrap; an unknown flag is still refused.
    let alone = wasmproxy().args(["--mode", "validate", "--config-yaml", "static_resources: {}"]).output().unwrap();
    assert!(alone.status.success(), "{}", String::from_utf8_lossy(&alone.stderr));
    let unknown = wasmproxy().args(["-c", "x.yaml", "--no-such-flag"]).output().unwrap();
    assert_eq!(unknown.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("unknown option --no-such-flag"));
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn the_command_lines_node_names_win_over_the_bootstraps() {
    let config = example_on_port_zero("talk_demo");
    let (_running, _, admin) =
        common::serve_with(&config, &["--service-cluster", "c1", "--service-node", "n1", "--service-zone", "z1"]);
    let info = http_get(&admin.expect("admin"), "/server_info", "");
    for expected in ["\"id\": \"n1\"", "\"cluster\": \"c1\"", "\"zone\": \"z1\""] {
        assert!(info.contains(expected), "{expected} in {info}");
    }
}

#[test]
fn plugin_run_runs_the_readme_example() {
    let example = repo().join("examples/header_filter");
    let out = wasmproxy()
        .arg("plugin-run")
        .arg(example.join("header_filter.wasm"))
        .args(["--name", "hello", "--configuration-file"])
        .arg(example.join("config.json"))
        .args(["--request-header", "x-user: alice"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.starts_with("[debug] wasm log hello: header_filter: x-user=alice\n"), "{stdout}");
    assert!(stdout.contains("  x-request-header: alice\n"), "{stdout}");
}

/// `plugin-info` on a module of each SDK the repository builds with, and on one that
/// imports what wasmproxy lacks (it says which, and that it does not load).
#[test]
fn plugin_info_tells_the_sdk_memory_debug_info_and_missing_imports() {
    let info = |path: &std::path::Path| {
        let out = wasmproxy().arg("plugin-info").arg(path).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let plugins = repo().join("plugins/out");
    for (file, expected) in [
        (
            "debug_trap.wasm",
            &["written in: Rust, proxy-wasm (the Rust SDK)\n", "files and lines (DWARF)", "loads: yes"][..],
        ),
        (
            "header_filter.wasm",
            &["Proxy-Wasm ABI 0.2.1", "memory: 1 MiB at start, no maximum", "every import is provided"],
        ),
        ("as_header_filter.wasm", &["written in: AssemblyScript", "function indexes only (no name section)"]),
        ("go_header_filter.wasm", &["written in: Go (SDK not recognized)", "producers: language: Go "]),
    ] {
        let text = info(&plugins.join(file));
        for e in expected {
            assert!(text.contains(e), "{file}: {e} in {text}");
        }
    }
    let dir = std::env::temp_dir().join(format!("wasmproxy-plugin-info-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let module = dir.join("unknown_import.wasm");
    std::fs::write(&module, wat::parse_file(repo().join("plugins/wat/unknown_import.wat")).unwrap()).unwrap();
    let text = info(&module);
    let _ = std::fs::remove_dir_all(&dir);
    assert!(text.contains("not provided by wasmproxy: env.proxy_does_not_exist\n"), "{text}");
    assert!(text.contains("loads: no: "), "{text}");
}

#[test]
fn bad_arguments_are_explained() {
    let out = wasmproxy().args(["--concurrency", "two", "-c", "x.yaml"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--concurrency \"two\" is not a number"));
}

/// Starts the binary on `config` with `XDG_CACHE_HOME` at `cache_home` and `args`; returns
/// once it serves (then it is killed) and what it printed.
fn serve_once(config: &std::path::Path, cache_home: &std::path::Path, args: &[&str]) -> String {
    use std::io::BufRead;
    let mut child = wasmproxy()
        .args(["-c", config.to_str().unwrap(), "--concurrency", "1"])
        .args(args)
        .env("XDG_CACHE_HOME", cache_home)
        .stderr(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut printed = String::new();
    for line in std::io::BufReader::new(child.stderr.take().unwrap()).lines().map_while(Result::ok) {
        printed.push_str(&line);
        printed.push('\n');
        if line.starts_with("wasmproxy: listener ") {
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    printed
}

/// The `.cwasm` files under `dir` (recursively).
fn compiled(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    entries
        .flatten()
        .flat_map(|e| if e.path().is_dir() { compiled(&e.path()) } else { vec![e.path()] })
        .filter(|p| p.extension().is_some_and(|x| x == "cwasm"))
        .collect()
}

#[test]
fn compiled_plugins_are_cached_in_the_users_cache_directory_unless_told_otherwise() {
    let config = example_on_port_zero("header_filter");
    let home = std::env::temp_dir().join(format!("wasmproxy-cache-home-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&home);
    // Optimized code before serving: with tiered compiling it would be written a moment later.
    let optimizing = ["--wasm-compiler", "optimizing"];
    let printed = serve_once(&config, &home, &["--no-wasm-cache", "--wasm-compiler", "optimizing"]);
    assert!(compiled(&home).is_empty(), "--no-wasm-cache wrote {:?}\n{printed}", compiled(&home));
    let printed = serve_once(&config, &home, &optimizing);
    let cached = compiled(&home.join("wasmproxy"));
    assert_eq!(cached.len(), 1, "by default the compiled plugin goes to $XDG_CACHE_HOME/wasmproxy\n{printed}");
    let elsewhere = home.join("elsewhere");
    serve_once(&config, &home, &["--wasm-cache-dir", elsewhere.to_str().unwrap(), "--wasm-compiler", "optimizing"]);
    assert_eq!(compiled(&elsewhere).len(), 1, "--wasm-cache-dir moves it");
    let _ = std::fs::remove_dir_all(&home);
}
