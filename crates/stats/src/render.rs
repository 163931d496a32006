//! Admin `/stats` renderings, as Envoy 1.40 prints them: text, JSON and Prometheus.
//!
//! Text and JSON list counters and gauges together by name (byte order), then histograms
//! (quantiles of the last flush interval and of all flushes). Prometheus groups each
//! type's stats by tag-extracted name: counters, then gauges, then histograms (cumulative
//! buckets at Envoy's default bounds, approximate sum, count).

use std::fmt::Write as _;

use crate::histogram::{Bins, DEFAULT_BUCKETS, SUPPORTED_QUANTILES};
use crate::store::{Counter, Gauge, Histogram, Snapshot, StatName, TextReadout};

/// How `P0` ... `P100` are labelled (Envoy prints `100 * q` with `{:g}`).
const QUANTILE_LABELS: [&str; 10] = ["0", "25", "50", "75", "90", "95", "99", "99.5", "99.9", "100"];

/// Custom stat namespaces: the prefix is dropped (and no `envoy_` added) in Prometheus output.
const CUSTOM_NAMESPACES: [&str; 1] = ["wasmcustom"];

/// Which stats to show, from `/stats` query parameters.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    /// `filter`: a regular expression searched in the full name.
    pub filter: Option<regex::Regex>,
    /// `invert_filter`.
    pub invert: bool,
    /// `usedonly`: only stats written since start.
    pub used_only: bool,
    /// `type`: counters, gauges, histograms (all when `None`).
    pub kind: Option<Kind>,
    /// `histogram_buckets`.
    pub buckets: BucketMode,
}

/// A `type=` value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `Counters`.
    Counters,
    /// `Gauges`.
    Gauges,
    /// `Histograms`.
    Histograms,
    /// `TextReadouts`.
    TextReadouts,
}

/// How histograms are shown in text and JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BucketMode {
    /// Quantiles (the default).
    #[default]
    Summary,
    /// Cumulative counts per default bucket.
    Cumulative,
    /// Counts per default bucket, each bucket alone.
    Disjoint,
}

impl Selection {
    fn shows(&self, name: &StatName, used: bool, kind: Kind) -> bool {
        if self.used_only && !used {
            return false;
        }
        if self.kind.is_some_and(|k| k != kind) {
            return false;
        }
        match &self.filter {
            Some(re) => re.is_match(&name.name) != self.invert,
            None => true,
        }
    }
}

/// A histogram's figures for one rendering: quantiles and bucket counts of the interval and
/// of all flushes, or `None` before its first flush.
struct Figures {
    interval: Vec<f64>,
    cumulative: Vec<f64>,
    interval_buckets: Vec<u64>,
    cumulative_buckets: Vec<u64>,
}

fn figures(h: &Histogram) -> Option<Figures> {
    // Samples recorded but not flushed yet do not show, as in Envoy.
    let f = h.flushed();
    if f.cumulative.is_empty() {
        return None;
    }
    let buckets = |b: &Bins| DEFAULT_BUCKETS[..19].iter().map(|&bound| b.count_below(bound)).collect::<Vec<_>>();
    Some(Figures {
        interval: f.interval.quantiles(&SUPPORTED_QUANTILES),
        cumulative: f.cumulative.quantiles(&SUPPORTED_QUANTILES),
        interval_buckets: buckets(&f.interval),
        cumulative_buckets: buckets(&f.cumulative),
    })
}

/// Counters and gauges merged in name order.
fn scalars<'a>(s: &'a Snapshot, sel: &Selection) -> Vec<(&'a StatName, u64)> {
    let counters = s
        .counters
        .iter()
        .filter(|c| sel.shows(c.name(), c.used(), Kind::Counters))
        .map(|c: &Counter| (c.name(), c.value()));
    let gauges =
        s.gauges.iter().filter(|g| sel.shows(g.name(), g.used(), Kind::Gauges)).map(|g: &Gauge| (g.name(), g.value()));
    let mut all: Vec<_> = counters.chain(gauges).collect();
    all.sort_by(|a, b| a.0.name.cmp(&b.0.name));
    all
}

fn histograms<'a>(s: &'a Snapshot, sel: &Selection) -> impl Iterator<Item = &'a Histogram> {
    let sel = sel.clone();
    s.histograms.iter().filter(move |h| sel.shows(h.name(), h.used(), Kind::Histograms))
}

fn text_readouts<'a>(s: &'a Snapshot, sel: &Selection) -> impl Iterator<Item = &'a TextReadout> {
    let sel = sel.clone();
    s.text_readouts.iter().filter(move |t| sel.shows(t.name(), t.used(), Kind::TextReadouts))
}

/// `/stats`: the text readouts (`name: "text"`), then `name: value` lines, then histograms.
pub fn text(s: &Snapshot, sel: &Selection) -> String {
    let mut out = String::new();
    for t in text_readouts(s, sel) {
        let _ = writeln!(out, "{}: {}", t.name().name, json_string(&t.value()));
    }
    for (name, value) in scalars(s, sel) {
        let _ = writeln!(out, "{}: {value}", name.name);
    }
    for h in histograms(s, sel) {
        let _ = write!(out, "{}: ", h.name().name);
        let Some(f) = figures(h) else {
            out.push_str("No recorded values\n");
            continue;
        };
        let parts: Vec<String> = match sel.buckets {
            BucketMode::Summary => QUANTILE_LABELS
                .iter()
                .zip(f.interval.iter().zip(&f.cumulative))
                .map(|(label, (i, c))| format!("P{label}({},{})", shortest(*i), shortest(*c)))
                .collect(),
            mode => {
                let (i, c) = bucket_counts(&f, mode);
                DEFAULT_BUCKETS[..19]
                    .iter()
                    .zip(i.iter().zip(&c))
                    .map(|(bound, (i, c))| format!("B{}({i},{c})", general6(*bound)))
                    .collect()
            }
        };
        out.push_str(&parts.join(" "));
        out.push('\n');
    }
    out
}

fn bucket_counts(f: &Figures, mode: BucketMode) -> (Vec<u64>, Vec<u64>) {
    let disjoint =
        |v: &[u64]| -> Vec<u64> { v.iter().enumerate().map(|(i, n)| n - if i == 0 { 0 } else { v[i - 1] }).collect() };
    match mode {
        BucketMode::Disjoint => (disjoint(&f.interval_buckets), disjoint(&f.cumulative_buckets)),
        _ => (f.interval_buckets.clone(), f.cumulative_buckets.clone()),
    }
}

/// `/stats?format=json`: `{"stats":[{"name":..,"value":..},...,{"histograms":{...}}]}`.
pub fn json(s: &Snapshot, sel: &Selection) -> String {
    let mut out = String::from("{\"stats\":[");
    let mut first = true;
    let mut sep = |out: &mut String| {
        if !first {
            out.push(',');
        }
        first = false;
    };
    for t in text_readouts(s, sel) {
        sep(&mut out);
        let _ = write!(out, "{{\"name\":{},\"value\":{}}}", json_string(&t.name().name), json_string(&t.value()));
    }
    for (name, value) in scalars(s, sel) {
        sep(&mut out);
        let _ = write!(out, "{{\"name\":{},\"value\":{value}}}", json_string(&name.name));
    }
    let shown: Vec<&Histogram> = histograms(s, sel).collect();
    if !shown.is_empty() {
        sep(&mut out);
        out.push_str("{\"histograms\":");
        match sel.buckets {
            BucketMode::Summary => {
                out.push_str("{\"supported_quantiles\":[");
                out.push_str(&QUANTILE_LABELS.join(","));
                out.push_str("],\"computed_quantiles\":[");
                for (k, h) in shown.iter().enumerate() {
                    if k > 0 {
                        out.push(',');
                    }
                    let _ = write!(out, "{{\"name\":{},\"values\":[", json_string(&h.name().name));
                    let f = figures(h);
                    for q in 0..QUANTILE_LABELS.len() {
                        if q > 0 {
                            out.push(',');
                        }
                        let (i, c) = f.as_ref().map_or((f64::NAN, f64::NAN), |f| (f.interval[q], f.cumulative[q]));
                        let _ = write!(out, "{{\"cumulative\":{},\"interval\":{}}}", json_number(c), json_number(i));
                    }
                    out.push_str("]}");
                }
                out.push_str("]}");
            }
            mode => {
                out.push('[');
                for (k, h) in shown.iter().enumerate() {
                    if k > 0 {
                        out.push(',');
                    }
                    let _ = write!(out, "{{\"name\":{},\"buckets\":[", json_string(&h.name().name));
                    let (i, c) =
                        figures(h).map(|f| bucket_counts(&f, mode)).unwrap_or_else(|| (vec![0; 19], vec![0; 19]));
                    for (b, bound) in DEFAULT_BUCKETS[..19].iter().enumerate() {
                        if b > 0 {
                            out.push(',');
                        }
                        let _ = write!(
                            out,
                            "{{\"upper_bound\":{},\"interval\":{},\"cumulative\":{}}}",
                            json_number(*bound),
                            i[b],
                            c[b]
                        );
                    }
                    out.push_str("]}");
                }
                out.push(']');
            }
        }
        out.push('}');
    }
    out.push_str("]}");
    out
}

/// `/stats/prometheus`: Prometheus text exposition (version 0.0.4) as Envoy writes it.
pub fn prometheus(s: &Snapshot, sel: &Selection) -> String {
    let mut out = String::new();
    let counters: Vec<(&StatName, u64)> = s
        .counters
        .iter()
        .filter(|c| sel.shows(c.name(), c.used(), Kind::Counters))
        .map(|c| (c.name(), c.value()))
        .collect();
    let gauges: Vec<(&StatName, u64)> = s
        .gauges
        .iter()
        .filter(|g| sel.shows(g.name(), g.used(), Kind::Gauges))
        .map(|g| (g.name(), g.value()))
        .collect();
    for (stats, kind) in [(counters, "counter"), (gauges, "gauge")] {
        for (family, members) in families(stats) {
            let _ = writeln!(out, "# TYPE {family} {kind}");
            for (name, value) in members {
                let _ = writeln!(out, "{family}{{{}}} {value}", labels(&name.tags));
            }
        }
    }
    let hists: Vec<(&StatName, &Histogram)> = histograms(s, sel).map(|h| (h.name(), h)).collect();
    for (family, members) in families(hists) {
        let _ = writeln!(out, "# TYPE {family} histogram");
        for (name, h) in members {
            let tags = labels(&name.tags);
            let prefix = if tags.is_empty() { String::new() } else { format!("{tags},") };
            let f = h.flushed();
            for bound in &DEFAULT_BUCKETS[..19] {
                let n = f.cumulative.count_below(*bound);
                let _ = writeln!(out, "{family}_bucket{{{prefix}le=\"{}\"}} {n}", general32(*bound));
            }
            let count = f.cumulative.count();
            let _ = writeln!(out, "{family}_bucket{{{prefix}le=\"+Inf\"}} {count}");
            let _ = writeln!(out, "{family}_sum{{{tags}}} {}", general32(f.cumulative.approx_sum()));
            let _ = writeln!(out, "{family}_count{{{tags}}} {count}");
        }
    }
    out
}

/// Groups stats by Prometheus family name, families and members in Envoy's order (dotted
/// names compared token by token); stats whose name cannot be a metric are left out.
fn families<T>(stats: Vec<(&StatName, T)>) -> Vec<(String, Vec<(&StatName, T)>)> {
    let mut keyed: Vec<(String, &StatName, T)> =
        stats.into_iter().filter_map(|(name, v)| Some((family_name(&name.tag_extracted)?, name, v))).collect();
    keyed.sort_by(|a, b| {
        by_tokens(&a.1.tag_extracted, &b.1.tag_extracted).then_with(|| by_tokens(&a.1.name, &b.1.name))
    });
    let mut out: Vec<(String, Vec<(&StatName, T)>)> = Vec::new();
    for (family, name, v) in keyed {
        match out.last_mut() {
            Some((f, members)) if *f == family => members.push((name, v)),
            _ => out.push((family, vec![(name, v)])),
        }
    }
    out
}

fn by_tokens(a: &str, b: &str) -> std::cmp::Ordering {
    a.split('.').cmp(b.split('.'))
}

/// `envoy_` and the tag-extracted name with anything outside `[a-zA-Z0-9_]` made `_`; a
/// custom namespace's stats drop the namespace and get no `envoy_` (none if the rest is
/// empty or starts with a digit).
fn family_name(tag_extracted: &str) -> Option<String> {
    for ns in CUSTOM_NAMESPACES {
        if let Some(rest) = tag_extracted.strip_prefix(ns).and_then(|r| r.strip_prefix('.')) {
            let name = sanitize(rest);
            return (!name.is_empty() && !name.starts_with(|c: char| c.is_ascii_digit())).then_some(name);
        }
    }
    Some(format!("envoy_{}", sanitize(tag_extracted)))
}

fn sanitize(s: &str) -> String {
    s.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' { c } else { '_' }).collect()
}

fn labels(tags: &[(String, String)]) -> String {
    let mut out = String::new();
    for (i, (k, v)) in tags.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let v = v.replace('\\', "\\\\").replace('\n', "\\n").replace('"', "\\\"");
        let _ = write!(out, "{}=\"{v}\"", sanitize(k));
    }
    out
}

/// A double as fmt's `{}` prints it: shortest round trip, fixed notation for exponents in
/// [-4, 16), `nan` and `inf` spelled so.
pub fn shortest(x: f64) -> String {
    if x.is_nan() {
        return "nan".into();
    }
    if x.is_infinite() {
        return if x > 0.0 { "inf".into() } else { "-inf".into() };
    }
    if x == 0.0 {
        return "0".into();
    }
    let exp = x.abs().log10().floor() as i32;
    if (-4..16).contains(&exp) { format!("{x}") } else { c_exponent(&format!("{x:e}")) }
}

/// `1.5e16` → `1.5e+16`, `1e-5` → `1e-05` (C's exponent: sign and at least two digits).
fn c_exponent(rust: &str) -> String {
    let Some((mantissa, exp)) = rust.split_once('e') else { return rust.to_string() };
    let (sign, digits) = exp.strip_prefix('-').map_or(("+", exp), |d| ("-", d));
    format!("{mantissa}e{sign}{digits:0>2}")
}

/// A JSON number (`null` for NaN and infinities): the shorter of fixed and exponent forms,
/// as `std::to_chars` writes doubles.
fn json_number(x: f64) -> String {
    if !x.is_finite() {
        return "null".into();
    }
    let fixed = format!("{x}");
    let exp = c_exponent(&format!("{x:e}"));
    if exp.len() < fixed.len() { exp } else { fixed }
}

/// printf's `%.Ng`: `digits` significant digits, trailing zeros removed.
fn general(x: f64, digits: usize) -> String {
    if x == 0.0 {
        return "0".into();
    }
    if !x.is_finite() {
        return shortest(x);
    }
    let sci = format!("{:.*e}", digits - 1, x);
    let exp: i32 = sci.split_once('e').and_then(|(_, e)| e.parse().ok()).unwrap_or(0);
    if exp < -4 || exp >= digits as i32 {
        let (mantissa, _) = sci.split_once('e').unwrap_or((&sci, ""));
        c_exponent(&format!("{}e{exp}", trim_zeros(mantissa)))
    } else {
        trim_zeros(&format!("{:.*}", (digits as i32 - 1 - exp).max(0) as usize, x)).to_string()
    }
}

fn trim_zeros(s: &str) -> &str {
    if s.contains('.') { s.trim_end_matches('0').trim_end_matches('.') } else { s }
}

/// `%.32g`, Prometheus values in Envoy.
fn general32(x: f64) -> String {
    general(x, 32)
}

/// `{:g}` (six significant digits), bucket labels in text.
fn general6(x: f64) -> String {
    general(x, 6)
}

fn json_string(s: &str) -> String {
    serde_json::Value::String(s.to_string()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Scope, Store, Unit};

    /// Envoy 1.40 lists text readouts first, quoted in text and as strings in JSON, and
    /// leaves them out of Prometheus.
    #[test]
    fn text_readouts_come_first() {
        let store = Store::new();
        store.counter(StatName::plain("listener_manager.lds.update_success")).inc();
        store.text_readout(StatName::plain("listener_manager.lds.version_text")).set("v2");
        let s = store.snapshot();
        let sel = Selection::default();
        assert_eq!(
            text(&s, &sel),
            "listener_manager.lds.version_text: \"v2\"\nlistener_manager.lds.update_success: 1\n"
        );
        assert!(json(&s, &sel).starts_with(
            r#"{"stats":[{"name":"listener_manager.lds.version_text","value":"v2"},{"name":"listener_manager.lds.update_success","value":1}"#
        ));
        assert!(!prometheus(&s, &sel).contains("version_text"));
    }

    #[test]
    fn numbers_print_as_envoy_prints_them() {
        assert_eq!(shortest(495.00000000000006), "495.00000000000006");
        assert_eq!(shortest(10.0), "10");
        assert_eq!(shortest(1050000.0), "1050000");
        assert_eq!(shortest(1e16), "1e+16");
        assert_eq!(shortest(f64::NAN), "nan");
        assert_eq!(general32(31.42857142857143), "31.428571428571430601550673600286");
        assert_eq!(general32(1.0476190476190477), "1.0476190476190476719153821250075");
        assert_eq!(general32(3600000.0), "3600000");
        assert_eq!(general32(0.5), "0.5");
        assert_eq!(general6(1800000.0), "1.8e+06");
        assert_eq!(general6(300000.0), "300000");
        assert_eq!(json_number(1050000.0), "1050000");
        assert_eq!(json_number(10.25), "10.25");
    }

    fn sample() -> Snapshot {
        let store = Store::new();
        let http =
            Scope::new(&store, "http.ingress_http.", "http.", &[("envoy_http_conn_manager_prefix", "ingress_http")]);
        http.counter("downstream_rq_total").add(3);
        store
            .counter(http.tagged_name("downstream_rq_2xx", "downstream_rq_xx", ("envoy_response_code_class", "2")))
            .add(3);
        http.gauge("downstream_rq_active").set(0);
        store.counter(StatName::plain("wasmcustom.hello_header_counter")).add(2);
        let h = http.histogram("downstream_rq_time", Unit::Milliseconds);
        for _ in 0..3 {
            h.record(10);
        }
        store.flush();
        http.histogram("downstream_cx_length_ms", Unit::Milliseconds);
        store.snapshot()
    }

    #[test]
    fn text_lists_scalars_by_name_then_histograms() {
        let out = text(&sample(), &Selection::default());
        assert_eq!(
            out,
            "http.ingress_http.downstream_rq_2xx: 3\nhttp.ingress_http.downstream_rq_active: 0\n\
             http.ingress_http.downstream_rq_total: 3\nwasmcustom.hello_header_counter: 2\n\
             http.ingress_http.downstream_cx_length_ms: No recorded values\n\
             http.ingress_http.downstream_rq_time: P0(10.25,10.25) P25(10.25,10.25) P50(10.5,10.5) \
             P75(10.75,10.75) P90(10.75,10.75) P95(10.75,10.75) P99(10.75,10.75) P99.5(10.75,10.75) \
             P99.9(10.75,10.75) P100(10.75,10.75)\n"
        );
        let sel = Selection { filter: regex::Regex::new("rq_t").ok(), ..Default::default() };
        assert_eq!(text(&sample(), &sel).lines().count(), 2);
    }

    #[test]
    fn prometheus_groups_by_tag_extracted_name() {
        let out = prometheus(&sample(), &Selection::default());
        assert!(out.starts_with(
            "# TYPE envoy_http_downstream_rq_total counter\n\
             envoy_http_downstream_rq_total{envoy_http_conn_manager_prefix=\"ingress_http\"} 3\n\
             # TYPE envoy_http_downstream_rq_xx counter\n\
             envoy_http_downstream_rq_xx{envoy_response_code_class=\"2\",envoy_http_conn_manager_prefix=\"ingress_http\"} 3\n\
             # TYPE hello_header_counter counter\nhello_header_counter{} 2\n\
             # TYPE envoy_http_downstream_rq_active gauge\n"
        ), "{out}");
        assert!(out.contains(
            "envoy_http_downstream_rq_time_bucket{envoy_http_conn_manager_prefix=\"ingress_http\",le=\"10\"} 3\n"
        ));
        assert!(
            out.contains("_sum{envoy_http_conn_manager_prefix=\"ingress_http\"} 31.428571428571430601550673600286\n")
        );
    }

    #[test]
    fn json_puts_histograms_last() {
        let out = json(&sample(), &Selection::default());
        let v: serde_json::Value = serde_json::from_str(&out).expect("valid JSON");
        let stats = v["stats"].as_array().expect("array");
        assert_eq!(stats[0]["name"], "http.ingress_http.downstream_rq_2xx");
        let h = &stats.last().expect("histograms")["histograms"];
        assert_eq!(h["computed_quantiles"][0]["values"][0]["cumulative"], serde_json::Value::Null);
        assert_eq!(h["computed_quantiles"][1]["values"][2]["interval"], 10.5);
    }
}
