//! Envoy's example configurations (`conformance/corpus/envoy-examples`): each bootstrap
//! file validated by Envoy 1.40 and by wasmproxy (`--mode validate`, from the file's own
//! directory, as a user would), with wasmproxy's reasons for the files it refuses.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::proxy::Binaries;

/// One configuration file and what each proxy said of it.
pub struct Validated {
    /// The file, relative to the corpus.
    pub file: String,
    /// Envoy accepted it.
    pub envoy: bool,
    /// wasmproxy accepted it.
    pub ours: bool,
    /// wasmproxy's reasons when it refused it (its error lines), or how it failed.
    pub reasons: Vec<String>,
    /// wasmproxy neither accepted nor refused it cleanly (a crash, a signal, a time-out).
    pub broken: bool,
}

impl Validated {
    /// wasmproxy accepted what Envoy refuses, or failed other than with a clear refusal.
    pub fn unexplained(&self) -> bool {
        self.broken || (self.ours && !self.envoy)
    }
}

/// `--only` this to validate the corpus alone.
pub const ONLY: &str = "envoy-examples";

/// The corpus in the repository.
pub fn root(repo: &Path) -> PathBuf {
    repo.join("conformance/corpus/envoy-examples")
}

/// Every bootstrap file of the corpus (`*.yaml` with `static_resources`, `admin` or
/// `dynamic_resources` at the top), sorted.
pub fn files(corpus: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut dirs = vec![corpus.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "yaml") && is_bootstrap(&path) {
                found.push(path);
            }
        }
    }
    found.sort();
    found
}

fn is_bootstrap(path: &Path) -> bool {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines().any(|l| ["static_resources:", "dynamic_resources:", "admin:"].iter().any(|k| l.starts_with(k)))
}

/// Validates every file with both proxies.
pub fn validate_all(corpus: &Path, bins: &Binaries) -> Vec<Validated> {
    files(corpus)
        .iter()
        .map(|path| {
            let file = path.strip_prefix(corpus).unwrap_or(path).display().to_string();
            let (envoy, _) = validate(&bins.envoy, path);
            let (ours, output) = validate(&bins.wasmproxy, path);
            let broken = matches!(ours, Verdict::Broken);
            let reasons = match ours {
                Verdict::Accepted => Vec::new(),
                Verdict::Refused => output.lines().skip(1).map(str::to_string).collect(),
                Verdict::Broken => vec![format!("did not exit cleanly: {}", output.lines().last().unwrap_or(""))],
            };
            Validated { file, envoy: envoy == Verdict::Accepted, ours: ours == Verdict::Accepted, reasons, broken }
        })
        .collect()
}

#[derive(PartialEq)]
enum Verdict {
    Accepted,
    Refused,
    Broken,
}

/// `BIN --mode validate -c FILE` from the file's directory, bounded in time.
fn validate(bin: &Path, path: &Path) -> (Verdict, String) {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return (Verdict::Broken, "no such file".into());
    };
    let out = Command::new("timeout")
        .arg("60")
        .arg(bin)
        .args(["--mode", "validate", "-c"])
        .arg(name)
        .current_dir(dir)
        .output();
    let Ok(out) = out else { return (Verdict::Broken, format!("cannot run {}", bin.display())) };
    let text = String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    let verdict = match out.status.code() {
        Some(0) => Verdict::Accepted,
        Some(1) => Verdict::Refused,
        _ => Verdict::Broken,
    };
    (verdict, text)
}

/// The report's section: the counts, then each file Envoy accepts with wasmproxy's verdict
/// and its first reasons.
pub fn markdown(results: &[Validated]) -> String {
    let envoy = results.iter().filter(|r| r.envoy).count();
    let both = results.iter().filter(|r| r.envoy && r.ours).count();
    let mut out = format!(
        "\n## Envoy's example configurations\n\n\
         Each bootstrap file of Envoy's examples repository (`conformance/corpus/envoy-examples`), \
         validated with `--mode validate` from its own directory. Of {} files, Envoy 1.40 accepts {envoy} \
         (the others need files or extensions absent here) and wasmproxy accepts {both} of those.\n\n\
         | file | Envoy | wasmproxy | wasmproxy's first reasons |\n|---|---|---|---|\n",
        results.len()
    );
    for r in results.iter().filter(|r| r.envoy || r.ours) {
        let reasons: Vec<String> = r.reasons.iter().take(3).map(|l| table_cell(shorten(l))).collect();
        let more = r.reasons.len().saturating_sub(3);
        let mut cell = reasons.join("<br>");
        if more > 0 {
            cell.push_str(&format!("<br>(and {more} more)"));
        }
        let verdict = |ok: bool| if ok { "accepts" } else { "refuses" };
        out.push_str(&format!("| `{}` | {} | {} | {} |\n", r.file, verdict(r.envoy), verdict(r.ours), cell));
    }
    out
}

/// A reason without the long path prefix every listener's field shares.
fn shorten(line: &str) -> &str {
    line.strip_prefix("static_resources.").unwrap_or(line)
}

fn table_cell(text: &str) -> String {
    text.replace('|', "\\|")
}

/// One line for the console: the counts.
pub fn summary(results: &[Validated]) -> String {
    format!(
        "envoy-examples: {} files, Envoy accepts {}, wasmproxy accepts {} of those, {} unexplained",
        results.len(),
        results.iter().filter(|r| r.envoy).count(),
        results.iter().filter(|r| r.envoy && r.ours).count(),
        results.iter().filter(|r| r.unexplained()).count()
    )
}
