//! Streaming gzip, brotli and zstd, chunk by chunk as Envoy's compression libraries work:
//! gzip and brotli flush every chunk (a client decodes as it reads), zstd only emits whole
//! blocks until the end. gzip is zlib-ng, the library Envoy links.

use std::io::Write;
use std::os::raw::c_int;

use flate2::{Decompress, FlushDecompress, Status};
use libz_ng_sys as zng;
use wasmproxy_config::model::Algorithm;

/// Room for output beyond the input's size, for headers and flush markers.
const SLACK: usize = 64;

/// A body being compressed.
pub enum Encoder {
    /// gzip (deflate with the gzip wrapper).
    Gzip(Deflate),
    /// brotli, into a buffer emptied after each chunk.
    Brotli(Box<brotli::CompressorWriter<Vec<u8>>>),
    /// zstd, into a buffer emptied after each chunk.
    Zstd(Box<zstd::stream::write::Encoder<'static, Vec<u8>>>),
}

impl Encoder {
    /// A new stream with the library's settings.
    pub fn new(algorithm: &Algorithm) -> std::io::Result<Encoder> {
        Ok(match *algorithm {
            Algorithm::Gzip { level, window_bits, memory_level, strategy } => {
                Encoder::Gzip(Deflate::new(level, window_bits, memory_level, strategy)?)
            }
            Algorithm::Brotli { quality, window_bits } => {
                Encoder::Brotli(Box::new(brotli::CompressorWriter::new(Vec::new(), 4096, quality, window_bits)))
            }
            Algorithm::Zstd { level } => Encoder::Zstd(Box::new(zstd::stream::write::Encoder::new(Vec::new(), level)?)),
        })
    }

    /// Compresses one chunk: what comes out now (all of it, flushed, for gzip and brotli;
    /// the rest of the stream when `finish`).
    pub fn encode(&mut self, input: &[u8], finish: bool) -> std::io::Result<Vec<u8>> {
        match self {
            Encoder::Gzip(d) => Ok(d.deflate(input, finish)),
            Encoder::Brotli(w) => {
                w.write_all(input)?;
                if finish {
                    // Closing writes the last block; the writer is then spent.
                    let done = std::mem::replace(&mut **w, brotli::CompressorWriter::new(Vec::new(), 4096, 0, 10));
                    return Ok(done.into_inner());
                }
                w.flush()?;
                Ok(std::mem::take(w.get_mut()))
            }
            Encoder::Zstd(e) => {
                e.write_all(input)?;
                if finish {
                    e.do_finish()?;
                }
                Ok(std::mem::take(e.get_mut()))
            }
        }
    }
}

/// A zlib-ng deflate stream with every setting Envoy's gzip compressor takes (flate2 fixes
/// the memory level and the strategy).
pub struct Deflate {
    /// Boxed: zlib-ng's state points back at its stream.
    stream: Box<zng::z_stream>,
}

unsafe extern "C" fn zng_alloc(_: zng::voidpf, items: zng::uInt, size: zng::uInt) -> zng::voidpf {
    // SAFETY: plain malloc; zlib-ng aligns within what it is given and checks for null.
    unsafe { libc::malloc((items as usize).saturating_mul(size as usize)) }
}

unsafe extern "C" fn zng_free(_: zng::voidpf, address: zng::voidpf) {
    // SAFETY: `address` came from `zng_alloc`.
    unsafe { libc::free(address) }
}

impl Deflate {
    /// A gzip stream: `level` 0 is zlib's default (6), as Envoy's DEFAULT_COMPRESSION.
    fn new(level: u32, window_bits: u8, memory_level: u8, strategy: u8) -> std::io::Result<Deflate> {
        let mut stream = Box::new(zng::z_stream {
            next_in: std::ptr::null_mut(),
            avail_in: 0,
            total_in: 0,
            next_out: std::ptr::null_mut(),
            avail_out: 0,
            total_out: 0,
            msg: std::ptr::null_mut(),
            state: std::ptr::null_mut(),
            zalloc: zng_alloc,
            zfree: zng_free,
            opaque: std::ptr::null_mut(),
            data_type: 0,
            adler: 0,
            reserved: 0,
        });
        let level = if level == 0 { -1 } else { level as c_int };
        // SAFETY: the stream is initialized above and stays where the box put it.
        let code = unsafe {
            zng::deflateInit2_(
                &mut *stream,
                level,
                zng::Z_DEFLATED,
                // Plus 16: the gzip wrapper.
                c_int::from(window_bits) + 16,
                c_int::from(memory_level),
                c_int::from(strategy),
                zng::zlibVersion(),
                std::mem::size_of::<zng::z_stream>() as c_int,
            )
        };
        if code != zng::Z_OK {
            return Err(std::io::Error::other(format!("zlib-ng refused the gzip settings (code {code})")));
        }
        Ok(Deflate { stream })
    }

    /// Compresses all of `input`, flushed (or finished), growing the output until done.
    fn deflate(&mut self, input: &[u8], finish: bool) -> Vec<u8> {
        let flush = if finish { zng::Z_FINISH } else { zng::Z_SYNC_FLUSH };
        let mut out: Vec<u8> = Vec::with_capacity(input.len() / 2 + SLACK);
        let mut rest = input;
        loop {
            let piece = rest.len().min(u32::MAX as usize);
            self.stream.next_in = rest.as_ptr().cast_mut();
            self.stream.avail_in = piece as u32;
            if out.capacity() - out.len() < SLACK {
                out.reserve(out.capacity().max(4 * SLACK));
            }
            let room = (out.capacity() - out.len()).min(u32::MAX as usize);
            // SAFETY: the output pointer and room are the vector's spare capacity.
            self.stream.next_out = unsafe { out.as_mut_ptr().add(out.len()) };
            self.stream.avail_out = room as u32;
            // SAFETY: the stream was initialized by `new`; its pointers are set above, and
            // zlib-ng only reads `next_in`.
            let code = unsafe { zng::deflate(&mut *self.stream, flush) };
            let written = room - self.stream.avail_out as usize;
            // SAFETY: zlib-ng wrote `written` bytes into the spare capacity.
            unsafe { out.set_len(out.len() + written) };
            rest = &rest[piece - self.stream.avail_in as usize..];
            self.stream.next_in = std::ptr::null_mut();
            match code {
                zng::Z_OK | zng::Z_BUF_ERROR if !rest.is_empty() || self.stream.avail_out == 0 => {}
                // Done: everything in, and room left in the output (it has flushed), the
                // stream's end, or an error (which zlib-ng only gives for a misuse).
                _ => return out,
            }
        }
    }
}

impl Drop for Deflate {
    fn drop(&mut self) {
        // SAFETY: the stream was initialized by `new` and is ended once.
        unsafe { zng::deflateEnd(&mut *self.stream) };
    }
}

/// A body being decompressed, with a bound on how much one chunk may inflate to.
pub enum Decoder {
    /// gzip.
    Gzip(Box<Decompress>),
    /// brotli.
    Brotli(Box<brotli::DecompressorWriter<Vec<u8>>>),
    /// zstd.
    Zstd(Box<zstd::stream::write::Decoder<'static, Vec<u8>>>),
    /// Broken by bad input: nothing more comes out.
    Failed,
}

/// Why a chunk did not decompress whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecodeError {
    /// The input is not of this format, or corrupt.
    Corrupt,
    /// The chunk inflates past the ratio allowed.
    TooLarge,
}

impl Decoder {
    /// A new stream; gzip takes `window_bits` (9 to 15).
    pub fn new(algorithm: &Algorithm) -> std::io::Result<Decoder> {
        Ok(match *algorithm {
            Algorithm::Gzip { window_bits, .. } => Decoder::Gzip(Box::new(Decompress::new_gzip(window_bits))),
            Algorithm::Brotli { .. } => Decoder::Brotli(Box::new(brotli::DecompressorWriter::new(Vec::new(), 4096))),
            Algorithm::Zstd { .. } => Decoder::Zstd(Box::new(zstd::stream::write::Decoder::new(Vec::new())?)),
        })
    }

    /// Decompresses one chunk, up to `ratio` times its size: what came out, and the error
    /// that stopped it (after which nothing more comes out, as from Envoy's libraries).
    pub fn decode(&mut self, input: &[u8], ratio: usize) -> (Vec<u8>, Option<DecodeError>) {
        let limit = input.len().saturating_mul(ratio).max(SLACK);
        let (out, error) = match self {
            Decoder::Failed => return (Vec::new(), None),
            Decoder::Gzip(d) => inflate(d, input, limit),
            Decoder::Brotli(w) => write_bounded(&mut **w, input, limit, |w| std::mem::take(w.get_mut())),
            Decoder::Zstd(w) => write_bounded(&mut **w, input, limit, |w| std::mem::take(w.get_mut())),
        };
        if error.is_some() {
            *self = Decoder::Failed;
        }
        (out, error)
    }
}

/// Feeds `input` to a writing decoder in pieces, taking its output after each, until done
/// or past `limit`.
fn write_bounded<W: Write>(
    w: &mut W,
    input: &[u8],
    limit: usize,
    mut take: impl FnMut(&mut W) -> Vec<u8>,
) -> (Vec<u8>, Option<DecodeError>) {
    let mut out = Vec::new();
    for piece in input.chunks(4096) {
        if w.write_all(piece).and_then(|()| w.flush()).is_err() {
            out.extend(take(w));
            return (out, Some(DecodeError::Corrupt));
        }
        out.extend(take(w));
        if out.len() > limit {
            out.truncate(limit);
            return (out, Some(DecodeError::TooLarge));
        }
    }
    (out, None)
}

/// Inflates `input`, up to `limit` bytes out.
fn inflate(d: &mut Decompress, input: &[u8], limit: usize) -> (Vec<u8>, Option<DecodeError>) {
    let mut out = Vec::with_capacity((input.len() * 4).min(limit) + SLACK);
    let start = d.total_in();
    loop {
        let consumed = (d.total_in() - start) as usize;
        if out.len() >= limit {
            out.truncate(limit);
            return (out, Some(DecodeError::TooLarge));
        }
        if out.capacity() - out.len() < SLACK {
            out.reserve(out.capacity().max(4 * SLACK).min(limit + SLACK));
        }
        match d.decompress_vec(&input[consumed..], &mut out, FlushDecompress::Sync) {
            // Bytes after the end of the gzip member are ignored, as zlib leaves them.
            Ok(Status::StreamEnd) => return (out, None),
            Err(_) => return (out, Some(DecodeError::Corrupt)),
            Ok(_) if (d.total_in() - start) as usize == input.len() && out.len() < out.capacity() => {
                return (out, None);
            }
            Ok(Status::BufError) if (d.total_in() - start) as usize == input.len() => return (out, None),
            Ok(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(algorithm: Algorithm) {
        let text: Vec<u8> = (0..20_000).map(|i| b"wasmproxy compresses "[i % 21]).collect();
        let mut encoder = Encoder::new(&algorithm).unwrap();
        let mut compressed = Vec::new();
        for chunk in text.chunks(3000) {
            compressed.extend(encoder.encode(chunk, false).unwrap());
        }
        compressed.extend(encoder.encode(b"", true).unwrap());
        assert!(compressed.len() < text.len() / 10, "{algorithm:?}: {} bytes", compressed.len());
        let mut decoder = Decoder::new(&algorithm).unwrap();
        let mut plain = Vec::new();
        for chunk in compressed.chunks(100) {
            // A generous ratio: a library may let out much of the body on one small chunk.
            let (out, error) = decoder.decode(chunk, 100_000);
            assert_eq!(error, None, "{algorithm:?}");
            plain.extend(out);
        }
        assert_eq!(plain, text, "{algorithm:?}");
    }

    #[test]
    fn each_library_round_trips_a_body_sent_in_chunks() {
        round_trip(Algorithm::Gzip { level: 0, window_bits: 12, memory_level: 5, strategy: 0 });
        round_trip(Algorithm::Brotli { quality: 3, window_bits: 18 });
        round_trip(Algorithm::Zstd { level: 3 });
    }

    #[test]
    fn every_gzip_setting_envoy_takes_changes_the_stream() {
        let text: Vec<u8> = (0..50_000u32).flat_map(|i| format!("{} ", i % 977).into_bytes()).collect();
        let gzip = |memory_level, strategy| {
            let algorithm = Algorithm::Gzip { level: 0, window_bits: 12, memory_level, strategy };
            let compressed = Encoder::new(&algorithm).unwrap().encode(&text, true).unwrap();
            let (plain, error) = Decoder::new(&algorithm).unwrap().decode(&compressed, 1000);
            assert_eq!((plain == text, error), (true, None), "memory level {memory_level}, strategy {strategy}");
            compressed
        };
        let default = gzip(5, 0);
        assert_ne!(gzip(1, 0), default, "memory level");
        // FILTERED is zlib-ng's default match finding at this level: it only round-trips.
        gzip(5, 1);
        for strategy in 2..=4 {
            assert_ne!(gzip(5, strategy), default, "strategy {strategy}");
        }
        // Huffman coding alone finds no repeats.
        assert!(gzip(5, 2).len() > 2 * default.len());
    }

    #[test]
    fn gzip_and_brotli_flush_every_chunk_and_zstd_waits_for_the_end() {
        for (algorithm, flushes) in [
            (Algorithm::Gzip { level: 0, window_bits: 15, memory_level: 5, strategy: 0 }, true),
            (Algorithm::Brotli { quality: 3, window_bits: 18 }, true),
            (Algorithm::Zstd { level: 3 }, false),
        ] {
            let mut encoder = Encoder::new(&algorithm).unwrap();
            let first = encoder.encode(b"hello, hello, hello", false).unwrap();
            assert_eq!(!first.is_empty(), flushes, "{algorithm:?}");
            let mut decoder = Decoder::new(&algorithm).unwrap();
            if flushes {
                assert_eq!(decoder.decode(&first, 100).0, b"hello, hello, hello", "{algorithm:?}");
            }
        }
    }

    #[test]
    fn a_bomb_stops_at_the_ratio_and_garbage_is_corrupt() {
        let zeros = vec![0u8; 1 << 20];
        let algorithm = Algorithm::Gzip { level: 9, window_bits: 15, memory_level: 8, strategy: 0 };
        let compressed = Encoder::new(&algorithm).unwrap().encode(&zeros, true).unwrap();
        let (out, error) = Decoder::new(&algorithm).unwrap().decode(&compressed, 100);
        assert_eq!(error, Some(DecodeError::TooLarge));
        assert!(out.len() <= compressed.len() * 100);
        for algorithm in [algorithm, Algorithm::Brotli { quality: 3, window_bits: 18 }, Algorithm::Zstd { level: 3 }] {
            let (_, error) = Decoder::new(&algorithm).unwrap().decode(b"this is not compressed at all", 100);
            assert_eq!(error, Some(DecodeError::Corrupt), "{algorithm:?}");
        }
    }
}
