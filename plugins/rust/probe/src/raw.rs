//! Raw `env.proxy_*` imports that return the host's status as a plain number, plus the
//! helpers around them (taking host-allocated data, the header "pairs" codec).
//!
//! Signatures follow the Proxy-Wasm ABI v0.2.1 (no 0.1.0-only imports: Envoy refuses a
//! 0.2.1 module that imports them, and the probe must also run on Envoy);
//! they match the Rust SDK's own declarations at the wasm level (every enum is an i32).

use std::ptr::null_mut;

/// `proxy_log_level_t` value for INFO.
pub const LOG_INFO: u32 = 2;

#[link(wasm_import_module = "env")]
extern "C" {
    pub fn proxy_log(level: u32, message: *const u8, message_len: usize) -> u32;
    pub fn proxy_get_log_level(return_level: *mut u32) -> u32;
    pub fn proxy_get_current_time_nanoseconds(return_time: *mut u64) -> u32;
    pub fn proxy_set_tick_period_milliseconds(period: u32) -> u32;

    pub fn proxy_get_buffer_bytes(
        buffer_type: u32,
        start: usize,
        max_size: usize,
        return_data: *mut *mut u8,
        return_size: *mut usize,
    ) -> u32;
    pub fn proxy_set_buffer_bytes(
        buffer_type: u32,
        start: usize,
        size: usize,
        data: *const u8,
        data_len: usize,
    ) -> u32;
    pub fn proxy_get_buffer_status(
        buffer_type: u32,
        return_size: *mut usize,
        return_flags: *mut u32,
    ) -> u32;

    pub fn proxy_get_header_map_pairs(
        map_type: u32,
        return_data: *mut *mut u8,
        return_size: *mut usize,
    ) -> u32;
    pub fn proxy_set_header_map_pairs(map_type: u32, data: *const u8, size: usize) -> u32;
    pub fn proxy_get_header_map_size(map_type: u32, return_size: *mut usize) -> u32;
    pub fn proxy_get_header_map_value(
        map_type: u32,
        key: *const u8,
        key_len: usize,
        return_value: *mut *mut u8,
        return_value_len: *mut usize,
    ) -> u32;
    pub fn proxy_add_header_map_value(
        map_type: u32,
        key: *const u8,
        key_len: usize,
        value: *const u8,
        value_len: usize,
    ) -> u32;
    pub fn proxy_replace_header_map_value(
        map_type: u32,
        key: *const u8,
        key_len: usize,
        value: *const u8,
        value_len: usize,
    ) -> u32;
    pub fn proxy_remove_header_map_value(map_type: u32, key: *const u8, key_len: usize) -> u32;

    pub fn proxy_get_property(
        path: *const u8,
        path_len: usize,
        return_value: *mut *mut u8,
        return_value_len: *mut usize,
    ) -> u32;
    pub fn proxy_set_property(
        path: *const u8,
        path_len: usize,
        value: *const u8,
        value_len: usize,
    ) -> u32;

    pub fn proxy_get_shared_data(
        key: *const u8,
        key_len: usize,
        return_value: *mut *mut u8,
        return_value_len: *mut usize,
        return_cas: *mut u32,
    ) -> u32;
    pub fn proxy_set_shared_data(
        key: *const u8,
        key_len: usize,
        value: *const u8,
        value_len: usize,
        cas: u32,
    ) -> u32;
    pub fn proxy_register_shared_queue(
        name: *const u8,
        name_len: usize,
        return_id: *mut u32,
    ) -> u32;
    pub fn proxy_resolve_shared_queue(
        vm_id: *const u8,
        vm_id_len: usize,
        name: *const u8,
        name_len: usize,
        return_id: *mut u32,
    ) -> u32;
    pub fn proxy_enqueue_shared_queue(queue_id: u32, value: *const u8, value_len: usize) -> u32;
    pub fn proxy_dequeue_shared_queue(
        queue_id: u32,
        return_value: *mut *mut u8,
        return_value_len: *mut usize,
    ) -> u32;

    pub fn proxy_define_metric(
        metric_type: u32,
        name: *const u8,
        name_len: usize,
        return_id: *mut u32,
    ) -> u32;
    pub fn proxy_increment_metric(metric_id: u32, delta: i64) -> u32;
    pub fn proxy_record_metric(metric_id: u32, value: u64) -> u32;
    pub fn proxy_get_metric(metric_id: u32, return_value: *mut u64) -> u32;

    pub fn proxy_grpc_send(token: u32, message: *const u8, message_len: usize, end: u32) -> u32;
    pub fn proxy_grpc_cancel(token: u32) -> u32;
    pub fn proxy_grpc_close(token: u32) -> u32;
    pub fn proxy_get_status(
        return_code: *mut u32,
        return_message: *mut *mut u8,
        return_message_len: *mut usize,
    ) -> u32;

    #[allow(clippy::too_many_arguments)]
    pub fn proxy_send_local_response(
        status_code: u32,
        details: *const u8,
        details_len: usize,
        body: *const u8,
        body_len: usize,
        headers: *const u8,
        headers_len: usize,
        grpc_status: i32,
    ) -> u32;
    pub fn proxy_continue_stream(stream_type: u32) -> u32;
    pub fn proxy_close_stream(stream_type: u32) -> u32;

    pub fn proxy_call_foreign_function(
        name: *const u8,
        name_len: usize,
        arguments: *const u8,
        arguments_len: usize,
        return_results: *mut *mut u8,
        return_results_len: *mut usize,
    ) -> u32;
    pub fn proxy_set_effective_context(context_id: u32) -> u32;
    pub fn proxy_done() -> u32;
}

#[link(wasm_import_module = "wasi_snapshot_preview1")]
extern "C" {
    /// WASI `random_get`; returns the errno.
    pub fn random_get(buf: *mut u8, buf_len: usize) -> i32;
}

/// Logs `message` at INFO, ignoring the status.
pub fn info(message: &str) {
    unsafe { proxy_log(LOG_INFO, message.as_ptr(), message.len()) };
}

/// A `(**ptr, *len)` out-parameter pair for hostcalls that hand back host-allocated data.
pub struct Returned {
    pub ptr: *mut u8,
    pub len: usize,
}

impl Returned {
    pub fn new() -> Self {
        Returned {
            ptr: null_mut(),
            len: 0,
        }
    }

    /// Takes ownership of what the host allocated through `proxy_on_memory_allocate`
    /// (which allocates exactly `len` bytes). `None` when the host wrote a null pointer.
    pub fn take(self) -> Option<Vec<u8>> {
        if self.ptr.is_null() {
            None
        } else {
            Some(unsafe { Vec::from_raw_parts(self.ptr, self.len, self.len) })
        }
    }
}

/// Reads a whole buffer (`proxy_get_buffer_bytes(type, 0, max)`); `None` unless status is OK.
pub fn read_buffer(buffer_type: u32, max_size: usize) -> Option<Vec<u8>> {
    let mut out = Returned::new();
    let status =
        unsafe { proxy_get_buffer_bytes(buffer_type, 0, max_size, &mut out.ptr, &mut out.len) };
    let data = out.take();
    if status == 0 {
        Some(data.unwrap_or_default())
    } else {
        None
    }
}

/// Serializes header pairs: u32 count, (u32 key len, u32 value len) each, then `key\0value\0` each.
pub fn serialize_pairs(pairs: &[(&str, &str)]) -> Vec<u8> {
    let mut bytes = Vec::new();
    bytes.extend_from_slice(&(pairs.len() as u32).to_le_bytes());
    for (key, value) in pairs {
        bytes.extend_from_slice(&(key.len() as u32).to_le_bytes());
        bytes.extend_from_slice(&(value.len() as u32).to_le_bytes());
    }
    for (key, value) in pairs {
        bytes.extend_from_slice(key.as_bytes());
        bytes.push(0);
        bytes.extend_from_slice(value.as_bytes());
        bytes.push(0);
    }
    bytes
}

/// Decodes serialized header pairs (lossy UTF-8); `None` if the bytes are malformed.
pub fn deserialize_pairs(bytes: &[u8]) -> Option<Vec<(String, String)>> {
    let word = |at: usize| -> Option<usize> {
        let b = bytes.get(at..at + 4)?;
        Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
    };
    let count = word(0)?;
    let mut data = 4usize.checked_add(count.checked_mul(8)?)?;
    let mut pairs = Vec::with_capacity(count.min(1024));
    for i in 0..count {
        let key_len = word(4 + i * 8)?;
        let value_len = word(8 + i * 8)?;
        let key = bytes.get(data..data.checked_add(key_len)?)?;
        data += key_len + 1;
        let value = bytes.get(data..data.checked_add(value_len)?)?;
        data += value_len + 1;
        pairs.push((
            String::from_utf8_lossy(key).into_owned(),
            String::from_utf8_lossy(value).into_owned(),
        ));
    }
    Some(pairs)
}
