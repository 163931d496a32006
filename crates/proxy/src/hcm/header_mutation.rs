//! A route's `request_headers_to_add` / `_remove` and `response_headers_to_add` / `_remove`,
//! applied as Envoy's router applies them: level by level, each level removing first, then
//! computing every value it adds, then overwriting, then appending.

use wasmproxy_host::Headers;

use crate::filters::header_options::apply;
use crate::hcm::route_table::HeaderLevels;
use crate::http::reply::local_reply_headers;
use crate::stream_info::StreamInfo;

/// The request headers, before they go upstream.
pub fn mutate_request(levels: &HeaderLevels, request: &mut Headers, info: &StreamInfo) {
    for level in levels.iter() {
        apply(request, &level.request_remove, &level.request_add, info, None);
    }
}

/// The upstream's response headers, before the filters see them (its status is already
/// the stream's response code there, as in Envoy).
pub fn mutate_response(levels: &HeaderLevels, response: &mut Headers, request: &Headers, info: &StreamInfo) {
    for level in levels.iter() {
        apply(response, &level.response_remove, &level.response_add, info, Some((request, true)));
    }
}

/// A reply the router makes (a direct response, a redirect, an upstream failure): as in
/// Envoy's local replies, the route's headers come after the status (and `location`) and
/// before the length and type of the body.
pub fn mutate_local_reply(
    levels: &HeaderLevels,
    reply: &mut Headers,
    body: &[u8],
    request: &Headers,
    info: &StreamInfo,
) {
    if levels.is_empty() {
        return;
    }
    reply.remove(b"content-length");
    reply.remove(b"content-type");
    for level in levels.iter() {
        apply(reply, &level.response_remove, &level.response_add, info, Some((request, false)));
    }
    let status = reply.get(b":status").and_then(|s| std::str::from_utf8(s).ok()?.parse().ok()).unwrap_or(200);
    reply.remove(b":status");
    *reply = local_reply_headers(status, reply, body);
}
