//! A cluster's load balancing settings: `common_lb_config` and the policies' own
//! (`least_request_lb_config`, `ring_hash_lb_config`, `maglev_lb_config`).

use crate::model::CommonLb;
use crate::reader::{Ctx, Field, Msg};

const COMMON_LB_CONFIG: &[&str] = &[
    "healthy_panic_threshold",
    "zone_aware_lb_config",
    "locality_weighted_lb_config",
    "update_merge_window",
    "ignore_new_hosts_until_first_hc",
    "close_connections_on_host_set_change",
    "consistent_hashing_lb_config",
    "override_host_status",
];
const PERCENT: &[&str] = &["value"];
const CONSISTENT_HASHING: &[&str] = &["use_hostname_for_hashing", "hash_balance_factor"];
const LEAST_REQUEST: &[&str] = &["choice_count", "active_request_bias", "slow_start_config", "selection_method"];
const RUNTIME_DOUBLE: &[&str] = &["default_value", "runtime_key"];
const RING_HASH: &[&str] = &["minimum_ring_size", "hash_function", "maximum_ring_size"];
const HASH_FUNCTION: &[(&str, i64, Option<()>)] = &[("XX_HASH", 0, Some(())), ("MURMUR_HASH_2", 1, None)];
const MAGLEV: &[&str] = &["table_size"];
const ROUND_ROBIN: &[&str] = &["slow_start_config"];
/// Envoy's largest ring.
const MAX_RING_SIZE: u64 = 8 * 1024 * 1024;
/// Envoy's largest Maglev table.
const MAX_MAGLEV_TABLE: u64 = 5_000_011;

/// Reads the load balancing settings of a cluster's message.
pub(crate) fn read_lb_settings(ctx: &mut Ctx, msg: &mut Msg<'_>) -> CommonLb {
    let mut lb = CommonLb::default();
    msg.at_most_one(
        ctx,
        &[
            "ring_hash_lb_config",
            "maglev_lb_config",
            "original_dst_lb_config",
            "least_request_lb_config",
            "round_robin_lb_config",
        ],
    );
    if let Some(f) = msg.get(ctx, "common_lb_config") {
        read_common(ctx, &f, &mut lb);
    }
    if let Some(f) = msg.get(ctx, "least_request_lb_config") {
        read_least_request(ctx, &f, &mut lb);
    }
    if let Some(f) = msg.get(ctx, "ring_hash_lb_config") {
        read_ring_hash(ctx, &f, &mut lb);
    }
    if let Some(f) = msg.get(ctx, "maglev_lb_config") {
        read_maglev(ctx, &f, &mut lb);
    }
    if let Some(f) = msg.get(ctx, "round_robin_lb_config")
        && let Some(m) = f.message(ctx, ROUND_ROBIN)
    {
        m.finish(ctx);
    }
    lb
}

/// `least_request_lb_config`.
fn read_least_request(ctx: &mut Ctx, field: &Field<'_>, lb: &mut CommonLb) {
    if let Some(mut m) = field.message(ctx, LEAST_REQUEST) {
        if let Some(f) = m.get(ctx, "choice_count")
            && let Some(n) = f.unsigned(ctx, u64::from(u32::MAX))
        {
            if n < 2 {
                f.error(ctx, "must be at least 2");
            }
            lb.choice_count = n.max(2) as u32;
        }
        if let Some(f) = m.get(ctx, "active_request_bias")
            && let Some(mut bias) = f.message(ctx, RUNTIME_DOUBLE)
        {
            if let Some(f) = bias.required(ctx, "default_value")
                && let Some(v) = f.number(ctx)
            {
                if v < 0.0 {
                    f.error(ctx, "must not be negative");
                }
                lb.active_request_bias = Some(v.max(0.0));
            }
            // The runtime key is read from the runtime only if it is there: the default is used.
            bias.ignore(ctx, "runtime_key");
            bias.finish(ctx);
        }
        m.finish(ctx);
    }
}

/// `ring_hash_lb_config`.
fn read_ring_hash(ctx: &mut Ctx, field: &Field<'_>, lb: &mut CommonLb) {
    if let Some(mut m) = field.message(ctx, RING_HASH) {
        let mut size = |m: &mut Msg<'_>, name: &str, into: &mut u64| {
            if let Some(v) = m.get(ctx, name).and_then(|f| f.unsigned(ctx, MAX_RING_SIZE)) {
                *into = v;
            }
        };
        size(&mut m, "minimum_ring_size", &mut lb.minimum_ring_size);
        size(&mut m, "maximum_ring_size", &mut lb.maximum_ring_size);
        if lb.minimum_ring_size > lb.maximum_ring_size {
            ctx.error(m.origin(), "minimum_ring_size must not be larger than maximum_ring_size");
        }
        m.get(ctx, "hash_function").and_then(|f| f.enumeration(ctx, HASH_FUNCTION));
        m.finish(ctx);
    }
}

/// `maglev_lb_config`.
fn read_maglev(ctx: &mut Ctx, field: &Field<'_>, lb: &mut CommonLb) {
    if let Some(mut m) = field.message(ctx, MAGLEV) {
        if let Some(f) = m.get(ctx, "table_size")
            && let Some(v) = f.unsigned(ctx, MAX_MAGLEV_TABLE)
        {
            if !is_prime(v) {
                f.error(ctx, "must be a prime number");
            }
            lb.maglev_table_size = v;
        }
        m.finish(ctx);
    }
}

/// `common_lb_config`.
fn read_common(ctx: &mut Ctx, field: &Field<'_>, lb: &mut CommonLb) {
    let Some(mut msg) = field.message(ctx, COMMON_LB_CONFIG) else { return };
    msg.at_most_one(ctx, &["zone_aware_lb_config", "locality_weighted_lb_config"]);
    if let Some(f) = msg.get(ctx, "healthy_panic_threshold")
        && let Some(mut m) = f.message(ctx, PERCENT)
    {
        if let Some(f) = m.get(ctx, "value")
            && let Some(v) = f.number(ctx)
        {
            if !(0.0..=100.0).contains(&v) {
                f.error(ctx, "must be between 0 and 100");
            }
            lb.panic_threshold = v.clamp(0.0, 100.0);
        } else {
            lb.panic_threshold = 0.0;
        }
        m.finish(ctx);
    }
    if let Some(f) = msg.get(ctx, "locality_weighted_lb_config")
        && let Some(m) = f.message(ctx, &[])
    {
        m.finish(ctx);
        lb.locality_weighted = true;
    }
    if let Some(f) = msg.get(ctx, "consistent_hashing_lb_config")
        && let Some(mut m) = f.message(ctx, CONSISTENT_HASHING)
    {
        lb.hash_by_hostname = m.get(ctx, "use_hostname_for_hashing").and_then(|f| f.bool(ctx)).unwrap_or(false);
        m.finish(ctx);
    }
    msg.finish(ctx);
}

fn is_prime(n: u64) -> bool {
    n >= 2 && (2..).take_while(|d| d * d <= n).all(|d| !n.is_multiple_of(d))
}
