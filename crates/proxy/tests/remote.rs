//! Modules by URL (`vm_config.code.remote`) against a real HTTP server through a real
//! cluster: fetched while the listener warms (with retries), checked against their sha256,
//! kept on disk and found there after a restart, refused when the sha256 differs, and
//! fetched when a control plane pushes a listener that needs one after start-up.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use serde_json::json;

use wasmproxy_conformance::upstream::hex_sha256;

use common::{
    answering, body, fresh_dir, get, http_listener, listener_addr, plugin, remote_module_config, start_cached, stat,
    until, upstream,
};

/// A server of one module at `/module.wasm` that answers 503 to its first `failures`
/// requests; the number of requests it got.
fn module_server(module: Vec<u8>, failures: usize) -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let count = Arc::new(AtomicUsize::new(0));
    let seen = count.clone();
    std::thread::spawn(move || {
        use std::io::{Read, Write};
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") {
                if stream.read(&mut byte).unwrap_or(0) == 0 {
                    break;
                }
                head.push(byte[0]);
            }
            let n = seen.fetch_add(1, Ordering::SeqCst);
            if n < failures {
                let _ = stream
                    .write_all(b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
                continue;
            }
            let _ = write!(stream, "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n", module.len());
            let _ = stream.write_all(&module);
        }
    });
    (addr, count)
}

/// The listener with its module from `http://modules.test/module.wasm` through the cluster
/// `modules` (at `modules`).
fn config(modules: SocketAddr, backend: SocketAddr, sha256: &str) -> String {
    let cluster = format!(
        "  - name: modules\n    load_assignment:\n      cluster_name: modules\n      endpoints: [{{ lb_endpoints: [{{ endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {} }} }} }} }}] }}]\n",
        modules.port()
    );
    let http_uri = r#"{ uri: "http://modules.test/module.wasm", cluster: modules, timeout: 5s }"#;
    remote_module_config(http_uri, sha256, "remote", backend, &cluster)
}

fn cache_dir(name: &str) -> PathBuf {
    fresh_dir(&format!("remote-{name}"))
}

#[test]
fn a_module_by_url_is_fetched_checked_cached_and_found_after_a_restart() {
    let module = std::fs::read(plugin("talk_demo.wasm")).unwrap();
    let sha = hex_sha256(&module);
    let backend = upstream("b");
    let (modules, requests) = module_server(module, 2);
    let cache = cache_dir("cached");

    // Start-up waits for the module, fetched on the third try.
    let server = start_cached(&config(modules, backend, &sha), &cache);
    let answer = get(http_listener(&server).expect("served once fetched"), "/x");
    assert!(body(&answer) == "b /x" && answer.contains("x-demo: remote"), "{answer}");
    assert_eq!(requests.load(Ordering::SeqCst), 3, "two 503s, then the module");
    assert_eq!(stat(&server, "wasm.remote_load_fetch_successes"), 1);
    assert_eq!(stat(&server, "wasm.remote_load_cache_misses"), 1);
    assert!(cache.join("remote").join(format!("{sha}.wasm")).exists());
    server.stop();

    // After a restart, with the module server gone, the disk cache has it.
    let nowhere = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let server = start_cached(&config(nowhere, backend, &sha), &cache);
    let answer = get(http_listener(&server).expect("served from the cache"), "/y");
    assert!(answer.contains("x-demo: remote"), "{answer}");
    assert_eq!(stat(&server, "wasm.remote_load_cache_hits"), 1);
    assert_eq!(stat(&server, "wasm.remote_load_fetch_successes"), 0);
    server.stop();
}

#[test]
fn a_module_whose_sha256_differs_is_refused_and_its_listener_not_served() {
    let module = std::fs::read(plugin("talk_demo.wasm")).unwrap();
    let (modules, requests) = module_server(module, 0);
    let cache = cache_dir("mismatch");
    let wrong = "0".repeat(64);
    let server = start_cached(&config(modules, upstream("b"), &wrong), &cache);
    assert!(http_listener(&server).is_none(), "no listener serves a module that is not the one named");
    assert_eq!(stat(&server, "wasm.remote_load_fetch_failures"), 1);
    assert_eq!(requests.load(Ordering::SeqCst), 1, "a wrong module is not fetched again");
    assert!(!cache.join("remote").join(format!("{wrong}.wasm")).exists());
    server.stop();
}

#[test]
fn a_listener_pushed_after_start_up_gets_its_module_by_url() {
    let module = std::fs::read(plugin("talk_demo.wasm")).unwrap();
    let sha = hex_sha256(&module);
    let (modules, _) = module_server(module, 0);
    let backend = answering(|_| "from backend".into());
    let plane = wasmproxy_conformance::control_plane::ControlPlane::start(0).unwrap();
    let cluster = |name: &str, addr: SocketAddr| {
        json!({
            "@type": "type.googleapis.com/envoy.config.cluster.v3.Cluster", "name": name, "type": "STATIC",
            "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [{"endpoint": {"address":
                {"socket_address": {"address": "127.0.0.1", "port_value": addr.port()}}}}]}]},
        })
    };
    let listener = |code: serde_json::Value| {
        json!({
            "@type": "type.googleapis.com/envoy.config.listener.v3.Listener", "name": "http",
            "address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}},
            "filter_chains": [{"filters": [{"name": "hcm", "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                "stat_prefix": "in",
                "route_config": {"virtual_hosts": [{"name": "all", "domains": ["*"], "routes": [
                    {"match": {"prefix": "/"}, "route": {"cluster": "backend"}}]}]},
                "http_filters": [
                    {"name": "wasm", "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
                        "config": {"name": "demo", "configuration": {"@type": "type.googleapis.com/google.protobuf.StringValue",
                            "value": "x-demo=pushed"}, "vm_config": {"code": code}}}},
                    {"name": "router", "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}},
                ],
            }}]}],
        })
    };
    let local = json!({"local": {"filename": plugin("talk_demo.wasm").display().to_string()}});
    let remote = json!({"remote": {"http_uri": {"uri": "http://modules.test/module.wasm", "cluster": "modules", "timeout": "5s"}, "sha256": sha}});
    let node = "proxy-remote";
    plane.set(node, "1", &[cluster("backend", backend), cluster("modules", modules), listener(local)]).unwrap();
    let yaml = wasmproxy_conformance::config::ads_bootstrap(node, "GRPC", &plane.xds_port.to_string());
    let server = start_cached(&yaml, &cache_dir("pushed"));
    let addr = || listener_addr(&server, "http").unwrap();
    assert!(get(addr(), "/a").contains("x-demo: pushed"));
    // The same plugin, its module now by URL: fetched, checked and served (Envoy 1.40
    // leaves such a module unfetched).
    plane.set(node, "2", &[cluster("backend", backend), cluster("modules", modules), listener(remote)]).unwrap();
    until(|| stat(&server, "wasm.remote_load_fetch_successes").to_string(), |n| n == "1");
    let answer = until(|| get(addr(), "/b"), |a| a.contains("x-demo: pushed") && body(a) == "from backend");
    assert!(answer.contains("x-demo: pushed"), "{answer}");
    assert_eq!(stat(&server, "listener_manager.lds.update_success"), 2);
    // A module that cannot be had (another sha256): the listener's last version serves on.
    let wrong = json!({"remote": {"http_uri": {"uri": "http://modules.test/module.wasm", "cluster": "modules", "timeout": "5s"}, "sha256": "1".repeat(64)}});
    plane.set(node, "3", &[cluster("backend", backend), cluster("modules", modules), listener(wrong)]).unwrap();
    until(|| stat(&server, "wasm.remote_load_fetch_failures").to_string(), |n| n == "1");
    assert_eq!(stat(&server, "wasm.remote_load_fetch_failures"), 1);
    assert!(get(addr(), "/c").contains("x-demo: pushed"));

    // With nack_on_code_cache_miss, a listener whose module is not cached is NACKed while
    // the module is fetched; pushed again, it is taken. (The same plugin with a custom
    // section more: another module, another sha256.)
    let mut other = std::fs::read(plugin("talk_demo.wasm")).unwrap();
    other.extend_from_slice(b"\x00\x05\x04test");
    let other_sha = hex_sha256(&other);
    let (others, _) = module_server(other, 0);
    let mut nacking = json!({"remote": {"http_uri": {"uri": "http://modules.test/module.wasm", "cluster": "others", "timeout": "5s"}, "sha256": other_sha}});
    let mut uncached = listener(nacking.take());
    uncached["filter_chains"][0]["filters"][0]["typed_config"]["http_filters"][0]["typed_config"]["config"]["vm_config"]
        ["nack_on_code_cache_miss"] = json!(true);
    let resources = [cluster("backend", backend), cluster("modules", modules), cluster("others", others), uncached];
    plane.set(node, "4", &resources).unwrap();
    until(|| stat(&server, "wasm.remote_load_fetch_successes").to_string(), |n| n == "2");
    let nack = plane.requests().into_iter().find(|r| {
        r["type_url"].as_str().unwrap().ends_with("Listener")
            && r["error_detail"].as_str().is_some_and(|e| e.contains("nack_on_code_cache_miss"))
    });
    assert!(nack.is_some(), "the listener was NACKed while its module was fetched");
    assert!(get(addr(), "/d").contains("x-demo: pushed"), "the last good listener serves");
    let rejected = stat(&server, "listener_manager.lds.update_rejected");
    assert!(rejected >= 1);
    plane.set(node, "5", &resources).unwrap();
    let version = || common::admin_get(&server, "/stats");
    let stats = until(version, |s| s.contains("listener_manager.lds.version_text: \"5\""));
    assert!(stats.contains("listener_manager.lds.version_text: \"5\""), "taken once its module is here");
    assert_eq!(stat(&server, "listener_manager.lds.update_rejected"), rejected);
    assert!(get(addr(), "/e").contains("x-demo: pushed"));
    server.stop();
}
