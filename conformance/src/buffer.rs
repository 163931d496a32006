//! `envoy.filters.http.buffer` between two plugins: what each sees of a body the filter
//! waits for (sent with a length, chunked, over HTTP/2), what the upstream gets, a body over
//! the limit, and routes with their own limit or none.

use wasmproxy_conformance::client::Request;

use crate::native_filters::{between_probes, native};
use crate::scenario::{CATCH_ALL, Scenario};

const PER_ROUTE: &str = "\"@type\": type.googleapis.com/envoy.extensions.filters.http.buffer.v3.BufferPerRoute";

/// Every buffer scenario.
pub fn scenarios() -> Vec<Scenario> {
    vec![buffer()]
}

/// The filter with a 64-byte limit; `/small` with 5 bytes, `/unbuffered` without.
fn buffer() -> Scenario {
    let body = "              max_request_bytes: 64\n";
    let route = |prefix: &str, setting: &str| {
        format!(
            "              - match: {{ prefix: {prefix} }}\n                route: {{ cluster: upstream, prefix_rewrite: /echo }}\n                typed_per_filter_config:\n                  envoy.filters.http.buffer: {{ {PER_ROUTE}, {setting} }}\n"
        )
    };
    let routes = [route("/small", "buffer: { max_request_bytes: 5 }"), route("/unbuffered", "disabled: true")].concat();
    let chain =
        between_probes(&native("envoy.filters.http.buffer", "envoy.extensions.filters.http.buffer.v3.Buffer", body));
    let config = crate::scenario::bootstrap("", &chain).replacen(CATCH_ALL, &format!("{routes}{CATCH_ALL}"), 1);
    let chunked = "POST /echo HTTP/1.1\r\nhost: conformance.test\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n";
    let scenario = crate::scenarios::s(
        "buffer",
        "envoy.filters.http.buffer between two plugins: bodies waited for (with a length, chunked, HTTP/2), over the limit, routes with their own",
        config,
        vec![
            Request::post("/echo", "hello buffer"),
            Request::raw(chunked),
            Request::post("/echo", "over HTTP/2").h2(),
            Request::post("/small", "longer than five"),
            Request::post("/unbuffered", "streamed on"),
            Request::get("/nobody"),
        ],
    );
    Scenario { stats: &[r"^http\.ingress\.downstream_rq_too_large"], ..scenario }
}
