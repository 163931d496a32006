//! Size limits, named in one place (as cpp-host's `limits.h`).

/// Largest serialized header map the host accepts from a guest (bytes).
pub const PAIRS_MAX_BYTES: usize = 1 << 20;
/// Most pairs in one serialized header map.
pub const PAIRS_MAX_COUNT: usize = 1024;
/// Largest `random_get` request (bytes).
pub const WASI_RANDOM_GET_MAX_BYTES: usize = 64 * 1024;
/// Largest message a plugin may log in one call (bytes); longer ones are cut.
pub const LOG_MESSAGE_MAX_BYTES: usize = 64 * 1024;
/// Most bytes (keys and values) the shared data of the process may hold; a write past it
/// is refused with INTERNAL_FAILURE, so a plugin cannot grow the process without end.
pub const SHARED_DATA_MAX_BYTES: usize = 128 << 20;
/// Most bytes waiting in one shared queue; an enqueue past it is refused (INTERNAL_FAILURE).
pub const SHARED_QUEUE_MAX_BYTES: usize = 64 << 20;
/// Most bytes waiting in all the shared queues of the process together.
pub const SHARED_QUEUES_MAX_BYTES: usize = 256 << 20;
/// Most shared queues in the process; registering more is refused (INTERNAL_FAILURE).
pub const SHARED_QUEUES_MAX: usize = 16 * 1024;
/// Most distinct plugin metrics in the process; defining more is refused (INTERNAL_FAILURE).
pub const PLUGIN_METRICS_MAX: usize = 16 * 1024;
/// Longest name of a plugin metric or a shared queue (bytes); a longer one is refused
/// (BAD_ARGUMENT): names live as long as the process.
pub const NAME_MAX_BYTES: usize = 1024;
