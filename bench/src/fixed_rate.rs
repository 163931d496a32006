//! Latency at a fixed, moderate rate, open loop (wrk2 is not packaged here; this stands
//! in for it): requests go out at their scheduled times whatever the answers (a slow
//! answer holds up no later request: no coordinated omission), each timed from the moment
//! it is sent (not from its schedule, which the timer's 1 ms resolution would blur).
//! Percentiles up to p99.9.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::time::Instant;

use crate::scenarios::Scenario;

/// Latencies of one run, in milliseconds.
#[derive(Debug, Clone, Copy)]
pub struct Latencies {
    /// Median.
    pub p50_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// 99.9th percentile.
    pub p999_ms: f64,
}

/// Sends `rate` requests a second for `duration` to `addr` (the scenario's path and body);
/// any answer other than 2xx, or no answer, is an error.
pub fn run(addr: SocketAddr, s: &Scenario, rate: u64, duration: Duration) -> Result<Latencies, String> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| e.to_string())?;
    runtime.block_on(async move {
        let client: Client<_, Full<Bytes>> =
            Client::builder(TokioExecutor::new()).pool_max_idle_per_host(1024).build_http();
        let total = rate * duration.as_secs().max(1);
        let interval = Duration::from_secs_f64(1.0 / rate.max(1) as f64);
        let start = Instant::now();
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..total {
            let at = start + interval.mul_f64(i as f64);
            tokio::time::sleep_until(at).await;
            let mut request = http::Request::builder().uri(format!("http://{addr}{}", s.path)).header("host", "bench");
            for (name, value) in s.headers.iter().filter_map(|h| h.split_once(':')) {
                request = request.header(name.trim(), value.trim());
            }
            let body = match &s.body {
                Some(b) => {
                    request = request.method("POST");
                    Bytes::from(b.clone())
                }
                None => Bytes::new(),
            };
            let request = request.body(Full::new(body)).map_err(|e| e.to_string())?;
            let client = client.clone();
            let sent = Instant::now();
            tasks.spawn(async move {
                let ok = match client.request(request).await {
                    Ok(response) => {
                        let status = response.status();
                        response.into_body().collect().await.is_ok() && status.is_success()
                    }
                    Err(_) => false,
                };
                (ok, sent.elapsed())
            });
        }
        let mut latencies = Vec::with_capacity(total as usize);
        let mut errors = 0;
        while let Some(done) = tasks.join_next().await {
            match done {
                Ok((true, took)) => latencies.push(took.as_secs_f64() * 1000.0),
                _ => errors += 1,
            }
        }
        if errors > 0 {
            return Err(format!("{errors} of {total} requests at {rate} req/s failed"));
        }
        latencies.sort_by(f64::total_cmp);
        let at = |q: f64| latencies[((latencies.len() as f64 * q).ceil() as usize).clamp(1, latencies.len()) - 1];
        Ok(Latencies { p50_ms: at(0.5), p99_ms: at(0.99), p999_ms: at(0.999) })
    })
}
