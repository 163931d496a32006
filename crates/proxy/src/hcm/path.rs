//! What the connection manager does to a request's path and host before any filter, as
//! Envoy does: escaped slashes kept, refused, unescaped or redirected
//! (`path_with_escaped_slashes_action`), the path made canonical (`normalize_path`: dot
//! segments resolved, escapes of unreserved characters decoded, backslashes made slashes,
//! characters a path cannot hold escaped), slashes merged (`merge_slashes`), and the
//! host's port taken off (`strip_*_host_port`).

use wasmproxy_config::model::{EscapedSlashes, PathHandling, StripPort};
use wasmproxy_host::Headers;

/// What becomes of the request.
#[derive(Debug, PartialEq, Eq)]
pub enum PathVerdict {
    /// It goes on, its path and host as they are now.
    Go,
    /// 400 (`path_normalization_failed`).
    Reject,
    /// A redirect to this path (its escaped slashes unescaped).
    Redirect(Vec<u8>),
}

/// Applies `paths` to the request's `:path` and `:authority`; `port` is the listener's.
pub fn handle(paths: &PathHandling, port: u16, headers: &mut Headers) -> PathVerdict {
    strip_port(paths.strip_port, port, headers);
    let Some(full) = headers.get(b":path").map(<[u8]>::to_vec) else { return PathVerdict::Go };
    if paths.escaped_slashes == EscapedSlashes::Keep && !paths.normalize && !paths.merge_slashes {
        return PathVerdict::Go;
    }
    let split = full.iter().position(|b| *b == b'?').unwrap_or(full.len());
    let (mut path, query) = (full[..split].to_vec(), &full[split..]);
    let mut redirect = false;
    if paths.escaped_slashes != EscapedSlashes::Keep && has_escaped_slash(&path) {
        match paths.escaped_slashes {
            EscapedSlashes::Reject => return PathVerdict::Reject,
            EscapedSlashes::Redirect => redirect = true,
            EscapedSlashes::Unescape | EscapedSlashes::Keep => {}
        }
        path = unescape_slashes(&path);
    }
    if paths.normalize {
        match canonical(&path) {
            Some(p) => path = p,
            None => return PathVerdict::Reject,
        }
    }
    if paths.merge_slashes {
        path.dedup_by(|a, b| *a == b'/' && *b == b'/');
    }
    let new = [path.as_slice(), query].concat();
    if redirect {
        return PathVerdict::Redirect(new);
    }
    if new != full {
        headers.replace(b":path", &new);
    }
    PathVerdict::Go
}

/// Takes the port off `:authority` (the listener's only, or any).
fn strip_port(strip: StripPort, listener: u16, headers: &mut Headers) {
    if strip == StripPort::None {
        return;
    }
    let Some(host) = headers.get(b":authority") else { return };
    let (name, Some(port)) = split_port(host) else { return };
    let matches = std::str::from_utf8(port).ok().and_then(|p| p.parse::<u16>().ok()) == Some(listener);
    if strip == StripPort::Any || matches {
        let name = name.to_vec();
        headers.replace(b":authority", &name);
    }
}

/// A host and its port (the digits after its last colon; an IPv6 address has colons of
/// its own: only `]:port` counts there).
pub(super) fn split_port(host: &[u8]) -> (&[u8], Option<&[u8]>) {
    let at = host.iter().rposition(|b| *b == b':').filter(|&at| {
        let (name, port) = (&host[..at], &host[at + 1..]);
        !port.is_empty() && port.iter().all(u8::is_ascii_digit) && (!host.starts_with(b"[") || name.ends_with(b"]"))
    });
    match at {
        Some(at) => (&host[..at], Some(&host[at + 1..])),
        None => (host, None),
    }
}

fn has_escaped_slash(path: &[u8]) -> bool {
    path.windows(3).any(|w| {
        w[0] == b'%'
            && (w[1] == b'2' && w[2].eq_ignore_ascii_case(&b'f') || w[1] == b'5' && w[2].eq_ignore_ascii_case(&b'c'))
    })
}

/// `%2F` and `%5C` (either case) decoded.
fn unescape_slashes(path: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(path.len());
    let mut i = 0;
    while i < path.len() {
        let escape = path.get(i..i + 3).filter(|w| w[0] == b'%');
        match escape.map(|w| (w[1], w[2].to_ascii_lowercase())) {
            Some((b'2', b'f')) => {
                out.push(b'/');
                i += 3;
            }
            Some((b'5', b'c')) => {
                out.push(b'\\');
                i += 3;
            }
            _ => {
                out.push(path[i]);
                i += 1;
            }
        }
    }
    out
}

/// The canonical form of a path (without its query), as Envoy's URL canonicalizer makes
/// it; none if it is not a path.
fn canonical(path: &[u8]) -> Option<Vec<u8>> {
    let rest = path.strip_prefix(b"/").or_else(|| path.strip_prefix(b"\\"))?;
    let mut kept: Vec<Vec<u8>> = Vec::new();
    let raw: Vec<&[u8]> = rest.split(|b| *b == b'/' || *b == b'\\').collect();
    for (i, segment) in raw.iter().enumerate() {
        let segment = canonical_segment(segment);
        let last = i + 1 == raw.len();
        match segment.as_slice() {
            b"." => {}
            b".." => {
                kept.pop();
            }
            _ => {
                kept.push(segment);
                continue;
            }
        }
        // A trailing `.` or `..` leaves the path ending with a slash.
        if last {
            kept.push(Vec::new());
        }
    }
    let mut out = Vec::with_capacity(path.len());
    for segment in &kept {
        out.push(b'/');
        out.extend_from_slice(segment);
    }
    if out.is_empty() {
        out.push(b'/');
    }
    Some(out)
}

/// One segment: escapes of unreserved characters decoded, others kept, characters a path
/// cannot hold escaped.
fn canonical_segment(segment: &[u8]) -> Vec<u8> {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = Vec::with_capacity(segment.len());
    let mut i = 0;
    while i < segment.len() {
        let b = segment[i];
        let decoded = (b == b'%')
            .then(|| segment.get(i + 1..i + 3))
            .flatten()
            .and_then(|h| u8::from_str_radix(std::str::from_utf8(h).ok()?, 16).ok());
        match decoded {
            Some(v) if v.is_ascii_alphanumeric() || b"-._~".contains(&v) => out.push(v),
            // Other escapes stay as written (Envoy keeps their case).
            Some(_) => out.extend_from_slice(&segment[i..i + 3]),
            None if b <= b' ' || b >= 0x7f || b"\"#<>`{}".contains(&b) => {
                out.extend_from_slice(&[b'%', HEX[usize::from(b >> 4)], HEX[usize::from(b & 15)]]);
            }
            None => out.push(b),
        }
        i += if decoded.is_some() { 3 } else { 1 };
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn canon(path: &str) -> String {
        String::from_utf8(canonical(path.as_bytes()).expect("a path")).expect("text")
    }

    #[test]
    fn paths_are_made_canonical() {
        assert_eq!(canon("/a/./b/../c"), "/a/c");
        assert_eq!(canon("/a/b/.."), "/a/");
        assert_eq!(canon("/../../x"), "/x");
        assert_eq!(canon("/a/%2e%2E/b"), "/b");
        assert_eq!(canon("/%41%7e%2f%3A"), "/A~%2f%3A");
        assert_eq!(canon("/a\\b"), "/a/b");
        assert_eq!(canon("/a//b/"), "/a//b/");
        assert_eq!(canon("/sp ace"), "/sp%20ace");
    }

    #[test]
    fn escaped_slashes_and_merged_slashes() {
        let handling =
            |escaped| PathHandling { escaped_slashes: escaped, merge_slashes: true, ..PathHandling::default() };
        let mut h = Headers::from_pairs([(":path", "/a%2Fb//c?x=//y")]);
        assert_eq!(handle(&handling(EscapedSlashes::Unescape), 80, &mut h), PathVerdict::Go);
        assert_eq!(h.get(b":path"), Some(&b"/a/b/c?x=//y"[..]));
        let mut h = Headers::from_pairs([(":path", "/a%5cb")]);
        assert_eq!(handle(&handling(EscapedSlashes::Reject), 80, &mut h), PathVerdict::Reject);
        let mut h = Headers::from_pairs([(":path", "/a%2fb")]);
        assert_eq!(handle(&handling(EscapedSlashes::Redirect), 80, &mut h), PathVerdict::Redirect(b"/a/b".to_vec()));
    }

    #[test]
    fn ports_are_stripped() {
        let mut h = Headers::from_pairs([(":authority", "example.com:8080")]);
        strip_port(StripPort::Matching, 80, &mut h);
        assert_eq!(h.get(b":authority"), Some(&b"example.com:8080"[..]));
        strip_port(StripPort::Matching, 8080, &mut h);
        assert_eq!(h.get(b":authority"), Some(&b"example.com"[..]));
        let mut h = Headers::from_pairs([(":authority", "[::1]:9")]);
        strip_port(StripPort::Any, 80, &mut h);
        assert_eq!(h.get(b":authority"), Some(&b"[::1]"[..]));
    }
}
