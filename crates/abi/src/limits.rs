//! Size limits, named in one place (as cpp-host's `limits.h`).

/// Largest serialized header map the host accepts from a guest (bytes).
pub const PAIRS_MAX_BYTES: usize = 1 << 20;
/// Most pairs in one serialized header map.
pub const PAIRS_MAX_COUNT: usize = 1024;
/// Largest `random_get` request (bytes).
pub const WASI_RANDOM_GET_MAX_BYTES: usize = 64 * 1024;
/// Largest message a plugin may log in one call (bytes); longer ones are cut.
pub const LOG_MESSAGE_MAX_BYTES: usize = 64 * 1024;
