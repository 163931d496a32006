//! The headers a route configuration, a virtual host or a route adds and removes
//! (`request_headers_to_add`, ...), with their substitution formats checked.

use crate::model::{AppendAction, HeaderMutations, HeaderToAdd};
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
