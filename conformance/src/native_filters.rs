//! Envoy's own HTTP filters beside Wasm plugins: CORS, local rate limit, compressor and
//! decompressor, each in a chain with a probe plugin before and after it (what the plugins
//! see, what the client and the upstream see, the stats).

use std::io::Write;

use serde_json::json;
use wasmproxy_conformance::client::Request;

use crate::scenario::{CATCH_ALL, CODE_FLAGS_LOG, Scenario};

/// Every native filter scenario.
pub fn scenarios() -> Vec<Scenario> {
    vec![
        cors(),
        csrf(),
        local_ratelimit(),
        local_ratelimit_per_route(),
        local_ratelimit_descriptors(),
        compressor(),
        compressor_brotli_zstd(),
        decompressor(),
        header_mutation(),
        health_check(),
        grpc_http1_bridge(),
    ]
}

/// A probe named `name` that logs the request and response headers it sees.
pub(crate) fn header_probe(name: &str) -> String {
    let config =
        json!({"phases": {"request_headers": [["get_headers", "0"]], "response_headers": [["get_headers", "2"]]}});
    crate::scenario::wasm_filter(name, "probe.wasm", &config.to_string(), "")
}

/// `filters` between two header probes, `before` and `after`.
pub(crate) fn between_probes(filters: &str) -> String {
    [header_probe("before"), filters.to_string(), header_probe("after")].concat()
}

/// An `http_filters` entry of a native filter, its `typed_config` body at its indentation.
pub(crate) fn native(name: &str, type_name: &str, body: &str) -> String {
    format!(
        "          - name: {name}\n            typed_config:\n              \"@type\": type.googleapis.com/{type_name}\n{body}"
    )
}

/// A request with `origin`.
fn from(path: &str, origin: &str) -> Request {
    Request::get(path).header("origin", origin)
}

/// A CORS preflight from `origin` for `method`.
fn preflight(path: &str, origin: &str, method: &str) -> Request {
    Request { method: "OPTIONS", ..from(path, origin).header("access-control-request-method", method) }
}

/// `envoy.filters.http.cors` between two probes: a virtual host's typed policy, routes with
/// their own (off, any origin with `*` echoed, `forward_not_matching_preflights: false`), a
/// direct response (no policy applies), and a virtual host with the deprecated `cors` on it
/// and on a route; simple requests and preflights from allowed and other origins.
fn cors() -> Scenario {
    let policy = "\"@type\": type.googleapis.com/envoy.extensions.filters.http.cors.v3.CorsPolicy";
    let vhost = format!(
        r#"              domains: ["*"]
              typed_per_filter_config:
                envoy.filters.http.cors:
                  {policy}
                  allow_origin_string_match: [{{ exact: "https://allowed.test" }}]
                  allow_methods: "GET, POST"
                  allow_headers: x-custom
                  expose_headers: x-exposed
                  max_age: "600"
                  allow_credentials: true
"#
    );
    let routes = format!(
        r#"              - match: {{ prefix: /cors/disabled }}
                route: {{ cluster: upstream }}
                typed_per_filter_config:
                  envoy.filters.http.cors: {{ {policy}, filter_enabled: {{ default_value: {{ numerator: 0 }} }} }}
              - match: {{ prefix: /cors/any }}
                route: {{ cluster: upstream }}
                typed_per_filter_config:
                  envoy.filters.http.cors: {{ {policy}, allow_origin_string_match: [{{ safe_regex: {{ regex: ".*" }} }}], allow_methods: "*", allow_headers: "*", allow_credentials: false }}
              - match: {{ prefix: /cors/strict }}
                route: {{ cluster: upstream }}
                typed_per_filter_config:
                  envoy.filters.http.cors: {{ {policy}, forward_not_matching_preflights: false }}
              - match: {{ prefix: /cors/direct }}
                direct_response: {{ status: 204 }}
{CATCH_ALL}"#
    );
    let legacy = r#"            - name: legacy
              domains: ["legacy.test"]
              cors: { allow_origin_string_match: [{ prefix: "https://" }], allow_methods: PUT, expose_headers: x-legacy }
              routes:
              - match: { prefix: /route-cors }
                route: { cluster: upstream, cors: { allow_origin_string_match: [{ exact: "https://route.test" }], max_age: "30" } }
              - match: { prefix: / }
                route: { cluster: upstream }
"#;
    let filters = between_probes(&native("envoy.filters.http.cors", "envoy.extensions.filters.http.cors.v3.Cors", ""));
    let config = crate::scenario::bootstrap("", &filters)
        .replacen("              domains: [\"*\"]\n", &vhost, 1)
        .replacen(CATCH_ALL, &routes, 1)
        .replacen("          http_filters:\n", &format!("{legacy}          http_filters:\n"), 1);
    let legacy_host = |r: Request| r.header("host", "legacy.test");
    let scenario = crate::scenarios::s(
        "cors",
        "envoy.filters.http.cors between two plugins: typed policies per virtual host and route, the deprecated cors, preflights",
        config,
        vec![
            from("/cors/simple", "https://allowed.test"),
            from("/cors/simple", "https://other.test"),
            Request::get("/cors/simple"),
            preflight("/cors/simple", "https://allowed.test", "POST"),
            preflight("/cors/simple", "https://other.test", "POST"),
            preflight("/cors/strict", "https://other.test", "POST"),
            preflight("/cors/any", "https://any.test", "PATCH").header("access-control-request-headers", "x-a, x-b"),
            from("/cors/disabled", "https://allowed.test"),
            from("/cors/direct", "https://allowed.test"),
            legacy_host(from("/page", "https://legacy.test")),
            legacy_host(preflight("/route-cors", "https://route.test", "PUT")),
            legacy_host(from("/route-cors", "https://legacy.test")),
        ],
    );
    Scenario { stats: &[r"^http\.ingress\.cors\."], ..scenario }
}

/// `envoy.filters.http.csrf` between two probes: state-changing requests from the host's
/// own origin, another, none, a `referer`; a route in shadow mode, one turned off, one with
/// additional origins; a safe method never checked.
fn csrf() -> Scenario {
    let policy = "\"@type\": type.googleapis.com/envoy.extensions.filters.http.csrf.v3.CsrfPolicy";
    let body = "              filter_enabled: { default_value: { numerator: 100 } }\n";
    let routes = format!(
        r#"              - match: {{ prefix: /shadow }}
                route: {{ cluster: upstream }}
                typed_per_filter_config:
                  envoy.filters.http.csrf: {{ {policy}, filter_enabled: {{ default_value: {{ numerator: 0 }} }}, shadow_enabled: {{ default_value: {{ numerator: 100 }} }} }}
              - match: {{ prefix: /off }}
                route: {{ cluster: upstream }}
                typed_per_filter_config:
                  envoy.filters.http.csrf: {{ {policy}, filter_enabled: {{ default_value: {{ numerator: 0 }} }} }}
              - match: {{ prefix: /partners }}
                route: {{ cluster: upstream }}
                typed_per_filter_config:
                  envoy.filters.http.csrf: {{ {policy}, filter_enabled: {{ default_value: {{ numerator: 100 }} }}, additional_origins: [{{ suffix: .partner.test }}] }}
{CATCH_ALL}"#
    );
    let filters =
        between_probes(&native("envoy.filters.http.csrf", "envoy.extensions.filters.http.csrf.v3.CsrfPolicy", body));
    let config = crate::scenario::bootstrap("", &filters).replacen(CATCH_ALL, &routes, 1);
    let post = |path: &str| Request::post(path, "form");
    let scenario = crate::scenarios::s(
        "csrf",
        "envoy.filters.http.csrf between two plugins: same origin, other origins, referer, shadow mode, additional origins",
        config,
        vec![
            post("/form").header("origin", "http://conformance.test"),
            post("/form").header("origin", "https://evil.test"),
            post("/form"),
            post("/form").header("referer", "http://conformance.test/page"),
            Request::get("/form").header("origin", "https://evil.test"),
            post("/shadow").header("origin", "https://evil.test"),
            post("/off").header("origin", "https://evil.test"),
            post("/partners").header("origin", "https://shop.partner.test"),
            Request { method: "DELETE", ..Request::get("/form").header("origin", "https://evil.test") },
        ],
    );
    Scenario { stats: &[r"^http\.ingress\.csrf\."], ..scenario }
}

/// `envoy.filters.http.local_ratelimit` between two probes: a bucket of two tokens (one an
/// hour after), the third request refused with the configured status, headers and the
/// `x-ratelimit-*` headers; a gRPC request refused with RESOURCE_EXHAUSTED.
fn local_ratelimit() -> Scenario {
    let body = r#"              stat_prefix: limited
              token_bucket: { max_tokens: 2, tokens_per_fill: 1, fill_interval: 3600s }
              filter_enabled: { runtime_key: rl_enabled, default_value: { numerator: 100, denominator: HUNDRED } }
              filter_enforced: { runtime_key: rl_enforced, default_value: { numerator: 100, denominator: HUNDRED } }
              response_headers_to_add:
              - append_action: OVERWRITE_IF_EXISTS_OR_ADD
                header: { key: x-local-rate-limit, value: "true" }
              enable_x_ratelimit_headers: DRAFT_VERSION_03
              rate_limited_as_resource_exhausted: true
"#;
    let filters = between_probes(&local_ratelimit_filter(body));
    let config = crate::scenario::bootstrap_hcm("", CODE_FLAGS_LOG, &filters);
    let grpc = Request::post("/pkg.Echo/Say", "").header("content-type", "application/grpc").header("te", "trailers");
    let scenario = crate::scenarios::s(
        "local_ratelimit",
        "envoy.filters.http.local_ratelimit between two plugins: a shared bucket, 429 with its headers, gRPC refusals",
        config,
        vec![Request::get("/one"), Request::get("/two"), Request::get("/three"), grpc],
    );
    Scenario { stats: &[r"^limited\.http_local_rate_limit\."], ..scenario }
}

/// `local_ratelimit` configured per route: the filter's own configuration (no bucket)
/// allows everything; a virtual host's bucket, shared by its routes; a route's own, which
/// replaces it; a route where it is not enforced (a request header added instead).
fn local_ratelimit_per_route() -> Scenario {
    let body = r#"              stat_prefix: filter_level
              filter_enabled: { default_value: { numerator: 100 } }
"#;
    let limit = |prefix: &str, tokens: u32, enforced: u32| {
        format!(
            "{{ \"@type\": type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit, stat_prefix: {prefix}, \
             token_bucket: {{ max_tokens: {tokens}, fill_interval: 3600s }}, filter_enabled: {{ default_value: {{ numerator: 100 }} }}, \
             filter_enforced: {{ default_value: {{ numerator: {enforced} }} }}, status: {{ code: 503 }}, \
             request_headers_to_add_when_not_enforced: [{{ header: {{ key: x-would-limit, value: \"%REQ(:path)%\" }} }}] }}"
        )
    };
    let vhost = format!(
        "              domains: [\"*\"]\n              typed_per_filter_config:\n                envoy.filters.http.local_ratelimit: {}\n",
        limit("vhost_level", 2, 100)
    );
    let routes = format!(
        r#"              - match: {{ prefix: /route-a }}
                route: {{ cluster: upstream }}
              - match: {{ prefix: /route-b }}
                route: {{ cluster: upstream }}
              - match: {{ prefix: /own }}
                route: {{ cluster: upstream }}
                typed_per_filter_config:
                  envoy.filters.http.local_ratelimit: {}
              - match: {{ prefix: /shadow }}
                route: {{ cluster: upstream }}
                typed_per_filter_config:
                  envoy.filters.http.local_ratelimit: {}
{CATCH_ALL}"#,
        limit("route_level", 1, 100),
        limit("shadow_level", 1, 0),
    );
    let filters = [local_ratelimit_filter(body), header_probe("after")].concat();
    let config = crate::scenario::bootstrap("", &filters)
        .replacen("              domains: [\"*\"]\n", &vhost, 1)
        .replacen(CATCH_ALL, &routes, 1);
    let scenario = crate::scenarios::s(
        "local_ratelimit_per_route",
        "local_ratelimit per route: a virtual host's bucket shared by its routes, a route's own, one not enforced",
        config,
        vec![
            Request::get("/route-a/1"),
            Request::get("/route-b/1"),
            Request::get("/route-a/2"),
            Request::get("/own/1"),
            Request::get("/own/2"),
            Request::get("/shadow/1"),
            Request::get("/shadow/2"),
        ],
    );
    Scenario { stats: &[r"^(filter|vhost|route|shadow)_level\.http_local_rate_limit\."], ..scenario }
}

/// The local rate limit filter with this `typed_config` body.
fn local_ratelimit_filter(body: &str) -> String {
    native(
        "envoy.filters.http.local_ratelimit",
        "envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit",
        body,
    )
}

/// The compressor's `typed_config` body for a library.
fn compressor_body(library: &str, library_type: &str, settings: &str, response: &str) -> String {
    format!(
        r#"              compressor_library:
                name: {library}
                typed_config:
                  "@type": type.googleapis.com/envoy.extensions.compression.{library_type}
{settings}              response_direction_config:
{response}"#
    )
}

/// `envoy.filters.http.compressor` (gzip) before a probe that logs the uncompressed body:
/// `Accept-Encoding` with q-values, `identity`, `*`; too short, the wrong type, an etag,
/// `no-transform`, an encoding already there, a streamed body, a route that turns it off;
/// the `vary`, length and etag changes and the stats.
fn compressor() -> Scenario {
    let body = compressor_body(
        "text",
        "gzip.compressor.v3.Gzip",
        "                  memory_level: 3\n                  window_bits: 10\n",
        "                common_config: { min_content_length: 100, content_type: [text/plain, application/json] }\n                disable_on_etag_header: true\n                remove_accept_encoding_header: true\n",
    );
    let filters = [
        native("envoy.filters.http.compressor", "envoy.extensions.filters.http.compressor.v3.Compressor", &body),
        crate::scenario::wasm_filter(
            "after",
            "probe.wasm",
            &json!({"phases": {"request_headers": [["get_headers", "0"]], "response_body": [["get_buffer", "1", "0", "100000"]]}})
                .to_string(),
            "",
        ),
    ]
    .concat();
    let routes = format!(
        r#"              - match: {{ prefix: /off }}
                route: {{ cluster: upstream }}
                typed_per_filter_config:
                  envoy.filters.http.compressor: {{ "@type": type.googleapis.com/envoy.extensions.filters.http.compressor.v3.CompressorPerRoute, disabled: true }}
{CATCH_ALL}"#
    );
    let config = crate::scenario::bootstrap("", &filters).replacen(CATCH_ALL, &routes, 1);
    let gzip = |path: &str, accept: &str| Request::get(path).header("accept-encoding", accept);
    let scenario = crate::scenarios::s(
        "compressor_gzip",
        "envoy.filters.http.compressor with gzip before a plugin: accept-encoding, length, type, etag, vary, per route",
        config,
        vec![
            gzip("/text/2000", "gzip"),
            gzip("/text/2000", "br;q=1, gzip;q=0.5"),
            gzip("/text/2000", "gzip;q=0"),
            gzip("/text/2000", "identity"),
            gzip("/text/2000", "*"),
            Request::get("/text/2000"),
            gzip("/text/50", "gzip"),
            gzip("/text/2000", "gzip").header("x-respond-header", "content-type=image/png"),
            gzip("/text/2000", "gzip").header("x-respond-header", "etag=\"v1\""),
            gzip("/text/2000", "gzip").header("x-respond-header", "cache-control=no-transform"),
            gzip("/text/2000", "gzip").header("x-respond-header", "content-encoding=br"),
            gzip("/text/2000", "gzip").header("x-respond-header", "vary=Cookie"),
            gzip("/chunks", "gzip"),
            gzip("/off/text/2000", "gzip"),
            gzip("/status/304", "gzip"),
        ],
    );
    Scenario { stats: &[r"^http\.ingress\.compressor\."], ..scenario }
}

/// Two compressors (brotli, then zstd with `choose_first`) in one chain: the client's
/// preference decides between them, a tie goes to `choose_first`; the legacy top-level
/// fields without `response_direction_config`.
fn compressor_brotli_zstd() -> Scenario {
    let brotli = compressor_body(
        "web",
        "brotli.compressor.v3.Brotli",
        "                  quality: 4\n",
        "                common_config: { min_content_length: 10 }\n",
    );
    let zstd = format!(
        "{}              choose_first: true\n",
        compressor_body(
            "web",
            "zstd.compressor.v3.Zstd",
            "                  compression_level: 5\n",
            "                common_config: { min_content_length: 10 }\n"
        )
    );
    let filters = [
        native("brotli", "envoy.extensions.filters.http.compressor.v3.Compressor", &brotli),
        native("zstd", "envoy.extensions.filters.http.compressor.v3.Compressor", &zstd),
        header_probe("after"),
    ]
    .concat();
    let config = crate::scenario::bootstrap("", &filters);
    let accept = |value: &str| Request::get("/text/3000").header("accept-encoding", value);
    let scenario = crate::scenarios::s(
        "compressor_brotli_zstd",
        "two compressors (brotli, zstd with choose_first): the client's preference, a tie, a wildcard",
        config,
        vec![
            accept("br"),
            accept("zstd"),
            accept("br;q=0.5, zstd;q=0.9"),
            accept("br, zstd"),
            accept("*"),
            accept("gzip"),
        ],
    );
    Scenario { stats: &[r"^http\.ingress\.compressor\."], ..scenario }
}

/// gzip bytes of `text`.
fn gzipped(text: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    let _ = encoder.write_all(text);
    encoder.finish().unwrap_or_default()
}

/// `envoy.filters.http.decompressor` (gzip) between two probes: a gzip request body
/// decompressed for the upstream, `accept-encoding` advertised, a body with two codings,
/// one of another coding, corrupt input; a gzip answer decompressed for the client.
fn decompressor() -> Scenario {
    let body = r#"              decompressor_library:
                name: upload
                typed_config:
                  "@type": "type.googleapis.com/envoy.extensions.compression.gzip.decompressor.v3.Gzip"
                  window_bits: 15
                  max_inflate_ratio: 1000
"#;
    let probe = |name: &str| {
        let config = json!({"phases": {"request_headers": [["get_headers", "0"]], "request_body": [["get_buffer", "0", "0", "100000"]], "response_headers": [["get_headers", "2"]]}});
        crate::scenario::wasm_filter(name, "probe.wasm", &config.to_string(), "")
    };
    let filters = [
        probe("before"),
        native("envoy.filters.http.decompressor", "envoy.extensions.filters.http.decompressor.v3.Decompressor", body),
        probe("after"),
    ]
    .concat();
    let config = crate::scenario::bootstrap("", &filters);
    let upload = |path: &str, encoding: &str, body: Vec<u8>| Request {
        body,
        ..Request::post(path, "").header("content-encoding", encoding).header("accept-encoding", "br;q=0.5, gzip")
    };
    let text = b"a request body, compressed by the client, decompressed by the proxy. ".repeat(20);
    let scenario = crate::scenarios::s(
        "decompressor_gzip",
        "envoy.filters.http.decompressor with gzip between two plugins: request bodies, codings, corrupt input, advertising",
        config,
        vec![
            upload("/echo", "gzip", gzipped(&text)),
            upload("/echo", "gzip, identity", gzipped(b"two codings")),
            upload("/echo", "br", b"not decompressed".to_vec()),
            upload("/echo", "gzip", b"this is not gzip at all".to_vec()),
            upload("/echo", "br", gzipped(b"a gzip answer, decompressed for the client"))
                .header("x-respond-header", "content-encoding=gzip"),
            Request::get("/text/10").header("accept-encoding", "deflate"),
        ],
    );
    Scenario { stats: &[r"^http\.ingress\.decompressor\."], ..scenario }
}

/// `envoy.filters.http.header_mutation` between two probes: request mutations of each kind
/// (removals, appends by action with formats, empty values, removal by name matcher), the
/// response's, and a route's and its virtual host's own, in Envoy's order.
fn header_mutation() -> Scenario {
    let body = r#"              mutations:
                request_mutations:
                - remove: x-remove
                - append: { header: { key: x-added, value: "%REQ(x-source)%" }, append_action: APPEND_IF_EXISTS_OR_ADD }
                - append: { header: { key: x-added, value: second } }
                - append: { header: { key: x-only-if-absent, value: new }, append_action: ADD_IF_ABSENT }
                - append: { header: { key: x-overwrite, value: new }, append_action: OVERWRITE_IF_EXISTS }
                - append: { header: { key: x-overwrite-missing, value: new }, append_action: OVERWRITE_IF_EXISTS }
                - append: { header: { key: x-set, value: set }, append: false }
                - append: { header: { key: x-empty, value: "%REQ(x-missing)%" } }
                - append: { header: { key: x-empty-kept, value: "%REQ(x-missing)%" }, keep_empty_value: true }
                - remove_on_match: { key_matcher: { prefix: x-drop- } }
                response_mutations:
                - append: { header: { key: x-response-from, value: "%REQ(:path)% %RESPONSE_CODE%" } }
                - remove: x-upstream
"#;
    let per_route =
        "\"@type\": type.googleapis.com/envoy.extensions.filters.http.header_mutation.v3.HeaderMutationPerRoute";
    let vhost = format!(
        r#"              domains: ["*"]
              typed_per_filter_config:
                envoy.filters.http.header_mutation: {{ {per_route}, mutations: {{ request_mutations: [{{ append: {{ header: {{ key: x-level, value: vhost }} }} }}], response_mutations: [{{ append: {{ header: {{ key: x-level-response, value: vhost }}, append_action: OVERWRITE_IF_EXISTS_OR_ADD }} }}] }} }}
"#
    );
    let routes = format!(
        r#"              - match: {{ prefix: /route-level }}
                route: {{ cluster: upstream }}
                typed_per_filter_config:
                  envoy.filters.http.header_mutation: {{ {per_route}, mutations: {{ request_mutations: [{{ append: {{ header: {{ key: x-level, value: route }} }} }}], response_mutations: [{{ append: {{ header: {{ key: x-level-response, value: route }}, append_action: OVERWRITE_IF_EXISTS_OR_ADD }} }}] }} }}
{CATCH_ALL}"#
    );
    let filters = between_probes(&native(
        "envoy.filters.http.header_mutation",
        "envoy.extensions.filters.http.header_mutation.v3.HeaderMutation",
        body,
    ));
    let config = crate::scenario::bootstrap("", &filters)
        .replacen("              domains: [\"*\"]\n", &vhost, 1)
        .replacen(CATCH_ALL, &routes, 1);
    crate::scenarios::s(
        "header_mutation",
        "envoy.filters.http.header_mutation between two plugins: request and response mutations of each kind, a route's and its virtual host's",
        config,
        vec![
            Request::get("/plain")
                .header("x-remove", "1")
                .header("x-source", "src")
                .header("x-only-if-absent", "old")
                .header("x-overwrite", "old")
                .header("x-drop-a", "1")
                .header("x-drop-b", "2"),
            Request::get("/route-level/1").header("x-level", "client"),
            Request::get("/direct"),
        ],
    )
}

/// `envoy.filters.http.health_check` between two probes: health checks answered by the proxy
/// (one cluster's health required), passed through (a second filter in pass-through mode on
/// another path), and both once the admin made the proxy fail health checks.
fn health_check() -> Scenario {
    let answered = r#"              pass_through_mode: false
              headers: [{ name: ":path", string_match: { exact: /healthz } }]
              cluster_min_healthy_percentages: { upstream: { value: 100 } }
"#;
    let passed = r#"              pass_through_mode: true
              headers: [{ name: ":path", string_match: { exact: /healthz-upstream } }]
"#;
    let type_name = "envoy.extensions.filters.http.health_check.v3.HealthCheck";
    let filters = between_probes(
        &[native("envoy.filters.http.health_check", type_name, answered), native("passing", type_name, passed)]
            .concat(),
    );
    let config =
        crate::scenario::bootstrap_hcm("node: { id: conformance, cluster: front }\n", CODE_FLAGS_LOG, &filters);
    let scenario = crate::scenarios::s(
        "health_check",
        "envoy.filters.http.health_check between two plugins: answered, with a body, passed through, other requests, then after /healthcheck/fail and /healthcheck/ok",
        config,
        vec![
            Request::get("/healthz"),
            Request::post("/healthz", "a body dropped"),
            Request::get("/healthz-upstream"),
            Request::get("/other"),
            Request::admin_post("/healthcheck/fail"),
            Request::get("/healthz"),
            Request::get("/healthz-upstream"),
            Request::get("/other"),
            Request::admin_post("/healthcheck/ok"),
            Request::get("/healthz"),
        ],
    );
    Scenario { stats: &[r"^http\.ingress\.health_check\."], ..scenario }
}

/// `envoy.filters.http.grpc_http1_bridge` between two plugins: gRPC calls from HTTP/1.1
/// clients answered whole (the status and message from the trailers into the headers, 503
/// for a failed call, `content-length`), a trailers-only answer, HTTP/2 and non-gRPC
/// requests left alone, and the per-method gRPC stats.
fn grpc_http1_bridge() -> Scenario {
    let filter =
        native("envoy.filters.http.grpc_http1_bridge", "envoy.extensions.filters.http.grpc_http1_bridge.v3.Config", "");
    let routes = format!(
        "              - match: {{ prefix: /pkg.Echo/ }}\n                route: {{ cluster: grpc }}\n{CATCH_ALL}"
    );
    let config =
        crate::scenario::bootstrap_hcm("", CODE_FLAGS_LOG, &between_probes(&filter)).replacen(CATCH_ALL, &routes, 1);
    let call = |path: &str| {
        Request::post(path, "\0\0\0\0\x02hi\0\0\0\0\x05there")
            .header("content-type", "application/grpc")
            .header("te", "trailers")
    };
    let scenario = crate::scenarios::s(
        "grpc_http1_bridge",
        "envoy.filters.http.grpc_http1_bridge between two plugins: HTTP/1.1 gRPC calls answered whole, a failed call 503, a trailers-only answer, HTTP/2 and plain requests untouched",
        config,
        vec![
            call("/pkg.Echo/Say"),
            call("/pkg.Echo/Fail"),
            call("/pkg.Echo/Missing"),
            call("/pkg.Echo/Say").h2(),
            Request::post("/pkg.Echo/Say", "plain").header("content-type", "application/json"),
            Request::get("/other").header("content-type", "application/grpc"),
        ],
    );
    Scenario { stats: &[r"^cluster\.(grpc|upstream)\.grpc\."], ..scenario }
}

/// `local_ratelimit` with descriptors: buckets for the descriptors routes' and the virtual
/// host's `rate_limits` make (an exact one, one per user through an empty value, a roomier
/// one), the slowest consumed first, the filter's own bucket always taken from, the
/// `x-ratelimit-*` headers from the bucket that decided.
fn local_ratelimit_descriptors() -> Scenario {
    let bucket = |tokens: u32, every: &str| {
        format!("{{ max_tokens: {tokens}, tokens_per_fill: {tokens}, fill_interval: {every} }}")
    };
    let body = format!(
        r#"              stat_prefix: described
              token_bucket: {}
              filter_enabled: {{ default_value: {{ numerator: 100 }} }}
              filter_enforced: {{ default_value: {{ numerator: 100 }} }}
              enable_x_ratelimit_headers: DRAFT_VERSION_03
              descriptors:
              - {{ entries: [{{ key: generic_key, value: limited }}], token_bucket: {} }}
              - {{ entries: [{{ key: user, value: "" }}], token_bucket: {} }}
              - {{ entries: [{{ key: generic_key, value: roomy }}], token_bucket: {} }}
"#,
        bucket(100, "3600s"),
        bucket(1, "3600s"),
        bucket(1, "3600s"),
        bucket(3, "60s"),
    );
    let limits = |values: &[&str]| {
        let entries: Vec<String> =
            values.iter().map(|v| format!("{{ actions: [{{ generic_key: {{ descriptor_value: {v} }} }}] }}")).collect();
        format!("[{}]", entries.join(", "))
    };
    let routes = format!(
        r#"              - match: {{ prefix: /limited }}
                route: {{ cluster: upstream, rate_limits: {} }}
              - match: {{ prefix: /user }}
                route: {{ cluster: upstream, rate_limits: [{{ actions: [{{ request_headers: {{ header_name: x-user, descriptor_key: user }} }}] }}] }}
              - match: {{ prefix: /both }}
                route: {{ cluster: upstream, rate_limits: {} }}
{CATCH_ALL}"#,
        limits(&["limited"]),
        limits(&["roomy", "limited"]),
    );
    let vhost = format!("              domains: [\"*\"]\n              rate_limits: {}\n", limits(&["roomy"]));
    let filters = between_probes(&local_ratelimit_filter(&body));
    let config = crate::scenario::bootstrap_hcm("", CODE_FLAGS_LOG, &filters)
        .replacen("              domains: [\"*\"]\n", &vhost, 1)
        .replacen(CATCH_ALL, &routes, 1);
    let scenario = crate::scenarios::s(
        "local_ratelimit_descriptors",
        "envoy.filters.http.local_ratelimit with descriptors from routes' and the virtual host's rate_limits: exact, per value, several at once",
        config,
        vec![
            Request::get("/limited/1"),
            Request::get("/limited/2"),
            Request::get("/user/1").header("x-user", "alice"),
            Request::get("/user/2").header("x-user", "alice"),
            Request::get("/user/3").header("x-user", "bob"),
            Request::get("/user/4"),
            Request::get("/both/1"),
            Request::get("/other/1"),
            Request::get("/other/2"),
            Request::get("/direct"),
        ],
    );
    Scenario { stats: &[r"^described\.http_local_rate_limit\."], ..scenario }
}
