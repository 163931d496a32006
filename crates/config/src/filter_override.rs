//! `typed_per_filter_config` of a route configuration, a virtual host or a route: per
//! filter name, an `envoy.config.route.v3.FilterConfig` that turns the filter off there, or
//! a native filter's own per-route configuration (CORS, local rate limit, compressor). Envoy's
//! Wasm filter has none (so, as in Envoy, nothing turns a Wasm filter `disabled` in
//! `http_filters` back on).

use crate::buffer::{BUFFER_PER_ROUTE, BUFFER_PER_ROUTE_TYPE, read_buffer_per_route};
use crate::compressor::{COMPRESSOR_PER_ROUTE, COMPRESSOR_PER_ROUTE_TYPE, read_compressor_per_route};
use crate::cors::{CORS_POLICY, read_cors_policy};
use crate::csrf::{CSRF_POLICY, CSRF_TYPE, read_csrf_policy};
use crate::ext_authz::{EXT_AUTHZ_PER_ROUTE, EXT_AUTHZ_PER_ROUTE_TYPE, read_ext_authz_per_route};
use crate::fault::{FAULT, FAULT_TYPE, read_fault};
use crate::header_mutation::{
    HEADER_MUTATION_PER_ROUTE, HEADER_MUTATION_PER_ROUTE_TYPE, read_header_mutation_per_route,
};
use crate::local_ratelimit::{LOCAL_RATE_LIMIT, LOCAL_RATE_LIMIT_TYPE, read_local_rate_limit};
use crate::model::{FilterOverride, PerFilterConfig};
use crate::rbac::{RBAC_PER_ROUTE, RBAC_PER_ROUTE_TYPE, read_rbac_per_route};
use crate::reader::{Ctx, Msg};

const CORS_POLICY_TYPE: &str = "envoy.extensions.filters.http.cors.v3.CorsPolicy";

const FILTER_CONFIG_TYPE: &str = "envoy.config.route.v3.FilterConfig";
const FILTER_CONFIG: &[&str] = &["config", "is_optional", "disabled"];

/// The `typed_per_filter_config` of `msg`.
pub(crate) fn read_filter_overrides(ctx: &mut Ctx, msg: &mut Msg<'_>) -> Vec<FilterOverride> {
    let Some(field) = msg.get(ctx, "typed_per_filter_config") else { return Vec::new() };
    let mut overrides = Vec::new();
    for (name, value) in field.map_entries(ctx) {
        let Some(any) = value.any(ctx) else { continue };
        let config = match any.type_name.as_str() {
            FILTER_CONFIG_TYPE => None,
            CORS_POLICY_TYPE => {
                Some(any.message(ctx, CORS_POLICY).map(|m| PerFilterConfig::Cors(Box::new(read_cors_policy(ctx, m)))))
            }
            LOCAL_RATE_LIMIT_TYPE => Some(
                any.message(ctx, LOCAL_RATE_LIMIT)
                    .and_then(|m| read_local_rate_limit(ctx, m, true))
                    .map(|l| PerFilterConfig::LocalRateLimit(Box::new(l))),
            ),
            CSRF_TYPE => Some(
                any.message(ctx, CSRF_POLICY)
                    .and_then(|m| read_csrf_policy(ctx, m))
                    .map(|c| PerFilterConfig::Csrf(Box::new(c))),
            ),
            EXT_AUTHZ_PER_ROUTE_TYPE => Some(
                any.message(ctx, EXT_AUTHZ_PER_ROUTE)
                    .and_then(|m| read_ext_authz_per_route(ctx, m))
                    .map(|c| PerFilterConfig::ExtAuthz(Box::new(c))),
            ),
            BUFFER_PER_ROUTE_TYPE => Some(
                any.message(ctx, BUFFER_PER_ROUTE)
                    .and_then(|m| read_buffer_per_route(ctx, m))
                    .map(PerFilterConfig::Buffer),
            ),
            HEADER_MUTATION_PER_ROUTE_TYPE => Some(
                any.message(ctx, HEADER_MUTATION_PER_ROUTE)
                    .map(|m| PerFilterConfig::HeaderMutation(Box::new(read_header_mutation_per_route(ctx, m)))),
            ),
            FAULT_TYPE => Some(
                any.message(ctx, FAULT).and_then(|m| read_fault(ctx, m)).map(|f| PerFilterConfig::Fault(Box::new(f))),
            ),
            RBAC_PER_ROUTE_TYPE => Some(
                any.message(ctx, RBAC_PER_ROUTE)
                    .map(|m| PerFilterConfig::Rbac(read_rbac_per_route(ctx, m).map(Box::new))),
            ),
            COMPRESSOR_PER_ROUTE_TYPE => Some(
                any.message(ctx, COMPRESSOR_PER_ROUTE)
                    .and_then(|m| read_compressor_per_route(ctx, m))
                    .map(|c| PerFilterConfig::Compressor(Box::new(c))),
            ),
            other => {
                value.error(
                    ctx,
                    format!(
                        "per-route configuration {other} is not supported by wasmproxy (only {FILTER_CONFIG_TYPE}, \
                         {CORS_POLICY_TYPE}, {LOCAL_RATE_LIMIT_TYPE}, {COMPRESSOR_PER_ROUTE_TYPE}, {CSRF_TYPE}, {EXT_AUTHZ_PER_ROUTE_TYPE}, {RBAC_PER_ROUTE_TYPE}, {FAULT_TYPE}, {BUFFER_PER_ROUTE_TYPE} and {HEADER_MUTATION_PER_ROUTE_TYPE})"
                    ),
                );
                continue;
            }
        };
        if let Some(config) = config {
            // A filter's own configuration turns it on for these routes, as in Envoy.
            if let Some(config) = config {
                overrides.push(FilterOverride { name, disabled: false, config: Some(config) });
            }
            continue;
        }
        let Some(mut config) = any.message(ctx, FILTER_CONFIG) else { continue };
        let disabled = config.get(ctx, "disabled").and_then(|f| f.bool(ctx)).unwrap_or(false);
        // `is_optional` is about `config`, refused below.
        config.get(ctx, "is_optional").and_then(|f| f.bool(ctx));
        if let Some(inner) = config.get(ctx, "config") {
            inner
                .error(ctx, format!("the filter {name} doesn't support virtual host or route specific configurations"));
        } else if !disabled {
            value.error(ctx, format!("Empty route/virtual host per filter configuration for {name} filter"));
        }
        config.finish(ctx);
        overrides.push(FilterOverride { name, disabled, config: None });
    }
    overrides
}
