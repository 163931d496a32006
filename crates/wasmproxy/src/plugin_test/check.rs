//! What a case observed, how it is held against the spec's expectations, and how two
//! proxies' observations are compared (`--envoy`).

use std::collections::BTreeMap;

use super::harness::{Received, Reply};
use super::spec::{CallExpect, Expect, Text, UpstreamExpect};
use super::target::LogLine;

/// Everything a case observed on one proxy.
#[derive(Default)]
pub struct Observed {
    /// What the client got (none: the case sent no request).
    pub reply: Option<Reply>,
    /// What reached the upstream.
    pub upstream: Vec<Received>,
    /// What reached each callout service.
    pub calls: BTreeMap<String, Vec<Received>>,
    /// What was logged during the case.
    pub logs: Vec<LogLine>,
    /// Admin `/stats` after the case.
    pub stats: String,
    /// The shared data the case expects something of, by key.
    pub shared_data: BTreeMap<String, Result<Option<Vec<u8>>, String>>,
    /// What went wrong running the case (a tick nobody took, a queue not registered).
    pub problems: Vec<String>,
    /// How long it took, in milliseconds.
    pub millis: u128,
}

impl Observed {
    /// The plugin's lines.
    fn plugin_logs(&self) -> impl Iterator<Item = &LogLine> {
        self.logs.iter().filter(|l| l.plugin)
    }

    /// The value of the plugin metric `name` (Envoy puts most under `wasmcustom.`).
    fn metric(&self, name: &str) -> Option<&str> {
        self.stats.lines().find_map(|l| {
            let (stat, value) = l.split_once(": ")?;
            (stat == name || stat.strip_prefix("wasmcustom.") == Some(name)).then_some(value.trim())
        })
    }

    /// The plugin metrics' lines, sorted.
    fn plugin_metrics(&self) -> Vec<&str> {
        let mut lines: Vec<&str> = self.stats.lines().filter(|l| l.starts_with("wasmcustom.")).collect();
        lines.sort_unstable();
        lines
    }
}

/// Each way the observation differs from the expectation, readable (multi-line where a
/// body differs).
pub fn check(expect: &Expect, o: &Observed) -> Vec<String> {
    let mut failures = o.problems.clone();
    match &o.reply {
        Some(reply) => check_reply(expect, reply, &mut failures),
        None if expect.status.is_some() || !expect.headers.is_empty() || expect.body.is_some() => {
            failures.push("the case sends no request, but expects an answer".into());
        }
        None => {}
    }
    if let Some(up) = &expect.upstream {
        check_upstream(up, &o.upstream, &mut failures);
    }
    for (cluster, expected) in &expect.calls {
        let got = o.calls.get(cluster).map_or(&[][..], Vec::as_slice);
        check_calls(cluster, expected, got, &mut failures);
    }
    for (cluster, got) in &o.calls {
        for (i, call) in got.iter().enumerate().filter(|(_, c)| c.unscripted) {
            failures.push(format!(
                "callout {cluster}: call {} ({} {}) has no answer in the case's calls",
                i + 1,
                call.method,
                call.path
            ));
        }
    }
    check_logs(expect, o, &mut failures);
    for (name, want) in &expect.metrics {
        match o.metric(name) {
            Some(got) if got == want.to_string() => {}
            Some(got) => failures.push(format!("metric {name}: expected {want}, got {got}")),
            None => failures.push(format!("metric {name}: expected {want}, but the plugin has no such metric")),
        }
    }
    for (key, want) in &expect.shared_data {
        match o.shared_data.get(key) {
            Some(Ok(got)) => {
                let got = got.as_ref().map(|v| String::from_utf8_lossy(v).into_owned());
                if got.as_deref() != want.as_ref().map(|t| t.0.as_str()) {
                    failures.push(format!(
                        "shared data {key:?}: expected {}, got {}",
                        shown(want.as_ref()),
                        shown_str(got.as_deref())
                    ));
                }
            }
            Some(Err(e)) => failures.push(format!("shared data {key:?}: {e}")),
            None => {}
        }
    }
    // What the proxy said about the plugin (a trap and its backtrace, a refused call) helps
    // to read a failure.
    let said: Vec<String> = o.logs.iter().filter(|l| !l.plugin).map(LogLine::to_string).collect();
    if !failures.is_empty() && !said.is_empty() {
        failures.push(format!("(the proxy logged:{})", listed(&said)));
    }
    failures
}

fn check_reply(expect: &Expect, reply: &Reply, failures: &mut Vec<String>) {
    if let Some(e) = &reply.error {
        failures.push(format!("the client got no answer: {e}"));
        return;
    }
    if let Some(status) = expect.status
        && status != reply.status
    {
        failures.push(format!("status: expected {status}, got {}", reply.status));
    }
    check_headers("response header", &expect.headers, &reply.headers, failures);
    if let Some(body) = &expect.body {
        check_body("body", &body.0, &reply.body, failures);
    }
}

fn check_upstream(expect: &UpstreamExpect, got: &[Received], failures: &mut Vec<String>) {
    match (expect.reached, got.first()) {
        (false, None) => {}
        (false, Some(r)) => failures.push(format!("upstream: expected no request, got {} {}", r.method, r.path)),
        (true, None) => failures.push("upstream: expected a request, none came".into()),
        (true, Some(r)) => {
            if let Some(m) = &expect.method
                && *m != r.method
            {
                failures.push(format!("upstream method: expected {m}, got {}", r.method));
            }
            if let Some(p) = &expect.path
                && *p != r.path
            {
                failures.push(format!("upstream path: expected {p}, got {}", r.path));
            }
            check_headers("upstream header", &expect.headers, &r.headers, failures);
            check_headers("upstream trailer", &expect.trailers, &r.trailers, failures);
            if let Some(body) = &expect.body {
                check_body("upstream body", &body.0, &r.body, failures);
            }
        }
    }
}

fn check_calls(cluster: &str, expected: &[CallExpect], got: &[Received], failures: &mut Vec<String>) {
    if expected.len() != got.len() {
        let seen: Vec<String> = got.iter().map(|c| format!("{} {}", c.method, c.path)).collect();
        failures.push(format!(
            "callout {cluster}: expected {} call(s), got {}{}",
            expected.len(),
            got.len(),
            if seen.is_empty() { String::new() } else { format!(": {}", seen.join(", ")) }
        ));
    }
    for (i, (e, r)) in expected.iter().zip(got).enumerate() {
        let what = format!("callout {cluster} call {}", i + 1);
        if let Some(m) = &e.method
            && *m != r.method
        {
            failures.push(format!("{what} method: expected {m}, got {}", r.method));
        }
        if let Some(p) = &e.path
            && *p != r.path
        {
            failures.push(format!("{what} path: expected {p}, got {}", r.path));
        }
        check_headers(&format!("{what} header"), &e.headers, &r.headers, failures);
        if let Some(body) = &e.body {
            check_body(&format!("{what} body"), &body.0, &r.body, failures);
        }
        if let Some(messages) = &e.messages {
            let got: Vec<String> = r.messages.iter().map(|m| String::from_utf8_lossy(m).into_owned()).collect();
            let want: Vec<&str> = messages.iter().map(|m| m.0.as_str()).collect();
            if got != want {
                failures.push(format!("{what} messages: expected {want:?}, got {got:?}"));
            }
        }
    }
}

fn check_logs(expect: &Expect, o: &Observed, failures: &mut Vec<String>) {
    let lines: Vec<String> = o.plugin_logs().map(LogLine::to_string).collect();
    let mut from = 0;
    for wanted in &expect.logs {
        match lines[from..].iter().position(|l| l.contains(wanted.as_str())) {
            Some(at) => from += at + 1,
            None => {
                let after = if from == 0 { String::new() } else { format!(" after {:?}", lines[from - 1]) };
                failures
                    .push(format!("logs: no line containing {wanted:?}{after}; the plugin logged:{}", listed(&lines)));
                break;
            }
        }
    }
    for unwanted in &expect.logs_absent {
        if let Some(line) = lines.iter().find(|l| l.contains(unwanted.as_str())) {
            failures.push(format!("logs: a line contains {unwanted:?}: {line}"));
        }
    }
}

/// Each header expected: its values (joined with `,`) as given, or absent for `None`.
fn check_headers(
    what: &str,
    expected: &BTreeMap<String, Option<Text>>,
    got: &[(String, String)],
    failures: &mut Vec<String>,
) {
    for (name, want) in expected {
        let values: Vec<&str> =
            got.iter().filter(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str()).collect();
        let got = (!values.is_empty()).then(|| values.join(","));
        if got.as_deref() != want.as_ref().map(|t| t.0.as_str()) {
            failures.push(format!(
                "{what} {name}: expected {}, got {}",
                shown(want.as_ref()),
                shown_str(got.as_deref())
            ));
        }
    }
}

fn shown(value: Option<&Text>) -> String {
    shown_str(value.map(|t| t.0.as_str()))
}

fn shown_str(value: Option<&str>) -> String {
    value.map_or("absent".into(), |v| format!("{v:?}"))
}

/// A body compared: short ones side by side, longer ones as a line diff.
fn check_body(what: &str, want: &str, got: &[u8], failures: &mut Vec<String>) {
    let got = String::from_utf8_lossy(got);
    if got == want {
        return;
    }
    if !want.contains('\n') && !got.contains('\n') && want.len() + got.len() < 160 {
        failures.push(format!("{what}: expected {want:?}, got {got:?}"));
        return;
    }
    let diff = similar::TextDiff::from_lines(want, &got);
    let mut text = format!("{what} differs (- expected, + got):");
    for change in diff.iter_all_changes() {
        let sign = match change.tag() {
            similar::ChangeTag::Delete => '-',
            similar::ChangeTag::Insert => '+',
            similar::ChangeTag::Equal => ' ',
        };
        text.push_str(&format!("\n  {sign} {}", change.value().trim_end_matches('\n')));
    }
    failures.push(text);
}

fn listed(lines: &[String]) -> String {
    if lines.is_empty() {
        return " nothing".into();
    }
    lines.iter().map(|l| format!("\n    {l}")).collect()
}

/// Where two proxies' observations of one case differ: what the client, the upstream and
/// the callout services got, the plugin's log lines and its metrics. What each proxy makes
/// up anew (`date`, `x-request-id`, timings) is left out.
pub fn disagreements(a: (&str, &Observed), b: (&str, &Observed)) -> Vec<String> {
    let mut found = Vec::new();
    let mut compare = |what: &str, x: String, y: String| {
        if x != y {
            found.push(format!("{what}:\n    {}: {}\n    {}: {}", a.0, indent(&x), b.0, indent(&y)));
        }
    };
    let reply = |o: &Observed| {
        o.reply.as_ref().map_or("no request".into(), |r| match &r.error {
            Some(e) => format!("no answer ({e})"),
            None => format!("{} {} body {:?}", r.status, headers_text(&r.headers), String::from_utf8_lossy(&r.body)),
        })
    };
    compare("the client's answer", reply(a.1), reply(b.1));
    compare("what reached the upstream", received_text(&a.1.upstream), received_text(&b.1.upstream));
    let clusters: std::collections::BTreeSet<&String> = a.1.calls.keys().chain(b.1.calls.keys()).collect();
    for cluster in clusters {
        let text = |o: &Observed| received_text(o.calls.get(cluster).map_or(&[][..], Vec::as_slice));
        compare(&format!("what reached callout {cluster}"), text(a.1), text(b.1));
    }
    // Request ids, HTTP dates and service times in what a plugin logs, as conformance has them.
    let logs = |o: &Observed| {
        let lines =
            o.plugin_logs().filter_map(|l| wasmproxy_conformance::normalize::log_line(&format!("wasm log: {l}")));
        lines.map(|l| l.trim_start_matches("wasm log: ").to_string()).collect::<Vec<_>>().join("\n")
    };
    compare("the plugin's log lines", logs(a.1), logs(b.1));
    compare("the plugin's metrics", a.1.plugin_metrics().join("\n"), b.1.plugin_metrics().join("\n"));
    found
}

/// Headers each proxy makes up anew, left out of comparisons.
const VOLATILE: &[&str] = &["date", "x-request-id", "x-envoy-upstream-service-time", "x-envoy-expected-rq-timeout-ms"];

fn headers_text(headers: &[(String, String)]) -> String {
    let mut kept: Vec<String> =
        headers.iter().filter(|(k, _)| !VOLATILE.contains(&k.as_str())).map(|(k, v)| format!("{k}: {v}")).collect();
    kept.sort();
    format!("[{}]", kept.join("; "))
}

fn received_text(received: &[Received]) -> String {
    if received.is_empty() {
        return "nothing".into();
    }
    let one = |r: &Received| {
        let messages: Vec<_> = r.messages.iter().map(|m| String::from_utf8_lossy(m).into_owned()).collect();
        format!(
            "{} {} {} body {:?}{}",
            r.method,
            r.path,
            headers_text(&r.headers),
            String::from_utf8_lossy(&r.body),
            if messages.is_empty() { String::new() } else { format!(" messages {messages:?}") }
        )
    };
    received.iter().map(one).collect::<Vec<_>>().join("\n")
}

fn indent(text: &str) -> String {
    text.replace('\n', "\n      ")
}
