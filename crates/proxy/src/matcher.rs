//! Envoy's `StringMatcher` applied to a value (header and query matchers in routes,
//! subject alternative names in certificates, CORS and CSRF origins).

use std::sync::Arc;

use regex::Regex;
use wasmproxy_config::model::{HeaderMatcher, ValueMatch};
use wasmproxy_host::Headers;

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

/// The compiled regex of a matcher, the error naming the regex that does not compile.
fn compiled(m: &ValueMatch) -> Result<Option<Regex>, (String, regex::Error)> {
    value_regex(m).map_err(|e| {
        let ValueMatch::Regex(text) = m else { return (String::new(), e) };
        (text.clone(), e)
    })
}

/// String matchers with their regexes compiled (CORS origins, CSRF origins).
#[derive(Clone, Default)]
pub struct ValueMatchers(Arc<[(ValueMatch, Option<Regex>)]>);

impl ValueMatchers {
    /// Compiles `matchers`; the error names the regex that does not compile.
    pub fn new(matchers: &[ValueMatch]) -> Result<ValueMatchers, (String, regex::Error)> {
        let compiled: Result<Vec<_>, _> = matchers.iter().map(|m| Ok((m.clone(), compiled(m)?))).collect();
        Ok(ValueMatchers(compiled?.into()))
    }

    /// Whether there is none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether one of them matches `value`.
    pub fn any(&self, value: &str) -> bool {
        self.0.iter().any(|(m, re)| value_matches(m, re.as_ref(), Some(value)))
    }
}

/// Header matchers with their regexes compiled.
#[derive(Clone, Default)]
pub struct HeaderMatchers(Arc<[(HeaderMatcher, Option<Regex>)]>);

impl HeaderMatchers {
    /// Compiles `matchers`; the error names the regex that does not compile.
    pub fn new(matchers: &[HeaderMatcher]) -> Result<HeaderMatchers, (String, regex::Error)> {
        let compiled: Result<Vec<_>, _> = matchers.iter().map(|m| Ok((m.clone(), compiled(&m.value)?))).collect();
        Ok(HeaderMatchers(compiled?.into()))
    }

    /// Whether there is none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether every matcher matches `headers` (a route's match).
    pub fn all(&self, headers: &Headers) -> bool {
        self.0.iter().all(|(m, re)| matches(m, re.as_ref(), headers))
    }

    /// Whether one of them matches `headers`.
    pub fn any(&self, headers: &Headers) -> bool {
        self.0.iter().any(|(m, re)| matches(m, re.as_ref(), headers))
    }
}

/// Whether one header matcher matches, as Envoy 1.40's: one of the header's values matches
/// (each on its own), inverted if it says so; a header that is absent matches only an
/// inverted `present_match`.
fn matches(m: &HeaderMatcher, re: Option<&Regex>, headers: &Headers) -> bool {
    let name = m.name.as_bytes();
    let mut values = headers.iter().filter(|(n, _)| *n == name).peekable();
    if values.peek().is_none() {
        return m.invert && matches!(m.value, ValueMatch::Present);
    }
    values.any(|(_, v)| value_matches(&m.value, re, Some(&String::from_utf8_lossy(v)))) != m.invert
}

/// Every value of the header `name`, joined by commas (`None` if it is absent).
pub fn joined_value(headers: &Headers, name: &[u8]) -> Option<String> {
    let mut values = headers.iter().filter(|(n, _)| *n == name).map(|(_, v)| String::from_utf8_lossy(v));
    let mut joined = values.next()?.into_owned();
    for v in values {
        joined.push(',');
        joined.push_str(&v);
    }
    Some(joined)
}
