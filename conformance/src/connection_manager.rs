//! What the HTTP connection manager does to every request before the filters, and to
//! every response after them: `x-forwarded-for` and the client address it trusts, internal
//! and edge requests, Envoy's own headers cleaned from untrusted ones, `x-forwarded-proto`,
//! `x-request-id`, the user agent, `via`, `server`.

use serde_json::json;
use wasmproxy_conformance::client::Request;

use crate::scenario::{Scenario, bootstrap_hcm, probe};

/// The client's address as the connection manager found it, and the peer's, for the
/// client to see (the peer's port varies, so it is left out); a header only internal
/// requests may bring.
const CLIENT_HEADERS: &str = r#"            internal_only_headers: [x-internal-only]
            response_headers_to_add:
            - header: { key: x-client, value: "%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%" }
            - header: { key: x-peer, value: "%DOWNSTREAM_DIRECT_REMOTE_ADDRESS_WITHOUT_PORT%" }
            virtual_hosts:
"#;

/// Every connection-manager scenario.
pub fn scenarios() -> Vec<Scenario> {
    vec![
        source_address_from_forwarded_for(),
        forwarding("hcm_forwarding_defaults", "the defaults: x-forwarded-for read, not appended", ""),
        forwarding(
            "hcm_use_remote_address",
            "use_remote_address: the peer appended and trusted; edge requests cleaned; via, user agent, \
             request id in the response, server header kept if the upstream sent one",
            r#"          use_remote_address: true
          via: 1.1 wasmproxy-conformance
          add_user_agent: true
          always_set_request_id_in_response: true
          server_header_transformation: APPEND_IF_ABSENT
"#,
        ),
        forwarding(
            "hcm_trusted_hops",
            "use_remote_address with xff_num_trusted_hops 1, skip_xff_append, internal_address_config, \
             preserve_external_request_id, generate_request_id false, server header passed through",
            r#"          use_remote_address: true
          xff_num_trusted_hops: 1
          skip_xff_append: true
          internal_address_config: { cidr_ranges: [{ address_prefix: 203.0.113.0, prefix_len: 24 }, { address_prefix: 127.0.0.1, prefix_len: 32 }] }
          preserve_external_request_id: true
          generate_request_id: false
          server_header_transformation: PASS_THROUGH
"#,
        ),
        paths(
            "hcm_path_normalization",
            "normalize_path, merge_slashes, path_with_escaped_slashes_action UNESCAPE_AND_FORWARD, strip_any_host_port",
            "          normalize_path: true\n          merge_slashes: true\n          path_with_escaped_slashes_action: UNESCAPE_AND_FORWARD\n          strip_any_host_port: true\n",
            &[
                "/a/./b/../c",
                "/a/%2e%2E/b",
                "/%41%7e%2f%3a%3A%5c",
                "/a\\b",
                "/a//b///c?x=//y/../z",
                "/../../x",
                "/a/b/..",
                "/sp%20ace/%7Bq%7d",
                "/a/%2F/b",
            ],
        ),
        paths(
            "hcm_escaped_slashes_rejected",
            "path_with_escaped_slashes_action REJECT_REQUEST, strip_matching_host_port",
            "          path_with_escaped_slashes_action: REJECT_REQUEST\n          strip_matching_host_port: true\n",
            &["/a%2Fb", "/a%5cb", "/plain/%41"],
        ),
        stalled_reader(
            "hcm_stream_idle_client_stops_reading",
            "stream_idle_timeout 1s: a client that stops reading a long response is idle, its stream reset \
             and its connection closed (downstream_rq_idle_timeout)",
            "          stream_idle_timeout: 1s\n",
            "",
            &[r"^http\.ingress\.downstream_rq_idle_timeout"],
        ),
        stalled_reader(
            "route_timeout_client_stops_reading",
            "a route timeout of 1s passing while a client that stopped reading gets a long response: the \
             response is cut and the connection closed (upstream_rq_timeout)",
            "",
            "timeout: 1s",
            &[r"^cluster\.upstream\.upstream_rq_timeout"],
        ),
        paths(
            "hcm_escaped_slashes_redirected",
            "path_with_escaped_slashes_action UNESCAPE_AND_REDIRECT with normalize_path",
            "          normalize_path: true\n          path_with_escaped_slashes_action: UNESCAPE_AND_REDIRECT\n",
            &["/a%2fb/../c?q=%2F", "/plain/./x"],
        ),
    ]
}

/// A client that reads the start of a long response (the upstream's `/endless`), then
/// nothing for 2.5 s, through a connection manager with `hcm` and, if `timeout` is given,
/// that timeout on the route the request takes; `stats` are compared.
fn stalled_reader(
    name: &'static str,
    about: &'static str,
    hcm: &str,
    timeout: &str,
    stats: &'static [&'static str],
) -> Scenario {
    let mut config = bootstrap_hcm("", hcm, "");
    if !timeout.is_empty() {
        let route = "                route: { cluster: upstream }\n";
        config = config.replacen(route, &format!("                route: {{ cluster: upstream, {timeout} }}\n"), 1);
    }
    let requests = vec![Request::stalled("/endless", 256 * 1024, 2500)];
    Scenario { stats, ..crate::scenarios::s(name, about, config, requests) }
}

/// Raw HTTP/1.1 GETs of `paths` (the host with a port) through a connection manager with
/// `hcm`: what the upstream and a plugin see, and the answers.
fn paths(name: &'static str, about: &'static str, hcm: &str, paths: &[&str]) -> Scenario {
    let plugin = probe(
        "probe",
        json!({"phases": {
            "request_headers": [["get_header", "0", ":path"], ["get_header", "0", ":authority"]],
            "log": [["get_property", "response.code_details"]]
        }}),
    );
    let requests = paths
        .iter()
        .map(|p| {
            Request::raw(&format!("GET {p} HTTP/1.1\r\nhost: conformance.test:10000\r\nconnection: close\r\n\r\n"))
        })
        .collect();
    crate::scenarios::s(name, about, bootstrap_hcm("", hcm, &plugin), requests)
}

/// Requests from clients that claim addresses (internal, external, chains of them) and
/// carry Envoy's internal headers, seen by a plugin (`source.address`) and by the upstream.
fn forwarding(name: &'static str, about: &'static str, hcm: &str) -> Scenario {
    // `source.address` only where it is not the peer, whose port varies.
    let plugin = probe(
        "probe",
        json!({"phases": {"request_headers": [
            ["get_header", "0", "x-forwarded-for"],
            ["get_header", "0", "x-envoy-internal"],
            ["get_header", "0", "x-forwarded-proto"],
        ]}}),
    );
    let internal_headers = |r: Request| {
        r.header("x-envoy-retry-on", "5xx")
            .header("x-envoy-retry-grpc-on", "cancelled")
            .header("x-envoy-max-retries", "2")
            .header("x-envoy-retriable-status-codes", "500")
            .header("x-envoy-retriable-header-names", "x-a")
            .header("x-envoy-upstream-alt-stat-name", "alt")
            .header("x-envoy-upstream-rq-timeout-ms", "5000")
            .header("x-envoy-upstream-rq-per-try-timeout-ms", "4000")
            .header("x-envoy-upstream-rq-timeout-alt-response", "204")
            .header("x-envoy-force-trace", "true")
            .header("x-envoy-ip-tags", "tag")
            .header("x-envoy-original-url", "http://x/")
            .header("x-envoy-hedge-on-per-try-timeout", "true")
            .header("x-envoy-downstream-service-node", "claimed-node")
            .header("x-envoy-internal", "true")
            .header("x-internal-only", "secret")
            .header("x-envoy-decorator-operation", "op")
            .header("x-envoy-downstream-service-cluster", "claimed")
            .header("x-envoy-expected-rq-timeout-ms", "1")
            .header("x-request-id", "client-id")
            .header("x-forwarded-proto", "https")
    };
    let requests = vec![
        Request::get("/plain"),
        internal_headers(Request::get("/no-xff")),
        internal_headers(Request::get("/xff-internal").header("x-forwarded-for", "10.0.0.1")),
        internal_headers(Request::get("/xff-external").header("x-forwarded-for", "203.0.113.9")),
        internal_headers(Request::get("/xff-chain").header("x-forwarded-for", "198.51.100.7, 10.0.0.1")),
        Request::get("/xff-garbage").header("x-forwarded-for", "not an address").header("user-agent", "curl"),
        Request::get("/direct"),
    ];
    let config = bootstrap_hcm("", hcm, &plugin).replacen("            virtual_hosts:\n", CLIENT_HEADERS, 1);
    crate::scenarios::s(name, about, config, requests)
}

/// `source.address` as plugins read it when the client's address comes from
/// `x-forwarded-for`: the address, port 0.
fn source_address_from_forwarded_for() -> Scenario {
    let plugin = probe("probe", json!({"phases": {"request_headers": [["get_property", "source.address"]]}}));
    let requests = ["10.0.0.1", "203.0.113.9", "198.51.100.7, 10.0.0.1", "2001:db8::7"]
        .iter()
        .map(|xff| Request::get("/xff").header("x-forwarded-for", xff))
        .collect();
    crate::scenarios::s(
        "hcm_source_address",
        "source.address from the last address of x-forwarded-for, as plugins read it",
        bootstrap_hcm("", "", &plugin),
        requests,
    )
}
