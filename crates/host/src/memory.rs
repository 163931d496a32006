//! Guest memory access for hostcalls: bounds-checked reads and writes, guest allocation.

use wasmproxy_abi::Status;
use wasmtime::{Caller, Memory};

use crate::state::VmState;

/// Why a hostcall stopped: a status for the guest, or a trap that fails the VM.
pub(crate) enum HostError {
    Status(Status),
    Trap(wasmtime::Error),
}

impl From<Status> for HostError {
    fn from(s: Status) -> Self {
        HostError::Status(s)
    }
}

pub(crate) type HostResult<T = ()> = Result<T, HostError>;

/// Turns a hostcall's outcome into what the guest gets: a status, or a trap.
pub(crate) fn finish(r: HostResult) -> wasmtime::Result<i32> {
    match r {
        Ok(()) => Ok(Status::Ok as i32),
        Err(HostError::Status(s)) => Ok(s as i32),
        Err(HostError::Trap(e)) => Err(e),
    }
}

/// Traps if the VM is starting up or allocating: only logging and WASI are allowed then,
/// as in Envoy.
pub(crate) fn check_allowed(caller: &Caller<'_, VmState>, name: &str) -> HostResult {
    if caller.data().restricted {
        return Err(HostError::Trap(wasmtime::format_err!(
            "restricted_callback: {name} may not be called during VM start-up or memory allocation"
        )));
    }
    Ok(())
}

pub(crate) fn memory(caller: &Caller<'_, VmState>) -> HostResult<Memory> {
    caller.data().memory.ok_or(HostError::Status(Status::InvalidMemoryAccess))
}

/// The guest bytes at `ptr..ptr+len`, or INVALID_MEMORY_ACCESS.
pub(crate) fn slice(data: &[u8], ptr: i32, len: i32) -> HostResult<&[u8]> {
    let start = ptr as u32 as usize;
    let end = start.checked_add(len as u32 as usize).ok_or(Status::InvalidMemoryAccess)?;
    data.get(start..end).ok_or(HostError::Status(Status::InvalidMemoryAccess))
}

/// A copy of the guest bytes at `ptr..ptr+len`.
pub(crate) fn read(caller: &mut Caller<'_, VmState>, ptr: i32, len: i32) -> HostResult<Vec<u8>> {
    let mem = memory(caller)?;
    Ok(slice(mem.data(&*caller), ptr, len)?.to_vec())
}

/// Writes bytes at a guest address.
pub(crate) fn write(caller: &mut Caller<'_, VmState>, ptr: i32, bytes: &[u8]) -> HostResult {
    let mem = memory(caller)?;
    let start = ptr as u32 as usize;
    let end = start.checked_add(bytes.len()).ok_or(Status::InvalidMemoryAccess)?;
    mem.data_mut(&mut *caller)
        .get_mut(start..end)
        .ok_or(HostError::Status(Status::InvalidMemoryAccess))?
        .copy_from_slice(bytes);
    Ok(())
}

pub(crate) fn write_u32(caller: &mut Caller<'_, VmState>, ptr: i32, value: u32) -> HostResult {
    write(caller, ptr, &value.to_le_bytes())
}

pub(crate) fn write_u64(caller: &mut Caller<'_, VmState>, ptr: i32, value: u64) -> HostResult {
    write(caller, ptr, &value.to_le_bytes())
}

/// Calls the guest's allocator (with hostcalls restricted meanwhile) for `size` bytes.
pub(crate) fn guest_alloc(caller: &mut Caller<'_, VmState>, size: usize) -> HostResult<i32> {
    let alloc = caller.data().alloc.clone().ok_or(HostError::Status(Status::InternalFailure))?;
    let size = i32::try_from(size).map_err(|_| Status::InvalidMemoryAccess)?;
    let was = std::mem::replace(&mut caller.data_mut().restricted, true);
    let name = caller.data().alloc_export;
    let result = crate::trace::call(&mut *caller, name, &alloc, size);
    caller.data_mut().restricted = was;
    let ptr = result.map_err(HostError::Trap)?;
    if ptr == 0 {
        return Err(Status::InvalidMemoryAccess.into());
    }
    Ok(ptr)
}

/// Hands `bytes` to the guest: allocates a copy in guest memory (the guest owns it) and
/// writes its address and size; empty data is written as (0, 0) without allocating.
pub(crate) fn copy_to_guest(caller: &mut Caller<'_, VmState>, bytes: &[u8], ptr_ptr: i32, size_ptr: i32) -> HostResult {
    if bytes.is_empty() {
        write_u32(caller, ptr_ptr, 0)?;
        return write_u32(caller, size_ptr, 0);
    }
    let ptr = guest_alloc(caller, bytes.len())?;
    write(caller, ptr, bytes)?;
    write_u32(caller, ptr_ptr, ptr as u32)?;
    write_u32(caller, size_ptr, bytes.len() as u32)
}

/// Like [`copy_to_guest`] for data built into the VM's scratch buffer by `fill`, so the
/// common path allocates nothing on the host.
pub(crate) fn copy_scratch_to_guest(
    caller: &mut Caller<'_, VmState>,
    ptr_ptr: i32,
    size_ptr: i32,
    fill: impl FnOnce(&mut VmState, &mut Vec<u8>) -> HostResult,
) -> HostResult {
    let mut scratch = std::mem::take(&mut caller.data_mut().scratch);
    scratch.clear();
    let filled = fill(caller.data_mut(), &mut scratch);
    let result = filled.and_then(|()| copy_to_guest(caller, &scratch, ptr_ptr, size_ptr));
    caller.data_mut().scratch = scratch;
    result
}

/// Decodes a serialized header map from guest memory (an unparsable map reads as empty, as in cpp-host).
pub(crate) fn read_pairs(caller: &mut Caller<'_, VmState>, ptr: i32, len: i32) -> HostResult<crate::Headers> {
    let mem = memory(caller)?;
    let bytes = slice(mem.data(&*caller), ptr, len)?;
    Ok(wasmproxy_abi::pairs::deserialize(bytes).map(crate::Headers::from_pairs).unwrap_or_default())
}
