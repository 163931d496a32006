//! `typed_per_filter_config` of a route configuration, a virtual host or a route: per
//! filter name, an `envoy.config.route.v3.FilterConfig` that turns the filter off there.
//! A filter's own per-route configuration is refused: Envoy's Wasm filter has none (so,
//! as in Envoy, nothing turns a filter `disabled` in `http_filters` back on).

use crate::model::FilterOverride;
use crate::reader::{Ctx, Msg};

const FILTER_CONFIG_TYPE: &str = "envoy.config.route.v3.FilterConfig";
const FILTER_CONFIG: &[&str] = &["config", "is_optional", "disabled"];

/// The `typed_per_filter_config` of `msg`.
pub(crate) fn read_filter_overrides(ctx: &mut Ctx, msg: &mut Msg<'_>) -> Vec<FilterOverride> {
    let Some(field) = msg.get(ctx, "typed_per_filter_config") else { return Vec::new() };
    let mut overrides = Vec::new();
    for (name, value) in field.map_entries(ctx) {
        let Some(any) = value.any(ctx) else { continue };
        if any.type_name != FILTER_CONFIG_TYPE {
            value.error(
                ctx,
                format!(
                    "per-route configuration {} is not supported by wasmproxy (only {FILTER_CONFIG_TYPE}, to turn a filter off or on)",
                    any.type_name
                ),
            );
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
        overrides.push(FilterOverride { name, disabled });
    }
    overrides
}
