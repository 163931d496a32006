//! The binary as a user runs it: `-c envoy.yaml` serving real requests, `--mode validate`,
//! and `plugin-run` on the README's example.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn wasmproxy() -> Command {
    Command::new(env!("CARGO_BIN_EXE_wasmproxy"))
}

/// An example's config with every port 0, in a temp dir beside a copy of its plugin.
fn example_on_port_zero(name: &str) -> PathBuf {
    let example = repo().join("examples").join(name);
    let dir = std::env::temp_dir().join(format!("wasmproxy-cli-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(example.join(format!("{name}.wasm")), dir.join(format!("{name}.wasm"))).unwrap();
    let yaml = std::fs::read_to_string(example.join("envoy.yaml")).unwrap();
    let yaml = yaml.replace("port_value: 10000", "port_value: 0").replace("port_value: 9901", "port_value: 0");
    let path = dir.join("envoy.yaml");
    std::fs::write(&path, yaml).unwrap();
    path
}

/// Starts the binary on a config; returns it with the addresses it printed (listener, admin).
fn serve(config: &std::path::Path) -> (Running, String, Option<String>) {
    let wants_admin = std::fs::read_to_string(config).unwrap().contains("admin:");
    let mut child = wasmproxy()
        .args(["-c", config.to_str().unwrap(), "--concurrency", "2", "--log-level", "warn"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = BufReader::new(child.stderr.take().unwrap());
    let running = Running(child);
    let (mut listener, mut admin) = (None, None);
    for line in stderr.lines() {
        let line = line.unwrap();
        if let Some(rest) = line.strip_prefix("wasmproxy: listener main on ") {
            listener = Some(rest.to_string());
        } else if let Some(rest) = line.strip_prefix("wasmproxy: admin on ") {
            admin = Some(rest.to_string());
        }
        if listener.is_some() && (admin.is_some() || !wants_admin) {
            break;
        }
    }
    (running, listener.expect("the server printed its listener address"), admin)
}

struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn http_get(addr: &str, path: &str, headers: &str) -> String {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(stream, "GET {path} HTTP/1.1\r\nHost: example.com\r\n{headers}Connection: close\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    response
}

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
fn validate_mode_says_ok_or_names_what_is_wrong() {
    let example = repo().join("examples/header_filter/envoy.yaml");
    let out = wasmproxy().args(["--mode", "validate", "-c", example.to_str().unwrap()]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout), format!("configuration '{}' OK\n", example.display()));

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

#[test]
fn bad_arguments_are_explained() {
    let out = wasmproxy().args(["--concurrency", "two", "-c", "x.yaml"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--concurrency \"two\" is not a number"));
}
