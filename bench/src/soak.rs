//! The soak: wasmproxy alone (two workers, the Rust header filter, to the shared
//! upstream) takes a fixed number of requests over HTTP/1.1 and then over HTTP/2
//! (`h2load`), while its resident memory is sampled five times a second. It passes when every
//! request got a 2xx and memory at the end is within 10% of where it stood after the
//! first tenth of the run. The figures go to the `## Soak` section of BENCHMARKS.md.

use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use wasmproxy_conformance::proxy::Kind;

use crate::{Args, scenarios};

/// One protocol's run.
struct SoakRun {
    protocol: &'static str,
    requests: u64,
    succeeded_2xx: u64,
    errors: u64,
    seconds: f64,
    rss_after_tenth_mb: f64,
    rss_end_mb: f64,
    rss_peak_mb: f64,
}

/// Runs the soak with `requests` per protocol; returns the markdown section and whether
/// it passed.
pub fn run(args: &Args, requests: u64, work: &Path, fill: &dyn Fn(&str) -> String) -> Result<(String, bool), String> {
    let scenario = scenarios::all()
        .into_iter()
        .find(|s| s.name == "header_filter_rust")
        .ok_or("the header_filter_rust scenario is missing")?;
    let config = work.join("soak.yaml");
    std::fs::write(&config, fill(&scenario.config)).map_err(|e| e.to_string())?;
    let running = crate::start(args, Kind::Wasmproxy, &config, work, 2, &[])?;
    let url = format!("http://{}{}", running.listener, scenario.path);
    let mut runs = Vec::new();
    for (protocol, flags) in [("HTTP/1.1", vec!["--h1"]), ("HTTP/2", vec!["-m", "10"])] {
        runs.push(run_one(&running, &url, protocol, &flags, requests)?);
    }
    let mut out = String::from(
        "\n## Soak\n\nwasmproxy alone, two workers, the Rust header filter to the upstream; `h2load` with 32 \
         connections (HTTP/2: 10 streams each) sends a fixed number of requests; resident memory is sampled \
         five times a second. Passes with every answer a 2xx and memory at the end within 10% of where it stood after \
         the first tenth of the requests.\n\n\
         | protocol | requests | 2xx | errors | seconds | req/s | RSS after 10% / end / peak (MB) | flat |\n\
         |---|---|---|---|---|---|---|---|\n",
    );
    let mut passed = true;
    for r in &runs {
        let flat = r.rss_end_mb <= r.rss_after_tenth_mb * 1.1;
        let ok = r.errors == 0 && r.succeeded_2xx == r.requests && flat;
        passed &= ok;
        out.push_str(&format!(
            "| {} | {} | {} | {} | {:.1} | {:.0} | {:.1} / {:.1} / {:.1} | {} |\n",
            r.protocol,
            r.requests,
            r.succeeded_2xx,
            r.errors,
            r.seconds,
            r.requests as f64 / r.seconds,
            r.rss_after_tenth_mb,
            r.rss_end_mb,
            r.rss_peak_mb,
            if flat { "yes" } else { "no" }
        ));
    }
    Ok((out, passed))
}

fn rss_mb(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        .unwrap_or(0.0)
        / 1024.0
}

fn run_one(
    running: &wasmproxy_conformance::proxy::Running,
    url: &str,
    protocol: &'static str,
    flags: &[&str],
    requests: u64,
) -> Result<SoakRun, String> {
    let pid = running.child.id();
    let samples = Arc::new(Mutex::new(Vec::<(Instant, f64)>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (samples, stop) = (samples.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                samples.lock().unwrap_or_else(|e| e.into_inner()).push((Instant::now(), rss_mb(pid)));
                std::thread::sleep(Duration::from_millis(200));
            }
        })
    };
    let started = Instant::now();
    let output = Command::new("h2load")
        .args(["-n", &requests.to_string(), "-c", "32", "-t", "1"])
        .args(flags)
        .arg(url)
        .output()
        .map_err(|e| format!("h2load: {e} (apt-get install nghttp2-client)"))?;
    let seconds = started.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    let _ = sampler.join();
    let text = String::from_utf8_lossy(&output.stdout);
    let counts = crate::load::h2load_counts(&text).ok_or_else(|| format!("h2load said:\n{text}"))?;
    let (succeeded_2xx, errors) = (counts.succeeded_2xx, counts.errors);
    let samples = samples.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let tenth = started + Duration::from_secs_f64(seconds / 10.0);
    let after_tenth = samples.iter().find(|(t, _)| *t >= tenth).map_or(0.0, |(_, r)| *r);
    let end = samples.last().map_or(0.0, |(_, r)| *r);
    let peak = samples.iter().map(|(_, r)| *r).fold(0.0, f64::max);
    println!(
        "soak {protocol}: {requests} requests, {succeeded_2xx} 2xx, {errors} errors, {seconds:.1} s, RSS {after_tenth:.1} → {end:.1} MB (peak {peak:.1})"
    );
    Ok(SoakRun {
        protocol,
        requests,
        succeeded_2xx,
        errors,
        seconds,
        rss_after_tenth_mb: after_tenth,
        rss_end_mb: end,
        rss_peak_mb: peak,
    })
}

#[cfg(test)]
mod tests {
    use crate::report::{replace_section, section};

    #[test]
    fn the_soak_section_is_replaced_in_place() {
        let text = "# B\n\n## A\nx\n\n## Soak\nold\n\n## C\ny\n";
        assert_eq!(replace_section(text, "Soak", "\n## Soak\nnew\n"), "# B\n\n## A\nx\n\n## Soak\nnew\n\n## C\ny\n");
        assert_eq!(replace_section("# B\n", "Soak", "\n## Soak\nnew\n"), "# B\n\n## Soak\nnew\n");
        assert_eq!(section(text, "Soak"), Some("\n## Soak\nold\n"));
    }
}
