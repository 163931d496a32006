//! `HeaderValueOption` lists (`request_headers_to_add`, `response_headers_to_add`, ...)
//! applied as Envoy applies them: names removed first, every value computed, then
//! overwritten, then appended.

use wasmproxy_config::model::{AppendAction, HeaderToAdd};
use wasmproxy_host::Headers;

use crate::observe::access_log::{Record, header_value_text};
use crate::stream_info::StreamInfo;

/// One level on `headers`: the request's, or (with `response_of`) the response to that
/// request, and whether the stream's response code is set yet.
pub fn apply(
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
