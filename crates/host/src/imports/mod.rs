//! Every import a plugin may use, grouped by area. Each shim only moves bytes between
//! guest memory and the VM state; the behaviour lives in the state and the shared stores.

mod buffers;
mod callouts;
mod context;
mod headers;
mod metrics;
mod properties;
mod shared;
mod stream;
mod wasi;

use wasmtime::Linker;

use crate::state::VmState;

/// Defines every `env.proxy_*` import and WASI preview1 under both of its module names.
pub(crate) fn define_all(linker: &mut Linker<VmState>) -> wasmtime::Result<()> {
    context::define(linker)?;
    buffers::define(linker)?;
    headers::define(linker)?;
    stream::define(linker)?;
    callouts::define(linker)?;
    shared::define(linker)?;
    metrics::define(linker)?;
    properties::define(linker)?;
    for module in wasmproxy_abi::wasi::MODULE_NAMES {
        wasi::define(linker, module)?;
    }
    Ok(())
}
