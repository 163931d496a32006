//! What Envoy's HTTP/1.1 codec refuses in a request head and hyper's would let through:
//! the shapes that smuggle a request past a proxy that reads its length differently from
//! the upstream (Content-Length with Transfer-Encoding, Content-Length given twice, a
//! coding other than `chunked`). And Envoy's shape for the error answers hyper writes on
//! its own (a body with the reason phrase, `content-type`, `server`).

/// Why a request head is refused: the status and its reason phrase.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refusal {
    /// 400, 431 or 501.
    pub status: u16,
    /// The reason phrase, also the body.
    pub reason: &'static str,
}

const BAD_REQUEST: Refusal = Refusal { status: 400, reason: "Bad Request" };
const NOT_IMPLEMENTED: Refusal = Refusal { status: 501, reason: "Not Implemented" };
const TOO_LARGE: Refusal = Refusal { status: 431, reason: "Request Header Fields Too Large" };

/// The end of the request head (the index after its blank line), if it is all there.
pub fn head_end(bytes: &[u8]) -> Option<usize> {
    bytes.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4)
}

/// Checks a whole request head (request line and headers) as Envoy 1.40 does:
/// Content-Length together with Transfer-Encoding, or Content-Length more than once (even
/// with the same value), or not a number: 400; a Transfer-Encoding other than `chunked`
/// (`gzip`, `chunked, chunked`): 501.
pub fn check(head: &[u8]) -> Result<(), Refusal> {
    if head.len() > crate::limits::MAX_REQUEST_HEADERS_BYTES {
        return Err(TOO_LARGE);
    }
    let mut lengths = 0;
    let mut codings = 0;
    for line in head.split(|b| *b == b'\n').skip(1) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let Some(colon) = line.iter().position(|b| *b == b':') else { continue };
        let (name, value) = (&line[..colon], trim(&line[colon + 1..]));
        if name.eq_ignore_ascii_case(b"content-length") {
            lengths += 1;
            if value.is_empty() || !value.iter().all(u8::is_ascii_digit) {
                return Err(BAD_REQUEST);
            }
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            codings += 1;
            if !value.eq_ignore_ascii_case(b"chunked") {
                return Err(NOT_IMPLEMENTED);
            }
        }
    }
    if lengths > 1 || (lengths > 0 && codings > 0) {
        return Err(BAD_REQUEST);
    }
    if codings > 1 {
        return Err(NOT_IMPLEMENTED);
    }
    Ok(())
}

fn trim(mut v: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = v {
        v = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = v {
        v = rest;
    }
    v
}

/// Envoy's answer to a request its codec refuses: the reason phrase as a `text/plain`
/// body, then the connection closes.
pub fn error_response(status: u16, reason: &str, server: &str, date: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 {status} {reason}\r\ncontent-length: {}\r\ncontent-type: text/plain\r\ndate: {date}\r\nserver: {server}\r\nconnection: close\r\n\r\n{reason}",
        reason.len()
    )
    .into_bytes()
}

/// Whether `bytes` start like a 4xx or 5xx answer (a cheap look before
/// [`hypers_own_error`], which only such answers can be).
pub fn may_be_an_error_answer(bytes: &[u8]) -> bool {
    bytes.len() > 12 && bytes.starts_with(b"HTTP/1.1 ") && matches!(bytes[9], b'4' | b'5')
}

/// If `bytes` are an error answer hyper wrote on its own (a 4xx or 5xx with an empty body
/// and no `server`, which every answer the proxy makes carries), its status and reason.
pub fn hypers_own_error(bytes: &[u8]) -> Option<(u16, &str)> {
    let text = std::str::from_utf8(bytes).ok()?;
    let (status_line, rest) = text.split_once("\r\n")?;
    let rest = rest.to_ascii_lowercase();
    if !rest.contains("content-length: 0\r\n") || rest.contains("\r\nserver:") || rest.starts_with("server:") {
        return None;
    }
    let mut parts = status_line.splitn(3, ' ');
    let (version, code, reason) = (parts.next()?, parts.next()?, parts.next()?);
    let status: u16 = code.parse().ok()?;
    (version == "HTTP/1.1" && (400..600).contains(&status)).then_some((status, reason))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(lines: &str) -> Vec<u8> {
        format!("POST / HTTP/1.1\r\nhost: x\r\n{lines}\r\n").into_bytes()
    }

    #[test]
    fn smuggling_shapes_are_refused_as_envoy_refuses_them() {
        assert_eq!(check(&head("content-length: 3\r\n")), Ok(()));
        assert_eq!(check(&head("Transfer-Encoding: Chunked\r\n")), Ok(()));
        assert_eq!(check(&head("content-length: 5\r\ntransfer-encoding: chunked\r\n")), Err(BAD_REQUEST));
        assert_eq!(check(&head("content-length: 3\r\ncontent-length: 3\r\n")), Err(BAD_REQUEST));
        assert_eq!(check(&head("content-length: -1\r\n")), Err(BAD_REQUEST));
        assert_eq!(check(&head("content-length: 3, 3\r\n")), Err(BAD_REQUEST));
        assert_eq!(check(&head("transfer-encoding: gzip\r\n")), Err(NOT_IMPLEMENTED));
        assert_eq!(check(&head("transfer-encoding: chunked, chunked\r\n")), Err(NOT_IMPLEMENTED));
        assert_eq!(head_end(b"GET / HTTP/1.1\r\n\r\nbody"), Some(18));
        let big = head(&format!("x-big: {}\r\n", "a".repeat(crate::limits::MAX_REQUEST_HEADERS_BYTES)));
        assert_eq!(check(&big), Err(TOO_LARGE));
    }

    #[test]
    fn hypers_error_answers_are_told_from_the_proxys() {
        let hyper = b"HTTP/1.1 400 Bad Request\r\nconnection: close\r\ncontent-length: 0\r\ndate: x\r\n\r\n";
        assert_eq!(hypers_own_error(hyper), Some((400, "Bad Request")));
        let ours = b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\ndate: x\r\nserver: envoy\r\n\r\n";
        assert_eq!(hypers_own_error(ours), None);
        assert_eq!(hypers_own_error(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"), None);
    }
}
