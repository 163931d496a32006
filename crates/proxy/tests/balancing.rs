//! Upstream health and load balancing at run time, end to end: active health checks
//! taking a host out and putting it back as it fails and recovers, outlier detection
//! ejecting a host and taking it back after its ejection time, least request avoiding a
//! busy host, `/clusters` showing it all, and a burst of requests finding the connections
//! an earlier one opened.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::Write;
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use wasmproxy_proxy::RunningServer;

use common::{admin_get, body, get, http_listener, read_head, start, stat, until};

/// An upstream answering `<name> <path>`; `/healthz` with 200 while `healthy` holds (else
/// 503), `/fail` with 503, `/slow` after a second.
fn host(name: &'static str, healthy: Arc<AtomicBool>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let healthy = healthy.clone();
            std::thread::spawn(move || {
                // Keep-alive: the health checks reuse their connection.
                loop {
                    let Some(head) = read_head(&mut stream) else { return };
                    let path = head.split(' ').nth(1).unwrap_or("").to_string();
                    let status = match path.as_str() {
                        "/healthz" if !healthy.load(Ordering::SeqCst) => 503,
                        "/fail" => 503,
                        "/slow" => {
                            std::thread::sleep(Duration::from_secs(1));
                            200
                        }
                        _ => 200,
                    };
                    let body = format!("{name} {path}");
                    let answer = format!("HTTP/1.1 {status} X\r\ncontent-length: {}\r\n\r\n{body}", body.len());
                    if stream.write_all(answer.as_bytes()).is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

/// A listener routing everything to the cluster `pool` with `settings` over `hosts`.
fn config(settings: &str, hosts: &[SocketAddr]) -> String {
    let endpoints: String = hosts
        .iter()
        .map(|a| {
            format!(
                "        - endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {} }} }}, hostname: h{} }}\n",
                a.port(),
                a.port()
            )
        })
        .collect();
    format!(
        r#"admin:
  address: {{ socket_address: {{ address: 127.0.0.1, port_value: 0 }} }}
static_resources:
  listeners:
  - name: http
    address: {{ socket_address: {{ address: 127.0.0.1, port_value: 0 }} }}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: ingress
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: {{ prefix: / }}
                route: {{ cluster: pool }}
          http_filters:
          - name: envoy.filters.http.router
            typed_config: {{ "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router }}
  clusters:
  - name: pool
    connect_timeout: 1s
{settings}    load_assignment:
      cluster_name: pool
      endpoints:
      - locality: {{ region: r1, zone: z1 }}
        lb_endpoints:
{endpoints}"#
    )
}

/// Which host answered each of `n` GETs of `path`.
fn answers(server: &RunningServer, path: &str, n: usize) -> Vec<String> {
    let listener = http_listener(server).unwrap();
    (0..n).map(|_| body(&get(listener, path)).split(' ').next().unwrap_or("").to_string()).collect()
}

/// The `/clusters` line of `field` for the host at `addr`.
fn host_field(server: &RunningServer, addr: SocketAddr, field: &str) -> String {
    let text = admin_get(server, "/clusters");
    let prefix = format!("pool::{addr}::{field}::");
    text.lines().find_map(|l| l.strip_prefix(&prefix)).unwrap_or("").to_string()
}

#[test]
fn health_checks_take_a_failing_host_out_and_put_it_back_when_it_recovers() {
    let (a_ok, b_ok) = (Arc::new(AtomicBool::new(true)), Arc::new(AtomicBool::new(true)));
    let (a, b) = (host("a", a_ok.clone()), host("b", b_ok));
    let settings = "    health_checks:\n    - { timeout: 1s, interval: 0.05s, no_traffic_interval: 0.05s, unhealthy_threshold: 2, healthy_threshold: 2, http_health_check: { path: /healthz } }\n";
    let server = start(&config(settings, &[a, b]), 2);
    // Checked before serving: both in use.
    let seen = answers(&server, "/x", 8);
    assert!(seen.contains(&"a".to_string()) && seen.contains(&"b".to_string()), "{seen:?}");
    assert_eq!(stat(&server, "cluster.pool.health_check.healthy"), 2);
    assert_eq!(host_field(&server, a, "health_flags"), "healthy");
    assert_eq!(host_field(&server, a, "hostname"), format!("h{}", a.port()));
    assert_eq!(host_field(&server, a, "region"), "r1");

    a_ok.store(false, Ordering::SeqCst);
    let flags = until(|| host_field(&server, a, "health_flags"), |f| f == "/failed_active_hc");
    assert_eq!(flags, "/failed_active_hc");
    assert!(answers(&server, "/x", 10).iter().all(|h| h == "b"), "an unhealthy host gets no request");
    assert_eq!(stat(&server, "cluster.pool.health_check.healthy"), 1);
    // An unexpected status fails a host at once (only network failures wait for the
    // threshold).
    assert!(stat(&server, "cluster.pool.health_check.failure") >= 1);

    a_ok.store(true, Ordering::SeqCst);
    let flags = until(|| host_field(&server, a, "health_flags"), |f| f == "healthy");
    assert_eq!(flags, "healthy");
    let seen = until(|| answers(&server, "/x", 8).join(","), |s| s.contains('a'));
    assert!(seen.contains('a'), "a recovered host is used again: {seen}");
    assert_eq!(stat(&server, "cluster.pool.membership_healthy"), 2);
    server.stop();
}

#[test]
fn outlier_detection_ejects_a_failing_host_and_takes_it_back_after_its_time() {
    let always = Arc::new(AtomicBool::new(true));
    let (a, b) = (host("a", always.clone()), host("b", always));
    let settings = "    outlier_detection: { consecutive_5xx: 2, interval: 0.1s, base_ejection_time: 0.5s, max_ejection_percent: 50 }\n";
    let server = start(&config(settings, &[a, b]), 1);
    // Every host answers /fail with 503: one of them reaches two in a row first.
    let listener = http_listener(&server).unwrap();
    for _ in 0..4 {
        get(listener, "/fail");
    }
    let ejected = until(
        || {
            let text = admin_get(&server, "/clusters");
            text.lines().filter(|l| l.ends_with("::health_flags::/failed_outlier_check")).count().to_string()
        },
        |n| n == "1",
    );
    assert_eq!(ejected, "1", "max_ejection_percent 50 lets one of two hosts go");
    assert_eq!(stat(&server, "cluster.pool.outlier_detection.ejections_active"), 1);
    assert_eq!(stat(&server, "cluster.pool.outlier_detection.ejections_enforced_consecutive_5xx"), 1);
    let out = if host_field(&server, a, "health_flags") == "healthy" { "b" } else { "a" };
    assert!(answers(&server, "/x", 6).iter().all(|h| h != out), "the ejected host gets no request");
    // Back after its ejection time, on the interval's tick.
    let flags = until(
        || {
            admin_get(&server, "/clusters")
                .lines()
                .filter(|l| l.ends_with("::health_flags::healthy"))
                .count()
                .to_string()
        },
        |n| n == "2",
    );
    assert_eq!(flags, "2");
    assert_eq!(stat(&server, "cluster.pool.outlier_detection.ejections_active"), 0);
    server.stop();
}

#[test]
fn least_request_sends_new_requests_to_the_idle_host() {
    let always = Arc::new(AtomicBool::new(true));
    let (a, b) = (host("a", always.clone()), host("b", always));
    // Many choices: the busy host loses every draw but when all draws pick it.
    let settings = "    lb_policy: LEAST_REQUEST\n    least_request_lb_config: { choice_count: 40 }\n";
    let server = start(&config(settings, &[a, b]), 1);
    let listener = http_listener(&server).unwrap();
    let slow = std::thread::spawn(move || body(&get(listener, "/slow")).split(' ').next().unwrap_or("").to_string());
    // Until the slow request is in flight on one host.
    until(|| host_field(&server, a, "rq_active") + &host_field(&server, b, "rq_active"), |s| s == "10" || s == "01");
    let busy = if host_field(&server, a, "rq_active") == "1" { "a" } else { "b" };
    let seen = answers(&server, "/x", 10);
    assert!(seen.iter().all(|h| h != busy), "{seen:?} while {busy} is busy");
    assert_eq!(slow.join().unwrap(), busy);
    server.stop();
}

/// A keep-alive upstream that holds each answer until `burst` requests wait (the next
/// `burst` after that, and so on; at most 10 s), counting the connections it accepts.
fn gated_host(burst: usize) -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let gate = Arc::new((Mutex::new(0usize), Condvar::new()));
    let counted = accepted.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            counted.fetch_add(1, Ordering::SeqCst);
            let gate = gate.clone();
            std::thread::spawn(move || {
                loop {
                    if read_head(&mut stream).is_none() {
                        return;
                    }
                    let (arrived, opened) = &*gate;
                    let mut arrived = arrived.lock().unwrap();
                    *arrived += 1;
                    let open_at = arrived.div_ceil(burst) * burst;
                    opened.notify_all();
                    let _ = opened.wait_timeout_while(arrived, Duration::from_secs(10), |n| *n < open_at).unwrap();
                    if stream.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok").is_err() {
                        return;
                    }
                }
            });
        }
    });
    (addr, accepted)
}

#[test]
fn a_burst_of_more_requests_than_before_finds_its_connections_again() {
    // Over the 128 idle connections an endpoint kept per worker before: the connections
    // the first burst opened all serve the second.
    const BURST: usize = 150;
    let (upstream, accepted) = gated_host(BURST);
    let server = start(&config("", &[upstream]), 1);
    let listener = http_listener(&server).unwrap();
    for round in 0..2 {
        let clients: Vec<_> = (0..BURST).map(|_| std::thread::spawn(move || get(listener, "/held"))).collect();
        for client in clients {
            let answer = client.join().unwrap();
            assert!(answer.starts_with("HTTP/1.1 200"), "round {round}: {answer}");
        }
    }
    assert_eq!(accepted.load(Ordering::SeqCst), BURST);
    assert_eq!(stat(&server, "cluster.pool.upstream_cx_total"), BURST as u64);
    server.stop();
}
