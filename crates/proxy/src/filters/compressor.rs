//! `envoy.filters.http.compressor`, as Envoy 1.40's: a response is compressed when the
//! client accepts the encoding (q-values, `identity`, `*`), its length, type, `etag`,
//! `cache-control` and `content-encoding` allow it; chunk by chunk, never held whole.
//! Requests are compressed when `request_direction_config` asks.

use std::rc::Rc;
use std::sync::Arc;

use bytes::Bytes;
use wasmproxy_config::model::{CompressionDirection, Compressor, CompressorPerRoute};
use wasmproxy_host::Headers;
use wasmproxy_stats::{Counter, Scope, Store};

use crate::filters::codec::Encoder;
use crate::filters::{RouteConfig, StreamRoute};
use crate::http::convert::has_token;
use crate::http::direction::Direction;
use crate::http::reply::Verdict;

/// Envoy's content types compressed when `content_type` is not given.
const DEFAULT_CONTENT_TYPES: &[&str] = &[
    "text/html",
    "text/plain",
    "text/css",
    "application/javascript",
    "application/x-javascript",
    "text/javascript",
    "text/x-javascript",
    "text/ecmascript",
    "text/js",
    "text/jscript",
    "text/x-js",
    "application/ecmascript",
    "application/x-json",
    "application/xml",
    "application/json",
    "image/svg+xml",
    "text/xml",
    "application/xhtml+xml",
    "application/grpc-web",
    "application/grpc-web+proto",
];

/// Transfer codings that mean the body is compressed already.
const COMPRESSING_CODINGS: &[&str] = &["gzip", "br", "deflate", "compress", "zstd"];

/// One direction's counters.
struct DirectionStats {
    compressed: Counter,
    not_compressed: Counter,
    total_uncompressed_bytes: Counter,
    total_compressed_bytes: Counter,
    content_length_too_small: Counter,
}

impl DirectionStats {
    fn new(scope: &Scope, segment: &str) -> DirectionStats {
        let c = |name: &str| scope.counter(&format!("{segment}{name}"));
        DirectionStats {
            compressed: c("compressed"),
            not_compressed: c("not_compressed"),
            total_uncompressed_bytes: c("total_uncompressed_bytes"),
            total_compressed_bytes: c("total_compressed_bytes"),
            content_length_too_small: c("content_length_too_small"),
        }
    }
}

/// The response-only counters (`Accept-Encoding` outcomes, etags).
struct AcceptStats {
    no_accept_header: Counter,
    header_identity: Counter,
    header_compressor_used: Counter,
    header_compressor_overshadowed: Counter,
    header_wildcard: Counter,
    header_not_valid: Counter,
    not_compressed_etag: Counter,
}

/// The filter on a worker.
pub struct CompressorFilter {
    name: String,
    config: Compressor,
    /// Every compressor of the chain, in order (this one among them).
    siblings: Vec<Sibling>,
    request_stats: DirectionStats,
    response_stats: DirectionStats,
    accept: AcceptStats,
}

impl CompressorFilter {
    /// The filter `name`, counting under `http_prefix` (`http.<stat_prefix>.`).
    pub fn new(
        name: String,
        config: &Compressor,
        siblings: Vec<Sibling>,
        store: &Arc<Store>,
        http_prefix: &str,
    ) -> CompressorFilter {
        let library = &config.library;
        let prefix = format!("{http_prefix}compressor.{}.{}.", library.name, library.algorithm.stat_name());
        let scope = Scope::new(store, &prefix, &format!("http.compressor.{}.", library.algorithm.stat_name()), &[]);
        let c = |name: &str| scope.counter(name);
        let accept = AcceptStats {
            no_accept_header: c("no_accept_header"),
            header_identity: c("header_identity"),
            header_compressor_used: c("header_compressor_used"),
            header_compressor_overshadowed: c("header_compressor_overshadowed"),
            header_wildcard: c("header_wildcard"),
            header_not_valid: c("header_not_valid"),
            not_compressed_etag: c("not_compressed_etag"),
        };
        CompressorFilter {
            name,
            siblings,
            request_stats: DirectionStats::new(&scope, "request."),
            response_stats: DirectionStats::new(&scope, if config.response_config_given { "response." } else { "" }),
            accept,
            config: config.clone(),
        }
    }
}

/// What `Accept-Encoding` decided.
#[derive(Debug, PartialEq)]
enum Choice {
    /// One compressor's encoding.
    Encoding(String),
    /// `identity`.
    Identity,
    /// `*`: the first compressor's encoding.
    Wildcard(String),
    /// Nothing acceptable.
    NotValid,
}

/// A compressor of the chain, as the others see it when they choose.
#[derive(Clone)]
pub struct Sibling {
    /// Its `content-encoding`.
    pub encoding: &'static str,
    /// Its response settings (the types it compresses).
    pub response: CompressionDirection,
    /// `choose_first`.
    pub choose_first: bool,
}

impl Sibling {
    /// The compressor `config` as a sibling.
    pub fn of(config: &Compressor) -> Sibling {
        Sibling {
            encoding: config.library.algorithm.encoding(),
            response: config.response.clone(),
            choose_first: config.choose_first,
        }
    }
}

/// One stream through the filter.
pub struct CompressorStream {
    filter: Rc<CompressorFilter>,
    /// The client's `accept-encoding`, as it came.
    accept_encoding: Option<String>,
    /// Whether responses may be compressed on this route.
    response_enabled: bool,
    /// Whether the request's `accept-encoding` goes no further.
    remove_accept_encoding: bool,
    /// The encoders compressing the body, per direction ([`Direction::index`]).
    encoders: [Option<Encoder>; 2],
}

impl CompressorStream {
    /// A stream on `route` (whose `CompressorPerRoute`, if any, turns responses off or on).
    pub fn new(filter: &Rc<CompressorFilter>, route: Option<StreamRoute<'_>>) -> CompressorStream {
        let per_route = route.and_then(|r| {
            r.filters.configs(&filter.name).find_map(|c| match c {
                RouteConfig::Compressor(c) => Some(c.clone()),
                _ => None,
            })
        });
        let config = &filter.config;
        let (response_enabled, remove_accept_encoding) = match per_route {
            Some(CompressorPerRoute::Disabled) => (false, config.remove_accept_encoding_header),
            Some(CompressorPerRoute::Enabled { remove_accept_encoding_header }) => {
                (true, remove_accept_encoding_header.unwrap_or(config.remove_accept_encoding_header))
            }
            None => (config.response.enabled, config.remove_accept_encoding_header),
        };
        CompressorStream {
            filter: filter.clone(),
            accept_encoding: None,
            response_enabled,
            remove_accept_encoding,
            encoders: [None, None],
        }
    }

    /// The request headers: the client's `accept-encoding` noted (and removed if asked),
    /// and the request's body compressed if `request_direction_config` allows.
    pub fn request_headers(&mut self, headers: &mut Headers, eos: bool) -> Verdict {
        self.accept_encoding = headers.get(b"accept-encoding").map(|v| String::from_utf8_lossy(v).into_owned());
        if self.response_enabled && self.remove_accept_encoding {
            headers.remove(b"accept-encoding");
        }
        let filter = self.filter.clone();
        let stats = &filter.request_stats;
        let compress = match &filter.config.request {
            Some(direction) if !eos && direction.enabled && !is_upgrade(headers) => {
                length_allows(headers, direction, stats)
                    && type_allows(headers, direction)
                    && headers.get(b"content-encoding").is_none()
                    && transfer_encoding_allows(headers, self.encoding())
            }
            _ => false,
        };
        if compress {
            self.start(Direction::Request, headers);
        } else {
            stats.not_compressed.inc();
        }
        Verdict::Continue
    }

    fn encoding(&self) -> &'static str {
        self.filter.config.library.algorithm.encoding()
    }

    /// Compression starts: the length goes, the encoding is named.
    fn start(&mut self, direction: Direction, headers: &mut Headers) {
        let stats = match direction {
            Direction::Request => &self.filter.request_stats,
            Direction::Response => &self.filter.response_stats,
        };
        let Ok(encoder) = Encoder::new(&self.filter.config.library.algorithm) else {
            stats.not_compressed.inc();
            return;
        };
        headers.remove(b"content-length");
        headers.replace(b"content-encoding", self.encoding().as_bytes());
        stats.compressed.inc();
        self.encoders[direction.index()] = Some(encoder);
    }

    /// The response headers: compressed if everything allows, with `vary` whenever it could be.
    pub fn response_headers(&mut self, headers: &mut Headers, eos: bool) -> Verdict {
        let filter = self.filter.clone();
        let config = &filter.config;
        let length_ok = self.response_enabled && length_allows(headers, &config.response, &filter.response_stats);
        let compressible = length_ok
            && !is_upgrade(headers)
            && type_allows(headers, &config.response)
            && !has_token(headers.get(b"cache-control"), "no-transform", false)
            && self.etag_allows(headers)
            && headers.get(b"content-encoding").is_none()
            && status_allows(headers, &config.uncompressible_response_codes);
        let accepted = !eos && length_ok && self.accepts(headers);
        if accepted && compressible && transfer_encoding_allows(headers, self.encoding()) {
            if let Some(etag) = headers.get(b"etag").map(<[u8]>::to_vec)
                && !(etag.starts_with(b"W/") || etag.starts_with(b"w/"))
            {
                if config.weaken_etag_on_compress {
                    headers.replace(b"etag", &[b"W/".as_slice(), &etag].concat());
                } else {
                    headers.remove(b"etag");
                }
            }
            self.start(Direction::Response, headers);
        } else {
            filter.response_stats.not_compressed.inc();
        }
        if compressible {
            insert_vary(headers);
        }
        Verdict::Continue
    }

    /// `disable_on_etag_header` refuses any response with an `etag` (unless it is to be
    /// weakened).
    fn etag_allows(&self, headers: &Headers) -> bool {
        let config = &self.filter.config;
        if config.weaken_etag_on_compress || !config.disable_on_etag_header || headers.get(b"etag").is_none() {
            return true;
        }
        self.filter.accept.not_compressed_etag.inc();
        false
    }

    /// Whether the client's `accept-encoding` picks this filter's encoding, counted as Envoy
    /// counts it.
    fn accepts(&self, response: &Headers) -> bool {
        let stats = &self.filter.accept;
        let Some(accept) = &self.accept_encoding else {
            stats.no_accept_header.inc();
            return false;
        };
        let content_type = response.get(b"content-type").map(media_type).unwrap_or_default();
        let candidates = self
            .filter
            .siblings
            .iter()
            .filter(|s| content_type.is_empty() || type_listed(&content_type, &s.response))
            .map(|s| (s.encoding, s.choose_first));
        let mut allowed: Vec<(&str, bool)> = Vec::new();
        for (encoding, first) in candidates {
            if !allowed.iter().any(|(e, _)| *e == encoding) {
                allowed.push((encoding, first));
            }
        }
        match choose(accept, allowed) {
            Choice::Encoding(e) if e.eq_ignore_ascii_case(self.encoding()) => {
                stats.header_compressor_used.inc();
                true
            }
            Choice::Encoding(_) => {
                stats.header_compressor_overshadowed.inc();
                false
            }
            Choice::Identity => {
                stats.header_identity.inc();
                false
            }
            Choice::Wildcard(e) => {
                stats.header_wildcard.inc();
                e.eq_ignore_ascii_case(self.encoding())
            }
            Choice::NotValid => {
                stats.header_not_valid.inc();
                false
            }
        }
    }

    /// A chunk of a body being compressed: what comes out (the whole rest at the end).
    pub fn data(&mut self, direction: Direction, chunk: Bytes, eos: bool) -> Bytes {
        let Some(encoder) = self.encoders[direction.index()].as_mut() else { return chunk };
        let stats = match direction {
            Direction::Request => &self.filter.request_stats,
            Direction::Response => &self.filter.response_stats,
        };
        stats.total_uncompressed_bytes.add(chunk.len() as u64);
        let out = encoder.encode(&chunk, eos).unwrap_or_default();
        stats.total_compressed_bytes.add(out.len() as u64);
        if eos {
            self.encoders[direction.index()] = None;
        }
        Bytes::from(out)
    }
}

/// Envoy's choice among the encodings `accept` lists, of the chain's compressors `allowed`
/// (their encodings, whether each has `choose_first`, in chain order): the highest q-value,
/// the earliest on a tie (unless a later one has `choose_first`), `identity`, or `*` for
/// the first compressor. Encoding names are compared as written, as in Envoy.
fn choose(accept: &str, mut allowed: Vec<(&str, bool)>) -> Choice {
    let mut pairs = Vec::new();
    for token in accept.split(',').filter(|t| !t.trim().is_empty()) {
        let (name, params) = match token.split_once(';') {
            Some((name, params)) => (name.trim(), Some(params)),
            None => (token.trim(), None),
        };
        let mut q = 1.0f64;
        if let Some((key, value)) = params.and_then(|p| p.split_once('='))
            && key.trim().eq_ignore_ascii_case("q")
        {
            match value.trim().parse::<f64>() {
                Ok(v) => q = v,
                Err(_) => continue,
            }
        }
        if q == 0.0 {
            allowed.retain(|(e, _)| *e != name);
        }
        pairs.push((name, q));
    }
    if pairs.is_empty() || allowed.is_empty() {
        return Choice::NotValid;
    }
    let mut choice = ("identity", 0.0f64);
    for (name, q) in pairs {
        let first = allowed.iter().find(|(e, _)| *e == name).map(|(_, first)| *first);
        if (first.is_some() || name == "identity" || name == "*")
            && (q > choice.1 || (q == choice.1 && first == Some(true)))
        {
            choice = (name, q);
        }
    }
    match choice {
        (_, 0.0) => Choice::NotValid,
        ("identity", _) => Choice::Identity,
        ("*", _) => Choice::Wildcard(allowed[0].0.to_string()),
        (name, _) => Choice::Encoding(name.to_string()),
    }
}

fn is_upgrade(headers: &Headers) -> bool {
    headers.get(b"upgrade").is_some() && has_token(headers.get(b"connection"), "upgrade", false)
}

/// `min_content_length`: a body without a length is long enough; a length that does not
/// parse, or is too small, is not (counted).
fn length_allows(headers: &Headers, direction: &CompressionDirection, stats: &DirectionStats) -> bool {
    let Some(length) = headers.get(b"content-length") else { return true };
    match std::str::from_utf8(length).ok().and_then(|l| l.trim().parse::<u64>().ok()) {
        Some(n) if n >= direction.min_content_length => true,
        _ => {
            stats.content_length_too_small.inc();
            false
        }
    }
}

/// The media type of a `content-type` (before `;`, trimmed, lower-cased).
fn media_type(value: &[u8]) -> String {
    let value = String::from_utf8_lossy(value);
    value.split(';').next().unwrap_or_default().trim_matches([' ', '\t']).to_ascii_lowercase()
}

fn type_listed(media_type: &str, direction: &CompressionDirection) -> bool {
    if direction.content_types.is_empty() {
        DEFAULT_CONTENT_TYPES.contains(&media_type)
    } else {
        direction.content_types.iter().any(|t| t == media_type)
    }
}

/// A body without a type may be compressed; one with a type, if it is listed.
fn type_allows(headers: &Headers, direction: &CompressionDirection) -> bool {
    headers.get(b"content-type").is_none_or(|t| type_listed(&media_type(t), direction))
}

/// No compressing transfer coding already (`chunked` is fine).
fn transfer_encoding_allows(headers: &Headers, encoding: &str) -> bool {
    let Some(te) = headers.get(b"transfer-encoding") else { return true };
    !String::from_utf8_lossy(te)
        .split(',')
        .map(str::trim)
        .any(|t| COMPRESSING_CODINGS.iter().any(|c| t.eq_ignore_ascii_case(c)) || t.eq_ignore_ascii_case(encoding))
}

fn status_allows(headers: &Headers, refused: &[u16]) -> bool {
    let status = headers.get(b":status").and_then(|s| std::str::from_utf8(s).ok()?.parse::<u16>().ok());
    status.is_none_or(|s| !refused.contains(&s))
}

/// `vary: Accept-Encoding`, added to (not duplicated in) a `vary` already there; Envoy
/// compares the tokens case-sensitively.
fn insert_vary(headers: &mut Headers) {
    match headers.get(b"vary").map(<[u8]>::to_vec) {
        None => headers.add(b"vary", b"Accept-Encoding"),
        Some(v) if has_token(Some(&v), "Accept-Encoding", true) => {}
        Some(v) => headers.replace(b"vary", &[v.as_slice(), b", Accept-Encoding"].concat()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn picks(accept: &str) -> &'static str {
        match choose(accept, vec![("gzip", false)]) {
            Choice::Encoding(e) if e == "gzip" => "gzip",
            Choice::Encoding(_) => "other",
            Choice::Identity => "identity",
            Choice::Wildcard(_) => "wildcard",
            Choice::NotValid => "not valid",
        }
    }

    #[test]
    fn several_compressors_share_one_choice() {
        let both = || vec![("gzip", false), ("br", false)];
        assert_eq!(choose("br, gzip", both()), Choice::Encoding("br".into()));
        assert_eq!(choose("gzip;q=0.5, br;q=0.5", both()), Choice::Encoding("gzip".into()));
        assert_eq!(choose("gzip;q=0.5, br;q=0.5", vec![("gzip", false), ("br", true)]), Choice::Encoding("br".into()));
        assert_eq!(choose("*", both()), Choice::Wildcard("gzip".into()));
    }

    #[test]
    fn accept_encoding_is_read_as_envoy_reads_it() {
        assert_eq!(picks("deflate, gzip, br"), "gzip");
        assert_eq!(picks("\tdeflate\t, gzip\t ; q\t =\t 1.0,\t * ;q=0.5"), "gzip");
        assert_eq!(picks("xyz;q=1, br;q=0.2, *"), "wildcard");
        assert_eq!(picks("gzip;Q=.5"), "gzip");
        assert_eq!(picks("identity, *;q=0"), "identity");
        assert_eq!(picks("identity;q=0"), "not valid");
        assert_eq!(picks("identity;q=0.5, *;q=0"), "identity");
        assert_eq!(picks("xyz;q=1, br;q=0.2"), "not valid");
        assert_eq!(picks(""), "not valid");
        assert_eq!(picks("gzip;q=invalid"), "not valid");
        assert_eq!(picks("GZIP"), "not valid");
        assert_eq!(picks("gzip;q=0,*;q=1"), "not valid");
        assert_eq!(picks("*;q=0,gzip;q=1"), "gzip");
    }

    #[test]
    fn vary_gets_accept_encoding_once() {
        let mut h = Headers::new();
        insert_vary(&mut h);
        assert_eq!(h.get(b"vary"), Some(&b"Accept-Encoding"[..]));
        let mut h = Headers::from_pairs([("vary", "accept-encoding")]);
        insert_vary(&mut h);
        assert_eq!(h.get(b"vary"), Some(&b"accept-encoding, Accept-Encoding"[..]));
        let mut h = Headers::from_pairs([("vary", "Accept-Encoding, Cookie")]);
        insert_vary(&mut h);
        assert_eq!(h.get(b"vary"), Some(&b"Accept-Encoding, Cookie"[..]));
    }
}
