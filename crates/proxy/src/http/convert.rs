//! Between hyper's request and response heads and the Proxy-Wasm header maps
//! (pseudo-headers first, in the order of Envoy's codecs; `:status`).

use http::{HeaderName, HeaderValue, Method, StatusCode};
use wasmproxy_host::Headers;

/// The request head as Envoy shows it to filters: `host` becomes `:authority`.
pub fn request_headers(parts: &http::request::Parts, scheme: &str) -> Headers {
    let path = parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    // Room for the pseudo-headers and the two the proxy adds (`x-forwarded-proto`,
    // `x-request-id`), so the map is allocated once.
    let bytes: usize = parts.headers.iter().map(|(k, v)| k.as_str().len() + v.len()).sum();
    let mut h = Headers::with_capacity(parts.headers.len() + 6, bytes + path.len() + 128);
    let authority = parts
        .uri
        .authority()
        .map(|a| a.as_str().as_bytes())
        .or_else(|| parts.headers.get(http::header::HOST).map(|v| v.as_bytes()))
        .unwrap_or_default();
    // The pseudo-headers in the order Envoy's codecs create them (plugins see the order):
    // HTTP/1 `:authority, :path, :method, :scheme`; HTTP/2 the client's order.
    let method = parts.method.as_str().as_bytes();
    let pseudo = |h: &mut Headers, name: &str| match name {
        ":method" => h.add(b":method", method),
        ":scheme" => h.add(b":scheme", scheme.as_bytes()),
        ":authority" => h.add(b":authority", authority),
        ":path" => h.add(b":path", path.as_bytes()),
        ":protocol" => {
            if let Some(protocol) = parts.extensions.get::<hyper::ext::Protocol>() {
                h.add(b":protocol", protocol.as_str().as_bytes());
            }
        }
        _ => {}
    };
    match parts.extensions.get::<h2::ext::PseudoOrder>() {
        Some(order) if parts.version == http::Version::HTTP_2 => {
            order.names().for_each(|name| pseudo(&mut h, name));
            // A pseudo-header hyper made up (`:scheme` or `:authority` the client left out).
            for name in [":method", ":scheme", ":authority", ":path", ":protocol"] {
                if !order.names().any(|n| n == name) {
                    pseudo(&mut h, name);
                }
            }
        }
        _ => [":authority", ":path", ":method", ":scheme"].into_iter().for_each(|name| pseudo(&mut h, name)),
    }
    // `transfer-encoding` is framing (only `chunked` gets this far): Envoy's codec drops
    // it, and the upstream side frames the body again.
    for (name, value) in &parts.headers {
        if name != http::header::HOST && name != http::header::TRANSFER_ENCODING {
            h.add(name.as_str().as_bytes(), value.as_bytes());
        }
    }
    h
}

/// The response head as filters see it: `:status` first.
pub fn response_headers(status: StatusCode, headers: &http::HeaderMap) -> Headers {
    let mut h = Headers::new();
    h.add(b":status", status.as_str().as_bytes());
    for (name, value) in headers {
        h.add(name.as_str().as_bytes(), value.as_bytes());
    }
    h
}

/// The regular (non-pseudo) headers as an `http::HeaderMap`. Entries that are not valid
/// HTTP (a plugin may write anything) are dropped with a warning.
pub fn header_map(headers: &Headers) -> http::HeaderMap {
    let mut map = http::HeaderMap::with_capacity(headers.len());
    for (name, value) in valid_headers(headers) {
        map.append(name, value);
    }
    map
}

/// The headers that make a valid `HeaderMap` entry, pseudo-headers left out (an invalid
/// one is logged and dropped). The values are slices of one buffer, and names other than
/// the standard ones come from the thread's cache: a few allocations per map, not two per
/// header.
fn valid_headers(headers: &Headers) -> impl Iterator<Item = (HeaderName, HeaderValue)> + '_ {
    let regular = || headers.iter().filter(|(k, _)| k.first() != Some(&b':'));
    let mut values = Vec::with_capacity(regular().map(|(_, v)| v.len()).sum());
    regular().for_each(|(_, v)| values.extend_from_slice(v));
    let values = bytes::Bytes::from(values);
    let mut at = 0;
    regular().filter_map(move |(k, v)| {
        let value = values.slice(at..at + v.len());
        at += v.len();
        match (header_name(k), HeaderValue::from_maybe_shared(value)) {
            (Ok(name), Ok(value)) => Some((name, value)),
            _ => {
                tracing::warn!("dropping invalid header {:?}", String::from_utf8_lossy(k));
                None
            }
        }
    })
}

/// Names a thread keeps made: enough for the headers a deployment's traffic repeats.
const NAMES_KEPT: usize = 256;

thread_local! {
    /// Header names made before, by their bytes (a name other than the standard ones is
    /// an allocation each time it is made).
    static NAMES: std::cell::RefCell<rustc_hash::FxHashMap<Box<[u8]>, HeaderName>> = Default::default();
}

/// `name` as hyper's type, from the thread's cache when it was made before.
fn header_name(name: &[u8]) -> Result<HeaderName, http::header::InvalidHeaderName> {
    NAMES.with_borrow_mut(|names| {
        if let Some(made) = names.get(name) {
            return Ok(made.clone());
        }
        let made = HeaderName::from_bytes(name)?;
        if names.len() < NAMES_KEPT {
            names.insert(name.into(), made.clone());
        }
        Ok(made)
    })
}

/// The headers of a response for hyper, in order, without `transfer-encoding` (hyper
/// frames the body) and without `connection`, except a `connection: close` in an answer
/// the proxy made itself (`local`). A local answer also gets `date` (unless it has one)
/// before `server` and `connection`, which go last: Envoy's order.
pub fn response_header_map(headers: &Headers, local: bool) -> http::HeaderMap {
    let mut map = http::HeaderMap::with_capacity(headers.len() + 1);
    let (mut server, mut close) = (None, None);
    for (name, value) in valid_headers(headers) {
        if name == http::header::TRANSFER_ENCODING {
            continue;
        }
        if name == http::header::CONNECTION {
            if local && value == "close" {
                close = Some(value);
            }
            continue;
        }
        if local && name == http::header::SERVER {
            server = Some(value);
            continue;
        }
        map.append(name, value);
    }
    if local && !map.contains_key(http::header::DATE) {
        map.insert(http::header::DATE, crate::http::downstream::http_date());
    }
    for (name, value) in [(http::header::SERVER, server), (http::header::CONNECTION, close)] {
        if let Some(value) = value {
            map.insert(name, value);
        }
    }
    map
}

/// The headers of a `101` for hyper, in order, `connection` and `upgrade` kept (the
/// client needs them); nothing about a body.
pub fn upgrade_response_header_map(headers: &Headers) -> http::HeaderMap {
    let mut map = http::HeaderMap::with_capacity(headers.len());
    for (name, value) in valid_headers(headers) {
        if name != http::header::TRANSFER_ENCODING && name != http::header::CONTENT_LENGTH {
            map.append(name, value);
        }
    }
    map
}

/// Whether an HTTP/1 message's `connection` header names `close`.
pub fn asks_to_close(headers: &http::HeaderMap) -> bool {
    headers
        .get(http::header::CONNECTION)
        .is_some_and(|v| v.to_str().is_ok_and(|v| v.split(',').any(|token| token.trim().eq_ignore_ascii_case("close"))))
}

/// Whether a comma-separated header value has `token` (case-insensitive unless `exact`).
pub fn has_token(value: Option<&[u8]>, token: &str, exact: bool) -> bool {
    let Some(value) = value else { return false };
    String::from_utf8_lossy(value)
        .split(',')
        .map(str::trim)
        .any(|t| if exact { t == token } else { t.eq_ignore_ascii_case(token) })
}

/// `:method` as a `Method` (GET if missing or invalid).
pub fn method(headers: &Headers) -> Method {
    headers.get(b":method").and_then(|m| Method::from_bytes(m).ok()).unwrap_or(Method::GET)
}

/// `:status` as a `StatusCode` (502 if missing or invalid).
pub fn status(headers: &Headers) -> StatusCode {
    headers
        .get(b":status")
        .and_then(|s| std::str::from_utf8(s).ok())
        .and_then(|s| s.parse::<u16>().ok())
        .and_then(|s| StatusCode::from_u16(s).ok())
        .unwrap_or(StatusCode::BAD_GATEWAY)
}

/// A pseudo-header (or any header) as a string, lossy.
pub fn text(headers: &Headers, name: &[u8]) -> String {
    headers.get(name).map(|v| String::from_utf8_lossy(v).into_owned()).unwrap_or_default()
}

/// A header map without pseudo-headers (trailers, either way).
pub fn plain_headers(headers: &http::HeaderMap) -> Headers {
    let mut h = Headers::new();
    for (name, value) in headers {
        h.add(name.as_str().as_bytes(), value.as_bytes());
    }
    h
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn a_header_map_keeps_every_valid_value_in_order_and_drops_invalid_entries() {
        let headers = Headers::from_pairs([
            (":status", "200"),
            ("x-first", "one"),
            ("bad name", "dropped"),
            ("content-type", "text/plain"),
            ("x-bad-value", "a\nb"),
            ("x-first", "again"),
            ("x-empty", ""),
        ]);
        for _ in 0..2 {
            // The second time, the names come from the thread's cache.
            let map = header_map(&headers);
            let entries: Vec<(&str, &[u8])> = map.iter().map(|(k, v)| (k.as_str(), v.as_bytes())).collect();
            let want: [(&str, &[u8]); 4] =
                [("x-first", b"one"), ("x-first", b"again"), ("content-type", b"text/plain"), ("x-empty", b"")];
            assert_eq!(entries.len(), want.len(), "{entries:?}");
            for w in want {
                assert!(entries.contains(&w), "{w:?} in {entries:?}");
            }
            assert_eq!(
                map.get_all("x-first").iter().map(|v| v.as_bytes()).collect::<Vec<_>>(),
                [&b"one"[..], b"again"]
            );
        }
    }
}
