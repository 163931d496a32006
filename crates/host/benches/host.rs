//! Microbenchmarks of the host: a header round trip through a real plugin, a VM
//! instantiation from `InstancePre`, and a module load from the on-disk cache.
//!
//! Needs the test plugins: `scripts/build-plugins.sh`, then `cargo bench -p wasmproxy-host`.

use std::path::PathBuf;
use std::sync::Arc;

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use wasmproxy_host::{
    ContextKind, Embedder, EngineConfig, Headers, LogRecord, ModuleSource, PluginConfig, PluginModule, VmConfig,
    WasmEngine, WasmVm,
};

/// An embedder that drops plugin logs (the header filter logs at DEBUG on every request).
struct Quiet;

impl Embedder for Quiet {
    fn log(&mut self, _: &LogRecord<'_>) {}
}

fn plugin(file: &str) -> PathBuf {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../plugins/out").join(file);
    assert!(path.exists(), "{} is missing: run scripts/build-plugins.sh", path.display());
    path
}

fn started_vm(module: &Arc<PluginModule>) -> (WasmVm, u32) {
    let mut vm = WasmVm::new(module, VmConfig::default(), Box::new(Quiet)).expect("vm");
    let config = PluginConfig {
        configuration: br#"{"request_header": "x-user", "response_headers": [["x-wasm", "1"]]}"#.to_vec(),
        ..Default::default()
    };
    let root = vm.create_root_context(Arc::new(config)).expect("root");
    (vm, root)
}

fn benches(c: &mut Criterion) {
    let engine = WasmEngine::new(EngineConfig::default()).expect("engine");
    let module = PluginModule::load(&engine, ModuleSource::File(plugin("header_filter.wasm"))).expect("module");

    // The plugin reads `x-user` from the request headers (and counts the request), then
    // adds `x-wasm` and `x-request-header` to the response headers.
    let (mut vm, root) = started_vm(&module);
    let request =
        Headers::from_pairs([(":method", "GET"), (":path", "/"), (":authority", "example.com"), ("x-user", "alice")]);
    let response = Headers::from_pairs([(":status", "200"), ("content-length", "5")]);
    c.bench_function("http_headers_round_trip", |b| {
        b.iter(|| {
            let ctx = vm.create_context(root, ContextKind::Http).expect("ctx");
            vm.stream(ctx).expect("stream").request_headers = Some(request.clone());
            vm.on_request_headers(ctx, true).expect("request headers");
            vm.stream(ctx).expect("stream").response_headers = Some(response.clone());
            vm.on_response_headers(ctx, true).expect("response headers");
            vm.finish_stream(ctx).expect("finish");
        })
    });
    let ctx = vm.create_context(root, ContextKind::Http).expect("ctx");
    c.bench_function("on_request_headers_only", |b| {
        b.iter(|| {
            vm.stream(ctx).expect("stream").request_headers = Some(request.clone());
            vm.on_request_headers(ctx, false).expect("request headers");
        })
    });

    c.bench_function("vm_instantiate_and_start", |b| {
        b.iter(|| WasmVm::new(&module, VmConfig::default(), Box::new(Quiet)).expect("vm"))
    });

    let dir = std::env::temp_dir().join(format!("wasmproxy-bench-cache-{}", std::process::id()));
    let cached = EngineConfig { cache_dir: Some(dir.clone()), pooling_instances: Some(8), ..Default::default() };
    PluginModule::load(
        &WasmEngine::new(cached.clone()).expect("engine"),
        ModuleSource::File(plugin("header_filter.wasm")),
    )
    .expect("warm the cache");
    c.bench_function("module_load_from_disk_cache", |b| {
        b.iter_batched(
            || WasmEngine::new(cached.clone()).expect("engine"),
            |engine| {
                let m = PluginModule::load(&engine, ModuleSource::File(plugin("header_filter.wasm"))).expect("module");
                assert!(m.loaded_from_disk_cache());
                (engine, m)
            },
            BatchSize::PerIteration,
        )
    });
    c.bench_function("module_compile_uncached", |b| {
        b.iter_batched(
            || WasmEngine::new(EngineConfig { pooling_instances: Some(8), ..Default::default() }).expect("engine"),
            |engine| {
                (PluginModule::load(&engine, ModuleSource::File(plugin("header_filter.wasm"))).expect("module"), engine)
            },
            BatchSize::PerIteration,
        )
    });
    let _ = std::fs::remove_dir_all(dir);
}

#[allow(missing_docs)]
mod group {
    use super::*;
    criterion_group! {
        name = host;
        config = Criterion::default().sample_size(30).measurement_time(std::time::Duration::from_secs(3));
        targets = benches
    }
}
criterion_main!(group::host);
