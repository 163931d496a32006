//! Properties and foreign functions: the host answers `plugin_*`, `compress` and
//! `uncompress`; the embedder answers the rest.

use std::io::{Read, Write};

use wasmproxy_abi::Status;
use wasmtime::{Caller, Linker};

use crate::memory::{HostResult, check_allowed, copy_to_guest, finish, read};
use crate::state::VmState;

pub(super) fn define(linker: &mut Linker<VmState>) -> wasmtime::Result<()> {
    linker.func_wrap(
        "env",
        "proxy_get_property",
        |mut c: Caller<'_, VmState>, path_ptr: i32, path_len: i32, ptr_ptr: i32, size_ptr: i32| {
            finish((|| {
                check_allowed(&c, "proxy_get_property")?;
                let path = read(&mut c, path_ptr, path_len)?;
                let value = get_property(c.data_mut(), &path)?;
                copy_to_guest(&mut c, &value, ptr_ptr, size_ptr)
            })())
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_set_property",
        |mut c: Caller<'_, VmState>, path_ptr: i32, path_len: i32, ptr: i32, len: i32| {
            finish((|| {
                check_allowed(&c, "proxy_set_property")?;
                let path = read(&mut c, path_ptr, path_len)?;
                let value = read(&mut c, ptr, len)?;
                let path = path.strip_suffix(&[0]).unwrap_or(&path);
                let state = c.data_mut();
                match state.embedder.set_property(state.effective, path, &value) {
                    Status::Ok => Ok(()),
                    s => Err(s.into()),
                }
            })())
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_call_foreign_function",
        |mut c: Caller<'_, VmState>,
         name_ptr: i32,
         name_len: i32,
         args_ptr: i32,
         args_len: i32,
         ret_ptr: i32,
         ret_size: i32| {
            finish((|| {
                check_allowed(&c, "proxy_call_foreign_function")?;
                let name = String::from_utf8_lossy(&read(&mut c, name_ptr, name_len)?).into_owned();
                let args = read(&mut c, args_ptr, args_len)?;
                let result = call_foreign(c.data_mut(), &name, &args)?;
                if ret_ptr == 0 {
                    return Ok(());
                }
                copy_to_guest(&mut c, &result, ret_ptr, ret_size)
            })())
        },
    )?;
    Ok(())
}

fn get_property(state: &mut VmState, path: &[u8]) -> HostResult<Vec<u8>> {
    let segments = wasmproxy_abi::property::split_path(path);
    if segments.is_empty() {
        // Envoy's answer to an empty path: there is nothing to serialize.
        return Err(Status::SerializationFailure.into());
    }
    let own = |s: &str| Ok(s.as_bytes().to_vec());
    if let [name] = segments.as_slice() {
        let plugin = state.contexts.get(&state.effective).map(|c| c.plugin.clone());
        match (*name, plugin) {
            (b"plugin_name", Some(p)) => return own(&p.name),
            (b"plugin_root_id", Some(p)) => return own(&p.root_id),
            (b"plugin_vm_id", _) => return own(&state.vm.vm_id),
            _ => {}
        }
    }
    let stream = state.contexts.get(&state.effective).map(|c| &c.stream);
    state.embedder.property_in_stream(state.effective, &segments, stream).map_err(Into::into)
}

fn call_foreign(state: &mut VmState, name: &str, args: &[u8]) -> HostResult<Vec<u8>> {
    match name {
        "compress" => {
            let mut enc = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
            enc.write_all(args).map_err(|_| Status::SerializationFailure)?;
            Ok(enc.finish().map_err(|_| Status::SerializationFailure)?)
        }
        "uncompress" => {
            let mut out = Vec::new();
            flate2::read::ZlibDecoder::new(args).read_to_end(&mut out).map_err(|_| Status::SerializationFailure)?;
            Ok(out)
        }
        _ => {
            let ctx = state.effective;
            Ok(state.embedder.foreign_function(ctx, name, args)?)
        }
    }
}
