//! `envoy.filters.http.buffer`: a request's whole body read before it goes on (at most
//! `max_request_bytes`), and `BufferPerRoute`.

use crate::reader::{Ctx, Msg};

pub(crate) const BUFFER_TYPE: &str = "envoy.extensions.filters.http.buffer.v3.Buffer";
pub(crate) const BUFFER_PER_ROUTE_TYPE: &str = "envoy.extensions.filters.http.buffer.v3.BufferPerRoute";
pub(crate) const BUFFER: &[&str] = &["max_request_bytes"];
pub(crate) const BUFFER_PER_ROUTE: &[&str] = &["disabled", "buffer"];

/// A `Buffer` (opened with [`BUFFER`]): its `max_request_bytes`.
pub(crate) fn read_buffer(ctx: &mut Ctx, mut msg: Msg<'_>) -> Option<u32> {
    let max = read_max_request_bytes(ctx, &mut msg);
    msg.finish(ctx);
    max
}

/// A `max_request_bytes` (of the buffer, or of `ext_authz`'s body): required, above 0.
pub(crate) fn read_max_request_bytes(ctx: &mut Ctx, msg: &mut Msg<'_>) -> Option<u32> {
    msg.required(ctx, "max_request_bytes").and_then(|f| {
        let max = f.unsigned(ctx, u64::from(u32::MAX))?;
        if max == 0 {
            f.error(ctx, "must be greater than 0");
            return None;
        }
        Some(max as u32)
    })
}

/// A `BufferPerRoute` (opened with [`BUFFER_PER_ROUTE`]): `Some(None)` for `disabled`, the
/// route's own limit otherwise.
pub(crate) fn read_buffer_per_route(ctx: &mut Ctx, mut msg: Msg<'_>) -> Option<Option<u32>> {
    msg.at_most_one(ctx, BUFFER_PER_ROUTE);
    let result = if let Some(f) = msg.get(ctx, "disabled") {
        match f.bool(ctx) {
            Some(true) => Some(None),
            _ => {
                f.error(ctx, "must be true (or give buffer)");
                None
            }
        }
    } else if let Some(f) = msg.get(ctx, "buffer") {
        f.message(ctx, BUFFER).and_then(|m| read_buffer(ctx, m)).map(Some)
    } else {
        ctx.error(msg.origin(), "one of disabled or buffer is required");
        None
    };
    msg.finish(ctx);
    result
}
