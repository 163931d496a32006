//! Every size and count bound of the data plane, in one place, with Envoy's reason where
//! the number is Envoy's.

/// Envoy's `max_request_headers_kb` default (60 KiB): a longer request head gets 431.
pub const MAX_REQUEST_HEADERS_BYTES: usize = 60 * 1024;

/// Envoy's default `max_request_headers_count`.
pub const MAX_REQUEST_HEADERS_COUNT: usize = 100;

/// The most a request head may take before it is handed to hyper unchecked (which then
/// answers 431 for more than [`MAX_REQUEST_HEADERS_BYTES`]).
pub const MAX_HELD_HEAD_BYTES: usize = 64 * 1024;

/// An HTTP/1.1 connection that has waited this long between requests gives its hyper
/// connection and buffers back (a busy connection keeps them from one request to the next).
pub const PARK_IDLE_AFTER: std::time::Duration = std::time::Duration::from_millis(100);

/// About what hyper's buffers take per HTTP/1.1 connection (read, write and head buffers).
pub const PARKED_CONNECTION_BYTES: usize = 24 * 1024;

/// A worker gives free memory back to the system once connections parked since the last
/// time freed at least this much.
pub const PARKED_BYTES_BEFORE_TRIM: usize = 1 << 20;

/// How often a worker looks whether to give free memory back.
pub const GIVE_BACK_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// Envoy's default per-connection buffer limit (1 MiB): the most a TCP proxy gathers into
/// one chunk for the network filters.
pub const BUFFER_LIMIT_BYTES: usize = wasmproxy_config::DEFAULT_BUFFER_LIMIT_BYTES as usize;

/// The most body gathered into one chunk for the HTTP body callbacks (what has arrived
/// goes as one chunk, as Envoy reads it from the socket).
pub const MAX_GATHER_BYTES: usize = 1 << 20;

/// The most read whole for an `http_call` or gRPC callout response.
pub const MAX_CALLOUT_BODY_BYTES: usize = 16 << 20;

/// Bytes a TCP proxy reads from either side at a time.
pub const TCP_READ_BYTES: usize = 64 * 1024;

/// At most this many idle HTTP/1.1 connections are kept per endpoint per worker: as many
/// as the circuit breakers' default `max_connections`, so that a worker's burst of
/// concurrent requests finds its connections again (Envoy keeps every one).
pub const MAX_IDLE_UPSTREAM_CONNECTIONS: usize = 1024;

/// The listen backlog of each worker's listener socket.
pub const LISTEN_BACKLOG: i32 = 1024;

/// The largest Wasm module fetched by URL (`code.remote`).
pub const MAX_REMOTE_MODULE_BYTES: usize = 256 << 20;

/// The most bytes of fetched modules kept on disk; past it, the least recently used go.
pub const MAX_REMOTE_CACHE_BYTES: u64 = 1 << 30;

/// Modules fetched for updates refused until they are cached (`nack_on_code_cache_miss`),
/// kept in memory until an update takes them: at most this many.
pub const MAX_PREFETCHED_MODULES: usize = 4;

/// How long after the last xDS resource the API descriptors used to read them are let go
/// (they take some 6 MiB; loading them again takes some 7 ms).
pub const DESCRIPTORS_IDLE: std::time::Duration = std::time::Duration::from_secs(10);
