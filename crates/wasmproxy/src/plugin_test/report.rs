//! A spec's results: printed for a person, and as JUnit XML for CI.

use std::fmt::Write as _;

/// One case's result on one proxy, or the comparison of two.
pub struct CaseResult {
    /// The case's name.
    pub name: String,
    /// What failed (empty: it passed).
    pub failures: Vec<String>,
    /// Not run, and why (Envoy cannot tick from outside, say).
    pub skipped: Option<String>,
    /// How long it took, in milliseconds.
    pub millis: u128,
}

/// A spec's cases on one proxy (`wasmproxy`, `envoy`), or their agreement.
pub struct Suite {
    /// `<spec> on wasmproxy`, ...
    pub name: String,
    /// The cases, in order.
    pub cases: Vec<CaseResult>,
}

impl Suite {
    /// How many cases failed.
    pub fn failed(&self) -> usize {
        self.cases.iter().filter(|c| !c.failures.is_empty()).count()
    }

    /// Prints it: a line per case, what failed under it, then a count.
    pub fn print(&self) {
        println!("{}", self.name);
        for c in &self.cases {
            let (mark, note) = match (&c.skipped, c.failures.is_empty()) {
                (Some(why), _) => ("skip", format!(" ({why})")),
                (None, true) => ("ok  ", format!(" ({} ms)", c.millis)),
                (None, false) => ("FAIL", format!(" ({} ms)", c.millis)),
            };
            println!("  {mark}  {}{note}", c.name);
            for f in &c.failures {
                println!("        {}", f.replace('\n', "\n        "));
            }
        }
        let skipped = self.cases.iter().filter(|c| c.skipped.is_some()).count();
        let passed = self.cases.len() - self.failed() - skipped;
        let skipped = if skipped > 0 { format!(", {skipped} skipped") } else { String::new() };
        println!("{} case(s): {passed} passed, {} failed{skipped}\n", self.cases.len(), self.failed());
    }
}

/// The suites as a JUnit XML document.
pub fn junit(suites: &[Suite]) -> String {
    let mut xml = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuites>\n");
    for s in suites {
        let seconds = |ms: u128| format!("{:.3}", ms as f64 / 1000.0);
        let total: u128 = s.cases.iter().map(|c| c.millis).sum();
        let skipped = s.cases.iter().filter(|c| c.skipped.is_some()).count();
        let _ = writeln!(
            xml,
            "  <testsuite name=\"{}\" tests=\"{}\" failures=\"{}\" skipped=\"{skipped}\" time=\"{}\">",
            escape(&s.name),
            s.cases.len(),
            s.failed(),
            seconds(total)
        );
        for c in &s.cases {
            let _ = write!(
                xml,
                "    <testcase classname=\"{}\" name=\"{}\" time=\"{}\"",
                escape(&s.name),
                escape(&c.name),
                seconds(c.millis)
            );
            match (&c.skipped, c.failures.first()) {
                (Some(why), _) => {
                    let _ = writeln!(xml, ">\n      <skipped message=\"{}\"/>\n    </testcase>", escape(why));
                }
                (None, Some(first)) => {
                    let first_line = first.lines().next().unwrap_or_default();
                    let _ = writeln!(
                        xml,
                        ">\n      <failure message=\"{}\">{}</failure>\n    </testcase>",
                        escape(first_line),
                        escape(&c.failures.join("\n"))
                    );
                }
                (None, None) => xml.push_str("/>\n"),
            }
        }
        xml.push_str("  </testsuite>\n");
    }
    xml.push_str("</testsuites>\n");
    xml
}

/// Text made safe for XML attributes and content.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            // XML 1.0 has no place for other control characters.
            c if c.is_control() && !matches!(c, '\n' | '\t' | '\r') => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn junit_escapes_and_counts() {
        let suite = Suite {
            name: "a<b> on wasmproxy".into(),
            cases: vec![
                CaseResult { name: "ok \"one\"".into(), failures: vec![], skipped: None, millis: 3 },
                CaseResult {
                    name: "bad".into(),
                    failures: vec!["status: expected 200, got 403\nmore & more".into()],
                    skipped: None,
                    millis: 1500,
                },
                CaseResult {
                    name: "later".into(),
                    failures: vec![],
                    skipped: Some("Envoy cannot tick".into()),
                    millis: 0,
                },
            ],
        };
        let xml = junit(&[suite]);
        assert!(
            xml.contains(
                "<testsuite name=\"a&lt;b&gt; on wasmproxy\" tests=\"3\" failures=\"1\" skipped=\"1\" time=\"1.503\">"
            ),
            "{xml}"
        );
        assert!(
            xml.contains(
                "<testcase classname=\"a&lt;b&gt; on wasmproxy\" name=\"ok &quot;one&quot;\" time=\"0.003\"/>"
            ),
            "{xml}"
        );
        assert!(xml.contains("<failure message=\"status: expected 200, got 403\">status: expected 200, got 403\nmore &amp; more</failure>"), "{xml}");
        assert!(xml.contains("<skipped message=\"Envoy cannot tick\"/>"), "{xml}");
    }
}
