//! A route's `request_mirror_policies`: the clusters a copy of each request goes to.

use crate::model::MirrorPolicy;
use crate::reader::{Ctx, Field};
use crate::runtime::read_runtime_fraction;

const MIRROR_POLICY: &[&str] = &[
    "cluster",
    "cluster_header",
    "runtime_fraction",
    "trace_sampled",
    "disable_shadow_host_suffix_append",
    "request_headers_mutations",
    "host_rewrite_literal",
];

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
