//! Errors: loading a module, and a VM that failed.

use std::path::PathBuf;

/// Why a module could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file could not be read.
    #[error("cannot read Wasm module {path}: {cause}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        cause: std::io::Error,
    },
    /// Not a valid module, or it needs something the engine cannot give.
    #[error("Wasm module {name} cannot be compiled: {message}")]
    Compile {
        /// The module's name (its file, or the name it was given).
        name: String,
        /// wasmtime's message.
        message: String,
    },
    /// It exports none of the ABI version markers.
    #[error(
        "Wasm module {name} is not a Proxy-Wasm plugin: missing or unknown Proxy-Wasm ABI version \
         (it exports none of proxy_abi_version_0_1_0, proxy_abi_version_0_2_0, proxy_abi_version_0_2_1)"
    )]
    MissingAbiVersion {
        /// The module's name.
        name: String,
    },
    /// It exports neither `malloc` nor `proxy_on_memory_allocate`.
    #[error("Wasm module {name} exports no allocator (malloc or proxy_on_memory_allocate)")]
    MissingAllocator {
        /// The module's name.
        name: String,
    },
    /// It imports something the host does not provide, or with another signature.
    #[error("Wasm module {name} cannot be linked: {message}")]
    Link {
        /// The module's name.
        name: String,
        /// Which import and why.
        message: String,
    },
    /// The engine could not be set up.
    #[error("cannot create the Wasm engine: {0}")]
    Engine(String),
}

/// Why a VM stopped working.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VmFailureKind {
    /// The plugin trapped (a Rust panic, `unreachable`, an out-of-bounds access...).
    Trap,
    /// A callback ran past its deadline and was interrupted.
    Deadline,
    /// The plugin's memory grew past the cap.
    MemoryLimit,
    /// The plugin called WASI `proc_exit`.
    Exit,
    /// Start-up (`_initialize`, `_start`, `main`) failed.
    StartFailed,
    /// The embedder stopped it: its callbacks took more than their share of the thread.
    CpuBudget,
}

/// A VM's failure: what, where, and the plugin's wasm backtrace.
#[derive(Debug, Clone)]
pub struct VmFailure {
    /// The kind of failure.
    pub kind: VmFailureKind,
    /// The callback that was running (`proxy_on_request_headers`, ...).
    pub callback: &'static str,
    /// A one-line description.
    pub message: String,
    /// The wasm backtrace, with function names from the module's name section.
    pub backtrace: String,
}

impl std::fmt::Display for VmFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} in {}: {}", self.kind_name(), self.callback, self.message)
    }
}

impl VmFailure {
    fn kind_name(&self) -> &'static str {
        match self.kind {
            VmFailureKind::Trap => "trap",
            VmFailureKind::Deadline => "deadline exceeded",
            VmFailureKind::MemoryLimit => "memory limit exceeded",
            VmFailureKind::Exit => "proc_exit",
            VmFailureKind::StartFailed => "start-up failed",
            VmFailureKind::CpuBudget => "CPU budget exceeded",
        }
    }
}

/// Why a callback could not be run.
#[derive(Debug, Clone, thiserror::Error)]
pub enum VmError {
    /// The VM failed in this call or earlier; it runs no more callbacks.
    #[error("Wasm VM failed: {0}")]
    Failed(VmFailure),
    /// The context id is not live in this VM.
    #[error("no context {0} in this VM")]
    UnknownContext(u32),
    /// Creating an instance failed.
    #[error("cannot instantiate Wasm module: {0}")]
    Instantiate(String),
    /// A root context's `on_vm_start` or `on_configure` returned false.
    #[error("plugin {plugin}: {callback} returned false (the plugin refused its configuration)")]
    ConfigureFailed {
        /// The plugin's name (or root_id).
        plugin: String,
        /// Which callback.
        callback: &'static str,
    },
}
