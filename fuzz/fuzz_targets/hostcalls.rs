//! Hostcalls with arbitrary arguments: a plugin reads a program (the fuzz input) from its
//! request body and runs it: each step picks a hostcall and passes it arbitrary pointers,
//! lengths and enum values. The host must answer each with a status (or fail the VM
//! cleanly): never panic, never touch memory outside the VM.
#![no_main]

use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use wasmproxy_host::{
    ContextKind, Embedder, EngineConfig, Headers, ModuleSource, PluginConfig, PluginModule, VmConfig, WasmEngine,
    WasmVm,
};

/// Every hostcall of the ABI the host offers, by name, with its parameters (`i` i32,
/// `I` i64).
const HOSTCALLS: &[(&str, &str)] = &[
    ("proxy_log", "iii"),
    ("proxy_get_log_level", "i"),
    ("proxy_get_current_time_nanoseconds", "i"),
    ("proxy_set_tick_period_milliseconds", "i"),
    ("proxy_set_effective_context", "i"),
    ("proxy_done", ""),
    ("proxy_get_buffer_bytes", "iiiii"),
    ("proxy_set_buffer_bytes", "iiiii"),
    ("proxy_get_buffer_status", "iii"),
    ("proxy_get_header_map_pairs", "iii"),
    ("proxy_set_header_map_pairs", "iii"),
    ("proxy_get_header_map_size", "ii"),
    ("proxy_get_header_map_value", "iiiii"),
    ("proxy_add_header_map_value", "iiiii"),
    ("proxy_replace_header_map_value", "iiiii"),
    ("proxy_remove_header_map_value", "iii"),
    ("proxy_get_property", "iiii"),
    ("proxy_set_property", "iiii"),
    ("proxy_get_shared_data", "iiiii"),
    ("proxy_set_shared_data", "iiiii"),
    ("proxy_register_shared_queue", "iii"),
    ("proxy_resolve_shared_queue", "iiiii"),
    ("proxy_enqueue_shared_queue", "iii"),
    ("proxy_dequeue_shared_queue", "iii"),
    ("proxy_continue_stream", "i"),
    ("proxy_close_stream", "i"),
    ("proxy_send_local_response", "iiiiiiii"),
    ("proxy_http_call", "iiiiiiiiii"),
    ("proxy_grpc_call", "iiiiiiiiiiii"),
    ("proxy_grpc_stream", "iiiiiiiii"),
    ("proxy_grpc_send", "iiii"),
    ("proxy_grpc_cancel", "i"),
    ("proxy_grpc_close", "i"),
    ("proxy_get_status", "iii"),
    ("proxy_define_metric", "iiii"),
    ("proxy_increment_metric", "iI"),
    ("proxy_record_metric", "iI"),
    ("proxy_get_metric", "ii"),
    ("proxy_call_foreign_function", "iiiiii"),
];

/// Arguments per step (the most any hostcall takes).
const ARGS: usize = 12;

/// The plugin: a bump allocator, and `on_request_body`, which copies the body into its
/// memory and runs it as steps of (hostcall index % N, then 12 little-endian i32s).
fn module_wat() -> String {
    let mut imports = String::new();
    let mut callers = String::new();
    for (i, (name, params)) in HOSTCALLS.iter().enumerate() {
        let types: Vec<&str> = params.chars().map(|c| if c == 'I' { "i64" } else { "i32" }).collect();
        imports.push_str(&format!(
            "  (import \"env\" \"{name}\" (func $h{i} (param {}) (result i32)))\n",
            types.join(" ")
        ));
        let args: String = params
            .chars()
            .enumerate()
            .map(|(k, c)| {
                if c == 'I' { format!(" (i64.extend_i32_s (local.get {k}))") } else { format!(" (local.get {k})") }
            })
            .collect();
        callers.push_str(&format!("  (func $c{i} (type $step) (call $h{i}{args}))\n"));
    }
    // `proxy_done` takes nothing: its import has no params.
    let imports = imports.replace("(param ) ", "");
    let table: Vec<String> = (0..HOSTCALLS.len()).map(|i| format!("$c{i}")).collect();
    let params = "i32 ".repeat(ARGS);
    let loads: String = (0..ARGS).map(|k| format!(" (i32.load (i32.add (local.get $p) (i32.const {})))", 1 + 4 * k)).collect();
    format!(
        r#"(module
  (type $step (func (param {params}) (result i32)))
{imports}  (memory (export "memory") 4)
  (global $heap (mut i32) (i32.const 131072))
  (table {n} funcref)
  (elem (i32.const 0) {table})
{callers}  (func (export "proxy_abi_version_0_2_1"))
  (func (export "malloc") (param $size i32) (result i32)
    (local $p i32)
    ;; A bump allocator in the upper half of memory that starts over when full.
    (if (i32.gt_u (i32.add (global.get $heap) (local.get $size)) (i32.const 262144))
      (then (global.set $heap (i32.const 131072))))
    (if (i32.gt_u (local.get $size) (i32.const 131072)) (then (return (i32.const 0))))
    (local.set $p (global.get $heap))
    (global.set $heap (i32.add (global.get $heap) (local.get $size)))
    (local.get $p))
  (func (export "proxy_on_context_create") (param i32 i32))
  (func (export "proxy_on_vm_start") (param i32 i32) (result i32) (i32.const 1))
  (func (export "proxy_on_configure") (param i32 i32) (result i32) (i32.const 1))
  (func (export "proxy_on_request_body") (param $ctx i32) (param $size i32) (param $eos i32) (result i32)
    (local $p i32) (local $end i32)
    ;; The program: the request body, read into memory at 0 (at most 64 KiB).
    (if (i32.gt_u (local.get $size) (i32.const 65536)) (then (local.set $size (i32.const 65536))))
    (drop (call $h6 (i32.const 0) (i32.const 0) (local.get $size) (i32.const 65536) (i32.const 65540)))
    (local.set $p (i32.load (i32.const 65536)))
    (local.set $end (i32.add (local.get $p) (i32.load (i32.const 65540))))
    (block $done
      (loop $next
        (br_if $done (i32.gt_u (i32.add (local.get $p) (i32.const {step})) (local.get $end)))
        (drop (call_indirect (type $step){loads}
          (i32.rem_u (i32.load8_u (local.get $p)) (i32.const {n}))))
        (local.set $p (i32.add (local.get $p) (i32.const {step})))
        (br $next)))
    (i32.const 0)))
"#,
        n = HOSTCALLS.len(),
        table = table.join(" "),
        step = 1 + 4 * ARGS,
    )
}

/// An embedder that answers as a host without a network would.
struct Quiet;

impl Embedder for Quiet {
    fn log(&mut self, _record: &wasmproxy_host::LogRecord<'_>) {}
}

fn module() -> &'static (WasmEngine, Arc<PluginModule>) {
    static MODULE: OnceLock<(WasmEngine, Arc<PluginModule>)> = OnceLock::new();
    MODULE.get_or_init(|| {
        let engine = WasmEngine::new(EngineConfig { pooling_instances: None, ..Default::default() }).expect("engine");
        let bytes = wat::parse_str(module_wat()).expect("the fuzzing plugin is valid WAT");
        let module = PluginModule::load(&engine, ModuleSource::Bytes { name: "fuzz".into(), bytes }).expect("loads");
        (engine, module)
    })
}

/// `FUZZ_HOSTCALLS=a,b,...` keeps the steps to those hostcall indexes (to find which
/// hostcall a finding comes from).
fn allowed() -> &'static Option<Vec<u8>> {
    static ONLY: OnceLock<Option<Vec<u8>>> = OnceLock::new();
    ONLY.get_or_init(|| {
        std::env::var("FUZZ_HOSTCALLS").ok().map(|v| v.split(',').filter_map(|n| n.trim().parse().ok()).collect())
    })
}

fuzz_target!(|data: &[u8]| {
    let (_, module) = module();
    let owned;
    let data = match allowed() {
        Some(only) if !only.is_empty() => {
            let mut d = data.to_vec();
            for step in d.chunks_mut(1 + 4 * ARGS) {
                step[0] = only[step[0] as usize % only.len()];
            }
            owned = d;
            &owned[..]
        }
        _ => data,
    };
    let Ok(mut vm) = WasmVm::new(module, VmConfig { vm_id: "fuzz".into(), ..Default::default() }, Box::new(Quiet)) else {
        return;
    };
    let plugin = Arc::new(PluginConfig { name: "fuzz".into(), ..Default::default() });
    let Ok(root) = vm.create_root_context(plugin) else { return };
    let Ok(ctx) = vm.create_context(root, ContextKind::Http) else { return };
    if let Some(stream) = vm.stream(ctx) {
        stream.request_headers = Some(Headers::from_pairs([(":method", "POST"), (":path", "/"), ("x-a", "b")]));
        stream.request_body = Some(data.to_vec());
    }
    let _ = vm.on_request_body(ctx, true);
    let _ = vm.take_actions();
});
