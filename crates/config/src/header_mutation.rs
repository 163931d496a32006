//! The headers a route configuration, a virtual host or a route adds and removes
//! (`request_headers_to_add`, ...), with their substitution formats checked; and the
//! `envoy.filters.http.header_mutation` filter's mutations.

use crate::matcher::read_string_matcher;
use crate::model::{AppendAction, HeaderMutationFilter, HeaderMutations, HeaderOp, HeaderToAdd, MutationBlock};
use crate::reader::{Ctx, Field, Msg};

const HEADER_VALUE_OPTION: &[&str] = &["header", "append", "append_action", "keep_empty_value"];
const HEADER_VALUE: &[&str] = &["key", "value", "raw_value"];
const APPEND_ACTION: &[(&str, i64, Option<AppendAction>)] = &[
    ("APPEND_IF_EXISTS_OR_ADD", 0, Some(AppendAction::AppendIfExistsOrAdd)),
    ("ADD_IF_ABSENT", 1, Some(AppendAction::AddIfAbsent)),
    ("OVERWRITE_IF_EXISTS_OR_ADD", 2, Some(AppendAction::OverwriteIfExistsOrAdd)),
    ("OVERWRITE_IF_EXISTS", 3, Some(AppendAction::OverwriteIfExists)),
];

/// The four fields of `msg`.
pub(crate) fn read_header_mutations(ctx: &mut Ctx, msg: &mut Msg<'_>) -> HeaderMutations {
    let adds = |ctx: &mut Ctx, msg: &mut Msg<'_>, name: &str| -> Vec<HeaderToAdd> {
        let items = msg.get(ctx, name).map(|f| f.list()).unwrap_or_default();
        items.iter().filter_map(|item| read_header_value_option(ctx, item)).collect()
    };
    let request_add = adds(ctx, msg, "request_headers_to_add");
    let response_add = adds(ctx, msg, "response_headers_to_add");
    let removes = |ctx: &mut Ctx, msg: &mut Msg<'_>, name: &str| -> Vec<String> {
        let items = msg.get(ctx, name).map(|f| f.list()).unwrap_or_default();
        items.iter().filter_map(|item| modifiable(ctx, item, "removed")).collect()
    };
    let request_remove = removes(ctx, msg, "request_headers_to_remove");
    let response_remove = removes(ctx, msg, "response_headers_to_remove");
    HeaderMutations { request_add, request_remove, response_add, response_remove }
}

/// A header name a route may change: not a pseudo-header, not `host` (Envoy's rule).
fn modifiable(ctx: &mut Ctx, field: &Field<'_>, verb: &str) -> Option<String> {
    let name = field.string(ctx)?.to_ascii_lowercase();
    if name.is_empty() {
        field.error(ctx, "a header name must not be empty");
        return None;
    }
    if name.starts_with(':') || name == "host" {
        field.error(ctx, format!(":-prefixed or host headers may not be {verb}"));
        return None;
    }
    if !name.bytes().all(|b| b.is_ascii_graphic() && !b"()<>@,;:\\\"/[]?={}".contains(&b)) {
        field.error(ctx, format!("{name:?} is not a valid header name"));
        return None;
    }
    Some(name)
}

pub(crate) fn read_header_value_option(ctx: &mut Ctx, field: &Field<'_>) -> Option<HeaderToAdd> {
    let mut msg = field.message(ctx, HEADER_VALUE_OPTION)?;
    let header = msg.required(ctx, "header").and_then(|f| {
        let mut h = f.message(ctx, HEADER_VALUE)?;
        let name = h.required(ctx, "key").and_then(|k| modifiable(ctx, &k, "modified"));
        let value = if let Some(v) = h.get(ctx, "value") {
            v.string(ctx).and_then(|text| match crate::format::parse(&text) {
                Ok(pieces) => Some(pieces),
                Err(e) => {
                    v.error(ctx, format!("{text:?}: {e}"));
                    None
                }
            })
        } else if let Some(v) = h.get(ctx, "raw_value") {
            // Envoy 1.40 accepts it here and adds nothing: refused rather than ignored.
            v.error(ctx, "not used by route header mutations (Envoy adds nothing for it); use value");
            None
        } else {
            Some(Vec::new())
        };
        h.finish(ctx);
        Some((name?, value?))
    });
    let append = msg.get(ctx, "append");
    let action = msg.get(ctx, "append_action");
    if let (Some(_), Some(a)) = (&append, &action) {
        a.error(ctx, "Both append and append_action are set and it's not allowed");
    }
    let action = match (append.and_then(|f| f.bool_value(ctx)), action.and_then(|f| f.enumeration(ctx, APPEND_ACTION)))
    {
        (_, Some(a)) => a,
        (Some(false), None) => AppendAction::OverwriteIfExistsOrAdd,
        _ => AppendAction::AppendIfExistsOrAdd,
    };
    let keep_empty_value = msg.get(ctx, "keep_empty_value").and_then(|f| f.bool(ctx)).unwrap_or(false);
    msg.finish(ctx);
    let (name, value) = header?;
    Some(HeaderToAdd { name, value, action, keep_empty_value })
}

pub(crate) const HEADER_MUTATION_TYPE: &str = "envoy.extensions.filters.http.header_mutation.v3.HeaderMutation";
pub(crate) const HEADER_MUTATION_PER_ROUTE_TYPE: &str =
    "envoy.extensions.filters.http.header_mutation.v3.HeaderMutationPerRoute";
pub(crate) const HEADER_MUTATION: &[&str] = &["mutations", "most_specific_header_mutations_wins"];
pub(crate) const HEADER_MUTATION_PER_ROUTE: &[&str] = &["mutations"];
const MUTATIONS: &[&str] = &[
    "request_mutations",
    "response_mutations",
    "query_parameter_mutations",
    "request_trailers_mutations",
    "response_trailers_mutations",
];
const MUTATION: &[&str] = &["remove", "append", "remove_on_match", "regex_copy"];
const REMOVE_ON_MATCH: &[&str] = &["key_matcher"];

/// The `header_mutation` filter's `HeaderMutation` (opened with [`HEADER_MUTATION`]).
pub(crate) fn read_header_mutation_filter(ctx: &mut Ctx, mut msg: Msg<'_>) -> HeaderMutationFilter {
    let mutations = msg.get(ctx, "mutations").map(|f| read_mutation_block(ctx, &f)).unwrap_or_default();
    let most_specific_wins =
        msg.get(ctx, "most_specific_header_mutations_wins").and_then(|f| f.bool(ctx)).unwrap_or(false);
    msg.finish(ctx);
    HeaderMutationFilter { mutations, most_specific_wins }
}

/// A `HeaderMutationPerRoute` (opened with [`HEADER_MUTATION_PER_ROUTE`]).
pub(crate) fn read_header_mutation_per_route(ctx: &mut Ctx, mut msg: Msg<'_>) -> MutationBlock {
    let mutations = msg.get(ctx, "mutations").map(|f| read_mutation_block(ctx, &f)).unwrap_or_default();
    msg.finish(ctx);
    mutations
}

/// `Mutations`: the request's and the response's header mutations, in order.
fn read_mutation_block(ctx: &mut Ctx, field: &Field<'_>) -> MutationBlock {
    let Some(mut msg) = field.message(ctx, MUTATIONS) else { return MutationBlock::default() };
    let mut ops = |ctx: &mut Ctx, name: &str| -> Vec<HeaderOp> {
        let items = msg.get(ctx, name).map(|f| f.list()).unwrap_or_default();
        items.iter().filter_map(|item| read_header_op(ctx, item)).collect()
    };
    let request = ops(ctx, "request_mutations");
    let response = ops(ctx, "response_mutations");
    msg.finish(ctx);
    MutationBlock { request, response }
}

/// One `config.common.mutation_rules.v3.HeaderMutation`.
fn read_header_op(ctx: &mut Ctx, field: &Field<'_>) -> Option<HeaderOp> {
    let mut msg = field.message(ctx, MUTATION)?;
    msg.at_most_one(ctx, MUTATION);
    let op = if let Some(f) = msg.get(ctx, "remove") {
        f.string(ctx).map(|n| HeaderOp::Remove(n.to_ascii_lowercase()))
    } else if let Some(f) = msg.get(ctx, "append") {
        read_header_value_option(ctx, &f).map(HeaderOp::Append)
    } else if let Some(f) = msg.get(ctx, "remove_on_match") {
        f.message(ctx, REMOVE_ON_MATCH).and_then(|mut m| {
            let matcher = m.required(ctx, "key_matcher").and_then(|f| read_string_matcher(ctx, &f));
            m.finish(ctx);
            matcher.map(HeaderOp::RemoveOnMatch)
        })
    } else {
        if !msg.has("regex_copy") {
            ctx.error(msg.origin(), "one of remove, append or remove_on_match is required");
        }
        None
    };
    msg.finish(ctx);
    op
}
