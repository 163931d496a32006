//! WASI preview1, as a Proxy-Wasm host answers it: stdout and stderr go to the plugin log,
//! clocks, randomness and the configured environment work; files and sockets do not exist.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use wasmproxy_abi::LogLevel;
use wasmproxy_abi::wasi::*;
use wasmtime::{Caller, Linker};

use crate::memory::{HostResult, memory, slice, write, write_u32, write_u64};
use crate::state::VmState;

/// The answer for a call that failed to touch guest memory.
fn errno(r: HostResult) -> i32 {
    match r {
        Ok(()) => ERRNO_SUCCESS,
        Err(_) => ERRNO_FAULT,
    }
}

fn monotonic_nanos() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_nanos() as u64
}

fn is_std(fd: i32) -> bool {
    fd == FD_STDOUT || fd == FD_STDERR
}

macro_rules! answer {
    ($linker:ident, $m:ident, $name:literal, |$($arg:ident : $ty:ty),*| $value:expr) => {
        $linker.func_wrap($m, $name, |_c: Caller<'_, VmState>, $($arg: $ty),*| -> i32 { $value })?;
    };
}

pub(super) fn define(linker: &mut Linker<VmState>, m: &'static str) -> wasmtime::Result<()> {
    linker.func_wrap(m, "fd_write", |mut c: Caller<'_, VmState>, fd: i32, iovs: i32, n: i32, written: i32| -> i32 {
        fd_write(&mut c, fd, iovs, n, written)
    })?;
    linker.func_wrap(m, "args_sizes_get", |mut c: Caller<'_, VmState>, argc: i32, size: i32| -> i32 {
        errno(write_u32(&mut c, argc, 0).and_then(|()| write_u32(&mut c, size, 0)))
    })?;
    answer!(linker, m, "args_get", |_argv: i32, _buf: i32| ERRNO_SUCCESS);
    linker.func_wrap(m, "environ_sizes_get", |mut c: Caller<'_, VmState>, count_ptr: i32, size_ptr: i32| -> i32 {
        let env = &c.data().vm.environment;
        let count = env.len() as u32;
        let size: usize = env.iter().map(|(k, v)| k.len() + v.len() + 2).sum();
        errno(write_u32(&mut c, count_ptr, count).and_then(|()| write_u32(&mut c, size_ptr, size as u32)))
    })?;
    linker.func_wrap(m, "environ_get", |mut c: Caller<'_, VmState>, ptrs: i32, buf: i32| -> i32 {
        let vm = c.data().vm.clone();
        let mut at = buf;
        let mut r = Ok(());
        for (i, (k, v)) in vm.environment.iter().enumerate() {
            let entry = format!("{k}={v}\0");
            r = r
                .and_then(|()| write_u32(&mut c, ptrs + 4 * i as i32, at as u32))
                .and_then(|()| write(&mut c, at, entry.as_bytes()));
            at += entry.len() as i32;
        }
        errno(r)
    })?;
    linker.func_wrap(m, "clock_res_get", |mut c: Caller<'_, VmState>, id: i32, ptr: i32| -> i32 {
        if id != CLOCK_REALTIME && id != CLOCK_MONOTONIC {
            return ERRNO_NOTSUP;
        }
        errno(write_u64(&mut c, ptr, 1))
    })?;
    linker.func_wrap(m, "clock_time_get", |mut c: Caller<'_, VmState>, id: i32, _precision: i64, ptr: i32| -> i32 {
        let now = match id {
            CLOCK_REALTIME => super::context::unix_nanos(),
            CLOCK_MONOTONIC => monotonic_nanos(),
            _ => return ERRNO_NOTSUP,
        };
        errno(write_u64(&mut c, ptr, now))
    })?;
    linker.func_wrap(m, "random_get", |mut c: Caller<'_, VmState>, ptr: i32, len: i32| -> i32 {
        let len = len as u32 as usize;
        if len > wasmproxy_abi::limits::WASI_RANDOM_GET_MAX_BYTES {
            return ERRNO_INVAL;
        }
        let mut bytes = vec![0u8; len];
        if getrandom::fill(&mut bytes).is_err() {
            return ERRNO_NOSYS;
        }
        errno(write(&mut c, ptr, &bytes))
    })?;
    linker.func_wrap(m, "proc_exit", |mut c: Caller<'_, VmState>, code: i32| -> wasmtime::Result<()> {
        c.data_mut().exit_code = Some(code);
        wasmtime::bail!("the plugin called proc_exit({code})")
    })?;
    linker.func_wrap(m, "sched_yield", || -> i32 { ERRNO_SUCCESS })?;
    linker.func_wrap(
        m,
        "poll_oneoff",
        |mut c: Caller<'_, VmState>, subs: i32, events: i32, n: i32, nevents: i32| -> i32 {
            poll_oneoff(&mut c, subs, events, n, nevents)
        },
    )?;
    linker.func_wrap(m, "fd_fdstat_get", |mut c: Caller<'_, VmState>, fd: i32, ptr: i32| -> i32 {
        if !is_std(fd) {
            return ERRNO_BADF;
        }
        // filetype CHARACTER_DEVICE(2), no flags, rights FD_WRITE (1 << 6).
        let mut stat = [0u8; 24];
        stat[0] = 2;
        stat[8..16].copy_from_slice(&(1u64 << 6).to_le_bytes());
        errno(write(&mut c, ptr, &stat))
    })?;
    // Envoy logs fd_seek and fd_close as unexpected and answers success.
    answer!(linker, m, "fd_close", |_fd: i32| ERRNO_SUCCESS);
    answer!(linker, m, "fd_seek", |_fd: i32, _off: i64, _whence: i32, _ptr: i32| ERRNO_SUCCESS);
    answer!(linker, m, "fd_read", |_fd: i32, _iovs: i32, _n: i32, _read: i32| ERRNO_NOSYS);
    answer!(linker, m, "fd_fdstat_set_flags", |_fd: i32, _flags: i32| ERRNO_NOSYS);
    answer!(linker, m, "fd_prestat_get", |_fd: i32, _ptr: i32| ERRNO_BADF);
    answer!(linker, m, "fd_prestat_dir_name", |_fd: i32, _ptr: i32, _len: i32| ERRNO_NOSYS);
    answer!(linker, m, "fd_advise", |fd: i32, _o: i64, _l: i64, _a: i32| std_ok(fd));
    answer!(linker, m, "fd_allocate", |fd: i32, _o: i64, _l: i64| std_ok(fd));
    answer!(linker, m, "fd_datasync", |fd: i32| std_ok(fd));
    answer!(linker, m, "fd_sync", |fd: i32| std_ok(fd));
    answer!(linker, m, "fd_fdstat_set_rights", |fd: i32, _b: i64, _i: i64| std_ok(fd));
    answer!(linker, m, "fd_filestat_get", |_fd: i32, _ptr: i32| ERRNO_BADF);
    answer!(linker, m, "fd_filestat_set_size", |_fd: i32, _size: i64| ERRNO_BADF);
    answer!(linker, m, "fd_filestat_set_times", |_fd: i32, _a: i64, _m: i64, _f: i32| ERRNO_BADF);
    answer!(linker, m, "fd_pread", |_fd: i32, _iovs: i32, _n: i32, _off: i64, _read: i32| ERRNO_BADF);
    answer!(linker, m, "fd_pwrite", |_fd: i32, _iovs: i32, _n: i32, _off: i64, _w: i32| ERRNO_BADF);
    answer!(linker, m, "fd_readdir", |_fd: i32, _buf: i32, _len: i32, _cookie: i64, _used: i32| ERRNO_BADF);
    answer!(linker, m, "fd_renumber", |_fd: i32, _to: i32| ERRNO_BADF);
    answer!(linker, m, "fd_tell", |_fd: i32, _ptr: i32| ERRNO_BADF);
    answer!(linker, m, "path_open", |_fd: i32,
                                     _df: i32,
                                     _p: i32,
                                     _pl: i32,
                                     _of: i32,
                                     _rb: i64,
                                     _ri: i64,
                                     _ff: i32,
                                     _r: i32| ERRNO_NOENT);
    answer!(linker, m, "path_create_directory", |_fd: i32, _p: i32, _l: i32| ERRNO_NOTSUP);
    answer!(linker, m, "path_filestat_get", |_fd: i32, _f: i32, _p: i32, _l: i32, _b: i32| ERRNO_NOTSUP);
    answer!(linker, m, "path_filestat_set_times", |_fd: i32, _f: i32, _p: i32, _l: i32, _a: i64, _m: i64, _ff: i32| {
        ERRNO_NOTSUP
    });
    answer!(linker, m, "path_link", |_a: i32, _b: i32, _c2: i32, _d: i32, _e: i32, _f: i32, _g: i32| ERRNO_NOTSUP);
    answer!(linker, m, "path_readlink", |_fd: i32, _p: i32, _l: i32, _b: i32, _bl: i32, _u: i32| ERRNO_NOTSUP);
    answer!(linker, m, "path_remove_directory", |_fd: i32, _p: i32, _l: i32| ERRNO_NOTSUP);
    answer!(linker, m, "path_rename", |_fd: i32, _p: i32, _l: i32, _nfd: i32, _np: i32, _nl: i32| ERRNO_NOTSUP);
    answer!(linker, m, "path_symlink", |_p: i32, _l: i32, _fd: i32, _np: i32, _nl: i32| ERRNO_NOTSUP);
    answer!(linker, m, "path_unlink_file", |_fd: i32, _p: i32, _l: i32| ERRNO_NOTSUP);
    answer!(linker, m, "proc_raise", |_sig: i32| ERRNO_NOTSUP);
    answer!(linker, m, "sock_accept", |_fd: i32, _f: i32, _r: i32| ERRNO_NOTSUP);
    answer!(linker, m, "sock_recv", |_fd: i32, _d: i32, _l: i32, _f: i32, _n: i32, _of: i32| ERRNO_NOTSUP);
    answer!(linker, m, "sock_send", |_fd: i32, _d: i32, _l: i32, _f: i32, _n: i32| ERRNO_NOTSUP);
    answer!(linker, m, "sock_shutdown", |_fd: i32, _how: i32| ERRNO_NOTSUP);
    Ok(())
}

fn std_ok(fd: i32) -> i32 {
    if is_std(fd) { ERRNO_SUCCESS } else { ERRNO_BADF }
}

/// stdout is logged at INFO, stderr at ERROR, one line per call, trailing newline dropped.
fn fd_write(c: &mut Caller<'_, VmState>, fd: i32, iovs: i32, n: i32, written: i32) -> i32 {
    let level = match fd {
        FD_STDOUT => LogLevel::Info,
        FD_STDERR => LogLevel::Error,
        _ => return ERRNO_BADF,
    };
    let Ok(mem) = memory(c) else { return ERRNO_FAULT };
    let (data, state) = mem.data_and_store_mut(&mut *c);
    let mut text = Vec::new();
    for i in 0..n.max(0) {
        let Ok(iov) = slice(data, iovs.wrapping_add(8 * i), 8) else { return ERRNO_FAULT };
        let ptr = i32::from_le_bytes([iov[0], iov[1], iov[2], iov[3]]);
        let len = i32::from_le_bytes([iov[4], iov[5], iov[6], iov[7]]);
        let Ok(bytes) = slice(data, ptr, len) else { return ERRNO_FAULT };
        text.extend_from_slice(bytes);
    }
    let total = text.len() as u32;
    let line = text.strip_suffix(b"\n").unwrap_or(&text);
    super::context::emit_log(state, level, &String::from_utf8_lossy(line));
    errno(write_u32(c, written, total))
}

/// Answers every subscription at once: clocks fire (after sleeping for the shortest
/// relative timeout, at most 10 ms, so a plugin's sleep loop cannot spin hot), stdout and
/// stderr are writable, anything else is a bad descriptor.
fn poll_oneoff(c: &mut Caller<'_, VmState>, subs: i32, events: i32, n: i32, nevents: i32) -> i32 {
    const SUB_SIZE: i32 = 48;
    const EVENT_SIZE: i32 = 32;
    let Ok(mem) = memory(c) else { return ERRNO_FAULT };
    let mut out = Vec::new();
    let mut sleep = None::<u64>;
    for i in 0..n.max(0) {
        let Ok(sub) = slice(mem.data(&*c), subs.wrapping_add(SUB_SIZE * i), SUB_SIZE) else { return ERRNO_FAULT };
        let userdata = u64::from_le_bytes(sub[0..8].try_into().unwrap_or_default());
        let tag = sub[8];
        let mut event = [0u8; 32];
        event[0..8].copy_from_slice(&userdata.to_le_bytes());
        event[10] = tag;
        match tag {
            0 => {
                let timeout = u64::from_le_bytes(sub[24..32].try_into().unwrap_or_default());
                let absolute = sub[40] & 1 != 0;
                if !absolute {
                    sleep = Some(sleep.map_or(timeout, |s| s.min(timeout)));
                }
            }
            1 | 2 => {
                let fd = i32::from_le_bytes(sub[16..20].try_into().unwrap_or_default());
                if !(tag == 2 && is_std(fd)) {
                    event[8..10].copy_from_slice(&(ERRNO_BADF as u16).to_le_bytes());
                }
            }
            _ => event[8..10].copy_from_slice(&(ERRNO_INVAL as u16).to_le_bytes()),
        }
        out.push(event);
    }
    if let Some(ns) = sleep {
        std::thread::sleep(Duration::from_nanos(ns.min(10_000_000)));
    }
    for (i, event) in out.iter().enumerate() {
        if write(c, events.wrapping_add(EVENT_SIZE * i as i32), event).is_err() {
            return ERRNO_FAULT;
        }
    }
    errno(write_u32(c, nevents, out.len() as u32))
}
