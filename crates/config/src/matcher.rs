//! Matchers a configuration writes in several places: Envoy's `StringMatcher`, regexes
//! (`RegexMatcher`), header and query parameter matchers.

use crate::model::{HeaderMatcher, QueryParameterMatcher, ValueMatch};
use crate::reader::{Ctx, Field, Msg};

const REGEX_MATCHER: &[&str] = &["google_re2", "regex"];

const GOOGLE_RE2: &[&str] = &["max_program_size"];

const HEADER_MATCHER: &[&str] = &[
    "name",
    "exact_match",
    "safe_regex_match",
    "range_match",
    "present_match",
    "prefix_match",
    "suffix_match",
    "contains_match",
    "string_match",
    "invert_match",
    "treat_missing_header_as_empty",
];

const QUERY_PARAMETER_MATCHER: &[&str] = &["name", "string_match", "present_match"];

const STRING_MATCHER: &[&str] = &["exact", "prefix", "suffix", "safe_regex", "contains", "custom", "ignore_case"];

/// A `RegexMatcher`: its `regex`, checked. The deprecated `google_re2` (RE2 is the only engine)
/// is accepted when empty.
pub(crate) fn read_regex(ctx: &mut Ctx, field: &Field<'_>) -> Option<String> {
    let mut msg = field.message(ctx, REGEX_MATCHER)?;
    if let Some(re2) = msg.get(ctx, "google_re2")
        && let Some(re2_msg) = re2.message(ctx, GOOGLE_RE2)
    {
        ctx.warn(&re2.origin(), "deprecated and ignored: RE2 is the regex engine");
        re2_msg.finish(ctx);
    }
    let regex = msg.required(ctx, "regex").and_then(|f| {
        let text = f.string(ctx)?;
        compile_regex(ctx, &f, &text).map(|_| text)
    });
    msg.finish(ctx);
    regex
}

/// The regex, compiled; an error on one line (`invalid regex: unclosed group`) if it does
/// not compile.
pub(crate) fn compile_regex(ctx: &mut Ctx, field: &Field<'_>, regex: &str) -> Option<regex::Regex> {
    match regex::Regex::new(regex) {
        Ok(re) => Some(re),
        Err(e) => {
            let text = e.to_string();
            let detail = text.lines().find_map(|l| l.strip_prefix("error: ")).unwrap_or(&text);
            field.error(ctx, format!("invalid regex: {detail}"));
            None
        }
    }
}

pub(crate) fn read_header_matcher(ctx: &mut Ctx, field: &Field<'_>) -> Option<HeaderMatcher> {
    let mut msg = field.message(ctx, HEADER_MATCHER)?;
    let name = msg.required(ctx, "name").and_then(|f| f.string(ctx)).map(|n| n.to_ascii_lowercase());
    let specifiers = [
        "exact_match",
        "safe_regex_match",
        "range_match",
        "present_match",
        "prefix_match",
        "suffix_match",
        "contains_match",
        "string_match",
    ];
    msg.at_most_one(ctx, &specifiers);
    let plain = |ctx: &mut Ctx, f: Field<'_>, make: fn(String) -> ValueMatch| f.string(ctx).map(make);
    let value = if let Some(f) = msg.get(ctx, "exact_match") {
        plain(ctx, f, |value| ValueMatch::Exact { value, ignore_case: false })
    } else if let Some(f) = msg.get(ctx, "prefix_match") {
        plain(ctx, f, |value| ValueMatch::Prefix { value, ignore_case: false })
    } else if let Some(f) = msg.get(ctx, "suffix_match") {
        plain(ctx, f, |value| ValueMatch::Suffix { value, ignore_case: false })
    } else if let Some(f) = msg.get(ctx, "contains_match") {
        plain(ctx, f, |value| ValueMatch::Contains { value, ignore_case: false })
    } else if let Some(f) = msg.get(ctx, "safe_regex_match") {
        read_regex(ctx, &f).map(ValueMatch::Regex)
    } else if let Some(f) = msg.get(ctx, "string_match") {
        read_string_matcher(ctx, &f)
    } else if let Some(f) = msg.get(ctx, "present_match") {
        read_present_match(ctx, &f)
    } else {
        // No specifier: the header must be present (Envoy's default).
        Some(ValueMatch::Present)
    };
    let invert = msg.get(ctx, "invert_match").and_then(|f| f.bool(ctx)).unwrap_or(false);
    msg.finish(ctx);
    Some(HeaderMatcher { name: name?, value: value?, invert })
}

pub(crate) fn read_query_parameter_matcher(ctx: &mut Ctx, field: &Field<'_>) -> Option<QueryParameterMatcher> {
    let mut msg = field.message(ctx, QUERY_PARAMETER_MATCHER)?;
    let name = msg.required(ctx, "name").and_then(|f| f.string(ctx));
    msg.at_most_one(ctx, &["string_match", "present_match"]);
    let value = if let Some(f) = msg.get(ctx, "string_match") {
        read_string_matcher(ctx, &f)
    } else if let Some(f) = msg.get(ctx, "present_match") {
        read_present_match(ctx, &f)
    } else {
        Some(ValueMatch::Present)
    };
    msg.finish(ctx);
    Some(QueryParameterMatcher { name: name?, value: value? })
}

/// `present_match: true`. `false` (which Envoy reads as "absent") is refused rather than guessed.
fn read_present_match(ctx: &mut Ctx, field: &Field<'_>) -> Option<ValueMatch> {
    match field.bool(ctx)? {
        true => Some(ValueMatch::Present),
        false => {
            field.error(ctx, "false is not supported by wasmproxy (use present_match: true with invert_match: true)");
            None
        }
    }
}

/// A `StringMatcher`: one of exact, prefix, suffix, contains, safe_regex; `ignore_case`.
pub(crate) fn read_string_matcher(ctx: &mut Ctx, field: &Field<'_>) -> Option<ValueMatch> {
    let mut msg = field.message(ctx, STRING_MATCHER)?;
    let patterns = ["exact", "prefix", "suffix", "safe_regex", "contains", "custom"];
    msg.at_most_one(ctx, &patterns);
    let ignore_case = msg.get(ctx, "ignore_case").and_then(|f| f.bool(ctx)).unwrap_or(false);
    let string = |ctx: &mut Ctx, msg: &mut Msg<'_>, name: &str| msg.get(ctx, name).map(|f| f.string(ctx));
    let value = if let Some(v) = string(ctx, &mut msg, "exact") {
        v.map(|value| ValueMatch::Exact { value, ignore_case })
    } else if let Some(v) = string(ctx, &mut msg, "prefix") {
        v.map(|value| ValueMatch::Prefix { value, ignore_case })
    } else if let Some(v) = string(ctx, &mut msg, "suffix") {
        v.map(|value| ValueMatch::Suffix { value, ignore_case })
    } else if let Some(v) = string(ctx, &mut msg, "contains") {
        v.map(|value| ValueMatch::Contains { value, ignore_case })
    } else if let Some(f) = msg.get(ctx, "safe_regex") {
        if ignore_case {
            f.error(ctx, "ignore_case has no effect with safe_regex");
        }
        read_regex(ctx, &f).map(ValueMatch::Regex)
    } else {
        if !msg.has("custom") {
            ctx.error(msg.origin(), "one of exact, prefix, suffix, contains or safe_regex is required");
        }
        None
    };
    msg.finish(ctx);
    value
}
