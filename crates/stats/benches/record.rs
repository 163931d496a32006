//! What the stats cost one request: the counters, gauges and histograms the proxy touches
//! while serving a request to an upstream (about a dozen counter adds, four gauge moves,
//! three histogram samples), on one thread and on two threads at once.

use std::hint::black_box;

use criterion::{Criterion, criterion_main};
use wasmproxy_stats::store::Unit;
use wasmproxy_stats::{Scope, Store};

fn one_request(c: &mut Criterion) {
    let store = Store::new();
    let http = Scope::new(&store, "http.ingress.", "http.", &[("envoy_http_conn_manager_prefix", "ingress")]);
    let cluster = Scope::new(&store, "cluster.backend.", "cluster.", &[("envoy_cluster_name", "backend")]);
    let counters: Vec<_> = [
        "downstream_rq_total",
        "downstream_rq_http1_total",
        "downstream_rq_2xx",
        "downstream_rq_completed",
        "rq_total",
        "l_rq_2xx",
        "l_rq_completed",
    ]
    .iter()
    .map(|n| http.counter(n))
    .chain(
        ["upstream_rq_total", "upstream_rq_200", "upstream_rq_2xx", "upstream_rq_completed", "e_200", "e_2xx"]
            .iter()
            .map(|n| cluster.counter(n)),
    )
    .collect();
    let gauges = [http.gauge("downstream_rq_active"), cluster.gauge("upstream_rq_active")];
    let histograms = [
        http.histogram("downstream_rq_time", Unit::Milliseconds),
        cluster.histogram("upstream_rq_time", Unit::Milliseconds),
        cluster.histogram("external.upstream_rq_time", Unit::Milliseconds),
    ];
    let request = move || {
        for c in &counters {
            c.inc();
        }
        for g in &gauges {
            g.inc();
            g.dec();
        }
        for h in &histograms {
            h.record(black_box(3));
        }
    };
    c.bench_function("stats of one request", |b| b.iter(&request));
    // Another thread records the same stats meanwhile (a second worker).
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let other = {
        let (stop, request) = (stop.clone(), request.clone());
        std::thread::spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                request();
            }
        })
    };
    c.bench_function("stats of one request, another worker busy", |b| b.iter(&request));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let _ = other.join();
}

#[allow(missing_docs)]
mod group {
    criterion::criterion_group!(stats, super::one_request);
}
criterion_main!(group::stats);
