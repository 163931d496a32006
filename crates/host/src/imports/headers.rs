//! The header map hostcalls, with Envoy's statuses for maps that are not available.

use wasmproxy_abi::{AbiVersion, Status};
use wasmtime::{Caller, Linker};

use crate::memory::{HostResult, check_allowed, copy_scratch_to_guest, finish, memory, read_pairs, slice, write_u32};
use crate::state::VmState;

pub(super) fn define(linker: &mut Linker<VmState>) -> wasmtime::Result<()> {
    linker.func_wrap(
        "env",
        "proxy_get_header_map_pairs",
        |mut c: Caller<'_, VmState>, map: i32, ptr_ptr: i32, size_ptr: i32| {
            finish((|| {
                check_allowed(&c, "proxy_get_header_map_pairs")?;
                copy_scratch_to_guest(&mut c, ptr_ptr, size_ptr, |state, out| {
                    if let Ok(Some(h)) = state.map_for_read(map as u32) {
                        wasmproxy_abi::pairs::serialize_into(h.iter(), out);
                    }
                    Ok(())
                })
            })())
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_set_header_map_pairs",
        |mut c: Caller<'_, VmState>, map: i32, ptr: i32, len: i32| {
            finish((|| {
                check_allowed(&c, "proxy_set_header_map_pairs")?;
                let pairs = read_pairs(&mut c, ptr, len)?;
                let h = c.data_mut().map_for_write(map as u32).ok_or(Status::BadArgument)?;
                *h = pairs;
                Ok(())
            })())
        },
    )?;
    linker.func_wrap("env", "proxy_get_header_map_size", |mut c: Caller<'_, VmState>, map: i32, ptr: i32| {
        finish((|| {
            check_allowed(&c, "proxy_get_header_map_size")?;
            let size = c.data_mut().map_for_write(map as u32).ok_or(Status::BadArgument)?.byte_size();
            write_u32(&mut c, ptr, size as u32)
        })())
    })?;
    linker.func_wrap(
        "env",
        "proxy_get_header_map_value",
        |mut c: Caller<'_, VmState>, map: i32, kptr: i32, klen: i32, ptr_ptr: i32, size_ptr: i32| {
            finish(get_value(&mut c, map, kptr, klen, ptr_ptr, size_ptr))
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_add_header_map_value",
        |mut c: Caller<'_, VmState>, map: i32, kptr: i32, klen: i32, vptr: i32, vlen: i32| {
            finish(modify(&mut c, "proxy_add_header_map_value", map, kptr, klen, vptr, vlen, |h, k, v| h.add(k, v)))
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_replace_header_map_value",
        |mut c: Caller<'_, VmState>, map: i32, kptr: i32, klen: i32, vptr: i32, vlen: i32| {
            finish(modify(&mut c, "proxy_replace_header_map_value", map, kptr, klen, vptr, vlen, |h, k, v| h.set(k, v)))
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_remove_header_map_value",
        |mut c: Caller<'_, VmState>, map: i32, kptr: i32, klen: i32| {
            finish(modify(&mut c, "proxy_remove_header_map_value", map, kptr, klen, 0, 0, |h, k, _| h.remove(k)))
        },
    )?;
    Ok(())
}

fn get_value(c: &mut Caller<'_, VmState>, map: i32, kptr: i32, klen: i32, ptr_ptr: i32, size_ptr: i32) -> HostResult {
    check_allowed(c, "proxy_get_header_map_value")?;
    let key = crate::memory::read(c, kptr, klen)?;
    copy_scratch_to_guest(c, ptr_ptr, size_ptr, |state, out| {
        let old_abi = state.abi == AbiVersion::V0_1_0;
        let access_log = state.effective_context().is_some_and(|ctx| ctx.stream.access_log_phase);
        match state.map_for_read(map as u32) {
            Ok(Some(h)) => match h.get(&key) {
                Some(v) => out.extend_from_slice(v),
                None if old_abi => {}
                None => return Err(Status::NotFound.into()),
            },
            _ if access_log && old_abi => {}
            _ if access_log => return Err(Status::NotFound.into()),
            _ => return Err(Status::BadArgument.into()),
        }
        Ok(())
    })
}

#[allow(clippy::too_many_arguments)]
fn modify(
    c: &mut Caller<'_, VmState>,
    name: &str,
    map: i32,
    kptr: i32,
    klen: i32,
    vptr: i32,
    vlen: i32,
    op: impl FnOnce(&mut crate::Headers, &[u8], &[u8]),
) -> HostResult {
    check_allowed(c, name)?;
    let mem = memory(c)?;
    let (data, state) = mem.data_and_store_mut(&mut *c);
    let key = slice(data, kptr, klen)?;
    let value = slice(data, vptr, vlen)?;
    let h = state.map_for_write(map as u32).ok_or(Status::BadArgument)?;
    op(h, key, value);
    Ok(())
}
