//! Loading a plugin module: compile (or take from cache), check the ABI, type-check imports.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use sha2::{Digest, Sha256};
use wasmproxy_abi::AbiVersion;
use wasmtime::{ExternType, InstancePre, Module};

use crate::engine::{Compiled, WasmEngine};
use crate::error::LoadError;
use crate::state::VmState;

/// Where a module's bytes come from (Envoy's `code.local`).
#[derive(Debug, Clone)]
pub enum ModuleSource {
    /// `filename`.
    File(PathBuf),
    /// `inline_bytes` / `inline_string`, with a name for messages.
    Bytes {
        /// Shown in errors and logs.
        name: String,
        /// The module (binary, or WAT text).
        bytes: Vec<u8>,
    },
}

/// A compiled module, checked and linked once, shared by every VM on every thread.
pub struct PluginModule {
    pub(crate) name: String,
    pub(crate) abi: AbiVersion,
    pub(crate) sha256: [u8; 32],
    pub(crate) pre: InstancePre<VmState>,
    pub(crate) engine: WasmEngine,
    pub(crate) from_disk_cache: bool,
    pub(crate) optimized: bool,
}

impl std::fmt::Debug for PluginModule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginModule").field("name", &self.name).field("abi", &self.abi).finish()
    }
}

impl PluginModule {
    /// Loads a module, compiling it unless this process or the disk cache has it already.
    /// Under [`Compiler::Tiered`](crate::Compiler::Tiered), a module compiled now gets baseline code, and optimized
    /// code is compiled in the background (see [`PluginModule::optimized`]).
    pub fn load(engine: &WasmEngine, source: ModuleSource) -> Result<Arc<Self>, LoadError> {
        let (name, bytes) = match source {
            ModuleSource::File(path) => {
                let bytes = std::fs::read(&path).map_err(|cause| LoadError::Read { path: path.clone(), cause })?;
                (path.display().to_string(), bytes)
            }
            ModuleSource::Bytes { name, bytes } => (name, bytes),
        };
        let sha256: [u8; 32] = Sha256::digest(&bytes).into();
        let (compiled, from_disk_cache) = match engine.cached_module(&sha256) {
            Some(c) => (c, false),
            None => {
                let (c, from_disk) = compile_or_load_cached(engine, &name, bytes, &sha256)?;
                engine.remember_module(sha256, c.clone());
                (c, from_disk)
            }
        };
        Self::checked(engine, name, sha256, compiled, from_disk_cache)
    }

    /// The module's ABI and allocator checked, and its imports linked.
    fn checked(
        engine: &WasmEngine,
        name: String,
        sha256: [u8; 32],
        compiled: Compiled,
        from_disk_cache: bool,
    ) -> Result<Arc<Self>, LoadError> {
        let module = &compiled.module;
        let abi = module
            .exports()
            .filter_map(|e| AbiVersion::from_export(e.name()))
            .max()
            .ok_or_else(|| LoadError::MissingAbiVersion { name: name.clone() })?;
        let has_allocator = module.exports().any(|e| {
            matches!(e.name(), "malloc" | "proxy_on_memory_allocate") && matches!(e.ty(), ExternType::Func(_))
        });
        if !has_allocator {
            return Err(LoadError::MissingAllocator { name });
        }
        let pre = engine
            .tier(compiled.optimized)
            .linker
            .instantiate_pre(module)
            .map_err(|e| LoadError::Link { name: name.clone(), message: format!("{e:#}") })?;
        let optimized = compiled.optimized;
        Ok(Arc::new(PluginModule { name, abi, sha256, pre, engine: engine.clone(), from_disk_cache, optimized }))
    }

    /// For a module with baseline code, the same module with optimized code once it is
    /// compiled; `None` before, and for a module whose code is optimized.
    pub fn optimized(&self) -> Option<Arc<PluginModule>> {
        if self.optimized {
            return None;
        }
        let compiled = self.engine.cached_module(&self.sha256).filter(|c| c.optimized)?;
        Self::checked(&self.engine, self.name.clone(), self.sha256, compiled, false).ok()
    }

    /// Whether the module's code is optimized (see [`Compiler`](crate::Compiler)).
    pub fn is_optimized(&self) -> bool {
        self.optimized
    }

    /// The name used in messages (the file path for files).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The ABI version the module declares.
    pub fn abi_version(&self) -> AbiVersion {
        self.abi
    }

    /// The sha256 of the module's bytes, in hex.
    pub fn sha256_hex(&self) -> String {
        self.sha256.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// The names the module exports, sorted.
    pub fn export_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.pre.module().exports().map(|e| e.name().to_string()).collect();
        names.sort();
        names
    }

    /// The `module.name` of every import, sorted, without repeats.
    pub fn import_names(&self) -> Vec<String> {
        let mut names: Vec<String> =
            self.pre.module().imports().map(|i| format!("{}.{}", i.module(), i.name())).collect();
        names.sort();
        names.dedup();
        names
    }

    /// True if this load took the compiled code from the disk cache.
    pub fn loaded_from_disk_cache(&self) -> bool {
        self.from_disk_cache
    }
}

/// The module's code: from the disk cache, else baseline code under [`Compiler::Tiered`](crate::Compiler::Tiered)
/// (with optimized code compiled in the background), else optimized code, cached on disk.
fn compile_or_load_cached(
    engine: &WasmEngine,
    name: &str,
    bytes: Vec<u8>,
    sha256: &[u8; 32],
) -> Result<(Compiled, bool), LoadError> {
    let cache_file = engine.config().cache_dir.as_ref().map(|dir| cache_path(dir, sha256, engine.inner.compat_hash));
    if let Some(path) = &cache_file
        && path.exists()
    {
        // Read, not mapped: a file truncated under a mapping would kill the process (SIGBUS).
        let loaded = std::fs::read(path).map_err(wasmtime::Error::new).and_then(|bytes| {
            // SAFETY: the bytes were written by `Module::serialize` of an engine with the
            // same compatibility hash (it is in the file name) into the cache directory this
            // process was given; wasmtime also checks the engine settings recorded in them
            // and refuses a mismatch.
            unsafe { Module::deserialize(engine.wasmtime(), &bytes) }
        });
        match loaded {
            Ok(module) => return Ok((Compiled { module, optimized: true }, true)),
            Err(e) => tracing::warn!("ignoring unusable cache entry {}: {e:#}", path.display()),
        }
    }
    if let Some(baseline) = &engine.inner.baseline {
        let started = Instant::now();
        match Module::new(&baseline.engine, &bytes) {
            Ok(module) => {
                tracing::debug!("{name}: baseline code in {:?}; optimizing in the background", started.elapsed());
                optimize_in_background(engine.clone(), name.to_string(), bytes, *sha256, cache_file);
                return Ok((Compiled { module, optimized: false }, false));
            }
            // Winch lacks some proposals Cranelift has: such a module waits for Cranelift.
            Err(e) => tracing::debug!("{name}: no baseline code ({e:#}); compiling optimized code"),
        }
    }
    let module = optimize(engine, name, &bytes, cache_file.as_deref())?;
    Ok((Compiled { module, optimized: true }, false))
}

/// Compiles optimized code and writes it to the disk cache, if there is one.
fn optimize(engine: &WasmEngine, name: &str, bytes: &[u8], cache_file: Option<&Path>) -> Result<Module, LoadError> {
    let module = Module::new(engine.wasmtime(), bytes)
        .map_err(|e| LoadError::Compile { name: name.to_string(), message: format!("{e:#}") })?;
    if let Some(path) = cache_file
        && let Err(e) = write_cache(&module, path)
    {
        tracing::warn!("cannot write compiled module cache {}: {e:#}", path.display());
    }
    Ok(module)
}

/// Compiles optimized code on a thread of its own; the engine's listeners hear when it is ready.
fn optimize_in_background(
    engine: WasmEngine,
    name: String,
    bytes: Vec<u8>,
    sha256: [u8; 32],
    cache_file: Option<PathBuf>,
) {
    let spawned = std::thread::Builder::new().name("wasm-optimize".into()).spawn(move || {
        let started = Instant::now();
        match optimize(&engine, &name, &bytes, cache_file.as_deref()) {
            Ok(module) => {
                tracing::info!("{name}: optimized code ready after {:?}", started.elapsed());
                engine.optimized_ready(sha256, module);
            }
            Err(e) => tracing::warn!("{name}: no optimized code, staying on baseline code: {e}"),
        }
    });
    if let Err(e) = spawned {
        tracing::warn!("cannot start the thread that optimizes Wasm modules ({e}): staying on baseline code");
    }
}

fn cache_path(dir: &Path, sha256: &[u8; 32], compat: u64) -> PathBuf {
    let hex: String = sha256.iter().map(|b| format!("{b:02x}")).collect();
    dir.join(format!("{hex}-{compat:016x}.cwasm"))
}

fn write_cache(module: &Module, path: &Path) -> wasmtime::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, module.serialize()?)?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}
