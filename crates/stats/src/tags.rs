//! Tag extraction configured by the bootstrap's `stats_config`: each of `stats_tags` either
//! cuts a regex's first capture group out of matching names and takes its second (or, with
//! one group, its first) group as the tag's value, or gives every stat a fixed value; and
//! `use_all_default_tags: false` turns off the default tags: Envoy's own
//! (`envoy_cluster_name`, ...) and wasmproxy's for plugin metrics, `key=.=value;.;` segments
//! of their names (as Istio's stats plugin writes tags). And [`StatName`], a stat's name with
//! its tags.

use regex::Regex;

/// A stat's full name, and its name and tags as Envoy's tag extraction gives them (for
/// Prometheus): `http.ingress_http.downstream_rq_2xx` is `http.downstream_rq_xx` with
/// `envoy_response_code_class="2"` and `envoy_http_conn_manager_prefix="ingress_http"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatName {
    /// The full name, as `/stats` prints it.
    pub name: String,
    /// The name without the tag values.
    pub tag_extracted: String,
    /// The tags, in Envoy's order.
    pub tags: Vec<(String, String)>,
}

impl StatName {
    /// A name with no tags.
    pub fn plain(name: impl Into<String>) -> StatName {
        let name = name.into();
        StatName { tag_extracted: name.clone(), name, tags: Vec::new() }
    }
}

/// The tag rules of a process.
#[derive(Debug, Clone)]
pub struct TagRules {
    /// `stats_tags`, in order.
    pub custom: Vec<TagRule>,
    /// `use_all_default_tags` (default true).
    pub defaults: bool,
}

impl Default for TagRules {
    fn default() -> Self {
        TagRules { custom: Vec::new(), defaults: true }
    }
}

/// One of `stats_tags`.
#[derive(Debug, Clone)]
pub struct TagRule {
    /// `tag_name`.
    pub name: String,
    /// Where its value comes from.
    pub value: TagValue,
}

/// `regex` or `fixed_value`.
#[derive(Debug, Clone)]
pub enum TagValue {
    /// Searched for in the full name.
    Regex(Regex),
    /// The same for every stat.
    Fixed(String),
}

impl TagRules {
    /// A stat's name and tags under these rules: the custom tags first, in order, then
    /// Envoy's own (when kept), as Envoy orders extracted tags.
    pub fn apply(&self, mut name: StatName) -> StatName {
        if !self.defaults {
            name.tag_extracted = name.name.clone();
            name.tags.clear();
        }
        let mut custom = Vec::new();
        for rule in &self.custom {
            match &rule.value {
                TagValue::Fixed(value) => custom.push((rule.name.clone(), value.clone())),
                TagValue::Regex(re) => {
                    let Some(captures) = re.captures(&name.name) else { continue };
                    let Some(cut) = captures.get(1) else { continue };
                    let value = captures.get(2).unwrap_or(cut).as_str().to_string();
                    if let Some(at) = name.tag_extracted.find(cut.as_str()) {
                        name.tag_extracted.replace_range(at..at + cut.len(), "");
                    }
                    custom.push((rule.name.clone(), value));
                }
            }
        }
        custom.append(&mut name.tags);
        if self.defaults && name.name.starts_with(PLUGIN_NAMESPACE) {
            custom.extend(cut_segments(&mut name.tag_extracted));
        }
        name.tags = custom;
        name
    }
}

/// The namespace of plugins' metrics.
const PLUGIN_NAMESPACE: &str = "wasmcustom.";

/// The tags written into a name as `key=.=value;.;` segments (Istio's form), cut out of it
/// in order; a key is letters, digits and `_`, a value anything up to `;.;`.
fn cut_segments(name: &mut String) -> Vec<(String, String)> {
    let mut tags = Vec::new();
    let mut from = 0;
    while let Some(found) = name[from..].find("=.=") {
        let eq = from + found;
        let start = name[..eq].rfind(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).map_or(0, |i| i + 1);
        let Some(len) = name[eq + 3..].find(";.;") else { break };
        let end = eq + 3 + len;
        if start == eq {
            from = end;
            continue;
        }
        tags.push((name[start..eq].to_string(), name[eq + 3..end].to_string()));
        name.replace_range(start..end + 3, "");
        from = start;
    }
    tags
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(name: &str, re: &str) -> TagRule {
        TagRule { name: name.into(), value: TagValue::Regex(Regex::new(re).unwrap()) }
    }

    /// The Go SDK's metrics example: two tags cut out of a plugin metric's name.
    #[test]
    fn regex_tags_cut_their_group_and_take_the_inner_one() {
        let rules = TagRules {
            custom: vec![rule("value", "(_value=([a-zA-Z]+))"), rule("reporter", "(_reporter=([a-zA-Z]+))")],
            defaults: true,
        };
        let name = rules.apply(StatName::plain("wasmcustom.custom_header_value_counts_value=foo_reporter=wasmgosdk"));
        assert_eq!(name.name, "wasmcustom.custom_header_value_counts_value=foo_reporter=wasmgosdk");
        assert_eq!(name.tag_extracted, "wasmcustom.custom_header_value_counts");
        assert_eq!(name.tags, vec![("value".into(), "foo".into()), ("reporter".into(), "wasmgosdk".into())]);
        let untouched = rules.apply(StatName::plain("server.live"));
        assert_eq!((untouched.tag_extracted.as_str(), untouched.tags.len()), ("server.live", 0));
    }

    /// Istio's form: each `key=.=value;.;` segment of a plugin metric's name is a tag; a
    /// rule that takes one first keeps it; other stats and `use_all_default_tags: false`
    /// leave such names alone.
    #[test]
    fn plugin_metric_segments_are_tags() {
        let full = "wasmcustom.reporter=.=destination;.;source_app=.=web.v1;.;istio_requests_total";
        let name = TagRules::default().apply(StatName::plain(full));
        assert_eq!(name.name, full);
        assert_eq!(name.tag_extracted, "wasmcustom.istio_requests_total");
        assert_eq!(name.tags, vec![("reporter".into(), "destination".into()), ("source_app".into(), "web.v1".into())]);
        let rules = TagRules { custom: vec![rule("app", r"(source_app=\.=(.*?);\.;)")], defaults: true };
        let name = rules.apply(StatName::plain(full));
        assert_eq!(name.tag_extracted, "wasmcustom.istio_requests_total");
        assert_eq!(name.tags, vec![("app".into(), "web.v1".into()), ("reporter".into(), "destination".into())]);
        for (rules, full) in [
            (TagRules::default(), "cluster.a=.=b;.;upstream_rq_total"),
            (TagRules { custom: Vec::new(), defaults: false }, full),
            (TagRules::default(), "wasmcustom.=.=keyless;.;open=.=unended"),
        ] {
            let name = rules.apply(StatName::plain(full));
            assert_eq!((name.tag_extracted.as_str(), name.tags.len()), (full, 0), "{full}");
        }
    }

    #[test]
    fn fixed_values_and_no_default_tags() {
        let rules = TagRules {
            custom: vec![
                TagRule { name: "zone".into(), value: TagValue::Fixed("eu".into()) },
                rule("only", "^(cluster)"),
            ],
            defaults: false,
        };
        let builtin = StatName {
            name: "cluster.backend.upstream_rq_total".into(),
            tag_extracted: "cluster.upstream_rq_total".into(),
            tags: vec![("envoy_cluster_name".into(), "backend".into())],
        };
        let name = rules.apply(builtin);
        assert_eq!(name.tag_extracted, ".backend.upstream_rq_total");
        assert_eq!(name.tags, vec![("zone".into(), "eu".into()), ("only".into(), "cluster".into())]);
    }
}
