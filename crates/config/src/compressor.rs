//! `envoy.filters.http.compressor` and `envoy.filters.http.decompressor` with their gzip,
//! brotli and zstd libraries, and `CompressorPerRoute`.

use crate::model::{Algorithm, CompressionDirection, CompressionLibrary, Compressor, CompressorPerRoute, Decompressor};
use crate::reader::{Ctx, Field, Msg, type_error};
use crate::runtime::read_feature_flag;

pub(crate) const COMPRESSOR_TYPE: &str = "envoy.extensions.filters.http.compressor.v3.Compressor";
pub(crate) const DECOMPRESSOR_TYPE: &str = "envoy.extensions.filters.http.decompressor.v3.Decompressor";
pub(crate) const COMPRESSOR_PER_ROUTE_TYPE: &str = "envoy.extensions.filters.http.compressor.v3.CompressorPerRoute";

pub(crate) const COMPRESSOR: &[&str] = &[
    "content_length",
    "content_type",
    "disable_on_etag_header",
    "remove_accept_encoding_header",
    "runtime_enabled",
    "compressor_library",
    "request_direction_config",
    "response_direction_config",
    "choose_first",
];
const REQUEST_DIRECTION: &[&str] = &["common_config"];
const RESPONSE_DIRECTION: &[&str] = &[
    "common_config",
    "disable_on_etag_header",
    "remove_accept_encoding_header",
    "uncompressible_response_codes",
    "status_header_enabled",
    "weaken_etag_on_compress",
];
const COMMON_DIRECTION: &[&str] = &["enabled", "min_content_length", "content_type"];
const LIBRARY: &[&str] = &["name", "typed_config"];
const GZIP: &[&str] = &["memory_level", "compression_level", "compression_strategy", "window_bits", "chunk_size"];
const BROTLI: &[&str] =
    &["quality", "encoder_mode", "window_bits", "input_block_bits", "chunk_size", "disable_literal_context_modeling"];
const ZSTD: &[&str] = &["compression_level", "enable_checksum", "strategy", "dictionary", "chunk_size"];
const GZIP_INFLATE: &[&str] = &["window_bits", "chunk_size", "max_inflate_ratio"];
const BROTLI_INFLATE: &[&str] = &["disable_ring_buffer_reallocation", "chunk_size"];
const ZSTD_INFLATE: &[&str] = &["dictionaries", "chunk_size"];
pub(crate) const DECOMPRESSOR: &[&str] =
    &["decompressor_library", "request_direction_config", "response_direction_config"];
const DECOMPRESS_REQUEST: &[&str] = &["common_config", "advertise_accept_encoding"];
const DECOMPRESS_RESPONSE: &[&str] = &["common_config"];
const DECOMPRESS_COMMON: &[&str] = &["enabled", "ignore_no_transform_header"];
pub(crate) const COMPRESSOR_PER_ROUTE: &[&str] = &["disabled", "overrides"];
const OVERRIDES: &[&str] = &["response_direction_config", "compressor_library"];
const RESPONSE_OVERRIDES: &[&str] = &["remove_accept_encoding_header"];

const GZIP_COMPRESSOR: &str = "envoy.extensions.compression.gzip.compressor.v3.Gzip";
const BROTLI_COMPRESSOR: &str = "envoy.extensions.compression.brotli.compressor.v3.Brotli";
const ZSTD_COMPRESSOR: &str = "envoy.extensions.compression.zstd.compressor.v3.Zstd";
const GZIP_DECOMPRESSOR: &str = "envoy.extensions.compression.gzip.decompressor.v3.Gzip";
const BROTLI_DECOMPRESSOR: &str = "envoy.extensions.compression.brotli.decompressor.v3.Brotli";
const ZSTD_DECOMPRESSOR: &str = "envoy.extensions.compression.zstd.decompressor.v3.Zstd";

const GZIP_LEVEL: &[(&str, i64, Option<u32>)] = &[
    ("DEFAULT_COMPRESSION", 0, Some(0)),
    ("BEST_SPEED", 1, Some(1)),
    ("COMPRESSION_LEVEL_1", 1, Some(1)),
    ("COMPRESSION_LEVEL_2", 2, Some(2)),
    ("COMPRESSION_LEVEL_3", 3, Some(3)),
    ("COMPRESSION_LEVEL_4", 4, Some(4)),
    ("COMPRESSION_LEVEL_5", 5, Some(5)),
    ("COMPRESSION_LEVEL_6", 6, Some(6)),
    ("COMPRESSION_LEVEL_7", 7, Some(7)),
    ("COMPRESSION_LEVEL_8", 8, Some(8)),
    ("COMPRESSION_LEVEL_9", 9, Some(9)),
    ("BEST_COMPRESSION", 9, Some(9)),
];
/// The strategies wasmproxy's deflate has: only zlib's default.
const GZIP_STRATEGY: &[(&str, i64, Option<u8>)] = &[
    ("DEFAULT_STRATEGY", 0, Some(0)),
    ("FILTERED", 1, Some(1)),
    ("HUFFMAN_ONLY", 2, Some(2)),
    ("RLE", 3, Some(3)),
    ("FIXED", 4, Some(4)),
];

/// `envoy.filters.http.compressor` (opened with [`COMPRESSOR`]).
pub(crate) fn read_compressor(ctx: &mut Ctx, mut msg: Msg<'_>) -> Option<Compressor> {
    let library = msg.required(ctx, "compressor_library").and_then(|f| read_library(ctx, &f, true)).map(|(l, _)| l);
    let request = msg.get(ctx, "request_direction_config").and_then(|f| {
        let mut m = f.message(ctx, REQUEST_DIRECTION)?;
        let common = m.get(ctx, "common_config").map(|c| read_common(ctx, &c));
        m.finish(ctx);
        Some(common.flatten().unwrap_or_else(default_direction))
    });
    let choose_first = msg.get(ctx, "choose_first").and_then(|f| f.bool(ctx)).unwrap_or(false);
    let mut compressor = Compressor {
        library: library
            .clone()
            .unwrap_or(CompressionLibrary { name: String::new(), algorithm: Algorithm::Zstd { level: 3 } }),
        response: default_direction(),
        response_config_given: false,
        disable_on_etag_header: false,
        remove_accept_encoding_header: false,
        uncompressible_response_codes: Vec::new(),
        weaken_etag_on_compress: false,
        request,
        choose_first,
    };
    if let Some(f) = msg.get(ctx, "response_direction_config") {
        read_response_direction(ctx, &f, &mut compressor);
        compressor.response_config_given = true;
        // As in Envoy, the deprecated fields then do nothing; they are refused rather than ignored.
        for legacy in [
            "content_length",
            "content_type",
            "disable_on_etag_header",
            "remove_accept_encoding_header",
            "runtime_enabled",
        ] {
            if msg.has(legacy) {
                let _ = msg.get(ctx, legacy);
                ctx.error(
                    &msg.origin().with_child(legacy),
                    "deprecated, and unused when response_direction_config is given (Envoy ignores it): remove it",
                );
            }
        }
    } else {
        read_legacy_response(ctx, &mut msg, &mut compressor);
    }
    msg.finish(ctx);
    library.map(|_| compressor)
}

/// The deprecated top-level fields that configure responses without `response_direction_config`.
fn read_legacy_response(ctx: &mut Ctx, msg: &mut Msg<'_>, c: &mut Compressor) {
    if let Some(len) = msg.get(ctx, "content_length").and_then(|f| f.unsigned(ctx, u64::from(u32::MAX))) {
        c.response.min_content_length = if len == 0 { 30 } else { len };
    }
    c.response.content_types = content_types(ctx, msg);
    c.response.enabled = msg.get(ctx, "runtime_enabled").and_then(|f| read_feature_flag(ctx, &f)).unwrap_or(true);
    c.disable_on_etag_header = msg.get(ctx, "disable_on_etag_header").and_then(|f| f.bool(ctx)).unwrap_or(false);
    c.remove_accept_encoding_header =
        msg.get(ctx, "remove_accept_encoding_header").and_then(|f| f.bool(ctx)).unwrap_or(false);
}

fn read_response_direction(ctx: &mut Ctx, field: &Field<'_>, c: &mut Compressor) {
    let Some(mut m) = field.message(ctx, RESPONSE_DIRECTION) else { return };
    if let Some(common) = m.get(ctx, "common_config").and_then(|f| read_common(ctx, &f)) {
        c.response = common;
    }
    let flag = |ctx: &mut Ctx, m: &mut Msg<'_>, name: &str| m.get(ctx, name).and_then(|f| f.bool(ctx)).unwrap_or(false);
    c.disable_on_etag_header = flag(ctx, &mut m, "disable_on_etag_header");
    c.remove_accept_encoding_header = flag(ctx, &mut m, "remove_accept_encoding_header");
    c.weaken_etag_on_compress = flag(ctx, &mut m, "weaken_etag_on_compress");
    if let Some(f) = m.get(ctx, "status_header_enabled")
        && f.bool(ctx) == Some(true)
    {
        f.error(ctx, "not supported by wasmproxy (no x-envoy-compression-status header)");
    }
    for code in m.get(ctx, "uncompressible_response_codes").map(|f| f.list()).unwrap_or_default() {
        let Some(value) = code.unsigned(ctx, 599) else { continue };
        let value = value as u16;
        if value < 200 {
            code.error(ctx, "must be at least 200 and below 600");
        } else if c.uncompressible_response_codes.contains(&value) {
            code.error(ctx, "repeated: each code once");
        } else {
            c.uncompressible_response_codes.push(value);
        }
    }
    m.finish(ctx);
}

fn default_direction() -> CompressionDirection {
    CompressionDirection { enabled: true, min_content_length: 30, content_types: Vec::new() }
}

/// A `CommonDirectionConfig`.
fn read_common(ctx: &mut Ctx, field: &Field<'_>) -> Option<CompressionDirection> {
    let mut m = field.message(ctx, COMMON_DIRECTION)?;
    let mut direction = default_direction();
    if let Some(enabled) = m.get(ctx, "enabled").and_then(|f| read_feature_flag(ctx, &f)) {
        direction.enabled = enabled;
    }
    if let Some(len) = m.get(ctx, "min_content_length").and_then(|f| f.unsigned(ctx, u64::from(u32::MAX))) {
        direction.min_content_length = if len == 0 { 30 } else { len };
    }
    direction.content_types = content_types(ctx, &mut m);
    m.finish(ctx);
    Some(direction)
}

fn content_types(ctx: &mut Ctx, msg: &mut Msg<'_>) -> Vec<String> {
    let list = msg.get(ctx, "content_type").map(|f| f.list()).unwrap_or_default();
    list.iter().filter_map(|t| t.string(ctx)).map(|t| t.to_ascii_lowercase()).collect()
}

/// A `compressor_library` (`compress`) or `decompressor_library`, and its most inflated
/// bytes per compressed byte (gzip's `max_inflate_ratio`, else 100).
fn read_library(ctx: &mut Ctx, field: &Field<'_>, compress: bool) -> Option<(CompressionLibrary, u32)> {
    let mut msg = field.message(ctx, LIBRARY)?;
    let name = msg.get(ctx, "name").and_then(|f| f.string(ctx)).unwrap_or_default();
    let algorithm = msg.required(ctx, "typed_config").and_then(|typed| {
        let any = typed.any(ctx)?;
        let brotli = Algorithm::Brotli { quality: 0, window_bits: 0 };
        match (any.type_name.as_str(), compress) {
            (GZIP_COMPRESSOR, true) => any.message(ctx, GZIP).and_then(|m| read_gzip(ctx, m)).map(|a| (a, 100)),
            (BROTLI_COMPRESSOR, true) => any.message(ctx, BROTLI).and_then(|m| read_brotli(ctx, m)).map(|a| (a, 100)),
            (ZSTD_COMPRESSOR, true) => any.message(ctx, ZSTD).and_then(|m| read_zstd(ctx, m)).map(|a| (a, 100)),
            (GZIP_DECOMPRESSOR, false) => any.message(ctx, GZIP_INFLATE).and_then(|m| read_gzip_inflate(ctx, m)),
            (BROTLI_DECOMPRESSOR, false) => {
                any.message(ctx, BROTLI_INFLATE).and_then(|m| read_plain_inflate(ctx, m, brotli))
            }
            (ZSTD_DECOMPRESSOR, false) => {
                any.message(ctx, ZSTD_INFLATE).and_then(|m| read_plain_inflate(ctx, m, Algorithm::Zstd { level: 0 }))
            }
            _ => {
                type_error(ctx, &typed, &any, if compress { "compressor library" } else { "decompressor library" });
                None
            }
        }
    });
    msg.finish(ctx);
    let (algorithm, ratio) = algorithm?;
    Some((CompressionLibrary { name, algorithm }, ratio))
}

/// A bounded `UInt32Value` field, or its default.
fn bounded(ctx: &mut Ctx, msg: &mut Msg<'_>, name: &str, range: std::ops::RangeInclusive<u64>, default: u64) -> u64 {
    let Some(f) = msg.get(ctx, name) else { return default };
    match f.unsigned(ctx, u64::from(u32::MAX)) {
        Some(v) if range.contains(&v) => v,
        Some(_) => {
            f.error(ctx, format!("must be between {} and {}", range.start(), range.end()));
            default
        }
        None => default,
    }
}

fn read_gzip(ctx: &mut Ctx, mut m: Msg<'_>) -> Option<Algorithm> {
    let memory_level = bounded(ctx, &mut m, "memory_level", 1..=9, 5) as u8;
    let window_bits = bounded(ctx, &mut m, "window_bits", 9..=15, 12) as u8;
    bounded(ctx, &mut m, "chunk_size", 4096..=65536, 4096);
    let level = m.get(ctx, "compression_level").and_then(|f| f.enumeration(ctx, GZIP_LEVEL)).unwrap_or(0);
    let strategy = m.get(ctx, "compression_strategy").and_then(|f| f.enumeration(ctx, GZIP_STRATEGY)).unwrap_or(0);
    m.finish(ctx);
    Some(Algorithm::Gzip { level, window_bits, memory_level, strategy })
}

fn read_brotli(ctx: &mut Ctx, mut m: Msg<'_>) -> Option<Algorithm> {
    let quality = bounded(ctx, &mut m, "quality", 0..=11, 3) as u32;
    let window_bits = bounded(ctx, &mut m, "window_bits", 10..=24, 18) as u32;
    bounded(ctx, &mut m, "chunk_size", 4096..=65536, 4096);
    m.finish(ctx);
    Some(Algorithm::Brotli { quality, window_bits })
}

fn read_zstd(ctx: &mut Ctx, mut m: Msg<'_>) -> Option<Algorithm> {
    let level = m.get(ctx, "compression_level").and_then(|f| f.unsigned(ctx, 22)).unwrap_or(3);
    bounded(ctx, &mut m, "chunk_size", 4096..=65536, 4096);
    m.finish(ctx);
    Some(Algorithm::Zstd { level: if level == 0 { 3 } else { level as i32 } })
}

fn read_gzip_inflate(ctx: &mut Ctx, mut m: Msg<'_>) -> Option<(Algorithm, u32)> {
    let window_bits = bounded(ctx, &mut m, "window_bits", 9..=15, 15) as u8;
    bounded(ctx, &mut m, "chunk_size", 4096..=65536, 4096);
    let ratio = bounded(ctx, &mut m, "max_inflate_ratio", 1..=10_000, 100) as u32;
    m.finish(ctx);
    Some((Algorithm::Gzip { level: 0, window_bits, memory_level: 0, strategy: 0 }, ratio))
}

fn read_plain_inflate(ctx: &mut Ctx, mut m: Msg<'_>, algorithm: Algorithm) -> Option<(Algorithm, u32)> {
    bounded(ctx, &mut m, "chunk_size", 4096..=65536, 4096);
    m.finish(ctx);
    Some((algorithm, 100))
}

/// `envoy.filters.http.decompressor` (opened with [`DECOMPRESSOR`]).
pub(crate) fn read_decompressor(ctx: &mut Ctx, mut msg: Msg<'_>) -> Option<Decompressor> {
    let library = msg.required(ctx, "decompressor_library").and_then(|f| read_library(ctx, &f, false));
    let (library, max_inflate_ratio) = match library {
        Some((library, ratio)) => (Some(library), ratio),
        None => (None, 100),
    };
    let mut d = Decompressor {
        library: library
            .clone()
            .unwrap_or(CompressionLibrary { name: String::new(), algorithm: Algorithm::Zstd { level: 0 } }),
        request_enabled: true,
        advertise_accept_encoding: true,
        response_enabled: true,
        ignore_no_transform: [false; 2],
        max_inflate_ratio,
    };
    if let Some(f) = msg.get(ctx, "request_direction_config")
        && let Some(mut m) = f.message(ctx, DECOMPRESS_REQUEST)
    {
        if let Some((enabled, ignore)) = m.get(ctx, "common_config").and_then(|c| read_decompress_common(ctx, &c)) {
            (d.request_enabled, d.ignore_no_transform[0]) = (enabled, ignore);
        }
        d.advertise_accept_encoding =
            m.get(ctx, "advertise_accept_encoding").and_then(|f| f.bool_value(ctx)).unwrap_or(true);
        m.finish(ctx);
    }
    if let Some(f) = msg.get(ctx, "response_direction_config")
        && let Some(mut m) = f.message(ctx, DECOMPRESS_RESPONSE)
    {
        if let Some((enabled, ignore)) = m.get(ctx, "common_config").and_then(|c| read_decompress_common(ctx, &c)) {
            (d.response_enabled, d.ignore_no_transform[1]) = (enabled, ignore);
        }
        m.finish(ctx);
    }
    msg.finish(ctx);
    library.map(|_| d)
}

fn read_decompress_common(ctx: &mut Ctx, field: &Field<'_>) -> Option<(bool, bool)> {
    let mut m = field.message(ctx, DECOMPRESS_COMMON)?;
    let enabled = m.get(ctx, "enabled").and_then(|f| read_feature_flag(ctx, &f)).unwrap_or(true);
    let ignore = m.get(ctx, "ignore_no_transform_header").and_then(|f| f.bool(ctx)).unwrap_or(false);
    m.finish(ctx);
    Some((enabled, ignore))
}

/// `CompressorPerRoute` (opened with [`COMPRESSOR_PER_ROUTE`]): `disabled: true`, or
/// `overrides.response_direction_config`.
pub(crate) fn read_compressor_per_route(ctx: &mut Ctx, mut msg: Msg<'_>) -> Option<CompressorPerRoute> {
    msg.at_most_one(ctx, &["disabled", "overrides"]);
    let result = if let Some(f) = msg.get(ctx, "disabled") {
        match f.bool(ctx) {
            Some(true) => Some(CompressorPerRoute::Disabled),
            Some(false) => {
                f.error(ctx, "must be true");
                None
            }
            None => None,
        }
    } else if let Some(f) = msg.get(ctx, "overrides") {
        let mut m = f.message(ctx, OVERRIDES)?;
        let remove = m.get(ctx, "response_direction_config").and_then(|r| {
            let mut rm = r.message(ctx, RESPONSE_OVERRIDES)?;
            let remove = rm.get(ctx, "remove_accept_encoding_header").and_then(|f| f.bool_value(ctx));
            rm.finish(ctx);
            Some(remove)
        });
        if m.has("compressor_library") {
            let _ = m.get(ctx, "compressor_library");
            ctx.error(
                &m.origin().with_child("compressor_library"),
                "not supported by wasmproxy (the filter's library applies)",
            );
        }
        let given = m.has("response_direction_config");
        m.finish(ctx);
        if !given {
            ctx.error(&f.origin().with_child("response_direction_config"), "required by wasmproxy");
        }
        Some(CompressorPerRoute::Enabled { remove_accept_encoding_header: remove.flatten() })
    } else {
        ctx.error(msg.origin(), "one of disabled or overrides is required");
        None
    };
    msg.finish(ctx);
    result
}
