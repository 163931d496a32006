//! Logging, log level, time, timers, effective context, `proxy_done`, 0.1.0 configuration.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use wasmproxy_abi::{LogLevel, Status};
use wasmtime::{Caller, Linker};

use crate::embedder::LogRecord;
use crate::memory::{HostResult, check_allowed, copy_scratch_to_guest, finish, memory, slice, write_u32, write_u64};
use crate::state::VmState;

pub(super) fn define(linker: &mut Linker<VmState>) -> wasmtime::Result<()> {
    linker.func_wrap("env", "proxy_log", |mut c: Caller<'_, VmState>, level: i32, ptr: i32, len: i32| {
        finish(log(&mut c, level, ptr, len))
    })?;
    linker.func_wrap("env", "proxy_get_log_level", |mut c: Caller<'_, VmState>, ptr: i32| {
        finish((|| {
            check_allowed(&c, "proxy_get_log_level")?;
            let level = c.data().embedder.log_level() as u32;
            write_u32(&mut c, ptr, level)
        })())
    })?;
    linker.func_wrap("env", "proxy_get_current_time_nanoseconds", |mut c: Caller<'_, VmState>, ptr: i32| {
        finish((|| {
            check_allowed(&c, "proxy_get_current_time_nanoseconds")?;
            write_u64(&mut c, ptr, unix_nanos())
        })())
    })?;
    linker.func_wrap("env", "proxy_set_tick_period_milliseconds", |mut c: Caller<'_, VmState>, ms: i32| {
        finish((|| {
            check_allowed(&c, "proxy_set_tick_period_milliseconds")?;
            let state = c.data_mut();
            let root = state.effective_root();
            let period = (ms != 0).then(|| Duration::from_millis(ms as u32 as u64));
            match period {
                Some(p) => state.timers.insert(root, (p, std::time::Instant::now() + p)),
                None => state.timers.remove(&root),
            };
            state.embedder.set_tick_period(root, period);
            Ok(())
        })())
    })?;
    linker.func_wrap("env", "proxy_set_effective_context", |c: Caller<'_, VmState>, id: i32| {
        finish((|| {
            check_allowed(&c, "proxy_set_effective_context")?;
            let mut c = c;
            let state = c.data_mut();
            if !state.contexts.contains_key(&(id as u32)) {
                return Err(Status::BadArgument.into());
            }
            state.effective = id as u32;
            Ok(())
        })())
    })?;
    linker.func_wrap("env", "proxy_done", |mut c: Caller<'_, VmState>| {
        finish((|| {
            check_allowed(&c, "proxy_done")?;
            let state = c.data_mut();
            let ctx = state.effective;
            if !state.pending_done.remove(&ctx) {
                return Err(Status::NotFound.into());
            }
            state.done_roots.push(ctx);
            Ok(())
        })())
    })?;
    // 0.1.0: the plugin configuration while configuring, else the VM configuration.
    linker.func_wrap("env", "proxy_get_configuration", |mut c: Caller<'_, VmState>, ptr_ptr: i32, size_ptr: i32| {
        finish((|| {
            check_allowed(&c, "proxy_get_configuration")?;
            copy_scratch_to_guest(&mut c, ptr_ptr, size_ptr, |state, out| {
                match &state.call.configuring {
                    Some(plugin) => out.extend_from_slice(&plugin.configuration),
                    None => out.extend_from_slice(&state.vm.configuration),
                }
                Ok(())
            })
        })())
    })?;
    // Emscripten and pthread leftovers some C++ SDK builds import.
    linker.func_wrap("env", "emscripten_notify_memory_growth", |_: Caller<'_, VmState>, _: i32| {})?;
    linker.func_wrap("env", "pthread_equal", |_: Caller<'_, VmState>, a: i32, b: i32| i32::from(a == b))?;
    Ok(())
}

fn log(c: &mut Caller<'_, VmState>, level: i32, ptr: i32, len: i32) -> HostResult {
    let level = LogLevel::from_u32(level as u32).ok_or(Status::BadArgument)?;
    let mem = memory(c)?;
    let (data, state) = mem.data_and_store_mut(&mut *c);
    let bytes = slice(data, ptr, len)?;
    let bytes = &bytes[..bytes.len().min(wasmproxy_abi::limits::LOG_MESSAGE_MAX_BYTES)];
    emit_log(state, level, &String::from_utf8_lossy(bytes));
    Ok(())
}

/// Sends one plugin log line to the embedder with the effective context's prefix.
pub(super) fn emit_log(state: &mut VmState, level: LogLevel, message: &str) {
    let context_id = state.effective;
    let prefix = state.contexts.get(&context_id).map(|c| c.log_prefix.clone());
    let prefix = prefix.as_deref().unwrap_or("");
    state.embedder.log(&LogRecord { level, message, prefix, context_id });
}

pub(super) fn unix_nanos() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0)
}
