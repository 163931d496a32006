//! `proxy_get_buffer_bytes`, `proxy_set_buffer_bytes`, `proxy_get_buffer_status`.

use wasmproxy_abi::{BufferType, Status};
use wasmtime::{Caller, Linker};

use crate::memory::{HostResult, check_allowed, copy_scratch_to_guest, finish, read, write_u32};
use crate::state::VmState;

pub(super) fn define(linker: &mut Linker<VmState>) -> wasmtime::Result<()> {
    linker.func_wrap(
        "env",
        "proxy_get_buffer_bytes",
        |mut c: Caller<'_, VmState>, kind: i32, start: i32, max: i32, ptr_ptr: i32, size_ptr: i32| {
            finish((|| {
                check_allowed(&c, "proxy_get_buffer_bytes")?;
                if BufferType::from_u32(kind as u32).is_none() {
                    return Err(Status::BadArgument.into());
                }
                copy_scratch_to_guest(&mut c, ptr_ptr, size_ptr, |state, out| {
                    let buf = state.buffer_for_read(kind as u32)?;
                    let start = (start as u32 as usize).min(buf.len());
                    let end = start.saturating_add(max as u32 as usize).min(buf.len());
                    out.extend_from_slice(&buf[start..end]);
                    Ok(())
                })
            })())
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_set_buffer_bytes",
        |mut c: Caller<'_, VmState>, kind: i32, start: i32, size: i32, ptr: i32, len: i32| {
            finish(set_buffer(&mut c, kind, start, size, ptr, len))
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_get_buffer_status",
        |mut c: Caller<'_, VmState>, kind: i32, len_ptr: i32, flags_ptr: i32| {
            finish((|| {
                check_allowed(&c, "proxy_get_buffer_status")?;
                let len = c.data().buffer_for_read(kind as u32)?.len();
                write_u32(&mut c, len_ptr, len as u32)?;
                write_u32(&mut c, flags_ptr, 0)
            })())
        },
    )?;
    Ok(())
}

/// Envoy's rules: `start == 0` drains `size` bytes then prepends; `start >= len` appends;
/// anything else, and buffers that cannot be written, is BAD_ARGUMENT.
fn set_buffer(c: &mut Caller<'_, VmState>, kind: i32, start: i32, size: i32, ptr: i32, len: i32) -> HostResult {
    check_allowed(c, "proxy_set_buffer_bytes")?;
    if BufferType::from_u32(kind as u32).is_none() {
        return Err(Status::BadArgument.into());
    }
    let data = read(c, ptr, len)?;
    let state = c.data_mut();
    state.buffer_for_read(kind as u32)?;
    let buf = state.buffer_for_write(kind as u32).ok_or(Status::BadArgument)?;
    let (start, size) = (start as u32 as usize, size as u32 as usize);
    if start == 0 {
        buf.splice(..size.min(buf.len()), data);
    } else if start >= buf.len() {
        buf.extend_from_slice(&data);
    } else {
        return Err(Status::BadArgument.into());
    }
    Ok(())
}
