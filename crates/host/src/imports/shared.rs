//! Shared data and shared queues: process-wide, keyed by `vm_id`.

use wasmproxy_abi::Status;
use wasmtime::{Caller, Linker};

use crate::memory::{check_allowed, copy_to_guest, finish, memory, read, slice, write_u32};
use crate::state::VmState;

pub(super) fn define(linker: &mut Linker<VmState>) -> wasmtime::Result<()> {
    linker.func_wrap(
        "env",
        "proxy_get_shared_data",
        |mut c: Caller<'_, VmState>, kptr: i32, klen: i32, ptr_ptr: i32, size_ptr: i32, cas_ptr: i32| {
            finish((|| {
                check_allowed(&c, "proxy_get_shared_data")?;
                let key = read(&mut c, kptr, klen)?;
                let state = c.data();
                let (value, cas) = state.shared.data.get(&state.vm.vm_id, &key)?;
                copy_to_guest(&mut c, &value, ptr_ptr, size_ptr)?;
                write_u32(&mut c, cas_ptr, cas)
            })())
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_set_shared_data",
        |mut c: Caller<'_, VmState>, kptr: i32, klen: i32, vptr: i32, vlen: i32, cas: i32| {
            finish((|| {
                check_allowed(&c, "proxy_set_shared_data")?;
                let mem = memory(&c)?;
                let (data, state) = mem.data_and_store_mut(&mut c);
                let key = slice(data, kptr, klen)?;
                let value = slice(data, vptr, vlen)?;
                match state.shared.data.set(&state.vm.vm_id, key, value, cas as u32) {
                    Status::Ok => Ok(()),
                    s => Err(s.into()),
                }
            })())
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_register_shared_queue",
        |mut c: Caller<'_, VmState>, name_ptr: i32, name_len: i32, id_ptr: i32| {
            finish((|| {
                check_allowed(&c, "proxy_register_shared_queue")?;
                if name_len as u32 as usize > wasmproxy_abi::limits::NAME_MAX_BYTES {
                    return Err(Status::BadArgument.into());
                }
                let name = read(&mut c, name_ptr, name_len)?;
                let state = c.data_mut();
                let root = state.effective_root();
                let owner = state.embedder.queue_notifier().map(|n| (n, root));
                let id = state.shared.queues.register(&state.vm.vm_id, &name, owner)?;
                write_u32(&mut c, id_ptr, id)
            })())
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_resolve_shared_queue",
        |mut c: Caller<'_, VmState>, vm_ptr: i32, vm_len: i32, name_ptr: i32, name_len: i32, id_ptr: i32| {
            finish((|| {
                check_allowed(&c, "proxy_resolve_shared_queue")?;
                let vm_id = read(&mut c, vm_ptr, vm_len)?;
                let name = read(&mut c, name_ptr, name_len)?;
                let state = c.data();
                let vm_id = if vm_id.is_empty() {
                    state.vm.vm_id.clone()
                } else {
                    String::from_utf8_lossy(&vm_id).into_owned()
                };
                let id = state.shared.queues.resolve(&vm_id, &name)?;
                write_u32(&mut c, id_ptr, id)
            })())
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_enqueue_shared_queue",
        |mut c: Caller<'_, VmState>, id: i32, ptr: i32, len: i32| {
            finish((|| {
                check_allowed(&c, "proxy_enqueue_shared_queue")?;
                let mem = memory(&c)?;
                let (data, state) = mem.data_and_store_mut(&mut c);
                match state.shared.queues.enqueue(id as u32, slice(data, ptr, len)?) {
                    Status::Ok => Ok(()),
                    s => Err(s.into()),
                }
            })())
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_dequeue_shared_queue",
        |mut c: Caller<'_, VmState>, id: i32, ptr_ptr: i32, size_ptr: i32| {
            finish((|| {
                check_allowed(&c, "proxy_dequeue_shared_queue")?;
                let message = c.data().shared.queues.dequeue(id as u32)?;
                copy_to_guest(&mut c, &message, ptr_ptr, size_ptr)
            })())
        },
    )?;
    Ok(())
}
