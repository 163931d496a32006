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

/// What we know of where the time goes, kept by hand with the harness (the rest of the
/// report is measured).
const FINDINGS: &str = "\n## Where the time goes\n\n\
**The talk's example, profiled** (`perf record -g` on wasmproxy with one worker, the direct \
response with the Rust header filter, `wrk -t1 -c32` at saturation). The kernel takes 55% of \
the proxy's CPU: on loopback, the proxy's `writev` of each response also runs the \
receiver's side of TCP and wakes `wrk` inside the same system call \
(`sock_def_readable` → `_raw_spin_unlock_irqrestore` alone is 13%), a cost both proxies pay \
per response. wasmproxy's own code is 28% (hyper's parse and encode, the conversions \
between hyper's header map and the list plugins see, the filter's six Wasm calls, stats), \
libc 11% (malloc and free about 6%, memmove 2%, memset 1%), the plugin's compiled code 4%, \
reading the clock 1%.\n\n\
**What this round changed, each measured A/B** (the same machine, the two binaries \
alternating, 3 rounds of 5 s): header maps keep their names and values in one buffer (two \
allocations a map, not two an entry) and request maps are sized up front; the maps keyed \
by context, metric and call ids use Fx hashing instead of SipHash (hashing was 1.7%); \
request ids come from a per-thread SplitMix64 instead of two SipHash runs and three \
`format!`s: together, CPU per 10k requests 0.172 → 0.143 s. Downstream reads clear the \
socket's readiness after a short read, as tokio's own sockets do: one `recv` per request \
instead of two (hyper polls again after each request to notice a client that leaves, and \
that read only ever said EAGAIN): 317k → 347k requests in 5 s. The response's header list \
moves to the access-log phase instead of being cloned: about 1%.\n\n\
**The release build** (this round): one codegen unit and fat LTO, so rustls, aws-lc's \
Rust side, hyper, tokio and the proxy are optimized as one program (the release build takes \
about 15 minutes on two cores instead of 2). Measured A/B, the two binaries alternating \
with Envoy in each run, one round each: `https_header_filter` Envoy / wasmproxy CPU per \
request 1.57x and 1.43x before, 1.93x, 1.72x, 2.10x and 2.22x after; `https_handshakes` \
1.23x and 1.23x before, 1.28x to 1.40x after. Two other allocators, preloaded into the \
same binary, gave no gain outside this machine's noise: `https_header_filter` 1.97x and \
2.50x with jemalloc 5.3, 1.90x and 2.28x with mimalloc 2.0, 2.10x and 2.22x with glibc's; \
`https_handshakes` 1.16x to 1.51x with jemalloc, 1.28x to 1.40x with glibc's. glibc's \
stays.\n\n\
**TLS handshakes, profiled** (`perf record -g`, one worker, `https_handshakes`). `wrk` \
keeps its last TLS session and resumes it: of 5430 handshakes, 5366 were resumed (a TLS \
1.3 ticket with a new X25519 exchange), on both proxies alike; `https_full_handshakes` \
refuses resumption on the listener, so every one there is full. Of wasmproxy's CPU per \
resumed handshake: SHA-384 (the key schedule's HMACs and the transcript) 14%, X25519 \
14%, the kernel 26%, malloc and free 10%, rustls 6%, hyper and tokio 6%. The cipher suite \
is the client's first choice, `TLS_AES_256_GCM_SHA384` (BoringSSL also takes the client's \
order among AES suites), and neither library has a faster SHA-512 than its generic code \
on this AMD CPU, so the two hashing costs are the same work.\n\n\
**Fewer system calls and packets over TLS** (measured A/B on the last table's machine: the two \
release builds alternating with Envoy in each run, one round of 8 s each). A downstream TLS \
connection holds what hyper writes while it is polled and sends it once hyper waits, after \
the tasks woken meanwhile run once (the response body's pump is another task): a proxied \
response's head and body leave in one `send` instead of two, and a `connection: close` \
response, its `close_notify` and the FIN in one packet instead of three (`MSG_MORE` before \
the shutdown, as Envoy writes at the end of an event-loop turn). TLS reads clear the \
socket's readiness after a short read, as plain TCP's did (no EAGAIN read per request or \
handshake), the handshake makes its records in the thread's scratch buffer, a listener \
bound to one address no longer asks each socket its address, and the `ssl.ciphers.*`, \
`ssl.curves.*` and `ssl.versions.*` counters are looked up once. Per keep-alive HTTPS \
request, 4 system calls instead of 6; per handshake (`strace -c`), `sendto` 3 → 2, \
`recvfrom` 4.6 → 3.2, `getsockname` 1 → 0. wasmproxy's CPU per 10k requests, before → \
after, in four pairs of runs: `https_header_filter` 0.88 → 0.82, 0.92 → 0.63, 0.88 → 0.62, \
0.87 → 0.69 s (Envoy / wasmproxy CPU per request 1.44x to 1.85x before, 1.81x to 2.60x \
after; on rate 1.38x to 1.80x before, 1.74x to 2.52x after); `https_full_handshakes` \
4.25, 4.37, 4.18, 3.35 → 3.46, 3.71, 3.65, 3.69 s (1.18x to 1.38x before, 1.21x to 1.57x \
after); `https_handshakes` 4.06, 3.89, 3.63, 3.80 → 3.76, 3.82, 3.69, 3.18 s (1.16x to \
1.43x before, 1.25x to 1.40x after); `https_http2` unchanged within the noise (h2 already \
wrote a turn's frames at once).\n\n\
**HTTP/2 streams' futures on the heap** (measured A/B as above, on the machine of the \
table above). A profile of `https_http2` (`perf record --call-graph dwarf`) put `memmove` at \
10 to 11% of wasmproxy's CPU, most of it moving whole futures: the future that handles a \
request is about 7 KiB, hyper moves it into each HTTP/2 stream's task, and tokio copies \
the task's future again when it spawns the task and when the task ends; `posix_memalign` \
for the task itself is another 2%. An HTTP/2 connection now hands hyper each stream's \
future boxed, so only a pointer moves. HTTP/1.1 is left as it was: its connection keeps \
the one request's future in place, and boxing it there (and the response body's pump \
task, tried with it) gave no gain outside the noise. wasmproxy's CPU per 10k requests, \
before → after: `https_http2` 0.302 → 0.290 and 0.309 → 0.298 s, `http2_many_streams` \
0.349 → 0.331 and 0.351 → 0.321 s. Envoy's own CPU per 10k requests on `https_http2` \
ranged from 0.39 to 0.59 s between runs of this session; three allocators preloaded \
(glibc's, mimalloc 2.0, jemalloc 5.3) again gave no gain outside that noise.\n\n\
**What remains.** Per request and filter, the six Wasm calls (create, headers both ways, \
log, done, delete) and moving the headers in and out of the plugin's context; per request, \
about a dozen small allocations (hyper's request and response, header values as `Bytes`, \
the stream's info) and the two header-map conversions. Reading the clock could be cached \
per event-loop turn. Memory per connection, measured A/B with the `--idle 5000` run (each \
commit's release build on one machine; idle / busy / idle over TLS, KiB per connection): the \
TLS work had raised the busy and TLS figures (6.2 → 7.7 and 15.3 → 18.2 on the previous \
round's machine). The cause was the size of futures: a request's future held room for a new \
upstream connection's TLS handshake (8.5 KB, kept in hyper's slot for the request of every \
live HTTP/1.1 connection), and a TLS connection's task room for its handshake and a copy of \
the rustls session for the connection's whole life (8.6 KB). With the rare handshakes and \
the session boxed they are 5.0 and 2.0 KB: on this round's machine, 6.1 / 9.5 / 18.7 at \
227425b against 6.4 / 8.5 / 12.1 now (idle unchanged within this machine's noise). An idle TLS connection cost 0.59x Envoy's while the session used rustls's buffered API, \
which keeps a 4 KiB record buffer per session once it has read. The session now runs on \
rustls's unbuffered API, and the transport owns the bytes: ciphertext is read and \
records are made in per-thread scratch buffers, and a connection keeps only a record cut \
short or bytes the socket did not take, so an idle TLS connection holds its cipher state \
and no buffer (12.1 → 8.6 KiB per connection, 0.42x Envoy's; CPU per 10k requests on a \
TLS keep-alive direct response, the two binaries alternating: 0.199 / 0.247 / 0.370 s \
against 0.232 / 0.301 / 0.361 s). New TLS \
connections, full or resumed, are bound by the client on this 2-core machine (`wrk`'s own \
handshakes, or the harness's rustls client, take a core): the CPU per 10k column is the \
proxy's own cost of each. Ratios against the last table (de1dfa6, another machine): this table's machine ran Envoy about 2.8x faster than that one and wasmproxy about 2.1x faster (`proxy_no_filter`: Envoy 8203 → 22715 req/s, wasmproxy 14084 → 29462), so this table's ratios are smaller than the last one's for that reason; the A/B figures above, each from one machine, say what each change did. On this machine `tcp_proxy_network_filter` is level with Envoy on rate (0.89x in this table's three runs of 5 s, 0.95x to 1.04x in four later runs of 8 s; 1.18x in the last table) at less CPU per request (0.16 to 0.18 against 0.19 s per 10k): neither proxy uses a whole core there, and the load tool and the upstream share the machine. A build whose TCP relay did not let the worker's other tasks run once after each chunk (`gather` in `tcp/mod.rs`) gave no gain (1.01x and 0.95x against 1.04x and 1.02x).\n\n\
**Start-up while compiling.** Cranelift compiles the 190 KB Rust plugin in about 0.1 s \
on this machine (two threads); Winch, wasmtime's baseline compiler, in about 0.027 s. V8 in \
Envoy compiles lazily with its baseline tier, function by function as they first run, and \
moves hot code to its optimizing tier inside the running VM. wasmproxy's default \
(`--wasm-compiler tiered`) starts a plugin missing from the compile cache on Winch's code \
(about 5% more instructions per request with the header filter: 53.3k against 50.8k, \
cachegrind) while Cranelift compiles in the background, then moves each worker's VMs to \
the optimized code (new streams start in a new VM; see ARCHITECTURE.md): the \"compiled at \
start\" row. The \"optimized code first\" row waits for Cranelift before serving. The compile \
cache (on by default, in the user's cache directory) makes every later start of the module \
on the machine the warm row, on optimized code from the first request.\n\n\
**Stats on the request path**: the counters, gauges and histograms one proxied request \
touches cost 55 ns on one thread and 78 ns with a second worker recording the same stats \
(`cargo bench -p wasmproxy-stats`): under 0.5% of a proxied request.\n";

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
