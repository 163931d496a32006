//! The benchmark harness: each scenario's config runs on Envoy 1.40 and on wasmproxy,
//! alternately, with the same worker count, plugins, upstream and load (`wrk`), for
//! several rounds; the figures, their spread and the ratios go to `docs/BENCHMARKS.md`.
//!
//! ```text
//! wasmproxy-bench [--rounds N] [--seconds S] [--connections C] [--rate R] [--only NAME] [--write FILE]
//! wasmproxy-bench --soak REQUESTS [--write FILE]
//! wasmproxy-bench --updates N [--write FILE]
//! wasmproxy-bench --idle N [--write FILE]
//! wasmproxy-bench --plugin-costs REQUESTS [--rounds N] [--only memory|recycling|accounting] [--write FILE]
//! ```
//! Nothing here passes or fails: it measures and reports (see the README).

mod fixed_rate;
mod idle;
mod load;
mod plugin_costs;
mod report;
mod scenarios;
mod soak;
mod updates;
mod upstream;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use wasmproxy_conformance::proxy::{self, Binaries, Kind, Launch, Running};

/// What the command line asks for.
pub struct Args {
    rounds: usize,
    seconds: u64,
    connections: usize,
    only: Option<String>,
    write: Option<PathBuf>,
    /// Run the soak with this many requests per protocol instead of the scenarios.
    soak: Option<u64>,
    /// Write this many configuration updates under load instead of the scenarios.
    updates: Option<usize>,
    /// Hold this many idle connections (and twice as many busy ones) instead of the scenarios.
    idle: Option<usize>,
    /// Measure what recycling and accounting cost (Go memory over this many requests).
    plugin_costs: Option<u64>,
    /// The fixed rate latencies are measured at (requests a second).
    rate: u64,
    bins: Binaries,
}

fn args() -> Result<Args, String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut a = Args {
        rounds: 3,
        seconds: 5,
        connections: 32,
        only: None,
        write: None,
        soak: None,
        updates: None,
        idle: None,
        plugin_costs: None,
        rate: 2000,
        bins: Binaries {
            envoy: std::env::var_os("ENVOY_BIN").map(PathBuf::from).unwrap_or_else(proxy::find_envoy),
            wasmproxy: root.join("target/release/wasmproxy"),
        },
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        let number = |v: String| v.parse::<u64>().map_err(|_| format!("{flag}: {v:?} is not a number"));
        match flag.as_str() {
            "--rounds" => a.rounds = number(value()?)?.max(1) as usize,
            "--seconds" => a.seconds = number(value()?)?.max(1),
            "--connections" => a.connections = number(value()?)?.max(1) as usize,
            "--only" => a.only = Some(value()?),
            "--write" => a.write = Some(value()?.into()),
            "--soak" => a.soak = Some(number(value()?)?.max(1)),
            "--updates" => a.updates = Some(number(value()?)?.max(1) as usize),
            "--idle" => a.idle = Some(number(value()?)?.max(1) as usize),
            "--plugin-costs" => a.plugin_costs = Some(number(value()?)?.max(10)),
            "--rate" => a.rate = number(value()?)?.max(1),
            "--envoy" => a.bins.envoy = value()?.into(),
            "--wasmproxy" => a.bins.wasmproxy = value()?.into(),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    a.bins.check("bench/README.md")?;
    Ok(a)
}

fn main() {
    if let Err(e) = run() {
        eprintln!("bench: {e}");
        std::process::exit(2);
    }
}

fn run() -> Result<(), String> {
    let args = args()?;
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let plugins = root.join("plugins/out").canonicalize().map_err(|e| format!("plugins/out: {e}"))?;
    let work = std::env::temp_dir().join(format!("wasmproxy-bench-{}", std::process::id()));
    std::fs::create_dir_all(&work).map_err(|e| e.to_string())?;
    let tls_files = wasmproxy_conformance::certs::write_run_certificates(&work)?;
    let upstream = upstream::start().map_err(|e| format!("upstream: {e}"))?;
    let fill = |config: &str| {
        let config = config
            .replace("@UPSTREAM_PORT@", &upstream.port().to_string())
            .replace("@PLUGINS@", &plugins.to_string_lossy());
        wasmproxy_conformance::certs::fill(&config, &tls_files)
    };
    if let Some(requests) = args.soak {
        let (section, passed) = soak::run(&args, requests, &work, &fill)?;
        let _ = std::fs::remove_dir_all(&work);
        println!("{section}");
        write_section(&args, SOAK, &section)?;
        return if passed { Ok(()) } else { Err("the soak failed (see above)".into()) };
    }
    if let Some(updates) = args.updates {
        let section = updates::run(&args, updates, &work, &plugins)?;
        let _ = std::fs::remove_dir_all(&work);
        println!("{section}");
        return write_section(&args, UPDATES, &section);
    }
    if let Some(connections) = args.idle {
        let section = idle::run(&args, connections, &work, &fill)?;
        let _ = std::fs::remove_dir_all(&work);
        println!("{section}");
        return write_section(&args, HELD, &section);
    }
    if let Some(requests) = args.plugin_costs {
        let section = plugin_costs::run(&args, requests, &work, &fill)?;
        let _ = std::fs::remove_dir_all(&work);
        println!("{section}");
        return write_section(&args, PLUGIN_COSTS, &section);
    }
    let mut results = Vec::new();
    let chosen: Vec<_> =
        scenarios::all().into_iter().filter(|s| args.only.as_deref().is_none_or(|o| s.name.contains(o))).collect();
    for round in 0..args.rounds {
        for s in &chosen {
            // Alternate which proxy goes first, so neither always gets a warmer machine.
            let order = if round % 2 == 0 { [Kind::Envoy, Kind::Wasmproxy] } else { [Kind::Wasmproxy, Kind::Envoy] };
            for kind in order {
                let config = work.join(format!("{}-{}.yaml", s.name, kind.name()));
                std::fs::write(&config, fill(&s.config)).map_err(|e| e.to_string())?;
                let m = measure(&args, kind, &config, &work, s, &mut |_| {})?;
                println!(
                    "round {} {:<28} {:<9} {:>9.0} req/s  p50 {:>6.2} ms  p99 {:>6.2} ms  cpu {:>5.2} s/10k  rss {:>5.1} MB  \
                     at {} req/s: p50 {:.2} p99 {:.2} p99.9 {:.2} ms",
                    round + 1,
                    s.name,
                    kind.name(),
                    m.rps,
                    m.p50_ms,
                    m.p99_ms,
                    m.cpu_per_10k,
                    m.rss_mb,
                    args.rate,
                    m.fixed.p50_ms,
                    m.fixed.p99_ms,
                    m.fixed.p999_ms,
                );
                results.push((s.name, kind, m));
            }
        }
    }
    let memory = if args.only.is_none() { report::memory(&args, &work, &fill)? } else { Vec::new() };
    let startup = if args.only.is_none() { report::startup(&args, &work, &fill)? } else { Vec::new() };
    let _ = std::fs::remove_dir_all(&work);
    let text = report::markdown(&args, &chosen, &results, &memory, &startup);
    println!("\n{text}");
    if let Some(path) = &args.write {
        // The figures measured on their own (soak, updates, connections held) stay.
        let old = std::fs::read_to_string(path).unwrap_or_default();
        let mut text = text;
        for heading in [SOAK, UPDATES, HELD, PLUGIN_COSTS] {
            if let Some(section) = report::section(&old, heading) {
                text = report::replace_section(&text, heading, section);
            }
        }
        std::fs::write(path, text).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    Ok(())
}

/// The report's sections measured on their own (`--soak`, `--updates`, `--idle`,
/// `--plugin-costs`).
const SOAK: &str = "Soak";
const UPDATES: &str = "Configuration updates under load";
const HELD: &str = "Connections held";
const PLUGIN_COSTS: &str = "Plugin costs";

/// Replaces one section of the `--write` file, if asked to.
fn write_section(args: &Args, heading: &str, section: &str) -> Result<(), String> {
    let Some(path) = &args.write else { return Ok(()) };
    let old = std::fs::read_to_string(path).unwrap_or_default();
    std::fs::write(path, report::replace_section(&old, heading, section))
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// One run's figures.
#[derive(Debug, Clone, Copy)]
pub struct Measured {
    rps: f64,
    p50_ms: f64,
    p99_ms: f64,
    cpu_per_10k: f64,
    rss_mb: f64,
    /// Latencies at the fixed rate (`--rate`), open loop.
    fixed: fixed_rate::Latencies,
}

/// HTTP/2 scenarios: `h2load`'s connections.
pub const H2_CONNECTIONS: usize = 8;
/// HTTP/2 scenarios: concurrent streams on each connection.
pub const H2_STREAMS: usize = 32;

/// Starts the proxy, warms it up, runs the load, reads its CPU time and peak RSS; `inspect`
/// sees the proxy last.
fn measure(
    args: &Args,
    kind: Kind,
    config: &Path,
    work: &Path,
    s: &scenarios::Scenario,
    inspect: &mut dyn FnMut(&Running),
) -> Result<Measured, String> {
    let running = start(args, kind, config, work, 1, &[])?;
    let scheme = if s.tls { "https" } else { "http" };
    let url = format!("{scheme}://{}{}", running.listener, s.path);
    let load = |seconds| {
        if s.http2 {
            load::run_h2(&url, H2_CONNECTIONS, H2_STREAMS, Duration::from_secs(seconds))
        } else if s.resumed {
            load::run_resumed(running.listener, s.path, Duration::from_secs(seconds))
        } else {
            load::run(&url, s, args.connections, Duration::from_secs(seconds))
        }
    };
    load(1)?;
    let cpu_before = load::cpu_seconds(&running);
    let out = load(args.seconds)?;
    let cpu = load::cpu_seconds(&running) - cpu_before;
    let rss_mb = load::peak_rss_mb(&running);
    // The open-loop client speaks plain HTTP/1.1 only.
    let fixed = if s.http2 || s.tls {
        fixed_rate::Latencies { p50_ms: f64::NAN, p99_ms: f64::NAN, p999_ms: f64::NAN }
    } else {
        fixed_rate::run(running.listener, s, args.rate, Duration::from_secs(args.seconds))?
    };
    inspect(&running);
    Ok(Measured {
        rps: out.requests as f64 / out.seconds,
        p50_ms: out.p50_ms,
        p99_ms: out.p99_ms,
        cpu_per_10k: cpu / (out.requests.max(1) as f64) * 10_000.0,
        rss_mb,
        fixed,
    })
}

/// A proxy started for a measurement (plugin logs at error, so logging costs nothing).
pub fn start(
    args: &Args,
    kind: Kind,
    config: &Path,
    work: &Path,
    workers: usize,
    wasmproxy_args: &[String],
) -> Result<Running, String> {
    let launch =
        Launch { workers, wasm_log_level: "error".into(), log_levels: false, wasmproxy_args: wasmproxy_args.to_vec() };
    proxy::start_with(kind, &args.bins, config, work, &launch)
        .map_err(|e| format!("{} did not start: {e}", kind.name()))
}

/// Seconds from starting a proxy to its first 200 on `path`.
pub fn time_to_first_response(
    args: &Args,
    kind: Kind,
    config: &Path,
    work: &Path,
    wasmproxy_args: &[String],
) -> Result<f64, String> {
    let started = Instant::now();
    let running = start(args, kind, config, work, 1, wasmproxy_args)?;
    while started.elapsed() < Duration::from_secs(30) {
        if load::get_ok(running.listener, "/") {
            return Ok(started.elapsed().as_secs_f64());
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    Err(format!("{} never answered", kind.name()))
}
