//! `envoy.filters.http.csrf`: the `CsrfPolicy` of the filter and of routes.

use crate::matcher::read_string_matcher;
use crate::model::CsrfPolicy;
use crate::reader::{Ctx, Msg};
use crate::runtime::read_runtime_fraction;

pub(crate) const CSRF_TYPE: &str = "envoy.extensions.filters.http.csrf.v3.CsrfPolicy";
pub(crate) const CSRF_POLICY: &[&str] = &["filter_enabled", "shadow_enabled", "additional_origins"];

/// A `CsrfPolicy` (opened with [`CSRF_POLICY`]): `filter_enabled` is required.
pub(crate) fn read_csrf_policy(ctx: &mut Ctx, mut msg: Msg<'_>) -> Option<CsrfPolicy> {
    let filter_enabled = msg.required(ctx, "filter_enabled").map(|f| read_runtime_fraction(ctx, &f));
    let shadow_enabled = msg.get(ctx, "shadow_enabled").map_or(0, |f| read_runtime_fraction(ctx, &f));
    let origins = msg.get(ctx, "additional_origins").map(|f| f.list()).unwrap_or_default();
    let additional_origins = origins.iter().filter_map(|o| read_string_matcher(ctx, o)).collect();
    msg.finish(ctx);
    Some(CsrfPolicy { filter_enabled: filter_enabled?, shadow_enabled, additional_origins })
}
