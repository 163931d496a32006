//! `envoy.filters.http.rbac` between two plugins: policies (permissions and principals,
//! enforced and in shadow mode, per-policy stats, a route's own policies and a route with
//! none) and the matcher form of Envoy's example.

use wasmproxy_conformance::client::Request;

use crate::native_filters::{between_probes, native};
use crate::scenario::{CATCH_ALL, CODE_FLAGS_LOG, Scenario};

const RBAC: &str = "envoy.extensions.filters.http.rbac.v3.RBAC";
const PER_ROUTE: &str = "\"@type\": type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBACPerRoute";

/// Every RBAC scenario.
pub fn scenarios() -> Vec<Scenario> {
    vec![rules(), matcher()]
}

/// The bootstrap with `body` as the filter's configuration between two probes, and `routes`
/// before the catch-all.
fn config(body: &str, routes: &str) -> String {
    let chain = between_probes(&native("envoy.filters.http.rbac", RBAC, body));
    crate::scenario::bootstrap_hcm("", CODE_FLAGS_LOG, &chain).replacen(CATCH_ALL, &format!("{routes}{CATCH_ALL}"), 1)
}

/// Policies in name order, each kind of permission and principal, a shadow engine that
/// denies POSTs, per-policy stats with prefixes; a route with no policies and one with its
/// own (denying everything).
fn rules() -> Scenario {
    let body = r#"              rules_stat_prefix: enforced_
              shadow_rules_stat_prefix: shadowed_
              track_per_rule_stats: true
              rules:
                action: ALLOW
                policies:
                  "b admin":
                    permissions: [{ url_path: { path: { prefix: /admin } } }]
                    principals: [{ header: { name: x-role, string_match: { exact: admin } } }]
                  a-get-public:
                    permissions:
                    - and_rules:
                        rules:
                        - header: { name: ":method", string_match: { exact: GET } }
                        - url_path: { path: { prefix: /public } }
                    principals: [{ any: true }]
                  c-local:
                    permissions:
                    - and_rules:
                        rules:
                        - url_path: { path: { exact: /local } }
                        - destination_port_range: { start: 1, end: 65536 }
                        - destination_ip: { address_prefix: 127.0.0.1, prefix_len: 32 }
                    principals:
                    - and_ids:
                        ids:
                        - remote_ip: { address_prefix: 127.0.0.0, prefix_len: 8 }
                        - direct_remote_ip: { address_prefix: 127.0.0.1 , prefix_len: 32 }
                        - not_id: { header: { name: x-blocked, present_match: true } }
                  d-multi:
                    permissions:
                    - or_rules:
                        rules:
                        - header: { name: x-tags, exact_match: "a,b" }
                        - not_rule: { requested_server_name: { exact: "" } }
                    principals: [{ authenticated: {} }, { url_path: { path: { safe_regex: { regex: "/multi.*" } } } }]
              shadow_rules:
                action: DENY
                policies:
                  shadow-post:
                    permissions: [{ header: { name: ":method", string_match: { exact: POST } } }]
                    principals: [{ any: true }]
"#;
    let routes = format!(
        r#"              - match: {{ prefix: /public/route, headers: [{{ name: x-route, string_match: {{ exact: "a,b" }} }}] }}
                direct_response: {{ status: 200, body: {{ inline_string: "header route" }} }}
              - match: {{ prefix: /open }}
                route: {{ cluster: upstream }}
                typed_per_filter_config:
                  envoy.filters.http.rbac: {{ {PER_ROUTE} }}
              - match: {{ prefix: /strict }}
                route: {{ cluster: upstream }}
                typed_per_filter_config:
                  envoy.filters.http.rbac:
                    {PER_ROUTE}
                    rbac: {{ rules: {{ action: DENY, policies: {{ everything: {{ permissions: [{{ any: true }}], principals: [{{ any: true }}] }} }} }} }}
"#
    );
    let scenario = crate::scenarios::s(
        "rbac_rules",
        "envoy.filters.http.rbac policies between two plugins: permissions and principals of each kind, shadow rules, per-policy stats, routes with their own",
        config(body, &routes),
        vec![
            Request::get("/public/a"),
            Request::post("/public/a", ""),
            Request::get("/admin/x").header("x-role", "admin"),
            Request::get("/admin/x").header("x-role", "user"),
            Request::get("/local"),
            Request::get("/local").header("x-blocked", "1"),
            Request::get("/multi").header("x-tags", "a").header("x-tags", "b"),
            Request::get("/multi").header("x-tags", "a"),
            Request::get("/multi").header("x-tags", "a,b"),
            Request::get("/multi").header("x-tags", "x").header("x-tags", "a,b"),
            Request::get("/public/route").header("x-route", "a").header("x-route", "b"),
            Request::get("/public/route").header("x-route", "x").header("x-route", "a,b"),
            Request::get("/open/x"),
            Request::get("/strict/x"),
            Request::post("/pkg.Echo/Say", "").header("content-type", "application/grpc").header("te", "trailers"),
        ],
    );
    Scenario { stats: &[r"^http\.ingress\.rbac\."], ..scenario }
}

/// The matcher form of Envoy's `rbac` example (a `referer` not from the docs is denied),
/// with an `or_matcher` allowing local clients to one path, and an `and_matcher` on the
/// destination port.
fn matcher() -> Scenario {
    let body = r#"              matcher:
                matcher_list:
                  matchers:
                  - predicate:
                      and_matcher:
                        predicate:
                        - single_predicate:
                            input: { name: path, typed_config: { "@type": type.googleapis.com/envoy.type.matcher.v3.HttpRequestHeaderMatchInput, header_name: ":path" } }
                            value_match: { prefix: /internal }
                        - or_matcher:
                            predicate:
                            - single_predicate:
                                input: { name: ip, typed_config: { "@type": type.googleapis.com/envoy.extensions.matching.common_inputs.network.v3.SourceIPInput } }
                                value_match: { exact: 127.0.0.1 }
                            - single_predicate:
                                input: { name: port, typed_config: { "@type": type.googleapis.com/envoy.extensions.matching.common_inputs.network.v3.DestinationPortInput } }
                                value_match: { exact: "1" }
                    on_match:
                      action: { name: action, typed_config: { "@type": type.googleapis.com/envoy.config.rbac.v3.Action, name: local-internal, action: ALLOW } }
                  - predicate:
                      not_matcher:
                        single_predicate:
                          input: { name: envoy.matching.inputs.request_headers, typed_config: { "@type": type.googleapis.com/envoy.type.matcher.v3.HttpRequestHeaderMatchInput, header_name: referer } }
                          value_match: { safe_regex: { google_re2: {}, regex: "https?://(www.)?envoyproxy.io/docs/envoy.*" } }
                    on_match:
                      action: { name: action, typed_config: { "@type": type.googleapis.com/envoy.config.rbac.v3.Action, name: illegal referer, action: DENY } }
                on_no_match:
                  action: { name: action, typed_config: { "@type": type.googleapis.com/envoy.config.rbac.v3.Action, name: all-pass, action: ALLOW } }
"#;
    let scenario = crate::scenarios::s(
        "rbac_matcher",
        "envoy.filters.http.rbac with a matcher (Envoy's example and more): header, address and port inputs, and/or/not, on_no_match",
        config(body, ""),
        vec![
            Request::get("/page").header("referer", "https://www.envoyproxy.io/docs/envoy/latest"),
            Request::get("/page").header("referer", "https://elsewhere.test/"),
            Request::get("/page"),
            Request::get("/internal/stats"),
        ],
    );
    Scenario { stats: &[r"^http\.ingress\.rbac\."], ..scenario }
}
