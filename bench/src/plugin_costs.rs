//! What running plugins the way wasmproxy does costs, and what it saves (`--plugin-costs N`):
//! - **Go memory**: N requests through the Go header filter, on Envoy, on wasmproxy, and on
//!   wasmproxy recycling the VM past 4 MiB of linear memory; resident memory (and the VMs'
//!   linear memory, from `/wasm`) as the run goes.
//! - **The price of recycling**: the Rust header filter with its VM recycled every 100
//!   streams, against never, alternately for the rounds: requests a second, CPU per request,
//!   latency at the fixed rate, and what one recycle takes (`vm_recycle_us` / `vm_recycle`).
//! - **Per-callback accounting**: `perf` samples (cpu-clock, DWARF call graphs) of wasmproxy
//!   under load with the header filter, to the upstream and before a direct response; the
//!   share of samples inside the accounting (its clock reads, keeping the times, counting
//!   them: functions kept out of line for this).

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use wasmproxy_conformance::proxy::{self, Kind, Running};

use crate::load::{self, status_mb};
use crate::{Args, scenarios};

/// The runtime layer that recycles the Go filter's VM past 4 MiB of linear memory.
const RECYCLE_PAST_4_MIB: &str = "layered_runtime:\n  layers:\n  - name: bench\n    static_layer:\n      wasmproxy.wasm.recycle.memory_bytes: 4194304\n";
/// The runtime layer that recycles every VM after 100 streams.
const RECYCLE_EVERY_100: &str =
    "layered_runtime:\n  layers:\n  - name: bench\n    static_layer:\n      wasmproxy.wasm.recycle.max_streams: 100\n";
/// The functions that are the accounting (the host's clock and keeping, the proxy's counting).
const ACCOUNTING: [&str; 3] = ["WasmVm::read_clock", "WasmVm::keep_callback_time", "PluginInstance::account"];

/// Runs the three measurements (or the one `--only` names); returns the report's section.
pub fn run(args: &Args, requests: u64, work: &Path, fill: &dyn Fn(&str) -> String) -> Result<String, String> {
    let scenario = |name: &str| {
        scenarios::all().into_iter().find(|s| s.name == name).ok_or(format!("the {name} scenario is missing"))
    };
    // `--only memory`, `--only recycling` or `--only accounting` runs that part alone.
    let part = |name: &str| args.only.as_deref().is_none_or(|o| name.contains(o));
    let mut out = String::from("\n## Plugin costs\n");
    if part("memory") {
        out.push_str(&go_memory(args, requests, work, &fill(&scenario("header_filter_go")?.config))?);
    }
    if part("recycling") {
        out.push_str(&recycling_price(args, work, fill, &scenario("header_filter_rust")?)?);
    }
    if part("accounting") {
        out.push_str(&accounting(args, work, fill)?);
    }
    Ok(out)
}

/// Memory at the points of a run where it is shown.
struct MemoryRun {
    label: &'static str,
    /// Resident memory (MB) after the warm-up, then after each tenth of the requests.
    rss: Vec<f64>,
    /// The VMs' linear memory (MiB) at the same points (wasmproxy only).
    vm: Vec<f64>,
    errors: u64,
    recycled: u64,
}

fn go_memory(args: &Args, requests: u64, work: &Path, config: &str) -> Result<String, String> {
    let runs = [
        ("Envoy", Kind::Envoy, ""),
        ("wasmproxy", Kind::Wasmproxy, ""),
        ("wasmproxy, recycling past 4 MiB", Kind::Wasmproxy, RECYCLE_PAST_4_MIB),
    ];
    let mut measured = Vec::new();
    for (label, kind, runtime) in runs {
        let path = work.join(format!("go-memory-{}.yaml", measured.len()));
        std::fs::write(&path, format!("{config}{runtime}")).map_err(|e| e.to_string())?;
        let running = crate::start(args, kind, &path, work, 1, &[])?;
        let url = format!("http://{}/", running.listener);
        h2load(&url, 2000)?;
        let pid = running.child.id();
        let (mut rss, mut vm) = (vec![status_mb(pid, "VmRSS:")], vec![vm_memory_mib(&running)]);
        let mut errors = 0;
        for _ in 0..10 {
            errors += h2load(&url, requests / 10)?;
            rss.push(status_mb(pid, "VmRSS:"));
            vm.push(vm_memory_mib(&running));
        }
        let recycled = stat(&running, "wasm.hf.vm_recycle");
        println!("go memory, {label}: RSS {rss:.1?} MB, VM {vm:.2?} MiB, {recycled} recycled, {errors} errors");
        measured.push(MemoryRun { label, rss, vm, errors, recycled });
    }
    let mut out = format!(
        "\n### Go plugin memory\n\nThe Go SDK header filter (one worker), {requests} requests by `h2load` (HTTP/1.1, 32 \
         connections) after 2000 to warm up. Go's runtime keeps the memory it took: without recycling the VM's linear \
         memory grows and stays grown; recycling past 4 MiB (`wasmproxy.wasm.recycle.memory_bytes: 4194304`) holds it \
         there. Envoy has no `/wasm` to show its VM's memory: its resident memory only.\n\n\
         | proxy | resident MB: warm, 10%, 50%, end | VM linear MiB: warm, 10%, 50%, end | VMs recycled | errors |\n\
         |---|---|---|---|---|\n"
    );
    let points = |v: &[f64], digits: usize| [0, 1, 5, 10].map(|i| format!("{:.digits$}", v[i])).join(" / ");
    for r in &measured {
        let vm = if r.label == "Envoy" { "–".to_string() } else { points(&r.vm, 2) };
        out.push_str(&format!("| {} | {} | {} | {} | {} |\n", r.label, points(&r.rss, 1), vm, r.recycled, r.errors));
    }
    Ok(out)
}

/// What `h2load` found wrong in `requests` GETs of `url` (not a 2xx, or an error).
fn h2load(url: &str, requests: u64) -> Result<u64, String> {
    let output = Command::new("h2load")
        .args(["--h1", "-n", &requests.max(1).to_string(), "-c", "32", "-t", "1", "-H", "x-user: bench", url])
        .output()
        .map_err(|e| format!("h2load: {e} (apt-get install nghttp2-client)"))?;
    let text = String::from_utf8_lossy(&output.stdout);
    let counts = load::h2load_counts(&text).ok_or_else(|| format!("h2load said:\n{text}"))?;
    Ok(counts.errors + requests.max(1) - counts.succeeded_2xx.min(requests.max(1)))
}

/// The sum over every VM `/wasm` shows of its figure `key` (0 where there is no `/wasm`).
fn wasm_total(running: &Running, key: &str) -> u64 {
    let page = proxy::admin_get(running.admin, "/wasm?format=json").unwrap_or_default();
    let page: serde_json::Value = serde_json::from_str(&page).unwrap_or_default();
    let vms = page["vms"].as_array().map(Vec::as_slice).unwrap_or_default();
    vms.iter().filter_map(|vm| vm[key].as_u64()).sum()
}

/// The linear memory of every VM `/wasm` shows, in MiB.
fn vm_memory_mib(running: &Running) -> f64 {
    wasm_total(running, "memory_bytes") as f64 / (1 << 20) as f64
}

/// A counter's value (0 if absent).
fn stat(running: &Running, name: &str) -> u64 {
    let stats = proxy::admin_get(running.admin, &format!("/stats?filter=^{name}$")).unwrap_or_default();
    stats.lines().find_map(|l| l.strip_prefix(&format!("{name}: "))?.trim().parse().ok()).unwrap_or(0)
}

fn recycling_price(
    args: &Args,
    work: &Path,
    fill: &dyn Fn(&str) -> String,
    s: &scenarios::Scenario,
) -> Result<String, String> {
    let variants = [("never", ""), ("every 100 streams", RECYCLE_EVERY_100)];
    let mut measured: [Vec<crate::Measured>; 2] = Default::default();
    let (mut recycles, mut recycle_us) = (0, 0);
    for round in 0..args.rounds {
        let order = if round % 2 == 0 { [0, 1] } else { [1, 0] };
        for i in order {
            let (label, runtime) = variants[i];
            let path = work.join(format!("recycling-{i}.yaml"));
            std::fs::write(&path, format!("{}{runtime}", fill(&s.config))).map_err(|e| e.to_string())?;
            let m = crate::measure(args, Kind::Wasmproxy, &path, work, s, &mut |running| {
                recycles += stat(running, "wasm.hf.vm_recycle");
                recycle_us += stat(running, "wasm.hf.vm_recycle_us");
            })?;
            println!(
                "round {} recycling {label:<18} {:>9.0} req/s  cpu {:>5.2} s/10k  rss {:>5.1} MB  at {} req/s: p99 {:.2} p99.9 {:.2} ms",
                round + 1,
                m.rps,
                m.cpu_per_10k,
                m.rss_mb,
                args.rate,
                m.fixed.p99_ms,
                m.fixed.p999_ms
            );
            measured[i].push(m);
        }
    }
    let sorted = |i: usize, f: fn(&crate::Measured) -> f64| {
        let mut v: Vec<f64> = measured[i].iter().map(f).collect();
        v.sort_by(f64::total_cmp);
        v
    };
    let median = |i: usize, f: fn(&crate::Measured) -> f64| sorted(i, f)[measured[i].len() / 2];
    let per_recycle_us = recycle_us as f64 / recycles.max(1) as f64;
    let mut out = format!(
        "\n### The price of recycling\n\nThe Rust header filter on wasmproxy (one worker, `wrk` with {} connections for \
         {} s, then {} requests a second open loop), its VM never recycled, and recycled every 100 streams \
         (`wasmproxy.wasm.recycle.max_streams: 100`: a fresh VM, `on_vm_start` and `on_configure`, while the old one \
         finishes its streams); medians of {} rounds, req/s with its range. One recycle took **{per_recycle_us:.0} \
         µs** on the worker on average ({recycles} recycles, `vm_recycle_us` / `vm_recycle`): {:.1} µs a request at \
         one recycle per 100 streams, far more often than a memory limit or an age asks for. The difference in CPU a \
         request, times 100, estimates what a recycle costs in all (the build, the fresh VM's first touches of its \
         memory, the old one's teardown, its stats made anew): {:.0} µs in this run, a rough figure: throughput and \
         CPU a request on this 2-core machine vary by as much from run to run (the ranges).\n\n\
         | VM recycled | req/s | CPU s / 10k req | p99 / p99.9 ms at {} req/s | peak RSS MB |\n|---|---|---|---|---|\n",
        args.connections,
        args.seconds,
        args.rate,
        args.rounds,
        per_recycle_us / 100.0,
        (median(1, |m| m.cpu_per_10k) - median(0, |m| m.cpu_per_10k)) / 10_000.0 * 1e6 * 100.0,
        args.rate,
    );
    for (i, (label, _)) in variants.iter().enumerate() {
        out.push_str(&format!(
            "| {label} | {:.0} ({:.0}–{:.0}) | {:.3} ({:.3}–{:.3}) | {:.2} / {:.2} | {:.1} |\n",
            median(i, |m| m.rps),
            sorted(i, |m| m.rps)[0],
            sorted(i, |m| m.rps)[measured[i].len() - 1],
            median(i, |m| m.cpu_per_10k),
            sorted(i, |m| m.cpu_per_10k)[0],
            sorted(i, |m| m.cpu_per_10k)[measured[i].len() - 1],
            median(i, |m| m.fixed.p99_ms),
            median(i, |m| m.fixed.p999_ms),
            median(i, |m| m.rss_mb),
        ));
    }
    Ok(out)
}

/// One profile: samples in all, and inside the accounting.
struct Profile {
    scenario: &'static str,
    samples: u64,
    accounting: u64,
    callbacks_per_request: f64,
}

fn accounting(args: &Args, work: &Path, fill: &dyn Fn(&str) -> String) -> Result<String, String> {
    let mut profiles = Vec::new();
    for name in ["header_filter_rust", "direct_response_header_filter"] {
        let s = scenarios::all().into_iter().find(|s| s.name == name).ok_or(format!("no scenario {name}"))?;
        let path = work.join(format!("accounting-{name}.yaml"));
        std::fs::write(&path, fill(&s.config)).map_err(|e| e.to_string())?;
        let running = crate::start(args, Kind::Wasmproxy, &path, work, 1, &[])?;
        let url = format!("http://{}{}", running.listener, s.path);
        load::run(&url, &s, args.connections, Duration::from_secs(1))?;
        let data = work.join(format!("perf-{name}.data"));
        let seconds = args.seconds.to_string();
        let pid = running.child.id().to_string();
        let mut perf = Command::new("perf")
            .args(["record", "-F", "1999", "-e", "cpu-clock", "--call-graph", "dwarf,4096", "-p", &pid, "-o"])
            .arg(&data)
            .args(["--", "sleep", &seconds])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .map_err(|e| format!("perf: {e} (apt-get install linux-perf)"))?;
        let started = Instant::now();
        let (calls_before, streams_before) = vm_counts(&running);
        load::run(&url, &s, args.connections, Duration::from_secs(args.seconds))?;
        let (calls, streams) = vm_counts(&running);
        perf.wait().map_err(|e| format!("perf: {e}"))?;
        drop(running);
        let (samples, accounting) = read_profile(&data)?;
        let callbacks_per_request = (calls - calls_before) as f64 / (streams - streams_before).max(1) as f64;
        println!(
            "accounting, {name}: {accounting} of {samples} samples ({:.2}%), {callbacks_per_request:.1} callbacks a request, {:.1} s",
            100.0 * accounting as f64 / samples.max(1) as f64,
            started.elapsed().as_secs_f64()
        );
        profiles.push(Profile { scenario: s.name, samples, accounting, callbacks_per_request });
    }
    let mut out = String::from(
        "\n### Per-callback accounting\n\nwasmproxy under `wrk` (one worker), sampled by `perf record -e cpu-clock \
         --call-graph dwarf` at 1999 Hz: the share of the proxy's samples with the accounting on their stack (the \
         host's clock reads around each callback, keeping each callback's time, and counting them for `/wasm` and the \
         stats: `WasmVm::read_clock`, `WasmVm::keep_callback_time`, `PluginInstance::account`, kept out of line so \
         that they show). The share of the samples is the share of each request's CPU time. Goal: under 2% of a \
         request with a filter. The direct response is the hardest case: the filter's callbacks are most of the work.\n\n\
         | scenario | callbacks a request | samples | in the accounting | share |\n|---|---|---|---|---|\n",
    );
    for p in &profiles {
        out.push_str(&format!(
            "| {} | {:.1} | {} | {} | **{:.2}%** |\n",
            p.scenario,
            p.callbacks_per_request,
            p.samples,
            p.accounting,
            100.0 * p.accounting as f64 / p.samples.max(1) as f64
        ));
    }
    Ok(out)
}

/// The VMs' callbacks and streams so far, from `/wasm`.
fn vm_counts(running: &Running) -> (u64, u64) {
    (wasm_total(running, "calls"), wasm_total(running, "streams"))
}

/// Samples in a `perf record` file, and those with an accounting function on their stack.
fn read_profile(data: &Path) -> Result<(u64, u64), String> {
    let output = Command::new("perf")
        .args(["script", "--no-inline", "-F", "comm,ip,sym", "-i"])
        .arg(data)
        .output()
        .map_err(|e| format!("perf script: {e}"))?;
    let text = String::from_utf8_lossy(&output.stdout);
    let (mut samples, mut accounting) = (0, 0);
    for sample in text.split("\n\n").filter(|s| !s.trim().is_empty()) {
        samples += 1;
        if sample.lines().skip(1).any(|frame| ACCOUNTING.iter().any(|f| frame.contains(f))) {
            accounting += 1;
        }
    }
    if samples == 0 {
        return Err(format!("perf recorded nothing: {}", String::from_utf8_lossy(&output.stderr)));
    }
    Ok((samples, accounting))
}
