//! WASI preview1 numbers the host answers with.

/// Success.
pub const ERRNO_SUCCESS: i32 = 0;
/// Bad file descriptor.
pub const ERRNO_BADF: i32 = 8;
/// Bad address.
pub const ERRNO_FAULT: i32 = 21;
/// Invalid argument.
pub const ERRNO_INVAL: i32 = 28;
/// No such file or directory.
pub const ERRNO_NOENT: i32 = 44;
/// Function not supported.
pub const ERRNO_NOSYS: i32 = 52;
/// Not supported.
pub const ERRNO_NOTSUP: i32 = 58;
/// Standard output.
pub const FD_STDOUT: i32 = 1;
/// Standard error.
pub const FD_STDERR: i32 = 2;
/// The wall clock.
pub const CLOCK_REALTIME: i32 = 0;
/// The monotonic clock.
pub const CLOCK_MONOTONIC: i32 = 1;
/// The two import module names WASI preview1 goes by.
pub const MODULE_NAMES: [&str; 2] = ["wasi_snapshot_preview1", "wasi_unstable"];
