//! The same header filter built three ways: with the Rust SDK, with the standard Go
//! toolchain (a WASI reactor with the Go runtime), and with the AssemblyScript SDK
//! (`malloc`, a start section, `wasi_unstable`): same configuration, same behaviour.

use wasmproxy_host::abi::{FilterHeadersStatus, LogLevel};
use wasmproxy_host::shared::MetricValue;
use wasmproxy_host::{EngineConfig, Headers, WasmEngine};

use crate::support::*;

fn run_header_filter(file: &str, language: &str) {
    // Its own engine, so the counter below counts only this test's requests.
    let engine = WasmEngine::new(EngineConfig { pooling_instances: Some(4), ..Default::default() }).unwrap();
    let module = load(&engine, file);
    let config = format!(
        r#"{{"request_header": "x-user", "response_headers": [["x-wasm-filter", "{language}"], ["x-greeting", "hi"]]}}"#
    );
    let mut h = Harness::start(&module, Setup { plugin_config: config, name: "hf", ..Default::default() });
    for (i, user) in ["alice", "bob", "carol"].iter().enumerate() {
        let ctx = h.vm.create_context(h.root, wasmproxy_host::ContextKind::Http).unwrap();
        let mut request: Vec<(&str, &str)> = GET[..3].to_vec();
        if i < 2 {
            request.push(("x-user", user));
        }
        h.vm.stream(ctx).unwrap().request_headers = Some(Headers::from_pairs(request));
        assert_eq!(h.vm.on_request_headers(ctx, true).unwrap(), FilterHeadersStatus::Continue);
        h.vm.stream(ctx).unwrap().response_headers = Some(Headers::from_pairs([(":status", "200")]));
        assert_eq!(h.vm.on_response_headers(ctx, true).unwrap(), FilterHeadersStatus::Continue);
        let response = h.vm.stream(ctx).unwrap().response_headers.take().unwrap();
        let expected_user = if i < 2 { *user } else { "-" };
        assert_eq!(
            response,
            Headers::from_pairs([
                (":status", "200"),
                ("x-wasm-filter", language),
                ("x-greeting", "hi"),
                ("x-request-header", expected_user)
            ]),
            "{file}"
        );
        h.vm.finish_stream(ctx).unwrap();
    }
    assert_eq!(engine.shared().metrics.value("header_filter_requests"), Some(MetricValue::Counter(3)), "{file}");
    let debug: Vec<String> =
        // The AssemblyScript SDK logs its own bookkeeping at DEBUG too.
        h.rec.borrow().logs.iter().filter(|l| l.0 == LogLevel::Debug && l.2.starts_with("header_filter:")).map(|l| l.2.clone()).collect();
    assert_eq!(
        debug,
        ["header_filter: x-user=alice", "header_filter: x-user=bob", "header_filter: x-user=-"],
        "{file}"
    );
    assert_eq!(h.vm.context_count(), 1, "{file}: stream contexts deleted");
}

#[test]
fn rust_sdk_header_filter() {
    run_header_filter("header_filter.wasm", "rust");
}

#[test]
fn go_header_filter_runs_on_the_go_runtime() {
    run_header_filter("go_header_filter.wasm", "go");
}

#[test]
fn assemblyscript_header_filter() {
    run_header_filter("as_header_filter.wasm", "assemblyscript");
}

#[test]
fn go_module_declares_abi_0_2_0_and_is_refused_a_bad_configuration() {
    let module = load(engine(), "go_header_filter.wasm");
    assert_eq!(module.abi_version(), wasmproxy_host::abi::AbiVersion::V0_2_0);
    let mut h = Harness::vm(&module, &Setup::default()).unwrap();
    let bad = wasmproxy_host::PluginConfig {
        name: "go-hf".into(),
        configuration: b"{\"request_header\": 5}".to_vec(),
        ..Default::default()
    };
    let err = h.vm.create_root_context(std::sync::Arc::new(bad)).unwrap_err();
    assert_eq!(err.to_string(), "plugin \"go-hf\": on_configure returned false (the plugin refused its configuration)");
    let errors: Vec<String> =
        h.rec.borrow().logs.iter().filter(|l| l.0 == LogLevel::Error).map(|l| l.2.clone()).collect();
    assert!(errors.iter().any(|e| e.starts_with("header_filter: bad configuration:")), "{errors:?}");
}
