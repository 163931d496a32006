//! What a plugin module is, for a person choosing or debugging it: its ABI, the language and
//! SDK it was written with (as far as its names and producers tell), its memory, whether it
//! carries DWARF, its exports, and the imports this host does not provide. Read without
//! linking it, so a module that would not load still reports why.

use std::sync::Arc;

use sha2::Digest;
use wasmparser::{KnownCustom, Name, Parser, Payload, TypeRef};
use wasmproxy_abi::AbiVersion;
use wasmtime::Store;

use crate::embedder::Embedder;
use crate::engine::WasmEngine;
use crate::error::LoadError;
use crate::plugin::VmConfig;
use crate::state::VmState;

/// A WebAssembly page, in bytes.
const PAGE: u64 = 64 * 1024;

/// What [`inspect`] found in a module.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ModuleReport {
    /// The newest Proxy-Wasm ABI it exports, if any (without one it does not load).
    pub abi: Option<AbiVersion>,
    /// The language and SDK it was written with, when its names or exports tell.
    pub sdk: Option<String>,
    /// Its `producers` section: `field: name version` lines (`language: Rust`, ...).
    pub producers: Vec<String>,
    /// Its linear memory's initial and maximum size, in bytes (none: no memory).
    pub memory: Option<(u64, Option<u64>)>,
    /// The sha256 of its bytes, in hex.
    pub sha256: String,
    /// Whether it keeps function names (a `name` section): trap backtraces then name them.
    pub names: bool,
    /// Whether it carries DWARF (`.debug_info`): trap backtraces then show files and lines.
    pub dwarf: bool,
    /// Its exports, sorted.
    pub exports: Vec<String>,
    /// Its imports (`module.name`), sorted, without repeats.
    pub imports: Vec<String>,
    /// The imports this host does not provide (the module does not load while any remains).
    pub missing: Vec<String>,
}

/// An embedder that answers nothing: only the linker's definitions are looked at.
struct Inert;

impl Embedder for Inert {}

/// Reads `bytes` (the module `name`'s binary) and checks its imports against what `engine`
/// links.
pub fn inspect(engine: &WasmEngine, name: &str, bytes: &[u8]) -> Result<ModuleReport, LoadError> {
    let invalid =
        |e: wasmparser::BinaryReaderError| LoadError::Compile { name: name.to_string(), message: format!("{e}") };
    let mut report = ModuleReport::default();
    let mut names = Vec::new();
    let mut imports = Vec::new();
    for payload in Parser::new(0).parse_all(bytes) {
        match payload.map_err(invalid)? {
            Payload::ImportSection(section) => {
                for import in section.into_imports() {
                    let import = import.map_err(invalid)?;
                    if let TypeRef::Memory(m) = import.ty {
                        report.memory = Some((m.initial * PAGE, m.maximum.map(|p| p * PAGE)));
                    }
                    imports.push((import.module.to_string(), import.name.to_string()));
                }
            }
            Payload::MemorySection(section) => {
                if let Some(m) = section.into_iter().next() {
                    let m = m.map_err(invalid)?;
                    report.memory = Some((m.initial * PAGE, m.maximum.map(|p| p * PAGE)));
                }
            }
            Payload::ExportSection(section) => {
                for export in section {
                    report.exports.push(export.map_err(invalid)?.name.to_string());
                }
            }
            Payload::CustomSection(section) => match section.as_known() {
                KnownCustom::Name(reader) => names.extend(function_names(reader)),
                KnownCustom::Producers(reader) => {
                    for field in reader.into_iter().flatten() {
                        for value in field.values.into_iter().flatten() {
                            report.producers.push(format!("{}: {} {}", field.name, value.name, value.version));
                        }
                    }
                }
                _ => report.dwarf |= section.name() == ".debug_info",
            },
            _ => {}
        }
    }
    report.exports.sort();
    report.names = !names.is_empty();
    report.sha256 = sha2::Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect();
    report.abi = report.exports.iter().filter_map(|e| AbiVersion::from_export(e)).max();
    report.sdk = sdk(&report.exports, &imports, &names, &report.producers);
    report.missing = missing(engine, &imports, report.abi.unwrap_or(AbiVersion::V0_2_1));
    report.imports = imports.iter().map(|(m, n)| format!("{m}.{n}")).collect();
    report.imports.sort();
    report.imports.dedup();
    Ok(report)
}

/// The function names of a `name` section (what Rust, Go and C++ toolchains keep).
fn function_names(reader: wasmparser::NameSectionReader<'_>) -> Vec<String> {
    let mut names = Vec::new();
    for name in reader.into_iter().flatten() {
        if let Name::Function(map) = name {
            names.extend(map.into_iter().flatten().map(|n| n.name.to_string()));
        }
    }
    names
}

/// The language and SDK, from what each toolchain leaves: the SDKs' own function names,
/// AssemblyScript's runtime exports, the `producers` section's language.
fn sdk(exports: &[String], imports: &[(String, String)], names: &[String], producers: &[String]) -> Option<String> {
    let named = |part: &str| names.iter().any(|n| n.contains(part));
    let exported = |name: &str| exports.iter().any(|e| e == name);
    let found = if named("proxy-wasm-go-sdk") {
        "Go, proxy-wasm-go-sdk"
    } else if named("proxy_wasm") && producers.iter().any(|p| p.starts_with("processed-by: rustc")) {
        "Rust, proxy-wasm (the Rust SDK)"
    } else if exported("__rtti_base") || imports.iter().any(|(m, n)| m == "env" && n == "abort") {
        "AssemblyScript, proxy-runtime (the AssemblyScript SDK)"
    } else if named("RootContext") && !producers.iter().any(|p| p.starts_with("processed-by: rustc")) {
        "C++, proxy-wasm-cpp-sdk"
    } else if let Some(language) = producers.iter().find_map(|p| p.strip_prefix("language: ")) {
        let language = language.split_whitespace().next().unwrap_or(language);
        return Some(format!("{language} (SDK not recognized)"));
    } else {
        return None;
    };
    Some(found.to_string())
}

/// The imports `engine`'s linker has no definition for.
fn missing(engine: &WasmEngine, imports: &[(String, String)], abi: AbiVersion) -> Vec<String> {
    let tier = engine.tier(true);
    let state = VmState::new(abi, Arc::new(VmConfig::default()), Box::new(Inert), engine.shared().clone(), 0);
    let mut store = Store::new(&tier.engine, state);
    let mut missing: Vec<String> = imports
        .iter()
        .filter(|(module, name)| tier.linker.get(&mut store, module, name).is_err())
        .map(|(module, name)| format!("{module}.{name}"))
        .collect();
    missing.sort();
    missing.dedup();
    missing
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_module_with_imports_the_host_lacks_is_reported_not_refused() {
        let engine = WasmEngine::new(crate::EngineConfig { pooling_instances: None, ..Default::default() }).unwrap();
        let wasm = wat::parse_str(
            r#"(module
                (import "env" "proxy_log" (func (param i32 i32 i32) (result i32)))
                (import "env" "proxy_teleport" (func))
                (import "env" "abort" (func (param i32 i32 i32 i32)))
                (memory (export "memory") 2 16)
                (func (export "proxy_abi_version_0_2_0"))
                (func (export "malloc") (param i32) (result i32) i32.const 0)
                (func (export "__rtti_base")))"#,
        )
        .unwrap();
        let report = inspect(&engine, "test", &wasm).unwrap();
        assert_eq!(report.abi, Some(AbiVersion::V0_2_0));
        assert_eq!(report.memory, Some((2 * PAGE, Some(16 * PAGE))));
        assert_eq!(report.missing, vec!["env.abort".to_string(), "env.proxy_teleport".to_string()]);
        assert_eq!(report.imports, vec!["env.abort", "env.proxy_log", "env.proxy_teleport"]);
        assert_eq!(report.sdk.as_deref(), Some("AssemblyScript, proxy-runtime (the AssemblyScript SDK)"));
        assert!(!report.dwarf);
        assert!(matches!(inspect(&engine, "bad", b"not wasm"), Err(LoadError::Compile { .. })));
    }
}
