//! Runtime settings in configurations: a `RuntimeFractionalPercent`'s or a
//! `RuntimeFeatureFlag`'s default (wasmproxy has no runtime layer to look keys up in).

use crate::model::Percent;
use crate::reader::{Ctx, Field};

const RUNTIME_FRACTIONAL_PERCENT: &[&str] = &["default_value", "runtime_key"];
const FEATURE_FLAG: &[&str] = &["default_value", "runtime_key"];
const FRACTIONAL_PERCENT: &[&str] = &["numerator", "denominator"];
const DENOMINATOR: &[(&str, i64, Option<u32>)] =
    &[("HUNDRED", 0, Some(100)), ("TEN_THOUSAND", 1, Some(10_000)), ("MILLION", 2, Some(1_000_000))];

/// A `RuntimeFractionalPercent`'s default, in millionths (its runtime key is not looked
/// up, with a warning).
pub(crate) fn read_runtime_fraction(ctx: &mut Ctx, field: &Field<'_>) -> u32 {
    let Some(mut msg) = field.message(ctx, RUNTIME_FRACTIONAL_PERCENT) else { return 1_000_000 };
    msg.ignore_with_warning(ctx, "runtime_key", "wasmproxy does not look runtime keys up here: default_value applies");
    let per_million = msg.required(ctx, "default_value").and_then(|f| read_fractional_percent(ctx, &f));
    msg.finish(ctx);
    per_million.map_or(0, |p| p.per_million())
}

/// A `FractionalPercent`.
pub(crate) fn read_fractional_percent(ctx: &mut Ctx, field: &Field<'_>) -> Option<Percent> {
    let mut m = field.message(ctx, FRACTIONAL_PERCENT)?;
    let numerator = m.get(ctx, "numerator").and_then(|f| f.unsigned(ctx, u64::from(u32::MAX))).unwrap_or(0);
    let denominator = m.get(ctx, "denominator").and_then(|f| f.enumeration(ctx, DENOMINATOR)).unwrap_or(100);
    m.finish(ctx);
    Some(Percent { numerator: numerator as u32, denominator })
}

/// A `RuntimeFeatureFlag`'s default (its runtime key is not looked up, with a warning).
pub(crate) fn read_feature_flag(ctx: &mut Ctx, field: &Field<'_>) -> Option<bool> {
    let mut m = field.message(ctx, FEATURE_FLAG)?;
    m.ignore_with_warning(ctx, "runtime_key", "wasmproxy does not look runtime keys up here: default_value applies");
    let value = m.required(ctx, "default_value").and_then(|f| f.bool_value(ctx));
    m.finish(ctx);
    value
}
