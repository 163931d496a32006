//! Envoy's `StringMatcher` applied to a value (header and query matchers in routes,
//! subject alternative names in certificates).

use regex::Regex;
use wasmproxy_config::model::ValueMatch;

/// A regex matching the whole value (Envoy's `safe_regex` is anchored at both ends).
pub fn whole_regex(re: &str) -> Result<Regex, regex::Error> {
    Regex::new(&format!("^(?:{re})$"))
}

/// The compiled regex of a `safe_regex` matcher (none for the other kinds).
pub fn value_regex(m: &ValueMatch) -> Result<Option<Regex>, regex::Error> {
    match m {
        ValueMatch::Regex(re) => whole_regex(re).map(Some),
        _ => Ok(None),
    }
}

/// Whether `value` matches `m` (`re`: its compiled regex); an absent value matches nothing.
pub fn value_matches(m: &ValueMatch, re: Option<&Regex>, value: Option<&str>) -> bool {
    let Some(value) = value else { return false };
    let cmp = |want: &str, ignore_case: bool, f: fn(&str, &str) -> bool| {
        if ignore_case { f(&value.to_ascii_lowercase(), &want.to_ascii_lowercase()) } else { f(value, want) }
    };
    match m {
        ValueMatch::Present => true,
        ValueMatch::Exact { value: want, ignore_case } => cmp(want, *ignore_case, |a, b| a == b),
        ValueMatch::Prefix { value: want, ignore_case } => cmp(want, *ignore_case, |a, b| a.starts_with(b)),
        ValueMatch::Suffix { value: want, ignore_case } => cmp(want, *ignore_case, |a, b| a.ends_with(b)),
        ValueMatch::Contains { value: want, ignore_case } => cmp(want, *ignore_case, |a, b| a.contains(b)),
        ValueMatch::Regex(_) => re.is_some_and(|re| re.is_match(value)),
    }
}
