//! Raw HTTP/2 frames, for clients that break the protocol on purpose: writing frames and
//! header blocks by hand, and reading back what a proxy answers (GOAWAY, RST_STREAM,
//! HEADERS, a close).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// The client connection preface.
pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// A DATA frame.
pub const DATA: u8 = 0;
/// A HEADERS frame.
pub const HEADERS: u8 = 1;
/// A RST_STREAM frame.
pub const RST_STREAM: u8 = 3;
/// A SETTINGS frame.
pub const SETTINGS: u8 = 4;
/// A PING frame.
pub const PING: u8 = 6;
/// A GOAWAY frame.
pub const GOAWAY: u8 = 7;
/// A WINDOW_UPDATE frame.
pub const WINDOW_UPDATE: u8 = 8;
/// A CONTINUATION frame.
pub const CONTINUATION: u8 = 9;
/// The flag that ends a stream (DATA, HEADERS).
pub const END_STREAM: u8 = 1;
/// The flag that ends a header block (HEADERS, CONTINUATION).
pub const END_HEADERS: u8 = 4;
/// The flag of a padded frame (its first byte is the padding's length).
pub const PADDED: u8 = 8;

/// One frame's bytes.
pub fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let mut f = (payload.len() as u32).to_be_bytes()[1..].to_vec();
    f.extend([kind, flags]);
    f.extend(stream.to_be_bytes());
    f.extend(payload);
    f
}

/// A header as an HPACK literal without indexing, no Huffman coding (name and value under
/// 128 bytes).
pub fn literal(name: &str, value: &str) -> Vec<u8> {
    let mut out = vec![0, name.len() as u8];
    out.extend(name.as_bytes());
    out.push(value.len() as u8);
    out.extend(value.as_bytes());
    out
}

/// The header block of `GET / http` (HPACK's static table) with `:authority: localhost`.
pub fn get() -> Vec<u8> {
    [&[0x82, 0x86, 0x84][..], &authority()].concat()
}

/// `:authority: localhost`, its name from the static table.
pub fn authority() -> Vec<u8> {
    [&[0x41, 9][..], b"localhost"].concat()
}

/// A `HEADERS` frame ending the stream with this block.
pub fn request(stream: u32, block: &[u8]) -> Vec<u8> {
    frame(HEADERS, END_STREAM | END_HEADERS, stream, block)
}

/// Sends the preface, an empty SETTINGS and `frames` (in one write: bytes the proxy has
/// not read when it closes would turn its close into a reset, which can drop the GOAWAY
/// before it is read), then says what came back, frame by frame: `GOAWAY <code>
/// last=<id>`, `RST_STREAM <id> <code>`, `HEADERS <id> <status>` (with ` END_STREAM` if
/// it ends the stream), `DATA <id> empty END_STREAM` (an empty frame that only ends the
/// stream), and `closed` if the proxy closed the connection within 2 s. SETTINGS, PING,
/// WINDOW_UPDATE and other DATA frames are left out. Once `until` is seen it reads 300 ms more (in which a close would show).
pub fn exchange(addr: &str, frames: &[u8], until: &str) -> std::io::Result<Vec<String>> {
    let mut socket = TcpStream::connect(addr)?;
    socket.set_read_timeout(Some(Duration::from_millis(50)))?;
    socket.write_all(&[PREFACE, &frame(SETTINGS, 0, 0, &[]), frames].concat())?;
    let (mut seen, mut buf) = (Vec::new(), Vec::new());
    let mut deadline = Instant::now() + Duration::from_secs(2);
    let mut chunk = [0u8; 16384];
    while Instant::now() < deadline {
        if seen.iter().any(|s| s == until) {
            deadline = deadline.min(Instant::now() + Duration::from_millis(300));
        }
        match socket.read(&mut chunk) {
            Ok(0) => {
                seen.push("closed".to_string());
                break;
            }
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
            Err(_) => {
                seen.push("closed".to_string());
                break;
            }
        }
        read_frames(&mut buf, &mut seen);
    }
    Ok(seen)
}

/// Takes the whole frames off the front of `buf`, describing those of interest.
fn read_frames(buf: &mut Vec<u8>, seen: &mut Vec<String>) {
    while buf.len() >= 9 {
        let len = u32::from_be_bytes([0, buf[0], buf[1], buf[2]]) as usize;
        if buf.len() < 9 + len {
            return;
        }
        let (kind, flags, stream) =
            (buf[3], buf[4], u32::from_be_bytes([buf[5], buf[6], buf[7], buf[8]]) & 0x7fff_ffff);
        let payload: Vec<u8> = buf.drain(..9 + len).skip(9).collect();
        let word = |at: usize| payload.get(at..at + 4).map_or(0, |w| u32::from_be_bytes([w[0], w[1], w[2], w[3]]));
        match kind {
            GOAWAY => seen.push(format!("GOAWAY {} last={}", error_code(word(4)), word(0))),
            RST_STREAM => seen.push(format!("RST_STREAM {stream} {}", error_code(word(0)))),
            HEADERS if flags & END_STREAM != 0 => {
                seen.push(format!("HEADERS {stream} {} END_STREAM", status(&payload)))
            }
            HEADERS => seen.push(format!("HEADERS {stream} {}", status(&payload))),
            // An empty DATA frame that only ends the stream (a response that could have ended
            // on its headers).
            DATA if payload.is_empty() && flags & END_STREAM != 0 => {
                seen.push(format!("DATA {stream} empty END_STREAM"))
            }
            _ => {}
        }
    }
}

/// An HTTP/2 error code's name.
pub fn error_code(code: u32) -> String {
    const NAMES: [&str; 14] = [
        "NO_ERROR",
        "PROTOCOL_ERROR",
        "INTERNAL_ERROR",
        "FLOW_CONTROL_ERROR",
        "SETTINGS_TIMEOUT",
        "STREAM_CLOSED",
        "FRAME_SIZE_ERROR",
        "REFUSED_STREAM",
        "CANCEL",
        "COMPRESSION_ERROR",
        "CONNECT_ERROR",
        "ENHANCE_YOUR_CALM",
        "INADEQUATE_SECURITY",
        "HTTP_1_1_REQUIRED",
    ];
    NAMES.get(code as usize).map_or(format!("code {code}"), |n| n.to_string())
}

/// The `:status` of a response header block sent from HPACK's static table (what Envoy
/// and wasmproxy do for these), after any dynamic table size update.
fn status(block: &[u8]) -> String {
    let at = block.iter().position(|b| b & 0xe0 != 0x20).unwrap_or(block.len());
    let literal = |rest: &[u8]| match rest {
        // The value's length without Huffman coding, then the value.
        [len, value @ ..] if len & 0x80 == 0 && value.len() >= usize::from(*len) => {
            String::from_utf8_lossy(&value[..usize::from(*len)]).into_owned()
        }
        _ => "another status".into(),
    };
    match &block[at..] {
        [0x88, ..] => "200".into(),
        [0x8c, ..] => "400".into(),
        [0x8d, ..] => "404".into(),
        [0x8e, ..] => "500".into(),
        // A literal whose name is `:status` (index 8), indexed or not.
        [0x48 | 0x08 | 0x18, rest @ ..] => literal(rest),
        _ => "another status".into(),
    }
}
