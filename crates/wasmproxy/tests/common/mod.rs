//! Helpers the binary's tests share: run `wasmproxy` on a config, talk HTTP/1.1 to it.

#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

pub fn wasmproxy() -> Command {
    Command::new(env!("CARGO_BIN_EXE_wasmproxy"))
}

/// An example's config with every port 0, in a temp dir beside a copy of its plugin.
pub fn example_on_port_zero(name: &str) -> PathBuf {
    let example = repo().join("examples").join(name);
    let dir = std::env::temp_dir().join(format!("wasmproxy-cli-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(example.join(format!("{name}.wasm")), dir.join(format!("{name}.wasm"))).unwrap();
    let yaml = std::fs::read_to_string(example.join("envoy.yaml")).unwrap();
    let yaml = yaml.replace("port_value: 10000", "port_value: 0").replace("port_value: 9901", "port_value: 0");
    // The example names its plugin relative to the repository's root; the copy is here.
    let yaml =
        yaml.replace(&format!("examples/{name}/{name}.wasm"), &dir.join(format!("{name}.wasm")).display().to_string());
    let path = dir.join("envoy.yaml");
    std::fs::write(&path, yaml).unwrap();
    path
}

/// Starts the binary on a config; returns it with the addresses it printed (listener, admin).
pub fn serve(config: &std::path::Path) -> (Running, String, Option<String>) {
    serve_with(config, &["--log-level", "warn"])
}

/// [`serve`] with these arguments after `-c CONFIG --concurrency 2 --wasm-compiler optimizing`
/// (optimized code before serving, so that VM counts and plugin state never depend on
/// whether the compile cache was warm; `--wasm-compiler tiered` in `args` undoes it).
pub fn serve_with(config: &std::path::Path, args: &[&str]) -> (Running, String, Option<String>) {
    let wants_admin = std::fs::read_to_string(config).unwrap().contains("admin:");
    let mut child = wasmproxy()
        .args(["-c", config.to_str().unwrap(), "--concurrency", "2", "--wasm-compiler", "optimizing"])
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = BufReader::new(child.stderr.take().unwrap());
    let running = Running(child);
    let (mut listener, mut admin) = (None, None);
    let mut lines = stderr.lines();
    for line in lines.by_ref() {
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
    // The rest of its stderr goes on being read (a closed pipe would fail its writes),
    // into the test's output, shown if the test fails.
    std::thread::spawn(move || {
        for line in lines.map_while(Result::ok) {
            eprintln!("wasmproxy: {line}");
        }
    });
    (running, listener.expect("the server printed its listener address"), admin)
}

/// The running binary, killed when dropped.
pub struct Running(pub Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A GET over a new connection; the whole response as text.
pub fn http_get(addr: &str, path: &str, headers: &str) -> String {
    http(addr, "GET", path, headers, "")
}

/// A request over a new connection (closed after it); the whole response as text.
pub fn http(addr: &str, method: &str, path: &str, headers: &str, body: &str) -> String {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let length = if body.is_empty() { String::new() } else { format!("Content-Length: {}\r\n", body.len()) };
    write!(stream, "{method} {path} HTTP/1.1\r\nHost: example.com\r\n{headers}{length}Connection: close\r\n\r\n{body}")
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    response
}

/// The body of a response read by [`http`].
pub fn body(response: &str) -> &str {
    response.split_once("\r\n\r\n").map_or("", |(_, b)| b)
}

/// An Envoy bootstrap for these tests: the admin on port 0, then `top` (e.g.
/// `stats_flush_interval`, `layered_runtime`), one listener `main` on port 0 whose
/// connection manager (`stat_prefix`, then the `hcm` lines) has `routes` (YAML list items)
/// and `filters` before the router, and `clusters` (YAML list items).
pub fn bootstrap(top: &str, stat_prefix: &str, hcm: &str, routes: &str, filters: &str, clusters: &str) -> String {
    let clusters = if clusters.is_empty() { String::new() } else { format!("  clusters:\n{clusters}") };
    format!(
        r#"admin:
  address: {{ socket_address: {{ address: 127.0.0.1, port_value: 0 }} }}
{top}static_resources:
  listeners:
  - name: main
    address: {{ socket_address: {{ address: 127.0.0.1, port_value: 0 }} }}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: {stat_prefix}
{hcm}          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
{routes}          http_filters:
{filters}          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
{clusters}"#
    )
}

/// A Wasm HTTP filter list item running the plugin at `path` (its root id `<name>_root`,
/// its VM id `<name>_vm`), with a StringValue configuration and `extra` lines of
/// `PluginConfig` (e.g. a failure policy): the conformance harness's, for a file anywhere.
pub fn wasm_filter(name: &str, path: &std::path::Path, configuration: &str, extra: &str) -> String {
    assert!(path.exists(), "{} is missing: run scripts/build-plugins.sh", path.display());
    let (dir, file) = (path.parent().unwrap(), path.file_name().unwrap().to_str().unwrap());
    wasmproxy_conformance::config::wasm_filter(name, file, configuration, extra)
        .replace("@PLUGINS@", dir.to_str().unwrap())
}

/// A STATIC cluster list item with one endpoint on 127.0.0.1.
pub fn cluster(name: &str, port: u16) -> String {
    format!(
        r#"  - name: {name}
    type: STATIC
    connect_timeout: 1s
    load_assignment:
      cluster_name: {name}
      endpoints:
      - lb_endpoints:
        - endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {port} }} }} }}
"#
    )
}

/// Writes `yaml` to a fresh temporary directory of its own, named after `name`.
pub fn write_config(name: &str, yaml: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("wasmproxy-test-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("envoy.yaml");
    std::fs::write(&path, yaml).unwrap();
    path
}
