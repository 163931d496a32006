//! Every call between the host and a VM, logged at trace level on the `wasm` logger as
//! Envoy logs them (`--component-log-level wasm:trace`): `[host->vm] proxy_on_vm_start(1, 0)`,
//! `[host<-vm] proxy_on_vm_start return: 1`, `[vm->host] env.proxy_log(2, 1076144, 21)`,
//! `[vm<-host] env.proxy_log return: 0`. Numbers are shown unsigned, as Envoy shows them.
//! A VM made while the level is off pays nothing: no wrappers, one flag read per callback.

use wasmtime::{
    AsContextMut, Caller, Extern, Func, Instance, Linker, Module, Store, TypedFunc, Val, WasmParams, WasmResults,
};

use crate::state::VmState;

/// Whether calls are logged: checked when a VM is made, which then logs all its calls, or
/// none (a level changed later applies to the VMs made after it).
pub(crate) fn enabled() -> bool {
    tracing::enabled!(target: "wasm", tracing::Level::TRACE)
}

/// Calls one of the VM's exports, logging the call and what it returned.
pub(crate) fn call<P: WasmParams + Shown, R: WasmResults + Shown>(
    mut store: impl AsContextMut<Data = VmState>,
    name: &str,
    f: &TypedFunc<P, R>,
    params: P,
) -> wasmtime::Result<R> {
    if !store.as_context().data().traced {
        return f.call(store, params);
    }
    tracing::trace!(target: "wasm", "[host->vm] {name}({})", params.shown());
    let result = f.call(&mut store, params)?;
    let shown = result.shown();
    let shown = if shown.is_empty() { "void".to_string() } else { shown };
    tracing::trace!(target: "wasm", "[host<-vm] {name} return: {shown}");
    Ok(result)
}

/// Instantiates `module` with each import wrapped to log its calls and returns.
pub(crate) fn instantiate(
    linker: &Linker<VmState>,
    store: &mut Store<VmState>,
    module: &Module,
) -> wasmtime::Result<Instance> {
    let mut imports = Vec::new();
    for import in module.imports() {
        let label = format!("{}.{}", import.module(), import.name());
        let Some(definition) = linker.get_by_import(&mut *store, &import) else {
            return Err(wasmtime::Error::msg(format!("unknown import {label}")));
        };
        imports.push(match definition {
            Extern::Func(inner) => Extern::Func(logged(store, inner, label)),
            other => other,
        });
    }
    Instance::new(store, module, &imports)
}

/// `inner`, logging each call and its return.
fn logged(store: &mut Store<VmState>, inner: Func, label: String) -> Func {
    let ty = inner.ty(&*store);
    Func::new(store, ty, move |mut caller: Caller<'_, VmState>, params: &[Val], results: &mut [Val]| {
        tracing::trace!(target: "wasm", "[vm->host] {label}({})", vals(params));
        inner.call(&mut caller, params, results)?;
        let shown = if results.is_empty() { "void".to_string() } else { vals(results) };
        tracing::trace!(target: "wasm", "[vm<-host] {label} return: {shown}");
        Ok(())
    })
}

fn vals(vals: &[Val]) -> String {
    let shown: Vec<String> = vals
        .iter()
        .map(|v| match v {
            Val::I32(n) => (*n as u32).to_string(),
            Val::I64(n) => (*n as u64).to_string(),
            Val::F32(bits) => f32::from_bits(*bits).to_string(),
            Val::F64(bits) => f64::from_bits(*bits).to_string(),
            other => format!("{other:?}"),
        })
        .collect();
    shown.join(", ")
}

/// Callback arguments and results, shown as Envoy shows them: comma-separated, unsigned.
pub(crate) trait Shown {
    /// The values, comma-separated ("" for none).
    fn shown(&self) -> String;
}

impl Shown for () {
    fn shown(&self) -> String {
        String::new()
    }
}

impl Shown for i32 {
    fn shown(&self) -> String {
        (*self as u32).to_string()
    }
}

macro_rules! shown_tuple {
    ($($name:ident),+) => {
        impl<$($name: Shown),+> Shown for ($($name,)+) {
            #[allow(non_snake_case)]
            fn shown(&self) -> String {
                let ($($name,)+) = self;
                [$($name.shown()),+].join(", ")
            }
        }
    };
}

shown_tuple!(A);
shown_tuple!(A, B);
shown_tuple!(A, B, C);
shown_tuple!(A, B, C, D);
shown_tuple!(A, B, C, D, E);
shown_tuple!(A, B, C, D, E, F);
