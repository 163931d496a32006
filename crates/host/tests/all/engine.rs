//! The engine: compile once, cache on disk, share modules across threads.

use std::sync::Arc;

use wasmproxy_host::{Compiler, EngineConfig, ModuleSource, PluginModule, WasmEngine};

use crate::support::*;

#[test]
fn compiled_modules_are_cached_on_disk_and_reused() {
    let dir = std::env::temp_dir().join(format!("wasmproxy-cache-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let config = EngineConfig { cache_dir: Some(dir.clone()), pooling_instances: Some(4), ..Default::default() };
    let first = WasmEngine::new(config.clone()).unwrap();
    let module = PluginModule::load(&first, ModuleSource::File(plugin_path("header_filter.wasm"))).unwrap();
    assert!(!module.loaded_from_disk_cache());
    let files: Vec<_> =
        std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    assert_eq!(files.len(), 1);
    assert!(files[0].starts_with(&module.sha256_hex()) && files[0].ends_with(".cwasm"), "{files:?}");
    // The same process does not even look at the disk again.
    let again = PluginModule::load(&first, ModuleSource::File(plugin_path("header_filter.wasm"))).unwrap();
    assert!(!again.loaded_from_disk_cache());
    // A new engine (a restart) takes it from disk, and it works.
    let second = WasmEngine::new(config).unwrap();
    let cached = PluginModule::load(&second, ModuleSource::File(plugin_path("header_filter.wasm"))).unwrap();
    assert!(cached.loaded_from_disk_cache());
    let mut h = Harness::start(&cached, Setup::default());
    let ctx = h.http_stream(GET);
    h.vm.on_request_headers(ctx, false).unwrap();
    // A corrupt entry is ignored and replaced.
    std::fs::write(dir.join(&files[0]), b"not a module").unwrap();
    let third =
        WasmEngine::new(EngineConfig { cache_dir: Some(dir.clone()), pooling_instances: None, ..Default::default() })
            .unwrap();
    let recompiled = PluginModule::load(&third, ModuleSource::File(plugin_path("header_filter.wasm"))).unwrap();
    assert!(!recompiled.loaded_from_disk_cache());
    assert_ne!(std::fs::read(dir.join(&files[0])).unwrap(), b"not a module", "rewritten");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn tiered_compilation_starts_on_baseline_code_and_caches_optimized_code() {
    let dir = std::env::temp_dir().join(format!("wasmproxy-tiered-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let config = EngineConfig {
        cache_dir: Some(dir.clone()),
        pooling_instances: Some(4),
        compiler: Compiler::Tiered,
        ..Default::default()
    };
    let engine = WasmEngine::new(config.clone()).unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    engine.on_optimized(Arc::new(move |sha256: &str| {
        let _ = tx.send(sha256.to_string());
    }));
    let baseline = PluginModule::load(&engine, ModuleSource::File(plugin_path("header_filter.wasm"))).unwrap();
    assert!(!baseline.is_optimized());
    // Baseline code serves a stream as optimized code does.
    let run = |module: &Arc<PluginModule>| {
        let mut h = Harness::start(module, Setup::default());
        let ctx = h.http_stream(GET);
        h.vm.on_request_headers(ctx, true).unwrap();
        h.vm.finish_stream(ctx).unwrap();
        h.rec.borrow().logs.clone()
    };
    let logged = run(&baseline);
    // The listener hears of it once the background compile is done; the cache has it.
    assert_eq!(rx.recv_timeout(std::time::Duration::from_secs(120)).unwrap(), baseline.sha256_hex());
    let optimized = baseline.optimized().expect("optimized code");
    assert!(optimized.is_optimized() && optimized.optimized().is_none());
    assert_eq!(run(&optimized), logged);
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1);
    // Loaded again in this process, or after a restart, the module comes optimized at once.
    let again = PluginModule::load(&engine, ModuleSource::File(plugin_path("header_filter.wasm"))).unwrap();
    assert!(again.is_optimized());
    let restarted = WasmEngine::new(config).unwrap();
    let cached = PluginModule::load(&restarted, ModuleSource::File(plugin_path("header_filter.wasm"))).unwrap();
    assert!(cached.is_optimized() && cached.loaded_from_disk_cache());
    assert!(rx.try_recv().is_err(), "nothing compiled twice");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn one_module_serves_vms_on_many_threads() {
    let module = load(engine(), "header_filter.wasm");
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let module: Arc<PluginModule> = module.clone();
            std::thread::spawn(move || {
                let mut h = Harness::start(&module, Setup::default());
                for _ in 0..50 {
                    let ctx = h.http_stream(GET);
                    h.vm.on_request_headers(ctx, true).unwrap();
                    h.vm.finish_stream(ctx).unwrap();
                }
                h.vm.context_count()
            })
        })
        .collect();
    for t in threads {
        assert_eq!(t.join().unwrap(), 1);
    }
}

#[test]
fn the_pooling_allocator_is_used_and_instances_are_recycled() {
    let engine = WasmEngine::new(EngineConfig { pooling_instances: Some(2), ..Default::default() }).unwrap();
    assert!(engine.is_pooling());
    let module = load(&engine, "header_filter.wasm");
    // More VMs over time than the pool has slots: dropped VMs give their slot back.
    for _ in 0..10 {
        let a = Harness::start(&module, Setup::default());
        let b = Harness::start(&module, Setup::default());
        drop((a, b));
    }
    // A third live VM does not fit in a pool of two: a clear error, not a crash.
    let _a = Harness::start(&module, Setup::default());
    let _b = Harness::start(&module, Setup::default());
    let err = Harness::vm(&module, &Setup::default()).err().expect("pool is full");
    assert!(err.to_string().contains("cannot instantiate"), "{err}");
}
