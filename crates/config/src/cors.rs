//! CORS policies: `envoy.extensions.filters.http.cors.v3.CorsPolicy` in a route's
//! `typed_per_filter_config`, and the deprecated `cors` of virtual hosts and routes (the same
//! fields, read the same way).

use crate::matcher::read_string_matcher;
use crate::model::CorsPolicy;
use crate::reader::{Ctx, Msg};
use crate::runtime::read_runtime_fraction;

pub(crate) const CORS_POLICY: &[&str] = &[
    "allow_origin_string_match",
    "allow_methods",
    "allow_headers",
    "expose_headers",
    "max_age",
    "allow_credentials",
    "filter_enabled",
    "shadow_enabled",
    "allow_private_network_access",
    "forward_not_matching_preflights",
];

/// A CORS policy, typed or legacy (opened with [`CORS_POLICY`]).
pub(crate) fn read_cors_policy(ctx: &mut Ctx, mut msg: Msg<'_>) -> CorsPolicy {
    let origins = msg.get(ctx, "allow_origin_string_match").map(|f| f.list()).unwrap_or_default();
    let allow_origin = origins.iter().filter_map(|o| read_string_matcher(ctx, o)).collect();
    let text = |ctx: &mut Ctx, msg: &mut Msg<'_>, name: &str| {
        msg.get(ctx, name).and_then(|f| f.string(ctx)).unwrap_or_default()
    };
    let allow_methods = text(ctx, &mut msg, "allow_methods");
    let allow_headers = text(ctx, &mut msg, "allow_headers");
    let expose_headers = text(ctx, &mut msg, "expose_headers");
    let max_age = text(ctx, &mut msg, "max_age");
    let flag = |ctx: &mut Ctx, msg: &mut Msg<'_>, name: &str| msg.get(ctx, name).and_then(|f| f.bool_value(ctx));
    let allow_credentials = flag(ctx, &mut msg, "allow_credentials");
    let allow_private_network_access = flag(ctx, &mut msg, "allow_private_network_access");
    let forward_not_matching_preflights = flag(ctx, &mut msg, "forward_not_matching_preflights");
    let filter_enabled = msg.get(ctx, "filter_enabled").map(|f| read_runtime_fraction(ctx, &f));
    let shadow_enabled = msg.get(ctx, "shadow_enabled").map(|f| read_runtime_fraction(ctx, &f));
    msg.finish(ctx);
    CorsPolicy {
        allow_origin,
        allow_methods,
        allow_headers,
        expose_headers,
        max_age,
        allow_credentials,
        allow_private_network_access,
        forward_not_matching_preflights,
        filter_enabled,
        shadow_enabled,
    }
}
