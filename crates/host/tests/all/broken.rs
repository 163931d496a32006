//! Hand-made modules that break the ABI on purpose: the host refuses or survives each.

use std::sync::Arc;
use std::time::{Duration, Instant};

use wasmproxy_host::abi::{FilterHeadersStatus, StreamType};
use wasmproxy_host::{
    Compiler, EngineConfig, LoadError, PluginConfig, StreamAction, VmError, VmFailureKind, WasmEngine,
};

use crate::support::*;

fn load_error(file: &str) -> String {
    match wat_module(engine(), file) {
        Err(e) => e.to_string(),
        Ok(_) => panic!("{file} loaded"),
    }
}

#[test]
fn modules_that_are_not_plugins_are_refused_with_the_reason() {
    assert_eq!(
        load_error("no_abi.wat"),
        "Wasm module no_abi.wat is not a Proxy-Wasm plugin: missing or unknown Proxy-Wasm ABI version \
         (it exports none of proxy_abi_version_0_1_0, proxy_abi_version_0_2_0, proxy_abi_version_0_2_1)"
    );
    assert_eq!(
        load_error("no_allocator.wat"),
        "Wasm module no_allocator.wat exports no allocator (malloc or proxy_on_memory_allocate)"
    );
    let unknown = load_error("unknown_import.wat");
    assert!(unknown.starts_with("Wasm module unknown_import.wat cannot be linked"), "{unknown}");
    assert!(unknown.contains("env::proxy_does_not_exist"), "{unknown}");
    let wrong = load_error("wrong_signature.wat");
    assert!(wrong.contains("env::proxy_log") && wrong.contains("incompatible"), "{wrong}");
    let err = wasmproxy_host::PluginModule::load(
        engine(),
        wasmproxy_host::ModuleSource::File("/nonexistent/plugin.wasm".into()),
    )
    .unwrap_err();
    assert!(matches!(err, LoadError::Read { .. }));
    assert!(err.to_string().starts_with("cannot read Wasm module /nonexistent/plugin.wasm"));
    let garbage = wasmproxy_host::PluginModule::load(
        engine(),
        wasmproxy_host::ModuleSource::Bytes { name: "garbage.wasm".into(), bytes: b"\0asm\x01\0\0\0garbage".to_vec() },
    )
    .unwrap_err();
    assert!(garbage.to_string().starts_with("Wasm module garbage.wasm cannot be compiled"), "{garbage}");
}

#[test]
fn abi_0_1_0_plugins_get_two_argument_callbacks_and_old_semantics() {
    let module = wat_module(engine(), "abi_0_1_0.wat").unwrap();
    assert_eq!(module.abi_version(), wasmproxy_host::abi::AbiVersion::V0_1_0);
    let setup =
        Setup { plugin_config: "plugin-config-bytes".into(), vm_config: "vm-config".into(), ..Default::default() };
    let mut h = Harness::start(&module, setup);
    assert_eq!(
        h.take_logs(),
        vec!["_initialize", "main", "plugin-config-bytes"],
        "start-up, then proxy_get_configuration in on_configure"
    );
    let ctx = h.http_stream(GET);
    assert_eq!(h.vm.on_request_headers(ctx, false).unwrap(), FilterHeadersStatus::StopAllIterationAndWatermark);
    assert_eq!(h.take_logs(), vec!["missing header: OK and empty"]);
    assert_eq!(
        h.vm.take_actions(),
        vec![(ctx, StreamAction::Continue(StreamType::HttpRequest)), (ctx, StreamAction::ClearRouteCache)]
    );
    h.vm.stream(ctx).unwrap().response_headers = Some(wasmproxy_host::Headers::from_pairs([(":status", "200")]));
    assert_eq!(
        h.vm.on_response_headers(ctx, false).unwrap(),
        FilterHeadersStatus::Continue,
        "2-argument response callback"
    );
    assert_eq!(h.vm.take_actions(), vec![(ctx, StreamAction::Continue(StreamType::HttpResponse))]);
}

#[test]
fn bad_pointers_get_invalid_memory_access_and_the_vm_lives_on() {
    let module = wat_module(engine(), "bad_pointers.wat").unwrap();
    let mut h = Harness::start(&module, Setup { vm_config: "non-empty".into(), ..Default::default() });
    let ctx = h.http_stream(GET);
    assert_eq!(h.vm.on_request_headers(ctx, false).unwrap(), FilterHeadersStatus::Continue);
    assert_eq!(h.take_logs(), ["06", "06", "06", "06", "06", "06", "06", "06", "06", "06", "06", "21"]);
    assert_eq!(h.vm.on_request_headers(ctx, false).unwrap(), FilterHeadersStatus::Continue, "still alive");
    assert!(h.vm.failure().is_none());
}

/// A plugin built with DWARF (the Rust SDK's, trapping in its request headers callback):
/// the backtrace names the function, its source file and line.
#[test]
fn a_trap_in_a_module_with_dwarf_shows_files_and_lines() {
    let module = load(engine(), "debug_trap.wasm");
    let mut h = Harness::start(&module, Setup::default());
    let ctx = h.http_stream(GET);
    let Err(VmError::Failed(f)) = h.vm.on_request_headers(ctx, false) else { panic!("no failure") };
    assert_eq!(f.kind, VmFailureKind::Trap);
    let first = f.backtrace.lines().find(|l| l.contains("trap_here")).unwrap_or_default();
    assert!(first.contains("debug_trap"), "{}", f.backtrace);
    assert!(f.backtrace.contains("debug_trap/src/lib.rs:26:5"), "{}", f.backtrace);
    let report =
        wasmproxy_host::inspect(engine(), "debug_trap.wasm", &std::fs::read(plugin_path("debug_trap.wasm")).unwrap())
            .unwrap();
    assert!(report.dwarf);
    assert_eq!(report.sdk.as_deref(), Some("Rust, proxy-wasm (the Rust SDK)"));
    assert!(report.missing.is_empty(), "{:?}", report.missing);
}

fn stream_of(engine: &WasmEngine, file: &str) -> (Harness, u32) {
    let module = wat_module(engine, file).unwrap();
    let mut h = Harness::start(&module, Setup::default());
    let ctx = h.http_stream(GET);
    (h, ctx)
}

#[test]
fn a_trap_fails_only_that_vm_with_a_symbolized_backtrace() {
    let (mut h, ctx) = stream_of(engine(), "trap.wat");
    let Err(VmError::Failed(f)) = h.vm.on_request_headers(ctx, false) else { panic!("no failure") };
    assert_eq!(f.kind, VmFailureKind::Trap);
    assert!(f.message.contains("unreachable"), "{}", f.message);
    assert!(f.backtrace.contains("deep_in_the_plugin"), "{}", f.backtrace);
    // Another VM of the same module is unaffected.
    let (mut other, other_ctx) = stream_of(engine(), "trap.wat");
    assert!(other.vm.create_context(other.root, wasmproxy_host::ContextKind::Http).is_ok());
    assert!(other.vm.failure().is_none());
    let _ = other_ctx;
}

#[test]
fn an_endless_loop_is_stopped_at_the_deadline() {
    // Baseline code (Winch) checks the deadline as optimized code does.
    for compiler in [Compiler::Optimizing, Compiler::Tiered] {
        let engine = WasmEngine::new(EngineConfig {
            callback_deadline: Duration::from_millis(100),
            pooling_instances: Some(4),
            compiler,
            ..Default::default()
        })
        .unwrap();
        let (mut h, ctx) = stream_of(&engine, "endless_loop.wat");
        assert_eq!(h.vm.module().is_optimized(), compiler == Compiler::Optimizing);
        let started = Instant::now();
        let Err(VmError::Failed(f)) = h.vm.on_request_headers(ctx, false) else { panic!("no failure") };
        let took = started.elapsed();
        assert_eq!(f.kind, VmFailureKind::Deadline);
        assert!(f.message.contains("deadline of 100ms"), "{}", f.message);
        assert!(took < Duration::from_secs(30), "stopped (took {took:?})");
        assert_eq!(h.rec.borrow().failures.len(), 1);
    }
}

#[test]
fn an_sdk_plugin_stuck_in_a_loop_is_stopped_too() {
    let engine = WasmEngine::new(EngineConfig {
        callback_deadline: Duration::from_millis(100),
        pooling_instances: Some(4),
        ..Default::default()
    })
    .unwrap();
    let module = load(&engine, "probe.wasm");
    let config = serde_json::json!({"phases": {"request_headers": [["loop"]]}}).to_string();
    let mut h = Harness::start(&module, Setup { plugin_config: config, ..Default::default() });
    let ctx = h.http_stream(GET);
    let Err(VmError::Failed(f)) = h.vm.on_request_headers(ctx, false) else { panic!("no failure") };
    assert_eq!(f.kind, VmFailureKind::Deadline);
}

#[test]
fn a_memory_bomb_is_stopped_at_the_cap() {
    // Pooled and on-demand memory; optimized and baseline code.
    for (pooling, compiler) in [(Some(4), Compiler::Optimizing), (None, Compiler::Optimizing), (None, Compiler::Tiered)]
    {
        let engine = WasmEngine::new(EngineConfig {
            memory_limit_bytes: 64 << 20,
            pooling_instances: pooling,
            compiler,
            ..Default::default()
        })
        .unwrap();
        let (mut h, ctx) = stream_of(&engine, "memory_bomb.wat");
        let Err(VmError::Failed(f)) = h.vm.on_request_headers(ctx, false) else { panic!("no failure") };
        assert_eq!(f.kind, VmFailureKind::MemoryLimit, "{f}");
        assert!(h.vm.memory_size() <= 64 << 20, "{}", h.vm.memory_size());
        // The same with a real SDK plugin allocating until it cannot.
        let module = load(&engine, "probe.wasm");
        let config = serde_json::json!({"phases": {"request_headers": [["alloc_bomb"]]}}).to_string();
        let mut h = Harness::start(&module, Setup { plugin_config: config, ..Default::default() });
        let ctx = h.http_stream(GET);
        let Err(VmError::Failed(f)) = h.vm.on_request_headers(ctx, false) else { panic!("no failure") };
        assert_eq!(f.kind, VmFailureKind::MemoryLimit, "{f}");
    }
}

#[test]
fn start_up_may_only_log_and_use_wasi() {
    let module = wat_module(engine(), "restricted_start.wat").unwrap();
    let err = Harness::vm(&module, &Setup::default()).err().expect("start-up must fail");
    let VmError::Failed(f) = err else { panic!("{err:?}") };
    assert_eq!(f.kind, VmFailureKind::StartFailed);
    assert!(f.message.contains("restricted_callback: proxy_get_property"), "{}", f.message);
}

#[test]
fn wasi_commands_may_end_start_with_exit_zero() {
    let module = wat_module(engine(), "wasi_command.wat").unwrap();
    let mut h = Harness::vm(&module, &Setup::default()).unwrap();
    h.root = h.vm.create_root_context(Arc::new(PluginConfig::default())).unwrap();
    let ctx = h.http_stream(GET);
    h.vm.on_request_headers(ctx, false).unwrap();
    assert_eq!(h.take_logs(), vec!["started", "headers after _start"]);
}

#[test]
fn non_spec_callbacks_of_the_cpp_and_assemblyscript_sdks() {
    let module = wat_module(engine(), "cpp_sdk_extras.wat").unwrap();
    let mut h = Harness::start(&module, Setup { plugin_config: "ok".into(), ..Default::default() });
    let root = h.root;
    let two = Arc::new(PluginConfig { configuration: b"ok".to_vec(), ..Default::default() });
    let three = Arc::new(PluginConfig { configuration: b"bad".to_vec(), ..Default::default() });
    assert!(h.vm.validate_configuration(root, two).unwrap());
    assert!(!h.vm.validate_configuration(root, three).unwrap());
    let ctx = h.http_stream(GET);
    h.vm.on_request_metadata(ctx, 1).unwrap();
    h.vm.on_response_metadata(ctx, 1).unwrap();
    let logs = std::mem::take(&mut h.rec.borrow_mut().logs);
    let messages: Vec<&str> = logs.iter().map(|l| l.2.as_str()).collect();
    assert_eq!(
        messages,
        [
            "validate_configuration",
            "validate_configuration",
            "request_metadata",
            "stdout via wasi_unstable",
            "response_metadata"
        ]
    );
    assert_eq!(logs[3].0, wasmproxy_host::abi::LogLevel::Info);
}

#[test]
fn the_wasi_surface_go_and_tinygo_use_answers_as_documented() {
    let module = wat_module(engine(), "wasi_surface.wat").unwrap();
    let mut h = Harness::start(&module, Setup { env: vec![("K".into(), "V".into())], ..Default::default() });
    h.vm.on_tick(h.root).unwrap();
    assert_eq!(
        h.take_logs(),
        // args, environ, clock_res, monotonic, bad clock, yield, poll, fdstat(1), fdstat(3),
        // prestat, path_open, fd_read, fd_seek, fd_close, random, poll events, fdstat type
        ["00", "00", "00", "00", "58", "00", "00", "00", "08", "08", "44", "52", "00", "00", "00", "01", "02"]
    );
}
