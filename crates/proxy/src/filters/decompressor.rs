//! `envoy.filters.http.decompressor`, as Envoy 1.40's: a body whose first content coding
//! is the library's is decompressed chunk by chunk in either direction, no chunk inflating
//! past the library's ratio; requests advertise the encoding in `accept-encoding`.

use std::rc::Rc;
use std::sync::Arc;

use bytes::Bytes;
use wasmproxy_config::model::Decompressor;
use wasmproxy_host::Headers;
use wasmproxy_stats::{Counter, Scope, Store};

use crate::filters::codec::{DecodeError, Decoder};
use crate::http::convert::has_token;
use crate::http::direction::Direction;
use crate::http::reply::{DataVerdict, Verdict};

/// One direction's counters.
struct DirectionStats {
    decompressed: Counter,
    not_decompressed: Counter,
    total_compressed_bytes: Counter,
    total_uncompressed_bytes: Counter,
}

/// The filter on a worker.
pub struct DecompressorFilter {
    config: Decompressor,
    /// Per direction ([`Direction::index`]).
    stats: [DirectionStats; 2],
    /// The library's error counter bad input counts in (`decompressor_library.<error>`).
    library_error: Counter,
    /// Its other error counters, which stay 0 here.
    _other_errors: Vec<Counter>,
}

impl DecompressorFilter {
    /// The filter configured so, counting under `http_prefix` (`http.<stat_prefix>.`).
    pub fn new(config: &Decompressor, store: &Arc<Store>, http_prefix: &str) -> DecompressorFilter {
        let algorithm = &config.library.algorithm;
        let prefix = format!("{http_prefix}decompressor.{}.{}.", config.library.name, algorithm.stat_name());
        let scope = Scope::new(store, &prefix, &format!("http.decompressor.{}.", algorithm.stat_name()), &[]);
        let direction = |segment: &str| {
            let c = |name: &str| scope.counter(&format!("{segment}.{name}"));
            DirectionStats {
                decompressed: c("decompressed"),
                not_decompressed: c("not_decompressed"),
                total_compressed_bytes: c("total_compressed_bytes"),
                total_uncompressed_bytes: c("total_uncompressed_bytes"),
            }
        };
        // Every error counter of Envoy's library; the first is what bad input counts in.
        let errors: &[&str] = match algorithm.stat_name() {
            "gzip" => &[
                "zlib_data_error",
                "zlib_errno",
                "zlib_stream_error",
                "zlib_mem_error",
                "zlib_buf_error",
                "zlib_version_error",
            ],
            "brotli" => &["brotli_error"],
            _ => &["zstd_generic_error", "zstd_dictionary_error", "zstd_checksum_wrong_error", "zstd_memory_error"],
        };
        let mut counters = errors.iter().map(|e| scope.counter(&format!("decompressor_library.{e}")));
        DecompressorFilter {
            stats: [direction("request"), direction("response")],
            library_error: counters.next().unwrap_or_else(|| Counter::detached("decompressor_library")),
            _other_errors: counters.collect(),
            config: config.clone(),
        }
    }

    fn enabled(&self, direction: Direction) -> bool {
        match direction {
            Direction::Request => self.config.request_enabled,
            Direction::Response => self.config.response_enabled,
        }
    }
}

/// One stream through the filter.
pub struct DecompressorStream {
    filter: Rc<DecompressorFilter>,
    /// The decoders decompressing the body, per direction ([`Direction::index`]), with
    /// the bytes in and out so far.
    decoders: [Option<(Decoder, u64, u64)>; 2],
}

impl DecompressorStream {
    /// A new stream.
    pub fn new(filter: &Rc<DecompressorFilter>) -> DecompressorStream {
        DecompressorStream { filter: filter.clone(), decoders: [None, None] }
    }

    /// The request headers: the encoding advertised, and the body decompressed if it is
    /// of this encoding.
    pub fn request_headers(&mut self, headers: &mut Headers, eos: bool) -> Verdict {
        let config = &self.filter.config;
        if config.response_enabled && config.advertise_accept_encoding {
            let encoding = config.library.algorithm.encoding();
            let old = headers.get(b"accept-encoding").map(|v| String::from_utf8_lossy(v).into_owned());
            headers.replace(b"accept-encoding", advertise(old.as_deref().unwrap_or(""), encoding).as_bytes());
        }
        if !eos {
            self.start(Direction::Request, headers);
        }
        Verdict::Continue
    }

    /// The response headers: the body decompressed if it is of this encoding.
    pub fn response_headers(&mut self, headers: &mut Headers, eos: bool) -> Verdict {
        if !eos {
            self.start(Direction::Response, headers);
        }
        Verdict::Continue
    }

    /// Decompression starts if enabled, allowed (`no-transform`) and the body's first
    /// content coding is this one: the length goes, the coding is taken off.
    fn start(&mut self, direction: Direction, headers: &mut Headers) {
        let filter = self.filter.clone();
        let stats = &filter.stats[direction.index()];
        let encoding = filter.config.library.algorithm.encoding();
        let transform_ok = filter.config.ignore_no_transform[direction.index()]
            || !has_token(headers.get(b"cache-control"), "no-transform", false);
        let codings = headers.get(b"content-encoding").map(|v| String::from_utf8_lossy(v).into_owned());
        let first = codings.as_deref().map(|c| c.split(',').next().unwrap_or_default().trim());
        if !(filter.enabled(direction) && transform_ok && first.is_some_and(|f| f.eq_ignore_ascii_case(encoding))) {
            stats.not_decompressed.inc();
            return;
        }
        let Ok(decoder) = Decoder::new(&filter.config.library.algorithm) else {
            stats.not_decompressed.inc();
            return;
        };
        stats.decompressed.inc();
        headers.remove(b"content-length");
        match codings.as_deref().and_then(|c| c.split_once(',')) {
            Some((_, rest)) => headers.replace(b"content-encoding", rest.trim().as_bytes()),
            None => headers.remove(b"content-encoding"),
        }
        self.decoders[direction.index()] = Some((decoder, 0, 0));
    }

    /// A chunk of a body being decompressed: what comes out of it. Corrupt input, or a
    /// chunk inflating past the ratio, is counted and ends the body's output there, as in
    /// Envoy (the headers are gone already). At the end, the body goes on to trailers that
    /// say how many bytes came in and out.
    pub fn data(&mut self, direction: Direction, chunk: Bytes, eos: bool) -> DataVerdict {
        let Some((decoder, bytes_in, bytes_out)) = self.decoders[direction.index()].as_mut() else {
            return DataVerdict::Pass(chunk);
        };
        let stats = &self.filter.stats[direction.index()];
        stats.total_compressed_bytes.add(chunk.len() as u64);
        let (out, error) = decoder.decode(&chunk, self.filter.config.max_inflate_ratio as usize);
        if matches!(error, Some(DecodeError::Corrupt | DecodeError::TooLarge)) {
            self.filter.library_error.inc();
        }
        stats.total_uncompressed_bytes.add(out.len() as u64);
        *bytes_in += chunk.len() as u64;
        *bytes_out += out.len() as u64;
        if eos { DataVerdict::PassOpen(Bytes::from(out)) } else { DataVerdict::Pass(Bytes::from(out)) }
    }

    /// The trailers of a body decompressed here get the byte counts, as Envoy adds them
    /// (`x-envoy-decompressor-<library>-compressed-bytes`, `-uncompressed-bytes`).
    pub fn trailers(&mut self, direction: Direction, trailers: &mut Headers) -> Verdict {
        if let Some((_, bytes_in, bytes_out)) = self.decoders[direction.index()].take() {
            let name = &self.filter.config.library.name;
            trailers.add(
                format!("x-envoy-decompressor-{name}-compressed-bytes").as_bytes(),
                bytes_in.to_string().as_bytes(),
            );
            trailers.add(
                format!("x-envoy-decompressor-{name}-uncompressed-bytes").as_bytes(),
                bytes_out.to_string().as_bytes(),
            );
        }
        Verdict::Continue
    }
}

/// `accept-encoding` with `encoding` last: its own entries removed, the others trimmed,
/// joined with commas, as Envoy rewrites it.
fn advertise(old: &str, encoding: &str) -> String {
    let mut tokens: Vec<&str> = old
        .split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty() && t.split(';').next().map(str::trim) != Some(encoding))
        .collect();
    tokens.push(encoding);
    tokens.join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_encoding_is_advertised_last_and_once() {
        assert_eq!(advertise("", "gzip"), "gzip");
        assert_eq!(advertise("gzip;q=0.3, br", "gzip"), "br,gzip");
        assert_eq!(advertise(" deflate ,, gzip", "br"), "deflate,gzip,br");
    }
}
