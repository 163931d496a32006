//! A route's `request_headers_to_add` / `_remove` and `response_headers_to_add` / `_remove`,
//! applied as Envoy's router applies them: level by level, each level removing first, then
//! computing every value it adds, then overwriting, then appending.

use wasmproxy_config::model::{AppendAction, HeaderToAdd};
use wasmproxy_host::Headers;

use crate::hcm::route_table::HeaderLevels;
use crate::http::reply::local_reply_headers;
use crate::observe::access_log::{Record, header_value_text};
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

/// One level on `headers`: the request's, or (with `response_of`) the response to that
/// request, and whether the stream's response code is set yet.
fn apply(
    headers: &mut Headers,
    remove: &[String],
    add: &[HeaderToAdd],
    info: &StreamInfo,
    response_of: Option<(&Headers, bool)>,
) {
    for name in remove {
        headers.remove(name.as_bytes());
    }
    if add.is_empty() {
        return;
    }
    let (mut overwrite, mut append) = (Vec::new(), Vec::new());
    {
        let r = match response_of {
            None => Record { request: Some(headers), response: None, info, response_code_set: false },
            Some((request, code_set)) => {
                Record { request: Some(request), response: Some(headers), info, response_code_set: code_set }
            }
        };
        for h in add {
            let value = header_value_text(&h.value, &r);
            if value.is_empty() && !h.keep_empty_value {
                continue;
            }
            let present = headers.get(h.name.as_bytes()).is_some();
            match h.action {
                AppendAction::AppendIfExistsOrAdd => append.push((h, value)),
                AppendAction::AddIfAbsent if !present => append.push((h, value)),
                AppendAction::AddIfAbsent => {}
                AppendAction::OverwriteIfExists if !present => {}
                AppendAction::OverwriteIfExists | AppendAction::OverwriteIfExistsOrAdd => overwrite.push((h, value)),
            }
        }
    }
    // As Envoy's header map sets one: the old values go, the new one goes last.
    for (h, value) in overwrite {
        headers.remove(h.name.as_bytes());
        headers.add(h.name.as_bytes(), value.as_bytes());
    }
    for (h, value) in append {
        headers.add(h.name.as_bytes(), value.as_bytes());
    }
}
