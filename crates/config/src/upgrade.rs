//! `upgrade_configs` of a connection manager or a route: which HTTP/1.1 upgrades a stream
//! may make.

use crate::model::Upgrade;
use crate::reader::{Ctx, Msg};

/// `upgrade_configs` of a connection manager or a route (`fields`: its message's fields):
/// the type and `enabled`; any other field (`filters`, `connect_config`) is refused.
pub(crate) fn read_upgrades(ctx: &mut Ctx, msg: &mut Msg<'_>, fields: &'static [&'static str]) -> Vec<Upgrade> {
    let items = msg.get(ctx, "upgrade_configs").map(|f| f.list()).unwrap_or_default();
    let mut upgrades: Vec<Upgrade> = Vec::new();
    for item in items {
        let Some(mut config) = item.message(ctx, fields) else { continue };
        let kind = config.required(ctx, "upgrade_type").and_then(|f| f.string(ctx)).map(|k| k.to_ascii_lowercase());
        let enabled = config.get(ctx, "enabled").and_then(|f| f.bool_value(ctx)).unwrap_or(true);
        config.finish(ctx);
        let Some(kind) = kind else { continue };
        if kind.eq_ignore_ascii_case("connect") {
            item.error(ctx, "CONNECT is not supported by wasmproxy");
        } else if upgrades.iter().any(|u| u.kind == kind) {
            item.error(ctx, format!("upgrade type {kind:?} is configured twice"));
        } else {
            upgrades.push(Upgrade { kind, enabled });
        }
    }
    upgrades
}
