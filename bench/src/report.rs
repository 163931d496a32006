//! Memory and start-up measurements, and `docs/BENCHMARKS.md`: per scenario both proxies'
//! medians, the spread over the rounds, and the ratio wasmproxy / Envoy.

use std::path::Path;
use std::time::Duration;

use wasmproxy_conformance::proxy::Kind;

use crate::scenarios::{self, Scenario};
use crate::{Args, Measured};

const KINDS: [Kind; 2] = [Kind::Envoy, Kind::Wasmproxy];

/// Peak RSS (MB) per proxy, for 1 and 2 workers and 1 and 10 plugins, after a short load.
pub fn memory(args: &Args, work: &Path, fill: &dyn Fn(&str) -> String) -> Result<Vec<(String, [f64; 2])>, String> {
    let one = scenarios::bootstrap(&scenarios::header_filter("hf", "header_filter.wasm"));
    let ten: String = (0..10).map(|i| scenarios::header_filter(&format!("hf{i}"), "header_filter.wasm")).collect();
    let ten = scenarios::bootstrap(&ten);
    let mut rows = Vec::new();
    for (plugins, config) in [(1, &one), (10, &ten)] {
        for workers in [1, 2] {
            let mut row = [0.0; 2];
            for (i, kind) in KINDS.into_iter().enumerate() {
                let file = work.join(format!("memory-{}.yaml", kind.name()));
                std::fs::write(&file, fill(config)).map_err(|e| e.to_string())?;
                let running = crate::start(args, kind, &file, work, workers, &[])?;
                let load = Scenario {
                    name: "memory",
                    about: "",
                    config: String::new(),
                    path: "/",
                    body: None,
                    http2: false,
                    tls: false,
                    new_connections: false,
                    resumed: false,
                    headers: &[],
                };
                let url = format!("http://{}/", running.listener);
                crate::load::run(&url, &load, args.connections, Duration::from_secs(2))?;
                row[i] = crate::load::peak_rss_mb(&running);
            }
            rows.push((format!("{plugins} plugin(s), {workers} worker(s)"), row));
        }
    }
    Ok(rows)
}

/// Seconds from process start to the first response (median of three), for Envoy,
/// wasmproxy compiling its plugin (baseline code first, by default; optimized code
/// first), and wasmproxy with its compile cache warm.
pub fn startup(args: &Args, work: &Path, fill: &dyn Fn(&str) -> String) -> Result<Vec<(String, f64)>, String> {
    let config = scenarios::bootstrap(&scenarios::header_filter("hf", "header_filter.wasm"));
    let mut rows = Vec::new();
    let cache = work.join("wasm-cache");
    let cold_cache = work.join("cold-cache");
    let warm_args = vec!["--wasm-cache-dir".to_string(), cache.display().to_string()];
    // The proxies are started as conformance starts them (optimized code first), unless told.
    let cold = |compiler: &str| {
        ["--wasm-cache-dir", &cold_cache.display().to_string(), "--wasm-compiler", compiler].map(String::from).to_vec()
    };
    let (cold_args, optimizing_args) = (cold("tiered"), cold("optimizing"));
    for (label, kind, extra, clear) in [
        ("Envoy 1.40", Kind::Envoy, Vec::new(), false),
        ("wasmproxy, plugin compiled at start", Kind::Wasmproxy, cold_args, true),
        ("wasmproxy, the same, optimized code first", Kind::Wasmproxy, optimizing_args, true),
        ("wasmproxy, compile cache warm", Kind::Wasmproxy, warm_args, false),
    ] {
        let file = work.join(format!("startup-{}.yaml", kind.name()));
        std::fs::write(&file, fill(&config)).map_err(|e| e.to_string())?;
        if !clear {
            // Fill the cache once before measuring (harmless for Envoy).
            crate::time_to_first_response(args, kind, &file, work, &extra)?;
        }
        let mut times = Vec::new();
        for _ in 0..3 {
            if clear {
                let _ = std::fs::remove_dir_all(&cold_cache);
            }
            times.push(crate::time_to_first_response(args, kind, &file, work, &extra)?);
        }
        rows.push((label.to_string(), median(&mut times)));
    }
    Ok(rows)
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(0.0)
}

/// Median, min and max of one figure over the rounds.
fn spread(results: &[(&str, Kind, Measured)], name: &str, kind: Kind, pick: fn(&Measured) -> f64) -> (f64, f64, f64) {
    let mut values: Vec<f64> = results.iter().filter(|r| r.0 == name && r.1 == kind).map(|r| pick(&r.2)).collect();
    let (min, max) = values.iter().fold((f64::MAX, f64::MIN), |(a, b), v| (a.min(*v), b.max(*v)));
    (median(&mut values), min, max)
}

/// Both proxies' medians of one figure, `Envoy / wasmproxy`.
/// (`–` where the load tool gives no such figure.)
fn pair(results: &[(&str, Kind, Measured)], name: &str, pick: fn(&Measured) -> f64, digits: usize) -> String {
    let (a, b) = (spread(results, name, Kind::Envoy, pick).0, spread(results, name, Kind::Wasmproxy, pick).0);
    if a.is_nan() || b.is_nan() {
        return "–".into();
    }
    format!("{a:.digits$} / {b:.digits$}")
}

/// What we know of where the time goes (`bench/findings.md`), kept by hand with the
/// harness (the rest of the report is measured).
const FINDINGS: &str = include_str!("../findings.md");

/// The targets, checked against this run's medians.
fn targets(args: &Args, results: &[(&str, Kind, Measured)], startup: &[(String, f64)]) -> String {
    let rps = |name: &str, kind| spread(results, name, kind, |m| m.rps).0;
    let mut out = String::from("\n## The targets\n\n| target | this run | met |\n|---|---|---|\n");
    let mut row = |target: &str, figure: String, met: bool| {
        out.push_str(&format!("| {target} | {figure} | {} |\n", if met { "yes" } else { "no" }));
    };
    let (filtered, plain) = ("direct_response_header_filter", "direct_response_no_filter");
    if results.iter().any(|r| r.0 == filtered) && results.iter().any(|r| r.0 == plain) {
        let ratio = rps(filtered, Kind::Wasmproxy) / rps(filtered, Kind::Envoy).max(1.0);
        row("req/s with a Wasm filter at least 2x Envoy's", format!("{ratio:.2}x"), ratio >= 2.0);
        let own = rps(filtered, Kind::Wasmproxy) / rps(plain, Kind::Wasmproxy).max(1.0);
        row("with a filter within 15% of our own no-filter figure", format!("{:.0}%", own * 100.0), own >= 0.85);
        let p99 = |k| spread(results, filtered, k, |m| m.fixed.p99_ms).0;
        row(
            &format!("p99 lower than Envoy's at the same rate ({} req/s)", args.rate),
            format!("{:.2} vs {:.2} ms", p99(Kind::Wasmproxy), p99(Kind::Envoy)),
            p99(Kind::Wasmproxy) < p99(Kind::Envoy),
        );
        let rss = |k| spread(results, filtered, k, |m| m.rss_mb).0;
        let r = rss(Kind::Wasmproxy) / rss(Kind::Envoy).max(0.1);
        row("peak RSS at most half of Envoy's", format!("{r:.2}x"), r <= 0.5);
    }
    // The TLS goals: the rate, and the proxy's own CPU per request or handshake (which the
    // load generator, sharing this machine's two cores, does not bound).
    let cpu = |name: &str, kind| spread(results, name, kind, |m| m.cpu_per_10k).0;
    let tls_goals = [
        ("https_full_handshakes", "full TLS handshakes", 1.5),
        ("https_handshakes", "resumed TLS handshakes", 1.5),
        ("https_header_filter", "HTTPS keep-alive requests", 2.0),
        ("https_http2", "HTTP/2-over-TLS requests", 2.0),
    ];
    for (name, what, goal) in tls_goals.into_iter().filter(|(name, ..)| results.iter().any(|r| r.0 == *name)) {
        let rate = rps(name, Kind::Wasmproxy) / rps(name, Kind::Envoy).max(1.0);
        let per_cpu = cpu(name, Kind::Envoy) / cpu(name, Kind::Wasmproxy).max(f64::MIN_POSITIVE);
        row(
            &format!("{what} per second (`{name}`, one worker) at least {goal}x Envoy's"),
            format!("{rate:.2}x; per CPU second {per_cpu:.2}x"),
            rate >= goal,
        );
    }
    if let [envoy, cold, _optimizing, warm] = startup {
        let (c, w) = (cold.1 / envoy.1.max(0.001), warm.1 / envoy.1.max(0.001));
        row("time to first response at most half of Envoy's (compiling)", format!("{c:.2}x"), c <= 0.5);
        row("the same with the compile cache warm", format!("{w:.2}x"), w <= 0.5);
    }
    out
}

fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo.lines().find_map(|l| l.strip_prefix("model name")?.split(':').nth(1)).unwrap_or("?").trim();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let commit = std::process::Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    format!("{cores} cores ({model}); wasmproxy at commit {commit}, release build; Envoy 1.40.0 from PyPI")
}

/// The report.
pub fn markdown(
    args: &Args,
    scenarios: &[Scenario],
    results: &[(&str, Kind, Measured)],
    memory: &[(String, [f64; 2])],
    startup: &[(String, f64)],
) -> String {
    let mut out = format!(
        "# Benchmarks: wasmproxy and Envoy 1.40 side by side\n\n\
         Generated by `bench/` (`scripts/bench.sh --write docs/BENCHMARKS.md`); do not edit by hand.\n\n\
         Machine: {}.\n\n\
         Each scenario runs the same config, plugins and load on both proxies, one worker each, \
         alternately, {} rounds: `wrk -t1 -c{} -d{}s --latency` (the HTTP/2 scenario: `h2load -t1 -c{} -m{} \
         -D{}`, which gives no percentiles) after a 1 s warm-up, against one upstream both share. Figures are medians over the rounds, with the range in brackets. \
         The load generator, the upstream and the proxy share the machine's cores, so absolute \
         numbers mean little; the ratio, measured in the same run, is the figure to read.\n\n",
        machine(),
        args.rounds,
        args.connections,
        args.seconds,
        crate::H2_CONNECTIONS,
        crate::H2_STREAMS,
        args.seconds
    );
    out.push_str(
        "| scenario | Envoy req/s | wasmproxy req/s | ratio | p50 ms (E / w) | p99 ms (E / w) | CPU s per 10k req (E / w) | peak RSS MB (E / w) |\n|---|---|---|---|---|---|---|---|\n",
    );
    for s in scenarios {
        let rps = |k| spread(results, s.name, k, |m| m.rps);
        let (e, w) = (rps(Kind::Envoy), rps(Kind::Wasmproxy));
        let both = |pick: fn(&Measured) -> f64, digits: usize| pair(results, s.name, pick, digits);
        out.push_str(&format!(
            "| `{}`: {} | {:.0} ({:.0}–{:.0}) | {:.0} ({:.0}–{:.0}) | **{:.2}** | {} | {} | {} | {} |\n",
            s.name,
            s.about,
            e.0,
            e.1,
            e.2,
            w.0,
            w.1,
            w.2,
            w.0 / e.0.max(1.0),
            both(|m| m.p50_ms, 2),
            both(|m| m.p99_ms, 2),
            both(|m| m.cpu_per_10k, 3),
            both(|m| m.rss_mb, 1),
        ));
    }
    out.push_str(&format!(
        "\n## Latency at a fixed rate ({} req/s, open loop, ms)\n\n\
         Requests go out at their scheduled times whatever the answers (no coordinated omission) \
         and are timed from the moment each is sent, for {} s per run; medians over the rounds.\n\n\
         | scenario | p50 (E / w) | p99 (E / w) | p99.9 (E / w) |\n|---|---|---|---|\n",
        args.rate, args.seconds
    ));
    // The open-loop client speaks HTTP/1.1 only.
    for s in scenarios.iter().filter(|s| !s.http2) {
        let both = |pick: fn(&Measured) -> f64| pair(results, s.name, pick, 2);
        out.push_str(&format!(
            "| `{}` | {} | {} | {} |\n",
            s.name,
            both(|m| m.fixed.p50_ms),
            both(|m| m.fixed.p99_ms),
            both(|m| m.fixed.p999_ms)
        ));
    }
    if !memory.is_empty() {
        out.push_str(
            "\n## Peak RSS after a 2 s load (MB)\n\n| setup | Envoy | wasmproxy | ratio |\n|---|---|---|---|\n",
        );
        for (label, [e, w]) in memory {
            out.push_str(&format!("| {label} | {e:.1} | {w:.1} | **{:.2}** |\n", w / e.max(0.1)));
        }
    }
    if !startup.is_empty() {
        out.push_str(
            "\n## Time from process start to the first response (s, median of 3)\n\n| proxy | seconds |\n|---|---|\n",
        );
        for (label, t) in startup {
            out.push_str(&format!("| {label} | {t:.3} |\n"));
        }
    }
    out.push_str(&targets(args, results, startup));
    out.push('\n');
    out.push_str(FINDINGS);
    out
}

/// The `## <heading>` section of a markdown text, from its heading to the next one.
pub fn section<'a>(text: &'a str, heading: &str) -> Option<&'a str> {
    let start = text.find(&format!("\n## {heading}\n"))?;
    let after = &text[start + 1..];
    let end = after.find("\n## ").map_or(text.len(), |i| start + 1 + i);
    Some(&text[start..end])
}

/// `text` with its `## <heading>` section replaced by `section` (or added at the end).
pub fn replace_section(text: &str, heading: &str, section: &str) -> String {
    let Some(start) = text.find(&format!("\n## {heading}\n")) else {
        return format!("{}{section}", text.trim_end_matches('\n').to_string() + "\n");
    };
    let after = &text[start + 1..];
    let end = after.find("\n## ").map_or(text.len(), |i| start + 1 + i);
    format!("{}{}{}", &text[..start], section, &text[end..])
}
