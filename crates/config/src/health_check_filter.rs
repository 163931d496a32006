//! `envoy.filters.http.health_check`: health check requests (those its `headers` match)
//! answered by this proxy (or passed through), with its own state and its clusters' health.

use crate::matcher::read_header_matcher;
use crate::model::HealthCheckFilter;
use crate::reader::{Ctx, Msg};

pub(crate) const HEALTH_CHECK_TYPE: &str = "envoy.extensions.filters.http.health_check.v3.HealthCheck";
pub(crate) const HEALTH_CHECK: &[&str] =
    &["pass_through_mode", "cache_time", "cluster_min_healthy_percentages", "headers"];
const PERCENT: &[&str] = &["value"];

/// A `HealthCheck` (opened with [`HEALTH_CHECK`]): `pass_through_mode` is required.
pub(crate) fn read_health_check_filter(ctx: &mut Ctx, mut msg: Msg<'_>) -> Option<HealthCheckFilter> {
    let pass_through = msg.required(ctx, "pass_through_mode").and_then(|f| f.bool_value(ctx));
    let headers = msg.get(ctx, "headers").map(|f| f.list()).unwrap_or_default();
    let headers = headers.iter().filter_map(|h| read_header_matcher(ctx, h)).collect();
    let mut clusters = Vec::new();
    for (name, value) in msg.get(ctx, "cluster_min_healthy_percentages").map(|f| f.map_entries(ctx)).unwrap_or_default()
    {
        let Some(mut p) = value.message(ctx, PERCENT) else { continue };
        let percent = p.get(ctx, "value").and_then(|f| f.number(ctx)).unwrap_or(0.0);
        p.finish(ctx);
        if !(0.0..=100.0).contains(&percent) {
            value.error(ctx, "value: must be between 0 and 100");
            continue;
        }
        clusters.push((name, percent));
    }
    if pass_through == Some(true) && !clusters.is_empty() {
        ctx.error(
            &msg.origin().with_child("cluster_min_healthy_percentages"),
            "only used without pass_through_mode: not supported by wasmproxy with it",
        );
    }
    msg.finish(ctx);
    Some(HealthCheckFilter { pass_through: pass_through?, headers, clusters })
}
