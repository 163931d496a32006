//! What is made equal before comparing, and why: the one list of values that differ
//! between two runs by nature (times, random ids), not by behaviour.

use std::sync::LazyLock;

use regex::Regex;

/// Response headers the client sees whose values are replaced by `<varies>`, with the reason.
pub const RESPONSE: &[(&str, &str)] = &[
    ("date", "the time of the response"),
    ("x-envoy-upstream-service-time", "a duration in milliseconds"),
    ("x-request-id", "a random UUID, when the proxy made the request's id"),
];

/// Request headers the upstream receives whose values are replaced by `<varies>`, with the reason.
pub const UPSTREAM: &[(&str, &str)] = &[
    (
        "x-request-id",
        "a random UUID, made per request when the client sends none (a client's own id is kept); its trace digit is kept",
    ),
    ("x-b3-traceid", "a random trace id, when the proxy starts the trace"),
    ("x-b3-spanid", "a random span id"),
    ("x-b3-parentspanid", "a random span id, when the proxy made the parent"),
    ("traceparent", "random trace and span ids (the version and the sampled flag are kept)"),
];

/// A body as text; one with a `content-encoding` of gzip, br or zstd decoded first (the
/// two proxies' compressors need not make the same bytes, only the same content), and
/// said so.
pub fn body_text(content_encoding: Option<&[u8]>, body: &[u8]) -> String {
    use std::io::Read;
    let mut decoded = Vec::new();
    let outcome = match content_encoding {
        Some(b"gzip") => flate2::read::MultiGzDecoder::new(body).read_to_end(&mut decoded).map(|_| "gzip"),
        Some(b"br") => brotli::Decompressor::new(body, 4096).read_to_end(&mut decoded).map(|_| "br"),
        Some(b"zstd") => {
            zstd::stream::read::Decoder::new(body).and_then(|mut d| d.read_to_end(&mut decoded)).map(|_| "zstd")
        }
        _ => return String::from_utf8_lossy(body).into_owned(),
    };
    match outcome {
        Ok(encoding) => format!("({encoding}, decoded) {}", String::from_utf8_lossy(&decoded)),
        Err(e) => format!("(not decodable: {e}) {} bytes", body.len()),
    }
}

/// `name: value` for a header, the value replaced if `list` names the header (a request id
/// only if it is a UUID).
pub fn header_line(list: &[(&str, &str)], name: &str, value: &[u8]) -> String {
    let value = String::from_utf8_lossy(value);
    if name == "x-envoy-expected-rq-timeout-ms"
        && let Ok(ms) = value.parse::<u64>()
        && ms >= 1000
    {
        // A retry is told the time left (after back-offs of tens of milliseconds): to the
        // nearest second.
        return format!("{name}: {}", (ms + 500) / 1000 * 1000);
    }
    let made = name != "x-request-id" || UUID.is_match(&value);
    if !list.iter().any(|(n, _)| *n == name) || !made {
        return format!("{name}: {value}");
    }
    match name {
        // Tracing packs its decision into the id's version digit.
        "x-request-id" if value.len() == 36 => format!("{name}: <varies, trace digit {}>", &value[14..15]),
        "traceparent" if value.len() == 55 => format!("{name}: {}-<varies>-<varies>-{}", &value[..2], &value[53..]),
        _ => format!("{name}: <varies>"),
    }
}

static UUID: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new("[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}").expect("a valid regex")
});

static DATE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"[A-Z][a-z]{2}, \d{2} [A-Z][a-z]{2} \d{4} \d{2}:\d{2}:\d{2} GMT").expect("a valid regex")
});

static SERVICE_TIME: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"x-envoy-upstream-service-time=\d+").expect("a valid regex"));

/// A plugin log line, from `wasm log` on, or an access log line (text lines start with
/// `access log:`, JSON lines carry `"access_log":true`), with UUIDs (request ids), HTTP
/// dates and upstream service times (in headers a plugin logs) replaced.
pub fn log_line(line: &str) -> Option<String> {
    let at = line
        .find("wasm log")
        .or_else(|| line.find("access log: "))
        .or_else(|| line.contains("\"access_log\":true").then(|| line.find('{')).flatten())?;
    let line = UUID.replace_all(line[at..].trim_end(), "<uuid>");
    let line = DATE.replace_all(&line, "<date>");
    Some(SERVICE_TIME.replace_all(&line, "x-envoy-upstream-service-time=<varies>").into_owned())
}

static RAW_SERVICE_TIME: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"(?i)x-envoy-upstream-service-time: \d+").expect("a valid regex"));

/// Raw bytes a client read (HTTP through a TCP proxy, or a raw HTTP/1.1 exchange), with
/// HTTP dates and upstream service times replaced.
pub fn text(raw: &str) -> String {
    let raw = DATE.replace_all(raw, "<date>");
    RAW_SERVICE_TIME.replace_all(&raw, "x-envoy-upstream-service-time: <varies>").into_owned()
}

/// The proxy's own listener address, which differs between the two, as `<listener>` (in
/// stat names too, where Envoy writes it `127.0.0.1_PORT`).
pub fn listener(text: &str, listener: &str) -> String {
    text.replace(listener, "<listener>").replace(&listener.replace(':', "_"), "<listener>")
}

static QUANTILE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"P([0-9.]+)\(([^,()]+),([^,()]+)\)").expect("a valid regex"));

/// An admin `/stats` line with a histogram's interval quantiles dropped: `P50(i,c)` → `P50(c)`.
pub fn stats_line(line: &str) -> String {
    QUANTILE.replace_all(line, "P$1($3)").into_owned()
}

/// The reasons, for the report.
pub fn reasons() -> Vec<(String, &'static str)> {
    let mut out = Vec::new();
    for (name, why) in RESPONSE {
        out.push((format!("response header `{name}`"), *why));
    }
    for (name, why) in UPSTREAM {
        out.push((format!("upstream request header `{name}`"), *why));
    }
    out.push((
        "upstream request header `x-envoy-expected-rq-timeout-ms` of 1 s or more, to the nearest second".into(),
        "a retry is told the time left, which depends on how long the tries before it took",
    ));
    out.push(("UUIDs in plugin log lines".into(), "request ids a plugin logs are random"));
    out.push(("HTTP dates and `x-envoy-upstream-service-time` values in plugin log lines".into(), "times"));
    out.push((
        "the proxy's listener address (`<listener>`)".into(),
        "each proxy listens on a port of its own; HTTP/2 clients send it as `:authority`",
    ));
    out.push((
        "the interval quantiles of histograms in admin `/stats` (`P50(interval,cumulative)` → `P50(cumulative)`)"
            .into(),
        "they describe the samples between the last two stats flushes, and each proxy flushes on a timer of its own",
    ));
    out.push((
        "plugin log lines before the first request".into(),
        "compared as a set: Envoy runs the start-up callbacks once per VM it creates (the canary, the main thread, each worker), wasmproxy once per worker",
    ));
    out
}

/// An admin page's JSON, pretty and with keys sorted (Envoy writes them in its protobuf
/// field order, wasmproxy in name order), TLS contexts (`/certs`) sorted too (Envoy lists
/// them in hash order); a page that is not JSON as it is.
pub fn admin_json(page: &str) -> String {
    let Ok(mut value) = serde_json::from_str::<serde_json::Value>(page) else { return format!("{page}\n") };
    if let Some(contexts) = value.get_mut("certificates").and_then(|c| c.as_array_mut()) {
        contexts.sort_by_key(|c| c.to_string());
    }
    format!("{}\n", serde_json::to_string_pretty(&value).unwrap_or_default())
}
