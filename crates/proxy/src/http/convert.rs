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
        .map(|a| a.as_str().as_bytes().to_vec())
        .or_else(|| parts.headers.get(http::header::HOST).map(|v| v.as_bytes().to_vec()))
        .unwrap_or_default();
    // The pseudo-headers in the order Envoy's codecs create them (plugins see the order):
    // HTTP/1 `:authority, :path, :method, :scheme`; HTTP/2 the client's order.
    let method = parts.method.as_str().as_bytes();
    let pseudo = |h: &mut Headers, name: &str| match name {
        ":method" => h.add(b":method", method),
        ":scheme" => h.add(b":scheme", scheme.as_bytes()),
        ":authority" => h.add(b":authority", &authority),
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
/// one is logged and dropped).
fn valid_headers(headers: &Headers) -> impl Iterator<Item = (HeaderName, HeaderValue)> + '_ {
    headers.iter().filter(|(k, _)| k.first() != Some(&b':')).filter_map(|(k, v)| {
        match (HeaderName::from_bytes(k), HeaderValue::from_bytes(v)) {
            (Ok(name), Ok(value)) => Some((name, value)),
            _ => {
                tracing::warn!("dropping invalid header {:?}", String::from_utf8_lossy(k));
                None
            }
        }
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
