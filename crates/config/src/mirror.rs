//! A route's `request_mirror_policies`: the clusters a copy of each request goes to.

use crate::model::MirrorPolicy;
use crate::reader::{Ctx, Field};

const MIRROR_POLICY: &[&str] = &[
    "cluster",
    "cluster_header",
    "runtime_fraction",
    "trace_sampled",
    "disable_shadow_host_suffix_append",
    "request_headers_mutations",
    "host_rewrite_literal",
];
const RUNTIME_FRACTIONAL_PERCENT: &[&str] = &["default_value", "runtime_key"];
const FRACTIONAL_PERCENT: &[&str] = &["numerator", "denominator"];
const DENOMINATOR: &[(&str, i64, Option<u32>)] =
    &[("HUNDRED", 0, Some(100)), ("TEN_THOUSAND", 1, Some(10_000)), ("MILLION", 2, Some(1_000_000))];

/// `request_mirror_policies`: each names its cluster (or the header that does).
pub(crate) fn read_mirror_policies(ctx: &mut Ctx, field: &Field<'_>) -> Vec<MirrorPolicy> {
    let mut policies = Vec::new();
    for item in field.list() {
        let Some(mut msg) = item.message(ctx, MIRROR_POLICY) else { continue };
        msg.at_most_one(ctx, &["cluster", "cluster_header"]);
        let mut policy =
            MirrorPolicy { cluster: String::new(), cluster_header: None, per_million: 1_000_000, host_suffix: true };
        if let Some(f) = msg.get(ctx, "cluster") {
            if let Some(name) = f.string(ctx).filter(|n| !n.is_empty()) {
                ctx.refs.cluster_refs.push((name.clone(), f.origin()));
                policy.cluster = name;
            }
        } else if let Some(f) = msg.get(ctx, "cluster_header") {
            policy.cluster_header = f.string(ctx).map(|h| h.to_ascii_lowercase()).filter(|h| !h.is_empty());
        } else {
            ctx.error(msg.origin(), "a mirror policy needs cluster or cluster_header");
        }
        if let Some(f) = msg.get(ctx, "runtime_fraction") {
            policy.per_million = read_runtime_fraction(ctx, &f);
        }
        let suffix = msg.get(ctx, "disable_shadow_host_suffix_append").and_then(|f| f.bool(ctx));
        policy.host_suffix = !suffix.unwrap_or(false);
        msg.finish(ctx);
        policies.push(policy);
    }
    policies
}

/// A `RuntimeFractionalPercent`'s default, in millionths (its runtime key is not looked
/// up, with a warning).
fn read_runtime_fraction(ctx: &mut Ctx, field: &Field<'_>) -> u32 {
    let Some(mut msg) = field.message(ctx, RUNTIME_FRACTIONAL_PERCENT) else { return 1_000_000 };
    msg.ignore_with_warning(ctx, "runtime_key", "wasmproxy does not look runtime keys up here: default_value applies");
    let mut per_million = 0;
    if let Some(f) = msg.required(ctx, "default_value")
        && let Some(mut m) = f.message(ctx, FRACTIONAL_PERCENT)
    {
        let numerator = m.get(ctx, "numerator").and_then(|f| f.unsigned(ctx, u64::from(u32::MAX))).unwrap_or(0);
        let denominator = m.get(ctx, "denominator").and_then(|f| f.enumeration(ctx, DENOMINATOR)).unwrap_or(100);
        m.finish(ctx);
        per_million = (numerator.min(u64::from(denominator)) * (1_000_000 / u64::from(denominator))) as u32;
    }
    msg.finish(ctx);
    per_million
}
