//! The conformance harness: every scenario runs on Envoy 1.40 and on wasmproxy with the
//! same config, plugins and requests; what the client, the upstream, the plugin logs and
//! the plugin stats show is compared after the normalisations in `normalize.rs`.
//!
//! ```text
//! conformance [--only NAME] [--write FILE] [--envoy BIN] [--wasmproxy BIN]
//! ```
//! Exits 1 if a scenario differs without a written, deliberate reason.

mod balancing;
mod buffer;
mod connection_manager;
mod corpus;
mod dynamic;
mod ext_authz;
mod fault;
mod native_filters;
mod ratelimit;
mod rbac;
mod report;
mod routes;
mod scenario;
mod scenarios;
mod tls;
mod tracing;
mod xds;

use wasmproxy_conformance::{client, normalize, proxy, upstream};

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use proxy::{Binaries, Kind};
use report::Outcome;
use scenario::{Scenario, XDS};
use upstream::Upstream;
use wasmproxy_conformance::control_plane::ControlPlane;

fn main() {
    match run() {
        Ok(true) => {}
        Ok(false) => std::process::exit(1),
        Err(e) => {
            eprintln!("conformance: {e}");
            std::process::exit(2);
        }
    }
}

struct Args {
    only: Option<String>,
    write: Option<PathBuf>,
    bins: Binaries,
}

fn args() -> Result<Args, String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut a = Args {
        only: None,
        write: None,
        bins: Binaries {
            envoy: std::env::var_os("ENVOY_BIN").map(PathBuf::from).unwrap_or_else(proxy::find_envoy),
            wasmproxy: root.join("target/debug/wasmproxy"),
        },
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--only" => a.only = Some(value()?),
            "--write" => a.write = Some(value()?.into()),
            "--envoy" => a.bins.envoy = value()?.into(),
            "--wasmproxy" => a.bins.wasmproxy = value()?.into(),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    a.bins.check("conformance/README.md")?;
    Ok(a)
}

fn run() -> Result<bool, String> {
    let args = args()?;
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let plugins = root
        .join("plugins/out")
        .canonicalize()
        .map_err(|e| format!("plugins/out: {e} (run scripts/build-plugins.sh)"))?;
    let work = std::env::temp_dir().join(format!("wasmproxy-conformance-{}", std::process::id()));
    std::fs::create_dir_all(&work).map_err(|e| format!("{}: {e}", work.display()))?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let tls_files = wasmproxy_conformance::certs::write_run_certificates(&work)?;
    let upstream = runtime.block_on(Upstream::start()).map_err(|e| format!("upstream: {e}"))?;
    let all = scenarios::all(&root);
    let mut names = BTreeSet::new();
    for s in &all {
        if !names.insert(s.name) {
            return Err(format!("two scenarios are named {}", s.name));
        }
    }
    let chosen: Vec<&Scenario> =
        all.iter().filter(|s| args.only.as_deref().is_none_or(|o| s.name.contains(o))).collect();
    let mut outcomes = Vec::new();
    for s in chosen {
        let config = s
            .config
            .replace("@UPSTREAM_PORT@", &upstream.addr.port().to_string())
            .replace("@PLUGINS@", &plugins.to_string_lossy())
            .replace("@PLUGINS_FROM_CWD@", &from_cwd(&plugins));
        let config = wasmproxy_conformance::certs::fill(&config, &tls_files);
        let place = Place { work: &work, plugins: &plugins, upstream: &upstream, certs: &tls_files };
        let envoy = observe(&runtime, Kind::Envoy, &args.bins, s, &config, &place)?;
        let ours = observe(&runtime, Kind::Wasmproxy, &args.bins, s, &config, &place)?;
        if std::env::var_os("CONFORMANCE_SHOW").is_some() {
            println!("### {} on Envoy:\n{envoy}### {} on wasmproxy:\n{ours}", s.name, s.name);
        }
        let outcome = Outcome::new(s, &envoy, &ours);
        println!("{:<44} {}", s.name, outcome.verdict());
        outcomes.push(outcome);
    }
    let _ = std::fs::remove_dir_all(&work);
    let corpus = match args.only.as_deref() {
        None | Some(corpus::ONLY) => corpus::validate_all(&corpus::root(&root), &args.bins),
        Some(_) => Vec::new(),
    };
    let mut report = report::markdown(&outcomes, args.only.is_some());
    if !corpus.is_empty() {
        report.push_str(&corpus::markdown(&corpus));
    }
    if let Some(path) = &args.write {
        std::fs::write(path, &report).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    let unexplained: Vec<&Outcome> = outcomes.iter().filter(|o| o.unexplained()).collect();
    for o in &unexplained {
        println!("\n## {} differs:\n{}", o.name, o.diff);
    }
    println!(
        "\nconformance: {} scenarios, {} same, {} deliberate differences, {} known differences not fixed yet, {} unexplained differences",
        outcomes.len(),
        outcomes.iter().filter(|o| o.same()).count(),
        outcomes.iter().filter(|o| !o.same() && !o.unexplained() && !o.known()).count(),
        outcomes.iter().filter(|o| o.known()).count(),
        unexplained.len()
    );
    if !corpus.is_empty() {
        for r in corpus.iter().filter(|r| r.unexplained()) {
            println!("\n## {}: Envoy {}, wasmproxy {}: {:?}", r.file, r.envoy, r.ours, r.reasons);
        }
        println!("{}", corpus::summary(&corpus));
    }
    Ok(unexplained.is_empty() && !corpus.iter().any(corpus::Validated::unexplained))
}

/// `path` relative to the working directory, where both proxies run (for the scenarios that
/// name a file relatively).
fn from_cwd(path: &Path) -> String {
    let cwd = std::env::current_dir().and_then(|d| d.canonicalize()).unwrap_or_default();
    let (to, from): (Vec<_>, Vec<_>) = (path.components().collect(), cwd.components().collect());
    let common = to.iter().zip(&from).take_while(|(a, b)| a == b).count();
    let mut relative = PathBuf::new();
    for _ in common..from.len() {
        relative.push("..");
    }
    for part in &to[common..] {
        relative.push(part);
    }
    relative.display().to_string()
}

/// Where a scenario runs: the work directory, the built plugins, the recording upstream.
struct Place<'a> {
    work: &'a Path,
    plugins: &'a Path,
    upstream: &'a Upstream,
    certs: &'a wasmproxy_conformance::certs::RunCertificates,
}

/// Runs one scenario on one proxy and describes everything observed as text.
fn observe(
    runtime: &tokio::runtime::Runtime,
    kind: Kind,
    bins: &Binaries,
    s: &Scenario,
    config: &str,
    place: &Place<'_>,
) -> Result<String, String> {
    let (work, plugins, upstream) = (place.work, place.plugins, place.upstream);
    let file = work.join(format!("{}-{}.yaml", s.name, kind.name()));
    // Each proxy gets its own copy of the dynamic resource files, and its own control plane.
    let dynamic = work.join(format!("{}-{}-", s.name, kind.name())).to_string_lossy().into_owned();
    let mut plane = match s.files.iter().any(|(name, _)| *name == XDS) {
        true => Some(ControlPlane::start(0)?),
        false => None,
    };
    let xds_port = plane.as_ref().map_or(0, |p| p.xds_port);
    let fill = |text: &str| {
        let text = text
            .replace("@DYNAMIC@", &dynamic)
            .replace("@UPSTREAM_PORT@", &upstream.addr.port().to_string())
            .replace("@XDS_PORT@", &xds_port.to_string())
            .replace("@PLUGINS@", &plugins.to_string_lossy());
        wasmproxy_conformance::certs::fill(&text, place.certs)
    };
    std::fs::write(&file, fill(config)).map_err(|e| format!("{}: {e}", file.display()))?;
    for (name, text) in &s.files {
        put(plane.as_ref(), &dynamic, name, &fill(text))?;
    }
    upstream.take();
    let running = match proxy::start(kind, bins, &file, work) {
        Ok(r) => r,
        Err(text) => {
            if std::env::var_os("CONFORMANCE_VERBOSE").is_some() {
                eprintln!("{} refused {}:\n{text}", kind.name(), s.name);
            }
            return Ok(report::REFUSED.into());
        }
    };
    running.settle();
    let started = running.stderr_len();
    let startup_logs: BTreeSet<String> =
        running.stderr_since(0)[..started].iter().filter_map(|l| normalize::log_line(l)).collect();
    let mut out = String::from("== start-up\nserving\n== start-up plugin logs (as a set)\n");
    for l in &startup_logs {
        out.push_str(l);
        out.push('\n');
    }
    out.push_str("== responses\n");
    for (i, r) in s.requests.iter().enumerate() {
        if r.pause_ms > 0 {
            std::thread::sleep(std::time::Duration::from_millis(r.pause_ms));
        }
        if let Some((name, text)) = &r.update {
            let before = updates(&running);
            if r.restart_control_plane {
                drop(plane.take());
                out.push_str(&restart_wait(&running));
                plane = Some(ControlPlane::start(xds_port)?);
                put(plane.as_ref(), &dynamic, name, &fill(text))?;
                // The stream's failures count as updates too: wait for every subscription
                // to hold the new snapshot's version instead.
                let version = serde_json::from_str::<serde_json::Value>(text)
                    .ok()
                    .and_then(|v| v["version"].as_str().map(str::to_string))
                    .unwrap_or_default();
                wait_for_version(&running, &version);
            } else {
                put(plane.as_ref(), &dynamic, name, &fill(text))?;
            }
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
            while updates(&running) == before && std::time::Instant::now() < deadline {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            // A listener waiting for a module by URL is not ready yet (on both).
            wait_for_listeners_warm(&running);
            if let Some(line) = r.applied_when {
                let name = format!("^{}: ", regex::escape(line.split(": ").next().unwrap_or(line)));
                stats_until(&running, &name, 15, |lines| lines.iter().any(|l| l == line));
            }
            // Envoy's workers take a new configuration shortly after its main thread counts it.
            std::thread::sleep(std::time::Duration::from_millis(300));
            out.push_str(&format!("-- {} replaced\n", name));
        }
        out.push_str(&format!("-- {} {} {}{}\n", i + 1, r.method, r.path, if r.http2 { " (HTTP/2)" } else { "" }));
        if r.admin {
            out.push_str(&normalize::admin_json(
                &proxy::admin_request(running.admin, r.method, &r.path).unwrap_or_else(|e| e.to_string()),
            ));
            continue;
        }
        out.push_str(&runtime.block_on(client::send(running.listener, r)));
    }
    running.settle();
    // Sorted: callouts (and a plugin's parallel ones) reach the upstream in no fixed order.
    out.push_str("== upstream received (sorted)\n");
    let mut received = upstream.take();
    received.sort();
    for r in received {
        out.push_str(&r);
    }
    out.push_str("== plugin logs\n");
    for l in running.stderr_since(started).iter().filter_map(|l| normalize::log_line(l)) {
        out.push_str(&l);
        out.push('\n');
    }
    // A scenario with a short stats flush interval waits for a flush, so histograms show.
    if config.contains("stats_flush_interval") {
        std::thread::sleep(std::time::Duration::from_millis(1500));
    }
    section(&mut out, "plugin stats", running.plugin_stats());
    let regexes = |patterns: &[&str]| patterns.iter().filter_map(|r| regex::Regex::new(r).ok()).collect::<Vec<_>>();
    if !s.stats.is_empty() {
        section(&mut out, "admin stats", running.stats(&regexes(s.stats)));
    }
    if !s.prometheus.is_empty() {
        section(&mut out, "admin prometheus stats", running.prometheus(&regexes(s.prometheus)));
    }
    if let Some(plane) = &plane {
        section(&mut out, "control plane received (as a set)", discovery_requests(plane));
    }
    Ok(normalize::listener(&out, &running.listener.to_string()))
}

/// Puts a scenario's dynamic resource in place: the control plane's snapshot ([`XDS`]) is
/// served, a file is replaced.
fn put(plane: Option<&ControlPlane>, dynamic: &str, name: &str, text: &str) -> Result<(), String> {
    match plane {
        Some(plane) if name == XDS => set_snapshot(plane, text),
        _ => replace_file(&format!("{dynamic}{name}"), text),
    }
}

/// Waits (up to 15 s) for the proxy to see its control plane gone; says whether it did.
fn restart_wait(running: &proxy::Running) -> String {
    let gone = stats_until(running, r"^control_plane\.connected_state: ", 15, |lines| {
        lines.iter().any(|l| l.ends_with(": 0"))
    });
    format!("-- control plane gone, {}\n", if gone { "seen" } else { "not seen" })
}

/// Waits (up to 10 s) until no listener warms (`listener_manager.total_listeners_warming`
/// is 0, or not kept).
fn wait_for_listeners_warm(running: &proxy::Running) {
    stats_until(running, r"^listener_manager\.total_listeners_warming: ", 10, |lines| {
        lines.iter().all(|l| l.ends_with(": 0"))
    });
}

/// Waits (up to 15 s) until every xDS subscription's `version_text` is `version`.
fn wait_for_version(running: &proxy::Running, version: &str) {
    let wanted = format!(": \"{version}\"");
    let versions = r"^(listener_manager\.lds|cluster_manager\.cds|http\..+\.rds\..+|cluster\.[^.]+)\.version_text: ";
    stats_until(running, versions, 15, |lines| !lines.is_empty() && lines.iter().all(|l| l.ends_with(&wanted)));
}

/// Polls the proxy's stats matching `pattern` until `done` holds of them, for at most
/// `seconds`; whether it did.
fn stats_until(running: &proxy::Running, pattern: &str, seconds: u64, done: impl Fn(&[String]) -> bool) -> bool {
    let pattern = regex::Regex::new(pattern).expect("a valid regex");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(seconds);
    loop {
        if done(&running.stats(std::slice::from_ref(&pattern))) {
            return true;
        }
        if std::time::Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Serves a scenario's snapshot (`{"version", "resources"}`, and `"node"` if it is not
/// `conformance`).
fn set_snapshot(plane: &ControlPlane, text: &str) -> Result<(), String> {
    let snapshot: serde_json::Value = serde_json::from_str(text).map_err(|e| format!("snapshot: {e}"))?;
    let resources = snapshot["resources"].as_array().cloned().unwrap_or_default();
    let node = snapshot["node"].as_str().unwrap_or("conformance");
    plane.set(node, snapshot["version"].as_str().unwrap_or_default(), &resources)
}

/// The discovery requests a control plane received, as a sorted set of lines: the type,
/// the version held, the names, and whether it answered a response (ACK), refused one
/// (NACK: the reason is each proxy's own words) or was a stream's first.
fn discovery_requests(plane: &ControlPlane) -> Vec<String> {
    let lines: BTreeSet<String> = plane
        .requests()
        .iter()
        .map(|r| {
            let kind = r["type_url"].as_str().unwrap_or_default().rsplit('.').next().unwrap_or_default().to_string();
            let what = if r.get("error_detail").is_some() {
                "NACK"
            } else if r["response_nonce"].as_str().is_some_and(|n| !n.is_empty()) {
                "ACK"
            } else {
                "first"
            };
            let names = r["resource_names"]
                .as_array()
                .map(|a| a.iter().filter_map(|n| n.as_str()).collect::<Vec<_>>().join(","));
            format!(
                "{kind} {what} version={:?} names=[{}]",
                r["version_info"].as_str().unwrap_or_default(),
                names.unwrap_or_default()
            )
        })
        .collect();
    lines.into_iter().collect()
}

/// Appends `== <title>` and the lines.
fn section(out: &mut String, title: &str, lines: Vec<String>) {
    out.push_str(&format!("== {title}\n"));
    for l in lines {
        out.push_str(&l);
        out.push('\n');
    }
}

/// Replaces a dynamic resource file as Envoy wants it replaced: written beside it, then
/// moved into place.
fn replace_file(path: &str, text: &str) -> Result<(), String> {
    let tmp = format!("{path}.tmp");
    std::fs::write(&tmp, text).map_err(|e| format!("{tmp}: {e}"))?;
    std::fs::rename(&tmp, path).map_err(|e| format!("{path}: {e}"))
}

/// The admin stats counting the dynamic resource files (LDS, CDS, RDS, EDS, SDS) a proxy is done
/// with: taken, refused or unreadable. (An attempt is counted before the work, which a
/// plugin's compilation can make long on a busy machine.)
fn finished_updates() -> regex::Regex {
    regex::Regex::new(
        r"^(listener_manager\.lds|cluster_manager\.cds|http\..+\.rds\..+|cluster\.[^.]+|sds\.[^.]+)\.update_(success|rejected|failure): ",
    )
    .expect("a valid regex")
}

/// How many dynamic resource files the proxy is done with.
fn updates(running: &proxy::Running) -> usize {
    running.stats(&[finished_updates()]).iter().filter_map(|l| l.rsplit(' ').next()?.parse::<usize>().ok()).sum()
}
