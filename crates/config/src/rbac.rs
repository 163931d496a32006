//! `envoy.filters.http.rbac`: role-based access control by `rules` (policies of permissions
//! and principals) or by a `matcher` tree of predicates on the request, enforced and in
//! shadow mode; `RBACPerRoute`. CEL conditions, metadata and filter state matches are
//! refused.

use crate::chain_match::read_cidr_range;
use crate::matcher::{read_header_matcher, read_string_matcher};
use crate::model::{
    MatchInput, MatchPredicate, Permission, Principal, Rbac, RbacAction, RbacEngine, RbacMatchAction, RbacMatcher,
    RbacPolicy, RbacRules,
};
use crate::reader::{Ctx, Field, Msg};

pub(crate) const RBAC_TYPE: &str = "envoy.extensions.filters.http.rbac.v3.RBAC";
pub(crate) const RBAC_PER_ROUTE_TYPE: &str = "envoy.extensions.filters.http.rbac.v3.RBACPerRoute";

pub(crate) const RBAC: &[&str] = &[
    "rules",
    "rules_stat_prefix",
    "matcher",
    "shadow_rules",
    "shadow_matcher",
    "shadow_rules_stat_prefix",
    "track_per_rule_stats",
];
pub(crate) const RBAC_PER_ROUTE: &[&str] = &["rbac"];
const RULES: &[&str] = &["action", "policies", "audit_logging_options"];
const POLICY: &[&str] = &["permissions", "principals", "condition", "checked_condition", "cel_config"];
const PERMISSION: &[&str] = &[
    "and_rules",
    "or_rules",
    "any",
    "header",
    "url_path",
    "destination_ip",
    "destination_port",
    "destination_port_range",
    "metadata",
    "not_rule",
    "requested_server_name",
    "matcher",
    "uri_template",
    "sourced_metadata",
];
const PRINCIPAL: &[&str] = &[
    "and_ids",
    "or_ids",
    "any",
    "authenticated",
    "source_ip",
    "direct_remote_ip",
    "remote_ip",
    "header",
    "url_path",
    "metadata",
    "filter_state",
    "not_id",
    "sourced_metadata",
    "custom",
];
const RULE_SET: &[&str] = &["rules"];
const ID_SET: &[&str] = &["ids"];
const AUTHENTICATED: &[&str] = &["principal_name"];
const PATH_MATCHER: &[&str] = &["path"];
const INT32_RANGE: &[&str] = &["start", "end"];
const ACTION: &[(&str, i64, Option<RbacAction>)] =
    &[("ALLOW", 0, Some(RbacAction::Allow)), ("DENY", 1, Some(RbacAction::Deny)), ("LOG", 2, Some(RbacAction::Log))];
const MATCHER: &[&str] = &["matcher_list", "matcher_tree", "on_no_match"];
const MATCHER_LIST: &[&str] = &["matchers"];
const FIELD_MATCHER: &[&str] = &["predicate", "on_match"];
const PREDICATE: &[&str] = &["single_predicate", "or_matcher", "and_matcher", "not_matcher"];
const SINGLE_PREDICATE: &[&str] = &["input", "value_match", "custom_match"];
const PREDICATE_LIST: &[&str] = &["predicate"];
const ON_MATCH: &[&str] = &["matcher", "action", "keep_matching"];
const TYPED_EXTENSION: &[&str] = &["name", "typed_config"];
const RBAC_ACTION: &[&str] = &["name", "action"];
const HEADER_INPUT: &[&str] = &["header_name"];
const RBAC_ACTION_TYPE: &str = "envoy.config.rbac.v3.Action";
const HEADER_INPUT_TYPE: &str = "envoy.type.matcher.v3.HttpRequestHeaderMatchInput";
const NETWORK_INPUTS: &str = "envoy.extensions.matching.common_inputs.network.v3.";

/// An `RBAC` filter configuration (opened with [`RBAC`]). A `matcher` wins over `rules`,
/// as in Envoy (with a warning).
pub(crate) fn read_rbac(ctx: &mut Ctx, mut msg: Msg<'_>) -> Rbac {
    let enforced = read_engine(ctx, &mut msg, "rules", "matcher");
    let shadow = read_engine(ctx, &mut msg, "shadow_rules", "shadow_matcher");
    let prefix = |ctx: &mut Ctx, msg: &mut Msg<'_>, name: &str| {
        msg.get(ctx, name).and_then(|f| f.string(ctx)).unwrap_or_default()
    };
    let rules_stat_prefix = prefix(ctx, &mut msg, "rules_stat_prefix");
    let shadow_rules_stat_prefix = prefix(ctx, &mut msg, "shadow_rules_stat_prefix");
    let track_per_rule_stats = msg.get(ctx, "track_per_rule_stats").and_then(|f| f.bool(ctx)).unwrap_or(false);
    msg.finish(ctx);
    Rbac { enforced, shadow, rules_stat_prefix, shadow_rules_stat_prefix, track_per_rule_stats }
}

/// An `RBACPerRoute` (opened with [`RBAC_PER_ROUTE`]): its `rbac`, if any (none turns the
/// filter's checks off for the route).
pub(crate) fn read_rbac_per_route(ctx: &mut Ctx, mut msg: Msg<'_>) -> Option<Rbac> {
    let rbac = msg.get(ctx, "rbac").and_then(|f| f.message(ctx, RBAC)).map(|m| read_rbac(ctx, m));
    msg.finish(ctx);
    rbac
}

/// The engine of `rules` or of `matcher` (the matcher if both).
fn read_engine(ctx: &mut Ctx, msg: &mut Msg<'_>, rules: &str, matcher: &str) -> Option<RbacEngine> {
    let given_rules = msg.get(ctx, rules);
    if let Some(f) = msg.get(ctx, matcher) {
        if let Some(r) = &given_rules {
            ctx.warn(&r.origin(), format!("RBAC rules are ignored when {matcher} is configured"));
        }
        return read_matcher(ctx, &f).map(RbacEngine::Matcher);
    }
    given_rules.and_then(|f| read_rules(ctx, &f)).map(RbacEngine::Rules)
}

/// `config.rbac.v3.RBAC`: the action and the policies, in name order (Envoy's map).
fn read_rules(ctx: &mut Ctx, field: &Field<'_>) -> Option<RbacRules> {
    let mut msg = field.message(ctx, RULES)?;
    let action = msg.get(ctx, "action").and_then(|f| f.enumeration(ctx, ACTION)).unwrap_or(RbacAction::Allow);
    let mut policies = Vec::new();
    for (name, value) in msg.get(ctx, "policies").map(|f| f.map_entries(ctx)).unwrap_or_default() {
        let Some(mut p) = value.message(ctx, POLICY) else { continue };
        let permissions = p.required(ctx, "permissions").map(|f| f.list()).unwrap_or_default();
        let principals = p.required(ctx, "principals").map(|f| f.list()).unwrap_or_default();
        let permissions: Vec<Permission> = permissions.iter().filter_map(|f| read_permission(ctx, f)).collect();
        let principals: Vec<Principal> = principals.iter().filter_map(|f| read_principal(ctx, f)).collect();
        let origin = p.origin().clone();
        p.finish(ctx);
        if permissions.is_empty() || principals.is_empty() {
            ctx.error(&origin, "a policy needs at least one permission and one principal");
            continue;
        }
        policies.push((name, RbacPolicy { permissions, principals }));
    }
    msg.finish(ctx);
    policies.sort_by(|a, b| a.0.cmp(&b.0));
    Some(RbacRules { action, policies })
}

/// One `Permission`.
fn read_permission(ctx: &mut Ctx, field: &Field<'_>) -> Option<Permission> {
    let mut msg = field.message(ctx, PERMISSION)?;
    msg.at_most_one(ctx, PERMISSION);
    let rules = |ctx: &mut Ctx, f: Field<'_>| -> Option<Vec<Permission>> {
        let mut set = f.message(ctx, RULE_SET)?;
        let list = set.required(ctx, "rules").map(|f| f.list()).unwrap_or_default();
        let rules: Vec<Permission> = list.iter().filter_map(|f| read_permission(ctx, f)).collect();
        set.finish(ctx);
        Some(rules)
    };
    let permission = if let Some(f) = msg.get(ctx, "and_rules") {
        rules(ctx, f).map(Permission::And)
    } else if let Some(f) = msg.get(ctx, "or_rules") {
        rules(ctx, f).map(Permission::Or)
    } else if let Some(f) = msg.get(ctx, "any") {
        any(ctx, &f).map(|()| Permission::Any)
    } else if let Some(f) = msg.get(ctx, "header") {
        read_header_matcher(ctx, &f).map(Permission::Header)
    } else if let Some(f) = msg.get(ctx, "url_path") {
        read_path_matcher(ctx, &f).map(Permission::UrlPath)
    } else if let Some(f) = msg.get(ctx, "destination_ip") {
        read_cidr_range(ctx, &f).map(Permission::DestinationIp)
    } else if let Some(f) = msg.get(ctx, "destination_port") {
        f.unsigned(ctx, 65535).map(|p| Permission::DestinationPort(p as u16))
    } else if let Some(f) = msg.get(ctx, "destination_port_range") {
        read_port_range(ctx, &f)
    } else if let Some(f) = msg.get(ctx, "not_rule") {
        read_permission(ctx, &f).map(|p| Permission::Not(Box::new(p)))
    } else if let Some(f) = msg.get(ctx, "requested_server_name") {
        read_string_matcher(ctx, &f).map(Permission::RequestedServerName)
    } else {
        if !PERMISSION.iter().any(|n| msg.has(n)) {
            ctx.error(msg.origin(), "a permission must have one rule");
        }
        None
    };
    msg.finish(ctx);
    permission
}

/// One `Principal`.
fn read_principal(ctx: &mut Ctx, field: &Field<'_>) -> Option<Principal> {
    let mut msg = field.message(ctx, PRINCIPAL)?;
    msg.at_most_one(ctx, PRINCIPAL);
    let ids = |ctx: &mut Ctx, f: Field<'_>| -> Option<Vec<Principal>> {
        let mut set = f.message(ctx, ID_SET)?;
        let list = set.required(ctx, "ids").map(|f| f.list()).unwrap_or_default();
        let ids: Vec<Principal> = list.iter().filter_map(|f| read_principal(ctx, f)).collect();
        set.finish(ctx);
        Some(ids)
    };
    let principal = if let Some(f) = msg.get(ctx, "and_ids") {
        ids(ctx, f).map(Principal::And)
    } else if let Some(f) = msg.get(ctx, "or_ids") {
        ids(ctx, f).map(Principal::Or)
    } else if let Some(f) = msg.get(ctx, "any") {
        any(ctx, &f).map(|()| Principal::Any)
    } else if let Some(f) = msg.get(ctx, "authenticated") {
        f.message(ctx, AUTHENTICATED).map(|mut m| {
            let name = m.get(ctx, "principal_name").and_then(|f| read_string_matcher(ctx, &f));
            m.finish(ctx);
            Principal::Authenticated(name)
        })
    } else if let Some(f) = msg.get(ctx, "source_ip") {
        read_cidr_range(ctx, &f).map(Principal::SourceIp)
    } else if let Some(f) = msg.get(ctx, "direct_remote_ip") {
        read_cidr_range(ctx, &f).map(Principal::DirectRemoteIp)
    } else if let Some(f) = msg.get(ctx, "remote_ip") {
        read_cidr_range(ctx, &f).map(Principal::RemoteIp)
    } else if let Some(f) = msg.get(ctx, "header") {
        read_header_matcher(ctx, &f).map(Principal::Header)
    } else if let Some(f) = msg.get(ctx, "url_path") {
        read_path_matcher(ctx, &f).map(Principal::UrlPath)
    } else if let Some(f) = msg.get(ctx, "not_id") {
        read_principal(ctx, &f).map(|p| Principal::Not(Box::new(p)))
    } else {
        if !PRINCIPAL.iter().any(|n| msg.has(n)) {
            ctx.error(msg.origin(), "a principal must have one identity");
        }
        None
    };
    msg.finish(ctx);
    principal
}

/// `any`: must be true.
fn any(ctx: &mut Ctx, field: &Field<'_>) -> Option<()> {
    match field.bool(ctx)? {
        true => Some(()),
        false => {
            field.error(ctx, "must be true");
            None
        }
    }
}

/// A `PathMatcher`'s `path`.
fn read_path_matcher(ctx: &mut Ctx, field: &Field<'_>) -> Option<crate::model::ValueMatch> {
    let mut msg = field.message(ctx, PATH_MATCHER)?;
    let path = msg.required(ctx, "path").and_then(|f| read_string_matcher(ctx, &f));
    msg.finish(ctx);
    path
}

/// `destination_port_range`: `start <= port < end`, within 0..=65536.
fn read_port_range(ctx: &mut Ctx, field: &Field<'_>) -> Option<Permission> {
    let mut msg = field.message(ctx, INT32_RANGE)?;
    let start = msg.get(ctx, "start").and_then(|f| f.number(ctx)).unwrap_or(0.0) as i64;
    let end = msg.get(ctx, "end").and_then(|f| f.number(ctx)).unwrap_or(0.0) as i64;
    msg.finish(ctx);
    for (what, value) in [("start", start), ("end", end)] {
        if !(0..=65536).contains(&value) {
            field.error(ctx, format!("range {what} {value} is out of bounds"));
            return None;
        }
    }
    if start >= end {
        field.error(ctx, format!("range start {start} cannot be greater or equal than range end {end}"));
        return None;
    }
    Some(Permission::DestinationPortRange(start as u32, end as u32))
}

/// A `xds.type.matcher.v3.Matcher` of RBAC actions: a `matcher_list` and `on_no_match`.
fn read_matcher(ctx: &mut Ctx, field: &Field<'_>) -> Option<RbacMatcher> {
    let mut msg = field.message(ctx, MATCHER)?;
    let mut matchers = Vec::new();
    if let Some(f) = msg.get(ctx, "matcher_list")
        && let Some(mut list) = f.message(ctx, MATCHER_LIST)
    {
        for entry in list.required(ctx, "matchers").map(|f| f.list()).unwrap_or_default() {
            let Some(mut m) = entry.message(ctx, FIELD_MATCHER) else { continue };
            let predicate = m.required(ctx, "predicate").and_then(|f| read_predicate(ctx, &f));
            let action = m.required(ctx, "on_match").and_then(|f| read_on_match(ctx, &f));
            m.finish(ctx);
            if let (Some(predicate), Some(action)) = (predicate, action) {
                matchers.push((predicate, action));
            }
        }
        list.finish(ctx);
    } else if !msg.has("matcher_tree") {
        ctx.error(msg.origin(), "matcher_list is required by wasmproxy");
    }
    let on_no_match = msg.get(ctx, "on_no_match").and_then(|f| read_on_match(ctx, &f));
    msg.finish(ctx);
    Some(RbacMatcher { matchers, on_no_match })
}

/// An `OnMatch` with an RBAC `Action`.
fn read_on_match(ctx: &mut Ctx, field: &Field<'_>) -> Option<RbacMatchAction> {
    let mut msg = field.message(ctx, ON_MATCH)?;
    let action = msg.required(ctx, "action").and_then(|f| {
        let mut ext = f.message(ctx, TYPED_EXTENSION)?;
        ext.get(ctx, "name").and_then(|f| f.string(ctx));
        let action = ext.required(ctx, "typed_config").and_then(|typed| {
            let any = typed.any(ctx)?;
            if any.type_name != RBAC_ACTION_TYPE {
                typed.error(ctx, format!("an RBAC matcher's action must be a {RBAC_ACTION_TYPE}"));
                return None;
            }
            let mut a = any.message(ctx, RBAC_ACTION)?;
            let name = a.required(ctx, "name").and_then(|f| f.string(ctx));
            let action = a.get(ctx, "action").and_then(|f| f.enumeration(ctx, ACTION)).unwrap_or(RbacAction::Allow);
            a.finish(ctx);
            let name = name?;
            if name.is_empty() {
                typed.error(ctx, "name: must not be empty");
                return None;
            }
            Some(RbacMatchAction { name, action })
        });
        ext.finish(ctx);
        action
    });
    msg.finish(ctx);
    action
}

/// A matcher `Predicate`.
fn read_predicate(ctx: &mut Ctx, field: &Field<'_>) -> Option<MatchPredicate> {
    let mut msg = field.message(ctx, PREDICATE)?;
    msg.at_most_one(ctx, PREDICATE);
    let list = |ctx: &mut Ctx, f: Field<'_>| -> Option<Vec<MatchPredicate>> {
        let mut set = f.message(ctx, PREDICATE_LIST)?;
        let list = set.required(ctx, "predicate").map(|f| f.list()).unwrap_or_default();
        let all: Vec<MatchPredicate> = list.iter().filter_map(|f| read_predicate(ctx, f)).collect();
        set.finish(ctx);
        Some(all)
    };
    let predicate = if let Some(f) = msg.get(ctx, "single_predicate") {
        f.message(ctx, SINGLE_PREDICATE).and_then(|mut single| {
            let input = single.required(ctx, "input").and_then(|f| read_input(ctx, &f));
            let value = single.required(ctx, "value_match").and_then(|f| read_string_matcher(ctx, &f));
            single.finish(ctx);
            Some(MatchPredicate::Single { input: input?, value: value? })
        })
    } else if let Some(f) = msg.get(ctx, "or_matcher") {
        list(ctx, f).map(MatchPredicate::Or)
    } else if let Some(f) = msg.get(ctx, "and_matcher") {
        list(ctx, f).map(MatchPredicate::And)
    } else if let Some(f) = msg.get(ctx, "not_matcher") {
        read_predicate(ctx, &f).map(|p| MatchPredicate::Not(Box::new(p)))
    } else {
        ctx.error(msg.origin(), "one of single_predicate, or_matcher, and_matcher or not_matcher is required");
        None
    };
    msg.finish(ctx);
    predicate
}

/// A predicate's `input`: a request header, or one of the connection's addresses, ports or
/// its server name.
fn read_input(ctx: &mut Ctx, field: &Field<'_>) -> Option<MatchInput> {
    let mut msg = field.message(ctx, TYPED_EXTENSION)?;
    msg.get(ctx, "name").and_then(|f| f.string(ctx));
    let input = msg.required(ctx, "typed_config").and_then(|typed| {
        let any = typed.any(ctx)?;
        let network = any.type_name.strip_prefix(NETWORK_INPUTS);
        let input = match (any.type_name.as_str(), network) {
            (HEADER_INPUT_TYPE, _) => {
                let mut m = any.message(ctx, HEADER_INPUT)?;
                let name = m.required(ctx, "header_name").and_then(|f| f.string(ctx));
                m.finish(ctx);
                return name.map(|n| MatchInput::RequestHeader(n.to_ascii_lowercase()));
            }
            (_, Some("DestinationIPInput")) => MatchInput::DestinationIp,
            (_, Some("DestinationPortInput")) => MatchInput::DestinationPort,
            (_, Some("SourceIPInput")) => MatchInput::SourceIp,
            (_, Some("SourcePortInput")) => MatchInput::SourcePort,
            (_, Some("DirectSourceIPInput")) => MatchInput::DirectSourceIp,
            (_, Some("ServerNameInput")) => MatchInput::ServerName,
            (other, _) => {
                typed.error(ctx, format!("RBAC HTTP filter cannot match on '{other}' in wasmproxy"));
                return None;
            }
        };
        if let Some(m) = any.message(ctx, &[]) {
            m.finish(ctx);
        }
        Some(input)
    });
    msg.finish(ctx);
    input
}
